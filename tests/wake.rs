//! Wake-up across processes (issue 14): a right-now task committed by this process (A) starts
//! on a child worker process (B) whose poll interval is 5 s long before that poll, on every
//! backend: with LISTEN/NOTIFY on PostgreSQL (sent after the commit by A's outbox), with the
//! due-probe on MySQL/MariaDB and SQLite. A behaviour bound, not a speed figure (those are in
//! the bench): every task must start within half the poll interval of its commit. Once with
//! `WakeUp::Auto` in both processes, once with B probing (also on PostgreSQL) and A without any
//! wake-up, enqueuing with plain `tend::enqueue`: the fallback for transactions tend cannot see.
//!
//! On PostgreSQL also: the listener comes back after its connection is killed
//! (`pg_terminate_backend`), and a pool whose listener is down still runs tasks at its poll.

mod support;

use std::time::Duration;

use diesel::Connection;
use support::child::{ChildCfg, ChildWorker};
use support::runlog::RunLog;
use support::{now_us, per_backend, wait_for, Db, TestConn, Work};
use tend::{Registry, WakeUp, WorkerPool};

#[test]
#[ignore = "a worker process started by the other tests"]
fn child_worker() {
    support::child::main()
}

per_backend!(scenarios: starts_long_before_the_poll, probe_finds_plain_enqueues);

/// B's poll interval: no task may wait for it.
const POLL: Duration = Duration::from_secs(5);
const TASKS: i64 = 12;

/// `WakeUp::Auto` in both processes: LISTEN/NOTIFY on PostgreSQL (half the tasks through
/// `Outbox::transaction`, half with plain `enqueue` and `notify_committed`), the probe elsewhere.
fn starts_long_before_the_poll<C: TestConn>() {
    wake_across_processes::<C>("auto", WakeUp::Auto);
}

/// B probes (also on PostgreSQL) and A has no wake-up at all: the probe alone finds tasks
/// enqueued with plain `enqueue` in transactions tend cannot see commit.
fn probe_finds_plain_enqueues<C: TestConn>() {
    wake_across_processes::<C>("probe:20", WakeUp::Off);
}

fn wake_across_processes<C: TestConn>(b_wake: &str, a_wake: WakeUp) {
    let Some(db) = Db::create(C::BACKEND, "wake") else {
        return;
    };
    let pool = support::migrated::<C>(&db, 4);
    let log = RunLog::create(&format!("wake-{}", C::BACKEND.name()));
    let mut cfg = ChildCfg::new(C::BACKEND, vec![db.url.clone()]);
    cfg.poll = POLL;
    cfg.wake = b_wake.to_string();
    let child = ChildWorker::spawn(&cfg, &log);

    // Process A: enqueues only. Its pool is never started, so its outbox leaves every task due
    // for other processes (and, on PostgreSQL, notifies them after the commit).
    let mut registry = Registry::new();
    registry.register::<Work>().unwrap();
    let outbox = WorkerPool::builder(pool.clone(), registry)
        .wake_up(a_wake)
        .build()
        .unwrap()
        .outbox();
    let mut conn = pool.get().unwrap();
    let mut committed = Vec::new();
    for key in 1..=TASKS {
        // Apart, so that each task needs a wake-up of its own (no claim finds the next one).
        std::thread::sleep(Duration::from_millis(150 + 37 * (key as u64 % 5)));
        let work = Work {
            key,
            ms: 0,
            log: log.id,
        };
        if key % 2 == 0 {
            outbox
                .transaction(&mut conn, |c, tx| tx.enqueue_new(c, work.new_task()))
                .unwrap();
        } else {
            // Plain enqueue in a transaction tend cannot see commit; then the explicit notify.
            conn.transaction(|c| tend::enqueue_new(c, work.new_task()))
                .unwrap();
            outbox.notify_committed();
        }
        committed.push((key, now_us()));
    }
    let runs = wait_for("every task to run", POLL * 3, || {
        let parsed = log.read();
        (parsed.done_keys().len() == TASKS as usize).then_some(parsed)
    });
    let by_key = runs.by_key();
    let mut delays_ms: Vec<f64> = committed
        .iter()
        .map(|(key, at)| {
            let run = by_key[key][0];
            assert_eq!(run.pid, child.pid, "task {key} ran in process B");
            (run.start - at) as f64 / 1000.0
        })
        .collect();
    delays_ms.sort_by(f64::total_cmp);
    let bound = POLL.as_secs_f64() * 1000.0 / 2.0;
    eprintln!(
        "{} (B {b_wake}): commit in A to start in B, ms: {delays_ms:?} (poll {POLL:?})",
        C::BACKEND.name()
    );
    assert!(
        delays_ms.iter().all(|d| *d < bound),
        "every task must start within {bound} ms of its commit (half B's poll interval): \
         {delays_ms:?}"
    );
    let stats = child.stop();
    assert!(stats.contains("abandoned=0"), "{stats}");
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use diesel::r2d2::{ConnectionManager, Pool};
    use diesel::PgConnection;
    use std::sync::{Mutex, MutexGuard};
    use std::time::Instant;

    /// The fault hook is process-wide, and the listener's session is found by its statement:
    /// these tests run one at a time.
    fn serial() -> MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn listener_pids(conn: &mut PgConnection) -> Vec<i64> {
        conn.i64s(
            "SELECT pid::bigint AS v FROM pg_stat_activity \
             WHERE datname = current_database() AND query = 'LISTEN tend_wake' \
             AND pid <> pg_backend_pid() ORDER BY pid",
        )
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register::<Work>().unwrap();
        r
    }

    /// Process B (in-process, its own pool and connections) polling every 10 minutes with
    /// LISTEN/NOTIFY wake-up, and process A's outbox (a pool never started).
    struct Setup {
        db: Db,
        pool: Pool<ConnectionManager<PgConnection>>,
        log: std::sync::Arc<RunLog>,
        outbox: tend::Outbox<PgConnection>,
        handle: tend::PoolHandle,
        watch: PgConnection,
    }

    impl Setup {
        fn new(label: &str) -> Option<Setup> {
            let db = Db::create(support::Backend::Postgres, label)?;
            let pool = support::migrated::<PgConnection>(&db, 6);
            let handle = WorkerPool::builder(support::migrated::<PgConnection>(&db, 6), registry())
                .poll_interval(Duration::from_secs(600))
                .wake_up(WakeUp::Listen)
                .build()
                .unwrap()
                .start()
                .unwrap();
            let outbox = WorkerPool::builder(pool.clone(), registry())
                .wake_up(WakeUp::Listen)
                .build()
                .unwrap()
                .outbox();
            let watch = support::connect::<PgConnection>(&db.url);
            Some(Setup {
                log: RunLog::create(label),
                db,
                pool,
                outbox,
                handle,
                watch,
            })
        }

        /// The pid of a listening session other than `not`.
        fn listener_other_than(&mut self, not: i64) -> i64 {
            wait_for("a listening session", Duration::from_secs(15), || {
                listener_pids(&mut self.watch)
                    .into_iter()
                    .find(|p| *p != not)
            })
        }

        /// Commits task `key` through A's outbox; returns how long until it ran in B.
        fn run_one(&self, key: i64) -> Duration {
            let work = Work {
                key,
                ms: 0,
                log: self.log.id,
            };
            let mut conn = self.pool.get().unwrap();
            let t = Instant::now();
            self.outbox
                .transaction(&mut conn, |c, tx| tx.enqueue_new(c, work.new_task()))
                .unwrap();
            wait_for("the task to run", Duration::from_secs(10), || {
                self.log.read().done_keys().contains(&key)
            });
            t.elapsed()
        }

        fn finish(mut self) {
            assert!(self.handle.shutdown().all_joined());
            // Given back to the r2d2 pool listening on nothing.
            assert!(listener_pids(&mut self.watch).is_empty());
            drop(self.db);
        }
    }

    /// A started pool refuses to listen on an r2d2 pool that cannot hold the listener's
    /// connection beside the claimer's and the completer's.
    #[test]
    fn listen_needs_room_in_the_r2d2_pool() {
        let Some(db) = Db::create(support::Backend::Postgres, "wake-small-pool") else {
            return;
        };
        let small = support::migrated::<PgConnection>(&db, 2);
        let err = WorkerPool::builder(small, registry())
            .wake_up(WakeUp::Listen)
            .build()
            .unwrap()
            .start()
            .unwrap_err();
        assert!(
            matches!(
                err.kind(),
                tend::ErrorKind::InvalidSetting {
                    name: "wake_up",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("max_size >= 3"), "{err}");
        let fits = support::migrated::<PgConnection>(&db, 3);
        let handle = WorkerPool::builder(fits, registry())
            .wake_up(WakeUp::Listen)
            .build()
            .unwrap()
            .start()
            .unwrap();
        assert!(handle.shutdown().all_joined());
    }

    /// The listener's connection is killed by the server; it comes back on a new connection
    /// and wake-ups work again (B polls every 10 minutes: only a wake-up runs a task in time).
    #[test]
    fn listener_reconnects_after_its_connection_is_killed() {
        let _serial = serial();
        let Some(mut s) = Setup::new("wake-reconnect") else {
            return;
        };
        let first = s.listener_other_than(-1);
        let before = s.run_one(1);
        assert!(before < Duration::from_secs(5), "{before:?}");
        let killed = s.watch.i64s(&format!(
            "SELECT CASE WHEN pg_terminate_backend({first}) THEN 1 ELSE 0 END::bigint AS v"
        ));
        assert_eq!(killed, [1]);
        let second = s.listener_other_than(first);
        assert_ne!(first, second);
        let after = s.run_one(2);
        assert!(after < Duration::from_secs(5), "{after:?}");
        s.finish();
    }

    /// A panic in the listener thread: it drops its connection, listens again on a new one,
    /// and wake-ups work again.
    #[cfg(feature = "testing")]
    #[test]
    fn listener_survives_a_panic() {
        let _serial = serial();
        let Some(mut s) = Setup::new("wake-panic") else {
            return;
        };
        let first = s.listener_other_than(-1);
        let before = tend::testing::injected_panics("listener");
        tend::testing::inject_panics("listener", 1);
        wait_for("the listener fault", Duration::from_secs(10), || {
            tend::testing::injected_panics("listener") > before
        });
        s.listener_other_than(first);
        let after = s.run_one(1);
        assert!(after < Duration::from_secs(5), "{after:?}");
        s.finish();
    }
}
