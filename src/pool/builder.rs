//! [`WorkerPoolBuilder`]: every setting, its default and its validation.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded};
use diesel::r2d2::R2D2Connection;

use super::*;

/// Checks a duration setting against [`MAX_SETTING_DURATION`].
fn at_most_max(name: &'static str, d: Duration) -> Result<(), Error> {
    if d > MAX_SETTING_DURATION {
        return Err(Error::invalid_setting(
            name,
            "must be at most 3650 days (10 years)",
        ));
    }
    Ok(())
}

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
    pub(super) shards: Shards<C>,
    pub(super) registry: Registry,
    pub(super) threads: usize,
    pub(super) batch_size: usize,
    pub(super) poll_interval: Duration,
    pub(super) lease: Duration,
    pub(super) task_timeout: Duration,
    pub(super) shutdown_timeout: Duration,
    pub(super) owner: Option<String>,
    pub(super) events: Arc<dyn Events>,
    pub(super) keep_completed: Option<Duration>,
    pub(super) affinity: bool,
    pub(super) wake: WakeUp,
    pub(super) periodics: Vec<Periodic>,
    pub(super) queues: Vec<(String, crate::queue::Queue)>,
    pub(super) skip_default_queue: bool,
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
            .field("periodics", &self.periodics)
            .finish()
    }
}

impl<C> WorkerPoolBuilder<C>
where
    C: R2D2Connection + StoreConnection + Send + 'static,
{
    /// Worker threads running tasks. Defaults to 4.
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("threads");
    /// use tend::{Registry, WorkerPool};
    /// let builder = || WorkerPool::builder(pool.clone(), Registry::new());
    /// assert!(builder().threads(16).build().is_ok());
    /// let err = builder().threads(2000).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid setting `threads`: must be at most 1024");
    /// # Ok(()) }
    /// ```
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Most tasks claimed by one query. A shard holds at most `threads + 2 × batch_size`
    /// claimed tasks whose handler has not returned (running or waiting for a thread), so a
    /// full batch is claimed while the previous one runs. Defaults to 100.
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("batch-size");
    /// use tend::{Registry, WorkerPool};
    /// let builder = || WorkerPool::builder(pool.clone(), Registry::new());
    /// assert!(builder().batch_size(500).build().is_ok());
    /// let err = builder().batch_size(0).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid setting `batch_size`: must be at least 1");
    /// # Ok(()) }
    /// ```
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// How often an idle pool looks for due tasks; bounds the lateness of scheduled tasks and
    /// retries. Greater than zero, at most [`MAX_SETTING_DURATION`] (10 years). Defaults to 1 s
    /// (the seed polled every 10 s).
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("poll-interval");
    /// use std::time::Duration;
    /// use tend::{Registry, WorkerPool};
    /// let builder = || WorkerPool::builder(pool.clone(), Registry::new());
    /// assert!(builder().poll_interval(Duration::from_millis(100)).build().is_ok());
    /// let err = builder().poll_interval(Duration::ZERO).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid setting `poll_interval`: must be greater than zero");
    /// // Durations that would overflow an `Instant` or epoch milliseconds are refused:
    /// let err = builder().poll_interval(Duration::MAX).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid setting `poll_interval`: must be at most 3650 days (10 years)");
    /// # Ok(()) }
    /// ```
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// How long a claim holds a task before another worker may take it. The pool renews the
    /// leases of its tasks every third of this while they run, so it bounds how long a crashed
    /// process's tasks wait, not how long a task may run. At least 1 s, at most
    /// [`MAX_SETTING_DURATION`] (10 years). Defaults to 30 s.
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("lease");
    /// use std::time::Duration;
    /// use tend::{Registry, WorkerPool};
    /// let builder = || WorkerPool::builder(pool.clone(), Registry::new());
    /// // A crashed process's tasks run elsewhere 10 s later at most:
    /// assert!(builder().lease(Duration::from_secs(10)).build().is_ok());
    /// let err = builder().lease(Duration::from_millis(500)).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid setting `lease`: must be at least 1 s");
    /// let err = builder().lease(Duration::MAX).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid setting `lease`: must be at most 3650 days (10 years)");
    /// # Ok(()) }
    /// ```
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }

    /// How long one attempt may run before the pool stops renewing its lease; the task is then
    /// claimed again elsewhere (as an attempt) and the late attempt's outcome is refused.
    /// At least the lease, at most [`MAX_SETTING_DURATION`] (10 years). Defaults to 15 minutes.
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("task-timeout");
    /// use std::time::Duration;
    /// use tend::{Registry, WorkerPool};
    /// let builder = || WorkerPool::builder(pool.clone(), Registry::new());
    /// assert!(builder().task_timeout(Duration::from_secs(3600)).build().is_ok());
    /// // Shorter than the lease (30 s by default):
    /// let err = builder().task_timeout(Duration::from_secs(10)).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid setting `task_timeout`: must be at least the lease");
    /// let err = builder().task_timeout(Duration::MAX).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid setting `task_timeout`: must be at most 3650 days (10 years)");
    /// # Ok(()) }
    /// ```
    pub fn task_timeout(mut self, d: Duration) -> Self {
        self.task_timeout = d;
        self
    }

    /// How long [`PoolHandle::shutdown`] waits for running tasks (and for threads stuck in a
    /// database call; see [`PoolHandle::shutdown`] for the whole bound). At most
    /// [`MAX_SETTING_DURATION`] (10 years). Defaults to 30 s.
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("shutdown-timeout");
    /// # use std::sync::atomic::{AtomicBool, Ordering};
    /// # static STARTED: AtomicBool = AtomicBool::new(false);
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Slow;
    /// # impl tend::Task for Slow {
    /// #     const SIGNATURE: &'static str = "demo.slow";
    /// #     fn execute(&self, _: &tend::TaskContext) -> Result<(), tend::TaskError> {
    /// #         STARTED.store(true, Ordering::SeqCst);
    /// #         std::thread::sleep(std::time::Duration::from_secs(2));
    /// #         Ok(())
    /// #     }
    /// # }
    /// use std::time::Duration;
    /// use tend::{Registry, WorkerPool};
    /// let mut registry = Registry::new();
    /// registry.register::<Slow>()?; // each run takes 2 s
    /// let handle = WorkerPool::builder(pool.clone(), registry)
    ///     .shutdown_timeout(Duration::from_millis(100))
    ///     .build()?
    ///     .start()?;
    /// tend::enqueue(&mut pool.get()?, &Slow)?;
    /// handle.wake();
    /// # assert!(eventually(|| STARTED.load(Ordering::SeqCst)));
    /// let report = handle.shutdown(); // gives up waiting for Slow after 100 ms
    /// assert_eq!(report.abandoned, 1);
    /// let err = WorkerPool::builder(pool.clone(), tend::Registry::new())
    ///     .shutdown_timeout(Duration::MAX)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "invalid setting `shutdown_timeout`: must be at most 3650 days (10 years)");
    /// # Ok(()) }
    /// ```
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// Receives an [`Event`](crate::Event) for everything that happens to tasks. Defaults to
    /// [`NoEvents`](crate::NoEvents).
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("events");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use tend::{Event, NewTask, ThreadWay, WorkerPool};
    /// let succeeded = Arc::new(AtomicUsize::new(0));
    /// let counter = succeeded.clone();
    /// let workers = WorkerPool::builder(pool, registry)
    ///     .events(move |e: &Event<'_>| {
    ///         if let Event::Succeeded { .. } = e {
    ///             counter.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     })
    ///     .build()?;
    /// let task = NewTask::new(&Ship { order_id: 7 })?.thread_way(ThreadWay::Sync);
    /// workers.outbox().enqueue_new(task)?; // runs it in this thread
    /// assert_eq!(succeeded.load(Ordering::Relaxed), 1);
    /// # Ok(()) }
    /// ```
    pub fn events(mut self, events: impl Events) -> Self {
        self.events = Arc::new(events);
        self
    }

    /// Keeps completed rows (status `Succeeded`, with completion time in `gmt_modified` and
    /// the attempt's duration in `duration_ms`) for `retention` as an audit trail, instead of
    /// deleting them; the pool purges older ones in the background in small batches. At least
    /// 1 s, at most [`MAX_SETTING_DURATION`] (10 years). Defaults to off: success deletes the
    /// row, as in the original framework.
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("keep-completed");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// use std::time::Duration;
    /// use tend::{TaskStatus, WorkerPool};
    /// let week = Duration::from_secs(7 * 24 * 3600);
    /// let too_long = WorkerPool::builder(pool.clone(), tend::Registry::new())
    ///     .keep_completed(Duration::MAX)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(too_long.to_string(), "invalid setting `keep_completed`: must be at most 3650 days (10 years)");
    /// let handle = WorkerPool::builder(pool.clone(), registry).keep_completed(week).build()?.start()?;
    /// let mut conn = pool.get()?;
    /// let id = tend::enqueue(&mut conn, &Ship { order_id: 7 })?.id().unwrap();
    /// handle.wake();
    /// // Once it has run, its row stays for a week as an audit trail:
    /// assert!(eventually(|| task_status(&mut conn, id) == Some(TaskStatus::Succeeded)));
    /// # Ok(()) }
    /// ```
    pub fn keep_completed(mut self, retention: Duration) -> Self {
        self.keep_completed = Some(retention);
        self
    }

    /// Shard affinity, to cut lock contention when many processes drain several databases:
    /// processes register in the `tend_node` table (on shard 0) with heartbeats, and the live
    /// ones split the shards among themselves by rendezvous hashing, so each database is polled
    /// by about processes ÷ shards of them. A process that stops heartbeating loses its shards
    /// within one lease. Correctness never depends on it: leases and `SKIP LOCKED` keep each
    /// task exclusive while membership changes. Defaults to off (every process polls every
    /// shard).
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("shard-affinity");
    /// use diesel::{dsl::sql, sql_types::BigInt, RunQueryDsl};
    /// use tend::{Registry, WorkerPool};
    /// let handle = WorkerPool::builder(pool.clone(), Registry::new())
    ///     .shard_affinity(true)
    ///     .build()?
    ///     .start()?;
    /// // While it runs, the process holds a slot in `tend_node` and heartbeats there.
    /// let live = sql::<BigInt>("(SELECT COUNT(*) FROM tend_node)");
    /// assert_eq!(diesel::select(live).get_result::<i64>(&mut pool.get()?)?, 1);
    /// handle.shutdown();
    /// # Ok(()) }
    /// ```
    pub fn shard_affinity(mut self, on: bool) -> Self {
        self.affinity = on;
        self
    }

    /// How this pool learns of right-now tasks other processes commit, before its next poll:
    /// [`WakeUp::Listen`] (PostgreSQL's LISTEN/NOTIFY; this pool's outboxes then notify after
    /// their commits), [`WakeUp::Probe`] (a due-probe between polls, every backend) or
    /// [`WakeUp::Auto`] (the first on PostgreSQL, a 20 ms probe elsewhere). Only an
    /// optimisation: tasks start at the next poll whatever happens to it. Defaults to
    /// [`WakeUp::Off`].
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("wake-up-setter");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// use std::time::Duration;
    /// use tend::{WakeUp, WorkerPool};
    /// let handle = WorkerPool::builder(pool.clone(), registry)
    ///     .poll_interval(Duration::from_secs(3600)) // no poll during this example
    ///     .wake_up(WakeUp::Probe(Duration::from_millis(20)))
    ///     .build()?
    ///     .start()?;
    /// // As another process would: a plain enqueue, no `handle.wake()`.
    /// tend::enqueue(&mut pool.get()?, &Ship { order_id: 7 })?;
    /// assert!(eventually(|| task_count(&mut pool.get().unwrap()) == 0)); // found by the probe
    /// # drop(handle);
    /// # Ok(()) }
    /// ```
    pub fn wake_up(mut self, wake: WakeUp) -> Self {
        self.wake = wake;
        self
    }

    /// Registers a periodic schedule: the pool starts a scheduler thread (`tend-scheduler`,
    /// only when at least one schedule is registered) that enqueues each due slot's task on
    /// shard 0, in one transaction with a compare-and-set on the schedule's row in
    /// `tend_schedule`. Every process may register the same schedules: each slot is enqueued
    /// once across all of them, with no leader. The task type must be registered with the
    /// registry of the processes that run it, like any task. The scheduler keeps one
    /// connection of shard 0's r2d2 pool (size that pool for it).
    ///
    /// [`build`](Self::build) refuses two schedules with one name, a schedule without a task,
    /// and a task the scheduler could not enqueue (sync or without-transaction options).
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("periodic-builder");
    /// use std::time::Duration;
    /// use tend::{Periodic, Registry, WorkerPool};
    /// let mut registry = Registry::new();
    /// registry.register::<Ship>()?;
    /// let sweep = Periodic::every("orders.sweep", Duration::from_secs(60))?
    ///     .task(|_slot| Ship { order_id: 0 });
    /// let handle = WorkerPool::builder(pool.clone(), registry)
    ///     .periodic(sweep.clone())
    ///     .build()?
    ///     .start()?;
    /// handle.shutdown();
    /// let twice = WorkerPool::builder(pool, Registry::new()).periodic(sweep.clone()).periodic(sweep);
    /// assert!(twice.build().unwrap_err().to_string().contains("orders.sweep"));
    /// # Ok(()) }
    /// ```
    pub fn periodic(mut self, schedule: Periodic) -> Self {
        self.periodics.push(schedule);
        self
    }

    /// Works queue `name` too, with `limits` (per pool: each process counts its own). A pool
    /// works `default` and the queues given here; giving `default` sets its limits. Each claim
    /// reads one queue; the queues take turns. Checked by `build`: the name (1 to 64 bytes of
    /// ASCII letters, digits and `._:-`), the limits, and no queue given twice.
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("queue");
    /// use std::time::Duration;
    /// use tend::{Queue, Registry, WorkerPool};
    /// let builder = || WorkerPool::builder(pool.clone(), Registry::new());
    /// let mail = Queue::new().concurrency(2).rate_limit(50, Duration::from_secs(1));
    /// assert!(builder().queue("mail", mail).build().is_ok());
    /// let err = builder().queue("mail", mail).queue("mail", mail).build().unwrap_err();
    /// assert!(err.to_string().contains("twice"));
    /// assert!(builder().queue("bad name", mail).build().is_err());
    /// # Ok(()) }
    /// ```
    pub fn queue(mut self, name: impl Into<String>, limits: crate::queue::Queue) -> Self {
        self.queues.push((name.into(), limits));
        self
    }

    /// Does not work the queue `default` (only the queues given to
    /// [`queue`](Self::queue)): for a process dedicated to some queues.
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("skip-default");
    /// use tend::{Queue, Registry, WorkerPool};
    /// let builder = || WorkerPool::builder(pool.clone(), Registry::new());
    /// assert!(builder().skip_default_queue().queue("reports", Queue::new()).build().is_ok());
    /// // A pool that works no queue at all is a mistake:
    /// assert!(builder().skip_default_queue().build().is_err());
    /// # Ok(()) }
    /// ```
    pub fn skip_default_queue(mut self) -> Self {
        self.skip_default_queue = true;
        self
    }

    /// The name written into `lease_owner`. Defaults to `host/pid/random`.
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("owner");
    /// use tend::{Registry, WorkerPool};
    /// let builder = || WorkerPool::builder(pool.clone(), Registry::new());
    /// assert!(builder().owner("billing-worker-1").build().is_ok());
    /// let err = builder().owner("").build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid setting `owner`: must be 1 to 255 bytes");
    /// # Ok(()) }
    /// ```
    pub fn owner(mut self, name: impl Into<String>) -> Self {
        self.owner = Some(name.into());
        self
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSetting`](crate::ErrorKind::InvalidSetting) naming the first bad
    /// setting: zero threads or batch size (or more than 1024 threads, 10 000 per batch), a zero
    /// poll interval, a lease under 1 s, a task timeout shorter than the lease, a retention
    /// under 1 s, any duration over [`MAX_SETTING_DURATION`] (10 years, so that no deadline
    /// computed from a setting can overflow an `Instant` or epoch milliseconds), an empty or
    /// over-long owner.
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("build");
    /// use tend::{ErrorKind, Registry, WorkerPool};
    /// let builder = || WorkerPool::builder(pool.clone(), Registry::new());
    /// assert!(builder().build().is_ok()); // the defaults
    /// // The error names the first bad setting:
    /// let err = builder().threads(0).batch_size(0).build().unwrap_err();
    /// assert!(matches!(err.kind(), ErrorKind::InvalidSetting { name: "threads", .. }));
    /// # Ok(()) }
    /// ```
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
        at_most_max("poll_interval", self.poll_interval)?;
        at_most_max("lease", self.lease)?;
        at_most_max("task_timeout", self.task_timeout)?;
        at_most_max("shutdown_timeout", self.shutdown_timeout)?;
        if let Some(d) = self.keep_completed {
            at_most_max("keep_completed", d)?;
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
        if self
            .keep_completed
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return Err(Error::invalid_setting(
                "keep_completed",
                "the retention must be at least 1 s",
            ));
        }
        let wake = self.wake.resolve::<C>()?;
        let owner = match self.owner {
            Some(o) if o.is_empty() || o.len() > 255 => {
                return Err(Error::invalid_setting("owner", "must be 1 to 255 bytes"))
            }
            Some(o) => o,
            None => default_owner(),
        };
        let now = crate::util::now_ms();
        for (i, p) in self.periodics.iter().enumerate() {
            if self.periodics[..i].iter().any(|q| q.name == p.name) {
                return Err(Error::invalid_setting(
                    "periodic",
                    format!("schedule `{}` is registered twice", p.name),
                ));
            }
            p.validate(now)?;
        }
        let mut queues = self.queues;
        if !self.skip_default_queue && !queues.iter().any(|(n, _)| n == crate::queue::DEFAULT_QUEUE)
        {
            queues.insert(
                0,
                (
                    crate::queue::DEFAULT_QUEUE.to_string(),
                    crate::queue::Queue::new(),
                ),
            );
        }
        if self.skip_default_queue {
            queues.retain(|(n, _)| n != crate::queue::DEFAULT_QUEUE);
        }
        if queues.is_empty() {
            return Err(Error::invalid_setting(
                "queue",
                "the pool works no queue: skip_default_queue needs at least one queue(…)",
            ));
        }
        for (i, (name, limits)) in queues.iter().enumerate() {
            limits.validate(name)?;
            if queues[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::invalid_setting(
                    "queue",
                    format!("queue {name:?} is given twice"),
                ));
            }
        }
        let queues = Arc::new(queues::Gate::new(queues));
        let (alerts, alerts_rx) = AlertSink::new();
        let n = self.shards.len();
        let (dispatch, dispatch_rx) = (0..n).map(|_| bounded(DISPATCH_QUEUE)).unzip();
        // Two claimers per shard where the backend writes concurrently: claims overlap with
        // each other (PostgreSQL flushes their commits together) and with completions. A shard
        // whose r2d2 pool is small keeps one (see `start`).
        let claimers = if self.threads >= 2 && C::CONCURRENT_CLAIMS {
            2
        } else {
            1
        };
        // Each shard gets an equal share of the capacity (at least one task): room for every
        // thread plus two batches, so that a full batch is claimed while the workers are busy
        // with the previous one.
        let share = (self.threads + 2 * self.batch_size).div_ceil(n).max(1);
        let shared = (0..n).map(|_| Arc::new(Shared::new(share))).collect();
        let (jobs, jobs_rx) = unbounded::<Job>();
        let notifier = wake
            .listen
            .then(|| wake::Notifier::start(self.shards.pools().to_vec()));
        Ok(WorkerPool {
            shards: self.shards,
            lanes: Lanes {
                dispatch,
                shared,
                jobs,
                lease: self.lease,
                owner: owner.clone(),
                running: Arc::new(AtomicBool::new(false)),
                notifier,
                queues: queues.clone(),
            },
            dispatch_rx,
            jobs_rx,
            periodics: self.periodics,
            // Started here, not in `start`, so that alerts of an outbox whose pool never
            // starts are delivered too; it ends when the last outbox and the pool are gone.
            alert_thread: spawn_alert_thread(self.registry.clone(), alerts_rx),
            cfg: Arc::new(Config {
                exec: Arc::new(Executor {
                    alerts,
                    events: EventSink(self.events),
                    keep_completed: self.keep_completed,
                    clock_offset_ms: Arc::new(AtomicI64::new(0)),
                    registry: self.registry,
                }),
                affinity: self.affinity,
                wake,
                threads: self.threads,
                batch_size: self.batch_size,
                claimers,
                poll_interval: self.poll_interval,
                lease: self.lease,
                task_timeout: self.task_timeout,
                shutdown_timeout: self.shutdown_timeout,
                owner,
                queues,
            }),
        })
    }
}
