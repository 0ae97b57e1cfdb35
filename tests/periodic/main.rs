//! Periodic tasks (`tend::Periodic`) on every backend.
//!
//! * Four processes run the same 100 ms schedule: every slot is enqueued exactly once (60 slots
//!   in a row give exactly 60 task rows), counted from the rows themselves (the children keep
//!   completed rows, and each row carries its slot in `shard_key`), and each slot's handler
//!   ran, as the marks its handler wrote on its own connection show.
//! * Slots missed while no process ran: `Missed::RunOnce` enqueues the latest only,
//!   `Missed::CatchUp(n)` the latest n; a new schedule does not run at once.
//! * A pool whose database lacks `tend_schedule` refuses to start with a schedule.
//! * The scheduler thread survives a panic and a 2 s outage, then catches up every slot once.
//! * The README's example is code of `examples/periodic.rs`.
//!
//! The children are this test binary re-run as its ignored test `periodic_child`.

#[path = "../support/mod.rs"]
mod support;

use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel::r2d2::{ConnectionManager, Pool};
use serde::{Deserialize, Serialize};
use tend::{Missed, NewTask, Periodic, Registry, Task, TaskContext, TaskError, WorkerPool};

use support::child::{self_as, ChildProc};
use support::{connect, figures, per_backend, pool_for, wait_for, Backend, Mark, TestConn, TestDb};

const SIG: &str = "test.periodic.tick";
/// The slot interval of the multi-process test.
const TICK_MS: i64 = 100;
/// How many slots in a row the multi-process test checks.
const SLOTS: usize = 60;
const PATIENCE: Duration = Duration::from_secs(120);

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A slot's task: marks "tick" with its slot (as `task`) and the process that ran it.
#[derive(Serialize, Deserialize)]
struct Tick {
    slot: i64,
}

/// How a handler writes its marks: on a connection of its own to the test's database.
struct Marker(Box<dyn Fn(&Mark) + Send + Sync>);

fn marker<C: TestConn>(url: &str) -> Marker {
    let url = url.to_string();
    Marker(Box::new(move |m| C::put_mark(&mut connect::<C>(&url), m)))
}

impl Task for Tick {
    const SIGNATURE: &'static str = SIG;
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let now = support::now_ms();
        (ctx.state::<Marker>()?.0)(&Mark {
            label: "tick".into(),
            task: self.slot,
            pid: std::process::id().into(),
            at_ms: now,
            end_ms: now,
        });
        Ok(())
    }
}

/// A slot's task with its slot also in `shard_key`, so the test reads slots with plain SQL.
fn tick_schedule(name: &str, every: Duration) -> Periodic {
    Periodic::every(name, every).unwrap().new_task(|slot| {
        let slot = ms(slot);
        Ok(NewTask::new(&Tick { slot })?.shard_key(slot))
    })
}

/// The slots of the enqueued rows of `SIG` (every status: the children keep completed rows).
fn enqueued<C: TestConn>(db: &TestDb<C>) -> Vec<i64> {
    db.connect().i64s(&format!(
        "SELECT shard_key AS v FROM consistency_task WHERE method_sign_name = '{SIG}' \
         ORDER BY shard_key"
    ))
}

fn last_slot<C: TestConn>(db: &TestDb<C>, name: &str) -> Option<i64> {
    db.connect()
        .i64s(&format!(
            "SELECT last_slot_ms AS v FROM tend_schedule WHERE name = '{name}'"
        ))
        .first()
        .copied()
}

// ---------------------------------------------------------------------------------------------

/// 4 processes, one 100 ms schedule: 60 slots in a row give exactly 60 enqueues, one per slot.
fn four_processes_enqueue_each_slot_once<C: TestConn>(db: &TestDb<C>) {
    let started = Instant::now();
    let mut children: Vec<ChildProc> = (0..4)
        .map(|i| {
            let mut cmd = self_as("periodic_child");
            cmd.env("TEND_PERIODIC_BACKEND", C::BACKEND.name())
                .env("TEND_PERIODIC_URL", &db.url);
            ChildProc::spawn(
                cmd,
                &format!(
                    "tend-periodic-{}-{}-{i}",
                    C::BACKEND.name(),
                    std::process::id()
                ),
            )
        })
        .collect();
    // Until 60 slots in a row are enqueued (plus one, so that the 60th is settled) and each
    // of the 60 ran.
    let slots = wait_for("60 slots enqueued and run", PATIENCE, || {
        for c in &mut children {
            c.assert_running();
        }
        let slots = enqueued(db);
        let ran: std::collections::BTreeSet<i64> =
            db.marks("tick").iter().map(|m| m.task).collect();
        (slots.len() > SLOTS && slots[..SLOTS].iter().all(|s| ran.contains(s))).then_some(slots)
    });
    let elapsed = started.elapsed();
    drop(children); // SIGKILL: a transaction cut short commits neither the slot nor its task
    let after_kill = enqueued(db);
    assert!(after_kill.starts_with(&slots), "rows only grow");
    // Never two rows for one slot, and no slot skipped (the children catch up on any slot a
    // slow tick missed, so every slot from the first is enqueued).
    for w in after_kill.windows(2) {
        assert_eq!(w[1] - w[0], TICK_MS, "slots {} then {}", w[0], w[1]);
    }
    let first = after_kill[0];
    let in_window = after_kill
        .iter()
        .filter(|s| **s < first + SLOTS as i64 * TICK_MS)
        .count();
    assert_eq!(in_window, SLOTS, "60 slots, 60 enqueues");
    // Each of them ran (at least once; nothing failed, so exactly once up to the kill).
    let marks = db.marks("tick");
    for s in &after_kill[..SLOTS] {
        assert_eq!(marks.iter().filter(|m| m.task == *s).count(), 1, "slot {s}");
    }
    let pids: std::collections::BTreeSet<i64> = marks.iter().map(|m| m.pid).collect();
    figures(format!(
        "periodic {}: 4 processes, {TICK_MS} ms slots: {} slots enqueued once each ({} checked), \
         handlers in {} process(es), {:.1} s",
        C::BACKEND.name(),
        after_kill.len(),
        SLOTS,
        pids.len(),
        elapsed.as_secs_f64()
    ));
}

/// What the children run: a pool with the 100 ms schedule, catching up every missed slot.
#[test]
#[ignore = "run by four_processes_enqueue_each_slot_once as its child process"]
fn periodic_child() {
    let Ok(backend) = std::env::var("TEND_PERIODIC_BACKEND") else {
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
    let url = std::env::var("TEND_PERIODIC_URL").unwrap();
    let pool: Pool<ConnectionManager<C>> = pool_for::<C>(&url, 4);
    let mut registry = Registry::new();
    registry.register::<Tick>().unwrap();
    registry.state(marker::<C>(&url)).unwrap();
    let schedule = tick_schedule("test.tick", Duration::from_millis(TICK_MS as u64))
        .missed(Missed::CatchUp(10_000));
    let _handle = WorkerPool::builder(pool, registry)
        .threads(2)
        .poll_interval(Duration::from_millis(50))
        .keep_completed(Duration::from_secs(3600))
        .periodic(schedule)
        .build()
        .unwrap()
        .start()
        .unwrap();
    // Runs until killed by the parent (stdin is null: this read returns at once, so wait).
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

// ---------------------------------------------------------------------------------------------

/// The in-process pools of this file run one at a time, so that a panic injected into "the"
/// scheduler thread (process-wide) lands in the pool of the test that armed it.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The scheduler thread survives a panic: after it, the schedule goes on, and the slots that
/// passed meanwhile are caught up, each once.
#[cfg(feature = "testing")]
fn the_scheduler_survives_a_panic<C: TestConn>(db: &TestDb<C>) {
    let _serial = serial();
    let mut registry = Registry::new();
    registry.register::<Tick>().unwrap();
    registry.state(marker::<C>(&db.url)).unwrap();
    let handle = WorkerPool::builder(db.pool.clone(), registry)
        .threads(1)
        .keep_completed(Duration::from_secs(3600))
        .periodic(
            tick_schedule("survivor", Duration::from_millis(50)).missed(Missed::CatchUp(1000)),
        )
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("three slots", PATIENCE, || enqueued(db).len() >= 3);
    let before = tend::testing::injected_panics("scheduler");
    tend::testing::inject_panics("scheduler", 1);
    wait_for("the injected panic", PATIENCE, || {
        tend::testing::injected_panics("scheduler") > before
    });
    let at_panic = enqueued(db).len();
    wait_for("slots after the panic", PATIENCE, || {
        enqueued(db).len() >= at_panic + 5
    });
    assert!(handle.shutdown().all_joined());
    let slots = enqueued(db);
    for w in slots.windows(2) {
        assert_eq!(w[1] - w[0], 50, "each slot once, none skipped: {slots:?}");
    }
    figures(format!(
        "periodic {}: scheduler panicked once, {} slots enqueued once each",
        C::BACKEND.name(),
        slots.len()
    ));
}

/// The database is cut off for 2 s (proxy down / SQLite file locked) under a 100 ms schedule:
/// the scheduler logs, backs off and, once the database is back, catches up every slot that
/// passed, each once, and the pool shuts down cleanly.
fn the_scheduler_survives_an_outage<C: TestConn>() {
    let _serial = serial();
    let Some(db) = support::Db::create(C::BACKEND, "periodic") else {
        return;
    };
    tend::migrate(&mut connect::<C>(&db.url)).unwrap();
    connect::<C>(&db.url)
        .batch_execute(support::MARKS_DDL)
        .unwrap();
    let (mut cutter, url) = support::Cutter::new(&db);
    // A short checkout timeout and busy timeout, as a service that wants to resume fast.
    let pool = support::pool_with::<C>(&url, 4, Duration::from_secs(1), Duration::from_millis(100));
    let mut registry = Registry::new();
    registry.register::<Tick>().unwrap();
    registry.state(marker::<C>(&db.url)).unwrap();
    let handle = WorkerPool::builder(pool, registry)
        .threads(1)
        .keep_completed(Duration::from_secs(3600))
        .shutdown_timeout(Duration::from_secs(5))
        .periodic(tick_schedule("outage", Duration::from_millis(100)).missed(Missed::CatchUp(1000)))
        .build()
        .unwrap()
        .start()
        .unwrap();
    let slots = |url: &str| {
        connect::<C>(url).i64s(&format!(
            "SELECT shard_key AS v FROM consistency_task WHERE method_sign_name = '{SIG}' \
             ORDER BY shard_key"
        ))
    };
    wait_for("three slots", PATIENCE, || slots(&db.url).len() >= 3);
    cutter.down();
    // The outage: a fault window of fixed length, not a synchronisation.
    std::thread::sleep(Duration::from_secs(2));
    cutter.up();
    let before_up = support::now_ms();
    wait_for("slots after the outage", PATIENCE, || {
        slots(&db.url).last().is_some_and(|s| *s > before_up + 500)
    });
    assert!(handle.shutdown().all_joined());
    let all = slots(&db.url);
    for w in all.windows(2) {
        assert_eq!(w[1] - w[0], 100, "each slot once, none skipped: {all:?}");
    }
    // The outage did cut the scheduler off: slots that passed during it were enqueued late,
    // when it caught up (a row's gmt_create is the start of the tick that wrote it, which may
    // be up to the r2d2 checkout timeout before the database came back; on time it is a few
    // ms).
    let late = connect::<C>(&db.url).i64s(&format!(
        "SELECT MAX(gmt_create - shard_key) AS v FROM consistency_task \
         WHERE method_sign_name = '{SIG}'"
    ));
    assert!(late[0] >= 500, "no slot was enqueued late: {late:?}");
    figures(format!(
        "periodic {}: 2 s outage under a 100 ms schedule: {} slots enqueued once each, the \
         latest {} ms after its slot",
        C::BACKEND.name(),
        all.len(),
        late[0]
    ));
}

per_backend!(scenarios: the_scheduler_survives_an_outage);

// ---------------------------------------------------------------------------------------------

/// Ten-day slots (aligned on the epoch): the test cannot straddle a slot boundary in practice.
const DAYS_10: i64 = 10 * 24 * 3600 * 1000;

/// Slots missed while no process ran: RunOnce enqueues the latest, CatchUp(3) the latest three,
/// a schedule seen for the first time nothing (its first run is its next slot).
fn missed_slots_follow_the_policy<C: TestConn>(db: &TestDb<C>) {
    let _serial = serial();
    let now = support::now_ms();
    let latest = now.div_euclid(DAYS_10) * DAYS_10;
    let ten_missed = latest - 10 * DAYS_10;
    for name in ["m.once", "m.catch"] {
        db.exec(&format!(
            "INSERT INTO tend_schedule (name, spec, last_slot_ms, next_slot_ms, updated_at) \
             VALUES ('{name}', 'every {DAYS_10}ms', {ten_missed}, {}, {ten_missed})",
            ten_missed + DAYS_10
        ));
    }
    let every = Duration::from_millis(DAYS_10 as u64);
    let mut registry = Registry::new();
    registry.register::<Tick>().unwrap();
    registry.state(marker::<C>(&db.url)).unwrap();
    let handle = WorkerPool::builder(db.pool.clone(), registry)
        .threads(1)
        .keep_completed(Duration::from_secs(3600))
        .periodic(tick_schedule("m.once", every).missed(Missed::RunOnce))
        .periodic(tick_schedule("m.catch", every).missed(Missed::CatchUp(3)))
        .periodic(tick_schedule("m.new", every))
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the schedules to catch up", PATIENCE, || {
        (last_slot(db, "m.once") == Some(latest)
            && last_slot(db, "m.catch") == Some(latest)
            && last_slot(db, "m.new").is_some())
        .then_some(())
    });
    assert!(handle.shutdown().all_joined());
    // m.once: the latest slot; m.catch: the latest three; m.new: none. Every row's slot is in
    // shard_key; two schedules share the task type, so count by slot.
    let mut want = vec![latest - 2 * DAYS_10, latest - DAYS_10, latest, latest];
    want.sort();
    assert_eq!(enqueued(db), want);
    assert_eq!(
        last_slot(db, "m.new"),
        Some(latest),
        "the slot in progress counts as done"
    );
    let next: Vec<i64> = db
        .connect()
        .i64s("SELECT next_slot_ms AS v FROM tend_schedule ORDER BY name");
    assert_eq!(next, [latest + DAYS_10; 3]);
}

/// A schedule on a database whose migrations predate `tend_schedule` is refused at start,
/// with the error that says to migrate.
fn a_schedule_needs_the_schedule_table<C: TestConn>(db: &TestDb<C>) {
    let _serial = serial();
    db.exec("DROP TABLE tend_schedule");
    let start = |periodic: bool| {
        let mut registry = Registry::new();
        registry.register::<Tick>().unwrap();
        let b = WorkerPool::builder(db.pool.clone(), registry);
        let b = if periodic {
            b.periodic(tick_schedule("needs.table", Duration::from_secs(60)))
        } else {
            b
        };
        b.build().unwrap().start()
    };
    let err = start(true).unwrap_err();
    assert!(err.is_not_migrated(), "{err}");
    assert!(err.to_string().contains("tend_schedule"), "{err}");
    // Without a schedule the table is not needed: existing deployments keep working.
    assert!(start(false).unwrap().shutdown().all_joined());
}

per_backend!(
    fresh: four_processes_enqueue_each_slot_once,
    missed_slots_follow_the_policy,
    a_schedule_needs_the_schedule_table,
    #[cfg(feature = "testing")]
    the_scheduler_survives_a_panic,
);

/// The README's periodic example is code of `examples/periodic.rs` (which CI compiles and
/// runs), line for line, so it cannot drift into something that does not compile.
#[test]
fn the_readme_example_is_the_examples_code() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/periodic.rs"))
            .unwrap();
    let section = &readme[readme.find("## Periodic tasks").expect("the section")..];
    // `ignore`: a fragment of the example, which the README's doctests cannot compile alone.
    let fence = "```rust,ignore\n";
    let block = &section[section.find(fence).expect("a rust block") + fence.len()..];
    let block = &block[..block.find("```").expect("its end")];
    let lines = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let (want, have) = (lines(block), lines(&example));
    assert!(want.len() > 5, "{want:?}");
    assert!(
        have.windows(want.len()).any(|w| w == want.as_slice()),
        "the README's block is not in examples/periodic.rs:\n{}",
        want.join("\n")
    );
}
