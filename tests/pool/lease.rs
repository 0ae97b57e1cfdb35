//! A claim whose statement waited longer than its lease: its rows are re-leased before they run.

use super::*;
use diesel::connection::SimpleConnection;
use support::Backend;

/// The application holds the task table (SQLite's write lock, PostgreSQL's `EXCLUSIVE` table
/// lock, MySQL's `LOCK TABLES … WRITE`) for 1.6 s while it enqueues a task that is already
/// due, with a pool of lease 1 s polling every 20 ms. The pool's next claim builds its lease
/// (until its `now` + 1 s), then waits for the lock, and so returns with a lease that has
/// already lapsed: another claim may take those rows while they run. The pool must renew the
/// lease under its token before the task runs: while the handler runs, the row is held, by
/// this pool, with a lease that ends in the future. (Without the renewal the row's lease is
/// 0.6 s in the past when the handler starts; the pool's own periodic renewal, every lease / 3,
/// comes later than this test's read but for a few milliseconds in 333.)
pub(crate) fn a_claim_that_waited_past_its_lease_renews_it_before_running<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let handle = builder(&db, registry::<JobA>())
        .threads(1)
        .poll_interval(Duration::from_millis(20))
        .lease(Duration::from_secs(1))
        .owner("waiter")
        .build()
        .unwrap()
        .start()
        .unwrap();
    // Some polls first: the pool is claiming (finding nothing) when the lock is taken.
    thread::sleep(Duration::from_millis(200));
    let (lock, unlock) = match C::BACKEND {
        Backend::Sqlite => ("BEGIN IMMEDIATE", "COMMIT"),
        Backend::Postgres => (
            "BEGIN; LOCK TABLE consistency_task IN EXCLUSIVE MODE",
            "COMMIT",
        ),
        Backend::Mysql => ("LOCK TABLES consistency_task WRITE", "UNLOCK TABLES"),
    };
    let mut app = db.pooled();
    app.batch_execute(lock).unwrap();
    let due_a_minute_ago = std::time::SystemTime::now() - Duration::from_secs(60);
    let task = NewTask::new(&job(run, 0, Act::Gate))
        .unwrap()
        .run_at(due_a_minute_ago);
    let id = tend::enqueue_new(&mut *app, task).unwrap().id().unwrap();
    thread::sleep(Duration::from_millis(1600));
    app.batch_execute(unlock).unwrap();
    drop(app);

    assert_runs_once_under_a_live_lease(&db, &rec, id, "waiter");
    handle.shutdown();
    assert_eq!(rec.times(0), 1);
    assert_eq!(rec.ran()[0].attempt, 1);
}

/// An outbox transaction that lasts longer than the pool's lease (1 s): its right-now task was
/// leased to the pool at insert, so at the commit that lease has lapsed, and the pool's poll
/// (every 50 ms) may claim the row while the hand-off runs it. The outbox renews the lease
/// after the commit, under the row's token, before the task runs: it runs once, under a lease
/// that ends in the future (or, had a poll claimed it first, only there).
pub(crate) fn an_outbox_transaction_longer_than_the_lease_renews_it_before_running<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let (outbox, handle) = outbox_and_pool(&db);
    let mut conn = db.pooled();
    let id = outbox
        .transaction(&mut *conn, |conn, tx| {
            let id = tx.enqueue(conn, &job(run, 0, Act::Gate))?.id().unwrap();
            thread::sleep(Duration::from_millis(1600));
            Ok::<_, tend::Error>(id)
        })
        .unwrap()
        .into_value();
    assert_runs_once_under_a_live_lease(&db, &rec, id, "pool");
    handle.shutdown();
}

/// The same for a sync task (leased to its caller at insert, run in the caller's thread after
/// the commit): renewed before it runs, it runs once, in the caller, under a live lease.
pub(crate) fn a_sync_task_committed_after_its_lease_renews_it_before_running<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let (outbox, handle) = outbox_and_pool(&db);
    let mut conn = db.pooled();
    let watcher = {
        let (db_url, rec) = (db.url.clone(), rec.clone());
        thread::spawn(move || {
            wait_for("the sync task to start", PATIENCE, || {
                rec.has_started(0).then_some(())
            });
            let mut c = support::connect::<C>(&db_url);
            let r = C::rows(&mut c);
            let now = now_ms();
            rec.open_gate();
            (r, now)
        })
    };
    let committed = outbox
        .transaction(&mut *conn, |conn, tx| {
            let t = NewTask::new(&job(run, 0, Act::Gate))?.thread_way(tend::ThreadWay::Sync);
            tx.enqueue_new(conn, t)?;
            thread::sleep(Duration::from_millis(1600));
            Ok::<_, tend::Error>(())
        })
        .unwrap();
    let (rows, now) = watcher.join().unwrap();
    let outcome = &committed.sync_outcomes()[0];
    let r = rows.iter().find(|r| r.id == outcome.id()).unwrap();
    assert_eq!(r.task_status, 1, "{r:?}");
    let until = r.lease_expires_at.expect("a running row has a lease");
    assert!(
        until > now,
        "the sync task runs under a lease that lapsed {} ms ago: the pool could take it",
        now - until
    );
    wait_for("the task to finish", PATIENCE, || {
        db.rows().is_empty().then_some(())
    });
    assert_eq!(rec.times(0), 1, "{outcome:?}");
    if outcome.is_success() {
        assert_eq!(rec.ran()[0].thread, thread::current().name().unwrap_or("?"));
    }
    handle.shutdown();
}

/// Waits for task 0 of `rec` (row `id`) to start, checks its row is held by `owner` with a
/// lease that ends in the future, lets it finish, and checks it ran once.
fn assert_runs_once_under_a_live_lease<C: TestConn>(
    db: &TestDb<C>,
    rec: &support::Run,
    id: i64,
    owner: &str,
) {
    wait_for("the task to start", PATIENCE, || {
        rec.has_started(0).then_some(())
    });
    let r = db.row(id).unwrap();
    let now = now_ms();
    rec.open_gate();
    assert_eq!(r.task_status, 1, "{r:?}");
    assert_eq!(r.lease_owner.as_deref(), Some(owner), "{r:?}");
    let until = r.lease_expires_at.expect("a running row has a lease");
    assert!(
        until > now,
        "the task runs under a lease that lapsed {} ms ago: another claim could take it",
        now - until
    );
    wait_for("the task to finish", PATIENCE, || {
        db.rows().is_empty().then_some(())
    });
    assert_eq!(rec.times(0), 1);
}

/// A started pool of one thread with a 1 s lease (owner `pool`) and its outbox.
fn outbox_and_pool<C: TestConn>(db: &TestDb<C>) -> (tend::Outbox<C>, PoolHandle) {
    let workers = builder(db, registry::<JobA>())
        .threads(1)
        .lease(Duration::from_secs(1))
        .owner("pool")
        .build()
        .unwrap();
    let outbox = workers.outbox();
    (outbox, workers.start().unwrap())
}
