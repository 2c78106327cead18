//! A small driver for engine transcripts: feed events, keep the run, collect effects and audit.
#![allow(dead_code)]

use flowgate_shared::definition::{WorkflowDefinition, parse_definition};
use flowgate_shared::engine::{AgentObservation, Decision, Effect, Event, Rejection, decide};
use flowgate_shared::model::{
    AgentRunStatus, ApprovalDecision, AuditEntry, Millis, Run, RunStatus, StepStatus,
};
use serde_json::{Map, Value};

pub const T0: Millis = 1_700_000_000_000;

pub fn def(yaml: &str) -> WorkflowDefinition {
    match parse_definition(yaml) {
        Ok(d) => d,
        Err(e) => panic!("test definition is invalid: {:?}", e.0),
    }
}

pub struct Harness {
    pub def: WorkflowDefinition,
    pub run: Run,
    pub now: Millis,
    pub audit: Vec<AuditEntry>,
    /// Effects of the last event.
    pub last: Vec<Effect>,
}

impl Harness {
    pub fn new(yaml: &str) -> Self {
        Self::with_inputs(yaml, Map::new())
    }

    pub fn with_inputs(yaml: &str, inputs: Map<String, Value>) -> Self {
        let def = def(yaml);
        let run = Run::new("r1", &def, 1, inputs, T0);
        Self {
            def,
            run,
            now: T0,
            audit: Vec::new(),
            last: Vec::new(),
        }
    }

    /// Apply an event, which must be accepted; returns its effects.
    pub fn send(&mut self, e: Event) -> Vec<Effect> {
        match self.try_send(e.clone()) {
            Ok(effects) => effects,
            Err(r) => panic!("event {e:?} was refused: {r}"),
        }
    }

    pub fn try_send(&mut self, e: Event) -> Result<Vec<Effect>, Rejection> {
        let Decision {
            run,
            effects,
            audit,
        } = decide(&self.run, &self.def, &e, self.now)?;
        for (i, a) in audit.iter().enumerate() {
            assert_eq!(
                a.seq,
                self.run.audit_seq + i as u64,
                "audit sequence must be contiguous"
            );
        }
        self.audit.extend(audit);
        self.run = run;
        self.last = effects.clone();
        Ok(effects)
    }

    /// Apply an event and assert it changed nothing.
    pub fn send_noop(&mut self, e: Event) {
        let d = decide(&self.run, &self.def, &e, self.now).expect("accepted");
        assert!(
            d.is_noop(&self.run),
            "expected {e:?} to be a no-op, got effects {:?} audit {:?}",
            d.effects,
            d.audit
        );
    }

    pub fn at(&mut self, ms_after_t0: Millis) -> &mut Self {
        self.now = T0 + ms_after_t0;
        self
    }

    pub fn later(&mut self, ms: Millis) -> &mut Self {
        self.now += ms;
        self
    }

    pub fn tick(&mut self) -> Vec<Effect> {
        self.send(Event::Tick)
    }

    pub fn status(&self) -> RunStatus {
        self.run.status
    }

    pub fn step(&self, id: &str) -> StepStatus {
        self.run.steps[id].status
    }

    pub fn audit_kinds(&self) -> Vec<String> {
        self.audit.iter().map(|a| a.kind.clone()).collect()
    }

    /// Start the run and confirm every agent start it asks for.
    pub fn start(&mut self) -> Vec<Effect> {
        self.send(Event::Start)
    }

    pub fn agent_started(&mut self, step: &str, upstream: &str) -> Vec<Effect> {
        let attempt = self.run.steps[step].attempt;
        self.send(Event::AgentStarted {
            step: step.into(),
            attempt,
            upstream_run_id: upstream.into(),
        })
    }

    pub fn observe(&mut self, step: &str, obs: AgentObservation) -> Vec<Effect> {
        let s = &self.run.steps[step];
        let poll = s.agent.as_ref().map(|a| a.polls).unwrap_or(0);
        let attempt = s.attempt;
        self.send(Event::AgentObserved {
            step: step.into(),
            attempt,
            poll,
            observation: obs,
        })
    }

    pub fn agent_completes(&mut self, step: &str, output: &str) -> Vec<Effect> {
        self.observe(step, completed(output))
    }

    /// Start, confirm and complete an agent step in one go.
    pub fn run_agent(&mut self, step: &str, upstream: &str, output: &str) -> Vec<Effect> {
        self.agent_started(step, upstream);
        self.agent_completes(step, output)
    }

    pub fn decide_approval(
        &mut self,
        step: &str,
        by: &str,
        decision: ApprovalDecision,
        comment: Option<&str>,
    ) -> Result<Vec<Effect>, Rejection> {
        let id = self.run.steps[step]
            .approval
            .as_ref()
            .expect("approval open")
            .id
            .clone();
        self.try_send(Event::ApprovalDecided {
            approval_id: id,
            by: by.into(),
            decision,
            comment: comment.map(str::to_string),
            groups: vec![],
        })
    }

    pub fn http_ok(&mut self, step: &str, output: Value) -> Vec<Effect> {
        let attempt = self.run.steps[step].attempt;
        self.send(Event::StepSucceeded {
            step: step.into(),
            attempt,
            output,
        })
    }

    pub fn http_err(&mut self, step: &str, error: &str) -> Vec<Effect> {
        let attempt = self.run.steps[step].attempt;
        self.send(Event::StepFailed {
            step: step.into(),
            attempt,
            error: error.into(),
        })
    }
}

pub fn running(turns: u32, tokens: u64) -> AgentObservation {
    AgentObservation {
        status: Some(AgentRunStatus::Running),
        turns,
        tokens,
        ..Default::default()
    }
}

pub fn completed(output: &str) -> AgentObservation {
    AgentObservation {
        status: Some(AgentRunStatus::Completed),
        turns: 12,
        tokens: 1_000,
        cost_usd: 0.5,
        output: Some(output.into()),
        ..Default::default()
    }
}

pub fn failed(reason: &str) -> AgentObservation {
    AgentObservation {
        status: Some(AgentRunStatus::Failed),
        error: Some(reason.into()),
        ..Default::default()
    }
}

/// Steps whose agent run the effects ask to start.
pub fn started_agents(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::StartAgent { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect()
}

pub fn kills(effects: &[Effect]) -> Vec<(String, bool)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::KillAgent { step, force, .. } => Some((step.clone(), *force)),
            _ => None,
        })
        .collect()
}

pub fn emitted(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Emit { event, .. } => Some(event.clone()),
            _ => None,
        })
        .collect()
}

pub fn wake(effects: &[Effect]) -> Option<Millis> {
    effects.iter().find_map(|e| match e {
        Effect::ScheduleWake { at } => Some(*at),
        _ => None,
    })
}
