//! The port contract suite: every case is written once, over `&dyn RunStore`,
//! `&dyn WorkflowStore`, `&dyn RecordStore` or `&dyn WorkQueue`, and `tests/tests/contract.rs`
//! instantiates each case for every backend (`contract::embedded::…`, `contract::moto::…`).
//!
//! A backend passes when it behaves the same way the engine's callers rely on: conditional
//! writes, atomic audit entries, idempotent creation, exact keyset paging, versioned
//! workflows, and SQS-like queue delivery (delays, redelivery of unacked messages).
//!
//! Queue cases use short real waits because delays and visibility timeouts are the behaviour
//! under test: test queues hide received messages for [`VISIBILITY_TIMEOUT`] (2 s), a delayed
//! message is sent with a 2 s delay, and every wait is bounded (at most 20 s per case).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use flowgate_shared::adapters::memqueue::MemQueue;
use flowgate_shared::definition::WorkflowDefinition;
use flowgate_shared::engine::Event;
use flowgate_shared::model::{
    AgentProgress, AgentRunStatus, ApprovalDecision, ApprovalState, ApprovalStatus, AuditEntry,
    DecisionRecord, Millis, Run, RunStatus, StepStatus,
};
use flowgate_shared::ports::{
    CreateOutcome, MAX_PAGE_SIZE, MAX_RECORD_BYTES, MAX_RECORD_KEY_BYTES, MAX_RECORD_PAGE,
    QueueError, RecordStore, RunQuery, RunSort, RunStore, SessionRecord, SessionRun, SortOrder,
    StoreError, WorkMessage, WorkQueue, WorkflowStore,
};
use serde_json::{Map, Value, json};

/// How long test queues hide a received message before redelivering it.
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(2);

/// A fixed "now" for store cases (stores never read the clock for run data).
pub const BASE: Millis = 1_760_000_000_000;

/// One backend's ports, plus whatever must stay alive while a case runs (a temp dir, a
/// container).
pub struct Backend {
    pub runs: Arc<dyn RunStore>,
    pub workflows: Arc<dyn WorkflowStore>,
    /// The same store object as `runs` (records live beside runs).
    pub records: Arc<dyn RecordStore>,
    pub queue: Arc<dyn WorkQueue>,
    _keep_alive: Box<dyn Any + Send>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

/// Embedded backend: a redb file in a fresh temp dir and an in-process queue.
pub async fn embedded() -> Backend {
    use flowgate_shared::adapters::embedded::EmbeddedStore;
    let dir = tempfile::tempdir().expect("create a temp dir for the embedded store");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open the embedded store"));
    Backend {
        runs: store.clone(),
        workflows: store.clone(),
        records: store,
        queue: Arc::new(MemQueue::new(VISIBILITY_TIMEOUT)),
        _keep_alive: Box::new(dir),
    }
}

/// The embedded store in memory (what the seeded simulation runs on): same store code, no
/// file, calls inline on the caller's task.
pub async fn memory() -> Backend {
    use flowgate_shared::adapters::embedded::EmbeddedStore;
    let store = Arc::new(EmbeddedStore::in_memory().expect("create the in-memory store"));
    Backend {
        runs: store.clone(),
        workflows: store.clone(),
        records: store,
        queue: Arc::new(MemQueue::new(VISIBILITY_TIMEOUT)),
        _keep_alive: Box::new(()),
    }
}

/// AWS backend: DynamoDB and SQS on moto (the endpoint `scripts/test` exports), or on
/// LocalStack in a container with the `localstack` feature and
/// `FLOWGATE_CONTRACT_BACKEND=localstack`. Each case gets its own table and queue.
pub async fn moto() -> Backend {
    #[cfg(feature = "localstack")]
    if std::env::var("FLOWGATE_CONTRACT_BACKEND").as_deref() == Ok("localstack") {
        return localstack::backend().await;
    }
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        panic!(
            "AWS_ENDPOINT_URL is not set, so there is no moto server to run the DynamoDB/SQS \
             contract cases against. Run `scripts/test` (it installs and starts moto and sets \
             AWS_ENDPOINT_URL, AWS_REGION and dummy credentials), or start \
             `.venv/bin/python scripts/moto_server.py -p PORT` yourself and export \
             AWS_ENDPOINT_URL=http://127.0.0.1:PORT AWS_REGION=us-east-1 \
             AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test."
        );
    }
    let config = flowgate_shared::adapters::aws_config(None).await;
    aws_backend(&config, Box::new(())).await
}

/// DynamoDB + SQS ports on a fresh table and queue at whatever endpoint `config` names.
pub async fn aws_backend(
    config: &aws_config::SdkConfig,
    keep_alive: Box<dyn Any + Send>,
) -> Backend {
    use flowgate_shared::adapters::dynamodb::DynamoStore;
    use flowgate_shared::adapters::sqs::SqsQueue;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let dynamo = aws_sdk_dynamodb::Client::new(config);
    let table = format!("flowgate-contract-{suffix}");
    DynamoStore::create_table(&dynamo, &table)
        .await
        .expect("create the DynamoDB table (is the emulator running?)");
    let store = Arc::new(DynamoStore::new(dynamo, table));
    let sqs = aws_sdk_sqs::Client::new(config);
    let queue = SqsQueue::create_queue(
        &sqs,
        &format!("flowgate-contract-{suffix}"),
        VISIBILITY_TIMEOUT,
    )
    .await
    .expect("create the SQS queue (is the emulator running?)");
    Backend {
        runs: store.clone(),
        workflows: store.clone(),
        records: store,
        queue: Arc::new(queue),
        _keep_alive: keep_alive,
    }
}

#[cfg(feature = "localstack")]
mod localstack {
    use testcontainers_modules::localstack::LocalStack;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;

    /// Start LocalStack (needs Docker) and point fresh clients at it; the container lives as
    /// long as the backend.
    pub async fn backend() -> super::Backend {
        let container = LocalStack::default()
            .start()
            .await
            .expect("start LocalStack (is Docker running?)");
        let host = container.get_host().await.expect("LocalStack host");
        let port = container
            .get_host_port_ipv4(4566)
            .await
            .expect("LocalStack port");
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(format!("http://{host}:{port}"))
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "test",
                "test",
                None,
                None,
                "localstack",
            ))
            .load()
            .await;
        super::aws_backend(&config, Box::new(container)).await
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A three-step definition (agent → approval → notify).
pub fn definition(id: &str) -> WorkflowDefinition {
    serde_json::from_value(json!({
        "id": id,
        "name": "Contract test workflow",
        "inputs": {"task": {"type": "string", "required": true}},
        "steps": [
            {"id": "plan", "kind": "agent", "workflow": "architect",
             "message": "Plan {{ inputs.task }}", "max_turns": 20, "session": "design"},
            {"id": "approve", "kind": "approval", "message": "Ship it?",
             "approvers": ["U123", "U456"], "required": 2, "depends_on": ["plan"]},
            {"id": "notify", "kind": "notify", "message": "done", "depends_on": ["approve"]}
        ]
    }))
    .expect("the contract test definition deserializes")
}

/// A run with every kind of state filled in: inputs of every JSON type, a finished agent step
/// with progress, a pending approval with a decision, outputs.
pub fn full_run(id: &str, workflow_id: &str, created_at: Millis) -> Run {
    let def = definition(workflow_id);
    let inputs: Map<String, Value> = serde_json::from_value(json!({
        "task": "add a /health endpoint",
        "priority": 2,
        "ratio": 0.75,
        "flags": {"dry_run": false, "labels": ["api", "ops"], "missing": null},
        "note": ""
    }))
    .expect("inputs are an object");
    let mut run = Run::new(id, &def, 3, inputs, created_at);
    run.status = RunStatus::Running;
    run.started_at = Some(created_at + 5);
    run.updated_at = created_at + 9_000;
    run.deadline = Some(created_at + 3_600_000);
    run.wake_at = Some(created_at + 60_000);
    run.started_by = Some("api:ci".into());
    run.audit_seq = 4;
    run.completion_seq = 1;
    run.outputs.insert("summary".into(), json!("planned"));
    let plan = run.steps.get_mut("plan").expect("plan step");
    plan.status = StepStatus::Succeeded;
    plan.attempt = 1;
    plan.started_at = Some(created_at + 10);
    plan.attempt_started_at = Some(created_at + 10);
    plan.completed_at = Some(created_at + 8_000);
    plan.completion_seq = Some(1);
    plan.output = Some(json!({"plan": "1. add route\n2. test", "files": 3, "score": 0.5}));
    plan.agent = Some(AgentProgress {
        session_name: format!("flowgate-{id}-plan-1"),
        upstream_run_id: Some("up-123".into()),
        session_id: Some("sess-abc".into()),
        upstream_status: Some(AgentRunStatus::Completed),
        turns: 12,
        max_turns: Some(20),
        tokens: 34_567,
        cost_usd: 1.25,
        previous_attempts_cost_usd: 0.5,
        phase: Some("reviewing".into()),
        last_activity_at: Some(created_at + 7_900),
        polls: 7,
        ..AgentProgress::default()
    });
    let approve = run.steps.get_mut("approve").expect("approve step");
    approve.status = StepStatus::Waiting;
    approve.attempt = 1;
    approve.started_at = Some(created_at + 8_001);
    approve.approval = Some(ApprovalState {
        id: format!("{id}.approve.1"),
        status: ApprovalStatus::Pending,
        message: "Ship it?".into(),
        approvers: vec!["U123".into(), "U456".into()],
        required: 2,
        requested_at: created_at + 8_001,
        expires_at: Some(created_at + 86_400_000),
        decisions: vec![DecisionRecord {
            by: "U456".into(),
            decision: ApprovalDecision::Approve,
            comment: Some("lgtm".into()),
            at: created_at + 8_500,
        }],
        escalated: false,
        kind: Default::default(),
        remind_at: Some(created_at + 3_600_000),
        reminders: 1,
        escalate_at: None,
    });
    run
}

/// An audit entry of `run_id` with sequence number `seq`.
pub fn audit_entry(run_id: &str, seq: u64, kind: &str) -> AuditEntry {
    AuditEntry {
        run_id: run_id.into(),
        seq,
        at: BASE + seq as Millis,
        actor: "system".into(),
        kind: kind.into(),
        step_id: Some("plan".into()),
        attempt: Some(1),
        message: format!("{kind} #{seq}"),
        data: json!({"seq": seq}),
    }
}

/// The next version of `run` as a caller writes it: version + 1 and a visible change.
fn next_version(run: &Run, note: &str) -> Run {
    let mut next = run.clone();
    next.version = run.version + 1;
    next.updated_at += 1;
    next.outputs.insert("writer".into(), json!(note));
    next
}

fn set_cost(run: &mut Run, cost: f64) {
    let agent = run
        .steps
        .get_mut("plan")
        .and_then(|s| s.agent.as_mut())
        .expect("plan step has agent progress");
    agent.cost_usd = cost;
    agent.previous_attempts_cost_usd = 0.0;
}

/// The sort value a listing must order by, computed independently of the stores.
fn reference_value(sort: RunSort, run: &Run) -> Option<f64> {
    let start = run.started_at.unwrap_or(run.created_at);
    match sort {
        RunSort::StartedAt => Some(start as f64),
        RunSort::CompletedAt => run.completed_at.map(|c| c as f64),
        RunSort::Duration => run.completed_at.map(|c| (c - start) as f64),
        RunSort::Cost => Some(
            run.steps
                .values()
                .filter_map(|s| s.agent.as_ref())
                .map(|a| a.cost_usd + a.previous_attempts_cost_usd)
                .sum(),
        ),
    }
}

/// Follow a query's cursors to the end; returns the pages.
async fn all_pages(store: &dyn RunStore, query: &RunQuery) -> Vec<Vec<Run>> {
    let mut pages = Vec::new();
    let mut query = query.clone();
    loop {
        let page = store.list_runs(&query).await.expect("list runs");
        assert!(
            page.runs.len() <= query.limit as usize,
            "a page holds at most the page size"
        );
        pages.push(page.runs);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return pages,
        }
        assert!(pages.len() <= 200, "paging does not terminate");
    }
}

/// Assert `got` is `expected` in the query's order: runs with a value in exactly the
/// reference order (values are unique), runs without one after them in any order.
fn assert_order(got: &[Run], expected: &[Run], sort: RunSort, order: SortOrder, what: &str) {
    let with_value = |runs: &[Run]| -> Vec<String> {
        let mut v: Vec<(f64, String)> = runs
            .iter()
            .filter_map(|r| reference_value(sort, r).map(|x| (x, r.id.clone())))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        if order == SortOrder::Desc {
            v.reverse();
        }
        v.into_iter().map(|(_, id)| id).collect()
    };
    let expected_valued = with_value(expected);
    let expected_missing: BTreeSet<String> = expected
        .iter()
        .filter(|r| reference_value(sort, r).is_none())
        .map(|r| r.id.clone())
        .collect();
    let got_ids: Vec<String> = got.iter().map(|r| r.id.clone()).collect();
    let (head, tail) = got_ids.split_at(expected_valued.len().min(got_ids.len()));
    assert_eq!(
        head,
        expected_valued.as_slice(),
        "{what}: order of runs with a value"
    );
    let tail: BTreeSet<String> = tail.iter().cloned().collect();
    assert_eq!(
        tail, expected_missing,
        "{what}: runs without a value come last"
    );
    assert_eq!(
        got_ids.len(),
        expected.len(),
        "{what}: every run exactly once"
    );
}

// ---------------------------------------------------------------------------------------------
// Run store cases
// ---------------------------------------------------------------------------------------------

pub mod run_store {
    use super::*;

    /// A fully populated run reads back exactly as written, consistently and relaxed (no
    /// writer in between, so a relaxed read has nothing older to return); a missing run is
    /// `None`.
    pub async fn round_trip(store: &dyn RunStore) {
        let run = full_run("r-round-trip", "wf-contract", BASE);
        let audit = [audit_entry(&run.id, 0, "run.created")];
        assert_eq!(
            store.create_run(&run, &audit).await.expect("create"),
            CreateOutcome::Created
        );
        let stored = store.get_run(&run.id).await.expect("get").expect("stored");
        assert_eq!(stored, run);
        assert_eq!(stored.cost_usd(), 1.75);
        let relaxed = store.get_run_relaxed(&run.id).await.expect("relaxed get");
        assert_eq!(relaxed, Some(run.clone()));
        for missing in [
            store.get_run("r-missing").await.expect("get missing"),
            store
                .get_run_relaxed("r-missing")
                .await
                .expect("relaxed get missing"),
        ] {
            assert!(missing.is_none());
        }
        assert_eq!(
            store.audit(&run.id, None, 10).await.expect("audit"),
            audit.to_vec()
        );
    }

    /// Creating a run whose id is taken fails with `AlreadyExists` and changes nothing.
    pub async fn create_if_absent(store: &dyn RunStore) {
        let run = full_run("r-dup", "wf-contract", BASE);
        store
            .create_run(&run, &[audit_entry(&run.id, 0, "run.created")])
            .await
            .expect("first create");
        let mut other = full_run("r-dup", "wf-other", BASE + 1);
        other.status = RunStatus::Pending;
        let err = store
            .create_run(&other, &[audit_entry(&run.id, 1, "run.created")])
            .await
            .expect_err("second create of the same id");
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
        assert!(!err.is_retryable());
        assert_eq!(
            store.get_run(&run.id).await.expect("get"),
            Some(run.clone())
        );
        assert_eq!(
            store.audit(&run.id, None, 10).await.expect("audit").len(),
            1,
            "the refused create wrote no audit entry"
        );
    }

    /// A second run with a used idempotency key is not created; the first run's id comes back
    /// and nothing of the second run is written.
    pub async fn idempotency_key(store: &dyn RunStore) {
        let mut first = full_run("r-idem-1", "wf-contract", BASE);
        first.idempotency_key = Some("key-123".into());
        assert_eq!(
            store
                .create_run(&first, &[audit_entry(&first.id, 0, "run.created")])
                .await
                .expect("create first"),
            CreateOutcome::Created
        );
        assert_eq!(
            store.find_idempotency_key("key-123").await.expect("find"),
            Some(first.id.clone())
        );
        assert_eq!(
            store
                .find_idempotency_key("key-unused")
                .await
                .expect("find"),
            None
        );

        let mut second = full_run("r-idem-2", "wf-contract", BASE + 10);
        second.idempotency_key = Some("key-123".into());
        assert_eq!(
            store
                .create_run(&second, &[audit_entry(&second.id, 0, "run.created")])
                .await
                .expect("create second"),
            CreateOutcome::Existing(first.id.clone())
        );
        assert!(store.get_run(&second.id).await.expect("get").is_none());
        assert!(
            store
                .audit(&second.id, None, 10)
                .await
                .expect("audit")
                .is_empty()
        );

        // The same run retried with the same key is also answered with itself.
        assert_eq!(
            store.create_run(&first, &[]).await.expect("retry first"),
            CreateOutcome::Existing(first.id.clone())
        );
        // A run without a key is unaffected by other runs' keys.
        let plain = full_run("r-idem-3", "wf-contract", BASE + 20);
        assert_eq!(
            store.create_run(&plain, &[]).await.expect("create plain"),
            CreateOutcome::Created
        );
    }

    /// A put with the stored version succeeds and stores version + 1; a stale put is a
    /// `Conflict` and leaves the stored run unchanged.
    pub async fn put_conflict(store: &dyn RunStore) {
        let run = full_run("r-put", "wf-contract", BASE);
        store.create_run(&run, &[]).await.expect("create");
        assert_eq!(run.version, 0);

        let v1 = next_version(&run, "first");
        store.put_run(&v1, 0, &[]).await.expect("put v1 from v0");
        let stored = store.get_run(&run.id).await.expect("get").expect("stored");
        assert_eq!(stored, v1);
        assert_eq!(stored.version, 1);

        let stale = next_version(&run, "stale");
        let err = store
            .put_run(&stale, 0, &[])
            .await
            .expect_err("a put from version 0 after version 1 was written");
        assert!(err.is_conflict(), "{err:?}");
        assert!(
            !err.is_retryable(),
            "a conflict needs a re-read, not a retry"
        );
        assert!(err.to_string().contains("re-read"), "{err}");
        assert_eq!(store.get_run(&run.id).await.expect("get"), Some(v1.clone()));

        let v2 = next_version(&v1, "second");
        store.put_run(&v2, 1, &[]).await.expect("put v2 from v1");
        assert_eq!(store.get_run(&run.id).await.expect("get"), Some(v2));
    }

    /// The version convention is enforced: `run.version` must be `expected + 1`, and a put to
    /// a run that does not exist is `NotFound`.
    pub async fn put_version_convention(store: &dyn RunStore) {
        let run = full_run("r-conv", "wf-contract", BASE);
        store.create_run(&run, &[]).await.expect("create");
        let mut same = next_version(&run, "same");
        same.version = 0;
        let err = store
            .put_run(&same, 0, &[])
            .await
            .expect_err("version not bumped");
        assert!(
            matches!(
                err,
                StoreError::Invalid {
                    field: "version",
                    ..
                }
            ),
            "{err:?}"
        );
        let mut skipped = next_version(&run, "skip");
        skipped.version = 5;
        let err = store
            .put_run(&skipped, 0, &[])
            .await
            .expect_err("version skipped");
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
        assert_eq!(store.get_run(&run.id).await.expect("get"), Some(run));

        let ghost = next_version(&full_run("r-ghost", "wf-contract", BASE), "ghost");
        let err = store
            .put_run(&ghost, 0, &[])
            .await
            .expect_err("no such run");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        assert!(store.get_run("r-ghost").await.expect("get").is_none());
    }

    /// Two writers that read the same version race: exactly one wins, the other gets
    /// `Conflict`, and only the winner's run and audit entry are stored.
    pub async fn concurrent_puts(store: &dyn RunStore) {
        for round in 0..5 {
            let id = format!("r-race-{round}");
            let run = full_run(&id, "wf-contract", BASE);
            store.create_run(&run, &[]).await.expect("create");
            let a = next_version(&run, "a");
            let b = next_version(&run, "b");
            let audit_a = [audit_entry(&id, 0, "writer.a")];
            let audit_b = [audit_entry(&id, 0, "writer.b")];
            let (ra, rb) = tokio::join!(
                store.put_run(&a, 0, &audit_a),
                store.put_run(&b, 0, &audit_b)
            );
            let (winner, winner_audit, loser_err) = match (ra, rb) {
                (Ok(()), Err(e)) => (a, audit_a, e),
                (Err(e), Ok(())) => (b, audit_b, e),
                (ra, rb) => {
                    panic!("round {round}: exactly one put must win, got {ra:?} and {rb:?}")
                }
            };
            assert!(loser_err.is_conflict(), "round {round}: {loser_err:?}");
            assert_eq!(store.get_run(&id).await.expect("get"), Some(winner));
            assert_eq!(
                store.audit(&id, None, 10).await.expect("audit"),
                winner_audit.to_vec(),
                "round {round}: only the winner's audit entry is written"
            );
        }
    }

    /// Audit entries are written in the same atomic write as the run: a conflicting put writes
    /// none of its entries, and a put whose audit entry already exists writes nothing.
    pub async fn audit_atomic_with_put(store: &dyn RunStore) {
        let run = full_run("r-audit-atomic", "wf-contract", BASE);
        let id = run.id.clone();
        store
            .create_run(&run, &[audit_entry(&id, 0, "run.created")])
            .await
            .expect("create");
        let v1 = next_version(&run, "v1");
        store
            .put_run(
                &v1,
                0,
                &[
                    audit_entry(&id, 1, "run.started"),
                    audit_entry(&id, 2, "step.started"),
                ],
            )
            .await
            .expect("put v1");
        let stale = next_version(&run, "stale");
        let err = store
            .put_run(&stale, 0, &[audit_entry(&id, 3, "stale.write")])
            .await
            .expect_err("stale put");
        assert!(err.is_conflict(), "{err:?}");
        let seqs: Vec<u64> = store
            .audit(&id, None, 100)
            .await
            .expect("audit")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            seqs,
            vec![0, 1, 2],
            "the conflicting put wrote no audit entry"
        );

        // Reusing an audit seq is refused, and the run is not written either.
        let v2 = next_version(&v1, "v2");
        let err = store
            .put_run(&v2, 1, &[audit_entry(&id, 2, "duplicate.seq")])
            .await
            .expect_err("duplicate audit seq");
        assert!(
            matches!(err, StoreError::Invalid { field: "audit", .. }),
            "{err:?}"
        );
        assert_eq!(store.get_run(&id).await.expect("get"), Some(v1));
        let kinds: Vec<String> = store
            .audit(&id, None, 100)
            .await
            .expect("audit")
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, vec!["run.created", "run.started", "step.started"]);

        // Entries must belong to the run being written.
        let err = store
            .put_run(&v2, 1, &[audit_entry("r-someone-else", 3, "foreign")])
            .await
            .expect_err("foreign audit entry");
        assert!(
            matches!(err, StoreError::Invalid { field: "audit", .. }),
            "{err:?}"
        );
    }

    /// Audit entries come back in seq order (numerically, past 9 and 10), after `after_seq`,
    /// at most `limit`, and only the run's own.
    pub async fn audit_order(store: &dyn RunStore) {
        let mut run = full_run("r-audit-order", "wf-contract", BASE);
        let id = run.id.clone();
        let other = full_run("r-audit-other", "wf-contract", BASE);
        store
            .create_run(&other, &[audit_entry(&other.id, 0, "other")])
            .await
            .expect("create other");
        let entries = |range: std::ops::Range<u64>| -> Vec<AuditEntry> {
            range.map(|s| audit_entry(&id, s, "event")).collect()
        };
        store
            .create_run(&run, &entries(0..3))
            .await
            .expect("create");
        for (expected, range) in [(0, 3..7), (1, 7..12), (2, 12..13)] {
            let next = next_version(&run, "audit");
            store
                .put_run(&next, expected, &entries(range))
                .await
                .expect("put");
            run = next;
        }
        let seqs = |v: Vec<AuditEntry>| -> Vec<u64> { v.iter().map(|e| e.seq).collect() };
        let all = store.audit(&id, None, 100).await.expect("audit");
        assert_eq!(all, entries(0..13));
        assert_eq!(
            seqs(store.audit(&id, Some(4), 100).await.expect("audit")),
            (5..13).collect::<Vec<_>>()
        );
        assert_eq!(
            seqs(store.audit(&id, Some(8), 3).await.expect("audit")),
            vec![9, 10, 11]
        );
        assert_eq!(
            seqs(store.audit(&id, None, 2).await.expect("audit")),
            vec![0, 1]
        );
        assert!(
            store
                .audit(&id, Some(12), 100)
                .await
                .expect("audit")
                .is_empty()
        );
        assert!(
            store
                .audit(&id, Some(u64::MAX), 100)
                .await
                .expect("audit")
                .is_empty()
        );
        assert!(
            store
                .audit("r-none", None, 100)
                .await
                .expect("audit")
                .is_empty()
        );
    }

    /// Twelve runs over two workflows, four statuses and spread-out times, with unique
    /// values for every sort key.
    fn listing_runs() -> Vec<Run> {
        let statuses = [
            RunStatus::Pending,
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
        ];
        let runs: Vec<Run> = (0..12i64)
            .map(|i| {
                let workflow = if i % 3 == 0 { "wf-b" } else { "wf-a" };
                let mut run = full_run(&format!("r-list-{i:02}"), workflow, BASE + i * 1_000);
                run.status = statuses[i as usize % 4];
                // Started order differs from created order (offsets up to 5.5 s).
                run.started_at = (run.status != RunStatus::Pending)
                    .then(|| run.created_at + 17 + ((i * 5) % 12) * 500);
                if run.status.is_terminal() {
                    let start = run.started_at.unwrap_or(run.created_at);
                    run.completed_at = Some(start + 1_000 + ((i * 7) % 12) * 1_300 + i);
                }
                set_cost(&mut run, ((i * 7) % 12) as f64 * 0.25);
                run
            })
            .collect();
        for sort in [
            RunSort::StartedAt,
            RunSort::CompletedAt,
            RunSort::Duration,
            RunSort::Cost,
        ] {
            let values: Vec<u64> = runs
                .iter()
                .filter_map(|r| reference_value(sort, r))
                .map(f64::to_bits)
                .collect();
            let unique: BTreeSet<u64> = values.iter().copied().collect();
            assert_eq!(
                unique.len(),
                values.len(),
                "fixture: {sort:?} values are unique"
            );
        }
        runs
    }

    /// Every filter (workflow, status, created-at range, combined) × sort key × direction
    /// returns exactly the matching runs in order, across pages.
    pub async fn list_filters_and_sorts(store: &dyn RunStore) {
        let runs = listing_runs();
        for run in &runs {
            store.create_run(run, &[]).await.expect("create");
        }
        let filters: Vec<(&str, RunQuery)> = vec![
            ("all", RunQuery::default()),
            (
                "workflow",
                RunQuery {
                    workflow_id: Some("wf-a".into()),
                    ..RunQuery::default()
                },
            ),
            (
                "status",
                RunQuery {
                    statuses: vec![RunStatus::Succeeded, RunStatus::Failed],
                    ..RunQuery::default()
                },
            ),
            (
                "created range",
                RunQuery {
                    created_from: Some(BASE + 3_000),
                    created_to: Some(BASE + 9_000),
                    ..RunQuery::default()
                },
            ),
            (
                "combined",
                RunQuery {
                    workflow_id: Some("wf-a".into()),
                    statuses: vec![RunStatus::Running, RunStatus::Succeeded],
                    created_from: Some(BASE + 2_000),
                    ..RunQuery::default()
                },
            ),
            (
                "nothing",
                RunQuery {
                    workflow_id: Some("wf-none".into()),
                    ..RunQuery::default()
                },
            ),
        ];
        for (name, filter) in &filters {
            let expected: Vec<Run> = runs.iter().filter(|r| filter.matches(r)).cloned().collect();
            // Sanity of the fixture: the reference filter, written out.
            let by_hand = runs
                .iter()
                .filter(|r| {
                    filter
                        .workflow_id
                        .as_ref()
                        .is_none_or(|w| &r.workflow_id == w)
                        && (filter.statuses.is_empty() || filter.statuses.contains(&r.status))
                        && filter.created_from.is_none_or(|f| r.created_at >= f)
                        && filter.created_to.is_none_or(|t| r.created_at < t)
                })
                .count();
            assert_eq!(expected.len(), by_hand);
            for sort in [
                RunSort::StartedAt,
                RunSort::CompletedAt,
                RunSort::Duration,
                RunSort::Cost,
            ] {
                for order in [SortOrder::Asc, SortOrder::Desc] {
                    let query = RunQuery {
                        sort,
                        order,
                        limit: 4,
                        ..filter.clone()
                    };
                    let got: Vec<Run> = all_pages(store, &query).await.concat();
                    let what = format!("{name} by {} {order:?}", sort.as_str());
                    assert_order(&got, &expected, sort, order, &what);
                    for run in &got {
                        let original = runs.iter().find(|r| r.id == run.id).expect("known run");
                        assert_eq!(run, original, "{what}: listed runs are whole");
                    }
                }
            }
        }
    }

    /// Paging through 25 runs (with ties in the sort values) with page sizes 1, 2 and 3 visits
    /// every run exactly once, in order, in exactly ceil(25 / size) pages.
    pub async fn pagination(store: &dyn RunStore) {
        let mut all = Vec::new();
        for i in 0..25i64 {
            // Lean runs (no inputs, outputs or approval state): the emulator copies every item
            // it reads, and this case reads many pages.
            let mut run = Run::new(
                format!("r-page-{i:02}"),
                &definition("wf-page"),
                1,
                Map::new(),
                BASE + i * 10,
            );
            run.steps.get_mut("plan").expect("plan step").agent = Some(AgentProgress::default());
            run.status = RunStatus::Succeeded;
            // Ties: groups of three share a start time, groups of five a cost.
            run.started_at = Some(BASE + 1_000 + (i / 3) * 100);
            run.completed_at = Some(BASE + 5_000 + i);
            set_cost(&mut run, (i % 5) as f64 * 0.5);
            store.create_run(&run, &[]).await.expect("create");
            all.push(run);
        }
        for size in 1..=3u32 {
            for sort in [RunSort::StartedAt, RunSort::Cost] {
                for order in [SortOrder::Asc, SortOrder::Desc] {
                    let what = format!("size {size} by {} {order:?}", sort.as_str());
                    let query = RunQuery {
                        workflow_id: Some("wf-page".into()),
                        sort,
                        order,
                        limit: size,
                        ..RunQuery::default()
                    };
                    let pages = all_pages(store, &query).await;
                    assert_eq!(
                        pages.len(),
                        25usize.div_ceil(size as usize),
                        "{what}: page count"
                    );
                    for page in &pages[..pages.len() - 1] {
                        assert_eq!(page.len(), size as usize, "{what}: full pages");
                    }
                    let got: Vec<Run> = pages.concat();
                    let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
                    let unique: BTreeSet<&str> = ids.iter().copied().collect();
                    assert_eq!(unique.len(), 25, "{what}: every run exactly once: {ids:?}");
                    assert_eq!(ids.len(), 25, "{what}: no run twice");
                    let values: Vec<f64> = got
                        .iter()
                        .map(|r| reference_value(sort, r).expect("value"))
                        .collect();
                    let ordered = values.windows(2).all(|w| match order {
                        SortOrder::Asc => w[0] <= w[1],
                        SortOrder::Desc => w[0] >= w[1],
                    });
                    assert!(ordered, "{what}: values in order: {values:?}");
                }
            }
        }
    }

    /// Listings longer than one batch read of items (DynamoDB reads the listed runs 100 keys
    /// at a time): a full page of 100 and a 130-run in-memory sort come back whole and in order.
    pub async fn large_listing(store: &dyn RunStore) {
        const RUNS: i64 = 130;
        let wf = format!("wf-large-{}", uuid::Uuid::new_v4().simple());
        for i in 0..RUNS {
            let mut run = Run::new(
                format!("r-large-{i:03}-{wf}"),
                &definition(&wf),
                1,
                Map::new(),
                BASE + i,
            );
            run.status = RunStatus::Succeeded;
            run.started_at = Some(BASE + i);
            run.completed_at = Some(BASE + 10_000 - i);
            store.create_run(&run, &[]).await.expect("create");
        }
        let first = store
            .list_runs(&RunQuery {
                workflow_id: Some(wf.clone()),
                limit: MAX_PAGE_SIZE,
                ..RunQuery::default()
            })
            .await
            .expect("a full page");
        let ids: Vec<&str> = first.runs.iter().map(|r| r.id.as_str()).collect();
        let expected: Vec<String> = (0..i64::from(MAX_PAGE_SIZE))
            .map(|i| format!("r-large-{:03}-{wf}", RUNS - 1 - i))
            .collect();
        assert_eq!(ids, expected, "newest first, all 100");
        assert!(first.next_cursor.is_some(), "30 more");
        let pages = all_pages(
            store,
            &RunQuery {
                workflow_id: Some(wf.clone()),
                sort: RunSort::CompletedAt,
                order: SortOrder::Asc,
                limit: MAX_PAGE_SIZE,
                ..RunQuery::default()
            },
        )
        .await;
        let got: Vec<String> = pages.concat().into_iter().map(|r| r.id).collect();
        let expected: Vec<String> = (0..RUNS)
            .rev()
            .map(|i| format!("r-large-{i:03}-{wf}"))
            .collect();
        assert_eq!(got, expected, "by completion: every run once, in order");
    }

    /// Page sizes outside 1..=100 are refused (not clamped); 100 works.
    pub async fn page_size_limits(store: &dyn RunStore) {
        for limit in [0, MAX_PAGE_SIZE + 1, 10_000] {
            let err = store
                .list_runs(&RunQuery {
                    limit,
                    ..RunQuery::default()
                })
                .await
                .expect_err("page size out of range");
            assert!(
                matches!(err, StoreError::Invalid { field: "limit", .. }),
                "{err:?}"
            );
        }
        let page = store
            .list_runs(&RunQuery {
                limit: MAX_PAGE_SIZE,
                ..RunQuery::default()
            })
            .await
            .expect("page size 100");
        assert!(page.runs.is_empty() && page.next_cursor.is_none());
    }

    /// Garbage, edited, truncated or foreign cursors are `BadCursor`.
    pub async fn bad_cursor(store: &dyn RunStore) {
        for i in 0..3i64 {
            store
                .create_run(&full_run(&format!("r-cursor-{i}"), "wf-c", BASE + i), &[])
                .await
                .expect("create");
        }
        let query = RunQuery {
            limit: 1,
            ..RunQuery::default()
        };
        let cursor = store
            .list_runs(&query)
            .await
            .expect("first page")
            .next_cursor
            .expect("more than one page");
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut doc: Value =
            serde_json::from_slice(&engine.decode(&cursor).expect("cursors are base64url"))
                .expect("cursors are JSON");
        doc["id"] = json!("r-cursor-0");
        let edited = engine.encode(serde_json::to_vec(&doc).expect("json"));
        let truncated = cursor[..cursor.len() / 2].to_string();
        let cases: Vec<(&str, RunQuery)> = vec![
            (
                "garbage",
                RunQuery {
                    cursor: Some("not a cursor!".into()),
                    ..query.clone()
                },
            ),
            (
                "not json",
                RunQuery {
                    cursor: Some(engine.encode("hello")),
                    ..query.clone()
                },
            ),
            (
                "edited",
                RunQuery {
                    cursor: Some(edited),
                    ..query.clone()
                },
            ),
            (
                "truncated",
                RunQuery {
                    cursor: Some(truncated),
                    ..query.clone()
                },
            ),
            (
                "other query",
                RunQuery {
                    cursor: Some(cursor.clone()),
                    sort: RunSort::Cost,
                    ..query.clone()
                },
            ),
            (
                "other filter",
                RunQuery {
                    cursor: Some(cursor.clone()),
                    workflow_id: Some("wf-c".into()),
                    ..query.clone()
                },
            ),
        ];
        for (name, bad) in cases {
            let err = store.list_runs(&bad).await.expect_err(name);
            assert!(
                matches!(err, StoreError::BadCursor { .. }),
                "{name}: {err:?}"
            );
            assert!(!err.is_retryable());
            assert!(
                err.to_string().contains("without a cursor"),
                "{name}: {err}"
            );
        }
        // The genuine cursor still works, with another page size too.
        let next = store
            .list_runs(&RunQuery {
                cursor: Some(cursor),
                limit: 5,
                ..query
            })
            .await
            .expect("genuine cursor");
        assert_eq!(next.runs.len(), 2);
    }

    /// `due_runs` lists non-terminal runs whose wake-up has passed, most overdue first, and
    /// follows later writes (finished runs leave, moved wake-ups move).
    pub async fn due_runs(store: &dyn RunStore) {
        let now = BASE + 10_000;
        let make = |id: &str, status: RunStatus, wake: Option<Millis>| {
            let mut run = full_run(id, "wf-due", BASE);
            run.status = status;
            run.wake_at = wake;
            if status.is_terminal() {
                run.completed_at = Some(BASE + 9_000);
            }
            run
        };
        let a = make("r-due-a", RunStatus::Running, Some(now - 1_000));
        let b = make("r-due-b", RunStatus::Pending, Some(now - 5_000));
        let c = make("r-due-c", RunStatus::Succeeded, Some(now - 9_000));
        let d = make("r-due-d", RunStatus::Running, Some(now + 5_000));
        let e = make("r-due-e", RunStatus::Running, None);
        let f = make("r-due-f", RunStatus::Cancelling, Some(now));
        for run in [&a, &b, &c, &d, &e, &f] {
            store.create_run(run, &[]).await.expect("create");
        }
        assert_eq!(
            store.due_runs(now, 10).await.expect("due"),
            vec![
                (b.id.clone(), now - 5_000),
                (a.id.clone(), now - 1_000),
                (f.id.clone(), now)
            ]
        );
        assert_eq!(
            store.due_runs(now, 1).await.expect("due"),
            vec![(b.id.clone(), now - 5_000)]
        );
        assert!(
            store
                .due_runs(now - 6_000, 10)
                .await
                .expect("due")
                .is_empty()
        );

        // b finishes, d's wake-up moves into the past, a's wake-up is cleared.
        let mut b2 = next_version(&b, "done");
        b2.status = RunStatus::Succeeded;
        b2.completed_at = Some(now);
        store.put_run(&b2, 0, &[]).await.expect("finish b");
        let mut d2 = next_version(&d, "moved");
        d2.wake_at = Some(now - 2_000);
        store.put_run(&d2, 0, &[]).await.expect("move d");
        let mut a2 = next_version(&a, "idle");
        a2.wake_at = None;
        store.put_run(&a2, 0, &[]).await.expect("clear a");
        assert_eq!(
            store.due_runs(now, 10).await.expect("due"),
            vec![(d.id.clone(), now - 2_000), (f.id.clone(), now)]
        );
    }

    /// Sessions round-trip, overwrite, and list newest first, optionally only active ones.
    pub async fn sessions(store: &dyn RunStore) {
        let session = |name: &str, active: bool, updated_at: Millis| SessionRecord {
            name: name.into(),
            agent_session_id: active.then(|| format!("agent-{name}")),
            runs: vec![
                SessionRun {
                    run_id: "r-1".into(),
                    step_id: "plan".into(),
                    at: BASE,
                },
                SessionRun {
                    run_id: "r-2".into(),
                    step_id: "build".into(),
                    at: BASE + 5,
                },
            ],
            active,
            created_at: BASE,
            updated_at,
        };
        let design = session("design", true, BASE + 30);
        let old = session("old", false, BASE + 10);
        let review = session("review", true, BASE + 20);
        for s in [&design, &old, &review] {
            store.put_session(s).await.expect("put session");
        }
        assert_eq!(
            store.get_session("design").await.expect("get"),
            Some(design.clone())
        );
        assert_eq!(store.get_session("missing").await.expect("get"), None);
        let names =
            |v: Vec<SessionRecord>| -> Vec<String> { v.into_iter().map(|s| s.name).collect() };
        assert_eq!(
            names(store.list_sessions(false).await.expect("list")),
            vec!["design", "review", "old"]
        );
        assert_eq!(
            names(store.list_sessions(true).await.expect("list")),
            vec!["design", "review"]
        );
        // Overwrite: the old session becomes active and most recent.
        let revived = SessionRecord {
            agent_session_id: Some("agent-old-2".into()),
            active: true,
            updated_at: BASE + 40,
            ..old
        };
        store.put_session(&revived).await.expect("overwrite");
        assert_eq!(store.get_session("old").await.expect("get"), Some(revived));
        assert_eq!(
            names(store.list_sessions(true).await.expect("list")),
            vec!["old", "design", "review"]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Workflow store cases
// ---------------------------------------------------------------------------------------------

pub mod workflow_store {
    use super::*;

    fn with_description(id: &str, text: &str) -> WorkflowDefinition {
        let mut def = definition(id);
        def.description = Some(text.into());
        def
    }

    /// Puts make versions 1, 2, …; latest and pinned versions read back.
    pub async fn versions(store: &dyn WorkflowStore) {
        let v1 = store
            .put_workflow(&with_description("deploy", "first"), BASE)
            .await
            .expect("put v1");
        assert_eq!((v1.version, v1.created_at), (1, BASE));
        let v2 = store
            .put_workflow(&with_description("deploy", "second"), BASE + 1)
            .await
            .expect("put v2");
        assert_eq!(v2.version, 2);
        assert_eq!(v2.definition, with_description("deploy", "second"));
        assert_eq!(
            store.get_workflow("deploy", None).await.expect("get"),
            Some(v2.clone())
        );
        assert_eq!(
            store.get_workflow("deploy", Some(1)).await.expect("get"),
            Some(v1)
        );
        assert_eq!(
            store.get_workflow("deploy", Some(2)).await.expect("get"),
            Some(v2)
        );
        assert_eq!(
            store.get_workflow("deploy", Some(3)).await.expect("get"),
            None
        );
        assert_eq!(
            store.get_workflow("missing", None).await.expect("get"),
            None
        );
        assert_eq!(
            store.get_workflow("missing", Some(1)).await.expect("get"),
            None
        );
    }

    /// Concurrent puts of one workflow all succeed with distinct versions 1..=n.
    pub async fn concurrent_puts(store: &dyn WorkflowStore) {
        let n = 6u64;
        let defs: Vec<WorkflowDefinition> = (0..n)
            .map(|i| with_description("race", &format!("writer {i}")))
            .collect();
        let results =
            futures::future::join_all(defs.iter().map(|d| store.put_workflow(d, BASE))).await;
        let mut versions = BTreeMap::new();
        for (i, result) in results.into_iter().enumerate() {
            let stored = result.expect("every concurrent put succeeds");
            assert_eq!(stored.definition, defs[i]);
            assert!(
                versions.insert(stored.version, i).is_none(),
                "version {} handed out twice",
                stored.version
            );
        }
        assert_eq!(
            versions.keys().copied().collect::<Vec<_>>(),
            (1..=n).collect::<Vec<_>>()
        );
        for (version, writer) in &versions {
            let stored = store
                .get_workflow("race", Some(*version))
                .await
                .expect("get")
                .expect("every version is stored");
            assert_eq!(
                stored.definition, defs[*writer],
                "v{version} holds its writer's text"
            );
        }
        let latest = store
            .get_workflow("race", None)
            .await
            .expect("get")
            .expect("latest");
        assert_eq!(latest.version, n);
    }

    /// Delete hides the latest version but pinned versions stay readable; a new put after the
    /// delete continues the version sequence.
    pub async fn delete(store: &dyn WorkflowStore) {
        store
            .put_workflow(&with_description("gone", "one"), BASE)
            .await
            .expect("put");
        let v2 = store
            .put_workflow(&with_description("gone", "two"), BASE + 1)
            .await
            .expect("put");
        assert!(store.delete_workflow("gone").await.expect("delete"));
        assert_eq!(store.get_workflow("gone", None).await.expect("get"), None);
        assert_eq!(
            store.get_workflow("gone", Some(2)).await.expect("get"),
            Some(v2)
        );
        assert!(
            store
                .get_workflow("gone", Some(1))
                .await
                .expect("get")
                .is_some()
        );
        assert!(!store.delete_workflow("gone").await.expect("delete again"));
        assert!(
            !store
                .delete_workflow("never-existed")
                .await
                .expect("delete missing")
        );
        assert!(store.list_workflows().await.expect("list").is_empty());

        let v3 = store
            .put_workflow(&with_description("gone", "back"), BASE + 2)
            .await
            .expect("put");
        assert_eq!(v3.version, 3);
        assert_eq!(
            store.get_workflow("gone", None).await.expect("get"),
            Some(v3.clone())
        );
        assert_eq!(store.list_workflows().await.expect("list"), vec![v3]);
    }

    /// The listing holds the latest version of every workflow not deleted, by id.
    pub async fn list(store: &dyn WorkflowStore) {
        assert!(store.list_workflows().await.expect("list").is_empty());
        store
            .put_workflow(&with_description("beta", "1"), BASE)
            .await
            .expect("put");
        store
            .put_workflow(&with_description("alpha", "1"), BASE)
            .await
            .expect("put");
        let alpha2 = store
            .put_workflow(&with_description("alpha", "2"), BASE + 1)
            .await
            .expect("put");
        store
            .put_workflow(&with_description("gamma", "1"), BASE)
            .await
            .expect("put");
        assert!(store.delete_workflow("gamma").await.expect("delete"));
        let beta = store
            .get_workflow("beta", None)
            .await
            .expect("get")
            .expect("beta");
        assert_eq!(
            store.list_workflows().await.expect("list"),
            vec![alpha2, beta]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Record store cases
// ---------------------------------------------------------------------------------------------

pub mod record_store {
    use super::*;

    /// The wall clock: record expiry is the one thing stores time out on their own.
    fn now_ms() -> Millis {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970");
        i64::try_from(since_epoch.as_millis()).expect("millis fit in i64")
    }

    /// A value with every JSON type (numbers chosen to read back identically from DynamoDB).
    fn value(n: i64) -> Value {
        json!({
            "n": n,
            "url": "https://example.com/hook?x=1&y=✅",
            "ratio": 0.75,
            "active": true,
            "events": ["run.completed", "approval.requested"],
            "headers": {"x-team": "ops", "empty": ""},
            "secret_ref": null
        })
    }

    async fn ids(store: &dyn RecordStore, collection: &str, after: Option<&str>) -> Vec<String> {
        store
            .list_records(collection, after, MAX_RECORD_PAGE)
            .await
            .expect("list")
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, field: &str, what: &str) {
        match result {
            Err(StoreError::Invalid { field: got, .. }) if got == field => {}
            other => panic!("{what}: expected Invalid {{ field: {field:?} }}, got {other:?}"),
        }
    }

    /// A record reads back exactly as written; a missing record (or collection) is `None`.
    pub async fn round_trip(store: &dyn RecordStore) {
        assert!(
            store
                .create_record("webhooks", "wh-1", &value(1), None)
                .await
                .expect("create")
        );
        assert_eq!(
            store.get_record("webhooks", "wh-1").await.expect("get"),
            Some(value(1))
        );
        assert_eq!(
            store.get_record("webhooks", "wh-2").await.expect("get"),
            None
        );
        assert_eq!(
            store.get_record("nothing", "wh-1").await.expect("get"),
            None
        );
        assert!(ids(store, "nothing", None).await.is_empty());
    }

    /// A second create of the same id returns `false` and keeps the first value.
    pub async fn create_if_absent(store: &dyn RecordStore) {
        assert!(
            store
                .create_record("slack", "run-1", &value(1), None)
                .await
                .expect("first create")
        );
        assert!(
            !store
                .create_record("slack", "run-1", &value(2), Some(now_ms() + 3_600_000))
                .await
                .expect("second create"),
            "a create over an existing record reports it"
        );
        assert_eq!(
            store.get_record("slack", "run-1").await.expect("get"),
            Some(value(1)),
            "the first value stays"
        );
    }

    /// Put creates a missing record and replaces an existing one (value and expiry).
    pub async fn put_replaces(store: &dyn RecordStore) {
        store
            .put_record("deliveries", "d-1", &value(1), Some(now_ms() + 3_600_000))
            .await
            .expect("put a new record");
        assert_eq!(
            store.get_record("deliveries", "d-1").await.expect("get"),
            Some(value(1))
        );
        store
            .put_record("deliveries", "d-1", &json!({"status": "delivered"}), None)
            .await
            .expect("replace");
        assert_eq!(
            store.get_record("deliveries", "d-1").await.expect("get"),
            Some(json!({"status": "delivered"}))
        );
        assert_eq!(ids(store, "deliveries", None).await, vec!["d-1"]);
        // Replacing with an expiry in the past makes the record gone for reads.
        store
            .put_record("deliveries", "d-1", &value(3), Some(now_ms() - 1_000))
            .await
            .expect("replace with a past expiry");
        assert_eq!(
            store.get_record("deliveries", "d-1").await.expect("get"),
            None
        );
    }

    /// Records list in byte order of their ids, whatever the write order, and `after` pages
    /// through them exactly once each.
    pub async fn list_order_and_paging(store: &dyn RecordStore) {
        let written = ["b", "a-1", "é", "B", "10", "a", "9", "z", "Z", "a-10"];
        for (i, id) in written.iter().enumerate() {
            let i = i64::try_from(i).expect("small");
            assert!(
                store
                    .create_record("order", id, &value(i), None)
                    .await
                    .expect("create")
            );
        }
        let mut expected: Vec<String> = written.iter().map(|s| s.to_string()).collect();
        expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(ids(store, "order", None).await, expected);
        let all = store
            .list_records("order", None, MAX_RECORD_PAGE)
            .await
            .expect("list");
        for (id, got) in &all {
            let i = written.iter().position(|w| w == id).expect("a written id");
            assert_eq!(
                got,
                &value(i64::try_from(i).expect("small")),
                "value of {id}"
            );
        }
        // Pages of 3, each starting after the last id of the previous one.
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .list_records("order", after.as_deref(), 3)
                .await
                .expect("page");
            assert!(page.len() <= 3, "a page holds at most its limit");
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            paged.extend(page.into_iter().map(|(id, _)| id));
        }
        assert_eq!(paged, expected, "paging visits every record once, in order");
        // `after` need not be a stored id; after the last one there is nothing.
        assert_eq!(
            ids(store, "order", Some("a-0")).await,
            expected
                .iter()
                .filter(|id| id.as_str() > "a-0")
                .cloned()
                .collect::<Vec<_>>()
        );
        assert!(ids(store, "order", Some("é")).await.is_empty());
        assert!(ids(store, "order", Some("\u{10FFFF}")).await.is_empty());
    }

    /// Page sizes 1..=100 are accepted; 0 and 101 are refused, not clamped.
    pub async fn page_size_limits(store: &dyn RecordStore) {
        for i in 0..3 {
            store
                .put_record("limits", &format!("r{i}"), &value(i), None)
                .await
                .expect("put");
        }
        assert_eq!(
            store
                .list_records("limits", None, 1)
                .await
                .expect("limit 1")
                .len(),
            1
        );
        assert_eq!(
            store
                .list_records("limits", None, 100)
                .await
                .expect("limit 100")
                .len(),
            3
        );
        for limit in [0, MAX_RECORD_PAGE + 1] {
            assert_invalid(
                store.list_records("limits", None, limit).await,
                "limit",
                &format!("limit {limit}"),
            );
        }
    }

    /// The same id in different collections (one a prefix of the other) are separate records.
    pub async fn collections_isolated(store: &dyn RecordStore) {
        let collections = ["hooks", "hooks-x", "hook", "slack"];
        for (i, c) in collections.iter().enumerate() {
            let i = i64::try_from(i).expect("small");
            assert!(
                store
                    .create_record(c, "same", &value(i), None)
                    .await
                    .expect("create")
            );
        }
        for (i, c) in collections.iter().enumerate() {
            let i = i64::try_from(i).expect("small");
            assert_eq!(
                store.get_record(c, "same").await.expect("get"),
                Some(value(i)),
                "{c}"
            );
            assert_eq!(
                ids(store, c, None).await,
                vec!["same"],
                "{c} lists only its own"
            );
        }
        assert!(store.delete_record("hooks", "same").await.expect("delete"));
        assert_eq!(store.get_record("hooks", "same").await.expect("get"), None);
        for c in &collections[1..] {
            assert!(
                store.get_record(c, "same").await.expect("get").is_some(),
                "deleting in hooks left {c} alone"
            );
        }
    }

    /// Delete reports whether there was a record, and a deleted record is gone.
    pub async fn delete(store: &dyn RecordStore) {
        store
            .put_record("subs", "s-1", &value(1), None)
            .await
            .expect("put");
        store
            .put_record("subs", "s-2", &value(2), Some(now_ms() + 3_600_000))
            .await
            .expect("put");
        assert!(store.delete_record("subs", "s-1").await.expect("delete"));
        assert!(
            !store
                .delete_record("subs", "s-1")
                .await
                .expect("delete again"),
            "nothing left to delete"
        );
        assert!(!store.delete_record("subs", "never").await.expect("delete"));
        assert_eq!(store.get_record("subs", "s-1").await.expect("get"), None);
        assert_eq!(ids(store, "subs", None).await, vec!["s-2"]);
        assert!(store.delete_record("subs", "s-2").await.expect("delete"));
        assert!(ids(store, "subs", None).await.is_empty());
        // A deleted id can be created again.
        assert!(
            store
                .create_record("subs", "s-1", &value(3), None)
                .await
                .expect("re-create")
        );
        assert_eq!(
            store.get_record("subs", "s-1").await.expect("get"),
            Some(value(3))
        );
    }

    /// Records whose expiry has passed are not read back, listed, or counted by create and
    /// delete, whether or not the store has removed them yet; unexpired ones are.
    pub async fn expired_not_returned(store: &dyn RecordStore) {
        let now = now_ms();
        let past = now - 60_000;
        let future = now + 3_600_000;
        for id in ["a", "c", "e"] {
            assert!(
                store
                    .create_record("logs", id, &value(0), Some(past))
                    .await
                    .expect("create expired")
            );
        }
        for id in ["b", "d"] {
            assert!(
                store
                    .create_record("logs", id, &value(1), Some(future))
                    .await
                    .expect("create live")
            );
        }
        store
            .put_record("logs", "f", &value(2), None)
            .await
            .expect("put without expiry");
        assert_eq!(store.get_record("logs", "a").await.expect("get"), None);
        assert_eq!(
            store.get_record("logs", "b").await.expect("get"),
            Some(value(1))
        );
        assert_eq!(ids(store, "logs", None).await, vec!["b", "d", "f"]);
        // A page is filled past expired records.
        let page = store.list_records("logs", None, 2).await.expect("page");
        assert_eq!(
            page.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
            vec!["b", "d"]
        );
        assert_eq!(ids(store, "logs", Some("b")).await, vec!["d", "f"]);
        // An expired record is absent for create and delete too.
        assert!(
            !store
                .delete_record("logs", "c")
                .await
                .expect("delete expired"),
            "an expired record is nothing to delete"
        );
        assert!(
            store
                .create_record("logs", "a", &value(5), None)
                .await
                .expect("create over an expired record"),
            "a create over an expired record succeeds"
        );
        assert_eq!(
            store.get_record("logs", "a").await.expect("get"),
            Some(value(5))
        );
        assert_eq!(ids(store, "logs", None).await, vec!["a", "b", "d", "f"]);
    }

    /// Eight concurrent creates of one id: exactly one succeeds and its value is stored.
    pub async fn concurrent_create(store: &dyn RecordStore) {
        let values: Vec<Value> = (0..8).map(value).collect();
        let results = futures::future::join_all(
            values
                .iter()
                .map(|v| store.create_record("race", "one", v, None)),
        )
        .await;
        let winners: Vec<usize> = results
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.expect("every create answers").then_some(i))
            .collect();
        assert_eq!(winners.len(), 1, "exactly one create wins: {winners:?}");
        assert_eq!(
            store.get_record("race", "one").await.expect("get"),
            Some(values[winners[0]].clone()),
            "the winner's value is stored"
        );
    }

    /// Bad collections, ids, cursors and oversized values are refused on every method, and a
    /// refused write stores nothing. Limits are inclusive: 512-byte keys and 64 KiB values fit.
    pub async fn invalid_keys(store: &dyn RecordStore) {
        let long = "k".repeat(MAX_RECORD_KEY_BYTES + 1);
        let bad: [(&str, &str, &str); 8] = [
            ("", "x", "collection"),
            ("a#b", "x", "collection"),
            ("tab\tbed", "x", "collection"),
            (long.as_str(), "x", "collection"),
            ("keys", "", "id"),
            ("keys", "line\nbreak", "id"),
            ("keys", "nul\u{0}", "id"),
            ("keys", long.as_str(), "id"),
        ];
        for (collection, id, field) in bad {
            let what = format!("({collection:?}, {id:?})");
            assert_invalid(
                store.create_record(collection, id, &value(1), None).await,
                field,
                &format!("create {what}"),
            );
            assert_invalid(
                store.put_record(collection, id, &value(1), None).await,
                field,
                &format!("put {what}"),
            );
            assert_invalid(
                store.get_record(collection, id).await,
                field,
                &format!("get {what}"),
            );
            assert_invalid(
                store.delete_record(collection, id).await,
                field,
                &format!("delete {what}"),
            );
            if field == "collection" {
                assert_invalid(
                    store.list_records(collection, None, 10).await,
                    field,
                    &format!("list {what}"),
                );
            }
        }
        assert_invalid(
            store.list_records("keys", Some("line\nbreak"), 10).await,
            "after",
            "list after a control character",
        );
        // A value over 64 KiB of JSON is refused and not stored.
        let big = json!({"blob": "x".repeat(MAX_RECORD_BYTES)});
        assert_invalid(
            store.create_record("keys", "big", &big, None).await,
            "value",
            "create a value over 64 KiB",
        );
        assert_invalid(
            store.put_record("keys", "big", &big, None).await,
            "value",
            "put a value over 64 KiB",
        );
        assert!(
            ids(store, "keys", None).await.is_empty(),
            "refused writes stored nothing"
        );
        // The limits themselves are allowed.
        let longest = "k".repeat(MAX_RECORD_KEY_BYTES);
        let fits = json!("x".repeat(MAX_RECORD_BYTES - 2));
        assert!(
            store
                .create_record(&longest, &longest, &fits, None)
                .await
                .expect("512-byte keys and a 64 KiB value fit")
        );
        assert_eq!(
            store.get_record(&longest, &longest).await.expect("get"),
            Some(fits)
        );
        assert_eq!(ids(store, &longest, None).await, vec![longest.clone()]);
    }
}

// ---------------------------------------------------------------------------------------------
// Work queue cases
// ---------------------------------------------------------------------------------------------

pub mod queue {
    use super::*;
    use flowgate_shared::ports::{MAX_HAND_BACK, Received};

    fn wake(run_id: &str) -> WorkMessage {
        WorkMessage::Wake {
            run_id: run_id.into(),
            at: None,
        }
    }

    /// Receive until `want` distinct messages arrived or `within` passed; acks each at once.
    async fn drain(queue: &dyn WorkQueue, want: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        let mut got: Vec<Received> = Vec::new();
        while got.len() < want && Instant::now() < deadline {
            for r in queue
                .receive(10, Duration::from_secs(1))
                .await
                .expect("receive")
            {
                queue.ack(&r.receipt).await.expect("ack");
                if !got.iter().any(|g| g.message == r.message) {
                    got.push(r);
                }
            }
        }
        got
    }

    /// Send a wake-up for `run_id` and receive it: the one message received within 5 s.
    async fn send_and_receive(queue: &dyn WorkQueue, run_id: &str) -> Received {
        queue
            .send(&wake(run_id), Duration::ZERO)
            .await
            .expect("send");
        let mut got = queue
            .receive(10, Duration::from_secs(5))
            .await
            .expect("receive");
        assert_eq!(got.len(), 1, "{got:?}");
        got.remove(0)
    }

    /// A sent message is received once with receive count 1, intact, and acked.
    pub async fn send_receive_ack(queue: &dyn WorkQueue) {
        let message = WorkMessage::Event {
            run_id: "r-1".into(),
            event: Event::ApprovalDecided {
                approval_id: "r-1.approve.1".into(),
                by: "slack:U123".into(),
                decision: ApprovalDecision::Approve,
                comment: Some("ship it ✅".into()),
                groups: vec!["S0APPROVERS".into()],
            },
        };
        queue.send(&message, Duration::ZERO).await.expect("send");
        let got = queue
            .receive(10, Duration::from_secs(5))
            .await
            .expect("receive");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].message, message);
        assert_eq!(got[0].receive_count, 1);
        queue.ack(&got[0].receipt).await.expect("ack");
        // Acking twice is harmless.
        queue.ack(&got[0].receipt).await.expect("second ack");
    }

    /// A waiting receive returns as soon as a message arrives, not at the end of its wait.
    pub async fn receive_wakes_on_send(queue: &dyn WorkQueue) {
        let started = Instant::now();
        let (got, sent) = tokio::join!(queue.receive(10, Duration::from_secs(10)), async {
            // Send while the receive above is already waiting.
            tokio::time::sleep(Duration::from_millis(300)).await;
            queue.send(&wake("r-wake"), Duration::ZERO).await
        });
        sent.expect("send");
        let got = got.expect("receive");
        let waited = started.elapsed();
        assert_eq!(got.len(), 1, "the long poll returned the message");
        assert_eq!(got[0].message, wake("r-wake"));
        assert!(
            waited < Duration::from_secs(5),
            "the receive waited {waited:?} after the send"
        );
        queue.ack(&got[0].receipt).await.expect("ack");
    }

    /// A message sent with a 2 s delay is not received at once, and is received after the delay.
    pub async fn delay_respected(queue: &dyn WorkQueue) {
        let sent = Instant::now();
        queue
            .send(&wake("r-delayed"), Duration::from_secs(2))
            .await
            .expect("send");
        let early = queue
            .receive(10, Duration::ZERO)
            .await
            .expect("receive now");
        assert!(
            early.is_empty(),
            "a delayed message arrived early: {early:?}"
        );
        let got = drain(queue, 1, Duration::from_secs(10)).await;
        let waited = sent.elapsed();
        assert_eq!(got.len(), 1, "the delayed message arrived within 10 s");
        assert_eq!(got[0].message, wake("r-delayed"));
        assert!(
            waited >= Duration::from_millis(1_900),
            "received after {waited:?}, before its 2 s delay"
        );
    }

    /// 25 messages sent in one call (SQS batches of 10) all arrive, each intact.
    pub async fn batch_of_25(queue: &dyn WorkQueue) {
        let messages: Vec<(WorkMessage, Duration)> = (0..25u32)
            .map(|i| {
                let message = match i % 3 {
                    0 => wake(&format!("r-{i}")),
                    1 => WorkMessage::Poll {
                        run_id: format!("r-{i}"),
                        step: "plan".into(),
                        attempt: 1,
                        upstream_run_id: format!("up-{i}"),
                        poll: i,
                    },
                    _ => WorkMessage::Event {
                        run_id: format!("r-{i}"),
                        event: Event::Tick,
                    },
                };
                (message, Duration::ZERO)
            })
            .collect();
        queue.send_batch(&messages).await.expect("send batch");
        let got = drain(queue, 25, Duration::from_secs(20)).await;
        let got: BTreeSet<String> = got
            .iter()
            .map(|r| serde_json::to_string(&r.message).expect("json"))
            .collect();
        let sent: BTreeSet<String> = messages
            .iter()
            .map(|(m, _)| serde_json::to_string(m).expect("json"))
            .collect();
        assert_eq!(got, sent);
    }

    /// A received message that is not acked comes back after the visibility timeout with a
    /// higher receive count, with the same content.
    pub async fn unacked_redelivered(queue: &dyn WorkQueue) {
        let first = send_and_receive(queue, "r-crash").await;
        assert_eq!(first.receive_count, 1);
        let hidden = queue.receive(10, Duration::ZERO).await.expect("receive");
        assert!(
            hidden.is_empty(),
            "an in-flight message is hidden: {hidden:?}"
        );
        // Not acked: the "handler crashed". Wait out the 2 s visibility timeout.
        let deadline = Instant::now() + Duration::from_secs(10);
        let again = loop {
            let got = queue
                .receive(10, Duration::from_secs(1))
                .await
                .expect("receive");
            if !got.is_empty() || Instant::now() > deadline {
                break got;
            }
        };
        assert_eq!(
            again.len(),
            1,
            "the unacked message was redelivered within 10 s"
        );
        assert_eq!(again[0].message, wake("r-crash"));
        assert_eq!(again[0].receive_count, 2);
        queue.ack(&again[0].receipt).await.expect("ack");
    }

    /// A message handed back (`redeliver`, SQS's `ChangeMessageVisibility`) stays hidden for
    /// the delay asked, not the visibility timeout, then comes again unchanged with a higher
    /// receive count; a hand-back with a receipt a later delivery superseded changes nothing
    /// and is not an error.
    pub async fn hand_back(queue: &dyn WorkQueue) {
        let first = send_and_receive(queue, "r-handed").await;
        // Longer than the visibility timeout (2 s), which would bring it back sooner.
        let delay = VISIBILITY_TIMEOUT * 2;
        let asked = Instant::now();
        queue
            .redeliver(&first.receipt, delay)
            .await
            .expect("hand back");
        let hidden = queue
            .receive(10, VISIBILITY_TIMEOUT + Duration::from_secs(1))
            .await
            .expect("receive");
        assert!(
            hidden.is_empty(),
            "still hidden past the visibility timeout: {hidden:?}"
        );
        let again = queue
            .receive(10, Duration::from_secs(5))
            .await
            .expect("receive");
        assert_eq!(again.len(), 1, "back within 5 s more");
        let waited = asked.elapsed();
        assert!(
            waited >= delay - Duration::from_millis(100),
            "came back after {waited:?}, before the {delay:?} asked"
        );
        assert_eq!(again[0].message, wake("r-handed"));
        assert_eq!(again[0].receive_count, first.receive_count + 1);
        queue
            .redeliver(&first.receipt, Duration::from_secs(30))
            .await
            .expect("a superseded receipt is not an error");
        // Longer than a send may be delayed (a wake-up for a timer hours away), up to 11 h.
        queue
            .redeliver(&again[0].receipt, Duration::from_secs(3_600))
            .await
            .expect("an hour");
        let err = queue
            .redeliver(&again[0].receipt, MAX_HAND_BACK + Duration::from_secs(1))
            .await
            .expect_err("over 11 h");
        assert!(matches!(err, QueueError::HandBackTooLong { .. }), "{err:?}");
        assert!(!err.is_retryable());
        queue.ack(&again[0].receipt).await.expect("ack");
    }

    /// An acked message does not come back, even after the visibility timeout.
    pub async fn ack_removes(queue: &dyn WorkQueue) {
        let got = send_and_receive(queue, "r-acked").await;
        queue.ack(&got.receipt).await.expect("ack");
        let waited_out = Instant::now() + VISIBILITY_TIMEOUT + Duration::from_secs(1);
        while Instant::now() < waited_out {
            let again = queue
                .receive(10, Duration::from_secs(1))
                .await
                .expect("receive");
            assert!(again.is_empty(), "an acked message came back: {again:?}");
        }
    }

    /// Delays over 900 s are refused with advice, a batch with one is refused whole, and
    /// 900 s itself is accepted.
    pub async fn delay_limit(queue: &dyn WorkQueue) {
        let err = queue
            .send(&wake("r-late"), Duration::from_secs(901))
            .await
            .expect_err("901 s delay");
        assert!(matches!(err, QueueError::DelayTooLong { .. }), "{err:?}");
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(
            text.contains("chain") && text.contains("scheduler"),
            "{text}"
        );
        let err = queue
            .send_batch(&[
                (wake("r-ok"), Duration::ZERO),
                (wake("r-late"), Duration::from_secs(3_600)),
            ])
            .await
            .expect_err("batch with a 1 h delay");
        assert!(matches!(err, QueueError::DelayTooLong { .. }), "{err:?}");
        queue
            .send(&wake("r-max"), Duration::from_secs(900))
            .await
            .expect("900 s is allowed");
        let got = queue
            .receive(10, Duration::from_secs(1))
            .await
            .expect("receive");
        assert!(
            got.is_empty(),
            "nothing of the refused batch was sent, and 900 s is not now: {got:?}"
        );
    }
}
