//! Storage: the one contract every backend implements, and the rows it moves.
//!
//! Each backend file (`pg.rs`, `mysql.rs`, `sqlite.rs`) holds only the SQL that differs
//! (claiming, inserting); the statements all backends share come from `common_ops!`. The
//! user-facing API (`enqueue`, `migrate`, the worker pool) is written once over
//! [`StoreConnection`], which pooled connections implement too.

use std::thread;
use std::time::Duration;

use diesel::prelude::*;

mod common;
#[cfg(test)]
mod conformance;
// A MySQL-only build uses the `JSON_TABLE` insert and diesel's DSL single-row insert: the
// `VALUES` inserts and their static statement keys serve PostgreSQL and SQLite only.
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
mod insert;
mod lease;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod pg;
mod pooled;
pub(crate) mod row;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
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

pub(crate) mod ops {
    use crate::store::row::{
        Claim, ClaimRow, Claimed, Finish, NewRow, ScheduleRow, TaskRow, Written,
    };
    use diesel::QueryResult;

    /// The storage contract. Every method is one short transaction (or one statement) on
    /// tend's table, and is retried by the caller on transient errors.
    pub trait Ops {
        /// Whether two claims can write at once (not on SQLite: one writer, so a second
        /// claimer would only wait for the lock).
        const CONCURRENT_CLAIMS: bool = true;
        /// Whether the backend has LISTEN/NOTIFY (PostgreSQL), which the pool's cross-process
        /// wake-up (`WakeUp::Listen`) uses.
        const LISTEN_NOTIFY: bool = false;
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
        fn lease(&mut self, c: &Claim<'_>, rows: Vec<ClaimRow>) -> QueryResult<Vec<Claimed>>;
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
        /// The id of the first row a claim of `queue` at `now` would take, skipping `exclude`:
        /// only the id is read (and the ordering key checked), so a row whose other columns
        /// cannot be read or leased is still found.
        fn first_due(&mut self, queue: &str, now: i64, exclude: &[i64])
            -> QueryResult<Option<i64>>;
        /// Moves due pending rows of `queue` that wait behind an earlier row of their ordering
        /// key into the line (`status::WAITING`), so that claims stop reading them: at most
        /// `limit` per priority level; returns how many moved. Per key, in a transaction that
        /// first locks the key's first row, so that it cannot interleave with that row's
        /// completion (which releases the next row, see `release_next`).
        fn defer_blocked(&mut self, queue: &str, now: i64, limit: i64) -> QueryResult<usize>;
        /// Makes the row next in line for `key` after row `after` due at `now` if it waits in
        /// the line; returns 0 or 1. Called after row `after` was deleted or kept as succeeded.
        fn release_next(&mut self, key: &str, after: i64, now: i64) -> QueryResult<usize>;
        /// The line's safety net: makes due the rows of `queue` in the line whose key has no
        /// earlier row left (at most `limit` per level); returns how many.
        fn release_orphans(&mut self, queue: &str, now: i64, limit: i64) -> QueryResult<usize>;
        /// Holds the claimable rows of `queue` whose priority is outside
        /// `MIN_PRIORITY..=MAX_PRIORITY` (written by hand or by another tool: no claim reads
        /// them, so they would wait unseen for good), with a message saying so; returns how
        /// many.
        fn hold_out_of_range(&mut self, queue: &str, now: i64) -> QueryResult<usize>;
        /// Holds a due row that no claim could lease (status held, parked, `message` as its
        /// error), unless it is no longer claimable; returns how many rows changed (0 or 1).
        fn hold_unclaimable(&mut self, id: i64, now: i64, message: &str) -> QueryResult<usize>;
        /// Cancels a task that is pending, failed or held (or, with `running`, running):
        /// it becomes dead and parked with `message`, its lease dropped. Returns whether it did.
        fn cancel(&mut self, id: i64, now: i64, message: &str, running: bool) -> QueryResult<bool>;
        /// Applies fenced updates in one transaction; returns the ids whose lease was still held.
        fn finish(&mut self, rows: &[Finish]) -> QueryResult<Vec<i64>>;
        /// Pushes the lease expiry of running rows held under `token`.
        fn extend(&mut self, token: i64, ids: &[i64], until: i64) -> QueryResult<usize>;
        /// The ids among `ids` whose rows hold the lease `token`.
        fn held(&mut self, token: i64, ids: &[i64]) -> QueryResult<Vec<i64>>;
        /// Pushes the lease `token` of `ids` to `until` and returns the ids that still hold it
        /// (all of them, unless another claim took some): what a claim or an outbox transaction
        /// that returned late does before anything runs (`pool::fetch::confirm_lease`,
        /// `Outbox::lease_held`).
        fn renew(&mut self, token: i64, ids: &[i64], until: i64) -> QueryResult<Vec<i64>> {
            if self.extend(token, ids, until)? == ids.len() {
                return Ok(ids.to_vec());
            }
            self.held(token, ids)
        }
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
        /// The periodic schedule `name`, if its row exists (an error when `tend_schedule` is
        /// missing: the check that the schedule migration ran).
        fn schedule_get(&mut self, name: &str) -> QueryResult<Option<ScheduleRow>>;
        /// Inserts `row` unless a schedule of that name exists; returns whether it did (a
        /// plain statement: a process that loses the race sees a unique violation, which is
        /// `false`, and leaves no transaction aborted).
        fn schedule_create(&mut self, row: &ScheduleRow) -> QueryResult<bool>;
        /// In one transaction: the compare-and-set of schedule `row.name` from `expected_last`
        /// to `row`'s slots and, only if this process moved it, the insert of `tasks`. Returns
        /// whether it moved (false: another process enqueued those slots first).
        fn schedule_advance(
            &mut self,
            expected_last: i64,
            row: &ScheduleRow,
            tasks: &[NewRow],
        ) -> QueryResult<bool>;
        /// Every periodic schedule, by name (operators' view).
        fn schedules(&mut self) -> QueryResult<Vec<ScheduleRow>>;
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
        /// With `true`, this connection's cached statements run on their generic plan, planned
        /// once per connection, instead of a plan made for each execution's values (PostgreSQL:
        /// `plan_cache_mode = force_generic_plan`; `false` restores the session's default). A
        /// worker pool sets it on the connections it holds and restores it before it gives
        /// them back. A no-op on the other backends.
        fn generic_plans(&mut self, _on: bool) -> QueryResult<()> {
            Ok(())
        }
        /// Copies the WAL into the database as far as readers allow, blocking no one (SQLite's
        /// `PRAGMA wal_checkpoint(PASSIVE)`). A no-op on the servers.
        fn checkpoint(&mut self) -> QueryResult<()> {
            Ok(())
        }
        /// Takes the notifications this connection received on the channels it `LISTEN`s to
        /// (PostgreSQL; without a round trip: it reads what the server already sent) and
        /// returns how many there were. An error means the connection is lost. Always 0 on the
        /// backends without LISTEN/NOTIFY.
        fn take_notifications(&mut self) -> QueryResult<usize> {
            Ok(0)
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
