//! Issue 11, threads and shutdown: no pool thread dies of a panic, shutdown is bounded on every
//! backend (also with a connection that hangs), and the MariaDB shutdown hang's root cause.
//!
//! Run: `TEND_PG_URL=postgres://postgres@127.0.0.1:5432/test
//! TEND_MYSQL_URL=mysql://root@127.0.0.1:3306/test TEND_REQUIRE_DBS=1
//! cargo test --all-features --test threads -- --nocapture`.

mod support;
#[allow(dead_code)]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use serde::{Deserialize, Serialize};
use tend::{NewTask, Registry, Task, TaskContext, TaskError, TaskOptions, WorkerPool};

use support::{per_backend, wait_for, Backend, TestConn, TestDb};

/// The fault hook and the figures are process-wide: these tests run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts its runs.
#[derive(Debug, Serialize, Deserialize)]
struct Count;

static COUNTED: AtomicUsize = AtomicUsize::new(0);

impl Task for Count {
    const SIGNATURE: &'static str = "threads.count";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        COUNTED.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Fails its only attempt, so that its alert expression fires (the alert thread's work).
#[derive(Debug, Serialize, Deserialize)]
struct FailOnce;

impl Task for FailOnce {
    const SIGNATURE: &'static str = "threads.fail-once";
    fn options() -> TaskOptions {
        TaskOptions::new()
            .max_attempts(1)
            .alert_expression(Some("executeTimes >= 1"))
    }
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Err(TaskError::new("fails on purpose"))
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register::<Count>().unwrap();
    r.register::<FailOnce>().unwrap();
    r
}

fn enqueue_counted<C: TestConn>(pool: &Pool<ConnectionManager<C>>, n: usize) {
    let mut conn = pool.get().unwrap();
    for _ in 0..n {
        let mut tries = 0;
        loop {
            match tend::enqueue(&mut conn, &Count) {
                Ok(_) => break,
                // An InnoDB deadlock with the pool's claims is the application's to retry.
                Err(e) if e.is_transient() && tries < 20 => tries += 1,
                Err(e) => panic!("enqueue failed: {e}"),
            }
        }
    }
}

/// Waits until `target` runs were counted.
fn wait_counted(target: usize, what: &str) {
    wait_for(what, Duration::from_secs(60), || {
        (COUNTED.load(Ordering::SeqCst) >= target).then_some(())
    });
}

/// No pool thread dies: a panic is injected into each kind of thread in turn (the fetcher's
/// inside a transaction that has written, so that on SQLite it holds the write lock), and after
/// each the pool still drains new tasks; at the end 200 more drain and every thread joins.
fn every_thread_kind_survives_a_panic<C: TestConn>() {
    let _serial = serial();
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let pool = support::pool_for::<C>(&db.url, 8);
    COUNTED.store(0, Ordering::SeqCst);
    let handle = WorkerPool::builder(pool.clone(), registry())
        .threads(2)
        .batch_size(10)
        .poll_interval(Duration::from_millis(20))
        .lease(Duration::from_secs(1))
        .task_timeout(Duration::from_secs(5))
        .shutdown_timeout(Duration::from_secs(5))
        .shard_affinity(true)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let mut kinds = vec!["fetcher", "completer", "membership", "worker", "alerts"];
    if C::BACKEND == Backend::Sqlite {
        kinds.push("checkpoint");
    }
    let mut expected = 0;
    let mut figures = Vec::new();
    for kind in &kinds {
        let before = tend::testing::injected_panics(kind);
        tend::testing::inject_panics(kind, 1);
        // Work that passes every fault point: tasks to claim, run and complete, and one
        // that fails and alerts.
        let started = Instant::now();
        wait_for(
            &format!("the {kind} fault"),
            Duration::from_secs(60),
            || {
                enqueue_counted(&pool, 5);
                expected += 5;
                if *kind == "alerts" {
                    let mut conn = pool.get().unwrap();
                    tend::enqueue_new(&mut conn, NewTask::new(&FailOnce).unwrap()).unwrap();
                }
                handle.wake();
                thread::sleep(Duration::from_millis(50));
                (tend::testing::injected_panics(kind) > before).then_some(())
            },
        );
        // The application can write (SQLite's write lock was released) and the pool drains.
        enqueue_counted(&pool, 20);
        expected += 20;
        handle.wake();
        wait_counted(expected, &format!("the tasks after the {kind} panic"));
        figures.push(format!(
            "{kind}={}/1 ({} ms)",
            tend::testing::injected_panics(kind) - before,
            started.elapsed().as_millis()
        ));
    }
    enqueue_counted(&pool, 200);
    expected += 200;
    handle.wake();
    wait_counted(expected, "200 tasks after every panic");
    let report = handle.shutdown();
    assert!(report.all_joined(), "{report:?}");
    eprintln!(
        "THREADS panics backend={} panicked-and-survived: {} ; drained {expected} tasks, \
         shutdown {report:?}",
        C::BACKEND.name(),
        figures.join(" ")
    );
}

/// The root cause of the MariaDB shutdown hang, at the driver level: a cached prepared
/// statement whose result read failed (the server sent an error packet in place of a row) is
/// left by MariaDB Connector/C in a state where its next `mysql_stmt_execute` first "flushes"
/// an unbuffered result that does not exist, i.e. waits on the socket for packets the server
/// will never send (`poll(timeout = -1)`). Dropping the statement (diesel's statement cache
/// reset) avoids it; this test proves that the reset tend does after an error is enough.
#[cfg(feature = "mysql")]
#[test]
fn mysql_a_cached_statement_whose_read_failed_runs_again_after_the_cache_reset() {
    use diesel::connection::CacheSize;
    let Some(db) = TestDb::<diesel::MysqlConnection>::fresh() else {
        return;
    };
    db.exec("INSERT INTO tend_test_orders (id, note) VALUES (1, 'a'), (2, 'b')");
    let reset = std::env::var("TEND_SKIP_CACHE_RESET").is_err();
    let mut holder = db.connect();
    let mut victim = db.connect();
    victim
        .batch_execute("SET SESSION innodb_lock_wait_timeout = 1")
        .unwrap();
    // The holder locks row 2; the victim's cached `SELECT … FOR UPDATE` reads row 1, sends it,
    // then times out on row 2: the error arrives while the client stores the result.
    holder
        .batch_execute("BEGIN; SELECT * FROM tend_test_orders WHERE id = 2 FOR UPDATE")
        .unwrap();
    let query = || {
        support::tend_test_orders::table
            .select(support::tend_test_orders::id)
            .order(support::tend_test_orders::id)
            .for_update()
    };
    let err = victim
        .transaction(|c| query().load::<i64>(c))
        .expect_err("the lock wait times out");
    eprintln!("THREADS mysql cached statement failed mid-result: {err}");
    holder.batch_execute("ROLLBACK").unwrap();
    if reset {
        victim.set_prepared_statement_cache_size(CacheSize::Disabled);
        victim.set_prepared_statement_cache_size(CacheSize::Unbounded);
    }
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let r = victim.transaction(|c| query().load::<i64>(c));
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    let started = Instant::now();
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(r) => {
            eprintln!(
                "THREADS mysql same statement again (cache reset {reset}): {r:?} in {:?}",
                started.elapsed()
            );
            assert_eq!(r.unwrap(), vec![1, 2]);
        }
        Err(_) => panic!(
            "the cached statement hung on its next execution (cache reset {reset}): \
             pid {} — attach gdb now",
            std::process::id()
        ),
    }
}

/// How the hang test builds its r2d2 pool: as usual on the servers (the proxy hangs); on
/// SQLite with a busy timeout far beyond the shutdown's, the equivalent of a hung server.
trait HangPool: TestConn {
    fn hang_pool(
        b: diesel::r2d2::Builder<ConnectionManager<Self>>,
        url: &str,
    ) -> Pool<ConnectionManager<Self>> {
        b.build(ConnectionManager::new(url)).unwrap()
    }
}

#[cfg(feature = "sqlite")]
impl HangPool for diesel::SqliteConnection {
    fn hang_pool(
        b: diesel::r2d2::Builder<ConnectionManager<Self>>,
        url: &str,
    ) -> Pool<ConnectionManager<Self>> {
        let setup = tend::SqliteSetup::new().busy_timeout(Duration::from_secs(120));
        b.connection_customizer(Box::new(setup))
            .build(ConnectionManager::new(url))
            .unwrap()
    }
}
#[cfg(feature = "postgres")]
impl HangPool for diesel::PgConnection {}
#[cfg(feature = "mysql")]
impl HangPool for diesel::MysqlConnection {}

/// Shutdown is bounded when the database stops answering: through a proxy that hangs
/// (PostgreSQL, MariaDB), or with the write lock held elsewhere under a long busy timeout
/// (SQLite). The stuck threads are named in the report and left detached.
fn shutdown_is_bounded_when_the_database_hangs<C: HangPool>() {
    let _serial = serial();
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let shutdown_timeout = Duration::from_secs(1);
    let (proxy, url) = match C::BACKEND {
        Backend::Sqlite => (None, db.url.clone()),
        _ => {
            let addr = db
                .url
                .split('@')
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .expect("host:port in the URL")
                .to_string();
            let p = support::proxy::Proxy::start(&addr);
            let url = db.url.replacen(&addr, &p.addr, 1);
            (Some(p), url)
        }
    };
    let builder = Pool::builder()
        .max_size(8)
        .connection_timeout(Duration::from_secs(2));
    let pool = C::hang_pool(builder, &url);
    COUNTED.store(0, Ordering::SeqCst);
    let handle = WorkerPool::builder(pool.clone(), registry())
        .threads(2)
        .poll_interval(Duration::from_millis(20))
        .shutdown_timeout(shutdown_timeout)
        .build()
        .unwrap()
        .start()
        .unwrap();
    enqueue_counted(&pool, 10);
    handle.wake();
    wait_counted(10, "the tasks before the hang");
    let mut holder = None;
    match &proxy {
        Some(p) => p.hang(),
        None => {
            let mut c = db.connect();
            c.batch_execute("BEGIN EXCLUSIVE").unwrap();
            holder = Some(c);
        }
    }
    // Let the fetchers start a claim that never returns.
    handle.wake();
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let report = handle.shutdown();
    let took = started.elapsed();
    eprintln!(
        "THREADS hang backend={} shutdown took {} ms (timeout {} ms, bound + {} ms): {report:?}",
        C::BACKEND.name(),
        took.as_millis(),
        shutdown_timeout.as_millis(),
        tend::SHUTDOWN_GRACE.as_millis()
    );
    assert!(
        // The bound, plus scheduling slack for a loaded CI machine.
        took < shutdown_timeout + tend::SHUTDOWN_GRACE + Duration::from_secs(2),
        "shutdown took {took:?}"
    );
    assert!(
        !report.unjoined.is_empty(),
        "a stuck thread is reported: {report:?}"
    );
    assert!(!report.all_joined());
    assert!(report.unjoined.iter().all(|n| n.starts_with("tend-")));
    // Let the detached threads finish.
    if let Some(mut c) = holder {
        c.batch_execute("ROLLBACK").unwrap();
    }
    drop(proxy);
}

per_backend!(
    every_thread_kind_survives_a_panic,
    shutdown_is_bounded_when_the_database_hangs
);

/// The MariaDB hang, end to end: 50 start → drain → shutdown cycles with 4 application
/// threads running transactions (an order and a task each) all along; every shutdown returns.
#[cfg(feature = "mysql")]
#[test]
fn mysql_fifty_shutdown_cycles_with_application_transactions() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let _serial = serial();
    let Some(db) = TestDb::<diesel::MysqlConnection>::fresh() else {
        return;
    };
    let pool = support::pool_for::<diesel::MysqlConnection>(&db.url, 16);
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicUsize::new(0));
    let app_failures = Arc::new(AtomicUsize::new(0));
    let apps: Vec<_> = (0..4)
        .map(|t| {
            let (pool, stop) = (pool.clone(), stop.clone());
            let (committed, failures) = (committed.clone(), app_failures.clone());
            thread::spawn(move || {
                let mut conn = pool.get().unwrap();
                let mut n: i64 = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let id = t * 10_000_000 + n;
                    let r = conn.transaction(|c| {
                        diesel::insert_into(support::tend_test_orders::table)
                            .values((
                                support::tend_test_orders::id.eq(id),
                                support::tend_test_orders::note.eq("order"),
                            ))
                            .execute(c)?;
                        tend::enqueue(c, &Count).map_err(|e| {
                            diesel::result::Error::QueryBuilderError(e.to_string().into())
                        })?;
                        Ok::<_, diesel::result::Error>(())
                    });
                    match r {
                        Ok(()) => {
                            committed.fetch_add(1, Ordering::SeqCst);
                        }
                        // Deadlocks are the application's to retry; counted, not fatal.
                        Err(_) => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    COUNTED.store(0, Ordering::SeqCst);
    // `TEND_SHUTDOWN_CYCLES` runs more (or fewer) cycles.
    let cycles: u32 = std::env::var("TEND_SHUTDOWN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut longest = Duration::ZERO;
    let mut total = Duration::ZERO;
    for cycle in 0..cycles {
        let handle = WorkerPool::builder(pool.clone(), registry())
            .threads(4)
            .batch_size(10)
            .poll_interval(Duration::from_millis(10))
            .shutdown_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .start()
            .unwrap();
        // Drain a while, with the application writing.
        let target = COUNTED.load(Ordering::SeqCst) + 20;
        wait_counted(target, &format!("cycle {cycle} to drain"));
        let (tx, rx) = mpsc::channel();
        let started = Instant::now();
        thread::spawn(move || {
            let _ = tx.send(handle.shutdown());
        });
        let report = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "cycle {cycle}: shutdown did not return within 30 s (pid {})",
                    std::process::id()
                )
            });
        let took = started.elapsed();
        longest = longest.max(took);
        total += took;
        assert!(report.all_joined(), "cycle {cycle}: {report:?}");
    }
    stop.store(true, Ordering::SeqCst);
    for a in apps {
        a.join().unwrap();
    }
    eprintln!(
        "THREADS mysql shutdown cycles={cycles} every one returned; longest {} ms, mean {} ms; \
         application transactions committed {} failed {} (deadlocks, theirs to retry); \
         tasks run {}",
        longest.as_millis(),
        total.as_millis() / u128::from(cycles.max(1)),
        committed.load(Ordering::SeqCst),
        app_failures.load(Ordering::SeqCst),
        COUNTED.load(Ordering::SeqCst)
    );
}

/// Every duration setting of the pool has a documented maximum (`MAX_SETTING_DURATION`):
/// `Duration::MAX` is an `InvalidSetting` error naming the setting, and a pool at the maximum
/// runs and stops (no `Instant` or epoch-ms overflow in any thread).
#[cfg(feature = "sqlite")]
#[test]
fn every_duration_setting_is_bounded() {
    let _serial = serial();
    let Some(db) = TestDb::<diesel::SqliteConnection>::fresh() else {
        return;
    };
    let builder = || WorkerPool::builder(db.pool.clone(), registry());
    let max = tend::MAX_SETTING_DURATION;
    let over = max + Duration::from_millis(1);
    type B = tend::WorkerPoolBuilder<diesel::SqliteConnection>;
    type Set = fn(B, Duration) -> B;
    let cases: [(&str, Set); 5] = [
        ("poll_interval", |b, d| b.poll_interval(d)),
        ("lease", |b, d| b.lease(d).task_timeout(d)),
        ("task_timeout", |b, d| b.task_timeout(d)),
        ("shutdown_timeout", |b, d| b.shutdown_timeout(d)),
        ("keep_completed", |b, d| b.keep_completed(d)),
    ];
    for (name, set) in cases {
        for d in [over, Duration::MAX] {
            let err = set(builder(), d).build().unwrap_err();
            assert!(
                matches!(err.kind(), tend::ErrorKind::InvalidSetting { name: n, .. } if *n == name),
                "{name} {d:?}: {err}"
            );
            assert_eq!(
                err.to_string(),
                format!("invalid setting `{name}`: must be at most 3650 days (10 years)")
            );
        }
    }
    // At the maximum, every setting at once: the pool runs a task and stops.
    COUNTED.store(0, Ordering::SeqCst);
    let handle = builder()
        .poll_interval(max)
        .lease(max)
        .task_timeout(max)
        .shutdown_timeout(max)
        .keep_completed(max)
        .build()
        .unwrap()
        .start()
        .unwrap();
    enqueue_counted(&db.pool, 3);
    handle.wake();
    wait_counted(3, "tasks under the longest settings");
    let started = Instant::now();
    let report = handle.shutdown();
    assert!(report.all_joined(), "{report:?}");
    eprintln!(
        "THREADS settings at MAX_SETTING_DURATION: ran 3 tasks, shutdown in {} ms",
        started.elapsed().as_millis()
    );
}

/// The root cause end to end, through tend: while a MariaDB pool drains, its statements are
/// interrupted again and again (`KILL QUERY`) for 10 s, some of them while the client reads a
/// result set (a claim's `SELECT … FOR UPDATE SKIP LOCKED`). Without tend's statement-cache
/// reset the next claim on that connection waits forever (`poll(-1)`), storm or not; with it,
/// once the storm ends every task runs and every thread joins. (A killer that kills every
/// executing statement can starve a pool without wedging it: since claims read one queue by
/// priority level and check ordering keys, most claims are killed while it runs. The wedge
/// outlives the storm, so the drain is awaited after it.)
#[cfg(feature = "mysql")]
#[test]
fn mysql_statements_interrupted_mid_result_never_wedge_the_pool() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let _serial = serial();
    let Some(db) = TestDb::<diesel::MysqlConnection>::fresh() else {
        return;
    };
    const N: usize = 3000;
    COUNTED.store(0, Ordering::SeqCst);
    enqueue_counted(&db.pool, N);
    let pool = support::pool_for::<diesel::MysqlConnection>(&db.url, 8);
    let handle = WorkerPool::builder(pool.clone(), registry())
        .threads(4)
        .batch_size(50)
        .poll_interval(Duration::from_millis(10))
        .shutdown_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .start()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (stop, kills, url) = (stop.clone(), kills.clone(), db.url.clone());
        thread::spawn(move || {
            let mut c = diesel::MysqlConnection::establish(&url).unwrap();
            let db_name: String =
                diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>("DATABASE()"))
                    .get_result(&mut c)
                    .unwrap();
            while !stop.load(Ordering::SeqCst) {
                // Every running statement of the pool, as it runs.
                let ids: Vec<i64> = diesel::sql_query(format!(
                    "SELECT ID AS id FROM information_schema.PROCESSLIST \
                     WHERE DB = '{db_name}' AND COMMAND = 'Execute' AND ID <> CONNECTION_ID()"
                ))
                .load::<IdRow>(&mut c)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
                for id in ids {
                    if c.batch_execute(&format!("KILL QUERY {id}")).is_ok() {
                        kills.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    // The storm: 10 s, or until the pool drained under it.
    let _ = support::wait_for_or(Duration::from_secs(10), || {
        (COUNTED.load(Ordering::SeqCst) >= N).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    killer.join().unwrap();
    let during_storm = COUNTED.load(Ordering::SeqCst);
    let drained = support::wait_for_or(Duration::from_secs(45), || {
        (COUNTED.load(Ordering::SeqCst) >= N).then_some(())
    });
    let ran = COUNTED.load(Ordering::SeqCst);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(handle.shutdown());
    });
    let report = rx.recv_timeout(Duration::from_secs(30));
    let kills = kills.load(Ordering::SeqCst);
    eprintln!(
        "THREADS mysql interrupted statements: {kills} KILL QUERY, {during_storm} of {N} tasks \
         ran during the storm, {ran} in all, shutdown {report:?}"
    );
    assert!(
        kills >= 20 || during_storm >= N,
        "the storm interrupted only {kills} statements: it proved nothing"
    );
    assert!(
        drained.is_some(),
        "the pool wedged: {ran} of {N} tasks ran (pid {})",
        std::process::id()
    );
    let report = report.expect("shutdown returned");
    assert!(report.all_joined(), "{report:?}");
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}
