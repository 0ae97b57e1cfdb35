//! MySQL 8 / MariaDB 10.6+: no `RETURNING` on `UPDATE`, so a claim is one short transaction:
//! the due rows' ids by a consistent read of the due index, those rows by primary key `FOR
//! UPDATE SKIP LOCKED` (see [`lock_candidates`] for why not one locking read of the index),
//! then `UPDATE … WHERE id IN (…)`.
//!
//! Every transaction and autocommit write tend runs on `consistency_task` runs at READ
//! COMMITTED ([`Ops::isolate_next`]), whatever the session's level (InnoDB's default is
//! REPEATABLE READ). Under REPEATABLE READ the claim's locking read takes next-key locks on
//! every entry of `consistency_task_due` it walks, including the delete-marked entries of
//! completed rows not yet purged and the gap up to the supremum, and an UPDATE or DELETE whose
//! plan scans takes next-key locks on PRIMARY. An application's `tend::enqueue` inserts into
//! those gaps (new rows are due now, and ids grow at the end of PRIMARY), so its insert
//! waited on the claim while the claim waited on the application's fresh, uncommitted row:
//! InnoDB broke the cycle by rolling back the application's transaction, the smaller one
//! ("Deadlock found when trying to get lock", issue 11). READ COMMITTED takes no gap locks,
//! keeps locks only on the rows a statement changes, and reads the last committed version of
//! a row another transaction holds instead of waiting for it (semi-consistent reads), so an
//! application's insert never waits on tend and tend never waits on an application's fresh
//! rows.
//!
//! The level is set per transaction (`SET TRANSACTION ISOLATION LEVEL …`, which applies to
//! the next transaction only), never per session: tend's connections come from the
//! application's r2d2 pool and go back to it. READ COMMITTED needs row-based (or mixed)
//! binary logging when the binlog is on; `binlog_format = STATEMENT` refuses writes at that
//! level (ROW is the default of MySQL 8, MIXED of MariaDB).

use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::ops::Ops;
use super::row::{Claim, ClaimRow, Claimed, NewRow};
use super::stmt::{ClaimRowSql, Stmt};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// The columns of a lean row ([`is_lean`](super::insert::is_lean)), borrowed from a
/// [`NewRow`]: the others take their column's default. The same columns as the lean shape of
/// [`insert_rows`](super::insert::insert_rows) (a test compares the two).
#[derive(Insertable)]
#[diesel(table_name = crate::schema::consistency_task)]
#[diesel(treat_none_as_default_value = false)]
pub(super) struct LeanRow<'a> {
    task_id: &'a str,
    max_attempts: i32,
    execute_time: i64,
    parameter_types: &'a str,
    method_name: &'a str,
    method_sign_name: &'a str,
    execute_interval_sec: i32,
    delay_time: i32,
    task_parameter: &'a [u8],
    payload_version: i32,
    execute_way: i32,
    thread_way: i32,
    transaction_way: i32,
    error_msg: &'a str,
    alert_expression: Option<&'a str>,
    shard_key: i64,
    gmt_create: i64,
    gmt_modified: i64,
}

impl<'a> LeanRow<'a> {
    pub(super) fn of(r: &'a NewRow) -> LeanRow<'a> {
        LeanRow {
            task_id: &r.task_id,
            max_attempts: r.max_attempts,
            execute_time: r.execute_time,
            parameter_types: &r.parameter_types,
            method_name: &r.method_name,
            method_sign_name: &r.method_sign_name,
            execute_interval_sec: r.execute_interval_sec,
            delay_time: r.delay_time,
            task_parameter: &r.task_parameter,
            payload_version: r.payload_version,
            execute_way: r.execute_way,
            thread_way: r.thread_way,
            transaction_way: r.transaction_way,
            error_msg: &r.error_msg,
            alert_expression: r.alert_expression.as_deref(),
            shard_key: r.shard_key,
            gmt_create: r.gmt_create,
            gmt_modified: r.gmt_modified,
        }
    }
}

/// The columns of a bare row ([`is_bare`](super::insert::is_bare)), borrowed from a
/// [`NewRow`]: the same columns as [`BARE_ROW_COLUMNS`](super::insert::BARE_ROW_COLUMNS) (a
/// test compares the two).
#[derive(Insertable)]
#[diesel(table_name = crate::schema::consistency_task)]
#[diesel(treat_none_as_default_value = false)]
pub(super) struct BareRow<'a> {
    task_id: &'a str,
    execute_time: i64,
    parameter_types: &'a str,
    method_name: &'a str,
    method_sign_name: &'a str,
    task_parameter: &'a [u8],
    error_msg: &'a str,
    alert_expression: Option<&'a str>,
    shard_key: i64,
    gmt_create: i64,
    gmt_modified: i64,
}

impl<'a> BareRow<'a> {
    pub(super) fn of(r: &'a NewRow) -> BareRow<'a> {
        BareRow {
            task_id: &r.task_id,
            execute_time: r.execute_time,
            parameter_types: &r.parameter_types,
            method_name: &r.method_name,
            method_sign_name: &r.method_sign_name,
            task_parameter: &r.task_parameter,
            error_msg: &r.error_msg,
            alert_expression: r.alert_expression.as_deref(),
            shard_key: r.shard_key,
            gmt_create: r.gmt_create,
            gmt_modified: r.gmt_modified,
        }
    }
}

impl Ops for MysqlConnection {
    fn backend(&self) -> &'static str {
        "mysql"
    }

    fn insert_one(&mut self, row: &NewRow) -> QueryResult<Option<i64>> {
        // A duplicate key fails only this statement on InnoDB (the caller's transaction goes
        // on), so a plain INSERT is the race-free "insert unless the key exists". INSERT IGNORE
        // would also silence truncation and other errors. The new id comes from the executed
        // statement (`mysql_stmt_insert_id`): no `SELECT LAST_INSERT_ID()` round trip. The
        // statements are diesel DSL inserts of static shape, which diesel keeps prepared.
        let t = crate::schema::consistency_task::table;
        let id = if super::insert::is_bare(row) {
            diesel::insert_into(t)
                .values(BareRow::of(row))
                .execute_returning_id(self)
        } else if super::insert::is_lean(row) {
            diesel::insert_into(t)
                .values(LeanRow::of(row))
                .execute_returning_id(self)
        } else {
            diesel::insert_into(t)
                .values(row)
                .execute_returning_id(self)
        };
        match id {
            Ok(Some(id)) => i64::try_from(id.get()).map(Some).map_err(|_| {
                DieselError::DeserializationError(
                    format!("the new row's id {id} is beyond the id column's range").into(),
                )
            }),
            // An insert of one row into a table with an AUTO_INCREMENT column always sets one.
            Ok(None) => Err(DieselError::DeserializationError(
                "the insert reported no AUTO_INCREMENT id".into(),
            )),
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
                if row.idempotency_key.is_some() =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn insert_many(&mut self, rows: &[NewRow]) -> QueryResult<usize> {
        if rows.iter().any(|r| r.idempotency_key.is_some()) {
            // One duplicate would fail the whole multi-row statement: insert one by one.
            let mut n = 0;
            for r in rows {
                n += usize::from(self.insert_one(r)?.is_some());
            }
            return Ok(n);
        }
        // One `INSERT … SELECT … FROM JSON_TABLE(…)` per chunk (see `insert_json`): one round
        // trip for a batch instead of one per power-of-two piece of it.
        let mut json = String::new();
        let mut n = 0;
        for chunk in super::insert::json_chunks(rows) {
            n += super::insert::insert_json(chunk, &mut json).execute(self)?;
        }
        Ok(n)
    }

    fn claim(&mut self, c: &Claim<'_>) -> QueryResult<Vec<Claimed>> {
        if c.ids.is_some_and(|ids| ids.is_empty()) {
            return Ok(Vec::new());
        }
        self.isolate_next()?;
        self.transaction(|conn| {
            use super::lease::{due_rows_of, levels_due, ALL_LEVELS};
            // MariaDB materializes every branch of the claim's union of priority levels (2.5 ms
            // for a claim of 50 where one plain SELECT takes 0.75): first find which levels
            // have due rows (one index probe each), then read only those.
            let levels: Vec<i32> = match (c.ids, c.queue) {
                (None, Some(queue)) => {
                    let due: (i64, i64, i64, i64, i64, i64, i64) =
                        levels_due(queue, c.now).get_result(conn)?;
                    let due = [due.0, due.1, due.2, due.3, due.4, due.5, due.6];
                    ALL_LEVELS
                        .iter()
                        .zip(due)
                        .filter(|(_, d)| *d != 0)
                        .map(|(p, _)| *p)
                        .collect()
                }
                _ => ALL_LEVELS.to_vec(),
            };
            if levels.is_empty() {
                return Ok(Vec::new());
            }
            if c.ids.is_some() {
                // A targeted claim reads its few rows by primary key already.
                let rows: Vec<ClaimRow> = due_rows_of(
                    Stmt::new("").typed::<ClaimRowSql<diesel::mysql::Mysql>>(),
                    super::stmt::claim_columns_of_k(),
                    c,
                    "k.task_status",
                    super::lease::Dialect::MySql,
                    &levels,
                )
                .load(conn)?;
                return conn.lease(c, rows);
            }
            let rows = lock_candidates(conn, c, &levels)?;
            conn.lease(c, rows)
        })
    }

    fn run_migrations(&mut self) -> Result<(), String> {
        self.run_pending_migrations(MIGRATIONS)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn isolate_next(&mut self) -> QueryResult<()> {
        match self.batch_execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED") {
            // Inside a transaction of the caller's (a test worker or an outbox's sync write on
            // the caller's connection): the caller chose its level, and MySQL refuses to change
            // it mid-way without harming the transaction.
            Err(DieselError::DatabaseError(_, info))
                if info.message().contains("transaction is in progress") =>
            {
                Ok(())
            }
            other => other,
        }
    }

    super::common::complete_in_list!();
    super::common::common_ops!();
}

/// How many candidates an untargeted claim reads per row it wants: a shard's other claimer
/// reads the same first rows at the same time, and finds its batch among the next ones.
const CANDIDATES_PER_ROW: i64 = 2;

/// An untargeted claim's rows, locked: the due rows' ids first, by a consistent read (no lock)
/// of the due index in the claim's order (at most [`CANDIDATES_PER_ROW`] × the limit), then
/// those rows by primary key, `FOR UPDATE SKIP LOCKED`, re-checking that each is still
/// claimable (due, claimable status, its ordering key's turn), in slices of as many as the
/// claim still wants, until it has its limit or the candidates run out. Returned in the
/// claim's order (priority, then due time, then id).
///
/// With many claimers on one database a claim can find every candidate held by others and
/// come back short, or empty, while more rows are due past them; it claims again at its next
/// poll or wake-up, and the others run those rows meanwhile. Reading a wider window then
/// (4x, skipping the ids tried) was measured slower, on any shortfall and on an empty claim
/// alike: 4 worker processes on one MariaDB drained 16.6k-18.1k tasks/s with it against
/// 18.4k-21.5k without (the bench's `drain_p4`, 9 interleaved pairs at 10 ms and 1 s polls,
/// 2026-12-05).
///
/// One locking read over the due index costs far more at READ COMMITTED than at REPEATABLE
/// READ once the index holds delete-marked entries purge has not removed yet (the entries of
/// leased and completed rows a busy drain leaves behind): the locking scan locks each such
/// entry and, at READ COMMITTED, unlocks it again. `benches/mariadb_rc_claim.sh` measured
/// 22-39 ms a claim over 30k such entries against 3.0-6.3 ms at REPEATABLE READ; the same
/// range read without a lock took 1.7-4.5 ms, and a locking read of candidate ids by primary
/// key 0.7-2.0 ms. READ COMMITTED itself stays (no gap locks: see the module's docs).
fn lock_candidates(
    conn: &mut MysqlConnection,
    c: &Claim<'_>,
    levels: &[i32],
) -> QueryResult<Vec<ClaimRow>> {
    use super::lease::{claimable, due_rows_of, ordered, Dialect};
    use super::stmt::Bind;
    if c.limit <= 0 {
        return Ok(Vec::new());
    }
    let wide = Claim {
        limit: c.limit.saturating_mul(CANDIDATES_PER_ROW),
        ..c.clone()
    };
    let candidates: Vec<i64> = due_rows_of(
        Stmt::new("").typed::<diesel::sql_types::BigInt>(),
        "k.id",
        &wide,
        "k.task_status",
        Dialect::Unlocked,
        levels,
    )
    .load(conn)?;
    let want = usize::try_from(c.limit).unwrap_or(usize::MAX);
    let mut rows: Vec<ClaimRow> = Vec::new();
    let mut next = 0;
    while rows.len() < want && next < candidates.len() {
        let end = next.saturating_add(want - rows.len()).min(candidates.len());
        let mut slice = candidates[next..end].to_vec();
        next = end;
        // One lock order for every statement tend runs by id.
        slice.sort_unstable();
        let s = Stmt::new("SELECT ")
            .typed::<ClaimRowSql<diesel::mysql::Mysql>>()
            .sql(super::stmt::claim_columns_of_k())
            .sql(" FROM consistency_task AS k WHERE k.id IN ")
            .ids(&slice)
            .sql(" AND k.execute_time <= ")
            .bind(Bind::I64(c.now))
            .sql(" AND ");
        let s = claimable(s, "k.task_status", "k.lease_expires_at", c.now);
        rows.extend(
            ordered(s, c.now)
                .sql(" FOR UPDATE SKIP LOCKED")
                .load::<ClaimRow>(conn)?,
        );
    }
    super::lease::sort_in_claim_order(&mut rows);
    Ok(rows)
}
