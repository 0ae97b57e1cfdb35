//! Storage: the one contract every backend implements, and the rows it moves.
//!
//! Each backend file (`pg.rs`, `mysql.rs`, `sqlite.rs`) holds only the SQL that differs
//! (claiming, inserting); the statements all backends share come from `common_ops!`. The
//! user-facing API (`enqueue`, `migrate`, the worker pool) is written once over
//! [`StoreConnection`], which pooled connections implement too.

use std::thread;
use std::time::Duration;

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

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
#[cfg(any(feature = "mysql", feature = "sqlite"))]
fn lease_by_ids<'a>(c: &Claim<'a>, ids: &[i64]) -> stmt::Stmt<'a> {
    let s = stmt::Stmt::new(
        "UPDATE consistency_task SET task_status = 1, execute_times = CASE WHEN execute_times < 2147483647 THEN execute_times + 1 ELSE execute_times END",
    );
    lease_set(s, c).sql(" WHERE id IN ").ids(ids)
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
        .sql(" IN (0, 1, 2)");
    let s = match c.ids {
        Some(ids) => s.sql(" AND id IN ").ids(ids),
        None => s,
    };
    s.sql(" ORDER BY execute_time LIMIT ")
        .bind(Bind::I64(c.limit))
}

/// Rows read before [`lease_by_ids`] updated them, as the update left them, with the status
/// each had before.
#[cfg(any(feature = "mysql", feature = "sqlite"))]
fn as_leased(rows: Vec<TaskRow>, c: &Claim<'_>) -> Vec<Claimed> {
    rows.into_iter()
        .map(|mut r| {
            let prev_status = r.task_status;
            r.task_status = 1;
            r.execute_times = r.execute_times.saturating_add(1); // as the UPDATE's CASE
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
    /// How much to add to `execute_times` (-1 when a claimed task is released unstarted).
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
            Stmt::new("DELETE FROM consistency_task WHERE lease_token = ")
                .bind(Bind::I64(token))
                .sql(" AND id IN ")
                .ids(ids)
                .execute(self)
        }

        fn finish(&mut self, rows: &[$crate::store::Finish]) -> QueryResult<Vec<i64>> {
            use $crate::store::stmt::{Bind, Stmt};
            self.transaction(|conn| {
                let mut held = Vec::with_capacity(rows.len());
                for r in rows {
                    let n = Stmt::new("UPDATE consistency_task SET task_status = ")
                        .bind(Bind::I32(r.status))
                        .sql(", execute_time = ")
                        .bind(Bind::I64(r.execute_time))
                        .sql(", execute_times = execute_times + ")
                        .bind(Bind::I32(r.attempts_delta))
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

        fn extend(&mut self, token: i64, ids: &[i64], until: i64, now: i64) -> QueryResult<usize> {
            use $crate::store::stmt::{Bind, Stmt};
            let mut n = 0;
            // Chunks keep the padded lists within every backend's bind limit.
            for chunk in ids.chunks(1024) {
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
            let done = $crate::TaskStatus::Succeeded.as_i32();
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
    fn defer_checkpoints(&mut self, defer: bool) -> QueryResult<()> {
        (**self).defer_checkpoints(defer)
    }
    fn checkpoint(&mut self) -> QueryResult<()> {
        (**self).checkpoint()
    }
    fn run_migrations(&mut self) -> Result<(), String> {
        (**self).run_migrations()
    }
}

/// Whether a database error means tend's table or one of its columns does not exist.
pub(crate) fn is_missing_schema(e: &DieselError) -> bool {
    let DieselError::DatabaseError(_, info) = e else {
        return false;
    };
    let m = info.message().to_ascii_lowercase();
    // PostgreSQL: relation "consistency_task" does not exist / column ... does not exist;
    // MySQL/MariaDB: Table 'db.consistency_task' doesn't exist / Unknown column;
    // SQLite: no such table / no such column.
    (m.contains("consistency_task") || m.contains("column"))
        && (m.contains("does not exist")
            || m.contains("doesn't exist")
            || m.contains("no such table")
            || m.contains("no such column")
            || m.contains("unknown column"))
}

/// Whether a database error is a lock conflict that simply retrying the statement resolves:
/// PostgreSQL 40001/40P01, MySQL/MariaDB 1213 (deadlock) and 1205 (lock wait timeout),
/// SQLite busy/locked.
pub(crate) fn is_transient(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        DieselError::DatabaseError(_, info) => {
            let m = info.message().to_ascii_lowercase();
            m.contains("deadlock")
                || m.contains("lock wait timeout")
                || m.contains("database is locked")
                || m.contains("database table is locked")
                || m.contains("database is busy")
        }
        _ => false,
    }
}

/// Runs one of tend's own statements, retrying lock conflicts (they are not task failures).
pub(crate) fn retry_transient<T>(mut op: impl FnMut() -> QueryResult<T>) -> QueryResult<T> {
    const ATTEMPTS: u32 = 10;
    let mut wait = Duration::from_millis(2);
    for attempt in 1.. {
        match op() {
            Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                log::debug!("tend: retrying after a lock conflict: {e}");
                thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
pub fn migrate<C: StoreConnection>(conn: &mut C) -> Result<(), crate::Error> {
    conn.run_migrations()
        .map_err(|m| crate::Error::new(crate::ErrorKind::Migration(m)))
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
pub fn check_schema<C: StoreConnection>(conn: &mut C) -> Result<(), crate::Error> {
    let backend = conn.backend();
    conn.check_schema()
        .map_err(|e| crate::Error::from_db(backend, e))
}
