//! Agent starts from queued effects (an approval's `Perform` message, which may be delivered
//! twice) claim the start first: the first delivery starts without listing the agent
//! service's runs, a second delivery finds the claim, looks the run up and adopts it. On real
//! local ports (redb store and records, in-process queue, the agent simulator over HTTP).

mod runtime_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flowgate_shared::adapters::embedded::EmbeddedStore;
use flowgate_shared::engine::Event;
use flowgate_shared::model::{ApprovalDecision, Millis, RunStatus, StepStatus};
use flowgate_shared::ports::{RecordStore, RunStore, StoreError, WorkMessage, WorkQueue};
use flowgate_shared::runtime::START_CLAIMS;
use runtime_support::*;
use serde_json::{Value, json};

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
        if collection == START_CLAIMS && self.fail.swap(false, Ordering::SeqCst) {
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

const GATED: &str = r#"
id: gated
steps:
  - {id: approve, kind: approval, message: "go?", approvers: [ann]}
  - {id: build, kind: agent, workflow: implement, message: "build it [sim min=1 max=1]", depends_on: [approve]}
"#;

/// A notified world whose agent calls are logged by a fuse that never fires, and whose claim
/// writes can be made to fail.
struct Gated {
    w: NotifiedWorld,
    /// Logs every agent call (it never fires).
    fuse: Arc<Fuse>,
    records: Arc<FlakyClaims>,
    run_id: String,
    approval: String,
}

/// A run of `GATED` waiting at its approval.
async fn gated_run() -> Gated {
    let fuse = Fuse::never();
    let agent_fuse = fuse.clone();
    let mut flaky = None;
    let w = notified_world_with(
        &[GATED],
        |sim| {
            Arc::new(CrashAgent {
                inner: client(sim, Duration::from_secs(300)),
                fuse: agent_fuse,
            })
        },
        |store| {
            let records = Arc::new(FlakyClaims {
                inner: store,
                fail: AtomicBool::new(false),
            });
            flaky = Some(records.clone());
            records
        },
    )
    .await;
    let run_id = w
        .try_start("gated", json!({}), None)
        .await
        .expect("start")
        .run_id;
    // The start: the approval opens (nothing else happens without Slack).
    for m in w
        .queue
        .receive(10, Duration::from_millis(200))
        .await
        .expect("receive")
    {
        w.executor.handle(&m.message).await.expect("start");
        w.queue.ack(&m.receipt).await.expect("ack");
    }
    let run = w.store.get_run(&run_id).await.expect("read").expect("run");
    let approval = run.steps["approve"]
        .approval
        .as_ref()
        .expect("approval open")
        .id
        .clone();
    Gated {
        w,
        fuse,
        records: flaky.expect("the world built its records"),
        run_id,
        approval,
    }
}

impl Gated {
    /// Approve as the approvals function does (written now, effects queued) and return the
    /// queued `Perform` message.
    async fn approve(&self) -> WorkMessage {
        self.w
            .executor
            .command_deferred(
                &self.run_id,
                Event::ApprovalDecided {
                    approval_id: self.approval.clone(),
                    by: "ann".into(),
                    decision: ApprovalDecision::Approve,
                    comment: None,
                    groups: Vec::new(),
                },
            )
            .await
            .expect("decision");
        self.w
            .queue
            .receive(10, Duration::from_millis(200))
            .await
            .expect("receive")
            .into_iter()
            .find(|m| matches!(m.message, WorkMessage::Perform { .. }))
            .expect("a Perform message")
            .message
    }

    /// (agent starts, look-ups by session name) so far.
    fn counts(&self) -> (usize, usize) {
        let log = self.fuse.log();
        let count = |what: &str| log.iter().filter(|c| **c == what).count();
        (
            count("agent.start_run"),
            count("agent.find_run_by_session_name"),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_agent_start_is_claimed_once_and_a_second_delivery_adopts_the_run() {
    let g = gated_run().await;
    let perform = g.approve().await;

    // First delivery: claims and starts without a look-up.
    g.w.executor.handle(&perform).await.expect("first delivery");
    assert_eq!(g.counts(), (1, 0), "one start, no look-up");
    let upstream =
        g.w.store
            .get_run(&g.run_id)
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
    g.w.executor
        .handle(&perform)
        .await
        .expect("second delivery");
    assert_eq!(g.counts(), (1, 1), "no second agent run; one look-up");
    let run =
        g.w.store
            .get_run(&g.run_id)
            .await
            .expect("read")
            .expect("run");
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
    let g = gated_run().await;
    let perform = g.approve().await;
    g.records.fail.store(true, Ordering::SeqCst);
    g.w.executor.handle(&perform).await.expect("first delivery");
    assert_eq!(
        g.counts(),
        (0, 0),
        "no claim, no start (the engine re-issues it)"
    );
    let run =
        g.w.store
            .get_run(&g.run_id)
            .await
            .expect("read")
            .expect("run");
    assert!(
        run.steps["build"]
            .agent
            .as_ref()
            .is_none_or(|a| a.upstream_run_id.is_none())
    );
    g.w.executor
        .handle(&perform)
        .await
        .expect("second delivery");
    assert_eq!(g.counts(), (1, 0), "the next delivery claims and starts");
    g.w.executor.handle(&perform).await.expect("third delivery");
    assert_eq!(g.counts(), (1, 1), "a later one looks up and adopts");
}
