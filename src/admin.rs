//! Operator queries: what `tend tasks …`, `tend purge` and `tend stats` read and change.
//!
//! Written once with diesel's DSL and stamped out per connection type by `admin_ops!`, like the
//! storage contract in `store`. Every change runs in bounded batches: up to `batch` ids are
//! selected, then one statement changes exactly those ids *and re-checks the filter*, so a row
//! that a worker claimed in between is left alone, and no statement holds locks on more than
//! one batch of rows.

use diesel::prelude::*;

use crate::error::Error;
use crate::status::{TaskStatus, PARKED};
use crate::store::row::{ScheduleRow, TaskRow};

pub(crate) mod keys;

/// Which rows an operator command is about. Every field narrows; the default matches all rows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// Only this row.
    pub id: Option<i64>,
    /// Only these statuses (this and `unknown` empty: any).
    pub statuses: Vec<TaskStatus>,
    /// Also (or only, with `statuses` empty) rows whose status this build does not know.
    pub unknown: Unknown,
    /// Only this signature (`method_sign_name`).
    pub signature: Option<String>,
    /// Only this shard key.
    pub shard_key: Option<i64>,
    /// Only rows due at or before this time (epoch ms); parked rows never are.
    pub due_before: Option<i64>,
    /// Only rows due at or after this time (epoch ms), parked rows excluded.
    pub due_after: Option<i64>,
    /// Only rows last modified before this time (epoch ms).
    pub modified_before: Option<i64>,
    /// Only rows whose `error_msg` contains this text (`LIKE`; case sensitivity is the
    /// database's). A scan: the list stops at its page size, so it is cheap where matches are
    /// common.
    pub error_contains: Option<String>,
    /// Only rows in this queue.
    pub queue: Option<String>,
    /// Only rows with this ordering key.
    pub ordering_key: Option<String>,
}

/// Rows whose `task_status` is none of [`TaskStatus`]'s values: written by a newer tend, or by
/// hand. A pool never claims, changes or deletes them; an operator selects them by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// Not selected (unless no status is named at all).
    #[default]
    No,
    /// These stored values (none of them a known status).
    Values(Vec<i32>),
    /// Every value that is not a known status.
    All,
}

impl Filter {
    /// Whether the filter names statuses (known or unknown); without, it matches every status.
    pub fn names_statuses(&self) -> bool {
        !self.statuses.is_empty() || self.unknown != Unknown::No
    }

    /// The same filter, narrowed to the statuses in `allowed` (keeping the caller's choice
    /// where there was one; unknown statuses stay selected only when named). An empty result
    /// means nothing can match.
    pub fn restricted_to(&self, allowed: &[TaskStatus]) -> Filter {
        let statuses = if !self.names_statuses() {
            allowed.to_vec()
        } else {
            self.statuses
                .iter()
                .copied()
                .filter(|s| allowed.contains(s))
                .collect()
        };
        Filter {
            statuses,
            ..self.clone()
        }
    }
}

/// Where a page of `list` starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Page {
    /// Rows with an id greater than this (a cursor: stable while rows come and go).
    AfterId(i64),
    /// Skip this many rows (ordered by id).
    Offset(i64),
}

/// A change applied to every row a filter matches.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Failed, dead and held rows become due at `now`. With `reset_attempts` the attempt count
    /// goes back to 0 (status pending); otherwise it is kept (status failed), lowered just
    /// enough that one more attempt is allowed, since a claim past `max_attempts` is dead at
    /// once without running.
    Retry { reset_attempts: bool, now: i64 },
    /// Rows become dead and parked with `message` as their error; a lease is dropped, so a
    /// worker still running the task cannot complete it (its fenced write finds no lease).
    Cancel { now: i64, message: String },
    /// Rows are deleted.
    Delete,
}

impl Change {
    /// The statuses this change may touch. Running rows only when `force` is given.
    pub fn eligible(&self, force: bool) -> Vec<TaskStatus> {
        use TaskStatus::*;
        let mut v = match self {
            Change::Retry { .. } => vec![Failed, Dead, Held],
            Change::Cancel { .. } => vec![Pending, Failed, Held],
            Change::Delete => vec![Pending, Failed, Succeeded, Dead, Held],
        };
        if force && !matches!(self, Change::Retry { .. }) {
            v.insert(1, Running);
        }
        v
    }
}

/// A row as `tend tasks list` shows it: everything but the payload and the rarely read columns.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = crate::schema::consistency_task)]
pub(crate) struct TaskSummary {
    pub id: i64,
    pub task_id: String,
    pub task_status: i32,
    pub execute_times: i32,
    pub max_attempts: i32,
    pub execute_time: i64,
    pub method_sign_name: String,
    pub shard_key: i64,
    pub error_msg: String,
    pub lease_owner: Option<String>,
    pub gmt_create: i64,
    pub gmt_modified: i64,
    pub queue: String,
    pub priority: i32,
    pub ordering_key: Option<String>,
}

/// The oldest task that is due and not yet taken: how far behind the workers are.
#[derive(Debug, Clone)]
pub(crate) struct OldestDue {
    pub id: i64,
    pub signature: String,
    pub execute_time: i64,
}

/// Counts for `tend stats`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stats {
    /// (status, count), by status value.
    pub by_status: Vec<(i32, i64)>,
    /// (signature, status, count), by signature then status.
    pub by_signature: Vec<(String, i32, i64)>,
    /// Rows a worker may claim now (pending, failed or lease expired, and due).
    pub due_now: i64,
    /// The oldest of those.
    pub oldest_due: Option<OldestDue>,
}

/// The operator queries, per connection type. Object safe, so that the CLI can hold
/// connections of every backend behind one `Box<dyn Admin>`. The queue and ordering-key
/// queries are in [`keys::Keys`].
pub(crate) trait Admin: keys::Keys {
    /// `postgres`, `mysql` or `sqlite`.
    fn backend(&self) -> &'static str;
    /// Runs tend's migrations.
    fn migrate(&mut self) -> Result<(), Error>;
    /// Checks the table has every column tend needs.
    fn check_schema(&mut self) -> Result<(), Error>;
    /// One page of matching rows, by id.
    fn list(&mut self, f: &Filter, page: Page, limit: i64) -> QueryResult<Vec<TaskSummary>>;
    /// One row, every column.
    fn find(&mut self, id: i64) -> QueryResult<Option<TaskRow>>;
    /// How many rows match.
    fn count(&mut self, f: &Filter) -> QueryResult<i64>;
    /// The first `limit` matching ids, for saying what a change will touch.
    fn ids(&mut self, f: &Filter, limit: i64) -> QueryResult<Vec<i64>>;
    /// Applies `change` to every matching row, `batch` ids per statement; `progress` is called
    /// with each batch's count. Returns the total.
    fn apply(
        &mut self,
        change: &Change,
        f: &Filter,
        batch: i64,
        progress: &mut dyn FnMut(usize),
    ) -> QueryResult<usize>;
    /// Counts by status and signature, and the oldest due task.
    fn stats(&mut self, now: i64) -> QueryResult<Stats>;
    /// The periodic schedules (`tend_schedule`), by name; an error when the table is missing.
    fn schedules(&mut self) -> QueryResult<Vec<ScheduleRow>>;
}

/// The operator queries for one concrete connection type (`$db` is its backend).
macro_rules! admin_ops {
    ($conn:ty, $db:ty) => {
        type Pred = Box<
            dyn diesel::expression::BoxableExpression<
                $crate::schema::consistency_task::table,
                $db,
                SqlType = diesel::sql_types::Bool,
            >,
        >;

        /// The filter as one boolean expression, shared by selects, updates and deletes.
        fn predicate(f: &$crate::admin::Filter) -> Pred {
            use $crate::schema::consistency_task::dsl as t;
            let mut p: Pred = Box::new(diesel::dsl::sql::<diesel::sql_types::Bool>("1 = 1"));
            if let Some(id) = f.id {
                p = Box::new(p.and(t::id.eq(id)));
            }
            if f.names_statuses() {
                use $crate::admin::Unknown;
                let known: Vec<i32> = f.statuses.iter().map(|s| s.as_i32()).collect();
                let mut any: Pred = Box::new(t::task_status.eq_any(known));
                match &f.unknown {
                    Unknown::No => {}
                    Unknown::Values(v) => any = Box::new(any.or(t::task_status.eq_any(v.clone()))),
                    Unknown::All => {
                        let all: Vec<i32> = $crate::status::TaskStatus::ALL
                            .iter()
                            .map(|s| s.as_i32())
                            .collect();
                        any = Box::new(any.or(t::task_status.ne_all(all)));
                    }
                }
                p = Box::new(p.and(any));
            }
            if let Some(sig) = &f.signature {
                p = Box::new(p.and(t::method_sign_name.eq(sig.clone())));
            }
            if let Some(k) = f.shard_key {
                p = Box::new(p.and(t::shard_key.eq(k)));
            }
            if let Some(ts) = f.due_before {
                p = Box::new(p.and(t::execute_time.le(ts.min($crate::status::LATEST_DUE))));
            }
            if let Some(ts) = f.due_after {
                p = Box::new(p.and(t::execute_time.ge(ts)));
                p = Box::new(p.and(t::execute_time.lt($crate::status::PARKED)));
            }
            if let Some(ts) = f.modified_before {
                p = Box::new(p.and(t::gmt_modified.lt(ts)));
            }
            if let Some(q) = &f.queue {
                p = Box::new(p.and(t::queue.eq(q.clone())));
            }
            if let Some(k) = &f.ordering_key {
                p = Box::new(p.and(t::ordering_key.eq(k.clone()).assume_not_null()));
            }
            if let Some(text) = &f.error_contains {
                p = Box::new(
                    p.and(
                        t::error_msg
                            .like($crate::admin::like_pattern(text))
                            .escape('!'),
                    ),
                );
            }
            p
        }

        impl $crate::admin::Admin for $conn {
            fn backend(&self) -> &'static str {
                $crate::store::ops::Ops::backend(self)
            }

            fn migrate(&mut self) -> Result<(), $crate::error::Error> {
                $crate::store::migrate(self)
            }

            fn check_schema(&mut self) -> Result<(), $crate::error::Error> {
                $crate::store::check_schema(self)
            }

            fn list(
                &mut self,
                f: &$crate::admin::Filter,
                page: $crate::admin::Page,
                limit: i64,
            ) -> QueryResult<Vec<$crate::admin::TaskSummary>> {
                use $crate::schema::consistency_task::dsl as t;
                let q = t::consistency_task
                    .filter(predicate(f))
                    .select($crate::admin::TaskSummary::as_select())
                    .order(t::id)
                    .limit(limit)
                    .into_boxed();
                match page {
                    $crate::admin::Page::AfterId(after) => q.filter(t::id.gt(after)).load(self),
                    $crate::admin::Page::Offset(n) => q.offset(n).load(self),
                }
            }

            fn find(&mut self, id: i64) -> QueryResult<Option<$crate::store::row::TaskRow>> {
                $crate::store::ops::Ops::find(self, id)
            }

            fn count(&mut self, f: &$crate::admin::Filter) -> QueryResult<i64> {
                use $crate::schema::consistency_task::dsl as t;
                t::consistency_task
                    .filter(predicate(f))
                    .count()
                    .get_result(self)
            }

            fn ids(&mut self, f: &$crate::admin::Filter, limit: i64) -> QueryResult<Vec<i64>> {
                use $crate::schema::consistency_task::dsl as t;
                t::consistency_task
                    .filter(predicate(f))
                    .select(t::id)
                    .order(t::id)
                    .limit(limit)
                    .load(self)
            }

            fn apply(
                &mut self,
                change: &$crate::admin::Change,
                f: &$crate::admin::Filter,
                batch: i64,
                progress: &mut dyn FnMut(usize),
            ) -> QueryResult<usize> {
                use $crate::admin::Change;
                use $crate::schema::consistency_task::dsl as t;
                let mut after = i64::MIN;
                let mut total = 0;
                loop {
                    // Two statements, because MySQL/MariaDB refuse LIMIT in an IN sub-select.
                    let ids: Vec<i64> = $crate::store::retry_transient(|| {
                        t::consistency_task
                            .filter(predicate(f))
                            .filter(t::id.gt(after))
                            .select(t::id)
                            .order(t::id)
                            .limit(batch)
                            .load(self)
                    })?;
                    let Some(&last) = ids.last() else { break };
                    after = last;
                    let n = $crate::store::retry_transient(|| {
                        let rows = t::consistency_task
                            .filter(t::id.eq_any(&ids))
                            .filter(predicate(f));
                        match change {
                            Change::Retry {
                                reset_attempts: true,
                                now,
                            } => diesel::update(rows)
                                .set((
                                    t::task_status.eq($crate::status::TaskStatus::Pending.as_i32()),
                                    t::execute_times.eq(0),
                                    t::execute_time.eq(*now),
                                    t::lease_token.eq(None::<i64>),
                                    t::lease_owner.eq(None::<String>),
                                    t::lease_expires_at.eq(None::<i64>),
                                    t::gmt_modified.eq(*now),
                                ))
                                .execute(self),
                            Change::Retry {
                                reset_attempts: false,
                                now,
                            } => diesel::update(rows)
                                .set((
                                    t::task_status.eq($crate::status::TaskStatus::Failed.as_i32()),
                                    t::execute_times.eq(diesel::dsl::case_when(
                                        // max_attempts > 0: `- 1` on a hand-written
                                        // i32::MIN would fail the statement (the worker then
                                        // holds the row, naming max_attempts).
                                        t::execute_times
                                            .ge(t::max_attempts)
                                            .and(t::max_attempts.gt(0)),
                                        t::max_attempts - 1,
                                    )
                                    .otherwise(t::execute_times)),
                                    t::execute_time.eq(*now),
                                    t::lease_token.eq(None::<i64>),
                                    t::lease_owner.eq(None::<String>),
                                    t::lease_expires_at.eq(None::<i64>),
                                    t::gmt_modified.eq(*now),
                                ))
                                .execute(self),
                            Change::Cancel { now, message } => diesel::update(rows)
                                .set((
                                    t::task_status.eq($crate::status::TaskStatus::Dead.as_i32()),
                                    t::execute_time.eq($crate::status::PARKED),
                                    t::error_msg.eq(message),
                                    t::lease_token.eq(None::<i64>),
                                    t::lease_owner.eq(None::<String>),
                                    t::lease_expires_at.eq(None::<i64>),
                                    t::gmt_modified.eq(*now),
                                ))
                                .execute(self),
                            Change::Delete => diesel::delete(rows).execute(self),
                        }
                    })?;
                    total += n;
                    progress(n);
                    if (ids.len() as i64) < batch {
                        break;
                    }
                }
                Ok(total)
            }

            fn stats(&mut self, now: i64) -> QueryResult<$crate::admin::Stats> {
                use diesel::dsl::count_star;
                use $crate::schema::consistency_task::dsl as t;
                let by_status = t::consistency_task
                    .group_by(t::task_status)
                    .select((t::task_status, count_star()))
                    .order(t::task_status)
                    .load(self)?;
                let by_signature = t::consistency_task
                    .group_by((t::method_sign_name, t::task_status))
                    .select((t::method_sign_name, t::task_status, count_star()))
                    .order((t::method_sign_name, t::task_status))
                    .load(self)?;
                // `lease::claimable` and due: idle, or running under a lapsed (or no) lease.
                let due = t::consistency_task
                    .filter(
                        t::task_status.eq_any([0, 2]).or(t::task_status.eq(1).and(
                            t::lease_expires_at
                                .is_null()
                                .or(t::lease_expires_at.le(now)),
                        )),
                    )
                    .filter(t::execute_time.le(now));
                let due_now = due.clone().count().get_result(self)?;
                let oldest_due = due
                    .order(t::execute_time)
                    .select((t::id, t::method_sign_name, t::execute_time))
                    .first::<(i64, String, i64)>(self)
                    .optional()?
                    .map(|(id, signature, execute_time)| $crate::admin::OldestDue {
                        id,
                        signature,
                        execute_time,
                    });
                Ok($crate::admin::Stats {
                    by_status,
                    by_signature,
                    due_now,
                    oldest_due,
                })
            }

            fn schedules(&mut self) -> QueryResult<Vec<$crate::store::row::ScheduleRow>> {
                $crate::store::ops::Ops::schedules(self)
            }
        }
    };
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    admin_ops!(diesel::pg::PgConnection, diesel::pg::Pg);
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    admin_ops!(diesel::mysql::MysqlConnection, diesel::mysql::Mysql);
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    admin_ops!(diesel::sqlite::SqliteConnection, diesel::sqlite::Sqlite);
}

/// Pooled connections answer exactly like the connection they wrap.
impl<C> Admin for diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<C>>
where
    C: Admin + diesel::r2d2::R2D2Connection + 'static,
{
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn migrate(&mut self) -> Result<(), Error> {
        (**self).migrate()
    }
    fn check_schema(&mut self) -> Result<(), Error> {
        (**self).check_schema()
    }
    fn list(&mut self, f: &Filter, page: Page, limit: i64) -> QueryResult<Vec<TaskSummary>> {
        (**self).list(f, page, limit)
    }
    fn find(&mut self, id: i64) -> QueryResult<Option<TaskRow>> {
        (**self).find(id)
    }
    fn count(&mut self, f: &Filter) -> QueryResult<i64> {
        (**self).count(f)
    }
    fn ids(&mut self, f: &Filter, limit: i64) -> QueryResult<Vec<i64>> {
        (**self).ids(f, limit)
    }
    fn apply(
        &mut self,
        change: &Change,
        f: &Filter,
        batch: i64,
        progress: &mut dyn FnMut(usize),
    ) -> QueryResult<usize> {
        (**self).apply(change, f, batch, progress)
    }
    fn stats(&mut self, now: i64) -> QueryResult<Stats> {
        (**self).stats(now)
    }
    fn schedules(&mut self) -> QueryResult<Vec<ScheduleRow>> {
        (**self).schedules()
    }
}

/// `%text%` for `LIKE … ESCAPE '!'`, with `%`, `_` and `!` in `text` matched literally.
pub(crate) fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '!') {
            p.push('!');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Whether a stored `execute_time` means "never claimed" (dead, held, kept completed).
pub(crate) fn is_parked(execute_time: i64) -> bool {
    execute_time == PARKED
}
