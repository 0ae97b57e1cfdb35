//! The pages, rendered on the server with maud, which HTML-escapes every value it
//! interpolates: task rows are shown exactly as stored, never interpreted.

use maud::{html, Markup, DOCTYPE};

use super::http::{Params, Req};
use super::query::Activity;
use super::{Action, State};
use crate::admin::{is_parked, Stats, TaskSummary};
use crate::cli::text::{clip, fmt_span, fmt_time, status_name};
use crate::status::TaskStatus;
use crate::store::row::TaskRow;

/// What every page needs to know about the viewer and the server.
pub(crate) struct Ctx {
    /// Why changes are refused, if they are.
    locked: Option<&'static str>,
    /// The session's CSRF value, when logged in.
    csrf: Option<String>,
    /// (shown URL, backend) per database.
    dbs: Vec<(String, &'static str)>,
    /// The path and query of this page (for "log in and come back").
    here: String,
}

impl Ctx {
    pub fn of(state: &State, req: &Req) -> Ctx {
        let mut c = Ctx::anonymous(state);
        c.csrf = req.session.as_deref().and_then(|s| state.sessions.csrf(s));
        let q = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(req.query.0.iter())
            .finish();
        c.here = if q.is_empty() {
            req.path.clone()
        } else {
            format!("{}?{q}", req.path)
        };
        c
    }
    pub fn anonymous(state: &State) -> Ctx {
        Ctx {
            locked: state.locked(),
            csrf: None,
            dbs: state
                .dbs
                .iter()
                .map(|d| {
                    let backend = match d.backend {
                        crate::cli::db::Backend::Postgres => "PostgreSQL",
                        crate::cli::db::Backend::Mysql => "MySQL/MariaDB",
                        crate::cli::db::Backend::Sqlite => "SQLite",
                    };
                    (d.shown.clone(), backend)
                })
                .collect(),
            here: "/".to_string(),
        }
    }
}

/// A URL with a query string, every value percent-encoded.
pub(crate) fn url(path: &str, pairs: &[(&str, String)]) -> String {
    let q = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{q}")
    }
}

fn layout(ctx: &Ctx, title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · tend" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header {
                    nav {
                        a.brand href="/" { "tend" }
                        a href="/" { "Overview" }
                        a href="/tasks" { "Tasks" }
                        a href="/purge" { "Purge" }
                        a href="/metrics" { "Metrics" }
                    }
                    div.who {
                        @if let Some(why) = ctx.locked {
                            span.badge.locked title=(why) { "read-only" }
                        } @else if let Some(csrf) = &ctx.csrf {
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button.link type="submit" { "Log out" }
                            }
                        } @else {
                            a href=(url("/login", &[("next", ctx.here.clone())])) { "Log in to make changes" }
                        }
                    }
                }
                @if let Some(why) = ctx.locked {
                    p.banner { (why) }
                }
                main { (body) }
                footer {
                    @for (i, (shown, backend)) in ctx.dbs.iter().enumerate() {
                        span { "database " (i) ": " (shown) " (" (backend) ")" }
                    }
                }
            }
        }
    }
    .into_string()
}

pub(crate) fn error_page(ctx: &Ctx, status: u16, msg: &str) -> String {
    let title = match status {
        400 => "Bad request",
        401 => "Not logged in",
        403 => "Forbidden",
        404 => "Not found",
        405 => "Method not allowed",
        409 => "Not applicable",
        413 => "Request too large",
        414 => "Request target too long",
        421 => "Unknown host",
        503 => "Database unavailable",
        _ => "Error",
    };
    layout(
        ctx,
        title,
        html! {
            h1 { (status) " " (title) }
            p.error { (msg) }
            p { a href="/" { "Back to the overview" } }
        },
    )
}

pub(crate) fn login(ctx: &Ctx, next: String, failed: Option<&str>) -> String {
    layout(
        ctx,
        "Log in",
        html! {
            h1 { "Log in" }
            @if let Some(why) = ctx.locked {
                p { (why) "." }
            } @else {
                @if let Some(f) = failed { p.error { (f) } }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    label { "Token " input type="password" name="token" autocomplete="current-password" autofocus; }
                    " "
                    button type="submit" { "Log in" }
                }
                p.hint { "The token given to tend web with --token or TEND_WEB_TOKEN." }
            }
        },
    )
}

/// One database on the overview: its counts and recent activity, or why it has none.
pub(crate) struct ShardView {
    pub index: usize,
    pub shown: String,
    pub data: Result<(Stats, Activity), String>,
}

fn status_class(v: i32) -> &'static str {
    match TaskStatus::from_i32(v) {
        Some(TaskStatus::Pending) => "st-pending",
        Some(TaskStatus::Running) => "st-running",
        Some(TaskStatus::Failed) => "st-failed",
        Some(TaskStatus::Succeeded) => "st-succeeded",
        Some(TaskStatus::Dead) => "st-dead",
        Some(TaskStatus::Held) => "st-held",
        None => "st-unknown",
    }
}

fn status_badge(v: i32) -> Markup {
    html! { span.status.(status_class(v)) { (status_name(v)) } }
}

/// Stacked bars, one per minute of the last hour: `series` are (css class, label, 60 values).
fn chart(title: &str, first_minute: i64, series: &[(&str, &str, Vec<u64>)]) -> Markup {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    let max = (0..60)
        .map(|m| series.iter().map(|s| s.2[m]).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let bar = W / 60.0;
    let total: Vec<u64> = series.iter().map(|s| s.2.iter().sum()).collect();
    // (class, x, y, height, tooltip) per non-empty segment, stacked from the bottom.
    let mut rects = Vec::new();
    for m in 0..60usize {
        let minute = first_minute + m as i64;
        let mut y = H;
        for s in series {
            let v = s.2[m];
            if v > 0 {
                let h = (v as f64 / max as f64 * (H - 10.0)).max(1.0);
                y -= h;
                let tip = format!("{} {v} at {}", s.1, fmt_time(minute * 60_000));
                rects.push((s.0, 30.0 + m as f64 * bar, y, h, tip));
            }
        }
    }
    html! {
        figure.chart {
            figcaption {
                (title) ": "
                @for (k, s) in series.iter().enumerate() {
                    span.legend.(s.0) { (s.1) " " (total[k]) }
                    " "
                }
            }
            svg viewBox="0 0 640 140" role="img" aria-label=(title) {
                line.axis x1="30" y1=(H + 2.0) x2=(30.0 + W) y2=(H + 2.0) {}
                text.tick x="0" y="10" { (max) }
                text.tick x="0" y=(H) { "0" }
                text.tick x="30" y="136" { "-60 min" }
                text.tick x=(W - 10.0) y="136" { "now" }
                @for (class, x, y, h, tip) in &rects {
                    rect class=(class) x=(format!("{x:.1}")) y=(format!("{y:.1}"))
                        width=(format!("{:.1}", bar - 1.0)) height=(format!("{h:.1}")) {
                        title { (tip) }
                    }
                }
            }
        }
    }
}

pub(crate) fn overview(
    ctx: &Ctx,
    now: i64,
    shards: &[ShardView],
    recent: Option<Vec<(i64, u64, u64)>>,
) -> String {
    let first_minute = now / 60_000 - 59;
    let pools_chart = recent.map(|recent| {
        let mut ok = vec![0u64; 60];
        let mut failed = vec![0u64; 60];
        for (m, s, f) in recent {
            if let Ok(k) = usize::try_from(m - first_minute) {
                if k < 60 {
                    ok[k] += s;
                    failed[k] += f;
                }
            }
        }
        chart(
            "Attempts by this process's pools, per minute",
            first_minute,
            &[("s-ok", "succeeded", ok), ("s-failed", "failed", failed)],
        )
    });
    let body = html! {
        h1 { "Overview" }
        @if shards.len() > 1 {
            h2 { "By shard (database)" }
            table.grid {
                thead { tr { th { "database" } @for s in TaskStatus::ALL { th { (s.name()) } } th { "other" } th { "due now" } th { "oldest due" } } }
                tbody {
                    @for sh in shards {
                        tr {
                            td { a href=(url("/tasks", &[("db", sh.index.to_string())])) { (sh.index) ": " (sh.shown) } }
                            @match &sh.data {
                                Ok((st, _)) => {
                                    @for s in TaskStatus::ALL {
                                        td.num { (count_of(st, s.as_i32())) }
                                    }
                                    td.num { (st.by_status.iter().filter(|(v, _)| TaskStatus::from_i32(*v).is_none()).map(|x| x.1).sum::<i64>()) }
                                    td.num { (st.due_now) }
                                    td { (st.oldest_due.as_ref().map_or("none".to_string(), |o| fmt_span(now.saturating_sub(o.execute_time)))) }
                                }
                                Err(e) => { td.error colspan="10" { (e) } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &pools_chart { (c) }
        @for sh in shards {
            section.shard {
                @if shards.len() > 1 { h2 { "Database " (sh.index) ": " (sh.shown) } }
                @match &sh.data {
                    Err(e) => { p.error { (e) } }
                    Ok((st, activity)) => { (shard_overview(sh.index, now, first_minute, st, activity)) }
                }
            }
        }
    };
    layout(ctx, "Overview", body)
}

fn count_of(st: &Stats, status: i32) -> i64 {
    st.by_status
        .iter()
        .filter(|(v, _)| *v == status)
        .map(|x| x.1)
        .sum()
}

fn shard_overview(
    i: usize,
    now: i64,
    first_minute: i64,
    st: &Stats,
    activity: &Activity,
) -> Markup {
    let total: i64 = st.by_status.iter().map(|x| x.1).sum();
    let link = |status: &str| {
        url(
            "/tasks",
            &[("db", i.to_string()), ("status", status.to_string())],
        )
    };
    let unknown: i64 = st
        .by_status
        .iter()
        .filter(|(v, _)| TaskStatus::from_i32(*v).is_none())
        .map(|x| x.1)
        .sum();
    let dead = count_of(st, TaskStatus::Dead.as_i32());
    let held = count_of(st, TaskStatus::Held.as_i32());
    let series = |status: TaskStatus| {
        let mut v = vec![0u64; 60];
        for (m, s, n) in activity {
            if *s == status.as_i32() {
                if let Ok(k) = usize::try_from(m - first_minute) {
                    if k < 60 {
                        v[k] += u64::try_from(*n).unwrap_or(0);
                    }
                }
            }
        }
        v
    };
    // Every known status with its count, then the values this build does not know.
    let mut sigs: Vec<(&str, Vec<(i32, i64)>)> = Vec::new();
    for (sig, status, c) in &st.by_signature {
        match sigs.last_mut() {
            Some((last, v)) if last == sig => v.push((*status, *c)),
            _ => sigs.push((sig.as_str(), vec![(*status, *c)])),
        }
    }
    html! {
        div.cards {
            a.card href=(url("/tasks", &[("db", i.to_string())])) { span.n { (total) } span.k { "tasks" } }
            a.card.(if dead > 0 { "alert" } else { "" }) href=(link("dead")) { span.n { (dead) } span.k { "dead" } }
            a.card.(if held > 0 { "warn" } else { "" }) href=(link("held")) { span.n { (held) } span.k { "held" } }
            @if unknown > 0 {
                a.card.warn href=(link("unknown")) { span.n { (unknown) } span.k { "unknown status" } }
            }
            div.card { span.n { (st.due_now) } span.k { "due now" } }
            div.card.(if st.oldest_due.as_ref().is_some_and(|o| now - o.execute_time > 60_000) { "warn" } else { "" }) {
                span.n { (st.oldest_due.as_ref().map_or("–".to_string(), |o| fmt_span(now.saturating_sub(o.execute_time)))) }
                span.k { "oldest due task's age" }
                @if let Some(o) = &st.oldest_due {
                    a.sub href=(url(&format!("/tasks/{}", o.id), &[("db", i.to_string())])) { "task " (o.id) " " (o.signature) }
                }
            }
        }
        h3 { "By status" }
        table.grid {
            tbody {
                @for s in TaskStatus::ALL {
                    tr { td { a href=(link(s.name())) { (status_badge(s.as_i32())) } } td.num { (count_of(st, s.as_i32())) } }
                }
                @for (v, c) in st.by_status.iter().filter(|(v, _)| TaskStatus::from_i32(*v).is_none()) {
                    tr { td { a href=(link(&v.to_string())) { (status_badge(*v)) } } td.num { (c) } }
                }
            }
        }
        (chart("Rows last changed in the last hour, per minute, by current status", first_minute, &[
            ("s-ok", "succeeded (kept)", series(TaskStatus::Succeeded)),
            ("s-failed", "failed (retry scheduled)", series(TaskStatus::Failed)),
            ("s-dead", "dead", series(TaskStatus::Dead)),
        ]))
        p.hint {
            "From the table alone: each row counts once, in the minute of its last change, under its current status. "
            "Completed tasks are deleted unless the pool keeps them, so only kept ones show; a task that failed several times counts once. "
            "Exact attempt counts come from the pools: pass tend::web::MetricsEvents to them and to the dashboard."
        }
        h3 { "By signature" }
        @if sigs.is_empty() {
            p { "no tasks" }
        } @else {
            table.grid {
                thead { tr { th { "signature" } @for s in TaskStatus::ALL { th { (s.name()) } } th { "other" } th { "total" } } }
                tbody {
                    @for (sig, v) in &sigs {
                        tr {
                            td { a href=(url("/tasks", &[("db", i.to_string()), ("signature", sig.to_string())])) { (sig) } }
                            @for s in TaskStatus::ALL {
                                @let n: i64 = v.iter().filter(|x| x.0 == s.as_i32()).map(|x| x.1).sum();
                                td.num.(if n > 0 && matches!(s, TaskStatus::Dead) { "alert" } else if n > 0 && matches!(s, TaskStatus::Held) { "warn" } else { "" }) { (n) }
                            }
                            td.num { (v.iter().filter(|x| TaskStatus::from_i32(x.0).is_none()).map(|x| x.1).sum::<i64>()) }
                            td.num { (v.iter().map(|x| x.1).sum::<i64>()) }
                        }
                    }
                }
            }
        }
    }
}

fn db_select(ctx: &Ctx, current: usize) -> Markup {
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
        if !with
            .iter()
            .any(|(k, _)| matches!(*k, "status" | "signature" | "shard_key" | "error"))
        {
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
                thead { tr { th { "id" } th { "status" } th { "signature" } th { "shard key" } th { "attempts" } th { "due" } th { "modified" } th { "lease owner" } th { "error" } } }
                tbody {
                    @for r in rows {
                        tr id=(format!("task-{}", r.id)) {
                            td.num { a href=(url(&format!("/tasks/{}", r.id), &[("db", db.to_string())])) { (r.id) } }
                            td { (status_badge(r.task_status)) }
                            td { (r.method_sign_name) }
                            td.num { (r.shard_key) }
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

fn time_cell(ms: i64) -> String {
    if is_parked(ms) {
        "never (parked: no worker claims it)".to_string()
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
        _ => None,
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "–".to_string());
    let fields: Vec<(&str, String)> = vec![
        ("task_id", r.task_id.clone()),
        ("signature", r.method_sign_name.clone()),
        ("shard key", r.shard_key.to_string()),
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
    ];
    let q = [("db", db.to_string())];
    let body = html! {
        h1 { "Task " (r.id) " " (status_badge(r.task_status)) }
        @if let Some(d) = done { p.flash { (d) } }
        div.actions {
            @for a in [Action::Retry, Action::Cancel, Action::Delete] {
                @if super::eligible(a, r.task_status, a != Action::Retry) {
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
