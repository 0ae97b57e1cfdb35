//! What the end-to-end tests share: a fresh, migrated database per test on each backend with an
//! r2d2 pool over it, plain diesel reads of `consistency_task`, a recorder for what handlers
//! did, and `per_backend!`, which stamps one `#[test]` per backend from one generic body.
//!
//! Databases come from `src/store/testdb.rs` (the conformance suite's provisioning): a database
//! of its own per test on the servers of `TEND_PG_URL` / `TEND_MYSQL_URL`, a temp file for
//! SQLite, removed again when the test's `TestDb` is dropped.

// Each test crate that includes this module uses part of it.
#![allow(dead_code)]

#[path = "../../src/store/testdb.rs"]
mod testdb;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{Builder, ConnectionManager, Pool, PooledConnection, R2D2Connection};

use testdb::{Server, ServerDb, SqliteFile};

diesel::table! {
    /// tend's table, declared here so that tests read it with plain diesel, as a user would.
    consistency_task (id) {
        id -> BigInt,
        task_id -> Text,
        idempotency_key -> Nullable<Text>,
        task_status -> Integer,
        execute_times -> Integer,
        max_attempts -> Integer,
        execute_time -> BigInt,
        parameter_types -> Text,
        method_name -> Text,
        method_sign_name -> Text,
        execute_interval_sec -> Integer,
        delay_time -> Integer,
        task_parameter -> Binary,
        payload_version -> Integer,
        execute_way -> Integer,
        thread_way -> Integer,
        transaction_way -> Integer,
        error_msg -> Text,
        alert_expression -> Nullable<Text>,
        alert_action_bean_name -> Nullable<Text>,
        fallback_class_name -> Nullable<Text>,
        fallback_error_msg -> Nullable<Text>,
        shard_key -> BigInt,
        lease_token -> Nullable<BigInt>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<BigInt>,
        gmt_create -> BigInt,
        gmt_modified -> BigInt,
        duration_ms -> Nullable<BigInt>,
    }
}

/// See `tend_test_orders`.
pub const ORDERS_DDL: &str =
    "CREATE TABLE tend_test_orders (id BIGINT PRIMARY KEY, note VARCHAR(100) NOT NULL)";

/// `execute_time` of parked rows (dead, held).
pub const PARKED: i64 = i64::MAX;

/// One row of `consistency_task`, every column.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = consistency_task)]
pub struct Row {
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

/// The backends, by the name the child processes of `tests/crash.rs` are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        }
    }

    pub fn from_name(name: &str) -> Option<Backend> {
        [Backend::Sqlite, Backend::Postgres, Backend::Mysql]
            .into_iter()
            .find(|b| b.name() == name)
    }
}

/// A connection type the tests run on: tend's contract plus plain diesel reads, written once
/// per concrete type (diesel's DSL wants the backend known).
pub trait DbConn: R2D2Connection + tend::StoreConnection + Send + 'static {
    const BACKEND: Backend;
    /// How a service builds its pool for this backend (`SqliteSetup` on SQLite).
    fn customize(b: Builder<ConnectionManager<Self>>) -> Builder<ConnectionManager<Self>>;
    fn rows(conn: &mut Self) -> Vec<Row>;
    fn set_payload(conn: &mut Self, id: i64, payload: &[u8]);
    fn orders(conn: &mut Self) -> i64;
    /// Rows of the side table `tend_test_marks` with this label.
    fn marks(conn: &mut Self, label: &str) -> Vec<Mark>;
    fn put_mark(conn: &mut Self, mark: &Mark);
}

macro_rules! db_conn {
    ($conn:ty, $backend:expr, $customize:expr) => {
        impl DbConn for $conn {
            const BACKEND: Backend = $backend;

            fn customize(b: Builder<ConnectionManager<Self>>) -> Builder<ConnectionManager<Self>> {
                $customize(b)
            }

            fn rows(conn: &mut Self) -> Vec<Row> {
                consistency_task::table
                    .order(consistency_task::id)
                    .select(Row::as_select())
                    .load(conn)
                    .expect("reading consistency_task")
            }

            fn set_payload(conn: &mut Self, id: i64, payload: &[u8]) {
                let n = diesel::update(consistency_task::table.find(id))
                    .set(consistency_task::task_parameter.eq(payload))
                    .execute(conn)
                    .expect("overwriting a payload");
                assert_eq!(n, 1);
            }

            fn orders(conn: &mut Self) -> i64 {
                tend_test_orders::table
                    .count()
                    .get_result(conn)
                    .expect("counting orders")
            }

            fn marks(conn: &mut Self, label: &str) -> Vec<Mark> {
                tend_test_marks::table
                    .filter(tend_test_marks::label.eq(label))
                    .order(tend_test_marks::at_ms)
                    .select(Mark::as_select())
                    .load(conn)
                    .expect("reading tend_test_marks")
            }

            fn put_mark(conn: &mut Self, mark: &Mark) {
                diesel::insert_into(tend_test_marks::table)
                    .values(mark)
                    .execute(conn)
                    .expect("writing a mark");
            }
        }
    };
}

#[cfg(feature = "sqlite")]
db_conn!(diesel::SqliteConnection, Backend::Sqlite, |b: Builder<
    _,
>| b
    .connection_customizer(Box::new(tend::SqliteSetup::new())));
#[cfg(feature = "postgres")]
db_conn!(diesel::PgConnection, Backend::Postgres, |b| b);
#[cfg(feature = "mysql")]
db_conn!(diesel::MysqlConnection, Backend::Mysql, |b| b);

diesel::table! {
    /// The business table of "the task commits or rolls back with my rows".
    tend_test_orders (id) {
        id -> BigInt,
        note -> Text,
    }
}

diesel::table! {
    /// What processes under test did, written by their handlers on their own connections:
    /// `label` says what (e.g. "started"), `task` which task, `pid` which process.
    tend_test_marks (label, task, pid, at_ms) {
        label -> Text,
        task -> BigInt,
        pid -> BigInt,
        at_ms -> BigInt,
        end_ms -> BigInt,
    }
}

pub const MARKS_DDL: &str = "CREATE TABLE tend_test_marks (label VARCHAR(50) NOT NULL, \
     task BIGINT NOT NULL, pid BIGINT NOT NULL, at_ms BIGINT NOT NULL, end_ms BIGINT NOT NULL)";

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tend_test_marks)]
pub struct Mark {
    pub label: String,
    pub task: i64,
    pub pid: i64,
    pub at_ms: i64,
    pub end_ms: i64,
}

/// What the database behind a test is, kept alive as long as the test needs it.
enum Guard {
    Server(ServerDb),
    Sqlite(SqliteFile),
}

/// A fresh database for one test, with an r2d2 pool over it. Dropping it drops the database.
pub struct TestDb<C: DbConn> {
    /// Declared first: it is dropped (its connections closed) before the database.
    pub pool: Pool<ConnectionManager<C>>,
    pub url: String,
    pub backend: Backend,
    _guard: Guard,
}

impl<C: DbConn> TestDb<C> {
    /// A fresh database with tend's migrations and the test tables, or `None` when this backend
    /// is skipped (see `testdb.rs` for when that is allowed).
    pub fn fresh() -> Option<TestDb<C>> {
        init_logs();
        let db = TestDb::<C>::unmigrated()?;
        tend::migrate(&mut db.pooled()).expect("tend::migrate");
        db.exec(ORDERS_DDL);
        db.exec(MARKS_DDL);
        Some(db)
    }

    /// A fresh, empty database: not even tend's table.
    pub fn unmigrated() -> Option<TestDb<C>> {
        let (guard, url) = match C::BACKEND {
            Backend::Sqlite => {
                let f = SqliteFile::create();
                let url = f.url.clone();
                (Guard::Sqlite(f), url)
            }
            Backend::Postgres => {
                let db = ServerDb::create(Server::Postgres, "end-to-end")?;
                let url = db.url.clone();
                (Guard::Server(db), url)
            }
            Backend::Mysql => {
                let db = ServerDb::create(Server::Mysql, "end-to-end")?;
                let url = db.url.clone();
                (Guard::Server(db), url)
            }
        };
        let pool = pool_for::<C>(&url, 8);
        Some(TestDb {
            pool,
            url,
            backend: C::BACKEND,
            _guard: guard,
        })
    }

    /// A connection from the pool.
    pub fn pooled(&self) -> PooledConnection<ConnectionManager<C>> {
        self.pool.get().expect("a pooled connection")
    }

    /// A plain connection of its own, as a service's own code would hold.
    pub fn connect(&self) -> C {
        connect::<C>(&self.url)
    }

    pub fn exec(&self, sql: &str) {
        self.pooled()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("`{sql}`: {e}"));
    }

    pub fn rows(&self) -> Vec<Row> {
        C::rows(&mut self.pooled())
    }

    pub fn row(&self, id: i64) -> Option<Row> {
        self.rows().into_iter().find(|r| r.id == id)
    }

    pub fn marks(&self, label: &str) -> Vec<Mark> {
        C::marks(&mut self.pooled(), label)
    }

    /// Rows in `tend_test_orders`.
    pub fn orders(&self) -> i64 {
        C::orders(&mut self.pooled())
    }
}

/// An r2d2 pool as a service would build it: `SqliteSetup` on SQLite (WAL, busy timeout).
pub fn pool_for<C: DbConn>(url: &str, max_size: u32) -> Pool<ConnectionManager<C>> {
    let b = Pool::builder()
        .max_size(max_size)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(30));
    C::customize(b)
        .build(ConnectionManager::new(url))
        .expect("building the pool")
}

/// A plain connection; on SQLite with the same busy timeout the pool's connections get.
pub fn connect<C: DbConn>(url: &str) -> C {
    let mut c = C::establish(url).unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    if C::BACKEND == Backend::Sqlite {
        c.batch_execute("PRAGMA busy_timeout = 10000")
            .expect("busy timeout");
    }
    c
}

/// Milliseconds since the Unix epoch, the clock tend stamps rows with.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Polls `probe` every 20 ms until it returns `Some`, or fails the test after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> T {
    wait_for_or(timeout, probe)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `probe` every 20 ms until it returns `Some`, or returns `None` after `timeout`.
pub fn wait_for_or<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends tend's log lines to the test's captured output (shown when it fails).
pub fn init_logs() {
    let _ = env_logger::builder()
        .is_test(true)
        .filter_module("tend", log::LevelFilter::Debug)
        .try_init();
}

// ---------------------------------------------------------------------------------------------
// What handlers did. Tests run in parallel in one process, so every test gets a `Run` of its
// own, found through the run id its tasks carry in their payload.

/// One execution of a handler.
#[derive(Debug, Clone)]
pub struct Ran {
    /// Which task of the run (the payload's `n`).
    pub n: u64,
    /// The row id.
    pub id: i64,
    pub attempt: u32,
    /// Which pool ran it (tests with two pools register two types under one signature).
    pub pool: u8,
    pub thread: String,
    pub start: Instant,
    pub end: Instant,
    pub start_ms: i64,
}

/// One test's record of executions, and a gate its handlers can wait on.
#[derive(Default)]
pub struct Run {
    started: Mutex<Vec<u64>>,
    ran: Mutex<Vec<Ran>>,
    gate: Mutex<bool>,
    opened: Condvar,
}

impl Run {
    /// Notes that task `n` entered its handler (before it blocks or fails).
    pub fn start(&self, n: u64) {
        self.started.lock().unwrap().push(n);
    }

    pub fn has_started(&self, n: u64) -> bool {
        self.started.lock().unwrap().contains(&n)
    }

    pub fn record(&self, r: Ran) {
        self.ran.lock().unwrap().push(r);
    }

    pub fn ran(&self) -> Vec<Ran> {
        self.ran.lock().unwrap().clone()
    }

    /// How many executions task `n` had.
    pub fn times(&self, n: u64) -> usize {
        self.ran.lock().unwrap().iter().filter(|r| r.n == n).count()
    }

    /// Blocks until the gate opens; `false` if it stayed shut for a minute (a test that failed
    /// elsewhere must not leave threads blocked for ever).
    pub fn wait_gate(&self) -> bool {
        let open = self.gate.lock().unwrap();
        let (open, _) = self
            .opened
            .wait_timeout_while(open, Duration::from_secs(60), |o| !*o)
            .unwrap();
        *open
    }

    pub fn open_gate(&self) {
        *self.gate.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

static RUNS: LazyLock<Mutex<HashMap<u64, Arc<Run>>>> = LazyLock::new(Default::default);
static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

/// A new run: its id goes into the tasks' payloads.
pub fn new_run() -> (u64, Arc<Run>) {
    let id = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
    let run = Arc::new(Run::default());
    RUNS.lock().unwrap().insert(id, run.clone());
    (id, run)
}

/// The run a handler belongs to.
pub fn run(id: u64) -> Arc<Run> {
    RUNS.lock().unwrap()[&id].clone()
}

/// Stamps one `#[test]` per backend whose feature is on from generic test bodies
/// `fn name<C: DbConn>()`: `<backend>::name`. Attributes before a name (`#[ignore = ".."]`)
/// go on each of its tests.
macro_rules! per_backend {
    ($($(#[$attr:meta])* $test:ident),* $(,)?) => {
        per_backend!(@backend "sqlite", sqlite, diesel::SqliteConnection, $($(#[$attr])* $test),*);
        per_backend!(@backend "postgres", postgres, diesel::PgConnection, $($(#[$attr])* $test),*);
        per_backend!(@backend "mysql", mysql, diesel::MysqlConnection, $($(#[$attr])* $test),*);
    };
    (@backend $feature:literal, $module:ident, $conn:ty, $($(#[$attr:meta])* $test:ident),*) => {
        #[cfg(feature = $feature)]
        mod $module {
            $(
                #[test]
                $(#[$attr])*
                fn $test() {
                    super::$test::<$conn>();
                }
            )*
        }
    };
}
pub(crate) use per_backend;
