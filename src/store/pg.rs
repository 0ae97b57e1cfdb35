//! PostgreSQL: the claim is one statement, `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
//! LOCKED) RETURNING …`, so a batch costs one round trip and claimers never block each other.

use std::sync::OnceLock;

use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::stmt::{Stmt, TaskRowSql, TASK_COLUMNS};
use super::{ops::Ops, Claim, Claimed, NewRow, TaskRow};
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
    let s = Stmt::new(
        "UPDATE consistency_task AS t SET task_status = 1, execute_times = CASE WHEN t.execute_times < 2147483647 THEN t.execute_times + 1 ELSE t.execute_times END",
    );
    let s = super::lease_set(s, c)
        .sql(" FROM (SELECT id, task_status AS prev_status FROM consistency_task");
    super::due_rows(s, c, "task_status")
        .sql(" FOR UPDATE SKIP LOCKED) AS s WHERE t.id = s.id RETURNING ")
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
        diesel::insert_into(t::consistency_task)
            .values(rows)
            .on_conflict_do_nothing()
            .execute(self)
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

    super::common_ops!();
}
