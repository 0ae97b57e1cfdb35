//! What each command does, over every database (shard) given.
//!
//! Every database is opened and checked before any command runs, so a typo in the third
//! `--database-url` stops a retry before it touched the first shard.

use std::io::{self, IsTerminal, Write};

use serde_json::{json, Value};

use super::db::{self, Database};
use super::text::{clip, fmt_span, fmt_time, status_name, table, Align, StatusArg};
use super::{ChangeArgs, Cli, Command, FilterArgs, ListArgs, PurgeArgs, PurgeStatus, ShowArgs};
use super::{RetryArgs, TargetArgs, TasksCommand};
use crate::admin::{is_parked, Admin, Change, Filter, Page, TaskSummary, Unknown};
use crate::registry::Registry;
use crate::status::TaskStatus;
use crate::store::{now_ms, TaskRow};

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
        ..Filter::default()
    }
}

/// `execute_time` for JSON: `null` for parked rows.
fn time_json(ms: i64) -> Value {
    if is_parked(ms) {
        Value::Null
    } else {
        json!(ms)
    }
}

fn summary_json(r: &TaskSummary) -> Value {
    json!({
        "id": r.id,
        "task_id": r.task_id,
        "status": status_name(r.task_status),
        "task_status": r.task_status,
        "signature": r.method_sign_name,
        "shard_key": r.shard_key,
        "execute_times": r.execute_times,
        "max_attempts": r.max_attempts,
        "execute_time": time_json(r.execute_time),
        "lease_owner": r.lease_owner,
        "error_msg": r.error_msg,
        "gmt_create": r.gmt_create,
        "gmt_modified": r.gmt_modified,
    })
}

fn list(shards: &mut [Shard], a: ListArgs, io: &mut Io) -> Result<(), Fail> {
    let f = filter_of(&a.filter);
    let page = match (a.after_id, a.offset) {
        (Some(id), _) => Page::AfterId(id),
        (None, Some(n)) => Page::Offset(n),
        (None, None) => Page::AfterId(i64::MIN),
    };
    let n = shards.len();
    let mut docs = Vec::new();
    for (i, s) in shards.iter_mut().enumerate() {
        let rows = s.conn.list(&f, page, a.limit).map_err(|e| db_err(s, e))?;
        let next = if rows.len() as i64 == a.limit {
            rows.last().map(|r| r.id)
        } else {
            None
        };
        if a.json.json {
            docs.push(json!({
                "database": s.db.shown,
                "backend": s.conn.backend(),
                "tasks": rows.iter().map(summary_json).collect::<Vec<_>>(),
                "next_after_id": next,
            }));
            continue;
        }
        header(io, n, i, s)?;
        if rows.is_empty() {
            writeln!(io.out, "no tasks match")?;
        } else {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        status_name(r.task_status),
                        r.method_sign_name.clone(),
                        r.shard_key.to_string(),
                        format!("{}/{}", r.execute_times, r.max_attempts),
                        fmt_time(r.execute_time),
                        fmt_time(r.gmt_modified),
                        clip(&r.error_msg, 60),
                    ]
                })
                .collect();
            let headers = [
                ("ID", Align::Right),
                ("STATUS", Align::Left),
                ("SIGNATURE", Align::Left),
                ("SHARD", Align::Right),
                ("ATTEMPTS", Align::Right),
                ("DUE", Align::Left),
                ("MODIFIED", Align::Left),
                ("ERROR", Align::Left),
            ];
            write!(io.out, "{}", table(&headers, &cells))?;
        }
        if let Some(id) = next {
            writeln!(
                io.err,
                "{}: more tasks may follow; next page: --after-id {id}",
                s.db.shown
            )?;
        }
    }
    if a.json.json {
        writeln!(io.out, "{}", pretty(&docs))?;
    }
    Ok(())
}

fn pretty(v: &[Value]) -> String {
    serde_json::to_string_pretty(v).expect("JSON values always serialize")
}

/// The payload as JSON, or why it cannot be shown.
pub(crate) fn decode_payload(registry: &Registry, r: &TaskRow) -> Result<Value, String> {
    let len = r.task_parameter.len();
    let sig = &r.method_sign_name;
    let Some(handler) = registry.get(sig) else {
        return Err(format!(
            "<{len} bytes, signature {sig}, not decodable by this binary>"
        ));
    };
    handler.describe(&r.task_parameter).map_err(|e| {
        format!(
            "<{len} bytes, signature {sig}, does not decode as {} (stored payload_version {}, \
             this binary's is {}): {e}>",
            handler.type_name(),
            r.payload_version,
            handler.version()
        )
    })
}

fn row_json(r: &TaskRow, payload: &Result<Value, String>) -> Value {
    json!({
        "id": r.id,
        "task_id": r.task_id,
        "idempotency_key": r.idempotency_key,
        "status": status_name(r.task_status),
        "task_status": r.task_status,
        "execute_times": r.execute_times,
        "max_attempts": r.max_attempts,
        "execute_time": time_json(r.execute_time),
        "parameter_types": r.parameter_types,
        "method_name": r.method_name,
        "method_sign_name": r.method_sign_name,
        "execute_interval_sec": r.execute_interval_sec,
        "delay_time": r.delay_time,
        "task_parameter": {
            "bytes": r.task_parameter.len(),
            "decoded": payload.as_ref().ok(),
            "note": payload.as_ref().err(),
        },
        "payload_version": r.payload_version,
        "execute_way": r.execute_way,
        "thread_way": r.thread_way,
        "transaction_way": r.transaction_way,
        "error_msg": r.error_msg,
        "alert_expression": r.alert_expression,
        "alert_action_bean_name": r.alert_action_bean_name,
        "fallback_class_name": r.fallback_class_name,
        "fallback_error_msg": r.fallback_error_msg,
        "shard_key": r.shard_key,
        "lease_token": r.lease_token,
        "lease_owner": r.lease_owner,
        "lease_expires_at": r.lease_expires_at,
        "gmt_create": r.gmt_create,
        "gmt_modified": r.gmt_modified,
        "duration_ms": r.duration_ms,
    })
}

fn row_text(r: &TaskRow, payload: &Result<Value, String>) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "null".to_string());
    let opt_num = |v: Option<i64>| v.map_or_else(|| "null".to_string(), |n| n.to_string());
    let time = |ms: i64| {
        if is_parked(ms) {
            "never (parked: no worker claims it)".to_string()
        } else {
            format!("{ms} ({})", fmt_time(ms))
        }
    };
    let code = |v: i32, one: &str, two: &str| match v {
        1 => format!("1 ({one})"),
        2 => format!("2 ({two})"),
        _ => v.to_string(),
    };
    let payload_line = match payload {
        Ok(_) => format!("{} bytes, decoded below", r.task_parameter.len()),
        Err(note) => note.clone(),
    };
    let fields: Vec<(&str, String)> = vec![
        ("id", r.id.to_string()),
        ("task_id", r.task_id.clone()),
        ("idempotency_key", opt(&r.idempotency_key)),
        (
            "task_status",
            format!("{} ({})", r.task_status, status_name(r.task_status)),
        ),
        ("execute_times", r.execute_times.to_string()),
        ("max_attempts", r.max_attempts.to_string()),
        ("execute_time", time(r.execute_time)),
        ("parameter_types", r.parameter_types.clone()),
        ("method_name", r.method_name.clone()),
        ("method_sign_name", r.method_sign_name.clone()),
        ("execute_interval_sec", r.execute_interval_sec.to_string()),
        ("delay_time", r.delay_time.to_string()),
        ("task_parameter", payload_line),
        ("payload_version", r.payload_version.to_string()),
        ("execute_way", code(r.execute_way, "right now", "schedule")),
        ("thread_way", code(r.thread_way, "async", "sync")),
        (
            "transaction_way",
            code(r.transaction_way, "with transaction", "without transaction"),
        ),
        ("error_msg", r.error_msg.clone()),
        ("alert_expression", opt(&r.alert_expression)),
        ("alert_action_bean_name", opt(&r.alert_action_bean_name)),
        ("fallback_class_name", opt(&r.fallback_class_name)),
        ("fallback_error_msg", opt(&r.fallback_error_msg)),
        ("shard_key", r.shard_key.to_string()),
        ("lease_token", opt_num(r.lease_token)),
        ("lease_owner", opt(&r.lease_owner)),
        (
            "lease_expires_at",
            r.lease_expires_at.map_or_else(|| "null".to_string(), time),
        ),
        ("gmt_create", time(r.gmt_create)),
        ("gmt_modified", time(r.gmt_modified)),
        ("duration_ms", opt_num(r.duration_ms)),
    ];
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (k, v) in fields {
        // Continuation lines of multi-line values (error messages) stay in the value column.
        let v = v.replace('\n', &format!("\n{:width$}  ", ""));
        s.push_str(&format!("{k:width$}  {v}\n"));
    }
    if let Ok(value) = payload {
        s.push_str("payload:\n");
        s.push_str(&serde_json::to_string_pretty(value).expect("JSON values always serialize"));
        s.push('\n');
    }
    s
}

fn show(shards: &mut [Shard], a: ShowArgs, registry: &Registry, io: &mut Io) -> Result<(), Fail> {
    let mut found = Vec::new();
    for (i, s) in shards.iter_mut().enumerate() {
        if let Some(row) = s.conn.find(a.id).map_err(|e| db_err(s, e))? {
            found.push((i, row));
        }
    }
    if found.is_empty() {
        return Err(Fail::error(format!(
            "no task with id {} in {}",
            a.id,
            names(shards)
        )));
    }
    let mut docs = Vec::new();
    let n = shards.len();
    for (k, (i, row)) in found.iter().enumerate() {
        let payload = decode_payload(registry, row);
        let s = &shards[*i];
        if a.json.json {
            docs.push(json!({
                "database": s.db.shown,
                "backend": s.conn.backend(),
                "task": row_json(row, &payload),
            }));
        } else {
            header(io, n, k, s)?;
            write!(io.out, "{}", row_text(row, &payload))?;
        }
    }
    if a.json.json {
        writeln!(io.out, "{}", pretty(&docs))?;
    }
    Ok(())
}

fn names(shards: &[Shard]) -> String {
    shards
        .iter()
        .map(|s| s.db.shown.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn status_list(v: &[TaskStatus]) -> String {
    v.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
}

/// How a destructive command speaks of itself.
struct Verb {
    command: &'static str,
    /// "retry"
    base: &'static str,
    /// "retrying"
    ing: &'static str,
    /// "retried"
    done: &'static str,
}

fn retry(shards: &mut [Shard], a: RetryArgs, io: &mut Io) -> Result<(), Fail> {
    let change = Change::Retry {
        reset_attempts: a.reset_attempts,
        now: now_ms(),
    };
    let verb = Verb {
        command: "retry",
        base: "retry",
        ing: "retrying",
        done: "retried",
    };
    apply(shards, &a.target, &change, false, &verb, io)
}

fn cancel(shards: &mut [Shard], a: ChangeArgs, io: &mut Io) -> Result<(), Fail> {
    let now = now_ms();
    let change = Change::Cancel {
        now,
        message: format!(
            "cancelled by an operator at {} (tend tasks cancel)",
            fmt_time(now)
        ),
    };
    let verb = Verb {
        command: "cancel",
        base: "cancel",
        ing: "cancelling",
        done: "cancelled",
    };
    apply(shards, &a.target, &change, a.force, &verb, io)
}

fn delete(shards: &mut [Shard], a: ChangeArgs, io: &mut Io) -> Result<(), Fail> {
    let verb = Verb {
        command: "delete",
        base: "delete",
        ing: "deleting",
        done: "deleted",
    };
    apply(shards, &a.target, &Change::Delete, a.force, &verb, io)
}

fn tasks(n: i64) -> String {
    if n == 1 {
        "1 task".to_string()
    } else {
        format!("{n} tasks")
    }
}

/// Retry, cancel or delete: one id, or every task matching a filter or `--all`.
fn apply(
    shards: &mut [Shard],
    t: &TargetArgs,
    change: &Change,
    force: bool,
    verb: &Verb,
    io: &mut Io,
) -> Result<(), Fail> {
    if t.id.is_none() && t.filter.is_empty() && !t.all {
        return Err(Fail::usage(format!(
            "`tend tasks {}` needs a task ID, a filter (--status, --signature, --shard-key, \
             --due-before, --due-after) or --all; nothing was changed",
            verb.command
        )));
    }
    let eligible = change.eligible(force);
    let applies_to = format!(
        "`tend tasks {}` applies to {} tasks{}",
        verb.command,
        status_list(&change.eligible(false)),
        if matches!(change, Change::Retry { .. }) {
            ""
        } else {
            " (and running ones with --force)"
        }
    );
    // Unknown statuses may be changed when named (by id or --status): an operator decides.
    let refused: Vec<TaskStatus> = filter_of(&t.filter)
        .statuses
        .into_iter()
        .filter(|s| !eligible.contains(s))
        .collect();
    if !refused.is_empty() {
        return Err(Fail::usage(format!(
            "{applies_to}, not {}; nothing was changed",
            status_list(&refused)
        )));
    }

    // The shards to work on, with the filter for each.
    let mut work: Vec<(usize, Filter)> = Vec::new();
    if let Some(id) = t.id {
        let mut holders = Vec::new();
        for (i, s) in shards.iter_mut().enumerate() {
            if let Some(row) = s.conn.find(id).map_err(|e| db_err(s, e))? {
                holders.push((i, row.task_status));
            }
        }
        let (i, status) = match holders.as_slice() {
            [] => {
                return Err(Fail::error(format!(
                    "no task with id {id} in {}; nothing was changed",
                    names(shards)
                )))
            }
            [one] => *one,
            many => {
                let where_: Vec<&str> = many
                    .iter()
                    .map(|(i, _)| shards[*i].db.shown.as_str())
                    .collect();
                return Err(Fail::error(format!(
                    "task id {id} exists in {} databases ({}); ids are per database, so pass \
                     only the --database-url of the one you mean; nothing was changed",
                    many.len(),
                    where_.join(", ")
                )));
            }
        };
        let ok = TaskStatus::from_i32(status).is_none_or(|s| eligible.contains(&s));
        if !ok {
            let msg = if status == TaskStatus::Running.as_i32()
                && !matches!(change, Change::Retry { .. })
            {
                format!(
                    "task {id} is running; pass --force to {} it anyway (the worker's attempt \
                     may still finish its side effects, but its result is discarded); nothing \
                     was changed",
                    verb.base
                )
            } else {
                format!(
                    "task {id} is {}, and {applies_to}; nothing was changed",
                    status_name(status)
                )
            };
            return Err(Fail::error(msg));
        }
        let f = Filter {
            id: Some(id),
            statuses: eligible.clone(),
            unknown: match TaskStatus::from_i32(status) {
                Some(_) => Unknown::No,
                None => Unknown::Values(vec![status]),
            },
            ..Filter::default()
        };
        work.push((i, f));
    } else {
        let f = filter_of(&t.filter).restricted_to(&eligible);
        work.extend((0..shards.len()).map(|i| (i, f.clone())));
    }

    let n = shards.len();
    for (k, (i, f)) in work.into_iter().enumerate() {
        let s = &mut shards[i];
        let count = s.conn.count(&f).map_err(|e| db_err(s, e))?;
        let ids = if count <= FEW {
            let ids = s.conn.ids(&f, FEW).map_err(|e| db_err(s, e))?;
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            format!(": {}", ids.join(", "))
        } else {
            String::new()
        };
        // Running tasks a filter matched but that were left out for want of --force.
        let skipped_running = if t.id.is_none()
            && !filter_of(&t.filter).names_statuses()
            && !eligible.contains(&TaskStatus::Running)
            && !matches!(change, Change::Retry { .. })
        {
            let running = Filter {
                statuses: vec![TaskStatus::Running],
                ..filter_of(&t.filter)
            };
            s.conn.count(&running).map_err(|e| db_err(s, e))?
        } else {
            0
        };
        header(io, n, k, s)?;
        if skipped_running > 0 {
            writeln!(
                io.out,
                "leaving {} alone: running (pass --force to {} running tasks too)",
                tasks(skipped_running),
                verb.base
            )?;
        }
        if count == 0 {
            writeln!(io.out, "no tasks to {}", verb.base)?;
            continue;
        }
        if t.dry_run {
            writeln!(io.out, "would {} {}{ids}", verb.base, tasks(count))?;
            writeln!(io.out, "dry run: nothing was changed")?;
            continue;
        }
        writeln!(io.out, "{} {}{ids}", verb.ing, tasks(count))?;
        let done = run_batches(s, change, &f, BATCH, count, verb.done, io)?;
        writeln!(io.out, "{} {}", verb.done, tasks(done as i64))?;
    }
    Ok(())
}

/// Applies a change in batches, with a progress line on stderr when there is more than one.
fn run_batches(
    s: &mut Shard,
    change: &Change,
    f: &Filter,
    batch: i64,
    expected: i64,
    done_word: &str,
    io: &mut Io,
) -> Result<usize, Fail> {
    let mut total = 0usize;
    let live = io.live;
    let shown = s.db.shown.clone();
    let err = &mut *io.err;
    let show_progress = expected > batch;
    let result = s.conn.apply(change, f, batch, &mut |n| {
        total += n;
        if show_progress {
            let line = format!("{shown}: {done_word} {total} of ~{expected}");
            // Progress is best effort: a closed stderr must not stop the change.
            let _ = if live {
                write!(err, "\r{line}").and_then(|()| err.flush())
            } else {
                writeln!(err, "{line}")
            };
        }
    });
    if show_progress && live {
        let _ = writeln!(err);
    }
    result.map_err(|e| {
        Fail::error(format!(
            "{shown}: database error after {done_word} {total} tasks: {e}"
        ))
    })
}

fn purge(shards: &mut [Shard], a: PurgeArgs, io: &mut Io) -> Result<(), Fail> {
    let statuses: Vec<TaskStatus> = if a.status.is_empty() {
        vec![TaskStatus::Succeeded, TaskStatus::Dead]
    } else {
        a.status
            .iter()
            .map(|s| match s {
                PurgeStatus::Dead => TaskStatus::Dead,
                PurgeStatus::Succeeded => TaskStatus::Succeeded,
            })
            .collect()
    };
    let cutoff = now_ms().saturating_sub(a.older_than);
    let f = Filter {
        statuses: statuses.clone(),
        signature: a.signature.clone(),
        modified_before: Some(cutoff),
        ..Filter::default()
    };
    let what = format!(
        "{} tasks last modified before {} ({} ago)",
        status_list(&statuses).replace(", ", " or "),
        fmt_time(cutoff),
        fmt_span(a.older_than)
    );
    let n = shards.len();
    for (i, s) in shards.iter_mut().enumerate() {
        header(io, n, i, s)?;
        let count = s.conn.count(&f).map_err(|e| db_err(s, e))?;
        if count == 0 {
            writeln!(io.out, "nothing to purge: no {what}")?;
            continue;
        }
        let ids = if count <= FEW {
            let ids = s.conn.ids(&f, FEW).map_err(|e| db_err(s, e))?;
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            format!(": {}", ids.join(", "))
        } else {
            String::new()
        };
        if a.dry_run {
            writeln!(io.out, "would purge {} ({what}){ids}", tasks(count))?;
            writeln!(io.out, "dry run: nothing was changed")?;
            continue;
        }
        writeln!(io.out, "purging {} ({what}){ids}", tasks(count))?;
        let done = run_batches(s, &Change::Delete, &f, a.batch, count, "purged", io)?;
        let batches = (done as i64 + a.batch - 1) / a.batch;
        writeln!(
            io.out,
            "purged {} in {} batch{} of at most {}",
            tasks(done as i64),
            batches,
            if batches == 1 { "" } else { "es" },
            a.batch
        )?;
    }
    Ok(())
}

fn stats(shards: &mut [Shard], as_json: bool, io: &mut Io) -> Result<(), Fail> {
    let all: Vec<TaskStatus> = (0..6).filter_map(TaskStatus::from_i32).collect();
    let n = shards.len();
    let mut docs = Vec::new();
    for (i, s) in shards.iter_mut().enumerate() {
        let now = now_ms();
        let st = s.conn.stats(now).map_err(|e| db_err(s, e))?;
        let total: i64 = st.by_status.iter().map(|(_, c)| c).sum();
        // Every known status, zeros included, then any value this version does not know.
        let mut by_status: Vec<(String, i64)> = all
            .iter()
            .map(|k| {
                let c = st
                    .by_status
                    .iter()
                    .find(|(v, _)| *v == k.as_i32())
                    .map_or(0, |x| x.1);
                (k.name().to_string(), c)
            })
            .collect();
        by_status.extend(
            st.by_status
                .iter()
                .filter(|(v, _)| TaskStatus::from_i32(*v).is_none())
                .map(|(v, c)| (status_name(*v), *c)),
        );
        let mut sigs: Vec<(String, Vec<(i32, i64)>)> = Vec::new();
        for (sig, status, c) in &st.by_signature {
            match sigs.last_mut() {
                Some((last, v)) if last == sig => v.push((*status, *c)),
                _ => sigs.push((sig.clone(), vec![(*status, *c)])),
            }
        }
        let count_of = |v: &[(i32, i64)], k: TaskStatus| {
            v.iter()
                .filter(|(s, _)| *s == k.as_i32())
                .map(|x| x.1)
                .sum::<i64>()
        };
        let lag_ms = st
            .oldest_due
            .as_ref()
            .map(|o| now.saturating_sub(o.execute_time));
        if as_json {
            let mut status_obj = serde_json::Map::new();
            for (k, c) in &by_status {
                status_obj.insert(k.clone(), json!(c));
            }
            let sig_docs: Vec<Value> = sigs
                .iter()
                .map(|(sig, v)| {
                    let mut o = serde_json::Map::new();
                    o.insert("signature".into(), json!(sig));
                    for k in &all {
                        o.insert(k.name().into(), json!(count_of(v, *k)));
                    }
                    o.insert("total".into(), json!(v.iter().map(|x| x.1).sum::<i64>()));
                    Value::Object(o)
                })
                .collect();
            docs.push(json!({
                "database": s.db.shown,
                "backend": s.conn.backend(),
                "total": total,
                "by_status": status_obj,
                "by_signature": sig_docs,
                "due_now": st.due_now,
                "oldest_due": st.oldest_due.as_ref().map(|o| json!({
                    "id": o.id,
                    "signature": o.signature,
                    "execute_time": o.execute_time,
                    "lag_seconds": lag_ms.unwrap_or(0) as f64 / 1000.0,
                })),
            }));
            continue;
        }
        header(io, n, i, s)?;
        let mut rows: Vec<Vec<String>> = by_status
            .iter()
            .map(|(k, c)| vec![k.clone(), c.to_string()])
            .collect();
        rows.push(vec!["total".into(), total.to_string()]);
        write!(
            io.out,
            "{}",
            table(&[("STATUS", Align::Left), ("TASKS", Align::Right)], &rows)
        )?;
        writeln!(io.out)?;
        if sigs.is_empty() {
            writeln!(io.out, "no tasks")?;
        } else {
            let mut headers = vec![("SIGNATURE".to_string(), Align::Left)];
            headers.extend(all.iter().map(|k| (k.name().to_uppercase(), Align::Right)));
            headers.push(("TOTAL".to_string(), Align::Right));
            let headers: Vec<(&str, Align)> =
                headers.iter().map(|(h, a)| (h.as_str(), *a)).collect();
            let rows: Vec<Vec<String>> = sigs
                .iter()
                .map(|(sig, v)| {
                    let mut row = vec![sig.clone()];
                    row.extend(all.iter().map(|k| count_of(v, *k).to_string()));
                    row.push(v.iter().map(|x| x.1).sum::<i64>().to_string());
                    row
                })
                .collect();
            write!(io.out, "{}", table(&headers, &rows))?;
        }
        writeln!(io.out)?;
        match (&st.oldest_due, lag_ms) {
            (Some(o), Some(lag)) => writeln!(
                io.out,
                "due now: {}; oldest: task {} ({}), due since {}, lag {}",
                tasks(st.due_now),
                o.id,
                o.signature,
                fmt_time(o.execute_time),
                fmt_span(lag)
            )?,
            _ => writeln!(io.out, "due now: none (no lag)")?,
        }
    }
    if as_json {
        writeln!(io.out, "{}", pretty(&docs))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_naturally() {
        assert_eq!(tasks(1), "1 task");
        assert_eq!(tasks(0), "0 tasks");
    }
}
