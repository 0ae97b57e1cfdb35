//! `tend keys blocked` and `tend keys skip`: ordering keys whose first task is dead or held,
//! and taking that task out of the key's line.

use super::*;

fn head_json(h: &KeyHead) -> Value {
    json!({
        "key": h.ordering_key,
        "task": h.id,
        "status": status_name(h.task_status),
        "task_status": h.task_status,
        "queue": h.queue,
        "signature": h.method_sign_name,
        "error_msg": h.error_msg,
        "gmt_modified": h.gmt_modified,
        "waiting": h.waiting,
    })
}

pub(super) fn blocked(shards: &mut [Shard], a: BlockedArgs, io: &mut Io) -> Result<(), Fail> {
    let n = shards.len();
    let mut docs = Vec::new();
    for (i, s) in shards.iter_mut().enumerate() {
        // One more than asked, to say whether more follow.
        let mut rows = s
            .conn
            .blocked_keys(a.limit.saturating_add(1))
            .map_err(|e| db_err(s, e))?;
        let more = rows.len() as i64 > a.limit;
        rows.truncate(a.limit as usize);
        if a.json.json {
            docs.push(json!({
                "database": s.db.shown,
                "backend": s.conn.backend(),
                "blocked_keys": rows.iter().map(head_json).collect::<Vec<_>>(),
                "more": more,
            }));
            continue;
        }
        header(io, n, i, s)?;
        if rows.is_empty() {
            writeln!(io.out, "no blocked keys")?;
            continue;
        }
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|h| {
                vec![
                    clip(&h.ordering_key, 40),
                    h.id.to_string(),
                    status_name(h.task_status),
                    h.queue.clone(),
                    h.method_sign_name.clone(),
                    h.waiting.to_string(),
                    fmt_time(h.gmt_modified),
                    clip(&h.error_msg, 60),
                ]
            })
            .collect();
        let headers = [
            ("KEY", Align::Left),
            ("TASK", Align::Right),
            ("STATUS", Align::Left),
            ("QUEUE", Align::Left),
            ("SIGNATURE", Align::Left),
            ("WAITING", Align::Right),
            ("SINCE", Align::Left),
            ("ERROR", Align::Left),
        ];
        write!(io.out, "{}", table(&headers, &cells))?;
        if more {
            writeln!(
                io.err,
                "{}: more blocked keys follow; raise --limit to see them",
                s.db.shown
            )?;
        }
        writeln!(
            io.err,
            "hint: `tend tasks retry TASK` runs a blocking task again; `tend keys skip KEY` \
             takes it out of the line and lets the next task of the key run"
        )?;
    }
    if a.json.json {
        writeln!(io.out, "{}", pretty(&docs))?;
    }
    Ok(())
}

fn waits(n: i64) -> String {
    match n {
        1 => "1 task waits behind it".to_string(),
        n => format!("{n} tasks wait behind it"),
    }
}

/// What the key's first task is, for a refusal.
fn not_blocked(key: &str, h: &KeyHead) -> String {
    format!(
        "key `{key}` is not blocked: its first task {} is {}; `tend keys skip` only takes a \
         dead or held first task out of the line",
        h.id,
        status_name(h.task_status)
    )
}

pub(super) fn skip(shards: &mut [Shard], a: SkipArgs, io: &mut Io) -> Result<(), Fail> {
    let key = a.key.as_str();
    // Every shard is read first: a key whose first task is not blocked anywhere is refused
    // before anything changes.
    let mut heads = Vec::with_capacity(shards.len());
    for s in shards.iter_mut() {
        heads.push(s.conn.key_head(key).map_err(|e| db_err(s, e))?);
    }
    if !heads.iter().flatten().any(KeyHead::blocks) {
        let why = match heads.iter().flatten().next() {
            Some(h) => not_blocked(key, h),
            None => format!(
                "no task with ordering key `{key}` in {} (succeeded ones aside)",
                names(shards)
            ),
        };
        return Err(Fail::error(format!("{why}; nothing was changed")));
    }
    let n = shards.len();
    for (i, s) in shards.iter_mut().enumerate() {
        header(io, n, i, s)?;
        let h = match &heads[i] {
            None => {
                writeln!(io.out, "no task with ordering key `{key}`")?;
                continue;
            }
            Some(h) if !h.blocks() => {
                writeln!(io.out, "{}; nothing was changed", not_blocked(key, h))?;
                continue;
            }
            Some(h) => h,
        };
        if a.dry_run {
            writeln!(
                io.out,
                "would skip task {} ({}) out of the line of key `{key}`; {}",
                h.id,
                status_name(h.task_status),
                waits(h.waiting)
            )?;
            writeln!(io.out, "dry run: nothing was changed")?;
            continue;
        }
        let now = now_ms();
        let note = format!(
            "skipped out of the line of key {key} by an operator at {} (tend keys skip)",
            fmt_time(now)
        );
        match s.conn.skip_key(key, &note, now).map_err(|e| db_err(s, e))? {
            Skip::Skipped(h) => {
                let status = status_name(h.task_status);
                writeln!(
                    io.out,
                    "skipped task {} ({status}) out of the line of key `{key}`; {}",
                    h.id,
                    match h.waiting {
                        0 => "no task of the key waits behind it".to_string(),
                        w => format!("the next of the {w} waiting behind it may run now"),
                    }
                )?;
                writeln!(
                    io.out,
                    "task {} stays {status}, without an ordering key (its error says why)",
                    h.id
                )?;
            }
            Skip::NotBlocked(h) => {
                return Err(Fail::error(format!(
                    "{}: {} (it changed meanwhile); nothing was changed",
                    s.db.shown,
                    not_blocked(key, &h)
                )))
            }
            Skip::NoTasks => {
                return Err(Fail::error(format!(
                    "{}: no task with ordering key `{key}` any more (it changed meanwhile); \
                     nothing was changed",
                    s.db.shown
                )))
            }
        }
    }
    Ok(())
}
