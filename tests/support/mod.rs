//! THE harness of the integration tests (every `tests/*` binary includes it with `mod support;`):
//!
//! * databases: [`Db`], a fresh database on one backend (a server database or a SQLite file,
//!   from `src/store/testdb.rs`, included with `#[path]`), removed when dropped; [`TestDb`], a
//!   migrated one with an r2d2 pool over it;
//! * [`TestConn`], what the tests need of a connection type beyond tend's contract (plain diesel
//!   reads of `consistency_task` and the test tables), written once per concrete type;
//! * [`per_backend!`], which stamps one `#[test]` per backend from one generic body;
//! * a recorder of what handlers did in this process ([`recorder`]) and an independent run log
//!   written by handlers of any process ([`runlog`]), plus the checks on it ([`verify`]);
//! * one child worker process ([`child`]), a fault-injecting TCP proxy ([`proxy`], [`Cutter`]),
//!   a seeded random generator, and the clocks and waits every test uses ([`now_ms`],
//!   [`wait_for`]);
//! * the `tend` binary as a process and the dashboard's HTTP client ([`cli`], [`web`]).
//!
//! Counts in the reliability suites never come from tend's own bookkeeping: handlers append a
//! start and an end line per run to a file (`runlog`), in their own write, and the checks read
//! only that file (plus the kill times the test itself recorded).
//!
//! A backend whose URL is unset is skipped with a loud line, unless `TEND_REQUIRE_DBS=1` (see
//! `testdb.rs`).

// Each test binary uses part of this module.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod child;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "mysql")]
pub mod galera;
pub mod proxy;
pub mod recorder;
pub mod runlog;
pub mod tables;
pub mod verify;
#[cfg(feature = "web")]
pub mod web;
mod work;

#[path = "../../src/store/testdb.rs"]
mod testdb;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{Builder, ConnectionManager, Pool, PooledConnection, R2D2Connection};

pub use recorder::{new_run, run, Ran, Run};
pub use tables::{
    consistency_task, tend_test_marks, tend_test_orders, Mark, Row, TaskView, MARKS_DDL, ORDERS_DDL,
};
pub use testdb::Server;
pub use work::{enqueue_work, task_count, Counter, Increment, Rng, Work, COUNTER_DDL};

/// `execute_time` of parked rows (dead, held).
pub const PARKED: i64 = i64::MAX;

/// One of tend's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

impl Backend {
    /// The short name printed in `FAULTS`/`SHARDS` lines and passed to child processes.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "pg",
            Backend::Mysql => "mysql",
            Backend::Sqlite => "sqlite",
        }
    }

    /// The backend of a [`Backend::name`].
    pub fn from_name(name: &str) -> Option<Backend> {
        [Backend::Sqlite, Backend::Postgres, Backend::Mysql]
            .into_iter()
            .find(|b| b.name() == name)
    }

    /// [`Backend::from_name`], panicking on an unknown name.
    pub fn parse(s: &str) -> Backend {
        Backend::from_name(s).unwrap_or_else(|| panic!("unknown backend {s}"))
    }

    fn server(self) -> Option<Server> {
        match self {
            Backend::Postgres => Some(Server::Postgres),
            Backend::Mysql => Some(Server::Mysql),
            Backend::Sqlite => None,
        }
    }

    /// An SQL literal for raw bytes.
    pub fn bytes_literal(self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self {
            Backend::Postgres => format!("decode('{hex}', 'hex')"),
            Backend::Mysql | Backend::Sqlite => format!("X'{hex}'"),
        }
    }
}

/// A fresh database (a server database or a SQLite file), removed when dropped.
#[derive(Debug)]
pub struct Db {
    pub backend: Backend,
    pub url: String,
    /// host:port of the server, for a proxy in front of it.
    pub addr: Option<String>,
    _guard: Guard,
}

#[derive(Debug)]
enum Guard {
    Server(testdb::ServerDb),
    File(testdb::SqliteFile),
}

impl Db {
    /// A fresh database, or `None` (after a loud line) when the backend is not configured and
    /// `TEND_REQUIRE_DBS` is not `1`.
    pub fn create(backend: Backend, suite: &str) -> Option<Db> {
        match backend.server() {
            Some(server) => {
                let db = testdb::ServerDb::create(server, suite)?;
                let addr = host_port(&db.url);
                Some(Db {
                    backend,
                    url: db.url.clone(),
                    addr: Some(addr),
                    _guard: Guard::Server(db),
                })
            }
            None => {
                let f = testdb::SqliteFile::create();
                Some(Db {
                    backend,
                    url: f.url.clone(),
                    addr: None,
                    _guard: Guard::File(f),
                })
            }
        }
    }

    /// The URL with its host:port replaced by `addr` (a proxy in front of the server).
    pub fn url_via(&self, addr: &str) -> String {
        let own = self.addr.as_deref().expect("a server database");
        self.url.replacen(own, addr, 1)
    }

    /// The path of a SQLite database.
    pub fn path(&self) -> &str {
        assert_eq!(self.backend, Backend::Sqlite);
        &self.url
    }
}

/// `host:port` of a `scheme://user@host:port/db` URL (port defaulted per scheme).
fn host_port(url: &str) -> String {
    let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    if hostport.contains(':') {
        hostport.to_string()
    } else if url.starts_with("mysql") {
        format!("{hostport}:3306")
    } else {
        format!("{hostport}:5432")
    }
}

// ---------------------------------------------------------------------------------------------
// Connection types

#[derive(Debug, diesel::QueryableByName)]
struct V {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    v: i64,
}

/// The connection types the tests run on: tend's contract plus plain diesel reads, written once
/// per concrete type (diesel's DSL wants the backend known), so that no generic diesel bounds
/// leak into the tests.
pub trait TestConn:
    R2D2Connection + tend::StoreConnection + SimpleConnection + Send + 'static
{
    const BACKEND: Backend;
    /// Adds the backend's connection setup to an r2d2 builder, as a service would build its
    /// pool (SQLite: `SqliteSetup`, WAL, this busy timeout).
    fn customize(
        b: Builder<ConnectionManager<Self>>,
        busy: Duration,
    ) -> Builder<ConnectionManager<Self>>;
    /// Runs a query whose one column, `v`, is a BIGINT.
    fn i64s(&mut self, sql: &str) -> Vec<i64>;
    /// Every row of `consistency_task`, by id, as the reliability checks see it.
    fn tasks(&mut self) -> Vec<TaskView>;
    /// Every row of `consistency_task`, every column, by id.
    fn rows(conn: &mut Self) -> Vec<Row>;
    /// One row of `consistency_task`.
    fn row(conn: &mut Self, id: i64) -> Option<Row>;
    /// Rows of `consistency_task` matching an SQL condition.
    fn count_where(conn: &mut Self, sql_where: &str) -> i64;
    /// `SELECT … FOR UPDATE` of one row (servers only).
    fn lock_row(conn: &mut Self, id: i64);
    fn set_payload(conn: &mut Self, id: i64, payload: &[u8]);
    /// Rows in `tend_test_orders`.
    fn orders(conn: &mut Self) -> i64;
    /// Rows of the side table `tend_test_marks` with this label.
    fn marks(conn: &mut Self, label: &str) -> Vec<Mark>;
    fn put_mark(conn: &mut Self, mark: &Mark);
}

macro_rules! test_conn {
    ($conn:ty, $backend:expr, $customize:expr) => {
        impl TestConn for $conn {
            const BACKEND: Backend = $backend;

            fn customize(
                b: Builder<ConnectionManager<Self>>,
                busy: Duration,
            ) -> Builder<ConnectionManager<Self>> {
                $customize(b, busy)
            }

            fn i64s(&mut self, sql: &str) -> Vec<i64> {
                diesel::sql_query(sql)
                    .load::<V>(self)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                    .into_iter()
                    .map(|r| r.v)
                    .collect()
            }

            fn tasks(&mut self) -> Vec<TaskView> {
                diesel::sql_query(
                    "SELECT id, task_status, execute_times, shard_key, method_sign_name, \
                     error_msg FROM consistency_task ORDER BY id",
                )
                .load::<TaskView>(self)
                .expect("reading consistency_task")
            }

            fn rows(conn: &mut Self) -> Vec<Row> {
                use tables::consistency_task;
                consistency_task::table
                    .order(consistency_task::id)
                    .select(Row::as_select())
                    .load(conn)
                    .expect("reading consistency_task")
            }

            fn row(conn: &mut Self, id: i64) -> Option<Row> {
                use tables::consistency_task;
                consistency_task::table
                    .find(id)
                    .select(Row::as_select())
                    .get_result(conn)
                    .optional()
                    .expect("row")
            }

            fn count_where(conn: &mut Self, sql_where: &str) -> i64 {
                diesel::sql_query(format!(
                    "SELECT COUNT(*) AS v FROM consistency_task WHERE {sql_where}"
                ))
                .get_result::<V>(conn)
                .expect("count")
                .v
            }

            fn lock_row(conn: &mut Self, id: i64) {
                diesel::sql_query(format!(
                    "SELECT id AS v FROM consistency_task WHERE id = {id} FOR UPDATE"
                ))
                .get_result::<V>(conn)
                .expect("lock row");
            }

            fn set_payload(conn: &mut Self, id: i64, payload: &[u8]) {
                use tables::consistency_task;
                let n = diesel::update(consistency_task::table.find(id))
                    .set(consistency_task::task_parameter.eq(payload))
                    .execute(conn)
                    .expect("overwriting a payload");
                assert_eq!(n, 1);
            }

            fn orders(conn: &mut Self) -> i64 {
                tables::tend_test_orders::table
                    .count()
                    .get_result(conn)
                    .expect("counting orders")
            }

            fn marks(conn: &mut Self, label: &str) -> Vec<Mark> {
                use tables::tend_test_marks;
                tend_test_marks::table
                    .filter(tend_test_marks::label.eq(label))
                    .order(tend_test_marks::at_ms)
                    .select(Mark::as_select())
                    .load(conn)
                    .expect("reading tend_test_marks")
            }

            fn put_mark(conn: &mut Self, mark: &Mark) {
                diesel::insert_into(tables::tend_test_marks::table)
                    .values(mark)
                    .execute(conn)
                    .expect("writing a mark");
            }
        }
    };
}

#[cfg(feature = "sqlite")]
test_conn!(
    diesel::SqliteConnection,
    Backend::Sqlite,
    |b: Builder<ConnectionManager<diesel::SqliteConnection>>, busy| b
        .connection_customizer(Box::new(tend::SqliteSetup::new().busy_timeout(busy)))
);
#[cfg(feature = "postgres")]
test_conn!(diesel::PgConnection, Backend::Postgres, |b, _| b);
#[cfg(feature = "mysql")]
test_conn!(diesel::MysqlConnection, Backend::Mysql, |b, _| b);

/// The busy timeout of [`SqliteSetup::new`](tend::SqliteSetup::new).
pub const DEFAULT_BUSY: Duration = Duration::from_secs(5);

/// An r2d2 pool: `max` connections (1 kept idle), `timeout` for a checkout.
pub fn pool<C: TestConn>(url: &str, max: u32, timeout: Duration) -> Pool<ConnectionManager<C>> {
    pool_with::<C>(url, max, timeout, DEFAULT_BUSY)
}

/// [`pool`] with a SQLite busy timeout.
pub fn pool_with<C: TestConn>(
    url: &str,
    max: u32,
    timeout: Duration,
    busy: Duration,
) -> Pool<ConnectionManager<C>> {
    C::customize(
        Pool::builder()
            .max_size(max)
            .min_idle(Some(1))
            .connection_timeout(timeout),
        busy,
    )
    .build(ConnectionManager::<C>::new(url))
    .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// An r2d2 pool as a service would build it, with a 30 s checkout timeout.
pub fn pool_for<C: TestConn>(url: &str, max_size: u32) -> Pool<ConnectionManager<C>> {
    pool::<C>(url, max_size, Duration::from_secs(30))
}

/// A migrated pool over a fresh database.
pub fn migrated<C: TestConn>(db: &Db, max: u32) -> Pool<ConnectionManager<C>> {
    let p = pool::<C>(&db.url, max, Duration::from_secs(10));
    tend::migrate(&mut p.get().unwrap()).expect("migrating");
    p
}

/// A plain connection; on SQLite with the same busy timeout the pool's connections get.
pub fn connect<C: TestConn>(url: &str) -> C {
    let mut c = C::establish(url).unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    if C::BACKEND == Backend::Sqlite {
        c.batch_execute("PRAGMA busy_timeout = 10000")
            .expect("busy timeout");
    }
    c
}

// ---------------------------------------------------------------------------------------------
// A fresh database with a pool over it

/// A fresh database for one test, with an r2d2 pool over it. Dropping it drops the database.
pub struct TestDb<C: TestConn> {
    /// Declared first: it is dropped (its connections closed) before the database.
    pub pool: Pool<ConnectionManager<C>>,
    pub url: String,
    pub backend: Backend,
    _db: Db,
}

impl<C: TestConn> TestDb<C> {
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
        let db = Db::create(C::BACKEND, "end-to-end")?;
        Some(TestDb {
            pool: pool_for::<C>(&db.url, 8),
            url: db.url.clone(),
            backend: C::BACKEND,
            _db: db,
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

// ---------------------------------------------------------------------------------------------
// Clocks, waits, logs

/// Milliseconds since the Unix epoch, the clock tend stamps rows with.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Microseconds since the Unix epoch: the clock every process of a test shares.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64
}

/// What a [`wait_for`] probe returns: `bool` (holds or not) or `Option<T>` (`Some` ends the wait).
pub trait Ready {
    type Out;
    fn ready(self) -> Option<Self::Out>;
}

impl Ready for bool {
    type Out = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Out = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// Polls `probe` every 10 ms until it holds (`true` or `Some`), or fails the test after
/// `timeout`, naming `what`.
#[track_caller]
pub fn wait_for<R: Ready>(what: &str, timeout: Duration, probe: impl FnMut() -> R) -> R::Out {
    wait_for_or(timeout, probe)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `probe` every 10 ms until it holds (`true` or `Some`), or returns `None` after
/// `timeout`.
pub fn wait_for_or<R: Ready>(timeout: Duration, mut probe: impl FnMut() -> R) -> Option<R::Out> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().ready() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// [`wait_for_or`] as a bool: whether `cond` came to hold within `limit`.
pub fn wait_until(limit: Duration, cond: impl FnMut() -> bool) -> bool {
    wait_for_or(limit, cond).is_some()
}

/// Sends tend's log lines to the test's captured output (shown when it fails).
pub fn init_logs() {
    let _ = env_logger::builder()
        .is_test(true)
        .filter_module("tend", log::LevelFilter::Debug)
        .try_init();
}

/// Writes a figures line straight to stderr (the harness swallows `eprintln!` of passing
/// tests; these lines must show in CI's log).
pub fn figures(line: String) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Whether a scaled-down run was asked for (`TEND_FAULTS_QUICK=1`), e.g. on a loaded laptop.
pub fn quick() -> bool {
    std::env::var("TEND_FAULTS_QUICK").is_ok_and(|v| v.trim() == "1")
}

// ---------------------------------------------------------------------------------------------
// One test per backend

/// Stamps one `#[test]` per backend whose feature is on, from one generic body. Several layouts,
/// so that every test keeps the name it always had:
///
/// * `per_backend!(a, #[ignore = ".."] b)`: `<backend>::a` (`sqlite`, `postgres`, `mysql`) from
///   `fn a<C: TestConn>()`. Attributes before a name go on each of its tests.
/// * `per_backend!(fresh: a, b)`: the same names, from `fn a<C: TestConn>(db: &TestDb<C>)` on a
///   fresh database ([`TestDb::fresh`]; skipped when the backend is).
/// * `per_backend!(scenarios: a, b)`: `a::<backend>` (`pg`, `mysql`, `sqlite`) from
///   `fn a<C: TestConn>()`.
/// * `per_backend!(here: a)`: the tests `pg`, `mysql`, `sqlite` in the current module (the file
///   `a.rs` of a suite split by scenario keeps the names `a::<backend>`).
/// * `per_backend!(processes: a, b)`: `a::<backend>` (`sqlite`, `postgres`, `mysql`) from
///   `fn a(db: &Db)` ([`cli::run`]): the body only hands the database's URL to processes, so
///   the server tests exist without their feature and say why they are skipped.
macro_rules! per_backend {
    (fresh: $($(#[$attr:meta])* $test:ident),* $(,)?) => {
        per_backend!(@backend fresh "sqlite", sqlite, diesel::SqliteConnection, $($(#[$attr])* $test),*);
        per_backend!(@backend fresh "postgres", postgres, diesel::PgConnection, $($(#[$attr])* $test),*);
        per_backend!(@backend fresh "mysql", mysql, diesel::MysqlConnection, $($(#[$attr])* $test),*);
    };
    (scenarios: $($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[cfg(feature = "postgres")]
            #[test]
            fn pg() {
                super::$scenario::<diesel::PgConnection>();
            }
            #[cfg(feature = "mysql")]
            #[test]
            fn mysql() {
                super::$scenario::<diesel::MysqlConnection>();
            }
            #[cfg(feature = "sqlite")]
            #[test]
            fn sqlite() {
                super::$scenario::<diesel::SqliteConnection>();
            }
        }
    )*};
    (here: $scenario:ident) => {
        #[cfg(feature = "postgres")]
        #[test]
        fn pg() {
            $scenario::<diesel::PgConnection>();
        }
        #[cfg(feature = "mysql")]
        #[test]
        fn mysql() {
            $scenario::<diesel::MysqlConnection>();
        }
        #[cfg(feature = "sqlite")]
        #[test]
        fn sqlite() {
            $scenario::<diesel::SqliteConnection>();
        }
    };
    (processes: $($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use crate::support::{cli::run, Backend};

            #[cfg(feature = "sqlite")]
            #[test]
            fn sqlite() {
                run(Backend::Sqlite, super::$scenario);
            }

            #[test]
            fn postgres() {
                run(Backend::Postgres, super::$scenario);
            }

            #[test]
            fn mysql() {
                run(Backend::Mysql, super::$scenario);
            }
        }
    )*};
    (@backend $mode:ident $feature:literal, $module:ident, $conn:ty, $($(#[$attr:meta])* $test:ident),*) => {
        #[cfg(feature = $feature)]
        mod $module {
            $(
                #[test]
                $(#[$attr])*
                fn $test() {
                    $crate::support::per_backend!(@call $mode $conn, $test);
                }
            )*
        }
    };
    (@call plain $conn:ty, $test:ident) => {
        super::$test::<$conn>()
    };
    (@call fresh $conn:ty, $test:ident) => {
        if let Some(db) = crate::support::TestDb::<$conn>::fresh() {
            super::$test(&db)
        }
    };
    ($($(#[$attr:meta])* $test:ident),* $(,)?) => {
        per_backend!(@backend plain "sqlite", sqlite, diesel::SqliteConnection, $($(#[$attr])* $test),*);
        per_backend!(@backend plain "postgres", postgres, diesel::PgConnection, $($(#[$attr])* $test),*);
        per_backend!(@backend plain "mysql", mysql, diesel::MysqlConnection, $($(#[$attr])* $test),*);
    };
}
pub(crate) use per_backend;

/// Cuts a database off from tend and gives it back: a [`proxy::Proxy`] in front of a server
/// (tend connects through it), or, for SQLite, an exclusive lock held on the file from another
/// connection (tend's writers then get "database is locked" after their busy timeout).
pub enum Cutter {
    Proxy(proxy::Proxy),
    #[cfg(feature = "sqlite")]
    Lock {
        path: String,
        conn: Option<diesel::SqliteConnection>,
    },
}

impl Cutter {
    /// A cutter for `db`, and the URL tend must use for the cut to apply.
    pub fn new(db: &Db) -> (Cutter, String) {
        match db.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => (
                Cutter::Lock {
                    path: db.url.clone(),
                    conn: None,
                },
                db.url.clone(),
            ),
            _ => {
                let p = proxy::Proxy::start(db.addr.as_deref().expect("a server"));
                let url = db.url_via(&p.addr);
                (Cutter::Proxy(p), url)
            }
        }
    }

    pub fn down(&mut self) {
        match self {
            Cutter::Proxy(p) => p.down(),
            #[cfg(feature = "sqlite")]
            Cutter::Lock { path, conn } => {
                use diesel::Connection;
                let mut c = diesel::SqliteConnection::establish(path).unwrap();
                c.batch_execute("PRAGMA busy_timeout = 30000; BEGIN EXCLUSIVE")
                    .expect("taking the exclusive lock");
                *conn = Some(c);
            }
        }
    }

    pub fn up(&mut self) {
        match self {
            Cutter::Proxy(p) => p.up(),
            #[cfg(feature = "sqlite")]
            Cutter::Lock { conn, .. } => {
                let mut c = conn.take().expect("down before up");
                c.batch_execute("ROLLBACK").expect("releasing the lock");
            }
        }
    }
}
