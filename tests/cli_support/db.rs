//! Databases for the CLI tests: one of its own per test on every backend, seeded through the
//! library.

use std::sync::atomic::{AtomicUsize, Ordering};

use diesel::Connection;
use serde_json::Value;
use tend::NewTask;

use super::{now_ms, tend, Refund, Run, Ship, DAY_MS, PARKED};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

/// A database of its own for one test, dropped (or deleted) afterwards.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    /// The server URL it was created from (to drop it), or `None` for a SQLite file.
    server: Option<String>,
    name: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// `url` with its database name replaced by `name`.
fn with_db_name(url: &str, name: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let host_end = base[start..].find('/').map_or(base.len(), |i| start + i);
    format!("{}/{name}{query}", &base[..host_end])
}

impl TestDb {
    /// A fresh empty database, or `None` (after a SKIPPED line) when the backend is not
    /// configured.
    pub fn new(backend: Backend) -> Option<TestDb> {
        let (var, feature_on) = match backend {
            Backend::Sqlite => {
                let name = unique("tend-cli");
                let path = std::env::temp_dir().join(format!("{name}.db"));
                return Some(TestDb {
                    backend,
                    url: path.to_str().unwrap().to_string(),
                    server: None,
                    name,
                });
            }
            Backend::Postgres => ("TEND_PG_URL", cfg!(feature = "postgres")),
            Backend::Mysql => ("TEND_MYSQL_URL", cfg!(feature = "mysql")),
        };
        let require = std::env::var("TEND_REQUIRE_DBS").is_ok_and(|v| v == "1");
        if !feature_on {
            eprintln!(
                "\n*** SKIPPED: {backend:?} CLI test: tend was built without its feature ***\n"
            );
            return None;
        }
        let Ok(server) = std::env::var(var) else {
            assert!(!require, "TEND_REQUIRE_DBS=1 but {var} is not set");
            eprintln!("\n*** SKIPPED: {backend:?} CLI test: set {var} to run it ***\n");
            return None;
        };
        let name = unique("tend_cli");
        admin_sql(backend, &server, &format!("CREATE DATABASE {name}")).unwrap_or_else(|e| {
            panic!("cannot create a {backend:?} test database with {var}: {e}")
        });
        Some(TestDb {
            backend,
            url: with_db_name(&server, &name),
            server: Some(server),
            name,
        })
    }

    /// Runs `tend --database-url <this> args…`.
    pub fn tend(&self, args: &[&str]) -> Run {
        let mut all = vec!["--database-url", self.url.as_str()];
        all.extend_from_slice(args);
        tend(&all)
    }

    /// Migrates through the library and runs `f` on a connection.
    pub fn with_conn<R>(&self, f: impl FnOnce(&mut dyn Seed) -> R) -> R {
        match self.backend {
            Backend::Sqlite => {
                #[cfg(feature = "sqlite")]
                {
                    let mut c = diesel::SqliteConnection::establish(&self.url).unwrap();
                    f(&mut c)
                }
                #[cfg(not(feature = "sqlite"))]
                unreachable!("SQLite tests are compiled only with the sqlite feature")
            }
            Backend::Postgres => {
                #[cfg(feature = "postgres")]
                {
                    let mut c = diesel::PgConnection::establish(&self.url).unwrap();
                    f(&mut c)
                }
                #[cfg(not(feature = "postgres"))]
                unreachable!("skipped without the postgres feature")
            }
            Backend::Mysql => {
                #[cfg(feature = "mysql")]
                {
                    let mut c = diesel::MysqlConnection::establish(&self.url).unwrap();
                    f(&mut c)
                }
                #[cfg(not(feature = "mysql"))]
                unreachable!("skipped without the mysql feature")
            }
        }
    }

    pub fn sql(&self, sql: &str) {
        self.with_conn(|c| c.sql(sql));
    }

    /// The row as `tend tasks show --json` reports it, or `None` when the id is unknown.
    pub fn row(&self, id: i64) -> Option<Value> {
        let r = self.tend(&["tasks", "show", &id.to_string(), "--json"]);
        if r.code == 1 && r.stderr.contains("no task with id") {
            return None;
        }
        Some(r.ok().json()[0]["task"].clone())
    }

    pub fn status(&self, id: i64) -> String {
        let row = self.row(id).unwrap_or_else(|| panic!("task {id} is gone"));
        row["status"].as_str().unwrap().to_string()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.server {
            None => {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", self.url));
                }
            }
            Some(server) => {
                // FORCE: a backend of a CLI process that just exited may not be gone yet.
                let force = if self.backend == Backend::Postgres {
                    " WITH (FORCE)"
                } else {
                    ""
                };
                let sql = format!("DROP DATABASE IF EXISTS {}{force}", self.name);
                if let Err(e) = admin_sql(self.backend, server, &sql) {
                    eprintln!("warning: could not drop test database {}: {e}", self.name);
                }
            }
        }
    }
}

/// Runs a statement on the server database (to create or drop a test database).
fn admin_sql(backend: Backend, server: &str, sql: &str) -> Result<(), String> {
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    fn run<C: Connection>(server: &str, sql: &str) -> Result<(), String> {
        let mut c = C::establish(server).map_err(|e| e.to_string())?;
        c.batch_execute(sql).map_err(|e| e.to_string())
    }
    match backend {
        #[cfg(feature = "postgres")]
        Backend::Postgres => run::<diesel::PgConnection>(server, sql),
        #[cfg(feature = "mysql")]
        Backend::Mysql => run::<diesel::MysqlConnection>(server, sql),
        #[allow(unreachable_patterns)] // SQLite has no server; others are skipped without features
        _ => unreachable!("{backend:?} has no server here ({server}, {sql})"),
    }
}

/// What the tests do on a connection of any backend.
pub trait Seed {
    fn migrate(&mut self);
    fn enqueue(&mut self, task: NewTask) -> i64;
    fn sql(&mut self, sql: &str);
}

impl<C> Seed for C
where
    C: Connection + tend::StoreConnection,
{
    fn migrate(&mut self) {
        tend::migrate(self).unwrap();
    }
    fn enqueue(&mut self, task: NewTask) -> i64 {
        tend::enqueue_new(self, task).unwrap().id().unwrap()
    }
    fn sql(&mut self, sql: &str) {
        self.batch_execute(sql).unwrap();
    }
}

/// The seeded rows, one per interesting state.
pub struct Seeded {
    pub pending: i64,
    /// Out of attempts (3 of 3), last modified 10 days ago.
    pub dead_old: i64,
    pub held: i64,
    /// Failed once, retry due in an hour.
    pub failed: i64,
    /// A refund on shard 7, leased by host-1.
    pub running: i64,
    /// Kept after success, 10 days ago.
    pub done_old: i64,
    /// Gave up just now.
    pub dead_new: i64,
}

impl Seeded {
    pub fn all(&self) -> Vec<i64> {
        vec![
            self.pending,
            self.dead_old,
            self.held,
            self.failed,
            self.running,
            self.done_old,
            self.dead_new,
        ]
    }
}

pub fn seed(db: &TestDb) -> Seeded {
    db.with_conn(|c| {
        c.migrate();
        let now = now_ms();
        let old = now - 10 * DAY_MS;
        let ship = |n| NewTask::new(&Ship { order_id: n }).unwrap();
        let s = Seeded {
            pending: c.enqueue(ship(1)),
            dead_old: c.enqueue(ship(2)),
            held: c.enqueue(ship(3)),
            failed: c.enqueue(ship(4)),
            running: c.enqueue(
                NewTask::new(&Refund {
                    order_id: 5,
                    cents: 1250,
                })
                .unwrap()
                .shard_key(7),
            ),
            done_old: c.enqueue(ship(6)),
            dead_new: c.enqueue(ship(7).max_attempts(25)),
        };
        let set = |c: &mut dyn Seed, id: i64, sets: String| {
            c.sql(&format!("UPDATE consistency_task SET {sets} WHERE id = {id}"))
        };
        set(c, s.dead_old, format!("task_status = 4, execute_time = {PARKED}, execute_times = 3, max_attempts = 3, error_msg = 'out of attempts: boom', gmt_modified = {old}"));
        set(c, s.held, format!("task_status = 5, execute_time = {PARKED}, execute_times = 1, error_msg = 'no task type is registered for signature'"));
        set(c, s.failed, format!("task_status = 2, execute_times = 1, execute_time = {}, error_msg = 'timeout talking to the carrier'", now + 3_600_000));
        set(c, s.running, format!("task_status = 1, execute_times = 1, execute_time = {0}, lease_expires_at = {0}, lease_token = 99, lease_owner = 'host-1'", now + 60_000));
        set(c, s.done_old, format!("task_status = 3, execute_time = {PARKED}, execute_times = 1, gmt_modified = {old}"));
        set(c, s.dead_new, format!("task_status = 4, execute_time = {PARKED}, execute_times = 25, error_msg = 'the handler gave up: card declined'"));
        s
    })
}
