//! The pages and actions behind each route: overview, tasks, detail, the confirmed changes,
//! purge and `/metrics`.

use super::*;
use crate::admin::keys::Skip;

pub(super) fn overview(state: &State, conns: &mut Conns, ctx: &Ctx) -> Result<Resp, HttpError> {
    let now = now_ms();
    let since = (now / 60_000 - 59) * 60_000;
    let mut shards = Vec::new();
    for (i, d) in state.dbs.iter().enumerate() {
        let data = conns
            .run(state, i, |c| {
                // Periodic schedules are opt-in: a database migrated before them has none.
                let schedules = match c.schedules() {
                    Err(e) if crate::error::is_missing_schema(&e) => Vec::new(),
                    other => other?,
                };
                let keyed = pages::Keyed {
                    queues: c.queue_stats(now)?,
                    blocked: c.blocked_keys(pages::BLOCKED_SHOWN + 1)?,
                };
                Ok((c.summary(now)?, c.activity(since)?, schedules, keyed))
            })
            .map_err(|e| e.msg);
        shards.push(pages::ShardView {
            index: i,
            shown: d.shown.clone(),
            data,
        });
    }
    let recent = state.metrics.as_ref().map(MetricsEvents::recent);
    Ok(Resp::html(200, pages::overview(ctx, now, &shards, recent)))
}

/// The list's filter from the query string.
pub(super) fn filter_of(p: &http::Params) -> Result<Filter, HttpError> {
    let mut f = Filter::default();
    for s in p.all("status") {
        match parse_status(s).map_err(HttpError::bad)? {
            StatusArg::Known(k) => f.statuses.push(k),
            StatusArg::Unknown => f.unknown = Unknown::All,
            StatusArg::Value(v) => match &mut f.unknown {
                Unknown::Values(vs) => vs.push(v),
                u @ Unknown::No => *u = Unknown::Values(vec![v]),
                Unknown::All => {}
            },
        }
    }
    f.signature = p.get("signature").map(str::to_string);
    f.shard_key = p.num("shard_key")?;
    f.error_contains = p.get("error").map(str::to_string);
    f.queue = p.get("queue").map(str::to_string);
    f.ordering_key = p.get("key").map(str::to_string);
    Ok(f)
}

pub(super) fn list(
    state: &State,
    conns: &mut Conns,
    req: &Req,
    ctx: &Ctx,
) -> Result<Resp, HttpError> {
    let q = &req.query;
    let i = db_of(state, q)?;
    let f = filter_of(q)?;
    let limit = q.num::<i64>("limit")?.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(HttpError::bad("`limit` must be 1 to 500"));
    }
    let after = q.num::<i64>("after_id")?;
    let rows = conns.run(state, i, |c| {
        c.list(&f, Page::AfterId(after.unwrap_or(i64::MIN)), limit)
    })?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Resp::html(
        200,
        pages::list(ctx, i, q, &rows, after.is_some(), next),
    ))
}

pub(super) fn find(
    state: &State,
    conns: &mut Conns,
    i: usize,
    id: i64,
) -> Result<crate::store::row::TaskRow, HttpError> {
    conns
        .run(state, i, |c| c.find(id))?
        .ok_or_else(|| HttpError::new(404, format!("no task with id {id} in database {i}")))
}

pub(super) fn detail(
    state: &State,
    conns: &mut Conns,
    req: &Req,
    ctx: &Ctx,
    id: i64,
) -> Result<Resp, HttpError> {
    let i = db_of(state, &req.query)?;
    let row = find(state, conns, i, id)?;
    let payload = state.registry.describe_row(&row);
    let done = req.query.get("done");
    Ok(Resp::html(200, pages::detail(ctx, i, &row, &payload, done)))
}

/// Whether `action` applies to a row in `status` (with `force` for running ones), as in the
/// CLI: unknown statuses may be changed when an operator names the row.
pub(crate) fn eligible(action: Action, status: i32, force: bool) -> bool {
    TaskStatus::from_i32(status).is_none_or(|s| action.change(0).eligible(force).contains(&s))
}

pub(super) fn confirm(
    state: &State,
    conns: &mut Conns,
    req: &Req,
    ctx: &Ctx,
    id: i64,
    action: Action,
) -> Result<Resp, HttpError> {
    let i = db_of(state, &req.query)?;
    let row = find(state, conns, i, id)?;
    let running = row.task_status == TaskStatus::Running.as_i32();
    let ok = eligible(action, row.task_status, running && action != Action::Retry);
    Ok(Resp::html(200, pages::confirm(ctx, i, &row, action, ok)))
}

pub(super) fn change(
    state: &State,
    conns: &mut Conns,
    req: &Req,
    id: i64,
    action: Action,
) -> Result<Resp, HttpError> {
    let i = db_of(state, &req.form)?;
    let force = req.form.flag("force");
    let row = find(state, conns, i, id)?;
    if !eligible(action, row.task_status, force) {
        let status = crate::cli::text::status_name(row.task_status);
        let hint = if status == "running" && action != Action::Retry {
            " (confirm with “also if running” to force it)"
        } else {
            ""
        };
        return Err(HttpError::new(
            409,
            format!(
                "task {id} is {status}: {} does not apply{hint}; nothing was changed",
                action.name()
            ),
        ));
    }
    let mut change = action.change(now_ms());
    if let Change::Retry { reset_attempts, .. } = &mut change {
        *reset_attempts = req.form.flag("reset_attempts");
    }
    let f = Filter {
        id: Some(id),
        statuses: change.eligible(force),
        unknown: match TaskStatus::from_i32(row.task_status) {
            Some(_) => Unknown::No,
            None => Unknown::Values(vec![row.task_status]),
        },
        ..Filter::default()
    };
    let n = conns.run(state, i, |c| c.apply(&change, &f, BATCH, &mut |_| {}))?;
    let word = match (action, n) {
        (_, 0) => "unchanged",
        (Action::Retry, _) => "retried",
        (Action::Cancel, _) => "cancelled",
        (Action::Delete, _) => "deleted",
    };
    Ok(Resp::see_other(&if action == Action::Delete && n > 0 {
        format!("/tasks?db={i}&done={word}")
    } else {
        format!("/tasks/{id}?db={i}&done={word}")
    }))
}

/// The rows a bulk action applies to: the list's filter narrowed to the statuses the action
/// may touch, as `tend tasks retry|cancel|delete` with filters (a filter or `all` required;
/// a named status the action does not apply to is refused).
pub(super) fn bulk_filter(p: &http::Params, action: Action) -> Result<(Filter, bool), HttpError> {
    let f = filter_of(p)?;
    let force = p.flag("force");
    let named = f.names_statuses()
        || f.signature.is_some()
        || f.shard_key.is_some()
        || f.error_contains.is_some()
        || f.queue.is_some()
        || f.ordering_key.is_some();
    if !named && !p.flag("all") {
        return Err(HttpError::bad(format!(
            "{} every task needs a filter (status, signature, shard key, error text, queue or \
             key) or all=1",
            action.name()
        )));
    }
    let eligible = action.change(0).eligible(force);
    let refused: Vec<&str> = f
        .statuses
        .iter()
        .filter(|s| !eligible.contains(s))
        .map(|s| s.name())
        .collect();
    if !refused.is_empty() {
        let names: Vec<&str> = action
            .change(0)
            .eligible(false)
            .iter()
            .map(|s| s.name())
            .collect();
        return Err(HttpError::new(
            409,
            format!(
                "{} applies to {} tasks{}, not {}; nothing was changed",
                action.name(),
                names.join(", "),
                if action == Action::Retry {
                    ""
                } else {
                    " (and running ones when forced)"
                },
                refused.join(", ")
            ),
        ));
    }
    Ok((f.restricted_to(&eligible), force))
}

/// The list's filter parameters (for links and hidden fields).
pub(super) fn filter_params(p: &http::Params) -> Vec<(String, String)> {
    p.0.iter()
        .filter(|(k, v)| {
            matches!(
                k.as_str(),
                "db" | "status"
                    | "signature"
                    | "shard_key"
                    | "error"
                    | "queue"
                    | "key"
                    | "all"
                    | "force"
            ) && !v.trim().is_empty()
        })
        .cloned()
        .collect()
}

pub(super) fn bulk_page(
    state: &State,
    conns: &mut Conns,
    req: &Req,
    ctx: &Ctx,
    action: Action,
) -> Result<Resp, HttpError> {
    let q = &req.query;
    let i = db_of(state, q)?;
    let (f, _) = bulk_filter(q, action)?;
    let n = conns.run(state, i, |c| c.count(&f))?;
    Ok(Resp::html(
        200,
        pages::bulk(ctx, action, &filter_params(q), n),
    ))
}

pub(super) fn bulk(
    state: &State,
    conns: &mut Conns,
    req: &Req,
    action: Action,
) -> Result<Resp, HttpError> {
    let p = &req.form;
    let i = db_of(state, p)?;
    let (f, _) = bulk_filter(p, action)?;
    let change = action.change(now_ms());
    let n = conns.run(state, i, |c| c.apply(&change, &f, BATCH, &mut |_| {}))?;
    let mut back: Vec<(String, String)> = filter_params(p)
        .into_iter()
        .filter(|(k, _)| k != "all" && k != "force")
        .collect();
    back.push(("changed".to_string(), n.to_string()));
    Ok(Resp::see_other(&pages::url(
        "/tasks",
        &back
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect::<Vec<_>>(),
    )))
}

/// The purge filter from a query or form, or `None` while no age is given.
pub(super) fn purge_filter(p: &http::Params) -> Result<Option<(Filter, i64)>, HttpError> {
    let Some(older) = p.get("older_than") else {
        return Ok(None);
    };
    let older_than = parse_duration(older).map_err(HttpError::bad)?;
    let mut statuses = Vec::new();
    for s in p.all("status") {
        statuses.push(match s {
            "dead" => TaskStatus::Dead,
            "succeeded" => TaskStatus::Succeeded,
            _ => {
                return Err(HttpError::bad(
                    "purge deletes only dead and succeeded tasks",
                ))
            }
        });
    }
    if statuses.is_empty() {
        statuses = vec![TaskStatus::Succeeded, TaskStatus::Dead];
    }
    let cutoff = now_ms().saturating_sub(older_than);
    Ok(Some((
        Filter {
            statuses,
            signature: p.get("signature").map(str::to_string),
            modified_before: Some(cutoff),
            ..Filter::default()
        },
        cutoff,
    )))
}

/// The ordering key a skip is about (`key`, required).
fn key_of(p: &http::Params) -> Result<String, HttpError> {
    p.get("key")
        .map(str::to_string)
        .ok_or_else(|| HttpError::bad("`key` (the ordering key) is required"))
}

/// The confirmation page of `tend keys skip KEY`.
pub(super) fn key_skip_page(
    state: &State,
    conns: &mut Conns,
    req: &Req,
    ctx: &Ctx,
) -> Result<Resp, HttpError> {
    let i = db_of(state, &req.query)?;
    let key = key_of(&req.query)?;
    let head = conns.run(state, i, |c| c.key_head(&key))?;
    Ok(Resp::html(
        200,
        pages::skip_confirm(ctx, i, &key, head.as_ref()),
    ))
}

/// `tend keys skip KEY`: the key's first task, when dead or held, leaves the key's line.
pub(super) fn key_skip(state: &State, conns: &mut Conns, req: &Req) -> Result<Resp, HttpError> {
    let i = db_of(state, &req.form)?;
    let key = key_of(&req.form)?;
    let now = now_ms();
    let note = format!(
        "skipped out of the line of key {key} by an operator at {} (tend web)",
        fmt_time(now)
    );
    match conns.run(state, i, |c| c.skip_key(&key, &note, now))? {
        Skip::Skipped(h) => Ok(Resp::see_other(&format!(
            "/tasks/{}?db={i}&done=skipped",
            h.id
        ))),
        Skip::NotBlocked(h) => Err(HttpError::new(
            409,
            format!(
                "key `{key}` is not blocked: its first task {} is {}; skip only takes a dead or \
                 held first task out of the line; nothing was changed",
                h.id,
                crate::cli::text::status_name(h.task_status)
            ),
        )),
        Skip::NoTasks => Err(HttpError::new(
            404,
            format!("no task with ordering key `{key}` in database {i}; nothing was changed"),
        )),
    }
}

pub(super) fn purge_page(
    state: &State,
    conns: &mut Conns,
    req: &Req,
    ctx: &Ctx,
) -> Result<Resp, HttpError> {
    let q = &req.query;
    let i = db_of(state, q)?;
    let count = match purge_filter(q)? {
        Some((f, cutoff)) => Some((conns.run(state, i, |c| c.count(&f))?, cutoff)),
        None => None,
    };
    Ok(Resp::html(200, pages::purge(ctx, i, q, count)))
}

pub(super) fn purge(state: &State, conns: &mut Conns, req: &Req) -> Result<Resp, HttpError> {
    let i = db_of(state, &req.form)?;
    let (f, _) = purge_filter(&req.form)?
        .ok_or_else(|| HttpError::bad("`older_than` is required (e.g. 7d)"))?;
    let n = conns.run(state, i, |c| {
        c.apply(&Change::Delete, &f, BATCH, &mut |_| {})
    })?;
    Ok(Resp::see_other(&format!("/purge?db={i}&purged={n}")))
}

pub(super) fn metrics_text(state: &State, conns: &mut Conns) -> String {
    use std::fmt::Write as _;
    let now = now_ms();
    let mut out = String::new();
    let mut tasks = String::new();
    let mut oldest = String::new();
    let mut due = String::new();
    let mut up = String::new();
    let mut info = String::new();
    for (i, d) in state.dbs.iter().enumerate() {
        let _ = writeln!(
            info,
            "tend_shard_info{{shard=\"{i}\",database=\"{}\"}} 1",
            metrics::label(&d.shown)
        );
        match conns.run(state, i, |c| c.summary(now)) {
            Ok(st) => {
                let _ = writeln!(up, "tend_up{{shard=\"{i}\"}} 1");
                for (sig, status, n) in &st.by_signature {
                    let _ = writeln!(
                        tasks,
                        "tend_tasks{{shard=\"{i}\",signature=\"{}\",status=\"{}\"}} {n}",
                        metrics::label(sig),
                        metrics::label(&crate::cli::text::status_name(*status)),
                    );
                }
                let age = st
                    .oldest_due
                    .map_or(0.0, |o| now.saturating_sub(o.execute_time) as f64 / 1000.0);
                let _ = writeln!(oldest, "tend_oldest_due_age_seconds{{shard=\"{i}\"}} {age}");
                let _ = writeln!(due, "tend_due_tasks{{shard=\"{i}\"}} {}", st.due_now);
            }
            Err(e) => {
                log::warn!("tend web: /metrics: {}", e.msg);
                let _ = writeln!(up, "tend_up{{shard=\"{i}\"}} 0");
            }
        }
    }
    let mut family = |name: &str, kind: &str, help: &str, body: &str| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{body}");
    };
    family(
        "tend_shard_info",
        "gauge",
        "The databases (shards) shown, by index, passwords masked.",
        &info,
    );
    family(
        "tend_up",
        "gauge",
        "1 when the database answered this scrape.",
        &up,
    );
    family(
        "tend_tasks",
        "gauge",
        "Rows in consistency_task by shard, signature and status.",
        &tasks,
    );
    family(
        "tend_oldest_due_age_seconds",
        "gauge",
        "How long the oldest claimable task has been due (0: none due).",
        &oldest,
    );
    family(
        "tend_due_tasks",
        "gauge",
        "Tasks a worker may claim now.",
        &due,
    );
    if let Some(m) = &state.metrics {
        out.push_str(&m.render());
    }
    out
}
