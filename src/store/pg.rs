//! PostgreSQL: the claim is one statement, `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
//! LOCKED) RETURNING *`, so a batch costs one round trip and claimers never block each other.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::{ops::Ops, Claim, Claimed, NewRow};
use crate::schema::consistency_task::dsl as t;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

// The sub-select locks the due rows (skipping rows other claimers hold) and carries their
// previous status out, so a reclaim after an expired lease is visible to the caller.
const CLAIM_SET: &str = "UPDATE consistency_task AS t SET task_status = 1, \
     execute_times = t.execute_times + 1, execute_time = $1, lease_expires_at = $1, \
     lease_token = $2, lease_owner = $3, gmt_modified = $4 \
     FROM (SELECT id, task_status AS prev_status FROM consistency_task \
     WHERE execute_time <= $4 AND task_status IN (0, 1, 2)";
const CLAIM_TAIL: &str = " ORDER BY execute_time LIMIT $5 FOR UPDATE SKIP LOCKED) AS s \
     WHERE t.id = s.id RETURNING t.*, s.prev_status";

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
        let base = |sql: String| {
            diesel::sql_query(sql)
                .bind::<BigInt, _>(c.lease_until)
                .bind::<BigInt, _>(c.token)
                .bind::<Text, _>(c.owner)
                .bind::<BigInt, _>(c.now)
                .bind::<BigInt, _>(c.limit)
        };
        match c.ids {
            None => base(format!("{CLAIM_SET}{CLAIM_TAIL}")).load(self),
            Some(ids) => base(format!("{CLAIM_SET} AND id = ANY($6){CLAIM_TAIL}"))
                .bind::<Array<BigInt>, _>(ids)
                .load(self),
        }
    }

    fn run_migrations(&mut self) -> Result<(), String> {
        self.run_pending_migrations(MIGRATIONS)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    super::common_ops!();
}
