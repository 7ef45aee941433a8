//! Capped exponential backoff with jitter, the one retry rhythm of gitsync (the daemon's
//! retries of what the backend could not take, the event receiver, the webhook workers):
//! `first`, doubled per failure up to `max`, each delay drawn between half and all of that
//! ("equal jitter", as the AWS Architecture Blog's "Exponential Backoff and Jitter" names
//! it), so that machines that failed together do not retry together.

use std::time::Duration;

/// The delays of one retrying task.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff whose first delay is `first` and whose longest is `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            failures: 0,
        }
    }

    /// The delay before the next attempt, after one more failure: `first × 2^failures`
    /// (failures before this one), capped at `max`, jittered to 50-100%.
    pub fn failed(&mut self) -> Duration {
        let delay = Self::jittered(self.ceiling());
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Whether the last attempt failed (no [`Backoff::reset`] since).
    pub fn failing(&self) -> bool {
        self.failures > 0
    }

    /// The delay without jitter now: `first × 2^failures`, capped at `max`.
    pub fn ceiling(&self) -> Duration {
        self.first
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.max)
    }

    /// `delay` drawn between half and all of it.
    pub fn jittered(delay: Duration) -> Duration {
        delay.mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_equal_jitter_and_reset() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let ceiling = b.ceiling();
            let delay = b.failed();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} of {ceiling:?}"
            );
            ceilings.push(ceiling.as_secs());
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert!(b.failing());
        b.reset();
        assert!(!b.failing());
        assert_eq!(b.ceiling(), Duration::from_secs(1));
        for _ in 0..100 {
            b.failed();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(60));
    }
}
