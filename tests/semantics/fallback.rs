//! Fallback and alerts, idempotency keys, events, kept completed rows and the test kit.

use super::*;

// ---------------------------------------------------------------------------------------------
// Fallback and alerts.

pub(crate) fn fallback_threshold_zero_runs_after_exactly_one_failure<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    let mut conn = db.pool.get().unwrap();
    tend::enqueue(
        &mut conn,
        &WithFallback {
            lane,
            fallback_fails: false,
        },
    )
    .unwrap();
    let handle = builder(db).build().unwrap().start().unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        C::count_where(&mut conn, "1 = 1") == 0
    }));
    handle.shutdown();
    // One failed attempt, then the fallback, which completed the task.
    assert_eq!(records(&STARTS, lane).len(), 1);
    let fb: Vec<i64> = records(&FALLBACKS, lane).iter().map(|r| r.0).collect();
    assert_eq!(fb, vec![1]);
}

pub(crate) fn fallback_threshold_two_waits_for_the_third_failure<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    let mut conn = db.pool.get().unwrap();
    tend::enqueue(&mut conn, &LateFallback { lane }).unwrap();
    let handle = builder(db).build().unwrap().start().unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        C::count_where(&mut conn, "1 = 1") == 0
    }));
    handle.shutdown();
    assert_eq!(records(&STARTS, lane).len(), 3);
    let fb: Vec<i64> = records(&FALLBACKS, lane).iter().map(|r| r.0).collect();
    assert_eq!(fb, vec![3], "the fallback runs once failures exceed 2");
}

pub(crate) fn failed_fallback_records_message_and_fires_alert<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    let mut conn = db.pool.get().unwrap();
    // The lane as shard key tells this test's alerts from other tests'.
    let task = NewTask::new(&WithFallback {
        lane,
        fallback_fails: true,
    })
    .unwrap()
    .shard_key(lane as i64);
    let id = tend::enqueue_new(&mut conn, task).unwrap().id().unwrap();
    let handle = builder(db).build().unwrap().start().unwrap();
    // max_attempts 3: dead after the third failure, fallback failing each time.
    assert!(wait_until(Duration::from_secs(20), || {
        C::row(&mut conn, id).is_some_and(|r| r.task_status == TaskStatus::Dead.as_i32())
    }));
    let alerted = wait_until(Duration::from_secs(5), || alerts_of(lane).len() == 3);
    handle.shutdown();
    let row = C::row(&mut conn, id).unwrap();
    assert_eq!(row.execute_times, 3);
    assert_eq!(
        row.fallback_error_msg.as_deref(),
        Some("compensation failed")
    );
    assert!(
        row.error_msg.contains("primary action failed"),
        "{}",
        row.error_msg
    );
    assert_eq!(row.execute_time, i64::MAX, "dead rows are parked");
    assert_eq!(records(&FALLBACKS, lane).len(), 3);
    let mine = alerts_of(lane);
    assert!(alerted, "expected 3 alerts, got {}", mine.len());
    assert_eq!(
        mine[0].fallback_error_msg.as_deref(),
        Some("compensation failed")
    );
    assert_eq!(mine[2].status, TaskStatus::Dead);
}

pub(crate) fn panicking_alerter_does_not_hurt_the_pool<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    let mut conn = db.pool.get().unwrap();
    // Fails once; the expression fires on every failure; the alerter panics.
    let bad = NewTask::new(&work(lane, 1, 1))
        .unwrap()
        .alert_expression(Some("executeTimes >= 1"))
        .alerter("explode");
    tend::enqueue_new(&mut conn, bad).unwrap();
    let handle = builder(db).build().unwrap().start().unwrap();
    assert!(wait_until(Duration::from_secs(15), || {
        C::count_where(&mut conn, "1 = 1") == 0
    }));
    // The pool still runs new work after the alerter panicked.
    tend::enqueue(&mut conn, &work(lane, 2, 0)).unwrap();
    handle.wake();
    assert!(wait_until(Duration::from_secs(10), || {
        C::count_where(&mut conn, "1 = 1") == 0
    }));
    handle.shutdown();
    let keys: Vec<i64> = records(&STARTS, lane).iter().map(|r| r.0).collect();
    assert_eq!(keys, vec![1, 1, 2]);
}

// ---------------------------------------------------------------------------------------------
// Idempotency.

pub(crate) fn concurrent_duplicate_keys_leave_one_row<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    let results: Vec<Enqueued> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let pool = db.pool.clone();
                s.spawn(move || {
                    let mut conn = pool.get().unwrap();
                    // Each in its own transaction, holding it open a little, so the inserts
                    // really overlap.
                    loop {
                        let r = conn.transaction(|conn| {
                            let t = NewTask::new(&work(lane, i, 0))?
                                .execute_way(ExecuteWay::Schedule)
                                .idempotency_key(format!("order-{lane}"));
                            let e = tend::enqueue_new(conn, t)?;
                            std::thread::sleep(Duration::from_millis(20));
                            Ok::<_, tend::Error>(e)
                        });
                        match r {
                            Err(e) if e.is_transient() => continue,
                            other => return other.unwrap(),
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let inserted = results.iter().filter(|e| !e.is_duplicate()).count();
    assert_eq!(inserted, 1, "{results:?}");
    let mut conn = db.pool.get().unwrap();
    assert_eq!(
        C::count_where(&mut conn, &format!("idempotency_key = 'order-{lane}'")),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Events, retention, test kit.

pub(crate) fn events_report_the_life_of_a_task<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = seen.clone();
    let workers = builder(db)
        .events(move |e: &Event<'_>| {
            let kind = match e {
                Event::Enqueued(_) => "enqueued",
                Event::Claimed(_) => "claimed",
                Event::Started(_) => "started",
                Event::Succeeded { .. } => "succeeded",
                Event::Failed { .. } => "failed",
                Event::Retried { .. } => "retried",
                _ => "other",
            };
            sink.lock().unwrap().push(kind.to_string());
        })
        .build()
        .unwrap();
    let outbox = workers.outbox();
    let handle = workers.start().unwrap();
    let mut conn = db.pool.get().unwrap();
    outbox
        .transaction(&mut conn, |conn, tx| tx.enqueue(conn, &work(lane, 1, 1)))
        .unwrap();
    assert!(wait_until(Duration::from_secs(15), || {
        C::count_where(&mut conn, "1 = 1") == 0
    }));
    handle.shutdown();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            "enqueued",
            "claimed",
            "started",
            "failed",
            "retried",
            "claimed",
            "started",
            "succeeded"
        ]
    );
}

pub(crate) fn kept_completed_rows_are_purged_after_retention<C: TestConn>(db: &TestDb<C>) {
    let lane = lane();
    let mut conn = db.pool.get().unwrap();
    let id = tend::enqueue(&mut conn, &work(lane, 1, 0))
        .unwrap()
        .id()
        .unwrap();
    let handle = builder(db)
        .keep_completed(Duration::from_secs(2))
        .build()
        .unwrap()
        .start()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        C::row(&mut conn, id).is_some_and(|r| r.task_status == TaskStatus::Succeeded.as_i32())
    }));
    let kept = C::row(&mut conn, id).unwrap();
    assert!(kept.duration_ms.is_some());
    assert_eq!(kept.execute_time, i64::MAX, "kept rows are parked");
    // Purged in the background once older than the retention (checked every second).
    assert!(wait_until(Duration::from_secs(10), || C::row(
        &mut conn, id
    )
    .is_none()));
    handle.shutdown();
}

#[cfg(feature = "testing")]
pub(crate) fn test_worker_runs_tasks_on_a_test_clock<C: TestConn>(db: &TestDb<C>) {
    use tend::testing::{assert_enqueued, TestWorker};
    let lane = lane();
    let mut conn = db.pool.get().unwrap();
    conn.transaction(|conn| {
        let later = NewTask::new(&work(lane, 5, 1))?
            .execute_way(ExecuteWay::Schedule)
            .delay(Duration::from_secs(3600));
        tend::enqueue_new(conn, later)
    })
    .unwrap();
    let found: Work = assert_enqueued(&mut conn, |w: &Work| w.lane == lane);
    assert_eq!(found.key, 5);
    let worker = TestWorker::new(registry());
    assert_eq!(worker.drain(&mut conn).unwrap().succeeded, 0, "not due yet");
    worker.advance(Duration::from_secs(3600));
    let first = worker.drain(&mut conn).unwrap();
    assert_eq!((first.succeeded, first.failed), (0, 1));
    worker.advance(Duration::from_secs(1));
    let second = worker.drain(&mut conn).unwrap();
    assert_eq!(second.succeeded, 1);
    assert_eq!(C::count_where(&mut conn, "1 = 1"), 0);
}

#[cfg(not(feature = "testing"))]
pub(crate) fn test_worker_runs_tasks_on_a_test_clock<C: TestConn>(_: &TestDb<C>) {
    eprintln!("SKIPPED: the `testing` feature is off");
}
