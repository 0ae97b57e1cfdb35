//! Exactly-once local effects (issue 13): a handler increments a counter row and completes its
//! task in one transaction (`tend::complete_in`). A worker process draining 10 000 such tasks
//! is SIGKILLed 20 times at random moments; the counter ends equal to the number of tasks,
//! exactly, on every backend: no increment is lost and none is made twice, although tasks in
//! flight at a kill run again.
//!
//! Also, in one process: a handler whose lease was taken over cannot complete, and its writes
//! roll back.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::Connection;
use serde::{Deserialize, Serialize};
use support::child::{ChildCfg, ChildWorker};
use support::runlog::RunLog;
use support::{
    per_backend, quick, task_count, wait_for, Db, Increment, Rng, TestConn, COUNTER_DDL,
};
use tend::{ErrorKind, Registry, Task, TaskContext, TaskError, WorkerPool};

#[test]
#[ignore = "a worker process started by the other tests"]
fn child_worker() {
    support::child::main()
}

per_backend!(scenarios: crash_exactly_once, lost_lease_rolls_back);

fn counter<C: TestConn>(conn: &mut C) -> i64 {
    conn.i64s("SELECT n AS v FROM tend_test_counter WHERE id = 1")[0]
}

fn crash_exactly_once<C: TestConn>() {
    let Some(db) = Db::create(C::BACKEND, "exactly-once") else {
        return;
    };
    let (tasks, kills_wanted) = if quick() { (2000, 5) } else { (10_000, 20) };
    let seed = Rng::seed();
    let mut rng = Rng::new(seed);
    let pool = support::migrated::<C>(&db, 2);
    pool.get().unwrap().batch_execute(COUNTER_DDL).unwrap();
    let enqueue = |keys: std::ops::RangeInclusive<i64>| {
        for chunk in keys.collect::<Vec<i64>>().chunks(500) {
            let batch: Vec<tend::NewTask> = chunk
                .iter()
                .map(|&key| tend::NewTask::new(&Increment { key }).unwrap())
                .collect();
            tend::enqueue_many(&mut *pool.get().unwrap(), batch).unwrap();
        }
    };
    let mut tasks = tasks;
    enqueue(1..=tasks);
    let log = RunLog::create(&format!("exactly-once-{}", C::BACKEND.name()));
    let mut cfg = ChildCfg::new(C::BACKEND, vec![db.url.clone()]);
    cfg.lease = Duration::from_secs(2);
    cfg.poll = Duration::from_millis(100);

    let started = Instant::now();
    let mut kills = 0;
    while kills < kills_wanted {
        let child = ChildWorker::spawn(&cfg, &log);
        let before = task_count(&mut *pool.get().unwrap());
        // Kill it at a random moment once it has completed some tasks.
        wait_for(
            "the child's first completions",
            Duration::from_secs(60),
            || task_count(&mut *pool.get().unwrap()) < before,
        );
        std::thread::sleep(Duration::from_millis(rng.range(20, 250)));
        child.kill();
        kills += 1;
        // On a fast machine the tasks could run out before the last kill: top them up, so
        // that every kill lands mid-drain.
        if task_count(&mut *pool.get().unwrap()) < 500 && kills < kills_wanted {
            enqueue(tasks + 1..=tasks + 2000);
            tasks += 2000;
        }
    }
    let child = ChildWorker::spawn(&cfg, &log);
    wait_for("the table to empty", Duration::from_secs(300), || {
        task_count(&mut *pool.get().unwrap()) == 0
    });
    child.stop();
    let n = counter(&mut *pool.get().unwrap());
    println!(
        "EXACTLY_ONCE backend={} tasks={tasks} kills={kills} counter={n} lost={} doubled={} \
         elapsed_s={:.1} seed={seed}",
        C::BACKEND.name(),
        (tasks - n).max(0),
        (n - tasks).max(0),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(n, tasks, "the counter counts every task exactly once");
}

/// A handler whose lease another worker took over mid-attempt: `complete_in` refuses with
/// `LeaseLost`, the handler's transaction rolls back (the counter is unchanged), and the row
/// stays with the other worker's lease.
#[derive(Serialize, Deserialize)]
struct Overtaken;

/// The test's attempt, on the backend's connection type.
#[allow(clippy::type_complexity)]
struct Attempt(Box<dyn Fn(&TaskContext) -> Result<(), TaskError> + Send + Sync>);

impl Task for Overtaken {
    const SIGNATURE: &'static str = "tend.tests.overtaken";
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        (ctx.state::<Attempt>()?.0)(ctx)
    }
}

fn lost_lease_rolls_back<C: TestConn>() {
    let Some(db) = Db::create(C::BACKEND, "exactly-once-lost") else {
        return;
    };
    let pool = support::migrated::<C>(&db, 4);
    pool.get().unwrap().batch_execute(COUNTER_DDL).unwrap();
    let id = tend::enqueue(&mut *pool.get().unwrap(), &Overtaken)
        .unwrap()
        .id()
        .unwrap();
    let seen = Arc::new(AtomicBool::new(false));
    let (p, seen_in) = (pool.clone(), seen.clone());
    let attempt = Attempt(Box::new(move |ctx: &TaskContext| {
        // Another worker's claim after this attempt's lease expired, as far as the row goes.
        p.get()
            .unwrap()
            .batch_execute(&format!(
                "UPDATE consistency_task SET lease_token = 4242, execute_time = {} WHERE id = {}",
                i64::MAX - 1,
                ctx.id()
            ))
            .unwrap();
        let mut conn = p.get()?;
        conn.transaction(|conn| {
            conn.batch_execute("UPDATE tend_test_counter SET n = n + 1 WHERE id = 1")?;
            match tend::complete_in(conn, ctx) {
                Err(e) if matches!(e.kind(), ErrorKind::LeaseLost { id } if *id == ctx.id()) => {
                    seen_in.store(true, Ordering::SeqCst);
                    Err(TaskError::give_up(e.to_string()))
                }
                other => panic!("complete_in after the lease was taken: {other:?}"),
            }
        })
    }));
    let mut registry = Registry::new();
    registry
        .state(attempt)
        .unwrap()
        .register::<Overtaken>()
        .unwrap();
    let handle = WorkerPool::builder(pool.clone(), registry)
        .build()
        .unwrap()
        .start()
        .unwrap();
    handle.wake();
    wait_for("the attempt", Duration::from_secs(30), || {
        seen.load(Ordering::SeqCst)
    });
    handle.shutdown();
    let mut conn = pool.get().unwrap();
    assert_eq!(counter(&mut *conn), 0, "the handler's write rolled back");
    assert_eq!(
        conn.i64s(&format!(
            "SELECT lease_token AS v FROM consistency_task WHERE id = {id}"
        )),
        [4242],
        "the row stays with the other worker's lease"
    );
}
