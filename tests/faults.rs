//! Fault injection (issue 7): with real processes and real databases, nothing is lost and
//! nothing runs twice at the same time.
//!
//! Every scenario runs on PostgreSQL, MariaDB/MySQL and SQLite (`<scenario>::<backend>`), and
//! prints one `FAULTS <scenario> backend=... ...` line with its figures. The counts come from
//! the run log (`support::runlog`), an append-only file the handlers write, never from tend's
//! own bookkeeping. Seeds are printed and can be replayed with `TEND_FAULTS_SEED`.
//!
//! `TEND_FAULTS_QUICK=1` scales every scenario down (e.g. on a loaded laptop); the figures
//! lines say what was used.
//!
//! Run: `TEND_PG_URL=postgres://postgres@127.0.0.1:5432/test
//! TEND_MYSQL_URL=mysql://root@127.0.0.1:3306/test TEND_REQUIRE_DBS=1
//! cargo test --all-features --test faults`.

mod support;

use std::collections::HashSet;

use diesel::connection::SimpleConnection;
use diesel::Connection;
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tend::{Task, TaskContext, TaskError, TaskOptions};

use support::child::{stat, ChildCfg, ChildWorker};
use support::runlog::RunLog;
use support::verify::{self, Kill};
use support::{
    figures, now_us, per_backend, quick, task_count, wait_for, Backend, Cutter, Db, Rng, TestConn,
};

/// The entry point of the worker processes the scenarios start.
#[test]
#[ignore = "a worker process started by the other tests"]
fn child_worker() {
    support::child::main()
}

/// Multi-process scenarios measure times; they run one at a time.
fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

per_backend!(scenarios: crash, outage, contention, atomicity, poison, bad_input);

// ------------------------------------------------------------------------------- 1. crash

/// A worker process drains N tasks while the test SIGKILLs it K times at seeded random
/// moments, restarting it each time.
fn crash<C: TestConn>() {
    let Some(db) = Db::create(C::BACKEND, "faults") else {
        return;
    };
    let _g = heavy();
    let (tasks, kills_wanted) = if quick() { (2000, 5) } else { (10_000, 20) };
    let seed = Rng::seed();
    let mut rng = Rng::new(seed);
    let b = C::BACKEND.name();
    figures(format!(
        "FAULTS crash backend={b} seed={seed} (replay with TEND_FAULTS_SEED={seed})"
    ));

    let pool = support::migrated::<C>(&db, 2);
    let log = RunLog::create(&format!("crash-{b}"));
    let mut keys: Vec<i64> = (1..=tasks).collect();
    support::enqueue_work(&mut *pool.get().unwrap(), &keys, 2, log.id);
    let mut cfg = ChildCfg::new(C::BACKEND, vec![db.url.clone()]);
    cfg.lease = Duration::from_secs(2);
    cfg.poll = Duration::from_millis(100);

    let started = Instant::now();
    let mut kills = Vec::new();
    while kills.len() < kills_wanted {
        let child = ChildWorker::spawn(&cfg, &log);
        let pid = child.pid;
        // Kill it at a random moment after it started running tasks.
        wait_for("the child's first task", Duration::from_secs(60), || {
            log.read().runs.iter().any(|r| r.pid == pid)
        });
        std::thread::sleep(Duration::from_millis(rng.range(20, 250)));
        let at = child.kill();
        kills.push(Kill { pid, at });
        // On a fast machine the tasks could run out before the last kill: top them up, so that
        // every kill lands mid-drain.
        if task_count(&mut *pool.get().unwrap()) < 500 && kills.len() < kills_wanted {
            let more: Vec<i64> = (keys.len() as i64 + 1..=keys.len() as i64 + 2000).collect();
            support::enqueue_work(&mut *pool.get().unwrap(), &more, 2, log.id);
            keys.extend(more);
        }
    }
    // A last worker drains what is left.
    let child = ChildWorker::spawn(&cfg, &log);
    wait_for("the table to empty", Duration::from_secs(180), || {
        task_count(&mut *pool.get().unwrap()) == 0
    });
    child.stop();
    let elapsed = started.elapsed();

    let parsed = log.read();
    let report = verify::check(&parsed, &keys, &kills);
    let handover = verify::handover(&parsed, &kills);
    let worst = handover.iter().map(|h| h.2).max().unwrap_or(0);
    figures(format!(
        "FAULTS crash backend={b} tasks={} kills={} runs={} duplicates={} lost={} overlaps={} \
         unexplained={} worst_rerun_after_kill_ms={worst} lease_ms={} elapsed_s={:.1} seed={seed}",
        keys.len(),
        kills.len(),
        report.runs,
        report.duplicates,
        report.lost.len(),
        report.overlaps.len(),
        report.unexplained.len(),
        cfg.lease.as_millis(),
        elapsed.as_secs_f64()
    ));
    report.assert_sound("crash");
    report.assert_reruns_explained("crash");
    assert_eq!(
        task_count(&mut *pool.get().unwrap()),
        0,
        "the table is empty"
    );
}

// ------------------------------------------------------------------------------ 2. outage

/// Mid-drain, the database is cut off for 10 s (proxy down / file locked): nothing is lost,
/// the pool resumes within 2 s of the database coming back, no thread dies, and the pool backs
/// off instead of spinning (its CPU time and its error lines during the outage are bounded).
fn outage<C: TestConn>() {
    let Some(db) = Db::create(C::BACKEND, "faults") else {
        return;
    };
    let _g = heavy();
    let b = C::BACKEND.name();
    let tasks = if quick() { 1000 } else { 3000 };
    let outage = Duration::from_secs(if quick() { 5 } else { 10 });
    let pool = support::migrated::<C>(&db, 2);
    let log = RunLog::create(&format!("outage-{b}"));
    let keys: Vec<i64> = (1..=tasks).collect();
    support::enqueue_work(&mut *pool.get().unwrap(), &keys, 4, log.id);

    let (mut cutter, url) = Cutter::new(&db);
    let mut cfg = ChildCfg::new(C::BACKEND, vec![url]);
    cfg.lease = Duration::from_secs(3);
    cfg.poll = Duration::from_millis(500);
    // r2d2 retries a failed connect after a backoff capped at half its checkout timeout (15 s
    // with its default of 30 s): a service that wants to be back within 2 s of its database
    // keeps it short. 1 s here: tend's own backoff (at most 1 s) plus r2d2's (0.5 s).
    cfg.conn_timeout = Duration::from_secs(1);
    cfg.busy = Duration::from_millis(100);
    let child = ChildWorker::spawn(&cfg, &log);
    wait_for("a quarter of the tasks", Duration::from_secs(60), || {
        log.read().ended() >= keys.len() / 4
    });
    let threads_before = child.tend_threads();
    let cpu_before = child.cpu_ticks();
    let down_at = now_us();
    cutter.down();
    // The outage itself: a fault window of fixed length, not a synchronisation.
    std::thread::sleep(outage);
    let cpu_during = child.cpu_ticks() - cpu_before;
    let done_before_up = log.read().ended();
    cutter.up();
    let up_at = now_us();
    wait_for("the table to empty", Duration::from_secs(120), || {
        task_count(&mut *pool.get().unwrap()) == 0
    });
    let threads_after = child.tend_threads();
    let stats = child.stop();

    let parsed = log.read();
    let report = verify::check(&parsed, &keys, &[]);
    // Resumed: the first run that started and finished after the database came back.
    let first_start = parsed
        .runs
        .iter()
        .filter(|r| r.start >= up_at)
        .map(|r| r.start)
        .min()
        .expect("runs after the outage");
    let first_done = parsed
        .runs
        .iter()
        .filter(|r| r.start >= up_at)
        .filter_map(|r| r.end)
        .min()
        .expect("a finished run after the outage");
    let (resume_ms, done_ms) = ((first_start - up_at) / 1000, (first_done - up_at) / 1000);
    let in_window = |kind: &str| {
        parsed
            .logs
            .iter()
            .filter(|(k, _, t)| k == kind && *t >= down_at && *t <= up_at)
            .count()
    };
    let (claim_errors, write_errors) = (in_window("claim"), in_window("write"));
    let all_errors = parsed
        .logs
        .iter()
        .filter(|(_, _, t)| *t >= down_at && *t <= up_at)
        .count();
    // Re-runs are allowed only for tasks whose outcome could not be written: the earlier run
    // started before the database came back.
    let by_key = parsed.by_key();
    let late_reruns: Vec<i64> = by_key
        .iter()
        .filter(|(_, runs)| {
            runs.len() > 1 && runs[..runs.len() - 1].iter().any(|r| r.start > up_at)
        })
        .map(|(k, _)| *k)
        .collect();
    figures(format!(
        "FAULTS outage backend={b} tasks={tasks} outage_s={} done_before_up={done_before_up} \
         resumed_ms={resume_ms} recovery_ms={done_ms} duplicates={} lost={} overlaps={} \
         claim_errors_logged={claim_errors} write_errors_logged={write_errors} \
         all_warnings_logged={all_errors} cpu_ms_during_outage={} threads={} via={}",
        outage.as_secs(),
        report.duplicates,
        report.lost.len(),
        report.overlaps.len(),
        cpu_during * 10,
        threads_after.len(),
        if C::BACKEND == Backend::Sqlite {
            "exclusive lock"
        } else {
            "proxy"
        },
    ));
    report.assert_sound("outage");
    assert!(
        late_reruns.is_empty(),
        "re-runs after the outage: {late_reruns:?}"
    );
    assert_eq!(
        task_count(&mut *pool.get().unwrap()),
        0,
        "the table is empty"
    );
    assert!(
        done_ms <= 2000,
        "the pool took {done_ms} ms after the database came back to complete a task"
    );
    assert_eq!(threads_before, threads_after, "a tend thread died");
    assert_eq!(stat(&stats, "abandoned"), 0, "{stats}");
    // Backoff, not a spin: at most ~2 error lines a second per role, and little CPU.
    let limit = 3 * outage.as_secs() as usize + 10;
    assert!(
        claim_errors <= limit && write_errors <= limit,
        "the pool spun on errors: {claim_errors} claim and {write_errors} write errors logged \
         in {outage:?}"
    );
    assert!(
        cpu_during * 10 < outage.as_millis() as u64 / 5,
        "the pool used {} ms of CPU during a {outage:?} outage",
        cpu_during * 10
    );
}

// -------------------------------------------------------------------------- 3. contention

/// 4 processes × 8 threads drain one table, then two databases through `WorkerPool::sharded`:
/// no task runs twice at the same time (nor twice at all: nothing failed).
fn contention<C: TestConn>() {
    let (Some(db1), Some(db2)) = (
        Db::create(C::BACKEND, "faults"),
        Db::create(C::BACKEND, "faults"),
    ) else {
        return;
    };
    let _g = heavy();
    let b = C::BACKEND.name();
    let (procs, threads) = (4, 8);
    let tasks: i64 = if quick() { 2000 } else { 10_000 };
    let pools = [
        support::migrated::<C>(&db1, 2),
        support::migrated::<C>(&db2, 2),
    ];
    for shards in [1usize, 2] {
        let log = RunLog::create(&format!("contention-{b}-{shards}"));
        let keys: Vec<i64> = (1..=tasks).collect();
        for (i, p) in pools.iter().take(shards).enumerate() {
            // Key k lives on shard k mod shards, as the default router puts it.
            let mine: Vec<i64> = keys
                .iter()
                .copied()
                .filter(|k| (*k as usize) % shards == i)
                .collect();
            support::enqueue_work(&mut *p.get().unwrap(), &mine, 1, log.id);
        }
        let urls = [&db1, &db2]
            .iter()
            .take(shards)
            .map(|d| d.url.clone())
            .collect();
        let mut cfg = ChildCfg::new(C::BACKEND, urls);
        cfg.threads = threads;
        cfg.batch = 20;
        cfg.lease = Duration::from_secs(30);
        cfg.poll = Duration::from_millis(100);
        let started = Instant::now();
        let children: Vec<ChildWorker> =
            (0..procs).map(|_| ChildWorker::spawn(&cfg, &log)).collect();
        wait_for("every shard to empty", Duration::from_secs(180), || {
            pools
                .iter()
                .take(shards)
                .all(|p| task_count(&mut *p.get().unwrap()) == 0)
        });
        let elapsed = started.elapsed();
        let pids: Vec<u32> = children.iter().map(|c| c.pid).collect();
        for c in children {
            let stats = c.stop();
            assert_eq!(stat(&stats, "abandoned"), 0, "{stats}");
        }
        let parsed = log.read();
        let report = verify::check(&parsed, &keys, &[]);
        let share: Vec<usize> = pids
            .iter()
            .map(|p| parsed.runs.iter().filter(|r| r.pid == *p).count())
            .collect();
        figures(format!(
            "FAULTS contention backend={b} databases={shards} processes={procs} \
             threads={threads} tasks={tasks} runs={} duplicates={} lost={} overlaps={} \
             runs_per_process={share:?} elapsed_s={:.1}",
            report.runs,
            report.duplicates,
            report.lost.len(),
            report.overlaps.len(),
            elapsed.as_secs_f64()
        ));
        report.assert_sound("contention");
        assert_eq!(report.duplicates, 0, "tasks ran twice without any fault");
    }
}

// -------------------------------------------------------------------------- 4. atomicity

/// Marks the panics the tests cause on purpose, so the panic hook keeps them quiet.
const INTENDED: &str = "tend-test: intended panic";

/// Installs (once) a panic hook that stays silent for [`INTENDED`] panics.
fn quiet_intended_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !msg.contains(INTENDED) {
                default(info);
            }
        }));
    });
}

/// What a transaction of the atomicity scenario does after writing its business row and task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Commit,
    /// The closure returns an error after the enqueue.
    Rollback,
    /// The closure panics after the enqueue.
    Panic,
}

/// 10k transactions from 4 threads, each inserting a business row and a task, then committing,
/// rolling back after the enqueue, or panicking inside the closure; half through
/// `conn.transaction` + `tend::enqueue_new`, half through `Outbox::transaction`. Afterwards the
/// tasks are exactly the committed business rows.
fn atomicity<C: TestConn>() {
    let Some(db) = Db::create(C::BACKEND, "faults") else {
        return;
    };
    quiet_intended_panics();
    let b = C::BACKEND.name();
    let total: i64 = if quick() { 2000 } else { 10_000 };
    let threads = 4;
    let seed = Rng::seed();
    let pool = support::migrated::<C>(&db, threads as u32 + 1);
    pool.get()
        .unwrap()
        .batch_execute("CREATE TABLE tend_biz (k BIGINT PRIMARY KEY)")
        .unwrap();
    let mut registry = tend::Registry::new();
    registry.register::<support::Work>().unwrap();
    // The outbox of a pool that is never started: tasks wait in the table.
    let outbox = tend::WorkerPool::builder(pool.clone(), registry)
        .build()
        .unwrap()
        .outbox();
    let started = Instant::now();
    let results: Vec<Vec<(i64, Ending, bool)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (pool, outbox) = (pool.clone(), outbox.clone());
                s.spawn(move || {
                    let mut rng = Rng::new(seed ^ (t as u64 + 1));
                    let mut out = Vec::new();
                    for k in (1..=total).filter(|k| k % threads == t) {
                        // A panic costs a connection (r2d2 discards it, the server rolls
                        // back): 10% of them keeps the run short on PostgreSQL.
                        let ending = match rng.range(0, 20) {
                            0..=8 => Ending::Commit,
                            9..=17 => Ending::Rollback,
                            _ => Ending::Panic,
                        };
                        let via_outbox = rng.range(0, 2) == 0;
                        let work = support::Work {
                            key: k,
                            ms: 0,
                            log: 0,
                        };
                        let business = format!("INSERT INTO tend_biz (k) VALUES ({k})");
                        let end = move || -> Result<(), tend::Error> {
                            match ending {
                                Ending::Commit => Ok(()),
                                Ending::Rollback => {
                                    Err(tend::Error::invalid_setting("test", "rolled back"))
                                }
                                Ending::Panic => panic!("{INTENDED} in transaction {k}"),
                            }
                        };
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            // A connection per transaction, as a service takes one per request;
                            // one that unwound mid-transaction is discarded by r2d2.
                            let mut conn = pool.get().unwrap();
                            if via_outbox {
                                outbox
                                    .transaction(&mut conn, |conn, tx| {
                                        conn.batch_execute(&business)?;
                                        tx.enqueue_new(conn, work.new_task())?;
                                        end()
                                    })
                                    .map(|_| ())
                            } else {
                                conn.transaction(|conn| {
                                    conn.batch_execute(&business)?;
                                    tend::enqueue_new(conn, work.new_task())?;
                                    end()
                                })
                            }
                        }));
                        let committed = matches!(r, Ok(Ok(())));
                        assert_eq!(committed, ending == Ending::Commit, "transaction {k}");
                        out.push((k, ending, via_outbox));
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let all: Vec<(i64, Ending, bool)> = results.into_iter().flatten().collect();
    let committed: HashSet<i64> = all
        .iter()
        .filter(|(_, e, _)| *e == Ending::Commit)
        .map(|(k, _, _)| *k)
        .collect();
    let mut conn = pool.get().unwrap();
    let business: HashSet<i64> = conn
        .i64s("SELECT k AS v FROM tend_biz")
        .into_iter()
        .collect();
    let task_keys: Vec<i64> = conn.i64s("SELECT shard_key AS v FROM consistency_task");
    let tasks: HashSet<i64> = task_keys.iter().copied().collect();
    let count = |e: Ending| all.iter().filter(|(_, x, _)| *x == e).count();
    let orphans = tasks.difference(&business).count();
    let missing = business.difference(&tasks).count();
    figures(format!(
        "FAULTS atomicity backend={b} transactions={} threads={threads} committed={} \
         rolled_back={} panicked={} via_outbox={} business_rows={} tasks={} \
         tasks_without_business_row={orphans} business_rows_without_task={missing} \
         elapsed_s={:.1} seed={seed}",
        all.len(),
        count(Ending::Commit),
        count(Ending::Rollback),
        count(Ending::Panic),
        all.iter().filter(|x| x.2).count(),
        business.len(),
        task_keys.len(),
        elapsed.as_secs_f64()
    ));
    assert_eq!(all.len() as i64, total);
    assert_eq!(task_keys.len(), tasks.len(), "one task per business row");
    assert_eq!(business, committed, "business rows are the committed ones");
    assert_eq!(tasks, committed, "tasks are the committed ones");
}

// ------------------------------------------------------------------------------ 5. poison

/// A task type no pool registers.
#[derive(Debug, Serialize, Deserialize)]
struct Unknown {
    n: i64,
}

impl Task for Unknown {
    const SIGNATURE: &'static str = "tend.tests.unknown";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Registered; the test overwrites its payload with bytes that do not decode.
#[derive(Debug, Serialize, Deserialize)]
struct Garbled {
    n: i64,
    name: String,
}

impl Task for Garbled {
    const SIGNATURE: &'static str = "tend.tests.garbled";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Its handler panics; one attempt allowed.
#[derive(Debug, Serialize, Deserialize)]
struct Panics {
    n: i64,
}

impl Task for Panics {
    const SIGNATURE: &'static str = "tend.tests.panics";
    fn options() -> TaskOptions {
        TaskOptions::new().max_attempts(1)
    }
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        panic!("{INTENDED}: handler of task {}", self.n)
    }
}

/// Its handler hangs past its lease (the pool's task timeout equals the lease), then
/// succeeds: too late, the outcome must be refused. One attempt allowed.
#[derive(Debug, Serialize, Deserialize)]
struct Hangs {
    log: u32,
    ms: u64,
}

impl Task for Hangs {
    const SIGNATURE: &'static str = "tend.tests.hangs";
    fn options() -> TaskOptions {
        TaskOptions::new().max_attempts(1)
    }
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let log = support::runlog::get(self.log);
        let run = log.start(-1, ctx.attempt());
        std::thread::sleep(Duration::from_millis(self.ms));
        log.end(-1, run);
        Ok(())
    }
}

/// Fails for good; its alerter (named in `alerter`) is told.
#[derive(Debug, Serialize, Deserialize)]
struct Alerting<const OK: bool> {
    n: i64,
}

impl<const OK: bool> Task for Alerting<OK> {
    const SIGNATURE: &'static str = if OK {
        "tend.tests.alerting_ok"
    } else {
        "tend.tests.alerting_panics"
    };
    fn options() -> TaskOptions {
        TaskOptions::new()
            .max_attempts(1)
            .alert_expression(Some("executeTimes >= 1"))
            .alerter(if OK { "recorder" } else { "panicky" })
    }
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Err(TaskError::new(format!("alerting task {} fails", self.n)))
    }
}

/// Poison tasks of every kind among healthy ones: none is deleted or counted as a success,
/// each ends held or dead with a message, and the healthy ones drain meanwhile.
fn poison<C: TestConn>() {
    let Some(db) = Db::create(C::BACKEND, "faults") else {
        return;
    };
    quiet_intended_panics();
    let b = C::BACKEND.name();
    let pool = support::migrated::<C>(&db, 6);
    let log = RunLog::create(&format!("poison-{b}"));
    let healthy: Vec<i64> = (1..=if quick() { 100 } else { 400 }).collect();
    let mut conn = pool.get().unwrap();
    let id = |e: tend::Enqueued| e.id().unwrap();
    let unknown = id(tend::enqueue(&mut *conn, &Unknown { n: 1 }).unwrap());
    // Three ways a payload fails to decode: empty, garbage, a valid value with a byte more.
    let garbled: Vec<(i64, Vec<u8>)> = [vec![], vec![0xff; 11], vec![2, 1, b'x', 0]]
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            let g = Garbled {
                n: i as i64,
                name: "x".into(),
            };
            (id(tend::enqueue(&mut *conn, &g).unwrap()), bytes)
        })
        .collect();
    for (gid, bytes) in &garbled {
        conn.batch_execute(&format!(
            "UPDATE consistency_task SET task_parameter = {} WHERE id = {gid}",
            C::BACKEND.bytes_literal(bytes)
        ))
        .unwrap();
    }
    let panics = id(tend::enqueue(&mut *conn, &Panics { n: 1 }).unwrap());
    let hang_ms = 6000;
    let hangs = id(tend::enqueue(
        &mut *conn,
        &Hangs {
            log: log.id,
            ms: hang_ms,
        },
    )
    .unwrap());
    let alert_panics = id(tend::enqueue(&mut *conn, &Alerting::<false> { n: 1 }).unwrap());
    support::enqueue_work(&mut *conn, &healthy, 5, log.id);

    // Alerters: one panics, one records; the second alert must still be delivered.
    let panicky_called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorded = std::sync::Arc::new(Mutex::new(Vec::<i64>::new()));
    let mut registry = tend::Registry::new();
    let pc = panicky_called.clone();
    registry
        .alerter("panicky", move |a: &tend::Alert| {
            pc.store(true, std::sync::atomic::Ordering::SeqCst);
            panic!("{INTENDED}: alerter on task {}", a.id)
        })
        .unwrap();
    let rec = recorded.clone();
    registry
        .alerter("recorder", move |a: &tend::Alert| {
            rec.lock().unwrap().push(a.id)
        })
        .unwrap();
    registry.register::<support::Work>().unwrap();
    registry.register::<Garbled>().unwrap();
    registry.register::<Panics>().unwrap();
    registry.register::<Hangs>().unwrap();
    registry.register::<Alerting<false>>().unwrap();
    registry.register::<Alerting<true>>().unwrap();
    // Independent of the run log: which tasks tend reported as succeeded, and refusals.
    let succeeded = std::sync::Arc::new(Mutex::new(HashSet::<i64>::new()));
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (su, re) = (succeeded.clone(), refused.clone());
    let lease = Duration::from_secs(1);
    let handle = tend::WorkerPool::builder(pool.clone(), registry)
        .threads(4)
        .lease(lease)
        .task_timeout(lease)
        .poll_interval(Duration::from_millis(100))
        .events(move |e: &tend::Event<'_>| match e {
            tend::Event::Succeeded { task, .. } => {
                su.lock().unwrap().insert(task.id);
            }
            tend::Event::OutcomesRefused { count } => {
                re.fetch_add(*count, std::sync::atomic::Ordering::SeqCst);
            }
            _ => {}
        })
        .build()
        .unwrap()
        .start()
        .unwrap();
    let started = Instant::now();
    wait_for("the panicking alerter", Duration::from_secs(30), || {
        panicky_called.load(std::sync::atomic::Ordering::SeqCst)
    });
    let alert_ok = id(tend::enqueue(&mut *conn, &Alerting::<true> { n: 2 }).unwrap());
    handle.wake();
    wait_for("the recording alerter", Duration::from_secs(30), || {
        recorded.lock().unwrap().contains(&alert_ok)
    });
    let healthy_done_at = {
        wait_for("the healthy tasks", Duration::from_secs(60), || {
            let done = log.read().done_keys();
            healthy.iter().all(|k| done.contains(k))
        });
        started.elapsed()
    };
    // The hung task: dead once its lease lapsed, and its late success refused.
    let status_of = |conn: &mut C, id: i64| conn.tasks().into_iter().find(|t| t.id == id);
    wait_for("the hung task to be dead", Duration::from_secs(30), || {
        status_of(&mut conn, hangs).is_some_and(|t| t.task_status == 4)
    });
    wait_for(
        "the late outcome to be refused",
        Duration::from_secs(30),
        || refused.load(std::sync::atomic::Ordering::SeqCst) >= 1,
    );
    let report = handle.shutdown();
    let rows = conn.tasks();
    let row = |id: i64| {
        rows.iter()
            .find(|t| t.id == id)
            .unwrap_or_else(|| panic!("task {id} was deleted"))
            .clone()
    };
    let mut states = Vec::new();
    let mut expect = |what: &str, id: i64, status: i32, msg: &str| {
        let r = row(id);
        assert_eq!(
            r.task_status, status,
            "{what} (task {id}) ended in status {} with `{}`",
            r.task_status, r.error_msg
        );
        assert!(
            r.error_msg.contains(msg),
            "{what}: message `{}` lacks `{msg}`",
            r.error_msg
        );
        states.push(format!(
            "{what}={}",
            tend::TaskStatus::from_i32(status).unwrap()
        ));
    };
    expect(
        "unknown_signature",
        unknown,
        5,
        "no task type is registered",
    );
    for (gid, _) in &garbled {
        expect("undecodable", *gid, 5, "does not decode");
    }
    expect("handler_panics", panics, 4, "panicked");
    expect("hangs_past_lease", hangs, 4, "never reported back");
    expect("alerter_panics", alert_panics, 4, "fails");
    expect("alerter_ok", alert_ok, 4, "fails");
    let poison: Vec<i64> = [unknown, panics, hangs, alert_panics, alert_ok]
        .into_iter()
        .chain(garbled.iter().map(|g| g.0))
        .collect();
    let parsed = log.read();
    let hang_runs: Vec<_> = parsed.runs.iter().filter(|r| r.key == -1).collect();
    let remaining_healthy = rows
        .iter()
        .filter(|t| t.method_sign_name == support::Work::SIGNATURE)
        .count();
    // tend's events report the hung attempt's success before its write is refused; the table
    // is what counts: the row is kept, dead.
    let reported = succeeded.lock().unwrap().clone();
    let poison_reported_ok: Vec<i64> = poison
        .iter()
        .copied()
        .filter(|p| reported.contains(p) && *p != hangs)
        .collect();
    figures(format!(
        "FAULTS poison backend={b} poison_tasks={} healthy={} healthy_drained_s={:.1} \
         {} hung_runs={} late_outcomes_refused={} poison_rows_kept={} lost_healthy={} \
         hung_task_reported_succeeded_event={}",
        poison.len(),
        healthy.len(),
        healthy_done_at.as_secs_f64(),
        states.join(" "),
        hang_runs.len(),
        refused.load(std::sync::atomic::Ordering::SeqCst),
        rows.len(),
        remaining_healthy,
        reported.contains(&hangs),
    ));
    assert_eq!(rows.len(), poison.len(), "only the poison tasks are left");
    assert_eq!(remaining_healthy, 0);
    assert!(poison_reported_ok.is_empty(), "{poison_reported_ok:?}");
    assert_eq!(
        hang_runs.len(),
        1,
        "the hung task ran once (then was parked)"
    );
    assert!(hang_runs[0].end.is_some());
    assert!(report.all_joined());
}

// --------------------------------------------------------------------------- 6. bad input

#[derive(Debug, Serialize, Deserialize)]
struct BadExpr;

impl Task for BadExpr {
    const SIGNATURE: &'static str = "tend.tests.bad_expr";
    fn options() -> TaskOptions {
        TaskOptions::new().alert_expression(Some("executeTimes >= 3 && "))
    }
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TypoExpr;

impl Task for TypoExpr {
    const SIGNATURE: &'static str = "tend.tests.typo_expr";
    fn options() -> TaskOptions {
        TaskOptions::new().alert_expression(Some("executeTimes > 1 || fallbackFialed"))
    }
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct NamesMissingAlerter;

impl Task for NamesMissingAlerter {
    const SIGNATURE: &'static str = "tend.tests.missing_alerter";
    fn options() -> TaskOptions {
        TaskOptions::new().alerter("nobody")
    }
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct BadSignature;

impl Task for BadSignature {
    const SIGNATURE: &'static str = "orders ship(long)";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Big {
    data: Vec<u8>,
}

impl Task for Big {
    const SIGNATURE: &'static str = "tend.tests.big";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Every invalid setting, expression and input gets a clear error at the earliest point, and
/// nothing panics.
fn bad_input<C: TestConn>() {
    let (Some(db), Some(empty)) = (
        Db::create(C::BACKEND, "faults"),
        Db::create(C::BACKEND, "faults"),
    ) else {
        return;
    };
    let b = C::BACKEND.name();
    let pool = support::migrated::<C>(&db, 3);
    let checked = std::cell::Cell::new(0);
    let check = |what: &str, r: Result<(), tend::Error>, must: &[&str]| {
        let e = r.err().unwrap_or_else(|| panic!("{what}: accepted"));
        let msg = e.to_string();
        for m in must {
            assert!(msg.contains(m), "{what}: `{msg}` lacks `{m}`");
        }
        checked.set(checked.get() + 1);
    };
    let reg = || {
        let mut r = tend::Registry::new();
        r.register::<support::Work>().unwrap();
        r
    };
    let builder = || tend::WorkerPool::builder(pool.clone(), reg());
    // The pool builder: rejected by build(), before any thread starts.
    let bad_builders: Vec<(&str, tend::WorkerPoolBuilder<C>, &str)> = vec![
        ("threads 0", builder().threads(0), "`threads`"),
        ("threads 1025", builder().threads(1025), "`threads`"),
        ("batch 0", builder().batch_size(0), "`batch_size`"),
        ("batch 10001", builder().batch_size(10_001), "`batch_size`"),
        (
            "poll 0",
            builder().poll_interval(Duration::ZERO),
            "`poll_interval`",
        ),
        (
            "lease 999 ms",
            builder().lease(Duration::from_millis(999)),
            "`lease`",
        ),
        (
            "timeout < lease",
            builder()
                .lease(Duration::from_secs(10))
                .task_timeout(Duration::from_secs(5)),
            "`task_timeout`",
        ),
        (
            "keep_completed 10 ms",
            builder().keep_completed(Duration::from_millis(10)),
            "`keep_completed`",
        ),
        ("owner empty", builder().owner(""), "`owner`"),
        ("owner 256", builder().owner("o".repeat(256)), "`owner`"),
    ];
    for (what, bld, name) in bad_builders {
        check(what, bld.build().map(|_| ()), &["invalid setting", name]);
    }
    check(
        "no shards",
        tend::Shards::<C>::new(vec![]).map(|_| ()),
        &["`shards`"],
    );
    check(
        "snowflake node 1024",
        tend::Snowflake::new(1024).map(|_| ()),
        &["`node_id`", "1023"],
    );
    // Task types: rejected when registered, before any task is enqueued.
    let mut r = tend::Registry::new();
    let e = r.register::<BadExpr>().map(|_| ()).unwrap_err();
    match e.kind() {
        tend::ErrorKind::InvalidExpression { error, expression } => {
            assert_eq!(error.position, expression.len(), "{e}");
            assert!(e.to_string().contains("at position 21"), "{e}");
        }
        k => panic!("bad expression: {k:?}"),
    }
    checked.set(checked.get() + 1);
    let e = r.register::<TypoExpr>().map(|_| ()).unwrap_err();
    match e.kind() {
        tend::ErrorKind::InvalidExpression { error, .. } => {
            assert_eq!(error.position, 20, "the typo's position: {e}");
        }
        k => panic!("typo: {k:?}"),
    }
    checked.set(checked.get() + 1);
    check(
        "unknown alerter",
        r.register::<NamesMissingAlerter>().map(|_| ()),
        &["nobody", "Registry::alerter"],
    );
    check(
        "bad signature",
        r.register::<BadSignature>().map(|_| ()),
        &["invalid task signature", "orders ship(long)"],
    );
    r.register::<support::Work>().unwrap();
    check(
        "duplicate signature",
        r.register::<support::Work>().map(|_| ()),
        &["tend.tests.work", "unique"],
    );
    check(
        "alerter without a name",
        r.alerter("", |_: &tend::Alert| {}).map(|_| ()),
        &["`alerter`"],
    );
    // Per-task settings and payloads: rejected by enqueue, before anything is written.
    let mut conn = pool.get().unwrap();
    let w = support::Work {
        key: 1,
        ms: 0,
        log: 0,
    };
    let bad_tasks: Vec<(&str, tend::NewTask, &str)> = vec![
        (
            "interval 0",
            w.new_task().execute_interval(Duration::ZERO),
            "`execute_interval`",
        ),
        (
            "interval 1.5 s",
            w.new_task().execute_interval(Duration::from_millis(1500)),
            "`execute_interval`",
        ),
        (
            "delay 0.5 s",
            w.new_task().delay(Duration::from_millis(500)),
            "`delay`",
        ),
        (
            "max_attempts 0",
            w.new_task().max_attempts(0),
            "`max_attempts`",
        ),
        (
            "expression",
            w.new_task().alert_expression(Some("executeTimes + 1")),
            "must be a bool",
        ),
        ("alerter empty", w.new_task().alerter(""), "`alerter`"),
        (
            "task_id 501",
            w.new_task().task_id("t".repeat(501)),
            "`task_id`",
        ),
        (
            "idempotency empty",
            w.new_task().idempotency_key(""),
            "`idempotency_key`",
        ),
        (
            "idempotency 256",
            w.new_task().idempotency_key("k".repeat(256)),
            "`idempotency_key`",
        ),
        (
            "without transaction",
            w.new_task()
                .transaction_way(tend::TransactionWay::WithoutTransaction),
            "Outbox",
        ),
    ];
    for (what, t, name) in bad_tasks {
        check(what, tend::enqueue_new(&mut *conn, t).map(|_| ()), &[name]);
    }
    let big = Big {
        data: vec![7; tend::MAX_PAYLOAD_BYTES + 1],
    };
    let e = tend::NewTask::new(&big).map(|_| ()).unwrap_err();
    assert!(
        matches!(e.kind(), tend::ErrorKind::PayloadTooLarge { .. }),
        "oversized payload: {e}"
    );
    assert!(e.to_string().contains("your own table"), "{e}");
    checked.set(checked.get() + 1);
    check(
        "oversized payload through enqueue",
        tend::enqueue(&mut *conn, &big).map(|_| ()),
        &["more than"],
    );
    assert_eq!(task_count(&mut *conn), 0, "nothing was written");
    // An outbox transaction inside another transaction cannot see the real commit.
    let outbox = builder().build().unwrap().outbox();
    check(
        "nested outbox transaction",
        conn.transaction(|c| {
            outbox
                .transaction(c, |_, _| Ok::<_, tend::Error>(()))
                .map(|_| ())
        }),
        &["outermost"],
    );
    drop(conn);
    // An unmigrated database: the first call that touches tend's table says to migrate.
    let unmigrated = support::pool::<C>(&empty.url, 2, Duration::from_secs(10));
    for (what, r) in [
        (
            "unmigrated start",
            tend::WorkerPool::builder(unmigrated.clone(), reg())
                .build()
                .unwrap()
                .start()
                .map(|_| ()),
        ),
        (
            "unmigrated enqueue",
            tend::enqueue(&mut *unmigrated.get().unwrap(), &w).map(|_| ()),
        ),
        (
            "unmigrated check",
            tend::check_schema(&mut *unmigrated.get().unwrap()),
        ),
    ] {
        let e = r.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(e.is_not_migrated(), "{what}: {e}");
        assert!(e.to_string().contains("tend::migrate"), "{what}: {e}");
        checked.set(checked.get() + 1);
    }
    // A bad database URL: r2d2 reports it when the pool is built; a pool built unchecked
    // fails tend's start with a pool error within the checkout timeout.
    let bad_url = match C::BACKEND {
        Backend::Postgres => "postgres://postgres@127.0.0.1:1/test".to_string(),
        Backend::Mysql => "mysql://root@127.0.0.1:1/test".to_string(),
        Backend::Sqlite => "/nonexistent-tend-dir/sub/x.db".to_string(),
    };
    let t0 = Instant::now();
    let lazy = C::customize(
        diesel::r2d2::Pool::builder()
            .max_size(1)
            .connection_timeout(Duration::from_secs(1)),
        Duration::from_secs(1),
    )
    .build_unchecked(diesel::r2d2::ConnectionManager::<C>::new(bad_url.clone()));
    let e = tend::WorkerPool::builder(lazy.clone(), reg())
        .build()
        .unwrap()
        .start()
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e.kind(), tend::ErrorKind::Pool(_)), "bad url: {e}");
    assert!(
        e.to_string()
            .contains("could not get a database connection"),
        "{e}"
    );
    let e2 = tend::Shards::new(vec![lazy])
        .unwrap()
        .migrate_all()
        .unwrap_err();
    assert!(e2.to_string().contains("connection"), "{e2}");
    checked.set(checked.get() + 2);
    let bad_url_s = t0.elapsed().as_secs_f64();
    figures(format!(
        "FAULTS bad_input backend={b} rejected={} panics=0 bad_url_error_after_s={bad_url_s:.1} \
         bad_url_message=\"{e}\"",
        checked.get()
    ));
}
