//! Wake-up across processes (opt-in, [`WakeUp`]): a right-now task committed by one process
//! starts on another well before that process's next poll, without lowering `poll_interval`.
//!
//! Two mechanisms, both only an optimisation over the poll (a lost wake-up leaves the task due
//! in the table and the next poll runs it; correctness rests on the row leases alone, and no
//! process leads):
//!
//! * **LISTEN/NOTIFY** (PostgreSQL). Each shard of a started pool has a listener thread,
//!   `tend-listener-<shard>`, on a pooled connection it holds for as long as it runs: it
//!   `LISTEN`s on `tend_wake` and reads what the server sent every 5 ms (libpq's
//!   `PQconsumeInput`, no round trip); a notification wakes the shard's fetchers, the same
//!   path as [`PoolHandle::wake`](super::PoolHandle::wake). A lost connection (the server
//!   restarted, `pg_terminate_backend`) is discarded and replaced with a backoff of 50 ms to
//!   1 s; after it listens again it wakes the fetchers once, for what was committed while it
//!   was not listening. On the sending side, an [`Outbox`](crate::Outbox) of a pool built with
//!   the setting notifies after the commit, never inside the caller's transaction (a `NOTIFY`
//!   in a transaction takes a database-wide lock at its commit, which would serialise every
//!   enqueue): it only sets a per-shard flag, and the `tend-notifier` thread sends
//!   `NOTIFY tend_wake, '<shard>'` in its own autocommit statement on a pooled connection.
//!   Notifications coalesce: while one is being sent, any number of commits queue one more,
//!   and the notifier sends at most one per shard every 2 ms.
//! * **A due-probe** (every backend). Between polls, the shard's first fetcher reads whether
//!   any row is due (`SELECT id … WHERE execute_time <= now AND` claimable `ORDER BY
//!   execute_time LIMIT 1`, on the due index: it reads past the rows running now, whose lease
//!   leaves their due time as it was, then one more entry), every probe interval, and claims
//!   only when one is. It sees tasks however they were enqueued, also with plain
//!   `tend::enqueue` inside the application's own transaction, which no hook can see commit.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use diesel::connection::{Connection, SimpleConnection, TransactionManager};
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection, R2D2Connection};

use super::complete::{Backoff, Conn};
use super::MAX_SETTING_DURATION;
use crate::error::Error;
use crate::store::StoreConnection;
use crate::supervise::{spawn, supervise, Spawned};
use crate::util::now_ms;

/// The probe interval of [`WakeUp::Auto`] on the backends without LISTEN/NOTIFY.
pub const DEFAULT_WAKE_PROBE: Duration = Duration::from_millis(20);

/// The channel tend's notifications go on.
const CHANNEL: &str = "tend_wake";
/// How often a listener reads what its connection received (diesel gives no access to the
/// socket to block on; a read is a non-blocking `recv`, about 1 % of a core at this rate).
const LISTEN_POLL: Duration = Duration::from_millis(5);
/// How often an idle listener checks its connection with a round trip (a connection that died
/// without the server closing it says nothing until then).
const HEALTH_CHECK: Duration = Duration::from_secs(5);
/// The least time between two notifications of one shard.
const NOTIFY_GAP: Duration = Duration::from_millis(2);
/// The notifier gives its connections back to the r2d2 pool after this long without work.
const NOTIFIER_IDLE: Duration = Duration::from_secs(1);

/// How a pool learns of tasks other processes commit, before its next poll
/// ([`WorkerPoolBuilder::wake_up`](super::WorkerPoolBuilder::wake_up)). Off by default.
///
/// ```
/// # include!("../doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("wake-up");
/// use std::time::Duration;
/// use tend::{ErrorKind, Registry, WakeUp, WorkerPool};
/// let builder = || WorkerPool::builder(pool.clone(), Registry::new());
/// // Every 20 ms, one indexed read of whether anything is due; a claim only when something is.
/// assert!(builder().wake_up(WakeUp::Probe(Duration::from_millis(20))).build().is_ok());
/// // LISTEN/NOTIFY is PostgreSQL's; `Auto` picks it there and a 20 ms probe elsewhere.
/// let err = builder().wake_up(WakeUp::Listen).build().unwrap_err();
/// assert!(matches!(err.kind(), ErrorKind::InvalidSetting { name: "wake_up", .. }));
/// assert!(builder().wake_up(WakeUp::Auto).build().is_ok());
/// let err = builder().wake_up(WakeUp::Probe(Duration::ZERO)).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid setting `wake_up`: the probe interval must be greater than zero");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WakeUp {
    /// No cross-process wake-up: a task another process commits starts at the next poll.
    #[default]
    Off,
    /// PostgreSQL only: each shard's listener thread `LISTEN`s on `tend_wake` on a pooled
    /// connection it holds while the pool runs (one more connection per shard: `start` refuses
    /// an r2d2 pool whose `max_size` is below 3), and this
    /// pool's [`Outbox`](crate::Outbox) sends `NOTIFY tend_wake` after the commit of a
    /// transaction that enqueued right-now tasks it did not run itself. Plain
    /// `tend::enqueue` in your own transaction sends nothing: call
    /// [`Outbox::notify_committed`](crate::Outbox::notify_committed) after the commit.
    Listen,
    /// Every backend: between polls, the shard's first fetcher probes for a due row at this
    /// interval (one indexed read, on the connection it already holds) and claims only when
    /// there is one. Greater than zero, at most
    /// [`MAX_SETTING_DURATION`](crate::MAX_SETTING_DURATION).
    Probe(Duration),
    /// [`Listen`](Self::Listen) on PostgreSQL, [`Probe`](Self::Probe) every
    /// [`DEFAULT_WAKE_PROBE`] (20 ms) on MySQL/MariaDB and SQLite.
    Auto,
}

/// The setting resolved for a backend.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Wake {
    pub(crate) listen: bool,
    pub(crate) probe: Option<Duration>,
}

impl WakeUp {
    /// Checks the setting against the backend of `C`.
    pub(super) fn resolve<C: StoreConnection>(self) -> Result<Wake, Error> {
        let bad = |reason: &str| Err(Error::invalid_setting("wake_up", reason));
        match self {
            WakeUp::Off => Ok(Wake::default()),
            WakeUp::Listen | WakeUp::Auto if C::LISTEN_NOTIFY => Ok(Wake {
                listen: true,
                probe: None,
            }),
            WakeUp::Listen => bad(
                "WakeUp::Listen needs PostgreSQL's LISTEN/NOTIFY; on this backend use \
                 WakeUp::Probe(interval) or WakeUp::Auto",
            ),
            WakeUp::Auto => Ok(Wake {
                listen: false,
                probe: Some(DEFAULT_WAKE_PROBE),
            }),
            WakeUp::Probe(d) if d.is_zero() => bad("the probe interval must be greater than zero"),
            WakeUp::Probe(d) if d > MAX_SETTING_DURATION => {
                bad("the probe interval must be at most 3650 days (10 years)")
            }
            WakeUp::Probe(d) => Ok(Wake {
                listen: false,
                probe: Some(d),
            }),
        }
    }
}

/// The smallest r2d2 pool a listening shard runs on: its listener holds a connection for good,
/// beside the claimer's and the completer's.
pub(super) const MIN_POOL_TO_LISTEN: u32 = 3;

/// Refuses to start listening on an r2d2 pool too small to hold the listener's connection
/// beside the claimer's and the completer's (one of the three would wait for a connection
/// forever).
pub(super) fn check_pool<C: R2D2Connection + 'static>(
    wake: Wake,
    pool: &Pool<ConnectionManager<C>>,
) -> Result<(), Error> {
    if wake.listen && pool.max_size() < MIN_POOL_TO_LISTEN {
        return Err(Error::invalid_setting(
            "wake_up",
            format!(
                "WakeUp::Listen holds one connection per shard for its listener, beside the \
                 pool's claimer and completer: the r2d2 pool needs max_size >= \
                 {MIN_POOL_TO_LISTEN} (this one has {})",
                pool.max_size()
            ),
        ));
    }
    Ok(())
}

/// Whether a row is due now on the fetcher's connection (the due-probe). An error says
/// nothing is known to be due: the next poll reports and retries what failed.
pub(super) fn probe<C: R2D2Connection + StoreConnection + 'static>(
    conn: &mut Conn<C>,
    queues: &[String],
    excluded: &[i64],
) -> bool {
    let now = now_ms();
    for q in queues {
        match conn.with(|c| c.first_due(q, now, excluded)) {
            Ok(Some(_)) => return true,
            Ok(None) => {}
            Err(e) => {
                log::debug!("tend: the due-probe failed ({e}); the next poll retries");
                return false;
            }
        }
    }
    false
}

/// Gives a pooled connection back to r2d2 as broken, so that it is closed rather than reused
/// (a lost connection, or one whose `LISTEN` could not be undone).
fn discard<C: R2D2Connection + 'static>(mut conn: PooledConnection<ConnectionManager<C>>) {
    <C as Connection>::TransactionManager::transaction_manager_status_mut(&mut *conn)
        .set_in_error();
    drop(conn);
}

/// Waits `d`, or returns true at once when the pool stops.
fn stopped_within(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

/// Starts shard `shard`'s listener thread: it wakes the shard's fetchers through `wake` when a
/// notification arrives, until `stop` closes (then it gives its connection back, `UNLISTEN`ed).
pub(super) fn spawn_listener<C: R2D2Connection + StoreConnection + 'static>(
    shard: usize,
    pool: Pool<ConnectionManager<C>>,
    wake: Sender<()>,
    stop: Receiver<()>,
) -> Spawned {
    spawn(format!("tend-listener-{shard}"), move || {
        let held = RefCell::new(None);
        supervise(
            Some(&stop),
            || listen_loop(shard, &pool, &wake, &stop, &mut held.borrow_mut()),
            || {
                if let Some(c) = held.borrow_mut().take() {
                    discard(c);
                }
            },
        );
    })
}

fn listen_loop<C: R2D2Connection + StoreConnection + 'static>(
    shard: usize,
    pool: &Pool<ConnectionManager<C>>,
    wake: &Sender<()>,
    stop: &Receiver<()>,
    held: &mut Option<PooledConnection<ConnectionManager<C>>>,
) {
    let mut backoff = Backoff::default();
    let mut checked = Instant::now();
    loop {
        let Some(conn) = held.as_mut() else {
            let listening = pool.get().map_err(|e| e.to_string()).and_then(|mut c| {
                match c.batch_execute(&format!("LISTEN {CHANNEL}")) {
                    Ok(()) => Ok(c),
                    Err(e) => {
                        discard(c);
                        Err(e.to_string())
                    }
                }
            });
            match listening {
                Ok(c) => {
                    *held = Some(c);
                    backoff.reset();
                    checked = Instant::now();
                    log::debug!("tend: shard {shard} listens for wake-ups on `{CHANNEL}`");
                    // Tasks committed while nothing listened notified no one.
                    let _ = wake.try_send(());
                }
                Err(e) => {
                    let wait = backoff.next();
                    log::warn!(
                        "tend: the wake-up listener of shard {shard} cannot listen ({e}); \
                         retrying in {wait:?} (tasks still start at each poll)"
                    );
                    if stopped_within(stop, wait) {
                        return;
                    }
                }
            }
            continue;
        };
        if stopped_within(stop, LISTEN_POLL) {
            // Back to the r2d2 pool as it came: listening on nothing.
            if let Some(mut c) = held.take() {
                match c.batch_execute("UNLISTEN *") {
                    Ok(()) => {
                        let _ = c.take_notifications();
                    }
                    Err(_) => discard(c),
                }
            }
            return;
        }
        crate::supervise::fault::hit("listener");
        let mut read = conn.take_notifications();
        if matches!(read, Ok(0)) && checked.elapsed() >= HEALTH_CHECK {
            checked = Instant::now();
            // `LISTEN` again: a round trip that changes nothing (and keeps the session's last
            // statement, as operators see it in `pg_stat_activity`, naming its purpose).
            read = conn
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .and_then(|()| conn.take_notifications());
        }
        match read {
            Ok(0) => {}
            Ok(_) => {
                checked = Instant::now();
                let _ = wake.try_send(());
            }
            Err(e) => {
                log::warn!(
                    "tend: the wake-up listener of shard {shard} lost its connection ({e}); \
                     reconnecting (tasks still start at each poll)"
                );
                if let Some(c) = held.take() {
                    discard(c);
                }
            }
        }
    }
}

/// The sending side of LISTEN/NOTIFY: [`notify`](Self::notify) after a commit only sets a flag
/// and queues the shard; the `tend-notifier` thread sends the `NOTIFY`s. The thread ends once
/// every `Notifier` (the pool's and its outboxes') is gone.
#[derive(Clone)]
pub(crate) struct Notifier {
    pending: Arc<Vec<AtomicBool>>,
    tx: Sender<usize>,
}

impl Notifier {
    pub(super) fn start<C: R2D2Connection + StoreConnection + 'static>(
        pools: Vec<Pool<ConnectionManager<C>>>,
    ) -> Notifier {
        let n = pools.len();
        let pending: Arc<Vec<AtomicBool>> =
            Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
        let (tx, rx) = bounded(n.max(1));
        let flags = pending.clone();
        // Not joined: outboxes may outlive the pool; it ends when the last of them is dropped.
        drop(spawn("tend-notifier".to_string(), move || {
            let conns = RefCell::new((0..n).map(|_| None).collect::<Vec<_>>());
            supervise(
                None,
                || notify_loop(&pools, &rx, &flags, &mut conns.borrow_mut()),
                || {
                    for c in conns.borrow_mut().iter_mut() {
                        if let Some(c) = c.take() {
                            discard(c);
                        }
                    }
                },
            );
        }));
        Notifier { pending, tx }
    }

    /// Asks for a `NOTIFY` on shard `shard` (after a commit: never blocks, never fails).
    pub(crate) fn notify(&self, shard: usize) {
        if let Some(flag) = self.pending.get(shard) {
            if !flag.swap(true, Ordering::SeqCst) {
                let _ = self.tx.try_send(shard);
            }
        }
    }

    /// Asks for a `NOTIFY` on every shard.
    pub(crate) fn notify_all(&self) {
        for shard in 0..self.pending.len() {
            self.notify(shard);
        }
    }
}

fn notify_loop<C: R2D2Connection + StoreConnection + 'static>(
    pools: &[Pool<ConnectionManager<C>>],
    rx: &Receiver<usize>,
    pending: &[AtomicBool],
    conns: &mut [Option<PooledConnection<ConnectionManager<C>>>],
) {
    loop {
        let first = match rx.recv_timeout(NOTIFIER_IDLE) {
            Ok(shard) => shard,
            Err(RecvTimeoutError::Timeout) => {
                // Idle: give the connections back until the next commit.
                conns.iter_mut().for_each(|c| *c = None);
                match rx.recv() {
                    Ok(shard) => shard,
                    Err(_) => return,
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut shards = vec![first];
        shards.extend(rx.try_iter());
        for shard in shards {
            // Cleared before sending: a commit from now on queues the next notification.
            pending[shard].store(false, Ordering::SeqCst);
            // One retry on a fresh connection, after a lost one.
            for attempt in 0..2 {
                let conn = match &mut conns[shard] {
                    Some(c) => c,
                    slot => match pools[shard].get() {
                        Ok(c) => slot.insert(c),
                        Err(e) => {
                            log::debug!("tend: no connection to notify shard {shard}: {e}");
                            break;
                        }
                    },
                };
                match conn.batch_execute(&format!("NOTIFY {CHANNEL}, '{shard}'")) {
                    Ok(()) => break,
                    Err(e) => {
                        if let Some(c) = conns[shard].take() {
                            discard(c);
                        }
                        if attempt == 1 {
                            log::debug!(
                                "tend: could not notify shard {shard} ({e}); its pools see the \
                                 task at their next poll"
                            );
                        }
                    }
                }
            }
        }
        std::thread::sleep(NOTIFY_GAP);
    }
}
