//! The completer: writes outcomes back in batches and renews the leases of running tasks.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{after, select, tick, Receiver, Sender};
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection, R2D2Connection};

use super::{Config, Shared};
use crate::events::Event;
use crate::exec::Done;
use crate::store::row::Finish;
use crate::store::{retry_transient, StoreConnection};
use crate::supervise::{fault, supervise};
use crate::util::now_ms;

/// Keeps a pooled connection across iterations and drops it after an error, so that a broken
/// connection is replaced.
///
/// On a single-writer backend (SQLite) a shard's fetcher and completer share one `Conn`
/// ([`Conn::share`]) and take turns on it: two connections would wait for each other's write
/// lock in SQLite's busy handler, which sleeps (1 ms and up) before retrying, and each would
/// find its page cache invalidated by the other's writes.
pub(super) struct Conn<C: R2D2Connection + StoreConnection + 'static> {
    pool: Pool<ConnectionManager<C>>,
    slot: Arc<Mutex<Option<Held<C>>>>,
    /// Whether this connection leaves WAL checkpoints to the pool's checkpointer.
    defer_checkpoints: bool,
}

/// A held pooled connection, which runs its statements on generic plans
/// ([`generic_plans`](crate::store::ops::Ops::generic_plans)) and, as a SQLite writer, defers
/// its checkpoints; it gets the defaults back before it returns to the r2d2 pool, which the
/// application may share.
struct Held<C: R2D2Connection + StoreConnection + 'static> {
    conn: PooledConnection<ConnectionManager<C>>,
    deferred: bool,
    generic: bool,
}

impl<C: R2D2Connection + StoreConnection + 'static> Held<C> {
    fn new(mut conn: PooledConnection<ConnectionManager<C>>, defer: bool) -> Held<C> {
        let deferred = defer && conn.defer_checkpoints(true).is_ok();
        // Best effort: a server without the setting (before PostgreSQL 12, or one that only
        // speaks its protocol) plans as it always did.
        let generic = conn.generic_plans(true).is_ok();
        Held {
            conn,
            deferred,
            generic,
        }
    }
}

impl<C: R2D2Connection + StoreConnection + 'static> Drop for Held<C> {
    fn drop(&mut self) {
        if self.deferred {
            let _ = self.conn.defer_checkpoints(false);
        }
        if self.generic {
            let _ = self.conn.generic_plans(false);
        }
    }
}

impl<C: R2D2Connection + StoreConnection + 'static> Conn<C> {
    pub(super) fn new(pool: Pool<ConnectionManager<C>>) -> Conn<C> {
        Conn {
            pool,
            slot: Arc::new(Mutex::new(None)),
            defer_checkpoints: false,
        }
    }

    /// A shard's writer on SQLite: its commits leave WAL checkpoints to the pool's
    /// checkpointer thread, which runs them on its own connection, on the other core, instead
    /// of in the middle of the next claim. The writer still checkpoints once the WAL holds
    /// 4000 pages (16 MiB at 4 KiB pages): a passive checkpoint beside a writer that never
    /// pauses cannot let SQLite restart the WAL, so this bounds its size.
    pub(super) fn writer(pool: Pool<ConnectionManager<C>>) -> Conn<C> {
        Conn {
            defer_checkpoints: true,
            ..Conn::new(pool)
        }
    }

    /// The same connection, for another thread: calls of [`with`](Self::with) take turns.
    pub(super) fn share(&self) -> Conn<C> {
        Conn {
            pool: self.pool.clone(),
            slot: self.slot.clone(),
            defer_checkpoints: self.defer_checkpoints,
        }
    }

    /// Runs `f` on the held connection, retrying lock conflicts.
    pub(super) fn with<T>(
        &mut self,
        f: impl FnMut(&mut PooledConnection<ConnectionManager<C>>) -> diesel::QueryResult<T>,
    ) -> Result<T, ConnError> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let conn = self.pool.get().map_err(ConnError::Pool)?;
            *slot = Some(Held::new(conn, self.defer_checkpoints));
        }
        let mut f = f;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let conn = &mut slot.as_mut().expect("just set").conn;
            retry_transient(|| {
                let r = f(conn);
                if r.is_err() {
                    forget_statements(&mut **conn);
                }
                r
            })
        }));
        let r = match r {
            Ok(r) => r,
            Err(panic) => {
                // Dropped before the lock is released, so that no other thread (the shard's
                // other user of a shared connection) runs in a transaction the panic left
                // open: r2d2 discards it, which rolls the transaction back.
                *slot = None;
                std::panic::resume_unwind(panic)
            }
        };
        r.map_err(|e| {
            *slot = None;
            ConnError::Db(e)
        })
    }

    /// Drops the held connection (after a panic): one left in a transaction is reported broken
    /// by diesel and discarded by r2d2, which rolls the transaction back; the next call takes
    /// a fresh one.
    pub(super) fn reset(&mut self) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        *slot = None;
    }
}

/// After a failed statement on MySQL/MariaDB, drops the connection's cached prepared
/// statements, so that none is executed again.
///
/// This is the root cause of the MariaDB shutdown hang of issue 11: when the server reports an
/// error while the client reads a result set (an InnoDB deadlock or lock wait timeout met by
/// `SELECT … FOR UPDATE` after its first rows, a killed query), MariaDB Connector/C's
/// `mysql_stmt_store_result` fails but leaves the statement in its "waiting for use or store"
/// state, and diesel's `mysql_stmt_free_result` then marks it as fetching. diesel keeps the
/// statement in its cache; its next `mysql_stmt_execute` first flushes the unbuffered result
/// it believes pending, i.e. waits on the socket for packets the server never sends:
/// `poll(timeout = -1)`, forever, while the server shows the session idle (`Sleep`) with no
/// transaction. A statement that is closed (`mysql_stmt_close`, which flushes nothing when
/// the connection is idle) and prepared again works. Resetting diesel's statement cache
/// closes every cached statement of the connection; it costs a prepare per statement on the
/// next use, only after an error.
pub(crate) fn forget_statements<C: diesel::Connection + StoreConnection>(conn: &mut C) {
    if conn.backend() == "mysql" {
        use diesel::connection::CacheSize;
        conn.set_prepared_statement_cache_size(CacheSize::Disabled);
        conn.set_prepared_statement_cache_size(CacheSize::Unbounded);
    }
}

/// Why [`Conn::with`] failed: no connection from the r2d2 pool, or the statement failed (the
/// connection is then dropped, so the next call gets a fresh one).
#[derive(Debug)]
pub(super) enum ConnError {
    Pool(r2d2::Error),
    Db(diesel::result::Error),
}

impl ConnError {
    /// The public error, its cause kept as `source()`.
    pub(super) fn into_error(self) -> crate::error::Error {
        use crate::error::{Error, ErrorKind};
        match self {
            ConnError::Pool(e) => Error::new(ErrorKind::Pool(e)),
            ConnError::Db(e) => Error::new(ErrorKind::Database(e)),
        }
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Pool(e) => write!(f, "no database connection: {e}"),
            ConnError::Db(e) => e.fmt(f),
        }
    }
}

/// How often a SQLite shard's checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// On SQLite: runs the WAL checkpoints the shard's writer deferred (see [`Conn::writer`]), on
/// a connection of its own, until the pool stops.
pub(super) fn checkpointer<C: R2D2Connection + StoreConnection + 'static>(
    mut conn: Conn<C>,
    stop: Receiver<()>,
) {
    let every = tick(CHECKPOINT_EVERY);
    let conn = std::cell::RefCell::new(&mut conn);
    supervise(
        Some(&stop),
        || checkpoint_loop(&mut conn.borrow_mut(), &stop, &every),
        || conn.borrow_mut().reset(),
    );
}

fn checkpoint_loop<C: R2D2Connection + StoreConnection + 'static>(
    conn: &mut Conn<C>,
    stop: &Receiver<()>,
    every: &Receiver<Instant>,
) {
    loop {
        select! {
            recv(stop) -> _ => return,
            recv(every) -> _ => {
                fault::hit("checkpoint");
                // Harmless when it fails (the database is busy or down): the writer's own
                // bound still checkpoints, so a debug line, not a warning every 50 ms.
                if let Err(e) = conn.with(|c| c.checkpoint()) {
                    log::debug!("tend: checkpointing the SQLite WAL failed: {e}");
                }
            }
        }
    }
}

/// Capped exponential backoff for database errors: 50 ms doubling to 1 s, so that the pool
/// resumes within about a second of the database coming back and never spins.
#[derive(Default)]
pub(super) struct Backoff(Duration);

impl Backoff {
    pub(super) fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }
    pub(super) fn next(&mut self) -> Duration {
        self.0 = (self.0 * 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
        self.0
    }
}

/// The completer thread: [`complete_loop`] under [`supervise`], which survives a panic. After
/// one, the connection is dropped (see [`Conn::reset`]) and the outcomes of the batch in hand
/// are forgotten: their leases are no longer renewed, so they lapse and the tasks run again
/// (at least once); the pool goes on writing later outcomes.
pub(super) fn completer<C: R2D2Connection + StoreConnection + 'static>(
    mut conn: Conn<C>,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    done: Receiver<Done>,
    stop: Receiver<()>,
    freed: Vec<Sender<()>>,
) {
    let state = std::cell::RefCell::new((&mut conn, Vec::new(), false));
    supervise(
        Some(&stop),
        || {
            let (conn, batch, stopping) = &mut *state.borrow_mut();
            complete_loop(conn, &cfg, &shared, &done, &stop, &freed, batch, stopping)
        },
        || {
            let (conn, batch, _) = &mut *state.borrow_mut();
            conn.reset();
            if !batch.is_empty() {
                log::error!(
                    "tend: the outcomes of {} task(s) were dropped by the completer's panic; \
                     they run again once their leases lapse",
                    batch.len()
                );
                forget(&shared, batch);
            }
        },
    );
}

#[allow(clippy::too_many_arguments)]
fn complete_loop<C: R2D2Connection + StoreConnection + 'static>(
    conn: &mut Conn<C>,
    cfg: &Arc<Config>,
    shared: &Arc<Shared>,
    done: &Receiver<Done>,
    stop: &Receiver<()>,
    freed: &[Sender<()>],
    batch: &mut Vec<Done>,
    stopping: &mut bool,
) {
    let heartbeat = tick(cfg.lease / 3);
    // Kept completed rows are purged every tenth of the retention (1 s to 60 s).
    let purge = match cfg.exec.keep_completed {
        Some(r) => tick((r / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))),
        None => crossbeam_channel::never(),
    };
    loop {
        if !*stopping {
            select! {
                recv(done) -> d => match d {
                    Ok(d) => batch.push(d),
                    Err(_) => *stopping = true,
                },
                recv(heartbeat) -> _ => renew_leases(conn, cfg, shared),
                recv(purge) -> _ => purge_completed(conn, cfg),
                recv(stop) -> _ => *stopping = true,
            }
        }
        fault::hit("completer");
        batch.extend(done.try_iter().take(1024));
        if !*stopping && !batch.is_empty() {
            if C::CONCURRENT_CLAIMS {
                linger(cfg, shared, done, batch);
            } else {
                // The fetcher writes outcomes with its next claim (one transaction); what it
                // has not taken after a while is written here.
                select! {
                    recv(stop) -> _ => *stopping = true,
                    recv(after(SHARED_LINGER)) -> _ => {},
                }
                batch.extend(done.try_iter());
            }
        }
        if !batch.is_empty() {
            write_outcomes(conn, cfg, shared, batch, *stopping);
            for f in freed {
                let _ = f.try_send(());
            }
        }
        if *stopping && done.is_empty() {
            return;
        }
    }
}

/// How long the completer waits for more outcomes before writing a partial batch.
const LINGER: Duration = Duration::from_millis(5);

/// On a single-writer backend, how long an outcome may wait for the fetcher's next claim to
/// carry it before the completer writes it alone.
const SHARED_LINGER: Duration = Duration::from_millis(20);

/// While tasks are still running, waits up to [`LINGER`] for a batch's worth of outcomes, so
/// that many tasks share one write transaction (SQLite runs writers one at a time; on the
/// servers each commit waits for a flush). A task's slot is already free, so this delays
/// only the row's deletion, never the next claim; the lease covers the wait.
fn linger(cfg: &Config, shared: &Shared, done: &Receiver<Done>, batch: &mut Vec<Done>) {
    let deadline = Instant::now() + LINGER;
    while batch.len() < cfg.batch_size && shared.busy.load(Ordering::SeqCst) > 0 {
        match done.recv_deadline(deadline) {
            Ok(d) => {
                batch.push(d);
                batch.extend(done.try_iter().take(cfg.batch_size));
            }
            Err(_) => return,
        }
    }
}

/// Outcomes grouped for writing: successes by lease token (one `DELETE` each), and the fenced
/// updates of the rest.
pub(super) fn group(batch: &[Done]) -> (Vec<(i64, Vec<i64>)>, Vec<Finish>) {
    let mut completes: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut finishes = Vec::new();
    for d in batch {
        match d {
            Done::Complete { id, token, .. } => completes.entry(*token).or_default().push(*id),
            Done::Finish(f) => finishes.push(f.clone()),
            Done::CompletedIn { .. } => {}
        }
    }
    (completes.into_iter().collect(), finishes)
}

/// Reports completions the database refused (`deleted` of `asked` rows were still held).
pub(super) fn report_completed(cfg: &Config, asked: usize, deleted: usize) {
    if deleted < asked {
        log::warn!(
            "tend: {} of {asked} completed task(s) had lost their lease (taken over after \
             expiry); their completion was refused",
            asked - deleted
        );
        cfg.exec.events.emit(Event::OutcomesRefused {
            count: asked - deleted,
        });
    }
}

/// Reports fenced updates the database refused.
pub(super) fn report_finished(cfg: &Config, asked: usize, held: usize) {
    if held < asked {
        log::warn!(
            "tend: {} task outcome(s) were refused because their lease was taken over after \
             expiry",
            asked - held
        );
        cfg.exec.events.emit(Event::OutcomesRefused {
            count: asked - held,
        });
    }
}

/// Forgets the leases of written outcomes: they are no longer renewed.
pub(super) fn forget(shared: &Shared, batch: &mut Vec<Done>) {
    let mut map = shared.inflight();
    for d in batch.drain(..) {
        map.remove(&d.id());
    }
}

/// Writes a batch of outcomes: one DELETE per lease token for successes, one transaction of
/// fenced updates for the rest. Retries database errors with backoff while the leases are
/// still worth writing; after that the tasks simply run again (at-least-once).
fn write_outcomes<C: R2D2Connection + StoreConnection + 'static>(
    conn: &mut Conn<C>,
    cfg: &Config,
    shared: &Shared,
    batch: &mut Vec<Done>,
    stopping: bool,
) {
    let (mut pending_completes, mut finishes) = group(batch);
    let give_up_at = super::later(if stopping {
        cfg.lease.min(Duration::from_secs(5))
    } else {
        cfg.lease
    });
    let mut backoff = Backoff::default();
    loop {
        let mut failed = None;
        pending_completes.retain(|(token, ids)| {
            if failed.is_some() {
                return true;
            }
            match conn.with(|c| c.complete(*token, ids)) {
                Ok(n) => {
                    report_completed(cfg, ids.len(), n);
                    false
                }
                Err(e) => {
                    failed = Some(e);
                    true
                }
            }
        });
        if failed.is_none() && !finishes.is_empty() {
            match conn.with(|c| c.finish(&finishes)) {
                Ok(held) => {
                    report_finished(cfg, finishes.len(), held.len());
                    finishes.clear();
                }
                Err(e) => failed = Some(e),
            }
        }
        let Some(e) = failed else { break };
        if Instant::now() >= give_up_at {
            log::error!(
                "tend: could not write the outcome of {} task(s) ({e}); they will run again \
                 once their leases expire",
                batch.len()
            );
            break;
        }
        let wait = backoff.next();
        log::warn!("tend: writing task outcomes failed ({e}); retrying in {wait:?}");
        thread::sleep(wait);
    }
    release_lines(conn, batch);
    forget(shared, batch);
}

/// After outcomes were written: each row they took out of its ordering key's line (deleted,
/// or kept as succeeded) releases the next row of its key if it waits in the line. A release
/// that fails is left to the fetchers' sweep of the line (see `Ops::release_orphans`); the
/// claim checks the order itself, so an early release costs nothing but a read.
pub(super) fn release_lines<C: R2D2Connection + StoreConnection + 'static>(
    conn: &mut Conn<C>,
    batch: &[Done],
) {
    let now = crate::util::now_ms();
    for (key, id) in batch.iter().filter_map(Done::leaves_line) {
        if let Err(e) =
            conn.with(|c| crate::store::retry_transient(|| c.release_next(key, id, now)))
        {
            log::warn!(
                "tend: could not release the task after {id} in the line of key {key:?} ({e}); \
                 the next sweep of the line does"
            );
        }
    }
}

/// Deletes kept completed rows older than the retention, 500 at a time so that no statement
/// holds locks for long; at most 20 batches per tick, the rest waits for the next one.
fn purge_completed<C: R2D2Connection + StoreConnection + 'static>(
    conn: &mut Conn<C>,
    cfg: &Config,
) {
    let Some(retention) = cfg.exec.keep_completed else {
        return;
    };
    let before = now_ms().saturating_sub(retention.as_millis().min(i64::MAX as u128) as i64);
    let mut total = 0;
    for _ in 0..20 {
        match conn.with(|c| c.purge_completed(before, 500)) {
            Ok(n) => {
                total += n;
                if n < 500 {
                    break;
                }
            }
            Err(e) => {
                log::warn!("tend: purging completed rows failed: {e}");
                break;
            }
        }
    }
    if total > 0 {
        log::debug!("tend: purged {total} completed row(s) older than {retention:?}");
    }
}

/// Pushes the lease expiry of every claimed task whose attempt is within the task timeout.
fn renew_leases<C: R2D2Connection + StoreConnection + 'static>(
    conn: &mut Conn<C>,
    cfg: &Config,
    shared: &Shared,
) {
    let mut by_token: HashMap<i64, Vec<i64>> = HashMap::new();
    {
        let mut map = shared.inflight();
        for (id, lease) in map.iter_mut() {
            let over = lease
                .started
                .is_some_and(|s| !lease.finished && s.elapsed() > cfg.task_timeout);
            if over {
                if !lease.timed_out {
                    lease.timed_out = true;
                    log::error!(
                        "tend: task {id} has run longer than the task timeout ({:?}); its lease \
                         is no longer renewed and it will be claimed again",
                        cfg.task_timeout
                    );
                }
                continue;
            }
            by_token.entry(lease.token).or_default().push(*id);
        }
    }
    if by_token.is_empty() {
        return;
    }
    let now = now_ms();
    let until = now.saturating_add(crate::util::millis(cfg.lease));
    for (token, ids) in by_token {
        if let Err(e) = conn.with(|c| c.extend(token, &ids, until)) {
            log::warn!("tend: renewing {} lease(s) failed: {e}", ids.len());
        }
    }
}
