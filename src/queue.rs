//! Named queues, priorities and ordering keys: what a task carries, and the limits a pool puts
//! on the queues it works.
//!
//! A task belongs to one queue (`default` unless [`TaskOptions::queue`](crate::TaskOptions::queue)
//! or [`NewTask::queue`](crate::NewTask::queue) says otherwise). A pool works the queue `default`
//! and every queue given to [`WorkerPoolBuilder::queue`](crate::WorkerPoolBuilder::queue); each
//! claim reads one queue's due rows, highest [priority](MAX_PRIORITY) first, so a full or
//! rate-limited queue is simply not claimed from: no row waits in memory holding a lease.

use std::time::{Duration, Instant};

use crate::error::Error;

/// The queue a task belongs to unless it says otherwise, and the one every pool works unless
/// told not to ([`WorkerPoolBuilder::skip_default_queue`](crate::WorkerPoolBuilder::skip_default_queue)).
pub const DEFAULT_QUEUE: &str = "default";

/// The longest queue name, in bytes.
pub const MAX_QUEUE_BYTES: usize = 64;

/// The lowest priority a task can have.
pub const MIN_PRIORITY: i32 = -3;

/// The highest priority a task can have. Priorities run from [`MIN_PRIORITY`] to this; the
/// default is 0. A claim takes the highest priority first, then the earliest due; the range is
/// small on purpose: a claim reads each level's due rows through the index
/// `(queue, priority, execute_time)`, so it costs one index probe per level plus the rows it
/// takes, whatever the table holds.
pub const MAX_PRIORITY: i32 = 3;

/// The longest ordering key, in bytes.
pub const MAX_ORDERING_KEY_BYTES: usize = 255;

/// Checks a queue name: 1 to 64 bytes of ASCII letters, digits and `._:-`.
pub(crate) fn validate_queue(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name.len() > MAX_QUEUE_BYTES
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(Error::invalid_setting(
            "queue",
            format!(
                "{name:?} is not a queue name: use 1 to {MAX_QUEUE_BYTES} bytes of ASCII \
                 letters, digits and `._:-`"
            ),
        ));
    }
    Ok(())
}

/// Checks a priority against [`MIN_PRIORITY`]..=[`MAX_PRIORITY`].
pub(crate) fn validate_priority(p: i32) -> Result<(), Error> {
    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&p) {
        return Err(Error::invalid_setting(
            "priority",
            format!(
                "must be between {MIN_PRIORITY} (lowest) and {MAX_PRIORITY} (highest), got {p}"
            ),
        ));
    }
    Ok(())
}

/// Checks an ordering key: 1 to 255 bytes.
pub(crate) fn validate_ordering_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_ORDERING_KEY_BYTES {
        return Err(Error::invalid_setting(
            "ordering_key",
            format!(
                "must be 1 to {MAX_ORDERING_KEY_BYTES} bytes, got {}",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// The shard key an ordering key routes by when the task sets none: a stable hash (FNV-1a,
/// non-negative), so every task of one key goes to one database.
pub(crate) fn shard_key_of(ordering_key: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ordering_key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}

/// How a pool works one queue: how many of its tasks may run at once in this pool, and how many
/// may start per period (a token bucket, per pool: N processes together start up to N times as
/// many). Both unlimited by default.
///
/// ```
/// use std::time::Duration;
/// use tend::Queue;
/// // At most 4 mails at once, and no more than 10 a second, in this process.
/// let mail = Queue::new().concurrency(4).rate_limit(10, Duration::from_secs(1));
/// # let _ = mail;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queue {
    pub(crate) concurrency: Option<usize>,
    pub(crate) rate: Option<(u32, Duration)>,
}

impl Queue {
    /// No limits beyond the pool's own (`threads`).
    pub fn new() -> Queue {
        Queue::default()
    }

    /// At most `n` of this queue's tasks run at once in this pool (at least 1; checked by
    /// `build`). Rows beyond it stay in the table, unleased, for this pool's next claim or for
    /// another process.
    pub fn concurrency(mut self, n: usize) -> Queue {
        self.concurrency = Some(n);
        self
    }

    /// At most `n` of this queue's tasks start per `per` in this pool (a token bucket of `n`
    /// that refills evenly over `per`; `n` ≥ 1, `per` from 1 ms to 1 day; checked by `build`).
    pub fn rate_limit(mut self, n: u32, per: Duration) -> Queue {
        self.rate = Some((n, per));
        self
    }

    pub(crate) fn validate(&self, name: &str) -> Result<(), Error> {
        validate_queue(name)?;
        if self.concurrency == Some(0) {
            return Err(Error::invalid_setting(
                "queue",
                format!(
                    "queue {name:?}: concurrency must be at least 1 (to leave a queue to other \
                     processes, do not list it; for `default`, use skip_default_queue)"
                ),
            ));
        }
        if let Some((n, per)) = self.rate {
            if n == 0 || per < Duration::from_millis(1) || per > Duration::from_secs(86_400) {
                return Err(Error::invalid_setting(
                    "queue",
                    format!(
                        "queue {name:?}: rate_limit needs at least 1 task per period and a \
                         period from 1 ms to 1 day, got {n} per {per:?}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether a task of this queue may be handed to a worker without a claim (no limit to
    /// respect).
    pub(crate) fn unlimited(&self) -> bool {
        self.concurrency.is_none() && self.rate.is_none()
    }
}

/// A token bucket: `n` tokens, refilled evenly over `per`.
#[derive(Debug)]
pub(crate) struct Bucket {
    capacity: f64,
    per_token: Duration,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn new(n: u32, per: Duration) -> Bucket {
        Bucket {
            capacity: f64::from(n),
            per_token: per / n,
            tokens: f64::from(n),
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        self.at = now;
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.per_token.as_secs_f64()).min(self.capacity);
    }

    /// Whole tokens available now.
    pub(crate) fn available(&mut self, now: Instant) -> usize {
        self.refill(now);
        self.tokens.floor() as usize
    }

    /// Takes `n` tokens (at most what is available).
    pub(crate) fn take(&mut self, n: usize) {
        self.tokens = (self.tokens - n as f64).max(0.0);
    }

    /// Gives back `n` tokens a claim did not use.
    pub(crate) fn give_back(&mut self, n: usize) {
        self.tokens = (self.tokens + n as f64).min(self.capacity);
    }

    /// How long until the next whole token.
    pub(crate) fn next_token_in(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        self.per_token.mul_f64(1.0 - self.tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        assert!(validate_queue("default").is_ok());
        assert!(validate_queue("mail.eu-1:hi_pri").is_ok());
        for bad in ["", "a b", "é", "q;drop", &"q".repeat(65)] {
            assert!(validate_queue(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn priorities() {
        for p in MIN_PRIORITY..=MAX_PRIORITY {
            assert!(validate_priority(p).is_ok());
        }
        for p in [i32::MIN, MIN_PRIORITY - 1, MAX_PRIORITY + 1, i32::MAX] {
            let e = validate_priority(p).unwrap_err().to_string();
            assert!(e.contains("between -3"), "{e}");
        }
    }

    #[test]
    fn shard_key_of_is_stable_and_non_negative() {
        assert_eq!(shard_key_of("order-42"), shard_key_of("order-42"));
        assert_ne!(shard_key_of("order-42"), shard_key_of("order-43"));
        for k in ["", "a", "\u{ffff}", &"x".repeat(255)] {
            assert!(shard_key_of(k) >= 0);
        }
    }

    #[test]
    fn bucket_refills_evenly() {
        let mut b = Bucket::new(10, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(b.available(t0), 10);
        b.take(10);
        assert_eq!(b.available(t0), 0);
        assert!(b.next_token_in(t0) > Duration::from_millis(90));
        assert_eq!(b.available(t0 + Duration::from_millis(350)), 3);
        b.give_back(100);
        assert_eq!(b.available(t0 + Duration::from_millis(350)), 10);
    }

    #[test]
    fn queue_limits_are_checked() {
        assert!(Queue::new().validate("q").is_ok());
        assert!(Queue::new().concurrency(0).validate("q").is_err());
        assert!(Queue::new()
            .rate_limit(0, Duration::from_secs(1))
            .validate("q")
            .is_err());
        assert!(Queue::new()
            .rate_limit(1, Duration::ZERO)
            .validate("q")
            .is_err());
        assert!(Queue::new().validate("bad name").is_err());
    }
}
