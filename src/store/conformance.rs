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
#[cfg(feature = "sqlite")]
use super::testdb::SqliteFile;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use super::testdb::{Server, ServerDb};
use super::{
    is_missing_schema, is_transient, retry_transient, Claim, Claimed, Finish, NewRow, TaskRow,
};
use crate::schema::consistency_task::dsl as t;

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
    }
}

/// Asserts that a stored row holds exactly what was inserted, column by column.
fn assert_stored(new: &NewRow, got: &TaskRow) {
    macro_rules! same {
        ($($col:ident),*) => {
            $(assert_eq!(new.$col, got.$col, concat!("column `", stringify!($col), "`"));)*
        };
    }
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
        alert_expression,
        alert_action_bean_name,
        fallback_class_name,
        fallback_error_msg,
        shard_key,
        lease_token,
        lease_owner,
        lease_expires_at,
        gmt_create,
        gmt_modified
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
        limit,
        ids,
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
// Inserting

fn insert_one_reads_back_every_column<D: Db>(db: &D) {
    let mut conn = migrated(db);
    assert_eq!(conn.backend(), D::BACKEND);
    let full = NewRow {
        task_id: "order-42".into(),
        idempotency_key: Some("ship-42".into()),
        task_status: 2,
        execute_times: 3,
        max_attempts: 7,
        execute_time: T0 + 123,
        parameter_types: "app::orders::Ship".into(),
        method_name: "ship".into(),
        method_sign_name: "orders.ship".into(),
        execute_interval_sec: 30,
        delay_time: 900,
        task_parameter: (0..=255u8).collect(),
        payload_version: 4,
        execute_way: 2,
        thread_way: 2,
        transaction_way: 2,
        error_msg: "gateway said 503 — réessayer 🚚".into(),
        alert_expression: Some("executeTimes > 1 && executeTimes < 5".into()),
        alert_action_bean_name: Some("pager".into()),
        fallback_class_name: Some("orders.ship_fallback".into()),
        fallback_error_msg: Some("fallback: 无法发货".into()),
        shard_key: -9_000_000_000,
        lease_token: Some(i64::MAX - 1),
        lease_owner: Some("host/1/ab".into()),
        lease_expires_at: Some(T0 + 30_000),
        gmt_create: T0 - 5,
        gmt_modified: T0 - 1,
    };
    let bare = NewRow {
        task_parameter: Vec::new(),
        shard_key: i64::MIN,
        execute_time: PARKED,
        ..row(0)
    };
    let full_id = insert(&mut conn, &full);
    let bare_id = insert(&mut conn, &bare);
    assert!(bare_id > full_id, "ids grow: {full_id} then {bare_id}");
    let got = found(&mut conn, full_id);
    assert_eq!(got.id, full_id);
    assert_stored(&full, &got);
    assert_stored(&bare, &found(&mut conn, bare_id));
    assert!(conn.find(bare_id + 1_000).unwrap().is_none());
}

/// The hot path (claim, targeted claim, complete, finish, extend, and the insert of one task)
/// runs on statements diesel keeps prepared, and lists of other lengths within the same padded
/// size reuse them: a second round prepares nothing. (diesel never caches its own `UPDATE`s,
/// `sql_query` or `IN` lists on MySQL/SQLite; each would cost a prepare per batch.)
fn hot_path_statements_stay_prepared<D: Db>(db: &D) {
    let mut conn = migrated(db);
    #[derive(Default)]
    struct Seen {
        started: Vec<String>,
        cached: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| match event {
        InstrumentationEvent::StartQuery { query, .. } => {
            // The display form ends with ` -- binds: [..]`.
            let sql = query.to_string();
            let sql = sql
                .split(" -- binds:")
                .next()
                .unwrap_or_default()
                .to_string();
            log.lock().unwrap().started.push(sql)
        }
        InstrumentationEvent::CacheQuery { sql, .. } => {
            log.lock().unwrap().cached.push(sql.to_string())
        }
        _ => {}
    });
    let round = |conn: &mut D::Conn, n: i64, token: i64| {
        let fresh: Vec<i64> = (0..n).map(|i| insert(conn, &row(T0 - 1000 + i))).collect();
        let got = claim(conn, T0, T0 + WEEK, token, n - 1, None);
        assert_eq!(got.len() as i64, n - 1);
        let rest = claim(conn, T0, T0 + WEEK, token, n, Some(&fresh));
        assert_eq!(rest.len(), 1);
        let all: Vec<i64> = got.iter().chain(&rest).map(|r| r.id).collect();
        assert_eq!(
            conn.extend(token, &all, T0 + 2 * WEEK, T0).unwrap(),
            n as usize
        );
        let (last, done) = all.split_last().unwrap();
        assert_eq!(
            conn.finish(&[finish(*last, token, 2, T0 + 10, T0)])
                .unwrap(),
            vec![*last]
        );
        assert_eq!(conn.complete(token, done).unwrap(), done.len());
        assert_eq!(conn.complete(token + 1, &[*last]).unwrap(), 0);
    };
    round(&mut conn, 5, 11);
    let first = std::mem::take(&mut *seen.lock().unwrap());
    let control = |sql: &str| {
        let s = sql.trim_start().to_ascii_uppercase();
        [
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT",
            "RELEASE",
            "START",
        ]
        .iter()
        .any(|k| s.starts_with(k))
    };
    let uncached: Vec<&String> = first
        .started
        .iter()
        .filter(|q| !control(q) && !first.cached.iter().any(|c| c == *q))
        .collect();
    assert!(
        uncached.is_empty(),
        "statements diesel prepares on every run: {uncached:#?}"
    );
    // Different list lengths within the same padded size (8): nothing new to prepare.
    round(&mut conn, 7, 12);
    let second = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        second.cached.is_empty(),
        "a second round prepared again: {:#?}",
        second.cached
    );
    assert!(!second.started.is_empty());
}

/// Outcomes and the next claim in one call (on SQLite, one transaction): the deletes and the
/// fenced updates apply (stale tokens refused), and the claim sees their effect.
fn write_and_claim_writes_outcomes_then_claims<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let a = insert(&mut conn, &row(T0 - 3));
    let b = insert(&mut conn, &row(T0 - 2));
    let c = insert(&mut conn, &row(T0 - 1));
    let later = insert(&mut conn, &row(T0 + 60_000));
    assert_eq!(
        ids(&claim(&mut conn, T0, T0 + WEEK, 1, 2, None)),
        [a, b].into()
    );
    // b failed and is due again at once; a succeeded; a stale token completes nothing.
    let retry = finish(b, 1, 2, T0 - 1, T0);
    let w = conn
        .write_and_claim(
            &[(1, vec![a]), (9, vec![c])],
            &[retry],
            &claim_args(T0, T0 + WEEK, 2, 10, None),
        )
        .expect("write_and_claim");
    assert_eq!(w.deleted, vec![1, 0]);
    assert_eq!(w.held, vec![b]);
    let claimed: BTreeSet<i64> = w.claimed.iter().map(|c| c.task.id).collect();
    assert_eq!(
        claimed,
        [b, c].into(),
        "the claim sees the retry and skips the deleted row"
    );
    assert!(conn.find(a).unwrap().is_none());
    assert_eq!(found(&mut conn, b).lease_token, Some(2));
    assert_eq!(found(&mut conn, b).error_msg, "");
    assert_eq!(found(&mut conn, later).task_status, 0);
    // Nothing to write: a plain claim.
    let w = conn
        .write_and_claim(&[], &[], &claim_args(T0 + 60_000, T0 + WEEK, 3, 10, None))
        .unwrap();
    assert_eq!(w.claimed.len(), 1);
    assert!(w.deleted.is_empty() && w.held.is_empty());
}

fn insert_many_is_one_statement<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let rows: Vec<NewRow> = (0..50)
        .map(|i| NewRow {
            task_id: format!("task-{i}"),
            shard_key: i,
            execute_time: T0 + i,
            task_parameter: vec![i as u8; i as usize],
            error_msg: format!("message {i}"),
            fallback_class_name: (i % 2 == 0).then(|| format!("fallback-{i}")),
            ..row(0)
        })
        .collect();
    let statements = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = statements.clone();
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            let sql = query.to_string();
            seen.lock().unwrap().push(sql.chars().take(120).collect());
        }
    });
    assert_eq!(conn.insert_many(&rows).unwrap(), 50);
    let statements = statements.lock().unwrap().clone();
    assert_eq!(
        statements.len(),
        1,
        "insert_many without idempotency keys must be one statement: {statements:#?}"
    );
    let stored = D::rows(&mut conn);
    assert_eq!(stored.len(), rows.len());
    for (new, got) in rows.iter().zip(&stored) {
        assert_stored(new, got);
    }
    assert_eq!(conn.insert_many(&[]).unwrap(), 0);
}

fn idempotency_key_duplicates_are_skipped<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let keyed = |key: &str, msg: &str| NewRow {
        idempotency_key: Some(key.into()),
        error_msg: msg.into(),
        ..row(T0)
    };
    let first = insert(&mut conn, &keyed("k1", "first"));
    assert_eq!(conn.insert_one(&keyed("k1", "second")).unwrap(), None);

    // A duplicate inside the caller's transaction must not spoil it (the enqueue contract):
    // the rows written after it in the same transaction still commit.
    let (dup, other) = conn
        .transaction(|c| {
            let dup = c.insert_one(&keyed("k1", "third"))?;
            let other = c.insert_one(&row(T0))?;
            Ok::<_, DieselError>((dup, other))
        })
        .unwrap();
    assert_eq!(dup, None);
    let other = other.expect("the row after the duplicate");
    assert!(conn.find(other).unwrap().is_some());

    // insert_many skips keys that exist and repeats within the batch, and counts only new rows.
    let batch = [
        keyed("k1", "fourth"),
        keyed("k2", "k2 first"),
        keyed("k2", "k2 again"),
        row(T0),
        row(T0),
    ];
    assert_eq!(conn.insert_many(&batch).unwrap(), 3);
    let rows = D::rows(&mut conn);
    assert_eq!(rows.len(), 5);
    let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for r in &rows {
        if let Some(k) = &r.idempotency_key {
            by_key.entry(k).or_default().push(&r.error_msg);
        }
    }
    assert_eq!(by_key["k1"], ["first"], "the first row with a key is kept");
    assert_eq!(by_key["k2"], ["k2 first"]);
    assert_eq!(found(&mut conn, first).error_msg, "first");
}

// ---------------------------------------------------------------------------------------------
// Claiming

fn claim_takes_due_rows_oldest_first<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let mut at = HashMap::new();
    // Inserted out of due order; one is a week overdue (the seed's one-hour window starved
    // those), one is not due yet.
    for when in [
        T0 - 1_000,
        T0 - 3_000,
        T0 + 60_000,
        T0 - WEEK,
        T0,
        T0 - 2_000,
    ] {
        at.insert(when, insert(&mut conn, &row(when)));
    }
    let want = |times: &[i64]| times.iter().map(|w| at[w]).collect::<BTreeSet<i64>>();
    let lease = T0 + 30_000;
    assert_eq!(
        ids(&claim(&mut conn, T0, lease, 1, 2, None)),
        want(&[T0 - WEEK, T0 - 3_000])
    );
    assert_eq!(
        ids(&claim(&mut conn, T0, lease, 2, 2, None)),
        want(&[T0 - 2_000, T0 - 1_000])
    );
    assert_eq!(ids(&claim(&mut conn, T0, lease, 3, 10, None)), want(&[T0]));
    assert!(claim(&mut conn, T0, lease, 4, 10, None).is_empty());
    assert_eq!(found(&mut conn, at[&(T0 + 60_000)]).task_status, 0);
}

fn claim_leases_the_rows<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let before = NewRow {
        task_status: 2,
        execute_times: 2,
        error_msg: "the previous attempt's failure".into(),
        ..row(T0 - 10)
    };
    let id = insert(&mut conn, &before);
    let claimed = claim(&mut conn, T0, T0 + 30_000, 77, 10, None);
    assert_eq!(claimed.len(), 1);
    let got = &claimed[0];
    assert_eq!(got.id, id);
    assert_eq!(got.task_status, 1, "running");
    assert_eq!(got.execute_times, 3, "the attempt is counted at claim");
    assert_eq!(
        got.execute_time,
        T0 + 30_000,
        "due again when the lease expires"
    );
    assert_eq!(got.lease_expires_at, Some(T0 + 30_000));
    assert_eq!(got.lease_token, Some(77));
    assert_eq!(got.lease_owner.as_deref(), Some("conformance-owner"));
    assert_eq!(got.gmt_modified, T0);
    // Everything else is untouched.
    let expect = NewRow {
        task_status: 1,
        execute_times: 3,
        execute_time: T0 + 30_000,
        lease_expires_at: Some(T0 + 30_000),
        lease_token: Some(77),
        lease_owner: Some("conformance-owner".into()),
        gmt_modified: T0,
        ..before
    };
    assert_stored(&expect, got);
    // What the claim returned is what it stored.
    assert_same_row(got, &found(&mut conn, id));
}

/// A row whose attempt count is already at i32::MAX (written by hand or by another program) is
/// still claimed: the count saturates instead of overflowing (an error on PostgreSQL and MySQL
/// that failed every claim the row was in; a panic in `as_leased`). Found by fuzz/task_row.
fn claim_saturates_the_attempt_count<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let at_max = NewRow {
        execute_times: i32::MAX,
        max_attempts: i32::MAX,
        ..row(T0 - 2)
    };
    let below = NewRow {
        execute_times: i32::MAX - 1,
        ..row(T0 - 1)
    };
    let (at_max, below) = (insert(&mut conn, &at_max), insert(&mut conn, &below));
    let claimed = claim(&mut conn, T0, T0 + 30_000, 78, 10, None);
    assert_eq!(ids(&claimed), BTreeSet::from([at_max, below]));
    for got in &claimed {
        assert_eq!(got.execute_times, i32::MAX, "row {}", got.id);
        assert_same_row(got, &found(&mut conn, got.id));
    }
}

fn claim_reports_the_previous_status<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let pending = insert(&mut conn, &row(T0 - 3));
    let failed = insert(
        &mut conn,
        &NewRow {
            task_status: 2,
            execute_times: 1,
            ..row(T0 - 2)
        },
    );
    let expired = insert(&mut conn, &row(T0 - 1));
    claim(&mut conn, T0 - 1, T0, 1, 1, Some(&[expired]));
    // `expired` is now running under a lease that ends at T0: a reclaim at T0 takes it over.
    let got: HashMap<i64, i32> = claimed(&mut conn, T0, T0 + 30_000, 2, 10, None)
        .into_iter()
        .map(|c| (c.task.id, c.prev_status))
        .collect();
    assert_eq!(got, [(pending, 0), (failed, 2), (expired, 1)].into());
}

fn claim_skips_leased_rows<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let id = insert(&mut conn, &row(T0));
    assert_eq!(
        ids(&claim(&mut conn, T0, T0 + 30_000, 1, 10, None)),
        [id].into()
    );
    let held = found(&mut conn, id);
    for now in [T0, T0 + 1, T0 + 29_999] {
        assert!(
            claim(&mut conn, now, now + 30_000, 2, 10, None).is_empty(),
            "claimed at {now} while leased until {}",
            T0 + 30_000
        );
        assert!(claim(&mut conn, now, now + 30_000, 3, 10, Some(&[id])).is_empty());
    }
    assert_same_row(&held, &found(&mut conn, id));
}

fn expired_lease_is_claimed_again_with_a_new_token<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let id = insert(&mut conn, &row(T0));
    let first = claim(&mut conn, T0, T0 + 1_000, 1, 10, None);
    assert_eq!(first[0].lease_token, Some(1));
    // The worker died. At its lease's expiry (inclusive) the row is due again.
    let again = claim(&mut conn, T0 + 1_000, T0 + 2_000, 2, 10, None);
    assert_eq!(ids(&again), [id].into());
    let r = found(&mut conn, id);
    assert_eq!(r.lease_token, Some(2), "a new fencing token");
    assert_eq!(r.execute_times, 2);
    assert_eq!(r.lease_expires_at, Some(T0 + 2_000));
    assert_eq!(r.task_status, 1);
}

fn stale_token_cannot_complete_finish_or_extend<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let id = insert(&mut conn, &row(T0));
    claim(&mut conn, T0, T0 + 1_000, 1, 10, None);
    claim(&mut conn, T0 + 5_000, T0 + 35_000, 2, 10, None);
    let before = found(&mut conn, id);
    assert_eq!(before.lease_token, Some(2));

    // The worker whose lease was taken over reports late: every write is refused.
    assert_eq!(conn.complete(1, &[id]).unwrap(), 0);
    let late = Finish {
        error_msg: "late failure".into(),
        ..finish(id, 1, 2, T0 + 60_000, T0 + 6_000)
    };
    assert_eq!(conn.finish(&[late]).unwrap(), Vec::<i64>::new());
    assert_eq!(conn.extend(1, &[id], T0 + 99_000, T0 + 6_000).unwrap(), 0);
    assert_same_row(&before, &found(&mut conn, id));

    // The current holder's token works.
    assert_eq!(conn.extend(2, &[id], T0 + 60_000, T0 + 6_000).unwrap(), 1);
    assert_eq!(conn.complete(2, &[id]).unwrap(), 1);
    assert!(conn.find(id).unwrap().is_none(), "success deletes the row");
}

fn complete_deletes_only_rows_held_under_the_token<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let all: Vec<i64> = (0..5)
        .map(|i| insert(&mut conn, &row(T0 - 10 + i)))
        .collect();
    let mine = ids(&claim(&mut conn, T0, T0 + 30_000, 1, 3, None));
    let theirs = ids(&claim(&mut conn, T0, T0 + 30_000, 2, 10, None));
    assert_eq!(mine, all[..3].iter().copied().collect());
    assert_eq!(theirs, all[3..].iter().copied().collect());
    assert_eq!(conn.complete(1, &[all[0], all[1], all[3]]).unwrap(), 2);
    assert_eq!(conn.complete(1, &[]).unwrap(), 0);
    let left: Vec<i64> = D::rows(&mut conn).iter().map(|r| r.id).collect();
    assert_eq!(left, [all[2], all[3], all[4]]);
}

fn claim_respects_the_limit<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let all: BTreeSet<i64> = (0..10)
        .map(|i| insert(&mut conn, &row(T0 - 100 + i)))
        .collect();
    let mut seen = BTreeSet::new();
    for (token, want) in [(1, 3), (2, 3), (3, 1), (4, 3), (5, 10), (6, 10)] {
        let got = claim(&mut conn, T0, T0 + 30_000, token, want, None);
        let expected = want.min(10 - seen.len() as i64) as usize;
        assert_eq!(got.len(), expected, "claim with limit {want}");
        for r in &got {
            assert!(seen.insert(r.id), "row {} claimed twice", r.id);
        }
    }
    assert_eq!(seen, all);
}

fn parked_and_finished_rows_are_never_claimed<D: Db>(db: &D) {
    let mut conn = migrated(db);
    // Dead, held and kept-succeeded rows: parked, and also due, and with their statuses the
    // claim never takes them, however late "now" is.
    for status in [3, 4, 5] {
        insert(
            &mut conn,
            &NewRow {
                task_status: status,
                ..row(PARKED)
            },
        );
        insert(
            &mut conn,
            &NewRow {
                task_status: status,
                ..row(T0 - WEEK)
            },
        );
    }
    assert!(claim(&mut conn, i64::MAX, i64::MAX, 1, 100, None).is_empty());
    // A claimable status parked at i64::MAX is out of reach of any real clock.
    for status in [0, 1, 2] {
        insert(
            &mut conn,
            &NewRow {
                task_status: status,
                ..row(PARKED)
            },
        );
    }
    assert!(claim(&mut conn, i64::MAX - 1, i64::MAX - 1, 2, 100, None).is_empty());
    let statuses: Vec<i32> = D::rows(&mut conn).iter().map(|r| r.task_status).collect();
    assert_eq!(statuses, [3, 3, 4, 4, 5, 5, 0, 1, 2], "nothing was touched");
}

fn claim_by_ids_takes_only_those<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let due: Vec<i64> = (0..5)
        .map(|i| insert(&mut conn, &row(T0 - 10 + i)))
        .collect();
    let later = insert(&mut conn, &row(T0 + 60_000));
    let leased = insert(&mut conn, &row(T0 - 1_000));
    claim(&mut conn, T0, T0 + 30_000, 9, 1, Some(&[leased]));
    assert_eq!(found(&mut conn, leased).lease_token, Some(9));

    let asked = [due[1], due[3], later, leased, 999_999];
    let got = claim(&mut conn, T0, T0 + 30_000, 10, 100, Some(&asked));
    assert_eq!(ids(&got), [due[1], due[3]].into());
    assert!(claim(&mut conn, T0, T0 + 30_000, 11, 100, Some(&[])).is_empty());
    // The limit holds for targeted claims too.
    let got = claim(
        &mut conn,
        T0,
        T0 + 30_000,
        12,
        1,
        Some(&[due[0], due[2], due[4]]),
    );
    assert_eq!(got.len(), 1);
    for id in [due[0], due[2], due[4]] {
        if id != got[0].id {
            assert_eq!(found(&mut conn, id).task_status, 0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Finishing and extending

fn finish_reschedules_and_parks<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let id = insert(&mut conn, &row(T0));
    claim(&mut conn, T0, T0 + 30_000, 5, 10, None);
    let failed = Finish {
        error_msg: "boom".into(),
        fallback_error_msg: Some("fallback boom".into()),
        ..finish(id, 5, 2, T0 + 5_000, T0 + 100)
    };
    assert_eq!(conn.finish(&[failed]).unwrap(), [id]);
    let r = found(&mut conn, id);
    assert_eq!(
        (r.task_status, r.execute_times, r.execute_time),
        (2, 1, T0 + 5_000)
    );
    assert_eq!(r.error_msg, "boom");
    assert_eq!(r.fallback_error_msg.as_deref(), Some("fallback boom"));
    assert_eq!(
        (r.lease_token, r.lease_owner, r.lease_expires_at),
        (None, None, None),
        "the lease is cleared"
    );
    assert_eq!(r.gmt_modified, T0 + 100);

    // Due exactly at the scheduled time, not before.
    assert!(claim(&mut conn, T0 + 4_999, T0 + 40_000, 6, 10, None).is_empty());
    let again = claim(&mut conn, T0 + 5_000, T0 + 40_000, 7, 10, None);
    assert_eq!(again[0].execute_times, 2);
    assert_eq!(
        again[0].error_msg, "boom",
        "the claim keeps the last message"
    );

    // Dead: parked for good.
    let dead = Finish {
        error_msg: "out of attempts: boom".into(),
        ..finish(id, 7, 4, PARKED, T0 + 6_000)
    };
    assert_eq!(conn.finish(&[dead]).unwrap(), [id]);
    assert!(claim(&mut conn, i64::MAX, i64::MAX, 8, 10, None).is_empty());
    let r = found(&mut conn, id);
    assert_eq!((r.task_status, r.execute_time), (4, PARKED));
    assert_eq!(r.error_msg, "out of attempts: boom");
}

fn kept_completed_rows_are_purged_when_old<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let ids_in =
        |conn: &mut D::Conn| -> BTreeSet<i64> { D::rows(conn).iter().map(|r| r.id).collect() };
    // Three completed rows kept at T0 + 1..3, one kept at T0 + 50, and rows in other statuses
    // last modified long ago: only old *completed* rows may go.
    let mut done = Vec::new();
    for i in 0..4 {
        let id = insert(&mut conn, &row(T0));
        claim(&mut conn, T0, T0 + 30_000, 100 + i, 1, Some(&[id]));
        let at = if i < 3 { T0 + 1 + i } else { T0 + 50 };
        let kept = Finish {
            duration_ms: Some(1_234 + i),
            ..finish(id, 100 + i, 3, PARKED, at)
        };
        assert_eq!(conn.finish(&[kept]).unwrap(), [id]);
        done.push(id);
    }
    let r = found(&mut conn, done[0]);
    assert_eq!(
        (r.task_status, r.execute_time, r.duration_ms),
        (3, PARKED, Some(1_234))
    );
    assert!(claim(&mut conn, i64::MAX, i64::MAX, 1, 10, None).is_empty());
    let others: Vec<i64> = [0, 2, 4, 5]
        .iter()
        .map(|&status| {
            insert(
                &mut conn,
                &NewRow {
                    task_status: status,
                    gmt_modified: T0 - WEEK,
                    ..row(PARKED)
                },
            )
        })
        .collect();

    assert_eq!(
        conn.purge_completed(T0 + 10, 2).unwrap(),
        2,
        "the limit holds"
    );
    assert_eq!(conn.purge_completed(T0 + 10, 2).unwrap(), 1);
    assert_eq!(conn.purge_completed(T0 + 10, 2).unwrap(), 0);
    let mut left: BTreeSet<i64> = others.iter().copied().collect();
    left.insert(done[3]);
    assert_eq!(ids_in(&mut conn), left);
    // `before` is exclusive.
    assert_eq!(conn.purge_completed(T0 + 50, 10).unwrap(), 0);
    assert_eq!(conn.purge_completed(T0 + 51, 10).unwrap(), 1);
}

fn finish_with_minus_one_releases_the_attempt<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let fresh = insert(&mut conn, &row(T0));
    let retried = insert(
        &mut conn,
        &NewRow {
            task_status: 2,
            execute_times: 1,
            error_msg: "first failure".into(),
            ..row(T0)
        },
    );
    claim(&mut conn, T0, T0 + 30_000, 3, 10, None);
    // Shutdown hands both back unstarted: the attempt is not counted.
    let release = |id, status, msg: &str| Finish {
        error_msg: msg.into(),
        attempts_delta: -1,
        ..finish(id, 3, status, T0 + 10, T0 + 10)
    };
    let held = conn
        .finish(&[release(fresh, 0, ""), release(retried, 2, "first failure")])
        .unwrap();
    assert_eq!(
        held.iter().copied().collect::<BTreeSet<_>>(),
        [fresh, retried].into()
    );
    for (id, status, times, msg) in [(fresh, 0, 0, ""), (retried, 2, 1, "first failure")] {
        let r = found(&mut conn, id);
        assert_eq!((r.task_status, r.execute_times), (status, times));
        assert_eq!(r.execute_time, T0 + 10);
        assert_eq!(r.error_msg, msg);
        assert_eq!(
            (r.lease_token, r.lease_owner, r.lease_expires_at),
            (None, None, None)
        );
    }
    // And it is claimable again at once.
    assert_eq!(
        ids(&claim(&mut conn, T0 + 10, T0 + 30_000, 4, 10, None)),
        [fresh, retried].into()
    );
}

fn finish_reports_only_rows_still_held<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let a = insert(&mut conn, &row(T0));
    let b = insert(&mut conn, &row(T0));
    claim(&mut conn, T0, T0 + 1_000, 1, 10, None);
    // b's lease runs out and another worker takes it.
    claim(&mut conn, T0 + 2_000, T0 + 30_000, 2, 10, Some(&[b]));
    let b_before = found(&mut conn, b);
    let held = conn
        .finish(&[
            finish(a, 1, 2, T0 + 9_000, T0 + 2_500),
            finish(b, 1, 2, T0 + 9_000, T0 + 2_500),
            finish(999_999, 1, 2, T0 + 9_000, T0 + 2_500),
        ])
        .unwrap();
    assert_eq!(held, [a]);
    assert_eq!(found(&mut conn, a).task_status, 2);
    assert_same_row(&b_before, &found(&mut conn, b));
    assert_eq!(conn.finish(&[]).unwrap(), Vec::<i64>::new());
}

fn extend_pushes_the_lease<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let mine = insert(&mut conn, &row(T0));
    let theirs = insert(&mut conn, &row(T0));
    claim(&mut conn, T0, T0 + 1_000, 1, 1, Some(&[mine]));
    claim(&mut conn, T0, T0 + 1_000, 2, 1, Some(&[theirs]));
    assert_eq!(
        conn.extend(1, &[mine, theirs], T0 + 10_000, T0 + 500)
            .unwrap(),
        1,
        "only rows held under the token"
    );
    let r = found(&mut conn, mine);
    assert_eq!(r.lease_expires_at, Some(T0 + 10_000));
    assert_eq!(r.execute_time, T0 + 10_000);
    assert_eq!(r.gmt_modified, T0 + 500);
    assert_eq!((r.task_status, r.execute_times), (1, 1));
    assert_eq!(found(&mut conn, theirs).lease_expires_at, Some(T0 + 1_000));
    // Past the old expiry the extended row is still held; the other one is free.
    assert_eq!(
        ids(&claim(&mut conn, T0 + 5_000, T0 + 40_000, 3, 10, None)),
        [theirs].into()
    );
    assert_eq!(
        ids(&claim(&mut conn, T0 + 10_000, T0 + 40_000, 4, 10, None)),
        [mine].into()
    );
}

// ---------------------------------------------------------------------------------------------
// Schema

fn check_schema_reports_a_missing_table<D: Db>(db: &D) {
    let mut conn = db.connect();
    let e = conn.check_schema().unwrap_err();
    assert!(
        is_missing_schema(&e),
        "not recognised as a missing schema: {e}"
    );
    let err = crate::check_schema(&mut conn).unwrap_err();
    assert!(err.is_not_migrated(), "{err:?}");
    assert!(err.to_string().contains("tend::migrate"), "{err}");
    // Every statement of the contract fails the same recognisable way.
    let e = conn.insert_one(&row(T0)).unwrap_err();
    assert!(is_missing_schema(&e), "insert: {e}");
    let e = conn.claim(&claim_args(T0, T0 + 1, 1, 1, None)).unwrap_err();
    assert!(is_missing_schema(&e), "claim: {e}");
    // And migrating fixes it.
    crate::migrate(&mut conn).unwrap();
    crate::check_schema(&mut conn).unwrap();
}

fn check_schema_reports_a_missing_column<D: Db>(db: &D) {
    let mut conn = db.connect();
    conn.batch_execute(
        "CREATE TABLE consistency_task (id BIGINT PRIMARY KEY, task_id VARCHAR(500) NOT NULL)",
    )
    .unwrap();
    let e = conn.check_schema().unwrap_err();
    assert!(
        is_missing_schema(&e),
        "not recognised as a missing column: {e}"
    );
    let err = crate::check_schema(&mut conn).unwrap_err();
    assert!(err.is_not_migrated(), "{err:?}");
    assert!(err.to_string().contains("tend::migrate"), "{err}");
}

fn migrate_twice_is_idempotent<D: Db>(db: &D) {
    let mut conn = db.connect();
    crate::migrate(&mut conn).unwrap();
    let id = insert(&mut conn, &row(T0));
    crate::migrate(&mut conn).unwrap();
    // A second connection (another process starting up) finds nothing to do either.
    crate::migrate(&mut db.connect()).unwrap();
    crate::check_schema(&mut conn).unwrap();
    assert_eq!(
        D::rows(&mut conn).iter().map(|r| r.id).collect::<Vec<_>>(),
        [id]
    );
}

// ---------------------------------------------------------------------------------------------
// Sizes

fn large_payloads_round_trip<D: Db>(db: &D) {
    let mut conn = migrated(db);
    // Every byte value, NULs included, in a pattern that is not periodic in 256.
    let bytes = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 7 + i / 251) as u8).collect() };
    let one_mib = NewRow {
        task_parameter: bytes(1 << 20),
        ..row(T0)
    };
    let max = NewRow {
        task_parameter: bytes(crate::MAX_PAYLOAD_BYTES),
        ..row(T0 + 1)
    };
    let id = insert(&mut conn, &one_mib);
    assert_stored(&one_mib, &found(&mut conn, id));
    assert_eq!(
        conn.insert_many(&[max.clone(), one_mib.clone()]).unwrap(),
        2
    );
    let rows = D::rows(&mut conn);
    assert_stored(&max, &rows[1]);
    assert_stored(&one_mib, &rows[2]);
    // The claim hands workers the payload intact too.
    let claimed = claim(&mut conn, T0 + 1, T0 + 30_000, 1, 10, None);
    assert_eq!(claimed.len(), 3);
    for r in &claimed {
        let want = if r.id == rows[1].id { &max } else { &one_mib };
        assert!(
            r.task_parameter == want.task_parameter,
            "payload of {}",
            r.id
        );
    }
}

/// The pool cuts `error_msg` and `fallback_error_msg` at 64 KiB; every backend must store that.
fn messages_of_64_kib_round_trip<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let long = "é".repeat(32 * 1024); // 65 536 bytes, two per character
    assert_eq!(long.len(), 64 * 1024);
    let id = insert(&mut conn, &row(T0));
    claim(&mut conn, T0, T0 + 30_000, 1, 10, None);
    let failed = Finish {
        error_msg: long.clone(),
        fallback_error_msg: Some(long.clone()),
        ..finish(id, 1, 2, T0 + 60_000, T0 + 1)
    };
    assert_eq!(conn.finish(&[failed]).unwrap(), [id]);
    let r = found(&mut conn, id);
    assert!(
        r.error_msg == long,
        "error_msg: {} bytes read",
        r.error_msg.len()
    );
    assert!(r.fallback_error_msg.as_deref() == Some(long.as_str()));
}

// ---------------------------------------------------------------------------------------------
// Concurrency

fn concurrent_claimers_never_share_a_row<D: Db>(db: &D) {
    const ROWS: usize = 300;
    const CLAIMERS: i64 = 4;
    let mut conn = migrated(db);
    let rows: Vec<NewRow> = (0..ROWS as i64).map(|i| row(T0 - i)).collect();
    assert_eq!(conn.insert_many(&rows).unwrap(), ROWS);
    let claimed = Mutex::new(Vec::<(i64, i64)>::new()); // (id, token)
    let total = AtomicUsize::new(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    thread::scope(|s| {
        for claimer in 0..CLAIMERS {
            let mut conn = db.connect();
            let (claimed, total) = (&claimed, &total);
            s.spawn(move || {
                let mut round = 0;
                while total.load(Ordering::SeqCst) < ROWS {
                    assert!(
                        Instant::now() < deadline,
                        "claimers did not drain the table"
                    );
                    round += 1;
                    let token = claimer * 1_000_000 + round;
                    let args = claim_args(T0, T0 + 60_000, token, 7, None);
                    let got = retry_transient(|| conn.claim(&args)).expect("claim");
                    total.fetch_add(got.len(), Ordering::SeqCst);
                    claimed
                        .lock()
                        .unwrap()
                        .extend(got.iter().map(|c| (c.task.id, token)));
                }
            });
        }
    });
    let claimed = claimed.into_inner().unwrap();
    let mut by_id = HashMap::new();
    for (id, token) in &claimed {
        if let Some(other) = by_id.insert(*id, *token) {
            panic!("row {id} was claimed under token {other} and again under {token}");
        }
    }
    assert_eq!(by_id.len(), ROWS);
    for r in D::rows(&mut conn) {
        assert_eq!(
            r.lease_token,
            Some(by_id[&r.id]),
            "row {} holds its claimer's token",
            r.id
        );
        assert_eq!(r.execute_times, 1);
    }
}

fn lock_conflicts_are_transient<D: Db>(db: &D) {
    let mut conn = migrated(db);
    insert(&mut conn, &row(T0));
    let e = db.lock_conflict();
    assert!(
        is_transient(&e),
        "a real lock conflict must be retried, not surfaced: {e:?}"
    );
}

fn pooled_connections_store_like_their_connection<D: Db>(db: &D) {
    let pool = db.pool();
    let mut pc = pool.get().unwrap();
    crate::migrate(&mut pc).unwrap();
    crate::check_schema(&mut pc).unwrap();
    assert_eq!(Ops::backend(&pc), D::BACKEND);
    let a = pc.insert_one(&row(T0)).unwrap().unwrap();
    assert_eq!(pc.insert_many(&[row(T0 + 1)]).unwrap(), 1);
    let got: BTreeSet<i64> = Ops::claim(&mut pc, &claim_args(T0 + 1, T0 + 1_000, 1, 10, None))
        .unwrap()
        .iter()
        .map(|c| c.task.id)
        .collect();
    assert_eq!(got.len(), 2);
    let b = *got.iter().find(|&&id| id != a).unwrap();
    assert_eq!(pc.extend(1, &[a, b], T0 + 2_000, T0 + 2).unwrap(), 2);
    assert_eq!(
        pc.finish(&[finish(b, 1, 2, T0 + 9_000, T0 + 3)]).unwrap(),
        [b]
    );
    assert_eq!(pc.complete(1, &[a]).unwrap(), 1);
    assert!(pc.find(a).unwrap().is_none());
    assert_eq!(pc.find(b).unwrap().unwrap().task_status, 2);
    assert!(pc.run_migrations().is_ok());
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
    insert_many_is_one_statement,
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
    lock_conflicts_are_transient,
    pooled_connections_store_like_their_connection,
);

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
