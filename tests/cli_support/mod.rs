//! The harness of `tests/cli.rs`: the task types it seeds, running the `tend` binary as a
//! process, and `per_backend!`, which stamps one test per backend from one scenario.

mod db;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tend::{Task, TaskContext, TaskError};

#[cfg(feature = "sqlite")] // only the SQLite-only tests name their own files
pub use db::unique;
pub use db::{seed, Backend, Seed, TestDb};

pub const PARKED: i64 = i64::MAX;
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

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
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

macro_rules! per_backend {
    ($($scenario:ident),*) => {$(
        mod $scenario {
            use crate::cli_support::{run, Backend};

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
}

pub fn run(backend: Backend, scenario: fn(&TestDb)) {
    if let Some(db) = TestDb::new(backend) {
        scenario(&db);
    }
}
pub(crate) use per_backend;
