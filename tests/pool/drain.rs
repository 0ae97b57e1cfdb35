//! Enqueue in the caller's transaction, and draining: every task runs once, also with two pools.

use super::*;

// ---------------------------------------------------------------------------------------------
// Enqueue in the caller's transaction

/// Rolled back: neither the order nor the task exists. Committed: exactly one of each.
pub(crate) fn enqueue_follows_the_transaction<C: TestConn, Conn>(db: &TestDb<C>, conn: &mut Conn)
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

pub(crate) fn enqueue_commits_and_rolls_back_with_the_transaction<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    enqueue_follows_the_transaction(&db, &mut db.connect());
}

pub(crate) fn enqueue_on_a_pooled_connection_follows_the_transaction<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    enqueue_follows_the_transaction(&db, &mut db.pooled());
}

pub(crate) fn enqueue_many_follows_the_transaction<C: TestConn>() {
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

pub(crate) fn pool_drains_every_task_once<C: TestConn>() {
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
pub(crate) fn a_small_r2d2_pool_still_leaves_the_application_a_connection<C: TestConn>() {
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
pub(crate) fn two_pools_never_run_a_task_twice<C: TestConn>() {
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
pub(crate) fn an_idle_pool_waits_for_its_poll_interval<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let first = enqueue_one(&db, NewTask::new(&job(run, 0, Act::Succeed)).unwrap());
    // One thread, so one fetcher: with two (PostgreSQL and MariaDB give a pool of two threads
    // two claimers), the second fetcher's claim at start may run late on a loaded machine,
    // after the second enqueue below, and take that task lawfully (a claim that began at start,
    // not a loop: this test failed in 2 of 65 runs here beside six busy loops on two cores).
    let handle = builder(&db, registry::<JobA>())
        .threads(1)
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
