//! Worker processes that die, stall or run side by side, on every backend. The test binary
//! re-runs itself as the child worker (`child_process`, an ignored test run by exact name and
//! configured through `TEND_CRASH_*` variables), so the children are real processes with their
//! own connections, killed for real with SIGKILL (`Child::kill` on Unix).
//!
//! * A worker killed mid-task: its row keeps the dead lease until it expires, then another
//!   pool runs the task again under a new token.
//! * A worker whose lease was taken over finishes late: its completion is refused.
//! * Two processes drain one table: every task runs exactly once.
//!
//! Children report what they do as rows in `tend_test_marks`, written on their own
//! connections, never through tend.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tend::{Event, NewTask, Registry, Task, TaskContext, TaskError, WorkerPool};

use support::child::{self_as, ChildProc};
use support::{
    connect, new_run, now_ms, per_backend, pool_for, wait_for, Backend, Mark, Ran, Row, TestConn,
    TestDb,
};

const PATIENCE: Duration = Duration::from_secs(60);
/// The children's lease: short, so that a dead child's tasks come back quickly.
const CHILD_LEASE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Task types. A child and the test's own pool register different types under one signature,
// as two builds of a service would: the payload (`run`) is the same.

/// Child: marks "started", then hangs until the process is killed.
#[derive(Serialize, Deserialize)]
struct Hang {
    run: u64,
}

impl Task for Hang {
    const SIGNATURE: &'static str = "crash.hang";
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        child().mark("started", ctx.id(), now_ms());
        loop {
            thread::park();
        }
    }
}

/// Child: marks "started", then finishes (successfully) once the test writes a "release"
/// mark, by which time its lease has been taken over.
#[derive(Serialize, Deserialize)]
struct Late {
    run: u64,
}

impl Task for Late {
    const SIGNATURE: &'static str = "crash.late";
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let c = child();
        c.mark("started", ctx.id(), now_ms());
        let deadline = Instant::now() + PATIENCE;
        while !c.has_mark("release", ctx.id()) {
            if Instant::now() > deadline {
                return Err(TaskError::new("never released"));
            }
            thread::sleep(Duration::from_millis(50));
        }
        c.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Child: one task of a drained batch; marks its run with start and end.
#[derive(Serialize, Deserialize)]
struct Drain {
    n: u64,
}

impl Task for Drain {
    const SIGNATURE: &'static str = "crash.drain";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        let start = now_ms();
        thread::sleep(Duration::from_millis(5));
        child().mark_span("ran", self.n as i64, start, now_ms());
        Ok(())
    }
}

/// The test's own pool, for both `crash.hang` and `crash.late`: records its run and waits for
/// the test's gate.
#[derive(Serialize, Deserialize)]
struct Resume<const LATE: bool> {
    run: u64,
}

impl<const LATE: bool> Task for Resume<LATE> {
    const SIGNATURE: &'static str = if LATE { "crash.late" } else { "crash.hang" };
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let run = support::run(self.run);
        let (start, start_ms) = (Instant::now(), now_ms());
        let opened = run.wait_gate();
        run.record(Ran {
            n: 0,
            id: ctx.id(),
            attempt: ctx.attempt(),
            pool: 0,
            thread: String::new(),
            start,
            end: Instant::now(),
            start_ms,
        });
        if opened {
            Ok(())
        } else {
            Err(TaskError::new("the gate never opened"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The child process.

/// Whether a mark with this label exists for this task.
type HasMark = Box<dyn Fn(&str, i64) -> bool + Send + Sync>;

/// What a child's handlers use: its database, through plain connections of their own.
struct ChildCtx {
    put: Box<dyn Fn(&Mark) + Send + Sync>,
    has: HasMark,
    finished: AtomicUsize,
}

impl ChildCtx {
    fn mark(&self, label: &str, task: i64, at_ms: i64) {
        self.mark_span(label, task, at_ms, at_ms);
    }

    fn mark_span(&self, label: &str, task: i64, at_ms: i64, end_ms: i64) {
        (self.put)(&Mark {
            label: label.into(),
            task,
            pid: std::process::id().into(),
            at_ms,
            end_ms,
        });
    }

    fn has_mark(&self, label: &str, task: i64) -> bool {
        (self.has)(label, task)
    }
}

static CHILD: OnceLock<ChildCtx> = OnceLock::new();

fn child() -> &'static ChildCtx {
    CHILD
        .get()
        .expect("only child processes run these handlers")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set for a child"))
}

/// The child worker. Does nothing unless started by a test below (so that
/// `cargo test -- --ignored` does not hang on it).
#[test]
#[ignore = "run by the crash tests as their child process"]
fn child_process() {
    let Ok(backend) = std::env::var("TEND_CRASH_BACKEND") else {
        return;
    };
    match Backend::from_name(&backend) {
        #[cfg(feature = "sqlite")]
        Some(Backend::Sqlite) => child_main::<diesel::SqliteConnection>(),
        #[cfg(feature = "postgres")]
        Some(Backend::Postgres) => child_main::<diesel::PgConnection>(),
        #[cfg(feature = "mysql")]
        Some(Backend::Mysql) => child_main::<diesel::MysqlConnection>(),
        _ => panic!("backend `{backend}` is not built in"),
    }
}

fn child_main<C: TestConn>() {
    support::init_logs();
    let (role, url, owner) = (
        env("TEND_CRASH_ROLE"),
        env("TEND_CRASH_URL"),
        env("TEND_CRASH_OWNER"),
    );
    let (put_url, has_url) = (url.clone(), url.clone());
    let ctx = ChildCtx {
        put: Box::new(move |m| C::put_mark(&mut connect::<C>(&put_url), m)),
        has: Box::new(move |label, task| {
            C::marks(&mut connect::<C>(&has_url), label)
                .iter()
                .any(|m| m.task == task)
        }),
        finished: AtomicUsize::new(0),
    };
    assert!(CHILD.set(ctx).is_ok());
    let pool = pool_for::<C>(&url, 4);
    let mut registry = Registry::new();
    let builder = |registry| {
        WorkerPool::builder(pool.clone(), registry)
            .owner(owner.clone())
            .poll_interval(Duration::from_millis(50))
            .lease(CHILD_LEASE)
    };
    match role.as_str() {
        "hang" => {
            registry.register::<Hang>().unwrap();
            let _handle = builder(registry)
                .threads(1)
                .build()
                .unwrap()
                .start()
                .unwrap();
            loop {
                thread::park(); // until SIGKILL
            }
        }
        "late" => {
            registry.register::<Late>().unwrap();
            let refused = Arc::new(AtomicUsize::new(0));
            let counter = refused.clone();
            // One thread and batches of one: the capacity is threads + 2 batches = 3, so with
            // the three tasks in hand the pool is full and claims nothing more, and only the
            // test's pool can take a lapsed lease over.
            let handle = builder(registry)
                .threads(1)
                .batch_size(1)
                // The first attempt outlives its lease: renewals stop after 2 s.
                .task_timeout(CHILD_LEASE)
                .events(move |e: &Event<'_>| {
                    if let Event::OutcomesRefused { count } = e {
                        counter.fetch_add(*count, Ordering::SeqCst);
                    }
                })
                .build()
                .unwrap()
                .start()
                .unwrap();
            wait_for("the three attempts to end", PATIENCE, || {
                (child().finished.load(Ordering::SeqCst) == 3).then_some(())
            });
            // Shutdown writes every outcome still pending before it returns.
            handle.shutdown();
            child().mark_span(
                "refused",
                0,
                now_ms(),
                refused.load(Ordering::SeqCst) as i64,
            );
        }
        "drain" => {
            // Both children start draining together, when the test says go.
            child().mark("ready", 0, now_ms());
            wait_for("the go", PATIENCE, || {
                child().has_mark("go", 0).then_some(())
            });
            registry.register::<Drain>().unwrap();
            // A normal lease: this is about two healthy processes, not about expiry.
            let handle = builder(registry)
                .lease(Duration::from_secs(30))
                .threads(2)
                .batch_size(10)
                .build()
                .unwrap()
                .start()
                .unwrap();
            let mut conn = connect::<C>(&url);
            wait_for("the table to drain", PATIENCE, || {
                C::rows(&mut conn).is_empty().then_some(())
            });
            handle.shutdown();
        }
        other => panic!("unknown child role `{other}`"),
    }
}

// ---------------------------------------------------------------------------------------------
// The parent side.

/// Starts a child worker in `role`, its output going to a log file.
fn spawn_child<C: TestConn>(db: &TestDb<C>, role: &str, owner: &str) -> ChildProc {
    let mut cmd = self_as("child_process");
    cmd.env("TEND_CRASH_ROLE", role)
        .env("TEND_CRASH_BACKEND", C::BACKEND.name())
        .env("TEND_CRASH_URL", &db.url)
        .env("TEND_CRASH_OWNER", owner);
    ChildProc::spawn(cmd, &format!("tend-crash-{}-{owner}", std::process::id()))
}

fn wait_row<C: TestConn>(db: &TestDb<C>, id: i64, what: &str, pred: impl Fn(&Row) -> bool) -> Row {
    wait_for(what, PATIENCE, || db.row(id).filter(|r| pred(r)))
}

/// Waits for a child's mark on `task`, failing early if the child died.
fn wait_mark<C: TestConn>(db: &TestDb<C>, proc: &mut ChildProc, label: &str, task: i64) -> Mark {
    wait_for(&format!("the child to mark `{label}`"), PATIENCE, || {
        proc.assert_running();
        db.marks(label).into_iter().find(|m| m.task == task)
    })
}

/// A child is SIGKILLed while running a task. Its row keeps the dead lease (status 1, the
/// child's token and owner) until the lease expires; then the test's pool claims the task
/// under a new token, reports the reclaim, and runs it to completion.
fn a_killed_workers_task_runs_again_after_its_lease<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let id = tend::enqueue(&mut db.pooled(), &Hang { run })
        .unwrap()
        .id()
        .unwrap();
    let owner = format!("child-hang-{}", C::BACKEND.name());
    let mut proc = spawn_child(&db, "hang", &owner);
    let started = wait_mark(&db, &mut proc, "started", id);
    assert_eq!(started.pid, proc.pid());
    let running = db.row(id).unwrap();
    assert_eq!(running.task_status, 1);
    assert_eq!(running.lease_owner.as_deref(), Some(owner.as_str()));
    let child_token = running.lease_token.expect("the child's lease");

    proc.sigkill();
    let dead = db.row(id).unwrap();
    assert_eq!(
        dead.task_status, 1,
        "a killed worker leaves its row running"
    );
    assert_eq!(dead.lease_token, Some(child_token));
    assert_eq!(dead.lease_owner.as_deref(), Some(owner.as_str()));
    assert_eq!(dead.execute_times, 1);
    let expiry = dead.lease_expires_at.expect("a lease expiry");

    let reclaimed = Arc::new(Mutex::new(Vec::new()));
    let seen = reclaimed.clone();
    let mut registry = Registry::new();
    registry.register::<Resume<false>>().unwrap();
    let parent_lease = Duration::from_secs(30);
    let handle = WorkerPool::builder(db.pool.clone(), registry)
        .owner("parent")
        .lease(parent_lease)
        .poll_interval(Duration::from_millis(50))
        .events(move |e: &Event<'_>| {
            if let Event::LeaseExpired(task) = e {
                seen.lock().unwrap_or_else(|p| p.into_inner()).push(task.id);
            }
        })
        .build()
        .unwrap()
        .start()
        .unwrap();
    let taken = wait_for("the task to be claimed again", PATIENCE, || {
        db.row(id)
            .filter(|r| r.lease_owner.as_deref() == Some("parent"))
    });
    assert_eq!(taken.task_status, 1);
    assert_eq!(taken.execute_times, 2, "the killed attempt counts");
    assert_ne!(taken.lease_token, Some(child_token), "a new fencing token");
    // The lease writes no time but its end: the claim ran at that end less the lease.
    let claimed_at =
        taken.lease_expires_at.expect("the new lease") - parent_lease.as_millis() as i64;
    assert!(
        claimed_at >= expiry,
        "claimed at {claimed_at} while the dead lease ran until {expiry}"
    );
    // The event follows the claim's commit: wait for it rather than race it.
    let reported = wait_for("the reclaim to be reported", PATIENCE, || {
        let ids = reclaimed.lock().unwrap().clone();
        (!ids.is_empty()).then_some(ids)
    });
    assert_eq!(reported, [id]);

    rec.open_gate();
    wait_for("the task to complete", PATIENCE, || {
        db.row(id).is_none().then_some(())
    });
    handle.shutdown();
    let ran = rec.ran();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].attempt, 2);
    assert!(ran[0].start_ms >= expiry);
}

/// A child's attempt outlives its lease (it stops renewing at the task timeout); the test's
/// pool takes the task over and holds it. The child then finishes and tries to complete the
/// task under its old token: refused, the row stays the new holder's, and the new holder
/// completes it. A second task the child holds all along completes normally.
fn a_stale_workers_completion_is_refused<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let enqueue = || {
        tend::enqueue(&mut db.pooled(), &Late { run })
            .unwrap()
            .id()
            .unwrap()
    };
    let (stale, kept, filler) = (enqueue(), enqueue(), enqueue());
    let owner = format!("child-late-{}", C::BACKEND.name());
    let mut proc = spawn_child(&db, "late", &owner);
    wait_mark(&db, &mut proc, "started", stale);
    let child_token = db
        .row(stale)
        .unwrap()
        .lease_token
        .expect("the child's lease");
    // The child holds all three (two wait for its only thread) before the test's pool exists,
    // so the test's pool can only ever take the lapsed one.
    for id in [kept, filler] {
        wait_row(&db, id, "the child to claim its other tasks", |r| {
            r.lease_owner.as_deref() == Some(owner.as_str())
        });
    }

    let mut registry = Registry::new();
    registry.register::<Resume<true>>().unwrap();
    let handle = WorkerPool::builder(db.pool.clone(), registry)
        .owner("parent")
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap()
        .start()
        .unwrap();
    let taken = wait_for("the lapsed lease to be taken over", PATIENCE, || {
        proc.assert_running();
        db.row(stale)
            .filter(|r| r.lease_owner.as_deref() == Some("parent"))
    });
    assert_ne!(taken.lease_token, Some(child_token));
    assert_eq!(
        db.row(kept).unwrap().lease_owner.as_deref(),
        Some(owner.as_str()),
        "the child still holds its other task"
    );

    // Let the child finish all three: it completes the first under its old token, then the rest,
    // then shuts down and exits.
    for id in [stale, kept, filler] {
        let release = Mark {
            label: "release".into(),
            task: id,
            pid: 0,
            at_ms: now_ms(),
            end_ms: now_ms(),
        };
        C::put_mark(&mut db.pooled(), &release);
    }
    let status = proc.wait_exit();
    assert!(status.success(), "child: {status}\n{}", proc.output());
    let refused = db.marks("refused");
    assert_eq!(refused.len(), 1, "{}", proc.output());
    assert_eq!(
        refused[0].end_ms, 1,
        "exactly the stale completion was refused"
    );
    assert!(
        db.row(kept).is_none() && db.row(filler).is_none(),
        "the child's valid completions went through"
    );
    let after = db
        .row(stale)
        .expect("the refused completion deleted nothing");
    assert_eq!(
        (
            after.task_status,
            after.lease_token,
            after.lease_owner.as_deref()
        ),
        (1, taken.lease_token, Some("parent"))
    );

    rec.open_gate();
    wait_for("the new holder to complete it", PATIENCE, || {
        db.row(stale).is_none().then_some(())
    });
    handle.shutdown();
    let ran = rec.ran();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].attempt, 2);
}

/// Two worker processes drain one table: every task runs exactly once, and both take part.
fn two_processes_never_run_a_task_twice<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    const N: u64 = 200;
    // Enqueued before the children start, in one transaction: both find a full table.
    let tasks = (0..N).map(|n| NewTask::new(&Drain { n }).unwrap());
    assert_eq!(
        tend::enqueue_many(&mut db.pooled(), tasks).unwrap(),
        N as usize
    );
    let b = C::BACKEND.name();
    let mut procs = [
        spawn_child(&db, "drain", &format!("child-a-{b}")),
        spawn_child(&db, "drain", &format!("child-b-{b}")),
    ];
    wait_for("both children to be ready", PATIENCE, || {
        for p in &mut procs {
            p.assert_running();
        }
        (db.marks("ready").len() == 2).then_some(())
    });
    let go = Mark {
        label: "go".into(),
        task: 0,
        pid: 0,
        at_ms: now_ms(),
        end_ms: now_ms(),
    };
    C::put_mark(&mut db.pooled(), &go);
    for p in &mut procs {
        let status = p.wait_exit();
        assert!(status.success(), "child: {status}\n{}", p.output());
    }
    assert!(db.rows().is_empty());
    let runs = db.marks("ran");
    let mut per_task = vec![Vec::new(); N as usize];
    for m in &runs {
        per_task[m.task as usize].push(m);
    }
    for (n, r) in per_task.iter().enumerate() {
        assert_eq!(r.len(), 1, "task {n} ran {} times: {r:?}", r.len());
    }
    for p in &procs {
        assert!(
            runs.iter().any(|m| m.pid == p.pid()),
            "process {} ran no task",
            p.pid()
        );
    }
}

per_backend!(
    a_killed_workers_task_runs_again_after_its_lease,
    a_stale_workers_completion_is_refused,
    two_processes_never_run_a_task_twice,
);
