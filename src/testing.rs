//! A test kit for applications that use tend (feature `testing`), the way `rivertest` serves
//! River users: assert what a transaction enqueued, run tasks synchronously in the test's
//! thread, and move a clock the test controls to reach delays and retries.
//!
//! ```
//! use diesel::{Connection, SqliteConnection};
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//! use tend::testing::{assert_enqueued, TestWorker};
//! use tend::{Registry, Task, TaskContext, TaskError};
//!
//! #[derive(Serialize, Deserialize, PartialEq, Debug)]
//! struct Ship { order_id: i64 }
//! impl Task for Ship {
//!     const SIGNATURE: &'static str = "orders.ship";
//!     fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
//!         if ctx.attempt() == 1 { Err(TaskError::new("carrier down")) } else { Ok(()) }
//!     }
//! }
//!
//! let mut conn = SqliteConnection::establish(":memory:").unwrap();
//! tend::migrate(&mut conn).unwrap();
//! conn.transaction(|conn| tend::enqueue(conn, &Ship { order_id: 9 })).unwrap();
//! let ship: Ship = assert_enqueued(&mut conn, |s: &Ship| s.order_id == 9);
//! assert_eq!(ship, Ship { order_id: 9 });
//!
//! let mut registry = Registry::new();
//! registry.register::<Ship>().unwrap();
//! let worker = TestWorker::new(registry);
//! let first = worker.drain(&mut conn).unwrap();
//! assert_eq!((first.succeeded, first.failed), (0, 1));
//! worker.advance(Duration::from_secs(60)); // the linear schedule's first wait
//! let second = worker.drain(&mut conn).unwrap();
//! assert_eq!(second.succeeded, 1);
//! ```

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::alert::Alert;
use crate::error::Error;
use crate::exec::alerts::{deliver, AlertSink};
use crate::exec::{run_one, Done, EventSink, Executor};
use crate::pool::DEFAULT_LEASE;

/// Who holds the test kit's leases.
const TEST_OWNER: &str = "tend-test-worker";
use crate::registry::{decode, Registry};
use crate::status::TaskStatus;
use crate::store::row::{Claim, TaskRow};
use crate::store::StoreConnection;
use crate::task::Task;
use crate::util::random_token;

/// Finds the enqueued tasks of type `T` on `conn` (inside the test's transaction if there is
/// one) and returns the first one `matches` accepts.
///
/// # Panics
/// When none matches, listing what was enqueued, so the failure explains itself.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut conn = memory_db();
/// use diesel::Connection;
/// use tend::testing::assert_enqueued;
/// // The code under test:
/// conn.transaction(|conn| tend::enqueue(conn, &Ship { order_id: 7 }))?;
/// let ship: Ship = assert_enqueued(&mut conn, |s: &Ship| s.order_id == 7);
/// assert_eq!(ship, Ship { order_id: 7 });
/// # Ok(()) }
/// ```
pub fn assert_enqueued<T: Task, C: StoreConnection>(
    conn: &mut C,
    matches: impl Fn(&T) -> bool,
) -> T {
    let rows = enqueued_rows(conn, T::SIGNATURE);
    let mut seen = Vec::new();
    for row in &rows {
        match decode::<T>(&row.task_parameter) {
            Ok(task) if matches(&task) => return task,
            Ok(_) => seen.push(format!("task {} (did not match)", row.id)),
            Err(e) => seen.push(format!("task {} (does not decode: {e})", row.id)),
        }
    }
    panic!(
        "no enqueued `{}` task matched; {} row(s) with that signature: {seen:?}",
        T::SIGNATURE,
        rows.len()
    );
}

fn enqueued_rows<C: StoreConnection>(conn: &mut C, signature: &str) -> Vec<TaskRow> {
    conn.by_signature(signature)
        .unwrap_or_else(|e| panic!("reading enqueued tasks failed: {e}"))
}

/// Runs tasks synchronously in the calling thread, with a clock the test moves.
///
/// The clock starts at the real time; [`advance`](Self::advance) moves it forward, so that
/// scheduled tasks and retries become due without waiting. Alerts are delivered inline to the
/// registry's alerters.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut conn = memory_db();
/// use std::sync::{Arc, Mutex};
/// use tend::testing::TestWorker;
/// use tend::{Alert, NewTask, Registry};
/// let alerts = Arc::new(Mutex::new(Vec::new()));
/// let sink = alerts.clone();
/// let mut registry = Registry::new();
/// registry.alerter("pager", move |a: &Alert| sink.lock().unwrap().push(a.error_msg.clone()))?;
/// registry.register::<AlwaysFails>()?; // every attempt fails with "boom"
/// let task = NewTask::new(&AlwaysFails)?.alert_expression(Some("executeTimes >= 1"));
/// tend::enqueue_new(&mut conn, task.alerter("pager"))?;
/// TestWorker::new(registry).drain(&mut conn)?;
/// assert_eq!(*alerts.lock().unwrap(), ["boom"]); // delivered before `drain` returned
/// # Ok(()) }
/// ```
pub struct TestWorker {
    exec: Executor,
    alerts: Receiver<Alert>,
}

impl std::fmt::Debug for TestWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestWorker")
            .field("now_ms", &self.now_ms())
            .finish()
    }
}

/// What [`TestWorker::drain`] ran.
///
/// ```
/// # include!("doctest_setup.rs");
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Legacy;
/// # impl tend::Task for Legacy {
/// #     const SIGNATURE: &'static str = "demo.legacy";
/// #     fn execute(&self, _: &tend::TaskContext) -> Result<(), tend::TaskError> { Ok(()) }
/// # }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut conn = memory_db();
/// use tend::testing::{Drained, TestWorker};
/// use tend::{NewTask, Registry};
/// let mut registry = Registry::new();
/// registry.register::<Ship>()?.register::<AlwaysFails>()?;
/// tend::enqueue(&mut conn, &Ship { order_id: 7 })?;
/// tend::enqueue(&mut conn, &AlwaysFails)?; // fails, retried later
/// tend::enqueue_new(&mut conn, NewTask::new(&AlwaysFails)?.max_attempts(1))?; // fails for good
/// tend::enqueue(&mut conn, &Legacy)?; // not registered in this process
/// let drained = TestWorker::new(registry).drain(&mut conn)?;
/// assert_eq!(drained, Drained { succeeded: 1, failed: 1, dead: 1, held: 1 });
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Completed (deleted, or kept as succeeded).
    pub succeeded: usize,
    /// Failed and scheduled for a retry.
    pub failed: usize,
    /// Dead: out of attempts or given up.
    pub dead: usize,
    /// Held: unknown signature or undecodable payload.
    pub held: usize,
}

impl TestWorker {
    /// A worker for the task types in `registry`, with the pool's default lease (30 s).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use tend::testing::{Drained, TestWorker};
    /// let mut registry = tend::Registry::new();
    /// registry.register::<Ship>()?;
    /// let worker = TestWorker::new(registry);
    /// assert_eq!(worker.drain(&mut conn)?, Drained::default()); // nothing enqueued yet
    /// # Ok(()) }
    /// ```
    pub fn new(registry: Registry) -> TestWorker {
        let (alerts, rx) = AlertSink::new();
        TestWorker {
            exec: Executor {
                registry,
                alerts,
                events: EventSink::none(),
                keep_completed: None,
                clock_offset_ms: Arc::new(AtomicI64::new(0)),
            },
            alerts: rx,
        }
    }

    /// Moves the test clock forward.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use std::time::Duration;
    /// use tend::testing::TestWorker;
    /// use tend::{ExecuteWay, NewTask, Registry};
    /// let mut registry = Registry::new();
    /// registry.register::<Ship>()?;
    /// let worker = TestWorker::new(registry);
    /// let later = NewTask::new(&Ship { order_id: 7 })?.execute_way(ExecuteWay::Schedule);
    /// tend::enqueue_new(&mut conn, later.delay(Duration::from_secs(3600)))?;
    /// assert_eq!(worker.drain(&mut conn)?.succeeded, 0); // not due yet
    /// worker.advance(Duration::from_secs(3600));
    /// assert_eq!(worker.drain(&mut conn)?.succeeded, 1);
    /// # Ok(()) }
    /// ```
    pub fn advance(&self, d: Duration) {
        self.exec.clock_offset_ms.fetch_add(
            d.as_millis().min(i64::MAX as u128) as i64,
            Ordering::Relaxed,
        );
    }

    /// The test clock, in epoch milliseconds.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tend::testing::TestWorker;
    /// let worker = TestWorker::new(tend::Registry::new());
    /// let start = worker.now_ms(); // the real time, at first
    /// worker.advance(Duration::from_secs(60));
    /// assert!(worker.now_ms() >= start + 60_000);
    /// ```
    pub fn now_ms(&self) -> i64 {
        self.exec.now_ms()
    }

    /// Runs every task due at the test clock, repeatedly, until none is due (tasks a run makes
    /// due again at once count again). Retries are scheduled on the test clock: advance it by
    /// their wait to reach them.
    ///
    /// # Errors
    /// A database error.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use tend::testing::TestWorker;
    /// let mut registry = tend::Registry::new();
    /// registry.register::<Ship>()?;
    /// for order_id in 1..=3 {
    ///     tend::enqueue(&mut conn, &Ship { order_id })?;
    /// }
    /// let drained = TestWorker::new(registry).drain(&mut conn)?;
    /// assert_eq!(drained.succeeded, 3);
    /// assert_eq!(task_count(&mut conn), 0);
    /// # Ok(()) }
    /// ```
    pub fn drain<C: StoreConnection>(&self, conn: &mut C) -> Result<Drained, Error> {
        let mut out = Drained::default();
        // Bounded, so a task that keeps making itself due cannot hang the test.
        for _ in 0..10_000 {
            let batch = self.claim(conn, None)?;
            if batch.is_empty() {
                break;
            }
            for row in batch {
                self.run_row(conn, row, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Runs the task with this id now, if it is due at the test clock.
    ///
    /// # Errors
    /// A database error, or [`ErrorKind::InvalidSetting`](crate::ErrorKind) naming the id when
    /// no such task is due (missing, parked, running, or due later: advance the clock).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use tend::testing::TestWorker;
    /// let mut registry = tend::Registry::new();
    /// registry.register::<Ship>()?;
    /// let worker = TestWorker::new(registry);
    /// let first = tend::enqueue(&mut conn, &Ship { order_id: 1 })?.id().unwrap();
    /// tend::enqueue(&mut conn, &Ship { order_id: 2 })?;
    /// assert_eq!(worker.run(&mut conn, first)?.succeeded, 1);
    /// assert_eq!(task_count(&mut conn), 1); // the other one is still queued
    /// assert!(worker.run(&mut conn, first).is_err()); // gone
    /// # Ok(()) }
    /// ```
    pub fn run<C: StoreConnection>(&self, conn: &mut C, id: i64) -> Result<Drained, Error> {
        let mut out = Drained::default();
        let mut rows = self.claim(conn, Some(&[id]))?;
        let Some(row) = rows.pop() else {
            return Err(Error::new(crate::error::ErrorKind::Misuse(format!(
                "task {id} is not due at the test clock (missing, parked, running or due later)"
            ))));
        };
        self.run_row(conn, row, &mut out)?;
        Ok(out)
    }

    fn claim<C: StoreConnection>(
        &self,
        conn: &mut C,
        ids: Option<&[i64]>,
    ) -> Result<Vec<TaskRow>, Error> {
        let now = self.now_ms();
        let claim = Claim {
            now,
            lease_until: now.saturating_add(crate::util::millis(DEFAULT_LEASE)),
            token: random_token(),
            owner: TEST_OWNER,
            queue: None,
            limit: 100,
            ids,
            exclude: &[],
        };
        let backend = conn.backend();
        Ok(conn
            .claim(&claim)
            .map_err(|e| Error::from_db(backend, e))?
            .into_iter()
            .map(|c| c.task)
            .collect())
    }

    fn run_row<C: StoreConnection>(
        &self,
        conn: &mut C,
        row: TaskRow,
        out: &mut Drained,
    ) -> Result<(), Error> {
        let done = run_one(&self.exec, row);
        let backend = conn.backend();
        done.write(conn).map_err(|e| Error::from_db(backend, e))?;
        match &done {
            Done::Complete { .. } | Done::CompletedIn { .. } => out.succeeded += 1,
            Done::Finish(f) => match TaskStatus::from_i32(f.status) {
                Some(TaskStatus::Succeeded) => out.succeeded += 1,
                Some(TaskStatus::Dead) => out.dead += 1,
                Some(TaskStatus::Held) => out.held += 1,
                _ => out.failed += 1,
            },
        }
        for alert in self.alerts.try_iter() {
            deliver(&self.exec.registry, &alert);
        }
        Ok(())
    }
}

/// Test-only fault injection into the pool's threads (tend's own tests of issue 11: no pool
/// thread dies). Arms `times` panics for threads of `kind` — `"fetcher"` (panics inside a
/// transaction that has written), `"completer"`, `"checkpoint"` (SQLite), `"membership"`
/// (with shard affinity), `"worker"` (outside the handler), `"alerts"`, `"listener"` (the
/// wake-up listener, PostgreSQL) or `"scheduler"` (with periodic schedules) — process-wide: the
/// next that many passes of any pool's threads of that kind through their fault point panic.
/// Not part of the API: it exists only with the `testing` feature.
#[doc(hidden)]
pub fn inject_panics(kind: &str, times: usize) {
    crate::supervise::fault::arm(kind, times);
}

/// Panics injected so far into threads of `kind`; see [`inject_panics`].
#[doc(hidden)]
pub fn injected_panics(kind: &str) -> usize {
    crate::supervise::fault::hits(kind)
}

/// Armed panics of `kind` not yet injected; see [`inject_panics`].
#[doc(hidden)]
pub fn pending_panics(kind: &str) -> usize {
    crate::supervise::fault::pending(kind)
}
