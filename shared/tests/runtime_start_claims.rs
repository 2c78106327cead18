//! Agent starts from queued effects (an approval's `Perform` message, which may be delivered
//! twice) claim the start first: the first delivery starts without listing the agent
//! service's runs, a second delivery finds the claim, looks the run up and adopts it. On real
//! local ports (redb store and records, in-process queue, the agent simulator over HTTP).

mod runtime_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flowgate_shared::adapters::embedded::EmbeddedStore;
use flowgate_shared::adapters::memqueue::MemQueue;
use flowgate_shared::agent::{
    AddMessageResponse, AgentClient, AgentError, KillOutcome, MessageType, RunSummary,
    StartRunResponse,
};
use flowgate_shared::engine::{AgentObservation, AgentStartSpec, Event};
use flowgate_shared::model::{ApprovalDecision, Millis, RunStatus, StepStatus};
use flowgate_shared::ports::{
    RecordStore, RunStore, StoreError, WorkMessage, WorkQueue, WorkflowStore,
};
use flowgate_shared::runtime::{AgentApi, Clock as _, Executor, NewRun, SystemClock, start_run};
use runtime_support::*;
use serde_json::Value;

/// The simulator's client, counting starts and look-ups by session name.
struct Counting {
    inner: AgentClient,
    starts: AtomicUsize,
    look_ups: AtomicUsize,
}

#[async_trait]
impl AgentApi for Counting {
    async fn start_run(&self, spec: &AgentStartSpec) -> Result<StartRunResponse, AgentError> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        self.inner.start_run(spec).await
    }

    async fn find_run_by_session_name(
        &self,
        workflow: &str,
        session_name: &str,
        not_before: Option<Millis>,
    ) -> Result<Option<RunSummary>, AgentError> {
        self.look_ups.fetch_add(1, Ordering::SeqCst);
        self.inner
            .find_run_by_session_name(workflow, session_name, not_before)
            .await
    }

    async fn observe(&self, workflow: &str, run_id: &str) -> Result<AgentObservation, AgentError> {
        self.inner.observe(workflow, run_id).await
    }

    async fn kill_if_active(&self, run_id: &str, force: bool) -> Result<KillOutcome, AgentError> {
        self.inner.kill_if_active(run_id, force).await
    }

    async fn add_message(
        &self,
        run_id: &str,
        message_type: MessageType,
        content: &str,
    ) -> Result<AddMessageResponse, AgentError> {
        self.inner.add_message(run_id, message_type, content).await
    }
}

const GATED: &str = r#"
id: gated
steps:
  - {id: approve, kind: approval, message: "go?", approvers: [ann]}
  - {id: build, kind: agent, workflow: implement, message: "build it [sim min=1 max=1]", depends_on: [approve]}
"#;

/// The embedded store's records, whose next claim write fails without effect when `fail`
/// is set (a throttled request).
struct FlakyClaims {
    inner: Arc<EmbeddedStore>,
    fail: AtomicBool,
}

#[async_trait]
impl RecordStore for FlakyClaims {
    async fn create_record(
        &self,
        collection: &str,
        id: &str,
        value: &Value,
        expires_at: Option<Millis>,
    ) -> Result<bool, StoreError> {
        if collection == flowgate_shared::runtime::START_CLAIMS
            && self.fail.swap(false, Ordering::SeqCst)
        {
            return Err(StoreError::Unavailable {
                message: "throttled".into(),
            });
        }
        self.inner
            .create_record(collection, id, value, expires_at)
            .await
    }
    async fn put_record(
        &self,
        collection: &str,
        id: &str,
        value: &Value,
        expires_at: Option<Millis>,
    ) -> Result<(), StoreError> {
        self.inner
            .put_record(collection, id, value, expires_at)
            .await
    }
    async fn get_record(&self, collection: &str, id: &str) -> Result<Option<Value>, StoreError> {
        self.inner.get_record(collection, id).await
    }
    async fn list_records(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        self.inner.list_records(collection, after, limit).await
    }
    async fn delete_record(&self, collection: &str, id: &str) -> Result<bool, StoreError> {
        self.inner.delete_record(collection, id).await
    }
}

struct World {
    _dir: tempfile::TempDir,
    _sim: flowgate_shared::agent::simulator::SimulatorHandle,
    store: Arc<EmbeddedStore>,
    queue: Arc<MemQueue>,
    agent: Arc<Counting>,
    records: Arc<FlakyClaims>,
    executor: Executor,
}

/// A run of `GATED` waiting at its approval, and the approval's id.
async fn gated_run() -> (World, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(&dir);
    let queue = Arc::new(MemQueue::new(Duration::from_secs(1)));
    let sim = fast_simulator().await;
    let agent = Arc::new(Counting {
        inner: client(&sim, Duration::from_secs(300)),
        starts: AtomicUsize::new(0),
        look_ups: AtomicUsize::new(0),
    });
    let records = Arc::new(FlakyClaims {
        inner: store.clone(),
        fail: AtomicBool::new(false),
    });
    let notifier = flowgate_shared::notify::config::NotifyConfig::default()
        .build(records.clone())
        .expect("notifier");
    let executor = Executor::new(
        store.clone(),
        store.clone(),
        queue.clone(),
        agent.clone(),
        Arc::new(SystemClock),
    )
    .expect("executor")
    .with_notifier(Arc::new(notifier));
    let def = flowgate_shared::definition::parse_definition(GATED).expect("definition");
    store
        .put_workflow(&def, SystemClock.now_ms())
        .await
        .expect("store the workflow");
    let started = start_run(
        &*store,
        &*store,
        &*queue,
        &*store,
        SystemClock.now_ms(),
        NewRun {
            workflow_id: "gated".into(),
            ..NewRun::default()
        },
    )
    .await
    .expect("start");
    let run_id = started.run_id;
    // The start: the approval opens (nothing else happens without Slack).
    for m in queue
        .receive(10, Duration::from_millis(200))
        .await
        .expect("receive")
    {
        executor.handle(&m.message).await.expect("start");
        queue.ack(&m.receipt).await.expect("ack");
    }
    let run = store.get_run(&run_id).await.expect("read").expect("run");
    let approval = run.steps["approve"]
        .approval
        .as_ref()
        .expect("approval open")
        .id
        .clone();
    let world = World {
        _dir: dir,
        _sim: sim,
        store,
        queue,
        agent,
        records,
        executor,
    };
    (world, run_id, approval)
}

impl World {
    /// Approve as the approvals function does (written now, effects queued) and return the
    /// queued `Perform` message.
    async fn approve(&self, run_id: &str, approval: &str) -> WorkMessage {
        self.executor
            .command_deferred(
                run_id,
                Event::ApprovalDecided {
                    approval_id: approval.to_string(),
                    by: "ann".into(),
                    decision: ApprovalDecision::Approve,
                    comment: None,
                    groups: Vec::new(),
                },
            )
            .await
            .expect("decision");
        self.queue
            .receive(10, Duration::from_millis(200))
            .await
            .expect("receive")
            .into_iter()
            .find(|m| matches!(m.message, WorkMessage::Perform { .. }))
            .expect("a Perform message")
            .message
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.agent.starts.load(Ordering::SeqCst),
            self.agent.look_ups.load(Ordering::SeqCst),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_agent_start_is_claimed_once_and_a_second_delivery_adopts_the_run() {
    let (w, run_id, approval) = gated_run().await;
    let perform = w.approve(&run_id, &approval).await;

    // First delivery: claims and starts without a look-up.
    w.executor.handle(&perform).await.expect("first delivery");
    assert_eq!(w.counts(), (1, 0), "one start, no look-up");
    let upstream = w
        .store
        .get_run(&run_id)
        .await
        .expect("read")
        .expect("run")
        .steps["build"]
        .agent
        .as_ref()
        .and_then(|a| a.upstream_run_id.clone())
        .expect("the agent run is recorded");

    // A second delivery of the same message, as SQS may make: the claim is taken, so it
    // looks the run up, and starts nothing new.
    w.executor.handle(&perform).await.expect("second delivery");
    assert_eq!(w.counts(), (1, 1), "no second agent run; one look-up");
    let run = w.store.get_run(&run_id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.steps["build"].status, StepStatus::Running);
    assert_eq!(
        run.steps["build"]
            .agent
            .as_ref()
            .and_then(|a| a.upstream_run_id.as_deref()),
        Some(upstream.as_str())
    );
}

/// Found by the seeded simulation: a delivery that could not write its claim must not start
/// (else a later delivery would claim and start a second agent run without looking).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_claim_cannot_be_written_waits_and_the_next_delivery_starts_once() {
    let (w, run_id, approval) = gated_run().await;
    let perform = w.approve(&run_id, &approval).await;
    w.records.fail.store(true, Ordering::SeqCst);
    w.executor.handle(&perform).await.expect("first delivery");
    assert_eq!(
        w.counts(),
        (0, 0),
        "no claim, no start (the engine re-issues it)"
    );
    let run = w.store.get_run(&run_id).await.expect("read").expect("run");
    assert!(
        run.steps["build"]
            .agent
            .as_ref()
            .is_none_or(|a| a.upstream_run_id.is_none())
    );
    w.executor.handle(&perform).await.expect("second delivery");
    assert_eq!(w.counts(), (1, 0), "the next delivery claims and starts");
    w.executor.handle(&perform).await.expect("third delivery");
    assert_eq!(w.counts(), (1, 1), "a later one looks up and adopts");
}
