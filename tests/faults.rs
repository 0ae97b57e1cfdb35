//! Fault injection (issue 7): with real processes and real databases, nothing is lost and
//! nothing runs twice at the same time.
//!
//! Every scenario runs on PostgreSQL, MariaDB/MySQL and SQLite (`<scenario>::<backend>`), and
//! prints one `FAULTS <scenario> backend=... ...` line with its figures. The counts come from
//! the run log (`support::runlog`), an append-only file the handlers write, never from tend's
//! own bookkeeping. Seeds are printed and can be replayed with `TEND_FAULTS_SEED`.
//!
//! Run: `TEND_PG_URL=postgres://postgres@127.0.0.1:5432/test
//! TEND_MYSQL_URL=mysql://root@127.0.0.1:3306/test TEND_REQUIRE_DBS=1
//! cargo test --all-features --test faults`.

mod support;

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use support::child::{stat, ChildCfg, ChildWorker};
use support::runlog::RunLog;
use support::verify::{self, Kill};
use support::{figures, now_us, quick, task_count, wait_for, Backend, Cutter, Db, Rng, TestConn};

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

/// One `#[test]` per backend, `<scenario>::<backend>`, from a generic body.
macro_rules! per_backend {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[cfg(feature = "postgres")]
            #[test]
            fn pg() {
                super::$scenario::<diesel::PgConnection>();
            }
            #[cfg(feature = "mysql")]
            #[test]
            fn mysql() {
                super::$scenario::<diesel::MysqlConnection>();
            }
            #[cfg(feature = "sqlite")]
            #[test]
            fn sqlite() {
                super::$scenario::<diesel::SqliteConnection>();
            }
        }
    )*};
}

per_backend!(crash, outage);

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
    // r2d2 retries a failed connect after a backoff capped at half this timeout; a service
    // that wants to be back within 2 s of its database must keep it at 2 s or less.
    cfg.conn_timeout = Duration::from_secs(2);
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
    let _ = HashSet::<i64>::new();
}
