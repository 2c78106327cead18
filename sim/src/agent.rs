//! The agent service on the virtual clock, and the fault injector in front of it.
//!
//! [`SimAgent`] answers the [`AgentApi`] port the executor uses (start, find by session name,
//! observe, kill, add a message) the way the agent service does (pending, then running with
//! turns, tokens and cost growing, then completed or failed; a kill ends a live run), with
//! every run's course drawn from the seed when it starts. Each step's message carries its
//! odds, e.g. `[sim fail=30 never=10 min=5 max=300]`: 30 % of its runs fail, 10 % never finish
//! on their own (only a step timeout or a cancel ends them), the rest succeed after 5 to 300
//! virtual seconds. It also keeps what the invariants need: every run started per session name
//! and whether it was still live at the end.
//!
//! [`FaultAgent`] is the service as one process reaches it: refused calls (connection refused,
//! HTTP 503) that did nothing, and answers lost after the call took effect (a timeout).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use flowgate_shared::agent::{
    AddMessageResponse, AgentCall, AgentError, KillOutcome, KillResponse, MessageType, RunSummary,
    StartRunResponse,
};
use flowgate_shared::engine::{AgentObservation, AgentStartSpec};
use flowgate_shared::model::{AgentRunStatus, Millis};
use flowgate_shared::runtime::{AgentApi, Clock, ManualClock};

use crate::chaos::{Chaos, FaultCounts, Fuse};

/// Virtual time between two turns of a running agent run.
const TURN_MS: Millis = 20_000;
/// How long a new run stays pending.
const PENDING_MS: Millis = 2_000;

/// The odds a step's message gives its agent runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Script {
    pub fail_percent: i64,
    pub never_percent: i64,
    pub min_secs: i64,
    pub max_secs: i64,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            fail_percent: 0,
            never_percent: 0,
            min_secs: 5,
            max_secs: 60,
        }
    }
}

impl Script {
    /// Read `[sim key=value ...]` from a message; missing keys keep their defaults.
    pub fn parse(message: &str) -> Script {
        let mut script = Script::default();
        let Some(start) = message.find("[sim") else {
            return script;
        };
        let rest = &message[start + 4..];
        let body = rest.split(']').next().unwrap_or_default();
        for pair in body.split_whitespace() {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let Ok(value) = value.parse::<i64>() else {
                continue;
            };
            match key {
                "fail" => script.fail_percent = value,
                "never" => script.never_percent = value,
                "min" => script.min_secs = value,
                "max" => script.max_secs = value,
                _ => {}
            }
        }
        script
    }

    /// The text that [`Script::parse`] reads back.
    pub fn render(&self) -> String {
        format!(
            "[sim fail={} never={} min={} max={}]",
            self.fail_percent, self.never_percent, self.min_secs, self.max_secs
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Completes,
    Fails,
    Never,
}

/// One agent run as the service holds it.
#[derive(Debug, Clone)]
pub struct AgentRun {
    pub id: String,
    pub workflow: String,
    pub session_name: String,
    pub created_at: Millis,
    ends_at: Millis,
    ending: Ending,
    max_turns: Option<u32>,
    pub killed_at: Option<Millis>,
    pub messages: Vec<String>,
}

impl AgentRun {
    pub fn status(&self, now: Millis) -> AgentRunStatus {
        if self.killed_at.is_some_and(|k| k <= now) {
            return AgentRunStatus::Killed;
        }
        if now < self.created_at + PENDING_MS {
            return AgentRunStatus::Pending;
        }
        match self.ending {
            Ending::Never => AgentRunStatus::Running,
            _ if now < self.ends_at => AgentRunStatus::Running,
            Ending::Completes => AgentRunStatus::Completed,
            Ending::Fails => AgentRunStatus::Failed,
        }
    }

    fn turns(&self, now: Millis) -> u32 {
        let until = self.killed_at.map_or(now, |k| k.min(now));
        let until = match self.ending {
            Ending::Never => until,
            _ => until.min(self.ends_at),
        };
        let running = (until - self.created_at - PENDING_MS).max(0);
        let turns = u32::try_from(running / TURN_MS).unwrap_or(u32::MAX);
        match self.max_turns {
            Some(max) => turns.min(max),
            None => turns,
        }
    }

    fn observation(&self, now: Millis) -> AgentObservation {
        let status = self.status(now);
        let turns = self.turns(now);
        let tokens = 500 + u64::from(turns) * 9_000;
        AgentObservation {
            status: Some(status),
            turns,
            max_turns: self.max_turns,
            tokens,
            // Cents per thousand tokens, in dollars: the exact figure does not matter, only
            // that it grows with the work.
            cost_usd: tokens as f64 * 0.000_01,
            phase: (status == AgentRunStatus::Running).then(|| "working".to_string()),
            output: (status == AgentRunStatus::Completed).then(|| format!("done by {}", self.id)),
            error: (status == AgentRunStatus::Failed).then(|| "the task failed".to_string()),
            session_id: Some(format!("session-{}", self.id)),
        }
    }

    fn summary(&self, now: Millis) -> RunSummary {
        RunSummary {
            run_id: self.id.clone(),
            status: self.status(now).as_str().to_string(),
            workflow_name: self.workflow.clone(),
            session_name: Some(self.session_name.clone()),
            turns: Some(self.turns(now)),
            ..RunSummary::default()
        }
    }
}

#[derive(Debug, Default)]
struct State {
    runs: BTreeMap<String, AgentRun>,
    next: u64,
}

/// The agent service, on the virtual clock.
#[derive(Debug)]
pub struct SimAgent {
    clock: Arc<ManualClock>,
    chaos: Arc<Chaos>,
    state: Mutex<State>,
}

fn http(call: AgentCall, status: u16, detail: &str) -> AgentError {
    AgentError::Http {
        call,
        status,
        detail: detail.to_string(),
        attempts: 1,
    }
}

impl SimAgent {
    pub fn new(clock: Arc<ManualClock>, chaos: Arc<Chaos>) -> Self {
        SimAgent {
            clock,
            chaos,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every run the service holds, in start order.
    pub fn runs(&self) -> Vec<AgentRun> {
        let mut runs: Vec<AgentRun> = self.lock().runs.values().cloned().collect();
        runs.sort_by_key(|r| r.id[3..].parse::<u64>().unwrap_or(u64::MAX));
        runs
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }
}

#[async_trait]
impl AgentApi for SimAgent {
    async fn start_run(&self, spec: &AgentStartSpec) -> Result<StartRunResponse, AgentError> {
        let now = self.clock.now_ms();
        let script = Script::parse(&spec.message);
        let roll = self.chaos.between(0, 99);
        let ending = if roll < script.fail_percent {
            Ending::Fails
        } else if roll < script.fail_percent + script.never_percent {
            Ending::Never
        } else {
            Ending::Completes
        };
        let secs = self
            .chaos
            .between(script.min_secs, script.max_secs.max(script.min_secs));
        let mut state = self.lock();
        state.next += 1;
        let id = format!("ar-{}", state.next);
        let run = AgentRun {
            id: id.clone(),
            workflow: spec.workflow.clone(),
            session_name: spec.session_name.clone(),
            created_at: now,
            ends_at: now + PENDING_MS + secs * 1_000,
            ending,
            max_turns: spec.max_turns,
            killed_at: None,
            messages: Vec::new(),
        };
        state.runs.insert(id.clone(), run);
        Ok(StartRunResponse {
            run_id: id,
            status: "pending".into(),
            message: "Workflow started".into(),
            session_id: spec.session_id.clone(),
            workflow_name: spec.workflow.clone(),
            started_at: None,
            auto_commit_sha: None,
        })
    }

    async fn find_run_by_session_name(
        &self,
        workflow: &str,
        session_name: &str,
        _not_before: Option<Millis>,
    ) -> Result<Option<RunSummary>, AgentError> {
        let now = self.clock.now_ms();
        Ok(self
            .lock()
            .runs
            .values()
            .find(|r| r.workflow == workflow && r.session_name == session_name)
            .map(|r| r.summary(now)))
    }

    async fn observe(&self, _workflow: &str, run_id: &str) -> Result<AgentObservation, AgentError> {
        let now = self.clock.now_ms();
        self.lock()
            .runs
            .get(run_id)
            .map(|r| r.observation(now))
            .ok_or_else(|| http(AgentCall::Status, 404, "Run not found"))
    }

    async fn kill_if_active(&self, run_id: &str, _force: bool) -> Result<KillOutcome, AgentError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let run = state
            .runs
            .get_mut(run_id)
            .ok_or_else(|| http(AgentCall::Status, 404, "Run not found"))?;
        let last_status = run.status(now);
        let kill = if matches!(
            last_status,
            AgentRunStatus::Pending | AgentRunStatus::Running
        ) {
            run.killed_at = Some(now);
            Some(KillResponse {
                success: true,
                run_id: run_id.to_string(),
                message: Some("killed".into()),
                ..KillResponse::default()
            })
        } else {
            None
        };
        Ok(KillOutcome {
            last_status: Some(last_status),
            kill,
        })
    }

    async fn add_message(
        &self,
        run_id: &str,
        _message_type: MessageType,
        content: &str,
    ) -> Result<AddMessageResponse, AgentError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let run = state
            .runs
            .get_mut(run_id)
            .ok_or_else(|| http(AgentCall::AddMessage, 404, "Run not found"))?;
        if run.status(now).is_terminal() {
            return Err(http(AgentCall::AddMessage, 400, "Run is not active"));
        }
        run.messages.push(content.to_string());
        Ok(AddMessageResponse {
            success: true,
            message: None,
            queue_size: run.messages.len() as u64,
            run_id: run_id.to_string(),
            queue_stats: Default::default(),
        })
    }
}

/// The agent service as one process reaches it.
#[derive(Debug)]
pub struct FaultAgent {
    pub inner: Arc<SimAgent>,
    pub fuse: Arc<Fuse>,
    pub chaos: Arc<Chaos>,
}

impl FaultAgent {
    fn enter(&self, call: AgentCall) -> Result<(), AgentError> {
        if self.fuse.is_dead() {
            return Err(AgentError::Connect {
                call,
                url: "http://agent.sim".into(),
                message: "simulated crash: the process died".into(),
                attempts: 1,
            });
        }
        if self.chaos.chance(self.chaos.faults.agent_unavailable) {
            FaultCounts::bump(&self.chaos.counts.agent_errors);
            return Err(if self.chaos.chance(0.5) {
                AgentError::Connect {
                    call,
                    url: "http://agent.sim".into(),
                    message: "simulated: connection refused".into(),
                    attempts: 1,
                }
            } else {
                http(call, 503, "simulated: Service Unavailable")
            });
        }
        Ok(())
    }

    fn leave(&self, call: AgentCall) -> Result<(), AgentError> {
        if self.chaos.chance(self.chaos.faults.crash_after_call) {
            FaultCounts::bump(&self.chaos.counts.crashes);
            self.fuse.kill();
            return Err(AgentError::Transport {
                call,
                message: "simulated crash: the process died".into(),
                attempts: 1,
            });
        }
        if self.chaos.chance(self.chaos.faults.agent_answer_lost) {
            FaultCounts::bump(&self.chaos.counts.lost_agent_answers);
            return Err(AgentError::Timeout {
                call,
                timeout: Duration::from_secs(10),
                attempts: 1,
            });
        }
        Ok(())
    }
}

macro_rules! faulty {
    ($self:ident, $call:expr, $op:expr) => {{
        $self.enter($call)?;
        let out = $op.await;
        $self.leave($call)?;
        out
    }};
}

#[async_trait]
impl AgentApi for FaultAgent {
    async fn start_run(&self, spec: &AgentStartSpec) -> Result<StartRunResponse, AgentError> {
        faulty!(self, AgentCall::StartRun, self.inner.start_run(spec))
    }

    async fn find_run_by_session_name(
        &self,
        workflow: &str,
        session_name: &str,
        not_before: Option<Millis>,
    ) -> Result<Option<RunSummary>, AgentError> {
        faulty!(
            self,
            AgentCall::ListRuns,
            self.inner
                .find_run_by_session_name(workflow, session_name, not_before)
        )
    }

    async fn observe(&self, workflow: &str, run_id: &str) -> Result<AgentObservation, AgentError> {
        faulty!(
            self,
            AgentCall::Status,
            self.inner.observe(workflow, run_id)
        )
    }

    async fn kill_if_active(&self, run_id: &str, force: bool) -> Result<KillOutcome, AgentError> {
        faulty!(
            self,
            AgentCall::Kill,
            self.inner.kill_if_active(run_id, force)
        )
    }

    async fn add_message(
        &self,
        run_id: &str,
        message_type: MessageType,
        content: &str,
    ) -> Result<AddMessageResponse, AgentError> {
        faulty!(
            self,
            AgentCall::AddMessage,
            self.inner.add_message(run_id, message_type, content)
        )
    }
}
