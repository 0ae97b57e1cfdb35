//! An unmigrated database, builder validation, scheduled tasks.

use super::*;

// ---------------------------------------------------------------------------------------------
// Schema and settings

pub(crate) fn an_unmigrated_database_is_refused_with_the_fix<C: TestConn>() {
    let Some(db) = TestDb::<C>::unmigrated() else {
        return;
    };
    let (run, _) = new_run();
    let err = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap_err();
    assert!(err.is_not_migrated(), "{err:?}");
    assert!(err.to_string().contains("tend::migrate"), "{err}");
    let err = tend::enqueue(&mut db.pooled(), &job(run, 0, Act::Succeed)).unwrap_err();
    assert!(err.is_not_migrated(), "{err:?}");
    let tasks = [NewTask::new(&job(run, 0, Act::Succeed)).unwrap()];
    let err = tend::enqueue_many(&mut db.pooled(), tasks).unwrap_err();
    assert!(err.is_not_migrated(), "{err:?}");
    assert!(tend::check_schema(&mut db.pooled())
        .unwrap_err()
        .is_not_migrated());

    tend::migrate(&mut db.pooled()).unwrap();
    let handle = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap();
    handle.shutdown();
}

pub(crate) fn bad_builder_settings_are_errors<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    #[allow(clippy::type_complexity)] // a table of named edits reads best inline
    let cases: [(&str, fn(WorkerPoolBuilder<C>) -> WorkerPoolBuilder<C>); 12] = [
        ("threads", |b| b.threads(0)),
        ("threads", |b| b.threads(1025)),
        ("batch_size", |b| b.batch_size(0)),
        ("batch_size", |b| b.batch_size(10_001)),
        ("poll_interval", |b| b.poll_interval(Duration::ZERO)),
        ("lease", |b| b.lease(Duration::ZERO)),
        ("lease", |b| b.lease(Duration::from_millis(999))),
        ("task_timeout", |b| {
            b.lease(Duration::from_secs(10))
                .task_timeout(Duration::from_secs(9))
        }),
        ("task_timeout", |b| b.task_timeout(Duration::from_secs(29))),
        ("owner", |b| b.owner("")),
        ("owner", |b| b.owner("x".repeat(256))),
        ("keep_completed", |b| {
            b.keep_completed(Duration::from_millis(500))
        }),
    ];
    for (i, (setting, edit)) in cases.into_iter().enumerate() {
        let err = edit(WorkerPool::builder(db.pool.clone(), Registry::new()))
            .build()
            .expect_err(&format!("case {i} ({setting}) must be refused"));
        match err.kind() {
            ErrorKind::InvalidSetting { name, .. } => assert_eq!(*name, setting, "case {i}"),
            other => panic!("case {i}: {other:?}"),
        }
        assert!(err.to_string().contains(setting), "{err}");
    }
    // The boundaries themselves are accepted.
    WorkerPool::builder(db.pool.clone(), Registry::new())
        .threads(1)
        .batch_size(1)
        .poll_interval(Duration::from_millis(1))
        .lease(Duration::from_secs(1))
        .task_timeout(Duration::from_secs(1))
        .owner("o".repeat(255))
        .build()
        .unwrap();
}

pub(crate) fn scheduled_tasks_wait_for_their_delay<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let (run, rec) = new_run();
    let task = NewTask::new(&job(run, 0, Act::Succeed))
        .unwrap()
        .execute_way(ExecuteWay::Schedule)
        .delay(Duration::from_secs(1));
    let id = enqueue_one(&db, task);
    let row = db.row(id).unwrap();
    assert_eq!(row.execute_time - row.gmt_create, 1_000);
    assert_eq!((row.delay_time, row.execute_way), (1, 2));
    let handle = builder(&db, registry::<JobA>())
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the scheduled task", PATIENCE, || {
        db.row(id).is_none().then_some(())
    });
    handle.shutdown();
    let ran = rec.ran();
    assert_eq!(ran.len(), 1);
    assert!(ran[0].start_ms >= row.execute_time, "ran before it was due");
}
