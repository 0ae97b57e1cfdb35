//! The storage conformance suite: every behaviour of the [`Ops`] contract, written once as a
//! generic function and run against SQLite, PostgreSQL and MariaDB/MySQL, one `#[test]` per
//! behaviour and backend (`store::conformance::<backend>::<behaviour>`). The model is River's
//! `riverdrivertest`: a backend that passes this suite is one tend can run on.
//!
//! Times are explicit epoch milliseconds around a fixed `T0`, never the clock, so that every
//! claim sees exactly the rows the test means it to see.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::{InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool, R2D2Connection};
use diesel::result::Error as DieselError;

use super::ops::Ops;
use super::retry_transient;
use super::row::{Claim, ClaimRow, Claimed, Finish, NewRow, TaskRow};
#[cfg(feature = "sqlite")]
use super::testdb::SqliteFile;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use super::testdb::{Server, ServerDb};
use crate::error::{is_missing_schema, is_transient};
use crate::schema::consistency_task::dsl as t;

#[cfg(feature = "cli")]
mod admin;
mod claim;
mod concurrency;
mod flow;
mod hostile;
mod insert;
mod nodes;
mod outcome;
mod schedules;
mod schema;

#[cfg(feature = "cli")]
use admin::*;
use claim::*;
use concurrency::*;
use flow::*;
use hostile::*;
use insert::*;
use nodes::*;
use outcome::*;
use schedules::*;
use schema::*;

/// The suite's "now".
const T0: i64 = 1_700_000_000_000;
const WEEK: i64 = 7 * 24 * 3600 * 1000;
/// Where rows that must never be claimed are parked (`status::PARKED`).
const PARKED: i64 = i64::MAX;

/// A fresh, empty database of one backend; removed when dropped.
trait Db: Sized + Sync {
    type Conn: Ops + R2D2Connection + Send + 'static;
    /// What `Ops::backend` says.
    const BACKEND: &'static str;
    /// `None` when the backend is skipped (its URL is not set).
    fn create() -> Option<Self>;
    fn connect(&self) -> Self::Conn;
    fn pool(&self) -> Pool<ConnectionManager<Self::Conn>>;
    /// Every row, by id.
    fn rows(conn: &mut Self::Conn) -> Vec<TaskRow>;
    /// A lock conflict of the kind tend's statements meet in production, provoked for real.
    fn lock_conflict(&self) -> DieselError;
}

macro_rules! rows_by_id {
    () => {
        fn rows(conn: &mut Self::Conn) -> Vec<TaskRow> {
            t::consistency_task
                .order(t::id)
                .select(TaskRow::as_select())
                .load(conn)
                .expect("reading every row")
        }
    };
}

#[cfg(feature = "sqlite")]
struct SqliteDb(SqliteFile);

#[cfg(feature = "sqlite")]
impl Db for SqliteDb {
    type Conn = diesel::SqliteConnection;
    const BACKEND: &'static str = "sqlite";

    fn create() -> Option<Self> {
        Some(SqliteDb(SqliteFile::create()))
    }

    fn connect(&self) -> Self::Conn {
        let mut c = diesel::SqliteConnection::establish(&self.0.url).expect("opening SQLite");
        // As `SqliteSetup` does for pools: writers queue instead of failing at once.
        c.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL;")
            .expect("SQLite pragmas");
        c
    }

    fn pool(&self) -> Pool<ConnectionManager<Self::Conn>> {
        Pool::builder()
            .max_size(4)
            .min_idle(Some(1))
            .connection_customizer(Box::new(super::SqliteSetup::new()))
            .build(ConnectionManager::new(self.0.url.as_str()))
            .expect("SQLite pool")
    }

    rows_by_id!();

    /// SQLite has one writer: a claim while another connection holds the write lock is
    /// "database is locked" once the busy timeout (here none) runs out.
    fn lock_conflict(&self) -> DieselError {
        let mut holder = self.connect();
        holder.batch_execute("BEGIN IMMEDIATE").unwrap();
        let mut other = self.connect();
        other.batch_execute("PRAGMA busy_timeout = 0").unwrap();
        let err = other
            .claim(&claim_args(T0, T0 + 1_000, 1, 10, None))
            .expect_err("a claim while another connection holds the write lock");
        holder.batch_execute("ROLLBACK").unwrap();
        err
    }
}

#[cfg(feature = "postgres")]
struct PgDb(ServerDb);

#[cfg(feature = "postgres")]
impl Db for PgDb {
    type Conn = diesel::PgConnection;
    const BACKEND: &'static str = "postgres";

    fn create() -> Option<Self> {
        ServerDb::create(Server::Postgres, "conformance").map(PgDb)
    }

    fn connect(&self) -> Self::Conn {
        diesel::PgConnection::establish(&self.0.url).expect("connecting to PostgreSQL")
    }

    fn pool(&self) -> Pool<ConnectionManager<Self::Conn>> {
        server_pool(&self.0.url)
    }

    rows_by_id!();

    fn lock_conflict(&self) -> DieselError {
        deadlock(self)
    }
}

#[cfg(feature = "mysql")]
struct MysqlDb(ServerDb);

#[cfg(feature = "mysql")]
impl Db for MysqlDb {
    type Conn = diesel::MysqlConnection;
    const BACKEND: &'static str = "mysql";

    fn create() -> Option<Self> {
        ServerDb::create(Server::Mysql, "conformance").map(MysqlDb)
    }

    fn connect(&self) -> Self::Conn {
        diesel::MysqlConnection::establish(&self.0.url).expect("connecting to MariaDB/MySQL")
    }

    fn pool(&self) -> Pool<ConnectionManager<Self::Conn>> {
        server_pool(&self.0.url)
    }

    rows_by_id!();

    fn lock_conflict(&self) -> DieselError {
        deadlock(self)
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn server_pool<C: R2D2Connection + 'static>(url: &str) -> Pool<ConnectionManager<C>> {
    Pool::builder()
        .max_size(4)
        .min_idle(Some(1))
        .build(ConnectionManager::new(url))
        .expect("server pool")
}

/// Two transactions that each hold the row the other one wants: the server picks a victim
/// (PostgreSQL 40P01 after `deadlock_timeout`, MySQL/MariaDB 1213 at once). Returns its error.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn deadlock<D: Db>(db: &D) -> DieselError {
    let mut setup = db.connect();
    let a = setup.insert_one(&row(T0)).unwrap().unwrap();
    let b = setup.insert_one(&row(T0)).unwrap().unwrap();
    let barrier = std::sync::Barrier::new(2);
    let results: Vec<Result<(), DieselError>> = thread::scope(|s| {
        let handles: Vec<_> = [(a, b), (b, a)]
            .into_iter()
            .map(|(first, second)| {
                let mut conn = db.connect();
                let barrier = &barrier;
                s.spawn(move || {
                    conn.transaction(|c| {
                        let touch = |id: i64| {
                            format!("UPDATE consistency_task SET error_msg = 'x' WHERE id = {id}")
                        };
                        c.batch_execute(&touch(first))?;
                        barrier.wait();
                        c.batch_execute(&touch(second))
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut errors: Vec<DieselError> = results.into_iter().filter_map(Result::err).collect();
    assert_eq!(errors.len(), 1, "exactly one deadlock victim: {errors:?}");
    errors.pop().unwrap()
}

/// A row due at `execute_time` with every other column at a plain value.
fn row(execute_time: i64) -> NewRow {
    NewRow {
        task_id: "conformance.task".into(),
        idempotency_key: None,
        task_status: 0,
        execute_times: 0,
        max_attempts: 25,
        execute_time,
        parameter_types: "conformance::Payload".into(),
        method_name: "task".into(),
        method_sign_name: "conformance.task".into(),
        execute_interval_sec: 60,
        delay_time: 0,
        task_parameter: vec![1, 2, 3],
        payload_version: 1,
        execute_way: 1,
        thread_way: 1,
        transaction_way: 1,
        error_msg: String::new(),
        alert_expression: None,
        alert_action_bean_name: None,
        fallback_class_name: None,
        fallback_error_msg: None,
        shard_key: 0,
        lease_token: None,
        lease_owner: None,
        lease_expires_at: None,
        gmt_create: T0,
        gmt_modified: T0,
        trace_parent: None,
        queue: "default".into(),
        priority: 0,
        ordering_key: None,
    }
}

/// Asserts that a stored row holds exactly what was inserted, column by column.
fn assert_stored(new: &NewRow, got: &TaskRow) {
    macro_rules! same {
        ($($col:ident),*) => {
            $(assert_eq!(new.$col, got.$col, concat!("column `", stringify!($col), "`"));)*
        };
    }
    assert_eq!(
        new.alert_expression.as_deref(),
        got.alert_expression.as_deref(),
        "column `alert_expression`"
    );
    same!(
        task_id,
        idempotency_key,
        task_status,
        execute_times,
        max_attempts,
        execute_time,
        parameter_types,
        method_name,
        method_sign_name,
        execute_interval_sec,
        delay_time,
        payload_version,
        execute_way,
        thread_way,
        transaction_way,
        error_msg,
        alert_action_bean_name,
        fallback_class_name,
        fallback_error_msg,
        shard_key,
        lease_token,
        lease_owner,
        lease_expires_at,
        gmt_create,
        gmt_modified,
        trace_parent,
        queue,
        priority,
        ordering_key
    );
    assert_eq!(got.duration_ms, None, "column `duration_ms` of a new row");
    // Compared apart: a failing 4 MiB assert_eq would print 4 MiB.
    assert!(
        new.task_parameter == got.task_parameter,
        "column `task_parameter` differs ({} bytes written, {} read)",
        new.task_parameter.len(),
        got.task_parameter.len()
    );
}

/// A stored row as a claim returns it: the columns a claim does not read and nothing reads of
/// a claimed row (those `row::ClaimRow` lacks that the lease does not write) are empty, every
/// other column holds its stored value.
fn as_claimed(stored: &TaskRow) -> TaskRow {
    TaskRow {
        idempotency_key: None,
        parameter_types: String::new(),
        method_name: String::new(),
        duration_ms: None,
        gmt_modified: 0,
        queue: String::new(),
        delay_time: 0,
        execute_way: 0,
        thread_way: 0,
        transaction_way: 0,
        ..stored.clone()
    }
}

/// Rows have no `PartialEq` (they need none outside tests); their Debug form has every column.
fn assert_same_row(a: &TaskRow, b: &TaskRow) {
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

fn claim_args<'a>(
    now: i64,
    lease_until: i64,
    token: i64,
    limit: i64,
    ids: Option<&'a [i64]>,
) -> Claim<'a> {
    Claim {
        now,
        lease_until,
        token,
        owner: "conformance-owner",
        queue: Some("default"),
        limit,
        ids,
        exclude: &[],
    }
}

/// Claims and returns the rows as the claim left them.
fn claim<C: Ops>(
    conn: &mut C,
    now: i64,
    lease_until: i64,
    token: i64,
    limit: i64,
    ids: Option<&[i64]>,
) -> Vec<TaskRow> {
    claimed(conn, now, lease_until, token, limit, ids)
        .into_iter()
        .map(|c| c.task)
        .collect()
}

fn claimed<C: Ops>(
    conn: &mut C,
    now: i64,
    lease_until: i64,
    token: i64,
    limit: i64,
    ids: Option<&[i64]>,
) -> Vec<Claimed> {
    conn.claim(&claim_args(now, lease_until, token, limit, ids))
        .expect("claim")
}

fn ids(rows: &[TaskRow]) -> BTreeSet<i64> {
    rows.iter().map(|r| r.id).collect()
}

fn found<C: Ops>(conn: &mut C, id: i64) -> TaskRow {
    conn.find(id).expect("find").expect("the row exists")
}

fn finish(id: i64, token: i64, status: i32, execute_time: i64, now: i64) -> Finish {
    Finish {
        id,
        token,
        status,
        execute_time,
        error_msg: String::new(),
        fallback_error_msg: None,
        attempts_delta: 0,
        duration_ms: None,
        now,
        release_key: None,
    }
}

fn migrated<D: Db>(db: &D) -> D::Conn {
    let mut conn = db.connect();
    conn.run_migrations().expect("migrations");
    conn
}

fn insert<C: Ops>(conn: &mut C, r: &NewRow) -> i64 {
    conn.insert_one(r).expect("insert").expect("a new row")
}

// ---------------------------------------------------------------------------------------------

/// One module per backend, one `#[test]` per behaviour in it.
macro_rules! backend_tests {
    ($feature:literal, $module:ident, $db:ident, $($test:ident),*) => {
        #[cfg(feature = $feature)]
        mod $module {
            $(
                #[test]
                fn $test() {
                    if let Some(db) = <super::$db as super::Db>::create() {
                        super::$test(&db);
                    }
                }
            )*
        }
    };
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        backend_tests!("sqlite", sqlite, SqliteDb, $($test),*);
        backend_tests!("postgres", postgres, PgDb, $($test),*);
        backend_tests!("mysql", mysql, MysqlDb, $($test),*);
    };
}

conformance!(
    insert_one_reads_back_every_column,
    insert_one_returns_the_id_after_negative_ids,
    insert_many_is_a_few_prepared_statements,
    insert_many_round_trips_every_value,
    hot_path_statements_stay_prepared,
    write_and_claim_writes_outcomes_then_claims,
    idempotency_key_duplicates_are_skipped,
    claim_takes_due_rows_oldest_first,
    claim_leases_the_rows,
    claim_saturates_the_attempt_count,
    claim_reports_the_previous_status,
    claim_skips_leased_rows,
    expired_lease_is_claimed_again_with_a_new_token,
    stale_token_cannot_complete_finish_or_extend,
    complete_deletes_only_rows_held_under_the_token,
    a_large_completion_deletes_every_held_row,
    claim_respects_the_limit,
    parked_and_finished_rows_are_never_claimed,
    claim_by_ids_takes_only_those,
    finish_reschedules_and_parks,
    kept_completed_rows_are_purged_when_old,
    finish_with_minus_one_releases_the_attempt,
    finish_reports_only_rows_still_held,
    extend_pushes_the_lease,
    check_schema_reports_a_missing_table,
    check_schema_reports_a_missing_column,
    migrate_twice_is_idempotent,
    large_payloads_round_trip,
    messages_of_64_kib_round_trip,
    concurrent_claimers_never_share_a_row,
    a_claim_fills_its_batch_past_rows_others_hold,
    lock_conflicts_are_transient,
    pooled_connections_store_like_their_connection,
    extreme_values_never_fail_a_claim_or_an_outcome,
    lease_rechecks_rows_another_claimer_took,
    an_unclaimable_row_is_found_and_held,
    cancel_parks_what_the_rules_allow,
    node_slots_are_taken_once_and_taken_over_when_stale,
    racing_node_claims_give_a_slot_to_one,
    schedule_rows_are_created_once_and_moved_by_compare_and_set,
    racing_schedule_advances_enqueue_a_slot_once,
    claim_takes_one_queue_highest_priority_first,
    a_claim_returns_its_rows_in_claim_order,
    claim_is_not_slowed_by_rows_not_due,
    ordering_key_runs_one_at_a_time_in_order,
    ordering_key_waits_for_a_later_row_running,
    racing_claimers_keep_each_key_in_line,
    blocked_rows_wait_in_line_and_come_out_in_order,
    out_of_range_priorities_are_held_not_left_unseen,
);

#[cfg(feature = "cli")]
mod operator {
    use super::*;
    conformance!(
        operator_queries_filter_page_and_count,
        operator_changes_recheck_their_filter,
    );
}

#[test]
fn test_urls_name_the_test_database() {
    use super::testdb::with_database;
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("mysql://root:pw@h:3306/test?ssl_mode=disabled", "x"),
        "mysql://root:pw@h:3306/x?ssl_mode=disabled"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}
