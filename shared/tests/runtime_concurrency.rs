//! Concurrency limits on real local ports (redb store and records, in-process queue): with a
//! limit of 2 and 5 starts, at most 2 run at once and all 5 start and finish in order; keys
//! count separately; `when_full: reject` refuses and writes no run; a cancelled queued run
//! steps aside; the sweeper's repair frees a slot nobody released; a repeated idempotency key
//! queues nothing twice.

mod runtime_support;

use std::collections::BTreeMap;
use std::time::Duration;

use flowgate_shared::engine::Event;
use flowgate_shared::model::{Run, RunStatus};
use flowgate_shared::ports::{RecordStore, RunQuery, RunStore, WorkQueue};
use flowgate_shared::runtime::{
    Admission, Clock, ORPHAN_AFTER_MS, StartError, StartedRun, SystemClock,
};
use runtime_support::*;
use serde_json::{Value, json};

/// Two at a time; each run waits a little so runs overlap when the limit lets them.
const LIMITED: &str = r#"
id: limited
concurrency: {limit: 2}
steps:
  - {id: nap, kind: wait, duration: 30ms}
"#;

/// One at a time per repository.
const PER_REPO: &str = r#"
id: per-repo
inputs:
  repo: {type: string, required: true}
concurrency: {limit: 1, key: "${{ inputs.repo }}"}
steps:
  - {id: nap, kind: wait, duration: 30ms}
"#;

/// One at a time, and a start beyond that is refused.
const STRICT: &str = r#"
id: strict
concurrency: {limit: 1, when_full: reject}
steps:
  - {id: nap, kind: wait, duration: 30ms}
"#;

type World = NotifiedWorld;

async fn world(defs: &[&str]) -> World {
    notified_world(defs).await
}

/// What the settle loop saw: the most runs active at once, and the order runs started and
/// finished in.
#[derive(Debug, Default)]
struct Observed {
    max_active: usize,
    started: Vec<String>,
    finished: Vec<String>,
}

impl World {
    async fn start(&self, workflow: &str, inputs: Value) -> StartedRun {
        self.try_start(workflow, inputs, None).await.expect("start")
    }

    /// Handle messages until the queue is empty, checking after every message how many runs
    /// are active and noting when each starts and finishes.
    async fn settle(&self) -> Observed {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut seen = Observed::default();
        let mut status: BTreeMap<String, RunStatus> = BTreeMap::new();
        loop {
            let batch = self
                .queue
                .receive(1, Duration::from_millis(50))
                .await
                .expect("receive");
            for m in batch {
                match self.executor.handle(&m.message).await {
                    Ok(()) => self.queue.ack(&m.receipt).await.expect("ack"),
                    Err(e) if e.is_retryable() => {}
                    Err(e) => panic!("handling {:?} failed: {e}", m.message),
                }
            }
            let runs = self.runs().await;
            let active = runs
                .iter()
                .filter(|r| r.status == RunStatus::Running)
                .count();
            seen.max_active = seen.max_active.max(active);
            for r in &runs {
                let before = status.insert(r.id.clone(), r.status);
                if r.status != RunStatus::Pending && before.is_none_or(|b| b == RunStatus::Pending)
                {
                    seen.started.push(r.id.clone());
                }
                if r.status.is_terminal() && before.is_none_or(|b| !b.is_terminal()) {
                    seen.finished.push(r.id.clone());
                }
            }
            if self.queue.is_empty() {
                return seen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the queue did not settle: {} messages left",
                self.queue.len()
            );
        }
    }

    async fn run(&self, id: &str) -> Run {
        self.store.get_run(id).await.expect("read").expect("run")
    }

    async fn runs(&self) -> Vec<Run> {
        let page = self
            .store
            .list_runs(&RunQuery {
                limit: 100,
                ..RunQuery::default()
            })
            .await
            .expect("list runs");
        page.runs
    }

    fn admission(&self) -> Admission<'_> {
        Admission {
            store: &*self.store,
            records: &*self.store,
            queue: &*self.queue,
        }
    }
}

#[tokio::test]
async fn limit_two_with_five_starts_runs_two_at_a_time_in_order() {
    let w = world(&[LIMITED]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let started = w.start("limited", json!({})).await;
        ids.push(started.run_id);
    }
    // The first two were admitted at once; the other three wait, in order, and say so.
    let state = w.admission().state("limited").await.expect("group state");
    assert_eq!(
        state.active,
        ids[..2].to_vec(),
        "the first two hold the slots"
    );
    assert_eq!(
        state.queued,
        ids[2..].to_vec(),
        "the rest wait in start order"
    );
    for id in &ids[2..] {
        let run = w.run(id).await;
        assert!(run.queued && run.status == RunStatus::Pending, "{run:?}");
        let audit = w.store.audit(id, None, 10).await.expect("audit");
        assert_eq!(audit[0].kind, "run.queued", "{audit:?}");
    }

    let seen = w.settle().await;
    assert_eq!(seen.max_active, 2, "at most two ran at once: {seen:?}");
    assert_eq!(seen.started, ids, "started in start order");
    assert_eq!(seen.finished, ids, "finished in start order");
    for id in &ids {
        let run = w.run(id).await;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        assert!(!run.queued);
    }
    // Each of the last three started only after an earlier run finished.
    for k in 2..5 {
        let started = w.run(&ids[k]).await.started_at.expect("started");
        let freed = w.run(&ids[k - 2]).await.completed_at.expect("finished");
        assert!(
            started >= freed,
            "run {k} started before run {} finished",
            k - 2
        );
    }
    let state = w.admission().state("limited").await.expect("group state");
    assert!(
        state.active.is_empty() && state.queued.is_empty(),
        "{state:?}"
    );
}

#[tokio::test]
async fn runs_with_different_keys_count_separately() {
    let w = world(&[PER_REPO]).await;
    let a = w.start("per-repo", json!({"repo": "x"})).await;
    let b = w.start("per-repo", json!({"repo": "y"})).await;
    let c = w.start("per-repo", json!({"repo": "x"})).await;
    assert!(
        !a.queued && !b.queued,
        "different repositories do not wait on each other"
    );
    assert!(c.queued, "a second run for repository x waits");
    assert_eq!(
        w.run(&c.run_id).await.concurrency_group.as_deref(),
        Some("per-repo/x")
    );
    let seen = w.settle().await;
    assert_eq!(seen.max_active, 2, "{seen:?}");
    let a_done = w.run(&a.run_id).await.completed_at.expect("a finished");
    let c_started = w.run(&c.run_id).await.started_at.expect("c started");
    assert!(c_started >= a_done, "c started only after a finished");
    for id in [&a.run_id, &b.run_id, &c.run_id] {
        assert_eq!(w.run(id).await.status, RunStatus::Succeeded);
    }
}

#[tokio::test]
async fn when_full_reject_refuses_and_writes_no_run() {
    let w = world(&[STRICT]).await;
    let first = w.start("strict", json!({})).await;
    assert!(!first.queued);
    let err = w
        .try_start("strict", json!({}), None)
        .await
        .expect_err("the second start is refused");
    assert!(
        matches!(err, StartError::ConcurrencyLimit { limit: 1, .. }),
        "{err}"
    );
    assert!(err.is_retryable(), "a full group is worth retrying later");
    assert!(err.to_string().contains("retry when one finishes"), "{err}");
    assert_eq!(w.runs().await.len(), 1, "the refused start wrote no run");

    w.settle().await;
    assert_eq!(w.run(&first.run_id).await.status, RunStatus::Succeeded);
    let again = w.start("strict", json!({})).await;
    assert!(
        !again.queued,
        "the slot was released when the first run finished"
    );
    w.settle().await;
    assert_eq!(w.run(&again.run_id).await.status, RunStatus::Succeeded);
}

#[tokio::test]
async fn a_cancelled_queued_run_never_starts_and_the_next_goes_ahead() {
    let w = world(&[PER_REPO]).await;
    let inputs = json!({"repo": "x"});
    let a = w.start("per-repo", inputs.clone()).await;
    let b = w.start("per-repo", inputs.clone()).await;
    let c = w.start("per-repo", inputs).await;
    assert!(b.queued && c.queued);
    w.executor
        .command(
            &b.run_id,
            Event::CancelRequested {
                by: "api:test".into(),
                reason: Some("not needed".into()),
                force: false,
            },
        )
        .await
        .expect("cancel the queued run");
    let seen = w.settle().await;
    assert_eq!(seen.max_active, 1, "{seen:?}");
    let b_run = w.run(&b.run_id).await;
    assert_eq!(b_run.status, RunStatus::Cancelled);
    assert_eq!(b_run.started_at, None, "the cancelled run never started");
    assert_eq!(w.run(&a.run_id).await.status, RunStatus::Succeeded);
    assert_eq!(w.run(&c.run_id).await.status, RunStatus::Succeeded);
    let state = w.admission().state("per-repo/x").await.expect("state");
    assert!(
        state.active.is_empty() && state.queued.is_empty(),
        "{state:?}"
    );
}

#[tokio::test]
async fn a_tick_does_not_start_a_queued_run() {
    let w = world(&[STRICT
        .replace("when_full: reject", "when_full: queue")
        .as_str()])
    .await;
    let a = w.start("strict", json!({})).await;
    let b = w.start("strict", json!({})).await;
    assert!(b.queued);
    for event in [Event::Start, Event::Tick] {
        w.executor
            .handle(&flowgate_shared::ports::WorkMessage::Event {
                run_id: b.run_id.clone(),
                event,
            })
            .await
            .expect("handled");
        let run = w.run(&b.run_id).await;
        assert_eq!(
            run.status,
            RunStatus::Pending,
            "a queued run waits for its slot"
        );
        assert_eq!(run.wake_at, None, "the sweeper leaves a queued run alone");
    }
    w.settle().await;
    assert_eq!(w.run(&a.run_id).await.status, RunStatus::Succeeded);
    assert_eq!(w.run(&b.run_id).await.status, RunStatus::Succeeded);
}

#[tokio::test]
async fn repair_frees_a_slot_nobody_released_and_admits_the_next_run() {
    let w = world(&[STRICT
        .replace("when_full: reject", "when_full: queue")
        .as_str()])
    .await;
    // A slot held by a run that was never created (its start stopped half way), long ago.
    let long_ago = SystemClock.now_ms() - ORPHAN_AFTER_MS - 1;
    let held = json!({"run_id": "never-created", "at": long_ago});
    assert!(
        RecordStore::create_record(&*w.store, "concurrency-slots.strict", "000", &held, None)
            .await
            .expect("write the stale slot")
    );
    let b = w.start("strict", json!({})).await;
    assert!(b.queued, "the group looks full");
    assert!(
        w.queue.is_empty(),
        "nothing can admit it: the slot's run will never finish"
    );

    let admitted = w
        .admission()
        .repair(SystemClock.now_ms())
        .await
        .expect("repair");
    assert_eq!(
        admitted, 1,
        "the stale slot was freed and the queued run admitted"
    );
    w.settle().await;
    assert_eq!(w.run(&b.run_id).await.status, RunStatus::Succeeded);
    // A second repair finds nothing to do.
    let admitted = w
        .admission()
        .repair(SystemClock.now_ms())
        .await
        .expect("repair");
    assert_eq!(admitted, 0);
}

#[tokio::test]
async fn a_repeated_idempotency_key_queues_one_run() {
    let w = world(&[LIMITED]).await;
    for _ in 0..2 {
        w.start("limited", json!({})).await;
    }
    let first = w
        .try_start("limited", json!({}), Some("same"))
        .await
        .expect("start");
    let second = w
        .try_start("limited", json!({}), Some("same"))
        .await
        .expect("start again");
    assert_eq!(first.run_id, second.run_id);
    assert!(second.existing && second.queued);
    let state = w.admission().state("limited").await.expect("state");
    assert_eq!(state.queued, vec![first.run_id.clone()], "one queue entry");
    w.settle().await;
    assert_eq!(w.runs().await.len(), 3);
    assert!(
        w.runs()
            .await
            .iter()
            .all(|r| r.status == RunStatus::Succeeded)
    );
}
