//! The one definition of a leased row: which rows a claim takes, the lease every claim writes,
//! the re-check that only still-claimable rows are leased, and a read row as the lease left it.

use super::row::{Claim, ClaimRow, Claimed};
use super::stmt;

/// The claim's lease as one statement over listed ids (for backends that read the due rows
/// first: MySQL, which has no `UPDATE … RETURNING`, and SQLite, whose `RETURNING` costs a
/// temporary table per run).
///
/// The lease re-checks that each row is still claimable ([`claimable`], and due): on a server
/// whose `SKIP LOCKED` takes no lock (TiDB) or locks on one node only (Galera), another
/// claimer may have leased a row between the read and this update, and it must not be leased
/// twice. Only rows the update matched are run (see `lease_rows!`).
pub(crate) fn lease_by_ids<'a>(c: &Claim<'a>, ids: &[i64]) -> stmt::Stmt<'a> {
    use stmt::Bind;
    let s = stmt::Stmt::new("UPDATE consistency_task SET task_status = 1, execute_times = ")
        .sql(&next_attempt("execute_times"));
    let s = lease_set(s, c).sql(" WHERE id IN ").ids(ids).sql(" AND ");
    claimable(s, "task_status", "lease_expires_at", c.now)
        .sql(" AND execute_time <= ")
        .bind(Bind::I64(c.now))
}

/// The statuses a claim takes whatever the lease columns hold (`TaskStatus::is_claimable` but
/// running): pending and failed.
pub(crate) const IDLE_SQL: &str = "(0, 2)";

/// Appends `(status IN (0, 2) OR (status = 1 AND (lease IS NULL OR lease <= now)))`: a row a
/// claim may take by its status, pending or failed, or running under a lease that lapsed at
/// `now` (its worker crashed or hung) or that it never had (a row written as running by hand
/// or by an older framework must not be stuck for good). The caller adds the due time
/// (`execute_time <= now`).
///
/// The lease leaves `execute_time` alone (as every column an index holds, see [`lease_set`]),
/// so a running row stays in the due range: this is what keeps it out of claims until its
/// lease lapses. `status` and `lease` are the columns as the statement names them (an alias,
/// SQLite's `+task_status`).
pub(crate) fn claimable<'a, ST>(
    s: stmt::Stmt<'a, ST>,
    status: &str,
    lease: &str,
    now: i64,
) -> stmt::Stmt<'a, ST> {
    s.sql("(")
        .sql(status)
        .sql(" IN ")
        .sql(IDLE_SQL)
        .sql(" OR (")
        .sql(status)
        .sql(" = 1 AND (")
        .sql(lease)
        .sql(" IS NULL OR ")
        .sql(lease)
        .sql(" <= ")
        .bind(stmt::Bind::I64(now))
        .sql(")))")
}

/// `execute_times` plus one, saturating at `i32::MAX` (the column is a 32-bit INTEGER on every
/// backend: a plain `+ 1` on a row at the maximum fails the whole claim on PostgreSQL and
/// MySQL, and would stop every other row from being claimed).
pub(crate) fn next_attempt(column: &str) -> String {
    format!("CASE WHEN {column} < 2147483647 THEN {column} + 1 ELSE {column} END")
}

/// Leases rows read by a due-rows `SELECT` (MySQL, SQLite) with [`lease_by_ids`], and returns
/// those actually leased: all of them when the update matched every id (the common case, no
/// extra statement), else the ones now holding this claim's token. A macro because the
/// statements need the concrete connection type.
macro_rules! lease_rows {
    ($conn:expr, $c:expr, $rows:expr) => {{
        let (conn, c, rows): (
            _,
            &$crate::store::row::Claim<'_>,
            Vec<$crate::store::row::ClaimRow>,
        ) = ($conn, $c, $rows);
        if rows.is_empty() {
            Ok(Vec::new())
        } else {
            // Sorted: one lock order for every statement tend runs by id.
            let mut ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            ids.sort_unstable();
            let leased = $crate::store::lease::lease_by_ids(c, &ids).execute(&mut *conn)?;
            if leased == rows.len() {
                Ok($crate::store::lease::as_leased(rows, c))
            } else {
                // Some rows changed between the read and the lease: keep only ours.
                let ours: std::collections::HashSet<i64> =
                    $crate::store::lease::leased_by(c.token, &ids)
                        .load::<i64>(&mut *conn)?
                        .into_iter()
                        .collect();
                log::warn!(
                    "tend: {} of {} rows read as due were no longer claimable when leased \
                     (another claimer took them: the server's SKIP LOCKED did not lock them); \
                     they are left to it",
                    rows.len() - ours.len(),
                    rows.len()
                );
                let rows = rows.into_iter().filter(|r| ours.contains(&r.id)).collect();
                Ok($crate::store::lease::as_leased(rows, c))
            }
        }
    }};
}
pub(crate) use lease_rows;

/// The ids among `ids` whose rows hold the lease `token`.
pub(crate) fn leased_by<'a>(token: i64, ids: &[i64]) -> stmt::Stmt<'a, diesel::sql_types::BigInt> {
    stmt::Stmt::new("SELECT id FROM consistency_task WHERE lease_token = ")
        .bind(stmt::Bind::I64(token))
        .sql(" AND id IN ")
        .ids(ids)
        .typed()
}

/// The lease every claim writes after `task_status` and `execute_times`: `, lease_expires_at =
/// …, lease_token = …, lease_owner = …`.
///
/// No column any index holds, nor any partial index's predicate reads (issue 16): the due time
/// stays (a lapsed lease is found by [`claimable`]), `gmt_modified` stays (the kept rows'
/// index holds it), and the kept rows' index is partial on `duration_ms`, not on the status.
/// PostgreSQL then makes the lease a HOT update (no index entry written, none left dead for
/// claims to step over), InnoDB and SQLite write no secondary index. PostgreSQL drain of 60 000
/// no-op tasks with 4 threads, 2 A/B runs: 57.7k/58.3k -> 81.0k/79.0k tasks/s.
pub(crate) fn lease_set<'a, ST>(s: stmt::Stmt<'a, ST>, c: &Claim<'a>) -> stmt::Stmt<'a, ST> {
    use stmt::Bind;
    s.sql(", lease_expires_at = ")
        .bind(Bind::I64(c.lease_until))
        .sql(", lease_token = ")
        .bind(Bind::I64(c.token))
        .sql(", lease_owner = ")
        .bind(Bind::Text(c.owner))
}

/// How a backend writes the claim's union of priority levels and its row lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `SELECT * FROM (level … FOR UPDATE SKIP LOCKED) AS l0 UNION ALL …`: PostgreSQL allows a
    /// locking clause only in a sub-select of a union.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Pg,
    /// `(level … FOR UPDATE SKIP LOCKED) UNION ALL (…) LIMIT n`.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    MySql,
    /// `SELECT * FROM (level …) AS l0 UNION ALL SELECT * FROM (…) AS l1 … LIMIT n`, locking
    /// nothing: SQLite's claim (one writer) and the due-probe on every backend.
    Unlocked,
}

/// Appends to `s` which rows a claim takes, as a `SELECT` of `columns` from `consistency_task AS k`: due rows
/// (`execute_time <= now`, [`claimable`]) of the claim's queue, highest priority first, then
/// in due order, at most `limit`, never a row whose ordering key has an earlier row still in
/// the table or a later one running ([`ORDERED_SQL`]).
///
/// An untargeted claim is a `UNION ALL` of one branch per priority level, highest first, each
/// an `ORDER BY execute_time LIMIT n` range of the index `(queue, priority, execute_time)`:
/// each branch reads only due rows, and the levels that have none cost one index probe. (One
/// `ORDER BY priority DESC, execute_time` over the index would walk every not-yet-due row of a
/// higher level before reaching a due row of a lower one.) A targeted claim (`ids`) reads its
/// rows by primary key and sorts the few it finds; a claim of every queue (the test kit's)
/// sorts every due row. `status` is the column as the backend should
/// read it (SQLite's `+task_status` keeps its planner on the due index).
pub(crate) fn due_rows<'a, ST>(
    s: stmt::Stmt<'a, ST>,
    columns: &str,
    c: &Claim<'a>,
    status: &str,
    dialect: Dialect,
) -> stmt::Stmt<'a, ST> {
    due_rows_of(s, columns, c, status, dialect, &ALL_LEVELS)
}

/// Every priority level, highest first.
pub(crate) const ALL_LEVELS: [i32; 7] = [3, 2, 1, 0, -1, -2, -3];

/// [`due_rows`] over the priority `levels` given (highest first; not empty): MySQL's claim
/// names only the levels that have due rows (see [`levels_due`]), since MariaDB materializes
/// every branch of a union, where PostgreSQL stops at the first branches that fill the limit.
pub(crate) fn due_rows_of<'a, ST>(
    s: stmt::Stmt<'a, ST>,
    columns: &str,
    c: &Claim<'a>,
    status: &str,
    dialect: Dialect,
    levels: &[i32],
) -> stmt::Stmt<'a, ST> {
    use stmt::Bind;
    debug_assert!(!levels.is_empty());
    let lock = if dialect == Dialect::Unlocked {
        ""
    } else {
        " FOR UPDATE SKIP LOCKED"
    };
    let level = |s: stmt::Stmt<'a, ST>, priority: Option<i32>| -> stmt::Stmt<'a, ST> {
        let s = s
            .sql("SELECT ")
            .sql(columns)
            .sql(" FROM consistency_task AS k WHERE ");
        let s = match c.queue {
            Some(q) => s.sql("k.queue = ").bind(Bind::Text(q)).sql(" AND "),
            None => s,
        };
        let s = match priority {
            Some(p) => s.sql(&format!("k.priority = {p} AND ")),
            None => s,
        };
        let s = s
            .sql("k.execute_time <= ")
            .bind(Bind::I64(c.now))
            .sql(" AND ");
        let s = claimable(s, status, "k.lease_expires_at", c.now);
        let s = match c.ids {
            Some(ids) => s.sql(" AND k.id IN ").ids(ids),
            None => s,
        };
        let s = if c.exclude.is_empty() {
            s
        } else {
            s.sql(" AND k.id NOT IN ").ids(c.exclude)
        };
        let s = ordered(s, c.now);
        let s = s.sql(if priority.is_some() {
            " ORDER BY k.execute_time LIMIT "
        } else {
            " ORDER BY k.priority DESC, k.execute_time LIMIT "
        });
        s.bind(Bind::I64(c.limit)).sql(lock)
    };
    if c.ids.is_some() || c.queue.is_none() {
        return level(s, None);
    }
    if let [p] = levels {
        // One level: the plain statement, no union.
        return level(s, Some(*p));
    }
    let mut s = s;
    if dialect == Dialect::Pg {
        s = s.sql("SELECT * FROM (");
    }
    for (i, &p) in levels.iter().enumerate() {
        if i > 0 {
            s = s.sql(" UNION ALL ");
        }
        s = match dialect {
            Dialect::Pg | Dialect::Unlocked => s.sql("SELECT * FROM ("),
            Dialect::MySql => s.sql("("),
        };
        s = level(s, Some(p));
        s = match dialect {
            Dialect::Pg | Dialect::Unlocked => s.sql(&format!(") AS l{i}")),
            Dialect::MySql => s.sql(")"),
        };
    }
    if dialect == Dialect::Pg {
        s = s.sql(") AS u");
    }
    s.sql(" LIMIT ").bind(Bind::I64(c.limit))
}

/// Which priority levels of `queue` have a due claimable row, as one `0`/`1` per level of
/// [`ALL_LEVELS`]: one index probe each (`EXISTS` stops at the first row of the range).
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) fn levels_due(
    queue: &str,
    now: i64,
) -> stmt::Stmt<
    '_,
    (
        diesel::sql_types::BigInt,
        diesel::sql_types::BigInt,
        diesel::sql_types::BigInt,
        diesel::sql_types::BigInt,
        diesel::sql_types::BigInt,
        diesel::sql_types::BigInt,
        diesel::sql_types::BigInt,
    ),
> {
    use stmt::Bind;
    let mut s = stmt::Stmt::new("SELECT ").typed();
    for (i, p) in ALL_LEVELS.iter().enumerate() {
        if i > 0 {
            s = s.sql(", ");
        }
        s = s
            .sql("CAST(EXISTS (SELECT 1 FROM consistency_task WHERE queue = ")
            .bind(Bind::Text(queue))
            .sql(&format!(" AND priority = {p} AND execute_time <= "))
            .bind(Bind::I64(now))
            .sql(" AND ");
        s = claimable(s, "task_status", "lease_expires_at", now).sql(") AS SIGNED)");
    }
    s
}

/// The claim's order per key, on a row `k` of the claim: ` AND (no ordering key, or no earlier
/// row of the key still in the table (succeeded rows kept for audit do not count), and no
/// later row of the key running under an unexpired lease)`. The second part keeps "one at a
/// time" when two transactions enqueue the same key at once and commit in the other order than
/// they inserted (a later id may then run first; the earlier one waits for it). It reads
/// existence, not locks, so it holds under `SKIP LOCKED`: a row another claimer has locked
/// still exists.
pub(crate) fn ordered<ST>(s: stmt::Stmt<'_, ST>, now: i64) -> stmt::Stmt<'_, ST> {
    s.sql(
        " AND (k.ordering_key IS NULL OR (NOT EXISTS (SELECT 1 FROM consistency_task AS o \
         WHERE o.ordering_key = k.ordering_key AND o.id < k.id AND o.task_status <> 3) \
         AND NOT EXISTS (SELECT 1 FROM consistency_task AS o WHERE o.ordering_key = \
         k.ordering_key AND o.id > k.id AND o.task_status = 1 AND o.lease_expires_at > ",
    )
    .bind(stmt::Bind::I64(now))
    .sql(")))")
}

/// Due pending rows of one queue that wait behind an earlier row of their ordering key (`id`,
/// key), at most `limit` per priority level, one index range per level as in [`due_rows`]:
/// what a fetcher moves into the line ([`crate::status::WAITING`]) so that its claims stop
/// reading them.
pub(crate) fn blocked_rows(
    queue: &str,
    now: i64,
    limit: i64,
) -> stmt::Stmt<'_, (diesel::sql_types::BigInt, diesel::sql_types::Text)> {
    use stmt::Bind;
    let mut s = stmt::Stmt::new("").typed();
    for (i, p) in (crate::queue::MIN_PRIORITY..=crate::queue::MAX_PRIORITY)
        .rev()
        .enumerate()
    {
        if i > 0 {
            s = s.sql(" UNION ALL ");
        }
        s = s
            .sql("SELECT * FROM (SELECT k.id, k.ordering_key FROM consistency_task AS k WHERE k.queue = ")
            .bind(Bind::Text(queue))
            .sql(&format!(" AND k.priority = {p} AND k.execute_time <= "))
            .bind(Bind::I64(now))
            .sql(
                " AND k.task_status = 0 AND k.ordering_key IS NOT NULL AND EXISTS (SELECT 1 \
                 FROM consistency_task AS o WHERE o.ordering_key = k.ordering_key AND o.id < \
                 k.id AND o.task_status <> 3) ORDER BY k.execute_time LIMIT ",
            )
            .bind(Bind::I64(limit))
            .sql(&format!(") AS l{i}"));
    }
    s
}

/// The first row still in line for `key` (its lowest id whose status is not 3, succeeded and
/// kept): the row every other row of the key waits behind.
pub(crate) fn key_head(key: &str) -> stmt::Stmt<'_, diesel::sql_types::BigInt> {
    stmt::Stmt::new("SELECT id FROM consistency_task WHERE ordering_key = ")
        .bind(stmt::Bind::Text(key))
        .sql(" AND task_status <> 3 ORDER BY id LIMIT 1")
        .typed()
}

/// Moves rows `ids` of `key` that are still due and pending into the line, behind `head`.
pub(crate) fn into_line<'a>(key: &'a str, head: i64, ids: &[i64], now: i64) -> stmt::Stmt<'a> {
    use stmt::Bind;
    stmt::Stmt::new("UPDATE consistency_task SET execute_time = ")
        .bind(Bind::I64(crate::status::WAITING))
        .sql(" WHERE id IN ")
        .ids(ids)
        .sql(" AND ordering_key = ")
        .bind(Bind::Text(key))
        .sql(" AND id > ")
        .bind(Bind::I64(head))
        .sql(" AND task_status = 0 AND execute_time <= ")
        .bind(Bind::I64(now))
}

/// The row next in line for `key` after row `after` (`id`, `execute_time`): the first one by id
/// that is still in line (status not 3). `ORDER BY … LIMIT 1` stops at it in the index
/// `(ordering_key, id)`.
pub(crate) fn next_in_line(
    key: &str,
    after: i64,
) -> stmt::Stmt<'_, (diesel::sql_types::BigInt, diesel::sql_types::BigInt)> {
    use stmt::Bind;
    stmt::Stmt::new("SELECT id, execute_time FROM consistency_task WHERE ordering_key = ")
        .bind(Bind::Text(key))
        .sql(" AND id > ")
        .bind(Bind::I64(after))
        .sql(" AND task_status <> 3 ORDER BY id LIMIT 1")
        .typed()
}

/// Makes row `id` due at `now` if it waits in the line (by primary key: an `UPDATE` whose
/// `WHERE` also names `execute_time` may be planned on the due index, and then reads every
/// row in line).
pub(crate) fn out_of_line<'a>(id: i64, now: i64) -> stmt::Stmt<'a> {
    use stmt::Bind;
    stmt::Stmt::new("UPDATE consistency_task SET execute_time = ")
        .bind(Bind::I64(now))
        .sql(" WHERE id = ")
        .bind(Bind::I64(id))
        .sql(" AND execute_time = ")
        .bind(Bind::I64(crate::status::WAITING))
}

/// The safety net of the line: up to `limit` rows of one queue and level in the line whose key
/// has no earlier row left (their release was missed: a process died between a completion
/// and its release, or an operator deleted a row by hand), as ids.
pub(crate) fn orphans_in_line<'a>(
    queue: &'a str,
    priority: i32,
    limit: i64,
) -> stmt::Stmt<'a, diesel::sql_types::BigInt> {
    use stmt::Bind;
    stmt::Stmt::new("SELECT k.id FROM consistency_task AS k WHERE k.queue = ")
        .bind(Bind::Text(queue))
        .sql(&format!(
            " AND k.priority = {priority} AND k.execute_time = "
        ))
        .bind(Bind::I64(crate::status::WAITING))
        .sql(
            " AND NOT EXISTS (SELECT 1 FROM consistency_task AS o WHERE o.ordering_key = \
             k.ordering_key AND o.id < k.id AND o.task_status <> 3) LIMIT ",
        )
        .bind(Bind::I64(limit))
        .typed()
}

/// Sorts claimed rows into the claim's order, the order the workers take them: highest
/// priority first, then due order, then id. For the
/// claims whose rows come back in no useful order (PostgreSQL's `RETURNING`, MySQL's locking
/// reads by primary key).
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
pub(crate) fn sort_in_claim_order(rows: &mut [ClaimRow]) {
    rows.sort_unstable_by_key(|r| (std::cmp::Reverse(r.priority), r.execute_time, r.id));
}

/// Rows read before [`lease_by_ids`] updated them (or by PostgreSQL's claim, with their values
/// before its lease), as the lease left them, with the status each had before.
pub(crate) fn as_leased(rows: Vec<ClaimRow>, c: &Claim<'_>) -> Vec<Claimed> {
    rows.into_iter().map(|r| r.leased(c)).collect()
}

/// `UPDATE … SET` a row parked in `status` with `message`, its lease dropped, `WHERE id = id`
/// (callers add the statuses it may be in): what cancelling a task and holding an unclaimable
/// row both write.
pub(crate) fn park_by_id<'a>(
    status: crate::status::TaskStatus,
    id: i64,
    now: i64,
    message: &'a str,
) -> stmt::Stmt<'a> {
    park(status, now, message)
        .sql(" WHERE id = ")
        .bind(stmt::Bind::I64(id))
}

/// `UPDATE … SET` rows parked in `status` with `message`, their lease dropped (the caller
/// writes the `WHERE`).
pub(crate) fn park<'a>(
    status: crate::status::TaskStatus,
    now: i64,
    message: &'a str,
) -> stmt::Stmt<'a> {
    use stmt::Bind;
    stmt::Stmt::new("UPDATE consistency_task SET task_status = ")
        .bind(Bind::I32(status.as_i32()))
        .sql(", execute_time = ")
        .bind(Bind::I64(crate::status::PARKED))
        .sql(", error_msg = ")
        .bind(Bind::Text(message))
        .sql(", lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL")
        .sql(", gmt_modified = ")
        .bind(Bind::I64(now))
}

#[cfg(test)]
mod tests {
    use crate::status::TaskStatus;

    /// `ALL_LEVELS` is every priority, highest first.
    #[test]
    fn all_levels_are_the_priorities_highest_first() {
        let want: Vec<i32> = (crate::queue::MIN_PRIORITY..=crate::queue::MAX_PRIORITY)
            .rev()
            .collect();
        assert_eq!(super::ALL_LEVELS.to_vec(), want);
    }

    /// The SQL's claimable set is `TaskStatus::is_claimable`: the idle statuses, and running
    /// (once its lease lapsed).
    #[test]
    fn claimable_sql_is_the_claimable_statuses() {
        let idle: Vec<String> = TaskStatus::ALL
            .iter()
            .filter(|s| s.is_claimable() && **s != TaskStatus::Running)
            .map(|s| s.as_i32().to_string())
            .collect();
        assert_eq!(super::IDLE_SQL, format!("({})", idle.join(", ")));
        assert!(TaskStatus::Running.is_claimable());
        assert_eq!(TaskStatus::Running.as_i32(), 1, "`claimable` spells it 1");
    }
}
