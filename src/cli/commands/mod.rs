//! What each command does, over every database (shard) given.
//!
//! Every database is opened and checked before any command runs, so a typo in the third
//! `--database-url` stops a retry before it touched the first shard.

use std::io::{self, IsTerminal, Write};

use serde_json::{json, Value};

use super::db::{self, Database};
use super::text::{clip, fmt_span, fmt_time, status_name, table, Align, StatusArg};
use super::{BlockedArgs, ChangeArgs, Cli, Command, FilterArgs, KeysCommand, ListArgs};
use super::{PurgeArgs, PurgeStatus, RetryArgs, ShowArgs, SkipArgs, TargetArgs, TasksCommand};
use crate::admin::keys::{KeyHead, Skip};
use crate::admin::{is_parked, Admin, Change, Filter, Page, TaskSummary, Unknown};
use crate::registry::Registry;
use crate::status::TaskStatus;
use crate::store::row::TaskRow;
use crate::util::now_ms;

/// Ids listed in full when a change touches at most this many tasks.
const FEW: i64 = 20;
/// Rows per statement for retry, cancel and delete.
const BATCH: i64 = 1000;

/// Why a command failed, and its exit code (1: failed, 2: usage).
#[derive(Debug)]
pub(crate) struct Fail {
    pub code: u8,
    pub msg: String,
}

impl Fail {
    fn error(msg: impl Into<String>) -> Fail {
        Fail {
            code: 1,
            msg: msg.into(),
        }
    }
    fn usage(msg: impl Into<String>) -> Fail {
        Fail {
            code: 2,
            msg: msg.into(),
        }
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        if e.kind() == io::ErrorKind::BrokenPipe {
            // `tend tasks list | head`: the reader has what it wanted.
            return Fail::error("");
        }
        Fail::error(format!("cannot write the output: {e}"))
    }
}

/// One open database.
struct Shard {
    db: Database,
    conn: Box<dyn Admin>,
}

/// Where output goes: results to `out`, progress and hints to `err`.
struct Io<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    /// Whether stderr is a terminal, where progress rewrites one line.
    live: bool,
}

/// Runs a parsed command. Every error message is scrubbed of the passwords in the URLs given.
pub(crate) fn dispatch(
    cli: Cli,
    registry: &Registry,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Fail> {
    let urls =
        if cli.database_url.is_empty() {
            match std::env::var("DATABASE_URL") {
                Ok(u) if !u.trim().is_empty() => vec![u],
                _ => return Err(Fail::usage(
                    "no database given: pass --database-url URL (repeat it for several shards) \
                     or set DATABASE_URL",
                )),
            }
        } else {
            cli.database_url.clone()
        };
    let secrets: Vec<String> = urls.iter().flat_map(|u| db::mask(u).1).collect();
    let mut io = Io {
        out,
        err,
        live: io::stderr().is_terminal(),
    };
    execute(cli.command, &urls, registry, &mut io).map_err(|f| Fail {
        code: f.code,
        msg: db::scrub(&f.msg, &secrets),
    })
}

fn execute(
    command: Command,
    urls: &[String],
    registry: &Registry,
    io: &mut Io,
) -> Result<(), Fail> {
    let dbs = urls
        .iter()
        .map(|u| Database::parse(u).map_err(Fail::error))
        .collect::<Result<Vec<_>, _>>()?;
    if let Command::Migrate = command {
        return migrate(&dbs, io);
    }
    #[cfg(feature = "web")]
    if let Command::Web(args) = command {
        return crate::web::run_cli(args, urls, registry.clone(), io.err).map_err(Fail::error);
    }
    let mut shards = Vec::with_capacity(dbs.len());
    for db in dbs {
        let mut conn = db.connect(false).map_err(Fail::error)?;
        conn.check_schema().map_err(|e| {
            let hint = if e.is_not_migrated() {
                format!("\nhint: run `tend migrate --database-url {}`", db.shown)
            } else {
                String::new()
            };
            Fail::error(format!("{}: {e}{hint}", db.shown))
        })?;
        shards.push(Shard { db, conn });
    }
    match command {
        Command::Migrate => unreachable!("handled above"),
        #[cfg(feature = "web")]
        Command::Web(_) => unreachable!("handled above"),
        Command::Tasks(TasksCommand::List(a)) => list(&mut shards, a, io),
        Command::Tasks(TasksCommand::Show(a)) => show(&mut shards, a, registry, io),
        Command::Tasks(TasksCommand::Retry(a)) => retry(&mut shards, a, io),
        Command::Tasks(TasksCommand::Cancel(a)) => cancel(&mut shards, a, io),
        Command::Tasks(TasksCommand::Delete(a)) => delete(&mut shards, a, io),
        Command::Purge(a) => purge(&mut shards, a, io),
        Command::Stats(a) => stats(&mut shards, a.json, io),
        Command::Keys(KeysCommand::Blocked(a)) => blocked(&mut shards, a, io),
        Command::Keys(KeysCommand::Skip(a)) => skip(&mut shards, a, io),
    }
}

fn migrate(dbs: &[Database], io: &mut Io) -> Result<(), Fail> {
    for db in dbs {
        let mut conn = db.connect(true).map_err(Fail::error)?;
        conn.migrate()
            .map_err(|e| Fail::error(format!("{}: {e}", db.shown)))?;
        writeln!(io.out, "migrated {} ({})", db.shown, conn.backend())?;
    }
    Ok(())
}

/// A database error on one shard.
fn db_err(s: &Shard, e: diesel::result::Error) -> Fail {
    Fail::error(format!("{}: database error: {e}", s.db.shown))
}

/// Separates shards' sections when there are several.
fn header(io: &mut Io, shards: usize, i: usize, shard: &Shard) -> io::Result<()> {
    if shards > 1 {
        if i > 0 {
            writeln!(io.out)?;
        }
        writeln!(
            io.out,
            "== {} ({}) ==",
            shard.db.shown,
            shard.conn.backend()
        )?;
    }
    Ok(())
}

fn filter_of(f: &FilterArgs) -> Filter {
    let mut statuses = Vec::new();
    let mut unknown = Unknown::No;
    for s in &f.status {
        match (*s, &mut unknown) {
            (StatusArg::Known(k), _) => statuses.push(k),
            (StatusArg::Unknown, u) => *u = Unknown::All,
            (StatusArg::Value(v), Unknown::Values(vs)) => vs.push(v),
            (StatusArg::Value(v), u @ Unknown::No) => *u = Unknown::Values(vec![v]),
            (StatusArg::Value(_), Unknown::All) => {}
        }
    }
    Filter {
        statuses,
        unknown,
        signature: f.signature.clone(),
        shard_key: f.shard_key,
        due_before: f.due_before,
        due_after: f.due_after,
        queue: f.queue.clone(),
        ordering_key: f.key.clone(),
        ..Filter::default()
    }
}

fn names(shards: &[Shard]) -> String {
    shards
        .iter()
        .map(|s| s.db.shown.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

mod change;
mod keys;
mod read;
mod stats;

use change::*;
use keys::*;
use read::*;
use stats::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_naturally() {
        assert_eq!(tasks(1), "1 task");
        assert_eq!(tasks(0), "0 tasks");
    }
}
