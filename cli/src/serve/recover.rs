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
//! Right after a restart, though, no message from before is in flight, so nothing has to be
//! presumed: [`resume`] re-arms every non-terminal run from the store.

use std::sync::Arc;

use futures::StreamExt as _;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use flowgate_shared::model::{Millis, StepStatus};
use flowgate_shared::ports::{RunStore, WorkMessage, WorkQueue};
use flowgate_shared::runtime::{Clock, ExecError, Executor, delay_until};

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

/// Re-arm every non-terminal run; call it once at startup, while the queue holds nothing from
/// before (workers may already be taking new messages).
///
/// - Each agent step that was running gets its poll chain back at once: a `Poll` carrying the
///   chain's current number (what the engine itself issues when it presumes a chain lost),
///   handled here, before the run's wake-up is queued. Handling it first matters: it refreshes
///   the step's poll bookkeeping, so the tick below does not re-issue a second chain. (A poll
///   message in the queue instead could lose that race to the tick on another worker.)
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

/// [`resume`] as a background task at startup: logs what it did, and gives up when the server
/// stops (the next start resumes whatever it had not reached).
pub(super) async fn in_background(
    store: Arc<dyn RunStore>,
    queue: Arc<dyn WorkQueue>,
    executor: Arc<Executor>,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    let work = resume(
        store.as_ref(),
        queue.as_ref(),
        executor.as_ref(),
        clock.now_ms(),
    );
    tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => {
            info!("stopping before every interrupted run was resumed; the next start resumes the rest");
        }
        result = work => match result {
            Ok(resumed) if resumed.runs > 0 => info!(
                runs = resumed.runs,
                woken_now = resumed.woken_now,
                timers = resumed.timers,
                agent_polls = resumed.agent_polls,
                "resumed the runs the last stop interrupted"
            ),
            Ok(_) => debug!("no run to resume"),
            Err(e) => error!(
                error = %e,
                "cannot resume the runs the last stop interrupted; the sweeper wakes each once \
                 its wake-up is overdue"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use flowgate_shared::adapters::embedded::EmbeddedStore;
    use flowgate_shared::adapters::memqueue::MemQueue;
    use flowgate_shared::agent::{AgentClient, AgentClientConfig};
    use flowgate_shared::definition::parse_definition;
    use flowgate_shared::model::RunStatus;
    use flowgate_shared::ports::WorkflowStore;
    use flowgate_shared::runtime::{NewRun, SystemClock, start_run};

    use super::*;

    const WAIT: &str = "id: pause\nsteps:\n  - id: pause\n    kind: wait\n    duration: 1h\n";

    /// What `resume` queues for a run whose timer passed while nothing ran (woken now) and
    /// for a run still waiting on one (a wake-up at its time), through a restart's empty
    /// queue.
    #[tokio::test]
    async fn overdue_runs_are_woken_now_and_waiting_runs_get_their_timer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let def = parse_definition(WAIT).unwrap();
        let now = SystemClock::millis();
        store.put_workflow(&def, now - 7_200_000).await.unwrap();
        // Nothing calls the agent service for a wait step.
        let agent =
            AgentClient::new("http://127.0.0.1:9", "unused", AgentClientConfig::default()).unwrap();
        let executor = |queue: Arc<MemQueue>| {
            Executor::new(
                store.clone(),
                store.clone(),
                queue,
                Arc::new(agent.clone()),
                Arc::new(SystemClock),
            )
            .unwrap()
        };

        // Two runs started before the stop, their messages gone with the old queue: one two
        // hours ago (its hour-long wait is over), one just now.
        let lost = Arc::new(MemQueue::default());
        let new = NewRun {
            workflow_id: "pause".into(),
            ..NewRun::default()
        };
        let mut started = Vec::new();
        for at in [now - 7_200_000, now] {
            let run = start_run(
                store.as_ref(),
                store.as_ref(),
                lost.as_ref(),
                store.as_ref(),
                at,
                new.clone(),
            )
            .await
            .unwrap();
            started.push(run.run_id);
        }
        let (overdue, waiting) = (&started[0], &started[1]);

        let queue = Arc::new(MemQueue::default());
        let resumed = resume(
            store.as_ref(),
            queue.as_ref(),
            &executor(queue.clone()),
            now + 1,
        )
        .await
        .unwrap();
        assert_eq!(
            resumed,
            Resumed {
                runs: 2,
                woken_now: 1,
                timers: 1,
                agent_polls: 0
            }
        );
        let woken = queue.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(woken.len(), 1, "only the overdue run is woken now");
        assert!(
            matches!(&woken[0].message, WorkMessage::Wake { run_id, at: None } if run_id == overdue)
        );

        // The wake-up ends its wait; the other run still holds its timer an hour out.
        executor(queue.clone())
            .handle(&woken[0].message)
            .await
            .unwrap();
        queue.ack(&woken[0].receipt).await.unwrap();
        let run = store.get_run(overdue).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        let run = store.get_run(waiting).await.unwrap().unwrap();
        let wake_at = run.wake_at.expect("a waiting run has a wake-up");
        assert!(wake_at > now + 3_000_000, "{wake_at}");

        // After another restart it gets a delayed wake-up for that time, not a tick now.
        let queue = Arc::new(MemQueue::default());
        let resumed = resume(
            store.as_ref(),
            queue.as_ref(),
            &executor(queue.clone()),
            now + 2,
        )
        .await
        .unwrap();
        assert_eq!((resumed.woken_now, resumed.timers), (0, 1));
        assert_eq!(queue.len(), 1);
        assert!(
            queue.receive(10, Duration::ZERO).await.unwrap().is_empty(),
            "the wake-up is delayed"
        );
    }
}
