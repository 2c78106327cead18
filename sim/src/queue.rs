//! The work queue on the virtual clock, and the fault injector in front of it.
//!
//! [`SimQueue`] has SQS's delivery semantics (delays, a visibility timeout, redelivery of what
//! was not acked, at-least-once) on the simulation's [`ManualClock`] instead of tokio's timers,
//! so hours of queue time pass in microseconds and the driver decides which visible message is
//! delivered next (that choice is the reordering fault). [`FaultQueue`] is what the processes
//! send through: it fails, duplicates, delays and loses answers as the seed says.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use flowgate_shared::model::Millis;
use flowgate_shared::ports::{
    QueueError, Received, WorkMessage, WorkQueue, check_delay, check_hand_back,
};
use flowgate_shared::runtime::{Clock, ManualClock};

use crate::chaos::{Chaos, FaultCounts, Fuse};

/// SQS's default visibility timeout (the template sets the poller's queue to six times the
/// poller's timeout; the simulation keeps the default, which only makes redelivery sooner).
pub const VISIBILITY_MS: Millis = 30_000;

#[derive(Debug, Clone)]
struct Entry {
    message: WorkMessage,
    visible_at: Millis,
    receive_count: u32,
    receipt: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Message id → entry; ids grow with every send, so iteration order is send order.
    entries: BTreeMap<u64, Entry>,
    sent: u64,
    delivered: u64,
}

/// A delay queue on the virtual clock.
#[derive(Debug)]
pub struct SimQueue {
    clock: Arc<ManualClock>,
    state: Mutex<State>,
}

impl SimQueue {
    pub fn new(clock: Arc<ManualClock>) -> Self {
        SimQueue {
            clock,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enqueue `message`, visible `delay` from now (no faults: the raw queue).
    pub fn push(&self, message: WorkMessage, delay_ms: Millis) {
        let visible_at = self.clock.now_ms() + delay_ms.max(0);
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.sent += 1;
        state.entries.insert(
            id,
            Entry {
                message,
                visible_at,
                receive_count: 0,
                receipt: None,
            },
        );
    }

    /// Ids of the messages visible now, in send order.
    pub fn visible(&self) -> Vec<u64> {
        let now = self.clock.now_ms();
        self.lock()
            .entries
            .iter()
            .filter(|(_, e)| e.visible_at <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Visible messages of one run, in send order.
    pub fn visible_for(&self, run_id: &str) -> Vec<u64> {
        let now = self.clock.now_ms();
        self.lock()
            .entries
            .iter()
            .filter(|(_, e)| e.visible_at <= now && e.message.run_id() == run_id)
            .map(|(id, _)| *id)
            .collect()
    }

    /// When the next message that is not visible yet becomes visible.
    pub fn next_visible_at(&self) -> Option<Millis> {
        let now = self.clock.now_ms();
        self.lock()
            .entries
            .values()
            .map(|e| e.visible_at)
            .filter(|at| *at > now)
            .min()
    }

    /// Receive message `id`: it is hidden for the visibility timeout and comes back unless
    /// acked with the returned receipt.
    pub fn take(&self, id: u64) -> Option<Received> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        state.delivered += 1;
        let entry = state.entries.get_mut(&id)?;
        entry.receive_count += 1;
        entry.visible_at = now + VISIBILITY_MS;
        let receipt = format!("{id}:{}", entry.receive_count);
        entry.receipt = Some(receipt.clone());
        Some(Received {
            receipt,
            message: entry.message.clone(),
            receive_count: entry.receive_count,
        })
    }

    /// Delete by receipt; a stale receipt (the message was received again since) deletes
    /// nothing, as on SQS.
    pub fn delete(&self, receipt: &str) {
        let mut state = self.lock();
        let Some(id) = receipt_id(receipt) else {
            return;
        };
        if state
            .entries
            .get(&id)
            .is_some_and(|e| e.receipt.as_deref() == Some(receipt))
        {
            state.entries.remove(&id);
        }
    }

    /// Make the message of `receipt` visible again `delay_ms` from now (SQS's
    /// `ChangeMessageVisibility`) and return it; a stale receipt changes nothing, as on SQS.
    pub fn hand_back(&self, receipt: &str, delay_ms: Millis) -> Option<WorkMessage> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let entry = state.entries.get_mut(&receipt_id(receipt)?)?;
        if entry.receipt.as_deref() != Some(receipt) {
            return None;
        }
        entry.visible_at = now + delay_ms.max(0);
        Some(entry.message.clone())
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (messages sent, deliveries made).
    pub fn totals(&self) -> (u64, u64) {
        let state = self.lock();
        (state.sent, state.delivered)
    }
}

/// The message id a receipt (`{id}:{receive count}`) is for.
fn receipt_id(receipt: &str) -> Option<u64> {
    receipt.split_once(':').and_then(|(id, _)| id.parse().ok())
}

fn delay_ms(delay: Duration) -> Millis {
    i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl WorkQueue for SimQueue {
    async fn send(&self, message: &WorkMessage, delay: Duration) -> Result<(), QueueError> {
        check_delay(delay)?;
        self.push(message.clone(), delay_ms(delay));
        Ok(())
    }

    async fn send_batch(&self, messages: &[(WorkMessage, Duration)]) -> Result<(), QueueError> {
        for (_, delay) in messages {
            check_delay(*delay)?;
        }
        for (message, delay) in messages {
            self.push(message.clone(), delay_ms(*delay));
        }
        Ok(())
    }

    async fn receive(&self, max: usize, _wait: Duration) -> Result<Vec<Received>, QueueError> {
        Ok(self
            .visible()
            .into_iter()
            .take(max)
            .filter_map(|id| self.take(id))
            .collect())
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        self.delete(receipt);
        Ok(())
    }

    async fn redeliver(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        check_hand_back(delay)?;
        let _ = self.hand_back(receipt, delay_ms(delay));
        Ok(())
    }
}

fn crashed() -> QueueError {
    QueueError::Unavailable {
        message: "simulated crash: the process died".into(),
    }
}

/// The queue as one process sees it: behind that process's fuse and the seed's faults.
#[derive(Debug)]
pub struct FaultQueue {
    pub inner: Arc<SimQueue>,
    pub fuse: Arc<Fuse>,
    pub chaos: Arc<Chaos>,
}

impl FaultQueue {
    /// Send one message with the faults a send can meet. `Err` before anything happened, or
    /// after (`send_answer_lost`, a crash): the caller cannot tell which, as with SQS.
    fn faulty_send(&self, message: &WorkMessage, delay: Duration) -> Result<(), QueueError> {
        self.before_call(check_delay(delay))?;
        let delay_ms = self.late(delay_ms(delay));
        self.inner.push(message.clone(), delay_ms);
        self.maybe_duplicate(message, delay_ms);
        self.after_call()
    }

    /// `delay_ms`, or later when the seed delays this delivery.
    fn late(&self, delay_ms: Millis) -> Millis {
        let faults = &self.chaos.faults;
        if self.chaos.chance(faults.delay_message) {
            FaultCounts::bump(&self.chaos.counts.delays);
            delay_ms + self.chaos.between(1, faults.max_extra_delay_ms.max(1))
        } else {
            delay_ms
        }
    }

    /// At-least-once delivery: sometimes a second copy of `message`, a little after the first.
    fn maybe_duplicate(&self, message: &WorkMessage, delay_ms: Millis) {
        if self.chaos.chance(self.chaos.faults.duplicate_message) {
            FaultCounts::bump(&self.chaos.counts.duplicates);
            let again = delay_ms + self.chaos.between(0, 5_000);
            self.inner.push(message.clone(), again);
        }
    }

    /// The faults before a send or hand-back does anything: a dead process, a bad delay
    /// (`delay_ok`, the call's own check), SQS refusing it.
    fn before_call(&self, delay_ok: Result<(), QueueError>) -> Result<(), QueueError> {
        if self.fuse.is_dead() {
            return Err(crashed());
        }
        delay_ok?;
        if self.chaos.chance(self.chaos.faults.send_unavailable) {
            FaultCounts::bump(&self.chaos.counts.send_errors);
            return Err(QueueError::Unavailable {
                message: "simulated: SQS answered 503".into(),
            });
        }
        Ok(())
    }

    /// The faults after a send or hand-back was done: the process dying, the answer lost.
    fn after_call(&self) -> Result<(), QueueError> {
        if self.chaos.chance(self.chaos.faults.crash_after_call) {
            FaultCounts::bump(&self.chaos.counts.crashes);
            self.fuse.kill();
            return Err(crashed());
        }
        if self.chaos.chance(self.chaos.faults.send_answer_lost) {
            FaultCounts::bump(&self.chaos.counts.lost_send_answers);
            return Err(QueueError::Unavailable {
                message: "simulated: the call's answer was lost".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl WorkQueue for FaultQueue {
    async fn send(&self, message: &WorkMessage, delay: Duration) -> Result<(), QueueError> {
        self.faulty_send(message, delay)
    }

    async fn send_batch(&self, messages: &[(WorkMessage, Duration)]) -> Result<(), QueueError> {
        for (_, delay) in messages {
            check_delay(*delay)?;
        }
        // Sent in order; a failure part-way leaves the earlier ones sent (as SQS batches of
        // ten can), which the contract allows.
        for (message, delay) in messages {
            self.faulty_send(message, *delay)?;
        }
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        if self.fuse.is_dead() {
            return Err(crashed());
        }
        self.inner.receive(max, wait).await
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        if self.fuse.is_dead() {
            return Err(crashed());
        }
        self.inner.delete(receipt);
        Ok(())
    }

    /// A hand-back meets a send's faults: refused, late, delivered twice (SQS is at least
    /// once, whoever put the message there), done with the answer lost, or the process dying
    /// right after it.
    async fn redeliver(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        self.before_call(check_hand_back(delay))?;
        let delay_ms = self.late(delay_ms(delay));
        if let Some(message) = self.inner.hand_back(receipt, delay_ms) {
            self.maybe_duplicate(&message, delay_ms);
        }
        self.after_call()
    }
}
