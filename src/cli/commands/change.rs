//! The changing commands: `tasks retry`, `tasks cancel`, `tasks delete` and `purge`, in bounded
//! batches that re-check their filter.

use super::*;

pub(super) fn status_list(v: &[TaskStatus]) -> String {
    v.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
}

/// How a destructive command speaks of itself.
pub(super) struct Verb {
    command: &'static str,
    /// "retry"
    base: &'static str,
    /// "retrying"
    ing: &'static str,
    /// "retried"
    done: &'static str,
}

pub(super) fn retry(shards: &mut [Shard], a: RetryArgs, io: &mut Io) -> Result<(), Fail> {
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

pub(super) fn cancel(shards: &mut [Shard], a: ChangeArgs, io: &mut Io) -> Result<(), Fail> {
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

pub(super) fn delete(shards: &mut [Shard], a: ChangeArgs, io: &mut Io) -> Result<(), Fail> {
    let verb = Verb {
        command: "delete",
        base: "delete",
        ing: "deleting",
        done: "deleted",
    };
    apply(shards, &a.target, &Change::Delete, a.force, &verb, io)
}

pub(super) fn tasks(n: i64) -> String {
    if n == 1 {
        "1 task".to_string()
    } else {
        format!("{n} tasks")
    }
}

/// Retry, cancel or delete: one id, or every task matching a filter or `--all`.
pub(super) fn apply(
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
             --due-before, --due-after, --queue, --key) or --all; nothing was changed",
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
pub(super) fn run_batches(
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

pub(super) fn purge(shards: &mut [Shard], a: PurgeArgs, io: &mut Io) -> Result<(), Fail> {
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
