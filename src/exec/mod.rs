//! The executor: runs ONE claimed task and decides its outcome (the model is River's
//! `internal/jobexecutor`). Shared by the pool's workers, the outbox (sync tasks in the
//! caller's thread) and the test kit, so a change to how a task runs or how its outcome is
//! written is made once. It knows neither the pool nor the outbox.

pub(crate) mod alerts;

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::alert::Alert;
use crate::events::{Event, Events, TaskInfo};
use crate::expr::{AlertVars, Expr};
use crate::registry::{Attempt, Registry};
use crate::status::{TaskStatus, LATEST_DUE};
use crate::store::row::{Finish, TaskRow};
use crate::store::StoreConnection;
use crate::task::{Action, TaskContext, TaskError, TaskOptions};
use crate::util::{now_ms, random_token, truncate};

use self::alerts::AlertSink;

/// What running a task needs: the handlers, where events and alerts go, whether successes are
/// kept, and the clock.
#[derive(Debug)]
pub(crate) struct Executor {
    pub(crate) registry: Registry,
    pub(crate) alerts: AlertSink,
    pub(crate) events: EventSink,
    pub(crate) keep_completed: Option<Duration>,
    /// Added to the system clock: zero, except under the test kit's clock.
    pub(crate) clock_offset_ms: Arc<AtomicI64>,
}

impl Executor {
    /// The executor's clock, in epoch milliseconds.
    pub(crate) fn now_ms(&self) -> i64 {
        now_ms() + self.clock_offset_ms.load(Ordering::Relaxed)
    }
}

/// The pool's [`Events`] receiver.
#[derive(Clone)]
pub(crate) struct EventSink(pub(crate) Arc<dyn Events>);

impl EventSink {
    /// No receiver (the test kit's).
    #[cfg(feature = "testing")]
    pub(crate) fn none() -> EventSink {
        EventSink(Arc::new(crate::events::NoEvents))
    }

    /// Delivers an event; a panicking [`Events`] receiver is logged, never unwinds into the
    /// caller's thread.
    pub(crate) fn emit(&self, e: Event<'_>) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.0.event(&e)));
        if let Err(p) = r {
            log::error!(
                "tend: the pool's Events receiver panicked: {}",
                crate::util::panic_message(&*p)
            );
        }
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventSink")
    }
}

/// The longest message stored in `error_msg` / `fallback_error_msg` (64 KiB).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The outcome of one claimed task, to be written back.
#[derive(Debug, Clone)]
pub(crate) enum Done {
    /// Delete the row (`key`: its ordering key, whose next row is then released).
    Complete {
        id: i64,
        token: i64,
        key: Option<String>,
    },
    /// Fenced update of the row.
    Finish(Finish),
    /// Nothing to write: the handler completed the task in its own transaction
    /// ([`crate::complete_in`]).
    CompletedIn { id: i64, key: Option<String> },
}

impl Done {
    /// Hands a claimed task back unstarted: due now, attempt not counted.
    pub(crate) fn release(row: TaskRow) -> Done {
        let now = now_ms();
        let (msg, fallback) = (row.error_msg.clone(), row.fallback_error_msg.clone());
        Done::Finish(Finish::give_back(&row, now, msg, fallback, now))
    }

    pub(crate) fn id(&self) -> i64 {
        match self {
            Done::Complete { id, .. } | Done::CompletedIn { id, .. } => *id,
            Done::Finish(f) => f.id,
        }
    }

    /// The ordering key and id of a row this outcome takes out of its key's line (deleted, or
    /// kept as succeeded): the next row of the key may run.
    pub(crate) fn leaves_line(&self) -> Option<(&str, i64)> {
        match self {
            Done::Complete { id, key, .. } | Done::CompletedIn { id, key } => {
                key.as_deref().map(|k| (k, *id))
            }
            Done::Finish(f) => f.release_key.as_deref().map(|k| (k, f.id)),
        }
    }

    /// Writes this outcome alone (the outbox's sync path); `Ok(false)` when the lease was lost.
    pub(crate) fn write<C: StoreConnection>(&self, conn: &mut C) -> diesel::QueryResult<bool> {
        crate::store::retry_transient(|| match self {
            Done::CompletedIn { .. } => Ok(true),
            Done::Complete { id, token, .. } => conn.complete(*token, &[*id]).map(|n| n == 1),
            Done::Finish(f) => conn
                .finish(std::slice::from_ref(f))
                .map(|held| held.len() == 1),
        })
    }
}

/// Runs one claimed task and decides what to write. Never panics on a task's account.
pub(crate) fn run_one(cfg: &Executor, row: TaskRow) -> Done {
    let token = row.lease_token.unwrap_or_default();
    if let Some(msg) = out_of_range(&row) {
        return park(
            cfg,
            &row,
            token,
            TaskStatus::Held,
            msg,
            row.fallback_error_msg.clone(),
        );
    }
    if row.execute_times > row.max_attempts {
        // `execute_times` counts this claim. One past the budget is the normal way to get
        // here: the last attempt's worker never reported back. Further past, the row was
        // changed outside tend (or the count saturated at the column's maximum).
        let msg = if row.execute_times - 1 == row.max_attempts {
            format!(
                "its last allowed attempt ({} of {}) never reported back: the worker crashed, \
                 was killed, or ran past the task timeout; not run again. Last error: {}",
                row.max_attempts, row.max_attempts, row.error_msg
            )
        } else {
            format!(
                "execute_times (now {}, counting this claim) is past max_attempts = {} (the \
                 row was changed outside tend); not run. `tend tasks retry {} \
                 --reset-attempts` runs it again. Last error: {}",
                row.execute_times, row.max_attempts, row.id, row.error_msg
            )
        };
        let done = park(
            cfg,
            &row,
            token,
            TaskStatus::Dead,
            msg,
            row.fallback_error_msg.clone(),
        );
        alert_if(cfg, &row, &done, None, false);
        return done;
    }
    let Some(handler) = cfg.registry.get(&row.method_sign_name) else {
        let msg = format!(
            "no task type is registered for signature `{}` in this process (renamed, removed, or \
             a newer deployment's task?); register it, then retry the task",
            row.method_sign_name
        );
        return park(
            cfg,
            &row,
            token,
            TaskStatus::Held,
            msg,
            row.fallback_error_msg.clone(),
        );
    };
    let ctx = TaskContext {
        id: row.id,
        task_id: row.task_id.clone(),
        signature: row.method_sign_name.clone(),
        attempt: row.execute_times.max(1) as u32,
        max_attempts: row.max_attempts.max(1) as u32,
        shard_key: row.shard_key,
        token,
        keep_completed: cfg.keep_completed.is_some(),
        states: cfg.registry.states(),
        completed_in: Default::default(),
        started: Instant::now(),
    };
    let opts = handler.options();
    // The row says whether a fallback is on (the type's option, or the enqueue's override).
    let has_fallback = row.fallback_class_name.is_some();
    let fallback_due = |e: &TaskError| fallback_due(has_fallback, opts, ctx.attempt, e);
    let started = ctx.started;
    let attempt = handler.run(&row.task_parameter, &ctx, &fallback_due);
    let duration = started.elapsed();
    if let Attempt::Failed { error, .. } | Attempt::FallbackSucceeded(error) = &attempt {
        cfg.events.emit(Event::Failed {
            task: info(&row),
            error: error.message(),
            duration,
        });
    }
    match attempt {
        Attempt::Succeeded => {
            log::debug!(
                "tend: task {} ({}) succeeded in {duration:?}",
                row.id,
                row.method_sign_name,
            );
            cfg.events.emit(Event::Succeeded {
                task: info(&row),
                duration,
            });
            if ctx.completed_in.load(std::sync::atomic::Ordering::SeqCst) {
                return Done::CompletedIn {
                    id: row.id,
                    key: row.ordering_key.clone(),
                };
            }
            completed(cfg, &row, token, duration)
        }
        Attempt::FallbackSucceeded(e) => {
            log::info!(
                "tend: task {} ({}) failed ({e}); its fallback succeeded, so it is complete",
                row.id,
                row.method_sign_name
            );
            cfg.events.emit(Event::FallbackSucceeded(info(&row)));
            completed(cfg, &row, token, duration)
        }
        Attempt::Undecodable(e) => {
            let msg = format!(
                "payload does not decode as `{}` (stored version {}, this build's version {}): {e}",
                handler.type_name(),
                row.payload_version,
                handler.version()
            );
            park(
                cfg,
                &row,
                token,
                TaskStatus::Held,
                msg,
                row.fallback_error_msg.clone(),
            )
        }
        Attempt::Failed { error, fallback } => {
            let fallback_msg = match &fallback {
                Some(f) => {
                    log::warn!(
                        "tend: the fallback of task {} ({}) failed: {f}",
                        row.id,
                        row.method_sign_name
                    );
                    cfg.events.emit(Event::FallbackFailed {
                        task: info(&row),
                        error: f.message(),
                    });
                    Some(truncate(f.message(), MAX_MESSAGE_BYTES))
                }
                None => row.fallback_error_msg.clone(),
            };
            let done = failed(cfg, &row, &ctx, opts, &error, fallback_msg);
            if !error.is_snooze() {
                alert_if(cfg, &row, &done, fallback.as_ref(), has_fallback);
            }
            done
        }
    }
}

/// Why a claimed row cannot be run as stored, naming the column and its value; `None` when
/// every column tend reads is in range. Only rows written by something other than tend's
/// enqueue (a hand-written `INSERT`, a migration, an older framework) can be out of range:
/// they are held, never run with a guessed value, never deleted.
pub(crate) fn out_of_range(row: &TaskRow) -> Option<String> {
    // `execute_times` includes this claim (the lease adds one, saturating).
    let stored_attempts = row.execute_times.saturating_sub(1);
    let (column, value, rule) = if row.max_attempts < 1 {
        ("max_attempts", i64::from(row.max_attempts), "at least 1")
    } else if stored_attempts < 0 {
        ("execute_times", i64::from(stored_attempts), "0 or more")
    } else if row.execute_interval_sec < 1 {
        (
            "execute_interval_sec",
            i64::from(row.execute_interval_sec),
            "at least 1",
        )
    } else {
        return None;
    };
    Some(format!(
        "{column} = {value} is out of range (must be {rule}; the row was not written by tend's \
         enqueue); not run. Fix the column, then `tend tasks retry {} --reset-attempts`",
        row.id
    ))
}

/// The seed's rule, with its off-by-one fixed: the fallback runs after a failed attempt when
/// the failures so far (this one included) exceed the threshold, so 0 means the first failure.
/// A handler that gives up gets its fallback at once.
fn fallback_due(has_fallback: bool, opts: &TaskOptions, attempt: u32, e: &TaskError) -> bool {
    has_fallback && !e.is_snooze() && (attempt > opts.fallback_threshold || e.is_give_up())
}

/// A failed attempt: dead when out of attempts or given up, else retried on the schedule.
fn failed(
    cfg: &Executor,
    row: &TaskRow,
    ctx: &TaskContext,
    opts: &TaskOptions,
    error: &TaskError,
    fallback_msg: Option<String>,
) -> Done {
    let token = row.lease_token.unwrap_or_default();
    let msg = truncate(error.message(), MAX_MESSAGE_BYTES);
    if let Action::Snooze(wait) = error.action() {
        if let Some(done) = snoozed(cfg, row, opts, wait, &msg, fallback_msg.clone()) {
            return done;
        }
    }
    if error.is_give_up() || ctx.attempt >= ctx.max_attempts {
        let why = if error.is_give_up() {
            "the handler gave up"
        } else {
            "out of attempts"
        };
        return park(
            cfg,
            row,
            token,
            TaskStatus::Dead,
            format!("{why}: {msg}"),
            fallback_msg,
        );
    }
    let wait = match error.action() {
        Action::RetryAfter(d) | Action::Snooze(d) => d,
        _ => opts.retry.delay(
            ctx.attempt,
            Duration::from_secs(row.execute_interval_sec.max(1).unsigned_abs().into()),
            random_token() as u64,
        ),
    };
    let now = cfg.now_ms();
    log::warn!(
        "tend: task {} ({}) failed on attempt {}/{}: {msg}; next attempt in {wait:?}",
        row.id,
        row.method_sign_name,
        ctx.attempt,
        ctx.max_attempts
    );
    // Never PARKED: a failed row due "never" would not be retried, yet not look parked either.
    let next = now
        .saturating_add(wait.as_millis().min(i64::MAX as u128) as i64)
        .min(LATEST_DUE);
    cfg.events.emit(Event::Retried {
        task: info(row),
        next_attempt_at_ms: next,
    });
    Done::Finish(Finish::retry(row.id, token, next, msg, fallback_msg, now))
}

/// A snooze: due again after `wait`, the attempt given back. `None` once the task has snoozed
/// past its type's snooze limit since it was enqueued: the snooze then counts as an attempt, so
/// that a task cannot postpone itself forever unseen.
fn snoozed(
    cfg: &Executor,
    row: &TaskRow,
    opts: &TaskOptions,
    wait: Duration,
    msg: &str,
    fallback_msg: Option<String>,
) -> Option<Done> {
    let now = cfg.now_ms();
    let limit = i64::try_from(opts.snooze_limit.as_millis()).unwrap_or(i64::MAX);
    if now.saturating_sub(row.gmt_create) > limit {
        log::warn!(
            "tend: task {} ({}) snoozed past its snooze limit of {:?} since it was enqueued; \
             this snooze counts as an attempt",
            row.id,
            row.method_sign_name,
            opts.snooze_limit
        );
        return None;
    }
    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    let next = now.saturating_add(wait_ms).min(crate::status::LATEST_DUE);
    log::debug!(
        "tend: task {} ({}) snoozed for {wait:?}: {msg}",
        row.id,
        row.method_sign_name
    );
    cfg.events.emit(Event::Retried {
        task: info(row),
        next_attempt_at_ms: next,
    });
    // The attempt is given back, as after a release.
    let msg = truncate(&format!("snoozed for {wait:?}: {msg}"), MAX_MESSAGE_BYTES);
    Some(Done::Finish(Finish::give_back(
        row,
        next,
        msg,
        fallback_msg,
        now,
    )))
}

/// Parks a row (dead or held): kept with its message, never claimed again by itself.
fn park(
    cfg: &Executor,
    row: &TaskRow,
    token: i64,
    status: TaskStatus,
    msg: String,
    fallback_msg: Option<String>,
) -> Done {
    log::warn!(
        "tend: task {} ({}) is {status}: {msg}",
        row.id,
        row.method_sign_name
    );
    let error_msg = truncate(&msg, MAX_MESSAGE_BYTES);
    let task = info(row);
    cfg.events.emit(if status == TaskStatus::Held {
        Event::Held {
            task,
            error: &error_msg,
        }
    } else {
        Event::Dead {
            task,
            error: &error_msg,
        }
    });
    Done::Finish(Finish::park(
        row.id,
        token,
        status,
        error_msg,
        fallback_msg,
        cfg.now_ms(),
    ))
}

/// Evaluates the task's alert expression after a failure and queues an alert when it holds.
/// As in the seed: without a fallback, after every failure; with one, only when it ran and
/// failed.
fn alert_if(
    cfg: &Executor,
    row: &TaskRow,
    done: &Done,
    fallback: Option<&TaskError>,
    has_fallback: bool,
) {
    if has_fallback && fallback.is_none() {
        return;
    }
    let (Some(source), Done::Finish(f)) = (&row.alert_expression, done) else {
        return;
    };
    let expr = match Expr::parse(source) {
        Ok(e) => e,
        Err(e) => {
            // Only rows written by something other than tend's enqueue can get here.
            log::warn!(
                "tend: task {} has an invalid alert expression `{source}`: {e}",
                row.id
            );
            return;
        }
    };
    let status = TaskStatus::from_i32(f.status).unwrap_or(TaskStatus::Failed);
    let vars = AlertVars {
        id: row.id,
        execute_times: row.execute_times.into(),
        max_attempts: row.max_attempts.into(),
        status: f.status.into(),
        signature: row.method_sign_name.clone(),
        task_id: row.task_id.clone(),
        shard_key: row.shard_key,
        fallback_ran: fallback.is_some(),
        fallback_failed: fallback.is_some(),
    };
    match expr.eval(&vars) {
        Ok(true) => {
            cfg.events.emit(Event::AlertFired(info(row)));
            #[allow(deprecated)] // the i32 fields stay filled until they are removed
            let alert = Alert {
                id: row.id,
                task_id: row.task_id.clone(),
                signature: row.method_sign_name.clone(),
                shard_key: row.shard_key,
                execute_times: row.execute_times,
                max_attempts: row.max_attempts,
                status,
                error_msg: f.error_msg.clone(),
                fallback_error_msg: fallback.map(|e| e.message().to_string()),
                expression: source.clone(),
                alerter: row.alert_action_bean_name.clone(),
            };
            cfg.alerts.send(alert)
        }
        Ok(false) => {}
        Err(e) => log::warn!(
            "tend: the alert expression `{source}` of task {} failed to evaluate: {e}",
            row.id
        ),
    }
}

/// A successful attempt: the row is deleted, or kept as `Succeeded` when the pool keeps
/// completed rows.
fn completed(cfg: &Executor, row: &TaskRow, token: i64, duration: Duration) -> Done {
    if cfg.keep_completed.is_none() {
        return Done::Complete {
            id: row.id,
            token,
            key: row.ordering_key.clone(),
        };
    }
    let mut f = Finish::kept(
        row.id,
        token,
        row.error_msg.clone(),
        row.fallback_error_msg.clone(),
        crate::util::millis(duration),
        cfg.now_ms(),
    );
    f.release_key = row.ordering_key.clone();
    Done::Finish(f)
}

/// The event view of a row.
pub(crate) fn info(row: &TaskRow) -> TaskInfo<'_> {
    let trace = row.trace_parent.as_deref();
    TaskInfo::of(
        row.id,
        &row.method_sign_name,
        row.shard_key,
        row.execute_times,
    )
    // Only a valid one: a hand-edited value is ignored, it never stops the task.
    .with_trace_parent(trace.filter(|_| crate::trace::stored(row.id, trace).is_some()))
}
