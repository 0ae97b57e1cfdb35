//! The rows tend moves: a row as stored, a row to insert, a claim and what it returns, and the
//! fenced update of a claimed row (with one constructor per outcome).

use std::borrow::Cow;

use diesel::prelude::*;

use crate::schema::{consistency_task, tend_schedule};
use crate::status::{TaskStatus, PARKED};

/// A row as stored.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = consistency_task)]
pub struct TaskRow {
    pub id: i64,
    pub task_id: String,
    pub idempotency_key: Option<String>,
    pub task_status: i32,
    pub execute_times: i32,
    pub max_attempts: i32,
    pub execute_time: i64,
    pub parameter_types: String,
    pub method_name: String,
    pub method_sign_name: String,
    pub execute_interval_sec: i32,
    pub delay_time: i32,
    pub task_parameter: Vec<u8>,
    pub payload_version: i32,
    pub execute_way: i32,
    pub thread_way: i32,
    pub transaction_way: i32,
    pub error_msg: String,
    pub alert_expression: Option<String>,
    pub alert_action_bean_name: Option<String>,
    pub fallback_class_name: Option<String>,
    pub fallback_error_msg: Option<String>,
    pub shard_key: i64,
    pub lease_token: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub gmt_create: i64,
    pub gmt_modified: i64,
    pub duration_ms: Option<i64>,
    pub trace_parent: Option<String>,
    pub queue: String,
    pub priority: i32,
    pub ordering_key: Option<String>,
}

/// A periodic schedule as stored in `tend_schedule`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = tend_schedule)]
pub struct ScheduleRow {
    pub name: String,
    pub spec: String,
    pub last_slot_ms: i64,
    pub next_slot_ms: i64,
    pub updated_at: i64,
}

/// A claimed row (the field is `task` because the derive uses the name `row` itself), with the
/// status it had before the claim (1 = its previous lease expired:
/// the worker that held it crashed or hung).
#[derive(Debug, Clone, QueryableByName)]
pub struct Claimed {
    #[diesel(embed)]
    pub task: TaskRow,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub prev_status: i32,
}

/// A row as a claim reads it: the columns a claimed task needs that only the stored row knows.
/// The others are the claim's own values (the lease, `task_status` 1) or columns nothing reads
/// of a claimed row (`idempotency_key`, `parameter_types`, `method_name`, `duration_ms`,
/// `queue`, `gmt_modified`, and the enqueue-time options `delay_time`, `execute_way`,
/// `thread_way`, `transaction_way`: the executor, the events and the fetcher never look at
/// them), which [`ClaimRow::leased`] fills in (empty, `None` or 0). Fewer columns a row is less
/// for the server to send and for the fetcher to decode, per field and row: the claim's columns
/// went from 35 to 20 on PostgreSQL.
///
/// `task_status` and `execute_times` are the values before the lease (the previous status, the
/// attempts so far): every backend reads them so. `execute_time` is the due time, which the
/// lease leaves as it was.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = consistency_task)]
pub struct ClaimRow {
    pub id: i64,
    pub task_id: String,
    pub task_status: i32,
    pub execute_times: i32,
    pub max_attempts: i32,
    pub execute_time: i64,
    pub method_sign_name: String,
    pub execute_interval_sec: i32,
    pub task_parameter: Vec<u8>,
    pub payload_version: i32,
    pub error_msg: String,
    pub alert_expression: Option<String>,
    pub alert_action_bean_name: Option<String>,
    pub fallback_class_name: Option<String>,
    pub fallback_error_msg: Option<String>,
    pub shard_key: i64,
    pub gmt_create: i64,
    pub trace_parent: Option<String>,
    pub priority: i32,
    pub ordering_key: Option<String>,
}

impl ClaimRow {
    /// A stored row as a claim's `SELECT` reads it (tests that play a claimer's read).
    #[cfg(test)]
    pub(crate) fn of(r: &TaskRow) -> ClaimRow {
        let r = r.clone();
        ClaimRow {
            id: r.id,
            task_id: r.task_id,
            task_status: r.task_status,
            execute_times: r.execute_times,
            max_attempts: r.max_attempts,
            execute_time: r.execute_time,
            method_sign_name: r.method_sign_name,
            execute_interval_sec: r.execute_interval_sec,
            task_parameter: r.task_parameter,
            payload_version: r.payload_version,
            error_msg: r.error_msg,
            alert_expression: r.alert_expression,
            alert_action_bean_name: r.alert_action_bean_name,
            fallback_class_name: r.fallback_class_name,
            fallback_error_msg: r.fallback_error_msg,
            shard_key: r.shard_key,
            gmt_create: r.gmt_create,
            trace_parent: r.trace_parent,
            priority: r.priority,
            ordering_key: r.ordering_key,
        }
    }

    /// The row as claim `c`'s lease left it (the attempt count saturates at `i32::MAX`, as the
    /// lease's SQL does), with the status it had before.
    pub(crate) fn leased(self, c: &Claim<'_>) -> Claimed {
        Claimed {
            prev_status: self.task_status,
            task: TaskRow {
                id: self.id,
                task_id: self.task_id,
                idempotency_key: None,
                task_status: TaskStatus::Running.as_i32(),
                execute_times: self.execute_times.saturating_add(1),
                max_attempts: self.max_attempts,
                execute_time: self.execute_time,
                parameter_types: String::new(),
                method_name: String::new(),
                method_sign_name: self.method_sign_name,
                execute_interval_sec: self.execute_interval_sec,
                delay_time: 0,
                task_parameter: self.task_parameter,
                payload_version: self.payload_version,
                execute_way: 0,
                thread_way: 0,
                transaction_way: 0,
                error_msg: self.error_msg,
                alert_expression: self.alert_expression,
                alert_action_bean_name: self.alert_action_bean_name,
                fallback_class_name: self.fallback_class_name,
                fallback_error_msg: self.fallback_error_msg,
                shard_key: self.shard_key,
                lease_token: Some(c.token),
                lease_owner: Some(c.owner.to_string()),
                lease_expires_at: Some(c.lease_until),
                gmt_create: self.gmt_create,
                gmt_modified: 0,
                duration_ms: None,
                trace_parent: self.trace_parent,
                queue: String::new(),
                priority: self.priority,
                ordering_key: self.ordering_key,
            },
        }
    }
}

/// A row to insert.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = consistency_task)]
#[diesel(treat_none_as_default_value = false)]
pub struct NewRow {
    pub task_id: Cow<'static, str>,
    pub idempotency_key: Option<String>,
    pub task_status: i32,
    pub execute_times: i32,
    pub max_attempts: i32,
    pub execute_time: i64,
    pub parameter_types: Cow<'static, str>,
    pub method_name: Cow<'static, str>,
    pub method_sign_name: Cow<'static, str>,
    pub execute_interval_sec: i32,
    pub delay_time: i32,
    pub task_parameter: Vec<u8>,
    pub payload_version: i32,
    pub execute_way: i32,
    pub thread_way: i32,
    pub transaction_way: i32,
    pub error_msg: String,
    pub alert_expression: Option<Cow<'static, str>>,
    pub alert_action_bean_name: Option<String>,
    pub fallback_class_name: Option<String>,
    pub fallback_error_msg: Option<String>,
    pub shard_key: i64,
    pub lease_token: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub gmt_create: i64,
    pub gmt_modified: i64,
    pub trace_parent: Option<String>,
    pub queue: Cow<'static, str>,
    pub priority: i32,
    pub ordering_key: Option<String>,
}

impl NewRow {
    /// The row as stored under `id`, without reading it back.
    pub(crate) fn into_task_row(self, id: i64) -> TaskRow {
        TaskRow {
            id,
            task_id: self.task_id.into_owned(),
            idempotency_key: self.idempotency_key,
            task_status: self.task_status,
            execute_times: self.execute_times,
            max_attempts: self.max_attempts,
            execute_time: self.execute_time,
            parameter_types: self.parameter_types.into_owned(),
            method_name: self.method_name.into_owned(),
            method_sign_name: self.method_sign_name.into_owned(),
            execute_interval_sec: self.execute_interval_sec,
            delay_time: self.delay_time,
            task_parameter: self.task_parameter,
            payload_version: self.payload_version,
            execute_way: self.execute_way,
            thread_way: self.thread_way,
            transaction_way: self.transaction_way,
            error_msg: self.error_msg,
            alert_expression: self.alert_expression.map(Cow::into_owned),
            alert_action_bean_name: self.alert_action_bean_name,
            fallback_class_name: self.fallback_class_name,
            fallback_error_msg: self.fallback_error_msg,
            shard_key: self.shard_key,
            lease_token: self.lease_token,
            lease_owner: self.lease_owner,
            lease_expires_at: self.lease_expires_at,
            gmt_create: self.gmt_create,
            gmt_modified: self.gmt_modified,
            duration_ms: None,
            trace_parent: self.trace_parent,
            queue: self.queue.into_owned(),
            priority: self.priority,
            ordering_key: self.ordering_key,
        }
    }
}

/// What a claim asks for.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// Claim rows due at or before this time (epoch ms).
    pub now: i64,
    /// The lease expiry written into claimed rows.
    pub lease_until: i64,
    /// The fencing token written into claimed rows.
    pub token: i64,
    /// Who holds the lease.
    pub owner: &'a str,
    /// The queue claimed from (`None`: every queue, in one priority-then-due order that is
    /// not O(batch): the test kit's claim).
    pub queue: Option<&'a str>,
    /// At most this many rows.
    pub limit: i64,
    /// Only these ids (a targeted claim, e.g. of a task just enqueued); `None` for any due row.
    pub ids: Option<&'a [i64]>,
    /// Never these ids: rows no claim could lease and no update could hold (see the
    /// fetcher's isolation of bad rows). Almost always empty.
    pub exclude: &'a [i64],
}

/// What [`write_and_claim`](ops::Ops::write_and_claim) did.
#[derive(Debug, Default)]
pub struct Written {
    /// Rows each `complete` deleted, in order.
    pub deleted: Vec<usize>,
    /// Ids whose fenced update applied.
    pub held: Vec<i64>,
    /// The claimed rows.
    pub claimed: Vec<Claimed>,
}

/// A fenced update of one claimed row after its attempt.
#[derive(Debug, Clone)]
pub struct Finish {
    pub id: i64,
    pub token: i64,
    pub status: i32,
    pub execute_time: i64,
    pub error_msg: String,
    pub fallback_error_msg: Option<String>,
    /// How much to add to `execute_times`: 0, or -1 when a claimed task is released
    /// unstarted (the update saturates at the column's minimum).
    pub attempts_delta: i32,
    /// How long the attempt ran (written for kept completed rows).
    pub duration_ms: Option<i64>,
    pub now: i64,
    /// The row's ordering key when this outcome takes it out of its key's line (kept
    /// succeeded): the next row of the key is then released.
    pub release_key: Option<String>,
}

impl Finish {
    /// A retry at `next`: status failed, the attempt counted.
    pub(crate) fn retry(
        id: i64,
        token: i64,
        next: i64,
        error_msg: String,
        fallback: Option<String>,
        now: i64,
    ) -> Finish {
        Finish::new(
            id,
            token,
            TaskStatus::Failed,
            next,
            error_msg,
            fallback,
            0,
            now,
        )
    }

    /// Due again at `next` with this attempt given back (a release, a snooze): pending when it
    /// was the first attempt, else failed.
    pub(crate) fn give_back(
        row: &TaskRow,
        next: i64,
        error_msg: String,
        fallback: Option<String>,
        now: i64,
    ) -> Finish {
        let status = if row.execute_times <= 1 {
            TaskStatus::Pending
        } else {
            TaskStatus::Failed
        };
        let token = row.lease_token.unwrap_or_default();
        Finish::new(row.id, token, status, next, error_msg, fallback, -1, now)
    }

    /// Parked (dead or held, or kept succeeded): kept with its message, never claimed again by
    /// itself.
    pub(crate) fn park(
        id: i64,
        token: i64,
        status: TaskStatus,
        error_msg: String,
        fallback: Option<String>,
        now: i64,
    ) -> Finish {
        Finish::new(id, token, status, PARKED, error_msg, fallback, 0, now)
    }

    /// A success kept for the audit trail, with how long it ran: always a duration, which is
    /// what marks a kept success for the kept rows' partial index (`duration_ms IS NOT NULL`).
    pub(crate) fn kept(
        id: i64,
        token: i64,
        error_msg: String,
        fallback: Option<String>,
        duration_ms: i64,
        now: i64,
    ) -> Finish {
        Finish {
            duration_ms: Some(duration_ms),
            ..Finish::park(id, token, TaskStatus::Succeeded, error_msg, fallback, now)
        }
    }

    #[allow(clippy::too_many_arguments)] // the columns of one fenced update, named at each constructor
    fn new(
        id: i64,
        token: i64,
        status: TaskStatus,
        execute_time: i64,
        error_msg: String,
        fallback_error_msg: Option<String>,
        attempts_delta: i32,
        now: i64,
    ) -> Finish {
        Finish {
            id,
            token,
            status: status.as_i32(),
            execute_time,
            error_msg,
            fallback_error_msg,
            attempts_delta,
            duration_ms: None,
            now,
            release_key: None,
        }
    }
}
