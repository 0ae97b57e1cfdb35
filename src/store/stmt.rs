//! Hand-written statements that diesel keeps prepared.
//!
//! diesel never caches an `UPDATE`, a `sql_query`, or an `IN (…)` list on MySQL/SQLite: each
//! costs a prepare per execution, which on the claim/complete hot path is a round trip (or a
//! parse) per batch. A [`Stmt`] is plain SQL with binds whose `QueryId` is not static, so diesel
//! caches it under its SQL text; id lists are padded to a power of two (repeating the first id,
//! which changes nothing in an `IN`), so a statement has at most a handful of cached shapes.
//!
//! Keying by text costs diesel a rebuild of the text and a hash of it per execution. The
//! statements run once per enqueued task (the single-row insert, the last-insert-id read) are
//! [`keyed`](Stmt::keyed) instead: a static key per text, which diesel looks up by type. The
//! inserts of new rows are built in `insert.rs`.

use std::borrow::Cow;
use std::marker::PhantomData;

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::QueryResult;
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Binary, HasSqlType, Integer, Nullable, Text, Untyped};
use diesel::RunQueryDsl;

/// One bound value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Bind<'a> {
    I64(i64),
    OptI64(Option<i64>),
    I32(i32),
    Text(&'a str),
    OptText(Option<&'a str>),
    /// Only the multi-row insert binds bytes (PostgreSQL's binds arrays).
    Bytes(&'a [u8]),
}

/// SQL with a `?` per bind (the backend's placeholder is written in its place). Rows load by
/// column name (`QueryableByName`) unless [`typed`](Stmt::typed) gives the row's SQL type, which
/// loads them by position (no name lookup per field and row).
#[derive(Debug, Clone)]
pub(crate) struct Stmt<'a, ST = Untyped, K = ByText> {
    sql: Cow<'static, str>,
    binds: Vec<Bind<'a>>,
    /// The byte offset in `sql` of each bind's `?`, so that diesel's walks over the statement
    /// (two or three per execution) slice the text instead of searching it.
    holes: Cow<'static, [usize]>,
    st: PhantomData<(ST, K)>,
}

/// How diesel keys a [`Stmt`]'s prepared statement: by its text ([`ByText`]) or by a static
/// [`Key`].
pub(crate) trait StmtKey: 'static {
    const STATIC: bool;
}

/// The default: diesel keys the statement by its SQL text (any text, rebuilt and hashed per
/// execution).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ByText;

impl StmtKey for ByText {
    const STATIC: bool = false;
}

/// A static statement key: every statement keyed `Key<ID>` on one connection must have the same
/// text (debug builds check it when diesel walks the statement). The ids in use are the `KEY_*`
/// constants.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<const ID: u8>;

impl<const ID: u8> StmtKey for Key<ID> {
    const STATIC: bool = true;
}

/// The single-row insert's statement (`insert::with_insert_one`) for a lean row.
pub(crate) const KEY_ONE_LEAN: u8 = 1;
/// The single-row insert's statement for a row with every column, without an idempotency key.
pub(crate) const KEY_ONE_FULL: u8 = 2;
/// The single-row insert's statement for a row with an idempotency key (the backend's conflict
/// tail).
pub(crate) const KEY_ONE_KEYED: u8 = 3;
/// The single-row insert's statement for a bare row (`insert::is_bare`).
pub(crate) const KEY_ONE_BARE: u8 = 5;
/// SQLite's multi-row inserts: `KEY_ROWS + ` the insert's shape index (`insert::INSERT_SHAPES`
/// of them, so up to 127).
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) const KEY_ROWS: u8 = 16;
/// PostgreSQL's claim of one queue's due rows (`pg::hot_claim`), the shape every fetcher runs.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) const KEY_CLAIM: u8 = 6;
/// The backend's read of the id the last insert made (MySQL, SQLite).
#[cfg_attr(not(any(feature = "mysql", feature = "sqlite")), allow(dead_code))]
pub(crate) const KEY_LAST_ID: u8 = 4;

/// The columns of [`TaskRow`](super::row::TaskRow) in its field order.
#[cfg(test)]
const TASK_COLUMNS: &str = "id, task_id, idempotency_key, task_status, \
    execute_times, max_attempts, execute_time, parameter_types, method_name, method_sign_name, \
    execute_interval_sec, delay_time, task_parameter, payload_version, execute_way, thread_way, \
    transaction_way, error_msg, alert_expression, alert_action_bean_name, fallback_class_name, \
    fallback_error_msg, shard_key, lease_token, lease_owner, lease_expires_at, gmt_create, \
    gmt_modified, duration_ms, trace_parent, queue, priority, ordering_key";

/// The columns of [`ClaimRow`](super::row::ClaimRow) in its field order: what a claim reads
/// of each row.
pub(crate) const CLAIM_COLUMNS: &str = "id, task_id, task_status, execute_times, max_attempts, \
    execute_time, method_sign_name, execute_interval_sec, task_parameter, \
    payload_version, error_msg, alert_expression, \
    alert_action_bean_name, fallback_class_name, fallback_error_msg, shard_key, gmt_create, \
    trace_parent, priority, ordering_key";

/// [`CLAIM_COLUMNS`] as a claim selects them: each column `{prefix}name`, except those `from`
/// names, which are `{alias}.name AS name` (PostgreSQL's claim reads the values before its
/// lease from its locking sub-select).
pub(crate) fn claim_columns(prefix: &str, from: (&str, &[&str])) -> String {
    let (alias, before) = from;
    CLAIM_COLUMNS
        .split(',')
        .map(str::trim)
        .map(|c| {
            if before.contains(&c) {
                format!("{alias}.{c} AS {c}")
            } else {
                format!("{prefix}{c}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`claim_columns`] of the claim's row alias `k` (MySQL's and SQLite's claims), built once.
#[cfg_attr(not(any(feature = "mysql", feature = "sqlite")), allow(dead_code))]
pub(crate) fn claim_columns_of_k() -> &'static str {
    static COLUMNS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COLUMNS.get_or_init(|| claim_columns("k.", ("", &[])))
}

/// The SQL type of a row of [`CLAIM_COLUMNS`] on backend `DB`.
pub(crate) type ClaimRowSql<DB> =
    diesel::dsl::SqlTypeOf<<super::row::ClaimRow as diesel::Selectable<DB>>::SelectExpression>;

/// The smallest id-list length a statement is prepared for; lists are padded up to a power of
/// two at or above it.
const MIN_IDS: usize = 8;

impl<'a> Stmt<'a> {
    pub(crate) fn new(sql: &str) -> Stmt<'a> {
        debug_assert!(!sql.contains('?'), "binds go through Stmt::bind");
        Stmt {
            sql: Cow::Owned(sql.to_string()),
            binds: Vec::new(),
            holes: Cow::Owned(Vec::new()),
            st: PhantomData,
        }
    }

    /// A statement of a text built once (`sql`, its placeholders at byte offsets `holes`) and
    /// this execution's `binds`, one per hole.
    pub(crate) fn prepared(
        sql: &'static str,
        holes: &'static [usize],
        binds: Vec<Bind<'a>>,
    ) -> Stmt<'a> {
        debug_assert_eq!(holes.len(), binds.len());
        Stmt {
            sql: Cow::Borrowed(sql),
            binds,
            holes: Cow::Borrowed(holes),
            st: PhantomData,
        }
    }

    /// A statement whose whole text is `sql` (no binds), not copied.
    #[cfg_attr(not(any(feature = "mysql", feature = "sqlite")), allow(dead_code))]
    pub(crate) fn fixed(sql: &'static str) -> Stmt<'a> {
        debug_assert!(!sql.contains('?'), "binds go through Stmt::bind");
        Stmt::prepared(sql, &[], Vec::new())
    }
}

impl<'a, ST, K> Stmt<'a, ST, K> {
    /// This statement's text and the byte offsets of its placeholders, to be kept and run
    /// again with other binds ([`Stmt::prepared`]).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn into_text(self) -> (String, Vec<usize>) {
        (self.sql.into_owned(), self.holes.into_owned())
    }

    /// Whether `other` has the same text and binds (debug checks of a statement assembled
    /// from a kept text).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn same_as<ST2, K2>(&self, other: &Stmt<'a, ST2, K2>) -> bool {
        self.sql == other.sql && self.binds == other.binds && self.holes == other.holes
    }

    /// Rows of this statement have SQL type `ST2`, its columns in order.
    pub(crate) fn typed<ST2>(self) -> Stmt<'a, ST2, K> {
        Stmt {
            sql: self.sql,
            binds: self.binds,
            holes: self.holes,
            st: PhantomData,
        }
    }
}

impl<'a, ST> Stmt<'a, ST> {
    /// This statement under the static key `Key<ID>` instead of its text: diesel then finds its
    /// prepared statement by type, without rebuilding and hashing the text per execution. Every
    /// statement a connection runs under one key must have the same text; debug builds check
    /// that (per thread and backend) and panic on a clash.
    pub(crate) fn keyed<const ID: u8>(self) -> Stmt<'a, ST, Key<ID>> {
        Stmt {
            sql: self.sql,
            binds: self.binds,
            holes: self.holes,
            st: PhantomData,
        }
    }

    /// Appends SQL text (without placeholders).
    pub(crate) fn sql(mut self, sql: &str) -> Stmt<'a, ST> {
        debug_assert!(!sql.contains('?'), "binds go through Stmt::bind");
        self.sql.to_mut().push_str(sql);
        self
    }

    /// Appends a placeholder for `b`.
    pub(crate) fn bind(mut self, b: Bind<'a>) -> Stmt<'a, ST> {
        self.push(b);
        self
    }

    /// Appends a placeholder for `b` in place.
    fn push(&mut self, b: Bind<'a>) {
        self.holes.to_mut().push(self.sql.len());
        self.sql.to_mut().push('?');
        self.binds.push(b);
    }

    /// Appends `(?, ?, …)` for a non-empty id list, padded to a power of two.
    pub(crate) fn ids(mut self, ids: &[i64]) -> Stmt<'a, ST> {
        assert!(!ids.is_empty(), "an empty IN list is not valid SQL");
        let len = ids.len().next_power_of_two().max(MIN_IDS);
        self.sql.to_mut().push('(');
        for i in 0..len {
            if i > 0 {
                self.sql.to_mut().push_str(", ");
            }
            self.push(Bind::I64(*ids.get(i).unwrap_or(&ids[0])));
        }
        self.sql.to_mut().push(')');
        self
    }
}

#[cfg(test)]
impl<'a, ST, K> Stmt<'a, ST, K> {
    pub(crate) fn text(&self) -> &str {
        &self.sql
    }

    pub(crate) fn binds(&self) -> &[Bind<'a>] {
        &self.binds
    }

    pub(crate) fn holes(&self) -> &[usize] {
        &self.holes
    }
}

impl<ST, K: StmtKey> QueryId for Stmt<'_, ST, K> {
    type QueryId = K;
    // `ByText`: not static, so diesel keys its statement cache by the SQL text.
    const HAS_STATIC_QUERY_ID: bool = K::STATIC;
}

impl<ST, K> Query for Stmt<'_, ST, K> {
    type SqlType = ST;
}

impl<C, ST, K> RunQueryDsl<C> for Stmt<'_, ST, K> {}

impl<DB, ST, K: StmtKey> QueryFragment<DB> for Stmt<'_, ST, K>
where
    DB: Backend
        + 'static
        + HasSqlType<BigInt>
        + HasSqlType<Integer>
        + HasSqlType<Text>
        + HasSqlType<Binary>,
    i64: ToSql<BigInt, DB>,
    [u8]: ToSql<Binary, DB>,
    i32: ToSql<Integer, DB>,
    str: ToSql<Text, DB>,
    Option<i64>: ToSql<Nullable<BigInt>, DB>,
    for<'x> Option<&'x str>: ToSql<Nullable<Text>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        // Never marked unsafe to cache: that is the point of this type.
        debug_assert_eq!(self.holes.len(), self.binds.len());
        #[cfg(debug_assertions)]
        if K::STATIC {
            check_key::<DB, K>(&self.sql);
        }
        let mut at = 0;
        for (&hole, b) in self.holes.iter().zip(&self.binds) {
            out.push_sql(&self.sql[at..hole]);
            push_bind(&mut out, b)?;
            at = hole + 1;
        }
        out.push_sql(&self.sql[at..]);
        Ok(())
    }
}

/// Binds `b` as a placeholder of its SQL type (also for statements that are not a [`Stmt`]:
/// PostgreSQL's `unnest` insert binds its shared columns through it).
pub(super) fn push_bind<'b, 'x: 'b, DB>(
    out: &mut AstPass<'_, 'b, DB>,
    b: &'b Bind<'x>,
) -> QueryResult<()>
where
    DB: Backend + HasSqlType<BigInt> + HasSqlType<Integer> + HasSqlType<Text> + HasSqlType<Binary>,
    i64: ToSql<BigInt, DB>,
    [u8]: ToSql<Binary, DB>,
    i32: ToSql<Integer, DB>,
    str: ToSql<Text, DB>,
    Option<i64>: ToSql<Nullable<BigInt>, DB>,
    for<'y> Option<&'y str>: ToSql<Nullable<Text>, DB>,
{
    match b {
        Bind::I64(v) => out.push_bind_param::<BigInt, _>(v),
        Bind::OptI64(v) => out.push_bind_param::<Nullable<BigInt>, _>(v),
        Bind::I32(v) => out.push_bind_param::<Integer, _>(v),
        Bind::Text(v) => out.push_bind_param::<Text, str>(*v),
        Bind::OptText(v) => out.push_bind_param::<Nullable<Text>, _>(v),
        Bind::Bytes(v) => out.push_bind_param::<Binary, [u8]>(*v),
    }
}

/// Panics if this thread ran another text on backend `DB` under the static key `K`: diesel
/// would have run the other statement's prepared text with this one's binds.
#[cfg(debug_assertions)]
fn check_key<DB: 'static, K: 'static>(sql: &str) {
    use std::any::TypeId;
    thread_local! {
        static TEXTS: std::cell::RefCell<std::collections::HashMap<(TypeId, TypeId), String>> =
            Default::default();
    }
    TEXTS.with(|t| {
        let mut t = t.borrow_mut();
        let first = t
            .entry((TypeId::of::<DB>(), TypeId::of::<K>()))
            .or_insert_with(|| sql.to_string());
        assert!(
            first == sql,
            "statement key {} used for two texts:\n{first}\n{sql}",
            std::any::type_name::<K>()
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_are_padded_to_a_power_of_two_with_the_first_id() {
        let s = Stmt::new("DELETE FROM t WHERE id IN ").ids(&[5, 6, 7, 8, 9, 10, 11, 12, 13]);
        assert_eq!(s.sql.matches('?').count(), 16);
        assert_eq!(s.binds.len(), 16);
        assert!(matches!(s.binds[15], Bind::I64(5)));
        let small = Stmt::new("x IN ").ids(&[1]);
        assert_eq!(small.binds.len(), MIN_IDS);
        // Same shape for every length up to the padded one: one cached statement.
        assert_eq!(
            Stmt::new("x IN ").ids(&[1, 2, 3]).sql,
            Stmt::new("x IN ").ids(&[4, 5, 6, 7, 8]).sql
        );
    }

    /// The column names diesel selects for `T`, in its field order.
    #[cfg(feature = "sqlite")]
    fn selected<T>() -> Vec<String>
    where
        T: diesel::Selectable<diesel::sqlite::Sqlite>,
        T::SelectExpression: diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>,
    {
        let sql =
            diesel::debug_query::<diesel::sqlite::Sqlite, _>(&T::construct_selection()).to_string();
        let sql = sql.split(" -- binds").next().unwrap();
        sql.split(", ")
            .map(|c| c.rsplit('.').next().unwrap().trim_matches('`').to_string())
            .collect()
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn task_columns_are_in_task_row_order() {
        let ours: Vec<&str> = TASK_COLUMNS.split(", ").map(str::trim).collect();
        assert_eq!(selected::<super::super::row::TaskRow>(), ours);
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn claim_columns_are_in_claim_row_order() {
        let ours: Vec<&str> = CLAIM_COLUMNS.split(", ").map(str::trim).collect();
        assert_eq!(selected::<super::super::row::ClaimRow>(), ours);
        // Every claimed column is a column of the stored row.
        for c in &ours {
            assert!(TASK_COLUMNS.split(", ").any(|t| t.trim() == *c), "{c}");
        }
    }
}
