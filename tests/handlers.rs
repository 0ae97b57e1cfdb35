//! Handlers as applications write them (issue 13), end to end on every backend: `run_at`, a
//! snooze that gives its attempt back (and its bound), `fallback` per enqueue, cancelling from
//! code, and plain `enqueue` refusing a `Sync` task.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tend::{
    ErrorKind, NewTask, PoolHandle, Registry, Task, TaskContext, TaskError, TaskOptions, ThreadWay,
    WorkerPool,
};

use support::{now_ms, per_backend, wait_for, TestConn, TestDb, PARKED};

const PATIENCE: Duration = Duration::from_secs(60);

/// Runs of (test run, key), counted by the handlers.
fn runs() -> &'static Mutex<HashMap<(u64, u64), u64>> {
    static RUNS: OnceLock<Mutex<HashMap<(u64, u64), u64>>> = OnceLock::new();
    RUNS.get_or_init(Default::default)
}

fn ran(run: u64, key: u64) -> u64 {
    runs()
        .lock()
        .unwrap()
        .get(&(run, key))
        .copied()
        .unwrap_or(0)
}

fn count(run: u64, key: u64) -> u64 {
    let mut m = runs().lock().unwrap();
    let n = m.entry((run, key)).or_default();
    *n += 1;
    *n
}

fn new_run() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Act {
    Succeed,
    /// Snoozes (10 ms) on its first `n` runs, then succeeds.
    SnoozeTimes(u64),
    GiveUp,
    /// Blocks until the test's gate for `run` opens, then succeeds.
    Gate,
}

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    run: u64,
    key: u64,
    act: Act,
}

impl Task for Job {
    const SIGNATURE: &'static str = "test.handlers.job";

    fn options() -> TaskOptions {
        TaskOptions::new()
            .max_attempts(2)
            .execute_interval(Duration::from_secs(1))
            .fallback_threshold(0)
    }

    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        let n = count(self.run, self.key);
        match self.act {
            Act::Succeed => Ok(()),
            Act::SnoozeTimes(k) if n <= k => Err(TaskError::snooze(
                "partner quota used up",
                Duration::from_millis(10),
            )),
            Act::SnoozeTimes(_) => Ok(()),
            Act::GiveUp => Err(TaskError::give_up("no such order")),
            Act::Gate => {
                while !gate_open(self.run) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(())
            }
        }
    }

    fn fallback(&self, _: &TaskContext) -> Result<(), TaskError> {
        count(self.run, 1_000_000 + self.key);
        Ok(())
    }
}

fn gates() -> &'static Mutex<Vec<u64>> {
    static G: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    &G
}

fn gate_open(run: u64) -> bool {
    gates().lock().unwrap().contains(&run)
}

fn start<C: TestConn>(db: &TestDb<C>) -> PoolHandle {
    let mut registry = Registry::new();
    registry.register::<Job>().unwrap();
    WorkerPool::builder(db.pool.clone(), registry)
        .threads(2)
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap()
        .start()
        .unwrap()
}

fn job(run: u64, key: u64, act: Act) -> NewTask {
    NewTask::new(&Job { run, key, act }).unwrap()
}

fn enqueue<C: TestConn>(db: &TestDb<C>, t: NewTask) -> i64 {
    tend::enqueue_new(&mut db.pooled(), t)
        .unwrap()
        .id()
        .unwrap()
}

fn gone<C: TestConn>(db: &TestDb<C>, id: i64) -> bool {
    db.row(id).is_none()
}

/// `run_at` stores the absolute time as the due time; a past time is due at once, a future
/// one waits for it.
fn run_at_is_the_due_time<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let run = new_run();
    let later = SystemTime::now() + Duration::from_secs(3);
    let later_ms = later
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let past = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400);
    let future = enqueue(&db, job(run, 1, Act::Succeed).run_at(later));
    let overdue = enqueue(&db, job(run, 2, Act::Succeed).run_at(past));
    assert_eq!(db.row(future).unwrap().execute_time, later_ms);
    assert_eq!(db.row(overdue).unwrap().execute_time, 86_400_000);
    let handle = start(&db);
    wait_for("the overdue task", PATIENCE, || {
        gone(&db, overdue).then_some(())
    });
    if now_ms() < later_ms - 500 {
        assert_eq!(ran(run, 1), 0, "not before its time");
    }
    wait_for("the future task", PATIENCE, || {
        gone(&db, future).then_some(())
    });
    assert!(now_ms() >= later_ms, "it ran at or after its time");
    handle.shutdown();
}

/// Three snoozes and a success with `max_attempts = 2`: snoozes gave their attempts back.
fn a_snooze_gives_its_attempt_back<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let run = new_run();
    let id = enqueue(&db, job(run, 1, Act::SnoozeTimes(3)));
    let handle = start(&db);
    wait_for("the task to succeed", PATIENCE, || {
        gone(&db, id).then_some(())
    });
    handle.shutdown();
    assert_eq!(ran(run, 1), 4, "three snoozes, then the success");
    assert_eq!(ran(run, 1_000_000 + 1), 0, "a snooze runs no fallback");
}

/// A task enqueued longer ago than its snooze limit: each snooze counts, so it dies.
fn snoozing_is_bounded<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let run = new_run();
    let id = enqueue(&db, job(run, 1, Act::SnoozeTimes(u64::MAX)).fallback(None));
    let two_days_ago = now_ms() - 2 * 86_400_000;
    db.exec(&format!(
        "UPDATE consistency_task SET gmt_create = {two_days_ago} WHERE id = {id}"
    ));
    let handle = start(&db);
    wait_for("the task to die", PATIENCE, || {
        db.row(id).filter(|r| r.task_status == 4).map(|_| ())
    });
    handle.shutdown();
    let row = db.row(id).unwrap();
    assert_eq!(ran(run, 1), 2, "both attempts used");
    assert!(row.error_msg.contains("partner quota used up"), "{row:?}");
}

/// `fallback(None)` turns the type's fallback off for one task; `fallback(Some(..))` turns it
/// on for a type whose options have none.
fn fallback_is_set_per_enqueue<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let run = new_run();
    let on = enqueue(&db, job(run, 1, Act::GiveUp).fallback(Some("undo_order")));
    let off = enqueue(&db, job(run, 2, Act::GiveUp).fallback(None));
    assert_eq!(
        db.row(on).unwrap().fallback_class_name.as_deref(),
        Some("undo_order")
    );
    let handle = start(&db);
    wait_for("both outcomes", PATIENCE, || {
        (gone(&db, on) && db.row(off).is_some_and(|r| r.task_status == 4)).then_some(())
    });
    handle.shutdown();
    assert_eq!(
        ran(run, 1_000_000 + 1),
        1,
        "the fallback ran and completed the task"
    );
    assert_eq!(ran(run, 1_000_000 + 2), 0, "no fallback for the other");
}

/// `tend::cancel` with the CLI's rules: a pending task is cancelled; a running one only when
/// asked, and then its worker's result is discarded.
fn cancel_from_code<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let run = new_run();
    let later = SystemTime::now() + Duration::from_secs(3600);
    let pending = enqueue(&db, job(run, 1, Act::Succeed).run_at(later));
    assert!(tend::cancel(&mut db.pooled(), pending, false).unwrap());
    let row = db.row(pending).unwrap();
    assert_eq!((row.task_status, row.execute_time), (4, PARKED));
    assert!(row.error_msg.contains("cancelled by the application"));
    assert!(
        !tend::cancel(&mut db.pooled(), pending, false).unwrap(),
        "already dead"
    );
    assert!(
        !tend::cancel(&mut db.pooled(), 987_654, true).unwrap(),
        "no such task"
    );

    let running = enqueue(&db, job(run, 2, Act::Gate));
    let handle = start(&db);
    wait_for("the task to start", PATIENCE, || {
        (ran(run, 2) == 1).then_some(())
    });
    assert!(
        !tend::cancel(&mut db.pooled(), running, false).unwrap(),
        "running"
    );
    assert!(
        tend::cancel(&mut db.pooled(), running, true).unwrap(),
        "forced"
    );
    gates().lock().unwrap().push(run);
    std::thread::sleep(Duration::from_millis(300));
    handle.shutdown();
    let row = db
        .row(running)
        .expect("kept: the worker's success was refused");
    assert_eq!((row.task_status, row.lease_token), (4, None));
}

/// Plain `enqueue` cannot run a task in the caller's thread after a commit it does not see:
/// a `Sync` task is refused, as a `WithoutTransaction` one is, with the fix in the message.
fn plain_enqueue_refuses_sync<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let t = job(new_run(), 1, Act::Succeed).thread_way(ThreadWay::Sync);
    let err = tend::enqueue_new(&mut db.pooled(), t).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::InvalidSetting {
                name: "thread_way",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("Outbox"), "{err}");
    assert!(db.rows().is_empty());
}

per_backend!(
    run_at_is_the_due_time,
    a_snooze_gives_its_attempt_back,
    snoozing_is_bounded,
    fallback_is_set_per_enqueue,
    cancel_from_code,
    plain_enqueue_refuses_sync,
);
