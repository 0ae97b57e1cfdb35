//! tend makes "this must happen" durable for Diesel services.
//!
//! A service writes its business rows and, **in the same Diesel transaction**, enqueues a typed
//! [`Task`]. If the transaction rolls back, the task never existed; once it commits, a
//! [`WorkerPool`] runs it until it succeeds (retrying on a schedule), or until it is out of
//! attempts and kept as *dead* for an operator. It is the Rust successor of the Java
//! `@ConsistencyTask` framework and keeps its table, `consistency_task`.
//!
//! # The guarantee
//!
//! * **Atomic enqueue**: [`enqueue`] runs on your connection, inside your transaction.
//! * **At-least-once execution**: a task runs until an attempt succeeds and its completion is
//!   written. A crash, a lost lease or a completion that could not be written makes it run
//!   again, so handlers must be idempotent. Under normal operation no task runs twice at the same
//!   time: each claim takes a lease with a fencing token, and a worker whose lease was taken over
//!   cannot complete the task any more.
//! * **Nothing is silently lost**: an unknown signature, a payload that no longer decodes or a
//!   task out of attempts is kept with a message in `error_msg`, never deleted.
//!
//! # Quick look
//!
//! ```
//! use diesel::prelude::*;
//! use diesel::r2d2::{ConnectionManager, Pool};
//! use serde::{Deserialize, Serialize};
//! use tend::{Registry, Task, TaskContext, TaskError, WorkerPool};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendPaymentTimeout { order_id: i64 }
//!
//! impl Task for SendPaymentTimeout {
//!     const SIGNATURE: &'static str = "orders.send_payment_timeout";
//!     fn execute(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
//!         // talk to the payment service; an Err retries later
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let path = std::env::temp_dir().join(format!("tend-lib-doc-{}.db", std::process::id()));
//! # let url = path.to_str().unwrap();
//! let pool = Pool::builder()
//!     .connection_customizer(Box::new(tend::SqliteSetup::new()))
//!     .build(ConnectionManager::<SqliteConnection>::new(url))?;
//! let mut conn = pool.get()?;
//! tend::migrate(&mut conn)?;
//!
//! conn.transaction(|conn| {
//!     // diesel::insert_into(orders::table)... your business rows, then:
//!     tend::enqueue(conn, &SendPaymentTimeout { order_id: 42 })
//! })?;
//!
//! let mut registry = Registry::new();
//! registry.register::<SendPaymentTimeout>()?;
//! let handle = WorkerPool::builder(pool.clone(), registry).threads(2).build()?.start()?;
//! handle.wake(); // run right-now tasks without waiting for the next poll
//! handle.shutdown();
//! # drop(conn); drop(pool); let _ = std::fs::remove_file(&path);
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! * `sqlite` (default): [`SqliteConnection`](diesel::SqliteConnection), with SQLite bundled so
//!   nothing needs installing.
//! * `postgres`: [`PgConnection`](diesel::PgConnection) (needs libpq).
//! * `mysql`: [`MysqlConnection`](diesel::MysqlConnection) for MySQL 8 and MariaDB 10.6+
//!   (needs libmysqlclient).
//!
//! * `async`: the [`enqueue_async`] module, enqueue on diesel-async connections
//!   (`AsyncPgConnection`, `AsyncMysqlConnection`, `SyncConnectionWrapper<SqliteConnection>`,
//!   for the backend features that are on) inside an async transaction.
//! * `testing`: the [`testing`] module, a test kit for your own tests.
//! * `cli`: the `tend` operator command line ([`cli`]).
//! * `web`: `tend web`, the dashboard and Prometheus `/metrics` ([`web`]; implies `cli`).
//! * `metrics`: `MetricsFacade`, tend's events as `metrics` crate counters and histograms.
//! * `tracing`: `TracingEvents`, a `tracing` span per attempt.
//! * `cron`: `Periodic::cron`, periodic tasks on cron expressions in a time zone (fixed
//!   intervals, [`Periodic::every`], need no feature).
//!
//! Every feature works with r2d2 pooled connections of its connection type too.
//!
//! # Layout
//!
//! The crate is layered; every import points down, and inside the crate a name is imported
//! from the module that defines it (this file's re-exports are for users).
//! `tests/architecture.rs` keeps both rules, and keeps every file under 600 lines of code.
//!
//! 1. **Leaves** (std, serde, diesel only): `util` (clock, random tokens, text cutting, panic
//!    messages), `status` ([`TaskStatus`], the one table of status values and the SQL set of
//!    claimable ones), `retry` ([`RetryPolicy`]), `expr` (alert expressions, [`Expr`]),
//!    `events` ([`Events`], [`Event`]), `schema` (diesel's `table!`), `supervise` (threads that
//!    survive a panic).
//! 2. **What a task is**: `error` ([`Error`], [`ErrorKind`], which errors are transient),
//!    `task` ([`Task`], [`TaskOptions`], [`TaskContext`], [`TaskError`]), `alert` ([`Alert`],
//!    [`Alerter`]). Import only leaves.
//! 3. **Storage**: `store` (the sealed contract [`StoreConnection`], the rows in `store::row`,
//!    the one definition of a leased row in `store::lease`, one file per backend, the shared
//!    statements, the conformance suite), `shard` ([`Shards`], [`Router`], [`Snowflake`]),
//!    `failover` ([`Failover`]). Import layers 1-2.
//! 4. **Writing tasks**: `enqueue` ([`NewTask`], the `enqueue` functions, the payload codec),
//!    `enqueue_async` (feature `async`), `registry` ([`Registry`]: signatures to handlers,
//!    alerters, application state), `complete_in`, `cancel`, `transaction`
//!    ([`transaction_with_retry`]), `periodic` ([`Periodic`], [`Missed`]: schedules and their
//!    slots). Import layers 1-3.
//! 5. **Running one task**: `exec` (the executor: runs one claimed task and decides its outcome;
//!    the alert thread). Knows neither the pool nor the outbox. Imports layers 1-4.
//! 6. **Running many**: `pool` ([`WorkerPool`], its builder, fetchers, workers, completers,
//!    membership, the periodic scheduler, [`PoolHandle`]). Imports layers 1-5.
//! 7. **Above the pool**: `outbox` ([`Outbox`]: hands tasks to a pool through its hand-off
//!    after the commit, runs sync tasks through the executor), `testing` (feature `testing`:
//!    the test kit, an executor without a pool). Import layers 1-6.
//! 8. **Operators**: `admin` (the operator queries), `cli` (the `tend` command line), `web`
//!    (the dashboard and `/metrics`), `metrics_facade`, `tracing_events`. Import layers 1-7;
//!    `cli` dispatches to `web`, which uses `cli`'s URL and text helpers.
#![warn(missing_docs)]
#![deny(unsafe_code)]

#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
compile_error!("tend needs at least one backend feature: sqlite, postgres or mysql");

#[cfg(feature = "cli")]
mod admin;
mod alert;
mod cancel;
#[cfg(feature = "cli")]
pub mod cli;
mod complete_in;
mod enqueue;
#[cfg(feature = "async")]
pub mod enqueue_async;
mod error;
mod events;
mod exec;
mod expr;
mod failover;
#[cfg(feature = "metrics")]
mod metrics_facade;
mod outbox;
mod periodic;
mod pool;
mod queue;
mod registry;
mod retry;
mod schema;
mod shard;
mod status;
mod store;
mod supervise;
mod task;
#[cfg(feature = "testing")]
pub mod testing;
mod trace;
mod transaction;
mod util;

/// The README's Rust examples, compiled and run as doctests so that they cannot rot. Some use
/// PostgreSQL's connection type and the `async` feature, so they compile with all three
/// backends and `async` on (`cargo test --all-features`, as CI runs it); a default-feature
/// `cargo test` leaves them out instead of failing on them.
#[cfg(all(
    doctest,
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "async"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Not an API: thin wrappers over internal parsers (the CLI's argument, URL, time and duration
/// parsing) for the cargo-fuzz targets in `fuzz/`, behind the `fuzzing` feature. Everything
/// else the targets drive is public (`Expr`, `tend::testing::TestWorker`, `migrate`). May change
/// or disappear in any release.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::cli::fuzz_hooks::*;
}
#[cfg(feature = "tracing")]
mod tracing_events;
#[cfg(feature = "web")]
pub mod web;

pub use crate::alert::{Alert, Alerter};
pub use crate::cancel::cancel;
pub use crate::complete_in::complete_in;
pub use crate::enqueue::{
    enqueue, enqueue_many, enqueue_new, Enqueued, NewTask, MAX_PAYLOAD_BYTES, MAX_SIGNATURE_BYTES,
};
pub use crate::error::{Error, ErrorKind};
pub use crate::events::{Event, Events, LogEvents, NoEvents, TaskInfo};
pub use crate::expr::{AlertVars, Expr, ExprError};
pub use crate::failover::Failover;
#[cfg(feature = "metrics")]
pub use crate::metrics_facade::MetricsFacade;
pub use crate::outbox::{Committed, Outbox, OutboxTx, SyncOutcome};
pub use crate::periodic::{Missed, Periodic, MAX_SCHEDULE_NAME_BYTES};
pub use crate::pool::{
    PoolHandle, ShutdownReport, WakeUp, WorkerPool, WorkerPoolBuilder, DEFAULT_WAKE_PROBE,
    MAX_SETTING_DURATION, SHUTDOWN_GRACE,
};
pub use crate::queue::{
    Queue, DEFAULT_QUEUE, MAX_ORDERING_KEY_BYTES, MAX_PRIORITY, MAX_QUEUE_BYTES, MIN_PRIORITY,
};
pub use crate::registry::Registry;
pub use crate::retry::RetryPolicy;
pub use crate::shard::{
    next_shard_key, set_shard_key_generator, ModuloRouter, Router, ShardKeyGenerator, Shards,
    Snowflake,
};
pub use crate::status::TaskStatus;
#[cfg(feature = "sqlite")]
pub use crate::store::SqliteSetup;
pub use crate::store::{check_schema, migrate, StoreConnection};
pub use crate::task::{
    ExecuteWay, Task, TaskContext, TaskError, TaskOptions, ThreadWay, TransactionWay,
    DEFAULT_ALERT_EXPRESSION,
};
pub use crate::trace::TraceParent;
#[cfg(feature = "tracing")]
pub use crate::tracing_events::TracingEvents;
pub use crate::transaction::{transaction_with_retry, TransactionRetry, TransientError};
