//! The worker pool: a fetcher thread claims due tasks in batches under a lease, worker threads
//! run them, and a completer thread writes the outcomes back in batches and keeps the leases of
//! running tasks alive.
//!
//! Why three roles: claiming, running and completing overlap, so a worker never waits for a
//! round trip to start its next task, and completions of many tasks share one statement.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{after, bounded, select, tick, unbounded, Receiver, Sender};
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection, R2D2Connection};

use crate::enqueue::truncate;
use crate::error::Error;
use crate::registry::{Attempt, Registry};
use crate::retry::RetryPolicy;
use crate::status::{TaskStatus, PARKED};
use crate::store::{now_ms, retry_transient, Claim, Finish, StoreConnection, TaskRow};
use crate::task::{Action, TaskContext, TaskError};

/// The longest message stored in `error_msg` / `fallback_error_msg` (64 KiB).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Builds a [`WorkerPool`]. Every setter says its default; [`build`](Self::build) rejects
/// settings it cannot work with.
///
/// ```
/// use std::time::Duration;
/// use diesel::r2d2::{ConnectionManager, Pool};
/// use diesel::SqliteConnection;
/// let pool = Pool::builder()
///     .build(ConnectionManager::<SqliteConnection>::new(":memory:"))
///     .unwrap();
/// let err = tend::WorkerPool::builder(pool, tend::Registry::new())
///     .threads(0)
///     .build()
///     .unwrap_err();
/// assert_eq!(err.to_string(), "invalid setting `threads`: must be at least 1");
/// ```
pub struct WorkerPoolBuilder<C: R2D2Connection + 'static> {
    pool: Pool<ConnectionManager<C>>,
    registry: Registry,
    threads: usize,
    batch_size: usize,
    poll_interval: Duration,
    lease: Duration,
    task_timeout: Duration,
    shutdown_timeout: Duration,
    owner: Option<String>,
}

impl<C: R2D2Connection + 'static> fmt::Debug for WorkerPoolBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPoolBuilder")
            .field("registry", &self.registry)
            .field("threads", &self.threads)
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .field("lease", &self.lease)
            .field("task_timeout", &self.task_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

impl<C> WorkerPoolBuilder<C>
where
    C: R2D2Connection + StoreConnection + Send + 'static,
{
    /// Worker threads running tasks. Defaults to 4.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Most tasks claimed by one query. The pool also keeps at most this many claimed tasks
    /// waiting for a free thread. Defaults to 100.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// How often an idle pool looks for due tasks; bounds the lateness of scheduled tasks and
    /// retries. Defaults to 1 s (the seed polled every 10 s).
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// How long a claim holds a task before another worker may take it. The pool renews the
    /// leases of its tasks every third of this while they run, so it bounds how long a crashed
    /// process's tasks wait, not how long a task may run. At least 1 s. Defaults to 30 s.
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }

    /// How long one attempt may run before the pool stops renewing its lease; the task is then
    /// claimed again elsewhere (as an attempt) and the late attempt's outcome is refused.
    /// At least the lease. Defaults to 15 minutes.
    pub fn task_timeout(mut self, d: Duration) -> Self {
        self.task_timeout = d;
        self
    }

    /// How long [`PoolHandle::shutdown`] waits for running tasks. Defaults to 30 s.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// The name written into `lease_owner`. Defaults to `host/pid/random`.
    pub fn owner(mut self, name: impl Into<String>) -> Self {
        self.owner = Some(name.into());
        self
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSetting`](crate::ErrorKind::InvalidSetting) naming the first bad
    /// setting: zero threads or batch size, a zero poll interval, a lease under 1 s, a task
    /// timeout shorter than the lease, an empty or over-long owner.
    pub fn build(self) -> Result<WorkerPool<C>, Error> {
        if self.threads == 0 {
            return Err(Error::invalid_setting("threads", "must be at least 1"));
        }
        if self.threads > 1024 {
            return Err(Error::invalid_setting("threads", "must be at most 1024"));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid_setting("batch_size", "must be at least 1"));
        }
        if self.batch_size > 10_000 {
            return Err(Error::invalid_setting(
                "batch_size",
                "must be at most 10000",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::invalid_setting(
                "poll_interval",
                "must be greater than zero",
            ));
        }
        if self.lease < Duration::from_secs(1) {
            return Err(Error::invalid_setting("lease", "must be at least 1 s"));
        }
        if self.task_timeout < self.lease {
            return Err(Error::invalid_setting(
                "task_timeout",
                "must be at least the lease",
            ));
        }
        let owner = match self.owner {
            Some(o) if o.is_empty() || o.len() > 255 => {
                return Err(Error::invalid_setting("owner", "must be 1 to 255 bytes"))
            }
            Some(o) => o,
            None => default_owner(),
        };
        Ok(WorkerPool {
            pool: self.pool,
            cfg: Arc::new(Config {
                registry: self.registry,
                threads: self.threads,
                batch_size: self.batch_size,
                poll_interval: self.poll_interval,
                lease: self.lease,
                task_timeout: self.task_timeout,
                shutdown_timeout: self.shutdown_timeout,
                owner,
            }),
        })
    }
}

/// A configured, not yet started worker pool.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use tend::{Task, TaskContext, TaskError};
/// # #[derive(Serialize, Deserialize)] struct Ship { order_id: i64 }
/// # impl Task for Ship {
/// #     const SIGNATURE: &'static str = "orders.ship";
/// #     fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
/// # }
/// use diesel::r2d2::{ConnectionManager, Pool};
/// use diesel::SqliteConnection;
/// let path = std::env::temp_dir().join(format!("tend-pool-doc-{}.db", std::process::id()));
/// let pool = Pool::builder()
///     .connection_customizer(Box::new(tend::SqliteSetup::new()))
///     .build(ConnectionManager::<SqliteConnection>::new(path.to_str().unwrap()))
///     .unwrap();
/// tend::migrate(&mut pool.get().unwrap()).unwrap();
/// let mut registry = tend::Registry::new();
/// registry.register::<Ship>().unwrap();
/// let handle = tend::WorkerPool::builder(pool.clone(), registry)
///     .threads(2)
///     .build()
///     .unwrap()
///     .start()
///     .unwrap();
/// tend::enqueue(&mut pool.get().unwrap(), &Ship { order_id: 1 }).unwrap();
/// handle.wake();
/// let report = handle.shutdown();
/// assert!(report.all_joined());
/// # drop(pool); let _ = std::fs::remove_file(&path);
/// ```
pub struct WorkerPool<C: R2D2Connection + 'static> {
    pool: Pool<ConnectionManager<C>>,
    cfg: Arc<Config>,
}

impl<C: R2D2Connection + 'static> fmt::Debug for WorkerPool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("cfg", &self.cfg)
            .finish()
    }
}

#[derive(Debug)]
struct Config {
    registry: Registry,
    threads: usize,
    batch_size: usize,
    poll_interval: Duration,
    lease: Duration,
    task_timeout: Duration,
    shutdown_timeout: Duration,
    owner: String,
}

impl<C> WorkerPool<C>
where
    C: R2D2Connection + StoreConnection + Send + 'static,
{
    /// A builder over an r2d2 pool of the backend's connections and a registry of task types.
    ///
    /// The pool takes up to 2 connections at once (one to claim, one to complete); tasks that
    /// use the database take their own. Turning off r2d2's `test_on_check_out` saves a round
    /// trip per checkout.
    pub fn builder(pool: Pool<ConnectionManager<C>>, registry: Registry) -> WorkerPoolBuilder<C> {
        WorkerPoolBuilder {
            pool,
            registry,
            threads: 4,
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            task_timeout: Duration::from_secs(15 * 60),
            shutdown_timeout: Duration::from_secs(30),
            owner: None,
        }
    }

    /// Checks the schema and starts the threads.
    ///
    /// # Errors
    /// [`ErrorKind::NotMigrated`](crate::ErrorKind::NotMigrated) when tend's table is missing,
    /// [`ErrorKind::Pool`](crate::ErrorKind::Pool) when no connection can be had.
    pub fn start(self) -> Result<PoolHandle, Error> {
        {
            let mut conn = self.pool.get()?;
            crate::store::check_schema(&mut conn)?;
        }
        let cfg = self.cfg;
        let (jobs_tx, jobs_rx) = unbounded::<TaskRow>();
        let (done_tx, done_rx) = unbounded::<Done>();
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (wake_tx, wake_rx) = bounded::<()>(1);
        let (freed_tx, freed_rx) = bounded::<()>(1);
        let (completer_stop_tx, completer_stop_rx) = bounded::<()>(0);
        let shared = Arc::new(Shared {
            inflight: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
        });

        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name)
                .spawn(f)
                .expect("spawning a tend thread")
        };
        let fetcher_thread = {
            let (pool, cfg, shared, stop_rx) = (
                self.pool.clone(),
                cfg.clone(),
                shared.clone(),
                stop_rx.clone(),
            );
            let jobs_tx = jobs_tx.clone();
            spawn(
                "tend-fetcher".into(),
                Box::new(move || fetcher(pool, cfg, shared, jobs_tx, stop_rx, wake_rx, freed_rx)),
            )
        };
        let mut workers = Vec::new();
        for i in 0..cfg.threads {
            let (cfg, shared, stop_rx, jobs_rx, done_tx) = (
                cfg.clone(),
                shared.clone(),
                stop_rx.clone(),
                jobs_rx.clone(),
                done_tx.clone(),
            );
            let (finished_tx, finished_rx) = bounded::<()>(1);
            let h = spawn(
                format!("tend-worker-{i}"),
                Box::new(move || {
                    worker(cfg, shared, jobs_rx, done_tx, stop_rx);
                    let _ = finished_tx.send(());
                }),
            );
            workers.push((h, finished_rx));
        }
        let completer_thread = {
            let (pool, cfg, shared) = (self.pool.clone(), cfg.clone(), shared.clone());
            spawn(
                "tend-completer".into(),
                Box::new(move || {
                    completer(pool, cfg, shared, done_rx, completer_stop_rx, freed_tx)
                }),
            )
        };
        log::info!(
            "tend: pool started ({} threads, batch {}, poll every {:?}, lease {:?}, owner {})",
            cfg.threads,
            cfg.batch_size,
            cfg.poll_interval,
            cfg.lease,
            cfg.owner
        );
        Ok(PoolHandle {
            running: Some(Running {
                cfg,
                shared,
                stop_tx,
                wake_tx,
                completer_stop_tx,
                done_tx,
                jobs_rx,
                jobs_tx,
                fetcher: fetcher_thread,
                completer: completer_thread,
                workers,
            }),
        })
    }
}

/// A running pool. [`shutdown`](Self::shutdown) stops it gracefully; dropping the handle does
/// the same.
pub struct PoolHandle {
    running: Option<Running>,
}

impl fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolHandle")
            .field("running", &self.running.is_some())
            .finish()
    }
}

struct Running {
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    stop_tx: Sender<()>,
    wake_tx: Sender<()>,
    completer_stop_tx: Sender<()>,
    done_tx: Sender<Done>,
    jobs_rx: Receiver<TaskRow>,
    jobs_tx: Sender<TaskRow>,
    fetcher: JoinHandle<()>,
    completer: JoinHandle<()>,
    workers: Vec<(JoinHandle<()>, Receiver<()>)>,
}

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Claimed tasks that had not started and were handed back (due now, attempt not counted).
    pub released: usize,
    /// Worker threads still running a task when the deadline passed (left detached; their
    /// tasks' leases lapse and the outcome of the late attempt is refused).
    pub abandoned: usize,
}

impl ShutdownReport {
    /// Whether every worker finished within the deadline.
    pub fn all_joined(&self) -> bool {
        self.abandoned == 0
    }
}

impl PoolHandle {
    /// Makes the pool look for due tasks now instead of at its next poll: call it after
    /// committing a transaction that enqueued right-now tasks.
    pub fn wake(&self) {
        if let Some(r) = &self.running {
            let _ = r.wake_tx.try_send(());
        }
    }

    /// Stops claiming, lets running tasks finish within the shutdown timeout, hands back the
    /// leases of claimed tasks that did not start, writes every outcome, and joins the threads.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop()
    }

    fn stop(&mut self) -> ShutdownReport {
        let Some(r) = self.running.take() else {
            return ShutdownReport {
                released: 0,
                abandoned: 0,
            };
        };
        r.shared.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + r.cfg.shutdown_timeout;
        drop(r.stop_tx); // wakes the fetcher and idle workers
        let _ = r.fetcher.join(); // no claim after this point
        let mut abandoned = 0;
        for (h, finished) in r.workers {
            let left = deadline.saturating_duration_since(Instant::now());
            if finished.recv_timeout(left).is_ok() {
                let _ = h.join();
            } else {
                abandoned += 1;
            }
        }
        // Tasks claimed but never started go back, attempt not counted.
        drop(r.jobs_tx);
        let mut released = 0;
        for row in r.jobs_rx.try_iter() {
            released += 1;
            let _ = r.done_tx.send(Done::release(row));
        }
        drop(r.done_tx);
        drop(r.completer_stop_tx); // the completer writes what it has, then exits
        let _ = r.completer.join();
        if abandoned > 0 {
            log::warn!(
                "tend: {abandoned} worker(s) were still running a task after the shutdown \
                 timeout; their leases will lapse and the tasks run again"
            );
        }
        log::info!("tend: pool stopped ({released} unstarted task(s) released)");
        ShutdownReport {
            released,
            abandoned,
        }
    }
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Shared {
    /// Claimed tasks whose outcome is not yet written: id → lease.
    inflight: Mutex<HashMap<i64, Lease>>,
    stopping: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    token: i64,
    started: Option<Instant>,
    timed_out: bool,
}

/// The outcome of one claimed task, to be written by the completer.
#[derive(Debug)]
enum Done {
    /// Delete the row.
    Complete { id: i64, token: i64 },
    /// Fenced update of the row.
    Finish(Finish),
}

impl Done {
    fn release(row: TaskRow) -> Done {
        let now = now_ms();
        let status = if row.execute_times <= 1 {
            TaskStatus::Pending
        } else {
            TaskStatus::Failed
        };
        Done::Finish(Finish {
            id: row.id,
            token: row.lease_token.unwrap_or_default(),
            status: status.as_i32(),
            execute_time: now,
            error_msg: row.error_msg,
            fallback_error_msg: row.fallback_error_msg,
            attempts_delta: -1,
            now,
        })
    }

    fn id(&self) -> i64 {
        match self {
            Done::Complete { id, .. } => *id,
            Done::Finish(f) => f.id,
        }
    }
}

/// Keeps a pooled connection across iterations and drops it after an error, so that a broken
/// connection is replaced.
struct Conn<C: R2D2Connection + 'static> {
    pool: Pool<ConnectionManager<C>>,
    conn: Option<PooledConnection<ConnectionManager<C>>>,
}

impl<C: R2D2Connection + StoreConnection + 'static> Conn<C> {
    fn with<T>(
        &mut self,
        f: impl FnMut(&mut PooledConnection<ConnectionManager<C>>) -> diesel::QueryResult<T>,
    ) -> Result<T, String> {
        if self.conn.is_none() {
            self.conn = Some(self.pool.get().map_err(|e| e.to_string())?);
        }
        let conn = self.conn.as_mut().expect("just set");
        let mut f = f;
        let r = retry_transient(|| f(conn));
        r.map_err(|e| {
            self.conn = None;
            e.to_string()
        })
    }
}

/// Capped exponential backoff for database errors: 50 ms doubling to 1 s, so that the pool
/// resumes within about a second of the database coming back and never spins.
struct Backoff(Duration);

impl Backoff {
    fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }
    fn next(&mut self) -> Duration {
        self.0 = (self.0 * 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
        self.0
    }
}

fn fetcher<C: R2D2Connection + StoreConnection + 'static>(
    pool: Pool<ConnectionManager<C>>,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    jobs: Sender<TaskRow>,
    stop: Receiver<()>,
    wake: Receiver<()>,
    freed: Receiver<()>,
) {
    let mut conn = Conn { pool, conn: None };
    let capacity = cfg.threads + cfg.batch_size;
    // Claim only once a useful batch fits, so that fast tasks do not cost a claim each.
    let low_water = (cfg.batch_size / 2).max(1);
    let mut backoff = Backoff(Duration::ZERO);
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let inflight = shared.inflight.lock().expect("inflight lock").len();
        let free = capacity.saturating_sub(inflight);
        if free < low_water.min(capacity) && inflight > 0 {
            select! {
                recv(stop) -> _ => return,
                recv(freed) -> _ => {},
                recv(after(cfg.poll_interval)) -> _ => {},
            }
            continue;
        }
        let limit = free.min(cfg.batch_size);
        let now = now_ms();
        let claim = Claim {
            now,
            lease_until: now + cfg.lease.as_millis() as i64,
            token: random_token(),
            owner: &cfg.owner,
            limit: limit as i64,
            ids: None,
        };
        match conn.with(|c| c.claim(&claim)) {
            Ok(rows) => {
                backoff.reset();
                let n = rows.len();
                if n > 0 {
                    let mut map = shared.inflight.lock().expect("inflight lock");
                    for r in &rows {
                        map.insert(
                            r.id,
                            Lease {
                                token: claim.token,
                                started: None,
                                timed_out: false,
                            },
                        );
                    }
                }
                for r in rows {
                    let _ = jobs.send(r);
                }
                if n == limit {
                    continue; // more may be due
                }
                select! {
                    recv(stop) -> _ => return,
                    recv(wake) -> _ => {},
                    recv(after(cfg.poll_interval)) -> _ => {},
                }
            }
            Err(e) => {
                let wait = backoff.next();
                log::warn!("tend: claiming tasks failed ({e}); retrying in {wait:?}");
                select! {
                    recv(stop) -> _ => return,
                    recv(after(wait)) -> _ => {},
                }
            }
        }
    }
}

fn worker(
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    jobs: Receiver<TaskRow>,
    done: Sender<Done>,
    stop: Receiver<()>,
) {
    loop {
        let row = select! {
            recv(stop) -> _ => return,
            recv(jobs) -> r => match r { Ok(r) => r, Err(_) => return },
        };
        if shared.stopping.load(Ordering::SeqCst) {
            let _ = done.send(Done::release(row));
            return;
        }
        if let Some(l) = shared
            .inflight
            .lock()
            .expect("inflight lock")
            .get_mut(&row.id)
        {
            l.started = Some(Instant::now());
        }
        let outcome = run_one(&cfg, row);
        let _ = done.send(outcome);
    }
}

/// Runs one claimed task and decides what to write.
fn run_one(cfg: &Config, row: TaskRow) -> Done {
    let now_after = |_: ()| now_ms();
    let token = row.lease_token.unwrap_or_default();
    let park = |row: &TaskRow, status: TaskStatus, msg: String| {
        log::warn!(
            "tend: task {} ({}) is {status}: {msg}",
            row.id,
            row.method_sign_name
        );
        Done::Finish(Finish {
            id: row.id,
            token,
            status: status.as_i32(),
            execute_time: PARKED,
            error_msg: truncate(&msg, MAX_MESSAGE_BYTES),
            fallback_error_msg: row.fallback_error_msg.clone(),
            attempts_delta: 0,
            now: now_ms(),
        })
    };
    if row.execute_times > row.max_attempts {
        let msg = format!(
            "its last allowed attempt ({} of {}) never reported back: the worker crashed, was \
             killed, or ran past the task timeout; not run again. {}",
            row.execute_times - 1,
            row.max_attempts,
            row.error_msg
        );
        return park(&row, TaskStatus::Dead, msg);
    }
    let Some(handler) = cfg.registry.get(&row.method_sign_name) else {
        let msg = format!(
            "no task type is registered for signature `{}` in this process (renamed, removed, or \
             a newer deployment's task?); register it, then retry the task",
            row.method_sign_name
        );
        return park(&row, TaskStatus::Held, msg);
    };
    let ctx = TaskContext {
        id: row.id,
        task_id: row.task_id.clone(),
        signature: row.method_sign_name.clone(),
        attempt: row.execute_times.max(1) as u32,
        max_attempts: row.max_attempts.max(1) as u32,
        shard_key: row.shard_key,
    };
    let opts = handler.options();
    let fallback_due = |e: &TaskError| {
        opts.fallback.is_some() && (ctx.attempt > opts.fallback_threshold || e.is_give_up())
    };
    let started = Instant::now();
    let attempt = handler.run(&row.task_parameter, &ctx, &fallback_due);
    match attempt {
        Attempt::Succeeded => {
            log::debug!(
                "tend: task {} ({}) succeeded in {:?}",
                row.id,
                row.method_sign_name,
                started.elapsed()
            );
            Done::Complete { id: row.id, token }
        }
        Attempt::FallbackSucceeded(e) => {
            log::info!(
                "tend: task {} ({}) failed ({e}); its fallback succeeded",
                row.id,
                row.method_sign_name
            );
            Done::Complete { id: row.id, token }
        }
        Attempt::Undecodable(e) => {
            let msg = format!(
                "payload does not decode as `{}` (stored version {}, this build's version {}): {e}",
                handler.type_name(),
                row.payload_version,
                handler.version()
            );
            park(&row, TaskStatus::Held, msg)
        }
        Attempt::Failed { error, fallback } => {
            let fallback_error_msg = match &fallback {
                Some(f) => Some(truncate(f.message(), MAX_MESSAGE_BYTES)),
                None => row.fallback_error_msg.clone(),
            };
            let msg = truncate(error.message(), MAX_MESSAGE_BYTES);
            if error.is_give_up() || ctx.attempt >= ctx.max_attempts {
                let why = if error.is_give_up() {
                    "the handler gave up"
                } else {
                    "out of attempts"
                };
                let mut d = park(&row, TaskStatus::Dead, format!("{why}: {msg}"));
                if let Done::Finish(f) = &mut d {
                    f.fallback_error_msg = fallback_error_msg;
                }
                return d;
            }
            let wait = match error.action() {
                Action::RetryAfter(d) => d,
                _ => retry_wait(
                    opts.retry,
                    ctx.attempt,
                    Duration::from_secs(row.execute_interval_sec.max(1) as u64),
                ),
            };
            let now = now_after(());
            log::warn!(
                "tend: task {} ({}) failed on attempt {}/{}: {msg}; next attempt in {wait:?}",
                row.id,
                row.method_sign_name,
                ctx.attempt,
                ctx.max_attempts
            );
            Done::Finish(Finish {
                id: row.id,
                token,
                status: TaskStatus::Failed.as_i32(),
                execute_time: now.saturating_add(wait.as_millis().min(i64::MAX as u128) as i64),
                error_msg: msg,
                fallback_error_msg,
                attempts_delta: 0,
                now,
            })
        }
    }
}

fn retry_wait(policy: RetryPolicy, attempt: u32, interval: Duration) -> Duration {
    policy.delay(attempt, interval, random_token() as u64)
}

fn completer<C: R2D2Connection + StoreConnection + 'static>(
    pool: Pool<ConnectionManager<C>>,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    done: Receiver<Done>,
    stop: Receiver<()>,
    freed: Sender<()>,
) {
    let mut conn = Conn { pool, conn: None };
    let heartbeat = tick(cfg.lease / 3);
    let mut batch: Vec<Done> = Vec::new();
    let mut stopping = false;
    loop {
        if !stopping {
            select! {
                recv(done) -> d => match d {
                    Ok(d) => batch.push(d),
                    Err(_) => stopping = true,
                },
                recv(heartbeat) -> _ => renew_leases(&mut conn, &cfg, &shared),
                recv(stop) -> _ => stopping = true,
            }
        }
        batch.extend(done.try_iter().take(1024));
        if !batch.is_empty() {
            write_outcomes(&mut conn, &cfg, &shared, &mut batch, stopping);
            let _ = freed.try_send(());
        }
        if stopping && done.is_empty() {
            return;
        }
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
    let mut completes: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut finishes = Vec::new();
    for d in batch.iter() {
        match d {
            Done::Complete { id, token } => completes.entry(*token).or_default().push(*id),
            Done::Finish(f) => finishes.push(f.clone()),
        }
    }
    let give_up_at = Instant::now()
        + if stopping {
            cfg.lease.min(Duration::from_secs(5))
        } else {
            cfg.lease
        };
    let mut backoff = Backoff(Duration::ZERO);
    let mut pending_completes: Vec<(i64, Vec<i64>)> = completes.into_iter().collect();
    loop {
        let mut failed = None;
        pending_completes.retain(|(token, ids)| {
            if failed.is_some() {
                return true;
            }
            match conn.with(|c| c.complete(*token, ids)) {
                Ok(n) => {
                    if n < ids.len() {
                        log::warn!(
                            "tend: {} of {} completed task(s) had lost their lease (taken over \
                             after expiry); their completion was refused",
                            ids.len() - n,
                            ids.len()
                        );
                    }
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
                    if held.len() < finishes.len() {
                        log::warn!(
                            "tend: {} task outcome(s) were refused because their lease was \
                             taken over after expiry",
                            finishes.len() - held.len()
                        );
                    }
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
    let mut map = shared.inflight.lock().expect("inflight lock");
    for d in batch.drain(..) {
        map.remove(&d.id());
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
        let mut map = shared.inflight.lock().expect("inflight lock");
        for (id, lease) in map.iter_mut() {
            let over = lease
                .started
                .is_some_and(|s| s.elapsed() > cfg.task_timeout);
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
    let until = now + cfg.lease.as_millis() as i64;
    for (token, ids) in by_token {
        if let Err(e) = conn.with(|c| c.extend(token, &ids, until, now)) {
            log::warn!("tend: renewing {} lease(s) failed: {e}", ids.len());
        }
    }
}

/// A positive random 63-bit number, for lease tokens and jitter. std's `RandomState` is
/// randomly keyed per process and advances per instance, which is all a token needs.
pub(crate) fn random_token() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 1) as i64
}

fn default_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    truncate(
        &format!(
            "{host}/{}/{:x}",
            std::process::id(),
            random_token() & 0xffff
        ),
        255,
    )
}
