//! The reading commands: `tasks list` and `tasks show`.

use super::*;

/// `execute_time` for JSON: `null` for parked rows.
pub(super) fn time_json(ms: i64) -> Value {
    if is_parked(ms) {
        Value::Null
    } else {
        json!(ms)
    }
}

pub(super) fn summary_json(r: &TaskSummary) -> Value {
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
        "queue": r.queue,
        "priority": r.priority,
        "ordering_key": r.ordering_key,
    })
}

pub(super) fn list(shards: &mut [Shard], a: ListArgs, io: &mut Io) -> Result<(), Fail> {
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
                        r.queue.clone(),
                        r.priority.to_string(),
                        r.ordering_key
                            .as_deref()
                            .map_or("-".to_string(), |k| clip(k, 24)),
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
                ("QUEUE", Align::Left),
                ("PRI", Align::Right),
                ("KEY", Align::Left),
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

pub(super) fn pretty(v: &[Value]) -> String {
    serde_json::to_string_pretty(v).expect("JSON values always serialize")
}

pub(super) fn row_json(r: &TaskRow, payload: &Result<Value, String>) -> Value {
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
        "trace_parent": r.trace_parent,
        "queue": r.queue,
        "priority": r.priority,
        "ordering_key": r.ordering_key,
    })
}

pub(super) fn row_text(r: &TaskRow, payload: &Result<Value, String>) -> String {
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
        ("trace_parent", opt(&r.trace_parent)),
        ("queue", r.queue.clone()),
        ("priority", r.priority.to_string()),
        ("ordering_key", opt(&r.ordering_key)),
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

pub(super) fn show(
    shards: &mut [Shard],
    a: ShowArgs,
    registry: &Registry,
    io: &mut Io,
) -> Result<(), Fail> {
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
        let payload = registry.describe_row(row);
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
