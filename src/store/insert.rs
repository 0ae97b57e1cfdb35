//! The inserts of new task rows: one row (every `enqueue`), and many (`enqueue_many`: multi-row
//! `VALUES` lists on SQLite, one `JSON_TABLE` insert per chunk on MySQL/MariaDB; PostgreSQL's
//! `unnest` insert is in `pg.rs`). The `VALUES` inserts have one text per shape, built once
//! per process and borrowed by every [`Stmt`] of that shape; the `JSON_TABLE` insert's shorter
//! text is built per statement.

use std::fmt::Write as _;

use super::stmt::{Bind, Stmt};

/// The columns of [`NewRow`](super::row::NewRow) in its field order.
pub(super) const NEW_ROW_COLUMNS: &str = "task_id, idempotency_key, task_status, execute_times, \
    max_attempts, execute_time, parameter_types, method_name, method_sign_name, \
    execute_interval_sec, delay_time, task_parameter, payload_version, execute_way, thread_way, \
    transaction_way, error_msg, alert_expression, alert_action_bean_name, fallback_class_name, \
    fallback_error_msg, shard_key, lease_token, lease_owner, lease_expires_at, gmt_create, \
    gmt_modified, trace_parent, queue, priority, ordering_key";

/// The most rows one statement of [`insert_rows`] carries (31 binds a row: 1 984 binds).
pub(crate) const INSERT_ROWS_MAX: usize = 64;

/// How [`insert_rows`] cuts `n` rows: chunks of [`INSERT_ROWS_MAX`], then the rest in powers of
/// two (100 = 64 + 32 + 4), so that every statement has one of 7 shapes diesel keeps prepared.
#[cfg(any(feature = "sqlite", test))]
pub(crate) fn insert_chunks(mut n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    while n > 0 {
        let c = if n >= INSERT_ROWS_MAX {
            INSERT_ROWS_MAX
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        out.push(c);
        n -= c;
    }
    out
}

/// The columns a lean row binds (see [`is_lean`]); the others take their column's default.
pub(super) const LEAN_ROW_COLUMNS: &str = "task_id, max_attempts, execute_time, parameter_types, \
    method_name, method_sign_name, execute_interval_sec, delay_time, task_parameter, \
    payload_version, execute_way, thread_way, transaction_way, error_msg, alert_expression, \
    shard_key, gmt_create, gmt_modified";

/// Whether every column `LEAN_ROW_COLUMNS` leaves out holds its default in `r` (the
/// migrations' `DEFAULT`s: status 0, no attempt, no key, no alerter, fallback or lease, no
/// trace, queue `default` at priority 0, no ordering key), as most enqueued rows do: such a row
/// binds 18 values instead of 31, and the database fills in the rest. (The alert expression
/// is bound: tasks have the seed's default expression unless they opt out.)
pub(crate) fn is_lean(r: &super::row::NewRow) -> bool {
    r.idempotency_key.is_none()
        && r.task_status == 0
        && r.execute_times == 0
        && r.alert_action_bean_name.is_none()
        && r.fallback_class_name.is_none()
        && r.fallback_error_msg.is_none()
        && r.lease_token.is_none()
        && r.lease_owner.is_none()
        && r.lease_expires_at.is_none()
        && r.trace_parent.is_none()
        && r.queue == crate::queue::DEFAULT_QUEUE
        && r.priority == 0
        && r.ordering_key.is_none()
}

/// The columns a bare row binds (see [`is_bare`]): what tells one task of the default options
/// from another. The others take their column's default.
/// (`error_msg` is bound too: MySQL's `MEDIUMTEXT` column has no default.)
pub(super) const BARE_ROW_COLUMNS: &str = "task_id, execute_time, parameter_types, method_name, \
    method_sign_name, task_parameter, error_msg, alert_expression, shard_key, gmt_create, \
    gmt_modified";

/// Which of [`NEW_ROW_COLUMNS`] a bare row binds ([`BARE_ROW_COLUMNS`], by index).
pub(super) const BARE: [usize; 11] = [0, 5, 6, 7, 8, 11, 16, 17, 21, 25, 26];

/// Whether `r` is lean ([`is_lean`]) and its options also hold their columns' defaults (the
/// migrations' `DEFAULT`s, which are [`TaskOptions::new`](crate::TaskOptions::new)'s: 25
/// attempts, 60 s interval and delay, payload version 1, right now, async, with
/// transaction): most single `enqueue`s. Its insert binds the 11 [`BARE_ROW_COLUMNS`] instead
/// of 18. Measured on SQLite, where the bind calls are most of what an insert costs beyond
/// SQLite's own work: tend's single-row insert took 1.45x the limit's samples with the lean
/// shape and 1.15x with this one (`perf`, the bench's enqueue phase, 2026-12-05). A
/// conformance test stores such a row and reads every column back, so a changed default
/// fails it.
pub(crate) fn is_bare(r: &super::row::NewRow) -> bool {
    is_lean(r)
        && r.max_attempts == 25
        && r.execute_interval_sec == 60
        && r.delay_time == 60
        && r.payload_version == 1
        && r.execute_way == 1
        && r.thread_way == 1
        && r.transaction_way == 1
}

/// The single-row insert of a bare row ([`is_bare`]) followed by `tail`; its text is built once
/// per tail and process.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn insert_one_bare(r: &super::row::NewRow, tail: Tail) -> Stmt<'_> {
    debug_assert!(is_bare(r));
    static TEXTS: [std::sync::OnceLock<(String, Vec<usize>)>; 4] =
        [const { std::sync::OnceLock::new() }; 4];
    let (sql, holes) = TEXTS[tail as usize].get_or_init(|| {
        let places = vec!["?"; BARE.len()].join(", ");
        let sql = format!(
            "INSERT INTO consistency_task ({BARE_ROW_COLUMNS}) VALUES ({places}){}",
            tail.sql()
        );
        let holes = sql.match_indices('?').map(|(i, _)| i).collect();
        (sql, holes)
    });
    let v = row_binds(r);
    Stmt::prepared(sql, holes, BARE.iter().map(|&c| v[c]).collect())
}

/// Which of [`NEW_ROW_COLUMNS`] a lean row binds ([`LEAN_ROW_COLUMNS`], by index).
pub(super) const LEAN: [usize; 18] = [
    0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 21, 25, 26,
];
/// Every column of [`NEW_ROW_COLUMNS`].
pub(super) const ALL: [usize; 31] = {
    let mut all = [0; 31];
    let mut i = 0;
    while i < 31 {
        all[i] = i;
        i += 1;
    }
    all
};
/// The columns of [`NEW_ROW_COLUMNS`] that tell the rows of one batch apart (name, key, due
/// time, payload, shard, lease, trace): always bound per row. The others (signature, type,
/// options, expression, timestamps) are usually the same for the whole batch.
const PER_ROW: [usize; 10] = [0, 1, 5, 11, 21, 22, 23, 24, 27, 30];

/// A row's values in [`NEW_ROW_COLUMNS`] order.
pub(super) fn row_binds(r: &super::row::NewRow) -> [Bind<'_>; 31] {
    // Exhaustive: a column added to `NewRow` fails to compile here until it is bound (and
    // named in `NEW_ROW_COLUMNS`), instead of being silently left out of every insert.
    let super::row::NewRow {
        task_id,
        idempotency_key,
        task_status,
        execute_times,
        max_attempts,
        execute_time,
        parameter_types,
        method_name,
        method_sign_name,
        execute_interval_sec,
        delay_time,
        task_parameter,
        payload_version,
        execute_way,
        thread_way,
        transaction_way,
        error_msg,
        alert_expression,
        alert_action_bean_name,
        fallback_class_name,
        fallback_error_msg,
        shard_key,
        lease_token,
        lease_owner,
        lease_expires_at,
        gmt_create,
        gmt_modified,
        trace_parent,
        queue,
        priority,
        ordering_key,
    } = r;
    [
        Bind::Text(task_id),
        Bind::OptText(idempotency_key.as_deref()),
        Bind::I32(*task_status),
        Bind::I32(*execute_times),
        Bind::I32(*max_attempts),
        Bind::I64(*execute_time),
        Bind::Text(parameter_types),
        Bind::Text(method_name),
        Bind::Text(method_sign_name),
        Bind::I32(*execute_interval_sec),
        Bind::I32(*delay_time),
        Bind::Bytes(task_parameter),
        Bind::I32(*payload_version),
        Bind::I32(*execute_way),
        Bind::I32(*thread_way),
        Bind::I32(*transaction_way),
        Bind::Text(error_msg),
        Bind::OptText(alert_expression.as_deref()),
        Bind::OptText(alert_action_bean_name.as_deref()),
        Bind::OptText(fallback_class_name.as_deref()),
        Bind::OptText(fallback_error_msg.as_deref()),
        Bind::I64(*shard_key),
        Bind::OptI64(*lease_token),
        Bind::OptText(lease_owner.as_deref()),
        Bind::OptI64(*lease_expires_at),
        Bind::I64(*gmt_create),
        Bind::I64(*gmt_modified),
        Bind::OptText(trace_parent.as_deref()),
        Bind::Text(queue),
        Bind::I32(*priority),
        Bind::OptText(ordering_key.as_deref()),
    ]
}

/// `INSERT INTO consistency_task (…) VALUES (…), (…)…` of `rows` (one row, or a power of two
/// up to [`INSERT_ROWS_MAX`]; see [`insert_chunks`]), followed by `tail` (say, `ON CONFLICT DO
/// NOTHING`). Unlike diesel's multi-row insert, which diesel never keeps prepared, this is
/// parsed and planned once per shape and connection. When every row is lean ([`is_lean`]) only
/// the lean columns are bound.
///
/// `numbered`: the backend takes numbered placeholders (`?NNN`, SQLite). Then, when the rows
/// agree in every column outside [`PER_ROW`], the later rows name the first row's placeholders
/// for those columns instead of binding the same values again (a batch of 100 bare rows binds
/// 4 values a row after the first instead of 18: binding was most of the client's work).
///
/// The statement's text depends only on its shape and is built once per shape and process
/// ([`insert_text`]); a call only gathers the binds.
pub(crate) fn insert_rows<'a>(
    rows: &'a [super::row::NewRow],
    tail: Tail,
    numbered: bool,
) -> Stmt<'a> {
    insert_rows_shaped(rows, tail, numbered).0
}

/// How many shapes [`insert_rows`] has: 7 row counts, lean or not, reusing or not, 4 tails.
pub(crate) const INSERT_SHAPES: usize = 7 * 2 * 2 * 4;

/// [`insert_rows`] and the index of its shape (below [`INSERT_SHAPES`]; the text is the same
/// for every statement of one index), for running it under a static key per shape.
pub(crate) fn insert_rows_shaped<'a>(
    rows: &'a [super::row::NewRow],
    tail: Tail,
    numbered: bool,
) -> (Stmt<'a>, usize) {
    let n = rows.len();
    debug_assert!(n.is_power_of_two() && n <= INSERT_ROWS_MAX);
    let Batch {
        lean,
        cols,
        first,
        reuse,
    } = Batch::of(rows, numbered);
    let mut binds = Vec::with_capacity(n * cols.len());
    binds.extend(cols.iter().map(|&c| first[c]));
    if reuse {
        let per: &[usize] = if lean { &LEAN_PER_ROW } else { &ALL_PER_ROW };
        for r in &rows[1..] {
            let v = per_row_binds(r);
            binds.extend(per.iter().map(|&k| v[k]));
        }
    } else {
        for r in &rows[1..] {
            let v = row_binds(r);
            binds.extend(cols.iter().map(|&c| v[c]));
        }
    }
    // Every shape's text, built once per process.
    static TEXTS: [std::sync::OnceLock<(String, Vec<usize>)>; INSERT_SHAPES] =
        [const { std::sync::OnceLock::new() }; INSERT_SHAPES];
    let shape = ((n.trailing_zeros() as usize * 2 + usize::from(lean)) * 2 + usize::from(reuse))
        * 4
        + tail as usize;
    let (sql, holes) = TEXTS[shape].get_or_init(|| insert_text(n, lean, reuse, tail.sql()));
    debug_assert_eq!(holes.len(), binds.len());
    (Stmt::prepared(sql, holes, binds), shape)
}

/// What follows the values of an insert of [`insert_rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Every variant is used only when PostgreSQL's and SQLite's stores are both built.
#[cfg_attr(not(all(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) enum Tail {
    /// Nothing.
    None = 0,
    /// `ON CONFLICT DO NOTHING` (PostgreSQL, SQLite: a row whose idempotency key exists is
    /// skipped).
    IgnoreConflict = 1,
    /// `RETURNING id` (PostgreSQL).
    ReturningId = 2,
    /// `ON CONFLICT DO NOTHING RETURNING id` (PostgreSQL).
    IgnoreConflictReturningId = 3,
}

impl Tail {
    fn sql(self) -> &'static str {
        match self {
            Tail::None => "",
            Tail::IgnoreConflict => " ON CONFLICT DO NOTHING",
            Tail::ReturningId => " RETURNING id",
            Tail::IgnoreConflictReturningId => " ON CONFLICT DO NOTHING RETURNING id",
        }
    }
}

/// Runs `$run` with `$s` the single-row insert of `$row` followed by `$tail`, under a static
/// statement key per shape ([`KEY_ONE_BARE`](super::stmt::KEY_ONE_BARE), `KEY_ONE_LEAN`,
/// `KEY_ONE_FULL`, `KEY_ONE_KEYED`): the insert every `enqueue` runs skips diesel's per-execution rebuild and
/// hash of its text. On one backend `$tail` must depend only on whether the row has an
/// idempotency key. (MySQL's single-row insert is a diesel DSL insert, `mysql.rs`.)
#[cfg(any(feature = "postgres", feature = "sqlite"))]
macro_rules! with_insert_one {
    ($row:expr, $tail:expr, |$s:ident| $run:expr) => {{
        use $crate::store::insert::{insert_one_bare, insert_rows, is_bare, is_lean};
        use $crate::store::stmt::{KEY_ONE_BARE, KEY_ONE_FULL, KEY_ONE_KEYED, KEY_ONE_LEAN};
        let row: &$crate::store::row::NewRow = $row;
        if is_bare(row) {
            let $s = insert_one_bare(row, $tail).keyed::<KEY_ONE_BARE>();
            $run
        } else if row.idempotency_key.is_some() {
            let $s = insert_rows(std::slice::from_ref(row), $tail, false).keyed::<KEY_ONE_KEYED>();
            $run
        } else if is_lean(row) {
            let $s = insert_rows(std::slice::from_ref(row), $tail, false).keyed::<KEY_ONE_LEAN>();
            $run
        } else {
            let $s = insert_rows(std::slice::from_ref(row), $tail, false).keyed::<KEY_ONE_FULL>();
            $run
        }
    }};
}
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) use with_insert_one;

/// `x == y`, without comparing the bytes of two texts that are the same `&str` (the rows of
/// one task type borrow their type's strings: most comparisons of a batch are of those).
fn same_text(x: &str, y: &str) -> bool {
    std::ptr::eq(x, y) || x == y
}

/// Whether column `c` of [`NEW_ROW_COLUMNS`] is usually the same for a whole batch.
pub(super) fn shared(c: usize) -> bool {
    !PER_ROW.contains(&c)
}

/// What a multi-row insert of `rows` binds: the lean columns or all ([`is_lean`]), the first
/// row's values, and whether the later rows agree with it in every [`shared`] column.
pub(super) struct Batch<'a> {
    pub(super) lean: bool,
    pub(super) cols: &'static [usize],
    pub(super) first: [Bind<'a>; 31],
    pub(super) reuse: bool,
}

impl<'a> Batch<'a> {
    /// `reuse`: whether the statement can bind the shared columns once (else never set).
    pub(super) fn of(rows: &'a [super::row::NewRow], reuse: bool) -> Batch<'a> {
        let head = &rows[0];
        // One pass over the fields themselves (no bind arrays: building two 31-value arrays
        // per row was most of a batch's client-side cost before its SQL, `perf` 2026-12-06).
        let mut lean = is_lean(head);
        let mut agree = reuse;
        for r in &rows[1..] {
            lean &= is_lean(r);
            agree = agree && shares_columns(head, r);
            if !lean && !agree {
                break;
            }
        }
        Batch {
            lean,
            cols: if lean { &LEAN } else { &ALL },
            first: row_binds(head),
            reuse: agree,
        }
    }
}

/// Whether `b` holds `a`'s values in every [`shared`] column (`Batch::of`'s test, on the
/// fields; a unit test checks it against [`row_binds`] and [`same`]).
fn shares_columns(a: &super::row::NewRow, b: &super::row::NewRow) -> bool {
    // Exhaustive: a column added to `NewRow` fails to compile here until it is sorted into
    // the per-row columns (ignored here) or the shared ones (compared).
    let super::row::NewRow {
        task_id: _,
        idempotency_key: _,
        task_status,
        execute_times,
        max_attempts,
        execute_time: _,
        parameter_types,
        method_name,
        method_sign_name,
        execute_interval_sec,
        delay_time,
        task_parameter: _,
        payload_version,
        execute_way,
        thread_way,
        transaction_way,
        error_msg,
        alert_expression,
        alert_action_bean_name,
        fallback_class_name,
        fallback_error_msg,
        shard_key: _,
        lease_token: _,
        lease_owner: _,
        lease_expires_at: _,
        gmt_create,
        gmt_modified,
        trace_parent: _,
        queue,
        priority,
        ordering_key: _,
    } = a;
    let text = same_text;
    fn opt(x: Option<&str>, y: Option<&str>) -> bool {
        match (x, y) {
            (Some(x), Some(y)) => same_text(x, y),
            (x, y) => x.is_none() && y.is_none(),
        }
    }
    *task_status == b.task_status
        && *execute_times == b.execute_times
        && *max_attempts == b.max_attempts
        && *execute_interval_sec == b.execute_interval_sec
        && *delay_time == b.delay_time
        && *payload_version == b.payload_version
        && *execute_way == b.execute_way
        && *thread_way == b.thread_way
        && *transaction_way == b.transaction_way
        && *gmt_create == b.gmt_create
        && *gmt_modified == b.gmt_modified
        && *priority == b.priority
        && text(parameter_types, &b.parameter_types)
        && text(method_name, &b.method_name)
        && text(method_sign_name, &b.method_sign_name)
        && text(error_msg, &b.error_msg)
        && text(queue, &b.queue)
        && opt(alert_expression.as_deref(), b.alert_expression.as_deref())
        && opt(
            alert_action_bean_name.as_deref(),
            b.alert_action_bean_name.as_deref(),
        )
        && opt(
            fallback_class_name.as_deref(),
            b.fallback_class_name.as_deref(),
        )
        && opt(
            fallback_error_msg.as_deref(),
            b.fallback_error_msg.as_deref(),
        )
}

/// The values of `r`'s [`PER_ROW`] columns, in that order (what a reusing batch binds for each
/// row after its first).
fn per_row_binds(r: &super::row::NewRow) -> [Bind<'_>; 10] {
    [
        Bind::Text(&r.task_id),
        Bind::OptText(r.idempotency_key.as_deref()),
        Bind::I64(r.execute_time),
        Bind::Bytes(&r.task_parameter),
        Bind::I64(r.shard_key),
        Bind::OptI64(r.lease_token),
        Bind::OptText(r.lease_owner.as_deref()),
        Bind::OptI64(r.lease_expires_at),
        Bind::OptText(r.trace_parent.as_deref()),
        Bind::OptText(r.ordering_key.as_deref()),
    ]
}

/// Which of [`per_row_binds`]'s values a reusing batch binds per row: of the lean columns,
/// the name, due time, payload and shard key; of all, every one.
const LEAN_PER_ROW: [usize; 4] = [0, 2, 3, 4];
const ALL_PER_ROW: [usize; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

/// The text of [`insert_rows`] for `n` rows and its placeholders' offsets.
fn insert_text(n: usize, lean: bool, reuse: bool, tail: &str) -> (String, Vec<usize>) {
    let cols: &[usize] = if lean { &LEAN } else { &ALL };
    let mut sql = String::from("INSERT INTO consistency_task (");
    sql.push_str(if lean {
        LEAN_ROW_COLUMNS
    } else {
        NEW_ROW_COLUMNS
    });
    sql.push_str(") VALUES ");
    let mut holes = Vec::with_capacity(n * cols.len());
    for i in 0..n {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        for (k, &c) in cols.iter().enumerate() {
            if k > 0 {
                sql.push_str(", ");
            }
            if reuse && i > 0 && shared(c) {
                // The first row bound its values to ?1, ?2, … in column order. A bare `?`
                // after this takes the largest number so far plus one: the next bind.
                write!(sql, "?{}", k + 1).expect("writing to a String");
            } else {
                holes.push(sql.len());
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql.push_str(tail);
    (sql, holes)
}

/// The most bytes of row data (JSON) one statement of [`insert_json`] carries, under MySQL's
/// and MariaDB's smallest default `max_allowed_packet` (16 MiB) with room for the largest
/// single row (a 4 MiB payload is 8 MiB of hex).
#[cfg(any(feature = "mysql", test))]
pub(crate) const JSON_BYTES_MAX: usize = 4 << 20;

/// A multi-row insert for MySQL 8 / MariaDB 10.6+: `INSERT … SELECT … FROM JSON_TABLE(?, …)
/// ORDER BY` the rows' order, the rows' values in one JSON array bound as one string. Without
/// numbered placeholders a `VALUES` list binds every value of every row and has one shape per
/// row count; this has a few shapes whatever the batch (every value of every row in the JSON,
/// or, when the rows agree in every column outside [`PER_ROW`], only those in the JSON and the
/// others bound once, as are the name and the due time when every row has the same), and is
/// one round trip for any batch up to the caller's chunk.
///
/// `json` is the caller's buffer (the statement borrows it); `rows` must not be empty. Text is
/// JSON-escaped, payloads are hex (`UNHEX`), `NULL`s are JSON `null`; every `JSON_TABLE` column
/// is `ERROR ON ERROR`, so a value that does not fit fails the statement instead of becoming
/// `NULL`. `ORDER BY j.n` (the array position) makes the ids follow the rows' order, as the
/// other backends' inserts do; order per key relies on it.
#[cfg(any(feature = "mysql", test))]
pub(crate) fn insert_json<'a>(rows: &'a [super::row::NewRow], json: &'a mut String) -> Stmt<'a> {
    debug_assert!(!rows.is_empty());
    let Batch {
        lean,
        cols,
        first,
        reuse,
    } = Batch::of(rows, true);
    // Of the per-row columns, the name (the signature, unless the caller named each task) and
    // the due time (one enqueue time, no per-task delay) are often the same for the whole
    // batch too: then they are bound once as well. The text is built per statement, so this
    // costs no prepared shape of its own beyond the 4 combinations.
    let (mut same_name, mut same_due) = (reuse, reuse);
    let head = &rows[0];
    for r in &rows[1..] {
        if !(same_name || same_due) {
            break;
        }
        same_name &= same_text(&r.task_id, &head.task_id);
        same_due &= r.execute_time == head.execute_time;
    }
    let in_json =
        |c: usize| !(reuse && (shared(c) || (c == 0 && same_name) || (c == 5 && same_due)));
    json.clear();
    json.push('[');
    for (i, r) in rows.iter().enumerate() {
        let v = row_binds(r);
        json.push_str(if i == 0 { "[" } else { ",[" });
        for (k, &c) in cols.iter().filter(|&&c| in_json(c)).enumerate() {
            if k > 0 {
                json.push(',');
            }
            json_value(json, v[c]);
        }
        json.push(']');
    }
    json.push(']');
    let json: &'a str = json;
    let mut columns = String::from("n FOR ORDINALITY");
    let mut s = Stmt::new("INSERT INTO consistency_task (")
        .sql(if lean {
            LEAN_ROW_COLUMNS
        } else {
            NEW_ROW_COLUMNS
        })
        .sql(") SELECT ");
    let mut at = 0;
    for (k, &c) in cols.iter().enumerate() {
        if k > 0 {
            s = s.sql(", ");
        }
        if !in_json(c) {
            // Bound once for every row (the select list's placeholders come first).
            s = s.bind(first[c]);
            continue;
        }
        let ty = match first[c] {
            Bind::I64(_) | Bind::OptI64(_) => "BIGINT",
            Bind::I32(_) => "INT",
            Bind::Text(_) | Bind::OptText(_) | Bind::Bytes(_) => "LONGTEXT",
        };
        s = if matches!(first[c], Bind::Bytes(_)) {
            s.sql(&format!("UNHEX(j.c{at})"))
        } else {
            s.sql(&format!("j.c{at}"))
        };
        write!(columns, ", c{at} {ty} PATH '$[{at}]' ERROR ON ERROR").expect("writing to a String");
        at += 1;
    }
    s.sql(" FROM JSON_TABLE(")
        .bind(Bind::Text(json))
        .sql(", '$[*]' COLUMNS (")
        .sql(&columns)
        .sql(")) AS j ORDER BY j.n")
}

/// `rows` cut into runs for [`insert_json`] whose JSON stays under [`JSON_BYTES_MAX`] (a row
/// larger than that alone goes alone).
#[cfg(any(feature = "mysql", test))]
pub(crate) fn json_chunks(
    rows: &[super::row::NewRow],
) -> impl Iterator<Item = &[super::row::NewRow]> {
    // An upper bound of a row's JSON: hex payload, text escaped at most 6 bytes a byte
    // (`\u001f`) for control characters, 21 bytes a number.
    let size = |r: &super::row::NewRow| -> usize {
        row_binds(r)
            .iter()
            .map(|b| match b {
                Bind::Text(t) | Bind::OptText(Some(t)) => 6 * t.len() + 3,
                Bind::Bytes(x) => 2 * x.len() + 3,
                _ => 21,
            })
            .sum()
    };
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        while n < rest.len() {
            bytes += size(&rest[n]);
            if n > 0 && bytes > JSON_BYTES_MAX {
                break;
            }
            n += 1;
        }
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// Appends `b` to `out` as a JSON value (see [`insert_json`]).
#[cfg(any(feature = "mysql", test))]
fn json_value(out: &mut String, b: Bind<'_>) {
    match b {
        Bind::I64(v) | Bind::OptI64(Some(v)) => write!(out, "{v}").expect("writing to a String"),
        Bind::I32(v) => write!(out, "{v}").expect("writing to a String"),
        Bind::OptI64(None) | Bind::OptText(None) => out.push_str("null"),
        Bind::Text(t) | Bind::OptText(Some(t)) => {
            out.push('"');
            for ch in t.chars() {
                match ch {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 => {
                        write!(out, "\\u{:04x}", c as u32).expect("writing to a String")
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Bind::Bytes(bytes) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push('"');
            out.reserve(bytes.len() * 2 + 1);
            for &x in bytes {
                out.push(HEX[usize::from(x >> 4)] as char);
                out.push(HEX[usize::from(x & 15)] as char);
            }
            out.push('"');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a == b`, without comparing the bytes of two texts that are the same `&str` (the rows of
    /// one task type borrow their type's strings: most comparisons of a batch are of those).
    fn same(a: Bind<'_>, b: Bind<'_>) -> bool {
        match (a, b) {
            (Bind::Text(x), Bind::Text(y)) | (Bind::OptText(Some(x)), Bind::OptText(Some(y))) => {
                std::ptr::eq(x, y) || x == y
            }
            _ => a == b,
        }
    }

    fn bare_row() -> super::super::row::NewRow {
        super::super::row::NewRow {
            task_id: "t".into(),
            idempotency_key: None,
            task_status: 0,
            execute_times: 0,
            max_attempts: 25,
            execute_time: 1,
            parameter_types: "p".into(),
            method_name: "m".into(),
            method_sign_name: "s".into(),
            execute_interval_sec: 60,
            delay_time: 0,
            task_parameter: vec![1],
            payload_version: 1,
            execute_way: 1,
            thread_way: 1,
            transaction_way: 1,
            error_msg: String::new(),
            alert_expression: Some("executeTimes > 1 && executeTimes < 5".into()),
            alert_action_bean_name: None,
            fallback_class_name: None,
            fallback_error_msg: None,
            shard_key: 0,
            lease_token: None,
            lease_owner: None,
            lease_expires_at: None,
            gmt_create: 1,
            gmt_modified: 1,
            trace_parent: None,
            queue: crate::queue::DEFAULT_QUEUE.into(),
            priority: 0,
            ordering_key: None,
        }
    }

    /// A single row whose options also hold their defaults binds the 11 bare columns (in
    /// `BARE_ROW_COLUMNS` order, the values `BARE` picks); one option off its default makes
    /// it a lean row (18 columns).
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[test]
    fn single_rows_at_the_default_options_bind_the_bare_columns() {
        use super::super::row::NewRow;
        let names: Vec<&str> = NEW_ROW_COLUMNS.split(',').map(str::trim).collect();
        let bare: Vec<&str> = BARE_ROW_COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(bare, BARE.map(|i| names[i]), "BARE names BARE_ROW_COLUMNS");
        let r = NewRow {
            delay_time: 60,
            shard_key: -7,
            ..bare_row()
        };
        assert!(is_bare(&r));
        let s = insert_one_bare(&r, Tail::ReturningId);
        assert_eq!(
            s.text(),
            format!(
                "INSERT INTO consistency_task ({BARE_ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, \
                 ?, ?, ?, ?) RETURNING id"
            )
        );
        let all = row_binds(&r);
        assert_eq!(s.binds(), BARE.map(|i| all[i]).as_slice());
        assert_eq!(s.holes().len(), 11);
        assert_eq!(s.binds()[8], Bind::I64(-7));
        for off in [
            NewRow {
                max_attempts: 3,
                ..r.clone()
            },
            NewRow {
                execute_interval_sec: 5,
                ..r.clone()
            },
            NewRow {
                delay_time: 0,
                ..r.clone()
            },
            NewRow {
                payload_version: 2,
                ..r.clone()
            },
            NewRow {
                execute_way: 2,
                ..r.clone()
            },
            NewRow {
                thread_way: 2,
                ..r.clone()
            },
            NewRow {
                transaction_way: 2,
                ..r.clone()
            },
        ] {
            assert!(is_lean(&off) && !is_bare(&off), "{off:?}");
        }
        let keyed = NewRow {
            idempotency_key: Some("k".into()),
            ..r.clone()
        };
        assert!(!is_bare(&keyed));
    }

    /// A row at its defaults binds the 18 lean columns; a batch with one row that is not binds
    /// all 31 for every row. With numbered placeholders, rows that agree outside `PER_ROW`
    /// bind only their own values after the first row.
    #[test]
    fn bare_rows_bind_only_the_columns_off_their_defaults() {
        let bare = [bare_row(), bare_row()];
        let s = insert_rows(&bare, Tail::None, false);
        assert_eq!(s.binds().len(), 2 * 18);
        assert!(s.text().contains(LEAN_ROW_COLUMNS));
        let names: Vec<&str> = NEW_ROW_COLUMNS.split(',').map(str::trim).collect();
        let lean: Vec<&str> = LEAN_ROW_COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(lean, LEAN.map(|i| names[i]), "LEAN names LEAN_ROW_COLUMNS");
        let mixed = [
            bare_row(),
            super::super::row::NewRow {
                ordering_key: Some("k".into()),
                ..bare_row()
            },
        ];
        let s = insert_rows(&mixed, Tail::None, false);
        assert_eq!(s.binds().len(), 2 * 31);
        assert_eq!(names.len(), 31);

        let four = [bare_row(), bare_row(), bare_row(), bare_row()];
        let s = insert_rows(&four, Tail::None, true);
        assert_eq!(
            s.binds().len(),
            18 + 3 * 4,
            "task_id, execute_time, payload, shard"
        );
        assert!(s.text().contains("(?, ?2, ?, ?4, ?5,"), "{}", s.text());
        assert_eq!(s.text().matches('?').count(), 4 * 18);
        assert_eq!(s.holes().len(), s.binds().len());
        // The same shape with other values: the same text, these values bound.
        let other = [
            bare_row(),
            super::super::row::NewRow {
                task_id: "u".into(),
                ..bare_row()
            },
            bare_row(),
            bare_row(),
        ];
        let o = insert_rows(&other, Tail::None, true);
        assert_eq!(o.text(), s.text());
        assert_eq!(o.binds()[18], Bind::Text("u"));
        // One shared column that differs: every value bound.
        let differs = [
            bare_row(),
            super::super::row::NewRow {
                max_attempts: 2,
                ..bare_row()
            },
        ];
        assert_eq!(
            insert_rows(&differs, Tail::None, true).binds().len(),
            2 * 18
        );
        assert_eq!(
            insert_rows(&mixed, Tail::None, true).binds().len(),
            31 + PER_ROW.len()
        );
    }

    /// `shares_columns` (on the fields) says what comparing every shared column's bind says,
    /// and `per_row_binds` holds the `PER_ROW` columns' binds in order, for a change in each
    /// column.
    #[test]
    fn the_field_checks_agree_with_the_binds() {
        use super::super::row::NewRow;
        let a = bare_row();
        let by_binds = |a: &NewRow, b: &NewRow| {
            let (x, y) = (row_binds(a), row_binds(b));
            (0..31).all(|c| !shared(c) || same(x[c], y[c]))
        };
        let mut changed: Vec<NewRow> = Vec::new();
        for c in 0..31 {
            let mut b = bare_row();
            match c {
                0 => b.task_id = "x".into(),
                1 => b.idempotency_key = Some("x".into()),
                2 => b.task_status = 9,
                3 => b.execute_times = 9,
                4 => b.max_attempts = 9,
                5 => b.execute_time = 9,
                6 => b.parameter_types = "x".into(),
                7 => b.method_name = "x".into(),
                8 => b.method_sign_name = "x".into(),
                9 => b.execute_interval_sec = 9,
                10 => b.delay_time = 9,
                11 => b.task_parameter = vec![9],
                12 => b.payload_version = 9,
                13 => b.execute_way = 9,
                14 => b.thread_way = 9,
                15 => b.transaction_way = 9,
                16 => b.error_msg = "x".into(),
                17 => b.alert_expression = None,
                18 => b.alert_action_bean_name = Some("x".into()),
                19 => b.fallback_class_name = Some("x".into()),
                20 => b.fallback_error_msg = Some("x".into()),
                21 => b.shard_key = 9,
                22 => b.lease_token = Some(9),
                23 => b.lease_owner = Some("x".into()),
                24 => b.lease_expires_at = Some(9),
                25 => b.gmt_create = 9,
                26 => b.gmt_modified = 9,
                27 => b.trace_parent = Some("x".into()),
                28 => b.queue = "x".into(),
                29 => b.priority = 9,
                _ => b.ordering_key = Some("x".into()),
            }
            assert_ne!(row_binds(&a)[c], row_binds(&b)[c], "column {c} changed");
            assert_eq!(shares_columns(&a, &b), by_binds(&a, &b), "column {c}");
            assert_eq!(shares_columns(&b, &a), by_binds(&b, &a), "column {c}");
            assert_eq!(shares_columns(&a, &b), !shared(c), "column {c}");
            changed.push(b);
        }
        for r in changed.iter().chain([&a]) {
            let all = row_binds(r);
            assert_eq!(per_row_binds(r), PER_ROW.map(|c| all[c]));
        }
        // Texts equal by value though not the same `&str`.
        let mut b = bare_row();
        b.alert_expression = Some(String::from("executeTimes > 1 && executeTimes < 5").into());
        b.queue = String::from(crate::queue::DEFAULT_QUEUE).into();
        assert!(shares_columns(&a, &b));
        assert_eq!(LEAN_PER_ROW.map(|k| PER_ROW[k]), [0, 5, 11, 21]);
        assert!(LEAN_PER_ROW.iter().all(|&k| LEAN.contains(&PER_ROW[k])));
        assert_eq!(
            LEAN.iter().filter(|&&c| !shared(c)).count(),
            LEAN_PER_ROW.len()
        );
    }

    #[test]
    fn inserts_are_cut_into_a_few_shapes() {
        assert_eq!(insert_chunks(100), vec![64, 32, 4]);
        assert_eq!(insert_chunks(1), vec![1]);
        assert_eq!(insert_chunks(0), Vec::<usize>::new());
        assert_eq!(insert_chunks(130), vec![64, 64, 2]);
        for n in 0..300 {
            let c = insert_chunks(n);
            assert_eq!(c.iter().sum::<usize>(), n);
            assert!(c
                .iter()
                .all(|l| l.is_power_of_two() && *l <= INSERT_ROWS_MAX));
        }
    }

    /// A static key names one text: running a second text under it (which diesel would run
    /// with the first one's prepared statement) panics in debug builds, and the three shapes
    /// of the single-row insert have texts of their own.
    #[cfg(all(feature = "sqlite", debug_assertions))]
    #[test]
    fn a_static_key_never_names_two_texts() {
        use crate::store::stmt::Key;
        use diesel::sql_types::Untyped;
        use diesel::sqlite::Sqlite;
        // Each test runs on a thread of its own: the check's per-thread record starts empty.
        const KEY_TEST: u8 = 200;
        let show =
            |s: &Stmt<'_, Untyped, Key<KEY_TEST>>| diesel::debug_query::<Sqlite, _>(s).to_string();
        let a = Stmt::fixed("SELECT 1").keyed::<KEY_TEST>();
        let again = Stmt::fixed("SELECT 1").keyed::<KEY_TEST>();
        show(&a);
        show(&again);
        let other = Stmt::fixed("SELECT 2").keyed::<KEY_TEST>();
        let clash = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| show(&other)));
        let msg = clash.expect_err("a second text under one key must panic");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("SELECT 1") && msg.contains("SELECT 2"),
            "{msg}"
        );

        let lean = bare_row();
        let mut full = bare_row();
        full.priority = 2;
        let mut keyed = bare_row();
        keyed.idempotency_key = Some("k".into());
        let text = |r: &super::super::row::NewRow, tail| {
            with_insert_one!(r, tail, |s| diesel::debug_query::<Sqlite, _>(&s)
                .to_string())
        };
        let texts = [
            text(&lean, Tail::None),
            text(&full, Tail::None),
            text(&keyed, Tail::IgnoreConflict),
        ];
        assert!(texts[0].contains("shard_key") && !texts[0].contains("priority"));
        assert!(texts[1].contains("priority") && !texts[1].contains("ON CONFLICT"));
        assert!(texts[2].contains("ON CONFLICT DO NOTHING"));
        // The same shapes again: the same texts, no clash.
        assert_eq!(text(&bare_row(), Tail::None), texts[0]);
    }

    /// The JSON of `insert_json` escapes what JSON needs escaped and nothing else; payloads are
    /// hex; the shared columns are bound once when the rows agree.
    #[test]
    fn json_rows_are_escaped_and_shared_columns_bound_once() {
        let mut out = String::new();
        json_value(&mut out, Bind::Text("a\"b\\c\n\u{1}é😀"));
        assert_eq!(out, r#""a\"b\\c\u000a\u0001é😀""#);
        out.clear();
        json_value(&mut out, Bind::Bytes(&[0, 0xab, 0xff]));
        json_value(&mut out, Bind::OptText(None));
        json_value(&mut out, Bind::OptI64(Some(i64::MIN)));
        assert_eq!(out, "\"00abff\"null-9223372036854775808");

        // Rows with their own names and due times: 14 shared columns bound once, then the JSON.
        let own = |i: i64| super::super::row::NewRow {
            task_id: format!("t{i}").into(),
            execute_time: i,
            ..bare_row()
        };
        let rows = [own(1), own(2)];
        let mut json = String::new();
        let s = insert_json(&rows, &mut json);
        assert_eq!(s.binds().len(), 18 - 4 + 1);
        assert!(s.text().contains("UNHEX(j.c2)"), "{}", s.text());
        assert!(s.text().ends_with("ORDER BY j.n"), "{}", s.text());
        assert_eq!(json, r#"[["t1",1,"01",0],["t2",2,"01",0]]"#);
        // One name and one due time for the batch: those two bound once as well.
        let rows = [bare_row(), bare_row()];
        let mut json = String::new();
        let s = insert_json(&rows, &mut json);
        assert_eq!(s.binds().len(), 18 - 2 + 1);
        assert!(s.text().contains("UNHEX(j.c0)"), "{}", s.text());
        assert_eq!(json, r#"[["01",0],["01",0]]"#);
        // Only the due time differs: the name is bound once, the due time travels.
        let rows = [bare_row(), own(7)];
        let mut json = String::new();
        let mut rows = rows;
        rows[1].task_id = rows[0].task_id.clone();
        insert_json(&rows, &mut json);
        assert_eq!(json, r#"[[1,"01",0],[7,"01",0]]"#);
        let differs = [
            bare_row(),
            super::super::row::NewRow {
                max_attempts: 2,
                ..bare_row()
            },
        ];
        let mut json = String::new();
        assert_eq!(
            insert_json(&differs, &mut json).binds().len(),
            1,
            "all in the JSON"
        );
    }

    /// JSON chunks stay under `JSON_BYTES_MAX`, keep every row once and in order, and a row
    /// larger than the limit goes alone.
    #[test]
    fn json_chunks_cut_by_size() {
        let big = super::super::row::NewRow {
            task_parameter: vec![7; JSON_BYTES_MAX / 3],
            ..bare_row()
        };
        let huge = super::super::row::NewRow {
            task_parameter: vec![7; JSON_BYTES_MAX],
            ..bare_row()
        };
        let rows = vec![
            bare_row(),
            big.clone(),
            big.clone(),
            huge,
            bare_row(),
            bare_row(),
        ];
        let sizes: Vec<usize> = json_chunks(&rows).map(<[_]>::len).collect();
        assert_eq!(sizes, vec![2, 1, 1, 2]);
        assert_eq!(json_chunks(&[]).count(), 0);
        let small: Vec<_> = (0..1000).map(|_| bare_row()).collect();
        assert_eq!(json_chunks(&small).count(), 1);
    }

    /// Asserts that `q`, a MySQL insert, names `columns` in order and binds `binds` values, and
    /// that diesel keeps it prepared under a static id.
    #[cfg(feature = "mysql")]
    fn assert_mysql_insert<Q>(q: &Q, columns: &str, binds: usize)
    where
        Q: diesel::query_builder::QueryFragment<diesel::mysql::Mysql>
            + diesel::query_builder::QueryId,
    {
        let sql = diesel::debug_query::<diesel::mysql::Mysql, _>(q).to_string();
        let cols = columns
            .split(", ")
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            sql.starts_with(&format!(
                "INSERT INTO `consistency_task` ({cols}) VALUES (?"
            )),
            "{sql}"
        );
        assert_eq!(
            sql.split(" -- ").next().unwrap().matches('?').count(),
            binds
        );
        assert!(Q::HAS_STATIC_QUERY_ID, "kept prepared under a static id");
    }

    /// MySQL's single-row insert (a diesel DSL insert, see `mysql.rs`) of a lean row binds the
    /// lean shape's columns, in its order, and nothing else; of any other row, all 31.
    #[cfg(feature = "mysql")]
    #[test]
    fn mysqls_lean_insert_names_the_lean_columns() {
        use super::super::mysql::LeanRow;
        let row = bare_row();
        assert!(is_lean(&row));
        let t = crate::schema::consistency_task::table;
        assert_mysql_insert(
            &diesel::insert_into(t).values(LeanRow::of(&row)),
            LEAN_ROW_COLUMNS,
            18,
        );
        assert_mysql_insert(&diesel::insert_into(t).values(&row), NEW_ROW_COLUMNS, 31);
    }

    /// MySQL's single-row insert of a bare row binds the bare shape's columns, in its order.
    #[cfg(feature = "mysql")]
    #[test]
    fn mysqls_bare_insert_names_the_bare_columns() {
        use super::super::mysql::BareRow;
        let row = super::super::row::NewRow {
            delay_time: 60,
            ..bare_row()
        };
        assert!(is_bare(&row));
        let t = crate::schema::consistency_task::table;
        assert_mysql_insert(
            &diesel::insert_into(t).values(BareRow::of(&row)),
            BARE_ROW_COLUMNS,
            11,
        );
    }
}
