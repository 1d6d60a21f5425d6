//! Retry policy: exponential backoff with jitter and a cap.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How long to wait before attempt `n + 1` after attempt `n` failed.
///
/// The delay for attempt `n` (1-based) is `min(max_delay, base * 2^(n-1))`,
/// then "equal jitter": half of it fixed, the other half uniformly random, so
/// workers that failed together do not retry together, yet no retry comes
/// sooner than half the nominal delay. Randomness comes from the caller's
/// seeded RNG, so a simulation replays the same delays.
///
/// How many attempts a job gets is the job's own `max_attempts` (default
/// [`DEFAULT_MAX_ATTEMPTS`](crate::job::limits::DEFAULT_MAX_ATTEMPTS)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Nominal delay after the first failed attempt. Default 1 s.
    pub base: Duration,
    /// Upper bound of any delay. Default 5 min.
    pub max_delay: Duration,
    /// Whether to apply equal jitter. Default true.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The nominal (un-jittered) delay after failed attempt `attempt` (1-based).
    pub fn nominal_delay(&self, attempt: i32) -> Duration {
        let exponent = attempt.saturating_sub(1).clamp(0, 40) as u32;
        self.base
            .checked_mul(1u32 << exponent.min(31))
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The delay after failed attempt `attempt`, jittered with `rng`.
    pub fn delay(&self, attempt: i32, rng: &mut impl Rng) -> Duration {
        let nominal = self.nominal_delay(attempt);
        if !self.jitter {
            return nominal;
        }
        let half = nominal / 2;
        let spread = u64::try_from((nominal - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(rng.random_range(0..=spread))
    }

    /// The most time all retries of a job with `max_attempts` can wait in
    /// total: the sum of nominal delays. Used to bound liveness checks.
    pub fn max_total_delay(&self, max_attempts: i32) -> Duration {
        (1..max_attempts).map(|n| self.nominal_delay(n)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn nominal_delay_doubles_then_caps() {
        let policy = RetryPolicy {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            jitter: false,
        };
        let delays: Vec<u64> = (1..=6).map(|n| policy.nominal_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.nominal_delay(i32::MAX), Duration::from_secs(10));
        assert_eq!(policy.max_total_delay(4), Duration::from_secs(7));
    }

    #[test]
    fn jitter_stays_within_half_and_full_and_replays_by_seed() {
        let policy = RetryPolicy::default();
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (1..=8).map(|n| policy.delay(n, &mut rng)).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        for (n, d) in (1..=8).zip(&a) {
            let nominal = policy.nominal_delay(n);
            assert!(
                *d >= nominal / 2 && *d <= nominal,
                "attempt {n}: {d:?} vs {nominal:?}"
            );
        }
    }
}
