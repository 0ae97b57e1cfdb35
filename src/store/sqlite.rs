//! SQLite 3.35+: one writer at a time, so a claim is one short `BEGIN IMMEDIATE` transaction
//! (take the write lock first, never upgrade a read lock mid-way).

use diesel::prelude::*;
use diesel::r2d2::CustomizeConnection;
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::insert::Tail;
use super::ops::Ops;
use super::row::{Claim, ClaimRow, Claimed, Finish, NewRow, Written};
use super::stmt::{ClaimRowSql, Stmt, KEY_LAST_ID, KEY_ROWS};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

impl Ops for SqliteConnection {
    const CONCURRENT_CLAIMS: bool = false;

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn insert_one(&mut self, row: &NewRow) -> QueryResult<Option<i64>> {
        // `ON CONFLICT` only where a duplicate key may be met: without a key nothing can
        // conflict, and a primary key clash must fail, not pass for a duplicate.
        let tail = if row.idempotency_key.is_some() {
            Tail::IgnoreConflict
        } else {
            Tail::None
        };
        let n = super::insert::with_insert_one!(row, tail, |s| s.execute(self))?;
        if n == 0 {
            return Ok(None);
        }
        // Not `RETURNING id`: SQLite sets up a temporary table for RETURNING on every run.
        // The connection's last rowid is a field read (no statement); it reads 0 as "none",
        // which a rowid can be (the next id after a table of only negative ids), so then the
        // statement asks.
        if let Some(id) = self.last_insert_rowid() {
            return Ok(Some(id.get()));
        }
        let id = Stmt::fixed("SELECT last_insert_rowid()")
            .typed::<diesel::sql_types::BigInt>()
            .keyed::<KEY_LAST_ID>()
            .get_result::<i64>(self)?;
        Ok(Some(id))
    }

    fn insert_many(&mut self, rows: &[NewRow]) -> QueryResult<usize> {
        // diesel sends nothing for no rows but still reports SQLite's change count of the
        // previous statement.
        if rows.is_empty() {
            return Ok(0);
        }
        if rows.iter().any(|r| r.idempotency_key.is_some()) {
            insert_chunked(self, rows, Tail::IgnoreConflict)
        } else {
            insert_chunked(self, rows, Tail::None)
        }
    }

    fn claim(&mut self, c: &Claim<'_>) -> QueryResult<Vec<Claimed>> {
        self.immediate_transaction(|conn| claim_in(conn, c))
    }

    fn write_and_claim(
        &mut self,
        completes: &[(i64, Vec<i64>)],
        finishes: &[Finish],
        c: &Claim<'_>,
    ) -> QueryResult<Written> {
        // One write transaction: the deletes and the claim touch neighbouring pages, and the
        // single writer commits once instead of twice.
        self.immediate_transaction(|conn| {
            let mut w = Written::default();
            for (token, ids) in completes {
                w.deleted.push(conn.complete(*token, ids)?);
            }
            if !finishes.is_empty() {
                w.held = conn.finish(finishes)?;
            }
            w.claimed = claim_in(conn, c)?;
            Ok(w)
        })
    }

    fn check_setup(&mut self) -> Result<(), String> {
        use diesel::dsl::sql;
        use diesel::sql_types::{Integer, Text};
        let mode: String = diesel::select(sql::<Text>("(SELECT * FROM pragma_journal_mode())"))
            .get_result(self)
            .map_err(|e| e.to_string())?;
        if mode == "memory" {
            return Ok(()); // an in-memory database: one connection, nothing to wait for
        }
        let busy: i32 = diesel::select(sql::<Integer>("(SELECT * FROM pragma_busy_timeout())"))
            .get_result(self)
            .map_err(|e| e.to_string())?;
        if busy == 0 {
            return Err(
                "the pool's SQLite connections have no busy timeout, so the \
                        application's transactions and tend's would fail with \"database is \
                        locked\" whenever they meet: build the r2d2 pool with \
                        `.connection_customizer(Box::new(tend::SqliteSetup::new()))` \
                        (busy timeout, WAL)"
                    .to_string(),
            );
        }
        if mode != "wal" {
            log::warn!(
                "tend: the SQLite database is in journal mode `{mode}`, not WAL: readers and the \
                 writer block each other; tend::SqliteSetup sets WAL"
            );
        }
        Ok(())
    }

    fn defer_checkpoints(&mut self, defer: bool) -> QueryResult<()> {
        use diesel::connection::SimpleConnection;
        // Deferred: the writer checkpoints only past 4000 pages, which bounds the WAL (the
        // pool's checkpointer does the rest, beside it); 1000 pages is SQLite's default.
        self.batch_execute(if defer {
            "PRAGMA wal_autocheckpoint = 4000"
        } else {
            "PRAGMA wal_autocheckpoint = 1000"
        })
    }

    fn checkpoint(&mut self) -> QueryResult<()> {
        use diesel::connection::SimpleConnection;
        self.batch_execute("PRAGMA wal_checkpoint(PASSIVE)")
    }

    fn run_migrations(&mut self) -> Result<(), String> {
        self.run_pending_migrations(MIGRATIONS)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    super::common::complete_in_list!();
    super::common::common_ops!();
}

/// The claim, inside a write transaction the caller opened.
fn claim_in(conn: &mut SqliteConnection, c: &Claim<'_>) -> QueryResult<Vec<Claimed>> {
    if c.ids.is_some_and(|ids| ids.is_empty()) {
        return Ok(Vec::new());
    }
    // Read the due rows, then lease them by id, as on MySQL: `UPDATE … RETURNING` would build a
    // temporary table per run and cannot return the previous status. `+task_status` keeps the
    // planner on the execute_time index whatever statistics say (on the status index it would
    // sort every pending row to find the first few).
    let rows: Vec<ClaimRow> = super::lease::due_rows(
        Stmt::new("").typed::<ClaimRowSql<Sqlite>>(),
        super::stmt::claim_columns_of_k(),
        c,
        "+k.task_status",
        super::lease::Dialect::Unlocked,
    )
    .load(conn)?;
    conn.lease(c, rows)
}

/// An r2d2 connection customizer for SQLite pools: WAL journal (readers never block the
/// writer), `synchronous = NORMAL`, and a busy timeout so that writers queue instead of
/// failing with "database is locked".
///
/// ```
/// use diesel::r2d2::{ConnectionManager, Pool};
/// use diesel::SqliteConnection;
/// let dir = std::env::temp_dir().join(format!("tend-doc-{}.db", std::process::id()));
/// let pool = Pool::builder()
///     .connection_customizer(Box::new(tend::SqliteSetup::new()))
///     .build(ConnectionManager::<SqliteConnection>::new(dir.to_str().unwrap()))
///     .unwrap();
/// tend::migrate(&mut pool.get().unwrap()).unwrap();
/// # drop(pool); let _ = std::fs::remove_file(&dir);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SqliteSetup {
    busy_timeout_ms: u32,
}

impl Default for SqliteSetup {
    fn default() -> Self {
        SqliteSetup::new()
    }
}

impl SqliteSetup {
    /// WAL, `synchronous = NORMAL`, busy timeout 5 s.
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let db = TempDb::new("sqlite-setup-new");
    /// # let url = db.url();
    /// use diesel::r2d2::{ConnectionManager, Pool};
    /// use diesel::{dsl::sql, sql_types::Text, RunQueryDsl, SqliteConnection};
    /// let pool = Pool::builder()
    ///     .connection_customizer(Box::new(tend::SqliteSetup::new()))
    ///     .build(ConnectionManager::<SqliteConnection>::new(url))?;
    /// let mode = sql::<Text>("(SELECT * FROM pragma_journal_mode())");
    /// assert_eq!(diesel::select(mode).get_result::<String>(&mut pool.get()?)?, "wal");
    /// # Ok(()) }
    /// ```
    pub fn new() -> SqliteSetup {
        SqliteSetup {
            busy_timeout_ms: 5_000,
        }
    }

    /// How long a writer waits for the lock before "database is locked". Defaults to 5 s.
    /// SQLite keeps it as an `int` of milliseconds: longer than `i32::MAX` ms (about 24.8
    /// days) is clamped to that (SQLite itself would take a larger value as 0, i.e. never
    /// wait).
    ///
    /// ```
    /// # include!("../doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let db = TempDb::new("sqlite-setup-busy-timeout");
    /// # let url = db.url();
    /// use std::time::Duration;
    /// use diesel::r2d2::{ConnectionManager, Pool};
    /// use diesel::{dsl::sql, sql_types::Integer, RunQueryDsl, SqliteConnection};
    /// let setup = tend::SqliteSetup::new().busy_timeout(Duration::from_secs(30));
    /// let pool = Pool::builder()
    ///     .connection_customizer(Box::new(setup))
    ///     .build(ConnectionManager::<SqliteConnection>::new(url))?;
    /// let timeout = || sql::<Integer>("(SELECT * FROM pragma_busy_timeout())");
    /// assert_eq!(diesel::select(timeout()).get_result::<i32>(&mut pool.get()?)?, 30_000);
    /// // Clamped, never wrapped to "no wait":
    /// let forever = tend::SqliteSetup::new().busy_timeout(Duration::MAX);
    /// let pool = Pool::builder()
    ///     .connection_customizer(Box::new(forever))
    ///     .build(ConnectionManager::<SqliteConnection>::new(url))?;
    /// assert_eq!(diesel::select(timeout()).get_result::<i32>(&mut pool.get()?)?, i32::MAX);
    /// # Ok(()) }
    /// ```
    pub fn busy_timeout(mut self, d: std::time::Duration) -> SqliteSetup {
        self.busy_timeout_ms = d.as_millis().min(i32::MAX as u128) as u32;
        self
    }
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqliteSetup {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::connection::SimpleConnection;
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
            self.busy_timeout_ms
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Inserts `rows` in [`insert_chunks`](super::insert::insert_chunks), each chunk's statement
/// under the static key of its shape (`KEY_ROWS + shape`): diesel then finds the prepared
/// statement without rebuilding and hashing its text (up to 7 KB for 64 rows) per chunk.
fn insert_chunked(conn: &mut SqliteConnection, rows: &[NewRow], tail: Tail) -> QueryResult<usize> {
    let mut n = 0usize;
    let mut at = 0usize;
    for len in super::insert::insert_chunks(rows.len()) {
        let (s, shape) = super::insert::insert_rows_shaped(&rows[at..at + len], tail, true);
        n += execute_keyed(conn, s, shape)?;
        at += len;
    }
    Ok(n)
}

// Every shape's key fits a u8 above the other keys.
const _: () = assert!(KEY_ROWS as usize + super::insert::INSERT_SHAPES <= 256);

/// Executes `s` under the key `KEY_ROWS + shape` if its rows share their task type's columns
/// (`reuse`: a batch of one task type, lean or not, with the tail `None` or `IgnoreConflict`;
/// 28 shapes), else keyed by its text. Each arm is a copy of diesel's execute path (about 6 KB
/// of code), so a batch mixing task types, rarer, keeps the by-text key.
fn execute_keyed(conn: &mut SqliteConnection, s: Stmt<'_>, shape: usize) -> QueryResult<usize> {
    macro_rules! arms {
        ($($k:literal)*) => {
            match shape {
                $($k => s.keyed::<{ KEY_ROWS + $k }>().execute(conn),)*
                _ => s.execute(conn),
            }
        };
    }
    // shape = ((log2(rows) * 2 + lean) * 2 + reuse) * 4 + tail (`insert_rows_shaped`): with
    // reuse = 1 and tail 0 or 1, that is 16 * log2(rows) + 4 + 8 * lean + tail.
    arms!(4 5 12 13 20 21 28 29 36 37 44 45 52 53 60 61 68 69 76 77 84 85 92 93 100 101 108 109)
}
