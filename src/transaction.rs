//! Running an application's transaction again after a lock conflict.
//!
//! tend's own statements never make an application transaction fail (on MySQL/MariaDB they run
//! at READ COMMITTED and take no gap locks), but an application's transactions can still meet
//! each other: two checkouts updating the same stock rows in opposite orders deadlock on any
//! server, PostgreSQL's SERIALIZABLE reports serialization failures, and SQLite reports "database
//! is locked" when a read transaction cannot upgrade to a write. The database has then rolled
//! back (or will roll back) the whole transaction, and the fix is to run all of it again:
//! [`transaction_with_retry`] and [`TransactionRetry`] do that.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::thread;
use std::time::{Duration, Instant};

use diesel::Connection;

use crate::store::StoreConnection;

/// Errors that can say whether running the whole transaction again would resolve them: a
/// deadlock, a lock wait timeout, a serialization failure or SQLite's busy/locked.
///
/// Implemented for [`diesel::result::Error`] and [`crate::Error`]; implement it for your own
/// error type by asking the diesel or tend error it wraps, and answering `false` for the rest.
///
/// ```
/// use diesel::result::Error as DieselError;
/// use tend::TransientError;
///
/// #[derive(Debug)]
/// enum CheckoutError {
///     OutOfStock,
///     Db(DieselError),
///     Tend(tend::Error),
/// }
/// impl From<DieselError> for CheckoutError {
///     fn from(e: DieselError) -> Self {
///         CheckoutError::Db(e)
///     }
/// }
/// impl TransientError for CheckoutError {
///     fn is_transient(&self) -> bool {
///         match self {
///             CheckoutError::OutOfStock => false,
///             CheckoutError::Db(e) => e.is_transient(),
///             CheckoutError::Tend(e) => e.is_transient(),
///         }
///     }
/// }
/// assert!(!CheckoutError::OutOfStock.is_transient());
/// assert!(!CheckoutError::Db(DieselError::NotFound).is_transient());
/// ```
pub trait TransientError {
    /// Whether the transaction that failed with this error should simply run again.
    fn is_transient(&self) -> bool;
}

impl TransientError for diesel::result::Error {
    fn is_transient(&self) -> bool {
        crate::error::is_transient(self)
    }
}

impl TransientError for crate::error::Error {
    fn is_transient(&self) -> bool {
        crate::error::Error::is_transient(self)
    }
}

/// How [`TransactionRetry::run`] retries: at most `attempts` runs in all, waiting between them
/// with capped exponential backoff and "equal jitter" (a wait drawn from `[w/2, w]` where `w`
/// doubles from `base` up to `cap`), so that the transactions that collided do not collide again.
///
/// Defaults: 5 attempts, 10 ms base, 500 ms cap (at most about 1.5 s of waiting in all).
///
/// ```
/// use std::time::Duration;
/// use tend::TransactionRetry;
/// let retry = TransactionRetry::new()
///     .attempts(10)
///     .backoff(Duration::from_millis(5), Duration::from_millis(200));
/// assert_eq!(retry.max_attempts(), 10);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionRetry {
    attempts: u32,
    base: Duration,
    cap: Duration,
}

impl Default for TransactionRetry {
    fn default() -> Self {
        TransactionRetry::new()
    }
}

impl TransactionRetry {
    /// 5 attempts, backoff from 10 ms, capped at 500 ms.
    pub fn new() -> TransactionRetry {
        TransactionRetry {
            attempts: 5,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(500),
        }
    }

    /// How many times the transaction runs at most, the first run included (at least 1; 0 is
    /// taken as 1).
    pub fn attempts(mut self, attempts: u32) -> TransactionRetry {
        self.attempts = attempts.max(1);
        self
    }

    /// The first wait before jitter, and the longest (`cap` below `base` is taken as `base`).
    pub fn backoff(mut self, base: Duration, cap: Duration) -> TransactionRetry {
        self.base = base;
        self.cap = cap.max(base);
        self
    }

    /// How many times the transaction runs at most.
    pub fn max_attempts(&self) -> u32 {
        self.attempts
    }

    /// Runs `f` in a transaction on `conn` (diesel's [`Connection::transaction`]: commit on
    /// `Ok`, roll back on `Err`), and runs it again, in a new transaction, while it fails with
    /// an error whose [`TransientError::is_transient`] is true and attempts are left. Returns
    /// the first `Ok`, or the last error: a transient one once the attempts are used up, or the
    /// first error that is not transient, at once.
    ///
    /// `f` may run several times, so it must not have effects outside the transaction that
    /// cannot be repeated (or must make them idempotent). Call it at the top level, not inside
    /// another transaction: a deadlock or serialization failure has rolled back the whole
    /// outer transaction, which a retried savepoint cannot bring back.
    ///
    /// See [`transaction_with_retry`] for an example.
    ///
    /// # Errors
    /// `f`'s error, or diesel's error from BEGIN or COMMIT converted with `E::from` (a
    /// transient COMMIT failure, as SQLite's busy, is retried too).
    pub fn run<C, T, E, F>(&self, conn: &mut C, mut f: F) -> Result<T, E>
    where
        C: Connection + StoreConnection,
        E: From<diesel::result::Error> + TransientError,
        F: FnMut(&mut C) -> Result<T, E>,
    {
        let mut wait = self.base;
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            match conn.transaction(|conn| f(conn)) {
                Err(e) if attempt < self.attempts && e.is_transient() => {
                    let jittered = jitter(wait);
                    log::debug!(
                        "tend: transaction attempt {attempt} of {} hit a lock conflict after \
                         {:?}; running it again in {jittered:?}",
                        self.attempts,
                        started.elapsed()
                    );
                    thread::sleep(jittered);
                    wait = wait.saturating_mul(2).min(self.cap);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A wait drawn uniformly from `[w/2, w]`.
fn jitter(w: Duration) -> Duration {
    let half = w / 2;
    let spread = (w - half).as_micros() as u64;
    if spread == 0 {
        return w;
    }
    let random = RandomState::new().hash_one(Instant::now());
    half + Duration::from_micros(random % (spread + 1))
}

/// Runs `f` in a transaction and runs it again when it fails with a lock conflict
/// ([`TransientError::is_transient`]): up to 5 attempts with capped, jittered backoff
/// ([`TransactionRetry`]'s defaults). `f` returns `Result<T, E>` for any `E` that absorbs
/// diesel's errors and can tell a transient one: [`crate::Error`] (so `tend::enqueue` works
/// with `?`), [`diesel::result::Error`], or your own type implementing [`TransientError`].
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("transaction-with-retry");
/// # let mut conn = pool.get()?;
/// use diesel::connection::SimpleConnection;
/// conn.batch_execute("CREATE TABLE orders (id BIGINT PRIMARY KEY)")?;
/// let enqueued = tend::transaction_with_retry(&mut conn, |conn| {
///     conn.batch_execute("INSERT INTO orders (id) VALUES (42)")?;
///     tend::enqueue(conn, &Ship { order_id: 42 })
/// })?;
/// assert!(enqueued.id().is_some());
///
/// // A closure returning diesel's own error works the same way.
/// let n = tend::transaction_with_retry(&mut conn, |conn| {
///     conn.batch_execute("DELETE FROM orders")?;
///     Ok::<_, diesel::result::Error>(1)
/// })?;
/// assert_eq!(n, 1);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`TransactionRetry::run`].
pub fn transaction_with_retry<C, T, E, F>(conn: &mut C, f: F) -> Result<T, E>
where
    C: Connection + StoreConnection,
    E: From<diesel::result::Error> + TransientError,
    F: FnMut(&mut C) -> Result<T, E>,
{
    TransactionRetry::new().run(conn, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_full() {
        for ms in [0u64, 1, 10, 500] {
            let w = Duration::from_millis(ms);
            for _ in 0..100 {
                let j = jitter(w);
                assert!(j >= w / 2 && j <= w, "{j:?} for {w:?}");
            }
        }
    }

    #[test]
    fn settings_are_clamped() {
        let r = TransactionRetry::new()
            .attempts(0)
            .backoff(Duration::from_millis(50), Duration::from_millis(1));
        assert_eq!(r.max_attempts(), 1);
        assert_eq!(r.cap, Duration::from_millis(50));
    }
}
