//! Operator queries about queues and ordering keys: counts per queue, the keys that are blocked,
//! and taking a key's blocking task out of its line (`tend stats`, `tend keys …`, the
//! dashboard).
//!
//! A key is *blocked* when its first row (the lowest id whose status is not succeeded: kept
//! completed rows do not count, as in the claim) is dead or held: no later task of the key is
//! claimed until an operator retries, deletes or skips that row. Skipping sets the row's
//! `ordering_key` to NULL, so it no longer counts for the key; the row itself stays dead or held.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};

use crate::status::TaskStatus;

/// Counts per queue for `tend stats` and the overview.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueueStats {
    /// (queue, status, rows), by queue then status.
    pub by_queue: Vec<(String, i32, i64)>,
    /// (queue, rows a worker may claim now), by queue; queues with none are left out.
    pub due_by_queue: Vec<(String, i64)>,
    /// (queue, blocked keys), by the blocking row's queue; queues with none are left out.
    pub blocked_by_queue: Vec<(String, i64)>,
}

impl QueueStats {
    /// Every blocked key.
    pub fn blocked_keys(&self) -> i64 {
        self.blocked_by_queue.iter().map(|x| x.1).sum()
    }

    /// The queues in name order, each with its (status, rows), due rows and blocked keys.
    pub fn queues(&self) -> Vec<QueueCounts> {
        let mut out: Vec<QueueCounts> = Vec::new();
        let at = |name: &str, out: &mut Vec<QueueCounts>| -> usize {
            match out.binary_search_by(|q| q.queue.as_str().cmp(name)) {
                Ok(i) => i,
                Err(i) => {
                    out.insert(
                        i,
                        QueueCounts {
                            queue: name.to_string(),
                            ..QueueCounts::default()
                        },
                    );
                    i
                }
            }
        };
        for (q, status, n) in &self.by_queue {
            let i = at(q, &mut out);
            out[i].by_status.push((*status, *n));
        }
        for (q, n) in &self.due_by_queue {
            let i = at(q, &mut out);
            out[i].due_now = *n;
        }
        for (q, n) in &self.blocked_by_queue {
            let i = at(q, &mut out);
            out[i].blocked_keys = *n;
        }
        out
    }
}

/// One queue's counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueueCounts {
    pub queue: String,
    /// (status, rows), by status.
    pub by_status: Vec<(i32, i64)>,
    pub due_now: i64,
    pub blocked_keys: i64,
}

impl QueueCounts {
    /// Rows in `status`.
    pub fn count(&self, status: i32) -> i64 {
        self.by_status
            .iter()
            .filter(|(s, _)| *s == status)
            .map(|x| x.1)
            .sum()
    }

    /// Rows whose status this build does not know.
    pub fn unknown(&self) -> i64 {
        self.by_status
            .iter()
            .filter(|(s, _)| TaskStatus::from_i32(*s).is_none())
            .map(|x| x.1)
            .sum()
    }

    /// Every row.
    pub fn total(&self) -> i64 {
        self.by_status.iter().map(|x| x.1).sum()
    }
}

/// The first row of an ordering key (lowest id, status not succeeded) and how many rows of the
/// key wait behind it.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct KeyHead {
    #[diesel(sql_type = Text)]
    pub ordering_key: String,
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Integer)]
    pub task_status: i32,
    #[diesel(sql_type = Text)]
    pub queue: String,
    #[diesel(sql_type = Text)]
    pub method_sign_name: String,
    #[diesel(sql_type = Text)]
    pub error_msg: String,
    #[diesel(sql_type = BigInt)]
    pub gmt_modified: i64,
    /// Later rows of the key that are not succeeded.
    #[diesel(sql_type = BigInt)]
    pub waiting: i64,
}

impl KeyHead {
    /// Whether this row blocks its key until an operator acts (dead or held).
    pub fn blocks(&self) -> bool {
        is_blocking(self.task_status)
    }
}

/// Whether a key's first row in `status` blocks the key until an operator acts.
pub(crate) fn is_blocking(status: i32) -> bool {
    status == TaskStatus::Dead.as_i32() || status == TaskStatus::Held.as_i32()
}

/// What [`Keys::skip_key`] did.
#[derive(Debug, Clone)]
pub(crate) enum Skip {
    /// No row that is not succeeded has the key.
    NoTasks,
    /// The key's first row is not dead or held: nothing was changed.
    NotBlocked(KeyHead),
    /// The row was taken out of the key's line (as it was before the change).
    Skipped(KeyHead),
}

/// The rows whose key is blocked by them: keyed, dead or held, no earlier row of the key left.
const BLOCKING: &str = "FROM consistency_task AS f WHERE f.ordering_key IS NOT NULL \
     AND f.task_status IN (4, 5) AND NOT EXISTS (SELECT 1 FROM consistency_task AS o \
     WHERE o.ordering_key = f.ordering_key AND o.id < f.id AND o.task_status <> 3)";

/// The operator queries about queues and keys, per connection type.
pub(crate) trait Keys {
    /// Counts by queue and status, due rows and blocked keys per queue.
    fn queue_stats(&mut self, now: i64) -> QueryResult<QueueStats>;
    /// The first `limit` blocked keys, oldest blocking row first.
    fn blocked_keys(&mut self, limit: i64) -> QueryResult<Vec<KeyHead>>;
    /// The key's first row, if any row that is not succeeded has the key.
    fn key_head(&mut self, key: &str) -> QueryResult<Option<KeyHead>>;
    /// Takes the key's first row out of its line when it is dead or held: its `ordering_key`
    /// becomes NULL and `note` is appended to its `error_msg`, in one transaction that reads
    /// the first row again.
    fn skip_key(&mut self, key: &str, note: &str, now: i64) -> QueryResult<Skip>;
}

#[derive(QueryableByName)]
struct QueueCount {
    #[diesel(sql_type = Text)]
    queue: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

macro_rules! keys_ops {
    ($conn:ty) => {
        impl $crate::admin::keys::Keys for $conn {
            fn queue_stats(&mut self, now: i64) -> QueryResult<QueueStats> {
                use diesel::dsl::count_star;
                use $crate::schema::consistency_task::dsl as t;
                use $crate::status::TaskStatus::{Failed, Pending, Running};
                let by_queue = t::consistency_task
                    .group_by((t::queue, t::task_status))
                    .select((t::queue, t::task_status, count_star()))
                    .order((t::queue, t::task_status))
                    .load(self)?;
                let claimable = [Pending.as_i32(), Running.as_i32(), Failed.as_i32()];
                let due_by_queue = t::consistency_task
                    .filter(t::task_status.eq_any(claimable))
                    .filter(t::execute_time.le(now))
                    .group_by(t::queue)
                    .select((t::queue, count_star()))
                    .order(t::queue)
                    .load(self)?;
                let blocked: Vec<QueueCount> = diesel::sql_query(format!(
                    "SELECT f.queue AS queue, COUNT(*) AS n {BLOCKING} GROUP BY f.queue \
                     ORDER BY f.queue"
                ))
                .load(self)?;
                Ok(QueueStats {
                    by_queue,
                    due_by_queue,
                    blocked_by_queue: blocked.into_iter().map(|b| (b.queue, b.n)).collect(),
                })
            }

            fn blocked_keys(&mut self, limit: i64) -> QueryResult<Vec<KeyHead>> {
                diesel::sql_query(format!(
                    "SELECT f.ordering_key AS ordering_key, f.id AS id, \
                     f.task_status AS task_status, f.queue AS queue, \
                     f.method_sign_name AS method_sign_name, f.error_msg AS error_msg, \
                     f.gmt_modified AS gmt_modified, (SELECT COUNT(*) FROM consistency_task \
                     AS w WHERE w.ordering_key = f.ordering_key AND w.id > f.id AND \
                     w.task_status <> 3) AS waiting {BLOCKING} ORDER BY f.id LIMIT {}",
                    limit.max(0)
                ))
                .load(self)
            }

            fn key_head(&mut self, key: &str) -> QueryResult<Option<KeyHead>> {
                use $crate::schema::consistency_task::dsl as t;
                let succeeded = TaskStatus::Succeeded.as_i32();
                let head = t::consistency_task
                    .filter(t::ordering_key.eq(key))
                    .filter(t::task_status.ne(succeeded))
                    .order(t::id)
                    .select((
                        t::id,
                        t::task_status,
                        t::queue,
                        t::method_sign_name,
                        t::error_msg,
                        t::gmt_modified,
                    ))
                    .first::<(i64, i32, String, String, String, i64)>(self)
                    .optional()?;
                let Some((id, task_status, queue, method_sign_name, error_msg, gmt_modified)) =
                    head
                else {
                    return Ok(None);
                };
                let waiting = t::consistency_task
                    .filter(t::ordering_key.eq(key))
                    .filter(t::id.gt(id))
                    .filter(t::task_status.ne(succeeded))
                    .count()
                    .get_result(self)?;
                Ok(Some(KeyHead {
                    ordering_key: key.to_string(),
                    id,
                    task_status,
                    queue,
                    method_sign_name,
                    error_msg,
                    gmt_modified,
                    waiting,
                }))
            }

            fn skip_key(&mut self, key: &str, note: &str, now: i64) -> QueryResult<Skip> {
                use $crate::schema::consistency_task::dsl as t;
                $crate::store::retry_transient(|| {
                    self.transaction(|c| {
                        let Some(head) = c.key_head(key)? else {
                            return Ok(Skip::NoTasks);
                        };
                        if !head.blocks() {
                            return Ok(Skip::NotBlocked(head));
                        }
                        let msg = if head.error_msg.is_empty() {
                            note.to_string()
                        } else {
                            format!("{}\n{note}", head.error_msg)
                        };
                        let n = diesel::update(
                            t::consistency_task
                                .filter(t::id.eq(head.id))
                                .filter(t::ordering_key.eq(key))
                                .filter(t::task_status.eq(head.task_status)),
                        )
                        .set((
                            t::ordering_key.eq(None::<String>),
                            t::error_msg.eq(msg),
                            t::gmt_modified.eq(now),
                        ))
                        .execute(c)?;
                        // Changed between the read and the update (a retry, a delete): the
                        // caller sees the row as it is now.
                        if n == 0 {
                            return Ok(match c.key_head(key)? {
                                Some(h) => Skip::NotBlocked(h),
                                None => Skip::NoTasks,
                            });
                        }
                        Ok(Skip::Skipped(head))
                    })
                })
                .inspect(|skip| {
                    // The next task of the key may wait in line behind the skipped one: it is
                    // first now. (If this fails, the pools' sweep of the line releases it.)
                    if let Skip::Skipped(head) = skip {
                        let released =
                            $crate::store::ops::Ops::release_next(self, key, head.id, now);
                        if let Err(e) = released {
                            log::warn!("tend: releasing the task after {} failed: {e}", head.id);
                        }
                    }
                })
            }
        }
    };
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    keys_ops!(diesel::pg::PgConnection);
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    keys_ops!(diesel::mysql::MysqlConnection);
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    keys_ops!(diesel::sqlite::SqliteConnection);
}

/// Pooled connections answer exactly like the connection they wrap.
impl<C> Keys for diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<C>>
where
    C: Keys + diesel::r2d2::R2D2Connection + 'static,
{
    fn queue_stats(&mut self, now: i64) -> QueryResult<QueueStats> {
        (**self).queue_stats(now)
    }
    fn blocked_keys(&mut self, limit: i64) -> QueryResult<Vec<KeyHead>> {
        (**self).blocked_keys(limit)
    }
    fn key_head(&mut self, key: &str) -> QueryResult<Option<KeyHead>> {
        (**self).key_head(key)
    }
    fn skip_key(&mut self, key: &str, note: &str, now: i64) -> QueryResult<Skip> {
        (**self).skip_key(key, note, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_merge_in_name_order() {
        let st = QueueStats {
            by_queue: vec![
                ("default".into(), 0, 2),
                ("default".into(), 4, 1),
                ("mail".into(), 5, 3),
            ],
            due_by_queue: vec![("default".into(), 2)],
            blocked_by_queue: vec![("a-first".into(), 1), ("mail".into(), 2)],
        };
        let q = st.queues();
        let names: Vec<&str> = q.iter().map(|q| q.queue.as_str()).collect();
        assert_eq!(names, ["a-first", "default", "mail"]);
        assert_eq!(q[1].count(0), 2);
        assert_eq!(q[1].total(), 3);
        assert_eq!(q[1].due_now, 2);
        assert_eq!(q[2].blocked_keys, 2);
        assert_eq!(st.blocked_keys(), 3);
        assert!(is_blocking(4) && is_blocking(5) && !is_blocking(2));
    }
}
