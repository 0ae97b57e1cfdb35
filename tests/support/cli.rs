//! The `tend` binary as a process (`tests/cli/`, `tests/web/`): the task types the tests
//! seed, a database of its own per test (a [`Db`], handed to the processes by URL) seeded
//! through the library, and running `tend` against it.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use diesel::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tend::{NewTask, Task, TaskContext, TaskError};

pub use super::{now_ms, Backend, Db, PARKED};

pub const DAY_MS: i64 = 86_400_000;

#[derive(Serialize, Deserialize)]
pub struct Ship {
    pub order_id: i64,
}

impl Task for Ship {
    const SIGNATURE: &'static str = "orders.ship";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
pub struct Refund {
    pub order_id: i64,
    pub cents: u64,
}

impl Task for Refund {
    const SIGNATURE: &'static str = "payments.refund";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
pub struct Bulk {
    pub n: u32,
}

impl Task for Bulk {
    const SIGNATURE: &'static str = "reports.bulk";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Running the binary

/// What one run of `tend` did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }
    #[track_caller]
    pub fn fails(self, code: i32, needle: &str) -> Run {
        assert_eq!(self.code, code, "expected exit code {code}: {self:#?}");
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:#?}"
        );
        self
    }
    #[track_caller]
    pub fn says(self, needle: &str) -> Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}: {self:#?}"
        );
        self
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
    /// The ids in the first column of a `tasks list` table.
    pub fn ids(&self) -> Vec<i64> {
        self.stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }
}

/// Runs `tend` with `args`, without `DATABASE_URL` unless `env` sets it.
pub fn tend_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tend"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the tend binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn tend(args: &[&str]) -> Run {
    tend_env(args, &[])
}

/// Runs a scenario of `per_backend!(processes: ..)` on a fresh database of `backend`, or says
/// why it is skipped.
pub fn run(backend: Backend, scenario: fn(&Db)) {
    if let Some(db) = Db::for_processes(backend) {
        scenario(&db);
    }
}

// ---------------------------------------------------------------------------------------------
// Databases, seeded through the library

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A name of this process no other call returns (for the SQLite-only tests' own files).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

impl Db {
    /// A fresh empty database, or `None` (after a SKIPPED line) when the backend is not
    /// configured or tend was built without its feature.
    pub fn for_processes(backend: Backend) -> Option<Db> {
        let feature_on = match backend {
            Backend::Sqlite => true,
            Backend::Postgres => cfg!(feature = "postgres"),
            Backend::Mysql => cfg!(feature = "mysql"),
        };
        if !feature_on {
            eprintln!(
                "\n*** SKIPPED: {backend:?} CLI test: tend was built without its feature ***\n"
            );
            return None;
        }
        Db::create(backend, "CLI")
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

pub fn seed(db: &Db) -> Seeded {
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
