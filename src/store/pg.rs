//! PostgreSQL: the claim is one statement, `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
//! LOCKED) RETURNING …`, so a batch costs one round trip and claimers never block each other.

use std::sync::OnceLock;

use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::ops::Ops;
use super::row::{Claim, Claimed, NewRow, TaskRow};
use super::stmt::{Stmt, TaskRowSql, TASK_COLUMNS};
use crate::schema::consistency_task::dsl as t;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The claimed row's columns, qualified (the sub-select also has an `id`).
fn returned_columns() -> &'static str {
    static COLUMNS: OnceLock<String> = OnceLock::new();
    COLUMNS.get_or_init(|| {
        TASK_COLUMNS
            .split(',')
            .map(|c| format!("t.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

// The sub-select locks the due rows (skipping rows other claimers hold) and carries their
// previous status out, so a reclaim after an expired lease is visible to the caller. Rows load
// by position: no per-field name lookup.
fn claim_stmt<'a>(c: &Claim<'a>) -> Stmt<'a, (TaskRowSql<Pg>, Integer)> {
    // A MATERIALIZED CTE runs the locking sub-select exactly once. As a plain sub-select the
    // planner may rescan it per row of the outer scan (a nested loop, chosen once the outer
    // WHERE below filters on the due index too); each rescan locks the next rows, past the
    // ones this statement already leased, and the claim takes more than its LIMIT.
    let s = Stmt::new(
        "WITH s AS MATERIALIZED (SELECT id, task_status AS prev_status FROM consistency_task",
    );
    let s = super::lease::due_rows(s, c, "task_status")
        .sql(" FOR UPDATE SKIP LOCKED) UPDATE consistency_task AS t SET task_status = 1, execute_times = ")
        .sql(&super::lease::next_attempt("t.execute_times"));
    // The outer WHERE re-checks that the row is still claimable, as `lease_by_ids` does on
    // the other backends: PostgreSQL's row lock already guarantees it, a server that
    // emulates PostgreSQL and skips without locking (CockroachDB, YugabyteDB) may not.
    super::lease::lease_set(s, c)
        .sql(" FROM s WHERE t.id = s.id AND t.task_status IN ")
        .sql(super::lease::CLAIMABLE_SQL)
        .sql(" AND t.execute_time <= ")
        .bind(super::stmt::Bind::I64(c.now))
        .sql(" RETURNING ")
        .sql(returned_columns())
        .sql(", s.prev_status")
        .typed()
}

impl Ops for PgConnection {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn insert_one(&mut self, row: &NewRow) -> QueryResult<Option<i64>> {
        diesel::insert_into(t::consistency_task)
            .values(row)
            .on_conflict_do_nothing()
            .returning(t::id)
            .get_result(self)
            .optional()
    }

    fn insert_many(&mut self, rows: &[NewRow]) -> QueryResult<usize> {
        super::stmt::insert_chunked!(self, rows, " ON CONFLICT DO NOTHING")
    }

    fn claim(&mut self, c: &Claim<'_>) -> QueryResult<Vec<Claimed>> {
        if c.ids.is_some_and(|ids| ids.is_empty()) {
            return Ok(Vec::new());
        }
        let rows: Vec<(TaskRow, i32)> = claim_stmt(c).load(self)?;
        Ok(rows
            .into_iter()
            .map(|(task, prev_status)| Claimed { task, prev_status })
            .collect())
    }

    fn run_migrations(&mut self) -> Result<(), String> {
        self.run_pending_migrations(MIGRATIONS)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    super::common::common_ops!();
}
