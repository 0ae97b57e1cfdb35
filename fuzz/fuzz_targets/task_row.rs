//! A `consistency_task` row with arbitrary values in every column (as a bug, a manual edit, an
//! older or newer deployment could leave it), inserted into an in-memory SQLite database
//! migrated with `tend::migrate`, then run the way a worker runs it: claimed, run and written
//! back by `tend::testing::TestWorker` (the pool's `run_one` and its claim and write statements).
//!
//! Registered: `fuzz.probe` (its payload byte picks success, error, panic or give-up) and
//! `fuzz.probe_fallback` (the same with a fallback at threshold 0 that succeeds, fails or
//! panics), and an alerter `pager`. Anything else is an unknown signature.
//!
//! Invariants: no panic and no database error; the row is deleted only if its handler (or its
//! fallback) succeeded; a row that was due and claimable is run; after the run the row is gone,
//! or failed (due later), dead or held (parked at i64::MAX with a message); a row that was not
//! due or not claimable is left exactly as it was.
#![no_main]

use std::cell::RefCell;
use std::time::Duration;

use arbitrary::Arbitrary;
use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Binary, Integer, Nullable, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use tend::testing::TestWorker;
use tend::{Alert, Registry, Task, TaskContext, TaskError, TaskOptions};

thread_local! {
    /// Ids whose handler or fallback returned Ok in this run.
    static SUCCEEDED: RefCell<Vec<i64>> = const { RefCell::new(Vec::new()) };
    static BENCH: RefCell<Option<(SqliteConnection, Registry)>> = const { RefCell::new(None) };
}

fn act(action: u8, ctx: &TaskContext) -> Result<(), TaskError> {
    match action % 4 {
        0 => {
            SUCCEEDED.with(|s| s.borrow_mut().push(ctx.id()));
            Ok(())
        }
        1 => Err(TaskError::new("probe failed")),
        2 => std::panic::panic_any(PROBE_PANIC),
        _ => Err(TaskError::give_up("probe gave up")),
    }
}

#[derive(Serialize, Deserialize)]
struct Probe(u8);

impl Task for Probe {
    const SIGNATURE: &'static str = "fuzz.probe";
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        act(self.0, ctx)
    }
}

#[derive(Serialize, Deserialize)]
struct ProbeFallback(u8, u8);

impl Task for ProbeFallback {
    const SIGNATURE: &'static str = "fuzz.probe_fallback";
    fn options() -> TaskOptions {
        TaskOptions::new().fallback("undo").fallback_threshold(0)
    }
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        act(self.0, ctx)
    }
    fn fallback(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        act(self.1 % 3, ctx) // success, error or panic
    }
}

/// The probe's own panics are part of the test (tend catches them); libFuzzer's panic hook
/// aborts on any panic, so it is kept for every other one.
fn let_probe_panics_through() {
    let fuzzer_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&PROBE_PANIC) {
            fuzzer_hook(info);
        }
    }));
}

const PROBE_PANIC: &str = "probe panicked";

fn bench() -> (SqliteConnection, Registry) {
    let_probe_panics_through();
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    tend::migrate(&mut conn).unwrap();
    let mut registry = Registry::new();
    registry.alerter("pager", |_: &Alert| {}).unwrap();
    registry.register::<Probe>().unwrap();
    registry.register::<ProbeFallback>().unwrap();
    (conn, registry)
}

/// An i32 column: small values, the edges, or anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum I32 {
    Small(i8),
    Min,
    Max,
    Any(i32),
}

impl I32 {
    fn get(self) -> i32 {
        match self {
            I32::Small(n) => n.into(),
            I32::Min => i32::MIN,
            I32::Max => i32::MAX,
            I32::Any(n) => n,
        }
    }
}

/// An i64 time column: relative to the test clock, the edges, or anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Time {
    Now,
    Ago(u32),
    Later(u32),
    Min,
    Max,
    Any(i64),
}

impl Time {
    fn at(self, now: i64) -> i64 {
        match self {
            Time::Now => now,
            Time::Ago(ms) => now - i64::from(ms),
            Time::Later(ms) => now + i64::from(ms),
            Time::Min => i64::MIN,
            Time::Max => i64::MAX,
            Time::Any(t) => t,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Signature {
    Probe,
    ProbeFallback,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Probe(u8),
    ProbeFallback(u8, u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum AlerterName {
    Pager,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Row {
    id: i64,
    task_id: String,
    idempotency_key: Option<String>,
    task_status: I32,
    execute_times: I32,
    max_attempts: I32,
    execute_time: Time,
    parameter_types: String,
    method_name: String,
    method_sign_name: Signature,
    execute_interval_sec: I32,
    delay_time: I32,
    task_parameter: Payload,
    payload_version: I32,
    execute_way: I32,
    thread_way: I32,
    transaction_way: I32,
    error_msg: String,
    alert_expression: Option<String>,
    alert_action_bean_name: Option<AlerterName>,
    fallback_class_name: Option<String>,
    fallback_error_msg: Option<String>,
    shard_key: i64,
    lease_token: Option<i64>,
    lease_owner: Option<String>,
    lease_expires_at: Option<Time>,
    gmt_create: Time,
    gmt_modified: Time,
    duration_ms: Option<i64>,
    /// Seconds the test clock moves before the run.
    advance: u16,
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Left {
    #[diesel(sql_type = Integer)]
    task_status: i32,
    #[diesel(sql_type = Integer)]
    execute_times: i32,
    #[diesel(sql_type = BigInt)]
    execute_time: i64,
    #[diesel(sql_type = Text)]
    error_msg: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    lease_token: Option<i64>,
}

const PARKED: i64 = i64::MAX;

fuzz_target!(|row: Row| {
    BENCH.with(|b| {
        let mut b = b.borrow_mut();
        let (conn, registry) = b.get_or_insert_with(bench);
        run(conn, registry.clone(), row);
    });
});

fn run(conn: &mut SqliteConnection, registry: Registry, r: Row) {
    conn.batch_execute("DELETE FROM consistency_task").unwrap();
    let worker = TestWorker::new(registry);
    worker.advance(Duration::from_secs(r.advance.into()));
    let now = worker.now_ms();
    let sig = match &r.method_sign_name {
        Signature::Probe => Probe::SIGNATURE.to_string(),
        Signature::ProbeFallback => ProbeFallback::SIGNATURE.to_string(),
        Signature::Other(s) => s.clone(),
    };
    let payload = match &r.task_parameter {
        Payload::Probe(a) => encode(&Probe(*a)),
        Payload::ProbeFallback(a, f) => encode(&ProbeFallback(*a, *f)),
        Payload::Raw(b) => b.clone(),
    };
    let alerter = r.alert_action_bean_name.as_ref().map(|a| match a {
        AlerterName::Pager => "pager".to_string(),
        AlerterName::Other(s) => s.clone(),
    });
    let execute_time = r.execute_time.at(now);
    let status = r.task_status.get();
    diesel::sql_query(
        "INSERT INTO consistency_task (id, task_id, idempotency_key, task_status, execute_times, \
         max_attempts, execute_time, parameter_types, method_name, method_sign_name, \
         execute_interval_sec, delay_time, task_parameter, payload_version, execute_way, \
         thread_way, transaction_way, error_msg, alert_expression, alert_action_bean_name, \
         fallback_class_name, fallback_error_msg, shard_key, lease_token, lease_owner, \
         lease_expires_at, gmt_create, gmt_modified, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, \
         ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind::<BigInt, _>(r.id)
    .bind::<Text, _>(&r.task_id)
    .bind::<Nullable<Text>, _>(&r.idempotency_key)
    .bind::<Integer, _>(status)
    .bind::<Integer, _>(r.execute_times.get())
    .bind::<Integer, _>(r.max_attempts.get())
    .bind::<BigInt, _>(execute_time)
    .bind::<Text, _>(&r.parameter_types)
    .bind::<Text, _>(&r.method_name)
    .bind::<Text, _>(&sig)
    .bind::<Integer, _>(r.execute_interval_sec.get())
    .bind::<Integer, _>(r.delay_time.get())
    .bind::<Binary, _>(&payload)
    .bind::<Integer, _>(r.payload_version.get())
    .bind::<Integer, _>(r.execute_way.get())
    .bind::<Integer, _>(r.thread_way.get())
    .bind::<Integer, _>(r.transaction_way.get())
    .bind::<Text, _>(&r.error_msg)
    .bind::<Nullable<Text>, _>(&r.alert_expression)
    .bind::<Nullable<Text>, _>(&alerter)
    .bind::<Nullable<Text>, _>(&r.fallback_class_name)
    .bind::<Nullable<Text>, _>(&r.fallback_error_msg)
    .bind::<BigInt, _>(r.shard_key)
    .bind::<Nullable<BigInt>, _>(r.lease_token)
    .bind::<Nullable<Text>, _>(&r.lease_owner)
    .bind::<Nullable<BigInt>, _>(r.lease_expires_at.map(|t| t.at(now)))
    .bind::<BigInt, _>(r.gmt_create.at(now))
    .bind::<BigInt, _>(r.gmt_modified.at(now))
    .bind::<Nullable<BigInt>, _>(r.duration_ms)
    .execute(conn)
    .unwrap();
    let before = left(conn);
    assert_eq!(before.len(), 1);

    SUCCEEDED.with(|s| s.borrow_mut().clear());
    let drained = worker
        .drain(conn)
        .unwrap_or_else(|e| panic!("running the row failed: {e}"));
    let succeeded = SUCCEEDED.with(|s| s.borrow().contains(&r.id));
    let after = left(conn);
    let runs = drained.succeeded + drained.failed + drained.dead + drained.held;
    // The clock moves during the run: a row due between `now` and `later` may go either way.
    let later = worker.now_ms();
    // Claimable as `lease::claimable` reads it: pending or failed, or running under a lease
    // that lapsed (or that it never had); a lease ending between `now` and `later` may go
    // either way, as the due time does.
    let lease = r.lease_expires_at.map(|t| t.at(now));
    let idle = status == 0 || status == 2;
    let claimable = idle || (status == 1 && lease.is_none_or(|l| l <= now));
    let claimable_later = idle || (status == 1 && lease.is_none_or(|l| l <= later));
    if claimable && execute_time <= now {
        assert_eq!(runs, 1, "a due row was not run: {drained:?}");
    } else if !claimable_later || execute_time > later {
        assert_eq!(runs, 0, "a row not due was run: {drained:?}");
    }
    let due = runs == 1;
    match after.as_slice() {
        [] => {
            assert!(succeeded, "row deleted but its handler did not succeed");
            assert_eq!(drained.succeeded, 1);
        }
        [row] if !due => assert_eq!(row, &before[0], "a row that was not due was changed"),
        [row] => {
            assert_eq!(
                drained.succeeded, 0,
                "succeeded, yet the row is still there: {row:?}"
            );
            match row.task_status {
                // Due later; a retry wait beyond i64 ms (a hostile interval) saturates to
                // PARKED: still visible, and an operator's retry makes it due.
                2 => assert!(
                    row.execute_time > now,
                    "a failed row must be due later: {row:?}"
                ),
                4 | 5 => {
                    assert_eq!(row.execute_time, PARKED, "{row:?}");
                    assert!(!row.error_msg.is_empty(), "{row:?}");
                }
                _ => panic!(
                    "the run left the row in status {}: {row:?}",
                    row.task_status
                ),
            }
        }
        rows => panic!("{} rows", rows.len()),
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap()
}

fn left(conn: &mut SqliteConnection) -> Vec<Left> {
    diesel::sql_query(
        "SELECT task_status, execute_times, execute_time, error_msg, lease_token \
         FROM consistency_task",
    )
    .load(conn)
    .unwrap()
}
