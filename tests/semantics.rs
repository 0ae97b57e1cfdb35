//! Execution semantics (issue 3) and operations hooks (issue 5) on every backend: the outbox's
//! post-commit hand-off, sync and without-transaction tasks, fallback and alerts, idempotency
//! keys, events, kept completed rows and the test kit.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use tend::{
    Alert, Enqueued, Event, ExecuteWay, NewTask, Registry, SyncOutcome, Task, TaskContext,
    TaskError, TaskOptions, TaskStatus, ThreadWay, TransactionWay, WorkerPool,
};

use support::{per_backend, wait_until, Backend, TestConn, TestDb};

per_backend!(
    fresh:
    right_now_tasks_start_before_any_poll,
    rollback_never_hands_off,
    lost_hand_off_still_runs_from_the_table,
    sync_task_returns_its_outcome_to_the_caller,
    kept_sync_success_is_a_success,
    alerts_of_an_outbox_without_a_running_pool_are_delivered,
    failed_sync_task_is_retried_by_the_pool,
    without_transaction_survives_rollback,
    without_transaction_never_waits_on_its_caller,
    fallback_threshold_zero_runs_after_exactly_one_failure,
    fallback_threshold_two_waits_for_the_third_failure,
    failed_fallback_records_message_and_fires_alert,
    panicking_alerter_does_not_hurt_the_pool,
    concurrent_duplicate_keys_leave_one_row,
    events_report_the_life_of_a_task,
    kept_completed_rows_are_purged_after_retention,
    test_worker_runs_tasks_on_a_test_clock,
);

// ---------------------------------------------------------------------------------------------
// Task types. Each test uses its own "lane" number so that tests sharing a process never see
// each other's records.

type Log = Mutex<BTreeMap<u64, Vec<(i64, Instant)>>>;

static STARTS: Log = Mutex::new(BTreeMap::new());
static FALLBACKS: Log = Mutex::new(BTreeMap::new());

fn record(log: &Log, lane: u64, key: i64) {
    log.lock()
        .unwrap()
        .entry(lane)
        .or_default()
        .push((key, Instant::now()));
}

fn records(log: &Log, lane: u64) -> Vec<(i64, Instant)> {
    log.lock().unwrap().get(&lane).cloned().unwrap_or_default()
}

static LANES: AtomicUsize = AtomicUsize::new(1);

fn lane() -> u64 {
    LANES.fetch_add(1, Ordering::SeqCst) as u64
}

/// Succeeds unless `fail_first` attempts remain; records every start.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Work {
    lane: u64,
    key: i64,
    fail_first: u32,
}

impl Task for Work {
    const SIGNATURE: &'static str = "test.work";

    fn options() -> TaskOptions {
        TaskOptions::new()
            .execute_interval(Duration::from_secs(1))
            .retry_policy(tend::RetryPolicy::Fixed)
    }

    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        record(&STARTS, self.lane, self.key);
        if ctx.attempt() <= self.fail_first {
            return Err(TaskError::new(format!("planned failure {}", ctx.attempt())));
        }
        Ok(())
    }
}

/// Always fails; its fallback succeeds unless `fallback_fails`.
#[derive(Serialize, Deserialize)]
struct WithFallback {
    lane: u64,
    fallback_fails: bool,
}

impl Task for WithFallback {
    const SIGNATURE: &'static str = "test.with_fallback";

    fn options() -> TaskOptions {
        TaskOptions::new()
            .fallback("test.with_fallback.compensate")
            .execute_interval(Duration::from_secs(1))
            .retry_policy(tend::RetryPolicy::Fixed)
            .max_attempts(3)
            .alert_expression(Some("fallbackFailed && executeTimes >= 1"))
            .alerter("collect")
    }

    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        record(&STARTS, self.lane, ctx.attempt() as i64);
        Err(TaskError::new("primary action failed"))
    }

    fn fallback(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        record(&FALLBACKS, self.lane, ctx.attempt() as i64);
        if self.fallback_fails {
            Err(TaskError::new("compensation failed"))
        } else {
            Ok(())
        }
    }
}

/// Like `WithFallback`, with threshold 2.
#[derive(Serialize, Deserialize)]
struct LateFallback {
    lane: u64,
}

impl Task for LateFallback {
    const SIGNATURE: &'static str = "test.late_fallback";

    fn options() -> TaskOptions {
        TaskOptions::new()
            .fallback("test.late_fallback.compensate")
            .fallback_threshold(2)
            .execute_interval(Duration::from_secs(1))
            .retry_policy(tend::RetryPolicy::Fixed)
    }

    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        record(&STARTS, self.lane, ctx.attempt() as i64);
        Err(TaskError::new("primary action failed"))
    }

    fn fallback(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        record(&FALLBACKS, self.lane, ctx.attempt() as i64);
        Ok(())
    }
}

static ALERTS: Mutex<Vec<Alert>> = Mutex::new(Vec::new());

fn alerts_of(lane: u64) -> Vec<Alert> {
    let all = ALERTS.lock().unwrap_or_else(|p| p.into_inner());
    all.iter()
        .filter(|a| a.shard_key == lane as i64)
        .cloned()
        .collect()
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.alerter("collect", |a: &Alert| {
        ALERTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(a.clone())
    })
    .unwrap();
    r.alerter("explode", |_: &Alert| panic!("alerter blew up"))
        .unwrap();
    r.register::<Work>()
        .unwrap()
        .register::<WithFallback>()
        .unwrap()
        .register::<LateFallback>()
        .unwrap();
    r
}

fn builder<C: TestConn>(db: &TestDb<C>) -> tend::WorkerPoolBuilder<C> {
    WorkerPool::builder(db.pool.clone(), registry())
        .threads(2)
        .poll_interval(Duration::from_millis(50))
        .lease(Duration::from_secs(5))
        .task_timeout(Duration::from_secs(5))
        .shutdown_timeout(Duration::from_secs(5))
}

fn work(lane: u64, key: i64, fail_first: u32) -> Work {
    Work {
        lane,
        key,
        fail_first,
    }
}

// ---------------------------------------------------------------------------------------------
// Execute mode and hand-off.

fn right_now_tasks_start_before_any_poll<C: TestConn>(db: &TestDb<C>) {
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

fn rollback_never_hands_off<C: TestConn>(db: &TestDb<C>) {
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

fn lost_hand_off_still_runs_from_the_table<C: TestConn>(db: &TestDb<C>) {
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

fn sync_task_returns_its_outcome_to_the_caller<C: TestConn>(db: &TestDb<C>) {
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

fn kept_sync_success_is_a_success<C: TestConn>(db: &TestDb<C>) {
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

fn alerts_of_an_outbox_without_a_running_pool_are_delivered<C: TestConn>(db: &TestDb<C>) {
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

fn failed_sync_task_is_retried_by_the_pool<C: TestConn>(db: &TestDb<C>) {
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

fn without_transaction_survives_rollback<C: TestConn>(db: &TestDb<C>) {
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
fn without_transaction_never_waits_on_its_caller<C: TestConn>(db: &TestDb<C>) {
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

// ---------------------------------------------------------------------------------------------
// Fallback and alerts.

fn fallback_threshold_zero_runs_after_exactly_one_failure<C: TestConn>(db: &TestDb<C>) {
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

fn fallback_threshold_two_waits_for_the_third_failure<C: TestConn>(db: &TestDb<C>) {
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

fn failed_fallback_records_message_and_fires_alert<C: TestConn>(db: &TestDb<C>) {
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

fn panicking_alerter_does_not_hurt_the_pool<C: TestConn>(db: &TestDb<C>) {
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

fn concurrent_duplicate_keys_leave_one_row<C: TestConn>(db: &TestDb<C>) {
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

fn events_report_the_life_of_a_task<C: TestConn>(db: &TestDb<C>) {
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

fn kept_completed_rows_are_purged_after_retention<C: TestConn>(db: &TestDb<C>) {
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
fn test_worker_runs_tasks_on_a_test_clock<C: TestConn>(db: &TestDb<C>) {
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
fn test_worker_runs_tasks_on_a_test_clock<C: TestConn>(_: &TestDb<C>) {
    eprintln!("SKIPPED: the `testing` feature is off");
}

// ---------------------------------------------------------------------------------------------
// Registration-time checks (no database).

#[test]
fn invalid_alert_expressions_are_rejected_at_registration_with_a_position() {
    #[derive(Serialize, Deserialize)]
    struct Bad;
    impl Task for Bad {
        const SIGNATURE: &'static str = "test.bad_expression";
        fn options() -> TaskOptions {
            TaskOptions::new().alert_expression(Some("executeTimes > 1 &&& 2"))
        }
        fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
            Ok(())
        }
    }
    let e = Registry::new().register::<Bad>().unwrap_err();
    assert!(e.to_string().contains("position"), "{e}");
    // And at enqueue, before any SQL is sent.
    let mut conn = diesel::SqliteConnection::establish(":memory:").unwrap();
    let t = NewTask::new(&work(0, 0, 0))
        .unwrap()
        .alert_expression(Some("exectueTimes > 1"));
    let e = tend::enqueue_new(&mut conn, t).unwrap_err();
    assert!(e.to_string().contains("position 0"), "{e}");
}

#[test]
fn unknown_alerter_names_are_rejected_at_registration() {
    #[derive(Serialize, Deserialize)]
    struct Paged;
    impl Task for Paged {
        const SIGNATURE: &'static str = "test.paged";
        fn options() -> TaskOptions {
            TaskOptions::new().alerter("nobody")
        }
        fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
            Ok(())
        }
    }
    let e = Registry::new().register::<Paged>().unwrap_err();
    assert!(e.to_string().contains("nobody"), "{e}");
}

#[test]
fn an_outbox_transaction_must_be_the_outermost() {
    let db = TestDb::<diesel::SqliteConnection>::fresh().unwrap();
    let workers = builder(&db).build().unwrap();
    let outbox = workers.outbox();
    let mut conn = db.pool.get().unwrap();
    let r = conn.transaction(|conn| {
        outbox
            .transaction(conn, |conn, tx| tx.enqueue(conn, &work(0, 0, 0)))
            .map(|_| ())
    });
    let e = r.unwrap_err();
    assert!(e.to_string().contains("outermost"), "{e}");
}
