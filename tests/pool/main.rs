//! End-to-end tests of the core (issue 2) through the public API only, with real threads, on
//! every backend: atomic enqueue, draining, two pools on one table, the retry schedule, dead,
//! held, panics, an unmigrated database, builder validation and graceful shutdown.
//!
//! Rows are read back with plain diesel on the test's own connections.

#[path = "../support/mod.rs"]
mod support;

mod drain;
mod lease;
mod retry;
mod settings;
mod shutdown;

use drain::*;
use lease::*;
use retry::*;
use settings::*;
use shutdown::*;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use diesel::Connection;
use serde::{Deserialize, Serialize};
use tend::{
    Enqueued, ErrorKind, ExecuteWay, NewTask, PoolHandle, Registry, RetryPolicy, Task, TaskContext,
    TaskError, TaskOptions, WorkerPool, WorkerPoolBuilder,
};

use support::{
    new_run, now_ms, per_backend, wait_for, wait_for_or, Ran, Row, TestConn, TestDb, PARKED,
};

/// How long any single wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// What a test task does when it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Act {
    Succeed,
    /// Fails with "boom <attempt>".
    Fail,
    /// Fails on the first attempt only.
    FailOnce,
    GiveUp,
    Panic,
    RetryAfterSecs(u64),
    /// Blocks until the test opens its run's gate.
    Gate,
    SleepMs(u64),
}

/// The test task: `run` finds the test's recorder, `n` names the task within the test. `POOL`
/// tags which registry ran it (two types under one signature stand for two deployments), and
/// `FIXED` picks the fixed retry policy instead of the default linear one.
#[derive(Debug, Serialize, Deserialize)]
struct Job<const POOL: u8, const FIXED: bool> {
    run: u64,
    n: u64,
    act: Act,
}

type JobA = Job<0, false>;
type JobB = Job<1, false>;
type FixedJob = Job<0, true>;

impl<const POOL: u8, const FIXED: bool> Task for Job<POOL, FIXED> {
    const SIGNATURE: &'static str = "test.job";

    fn options() -> TaskOptions {
        let o = TaskOptions::new().execute_interval(Duration::from_secs(1));
        if FIXED {
            o.retry_policy(RetryPolicy::Fixed)
        } else {
            o
        }
    }

    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let run = support::run(self.run);
        let (start, start_ms) = (Instant::now(), now_ms());
        run.start(self.n);
        let outcome = match &self.act {
            Act::Succeed => Some(Ok(())),
            Act::Fail => Some(Err(TaskError::new(format!("boom {}", ctx.attempt())))),
            Act::FailOnce if ctx.attempt() == 1 => Some(Err(TaskError::new("first try fails"))),
            Act::FailOnce => Some(Ok(())),
            Act::GiveUp => Some(Err(TaskError::give_up("no such order"))),
            Act::Panic => None,
            Act::RetryAfterSecs(s) => Some(Err(TaskError::retry_after(
                "rate limited",
                Duration::from_secs(*s),
            ))),
            Act::Gate if run.wait_gate() => Some(Ok(())),
            Act::Gate => Some(Err(TaskError::new("the gate never opened"))),
            Act::SleepMs(ms) => {
                thread::sleep(Duration::from_millis(*ms));
                Some(Ok(()))
            }
        };
        run.record(Ran {
            n: self.n,
            id: ctx.id(),
            attempt: ctx.attempt(),
            pool: POOL,
            thread: thread::current().name().unwrap_or("?").to_string(),
            start,
            end: Instant::now(),
            start_ms,
        });
        match outcome {
            Some(result) => result,
            None => panic!("handler exploded on purpose"),
        }
    }
}

/// Never registered anywhere.
#[derive(Serialize, Deserialize)]
struct Unregistered {
    x: u32,
}

impl Task for Unregistered {
    const SIGNATURE: &'static str = "test.unregistered";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        unreachable!("no pool registers this type")
    }
}

/// Enqueued as `ShapeA`, run by a deployment whose type under the same signature is `ShapeB`.
#[derive(Serialize, Deserialize)]
struct ShapeA {
    text: String,
}

#[derive(Serialize, Deserialize)]
struct ShapeB {
    a: u64,
    b: u64,
    c: u64,
}

static SHAPE_B_RAN: AtomicUsize = AtomicUsize::new(0);

impl Task for ShapeA {
    const SIGNATURE: &'static str = "test.shape";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        unreachable!("only enqueued")
    }
}

impl Task for ShapeB {
    const SIGNATURE: &'static str = "test.shape";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        SHAPE_B_RAN.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn job(run: u64, n: u64, act: Act) -> JobA {
    JobA { run, n, act }
}

fn registry<T: Task>() -> Registry {
    let mut r = Registry::new();
    r.register::<T>().unwrap();
    r
}

/// A pool as the tests run it: 2 threads, polling every 50 ms.
fn builder<C: TestConn>(db: &TestDb<C>, registry: Registry) -> WorkerPoolBuilder<C> {
    WorkerPool::builder(db.pool.clone(), registry)
        .threads(2)
        .poll_interval(Duration::from_millis(50))
}

fn enqueue_one<C: TestConn>(db: &TestDb<C>, task: NewTask) -> i64 {
    tend::enqueue_new(&mut db.pooled(), task)
        .unwrap()
        .id()
        .expect("a new row")
}

/// Waits until row `id` satisfies `pred` and returns it.
fn wait_row<C: TestConn>(db: &TestDb<C>, id: i64, what: &str, pred: impl Fn(&Row) -> bool) -> Row {
    let mut last = None;
    let what = format!("{what} (row {id})");
    let found = wait_for_or(PATIENCE, || {
        last = db.row(id);
        last.clone().filter(|r| pred(r))
    });
    found.unwrap_or_else(|| panic!("timed out waiting for {what}; the row is {last:?}"))
}

/// Wakes the pool once `execute_time` has come (a wake before that would find nothing due).
fn wake_when_due(handle: &PoolHandle, execute_time: i64) {
    wait_for("the retry to fall due", PATIENCE, || {
        (now_ms() >= execute_time).then_some(())
    });
    handle.wake();
}

fn no_lease(r: &Row) -> bool {
    r.lease_token.is_none() && r.lease_owner.is_none() && r.lease_expires_at.is_none()
}

per_backend!(
    enqueue_commits_and_rolls_back_with_the_transaction,
    enqueue_on_a_pooled_connection_follows_the_transaction,
    enqueue_many_follows_the_transaction,
    pool_drains_every_task_once,
    a_small_r2d2_pool_still_leaves_the_application_a_connection,
    two_pools_never_run_a_task_twice,
    an_idle_pool_waits_for_its_poll_interval,
    retry_schedule_is_linear_by_default_then_dead,
    retry_schedule_fixed,
    a_retry_waits_for_its_due_time_then_succeeds,
    retry_after_overrides_the_schedule,
    dead_after_max_attempts,
    give_up_is_dead_at_once,
    unknown_and_undecodable_tasks_are_held_while_others_run,
    a_panicking_handler_fails_and_its_thread_survives,
    an_unmigrated_database_is_refused_with_the_fix,
    bad_builder_settings_are_errors,
    scheduled_tasks_wait_for_their_delay,
    shutdown_releases_claimed_but_unstarted_tasks,
    shutdown_abandons_a_stuck_task_which_runs_again_later,
    a_claim_that_waited_past_its_lease_renews_it_before_running,
    an_outbox_transaction_longer_than_the_lease_renews_it_before_running,
    a_sync_task_committed_after_its_lease_renews_it_before_running,
);

/// A pool of 2 threads (batch 50, poll 10 ms) over `small`, started: the two session-setting
/// tests below drain through it.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn start_two_threads<C>(
    small: &diesel::r2d2::Pool<diesel::r2d2::ConnectionManager<C>>,
) -> PoolHandle
where
    C: diesel::r2d2::R2D2Connection + tend::StoreConnection + Send + 'static,
{
    WorkerPool::builder(small.clone(), registry::<JobA>())
        .threads(2)
        .batch_size(50)
        .poll_interval(Duration::from_millis(10))
        .build()
        .unwrap()
        .start()
        .unwrap()
}

/// PostgreSQL: the pool runs its statements on generic plans on the connections it holds
/// (`plan_cache_mode = force_generic_plan`) and gives each back with the session's setting
/// restored, so an application sharing the r2d2 pool plans as it did.
#[cfg(feature = "postgres")]
#[test]
fn pg_connections_go_back_with_the_default_plan_cache_mode() {
    use diesel::sql_types::Text;
    use diesel::{PgConnection, RunQueryDsl};

    #[derive(diesel::QueryableByName)]
    struct Mode {
        #[diesel(sql_type = Text)]
        plan_cache_mode: String,
    }

    let Some(db) = TestDb::<PgConnection>::fresh() else {
        return;
    };
    let small = support::pool_for::<PgConnection>(&db.url, 3);
    let (run, rec) = new_run();
    const N: u64 = 500;
    let tasks = (0..N).map(|k| NewTask::new(&job(run, k, Act::Succeed)).unwrap());
    tend::enqueue_many(&mut small.get().unwrap(), tasks).unwrap();
    let handle = start_two_threads(&small);
    wait_for("every task to run", PATIENCE, || {
        (rec.ran().len() >= N as usize).then_some(())
    });
    assert!(handle.shutdown().all_joined());
    assert!(db.rows().is_empty(), "every completion was written");
    let mut conns: Vec<_> = (0..3).map(|_| small.get().unwrap()).collect();
    for c in &mut conns {
        let m: Mode = diesel::sql_query("SHOW plan_cache_mode")
            .get_result(&mut **c)
            .unwrap();
        assert_eq!(
            m.plan_cache_mode, "auto",
            "the session's default is restored"
        );
    }
}

/// SQLite: the shard's writer leaves WAL checkpoints to the pool's checkpointer thread and
/// checkpoints itself only past 4000 pages, so the WAL stays bounded under a writer that never
/// pauses; when the pool stops, the writer's connection goes back to the r2d2 pool with SQLite's
/// default (checkpoint every 1000 pages) restored.
#[cfg(feature = "sqlite")]
#[test]
fn sqlite_checkpoints_run_beside_the_writer_and_the_default_comes_back() {
    use diesel::sql_types::Integer;
    use diesel::{RunQueryDsl, SqliteConnection};

    #[derive(diesel::QueryableByName)]
    struct Pages {
        #[diesel(sql_type = Integer)]
        wal_autocheckpoint: i32,
    }

    let db = TestDb::<SqliteConnection>::fresh().expect("SQLite always runs");
    let small = support::pool_for::<SqliteConnection>(&db.url, 3);
    let wal = std::path::PathBuf::from(format!("{}-wal", db.url));
    let (run, rec) = new_run();
    const N: u64 = 20_000;
    for chunk in 0..N / 200 {
        let tasks =
            (0..200).map(|k| NewTask::new(&job(run, chunk * 200 + k, Act::Succeed)).unwrap());
        tend::enqueue_many(&mut small.get().unwrap(), tasks).unwrap();
    }
    // From here on only the pool writes: empty the WAL, then watch it while the pool drains.
    {
        use diesel::connection::SimpleConnection;
        let mut c = small.get().unwrap();
        c.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    let handle = start_two_threads(&small);
    let mut largest_wal = 0;
    // Watched without reading the database: a reader's snapshot would itself keep the WAL
    // from being restarted (a long one under a loaded machine let it grow past the bound).
    wait_for("every task to run", PATIENCE, || {
        largest_wal = largest_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        (rec.ran().len() >= N as usize).then_some(())
    });
    assert!(handle.shutdown().all_joined());
    assert_eq!(rec.ran().len(), N as usize);
    assert!(db.rows().is_empty(), "every completion was written");
    // Unbounded (no checkpoints by the writer or beside it), 20 000 tasks' claims and deletes
    // fill about 33 MiB of WAL; the writer's bound is 4000 pages (16 MiB).
    assert!(
        largest_wal < 24 << 20,
        "the WAL grew to {largest_wal} bytes: its size is not bounded"
    );
    let mut conns: Vec<_> = (0..3).map(|_| small.get().unwrap()).collect();
    for c in &mut conns {
        let p: Pages = diesel::sql_query("PRAGMA wal_autocheckpoint")
            .get_result(&mut **c)
            .unwrap();
        assert_eq!(p.wal_autocheckpoint, 1000, "SQLite's default is restored");
    }
}
