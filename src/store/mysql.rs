//! MySQL 8 / MariaDB 10.6+: no `RETURNING` on `UPDATE`, so a claim is one short transaction:
//! `SELECT … FOR UPDATE SKIP LOCKED`, then `UPDATE … WHERE id IN (…)`.

use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::BigInt;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::stmt::Stmt;
use super::{ops::Ops, Claim, Claimed, NewRow, TaskRow};
use crate::schema::consistency_task::dsl as t;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

#[derive(QueryableByName)]
struct LastId {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

impl Ops for MysqlConnection {
    fn backend(&self) -> &'static str {
        "mysql"
    }

    fn insert_one(&mut self, row: &NewRow) -> QueryResult<Option<i64>> {
        // A duplicate key fails only this statement on InnoDB (the caller's transaction goes
        // on), so a plain INSERT is the race-free "insert unless the key exists". INSERT IGNORE
        // would also silence truncation and other errors.
        match diesel::insert_into(t::consistency_task)
            .values(row)
            .execute(self)
        {
            Ok(_) => {}
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
                if row.idempotency_key.is_some() =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
        // A Stmt, not sql_query: diesel keeps it prepared (one round trip instead of three).
        let last: LastId = Stmt::new("SELECT LAST_INSERT_ID() AS id").get_result(self)?;
        Ok(Some(last.id))
    }

    fn insert_many(&mut self, rows: &[NewRow]) -> QueryResult<usize> {
        if rows.iter().any(|r| r.idempotency_key.is_some()) {
            // One duplicate would fail the whole multi-row statement: insert one by one.
            let mut n = 0;
            for r in rows {
                n += usize::from(self.insert_one(r)?.is_some());
            }
            return Ok(n);
        }
        diesel::insert_into(t::consistency_task)
            .values(rows)
            .execute(self)
    }

    fn claim(&mut self, c: &Claim<'_>) -> QueryResult<Vec<Claimed>> {
        if c.ids.is_some_and(|ids| ids.is_empty()) {
            return Ok(Vec::new());
        }
        self.transaction(|conn| {
            let due = Stmt::new("SELECT * FROM consistency_task");
            let rows: Vec<TaskRow> = super::due_rows(due, c, "task_status")
                .sql(" FOR UPDATE SKIP LOCKED")
                .load(conn)?;
            conn.lease(c, rows)
        })
    }

    fn run_migrations(&mut self) -> Result<(), String> {
        self.run_pending_migrations(MIGRATIONS)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    super::common_ops!();
}
