//! The task pages: the list with its filters, one task, and the confirmation pages of the
//! changes and the purge.

use super::*;

pub(super) fn db_select(ctx: &Ctx, current: usize) -> Markup {
    html! {
        @if ctx.dbs.len() > 1 {
            label { "database "
                select name="db" {
                    @for (i, (shown, _)) in ctx.dbs.iter().enumerate() {
                        option value=(i) selected[i == current] { (i) ": " (shown) }
                    }
                }
            }
        } @else {
            input type="hidden" name="db" value=(current);
        }
    }
}

pub(crate) fn list(
    ctx: &Ctx,
    db: usize,
    q: &Params,
    rows: &[TaskSummary],
    paged: bool,
    next: Option<i64>,
) -> String {
    let chosen = q.all("status");
    let known: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.name()).collect();
    let other: Vec<&str> = chosen
        .iter()
        .copied()
        .filter(|s| !known.contains(s) && *s != "unknown")
        .collect();
    // The filter without the cursor, for the pager.
    let keep: Vec<(&str, String)> = q
        .0
        .iter()
        .filter(|(k, v)| k != "after_id" && k != "done" && k != "changed" && !v.trim().is_empty())
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let next_url = next.map(|n| {
        let mut with = keep.clone();
        with.push(("after_id", n.to_string()));
        url("/tasks", &with)
    });
    let done = match (q.get("done"), q.get("changed")) {
        (Some("deleted"), _) => Some("Deleted.".to_string()),
        (_, Some(n)) => Some(format!("Changed {} tasks.", n.parse::<u64>().unwrap_or(0))),
        _ => None,
    };
    let bulk_link = |a: Action| {
        let mut with: Vec<(&str, String)> = keep
            .iter()
            .filter(|(k, _)| *k != "limit")
            .cloned()
            .collect();
        if !with.iter().any(|(k, _)| {
            matches!(
                *k,
                "status" | "signature" | "shard_key" | "error" | "queue" | "key"
            )
        }) {
            with.push(("all", "1".to_string()));
        }
        url(&format!("/bulk/{}", a.name()), &with)
    };
    let body = html! {
        h1 { "Tasks" }
        @if let Some(d) = done { p.flash { (d) } }
        form.filters method="get" action="/tasks" {
            (db_select(ctx, db))
            fieldset {
                legend { "status" }
                @for s in TaskStatus::ALL {
                    label { input type="checkbox" name="status" value=(s.name()) checked[chosen.contains(&s.name())]; " " (s.name()) }
                }
                label { input type="checkbox" name="status" value="unknown" checked[chosen.contains(&"unknown")]; " unknown" }
                label { "value " input.short type="text" name="status" value=(other.join(",")) placeholder="9"; }
            }
            label { "signature " input type="text" name="signature" value=(q.get("signature").unwrap_or("")) placeholder="exact"; }
            label { "shard key " input.short type="text" name="shard_key" value=(q.get("shard_key").unwrap_or("")); }
            label { "error contains " input type="text" name="error" value=(q.get("error").unwrap_or("")); }
            label { "queue " input.short type="text" name="queue" value=(q.get("queue").unwrap_or("")) placeholder="default"; }
            label { "ordering key " input type="text" name="key" value=(q.get("key").unwrap_or("")) placeholder="exact"; }
            label { "per page "
                select name="limit" {
                    @for n in [20, 50, 100, 500] {
                        option value=(n) selected[q.get("limit").unwrap_or("50") == n.to_string()] { (n) }
                    }
                }
            }
            button type="submit" { "Filter" }
            " "
            a href="/tasks" { "clear" }
        }
        @if rows.is_empty() {
            p { "No tasks match" @if paged { " after this point" } "." }
        } @else {
            table.grid.tasks {
                thead { tr { th { "id" } th { "status" } th { "signature" } th { "shard key" } th { "queue" } th { "priority" } th { "ordering key" } th { "attempts" } th { "due" } th { "modified" } th { "lease owner" } th { "error" } } }
                tbody {
                    @for r in rows {
                        tr id=(format!("task-{}", r.id)) {
                            td.num { a href=(url(&format!("/tasks/{}", r.id), &[("db", db.to_string())])) { (r.id) } }
                            td { (status_badge(r.task_status)) }
                            td { (r.method_sign_name) }
                            td.num { (r.shard_key) }
                            td { a href=(url("/tasks", &[("db", db.to_string()), ("queue", r.queue.clone())])) { (r.queue) } }
                            td.num { (r.priority) }
                            td {
                                @if let Some(k) = &r.ordering_key {
                                    a href=(url("/tasks", &[("db", db.to_string()), ("key", k.clone())])) title=(k) { (clip(k, 32)) }
                                }
                            }
                            td.num { (r.execute_times) "/" (r.max_attempts) }
                            td.time { (fmt_time(r.execute_time)) }
                            td.time { (fmt_time(r.gmt_modified)) }
                            td { (r.lease_owner.as_deref().unwrap_or("")) }
                            td.err title=(clip(&r.error_msg, 500)) { (clip(&r.error_msg, 80)) }
                        }
                    }
                }
            }
        }
        p.pager {
            @if paged { a href=(url("/tasks", &keep)) { "« first page" } " " }
            @if let Some(n) = next_url {
                a.next href=(n) { "next page »" }
            }
        }
        p.bulk {
            "Every matching task: "
            @for a in [Action::Retry, Action::Cancel, Action::Delete] {
                a.button.(a.name()) href=(bulk_link(a)) { (a.name()) " all…" }
                " "
            }
        }
        p.hint { "Pages follow the id (a cursor), so they stay cheap on a big table; counts are on the overview and the confirmation pages." }
    };
    layout(ctx, "Tasks", body)
}

pub(super) fn time_cell(ms: i64) -> String {
    if is_parked(ms) {
        "never (parked: no worker claims it)".to_string()
    } else if ms == crate::status::WAITING {
        "in line: due once the task before it in its ordering key is done".to_string()
    } else {
        format!("{} ({ms})", fmt_time(ms))
    }
}

pub(crate) fn detail(
    ctx: &Ctx,
    db: usize,
    r: &TaskRow,
    payload: &Result<serde_json::Value, String>,
    done: Option<&str>,
) -> String {
    let done = match done {
        Some("retried") => Some("Retried: the task is due now."),
        Some("cancelled") => Some("Cancelled: the task is dead and will not run."),
        Some("unchanged") => Some("Nothing changed: the task's status changed meanwhile."),
        Some("skipped") => Some("Skipped out of its ordering key's line: the next task of the key may run; this one stays as it was."),
        _ => None,
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "–".to_string());
    let fields: Vec<(&str, String)> = vec![
        ("task_id", r.task_id.clone()),
        ("signature", r.method_sign_name.clone()),
        ("shard key", r.shard_key.to_string()),
        ("queue", r.queue.clone()),
        ("priority", r.priority.to_string()),
        ("ordering key", opt(&r.ordering_key)),
        (
            "attempts",
            format!("{} of {}", r.execute_times, r.max_attempts),
        ),
        ("next run", time_cell(r.execute_time)),
        ("lease owner", opt(&r.lease_owner)),
        (
            "lease expires",
            r.lease_expires_at.map_or("–".to_string(), time_cell),
        ),
        ("idempotency key", opt(&r.idempotency_key)),
        ("payload type", r.parameter_types.clone()),
        ("payload version", r.payload_version.to_string()),
        ("retry interval", format!("{} s", r.execute_interval_sec)),
        ("alert expression", opt(&r.alert_expression)),
        ("alerter", opt(&r.alert_action_bean_name)),
        ("fallback", opt(&r.fallback_class_name)),
        ("fallback error", opt(&r.fallback_error_msg)),
        ("created", time_cell(r.gmt_create)),
        ("modified", time_cell(r.gmt_modified)),
        (
            "duration",
            r.duration_ms.map_or("–".to_string(), |d| format!("{d} ms")),
        ),
        ("trace parent", opt(&r.trace_parent)),
    ];
    let q = [("db", db.to_string())];
    let body = html! {
        h1 { "Task " (r.id) " " (status_badge(r.task_status)) }
        @if let Some(d) = done { p.flash { (d) } }
        div.actions {
            @for a in [Action::Retry, Action::Cancel, Action::Delete] {
                @if crate::web::handlers::eligible(a, r.task_status, a != Action::Retry) {
                    a.button.(a.name()) href=(url(&format!("/tasks/{}/{}", r.id, a.name()), &q)) { (a.name()) "…" }
                }
            }
        }
        table.fields {
            tbody {
                @for (k, v) in &fields {
                    tr { th { (k) } td { (v) } }
                }
            }
        }
        h2 { "Last error" }
        @if r.error_msg.is_empty() { p { "none" } } @else { pre.err { (r.error_msg) } }
        h2 { "Payload" }
        @match payload {
            Ok(v) => { pre.payload { (serde_json::to_string_pretty(v).unwrap_or_default()) } }
            Err(note) => { p.hint { (note) } }
        }
    };
    layout(ctx, &format!("Task {}", r.id), body)
}

pub(crate) fn confirm(ctx: &Ctx, db: usize, r: &TaskRow, action: Action, ok: bool) -> String {
    let running = r.task_status == TaskStatus::Running.as_i32();
    let what = match action {
        Action::Retry => "Make it due now. It keeps its attempt count (one more attempt is allowed if it was out of them), unless you reset it.",
        Action::Cancel => "It becomes dead and never runs; it stays visible until deleted or purged, and can be retried.",
        Action::Delete => "The row is deleted for good.",
    };
    let back = url(&format!("/tasks/{}", r.id), &[("db", db.to_string())]);
    let body = html! {
        h1 { (action.name()) " task " (r.id) "?" }
        p { (status_badge(r.task_status)) " " (r.method_sign_name) ", attempts " (r.execute_times) "/" (r.max_attempts) }
        p { (what) }
        @if !ok {
            p.error { "This task is " (status_name(r.task_status)) ": " (action.name()) " does not apply to it." }
        } @else if let Some(why) = ctx.locked {
            p.error { (why) }
        } @else if let Some(csrf) = &ctx.csrf {
            form.confirm method="post" action=(format!("/tasks/{}/{}", r.id, action.name())) {
                input type="hidden" name="db" value=(db);
                input type="hidden" name="csrf" value=(csrf);
                @if action == Action::Retry {
                    label { input type="checkbox" name="reset_attempts" value="1"; " reset the attempt count to 0" }
                }
                @if running && action != Action::Retry {
                    label { input type="checkbox" name="force" value="1"; " also if running (the worker's attempt may still finish its side effects; its result is discarded)" }
                }
                button.danger type="submit" id="confirm" { "Yes, " (action.name()) " task " (r.id) }
                " "
                a href=(back) { "No, go back" }
            }
        } @else {
            p { a href=(url("/login", &[("next", ctx.here.clone())])) { "Log in" } " to " (action.name()) " tasks." }
        }
    };
    layout(ctx, &format!("{} task {}", action.name(), r.id), body)
}

pub(crate) fn bulk(ctx: &Ctx, action: Action, filter: &[(String, String)], n: i64) -> String {
    let what = match action {
        Action::Retry => "They become due now, keeping their attempt counts (one more attempt where they were out of them).",
        Action::Cancel => "They become dead and never run; they stay visible until deleted or purged.",
        Action::Delete => "The rows are deleted for good.",
    };
    let shown: Vec<String> = filter
        .iter()
        .filter(|(k, _)| k != "db")
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    let back: Vec<(&str, String)> = filter
        .iter()
        .filter(|(k, _)| k != "all" && k != "force")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let body = html! {
        h1 { (action.name()) " " (n) " task" @if n != 1 { "s" } "?" }
        p { "Matching: " (shown.join(", ")) " (only the statuses " (action.name()) " applies to)." }
        p { (what) " Rows are changed 1000 per statement, each re-checking the filter." }
        @if n == 0 {
            p { "Nothing to do." }
        } @else if let Some(why) = ctx.locked {
            p.error { (why) }
        } @else if let Some(csrf) = &ctx.csrf {
            form.confirm method="post" action=(format!("/bulk/{}", action.name())) {
                @for (k, v) in filter { input type="hidden" name=(k) value=(v); }
                input type="hidden" name="csrf" value=(csrf);
                button.danger type="submit" id="confirm" { "Yes, " (action.name()) " " (n) " tasks" }
                " "
                a href=(url("/tasks", &back)) { "No, go back" }
            }
        } @else {
            p { a href=(url("/login", &[("next", ctx.here.clone())])) { "Log in" } " to " (action.name()) " tasks." }
        }
    };
    layout(ctx, &format!("{} tasks", action.name()), body)
}

pub(crate) fn purge(ctx: &Ctx, db: usize, q: &Params, count: Option<(i64, i64)>) -> String {
    let chosen = q.all("status");
    let older = q.get("older_than").unwrap_or("");
    let sig = q.get("signature").unwrap_or("");
    let body = html! {
        h1 { "Purge" }
        @if let Some(n) = q.get("purged") { p.flash { "Purged " (n.parse::<i64>().unwrap_or(0)) " tasks." } }
        p { "Delete dead and kept completed tasks last modified longer ago than an age, in batches of 1000 rows." }
        form.filters method="get" action="/purge" {
            (db_select(ctx, db))
            label { "older than " input.short type="text" name="older_than" value=(older) placeholder="7d" required; }
            label { input type="checkbox" name="status" value="dead" checked[chosen.contains(&"dead")]; " dead" }
            label { input type="checkbox" name="status" value="succeeded" checked[chosen.contains(&"succeeded")]; " succeeded" }
            label { "signature " input type="text" name="signature" value=(sig); }
            button type="submit" { "Count" }
        }
        @if let Some((n, cutoff)) = count {
            p.count { (n) " task" @if n != 1 { "s" } " would be purged (last modified before " (fmt_time(cutoff)) ")." }
            @if n > 0 {
                @if let Some(why) = ctx.locked {
                    p.error { (why) }
                } @else if let Some(csrf) = &ctx.csrf {
                    form.confirm method="post" action="/purge" {
                        input type="hidden" name="db" value=(db);
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="older_than" value=(older);
                        input type="hidden" name="signature" value=(sig);
                        @for s in &chosen { input type="hidden" name="status" value=(s); }
                        button.danger type="submit" id="confirm" { "Yes, purge them" }
                    }
                } @else {
                    p { a href=(url("/login", &[("next", ctx.here.clone())])) { "Log in" } " to purge." }
                }
            }
        }
    };
    layout(ctx, "Purge", body)
}
