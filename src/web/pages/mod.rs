//! The pages, rendered on the server with maud, which HTML-escapes every value it
//! interpolates: task rows are shown exactly as stored, never interpreted.

use maud::{html, Markup, DOCTYPE};

use super::http::{Params, Req};
use super::query::Activity;
use super::{Action, State};
use crate::admin::{is_parked, Stats, TaskSummary};
use crate::cli::text::{clip, fmt_span, fmt_time, status_name};
use crate::status::TaskStatus;
use crate::store::row::{ScheduleRow, TaskRow};

mod queues;
mod tasks;
pub(crate) use queues::{skip_confirm, Keyed, BLOCKED_SHOWN};
pub(crate) use tasks::{bulk, confirm, detail, list, purge};

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
    pub data: Result<(Stats, Activity, Vec<ScheduleRow>, Keyed), String>,
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
                thead { tr { th { "database" } @for s in TaskStatus::ALL { th { (s.name()) } } th { "other" } th { "due now" } th { "oldest due" } th { "blocked keys" } } }
                tbody {
                    @for sh in shards {
                        tr {
                            td { a href=(url("/tasks", &[("db", sh.index.to_string())])) { (sh.index) ": " (sh.shown) } }
                            @match &sh.data {
                                Ok((st, _, _, keyed)) => {
                                    @for s in TaskStatus::ALL {
                                        td.num { (count_of(st, s.as_i32())) }
                                    }
                                    td.num { (st.by_status.iter().filter(|(v, _)| TaskStatus::from_i32(*v).is_none()).map(|x| x.1).sum::<i64>()) }
                                    td.num { (st.due_now) }
                                    td { (st.oldest_due.as_ref().map_or("none".to_string(), |o| fmt_span(now.saturating_sub(o.execute_time)))) }
                                    td.num.(if keyed.queues.blocked_keys() > 0 { "alert" } else { "" }) { (keyed.queues.blocked_keys()) }
                                }
                                Err(e) => { td.error colspan="11" { (e) } }
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
                    Ok((st, activity, schedules, keyed)) => {
                        (shard_overview(sh.index, now, first_minute, st, activity))
                        (queues::section(sh.index, keyed))
                        (schedules_table(now, schedules))
                    }
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

/// The periodic schedules of one database (nothing when it has none).
fn schedules_table(now: i64, schedules: &[ScheduleRow]) -> Markup {
    html! {
        @if !schedules.is_empty() {
            h3 { "Periodic schedules" }
            table.grid {
                thead { tr { th { "schedule" } th { "every" } th { "last slot enqueued" } th { "next run" } } }
                tbody {
                    @for r in schedules {
                        tr {
                            td { (r.name) }
                            td { (r.spec) }
                            td { (fmt_time(r.last_slot_ms)) }
                            @if r.next_slot_ms <= now {
                                td.warn { (fmt_time(r.next_slot_ms)) " (due " (fmt_span(now - r.next_slot_ms)) " ago: is a process running it?)" }
                            } @else {
                                td { (fmt_time(r.next_slot_ms)) " (in " (fmt_span(r.next_slot_ms - now)) ")" }
                            }
                        }
                    }
                }
            }
        }
    }
}
