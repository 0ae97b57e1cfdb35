//! Graceful shutdown: unstarted tasks are released, a stuck one is abandoned and runs again.

use super::*;

// ---------------------------------------------------------------------------------------------
// Shutdown

/// 1 thread, batch 50: a task holds the thread while 19 more are claimed behind it. Shutdown
/// lets the running one finish and hands the 19 back: pending, attempt not counted, no lease.
pub(crate) fn shutdown_releases_claimed_but_unstarted_tasks<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let blocker = enqueue_one(&db, NewTask::new(&job(run, 0, Act::Gate)).unwrap());
    let handle = builder(&db, registry::<JobA>())
        .threads(1)
        .batch_size(50)
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the blocker to start", PATIENCE, || {
        rec.has_started(0).then_some(())
    });
    assert_eq!(db.row(blocker).unwrap().task_status, 1);
    let tasks = (1..20).map(|n| NewTask::new(&job(run, n, Act::Succeed)).unwrap());
    tend::enqueue_many(&mut db.pooled(), tasks).unwrap();
    handle.wake();
    wait_for("19 tasks claimed behind the blocker", PATIENCE, || {
        (db.rows().iter().filter(|r| r.task_status == 1).count() == 20).then_some(())
    });

    let stopping = thread::spawn(move || handle.shutdown());
    // The shutdown is under way (it marks the pool stopping first thing) before the running
    // task ends; nothing observable says so, hence the pause.
    thread::sleep(Duration::from_millis(300));
    rec.open_gate();
    let report = stopping.join().unwrap();
    assert!(report.all_joined());

    assert_eq!(
        rec.ran().len(),
        1,
        "only the running task ran: {:?}",
        rec.ran()
    );
    let rows = db.rows();
    assert_eq!(rows.len(), 19, "the running task completed");
    let now = now_ms();
    for r in &rows {
        assert_eq!((r.task_status, r.execute_times), (0, 0), "{r:?}");
        assert!(no_lease(r), "{r:?}");
        assert!(r.execute_time <= now, "due again at once: {r:?}");
    }
    // Counted whether the shutdown or a worker that found the pool stopping handed it back.
    assert_eq!(report.released, 19);
}

/// A task still running at the shutdown deadline is abandoned: the others are handed back,
/// its lease lapses, and another pool runs it again (at least once).
pub(crate) fn shutdown_abandons_a_stuck_task_which_runs_again_later<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let stuck = enqueue_one(&db, NewTask::new(&job(run, 0, Act::Gate)).unwrap());
    let handle = builder(&db, registry::<JobA>())
        .threads(1)
        .batch_size(50)
        .lease(Duration::from_secs(1))
        .shutdown_timeout(Duration::from_millis(300))
        .owner("first")
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the stuck task to start", PATIENCE, || {
        rec.has_started(0).then_some(())
    });
    assert_eq!(db.row(stuck).unwrap().task_status, 1);
    let tasks = (1..20).map(|n| NewTask::new(&job(run, n, Act::Succeed)).unwrap());
    tend::enqueue_many(&mut db.pooled(), tasks).unwrap();
    handle.wake();
    wait_for("19 tasks claimed behind the stuck one", PATIENCE, || {
        (db.rows().iter().filter(|r| r.task_status == 1).count() == 20).then_some(())
    });
    let report = handle.shutdown();
    assert_eq!((report.abandoned, report.released), (1, 19));
    let r = db.row(stuck).unwrap();
    assert_eq!(
        r.task_status, 1,
        "the abandoned task keeps its lease until it lapses"
    );
    assert_eq!(r.lease_owner.as_deref(), Some("first"));
    assert_eq!(db.rows().iter().filter(|r| r.task_status == 0).count(), 19);

    rec.open_gate(); // the abandoned attempt ends; nobody writes its outcome
    let second = builder(&db, registry::<JobA>())
        .owner("second")
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("everything to run", PATIENCE, || {
        db.rows().is_empty().then_some(())
    });
    second.shutdown();
    let attempts: BTreeSet<u32> = rec
        .ran()
        .iter()
        .filter(|r| r.n == 0)
        .map(|r| r.attempt)
        .collect();
    assert_eq!(attempts, [1, 2].into(), "the abandoned task ran again");
    for n in 1..20 {
        assert_eq!(rec.times(n), 1, "task {n}");
    }
}
