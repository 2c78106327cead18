//! Property tests over random DAGs and random event orders with duplicates and losses.
//!
//! A small "world" answers the engine's effects the way the adapters would (an agent service that
//! finds runs by session name, approvers, HTTP endpoints), but delivers the answers shuffled,
//! duplicated, late, or not at all; ticks stand in for the sweeper. Checked on every decision:
//! - a step never starts before its dependencies finished (and, for `when: success`, succeeded);
//! - no approval decision is applied twice, and only approvers' decisions count;
//! - audit sequence numbers are contiguous; a terminal run stays terminal;
//! - one attempt of a step always uses one session name, different attempts different ones.
//!
//! And once the chaos stops and every answer is delivered, the run reaches a terminal status.

use std::collections::{BTreeMap, BTreeSet};

use flowgate_shared::definition::{
    AgentAction, ApprovalAction, Backoff, HttpAction, HttpMethod, RetryPolicy, StepAction, StepDef,
    WaitAction, When, WorkflowDefinition,
};
use flowgate_shared::duration::DurationSpec;
use flowgate_shared::engine::{AgentObservation, Decision, Effect, Event, decide_mut};
use flowgate_shared::model::{
    AgentRunStatus, ApprovalDecision, ApprovalStatus, Millis, Run, RunStatus, StepStatus,
};
use proptest::prelude::*;

/// Deterministic pseudo-random numbers from the case's seed (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn random_definition(rng: &mut Rng) -> WorkflowDefinition {
    let n = 1 + rng.below(8) as usize;
    let mut steps = Vec::new();
    for i in 0..n {
        let id = format!("s{i}");
        let mut depends_on = Vec::new();
        for j in 0..i {
            if rng.chance(35) {
                depends_on.push(format!("s{j}"));
            }
        }
        let action = match rng.below(10) {
            0..=4 => StepAction::Agent(AgentAction {
                workflow: "implement".into(),
                message: format!("do {id}"),
                max_turns: Some(10),
                session: rng.chance(30).then(|| "shared".to_string()),
                repository_url: None,
                git_branch: None,
                budget: None,
            }),
            5 | 6 => StepAction::Approval(ApprovalAction {
                message: "ok?".into(),
                approvers: vec!["alice".into(), "bob".into()],
                required: 1 + rng.below(2) as u32,
                expires_in: rng.chance(30).then(|| DurationSpec::from_secs(600)),
                on_expiry: Default::default(),
                escalate_to: vec![],
                escalate_after: None,
                remind_every: None,
                retry_step: None,
                slack_channel: None,
            }),
            7 | 8 => StepAction::Http(HttpAction {
                method: HttpMethod::Post,
                url: "https://example.test/x".into(),
                headers: BTreeMap::new(),
                body: None,
                expect_status: vec![],
            }),
            _ => StepAction::Wait(WaitAction {
                duration: DurationSpec::from_secs(1 + rng.below(120)),
            }),
        };
        let when = match rng.below(10) {
            0 => When::Failure,
            1 => When::Always,
            _ => When::Success,
        };
        steps.push(StepDef {
            id,
            name: None,
            action,
            depends_on,
            when,
            timeout: rng
                .chance(30)
                .then(|| DurationSpec::from_secs(60 + rng.below(600))),
            retry: rng.chance(40).then(|| RetryPolicy {
                max_attempts: 1 + rng.below(3) as u32,
                backoff: if rng.chance(50) {
                    Backoff::Fixed
                } else {
                    Backoff::Exponential
                },
                initial_delay: DurationSpec::from_secs(1 + rng.below(10)),
                max_delay: DurationSpec::from_secs(30),
            }),
            continue_on_failure: rng.chance(25),
            compensate: rng.chance(25).then(|| {
                StepAction::Http(HttpAction {
                    method: HttpMethod::Delete,
                    url: "https://example.test/undo".into(),
                    headers: BTreeMap::new(),
                    body: None,
                    expect_status: vec![],
                })
            }),
        });
    }
    WorkflowDefinition {
        id: "random".into(),
        name: None,
        description: None,
        inputs: BTreeMap::new(),
        steps,
        triggers: vec![],
        notifications: vec![],
        timeout: rng.chance(20).then(|| DurationSpec::from_secs(3_600)),
        outputs: BTreeMap::new(),
        polling: None,
        budget: None,
        concurrency: None,
    }
}

/// One simulated agent run on the agent service.
struct AgentRun {
    polls_to_finish: u32,
    polls: u32,
    outcome: AgentRunStatus,
    killed: bool,
}

struct World {
    rng: Rng,
    def: WorkflowDefinition,
    run: Run,
    now: Millis,
    /// Answers waiting to be delivered (in any order).
    inbox: Vec<Event>,
    /// Agent runs by session name (the lookup that makes starts idempotent).
    agents: BTreeMap<String, (String, AgentRun)>,
    /// Session names seen per (step, attempt).
    sessions: BTreeMap<(String, u32), BTreeSet<String>>,
    decisions: usize,
    chaos: bool,
    was_terminal: bool,
}

impl World {
    fn apply(&mut self, event: &Event) {
        let before = self.run.clone();
        let mut next = before.clone();
        let d = match decide_mut(&mut next, &self.def, event, self.now) {
            Ok(changes) => {
                // The change flag is exact: it says "changed" iff the run differs.
                let mut same_clock = next.clone();
                same_clock.updated_at = before.updated_at;
                assert_eq!(
                    changes.changed,
                    same_clock != before,
                    "change flag wrong for {event:?}"
                );
                Decision {
                    run: next,
                    effects: changes.effects,
                    audit: changes.audit,
                }
            }
            Err(_) => {
                assert_eq!(next, before, "a refused command changed the run: {event:?}");
                return;
            }
        };
        self.decisions += 1;
        // The stored wake-up may be early (it is not moved on every write) but never late,
        // and never missing while something is due.
        let exact = flowgate_shared::engine::wake_at(&d.run, &self.def);
        match (d.run.wake_at, exact) {
            (Some(stored), Some(exact)) => assert!(
                stored <= exact,
                "wake_at {stored} after the exact {exact} for {event:?}"
            ),
            (None, Some(exact)) => panic!("no wake_at, though due at {exact} for {event:?}"),
            _ => {}
        }
        // Audit sequence is contiguous.
        for (i, a) in d.audit.iter().enumerate() {
            assert_eq!(a.seq, before.audit_seq + i as u64, "audit gap");
        }
        assert_eq!(d.run.audit_seq, before.audit_seq + d.audit.len() as u64);
        // A terminal run stays terminal.
        if self.was_terminal {
            assert!(
                d.run.status.is_terminal(),
                "a finished run was reopened by {event:?}"
            );
        }
        // Approval decisions: at most one per person, only by approvers.
        for s in d.run.steps.values() {
            if let Some(a) = &s.approval {
                let people: BTreeSet<&str> = a.decisions.iter().map(|d| d.by.as_str()).collect();
                assert_eq!(
                    people.len(),
                    a.decisions.len(),
                    "a decision was applied twice"
                );
                for dec in &a.decisions {
                    assert!(
                        a.approvers.contains(&dec.by),
                        "{} decided without being an approver",
                        dec.by
                    );
                }
            }
        }
        for e in &d.effects {
            self.check_start_order(e, &d.run);
            self.perform(e, &d.run);
        }
        self.run = d.run;
        self.was_terminal = self.run.status.is_terminal();
    }

    /// A step's work starts only after its dependencies finished as its `when` requires.
    fn check_start_order(&self, e: &Effect, run: &Run) {
        let step = match e {
            Effect::StartAgent { step, .. }
            | Effect::RequestApproval { step, .. }
            | Effect::CallHttp { step, .. }
            | Effect::Notify { step, .. } => step,
            _ => return,
        };
        let Some(d) = self.def.step(step) else { return };
        for dep in &d.depends_on {
            let st = run.steps[dep].status;
            assert!(st.is_terminal(), "{step} started while {dep} is {st}");
            if d.when == When::Success {
                assert_eq!(st, StepStatus::Succeeded, "{step} started after {dep} {st}");
            }
        }
    }

    fn perform(&mut self, e: &Effect, run: &Run) {
        match e {
            Effect::StartAgent {
                step,
                attempt,
                spec,
                ..
            } => {
                let names = self.sessions.entry((step.clone(), *attempt)).or_default();
                names.insert(spec.session_name.clone());
                assert_eq!(names.len(), 1, "one attempt, one session name");
                let answer = if self.rng.chance(5) {
                    Event::AgentStartFailed {
                        step: step.clone(),
                        attempt: *attempt,
                        error: "503".into(),
                    }
                } else {
                    let n = self.agents.len();
                    let outcome = match self.rng.below(10) {
                        0 | 1 => AgentRunStatus::Failed,
                        _ => AgentRunStatus::Completed,
                    };
                    let polls_to_finish = self.rng.below(4) as u32;
                    let (id, _) = self.agents.entry(spec.session_name.clone()).or_insert((
                        format!("up-{n}"),
                        AgentRun {
                            polls_to_finish,
                            polls: 0,
                            outcome,
                            killed: false,
                        },
                    ));
                    Event::AgentStarted {
                        step: step.clone(),
                        attempt: *attempt,
                        upstream_run_id: id.clone(),
                    }
                };
                self.post(answer);
            }
            Effect::PollAgent {
                step,
                attempt,
                upstream_run_id,
                poll,
                ..
            } => {
                let Some((_, a)) = self
                    .agents
                    .values_mut()
                    .find(|(id, _)| id == upstream_run_id)
                else {
                    return;
                };
                a.polls += 1;
                let status = if a.killed {
                    AgentRunStatus::Killed
                } else if a.polls > a.polls_to_finish {
                    a.outcome
                } else {
                    AgentRunStatus::Running
                };
                let obs = AgentObservation {
                    status: Some(status),
                    turns: a.polls,
                    tokens: u64::from(a.polls) * 100,
                    output: (status == AgentRunStatus::Completed).then(|| "done".into()),
                    error: (status == AgentRunStatus::Failed).then(|| "tests failed".into()),
                    ..Default::default()
                };
                self.post(Event::AgentObserved {
                    step: step.clone(),
                    attempt: *attempt,
                    poll: *poll,
                    observation: obs,
                });
            }
            Effect::KillAgent {
                step,
                attempt,
                upstream_run_id,
                session_name,
                ..
            } => {
                let found = self.agents.iter_mut().find(|(name, (id, _))| {
                    Some(id) == upstream_run_id.as_ref() || *name == session_name
                });
                if let Some((_, (_, a))) = found {
                    a.killed = true;
                }
                self.post(Event::AgentKilled {
                    step: step.clone(),
                    attempt: *attempt,
                });
            }
            Effect::CallHttp { step, attempt, .. } | Effect::Notify { step, attempt, .. } => {
                let answer = if self.rng.chance(25) {
                    Event::StepFailed {
                        step: step.clone(),
                        attempt: *attempt,
                        error: "500".into(),
                    }
                } else {
                    Event::StepSucceeded {
                        step: step.clone(),
                        attempt: *attempt,
                        output: serde_json::Value::Null,
                    }
                };
                self.post(answer);
            }
            Effect::Compensate { step, .. } => {
                let ok = self.rng.chance(80);
                self.post(Event::CompensationFinished {
                    step: step.clone(),
                    ok,
                    error: (!ok).then(|| "undo failed".into()),
                });
            }
            Effect::RequestApproval { .. } => self.answer_approvals(run),
            _ => {}
        }
    }

    /// Approvers act on what is pending (as a person reading the API would), sometimes people
    /// who may not decide try too, and sometimes someone clicks twice.
    fn answer_approvals(&mut self, run: &Run) {
        for s in run.steps.values() {
            let Some(a) = &s.approval else { continue };
            if a.status != ApprovalStatus::Pending {
                continue;
            }
            let who = match self.rng.below(5) {
                0 => "mallory",
                1 | 2 => "alice",
                _ => "bob",
            };
            let decision = if self.rng.chance(20) {
                ApprovalDecision::Reject
            } else {
                ApprovalDecision::Approve
            };
            let e = Event::ApprovalDecided {
                approval_id: a.id.clone(),
                by: who.into(),
                decision,
                comment: None,
                groups: vec![],
            };
            self.post(e.clone());
            if self.rng.chance(30) {
                self.post(e);
            }
        }
    }

    fn post(&mut self, e: Event) {
        if self.chaos && self.rng.chance(10) {
            return; // lost: the tick path must recover
        }
        self.inbox.push(e.clone());
        if self.chaos && self.rng.chance(15) {
            self.inbox.push(e); // duplicated
        }
    }

    /// Deliver one answer (random order), or let time pass and tick.
    fn step_once(&mut self) {
        if !self.inbox.is_empty() && (self.inbox.len() > 3 || self.rng.chance(85)) {
            let i = if self.chaos {
                self.rng.below(self.inbox.len() as u64) as usize
            } else {
                0
            };
            let e = self.inbox.remove(i);
            self.apply(&e);
            return;
        }
        // Time passes up to the next wake-up (the sweeper's job), or a bit.
        let target = self
            .run
            .wake_at
            .unwrap_or(self.now + 1_000)
            .max(self.now + 1);
        self.now = target;
        self.apply(&Event::Tick);
        if self.rng.chance(10) {
            self.answer_approvals(&self.run.clone());
        }
        if self.chaos && self.rng.chance(3) && !self.run.status.is_terminal() {
            let force = self.rng.chance(50);
            self.apply(&Event::CancelRequested {
                by: "alice".into(),
                reason: None,
                force,
            });
        }
    }
}

/// What one simulated case did, for the coverage check below.
struct Outcome {
    status: RunStatus,
    decisions: usize,
    steps: usize,
}

fn simulate(seed: u64) -> Outcome {
    let mut rng = Rng(seed);
    let def = random_definition(&mut rng);
    let run = Run::new("run", &def, 1, Default::default(), 1_000_000);
    let mut w = World {
        rng,
        def,
        run,
        now: 1_000_000,
        inbox: Vec::new(),
        agents: BTreeMap::new(),
        sessions: BTreeMap::new(),
        decisions: 0,
        chaos: true,
        was_terminal: false,
    };
    w.apply(&Event::Start);
    // Duplicated start.
    if w.rng.chance(30) {
        w.apply(&Event::Start);
    }
    let chaos_steps = w.rng.below(60);
    for _ in 0..chaos_steps {
        w.step_once();
    }
    // The events stop misbehaving: everything is delivered, in order, and time moves on.
    w.chaos = false;
    for _ in 0..2_000 {
        // A finished run may still have kills to confirm (one lost in the chaos is issued
        // again on a tick); it is done when they are.
        if w.run.status.is_terminal() && w.inbox.is_empty() && w.run.pending_kills.is_empty() {
            break;
        }
        w.step_once();
    }
    assert!(
        w.run.status.is_terminal(),
        "seed {seed}: run stuck in {} after {} decisions; steps {:?}",
        w.run.status,
        w.decisions,
        w.run
            .steps
            .iter()
            .map(|(k, s)| (k.clone(), s.status))
            .collect::<Vec<_>>()
    );
    assert!(
        w.run.pending_kills.is_empty(),
        "seed {seed}: kills never confirmed: {:?}",
        w.run.pending_kills
    );
    assert!(w.run.wake_at.is_none(), "a finished run needs no wake-up");
    if w.run.status == RunStatus::Succeeded {
        for d in &w.def.steps {
            let st = w.run.steps[&d.id].status;
            assert!(st.is_terminal(), "{} is {st} in a succeeded run", d.id);
        }
    }
    Outcome {
        status: w.run.status,
        decisions: w.decisions,
        steps: w.def.steps.len(),
    }
}

/// The generator is not degenerate: over many seeds the runs end in every terminal status and
/// take real work to get there.
#[test]
fn the_simulation_covers_every_ending() {
    let mut ends = BTreeMap::new();
    let mut decisions = 0;
    let mut steps = 0;
    for seed in 0..2_000 {
        let o = simulate(seed);
        *ends.entry(o.status).or_insert(0) += 1;
        decisions += o.decisions;
        steps += o.steps;
    }
    eprintln!("endings over 2000 seeds: {ends:?}; {decisions} decisions; {steps} steps");
    for status in [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::TimedOut,
    ] {
        assert!(
            ends.get(&status).copied().unwrap_or(0) > 0,
            "no run ended {status}: {ends:?}"
        );
    }
    assert!(
        decisions > 2_000 * 10,
        "too little happened: {decisions} decisions"
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("FLOWGATE_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random DAGs, random event orders with duplicates and losses: every invariant holds on
    /// every decision, and every run ends.
    #[test]
    fn random_runs_keep_the_invariants_and_terminate(seed in any::<u64>()) {
        let _ = simulate(seed);
    }
}

/// The checker can fail: a world that wrongly lets a step start early is caught.
#[test]
#[should_panic(expected = "started while")]
fn the_start_order_check_catches_a_violation() {
    let mut rng = Rng(7);
    let mut def = random_definition(&mut rng);
    def.steps.truncate(1);
    def.steps.push(StepDef {
        id: "late".into(),
        depends_on: vec![def.steps[0].id.clone()],
        ..def.steps[0].clone()
    });
    let run = Run::new("run", &def, 1, Default::default(), 0);
    let w = World {
        rng,
        def,
        run: run.clone(),
        now: 0,
        inbox: vec![],
        agents: BTreeMap::new(),
        sessions: BTreeMap::new(),
        decisions: 0,
        chaos: false,
        was_terminal: false,
    };
    let bogus = Effect::Notify {
        step: "late".into(),
        attempt: 1,
        message: String::new(),
        slack_channel: None,
        webhook_url: None,
    };
    w.check_start_order(&bogus, &run);
}
