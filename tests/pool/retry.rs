//! Retries, dead, held and panics.

use super::*;

// ---------------------------------------------------------------------------------------------
// Retries, dead, held, panics

/// Runs a task that always fails, 3 attempts with a 2 s interval, waking the pool (polling
/// hourly) only once each retry is due, and checks each scheduled wait exactly:
/// `execute_time - gmt_modified` of the failed row is the policy's wait.
pub(crate) fn failing_three_times<C: TestConn, T: Task>(
    db: &TestDb<C>,
    task: &T,
    waits_ms: [i64; 2],
) {
    let task = NewTask::new(task)
        .unwrap()
        .max_attempts(3)
        .execute_interval(Duration::from_secs(2));
    let id = enqueue_one(db, task);
    let handle = WorkerPool::builder(db.pool.clone(), registry::<T>())
        .threads(1)
        .poll_interval(Duration::from_secs(3600))
        .build()
        .unwrap()
        .start()
        .unwrap(); // the first claim happens at start
    let mut due = Vec::new();
    for (attempt, wait) in (1..=2).zip(waits_ms) {
        let r = wait_row(db, id, "a failed attempt", |r| {
            r.task_status == 2 && r.execute_times == attempt
        });
        assert_eq!(r.error_msg, format!("boom {attempt}"));
        assert_eq!(
            r.execute_time - r.gmt_modified,
            wait,
            "the wait after failed attempt {attempt}"
        );
        assert!(no_lease(&r), "{r:?}");
        due.push(r.execute_time);
        wake_when_due(&handle, r.execute_time);
    }
    let r = wait_row(db, id, "the task to be dead", |r| r.task_status == 4);
    assert_eq!(r.execute_times, 3);
    assert_eq!(r.execute_time, PARKED, "a dead task is parked");
    assert_eq!(r.error_msg, "out of attempts: boom 3");
    assert!(no_lease(&r));
    handle.shutdown();
}

pub(crate) fn retry_schedule_is_linear_by_default_then_dead<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    failing_three_times(&db, &job(run, 0, Act::Fail), [2_000, 4_000]);
    let ran = rec.ran();
    assert_eq!(ran.iter().map(|r| r.attempt).collect::<Vec<_>>(), [1, 2, 3]);
}

pub(crate) fn retry_schedule_fixed<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let task = FixedJob {
        run,
        n: 0,
        act: Act::Fail,
    };
    failing_three_times(&db, &task, [2_000, 2_000]);
    assert_eq!(rec.ran().len(), 3);
}

/// With a pool that polls every 50 ms, a failed task is not run again before its wait is
/// over, and is run soon after.
pub(crate) fn a_retry_waits_for_its_due_time_then_succeeds<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let id = enqueue_one(&db, NewTask::new(&job(run, 0, Act::FailOnce)).unwrap());
    let handle = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the task to succeed", PATIENCE, || {
        db.row(id).is_none().then_some(())
    });
    handle.shutdown();
    let ran = rec.ran();
    assert_eq!(ran.len(), 2);
    let gap = ran[1].start.duration_since(ran[0].end);
    // The wait is computed from the clock in whole milliseconds; allow for the rounding.
    assert!(
        gap >= Duration::from_millis(995),
        "retried after {gap:?}, before the 1 s wait"
    );
    assert!(gap < Duration::from_secs(10), "retried only after {gap:?}");
}

pub(crate) fn retry_after_overrides_the_schedule<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, _) = new_run();
    let id = enqueue_one(
        &db,
        NewTask::new(&job(run, 0, Act::RetryAfterSecs(7))).unwrap(),
    );
    let handle = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap();
    let r = wait_row(&db, id, "the failure", |r| r.task_status == 2);
    assert_eq!(r.execute_time - r.gmt_modified, 7_000);
    assert_eq!((r.execute_times, r.error_msg.as_str()), (1, "rate limited"));
    handle.shutdown();
}

pub(crate) fn dead_after_max_attempts<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let id = enqueue_one(
        &db,
        NewTask::new(&job(run, 0, Act::Fail))
            .unwrap()
            .max_attempts(1),
    );
    let handle = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap();
    let dead = wait_row(&db, id, "the task to be dead", |r| r.task_status == 4);
    assert_eq!(dead.execute_times, 1);
    assert_eq!(dead.execute_time, PARKED);
    assert_eq!(dead.error_msg, "out of attempts: boom 1");
    assert!(no_lease(&dead));
    // Later polls leave it alone: a task enqueued after it runs, and it does not.
    let later = enqueue_one(&db, NewTask::new(&job(run, 1, Act::Succeed)).unwrap());
    handle.wake();
    wait_for("the later task", PATIENCE, || {
        db.row(later).is_none().then_some(())
    });
    handle.shutdown();
    assert_eq!(rec.times(0), 1);
    assert_eq!(
        format!("{:?}", db.row(id).unwrap()),
        format!("{dead:?}"),
        "a dead row is kept as it was"
    );
}

pub(crate) fn give_up_is_dead_at_once<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let id = enqueue_one(&db, NewTask::new(&job(run, 0, Act::GiveUp)).unwrap());
    let handle = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap();
    let dead = wait_row(&db, id, "the task to be dead", |r| r.task_status == 4);
    handle.shutdown();
    assert_eq!((dead.execute_times, dead.max_attempts), (1, 25));
    assert_eq!(dead.execute_time, PARKED);
    assert_eq!(dead.error_msg, "the handler gave up: no such order");
    assert_eq!(rec.times(0), 1);
}

/// Rows this deployment cannot run are held with a message, never deleted, never counted as
/// done, while the healthy tasks around them run.
pub(crate) fn unknown_and_undecodable_tasks_are_held_while_others_run<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let mut conn = db.pooled();
    let unknown = tend::enqueue(&mut conn, &Unregistered { x: 1 })
        .unwrap()
        .id()
        .unwrap();
    let reshaped = tend::enqueue(
        &mut conn,
        &ShapeA {
            text: "written by an older build".into(),
        },
    )
    .unwrap()
    .id()
    .unwrap();
    let garbage = tend::enqueue(&mut conn, &job(run, 999, Act::Succeed))
        .unwrap()
        .id()
        .unwrap();
    C::set_payload(&mut conn, garbage, &[0xff, 0xff, 0xff]);
    let healthy = (0..30).map(|n| NewTask::new(&job(run, n, Act::Succeed)).unwrap());
    assert_eq!(tend::enqueue_many(&mut conn, healthy).unwrap(), 30);
    drop(conn);

    let mut reg = registry::<JobA>();
    reg.register::<ShapeB>().unwrap();
    let handle = builder(&db, reg).build().unwrap().start().unwrap();
    let held = wait_for("30 tasks run and 3 held", PATIENCE, || {
        let rows = db.rows();
        (rec.ran().len() == 30 && rows.len() == 3 && rows.iter().all(|r| r.task_status == 5))
            .then_some(rows)
    });
    let msg = |id| &held.iter().find(|r| r.id == id).unwrap().error_msg;
    assert!(
        msg(unknown).contains("no task type is registered for signature `test.unregistered`"),
        "{}",
        msg(unknown)
    );
    for id in [reshaped, garbage] {
        assert!(
            msg(id).contains("payload does not decode as"),
            "{}",
            msg(id)
        );
    }
    assert!(msg(reshaped).contains("ShapeB"), "{}", msg(reshaped));
    for r in &held {
        assert_eq!(r.execute_time, PARKED);
        assert!(no_lease(r));
    }
    assert_eq!(SHAPE_B_RAN.load(Ordering::SeqCst), 0);
    assert_eq!(rec.times(999), 0);

    // The pool goes on, and leaves the held rows alone.
    let later = enqueue_one(&db, NewTask::new(&job(run, 100, Act::Succeed)).unwrap());
    handle.wake();
    wait_for("a later task", PATIENCE, || {
        db.row(later).is_none().then_some(())
    });
    handle.shutdown();
    assert_eq!(format!("{:?}", db.rows()), format!("{held:?}"));
}

pub(crate) fn a_panicking_handler_fails_and_its_thread_survives<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    // Its retry is an hour away: it runs once in this test.
    let panics = NewTask::new(&job(run, 0, Act::Panic))
        .unwrap()
        .execute_interval(Duration::from_secs(3600));
    let id = enqueue_one(&db, panics);
    let handle = builder(&db, registry::<JobA>())
        .threads(1)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let failed = wait_row(&db, id, "the panic to be recorded", |r| r.task_status == 2);
    assert!(
        failed.error_msg.contains("panicked"),
        "{}",
        failed.error_msg
    );
    assert!(
        failed.error_msg.contains("handler exploded on purpose"),
        "{}",
        failed.error_msg
    );
    assert_eq!(failed.execute_times, 1);
    assert!(
        failed.execute_time > failed.gmt_modified,
        "a retry is scheduled"
    );

    // The pool's only worker thread panicked; it must still run what comes next.
    let tasks = (1..=10).map(|n| NewTask::new(&job(run, n, Act::Succeed)).unwrap());
    tend::enqueue_many(&mut db.pooled(), tasks).unwrap();
    handle.wake();
    wait_for("the tasks after the panic", PATIENCE, || {
        (db.rows().len() == 1).then_some(())
    });
    assert!(handle.shutdown().all_joined());
    let ran = rec.ran();
    assert_eq!(ran.len(), 11);
    assert!(ran.iter().all(|r| r.thread == ran[0].thread), "{ran:?}");
}
