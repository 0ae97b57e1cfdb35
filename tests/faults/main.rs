//! Fault injection (issue 7): with real processes and real databases, nothing is lost and
//! nothing runs twice at the same time.
//!
//! Every scenario runs on PostgreSQL, MariaDB/MySQL and SQLite (`<scenario>::<backend>`), and
//! prints one `FAULTS <scenario> backend=... ...` line with its figures. The counts come from
//! the run log (`support::runlog`), an append-only file the handlers write, never from tend's
//! own bookkeeping. Seeds are printed and can be replayed with `TEND_FAULTS_SEED`.
//!
//! `TEND_FAULTS_QUICK=1` scales every scenario down (e.g. on a loaded laptop); the figures
//! lines say what was used.
//!
//! Run: `TEND_PG_URL=postgres://postgres@127.0.0.1:5432/test
//! TEND_MYSQL_URL=mysql://root@127.0.0.1:3306/test TEND_REQUIRE_DBS=1
//! cargo test --all-features --test faults`.

#[path = "../support/mod.rs"]
mod support;

mod atomicity;
mod bad_input;
mod contention;
mod crash;
mod outage;
mod poison;

use std::collections::HashSet;

use diesel::connection::SimpleConnection;
use diesel::Connection;
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tend::{Task, TaskContext, TaskError, TaskOptions};

use support::child::{stat, ChildCfg, ChildWorker};
use support::runlog::RunLog;
use support::verify::{self, Kill};
use support::{
    figures, now_us, per_backend, quick, task_count, wait_for, Backend, Cutter, Db, Rng, TestConn,
};

/// The entry point of the worker processes the scenarios start.
#[test]
#[ignore = "a worker process started by the other tests"]
fn child_worker() {
    support::child::main()
}

/// Multi-process scenarios measure times; they run one at a time.
fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks the panics the tests cause on purpose, so the panic hook keeps them quiet.
const INTENDED: &str = "tend-test: intended panic";

/// Installs (once) a panic hook that stays silent for [`INTENDED`] panics.
fn quiet_intended_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !msg.contains(INTENDED) {
                default(info);
            }
        }));
    });
}
