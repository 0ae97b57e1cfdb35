//! When a failed task runs again.

use std::time::Duration;

/// How long a task waits after a failed attempt. The base interval is the task's
/// `execute_interval` (the seed's `execute_interval_sec`, default 60 s).
///
/// Defaults to [`RetryPolicy::Linear`], the original framework's schedule.
///
/// ```
/// use std::time::Duration;
/// use tend::RetryPolicy;
/// let base = Duration::from_secs(10);
/// // The seed's schedule: after the k-th failed attempt, wait k × interval.
/// assert_eq!(RetryPolicy::Linear.delay(3, base, 0), Duration::from_secs(30));
/// assert_eq!(RetryPolicy::Fixed.delay(3, base, 0), Duration::from_secs(10));
/// let exp = RetryPolicy::Exponential { cap: Duration::from_secs(60), jitter: false };
/// assert_eq!(exp.delay(3, base, 0), Duration::from_secs(40));
/// assert_eq!(exp.delay(9, base, 0), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RetryPolicy {
    /// After the k-th failed attempt wait k × interval (the seed's schedule; no cap).
    #[default]
    Linear,
    /// Always wait one interval.
    Fixed,
    /// Wait interval × 2^(k-1), never more than `cap`. With `jitter`, the wait is drawn
    /// uniformly from [wait/2, wait] so that tasks failing together do not retry together
    /// ("equal jitter", from the AWS architecture blog's backoff study).
    Exponential {
        /// The longest wait.
        cap: Duration,
        /// Spread retries out.
        jitter: bool,
    },
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1 for the first failure). `random` is
    /// any random number; only the jittered policy uses it.
    ///
    /// ```
    /// use std::collections::hash_map::RandomState;
    /// use std::hash::BuildHasher;
    /// use std::time::Duration;
    /// use tend::RetryPolicy;
    /// let random = RandomState::new().hash_one(0u8); // any source of random bits
    /// let policy = RetryPolicy::Exponential { cap: Duration::from_secs(600), jitter: true };
    /// // The third failure waits 10 s × 2² = 40 s without jitter; with it, 20 to 40 s.
    /// let wait = policy.delay(3, Duration::from_secs(10), random);
    /// assert!(wait >= Duration::from_secs(20) && wait <= Duration::from_secs(40));
    /// ```
    pub fn delay(&self, attempt: u32, interval: Duration, random: u64) -> Duration {
        let attempt = attempt.max(1);
        match *self {
            RetryPolicy::Linear => interval.saturating_mul(attempt),
            RetryPolicy::Fixed => interval,
            RetryPolicy::Exponential { cap, jitter } => {
                let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
                let wait = interval.saturating_mul(factor).min(cap);
                if jitter {
                    let half = wait / 2;
                    let spread = half.as_millis() as u64;
                    half + Duration::from_millis(if spread == 0 {
                        0
                    } else {
                        random % (spread + 1)
                    })
                } else {
                    wait
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_is_the_seed_schedule() {
        let i = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=4)
            .map(|k| RetryPolicy::Linear.delay(k, i, 7).as_secs())
            .collect();
        assert_eq!(waits, vec![60, 120, 180, 240]);
    }

    #[test]
    fn exponential_caps_and_never_overflows() {
        let p = RetryPolicy::Exponential {
            cap: Duration::from_secs(3600),
            jitter: false,
        };
        let i = Duration::from_secs(1);
        assert_eq!(p.delay(1, i, 0), Duration::from_secs(1));
        assert_eq!(p.delay(2, i, 0), Duration::from_secs(2));
        assert_eq!(p.delay(12, i, 0), Duration::from_secs(2048));
        assert_eq!(p.delay(13, i, 0), Duration::from_secs(3600));
        assert_eq!(p.delay(200, i, 0), Duration::from_secs(3600));
        assert_eq!(
            RetryPolicy::Linear.delay(u32::MAX, Duration::MAX, 0),
            Duration::MAX
        );
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        let p = RetryPolicy::Exponential {
            cap: Duration::from_secs(100),
            jitter: true,
        };
        let i = Duration::from_secs(10);
        for r in [0u64, 1, 999, 5_000, u64::MAX] {
            let d = p.delay(2, i, r);
            assert!(
                d >= Duration::from_secs(10) && d <= Duration::from_secs(20),
                "{d:?}"
            );
        }
    }
}
