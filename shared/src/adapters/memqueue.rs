//! An in-process delay queue with SQS's delivery semantics, for `flowgate serve` and tests.
//!
//! Messages are invisible until their delay passes; a received message is hidden for the
//! visibility timeout and comes back (with `receive_count` + 1) unless acked before then. That
//! redelivery is what lets work of a crashed or stuck handler be done again locally, as SQS
//! does on AWS. Nothing is persisted: a restart of `flowgate serve` loses queued messages and
//! relies on the sweeper (runs record `wake_at`) to re-enqueue their work.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ports::{QueueError, Received, WorkMessage, WorkQueue, check_delay, check_hand_back};

/// SQS's default visibility timeout.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);

/// In-process delay queue. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct MemQueue {
    state: Mutex<State>,
    /// Woken on every send so waiting receivers re-check (receivers sleep on timers otherwise).
    arrived: Notify,
    visibility_timeout: Duration,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    messages: HashMap<u64, Entry>,
    /// (visible at, message id): the next message to become visible is the first entry.
    by_visibility: BTreeSet<(Instant, u64)>,
    /// Current receipt → message id.
    receipts: HashMap<String, u64>,
}

#[derive(Debug)]
struct Entry {
    message: WorkMessage,
    visible_at: Instant,
    receive_count: u32,
    receipt: Option<String>,
}

impl Default for MemQueue {
    fn default() -> Self {
        Self::new(DEFAULT_VISIBILITY_TIMEOUT)
    }
}

impl MemQueue {
    /// A queue whose received-but-unacked messages reappear after `visibility_timeout`.
    pub fn new(visibility_timeout: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            visibility_timeout,
        }
    }

    /// Messages held (visible, delayed or in flight), for tests and status pages.
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent (every mutation is a few
        // infallible steps), so a poisoned lock is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, message: WorkMessage, delay: Duration) {
        let visible_at = Instant::now() + delay;
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.by_visibility.insert((visible_at, id));
        state.messages.insert(
            id,
            Entry {
                message,
                visible_at,
                receive_count: 0,
                receipt: None,
            },
        );
    }

    /// Take up to `max` visible messages now, or say when the next one becomes visible.
    fn take_due(&self, max: usize) -> Result<Vec<Received>, Option<Instant>> {
        let now = Instant::now();
        let mut state = self.lock();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(&(visible_at, id)) = state.by_visibility.first() else {
                break;
            };
            if visible_at > now {
                break;
            }
            state.by_visibility.pop_first();
            let receipt = format!("{id}:{}", uuid::Uuid::new_v4());
            let hidden_until = now + self.visibility_timeout;
            let Some(entry) = state.messages.get_mut(&id) else {
                continue;
            };
            let old_receipt = entry.receipt.replace(receipt.clone());
            entry.receive_count += 1;
            entry.visible_at = hidden_until;
            let received = Received {
                receipt: receipt.clone(),
                message: entry.message.clone(),
                receive_count: entry.receive_count,
            };
            if let Some(old) = old_receipt {
                state.receipts.remove(&old);
            }
            state.receipts.insert(receipt, id);
            state.by_visibility.insert((hidden_until, id));
            out.push(received);
        }
        if out.is_empty() {
            Err(state.by_visibility.first().map(|&(at, _)| at))
        } else {
            Ok(out)
        }
    }
}

#[async_trait]
impl WorkQueue for MemQueue {
    async fn send(&self, message: &WorkMessage, delay: Duration) -> Result<(), QueueError> {
        check_delay(delay)?;
        self.push(message.clone(), delay);
        self.arrived.notify_waiters();
        Ok(())
    }

    async fn send_batch(&self, messages: &[(WorkMessage, Duration)]) -> Result<(), QueueError> {
        for (_, delay) in messages {
            check_delay(*delay)?;
        }
        for (message, delay) in messages {
            self.push(message.clone(), *delay);
        }
        self.arrived.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        if max == 0 {
            return Err(QueueError::Invalid {
                field: "max",
                reason: "receive at least one message".to_string(),
            });
        }
        let deadline = Instant::now() + wait;
        loop {
            // Register for the wake-up before looking, so a send between the look and the
            // sleep is not missed.
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let next_visible = match self.take_due(max) {
                Ok(received) => return Ok(received),
                Err(next) => next,
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = next_visible.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                () = &mut arrived => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        let mut state = self.lock();
        if let Some(id) = state.receipts.remove(receipt)
            && let Some(entry) = state.messages.remove(&id)
        {
            state.by_visibility.remove(&(entry.visible_at, id));
        }
        Ok(())
    }

    async fn redeliver(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        check_hand_back(delay)?;
        let visible_at = Instant::now() + delay;
        {
            let mut state = self.lock();
            let State {
                receipts,
                messages,
                by_visibility,
                ..
            } = &mut *state;
            if let Some(id) = receipts.get(receipt)
                && let Some(entry) = messages.get_mut(id)
            {
                by_visibility.remove(&(entry.visible_at, *id));
                entry.visible_at = visible_at;
                by_visibility.insert((visible_at, *id));
            }
        }
        self.arrived.notify_waiters();
        Ok(())
    }
}
