//! Execute, thread and transaction modes: the outbox's post-commit hand-off, sync tasks, tasks without a transaction.

use super::*;

// ---------------------------------------------------------------------------------------------
// Execute mode and hand-off.

pub(crate) fn right_now_tasks_start_before_any_poll<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    // A poll interval far longer than the test: only the hand-off can start the task.
    let workers = builder(db)
        .poll_interval(Duration::from_secs(600))
        .build()
        .unwrap();
    let outbox = workers.outbox();
    let handle = workers.start().unwrap();
    // Let the pool's first (startup) poll pass, so that it is idle for 600 s.
    std::thread::sleep(Duration::from_millis(300));
    let mut conn = db.pool.get().unwrap();
    let committed_at = Instant::now();
    outbox
        .transaction(&mut conn, |conn, tx| {
            tx.enqueue(conn, &work(lane, 1, 0))?;
            Ok::<_, tend::Error>(())
        })
        .unwrap();
    let returned_at = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || !records(&STARTS, lane)
            .is_empty()),
        "the right-now task did not start without a poll"
    );
    let started = records(&STARTS, lane)[0].1;
    eprintln!(
        "hand-off: handler started {:?} after the commit returned ({:?} after the transaction began); poll interval 600 s",
        started.saturating_duration_since(returned_at),
        started.saturating_duration_since(committed_at)
    );
    handle.shutdown();
}

pub(crate) fn rollback_never_hands_off<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    let workers = builder(db).build().unwrap();
    let outbox = workers.outbox();
    let handle = workers.start().unwrap();
    let mut conn = db.pool.get().unwrap();
    let r = outbox.transaction(&mut conn, |conn, tx| {
        tx.enqueue(conn, &work(lane, 1, 0))?;
        Err::<(), _>(tend::Error::invalid_setting("test", "roll back"))
    });
    assert!(r.is_err());
    // A later committed task runs; by then the rolled-back one would have run too.
    outbox
        .transaction(&mut conn, |conn, tx| {
            tx.enqueue(conn, &work(lane, 2, 0))?;
            Ok::<_, tend::Error>(())
        })
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        records(&STARTS, lane).iter().any(|r| r.0 == 2)
    }));
    handle.shutdown();
    assert!(records(&STARTS, lane).iter().all(|r| r.0 != 1));
    assert_eq!(C::count_where(&mut conn, "1 = 1"), 0);
}

pub(crate) fn lost_hand_off_still_runs_from_the_table<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    // A pool that is never started: its outbox's hand-off goes nowhere, as when the process
    // dies between the commit and the run.
    let never = builder(db).build().unwrap();
    let mut conn = db.pool.get().unwrap();
    never
        .outbox()
        .transaction(&mut conn, |conn, tx| tx.enqueue(conn, &work(lane, 7, 0)))
        .unwrap();
    drop(never);
    assert_eq!(C::count_where(&mut conn, "task_status = 0"), 1);
    let handle = builder(db).build().unwrap().start().unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        C::count_where(&mut conn, "1 = 1") == 0
    }));
    handle.shutdown();
    assert_eq!(records(&STARTS, lane).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Thread mode.

pub(crate) fn sync_task_returns_its_outcome_to_the_caller<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    let workers = builder(db).build().unwrap();
    let outbox = workers.outbox();
    let handle = workers.start().unwrap();
    let mut conn = db.pool.get().unwrap();
    let caller = std::thread::current().id();
    let committed = outbox
        .transaction(&mut conn, |conn, tx| {
            let t = NewTask::new(&work(lane, 1, 0))?.thread_way(ThreadWay::Sync);
            tx.enqueue_new(conn, t)?;
            Ok::<_, tend::Error>(std::thread::current().id())
        })
        .unwrap();
    assert_eq!(*committed.value(), caller);
    let outcomes = committed.sync_outcomes();
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].is_success(), "{outcomes:?}");
    // It ran before `transaction` returned, and its row is gone.
    assert_eq!(records(&STARTS, lane).len(), 1);
    assert!(C::row(&mut conn, outcomes[0].id()).is_none());
    handle.shutdown();
}

pub(crate) fn kept_sync_success_is_a_success<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    let workers = builder(db)
        .keep_completed(Duration::from_secs(3600))
        .build()
        .unwrap();
    let outbox = workers.outbox();
    let mut conn = db.pool.get().unwrap();
    let committed = outbox
        .transaction(&mut conn, |conn, tx| {
            let t = NewTask::new(&work(lane, 1, 0))?.thread_way(ThreadWay::Sync);
            tx.enqueue_new(conn, t)
        })
        .unwrap();
    let outcome = &committed.sync_outcomes()[0];
    assert!(outcome.is_success(), "{outcome:?}");
    let row = C::row(&mut conn, outcome.id()).unwrap();
    assert_eq!(row.task_status, TaskStatus::Succeeded.as_i32());
}

pub(crate) fn alerts_of_an_outbox_without_a_running_pool_are_delivered<C: TestConn>(
    db: &TestDb<C>,
) {
    let lane = lane();
    let workers = builder(db).build().unwrap(); // never started
    let outbox = workers.outbox();
    let mut conn = db.pool.get().unwrap();
    outbox
        .transaction(&mut conn, |conn, tx| {
            let t = NewTask::new(&work(lane, 1, 1))?
                .thread_way(ThreadWay::Sync)
                .shard_key(lane as i64)
                .alert_expression(Some("executeTimes >= 1"))
                .alerter("collect");
            tx.enqueue_new(conn, t)
        })
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || alerts_of(lane).len() == 1));
}

pub(crate) fn failed_sync_task_is_retried_by_the_pool<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    let workers = builder(db).build().unwrap();
    let outbox = workers.outbox();
    let mut conn = db.pool.get().unwrap();
    let committed = outbox
        .transaction(&mut conn, |conn, tx| {
            let t = NewTask::new(&work(lane, 1, 1))?.thread_way(ThreadWay::Sync);
            tx.enqueue_new(conn, t)
        })
        .unwrap();
    let id = committed.value().id().unwrap();
    match &committed.sync_outcomes()[0] {
        SyncOutcome::Failed { status, error, .. } => {
            assert_eq!(*status, TaskStatus::Failed);
            assert!(error.contains("planned failure 1"), "{error}");
        }
        other => panic!("expected a recorded failure, got {other:?}"),
    }
    let row = C::row(&mut conn, id).unwrap();
    assert_eq!(row.task_status, TaskStatus::Failed.as_i32());
    assert_eq!(row.execute_times, 1);
    // The pool retries it on the schedule (1 s).
    let handle = workers.start().unwrap();
    assert!(wait_until(Duration::from_secs(15), || C::row(
        &mut conn, id
    )
    .is_none()));
    handle.shutdown();
    assert_eq!(records(&STARTS, lane).len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Transaction mode.

pub(crate) fn without_transaction_survives_rollback<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    let sqlite = db.backend == Backend::Sqlite;
    let workers = builder(db).build().unwrap();
    let outbox = workers.outbox();
    let mut conn = db.pool.get().unwrap();
    let r = outbox.transaction(&mut conn, |conn, tx| {
        let detached = NewTask::new(&work(lane, 1, 0))?
            .transaction_way(TransactionWay::WithoutTransaction)
            .execute_way(ExecuteWay::Schedule)
            .delay(Duration::from_secs(3600));
        match tx.enqueue_new(conn, detached) {
            Ok(_) => assert!(!sqlite, "SQLite must refuse it inside the transaction"),
            Err(e) => assert!(sqlite && e.to_string().contains("enqueue_new"), "{e}"),
        }
        tx.enqueue(conn, &work(lane, 2, 0))?;
        Err::<(), _>(tend::Error::invalid_setting("test", "roll back"))
    });
    assert!(r.is_err());
    // Only the detached task exists (on SQLite it was refused: nothing).
    let detached = i64::from(!sqlite);
    assert_eq!(C::count_where(&mut conn, "1 = 1"), detached);
    assert_eq!(C::count_where(&mut conn, "transaction_way = 2"), detached);
    // The plain enqueue functions refuse it instead of silently joining the transaction.
    let plain = NewTask::new(&work(lane, 3, 0))
        .unwrap()
        .transaction_way(TransactionWay::WithoutTransaction);
    let e = tend::enqueue_new(&mut conn, plain).unwrap_err();
    assert!(e.to_string().contains("Outbox"), "{e}");
}

/// A WithoutTransaction task enqueued inside an Outbox transaction that already wrote to, and
/// holds row locks in, `consistency_task` never waits on that transaction: PostgreSQL and
/// MariaDB write it at once on their own connection (and it survives the rollback); SQLite,
/// whose single write lock the caller holds, refuses it at once, and the caller's transaction
/// goes on and commits.
pub(crate) fn without_transaction_never_waits_on_its_caller<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    let sqlite = db.backend == Backend::Sqlite;
    let workers = builder(db).build().unwrap();
    let outbox = workers.outbox();
    let mut conn = db.pool.get().unwrap();
    for commit in [true, false] {
        let before = C::count_where(&mut conn, "1 = 1");
        let mut waited = Duration::ZERO;
        let r = outbox.transaction(&mut conn, |conn, tx| {
            let mine = tx
                .enqueue_new(
                    conn,
                    NewTask::new(&work(lane, 1, 0))?
                        .execute_way(ExecuteWay::Schedule)
                        .delay(Duration::from_secs(3600)),
                )?
                .id()
                .unwrap();
            if !sqlite {
                // Hold the row lock explicitly as well (SQLite has no FOR UPDATE: its insert
                // already holds the database's one write lock).
                C::lock_row(conn, mine);
            }
            let detached = NewTask::new(&work(lane, 2, 0))?
                .transaction_way(TransactionWay::WithoutTransaction)
                .execute_way(ExecuteWay::Schedule)
                .delay(Duration::from_secs(3600));
            let started = Instant::now();
            let r = tx.enqueue_new(conn, detached);
            waited = started.elapsed();
            match r {
                Ok(e) => assert!(!sqlite && e.id().is_some(), "{e:?}"),
                Err(e) => {
                    assert!(sqlite, "{e}");
                    assert!(
                        matches!(
                            e.kind(),
                            tend::ErrorKind::InvalidSetting {
                                name: "transaction_way",
                                ..
                            }
                        ),
                        "{e}"
                    );
                }
            }
            if commit {
                Ok(())
            } else {
                Err(tend::Error::invalid_setting("test", "roll back"))
            }
        });
        assert_eq!(r.is_ok(), commit, "{r:?}");
        assert!(
            waited < Duration::from_secs(2),
            "the WithoutTransaction enqueue waited {waited:?} on its caller"
        );
        let mine = i64::from(commit);
        let detached = i64::from(!sqlite);
        assert_eq!(
            C::count_where(&mut conn, "1 = 1") - before,
            mine + detached,
            "commit {commit}"
        );
    }
}
