//! Storage: the one contract every backend implements, and the rows it moves.
//!
//! Each backend file (`pg.rs`, `mysql.rs`, `sqlite.rs`) holds only the SQL that differs
//! (claiming, inserting); the statements all backends share come from `common_ops!`. The
//! user-facing API (`enqueue`, `migrate`, the worker pool) is written once over
//! [`StoreConnection`], which pooled connections implement too.

use std::thread;
use std::time::Duration;

use diesel::prelude::*;

use crate::schema::consistency_task;

#[cfg(test)]
mod conformance;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod pg;
#[cfg(feature = "sqlite")]
mod sqlite;
mod stmt;
#[cfg(test)]
mod testdb;

#[cfg(feature = "sqlite")]
pub use sqlite::SqliteSetup;

/// A Diesel connection tend can store tasks on: `PgConnection`, `MysqlConnection`,
/// `SqliteConnection` (with the matching feature), and r2d2 pooled connections of each.
///
/// The trait is sealed: its methods are tend's internal storage contract.
///
/// ```
/// # include!("../doctest_setup.rs");
/// use diesel::{Connection, SqliteConnection};
/// use tend::StoreConnection;
/// // One function for every backend, and for pooled connections too.
/// fn ship_later<C: StoreConnection>(conn: &mut C, order_id: i64) -> Result<(), tend::Error> {
///     tend::enqueue(conn, &Ship { order_id })?;
///     Ok(())
/// }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("store-connection");
/// let mut conn = SqliteConnection::establish(":memory:")?;
/// tend::migrate(&mut conn)?;
/// ship_later(&mut conn, 7)?; // a plain connection
/// ship_later(&mut pool.get()?, 8)?; // a pooled one
/// assert_eq!(task_count(&mut conn), 1);
/// # Ok(()) }
/// ```
pub trait StoreConnection: ops::Ops {}

impl<T: ops::Ops> StoreConnection for T {}

/// A row as stored.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = consistency_task)]
pub struct TaskRow {
    pub id: i64,
    pub task_id: String,
    pub idempotency_key: Option<String>,
    pub task_status: i32,
    pub execute_times: i32,
    pub max_attempts: i32,
    pub execute_time: i64,
    pub parameter_types: String,
    pub method_name: String,
    pub method_sign_name: String,
    pub execute_interval_sec: i32,
    pub delay_time: i32,
    pub task_parameter: Vec<u8>,
    pub payload_version: i32,
    pub execute_way: i32,
    pub thread_way: i32,
    pub transaction_way: i32,
    pub error_msg: String,
    pub alert_expression: Option<String>,
    pub alert_action_bean_name: Option<String>,
    pub fallback_class_name: Option<String>,
    pub fallback_error_msg: Option<String>,
    pub shard_key: i64,
    pub lease_token: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub gmt_create: i64,
    pub gmt_modified: i64,
    pub duration_ms: Option<i64>,
}

/// A claimed row (the field is `task` because the derive uses the name `row` itself), with the
/// status it had before the claim (1 = its previous lease expired:
/// the worker that held it crashed or hung).
#[derive(Debug, Clone, QueryableByName)]
pub struct Claimed {
    #[diesel(embed)]
    pub task: TaskRow,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub prev_status: i32,
}

/// A row to insert.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = consistency_task)]
#[diesel(treat_none_as_default_value = false)]
pub struct NewRow {
    pub task_id: String,
    pub idempotency_key: Option<String>,
    pub task_status: i32,
    pub execute_times: i32,
    pub max_attempts: i32,
    pub execute_time: i64,
    pub parameter_types: String,
    pub method_name: String,
    pub method_sign_name: String,
    pub execute_interval_sec: i32,
    pub delay_time: i32,
    pub task_parameter: Vec<u8>,
    pub payload_version: i32,
    pub execute_way: i32,
    pub thread_way: i32,
    pub transaction_way: i32,
    pub error_msg: String,
    pub alert_expression: Option<String>,
    pub alert_action_bean_name: Option<String>,
    pub fallback_class_name: Option<String>,
    pub fallback_error_msg: Option<String>,
    pub shard_key: i64,
    pub lease_token: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub gmt_create: i64,
    pub gmt_modified: i64,
}

impl NewRow {
    /// The row as stored under `id`, without reading it back.
    pub(crate) fn into_task_row(self, id: i64) -> TaskRow {
        TaskRow {
            id,
            task_id: self.task_id,
            idempotency_key: self.idempotency_key,
            task_status: self.task_status,
            execute_times: self.execute_times,
            max_attempts: self.max_attempts,
            execute_time: self.execute_time,
            parameter_types: self.parameter_types,
            method_name: self.method_name,
            method_sign_name: self.method_sign_name,
            execute_interval_sec: self.execute_interval_sec,
            delay_time: self.delay_time,
            task_parameter: self.task_parameter,
            payload_version: self.payload_version,
            execute_way: self.execute_way,
            thread_way: self.thread_way,
            transaction_way: self.transaction_way,
            error_msg: self.error_msg,
            alert_expression: self.alert_expression,
            alert_action_bean_name: self.alert_action_bean_name,
            fallback_class_name: self.fallback_class_name,
            fallback_error_msg: self.fallback_error_msg,
            shard_key: self.shard_key,
            lease_token: self.lease_token,
            lease_owner: self.lease_owner,
            lease_expires_at: self.lease_expires_at,
            gmt_create: self.gmt_create,
            gmt_modified: self.gmt_modified,
            duration_ms: None,
        }
    }
}

/// What a claim asks for.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// Claim rows due at or before this time (epoch ms).
    pub now: i64,
    /// The lease expiry written into claimed rows.
    pub lease_until: i64,
    /// The fencing token written into claimed rows.
    pub token: i64,
    /// Who holds the lease.
    pub owner: &'a str,
    /// At most this many rows.
    pub limit: i64,
    /// Only these ids (a targeted claim, e.g. of a task just enqueued); `None` for any due row.
    pub ids: Option<&'a [i64]>,
    /// Never these ids: rows no claim could lease and no update could hold (see the
    /// fetcher's isolation of bad rows). Almost always empty.
    pub exclude: &'a [i64],
}

/// What [`write_and_claim`](ops::Ops::write_and_claim) did.
#[derive(Debug, Default)]
pub struct Written {
    /// Rows each `complete` deleted, in order.
    pub deleted: Vec<usize>,
    /// Ids whose fenced update applied.
    pub held: Vec<i64>,
    /// The claimed rows.
    pub claimed: Vec<Claimed>,
}

/// The claim's lease as one statement over listed ids (for backends that read the due rows
/// first: MySQL, which has no `UPDATE … RETURNING`, and SQLite, whose `RETURNING` costs a
/// temporary table per run).
///
/// The lease re-checks that each row is still claimable (status and due time): on a server
/// whose `SKIP LOCKED` takes no lock (TiDB) or locks on one node only (Galera), another
/// claimer may have leased a row between the read and this update, and it must not be leased
/// twice. Only rows the update matched are run (see `lease_rows!`).
pub(crate) fn lease_by_ids<'a>(c: &Claim<'a>, ids: &[i64]) -> stmt::Stmt<'a> {
    use stmt::Bind;
    let s = stmt::Stmt::new("UPDATE consistency_task SET task_status = 1, execute_times = ")
        .sql(&next_attempt("execute_times"));
    lease_set(s, c)
        .sql(" WHERE id IN ")
        .ids(ids)
        .sql(" AND task_status IN ")
        .sql(CLAIMABLE_SQL)
        .sql(" AND execute_time <= ")
        .bind(Bind::I64(c.now))
}

/// The claimable statuses as SQL (`TaskStatus::is_claimable`): pending, running (when its lease
/// expired), failed.
pub(crate) const CLAIMABLE_SQL: &str = "(0, 1, 2)";

/// `execute_times` plus one, saturating at `i32::MAX` (the column is a 32-bit INTEGER on every
/// backend: a plain `+ 1` on a row at the maximum fails the whole claim on PostgreSQL and
/// MySQL, and would stop every other row from being claimed).
fn next_attempt(column: &str) -> String {
    format!("CASE WHEN {column} < 2147483647 THEN {column} + 1 ELSE {column} END")
}

/// Leases rows read by a due-rows `SELECT` (MySQL, SQLite) with [`lease_by_ids`], and returns
/// those actually leased: all of them when the update matched every id (the common case, no
/// extra statement), else the ones now holding this claim's token. A macro because the
/// statements need the concrete connection type.
macro_rules! lease_rows {
    ($conn:expr, $c:expr, $rows:expr) => {{
        let (conn, c, rows): (_, &$crate::store::Claim<'_>, Vec<$crate::store::TaskRow>) =
            ($conn, $c, $rows);
        if rows.is_empty() {
            Ok(Vec::new())
        } else {
            // Sorted: one lock order for every statement tend runs by id.
            let mut ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            ids.sort_unstable();
            let leased = $crate::store::lease_by_ids(c, &ids).execute(&mut *conn)?;
            if leased == rows.len() {
                Ok($crate::store::as_leased(rows, c))
            } else {
                // Some rows changed between the read and the lease: keep only ours.
                let ours: std::collections::HashSet<i64> = $crate::store::leased_by(c, &ids)
                    .load::<i64>(&mut *conn)?
                    .into_iter()
                    .collect();
                log::warn!(
                    "tend: {} of {} rows read as due were no longer claimable when leased \
                     (another claimer took them: the server's SKIP LOCKED did not lock them); \
                     they are left to it",
                    rows.len() - ours.len(),
                    rows.len()
                );
                let rows = rows.into_iter().filter(|r| ours.contains(&r.id)).collect();
                Ok($crate::store::as_leased(rows, c))
            }
        }
    }};
}
pub(crate) use lease_rows;

/// The ids among `ids` that hold this claim's token.
pub(crate) fn leased_by<'a>(
    c: &Claim<'a>,
    ids: &[i64],
) -> stmt::Stmt<'a, diesel::sql_types::BigInt> {
    stmt::Stmt::new("SELECT id FROM consistency_task WHERE lease_token = ")
        .bind(stmt::Bind::I64(c.token))
        .sql(" AND id IN ")
        .ids(ids)
        .typed()
}

/// The lease every claim writes after `task_status` and `execute_times`: `, execute_time = …,
/// lease_expires_at = …, lease_token = …, lease_owner = …, gmt_modified = …`.
fn lease_set<'a, ST>(s: stmt::Stmt<'a, ST>, c: &Claim<'a>) -> stmt::Stmt<'a, ST> {
    use stmt::Bind;
    s.sql(", execute_time = ")
        .bind(Bind::I64(c.lease_until))
        .sql(", lease_expires_at = ")
        .bind(Bind::I64(c.lease_until))
        .sql(", lease_token = ")
        .bind(Bind::I64(c.token))
        .sql(", lease_owner = ")
        .bind(Bind::Text(c.owner))
        .sql(", gmt_modified = ")
        .bind(Bind::I64(c.now))
}

/// Which rows every claim takes: ` WHERE execute_time <= now AND <status> IN (0, 1, 2) [AND id
/// IN (…)] ORDER BY execute_time LIMIT n`. `status` is the column as the backend should read it
/// (SQLite's `+task_status` keeps its planner on the execute_time index).
fn due_rows<'a, ST>(s: stmt::Stmt<'a, ST>, c: &Claim<'a>, status: &str) -> stmt::Stmt<'a, ST> {
    use stmt::Bind;
    let s = s
        .sql(" WHERE execute_time <= ")
        .bind(Bind::I64(c.now))
        .sql(" AND ")
        .sql(status)
        .sql(" IN ")
        .sql(CLAIMABLE_SQL);
    let s = match c.ids {
        Some(ids) => s.sql(" AND id IN ").ids(ids),
        None => s,
    };
    let s = if c.exclude.is_empty() {
        s
    } else {
        s.sql(" AND id NOT IN ").ids(c.exclude)
    };
    s.sql(" ORDER BY execute_time LIMIT ")
        .bind(Bind::I64(c.limit))
}

/// Rows read before [`lease_by_ids`] updated them, as the update left them, with the status
/// each had before.
pub(crate) fn as_leased(rows: Vec<TaskRow>, c: &Claim<'_>) -> Vec<Claimed> {
    rows.into_iter()
        .map(|mut r| {
            let prev_status = r.task_status;
            r.task_status = 1;
            r.execute_times = r.execute_times.saturating_add(1);
            r.execute_time = c.lease_until;
            r.lease_expires_at = Some(c.lease_until);
            r.lease_token = Some(c.token);
            r.lease_owner = Some(c.owner.to_string());
            r.gmt_modified = c.now;
            Claimed {
                task: r,
                prev_status,
            }
        })
        .collect()
}

/// A fenced update of one claimed row after its attempt.
#[derive(Debug, Clone)]
pub struct Finish {
    pub id: i64,
    pub token: i64,
    pub status: i32,
    pub execute_time: i64,
    pub error_msg: String,
    pub fallback_error_msg: Option<String>,
    /// How much to add to `execute_times`: 0, or -1 when a claimed task is released
    /// unstarted (the update saturates at the column's minimum).
    pub attempts_delta: i32,
    /// How long the attempt ran (written for kept completed rows).
    pub duration_ms: Option<i64>,
    pub now: i64,
}

pub(crate) mod ops {
    use super::*;

    /// The storage contract. Every method is one short transaction (or one statement) on
    /// tend's table, and is retried by the caller on transient errors.
    pub trait Ops {
        /// Whether two claims can write at once (not on SQLite: one writer, so a second
        /// claimer would only wait for the lock).
        const CONCURRENT_CLAIMS: bool = true;
        /// `postgres`, `mysql` or `sqlite`.
        fn backend(&self) -> &'static str;
        /// Inserts one row; `None` when its idempotency key already exists.
        fn insert_one(&mut self, row: &NewRow) -> QueryResult<Option<i64>>;
        /// Inserts rows in one statement where the backend allows; returns how many were new.
        fn insert_many(&mut self, rows: &[NewRow]) -> QueryResult<usize>;
        /// Leases up to `limit` due rows and returns them as updated, with their previous status.
        fn claim(&mut self, c: &Claim<'_>) -> QueryResult<Vec<Claimed>>;
        /// Leases `rows`, read as due by a claim's `SELECT`, re-checking in the update that each
        /// is still claimable, and returns only those it leased (with their previous status).
        /// MySQL and SQLite claims are this after a `SELECT`; PostgreSQL's one-statement claim
        /// re-checks the same way in its outer `WHERE`.
        fn lease(&mut self, c: &Claim<'_>, rows: Vec<TaskRow>) -> QueryResult<Vec<Claimed>>;
        /// Deletes completed rows still held under `token`; returns how many.
        fn complete(&mut self, token: i64, ids: &[i64]) -> QueryResult<usize>;
        /// Writes outcomes (`complete` per token, then `finish`), then claims: on SQLite in
        /// one write transaction, which saves a commit per batch on its single writer; here,
        /// one after the other (each step stands on its own).
        fn write_and_claim(
            &mut self,
            completes: &[(i64, Vec<i64>)],
            finishes: &[Finish],
            c: &Claim<'_>,
        ) -> QueryResult<Written> {
            let mut w = Written::default();
            for (token, ids) in completes {
                w.deleted.push(self.complete(*token, ids)?);
            }
            if !finishes.is_empty() {
                w.held = self.finish(finishes)?;
            }
            w.claimed = self.claim(c)?;
            Ok(w)
        }
        /// The id of the first row a claim at `now` would take, skipping `exclude`: only the
        /// id is read, so a row whose other columns cannot be read or leased is still found.
        fn first_due(&mut self, now: i64, exclude: &[i64]) -> QueryResult<Option<i64>>;
        /// Holds a due row that no claim could lease (status held, parked, `message` as its
        /// error), unless it is no longer claimable; returns how many rows changed (0 or 1).
        fn hold_unclaimable(&mut self, id: i64, now: i64, message: &str) -> QueryResult<usize>;
        /// Cancels a task that is pending, failed or held (or, with `running`, running):
        /// it becomes dead and parked with `message`, its lease dropped. Returns whether it did.
        fn cancel(&mut self, id: i64, now: i64, message: &str, running: bool) -> QueryResult<bool>;
        /// Applies fenced updates in one transaction; returns the ids whose lease was still held.
        fn finish(&mut self, rows: &[Finish]) -> QueryResult<Vec<i64>>;
        /// Pushes the lease expiry of running rows held under `token`.
        fn extend(&mut self, token: i64, ids: &[i64], until: i64, now: i64) -> QueryResult<usize>;
        /// Deletes up to `limit` kept completed rows last modified before `before`.
        fn purge_completed(&mut self, before: i64, limit: i64) -> QueryResult<usize>;
        /// Takes node slot `node_id` for `owner` if it is free or its holder stopped
        /// heartbeating before `stale_before`; returns whether it is now ours.
        fn node_claim(
            &mut self,
            node_id: i32,
            owner: &str,
            now: i64,
            stale_before: i64,
        ) -> QueryResult<bool>;
        /// Refreshes our heartbeat; false when the slot is no longer ours.
        fn node_heartbeat(&mut self, node_id: i32, owner: &str, now: i64) -> QueryResult<bool>;
        /// Node ids whose heartbeat is at or after `since`.
        fn node_live(&mut self, since: i64) -> QueryResult<Vec<i32>>;
        /// Gives our slot back.
        fn node_leave(&mut self, node_id: i32, owner: &str) -> QueryResult<usize>;
        /// Every row with this signature, oldest first (the test kit's view).
        fn by_signature(&mut self, signature: &str) -> QueryResult<Vec<TaskRow>>;
        /// Reads one row.
        fn find(&mut self, id: i64) -> QueryResult<Option<TaskRow>>;
        /// Fails with the database's error if the table or a column is missing.
        fn check_schema(&mut self) -> QueryResult<()>;
        /// Checks the connection's setup for what tend needs beside the application (SQLite:
        /// a busy timeout, so that writers queue instead of failing with "database is
        /// locked"); `Err` says what is wrong and how to fix it. Nothing to check on the
        /// servers.
        fn check_setup(&mut self) -> Result<(), String> {
            Ok(())
        }
        /// With `true`, this connection's commits leave WAL checkpoints to the pool's
        /// checkpointer thread, up to a bound on the WAL's size (SQLite; `false` restores
        /// SQLite's default). A no-op on the servers.
        fn defer_checkpoints(&mut self, _defer: bool) -> QueryResult<()> {
            Ok(())
        }
        /// Copies the WAL into the database as far as readers allow, blocking no one (SQLite's
        /// `PRAGMA wal_checkpoint(PASSIVE)`). A no-op on the servers.
        fn checkpoint(&mut self) -> QueryResult<()> {
            Ok(())
        }
        /// Runs tend's embedded migrations.
        fn run_migrations(&mut self) -> Result<(), String>;
        /// Called right before each of tend's own transactions and autocommit writes on
        /// `consistency_task`. On MySQL/MariaDB it sets READ COMMITTED for that one
        /// transaction, so tend takes no gap or next-key locks that an application's insert
        /// could wait on (see `mysql.rs`); a no-op elsewhere.
        fn isolate_next(&mut self) -> QueryResult<()> {
            Ok(())
        }
    }
}

/// The statements every backend shares, written once with diesel's DSL.
macro_rules! common_ops {
    () => {
        fn complete(&mut self, token: i64, ids: &[i64]) -> QueryResult<usize> {
            use $crate::store::stmt::{Bind, Stmt};
            if ids.is_empty() {
                return Ok(0);
            }
            self.isolate_next()?;
            Stmt::new("DELETE FROM consistency_task WHERE lease_token = ")
                .bind(Bind::I64(token))
                .sql(" AND id IN ")
                .ids(ids)
                .execute(self)
        }

        fn finish(&mut self, rows: &[$crate::store::Finish]) -> QueryResult<Vec<i64>> {
            use $crate::store::stmt::{Bind, Stmt};
            self.isolate_next()?;
            self.transaction(|conn| {
                let mut held = Vec::with_capacity(rows.len());
                for r in rows {
                    let n = Stmt::new("UPDATE consistency_task SET task_status = ")
                        .bind(Bind::I32(r.status))
                        .sql(", execute_time = ")
                        .bind(Bind::I64(r.execute_time))
                        // Saturating at the column's minimum (`attempts_delta` is 0 or -1).
                        .sql(
                            ", execute_times = CASE WHEN execute_times > -2147483648 \
                             THEN execute_times + ",
                        )
                        .bind(Bind::I32(r.attempts_delta))
                        .sql(" ELSE execute_times END")
                        .sql(", error_msg = ")
                        .bind(Bind::Text(&r.error_msg))
                        .sql(", fallback_error_msg = ")
                        .bind(Bind::OptText(r.fallback_error_msg.as_deref()))
                        .sql(
                            ", lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, \
                             gmt_modified = ",
                        )
                        .bind(Bind::I64(r.now))
                        .sql(", duration_ms = ")
                        .bind(Bind::OptI64(r.duration_ms))
                        .sql(" WHERE id = ")
                        .bind(Bind::I64(r.id))
                        .sql(" AND lease_token = ")
                        .bind(Bind::I64(r.token))
                        .execute(conn)?;
                    if n > 0 {
                        held.push(r.id);
                    }
                }
                Ok(held)
            })
        }

        fn lease(
            &mut self,
            c: &$crate::store::Claim<'_>,
            rows: Vec<$crate::store::TaskRow>,
        ) -> QueryResult<Vec<$crate::store::Claimed>> {
            $crate::store::lease_rows!(self, c, rows)
        }

        fn first_due(&mut self, now: i64, exclude: &[i64]) -> QueryResult<Option<i64>> {
            use $crate::store::stmt::{Bind, Stmt};
            let s = Stmt::new("SELECT id FROM consistency_task WHERE execute_time <= ")
                .bind(Bind::I64(now))
                .sql(" AND task_status IN ")
                .sql($crate::store::CLAIMABLE_SQL);
            let s = if exclude.is_empty() {
                s
            } else {
                s.sql(" AND id NOT IN ").ids(exclude)
            };
            s.sql(" ORDER BY execute_time LIMIT 1")
                .typed::<diesel::sql_types::BigInt>()
                .get_result::<i64>(self)
                .optional()
        }

        fn cancel(&mut self, id: i64, now: i64, message: &str, running: bool) -> QueryResult<bool> {
            use $crate::store::stmt::{Bind, Stmt};
            Stmt::new("UPDATE consistency_task SET task_status = ")
                .bind(Bind::I32($crate::status::TaskStatus::Dead.as_i32()))
                .sql(", execute_time = ")
                .bind(Bind::I64($crate::status::PARKED))
                .sql(", error_msg = ")
                .bind(Bind::Text(message))
                .sql(", lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL")
                .sql(", gmt_modified = ")
                .bind(Bind::I64(now))
                .sql(" WHERE id = ")
                .bind(Bind::I64(id))
                .sql(if running {
                    " AND task_status IN (0, 1, 2, 5)"
                } else {
                    " AND task_status IN (0, 2, 5)"
                })
                .execute(self)
                .map(|n| n == 1)
        }

        fn hold_unclaimable(&mut self, id: i64, now: i64, message: &str) -> QueryResult<usize> {
            use $crate::store::stmt::{Bind, Stmt};
            // No arithmetic and no read of the row's other columns: this must work on the
            // rows the claim could not take.
            Stmt::new("UPDATE consistency_task SET task_status = ")
                .bind(Bind::I32($crate::status::TaskStatus::Held.as_i32()))
                .sql(", execute_time = ")
                .bind(Bind::I64($crate::status::PARKED))
                .sql(", error_msg = ")
                .bind(Bind::Text(message))
                .sql(", lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL")
                .sql(", gmt_modified = ")
                .bind(Bind::I64(now))
                .sql(" WHERE id = ")
                .bind(Bind::I64(id))
                .sql(" AND task_status IN ")
                .sql($crate::store::CLAIMABLE_SQL)
                .sql(" AND execute_time <= ")
                .bind(Bind::I64(now))
                .execute(self)
        }

        fn extend(&mut self, token: i64, ids: &[i64], until: i64, now: i64) -> QueryResult<usize> {
            use $crate::store::stmt::{Bind, Stmt};
            let mut n = 0;
            // Chunks keep the padded lists within every backend's bind limit.
            for chunk in ids.chunks(1024) {
                self.isolate_next()?;
                n += Stmt::new("UPDATE consistency_task SET execute_time = ")
                    .bind(Bind::I64(until))
                    .sql(", lease_expires_at = ")
                    .bind(Bind::I64(until))
                    .sql(", gmt_modified = ")
                    .bind(Bind::I64(now))
                    .sql(" WHERE lease_token = ")
                    .bind(Bind::I64(token))
                    .sql(" AND id IN ")
                    .ids(chunk)
                    .execute(self)?;
            }
            Ok(n)
        }

        fn purge_completed(&mut self, before: i64, limit: i64) -> QueryResult<usize> {
            use $crate::schema::consistency_task::dsl as t;
            let done = $crate::status::TaskStatus::Succeeded.as_i32();
            // Two steps because MySQL/MariaDB refuse LIMIT inside an IN sub-select.
            let ids: Vec<i64> = t::consistency_task
                .filter(t::task_status.eq(done))
                .filter(t::gmt_modified.lt(before))
                .select(t::id)
                .limit(limit)
                .load(self)?;
            if ids.is_empty() {
                return Ok(0);
            }
            self.isolate_next()?;
            diesel::delete(
                t::consistency_task
                    .filter(t::id.eq_any(&ids))
                    .filter(t::task_status.eq(done)),
            )
            .execute(self)
        }

        fn node_claim(
            &mut self,
            node_id: i32,
            owner: &str,
            now: i64,
            stale_before: i64,
        ) -> QueryResult<bool> {
            use $crate::schema::tend_node::dsl as n;
            let taken = diesel::update(
                n::tend_node
                    .filter(n::node_id.eq(node_id))
                    .filter(n::heartbeat_at.lt(stale_before)),
            )
            .set((
                n::owner.eq(owner),
                n::heartbeat_at.eq(now),
                n::started_at.eq(now),
            ))
            .execute(self)?;
            if taken == 1 {
                return Ok(true);
            }
            // Free slot: insert; a unique violation means another process was faster (a plain
            // statement, so no transaction is left aborted on PostgreSQL).
            let exists: i64 = n::tend_node
                .filter(n::node_id.eq(node_id))
                .count()
                .get_result(self)?;
            if exists > 0 {
                return Ok(false);
            }
            match diesel::insert_into(n::tend_node)
                .values((
                    n::node_id.eq(node_id),
                    n::owner.eq(owner),
                    n::heartbeat_at.eq(now),
                    n::started_at.eq(now),
                ))
                .execute(self)
            {
                Ok(_) => Ok(true),
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                )) => Ok(false),
                Err(e) => Err(e),
            }
        }

        fn node_heartbeat(&mut self, node_id: i32, owner: &str, now: i64) -> QueryResult<bool> {
            use $crate::schema::tend_node::dsl as n;
            diesel::update(
                n::tend_node
                    .filter(n::node_id.eq(node_id))
                    .filter(n::owner.eq(owner)),
            )
            .set(n::heartbeat_at.eq(now))
            .execute(self)
            .map(|k| k == 1)
        }

        fn node_live(&mut self, since: i64) -> QueryResult<Vec<i32>> {
            use $crate::schema::tend_node::dsl as n;
            n::tend_node
                .filter(n::heartbeat_at.ge(since))
                .select(n::node_id)
                .order(n::node_id)
                .load(self)
        }

        fn node_leave(&mut self, node_id: i32, owner: &str) -> QueryResult<usize> {
            use $crate::schema::tend_node::dsl as n;
            diesel::delete(
                n::tend_node
                    .filter(n::node_id.eq(node_id))
                    .filter(n::owner.eq(owner)),
            )
            .execute(self)
        }

        fn by_signature(&mut self, signature: &str) -> QueryResult<Vec<$crate::store::TaskRow>> {
            use $crate::schema::consistency_task::dsl as t;
            t::consistency_task
                .filter(t::method_sign_name.eq(signature))
                .order(t::id)
                .select($crate::store::TaskRow::as_select())
                .load(self)
        }

        fn find(&mut self, id: i64) -> QueryResult<Option<$crate::store::TaskRow>> {
            use $crate::schema::consistency_task::dsl as t;
            t::consistency_task
                .filter(t::id.eq(id))
                .select($crate::store::TaskRow::as_select())
                .first(self)
                .optional()
        }

        fn check_schema(&mut self) -> QueryResult<()> {
            use $crate::schema::consistency_task::dsl as t;
            t::consistency_task
                .select($crate::store::TaskRow::as_select())
                .limit(0)
                .load::<$crate::store::TaskRow>(self)
                .map(|_| ())
        }
    };
}
pub(crate) use common_ops;

/// Pooled connections store tasks exactly like the connection they wrap.
impl<C> ops::Ops for diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<C>>
where
    C: ops::Ops + diesel::r2d2::R2D2Connection + 'static,
{
    const CONCURRENT_CLAIMS: bool = C::CONCURRENT_CLAIMS;
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn insert_one(&mut self, row: &NewRow) -> QueryResult<Option<i64>> {
        (**self).insert_one(row)
    }
    fn insert_many(&mut self, rows: &[NewRow]) -> QueryResult<usize> {
        (**self).insert_many(rows)
    }
    fn claim(&mut self, c: &Claim<'_>) -> QueryResult<Vec<Claimed>> {
        (**self).claim(c)
    }
    fn lease(&mut self, c: &Claim<'_>, rows: Vec<TaskRow>) -> QueryResult<Vec<Claimed>> {
        (**self).lease(c, rows)
    }
    fn complete(&mut self, token: i64, ids: &[i64]) -> QueryResult<usize> {
        (**self).complete(token, ids)
    }
    fn write_and_claim(
        &mut self,
        completes: &[(i64, Vec<i64>)],
        finishes: &[Finish],
        c: &Claim<'_>,
    ) -> QueryResult<Written> {
        (**self).write_and_claim(completes, finishes, c)
    }
    fn first_due(&mut self, now: i64, exclude: &[i64]) -> QueryResult<Option<i64>> {
        (**self).first_due(now, exclude)
    }
    fn hold_unclaimable(&mut self, id: i64, now: i64, message: &str) -> QueryResult<usize> {
        (**self).hold_unclaimable(id, now, message)
    }
    fn cancel(&mut self, id: i64, now: i64, message: &str, running: bool) -> QueryResult<bool> {
        (**self).cancel(id, now, message, running)
    }
    fn finish(&mut self, rows: &[Finish]) -> QueryResult<Vec<i64>> {
        (**self).finish(rows)
    }
    fn extend(&mut self, token: i64, ids: &[i64], until: i64, now: i64) -> QueryResult<usize> {
        (**self).extend(token, ids, until, now)
    }
    fn purge_completed(&mut self, before: i64, limit: i64) -> QueryResult<usize> {
        (**self).purge_completed(before, limit)
    }
    fn node_claim(
        &mut self,
        node_id: i32,
        owner: &str,
        now: i64,
        stale_before: i64,
    ) -> QueryResult<bool> {
        (**self).node_claim(node_id, owner, now, stale_before)
    }
    fn node_heartbeat(&mut self, node_id: i32, owner: &str, now: i64) -> QueryResult<bool> {
        (**self).node_heartbeat(node_id, owner, now)
    }
    fn node_live(&mut self, since: i64) -> QueryResult<Vec<i32>> {
        (**self).node_live(since)
    }
    fn node_leave(&mut self, node_id: i32, owner: &str) -> QueryResult<usize> {
        (**self).node_leave(node_id, owner)
    }
    fn by_signature(&mut self, signature: &str) -> QueryResult<Vec<TaskRow>> {
        (**self).by_signature(signature)
    }
    fn find(&mut self, id: i64) -> QueryResult<Option<TaskRow>> {
        (**self).find(id)
    }
    fn check_schema(&mut self) -> QueryResult<()> {
        (**self).check_schema()
    }
    fn check_setup(&mut self) -> Result<(), String> {
        (**self).check_setup()
    }
    fn defer_checkpoints(&mut self, defer: bool) -> QueryResult<()> {
        (**self).defer_checkpoints(defer)
    }
    fn checkpoint(&mut self) -> QueryResult<()> {
        (**self).checkpoint()
    }
    fn run_migrations(&mut self) -> Result<(), String> {
        (**self).run_migrations()
    }
    fn isolate_next(&mut self) -> QueryResult<()> {
        (**self).isolate_next()
    }
}

/// Runs one of tend's own statements, retrying lock conflicts (they are not task failures).
pub(crate) fn retry_transient<T>(mut op: impl FnMut() -> QueryResult<T>) -> QueryResult<T> {
    const ATTEMPTS: u32 = 10;
    let mut wait = Duration::from_millis(2);
    for attempt in 1.. {
        match op() {
            Err(e) if attempt < ATTEMPTS && crate::error::is_transient(&e) => {
                log::debug!("tend: retrying after a lock conflict: {e}");
                thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// Runs tend's embedded migrations for the connection's backend (idempotent: already applied
/// migrations are skipped). Diesel records them in `__diesel_schema_migrations`, next to yours.
///
/// # Errors
/// [`ErrorKind::Migration`](crate::ErrorKind::Migration) when a migration fails.
///
/// ```
/// use diesel::{Connection, SqliteConnection};
/// let mut conn = SqliteConnection::establish(":memory:").unwrap();
/// tend::migrate(&mut conn).unwrap();
/// tend::check_schema(&mut conn).unwrap();
/// ```
pub fn migrate<C: StoreConnection>(conn: &mut C) -> Result<(), crate::error::Error> {
    conn.run_migrations()
        .map_err(|m| crate::error::Error::new(crate::error::ErrorKind::Migration(m)))
}

/// Checks that `consistency_task` exists with every column tend needs.
///
/// # Errors
/// [`ErrorKind::NotMigrated`](crate::ErrorKind::NotMigrated), whose message says how to fix it,
/// or [`ErrorKind::Database`](crate::ErrorKind::Database) when the database cannot be reached.
///
/// ```
/// use diesel::{Connection, SqliteConnection};
/// let mut conn = SqliteConnection::establish(":memory:").unwrap();
/// let err = tend::check_schema(&mut conn).unwrap_err();
/// assert!(err.is_not_migrated());
/// assert!(err.to_string().contains("tend::migrate"));
/// ```
pub fn check_schema<C: StoreConnection>(conn: &mut C) -> Result<(), crate::error::Error> {
    let backend = conn.backend();
    conn.check_schema()
        .map_err(|e| crate::error::Error::from_db(backend, e))
}
