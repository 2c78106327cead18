//! The seed's randomness and the fault plan: every choice the simulation makes, including
//! which call fails and how, comes from one seeded generator, consumed in the order the
//! (single-threaded, inline) system makes its calls. The same seed therefore replays the same
//! run, call for call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// How often each fault happens, as probabilities per opportunity.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// A process dies right after an I/O call took effect (store, queue or agent call).
    pub crash_after_call: f64,
    /// A store call fails before it takes effect (throttling, a network blip).
    pub store_unavailable: f64,
    /// Before a conditional run write, another process handles a message of the same run
    /// first, so the write meets a newer version (a real race, not a made-up conflict).
    pub race_before_write: f64,
    /// A queue send fails before anything is enqueued.
    pub send_unavailable: f64,
    /// A sent message is enqueued twice (SQS is at-least-once).
    pub duplicate_message: f64,
    /// A sent message becomes visible up to [`Faults::max_extra_delay_ms`] later than asked.
    pub delay_message: f64,
    pub max_extra_delay_ms: i64,
    /// A queue send took effect but its answer was lost (the caller sees an error).
    pub send_answer_lost: f64,
    /// An agent API call is refused before it takes effect (connection refused or HTTP 503).
    pub agent_unavailable: f64,
    /// An agent API call took effect but timed out on the way back (outcome unknown).
    pub agent_answer_lost: f64,
}

impl Faults {
    /// No faults at all: the baseline every invariant must hold on trivially.
    pub fn none() -> Self {
        Faults {
            crash_after_call: 0.0,
            store_unavailable: 0.0,
            race_before_write: 0.0,
            send_unavailable: 0.0,
            duplicate_message: 0.0,
            delay_message: 0.0,
            max_extra_delay_ms: 0,
            send_answer_lost: 0.0,
            agent_unavailable: 0.0,
            agent_answer_lost: 0.0,
        }
    }

    /// The mix the test command runs: every kind of fault, often enough that a seed of a
    /// few hundred calls meets several.
    pub fn standard() -> Self {
        Faults {
            crash_after_call: 0.01,
            store_unavailable: 0.01,
            race_before_write: 0.03,
            send_unavailable: 0.01,
            duplicate_message: 0.05,
            delay_message: 0.05,
            max_extra_delay_ms: 30_000,
            send_answer_lost: 0.01,
            agent_unavailable: 0.05,
            agent_answer_lost: 0.03,
        }
    }
}

/// What the faults did during one seed (the report prints the totals).
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub crashes: AtomicU64,
    pub store_errors: AtomicU64,
    pub races: AtomicU64,
    pub send_errors: AtomicU64,
    pub duplicates: AtomicU64,
    pub delays: AtomicU64,
    pub lost_send_answers: AtomicU64,
    pub agent_errors: AtomicU64,
    pub lost_agent_answers: AtomicU64,
}

impl FaultCounts {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (name, count) pairs, for reports.
    pub fn list(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("crashes", get(&self.crashes)),
            ("store_errors", get(&self.store_errors)),
            ("races", get(&self.races)),
            ("send_errors", get(&self.send_errors)),
            ("duplicates", get(&self.duplicates)),
            ("delays", get(&self.delays)),
            ("lost_send_answers", get(&self.lost_send_answers)),
            ("agent_errors", get(&self.agent_errors)),
            ("lost_agent_answers", get(&self.lost_agent_answers)),
        ]
    }
}

/// The seeded generator and the fault plan, shared by every component of one seed's world.
#[derive(Debug)]
pub struct Chaos {
    rng: Mutex<Xoshiro256PlusPlus>,
    pub faults: Faults,
    pub counts: FaultCounts,
}

impl Chaos {
    pub fn new(seed: u64, faults: Faults) -> Self {
        Chaos {
            rng: Mutex::new(Xoshiro256PlusPlus::seed_from_u64(seed)),
            faults,
            counts: FaultCounts::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Xoshiro256PlusPlus) -> T) -> T {
        f(&mut self.rng.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// True with probability `p` (no draw when `p` is 0, so a fault-free world consumes the
    /// generator only for its scenario).
    pub fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.with(|r| r.random_bool(p.min(1.0)))
    }

    /// A number in `lo..=hi`.
    pub fn between(&self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        self.with(|r| r.random_range(lo..=hi))
    }

    /// An index below `n` (`n` > 0).
    pub fn index(&self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        self.with(|r| r.random_range(0..n))
    }
}

/// One process's life: it dies after an I/O call the chaos picks, and from then on every call
/// it makes fails without effect until the driver restarts it (a new Lambda instance, a new
/// `flowgate serve`).
#[derive(Debug, Default)]
pub struct Fuse {
    dead: AtomicBool,
}

impl Fuse {
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }

    /// A fresh instance takes over.
    pub fn restart(&self) {
        self.dead.store(false, Ordering::SeqCst);
    }
}
