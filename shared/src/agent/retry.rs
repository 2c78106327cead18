//! Retry policy of the agent client: exponential backoff with jitter.
//!
//! Jitter spreads the retries of many pollers hitting one agent service after it comes back,
//! instead of having them all retry in lock-step.

use std::time::Duration;

/// How many times a call is tried and how long to wait between tries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total tries, the first included (1 = no retries).
    pub max_attempts: u32,
    /// Wait before the second try; doubles for each further try.
    pub base_delay: Duration,
    /// Upper bound of one wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The exponential ceiling before the try after `attempt` (1-based): `base * 2^(attempt-1)`,
    /// capped at `max_delay`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        self.base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay)
    }

    /// The wait before the try after `attempt`: "equal jitter", half the ceiling plus a random
    /// share of the other half, so a wait is never zero and never above the ceiling.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            0
        } else {
            rand::random_range(0..=spread)
        };
        half + Duration::from_micros(jitter)
    }

    /// The wait before the next try, honouring a server's `Retry-After` (seconds) when it asks
    /// for longer than the backoff, but never above `max_delay`.
    pub fn delay_with_hint(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.delay(attempt);
        match retry_after {
            Some(hint) if hint > backoff => hint.min(self.max_delay),
            _ => backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert_eq!(policy.ceiling(1), Duration::from_millis(100));
        assert_eq!(policy.ceiling(2), Duration::from_millis(200));
        assert_eq!(policy.ceiling(3), Duration::from_millis(400));
        assert_eq!(policy.ceiling(5), Duration::from_secs(1));
        assert_eq!(policy.ceiling(60), Duration::from_secs(1));
        for attempt in 1..8 {
            for _ in 0..50 {
                let d = policy.delay(attempt);
                assert!(d >= policy.ceiling(attempt) / 2, "{d:?} below half");
                assert!(d <= policy.ceiling(attempt), "{d:?} above ceiling");
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(2),
        };
        assert_eq!(
            policy.delay_with_hint(1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            policy.delay_with_hint(1, Some(Duration::from_secs(30))),
            Duration::from_secs(2)
        );
        assert!(policy.delay_with_hint(1, None) <= Duration::from_millis(10));
    }
}
