//! Scale-out (issue 4), on two PostgreSQL databases, two MariaDB/MySQL databases and two
//! SQLite files: tasks land in their key's database in the business row's transaction, a
//! rollback on one shard leaves nothing there, one pool drains every shard and keeps draining
//! the others while one is cut off, and three worker processes with shard affinity hand a
//! SIGKILLed one's tasks over within the lease.
//!
//! Each test prints a `SHARDS <test> backend=... ...` line with its figures. What ran is read
//! from the run log (`support::runlog`), never from tend's bookkeeping.
//!
//! Run: `TEND_PG_URL=postgres://postgres@127.0.0.1:5432/test
//! TEND_MYSQL_URL=mysql://root@127.0.0.1:3306/test TEND_REQUIRE_DBS=1
//! cargo test --all-features --test shards`.

mod support;

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::Connection;

use support::child::{stat, ChildCfg, ChildWorker};
use support::runlog::RunLog;
use support::verify::{self, Kill};
use support::{
    figures, now_us, per_backend, quick, task_count, wait_for, Backend, Cutter, Db, TestConn, Work,
};

/// The entry point of the worker processes the affinity test starts.
#[test]
#[ignore = "a worker process started by the other tests"]
fn child_worker() {
    support::child::main()
}

/// Tests that measure times run one at a time.
fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

per_backend!(scenarios: routing, shard_outage, affinity, affinity_balance);

const ORDERS: &str = "CREATE TABLE tend_orders (k BIGINT PRIMARY KEY)";

/// Two fresh databases, or `None` when the backend is skipped.
fn two<C: TestConn>() -> Option<[Db; 2]> {
    Some([
        Db::create(C::BACKEND, "shards")?,
        Db::create(C::BACKEND, "shards")?,
    ])
}

fn registry() -> tend::Registry {
    let mut r = tend::Registry::new();
    r.register::<Work>().unwrap();
    r
}

/// Keys in `tend_orders` and shard keys in `consistency_task` of one database.
fn contents<C: TestConn>(p: &Pool<ConnectionManager<C>>) -> (HashSet<i64>, Vec<i64>) {
    let mut c = p.get().unwrap();
    let orders = c
        .i64s("SELECT k AS v FROM tend_orders")
        .into_iter()
        .collect();
    let tasks = c.i64s("SELECT shard_key AS v FROM consistency_task");
    (orders, tasks)
}

// ------------------------------------------------------------------------------- routing

/// Tasks enqueued with keys land in their key's database, in the business row's transaction;
/// a rollback on one shard leaves nothing anywhere; one sharded pool drains both.
fn routing<C: TestConn>() {
    let Some(dbs) = two::<C>() else { return };
    let b = C::BACKEND.name();
    let pools: Vec<_> = dbs
        .iter()
        .map(|d| support::pool::<C>(&d.url, 4, Duration::from_secs(10)))
        .collect();
    let shards = tend::Shards::new(pools.clone()).unwrap();
    shards.migrate_all().unwrap();
    for p in &pools {
        p.get().unwrap().batch_execute(ORDERS).unwrap();
    }
    let log = RunLog::create(&format!("routing-{b}"));
    let workers = tend::WorkerPool::sharded(shards.clone(), registry())
        .threads(4)
        .poll_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let outbox = workers.outbox();

    // Keys of the service's own choosing, and keys from tend's generator.
    let mut keys: Vec<i64> = (1..=200).collect();
    keys.extend((0..50).map(|_| tend::next_shard_key()));
    for (i, &k) in keys.iter().enumerate() {
        let work = Work {
            key: k,
            ms: 0,
            log: log.id,
        };
        let order = format!("INSERT INTO tend_orders (k) VALUES ({k})");
        let mut conn = shards.get(k).unwrap();
        if i % 2 == 0 {
            outbox
                .transaction(&mut conn, |c, tx| {
                    c.batch_execute(&order)?;
                    tx.enqueue_new(c, work.new_task())
                })
                .unwrap();
        } else {
            conn.transaction(|c| {
                c.batch_execute(&order)?;
                tend::enqueue_new(c, work.new_task())
            })
            .unwrap();
        }
    }
    // Rollbacks on shard 1: an error after the enqueue, through both APIs.
    let rolled_back = [1_001i64, 1_003];
    assert!(rolled_back.iter().all(|k| shards.index_for(*k) == 1));
    let mut conn = shards.get(rolled_back[0]).unwrap();
    let r = outbox.transaction(&mut conn, |c, tx| {
        c.batch_execute(&format!(
            "INSERT INTO tend_orders (k) VALUES ({})",
            rolled_back[0]
        ))?;
        tx.enqueue_new(
            c,
            Work {
                key: rolled_back[0],
                ms: 0,
                log: log.id,
            }
            .new_task(),
        )?;
        Err::<(), _>(tend::Error::invalid_setting("test", "roll back"))
    });
    assert!(r.is_err());
    let r = conn.transaction(|c| {
        c.batch_execute(&format!(
            "INSERT INTO tend_orders (k) VALUES ({})",
            rolled_back[1]
        ))?;
        tend::enqueue_new(
            c,
            Work {
                key: rolled_back[1],
                ms: 0,
                log: log.id,
            }
            .new_task(),
        )?;
        Err::<(), _>(tend::Error::invalid_setting("test", "roll back"))
    });
    assert!(r.is_err());
    drop(conn);

    let mut per_shard = Vec::new();
    for (i, p) in pools.iter().enumerate() {
        let (orders, tasks) = contents(p);
        let expected: HashSet<i64> = keys
            .iter()
            .copied()
            .filter(|k| k.rem_euclid(2) as usize == i)
            .collect();
        assert_eq!(
            orders, expected,
            "shard {i}: business rows of its keys only"
        );
        let task_set: HashSet<i64> = tasks.iter().copied().collect();
        assert_eq!(tasks.len(), task_set.len(), "shard {i}: one task per key");
        assert_eq!(
            task_set, expected,
            "shard {i}: the tasks sit next to their rows"
        );
        for k in rolled_back {
            assert!(
                !orders.contains(&k) && !task_set.contains(&k),
                "rolled back {k}"
            );
        }
        per_shard.push(tasks.len());
    }

    let started = Instant::now();
    let handle = workers.start().unwrap();
    handle.wake();
    wait_for("both shards to drain", Duration::from_secs(60), || {
        pools
            .iter()
            .all(|p| task_count(&mut *p.get().unwrap()) == 0)
    });
    let drained = started.elapsed();
    handle.shutdown();
    let report = verify::check(&log.read(), &keys, &[]);
    figures(format!(
        "SHARDS routing backend={b} databases=2 tasks_per_shard={per_shard:?} \
         generated_keys=50 rolled_back_left=0 drained_ms={} runs={} duplicates={} lost={}",
        drained.as_millis(),
        report.runs,
        report.duplicates,
        report.lost.len()
    ));
    report.assert_sound("routing");
    assert_eq!(report.duplicates, 0);
    for p in &pools {
        let (orders, _) = contents(p);
        assert!(orders.len() > 100, "business rows stay");
    }
}

// -------------------------------------------------------------------------- shard outage

/// One pool over two databases; shard 1 is cut off (proxy down / file locked): shard 0
/// drains fully meanwhile, and shard 1 drains once it is back.
fn shard_outage<C: TestConn>() {
    let Some(dbs) = two::<C>() else { return };
    let _g = heavy();
    let b = C::BACKEND.name();
    let direct: Vec<_> = dbs.iter().map(|d| support::migrated::<C>(d, 2)).collect();
    let (mut cutter, url1) = Cutter::new(&dbs[1]);
    // What the service's pool uses: shard 1 through the cutter, a short checkout timeout
    // (r2d2's reconnect backoff is capped at half of it) and, on SQLite, a short busy timeout.
    let timeout = Duration::from_secs(1);
    let busy = Duration::from_millis(100);
    let pools = vec![
        support::pool_with::<C>(&dbs[0].url, 4, timeout, busy),
        support::pool_with::<C>(&url1, 4, timeout, busy),
    ];
    let shards = tend::Shards::new(pools).unwrap();
    let log = RunLog::create(&format!("shard-outage-{b}"));
    let n: i64 = if quick() { 200 } else { 1000 };
    let keys0: Vec<i64> = (0..n).map(|i| 2 * i).collect();
    let keys1: Vec<i64> = (0..n).map(|i| 2 * i + 1).collect();
    let builder = tend::WorkerPool::sharded(shards, registry())
        .threads(4)
        .lease(Duration::from_secs(3))
        .poll_interval(Duration::from_millis(200));
    let handle = if C::BACKEND == Backend::Sqlite {
        // The lock blocks writers, so shard 1's tasks are written before it is taken.
        support::enqueue_work(&mut *direct[1].get().unwrap(), &keys1, 1, log.id);
        cutter.down();
        builder.build().unwrap().start().unwrap()
    } else {
        // A pool cannot start with a shard down; it is cut off right after.
        let h = builder.build().unwrap().start().unwrap();
        cutter.down();
        support::enqueue_work(&mut *direct[1].get().unwrap(), &keys1, 1, log.id);
        h
    };
    let down_at = Instant::now();
    support::enqueue_work(&mut *direct[0].get().unwrap(), &keys0, 1, log.id);
    handle.wake();
    wait_for(
        "shard 0 to drain with shard 1 down",
        Duration::from_secs(60),
        || task_count(&mut *direct[0].get().unwrap()) == 0,
    );
    let shard0_ms = down_at.elapsed().as_millis();
    let parsed = log.read();
    let ran1 = parsed.runs.iter().filter(|r| r.key % 2 == 1).count();
    assert_eq!(ran1, 0, "shard 1 ran tasks while cut off");
    assert_eq!(task_count(&mut *direct[1].get().unwrap()), n);
    // Keep shard 1 down for a while longer (a fault window, not a synchronisation), so that
    // its fetcher is deep in its backoff when the database comes back.
    let window = Duration::from_secs(if quick() { 2 } else { 5 });
    std::thread::sleep(window.saturating_sub(down_at.elapsed()));
    let down_ms = down_at.elapsed().as_millis();
    let ran1 = log.read().runs.iter().filter(|r| r.key % 2 == 1).count();
    assert_eq!(ran1, 0, "shard 1 ran tasks while cut off");
    cutter.up();
    let up_at = now_us();
    let up = Instant::now();
    wait_for(
        "shard 1 to drain after it came back",
        Duration::from_secs(60),
        || task_count(&mut *direct[1].get().unwrap()) == 0,
    );
    let shard1_ms = up.elapsed().as_millis();
    let report_pool = handle.shutdown();
    let parsed = log.read();
    let first1 = parsed
        .runs
        .iter()
        .filter(|r| r.key % 2 == 1)
        .map(|r| r.start)
        .min()
        .unwrap();
    let recovery_ms = (first1 - up_at) / 1000;
    let keys: Vec<i64> = keys0.iter().chain(&keys1).copied().collect();
    let report = verify::check(&parsed, &keys, &[]);
    figures(format!(
        "SHARDS outage backend={b} databases=2 tasks_per_shard={n} cut_off=shard1 via={} \
         shard0_drained_while_down_ms={shard0_ms} shard1_down_ms={down_ms} \
         shard1_recovery_ms={recovery_ms} \
         shard1_drained_ms={shard1_ms} duplicates={} lost={}",
        if C::BACKEND == Backend::Sqlite {
            "exclusive lock"
        } else {
            "proxy"
        },
        report.duplicates,
        report.lost.len()
    ));
    report.assert_sound("shard outage");
    assert!(report_pool.all_joined());
    assert!(
        recovery_ms <= 2000,
        "shard 1 resumed {recovery_ms} ms after its database came back"
    );
}

// ------------------------------------------------------------------------------ affinity

/// Three worker processes with shard affinity drain two databases; one is SIGKILLed
/// mid-drain. Every task runs, none twice at once, and the killed process's tasks run
/// elsewhere within the lease (plus a poll).
fn affinity<C: TestConn>() {
    let Some(dbs) = two::<C>() else { return };
    let _g = heavy();
    let b = C::BACKEND.name();
    let pools: Vec<_> = dbs.iter().map(|d| support::migrated::<C>(d, 2)).collect();
    let log = RunLog::create(&format!("affinity-{b}"));
    // Small enough that what is left after the kill drains within the lease even on one
    // process: the rescued tasks (due when their lease lapses) then wait behind no backlog.
    let n: i64 = if quick() { 300 } else { 600 };
    let keys: Vec<i64> = (1..=n).collect();
    for (i, p) in pools.iter().enumerate() {
        let mine: Vec<i64> = keys.iter().copied().filter(|k| k % 2 == i as i64).collect();
        support::enqueue_work(&mut *p.get().unwrap(), &mine, 20, log.id);
    }
    let mut cfg = ChildCfg::new(C::BACKEND, dbs.iter().map(|d| d.url.clone()).collect());
    cfg.affinity = true;
    cfg.lease = Duration::from_secs(3);
    cfg.poll = Duration::from_millis(200);
    cfg.threads = 4;
    cfg.batch = 10;
    let mut children: Vec<ChildWorker> = (0..3).map(|_| ChildWorker::spawn(&cfg, &log)).collect();
    let nodes = pools[0]
        .get()
        .unwrap()
        .i64s("SELECT COUNT(*) AS v FROM tend_node")[0];
    wait_for("40% of the tasks", Duration::from_secs(60), || {
        log.read().ended() >= keys.len() * 2 / 5
    });
    // Kill the busiest process (rendezvous hashing may leave one of three with no shard).
    let recent = log.read();
    let since = now_us() - 500_000;
    let busy = |pid: u32| {
        recent
            .runs
            .iter()
            .filter(|r| r.pid == pid && r.start >= since)
            .count()
    };
    let busiest = (0..children.len())
        .max_by_key(|&i| busy(children[i].pid))
        .unwrap();
    let victim = children.remove(busiest);
    let pid = victim.pid;
    let at = victim.kill();
    let kills = [Kill { pid, at }];
    wait_for("both databases to drain", Duration::from_secs(120), || {
        pools
            .iter()
            .all(|p| task_count(&mut *p.get().unwrap()) == 0)
    });
    let drained_after_kill_ms = (now_us() - at) / 1000;
    for c in children {
        let stats = c.stop();
        assert_eq!(stat(&stats, "abandoned"), 0, "{stats}");
    }
    let parsed = log.read();
    let report = verify::check(&parsed, &keys, &kills);
    let handover = verify::handover(&parsed, &kills);
    let (_, handed, worst_ms) = handover[0];
    // Which shards each process claimed from, before and after the kill.
    let mut claimed: Vec<String> = Vec::new();
    for p in parsed
        .runs
        .iter()
        .map(|r| r.pid)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let sh = |before: bool| {
            parsed
                .claims
                .iter()
                .filter(|(_, q, t)| *q == p && (*t < at) == before)
                .map(|(k, _, _)| k % 2)
                .collect::<std::collections::BTreeSet<_>>()
        };
        claimed.push(format!(
            "{p}{}:{:?}->{:?}",
            if p == pid { "(killed)" } else { "" },
            sh(true),
            sh(false)
        ));
    }
    let bound = cfg.lease + cfg.poll + Duration::from_millis(1500);
    let after: Vec<usize> = parsed
        .runs
        .iter()
        .map(|r| r.pid)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|p| *p != pid)
        .map(|p| {
            parsed
                .runs
                .iter()
                .filter(|r| r.pid == p && r.start > at)
                .count()
        })
        .collect();
    figures(format!(
        "SHARDS affinity backend={b} databases=2 processes=3 nodes_registered={nodes} \
         tasks={n} lease_ms={} killed_pid={pid} tasks_handed_over={handed} \
         worst_handover_ms={worst_ms} drained_after_kill_ms={drained_after_kill_ms} \
         runs_per_survivor_after_kill={after:?} runs={} \
         duplicates={} lost={} overlaps={} shards_claimed_by_process_before->after_kill={}",
        cfg.lease.as_millis(),
        report.runs,
        report.duplicates,
        report.lost.len(),
        report.overlaps.len(),
        claimed.join(",")
    ));
    assert_eq!(nodes, 3, "three processes registered");
    report.assert_sound("affinity");
    report.assert_reruns_explained("affinity");
    assert!(
        handed > 0,
        "the killed process held no task: kill it earlier"
    );
    assert!(
        worst_ms <= bound.as_millis() as i64,
        "a task of the killed process ran {worst_ms} ms after the kill (bound {bound:?})"
    );
}

// ---------------------------------------------------------------------- affinity balance

/// Two processes with shard affinity over two databases split them, one each: "the live set
/// splits the logical shards among themselves". Plain rendezvous weights put both shards on
/// node 0 (node 0 outranks node 1 on both); the bounded-load assignment caps each node at its
/// share.
fn affinity_balance<C: TestConn>() {
    let Some(dbs) = two::<C>() else { return };
    let _g = heavy();
    let b = C::BACKEND.name();
    let pools: Vec<_> = dbs.iter().map(|d| support::migrated::<C>(d, 2)).collect();
    let log = RunLog::create(&format!("balance-{b}"));
    let mut cfg = ChildCfg::new(C::BACKEND, dbs.iter().map(|d| d.url.clone()).collect());
    cfg.affinity = true;
    cfg.poll = Duration::from_millis(100);
    // Both register before there is anything to claim.
    let children: Vec<ChildWorker> = (0..2).map(|_| ChildWorker::spawn(&cfg, &log)).collect();
    let keys: Vec<i64> = (1..=400).collect();
    for (i, p) in pools.iter().enumerate() {
        let mine: Vec<i64> = keys.iter().copied().filter(|k| k % 2 == i as i64).collect();
        support::enqueue_work(&mut *p.get().unwrap(), &mine, 5, log.id);
    }
    wait_for("both databases to drain", Duration::from_secs(120), || {
        pools
            .iter()
            .all(|p| task_count(&mut *p.get().unwrap()) == 0)
    });
    let pids: Vec<u32> = children.iter().map(|c| c.pid).collect();
    for c in children {
        c.stop();
    }
    let parsed = log.read();
    let runs: Vec<usize> = pids
        .iter()
        .map(|p| parsed.runs.iter().filter(|r| r.pid == *p).count())
        .collect();
    figures(format!(
        "SHARDS affinity_balance backend={b} databases=2 processes=2 runs_per_process={runs:?}"
    ));
    verify::check(&parsed, &keys, &[]).assert_sound("affinity balance");
    assert!(
        runs.iter().all(|n| *n > 0),
        "one of two processes with shard affinity got no shard: runs per process {runs:?}"
    );
}
