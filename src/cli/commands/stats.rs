//! `tend stats`: counts by status and signature, and the oldest due task.

use super::*;

pub(super) fn stats(shards: &mut [Shard], as_json: bool, io: &mut Io) -> Result<(), Fail> {
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
        // Periodic schedules are opt-in: a database migrated before `tend_schedule` has none.
        let schedules = match s.conn.schedules() {
            Ok(rows) => rows,
            Err(e) if crate::error::is_missing_schema(&e) => Vec::new(),
            Err(e) => return Err(db_err(s, e)),
        };
        let qs = s.conn.queue_stats(now).map_err(|e| db_err(s, e))?;
        let queues = qs.queues();
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
                "by_queue": queues.iter().map(|q| {
                    let mut o = serde_json::Map::new();
                    o.insert("queue".into(), json!(q.queue));
                    for k in &all {
                        o.insert(k.name().into(), json!(q.count(k.as_i32())));
                    }
                    o.insert("total".into(), json!(q.total()));
                    o.insert("due_now".into(), json!(q.due_now));
                    o.insert("blocked_keys".into(), json!(q.blocked_keys));
                    Value::Object(o)
                }).collect::<Vec<_>>(),
                "blocked_keys": qs.blocked_keys(),
                "due_now": st.due_now,
                "oldest_due": st.oldest_due.as_ref().map(|o| json!({
                    "id": o.id,
                    "signature": o.signature,
                    "execute_time": o.execute_time,
                    "lag_seconds": lag_ms.unwrap_or(0) as f64 / 1000.0,
                })),
                "schedules": schedules.iter().map(|r| json!({
                    "name": r.name,
                    "spec": r.spec,
                    "last_slot_ms": r.last_slot_ms,
                    "next_run_ms": r.next_slot_ms,
                    "next_run": fmt_time(r.next_slot_ms),
                })).collect::<Vec<_>>(),
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
        if !queues.is_empty() {
            writeln!(io.out)?;
            write!(io.out, "{}", queue_table(&queues, &all))?;
        }
        writeln!(io.out)?;
        match qs.blocked_keys() {
            0 => writeln!(io.out, "blocked keys: none")?,
            b => writeln!(
                io.out,
                "blocked keys: {b} (a dead or held task first in line; see `tend keys blocked`)"
            )?,
        }
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
        if !schedules.is_empty() {
            writeln!(io.out)?;
            write!(io.out, "{}", schedule_table(&schedules, now))?;
        }
    }
    if as_json {
        writeln!(io.out, "{}", pretty(&docs))?;
    }
    Ok(())
}

/// Counts per queue: one row each, a column per status, due rows and blocked keys.
fn queue_table(queues: &[crate::admin::keys::QueueCounts], all: &[TaskStatus]) -> String {
    let mut headers = vec![("QUEUE".to_string(), Align::Left)];
    headers.extend(all.iter().map(|k| (k.name().to_uppercase(), Align::Right)));
    for h in ["TOTAL", "DUE", "BLOCKED KEYS"] {
        headers.push((h.to_string(), Align::Right));
    }
    let headers: Vec<(&str, Align)> = headers.iter().map(|(h, a)| (h.as_str(), *a)).collect();
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let mut row = vec![q.queue.clone()];
            row.extend(all.iter().map(|k| q.count(k.as_i32()).to_string()));
            row.push(q.total().to_string());
            row.push(q.due_now.to_string());
            row.push(q.blocked_keys.to_string());
            row
        })
        .collect();
    table(&headers, &rows)
}

/// The periodic schedules and their next run, one line each.
fn schedule_table(rows: &[crate::store::row::ScheduleRow], now: i64) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let next = if r.next_slot_ms <= now {
                format!("{} (due)", fmt_time(r.next_slot_ms))
            } else {
                format!(
                    "{} (in {})",
                    fmt_time(r.next_slot_ms),
                    fmt_span(r.next_slot_ms - now)
                )
            };
            vec![
                r.name.clone(),
                r.spec.clone(),
                fmt_time(r.last_slot_ms),
                next,
            ]
        })
        .collect();
    table(
        &[
            ("SCHEDULE", Align::Left),
            ("EVERY", Align::Left),
            ("LAST SLOT", Align::Left),
            ("NEXT RUN", Align::Left),
        ],
        &rows,
    )
}
