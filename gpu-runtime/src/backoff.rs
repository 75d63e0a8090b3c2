//! Retry pacing for talking to a hub that may be down or restarting.
//!
//! Many agents retrying in lock-step after a hub restart would hammer it, so delays grow
//! exponentially up to a cap and are jittered. And an agent that cannot reach its hub for an hour must
//! not write thousands of identical log lines, so failures are logged once per streak.

use std::time::Duration;

use rand::Rng;

/// Capped exponential backoff with jitter: the n-th delay is uniform in `[d/2, d]` where
/// `d = min(cap, initial * 2^n)`, so it never drops to zero and never exceeds the cap.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, cap: Duration) -> Self {
        Self {
            initial,
            cap: cap.max(initial),
            attempt: 0,
        }
    }

    /// The delay before the next retry; each call doubles the next one, up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        let ceiling = self.initial.saturating_mul(factor).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let floor = ceiling / 2;
        let spread = u64::try_from(ceiling.saturating_sub(floor).as_millis()).unwrap_or(u64::MAX);
        let jitter = rand::rng().random_range(0..=spread);
        floor + Duration::from_millis(jitter)
    }

    /// Starts over after a success.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Counts consecutive failures of one activity so that only the first is logged, and the recovery.
#[derive(Debug, Default)]
pub(crate) struct FailureStreak {
    failures: u64,
}

impl FailureStreak {
    /// Records a failure; true when it starts a streak (and so deserves a log line).
    pub(crate) fn fail(&mut self) -> bool {
        self.failures += 1;
        self.failures == 1
    }

    /// Records a success; returns the length of the streak it ends, if any.
    pub(crate) fn succeed(&mut self) -> Option<u64> {
        let ended = (self.failures > 0).then_some(self.failures);
        self.failures = 0;
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_jittered_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut ceiling = Duration::from_millis(500);
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} within [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(Duration::from_secs(30));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }

    #[test]
    fn a_streak_is_reported_once() {
        let mut s = FailureStreak::default();
        assert_eq!(s.succeed(), None);
        assert!(s.fail());
        assert!(!s.fail());
        assert!(!s.fail());
        assert_eq!(s.succeed(), Some(3));
        assert!(s.fail());
    }
}
