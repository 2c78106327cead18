//! The poller's partial batch response: which records of a batch come back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use flowgate_poller::handle_batch;
use flowgate_shared::adapters::embedded::EmbeddedStore;
use flowgate_shared::adapters::memqueue::MemQueue;
use flowgate_shared::agent::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use flowgate_shared::agent::{AgentClient, AgentClientConfig};
use flowgate_shared::definition::WorkflowDefinition;
use flowgate_shared::engine::Event;
use flowgate_shared::model::{AuditEntry, Millis, Run, RunStatus};
use flowgate_shared::ports::{
    CreateOutcome, RunPage, RunQuery, RunStore, SessionRecord, StoreError, WorkMessage, WorkQueue,
    WorkflowStore,
};
use flowgate_shared::runtime::{Clock, Executor, SystemClock};
use flowgate_tests::runtime::three_agent_steps;
use serde_json::Map;

/// A fresh embedded store with a stored three-agent-step workflow `id`, and the simulator.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<EmbeddedStore>,
    sim: SimulatorHandle,
    def: WorkflowDefinition,
    version: u64,
    now: Millis,
}

async fn fixture(id: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    let sim = Simulator::start(SimulatorConfig::fast())
        .await
        .expect("simulator");
    let now = SystemClock.now_ms();
    let def = three_agent_steps(id, "1s");
    let version = store
        .put_workflow(&def, now)
        .await
        .expect("workflow")
        .version;
    Fixture {
        _dir: dir,
        store,
        sim,
        def,
        version,
        now,
    }
}

/// The embedded store, unavailable for one run id (as if its partition were throttled).
struct FlakyStore {
    inner: Arc<EmbeddedStore>,
    unavailable_run: String,
}

impl FlakyStore {
    fn check(&self, run_id: &str) -> Result<(), StoreError> {
        if run_id == self.unavailable_run {
            Err(StoreError::Unavailable {
                message: format!("throttled reading {run_id}"),
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl RunStore for FlakyStore {
    async fn create_run(
        &self,
        run: &Run,
        audit: &[AuditEntry],
    ) -> Result<CreateOutcome, StoreError> {
        self.inner.create_run(run, audit).await
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<Run>, StoreError> {
        self.check(run_id)?;
        self.inner.get_run(run_id).await
    }
    async fn put_run(
        &self,
        run: &Run,
        expected: u64,
        audit: &[AuditEntry],
    ) -> Result<(), StoreError> {
        self.check(&run.id)?;
        self.inner.put_run(run, expected, audit).await
    }
    async fn list_runs(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        self.inner.list_runs(query).await
    }
    async fn due_runs(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(String, Millis)>, StoreError> {
        self.inner.due_runs(now, limit).await
    }
    async fn audit(
        &self,
        run_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit(run_id, after, limit).await
    }
    async fn find_idempotency_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.find_idempotency_key(key).await
    }
    async fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.inner.put_session(session).await
    }
    async fn get_session(&self, name: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.get_session(name).await
    }
    async fn list_sessions(&self, active_only: bool) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.list_sessions(active_only).await
    }
}

fn record(message_id: &str, body: &str) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(message_id.to_string());
    record.receipt_handle = Some(format!("receipt-{message_id}"));
    record.body = Some(body.to_string());
    record.event_source = Some("aws:sqs".to_string());
    record
        .attributes
        .insert("ApproximateReceiveCount".to_string(), "1".to_string());
    record
}

fn start(run_id: &str) -> String {
    serde_json::to_string(&WorkMessage::Event {
        run_id: run_id.to_string(),
        event: Event::Start,
    })
    .expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_retryable_failures_come_back_and_a_bad_body_does_not_poison_the_batch() {
    let Fixture {
        _dir,
        store,
        sim,
        def,
        version,
        now,
    } = fixture("batch").await;
    // Three runs: one that works, one whose store partition is unavailable (retryable), one
    // pinned to a definition version that does not exist (retrying cannot help).
    for (id, version) in [
        ("run-ok", version),
        ("run-throttled", version),
        ("run-orphaned", version + 41),
    ] {
        store
            .create_run(&Run::new(id, &def, version, Map::new(), now), &[])
            .await
            .expect("create");
    }
    let flaky = Arc::new(FlakyStore {
        inner: store.clone(),
        unavailable_run: "run-throttled".into(),
    });
    let queue = Arc::new(MemQueue::new(Duration::from_secs(30)));
    let agent = AgentClient::new(&sim.base_url, &sim.api_key, AgentClientConfig::default())
        .expect("client");
    let executor = Executor::new(
        flaky,
        store.clone(),
        queue,
        Arc::new(agent),
        Arc::new(SystemClock),
    )
    .expect("executor");

    let mut event = SqsEvent::default();
    event.records = vec![
        record("m-bad-body", "{\"type\": \"not-a-work-message\""),
        record("m-throttled", &start("run-throttled")),
        record("m-ok", &start("run-ok")),
        record("m-orphaned", &start("run-orphaned")),
        record("m-gone", &start("run-that-never-existed")),
    ];
    let response = handle_batch(&executor, event).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, vec!["m-throttled"]);

    // The good record did its work despite its neighbours.
    let ok = store.get_run("run-ok").await.expect("read").expect("run");
    assert_eq!(ok.status, RunStatus::Running);
    assert!(
        ok.step("a")
            .and_then(|s| s.agent.as_ref())
            .is_some_and(|a| a.upstream_run_id.is_some()),
        "step a's agent run was started: {ok:#?}"
    );
    assert_eq!(sim.runs_started(), 1);
    // The others changed nothing.
    for id in ["run-throttled", "run-orphaned"] {
        let run = store.get_run(id).await.expect("read").expect("run");
        assert_eq!(run.status, RunStatus::Pending, "{id}");
        assert_eq!(run.version, 0, "{id}");
    }
    // The response is what Lambda expects on the wire.
    let wire = serde_json::to_value(&response).expect("serialize");
    assert_eq!(
        wire,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-throttled"}]})
    );
}

/// The poller's bad-input sweep: a batch of records no producer of ours would send (cut off,
/// wrong types, not a work message, empty, no body at all, 300 KB of noise, messages about
/// runs, steps and approvals that do not exist, a poll of a step that is not running) around
/// one good record. None is reported for redelivery (retrying cannot help, and reporting
/// would only send it round to the dead-letter queue), the good record does its work, and
/// nothing else is written or queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_dropped_without_poisoning_the_batch_or_writing() {
    let Fixture {
        _dir,
        store,
        sim,
        def,
        version,
        now,
    } = fixture("sweep").await;
    for id in ["run-good", "run-idle"] {
        store
            .create_run(&Run::new(id, &def, version, Map::new(), now), &[])
            .await
            .expect("create");
    }
    let queue = Arc::new(MemQueue::new(Duration::from_secs(30)));
    let agent = AgentClient::new(&sim.base_url, &sim.api_key, AgentClientConfig::default())
        .expect("client");
    let executor = Executor::new(
        store.clone(),
        store.clone(),
        queue.clone(),
        Arc::new(agent),
        Arc::new(SystemClock),
    )
    .expect("executor");
    let idle_before = store.get_run("run-idle").await.expect("read");

    let json = |v: serde_json::Value| v.to_string();
    let bad: Vec<(&str, Option<String>)> = vec![
        ("cut-off", Some(start("run-idle")[..20].to_string())),
        (
            "wrong-type",
            Some(json(
                serde_json::json!({"type": "event", "run_id": 7, "event": {"type": "start"}}),
            )),
        ),
        (
            "unknown-type",
            Some(json(
                serde_json::json!({"type": "explode", "run_id": "run-idle"}),
            )),
        ),
        ("array", Some("[1, 2, 3]".into())),
        ("empty", Some(String::new())),
        ("no-body", None),
        ("noise", Some("\u{fffd}".repeat(100_000))),
        ("unknown-run", Some(start("run-that-never-existed"))),
        (
            "unknown-step",
            Some(json(
                serde_json::json!({"type": "event", "run_id": "run-idle", "event": {"type": "step_succeeded", "step": "nope", "attempt": 1}}),
            )),
        ),
        (
            "unknown-approval",
            Some(json(
                serde_json::json!({"type": "event", "run_id": "run-idle", "event": {"type": "approval_decided", "approval_id": "run-idle.nope.1", "by": "mallory", "decision": "approve"}}),
            )),
        ),
        (
            "poll-of-a-step-not-running",
            Some(json(
                serde_json::json!({"type": "poll", "run_id": "run-idle", "step": "c", "attempt": 3, "upstream_run_id": "x", "poll": 9}),
            )),
        ),
    ];
    let mut event = SqsEvent::default();
    for (id, body) in &bad {
        let mut r = record(id, body.as_deref().unwrap_or_default());
        r.body = body.clone();
        event.records.push(r);
    }
    event.records.insert(5, record("good", &start("run-good")));
    let response = handle_batch(&executor, event).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "nothing is worth redelivering: {:?}",
        response.batch_item_failures
    );
    let good = store.get_run("run-good").await.expect("read").expect("run");
    assert_eq!(
        good.status,
        RunStatus::Running,
        "the good record did its work"
    );
    assert_eq!(
        store.get_run("run-idle").await.expect("read"),
        idle_before,
        "the records about run-idle changed nothing"
    );
    assert!(
        store
            .get_run("run-that-never-existed")
            .await
            .expect("read")
            .is_none(),
        "no run was made up"
    );
    let queued = queue
        .receive(100, Duration::from_millis(10))
        .await
        .expect("receive");
    assert!(
        queued.iter().all(|m| m.message.run_id() == "run-good"),
        "only the good run queued work: {:?}",
        queued
            .iter()
            .map(|m| m.message.run_id())
            .collect::<Vec<_>>()
    );
    assert_eq!(sim.runs_started(), 1, "one agent run, for the good record");
}
