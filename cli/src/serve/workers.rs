//! The background tasks: workers that drain the in-process queue through the executor (the
//! poller Lambda's job), the sweeper that re-wakes overdue runs, and the schedule ticker (the
//! triggers Lambda's).

use std::sync::Arc;
use std::time::Duration;

use flowgate_shared::adapters::embedded::EmbeddedStore;
use flowgate_shared::adapters::memqueue::MemQueue;
use flowgate_shared::adapters::record_scheduler::RecordScheduler;
use flowgate_shared::ports::{self, Received, WorkQueue};
use flowgate_shared::runtime::{
    Clock, Executor, Handled, Receipt, SchedulePorts, SweepPorts, Ticker, fire_schedule,
    message_step, sweep_all,
};
use tokio::sync::watch;
use tracing::{Instrument, debug, error, field, info_span, warn};

/// How long one receive waits for a message before looking again (it returns as soon as one
/// arrives; this only bounds an idle wait).
const RECEIVE_WAIT: Duration = Duration::from_secs(20);

/// Pause after a failed receive (the in-process queue does not fail in practice; this keeps a
/// bug from becoming a busy loop).
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Deliveries of one message before it is dropped ([`ports::MAX_RECEIVES`], the SQS redrive
/// policy's `maxReceiveCount`): a message that keeps failing retryably is logged and dropped,
/// and the run's `wake_at` (with the sweeper) brings its work back once the cause is fixed.
pub(super) const MAX_RECEIVES: u32 = ports::MAX_RECEIVES;

/// Overdue runs one sweep re-wakes; the rest wait for the next sweep, so a backlog cannot
/// flood the queue at once.
const SWEEP_LIMIT: usize = 1_000;

/// Receive one message at a time and handle it, until `stop` turns true. A message being
/// handled when it does is finished first.
pub(super) async fn worker(
    worker: u16,
    queue: Arc<MemQueue>,
    executor: Arc<Executor>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let received = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            received = queue.receive(1, RECEIVE_WAIT) => received,
        };
        match received {
            Ok(messages) => {
                for message in messages {
                    handle(worker, queue.as_ref(), executor.as_ref(), message).await;
                }
            }
            Err(e) => {
                error!(worker, error = %e, "cannot receive from the work queue; trying again");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(RECEIVE_ERROR_PAUSE) => {}
                }
            }
        }
    }
    debug!(worker, "worker stopped");
}

/// Handle one delivery: ack when done or when retrying cannot help; leave a retryable failure
/// unacked so the queue delivers it again after the visibility timeout, and a poll the
/// executor handed back (its chain's next poll) unacked too.
async fn handle(worker: u16, queue: &MemQueue, executor: &Executor, received: Received) {
    let message = &received.message;
    let span = info_span!(
        "message",
        worker,
        run_id = %message.run_id(),
        step_id = field::Empty,
        receive_count = received.receive_count,
    );
    if let Some(step) = message_step(message) {
        span.record("step_id", step);
    }
    async {
        let receipt = Receipt {
            receipt: &received.receipt,
            receive_count: received.receive_count,
        };
        let done = match executor.handle_delivered(message, Some(receipt)).await {
            Ok(Handled::Done) => true,
            Ok(Handled::HandedBack) => false,
            Err(e) if e.is_retryable() && received.receive_count < MAX_RECEIVES => {
                warn!(error = %e, "message failed; it will be delivered again after the visibility timeout");
                false
            }
            Err(e) if e.is_retryable() => {
                error!(
                    error = %e,
                    max_receives = MAX_RECEIVES,
                    "message failed on every delivery; dropping it (the run's wake-up timer \
                     and the sweeper bring its work back once the cause is fixed)"
                );
                true
            }
            Err(e) => {
                error!(
                    error = %e,
                    "message failed and retrying cannot help; dropping it (the run's wake-up \
                     timer and the sweeper keep the run recoverable)"
                );
                true
            }
        };
        if done && let Err(e) = queue.ack(&received.receipt).await {
            warn!(error = %e, "cannot ack the message; it will be handled again (harmlessly)");
        }
    }
    .instrument(span)
    .await;
}

/// What the background sweep and the schedule ticker work on.
#[derive(Clone)]
pub(super) struct Background {
    pub store: Arc<EmbeddedStore>,
    pub queue: Arc<MemQueue>,
    pub scheduler: Arc<RecordScheduler>,
    pub clock: Arc<dyn Clock>,
}

impl Background {
    fn sweep_ports(&self) -> SweepPorts<'_> {
        SweepPorts {
            store: &*self.store,
            workflows: &*self.store,
            queue: &*self.queue,
            records: &*self.store,
            scheduler: Some(&*self.scheduler),
        }
    }
}

/// Every `interval`, do what the triggers Lambda does every minute ([`sweep_all`]): re-wake
/// runs whose `wake_at` is overdue (a message lost to a failed send or dropped after
/// [`MAX_RECEIVES`]), free concurrency slots nobody released, fix schedules that differ from
/// the definitions. The startup pass is [`super::recover::resume`], which runs before this task
/// starts; so the first sweep here waits one interval.
pub(super) async fn sweeper(bg: Background, interval: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(interval) => {}
        }
        match sweep_all(bg.sweep_ports(), bg.clock.now_ms(), SWEEP_LIMIT).await {
            Ok(report) => debug!(?report, "sweep done"),
            Err(e) => warn!(error = %e, "sweep failed; the next one tries again"),
        }
    }
    debug!("sweeper stopped");
}

/// How often the schedule ticker looks at the clock (EventBridge's resolution is a minute).
pub(super) const TICK: Duration = Duration::from_secs(1);

/// The in-process EventBridge Scheduler: every [`TICK`], start the runs of schedules that are
/// due, through the same [`fire_schedule`] the triggers Lambda calls.
pub(super) async fn schedules(bg: Background, mut stop: watch::Receiver<bool>) {
    let mut ticker = Ticker::default();
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(TICK) => {}
        }
        let entries = match bg.scheduler.entries().await {
            Ok(entries) => entries,
            Err(e) => {
                warn!(error = %e, "cannot read the schedules; trying again next tick");
                continue;
            }
        };
        let now = bg.clock.now_ms();
        for start in ticker.due(&entries, now) {
            let ports = SchedulePorts {
                store: &*bg.store,
                workflows: &*bg.store,
                queue: &*bg.queue,
                records: &*bg.store,
            };
            match fire_schedule(ports, &start, now).await {
                Ok(fired) => debug!(schedule = %start.schedule, ?fired, "schedule fired"),
                Err(e) => warn!(schedule = %start.schedule, error = %e, "scheduled start failed"),
            }
        }
    }
    debug!("schedule ticker stopped");
}
