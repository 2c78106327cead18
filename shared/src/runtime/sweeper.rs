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

/// What one [`sweep_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// Runs re-woken because their wake-up was overdue.
    pub woken: usize,
    /// Queued runs admitted after a slot nobody released was freed.
    pub admitted: usize,
    /// Schedules created or deleted because they differed from the definitions.
    pub schedules_fixed: usize,
}

/// The ports the periodic sweep looks after.
#[derive(Clone, Copy)]
pub struct SweepPorts<'a> {
    pub store: &'a dyn RunStore,
    pub workflows: &'a dyn crate::ports::WorkflowStore,
    pub queue: &'a dyn WorkQueue,
    pub records: &'a dyn crate::ports::RecordStore,
    /// Schedules are reconciled when there is a scheduler.
    pub scheduler: Option<&'a dyn crate::ports::Scheduler>,
}

impl std::fmt::Debug for SweepPorts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepPorts").finish_non_exhaustive()
    }
}

/// Everything the one-minute sweep does (the triggers function on its schedule, `flowgate
/// serve` on a timer): re-wake overdue runs ([`sweep`]), free concurrency slots nobody released
/// and admit who waits on them, and put back schedules that differ from the definitions. Each
/// part runs even when an earlier one failed; the first error is returned after all ran.
pub async fn sweep_all(
    ports: SweepPorts<'_>,
    now: Millis,
    limit: usize,
) -> Result<SweepReport, ExecError> {
    let mut report = SweepReport::default();
    let mut first_error = None;
    match sweep(ports.store, ports.queue, now, limit).await {
        Ok(n) => report.woken = n,
        Err(e) => first_error = Some(e),
    }
    let admission = super::Admission {
        store: ports.store,
        records: ports.records,
        queue: ports.queue,
    };
    match admission.repair(now).await {
        Ok(n) => report.admitted = n,
        Err(e) => {
            first_error.get_or_insert(e);
        }
    }
    if let Some(scheduler) = ports.scheduler {
        match super::reconcile_schedules(scheduler, ports.workflows).await {
            Ok(r) => report.schedules_fixed = r.created.len() + r.updated.len() + r.deleted.len(),
            Err(e) => {
                first_error.get_or_insert(e.into());
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}
