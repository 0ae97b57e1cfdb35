//! The `tend` operator CLI: inspect, retry, cancel, delete and purge tasks, and see how far
//! behind the workers are, on PostgreSQL, MySQL/MariaDB and SQLite, over one or several shards.
//!
//! The `tend` binary (feature `cli`) is this module with an empty [`Registry`]: it shows a
//! payload's size and signature but cannot decode it, since bincode payloads are not
//! self-describing. Build the same CLI into your own binary with your registry, and
//! `tend tasks show ID` prints payloads as JSON:
//!
//! ```no_run
//! # use serde::{Deserialize, Serialize};
//! # use tend::{Task, TaskContext, TaskError};
//! # #[derive(Serialize, Deserialize)] struct Ship { order_id: i64 }
//! # impl Task for Ship {
//! #     const SIGNATURE: &'static str = "orders.ship";
//! #     fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
//! # }
//! // src/bin/tend-admin.rs of your service
//! fn main() -> std::process::ExitCode {
//!     let mut registry = tend::Registry::new();
//!     registry.register::<Ship>().expect("valid task type");
//!     tend::cli::run(registry)
//! }
//! ```
//!
//! Exit codes: 0 on success, 1 when a command fails (unknown id, unreachable or unmigrated
//! database, a refused change), 2 for a usage error (bad flag, bad filter value, a
//! destructive command without a target).

pub(crate) mod commands;
pub(crate) mod db;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz_hooks;
pub(crate) mod text;

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::registry::Registry;

/// Runs the CLI on the process's arguments and returns its exit code, for `main`.
///
/// The registry decides which payloads `tasks show` can decode; pass `Registry::new()` for
/// none. Reads `DATABASE_URL` when no `--database-url` is given.
pub fn run(registry: Registry) -> ExitCode {
    run_from(std::env::args_os(), registry)
}

/// Runs the CLI on `args` (the first one is the program name, as in `std::env::args_os`),
/// writing to stdout and stderr, and returns its exit code.
///
/// ```
/// let code = tend::cli::run_from(["tend", "--version"], tend::Registry::new());
/// assert_eq!(code, std::process::ExitCode::SUCCESS);
/// ```
pub fn run_from<I, T>(args: I, registry: Registry) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut err = io::stderr();
    let result = commands::dispatch(cli, &registry, &mut out, &mut err);
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.msg.is_empty() {
                let _ = writeln!(err, "error: {}", f.msg);
            }
            ExitCode::from(f.code)
        }
    }
}

/// Operate tend's durable task queue: look at tasks, retry, cancel or delete them, purge old
/// ones, and see how far behind the workers are.
///
/// Works on PostgreSQL, MySQL/MariaDB and SQLite; pass several --database-url to work on
/// several shards (each is reported separately). Times are shown in UTC; "never" is a task no
/// worker will claim (dead, held, or kept after success).
#[derive(Debug, Parser)]
#[command(name = "tend", version, max_term_width = 100)]
pub(crate) struct Cli {
    /// Database to work on; repeat for several shards [default: $DATABASE_URL].
    /// postgres://… or postgresql://… is PostgreSQL, mysql://… or mariadb://… is
    /// MySQL/MariaDB, sqlite://PATH or any other value is a SQLite file. Passwords are shown
    /// as ***.
    #[arg(long = "database-url", value_name = "URL", global = true)]
    database_url: Vec<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update tend's table `consistency_task` (idempotent).
    ///
    /// Runs tend's embedded migrations, recorded in `__diesel_schema_migrations`. A SQLite
    /// file that does not exist is created.
    Migrate,
    /// List, show, retry, cancel or delete tasks.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Delete dead and kept completed tasks older than a duration, in small batches.
    ///
    /// "Older" is by last modification (gmt_modified): when the task died or completed. Each
    /// batch is one short statement over at most --batch rows, so workers are never blocked
    /// for long; progress goes to stderr.
    Purge(PurgeArgs),
    /// Task counts by status, signature and queue, blocked ordering keys, and the oldest due
    /// task with its lag.
    ///
    /// The lag is how long the oldest task that a worker could claim has been due: it grows
    /// when workers are down or cannot keep up.
    Stats(JsonArg),
    /// Ordering keys: list the blocked ones, take a blocking task out of its key's line.
    ///
    /// Tasks with the same ordering key run one at a time, in enqueue order. A key is blocked
    /// when its first task (lowest id, succeeded ones aside) is dead or held: no later task of
    /// the key runs until an operator retries, deletes or skips that task.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Serve the web dashboard and Prometheus `/metrics` (feature `web`).
    ///
    /// Binds 127.0.0.1:8080 unless --listen says otherwise. Read-only unless a token is given
    /// (--token or $TEND_WEB_TOKEN): retry, cancel, delete and purge then need it.
    #[cfg(feature = "web")]
    Web(crate::web::WebArgs),
}

#[derive(Debug, Subcommand)]
enum TasksCommand {
    /// List tasks matching filters, by id (a page at a time).
    List(ListArgs),
    /// Show every column of one task, with its payload decoded when this binary knows the type.
    Show(ShowArgs),
    /// Make failed, dead and held tasks due now.
    ///
    /// By default a task keeps its attempt count (and gets one more attempt if it was out of
    /// them); --reset-attempts starts it over from 0 with its full max_attempts.
    Retry(RetryArgs),
    /// Cancel pending, failed and held tasks: they become dead and are never run.
    ///
    /// Cancelled tasks stay visible (error "cancelled by an operator …") until deleted or
    /// purged, and can be retried. Running tasks only with --force: the worker's attempt may
    /// still finish its side effects, but its result is discarded.
    Cancel(ChangeArgs),
    /// Delete tasks for good.
    ///
    /// Running tasks only with --force: the worker's attempt may still finish its side
    /// effects, but its result is discarded.
    Delete(ChangeArgs),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List the blocked keys: each key's blocking task, its status and error, and how many
    /// tasks wait behind it.
    Blocked(BlockedArgs),
    /// Take a blocked key's first task out of the line, so the next task of the key can run.
    ///
    /// Only when that task is dead or held. Its ordering key is set to NULL and a note is
    /// appended to its error; it stays dead or held and visible (retry, cancel or delete it as
    /// any other task). Refused when the key is not blocked.
    Skip(SkipArgs),
}

#[derive(Debug, Args)]
struct BlockedArgs {
    /// At most this many keys per database (oldest blocking task first).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    limit: i64,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Debug, Args)]
struct SkipArgs {
    /// The ordering key (exact match).
    key: String,
    /// Say what would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Row filters shared by list, retry, cancel and delete.
#[derive(Debug, Clone, Args)]
struct FilterArgs {
    /// Only tasks in these statuses (repeat or comma-separate): pending, running, failed,
    /// succeeded, dead, held; `unknown` for any value this build does not know (a newer tend
    /// wrote it), or a stored integer such as 9 (a negative one as `--status=-1`).
    #[arg(
        long,
        value_name = "STATUS",
        value_delimiter = ',',
        value_parser = text::parse_status,
        allow_negative_numbers = true
    )]
    status: Vec<text::StatusArg>,
    /// Only tasks with this signature (exact match).
    #[arg(long, value_name = "SIGNATURE")]
    signature: Option<String>,
    /// Only tasks with this shard key.
    #[arg(long, value_name = "KEY", allow_negative_numbers = true)]
    shard_key: Option<i64>,
    /// Only tasks due at or before this time: epoch ms or RFC 3339 (2026-11-27T14:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = text::parse_time)]
    due_before: Option<i64>,
    /// Only tasks due at or after this time (never-due tasks excluded).
    #[arg(long, value_name = "TIME", value_parser = text::parse_time)]
    due_after: Option<i64>,
    /// Only tasks in this queue.
    #[arg(long, value_name = "NAME")]
    queue: Option<String>,
    /// Only tasks with this ordering key (exact match).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
}

impl FilterArgs {
    fn is_empty(&self) -> bool {
        self.status.is_empty()
            && self.signature.is_none()
            && self.shard_key.is_none()
            && self.due_before.is_none()
            && self.due_after.is_none()
            && self.queue.is_none()
            && self.key.is_none()
    }
}

#[derive(Debug, Args)]
struct JsonArg {
    /// Print JSON (one object per database) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// At most this many tasks per database.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    limit: i64,
    /// Start after this id (the cursor printed below a full page).
    #[arg(
        long,
        value_name = "ID",
        conflicts_with = "offset",
        allow_negative_numbers = true
    )]
    after_id: Option<i64>,
    /// Skip this many matching tasks.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    offset: Option<i64>,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// The task's id (column `id`).
    id: i64,
    #[command(flatten)]
    json: JsonArg,
}

/// What a destructive command applies to: one id, every task matching filters, or --all.
#[derive(Debug, Args)]
struct TargetArgs {
    /// One task, by id.
    #[arg(conflicts_with_all = ["status", "signature", "shard_key", "due_before", "due_after", "queue", "key", "all"])]
    id: Option<i64>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Every task the command applies to (required when there is no id and no filter).
    #[arg(long)]
    all: bool,
    /// Say what would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct RetryArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Set the attempt count back to 0, so the task gets its full max_attempts again.
    #[arg(long)]
    reset_attempts: bool,
}

#[derive(Debug, Args)]
struct ChangeArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Include running tasks (their worker's result is then discarded).
    #[arg(long)]
    force: bool,
}

/// Which finished tasks `purge` deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PurgeStatus {
    /// Out of attempts, given up or cancelled.
    Dead,
    /// Kept after success (only when the pool keeps completed tasks).
    Succeeded,
}

#[derive(Debug, Args)]
struct PurgeArgs {
    /// Only tasks last modified longer ago than this: 30s, 15m, 12h, 7d, 2w (units ms s m h d w).
    #[arg(long, value_name = "DURATION", value_parser = text::parse_duration)]
    older_than: i64,
    /// Only tasks in these statuses [default: both].
    #[arg(long, value_enum, value_delimiter = ',')]
    status: Vec<PurgeStatus>,
    /// Only tasks with this signature.
    #[arg(long, value_name = "SIGNATURE")]
    signature: Option<String>,
    /// Rows deleted per statement.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    batch: i64,
    /// Count what would be deleted, and delete nothing.
    #[arg(long)]
    dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_help() {
        fn walk(cmd: &clap::Command, path: &str) {
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" {
                    assert!(sub.get_about().is_some(), "`{name}` has no help text");
                }
                walk(sub, &name);
            }
        }
        walk(&Cli::command(), "tend");
    }
}
