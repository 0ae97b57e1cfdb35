//! PostgreSQL: the claim is one statement, `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
//! LOCKED) RETURNING …`, so a batch costs one round trip and claimers never block each other.

use std::sync::OnceLock;

use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::insert::Tail;
use super::ops::Ops;
use super::row::{Claim, ClaimRow, Claimed, NewRow};
use super::stmt::{Bind, ClaimRowSql, Key, Stmt, KEY_CLAIM};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The claim's row as its update returns it, qualified (the sub-select also has an `id`); the
/// values before the lease (previous status, attempts so far, due time) come from the
/// sub-select.
fn claim_columns() -> &'static str {
    static COLUMNS: OnceLock<String> = OnceLock::new();
    COLUMNS.get_or_init(|| {
        super::stmt::claim_columns(
            "t.",
            ("s", &["task_status", "execute_times", "execute_time"]),
        )
    })
}

// The sub-select locks the due rows (skipping rows other claimers hold) and carries their
// values before the lease out, so a reclaim after an expired lease is visible to the caller.
// Rows load by position: no per-field name lookup.
fn claim_stmt<'a>(c: &Claim<'a>) -> Stmt<'a, ClaimRowSql<Pg>> {
    // A MATERIALIZED CTE runs the locking sub-select exactly once. As a plain sub-select the
    // planner may rescan it per row of the outer scan (a nested loop, chosen once the outer
    // WHERE below filters on the due index too); each rescan locks the next rows, past the
    // ones this statement already leased, and the claim takes more than its LIMIT.
    let s = super::lease::due_rows(
        Stmt::new("WITH s AS MATERIALIZED ("),
        "k.id, k.task_status, k.execute_times, k.execute_time",
        c,
        "k.task_status",
        super::lease::Dialect::Pg,
    )
    .sql(") UPDATE consistency_task AS t SET task_status = 1, execute_times = ")
    .sql(&super::lease::next_attempt("t.execute_times"));
    // The outer WHERE re-checks that the row is still claimable, as `lease_by_ids` does on
    // the other backends: PostgreSQL's row lock already guarantees it, a server that
    // emulates PostgreSQL and skips without locking (CockroachDB, YugabyteDB) may not.
    let s = super::lease::lease_set(s, c).sql(" FROM s WHERE t.id = s.id AND ");
    super::lease::claimable(s, "t.task_status", "t.lease_expires_at", c.now)
        .sql(" AND t.execute_time <= ")
        .bind(super::stmt::Bind::I64(c.now))
        // The rows come straight from the `UPDATE`'s `RETURNING`: a CTE around it and a
        // `SELECT` from that copied every row twice more (8 % of the claim, pgbench). They come
        // in no useful order; the caller sorts them into the claim's (a sort of 100 wide rows
        // in the server cost 5 % of the claim, pgbench).
        .sql(" RETURNING ")
        .sql(claim_columns())
        .typed()
}

/// [`claim_stmt`] of the shape every fetcher runs (one queue, any due row, nothing excluded),
/// from a text built once, under a static statement key: diesel then neither rebuilds nor
/// hashes its text per claim (together 9 % of the fetcher's CPU in a drain, perf). `None` for
/// any other shape.
fn hot_claim<'a>(c: &Claim<'a>) -> Option<Stmt<'a, ClaimRowSql<Pg>, Key<KEY_CLAIM>>> {
    let queue = c.queue?;
    if c.ids.is_some() || !c.exclude.is_empty() {
        return None;
    }
    static TEXT: OnceLock<(String, Vec<usize>)> = OnceLock::new();
    let (sql, holes) = TEXT.get_or_init(|| {
        claim_stmt(&Claim {
            now: 0,
            lease_until: 0,
            token: 0,
            owner: "",
            queue: Some(""),
            limit: 1,
            ids: None,
            exclude: &[],
        })
        .into_text()
    });
    // In the order `claim_stmt` binds them (debug builds check it on every claim): each
    // level's queue, due time, lapsed-lease time, ordering-key time and limit, the union's
    // limit, the lease, the re-check's lapsed-lease and due times.
    let mut binds = Vec::with_capacity(5 * super::lease::ALL_LEVELS.len() + 6);
    for _ in super::lease::ALL_LEVELS {
        binds.extend([
            Bind::Text(queue),
            Bind::I64(c.now),
            Bind::I64(c.now),
            Bind::I64(c.now),
            Bind::I64(c.limit),
        ]);
    }
    binds.extend([
        Bind::I64(c.limit),
        Bind::I64(c.lease_until),
        Bind::I64(c.token),
        Bind::Text(c.owner),
        Bind::I64(c.now),
        Bind::I64(c.now),
    ]);
    let s = Stmt::prepared(sql, holes, binds)
        .keyed::<KEY_CLAIM>()
        .typed();
    debug_assert!(
        s.same_as(&claim_stmt(c)),
        "pg::hot_claim's binds or text differ from claim_stmt's"
    );
    Some(s)
}

impl Ops for PgConnection {
    const LISTEN_NOTIFY: bool = true;

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn insert_one(&mut self, row: &NewRow) -> QueryResult<Option<i64>> {
        // `ON CONFLICT` only for a keyed row: without a key nothing can conflict (the only
        // other unique index is the primary key, whose clash must fail, not pass for a
        // duplicate), and its speculative insertion costs a second WAL record per row.
        let tail = if row.idempotency_key.is_some() {
            Tail::IgnoreConflictReturningId
        } else {
            Tail::ReturningId
        };
        super::insert::with_insert_one!(row, tail, |s| s
            .typed::<diesel::sql_types::BigInt>()
            .get_result::<i64>(self)
            .optional())
    }

    fn insert_many(&mut self, rows: &[NewRow]) -> QueryResult<usize> {
        if rows.is_empty() {
            return Ok(0);
        }
        UnnestInsert::new(rows).execute(self)
    }

    fn complete(&mut self, token: i64, ids: &[i64]) -> QueryResult<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        DeleteLeased { token, ids }.execute(self)
    }

    fn claim(&mut self, c: &Claim<'_>) -> QueryResult<Vec<Claimed>> {
        if c.ids.is_some_and(|ids| ids.is_empty()) {
            return Ok(Vec::new());
        }
        let mut rows: Vec<ClaimRow> = match hot_claim(c) {
            Some(s) => s.load(self)?,
            None => claim_stmt(c).load(self)?,
        };
        super::lease::sort_in_claim_order(&mut rows);
        Ok(super::lease::as_leased(rows, c))
    }

    fn generic_plans(&mut self, on: bool) -> QueryResult<()> {
        use diesel::connection::SimpleConnection;
        // The claim's custom plans: with `auto`, PostgreSQL plans the claim (seven priority
        // levels, each with its ordering-key subplans) anew for most executions, because the
        // generic plan's estimate for an unknown `LIMIT` and due time looks dearer than a
        // custom one; planning then costs about as much as running it. Forced generic plans
        // took a 60 000-task drain from 2.1 to 1.7 ms per claim (one thread) and from 4.0 to
        // 3.3 s (four), with the limit unchanged (TEND_BENCH_PROFILE=1, PGOPTIONS).
        self.batch_execute(if on {
            "SET plan_cache_mode = force_generic_plan"
        } else {
            "RESET plan_cache_mode"
        })
    }

    fn take_notifications(&mut self) -> QueryResult<usize> {
        let mut n = 0;
        for r in self.notifications_iter() {
            r?;
            n += 1;
        }
        Ok(n)
    }

    fn run_migrations(&mut self) -> Result<(), String> {
        self.run_pending_migrations(MIGRATIONS)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    super::common::common_ops!();
}

/// `Ops::complete` on PostgreSQL: `DELETE … WHERE lease_token = $1 AND id = ANY($2)`, the ids
/// bound as one array. One text whatever the number of ids, kept prepared under a static key
/// (no text to build and hash per execution); an `IN` list bound an id at a time (129 binds
/// for a batch of 100, padded) and had a prepared statement per padded length.
struct DeleteLeased<'a> {
    token: i64,
    ids: &'a [i64],
}

impl diesel::query_builder::QueryId for DeleteLeased<'_> {
    type QueryId = DeleteLeased<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<C> RunQueryDsl<C> for DeleteLeased<'_> {}

impl diesel::query_builder::QueryFragment<Pg> for DeleteLeased<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::Array;
        out.push_sql("DELETE FROM consistency_task WHERE lease_token = ");
        out.push_bind_param::<BigInt, _>(&self.token)?;
        out.push_sql(" AND id = ANY(");
        out.push_bind_param::<Array<BigInt>, [i64]>(self.ids)?;
        out.push_sql(")");
        Ok(())
    }
}

/// `enqueue_many` on PostgreSQL: one `INSERT … SELECT * FROM unnest($1, …, $31)` with one array
/// per column, whatever the number of rows, or, when the rows share their `insert::shared`
/// columns, those bound once and the others as arrays ([`UnnestInsert::walk_shared`]). Its
/// text depends only on its shape (8 of them), so diesel keeps each prepared (found by its
/// text) and the server parses and plans it once per connection; a `VALUES` list binds 31
/// scalars a row and has a shape per row count.
struct UnnestInsert<'a> {
    text: [Vec<&'a str>; 6],
    opt_text: [Vec<Option<&'a str>>; 8],
    int: [Vec<i32>; 10],
    big: [Vec<i64>; 4],
    opt_big: [Vec<Option<i64>>; 2],
    bytes: Vec<&'a [u8]>,
    /// Some row has an idempotency key: `ON CONFLICT DO NOTHING` makes a duplicate a no-op.
    keyed: bool,
    /// Every row holds the defaults in the columns `UNNEST_LEAN_COLUMNS` leaves out
    /// (`insert::is_lean`): 18 arrays are bound instead of 31.
    lean: bool,
    /// The rows agree in every column `insert::shared` names (one task type, one enqueue
    /// time): those are bound once as scalars, the first row's values, and only the columns
    /// that tell rows apart travel as arrays (4 for a batch of bare rows instead of 18).
    shared: Option<[Bind<'a>; 31]>,
}

impl<'a> UnnestInsert<'a> {
    fn new(rows: &'a [NewRow]) -> UnnestInsert<'a> {
        let mut u = UnnestInsert {
            text: Default::default(),
            opt_text: Default::default(),
            int: Default::default(),
            big: Default::default(),
            opt_big: Default::default(),
            bytes: Vec::with_capacity(rows.len()),
            keyed: rows.iter().any(|r| r.idempotency_key.is_some()),
            lean: false,
            shared: None,
        };
        let batch = super::insert::Batch::of(rows, true);
        u.lean = batch.lean;
        u.shared = batch.reuse.then_some(batch.first);
        for r in rows {
            // Exhaustive: a column added to `NewRow` fails to compile here until it has an
            // array (and a name in `UNNEST_COLUMNS`), instead of being silently left out.
            let NewRow {
                task_id: _,
                idempotency_key: _,
                task_status: _,
                execute_times: _,
                max_attempts: _,
                execute_time: _,
                parameter_types: _,
                method_name: _,
                method_sign_name: _,
                execute_interval_sec: _,
                delay_time: _,
                task_parameter: _,
                payload_version: _,
                execute_way: _,
                thread_way: _,
                transaction_way: _,
                error_msg: _,
                alert_expression: _,
                alert_action_bean_name: _,
                fallback_class_name: _,
                fallback_error_msg: _,
                shard_key: _,
                lease_token: _,
                lease_owner: _,
                lease_expires_at: _,
                gmt_create: _,
                gmt_modified: _,
                trace_parent: _,
                queue: _,
                priority: _,
                ordering_key: _,
            } = r;
            for (v, x) in u.text.iter_mut().zip([
                &*r.task_id,
                &r.parameter_types,
                &r.method_name,
                &r.method_sign_name,
                &r.error_msg,
                &r.queue,
            ]) {
                v.push(x);
            }
            for (v, x) in u.opt_text.iter_mut().zip([
                r.idempotency_key.as_deref(),
                r.alert_expression.as_deref(),
                r.alert_action_bean_name.as_deref(),
                r.fallback_class_name.as_deref(),
                r.fallback_error_msg.as_deref(),
                r.lease_owner.as_deref(),
                r.trace_parent.as_deref(),
                r.ordering_key.as_deref(),
            ]) {
                v.push(x);
            }
            for (v, x) in u.int.iter_mut().zip([
                r.task_status,
                r.execute_times,
                r.max_attempts,
                r.execute_interval_sec,
                r.delay_time,
                r.payload_version,
                r.execute_way,
                r.thread_way,
                r.transaction_way,
                r.priority,
            ]) {
                v.push(x);
            }
            for (v, x) in
                u.big
                    .iter_mut()
                    .zip([r.execute_time, r.shard_key, r.gmt_create, r.gmt_modified])
            {
                v.push(x);
            }
            for (v, x) in u
                .opt_big
                .iter_mut()
                .zip([r.lease_token, r.lease_expires_at])
            {
                v.push(x);
            }
            u.bytes.push(&r.task_parameter);
        }
        u
    }
}

/// The columns in the order `UnnestInsert::walk_ast` binds their arrays.
const UNNEST_COLUMNS: &str = "task_id, parameter_types, method_name, method_sign_name, error_msg, \
    queue, idempotency_key, alert_expression, alert_action_bean_name, fallback_class_name, \
    fallback_error_msg, lease_owner, trace_parent, ordering_key, task_status, execute_times, \
    max_attempts, execute_interval_sec, delay_time, payload_version, execute_way, thread_way, \
    transaction_way, priority, execute_time, shard_key, gmt_create, gmt_modified, lease_token, \
    lease_expires_at, task_parameter";

/// `UNNEST_COLUMNS` without those a lean row leaves to their defaults, in the same order.
const UNNEST_LEAN_COLUMNS: &str = "task_id, parameter_types, method_name, method_sign_name, \
    error_msg, alert_expression, max_attempts, execute_interval_sec, delay_time, \
    payload_version, execute_way, thread_way, transaction_way, execute_time, shard_key, \
    gmt_create, gmt_modified, task_parameter";
/// Which arrays of each kind a lean insert binds (by index into `UnnestInsert`'s arrays).
const LEAN_TEXT: [usize; 5] = [0, 1, 2, 3, 4];
const LEAN_OPT_TEXT: [usize; 1] = [1];
const LEAN_INT: [usize; 7] = [2, 3, 4, 5, 6, 7, 8];
/// Which arrays of each kind a full insert binds: all of them.
const ALL_TEXT: [usize; 6] = [0, 1, 2, 3, 4, 5];
const ALL_OPT_TEXT: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
const ALL_INT: [usize; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
const ALL_OPT_BIG: [usize; 2] = [0, 1];

/// Four texts (lean or full, with or without `ON CONFLICT`): diesel caches each by its SQL.
impl diesel::query_builder::QueryId for UnnestInsert<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<C> RunQueryDsl<C> for UnnestInsert<'_> {}

impl diesel::query_builder::QueryFragment<Pg> for UnnestInsert<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Binary, Nullable, Text};
        if let Some(first) = &self.shared {
            return self.walk_shared(first, out);
        }
        out.push_sql("INSERT INTO consistency_task (");
        out.push_sql(if self.lean {
            UNNEST_LEAN_COLUMNS
        } else {
            UNNEST_COLUMNS
        });
        // Index lists, not copies: diesel walks a statement two or three times per execution.
        let (text, opt_text, int, opt_big): (&[usize], &[usize], &[usize], &[usize]) = if self.lean
        {
            (&LEAN_TEXT, &LEAN_OPT_TEXT, &LEAN_INT, &[])
        } else {
            (&ALL_TEXT, &ALL_OPT_TEXT, &ALL_INT, &ALL_OPT_BIG)
        };
        out.push_sql(") SELECT * FROM unnest(");
        let mut first = true;
        let mut sep = |out: &mut diesel::query_builder::AstPass<'_, 'b, Pg>| {
            if !first {
                out.push_sql(", ");
            }
            first = false;
        };
        for v in text.iter().map(|&i| &self.text[i]) {
            sep(&mut out);
            out.push_bind_param::<Array<Text>, _>(v)?;
        }
        for v in opt_text.iter().map(|&i| &self.opt_text[i]) {
            sep(&mut out);
            out.push_bind_param::<Array<Nullable<Text>>, _>(v)?;
        }
        for v in int.iter().map(|&i| &self.int[i]) {
            sep(&mut out);
            out.push_bind_param::<Array<Integer>, _>(v)?;
        }
        for v in &self.big {
            sep(&mut out);
            out.push_bind_param::<Array<BigInt>, _>(v)?;
        }
        for v in opt_big.iter().map(|&i| &self.opt_big[i]) {
            sep(&mut out);
            out.push_bind_param::<Array<Nullable<BigInt>>, _>(v)?;
        }
        sep(&mut out);
        out.push_bind_param::<Array<Binary>, _>(&self.bytes)?;
        out.push_sql(")");
        if self.keyed {
            out.push_sql(" ON CONFLICT DO NOTHING");
        }
        Ok(())
    }
}

impl<'a> UnnestInsert<'a> {
    /// The statement when the rows share their `insert::shared` columns: `INSERT INTO
    /// consistency_task (…) SELECT $1, …, u.c0, … FROM unnest($k, …) AS u(c0, …)`, the shared
    /// values bound once in the select list, the others as arrays (named `c<column index>`).
    /// Its text depends only on `lean` and `keyed`.
    fn walk_shared<'b>(
        &'b self,
        first: &'b [Bind<'a>; 31],
        mut out: diesel::query_builder::AstPass<'_, 'b, Pg>,
    ) -> QueryResult<()> {
        use super::insert::shared;
        use diesel::sql_types::{Array, Binary, Nullable, Text};
        use std::fmt::Write as _;
        let cols = if self.lean {
            &super::insert::LEAN[..]
        } else {
            &super::insert::ALL[..]
        };
        out.push_sql("INSERT INTO consistency_task (");
        out.push_sql(if self.lean {
            super::insert::LEAN_ROW_COLUMNS
        } else {
            super::insert::NEW_ROW_COLUMNS
        });
        out.push_sql(") SELECT ");
        let mut name = String::new();
        for (k, &c) in cols.iter().enumerate() {
            if k > 0 {
                out.push_sql(", ");
            }
            if !shared(c) {
                name.clear();
                write!(name, "u.c{c}").expect("writing to a String");
                out.push_sql(&name);
                continue;
            }
            super::stmt::push_bind(&mut out, &first[c])?;
        }
        out.push_sql(" FROM unnest(");
        let per_row = || cols.iter().copied().filter(|&c| !shared(c));
        for (k, c) in per_row().enumerate() {
            if k > 0 {
                out.push_sql(", ");
            }
            // Where `new` put each per-row column (exhaustive over `insert::PER_ROW`).
            match c {
                0 => out.push_bind_param::<Array<Text>, _>(&self.text[0])?,
                1 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.opt_text[0])?,
                5 => out.push_bind_param::<Array<BigInt>, _>(&self.big[0])?,
                11 => out.push_bind_param::<Array<Binary>, _>(&self.bytes)?,
                21 => out.push_bind_param::<Array<BigInt>, _>(&self.big[1])?,
                22 => out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.opt_big[0])?,
                23 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.opt_text[5])?,
                24 => out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.opt_big[1])?,
                27 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.opt_text[6])?,
                30 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.opt_text[7])?,
                _ => unreachable!("column {c} is not per row"),
            }
        }
        out.push_sql(") AS u(");
        for (k, c) in per_row().enumerate() {
            name.clear();
            write!(name, "{}c{c}", if k > 0 { ", " } else { "" }).expect("writing to a String");
            out.push_sql(&name);
        }
        out.push_sql(")");
        if self.keyed {
            out.push_sql(" ON CONFLICT DO NOTHING");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim<'a>(queue: Option<&'a str>, ids: Option<&'a [i64]>, exclude: &'a [i64]) -> Claim<'a> {
        Claim {
            now: 10,
            lease_until: 20,
            token: 7,
            owner: "me",
            queue,
            limit: 3,
            ids,
            exclude,
        }
    }

    /// The fetcher's shape runs from the kept text, the same statement `claim_stmt` builds;
    /// every other shape is built per claim.
    #[test]
    fn hot_claim_is_the_fetchers_shape_only() {
        for q in ["default", "emails"] {
            let c = claim(Some(q), None, &[]);
            let hot = hot_claim(&c).expect("one queue, any due row: the hot shape");
            assert!(hot.same_as(&claim_stmt(&c)));
        }
        assert!(hot_claim(&claim(None, None, &[])).is_none());
        assert!(hot_claim(&claim(Some("default"), Some(&[1]), &[])).is_none());
        assert!(hot_claim(&claim(Some("default"), None, &[5])).is_none());
    }
}
