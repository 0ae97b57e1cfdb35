//! Shared by the reliability suites (`tests/shards.rs`, `tests/faults.rs`): throw-away
//! databases on the three backends, an independent run log, child worker processes, a
//! fault-injecting TCP proxy, a seeded random generator and the checks on a run log.
//!
//! Counts never come from tend's own bookkeeping: handlers append a start and an end line per
//! run to a file (`runlog`), in their own write, and the checks read only that file (plus the
//! kill times the test itself recorded).

// Each suite uses part of this module.
#![allow(dead_code)]

pub mod child;
#[cfg(feature = "mysql")]
pub mod galera;
pub mod proxy;
pub mod runlog;
pub mod verify;

#[path = "../../src/store/testdb.rs"]
mod testdb;

use std::io::Write;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::r2d2::{Builder, ConnectionManager, Pool, R2D2Connection};
use diesel::Connection;
use serde::{Deserialize, Serialize};
use tend::{Task, TaskContext, TaskError};

pub use testdb::Server;

/// One of tend's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Pg,
    Mysql,
    Sqlite,
}

impl Backend {
    /// The short name printed in `FAULTS`/`SHARDS` lines and passed to child processes.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Pg => "pg",
            Backend::Mysql => "mysql",
            Backend::Sqlite => "sqlite",
        }
    }

    pub fn parse(s: &str) -> Backend {
        match s {
            "pg" => Backend::Pg,
            "mysql" => Backend::Mysql,
            "sqlite" => Backend::Sqlite,
            other => panic!("unknown backend {other}"),
        }
    }

    fn server(self) -> Option<Server> {
        match self {
            Backend::Pg => Some(Server::Postgres),
            Backend::Mysql => Some(Server::Mysql),
            Backend::Sqlite => None,
        }
    }

    /// An SQL literal for raw bytes.
    pub fn bytes_literal(self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self {
            Backend::Pg => format!("decode('{hex}', 'hex')"),
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

/// A row of `consistency_task` as the checks see it.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct TaskView {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub id: i64,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub task_status: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub execute_times: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub shard_key: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub method_sign_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub error_msg: String,
}

#[derive(Debug, diesel::QueryableByName)]
struct V {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    v: i64,
}

/// The connection types the suites run on, with the few backend-specific helpers they need
/// (implemented on the concrete types so that no generic diesel bounds leak into the tests).
pub trait TestConn:
    R2D2Connection + tend::StoreConnection + SimpleConnection + Send + 'static
{
    const BACKEND: Backend;
    /// Adds the backend's connection setup to an r2d2 builder (SQLite: WAL, busy timeout).
    fn customize(
        b: Builder<ConnectionManager<Self>>,
        busy: Duration,
    ) -> Builder<ConnectionManager<Self>>;
    /// Runs a query whose one column, `v`, is a BIGINT.
    fn i64s(&mut self, sql: &str) -> Vec<i64>;
    /// Every row of `consistency_task`, by id.
    fn tasks(&mut self) -> Vec<TaskView>;
}

macro_rules! test_conn {
    ($t:ty, $b:expr, $customize:expr) => {
        impl TestConn for $t {
            const BACKEND: Backend = $b;
            fn customize(
                b: Builder<ConnectionManager<Self>>,
                busy: Duration,
            ) -> Builder<ConnectionManager<Self>> {
                $customize(b, busy)
            }
            fn i64s(&mut self, sql: &str) -> Vec<i64> {
                use diesel::RunQueryDsl;
                diesel::sql_query(sql)
                    .load::<V>(self)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                    .into_iter()
                    .map(|r| r.v)
                    .collect()
            }
            fn tasks(&mut self) -> Vec<TaskView> {
                use diesel::RunQueryDsl;
                diesel::sql_query(
                    "SELECT id, task_status, execute_times, shard_key, method_sign_name, \
                     error_msg FROM consistency_task ORDER BY id",
                )
                .load::<TaskView>(self)
                .expect("reading consistency_task")
            }
        }
    };
}

#[cfg(feature = "postgres")]
test_conn!(diesel::PgConnection, Backend::Pg, |b, _| b);
#[cfg(feature = "mysql")]
test_conn!(diesel::MysqlConnection, Backend::Mysql, |b, _| b);
#[cfg(feature = "sqlite")]
test_conn!(
    diesel::SqliteConnection,
    Backend::Sqlite,
    |b: Builder<ConnectionManager<diesel::SqliteConnection>>, busy| b
        .connection_customizer(Box::new(tend::SqliteSetup::new().busy_timeout(busy)))
);

/// An r2d2 pool: `max` connections (1 kept idle), `timeout` for a checkout.
pub fn pool<C: TestConn>(url: &str, max: u32, timeout: Duration) -> Pool<ConnectionManager<C>> {
    pool_with::<C>(url, max, timeout, Duration::from_secs(5))
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

/// A migrated pool over a fresh database.
pub fn migrated<C: TestConn>(db: &Db, max: u32) -> Pool<ConnectionManager<C>> {
    let p = pool::<C>(&db.url, max, Duration::from_secs(10));
    tend::migrate(&mut p.get().unwrap()).expect("migrating");
    p
}

/// Rows of `consistency_task`.
pub fn task_count<C: TestConn>(conn: &mut C) -> i64 {
    conn.i64s("SELECT COUNT(*) AS v FROM consistency_task")[0]
}

/// The suites' task: records its run in the run log named by `log`, sleeps `ms`, succeeds.
/// Its shard key is always `key`, so tend's events name the same key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Work {
    pub key: i64,
    pub ms: u32,
    pub log: u32,
}

impl Task for Work {
    const SIGNATURE: &'static str = "tend.tests.work";
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let log = runlog::get(self.log);
        let run = log.start(self.key, ctx.attempt());
        if self.ms > 0 {
            std::thread::sleep(Duration::from_millis(u64::from(self.ms)));
        }
        log.end(self.key, run);
        Ok(())
    }
}

/// Adds one to the single row of `tend_test_counter` and completes the task in the same
/// transaction (`tend::complete_in`): exactly-once local effects. The transaction is the
/// [`Counter`] state's, since the task type cannot name the connection type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Increment {
    pub key: i64,
}

impl Task for Increment {
    const SIGNATURE: &'static str = "tend.tests.increment";
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        (ctx.state::<Counter>()?.0)(ctx)
    }
}

/// The state behind [`Increment`]: its transaction on the task's database.
#[allow(clippy::type_complexity)] // one boxed closure, named by the struct
pub struct Counter(Box<dyn Fn(&TaskContext) -> Result<(), TaskError> + Send + Sync>);

/// The counter table, its one row at 0.
pub const COUNTER_DDL: &str = "CREATE TABLE tend_test_counter (id INTEGER PRIMARY KEY, n BIGINT \
     NOT NULL); INSERT INTO tend_test_counter (id, n) VALUES (1, 0);";

impl Counter {
    pub fn new<C: TestConn>(pool: Pool<ConnectionManager<C>>) -> Counter {
        Counter(Box::new(move |ctx| {
            let mut conn = pool.get()?;
            conn.transaction(|conn| {
                conn.batch_execute("UPDATE tend_test_counter SET n = n + 1 WHERE id = 1")?;
                tend::complete_in(conn, ctx)?;
                Ok::<_, TaskError>(())
            })
        }))
    }
}

impl Work {
    /// A `NewTask` with the shard key set to the work's key.
    pub fn new_task(&self) -> tend::NewTask {
        tend::NewTask::new(self).unwrap().shard_key(self.key)
    }
}

/// Enqueues `Work` for every key, in batches of 500.
pub fn enqueue_work<C: TestConn>(conn: &mut C, keys: &[i64], ms: u32, log: u32) {
    for chunk in keys.chunks(500) {
        let tasks: Vec<tend::NewTask> = chunk
            .iter()
            .map(|&key| Work { key, ms, log }.new_task())
            .collect();
        let n = tend::enqueue_many(conn, tasks).expect("enqueue_many");
        assert_eq!(n, chunk.len());
    }
}

/// splitmix64: a tiny seeded generator, so every run can be replayed from its printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The seed from `TEND_FAULTS_SEED`, else one derived from the clock (printed by callers).
    pub fn seed() -> u64 {
        std::env::var("TEND_FAULTS_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Microseconds since the Unix epoch: the clock every process of a test shares.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
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
