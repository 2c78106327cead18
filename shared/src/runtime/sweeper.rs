//! The sweeper: re-wakes runs whose `wake_at` passed without anyone waking them.
//!
//! Every run records when it next needs attention (a timer, a re-issue of an effect whose
//! outcome was never recorded, a poll chain presumed lost). Messages can be lost (a crash
//! between a write and an enqueue, a dropped message), so something must look at `wake_at`
//! from outside: this function. The triggers Lambda runs it every minute on an EventBridge
//! schedule, and `flowgate serve` runs it on a timer.

use std::time::Duration;

use tracing::info;

use super::error::ExecError;
use crate::model::Millis;
use crate::ports::{RunStore, WorkMessage, WorkQueue};

/// How overdue a run must be before the sweeper wakes it: a wake-up that is merely in flight
/// (SQS delays are rounded up to whole seconds, a handler may be busy) is not doubled.
pub const SWEEP_GRACE_MS: i64 = 30_000;

/// Enqueue a `Wake` (without `at`, so it ticks at once) for up to `limit` runs whose
/// `wake_at` is more than [`SWEEP_GRACE_MS`] before `now`, most overdue first. Returns how many
/// were enqueued. A duplicate wake-up is harmless: ticks are idempotent.
pub async fn sweep(
    store: &dyn RunStore,
    queue: &dyn WorkQueue,
    now: Millis,
    limit: usize,
) -> Result<usize, ExecError> {
    let due = store
        .due_runs(now.saturating_sub(SWEEP_GRACE_MS), limit)
        .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let messages: Vec<(WorkMessage, Duration)> = due
        .iter()
        .map(|(run_id, _)| {
            (
                WorkMessage::Wake {
                    run_id: run_id.clone(),
                    at: None,
                },
                Duration::ZERO,
            )
        })
        .collect();
    queue.send_batch(&messages).await?;
    let most_overdue_ms = due.first().map_or(0, |(_, at)| now - at);
    info!(
        count = due.len(),
        most_overdue_ms, "re-woke runs whose wake-up was overdue"
    );
    Ok(due.len())
}
