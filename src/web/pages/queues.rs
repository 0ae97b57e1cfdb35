//! The overview's queues and blocked ordering keys, per database.

use super::*;
use crate::admin::keys::{KeyHead, QueueStats};

/// Blocked keys listed on the overview per database (`tend keys blocked` lists more).
pub(crate) const BLOCKED_SHOWN: i64 = 20;

/// One database's counts per queue and its first blocked keys (up to one more than shown).
pub(crate) struct Keyed {
    pub queues: QueueStats,
    pub blocked: Vec<KeyHead>,
}

pub(super) fn section(i: usize, k: &Keyed) -> Markup {
    let queues = k.queues.queues();
    let total = k.queues.blocked_keys();
    let db = i.to_string();
    let shown = k.blocked.iter().take(BLOCKED_SHOWN as usize);
    html! {
        h3 { "By queue" }
        @if queues.is_empty() {
            p { "no tasks" }
        } @else {
            table.grid.queues {
                thead { tr { th { "queue" } @for s in TaskStatus::ALL { th { (s.name()) } } th { "other" } th { "total" } th { "due now" } th { "blocked keys" } } }
                tbody {
                    @for q in &queues {
                        tr {
                            td { a href=(url("/tasks", &[("db", db.clone()), ("queue", q.queue.clone())])) { (q.queue) } }
                            @for s in TaskStatus::ALL {
                                @let n = q.count(s.as_i32());
                                td.num.(if n > 0 && s == TaskStatus::Dead { "alert" } else if n > 0 && s == TaskStatus::Held { "warn" } else { "" }) { (n) }
                            }
                            td.num { (q.unknown()) }
                            td.num { (q.total()) }
                            td.num { (q.due_now) }
                            td.num.(if q.blocked_keys > 0 { "alert" } else { "" }) { (q.blocked_keys) }
                        }
                    }
                }
            }
        }
        h3 id=(format!("blocked-{i}")) { "Blocked ordering keys (" (total) ")" }
        @if total == 0 {
            p { "none" }
        } @else {
            p.hint {
                "A key is blocked when its first task is dead or held: no later task of the key runs until an operator retries or deletes that task, "
                "or takes it out of the line with " code { "tend keys skip KEY" } "."
            }
            table.grid.blocked {
                thead { tr { th { "key" } th { "blocking task" } th { "status" } th { "queue" } th { "signature" } th { "waiting" } th { "since" } th { "error" } th {} } }
                tbody {
                    @for h in shown {
                        tr {
                            td { a href=(url("/tasks", &[("db", db.clone()), ("key", h.ordering_key.clone())])) title=(h.ordering_key) { (clip(&h.ordering_key, 40)) } }
                            td.num { a href=(url(&format!("/tasks/{}", h.id), &[("db", db.clone())])) { (h.id) } }
                            td { (status_badge(h.task_status)) }
                            td { (h.queue) }
                            td { (h.method_sign_name) }
                            td.num { (h.waiting) }
                            td.time { (fmt_time(h.gmt_modified)) }
                            td.err title=(clip(&h.error_msg, 500)) { (clip(&h.error_msg, 80)) }
                            td { a.button href=(url("/keys/skip", &[("db", db.clone()), ("key", h.ordering_key.clone())])) { "skip…" } }
                        }
                    }
                }
            }
            @if total > BLOCKED_SHOWN {
                p.hint { "The oldest " (BLOCKED_SHOWN) " are shown; " code { "tend keys blocked" } " lists them all." }
            }
        }
    }
}

/// The confirmation page of skipping a key's blocking task (`tend keys skip KEY`).
pub(crate) fn skip_confirm(ctx: &Ctx, db: usize, key: &str, head: Option<&KeyHead>) -> String {
    let body = html! {
        h1 { "Skip the blocking task of key " code { (key) } "?" }
        @match head {
            None => { p.error { "No task has this ordering key (succeeded ones aside): nothing blocks it." } }
            Some(h) if !h.blocks() => {
                p.error {
                    "This key is not blocked: its first task "
                    a href=(url(&format!("/tasks/{}", h.id), &[("db", db.to_string())])) { (h.id) }
                    " is " (status_name(h.task_status)) ". Skip only applies to a dead or held first task."
                }
            }
            Some(h) => {
                p {
                    "Task " a href=(url(&format!("/tasks/{}", h.id), &[("db", db.to_string())])) { (h.id) }
                    " " (status_badge(h.task_status)) " " (h.method_sign_name) " in queue " (h.queue)
                    ", " (h.waiting) " task" @if h.waiting != 1 { "s" } " waiting behind it."
                }
                @if !h.error_msg.is_empty() { pre.err { (clip(&h.error_msg, 500)) } }
                p {
                    "Its ordering key is set to none and a note is appended to its error; it stays "
                    (status_name(h.task_status)) " and visible (retry, cancel or delete it like any task). "
                    "The next task of the key may then run."
                }
                @if let Some(why) = ctx.locked {
                    p.error { (why) }
                } @else if let Some(csrf) = &ctx.csrf {
                    form.confirm method="post" action="/keys/skip" {
                        input type="hidden" name="db" value=(db);
                        input type="hidden" name="key" value=(key);
                        input type="hidden" name="csrf" value=(csrf);
                        button.danger type="submit" id="confirm" { "Yes, skip task " (h.id) }
                        " "
                        a href="/" { "No, go back" }
                    }
                } @else {
                    p { a href=(url("/login", &[("next", ctx.here.clone())])) { "Log in" } " to skip it." }
                }
            }
        }
    };
    layout(ctx, "Skip a blocking task", body)
}
