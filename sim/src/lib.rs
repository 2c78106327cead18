//! Seeded whole-system simulation.
//!
//! One seed builds a world and runs it to the end on a virtual clock:
//!
//! - the real store (the embedded redb store, in memory), a delay queue with SQS's semantics
//!   and an agent service, all on the virtual clock ([`queue::SimQueue`], [`agent::SimAgent`]);
//! - five processes, each with its own fuse and its own fault-injecting view of those
//!   ([`store::FaultStore`], [`queue::FaultQueue`], [`agent::FaultAgent`]) and its own
//!   [`Executor`]: the poller (messages go through `flowgate_poller::handle_batch`, the
//!   Lambda handler, as one-record SQS batches), a second poller instance that races it, the
//!   API (starts, cancels, feedback, retries), the approvals function (decisions, as its
//!   handlers record them) and the triggers function (the one-minute sweep, scheduled starts);
//! - random workflows and people ([`scenario`]): starts repeated by impatient clients, approvals
//!   answered late, twice, by the wrong person or not at all, cancels, feedback, retries;
//! - faults ([`chaos::Faults`]): a crash after any I/O call, store errors, races on the
//!   conditional write, duplicated, delayed and reordered messages, lost send answers, agent
//!   service errors and lost answers, Slack and webhook receivers down.
//!
//! Everything runs inline on one thread in an order the seed decides, so a seed replays
//! exactly; the invariants ([`check`]) are checked when the world is quiet (every run
//! finished, nothing queued) or the virtual time runs out.

pub mod agent;
pub mod chaos;
pub mod check;
pub mod queue;
pub mod scenario;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use flowgate_shared::adapters::embedded::EmbeddedStore;
use flowgate_shared::definition::StoredWorkflow;
use flowgate_shared::engine::Event;
use flowgate_shared::model::{ApprovalDecision, ApprovalStatus, Millis, Run, RunStatus};
use flowgate_shared::notify::webhooks::NewSubscription;
use flowgate_shared::notify::{LinkConfig, Notifier};
use flowgate_shared::ports::{RecordStore, RunQuery, RunStore, WorkflowStore};
use flowgate_shared::runtime::{
    AgentApi, Clock, CommandError, Executor, ManualClock, NewRun, SchedulePorts, SweepPorts,
    fire_schedule, start_run, sweep_all,
};
use flowgate_shared::schedule::{format_time, schedules_of};
use flowgate_shared::slack::{SlackClient, SlackConfig};

use crate::agent::{FaultAgent, SimAgent};
use crate::chaos::{Chaos, Faults, Fuse};
use crate::check::{Click, Evidence, Violation};
use crate::queue::{FaultQueue, SimQueue};
use crate::scenario::{APPROVERS, STARTER, STRANGER, Scenario, WorkflowSpec};
use crate::store::{FaultStore, Interloper};

/// Where the virtual clock starts: fixed (so a seed replays), and after today, because stores
/// expire records by the wall clock (as DynamoDB's TTL does) and records written on a clock
/// behind it would expire at once.
pub const EPOCH: Millis = 1_893_456_000_000; // 2030-01-01T00:00:00Z

/// The sweeper's period. Production sweeps every minute; the simulation every five, which
/// only makes recovery slower (and so harder on the invariants) while a seed spends less of
/// its time on idle sweeps.
const SWEEP_EVERY_MS: Millis = 300_000;
/// Virtual time after which a seed stops whatever is left (longer than any run may take).
const HORIZON_MS: Millis = 3 * 24 * 3_600_000;
/// An address nothing listens on: Slack and the webhook receiver when they are "down".
const DOWN_URL: &str = "http://127.0.0.1:9";

/// A bug put in on purpose, to prove the checks catch what they claim to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// The agent service's run list never shows runs, so the executor cannot find the run an
    /// earlier attempt started before its answer was lost, and starts another.
    HideAgentRuns,
    /// The approvals process records decisions without asking the engine, so nobody checks
    /// who decides.
    UncheckedApprovals,
    /// The triggers function never sweeps, so work lost to a crash is never found again.
    NoSweeper,
}

/// How to run seeds.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub faults: Faults,
    /// Actions per seed before it counts as a livelock.
    pub max_actions: usize,
    pub sabotage: Option<Sabotage>,
    /// Keep every run's audit log in the outcome (for replaying one seed).
    pub keep_audit: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            faults: Faults::standard(),
            max_actions: 50_000,
            sabotage: None,
            keep_audit: false,
        }
    }
}

/// What one seed did and found.
#[derive(Debug)]
pub struct SeedOutcome {
    pub seed: u64,
    pub violations: Vec<Violation>,
    pub runs: usize,
    pub agent_runs: usize,
    pub actions: usize,
    pub messages_delivered: u64,
    pub faults: Vec<(&'static str, u64)>,
    pub virtual_ms: Millis,
    /// One line per run (status, how long it took, its steps), for replaying a seed.
    pub run_lines: Vec<String>,
}

impl SeedOutcome {
    fn panicked(seed: u64, panic: &Box<dyn std::any::Any + Send>) -> Self {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into());
        SeedOutcome {
            seed,
            violations: vec![Violation {
                invariant: "nothing panics",
                detail: message,
            }],
            runs: 0,
            agent_runs: 0,
            actions: 0,
            messages_delivered: 0,
            faults: Vec::new(),
            virtual_ms: 0,
            run_lines: Vec::new(),
        }
    }
}

fn describe(run: &Run) -> String {
    let took = run.completed_at.map(|c| (c - run.created_at) / 1_000);
    let steps: Vec<String> = run
        .steps
        .iter()
        .map(|(id, s)| format!("{id}={}#{}", s.status, s.attempt))
        .collect();
    format!(
        "{} {} {} after {:?} s by {:?}, wake_at {:?}, pending kills {:?}: {}{}",
        run.id,
        run.workflow_id,
        run.status,
        took,
        run.started_by,
        run.wake_at.map(|w| (w - EPOCH) / 1_000),
        run.pending_kills
            .iter()
            .map(|k| format!("{}#{} tries {}", k.step, k.attempt, k.tries))
            .collect::<Vec<_>>(),
        steps.join(" "),
        run.error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    )
}

/// One "process" (a Lambda instance, or `flowgate serve`): its fuse, its faulty view of the
/// world, and an executor over that view.
struct Process {
    fuse: Arc<Fuse>,
    store: Arc<FaultStore>,
    queue: Arc<FaultQueue>,
    executor: Executor,
}

impl Process {
    /// A crashed process is replaced by a fresh one; true if it had crashed.
    fn restart_if_dead(&self) -> bool {
        let dead = self.fuse.is_dead();
        if dead {
            self.fuse.restart();
        }
        dead
    }
}

/// The pieces every process shares.
struct Shared {
    chaos: Arc<Chaos>,
    clock: Arc<ManualClock>,
    raw: Arc<EmbeddedStore>,
    queue: Arc<SimQueue>,
    agent: Arc<SimAgent>,
    /// Slack, when the seed has it configured (and unreachable).
    slack: Option<SlackClient>,
}

/// The agent service as a process sees it, sabotaged or not.
struct HidingAgent(FaultAgent);

#[async_trait]
impl AgentApi for HidingAgent {
    async fn start_run(
        &self,
        spec: &flowgate_shared::engine::AgentStartSpec,
    ) -> Result<flowgate_shared::agent::StartRunResponse, flowgate_shared::agent::AgentError> {
        self.0.start_run(spec).await
    }
    async fn find_run_by_session_name(
        &self,
        _workflow: &str,
        _session_name: &str,
        _not_before: Option<Millis>,
    ) -> Result<Option<flowgate_shared::agent::RunSummary>, flowgate_shared::agent::AgentError>
    {
        Ok(None)
    }
    async fn observe(
        &self,
        workflow: &str,
        run_id: &str,
    ) -> Result<flowgate_shared::engine::AgentObservation, flowgate_shared::agent::AgentError> {
        self.0.observe(workflow, run_id).await
    }
    async fn kill_if_active(
        &self,
        run_id: &str,
        force: bool,
    ) -> Result<flowgate_shared::agent::KillOutcome, flowgate_shared::agent::AgentError> {
        self.0.kill_if_active(run_id, force).await
    }
    async fn add_message(
        &self,
        run_id: &str,
        message_type: flowgate_shared::agent::MessageType,
        content: &str,
    ) -> Result<flowgate_shared::agent::AddMessageResponse, flowgate_shared::agent::AgentError>
    {
        self.0.add_message(run_id, message_type, content).await
    }
}

fn process(shared: &Shared, sabotage: Option<Sabotage>) -> Process {
    let fuse = Arc::new(Fuse::default());
    let store = Arc::new(FaultStore::new(
        shared.raw.clone(),
        fuse.clone(),
        shared.chaos.clone(),
    ));
    let queue = Arc::new(FaultQueue {
        inner: shared.queue.clone(),
        fuse: fuse.clone(),
        chaos: shared.chaos.clone(),
    });
    let faulty_agent = FaultAgent {
        inner: shared.agent.clone(),
        fuse: fuse.clone(),
        chaos: shared.chaos.clone(),
    };
    let agent: Arc<dyn AgentApi> = if sabotage == Some(Sabotage::HideAgentRuns) {
        Arc::new(HidingAgent(faulty_agent))
    } else {
        Arc::new(faulty_agent)
    };
    let records: Arc<dyn RecordStore> = store.clone();
    // One Slack client for every process of the seed (a client reads the root certificates
    // when built, which would otherwise be most of a seed's time). Receivers that are down are
    // given up on within minutes, not the default three days: the policy is configuration;
    // what matters here is that giving up harms no run.
    let notifier = Arc::new(
        Notifier::new(
            records,
            shared.slack.clone(),
            shared.slack.as_ref().map(|_| "#sim".to_string()),
            LinkConfig::default(),
        )
        .with_webhook_backoff(vec![
            Duration::from_secs(5),
            Duration::from_secs(60),
            Duration::from_secs(300),
        ]),
    );
    let executor = match Executor::new(
        store.clone(),
        store.clone(),
        queue.clone(),
        agent,
        shared.clock.clone(),
    ) {
        Ok(executor) => executor.with_notifier(notifier),
        Err(e) => panic!("cannot build an executor: {e}"),
    };
    Process {
        fuse,
        store,
        queue,
        executor,
    }
}

/// Deliver queue message `id` to `process` as the SQS event source mapping would: one
/// record, through the poller's Lambda handler; delete it unless the handler reported it
/// failed or the process died before answering (then it comes back after the visibility
/// timeout).
async fn deliver(process: &Process, queue: &SimQueue, id: u64) {
    let Some(received) = queue.take(id) else {
        return;
    };
    let mut record = SqsMessage::default();
    record.message_id = Some(format!("m-{id}"));
    record.receipt_handle = Some(received.receipt.clone());
    record.body = serde_json::to_string(&received.message).ok();
    record.attributes.insert(
        "ApproximateReceiveCount".into(),
        received.receive_count.to_string(),
    );
    record.event_source = Some("aws:sqs".into());
    let mut event = SqsEvent::default();
    event.records = vec![record];
    let response = flowgate_poller::handle_batch(&process.executor, event).await;
    if process.restart_if_dead() {
        return;
    }
    if response.batch_item_failures.is_empty() {
        queue.delete(&received.receipt);
    }
}

/// The second poller instance: handles a message of the run whose write is about to be
/// raced.
struct Racer {
    process: Process,
    queue: Arc<SimQueue>,
}

#[async_trait]
impl Interloper for Racer {
    async fn interfere(&self, run_id: &str) {
        if let Some(id) = self.queue.visible_for(run_id).first() {
            deliver(&self.process, &self.queue, *id).await;
        }
    }
}

/// Something a person, a client or a scheduler does at a given time.
#[derive(Debug, Clone)]
enum Action {
    /// (Re)send start request `plan` (a retry after an error, or a deliberate repeat).
    Start {
        plan: usize,
    },
    Cancel {
        plan: usize,
        force: bool,
    },
    Feedback {
        plan: usize,
    },
    Click {
        run_id: String,
        approval_id: String,
        by: String,
        decision: ApprovalDecision,
    },
    Retry {
        run_id: String,
    },
    Fire {
        plan: usize,
    },
}

#[derive(Debug)]
struct Due {
    at: Millis,
    action: Action,
}

/// The driver's state for one seed.
struct Sim {
    config: SimConfig,
    shared: Shared,
    poller: Process,
    api: Process,
    approvals: Process,
    triggers: Process,
    scenario: Scenario,
    specs: BTreeMap<String, WorkflowSpec>,
    stored: BTreeMap<String, StoredWorkflow>,
    due: Vec<Due>,
    /// Run id each start plan got (the first answer).
    plan_runs: BTreeMap<usize, String>,
    started: BTreeMap<String, Vec<String>>,
    clicks: Vec<Click>,
    seen_approvals: BTreeSet<String>,
    retried: BTreeSet<String>,
    next_sweep: Millis,
    next_look: Millis,
    actions: usize,
    violations: Vec<Violation>,
}

impl Sim {
    fn now(&self) -> Millis {
        self.shared.clock.now_ms()
    }

    fn later(&mut self, after: Millis, action: Action) {
        let at = self.now() + after;
        self.due.push(Due { at, action });
    }

    fn chaos(&self) -> &Chaos {
        &self.shared.chaos
    }

    async fn perform(&mut self, action: Action) {
        match action {
            Action::Start { plan } => self.start(plan).await,
            Action::Cancel { plan, force } => {
                if let Some(run_id) = self.plan_runs.get(&plan).cloned() {
                    let event = Event::CancelRequested {
                        by: STARTER.into(),
                        reason: Some("changed my mind".into()),
                        force,
                    };
                    let result = self.api.executor.command(&run_id, event).await;
                    if self.api.restart_if_dead() || retryable(&result) {
                        self.later(
                            self.chaos().between(1, 30) * 1_000,
                            action_cancel(plan, force),
                        );
                    }
                }
            }
            Action::Feedback { plan } => {
                if let Some(run_id) = self.plan_runs.get(&plan).cloned() {
                    let event = Event::FeedbackSent {
                        step: None,
                        by: STARTER.into(),
                        content: "also add a test for the empty case".into(),
                        message_type: "user".into(),
                    };
                    let _ = self.api.executor.command(&run_id, event).await;
                    self.api.restart_if_dead();
                }
            }
            Action::Click {
                run_id,
                approval_id,
                by,
                decision,
            } => self.click(run_id, approval_id, by, decision).await,
            Action::Retry { run_id } => {
                let event = Event::RetryRequested {
                    by: STARTER.into(),
                    from_step: None,
                };
                let result = self.api.executor.command(&run_id, event).await;
                if self.api.restart_if_dead() || retryable(&result) {
                    self.later(
                        self.chaos().between(5, 60) * 1_000,
                        Action::Retry { run_id },
                    );
                }
            }
            Action::Fire { plan } => self.fire(plan).await,
        }
    }

    async fn start(&mut self, plan: usize) {
        let spec = self.scenario.starts[plan].clone();
        let now = self.now();
        let store = &*self.api.store;
        let result = start_run(
            store,
            store,
            &*self.api.queue,
            store,
            now,
            NewRun {
                workflow_id: spec.workflow.clone(),
                idempotency_key: Some(spec.idempotency_key.clone()),
                started_by: Some(STARTER.into()),
                ..NewRun::default()
            },
        )
        .await;
        let crashed = self.api.restart_if_dead();
        match result {
            Ok(started) if !crashed => {
                self.started
                    .entry(spec.idempotency_key.clone())
                    .or_default()
                    .push(started.run_id.clone());
                let first = !self.plan_runs.contains_key(&plan);
                self.plan_runs.entry(plan).or_insert(started.run_id);
                if first {
                    if let Some(after) = spec.repeat_after {
                        self.later(after, Action::Start { plan });
                    }
                    if let Some((after, force)) = spec.cancel_after {
                        self.later(after, action_cancel(plan, force));
                    }
                    if let Some(after) = spec.feedback_after {
                        self.later(after, Action::Feedback { plan });
                    }
                }
            }
            Err(e) if !crashed && !e.is_retryable() => {
                self.violations.push(Violation {
                    invariant: "valid starts are accepted",
                    detail: format!("start {plan} of {} was refused: {e}", spec.workflow),
                });
            }
            // The answer never came (crash) or said "try again": the client retries with the
            // same key.
            _ => {
                let wait = self.chaos().between(1, 10) * 1_000;
                self.later(wait, Action::Start { plan });
            }
        }
    }

    async fn fire(&mut self, plan: usize) {
        let fire = self.scenario.fires[plan].clone();
        let Some(entry) = self
            .stored
            .get(&fire.workflow)
            .and_then(|s| schedules_of(s).into_iter().next())
        else {
            return;
        };
        let mut start = entry.target;
        start.scheduled_time = Some(format_time(crate::EPOCH + fire.at));
        let store = &*self.triggers.store;
        let ports = SchedulePorts {
            store,
            workflows: store,
            queue: &*self.triggers.queue,
            records: store,
        };
        let result = fire_schedule(ports, &start, self.now()).await;
        let crashed = self.triggers.restart_if_dead();
        if crashed || result.as_ref().is_err_and(|e| e.is_retryable()) {
            // EventBridge Scheduler retries a failed delivery.
            self.later(self.chaos().between(1, 60) * 1_000, Action::Fire { plan });
        }
    }

    async fn click(
        &mut self,
        run_id: String,
        approval_id: String,
        by: String,
        decision: ApprovalDecision,
    ) {
        let comment = (decision == ApprovalDecision::Reject).then(|| "not like this".to_string());
        let result = if self.config.sabotage == Some(Sabotage::UncheckedApprovals) {
            self.unchecked_decision(&run_id, &approval_id, &by, decision)
                .await
        } else {
            let event = Event::ApprovalDecided {
                approval_id: approval_id.clone(),
                by: by.clone(),
                decision,
                comment,
                groups: Vec::new(),
            };
            self.approvals
                .executor
                .command_deferred(&run_id, event)
                .await
                .map(|_| ())
        };
        let crashed = self.approvals.restart_if_dead();
        let accepted = result.is_ok() && !crashed;
        self.clicks.push(Click {
            approval_id: approval_id.clone(),
            by: by.clone(),
            accepted,
        });
        // Slack shows an error: the person clicks again a little later.
        if (crashed || retryable(&result)) && self.chaos().chance(0.9) {
            self.later(
                self.chaos().between(2, 60) * 1_000,
                Action::Click {
                    run_id,
                    approval_id,
                    by,
                    decision,
                },
            );
        }
    }

    /// [`Sabotage::UncheckedApprovals`]: write a decision straight into the audit log, as a
    /// broken approvals handler that trusted the click would.
    async fn unchecked_decision(
        &self,
        run_id: &str,
        approval_id: &str,
        by: &str,
        decision: ApprovalDecision,
    ) -> Result<(), CommandError> {
        let store = &self.shared.raw;
        let Some(run) = store.get_run(run_id).await.ok().flatten() else {
            return Err(CommandError::NotFound(run_id.to_string()));
        };
        let step = approval_id.split('.').nth(1).unwrap_or_default();
        let mut next = run.clone();
        next.audit_seq += 1;
        next.version += 1;
        let entry = flowgate_shared::model::AuditEntry {
            run_id: run.id.clone(),
            seq: run.audit_seq,
            at: self.now(),
            actor: by.to_string(),
            kind: "approval.decided".into(),
            step_id: Some(step.to_string()),
            attempt: None,
            message: format!("{by} chose {decision}"),
            data: serde_json::json!({"approval_id": approval_id, "decision": decision}),
        };
        store
            .put_run(&next, run.version, &[entry])
            .await
            .map_err(|e| CommandError::Exec(e.into()))
    }

    /// A person looks at Slack and the dashboard: answers new approvals (or deliberately not),
    /// retries some failed runs.
    async fn look(&mut self) {
        let runs = all_runs(&self.shared.raw).await;
        for run in runs {
            if run.status == RunStatus::Failed
                && !self.retried.contains(&run.id)
                && run.started_by.as_deref() == Some(STARTER)
            {
                self.retried.insert(run.id.clone());
                if self.chaos().chance(0.25) {
                    let after = self.chaos().between(10, 300) * 1_000;
                    self.later(
                        after,
                        Action::Retry {
                            run_id: run.id.clone(),
                        },
                    );
                }
            }
            if run.status.is_terminal() {
                continue;
            }
            for (step_id, step) in &run.steps {
                let Some(approval) = &step.approval else {
                    continue;
                };
                if approval.status != ApprovalStatus::Pending
                    || !self.seen_approvals.insert(approval.id.clone())
                {
                    continue;
                }
                self.plan_clicks(&run, step_id, approval.id.clone(), approval.expires_at);
            }
        }
    }

    fn plan_clicks(
        &mut self,
        run: &Run,
        step_id: &str,
        approval_id: String,
        expires_at: Option<Millis>,
    ) {
        let allowed = self
            .specs
            .get(&run.workflow_id)
            .and_then(|s| s.approvers.get(step_id))
            .cloned()
            .unwrap_or_default();
        let required = run
            .steps
            .get(step_id)
            .and_then(|s| s.approval.as_ref())
            .map_or(1, |a| a.required as usize);
        // Some approvals with an expiry are left to expire.
        if expires_at.is_some() && self.chaos().chance(0.25) {
            return;
        }
        let decision = if self.chaos().chance(0.2) {
            ApprovalDecision::Reject
        } else {
            ApprovalDecision::Approve
        };
        let mut people: Vec<String> = Vec::new();
        let first = self.chaos().index(allowed.len().max(1));
        for k in 0..required.min(allowed.len()) {
            people.push(allowed[(first + k) % allowed.len()].clone());
        }
        if self.chaos().chance(0.1) {
            people.push(STRANGER.into());
        }
        if self.chaos().chance(0.1) {
            people.push(STARTER.into());
        }
        if self.chaos().chance(0.05) {
            // An approver of another step (allowed elsewhere, not here).
            let other = APPROVERS[self.chaos().index(APPROVERS.len())];
            people.push(other.into());
        }
        for by in people {
            let clicks = if self.chaos().chance(0.15) { 2 } else { 1 };
            for _ in 0..clicks {
                let after = self.chaos().between(1, 1_200) * 1_000;
                self.later(
                    after,
                    Action::Click {
                        run_id: run.id.clone(),
                        approval_id: approval_id.clone(),
                        by: by.clone(),
                        decision,
                    },
                );
            }
        }
    }

    async fn sweep(&mut self) {
        if self.config.sabotage == Some(Sabotage::NoSweeper) {
            return;
        }
        let store = &*self.triggers.store;
        let ports = SweepPorts {
            store,
            workflows: store,
            queue: &*self.triggers.queue,
            records: store,
            scheduler: None,
        };
        let _ = sweep_all(ports, self.now(), 100).await;
        self.triggers.restart_if_dead();
    }

    /// Whether nothing is left to happen: no message, no planned action, every run finished
    /// and none still due for the sweeper (a finished run is, while a kill is unconfirmed).
    async fn quiet(&self) -> bool {
        self.shared.queue.is_empty()
            && self.due.is_empty()
            && all_runs(&self.shared.raw)
                .await
                .iter()
                .all(|r| r.status.is_terminal() && r.due_at().is_none())
    }

    async fn run(&mut self) {
        let end = EPOCH + HORIZON_MS;
        loop {
            if self.actions >= self.config.max_actions {
                self.violations.push(Violation {
                    invariant: "the system comes to rest",
                    detail: format!(
                        "{} actions and still busy (a livelock?)",
                        self.config.max_actions
                    ),
                });
                return;
            }
            let now = self.now();
            if now >= end {
                return;
            }
            let visible = self.shared.queue.visible();
            let due: Vec<usize> = (0..self.due.len())
                .filter(|i| self.due[*i].at <= now)
                .collect();
            let sweep_due = now >= self.next_sweep;
            let look_due = now >= self.next_look;
            let choices =
                visible.len() + due.len() + usize::from(sweep_due) + usize::from(look_due);
            if choices == 0 {
                if self.quiet().await {
                    return;
                }
                let next = [
                    self.shared.queue.next_visible_at(),
                    self.due.iter().map(|d| d.at).min(),
                    Some(self.next_sweep),
                    Some(self.next_look),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end);
                self.shared.clock.set(next.max(now + 1));
                continue;
            }
            self.actions += 1;
            // Any ready thing may go first: that is the reordering.
            let mut pick = self.chaos().index(choices);
            if pick < visible.len() {
                deliver(&self.poller, &self.shared.queue, visible[pick]).await;
                continue;
            }
            pick -= visible.len();
            if pick < due.len() {
                let action = self.due.remove(due[pick]).action;
                self.perform(action).await;
                continue;
            }
            pick -= due.len();
            if sweep_due && pick == 0 {
                self.next_sweep = now + SWEEP_EVERY_MS;
                self.sweep().await;
            } else {
                self.next_look = now + self.chaos().between(60, 600) * 1_000;
                self.look().await;
            }
        }
    }
}

fn action_cancel(plan: usize, force: bool) -> Action {
    Action::Cancel { plan, force }
}

fn retryable<T>(result: &Result<T, CommandError>) -> bool {
    matches!(result, Err(CommandError::Exec(e)) if e.is_retryable())
}

/// Every run in the store (the driver's view: no faults).
async fn all_runs(store: &EmbeddedStore) -> Vec<Run> {
    let mut out = Vec::new();
    let mut query = RunQuery {
        limit: 100,
        ..RunQuery::default()
    };
    loop {
        let Ok(page) = store.list_runs(&query).await else {
            return out;
        };
        out.extend(page.runs);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return out,
        }
    }
}

/// Run one seed to the end and check it.
pub async fn run_seed(seed: u64, config: &SimConfig) -> SeedOutcome {
    let chaos = Arc::new(Chaos::new(seed, config.faults.clone()));
    let clock = Arc::new(ManualClock::new(EPOCH));
    let raw = Arc::new(match EmbeddedStore::in_memory() {
        Ok(store) => store,
        Err(e) => panic!("cannot create the in-memory store: {e}"),
    });
    let scenario = scenario::generate(&chaos);
    let slack = scenario.receivers_down.then(|| {
        let mut config = SlackConfig::new("xoxb-simulation");
        config.base_url = DOWN_URL.into();
        match SlackClient::new(config) {
            Ok(client) => client,
            Err(e) => panic!("cannot build the Slack client: {e}"),
        }
    });
    let shared = Shared {
        queue: Arc::new(SimQueue::new(clock.clone())),
        agent: Arc::new(SimAgent::new(clock.clone(), chaos.clone())),
        chaos,
        clock,
        raw,
        slack,
    };
    let sabotage = config.sabotage;
    let poller = process(&shared, sabotage);
    let racer = Racer {
        process: process(&shared, sabotage),
        queue: shared.queue.clone(),
    };
    let _ = poller.store.interloper.set(Arc::new(racer));
    let api = process(&shared, sabotage);
    let approvals = process(&shared, sabotage);
    let triggers = process(&shared, sabotage);

    let mut specs = BTreeMap::new();
    let mut stored = BTreeMap::new();
    for wf in &scenario.workflows {
        match shared.raw.put_workflow(&wf.definition, EPOCH).await {
            Ok(s) => {
                stored.insert(wf.id.clone(), s);
            }
            Err(e) => panic!("cannot store workflow {}: {e}", wf.id),
        }
        specs.insert(wf.id.clone(), wf.clone());
    }
    if scenario.receivers_down {
        // Set-up, not under test: straight into the store.
        let notifier = Notifier::new(shared.raw.clone(), None, None, LinkConfig::default());
        let subscription = NewSubscription {
            url: format!("{DOWN_URL}/hooks"),
            events: vec!["run.completed".into(), "run.failed".into()],
            secret: None,
            description: Some("a receiver that is down".into()),
            workflow: None,
        };
        if let Err(e) = notifier.webhooks().create(subscription, EPOCH).await {
            panic!("cannot create the webhook subscription: {e}");
        }
    }
    let mut due = Vec::new();
    for (plan, start) in scenario.starts.iter().enumerate() {
        due.push(Due {
            at: EPOCH + start.at,
            action: Action::Start { plan },
        });
    }
    for (plan, fire) in scenario.fires.iter().enumerate() {
        for _ in 0..fire.deliveries {
            due.push(Due {
                at: EPOCH + fire.at + shared.chaos.between(0, 30) * 1_000,
                action: Action::Fire { plan },
            });
        }
    }
    let mut sim = Sim {
        config: config.clone(),
        poller,
        api,
        approvals,
        triggers,
        scenario,
        specs,
        stored,
        due,
        plan_runs: BTreeMap::new(),
        started: BTreeMap::new(),
        clicks: Vec::new(),
        seen_approvals: BTreeSet::new(),
        retried: BTreeSet::new(),
        next_sweep: EPOCH + SWEEP_EVERY_MS,
        next_look: EPOCH + 30_000,
        actions: 0,
        violations: Vec::new(),
        shared,
    };
    sim.run().await;

    let runs = all_runs(&sim.shared.raw).await;
    let mut audits = BTreeMap::new();
    for run in &runs {
        let audit = sim
            .shared
            .raw
            .audit(&run.id, None, 10_000)
            .await
            .unwrap_or_default();
        audits.insert(run.id.clone(), audit);
    }
    let agent_runs = sim.shared.agent.runs();
    let evidence = Evidence {
        runs,
        audits,
        agent_runs,
        now: sim.now(),
        started: sim.started.clone(),
        clicks: sim.clicks.clone(),
        workflows: &sim.specs,
    };
    let mut violations = std::mem::take(&mut sim.violations);
    violations.extend(check::check(&evidence));
    SeedOutcome {
        seed,
        violations,
        runs: evidence.runs.len(),
        agent_runs: evidence.agent_runs.len(),
        actions: sim.actions,
        messages_delivered: sim.shared.queue.totals().1,
        faults: sim.shared.chaos.counts.list(),
        virtual_ms: sim.now() - EPOCH,
        run_lines: evidence
            .runs
            .iter()
            .map(|run| {
                let mut line = describe(run);
                if config.keep_audit {
                    for a in evidence.audits.get(&run.id).into_iter().flatten() {
                        line.push_str(&format!(
                            "\n      {:>4} +{:>6}s {} {:?}#{:?} by {}: {}",
                            a.seq,
                            (a.at - EPOCH) / 1_000,
                            a.kind,
                            a.step_id,
                            a.attempt,
                            a.actor,
                            a.message
                        ));
                    }
                }
                line
            })
            .collect(),
    }
}

/// Run one seed on a fresh single-threaded runtime (what the test and the command do, one
/// seed after another, on as many threads as they like).
pub fn run_seed_blocking(seed: u64, config: &SimConfig) -> SeedOutcome {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot build a tokio runtime: {e}"),
    };
    runtime.block_on(run_seed(seed, config))
}

/// Totals over many seeds.
#[derive(Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    pub failing: Vec<SeedOutcome>,
    pub runs: u64,
    pub agent_runs: u64,
    pub actions: u64,
    pub messages: u64,
    pub virtual_ms: i64,
    pub faults: BTreeMap<&'static str, u64>,
}

impl Summary {
    pub fn add(&mut self, outcome: SeedOutcome) {
        self.seeds += 1;
        self.runs += outcome.runs as u64;
        self.agent_runs += outcome.agent_runs as u64;
        self.actions += outcome.actions as u64;
        self.messages += outcome.messages_delivered;
        self.virtual_ms += outcome.virtual_ms;
        for (name, n) in &outcome.faults {
            *self.faults.entry(name).or_default() += n;
        }
        if !outcome.violations.is_empty() {
            self.failing.push(outcome);
        }
    }

    pub fn violations(&self) -> usize {
        self.failing.iter().map(|o| o.violations.len()).sum()
    }
}

/// Run seeds `first..first + count` on `threads` threads (each seed alone on its own runtime,
/// so the result does not depend on the thread count).
pub fn run_seeds(first: u64, count: u64, threads: usize, config: &SimConfig) -> Summary {
    let next = std::sync::atomic::AtomicU64::new(first);
    let end = first + count;
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    // A panic in the system under test is a finding like any other: the
                    // seed reports it and the others still run.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_seed_blocking(seed, config)
                    }))
                    .unwrap_or_else(|panic| SeedOutcome::panicked(seed, &panic));
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(outcome);
                }
            });
        }
    });
    let mut outcomes = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    outcomes.sort_by_key(|o| o.seed);
    let mut summary = Summary::default();
    for outcome in outcomes {
        summary.add(outcome);
    }
    summary
}
