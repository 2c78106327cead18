//! Where the executor gets `now` from.
//!
//! The engine never reads a clock; the executor hands it `now`. Tests need to move time on
//! without waiting (a re-issue is due 30 s after an effect, a lost poll chain is noticed after
//! minutes), so the executor reads time through [`Clock`] instead of calling the system clock.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::Millis;

/// A source of the current time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now_ms(&self) -> Millis;
}

/// The system's wall clock: what Lambda and `flowgate serve` use.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// Milliseconds since the epoch (0 for a clock set before 1970, which no host has).
    pub fn millis() -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        Self::millis()
    }
}

/// A clock that only moves when told to: for tests and simulations that skip ahead to timers.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    pub fn new(now: Millis) -> Self {
        Self {
            now: AtomicI64::new(now),
        }
    }

    /// A manual clock starting at the system time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock::millis())
    }

    pub fn set(&self, now: Millis) {
        self.now.store(now, Ordering::SeqCst);
    }

    /// Move the clock forward by `by` and return the new time.
    pub fn advance(&self, by: Duration) -> Millis {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now.fetch_add(by, Ordering::SeqCst).saturating_add(by)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        assert_eq!(clock.advance(Duration::from_secs(2)), 3_000);
        assert_eq!(clock.now_ms(), 3_000);
        clock.set(10);
        assert_eq!(clock.now_ms(), 10);
    }

    #[test]
    fn system_clock_is_after_2024() {
        assert!(SystemClock.now_ms() > 1_704_067_200_000);
    }
}
