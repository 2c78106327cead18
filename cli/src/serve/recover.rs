//! Resuming runs after a stop: the in-process queue died with the last process, so every
//! message it held (starts, polls, timers) is gone, and only the store says what each run
//! needs next.
//!
//! One sweep is not enough for that. The sweeper wakes runs whose `wake_at` is more than 30 s
//! overdue, which is right while the queue lives (a wake-up may be in flight) but wrong after
//! a restart, and an agent step's `wake_at` is when its poll chain would be *presumed* lost:
//! minutes after its last poll, because a live chain only writes on progress and on a
//! five-minute heartbeat. A run stopped mid-agent-step would sit idle for those minutes.
//!
//! Right after a restart, though, no message is in flight, so nothing has to be presumed:
//! [`resume`] re-arms every non-terminal run from the store before any worker starts.

use futures::StreamExt as _;
use tracing::{debug, warn};

use flowgate_shared::model::{Millis, StepStatus};
use flowgate_shared::ports::{RunStore, WorkMessage, WorkQueue};
use flowgate_shared::runtime::{ExecError, Executor, delay_until};

/// Agent status polls made at once during [`resume`].
const RESUME_POLL_CONCURRENCY: usize = 8;

/// What [`resume`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// Non-terminal runs found with a wake-up time.
    pub runs: usize,
    /// Runs whose wake-up had passed, woken at once.
    pub woken_now: usize,
    /// Runs whose wake-up is still ahead, given a timer for it.
    pub timers: usize,
    /// Agent poll chains restarted (one per agent step that was running).
    pub agent_polls: usize,
}

/// Re-arm every non-terminal run; call it once at startup, before the workers start.
///
/// - Each agent step that was running gets its poll chain back at once: a `Poll` carrying the
///   chain's current number (what the engine itself issues when it presumes a chain lost),
///   handled here, before the run's wake-up is queued. Handling it first matters: it refreshes
///   the step's poll bookkeeping, so the tick below does not re-issue a second chain.
/// - Each run gets a `Wake` for its `wake_at`: now when it has passed (which also starts runs
///   whose start message was lost), at its time otherwise (a retry backoff, a `wait` step, an
///   approval's expiry, a deadline).
///
/// A poll that fails retryably (the agent service is down) is queued for the workers instead.
pub async fn resume(
    store: &dyn RunStore,
    queue: &dyn WorkQueue,
    executor: &Executor,
    now: Millis,
) -> Result<Resumed, ExecError> {
    // Every non-terminal run with a wake-up, in one scan of the store's wake-up index.
    let due = store.due_runs(Millis::MAX, usize::MAX).await?;
    let mut resumed = Resumed {
        runs: due.len(),
        ..Resumed::default()
    };
    let mut polls = Vec::new();
    for (run_id, _) in &due {
        let Some(run) = store.get_run(run_id).await? else {
            continue;
        };
        for (step_id, step) in &run.steps {
            if step.status != StepStatus::Running {
                continue;
            }
            if let Some(agent) = &step.agent
                && let Some(upstream_run_id) = &agent.upstream_run_id
            {
                polls.push(WorkMessage::Poll {
                    run_id: run.id.clone(),
                    step: step_id.clone(),
                    attempt: step.attempt,
                    upstream_run_id: upstream_run_id.clone(),
                    poll: agent.polls,
                    interval_ms: agent.poll_interval_ms,
                });
            }
        }
    }
    resumed.agent_polls = polls.len();
    let failed: Vec<WorkMessage> = futures::stream::iter(polls)
        .map(|poll| async move {
            match executor.handle(&poll).await {
                Ok(()) => None,
                Err(e) if e.is_retryable() => {
                    warn!(run_id = %poll.run_id(), error = %e, "resumed agent poll failed; queueing it for the workers");
                    Some(poll)
                }
                Err(e) => {
                    warn!(run_id = %poll.run_id(), error = %e, "resumed agent poll failed; the run's lost-poll timer re-issues it");
                    None
                }
            }
        })
        .buffer_unordered(RESUME_POLL_CONCURRENCY)
        .filter_map(|failed| async move { failed })
        .collect()
        .await;
    let mut messages: Vec<_> = failed
        .into_iter()
        .map(|poll| (poll, std::time::Duration::ZERO))
        .collect();
    for (run_id, wake_at) in due {
        let at = if wake_at <= now {
            resumed.woken_now += 1;
            None
        } else {
            resumed.timers += 1;
            Some(wake_at)
        };
        messages.push((WorkMessage::Wake { run_id, at }, delay_until(now, wake_at)));
    }
    queue.send_batch(&messages).await?;
    debug!(?resumed, "runs resumed");
    Ok(resumed)
}
