//! The outbox: a transaction wrapper that knows when the commit happened, so that right-now
//! tasks reach the pool at once, sync tasks run in the caller's thread, and without-transaction
//! tasks are written on their own.
//!
//! The hand-off is only a fast path: the table is the truth. A task whose hand-off is lost (the
//! process dies after the commit, the queue is full, no pool is running) stays due and is run by
//! the next poll.

use std::fmt;
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use diesel::connection::{Connection, TransactionManager};
use diesel::r2d2::R2D2Connection;

use crate::enqueue::{Enqueued, NewTask};
use crate::error::{Error, ErrorKind};
use crate::events::{Event, TaskInfo};
use crate::exec::{info, run_one, Done, Executor};
use crate::pool::{Lanes, WorkerPool};
use crate::shard::Shards;
use crate::status::TaskStatus;
use crate::store::row::TaskRow;
use crate::store::StoreConnection;
use crate::task::{ExecuteWay, Task, ThreadWay, TransactionWay};
use crate::util::now_ms;
use crate::util::random_token;

/// A pool's outbox, from [`WorkerPool::outbox`](crate::WorkerPool::outbox).
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use tend::{Task, TaskContext, TaskError, ThreadWay, TaskOptions};
/// # #[derive(Serialize, Deserialize)] struct Ship { order_id: i64 }
/// # impl Task for Ship {
/// #     const SIGNATURE: &'static str = "orders.ship";
/// #     fn options() -> TaskOptions { TaskOptions::new().thread_way(ThreadWay::Sync) }
/// #     fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
/// # }
/// use diesel::r2d2::{ConnectionManager, Pool};
/// use diesel::SqliteConnection;
/// let path = std::env::temp_dir().join(format!("tend-outbox-doc-{}.db", std::process::id()));
/// let pool = Pool::builder()
///     .connection_customizer(Box::new(tend::SqliteSetup::new()))
///     .build(ConnectionManager::<SqliteConnection>::new(path.to_str().unwrap()))
///     .unwrap();
/// tend::migrate(&mut pool.get().unwrap()).unwrap();
/// let mut registry = tend::Registry::new();
/// registry.register::<Ship>().unwrap();
/// let workers = tend::WorkerPool::builder(pool.clone(), registry).build().unwrap();
/// let outbox = workers.outbox();
/// let handle = workers.start().unwrap();
///
/// let mut conn = pool.get().unwrap();
/// let committed = outbox
///     .transaction(&mut conn, |conn, tx| {
///         // your business rows on `conn`, then:
///         tx.enqueue(conn, &Ship { order_id: 7 })?;
///         Ok::<_, tend::Error>("order 7 placed")
///     })
///     .unwrap();
/// assert_eq!(*committed.value(), "order 7 placed");
/// // Ship is a sync task: it already ran, in this thread, right after the commit.
/// assert!(committed.sync_outcomes()[0].is_success());
/// # drop(conn); handle.shutdown(); drop(outbox); drop(pool); let _ = std::fs::remove_file(&path);
/// ```
pub struct Outbox<C: R2D2Connection + 'static> {
    shards: Shards<C>,
    /// How a sync task runs in the caller's thread.
    exec: Arc<Executor>,
    /// The hand-off to the pool: its queues, its lease and owner.
    lanes: Lanes,
}

impl<C: R2D2Connection + 'static> Clone for Outbox<C> {
    fn clone(&self) -> Self {
        Outbox {
            shards: self.shards.clone(),
            exec: self.exec.clone(),
            lanes: self.lanes.clone(),
        }
    }
}

impl<C: R2D2Connection + 'static> fmt::Debug for Outbox<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field(
                "queued_hand_offs",
                &self.lanes.dispatch.iter().map(Sender::len).sum::<usize>(),
            )
            .finish()
    }
}

/// The value a committed [`Outbox::transaction`] returned, and what its sync tasks did.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("committed");
/// # let mut registry = tend::Registry::new();
/// # registry.register::<Ship>()?;
/// # let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
/// # let mut conn = pool.get()?;
/// use tend::{NewTask, ThreadWay};
/// let committed = outbox.transaction(&mut conn, |conn, tx| {
///     tx.enqueue(conn, &Ship { order_id: 7 })?; // handed to the pool after the commit
///     let now = NewTask::new(&Ship { order_id: 8 })?.thread_way(ThreadWay::Sync);
///     tx.enqueue_new(conn, now)?; // run in this thread after the commit
///     Ok::<_, tend::Error>("two orders shipped")
/// })?;
/// assert_eq!(*committed.value(), "two orders shipped");
/// assert_eq!(committed.sync_outcomes().len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Committed<T> {
    value: T,
    sync: Vec<SyncOutcome>,
}

impl<T> Committed<T> {
    /// The closure's value.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("committed-value");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// # let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
    /// # let mut conn = pool.get()?;
    /// let committed = outbox.transaction(&mut conn, |conn, tx| {
    ///     let enqueued = tx.enqueue(conn, &Ship { order_id: 7 })?;
    ///     Ok::<_, tend::Error>(enqueued.id())
    /// })?;
    /// assert!(committed.value().is_some()); // the task's row id
    /// # Ok(()) }
    /// ```
    pub fn value(&self) -> &T {
        &self.value
    }
    /// The closure's value, by move.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("committed-into-value");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// # let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
    /// # let mut conn = pool.get()?;
    /// let order: String = outbox
    ///     .transaction(&mut conn, |conn, tx| {
    ///         tx.enqueue(conn, &Ship { order_id: 7 })?;
    ///         Ok::<_, tend::Error>(String::from("order 7"))
    ///     })?
    ///     .into_value();
    /// assert_eq!(order, "order 7");
    /// # Ok(()) }
    /// ```
    pub fn into_value(self) -> T {
        self.value
    }
    /// The outcome of each sync task, in enqueue order.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("committed-sync-outcomes");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// # registry.register::<AlwaysFails>()?;
    /// # let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
    /// # let mut conn = pool.get()?;
    /// use tend::{NewTask, ThreadWay};
    /// let committed = outbox.transaction(&mut conn, |conn, tx| {
    ///     let ship = NewTask::new(&Ship { order_id: 7 })?;
    ///     tx.enqueue_new(conn, ship.thread_way(ThreadWay::Sync))?;
    ///     let fails = NewTask::new(&AlwaysFails)?; // every attempt fails with "boom"
    ///     tx.enqueue_new(conn, fails.thread_way(ThreadWay::Sync))?;
    ///     Ok::<_, tend::Error>(())
    /// })?;
    /// let succeeded: Vec<bool> = committed.sync_outcomes().iter().map(|o| o.is_success()).collect();
    /// assert_eq!(succeeded, [true, false]);
    /// # Ok(()) }
    /// ```
    pub fn sync_outcomes(&self) -> &[SyncOutcome] {
        &self.sync
    }
}

/// What a sync task's run in the caller's thread came to.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("sync-outcome");
/// # let mut registry = tend::Registry::new();
/// # registry.register::<Ship>()?;
/// # registry.register::<AlwaysFails>()?;
/// # let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
/// # let mut conn = pool.get()?;
/// use tend::{NewTask, SyncOutcome, TaskStatus, ThreadWay};
/// let task = NewTask::new(&AlwaysFails)?.thread_way(ThreadWay::Sync); // fails with "boom"
/// match &outbox.enqueue_new_detached(task)?.sync_outcomes()[0] {
///     // Recorded: the pool retries it on its schedule.
///     SyncOutcome::Failed { status, error, .. } => {
///         assert_eq!((*status, error.as_str()), (TaskStatus::Failed, "boom"));
///     }
///     other => panic!("unexpected outcome: {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncOutcome {
    /// It ran and is complete (its row is deleted).
    Succeeded {
        /// The row id.
        id: i64,
    },
    /// The attempt failed and was recorded: `Failed` means the pool retries it on its
    /// schedule; `Dead` or `Held` mean it is kept for an operator.
    Failed {
        /// The row id.
        id: i64,
        /// The status the row is left in.
        status: TaskStatus,
        /// The message stored in `error_msg`.
        error: String,
    },
    /// The outcome could not be written, or the task did not run here because its lease
    /// lapsed before the transaction committed (see `error`); either way the pool runs it
    /// (again) after its lease.
    NotRecorded {
        /// The row id.
        id: i64,
        /// Why.
        error: String,
    },
}

impl SyncOutcome {
    /// Whether the task ran and is complete.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("sync-outcome-is-success");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// # let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
    /// # let mut conn = pool.get()?;
    /// use tend::{NewTask, ThreadWay};
    /// let task = NewTask::new(&Ship { order_id: 7 })?.thread_way(ThreadWay::Sync);
    /// assert!(outbox.enqueue_new_detached(task)?.sync_outcomes()[0].is_success());
    /// assert_eq!(task_count(&mut conn), 0); // complete, so its row is deleted
    /// # Ok(()) }
    /// ```
    pub fn is_success(&self) -> bool {
        matches!(self, SyncOutcome::Succeeded { .. })
    }
    /// The row id.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("sync-outcome-id");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// # let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
    /// # let mut conn = pool.get()?;
    /// use tend::{NewTask, ThreadWay};
    /// let task = NewTask::new(&Ship { order_id: 7 })?.thread_way(ThreadWay::Sync);
    /// let committed = outbox.enqueue_new_detached(task)?;
    /// assert_eq!(Some(committed.sync_outcomes()[0].id()), committed.value().id());
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> i64 {
        match self {
            SyncOutcome::Succeeded { id }
            | SyncOutcome::Failed { id, .. }
            | SyncOutcome::NotRecorded { id, .. } => *id,
        }
    }
}

/// Collects what a transaction enqueued, for after its commit.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("outbox-tx");
/// # let mut registry = tend::Registry::new();
/// # registry.register::<Ship>()?;
/// # let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
/// # let mut conn = pool.get()?;
/// use tend::{OutboxTx, StoreConnection};
/// // Code that enqueues can take the transaction's collector as an argument.
/// fn place_order<S: StoreConnection>(
///     conn: &mut S,
///     tx: &mut OutboxTx<'_, diesel::SqliteConnection>,
///     order_id: i64,
/// ) -> Result<(), tend::Error> {
///     // write the order's rows on `conn`, then:
///     tx.enqueue(conn, &Ship { order_id })?;
///     Ok(())
/// }
/// outbox.transaction(&mut conn, |conn, tx| place_order(conn, tx, 7))?;
/// assert_eq!(task_count(&mut conn), 1);
/// # Ok(()) }
/// ```
pub struct OutboxTx<'a, C: R2D2Connection + 'static> {
    outbox: &'a Outbox<C>,
    /// Right-now async tasks to hand over after the commit: id, shard key.
    hand_off: Vec<(i64, i64, Option<usize>)>,
    /// Right-now async tasks leased to the pool at insert: shard, row.
    pool_leased: Vec<(usize, usize, TaskRow)>,
    /// Every row inserted in the transaction: id, signature, shard key (for events).
    inserted: Vec<(i64, &'static str, i64)>,
    sync: Vec<TaskRow>,
    done: Vec<SyncOutcome>,
}

impl<C: R2D2Connection + 'static> fmt::Debug for OutboxTx<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxTx")
            .field("hand_off", &self.hand_off)
            .field("sync", &self.sync.len())
            .finish()
    }
}

impl<C> Outbox<C>
where
    C: R2D2Connection + StoreConnection + Send + 'static,
{
    pub(crate) fn new(shards: Shards<C>, exec: Arc<Executor>, lanes: Lanes) -> Outbox<C> {
        Outbox {
            shards,
            exec,
            lanes,
        }
    }

    /// Runs `f` in a transaction on `conn`; `f` writes business rows on the connection and
    /// enqueues tasks through the [`OutboxTx`]. Only after the commit succeeds are right-now
    /// tasks handed to the pool and sync tasks run in this thread; on rollback (an `Err` from
    /// `f`, or a panic) nothing is handed over or run.
    ///
    /// Sync tasks must finish within the pool's lease (they are leased from the moment they
    /// are written); past it the pool may start them again. A transaction that commits with
    /// less than half of that lease left has its tasks' leases renewed before they run (or,
    /// if the pool has claimed one meanwhile, leaves it to the pool:
    /// [`SyncOutcome::NotRecorded`]).
    ///
    /// # Errors
    /// `f`'s error, the commit's error, or an [`ErrorKind::InvalidSetting`](crate::ErrorKind)
    /// when `conn` is already inside a transaction (the outbox must see the real commit).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("outbox-transaction");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// # let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
    /// # let mut conn = pool.get()?;
    /// use diesel::result::Error::RollbackTransaction;
    /// let rolled_back = outbox.transaction(&mut conn, |conn, tx| {
    ///     tx.enqueue(conn, &Ship { order_id: 7 })?;
    ///     Err::<(), tend::Error>(RollbackTransaction.into()) // say, the order was refused
    /// });
    /// assert!(rolled_back.is_err());
    /// assert_eq!(task_count(&mut conn), 0); // the task went with the rollback
    /// # Ok(()) }
    /// ```
    pub fn transaction<Conn, T, E, F>(&self, conn: &mut Conn, f: F) -> Result<Committed<T>, E>
    where
        Conn: Connection + StoreConnection,
        F: FnOnce(&mut Conn, &mut OutboxTx<'_, C>) -> Result<T, E>,
        E: From<diesel::result::Error> + From<Error>,
    {
        let depth =
            Conn::TransactionManager::transaction_manager_status_mut(conn).transaction_depth()?;
        if depth.is_some() {
            return Err(Error::new(ErrorKind::Misuse(
                "Outbox::transaction was called inside another transaction; it must be the \
                 outermost one, or its tasks would be handed over before the real commit"
                    .to_string(),
            ))
            .into());
        }
        let mut tx = OutboxTx {
            outbox: self,
            inserted: Vec::new(),
            hand_off: Vec::new(),
            pool_leased: Vec::new(),
            sync: Vec::new(),
            done: Vec::new(),
        };
        let value = conn.transaction(|c| f(c, &mut tx))?;
        // Committed: from here on nothing may fail the caller.
        tx.report_enqueued();
        for (shard, queue, mut row) in tx.pool_leased.drain(..) {
            if self.lease_held(conn, &mut row).is_ok() {
                self.give_to_pool(shard, queue, row);
            }
        }
        for (id, key, queue) in tx.hand_off.drain(..) {
            self.hand_off(id, key, queue);
        }
        let mut sync = std::mem::take(&mut tx.done);
        for mut row in tx.sync.drain(..) {
            sync.push(match self.lease_held(conn, &mut row) {
                Ok(()) => self.run_sync(conn, row),
                Err(error) => SyncOutcome::NotRecorded { id: row.id, error },
            });
        }
        Ok(Committed { value, sync })
    }

    /// Enqueues a task in its own transaction on a pool connection (whatever its transaction
    /// way), then hands it over or runs it like [`transaction`](Self::transaction) would. For
    /// tasks that are not tied to business rows.
    ///
    /// # Errors
    /// As [`enqueue`](crate::enqueue), plus [`ErrorKind::Pool`](crate::ErrorKind::Pool).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("outbox-enqueue");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// # let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
    /// # let mut conn = pool.get()?;
    /// // No business rows go with it: the outbox writes it in a transaction of its own.
    /// let committed = outbox.enqueue_detached(&Ship { order_id: 7 })?;
    /// assert!(committed.value().id().is_some());
    /// assert_eq!(task_count(&mut conn), 1);
    /// # Ok(()) }
    /// ```
    pub fn enqueue_detached<T: Task>(&self, task: &T) -> Result<Committed<Enqueued>, Error> {
        self.enqueue_new_detached(NewTask::new(task)?)
    }

    /// The old name of [`enqueue_detached`](Self::enqueue_detached), which says what
    /// `tend::enqueue` does not: the task is written in its own transaction.
    #[deprecated(
        since = "0.2.0",
        note = "renamed `enqueue_detached`: it writes in its own transaction, not the caller's"
    )]
    pub fn enqueue<T: Task>(&self, task: &T) -> Result<Committed<Enqueued>, Error> {
        self.enqueue_detached(task)
    }

    /// The old name of [`enqueue_new_detached`](Self::enqueue_new_detached).
    #[deprecated(
        since = "0.2.0",
        note = "renamed `enqueue_new_detached`: it writes in its own transaction, not the caller's"
    )]
    pub fn enqueue_new(&self, task: NewTask) -> Result<Committed<Enqueued>, Error> {
        self.enqueue_new_detached(task)
    }

    /// [`enqueue_detached`](Self::enqueue_detached) for a [`NewTask`].
    ///
    /// # Errors
    /// As [`enqueue_detached`](Self::enqueue_detached).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("outbox-enqueue-new");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// # let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
    /// # let mut conn = pool.get()?;
    /// use tend::NewTask;
    /// let task = NewTask::new(&Ship { order_id: 7 })?.idempotency_key("ship-7");
    /// assert!(!outbox.enqueue_new_detached(task.clone())?.value().is_duplicate());
    /// assert!(outbox.enqueue_new_detached(task)?.value().is_duplicate());
    /// assert_eq!(task_count(&mut conn), 1);
    /// # Ok(()) }
    /// ```
    pub fn enqueue_new_detached(&self, task: NewTask) -> Result<Committed<Enqueued>, Error> {
        let mut tx = OutboxTx {
            outbox: self,
            inserted: Vec::new(),
            hand_off: Vec::new(),
            pool_leased: Vec::new(),
            sync: Vec::new(),
            done: Vec::new(),
        };
        let enqueued = tx.detached(task)?;
        tx.report_enqueued();
        Ok(Committed {
            value: enqueued,
            sync: tx.done,
        })
    }

    /// After committing right-now tasks with plain [`enqueue`](crate::enqueue) (or
    /// [`enqueue_new`](crate::enqueue_new), [`enqueue_many`](crate::enqueue_many)) in a
    /// transaction of your own, which tend cannot see commit: tells the pools of other
    /// processes that listen ([`WakeUp::Listen`](crate::WakeUp::Listen), PostgreSQL) to look
    /// now, on every shard. It only queues a notification for the pool's `tend-notifier`
    /// thread (notifications coalesce), so it never blocks and never fails. A no-op unless
    /// this outbox's pool was built with LISTEN/NOTIFY wake-up. [`Outbox::transaction`] and
    /// the detached enqueues notify by themselves.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("notify-committed");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// use diesel::Connection;
    /// // With PostgreSQL: `.wake_up(tend::WakeUp::Listen)`.
    /// let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
    /// let mut conn = pool.get()?;
    /// conn.transaction(|conn| tend::enqueue(conn, &Ship { order_id: 7 }))?;
    /// outbox.notify_committed(); // after the commit, never inside the transaction
    /// # Ok(()) }
    /// ```
    pub fn notify_committed(&self) {
        self.lanes.notify_all();
    }

    /// Hands a committed right-now task to the pool, on the queue of the shard its key routes
    /// to, and asks the listening processes to look (with LISTEN/NOTIFY wake-up); never blocks
    /// and never fails.
    fn hand_off(&self, id: i64, shard_key: i64, queue: Option<usize>) {
        let shard = self.shards.index_for(shard_key);
        // Committed already: other processes may take it before this one's pool does.
        self.lanes.notify(shard);
        // A queue this pool does not work: the processes that work it find the row.
        let Some(queue) = queue else { return };
        match self.lanes.dispatch[shard].try_send((id, queue)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                log::debug!("tend: hand-off queue full; task {id} waits for the next poll")
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Whether `row`, leased at insert, still holds its lease now that its transaction has
    /// committed, renewed from now when it has run at least half down: a transaction that
    /// lasted about as long as the lease (or whose commit waited: a Galera node eviction, a
    /// synchronous standby) committed a lease that has lapsed or soon will, and the pool's
    /// claim may take the row while it runs here. The renewal is written under the row's
    /// token; when another claim took the row meanwhile (or the renewal fails) it does not run
    /// here (`Err` says why): the claim that holds it runs it, or the pool claims it once its
    /// lease has lapsed.
    fn lease_held<S: StoreConnection>(
        &self,
        conn: &mut S,
        row: &mut TaskRow,
    ) -> Result<(), String> {
        let (Some(until), Some(token)) = (row.lease_expires_at, row.lease_token) else {
            return Ok(());
        };
        let lease = crate::util::millis(self.lanes.lease);
        let now = now_ms();
        let left = until.saturating_sub(now);
        if left >= lease / 2 {
            return Ok(());
        }
        let renewed = now.saturating_add(lease);
        let why = match conn.renew(token, &[row.id], renewed) {
            Ok(held) if !held.is_empty() => {
                row.lease_expires_at = Some(renewed);
                log::warn!(
                    "tend: task {} committed with {left} ms of its {lease} ms lease left (a long \
                     transaction, or a commit that waited); its lease was renewed before it runs",
                    row.id
                );
                return Ok(());
            }
            Ok(_) => "the transaction committed after the task's lease had lapsed, and the \
                      pool has claimed the task: it runs there"
                .to_string(),
            Err(e) => format!(
                "the transaction committed with {left} ms of the task's {lease} ms lease left \
                 and renewing it failed ({e}): it does not run here; the pool claims it once \
                 its lease has lapsed"
            ),
        };
        log::warn!("tend: task {}: {why}", row.id);
        Err(why)
    }

    /// Gives a committed task leased to the pool at insert straight to a worker.
    fn give_to_pool(&self, shard: usize, queue: usize, row: TaskRow) {
        self.exec.events.emit(Event::Claimed(info(&row)));
        self.lanes.push_leased(shard, queue, row);
    }

    /// Runs a sync task (already leased by its insert) and writes its outcome.
    fn run_sync<S: StoreConnection>(&self, conn: &mut S, row: TaskRow) -> SyncOutcome {
        let id = row.id;
        let done = run_one(&self.exec, row);
        match done.write(conn) {
            Ok(true) => match done {
                Done::Complete { .. } | Done::CompletedIn { .. } => SyncOutcome::Succeeded { id },
                // Kept as succeeded (the pool keeps completed rows).
                Done::Finish(f) if f.status == TaskStatus::Succeeded.as_i32() => {
                    SyncOutcome::Succeeded { id }
                }
                Done::Finish(f) => SyncOutcome::Failed {
                    id,
                    status: TaskStatus::from_i32(f.status).unwrap_or(TaskStatus::Failed),
                    error: f.error_msg,
                },
            },
            Ok(false) => SyncOutcome::NotRecorded {
                id,
                error: "the lease expired before the outcome was written; the pool has taken \
                        the task over"
                    .to_string(),
            },
            Err(e) => {
                log::warn!("tend: could not record the outcome of sync task {id}: {e}");
                SyncOutcome::NotRecorded {
                    id,
                    error: e.to_string(),
                }
            }
        }
    }
}

impl<C> OutboxTx<'_, C>
where
    C: R2D2Connection + StoreConnection + Send + 'static,
{
    /// Enqueues `task` with its type's options. See [`enqueue_new`](Self::enqueue_new).
    ///
    /// # Errors
    /// As [`enqueue`](crate::enqueue).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("outbox-tx-enqueue");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// # let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
    /// # let mut conn = pool.get()?;
    /// let committed = outbox.transaction(&mut conn, |conn, tx| {
    ///     // your business rows on `conn`, then:
    ///     let enqueued = tx.enqueue(conn, &Ship { order_id: 7 })?;
    ///     Ok::<_, tend::Error>(enqueued)
    /// })?;
    /// assert!(committed.value().id().is_some());
    /// # Ok(()) }
    /// ```
    pub fn enqueue<S: StoreConnection, T: Task>(
        &mut self,
        conn: &mut S,
        task: &T,
    ) -> Result<Enqueued, Error> {
        self.enqueue_new(conn, NewTask::new(task)?)
    }

    /// Enqueues a task. With [`TransactionWay::WithTransaction`] (the default) it is written
    /// on `conn`, inside the transaction; with [`TransactionWay::WithoutTransaction`] it is
    /// written at once in its own transaction on a pool connection and survives a rollback of
    /// this one (no atomicity with your business rows).
    ///
    /// **SQLite refuses `WithoutTransaction` here**, at once and without writing anything: a
    /// SQLite database has one writer, and once this transaction has written it holds the write
    /// lock until it ends, so the task's own transaction would wait for its own caller until the
    /// busy timeout and then fail both. The error is an
    /// [`ErrorKind::InvalidSetting`](crate::ErrorKind::InvalidSetting) named `transaction_way`;
    /// this transaction is unharmed and may go on. Enqueue such a task with
    /// [`Outbox::enqueue_new_detached`] before or after the transaction instead. On PostgreSQL and
    /// MySQL/MariaDB the task's transaction takes no lock this one holds (unless it locked
    /// ranges of `consistency_task` itself, say with `SELECT … FOR UPDATE` or `LOCK TABLE`).
    ///
    /// After the commit, a right-now async task is handed to the pool and a right-now sync task
    /// runs in this thread. Scheduled tasks wait for their delay and the poll, whatever their
    /// thread way.
    ///
    /// # Errors
    /// As [`enqueue`](crate::enqueue).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("outbox-tx-enqueue-new");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// # let outbox = tend::WorkerPool::builder(pool.clone(), registry).build()?.outbox();
    /// # let mut conn = pool.get()?;
    /// use tend::{ErrorKind, NewTask, TransactionWay};
    /// let audit = NewTask::new(&Ship { order_id: 7 })?
    ///     .transaction_way(TransactionWay::WithoutTransaction);
    /// let committed = outbox.transaction(&mut conn, |conn, tx| {
    ///     tx.enqueue(conn, &Ship { order_id: 8 })?; // this transaction now holds the write lock
    ///     // On SQLite a WithoutTransaction task is refused here, at once, nothing written:
    ///     let refused = tx.enqueue_new(conn, audit.clone()).unwrap_err();
    ///     assert!(matches!(refused.kind(), ErrorKind::InvalidSetting { name: "transaction_way", .. }));
    ///     Ok::<_, tend::Error>(()) // and the transaction goes on
    /// })?;
    /// assert_eq!(task_count(&mut conn), 1);
    /// outbox.enqueue_new_detached(audit)?; // written on its own, outside the transaction
    /// assert_eq!(task_count(&mut conn), 2);
    /// # Ok(()) }
    /// ```
    pub fn enqueue_new<S: StoreConnection>(
        &mut self,
        conn: &mut S,
        task: NewTask,
    ) -> Result<Enqueued, Error> {
        if task.options().transaction_way == TransactionWay::WithoutTransaction {
            if !C::CONCURRENT_CLAIMS {
                return Err(Error::invalid_setting(
                    "transaction_way",
                    format!(
                        "task `{}` is WithoutTransaction, which SQLite cannot write inside an \
                         Outbox transaction: SQLite has one writer, and this transaction holds \
                         the write lock once it has written, so the task's own transaction \
                         would wait for it and fail both; nothing was written and this \
                         transaction may go on. Enqueue it with `Outbox::enqueue_new_detached` before or \
                         after the transaction",
                        task.signature()
                    ),
                ));
            }
            return self.detached(task);
        }
        let key = task.get_shard_key();
        Ok(match self.insert(conn, task)? {
            Placed::Duplicate => Enqueued::Duplicate,
            Placed::Due(id, queue) => {
                self.hand_off.push((id, key, queue));
                Enqueued::Inserted(id)
            }
            Placed::Sync(row) => {
                let id = row.id;
                self.sync.push(row);
                Enqueued::Inserted(id)
            }
            Placed::PoolLeased(shard, queue, row) => {
                let id = row.id;
                self.pool_leased.push((shard, queue, row));
                Enqueued::Inserted(id)
            }
            Placed::Scheduled(id) => Enqueued::Inserted(id),
        })
    }

    fn report_enqueued(&mut self) {
        for (id, signature, shard_key) in self.inserted.drain(..) {
            self.outbox
                .exec
                .events
                .emit(Event::Enqueued(TaskInfo::of(id, signature, shard_key, 0)));
        }
    }

    /// Writes a task in its own transaction, then hands it over or runs it at once.
    fn detached(&mut self, task: NewTask) -> Result<Enqueued, Error> {
        let key = task.get_shard_key();
        let mut conn = self.outbox.shards.get(key)?;
        let placed = retry_insert(self, &mut conn, task)?;
        // Committed already: report it before it runs, so events stay in order.
        self.report_enqueued();
        Ok(match placed {
            Placed::Duplicate => Enqueued::Duplicate,
            Placed::Due(id, queue) => {
                self.outbox.hand_off(id, key, queue);
                Enqueued::Inserted(id)
            }
            Placed::Sync(row) => {
                let id = row.id;
                let outcome = self.outbox.run_sync(&mut conn, row);
                self.done.push(outcome);
                Enqueued::Inserted(id)
            }
            Placed::PoolLeased(shard, queue, row) => {
                let id = row.id;
                self.outbox.give_to_pool(shard, queue, row);
                Enqueued::Inserted(id)
            }
            Placed::Scheduled(id) => Enqueued::Inserted(id),
        })
    }

    /// Inserts the row, leased at insert time where that saves a round trip later:
    /// - a right-now sync task is leased to this caller, so the pool's poll cannot run it at
    ///   the same time (if the caller dies, the lease lapses and the pool runs it);
    /// - a right-now async task is leased to the pool when the pool runs and has room, and
    ///   handed to a worker right after the commit without a claim;
    /// - otherwise a right-now task is due at once and handed over by id.
    fn insert<S: StoreConnection>(&mut self, conn: &mut S, task: NewTask) -> Result<Placed, Error> {
        let (signature, shard_key) = (task.signature(), task.get_shard_key());
        let opts = task.options();
        let right_now = opts.execute_way == ExecuteWay::RightNow;
        let sync = right_now && opts.thread_way == ThreadWay::Sync;
        let shard = self.outbox.shards.index_for(shard_key);
        let now = now_ms();
        let mut row = task.into_row(now)?;
        let lanes = &self.outbox.lanes;
        let queue = lanes.queues.index(&row.queue);
        // Straight to a worker only where no claim has anything to check: a queue without
        // limits, and no ordering key (its turn comes from the claim).
        let direct = lanes
            .unlimited_queue(&row.queue)
            .filter(|_| row.ordering_key.is_none());
        let to_pool = right_now && !sync && direct.is_some() && lanes.has_room(shard);
        if sync || to_pool {
            let lanes = &self.outbox.lanes;
            let until = now.saturating_add(crate::util::millis(lanes.lease));
            row.task_status = TaskStatus::Running.as_i32();
            row.execute_times = 1;
            row.execute_time = until;
            row.lease_expires_at = Some(until);
            row.lease_token = Some(random_token());
            row.lease_owner = Some(if sync {
                format!("{} (sync caller)", lanes.owner)
            } else {
                lanes.owner.clone()
            });
        }
        let backend = conn.backend();
        let id = match conn.insert_one(&row) {
            Ok(Some(id)) => id,
            Ok(None) => return Ok(Placed::Duplicate),
            Err(e) => return Err(Error::from_db(backend, e)),
        };
        self.inserted.push((id, signature, shard_key));
        Ok(if sync {
            Placed::Sync(row.into_task_row(id))
        } else if let (true, Some(q)) = (to_pool, direct) {
            Placed::PoolLeased(shard, q, row.into_task_row(id))
        } else if right_now {
            Placed::Due(id, queue)
        } else {
            Placed::Scheduled(id)
        })
    }
}

/// Where an inserted row stands.
enum Placed {
    Duplicate,
    /// Due now, unleased: hand over its id (to the pool's claim of its queue, if it works it).
    Due(i64, Option<usize>),
    /// Due later.
    Scheduled(i64),
    /// Leased to the caller: run it in this thread.
    Sync(TaskRow),
    /// Leased to the pool (shard index, queue index): give it to a worker.
    PoolLeased(usize, usize, TaskRow),
}

/// [`OutboxTx::insert`] outside any caller transaction, where retrying lock conflicts is ours
/// to do.
fn retry_insert<C, S>(
    tx: &mut OutboxTx<'_, C>,
    conn: &mut S,
    task: NewTask,
) -> Result<Placed, Error>
where
    C: R2D2Connection + StoreConnection + Send + 'static,
    S: StoreConnection,
{
    let mut last = None;
    for _ in 0..5 {
        match tx.insert(conn, task.clone()) {
            Err(e) if e.is_transient() => last = Some(e),
            other => return other,
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(last.expect("the loop ran"))
}

impl<C> WorkerPool<C>
where
    C: R2D2Connection + StoreConnection + Send + 'static,
{
    /// The outbox of this pool: transactions that hand their right-now tasks to the pool the
    /// moment they commit, run sync tasks in the caller's thread, and write without-transaction
    /// tasks on their own. Take it before [`start`](Self::start); it can be cloned freely and
    /// outlives the pool (tasks then wait for the next pool's poll).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("outbox");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// use std::time::Duration;
    /// use tend::WorkerPool;
    /// let hourly = Duration::from_secs(3600); // no poll during this example
    /// let workers = WorkerPool::builder(pool.clone(), registry).poll_interval(hourly).build()?;
    /// let outbox = workers.outbox();
    /// let handle = workers.start()?;
    /// let mut conn = pool.get()?;
    /// outbox.transaction(&mut conn, |conn, tx| tx.enqueue(conn, &Ship { order_id: 7 }))?;
    /// // Handed to a worker at the commit: it runs without a poll or a wake.
    /// assert!(eventually(|| task_count(&mut conn) == 0));
    /// # Ok(()) }
    /// ```
    pub fn outbox(&self) -> Outbox<C> {
        Outbox::new(
            self.shards.clone(),
            self.cfg.exec.clone(),
            self.lanes.clone(),
        )
    }
}
