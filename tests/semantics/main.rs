//! Execution semantics (issue 3) and operations hooks (issue 5) on every backend: the outbox's
//! post-commit hand-off, sync and without-transaction tasks, fallback and alerts, idempotency
//! keys, events, kept completed rows and the test kit.

#[path = "../support/mod.rs"]
mod support;

mod fallback;
mod handoff;

use fallback::*;
use handoff::*;

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
