//! End-to-end tests of the core (issue 2) through the public API only, with real threads, on
//! every backend: atomic enqueue, draining, two pools on one table, the retry schedule, dead,
//! held, panics, an unmigrated database, builder validation and graceful shutdown.
//!
//! Rows are read back with plain diesel on the test's own connections.

mod support;

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

// ---------------------------------------------------------------------------------------------
// Enqueue in the caller's transaction

/// Rolled back: neither the order nor the task exists. Committed: exactly one of each.
fn enqueue_follows_the_transaction<C: TestConn, Conn>(db: &TestDb<C>, conn: &mut Conn)
where
    Conn: Connection + tend::StoreConnection,
{
    let (run, _) = new_run();
    let rolled_back = conn.transaction::<(), tend::Error, _>(|c| {
        c.batch_execute("INSERT INTO tend_test_orders (id, note) VALUES (1, 'paid')")?;
        tend::enqueue(c, &job(run, 1, Act::Succeed))?;
        Err(diesel::result::Error::RollbackTransaction.into())
    });
    assert!(rolled_back.is_err());
    assert_eq!(db.rows().len(), 0, "a rolled-back enqueue leaves no task");
    assert_eq!(db.orders(), 0);

    let enqueued = conn
        .transaction::<Enqueued, tend::Error, _>(|c| {
            c.batch_execute("INSERT INTO tend_test_orders (id, note) VALUES (2, 'paid')")?;
            tend::enqueue(c, &job(run, 2, Act::Succeed))
        })
        .unwrap();
    let rows = db.rows();
    assert_eq!(rows.len(), 1, "a committed enqueue leaves exactly one task");
    assert_eq!(db.orders(), 1);
    let r = &rows[0];
    assert_eq!(Some(r.id), enqueued.id());
    assert_eq!(r.method_sign_name, "test.job");
    assert_eq!((r.task_status, r.execute_times), (0, 0));
    assert!(no_lease(r));
}

fn enqueue_commits_and_rolls_back_with_the_transaction<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    enqueue_follows_the_transaction(&db, &mut db.connect());
}

fn enqueue_on_a_pooled_connection_follows_the_transaction<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    enqueue_follows_the_transaction(&db, &mut db.pooled());
}

fn enqueue_many_follows_the_transaction<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, _) = new_run();
    let tasks = || (0..10).map(|n| NewTask::new(&job(run, n, Act::Succeed)).unwrap());
    let mut conn = db.connect();
    let rolled_back = conn.transaction::<(), tend::Error, _>(|c| {
        c.batch_execute("INSERT INTO tend_test_orders (id, note) VALUES (1, 'paid')")?;
        assert_eq!(tend::enqueue_many(c, tasks())?, 10);
        Err(diesel::result::Error::RollbackTransaction.into())
    });
    assert!(rolled_back.is_err());
    assert_eq!((db.rows().len(), db.orders()), (0, 0));
    let n = conn
        .transaction::<usize, tend::Error, _>(|c| {
            c.batch_execute("INSERT INTO tend_test_orders (id, note) VALUES (1, 'paid')")?;
            tend::enqueue_many(c, tasks())
        })
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!((db.rows().len(), db.orders()), (10, 1));
}

// ---------------------------------------------------------------------------------------------
// Draining

fn pool_drains_every_task_once<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    const N: u64 = 200;
    let (run, rec) = new_run();
    let tasks = (0..N).map(|n| NewTask::new(&job(run, n, Act::Succeed)).unwrap());
    assert_eq!(
        tend::enqueue_many(&mut db.pooled(), tasks).unwrap(),
        N as usize
    );
    let handle = builder(&db, registry::<JobA>())
        .batch_size(20)
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the table to drain", PATIENCE, || {
        db.rows().is_empty().then_some(())
    });
    let report = handle.shutdown();
    assert!(report.all_joined());
    assert_eq!(report.released, 0);
    let ran = rec.ran();
    let per_task: BTreeMap<u64, usize> = ran.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.n).or_default() += 1;
        m
    });
    assert_eq!(per_task.len(), N as usize, "every task ran");
    assert!(per_task.values().all(|&k| k == 1), "a task ran twice");
    assert!(ran.iter().all(|r| r.attempt == 1));
}

/// On a small r2d2 pool (max 3) tend keeps one claimer, so it holds 2 connections and the
/// application can still enqueue while it drains.
fn a_small_r2d2_pool_still_leaves_the_application_a_connection<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let small = support::pool_for::<C>(&db.url, 3);
    const N: u64 = 100;
    let (run, rec) = new_run();
    let handle = WorkerPool::builder(small.clone(), registry::<JobA>())
        .threads(4)
        .batch_size(10)
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap()
        .start()
        .unwrap();
    for n in 0..N {
        // The application's own checkout: it must not wait for a connection tend holds.
        let mut conn = small
            .get_timeout(Duration::from_secs(5))
            .expect("a connection left for the application");
        // As any MariaDB application must: an insert can meet the pool's claims and deletes in
        // an InnoDB deadlock, which `is_transient` says to simply run again.
        let mut tries = 0;
        loop {
            match tend::enqueue(&mut conn, &job(run, n, Act::Succeed)) {
                Ok(_) => break,
                Err(e) if e.is_transient() && tries < 10 => tries += 1,
                Err(e) => panic!("enqueue failed: {e}"),
            }
        }
    }
    wait_for("the table to drain", PATIENCE, || {
        db.rows().is_empty().then_some(())
    });
    assert!(handle.shutdown().all_joined());
    assert_eq!(rec.ran().len(), N as usize);
}

/// Two pools (two deployments: each registers its own type under the signature) drain one
/// table: every task runs exactly once, and both pools take part.
fn two_pools_never_run_a_task_twice<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    const N: u64 = 300;
    let (run, rec) = new_run();
    let start = |registry, owner| {
        builder(&db, registry)
            .batch_size(10)
            .owner(owner)
            .build()
            .unwrap()
            .start()
            .unwrap()
    };
    let a = start(registry::<JobA>(), "pool-a");
    let b = start(registry::<JobB>(), "pool-b");
    let tasks = (0..N).map(|n| NewTask::new(&job(run, n, Act::SleepMs(2))).unwrap());
    db.pooled()
        .transaction::<_, tend::Error, _>(|c| tend::enqueue_many(c, tasks))
        .unwrap();
    a.wake();
    b.wake();
    wait_for("the table to drain", PATIENCE, || {
        db.rows().is_empty().then_some(())
    });
    assert!(a.shutdown().all_joined() && b.shutdown().all_joined());

    let ran = rec.ran();
    let mut by_task: BTreeMap<u64, Vec<&Ran>> = BTreeMap::new();
    for r in &ran {
        by_task.entry(r.n).or_default().push(r);
    }
    assert_eq!(by_task.len(), N as usize, "every task ran");
    for (n, runs) in &by_task {
        if runs.len() > 1 {
            let overlap = runs
                .windows(2)
                .any(|w| w[0].start < w[1].end && w[1].start < w[0].end);
            panic!(
                "task {n} ran {} times (overlapping: {overlap}): {runs:?}",
                runs.len()
            );
        }
    }
    let by_pool = |p| ran.iter().filter(|r| r.pool == p).count();
    assert!(
        by_pool(0) > 0 && by_pool(1) > 0,
        "both pools must take part: {} and {}",
        by_pool(0),
        by_pool(1)
    );
}

/// Between polls an idle pool waits: for its poll interval, a wake, or a hand-off, never in a
/// loop against the database.
fn an_idle_pool_waits_for_its_poll_interval<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let first = enqueue_one(&db, NewTask::new(&job(run, 0, Act::Succeed)).unwrap());
    let handle = builder(&db, registry::<JobA>())
        .poll_interval(Duration::from_secs(3600))
        .build()
        .unwrap()
        .start()
        .unwrap();
    // The poll at start takes the first task; the next one is an hour away.
    wait_for("the first task", PATIENCE, || {
        db.row(first).is_none().then_some(())
    });
    let second = enqueue_one(&db, NewTask::new(&job(run, 1, Act::Succeed)).unwrap());
    // Nothing may take the second task without a wake; there is no event to wait for, so the
    // test watches for a while.
    thread::sleep(Duration::from_secs(1));
    let r = db.row(second).unwrap();
    assert_eq!(
        (r.task_status, rec.times(1)),
        (0, 0),
        "claimed with no poll due and no wake: the pool polls in a loop"
    );
    handle.wake();
    wait_for("the woken pool to run it", PATIENCE, || {
        db.row(second).is_none().then_some(())
    });
    handle.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Retries, dead, held, panics

/// Runs a task that always fails, 3 attempts with a 2 s interval, waking the pool (polling
/// hourly) only once each retry is due, and checks each scheduled wait exactly:
/// `execute_time - gmt_modified` of the failed row is the policy's wait.
fn failing_three_times<C: TestConn, T: Task>(db: &TestDb<C>, task: &T, waits_ms: [i64; 2]) {
    let task = NewTask::new(task)
        .unwrap()
        .max_attempts(3)
        .execute_interval(Duration::from_secs(2));
    let id = enqueue_one(db, task);
    let handle = WorkerPool::builder(db.pool.clone(), registry::<T>())
        .threads(1)
        .poll_interval(Duration::from_secs(3600))
        .build()
        .unwrap()
        .start()
        .unwrap(); // the first claim happens at start
    let mut due = Vec::new();
    for (attempt, wait) in (1..=2).zip(waits_ms) {
        let r = wait_row(db, id, "a failed attempt", |r| {
            r.task_status == 2 && r.execute_times == attempt
        });
        assert_eq!(r.error_msg, format!("boom {attempt}"));
        assert_eq!(
            r.execute_time - r.gmt_modified,
            wait,
            "the wait after failed attempt {attempt}"
        );
        assert!(no_lease(&r), "{r:?}");
        due.push(r.execute_time);
        wake_when_due(&handle, r.execute_time);
    }
    let r = wait_row(db, id, "the task to be dead", |r| r.task_status == 4);
    assert_eq!(r.execute_times, 3);
    assert_eq!(r.execute_time, PARKED, "a dead task is parked");
    assert_eq!(r.error_msg, "out of attempts: boom 3");
    assert!(no_lease(&r));
    handle.shutdown();
}

fn retry_schedule_is_linear_by_default_then_dead<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    failing_three_times(&db, &job(run, 0, Act::Fail), [2_000, 4_000]);
    let ran = rec.ran();
    assert_eq!(ran.iter().map(|r| r.attempt).collect::<Vec<_>>(), [1, 2, 3]);
}

fn retry_schedule_fixed<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let task = FixedJob {
        run,
        n: 0,
        act: Act::Fail,
    };
    failing_three_times(&db, &task, [2_000, 2_000]);
    assert_eq!(rec.ran().len(), 3);
}

/// With a pool that polls every 50 ms, a failed task is not run again before its wait is
/// over, and is run soon after.
fn a_retry_waits_for_its_due_time_then_succeeds<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let id = enqueue_one(&db, NewTask::new(&job(run, 0, Act::FailOnce)).unwrap());
    let handle = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the task to succeed", PATIENCE, || {
        db.row(id).is_none().then_some(())
    });
    handle.shutdown();
    let ran = rec.ran();
    assert_eq!(ran.len(), 2);
    let gap = ran[1].start.duration_since(ran[0].end);
    // The wait is computed from the clock in whole milliseconds; allow for the rounding.
    assert!(
        gap >= Duration::from_millis(995),
        "retried after {gap:?}, before the 1 s wait"
    );
    assert!(gap < Duration::from_secs(10), "retried only after {gap:?}");
}

fn retry_after_overrides_the_schedule<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, _) = new_run();
    let id = enqueue_one(
        &db,
        NewTask::new(&job(run, 0, Act::RetryAfterSecs(7))).unwrap(),
    );
    let handle = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap();
    let r = wait_row(&db, id, "the failure", |r| r.task_status == 2);
    assert_eq!(r.execute_time - r.gmt_modified, 7_000);
    assert_eq!((r.execute_times, r.error_msg.as_str()), (1, "rate limited"));
    handle.shutdown();
}

fn dead_after_max_attempts<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let id = enqueue_one(
        &db,
        NewTask::new(&job(run, 0, Act::Fail))
            .unwrap()
            .max_attempts(1),
    );
    let handle = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap();
    let dead = wait_row(&db, id, "the task to be dead", |r| r.task_status == 4);
    assert_eq!(dead.execute_times, 1);
    assert_eq!(dead.execute_time, PARKED);
    assert_eq!(dead.error_msg, "out of attempts: boom 1");
    assert!(no_lease(&dead));
    // Later polls leave it alone: a task enqueued after it runs, and it does not.
    let later = enqueue_one(&db, NewTask::new(&job(run, 1, Act::Succeed)).unwrap());
    handle.wake();
    wait_for("the later task", PATIENCE, || {
        db.row(later).is_none().then_some(())
    });
    handle.shutdown();
    assert_eq!(rec.times(0), 1);
    assert_eq!(
        format!("{:?}", db.row(id).unwrap()),
        format!("{dead:?}"),
        "a dead row is kept as it was"
    );
}

fn give_up_is_dead_at_once<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let id = enqueue_one(&db, NewTask::new(&job(run, 0, Act::GiveUp)).unwrap());
    let handle = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap();
    let dead = wait_row(&db, id, "the task to be dead", |r| r.task_status == 4);
    handle.shutdown();
    assert_eq!((dead.execute_times, dead.max_attempts), (1, 25));
    assert_eq!(dead.execute_time, PARKED);
    assert_eq!(dead.error_msg, "the handler gave up: no such order");
    assert_eq!(rec.times(0), 1);
}

/// Rows this deployment cannot run are held with a message, never deleted, never counted as
/// done, while the healthy tasks around them run.
fn unknown_and_undecodable_tasks_are_held_while_others_run<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let mut conn = db.pooled();
    let unknown = tend::enqueue(&mut conn, &Unregistered { x: 1 })
        .unwrap()
        .id()
        .unwrap();
    let reshaped = tend::enqueue(
        &mut conn,
        &ShapeA {
            text: "written by an older build".into(),
        },
    )
    .unwrap()
    .id()
    .unwrap();
    let garbage = tend::enqueue(&mut conn, &job(run, 999, Act::Succeed))
        .unwrap()
        .id()
        .unwrap();
    C::set_payload(&mut conn, garbage, &[0xff, 0xff, 0xff]);
    let healthy = (0..30).map(|n| NewTask::new(&job(run, n, Act::Succeed)).unwrap());
    assert_eq!(tend::enqueue_many(&mut conn, healthy).unwrap(), 30);
    drop(conn);

    let mut reg = registry::<JobA>();
    reg.register::<ShapeB>().unwrap();
    let handle = builder(&db, reg).build().unwrap().start().unwrap();
    let held = wait_for("30 tasks run and 3 held", PATIENCE, || {
        let rows = db.rows();
        (rec.ran().len() == 30 && rows.len() == 3 && rows.iter().all(|r| r.task_status == 5))
            .then_some(rows)
    });
    let msg = |id| &held.iter().find(|r| r.id == id).unwrap().error_msg;
    assert!(
        msg(unknown).contains("no task type is registered for signature `test.unregistered`"),
        "{}",
        msg(unknown)
    );
    for id in [reshaped, garbage] {
        assert!(
            msg(id).contains("payload does not decode as"),
            "{}",
            msg(id)
        );
    }
    assert!(msg(reshaped).contains("ShapeB"), "{}", msg(reshaped));
    for r in &held {
        assert_eq!(r.execute_time, PARKED);
        assert!(no_lease(r));
    }
    assert_eq!(SHAPE_B_RAN.load(Ordering::SeqCst), 0);
    assert_eq!(rec.times(999), 0);

    // The pool goes on, and leaves the held rows alone.
    let later = enqueue_one(&db, NewTask::new(&job(run, 100, Act::Succeed)).unwrap());
    handle.wake();
    wait_for("a later task", PATIENCE, || {
        db.row(later).is_none().then_some(())
    });
    handle.shutdown();
    assert_eq!(format!("{:?}", db.rows()), format!("{held:?}"));
}

fn a_panicking_handler_fails_and_its_thread_survives<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    // Its retry is an hour away: it runs once in this test.
    let panics = NewTask::new(&job(run, 0, Act::Panic))
        .unwrap()
        .execute_interval(Duration::from_secs(3600));
    let id = enqueue_one(&db, panics);
    let handle = builder(&db, registry::<JobA>())
        .threads(1)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let failed = wait_row(&db, id, "the panic to be recorded", |r| r.task_status == 2);
    assert!(
        failed.error_msg.contains("panicked"),
        "{}",
        failed.error_msg
    );
    assert!(
        failed.error_msg.contains("handler exploded on purpose"),
        "{}",
        failed.error_msg
    );
    assert_eq!(failed.execute_times, 1);
    assert!(
        failed.execute_time > failed.gmt_modified,
        "a retry is scheduled"
    );

    // The pool's only worker thread panicked; it must still run what comes next.
    let tasks = (1..=10).map(|n| NewTask::new(&job(run, n, Act::Succeed)).unwrap());
    tend::enqueue_many(&mut db.pooled(), tasks).unwrap();
    handle.wake();
    wait_for("the tasks after the panic", PATIENCE, || {
        (db.rows().len() == 1).then_some(())
    });
    assert!(handle.shutdown().all_joined());
    let ran = rec.ran();
    assert_eq!(ran.len(), 11);
    assert!(ran.iter().all(|r| r.thread == ran[0].thread), "{ran:?}");
}

// ---------------------------------------------------------------------------------------------
// Schema and settings

fn an_unmigrated_database_is_refused_with_the_fix<C: TestConn>() {
    let Some(db) = TestDb::<C>::unmigrated() else {
        return;
    };
    let (run, _) = new_run();
    let err = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap_err();
    assert!(err.is_not_migrated(), "{err:?}");
    assert!(err.to_string().contains("tend::migrate"), "{err}");
    let err = tend::enqueue(&mut db.pooled(), &job(run, 0, Act::Succeed)).unwrap_err();
    assert!(err.is_not_migrated(), "{err:?}");
    let tasks = [NewTask::new(&job(run, 0, Act::Succeed)).unwrap()];
    let err = tend::enqueue_many(&mut db.pooled(), tasks).unwrap_err();
    assert!(err.is_not_migrated(), "{err:?}");
    assert!(tend::check_schema(&mut db.pooled())
        .unwrap_err()
        .is_not_migrated());

    tend::migrate(&mut db.pooled()).unwrap();
    let handle = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap();
    handle.shutdown();
}

fn bad_builder_settings_are_errors<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    #[allow(clippy::type_complexity)] // a table of named edits reads best inline
    let cases: [(&str, fn(WorkerPoolBuilder<C>) -> WorkerPoolBuilder<C>); 12] = [
        ("threads", |b| b.threads(0)),
        ("threads", |b| b.threads(1025)),
        ("batch_size", |b| b.batch_size(0)),
        ("batch_size", |b| b.batch_size(10_001)),
        ("poll_interval", |b| b.poll_interval(Duration::ZERO)),
        ("lease", |b| b.lease(Duration::ZERO)),
        ("lease", |b| b.lease(Duration::from_millis(999))),
        ("task_timeout", |b| {
            b.lease(Duration::from_secs(10))
                .task_timeout(Duration::from_secs(9))
        }),
        ("task_timeout", |b| b.task_timeout(Duration::from_secs(29))),
        ("owner", |b| b.owner("")),
        ("owner", |b| b.owner("x".repeat(256))),
        ("keep_completed", |b| {
            b.keep_completed(Duration::from_millis(500))
        }),
    ];
    for (i, (setting, edit)) in cases.into_iter().enumerate() {
        let err = edit(WorkerPool::builder(db.pool.clone(), Registry::new()))
            .build()
            .expect_err(&format!("case {i} ({setting}) must be refused"));
        match err.kind() {
            ErrorKind::InvalidSetting { name, .. } => assert_eq!(*name, setting, "case {i}"),
            other => panic!("case {i}: {other:?}"),
        }
        assert!(err.to_string().contains(setting), "{err}");
    }
    // The boundaries themselves are accepted.
    WorkerPool::builder(db.pool.clone(), Registry::new())
        .threads(1)
        .batch_size(1)
        .poll_interval(Duration::from_millis(1))
        .lease(Duration::from_secs(1))
        .task_timeout(Duration::from_secs(1))
        .owner("o".repeat(255))
        .build()
        .unwrap();
}

fn scheduled_tasks_wait_for_their_delay<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let task = NewTask::new(&job(run, 0, Act::Succeed))
        .unwrap()
        .execute_way(ExecuteWay::Schedule)
        .delay(Duration::from_secs(1));
    let id = enqueue_one(&db, task);
    let row = db.row(id).unwrap();
    assert_eq!(row.execute_time - row.gmt_create, 1_000);
    assert_eq!((row.delay_time, row.execute_way), (1, 2));
    let handle = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the scheduled task", PATIENCE, || {
        db.row(id).is_none().then_some(())
    });
    handle.shutdown();
    let ran = rec.ran();
    assert_eq!(ran.len(), 1);
    assert!(ran[0].start_ms >= row.execute_time, "ran before it was due");
}

// ---------------------------------------------------------------------------------------------
// Shutdown

/// 1 thread, batch 50: a task holds the thread while 19 more are claimed behind it. Shutdown
/// lets the running one finish and hands the 19 back: pending, attempt not counted, no lease.
fn shutdown_releases_claimed_but_unstarted_tasks<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let blocker = enqueue_one(&db, NewTask::new(&job(run, 0, Act::Gate)).unwrap());
    let handle = builder(&db, registry::<JobA>())
        .threads(1)
        .batch_size(50)
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the blocker to start", PATIENCE, || {
        rec.has_started(0).then_some(())
    });
    assert_eq!(db.row(blocker).unwrap().task_status, 1);
    let tasks = (1..20).map(|n| NewTask::new(&job(run, n, Act::Succeed)).unwrap());
    tend::enqueue_many(&mut db.pooled(), tasks).unwrap();
    handle.wake();
    wait_for("19 tasks claimed behind the blocker", PATIENCE, || {
        (db.rows().iter().filter(|r| r.task_status == 1).count() == 20).then_some(())
    });

    let stopping = thread::spawn(move || handle.shutdown());
    // The shutdown is under way (it marks the pool stopping first thing) before the running
    // task ends; nothing observable says so, hence the pause.
    thread::sleep(Duration::from_millis(300));
    rec.open_gate();
    let report = stopping.join().unwrap();
    assert!(report.all_joined());

    assert_eq!(
        rec.ran().len(),
        1,
        "only the running task ran: {:?}",
        rec.ran()
    );
    let rows = db.rows();
    assert_eq!(rows.len(), 19, "the running task completed");
    let now = now_ms();
    for r in &rows {
        assert_eq!((r.task_status, r.execute_times), (0, 0), "{r:?}");
        assert!(no_lease(r), "{r:?}");
        assert!(r.execute_time <= now, "due again at once: {r:?}");
    }
    // Counted whether the shutdown or a worker that found the pool stopping handed it back.
    assert_eq!(report.released, 19);
}

/// A task still running at the shutdown deadline is abandoned: the others are handed back,
/// its lease lapses, and another pool runs it again (at least once).
fn shutdown_abandons_a_stuck_task_which_runs_again_later<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let stuck = enqueue_one(&db, NewTask::new(&job(run, 0, Act::Gate)).unwrap());
    let handle = builder(&db, registry::<JobA>())
        .threads(1)
        .batch_size(50)
        .lease(Duration::from_secs(1))
        .shutdown_timeout(Duration::from_millis(300))
        .owner("first")
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the stuck task to start", PATIENCE, || {
        rec.has_started(0).then_some(())
    });
    assert_eq!(db.row(stuck).unwrap().task_status, 1);
    let tasks = (1..20).map(|n| NewTask::new(&job(run, n, Act::Succeed)).unwrap());
    tend::enqueue_many(&mut db.pooled(), tasks).unwrap();
    handle.wake();
    wait_for("19 tasks claimed behind the stuck one", PATIENCE, || {
        (db.rows().iter().filter(|r| r.task_status == 1).count() == 20).then_some(())
    });
    let report = handle.shutdown();
    assert_eq!((report.abandoned, report.released), (1, 19));
    let r = db.row(stuck).unwrap();
    assert_eq!(
        r.task_status, 1,
        "the abandoned task keeps its lease until it lapses"
    );
    assert_eq!(r.lease_owner.as_deref(), Some("first"));
    assert_eq!(db.rows().iter().filter(|r| r.task_status == 0).count(), 19);

    rec.open_gate(); // the abandoned attempt ends; nobody writes its outcome
    let second = builder(&db, registry::<JobA>())
        .owner("second")
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("everything to run", PATIENCE, || {
        db.rows().is_empty().then_some(())
    });
    second.shutdown();
    let attempts: BTreeSet<u32> = rec
        .ran()
        .iter()
        .filter(|r| r.n == 0)
        .map(|r| r.attempt)
        .collect();
    assert_eq!(attempts, [1, 2].into(), "the abandoned task ran again");
    for n in 1..20 {
        assert_eq!(rec.times(n), 1, "task {n}");
    }
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
);

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
    let handle = WorkerPool::builder(small.clone(), registry::<JobA>())
        .threads(2)
        .batch_size(50)
        .poll_interval(Duration::from_millis(10))
        .build()
        .unwrap()
        .start()
        .unwrap();
    let mut largest_wal = 0;
    wait_for("the table to drain", PATIENCE, || {
        largest_wal = largest_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        db.rows().is_empty().then_some(())
    });
    assert!(handle.shutdown().all_joined());
    assert_eq!(rec.ran().len(), N as usize);
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
