//! The statements every backend shares, written once with diesel's DSL and stamped out per
//! connection type.

/// `Ops::complete` on the backends without array binds (MySQL, SQLite): the ids as an `IN`
/// list, padded to a few cached shapes (PostgreSQL binds them as one array, `pg.rs`).
#[cfg(any(feature = "mysql", feature = "sqlite"))]
macro_rules! complete_in_list {
    () => {
        fn complete(&mut self, token: i64, ids: &[i64]) -> QueryResult<usize> {
            use $crate::store::stmt::{Bind, Stmt};
            if ids.is_empty() {
                return Ok(0);
            }
            self.isolate_next()?;
            Stmt::new("DELETE FROM consistency_task WHERE lease_token = ")
                .bind(Bind::I64(token))
                .sql(" AND id IN ")
                .ids(ids)
                .execute(self)
        }
    };
}
#[cfg(any(feature = "mysql", feature = "sqlite"))]
pub(crate) use complete_in_list;

/// The statements every backend shares, written once with diesel's DSL.
macro_rules! common_ops {
    () => {
        fn finish(&mut self, rows: &[$crate::store::row::Finish]) -> QueryResult<Vec<i64>> {
            use $crate::store::stmt::{Bind, Stmt};
            self.isolate_next()?;
            self.transaction(|conn| {
                let mut held = Vec::with_capacity(rows.len());
                for r in rows {
                    let n = Stmt::new("UPDATE consistency_task SET task_status = ")
                        .bind(Bind::I32(r.status))
                        .sql(", execute_time = ")
                        .bind(Bind::I64(r.execute_time))
                        // Saturating at the column's minimum (`attempts_delta` is 0 or -1).
                        .sql(
                            ", execute_times = CASE WHEN execute_times > -2147483648 \
                             THEN execute_times + ",
                        )
                        .bind(Bind::I32(r.attempts_delta))
                        .sql(" ELSE execute_times END")
                        .sql(", error_msg = ")
                        .bind(Bind::Text(&r.error_msg))
                        .sql(", fallback_error_msg = ")
                        .bind(Bind::OptText(r.fallback_error_msg.as_deref()))
                        .sql(
                            ", lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, \
                             gmt_modified = ",
                        )
                        .bind(Bind::I64(r.now))
                        .sql(", duration_ms = ")
                        .bind(Bind::OptI64(r.duration_ms))
                        .sql(" WHERE id = ")
                        .bind(Bind::I64(r.id))
                        .sql(" AND lease_token = ")
                        .bind(Bind::I64(r.token))
                        .execute(conn)?;
                    if n > 0 {
                        held.push(r.id);
                    }
                }
                Ok(held)
            })
        }

        fn lease(
            &mut self,
            c: &$crate::store::row::Claim<'_>,
            rows: Vec<$crate::store::row::ClaimRow>,
        ) -> QueryResult<Vec<$crate::store::row::Claimed>> {
            $crate::store::lease::lease_rows!(self, c, rows)
        }

        fn first_due(
            &mut self,
            queue: &str,
            now: i64,
            exclude: &[i64],
        ) -> QueryResult<Option<i64>> {
            use $crate::store::stmt::Stmt;
            let c = $crate::store::row::Claim {
                now,
                lease_until: now,
                token: 0,
                owner: "",
                queue: Some(queue),
                limit: 1,
                ids: None,
                exclude,
            };
            $crate::store::lease::due_rows(
                Stmt::new(""),
                "k.id",
                &c,
                "k.task_status",
                $crate::store::lease::Dialect::Unlocked,
            )
            .typed::<diesel::sql_types::BigInt>()
            .get_result::<i64>(self)
            .optional()
        }

        fn defer_blocked(&mut self, queue: &str, now: i64, limit: i64) -> QueryResult<usize> {
            use $crate::store::lease::{blocked_rows, into_line, key_head};
            let mut by_key: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
            let rows: Vec<(i64, String)> = blocked_rows(queue, now, limit).load(self)?;
            for (id, key) in rows {
                by_key.entry(key).or_default().push(id);
            }
            let mut moved = 0;
            for (key, ids) in &by_key {
                self.isolate_next()?;
                moved += self.transaction(|conn| {
                    // The key's first row, locked: its completion (a delete or an update)
                    // waits for this transaction, and then releases what it put in line; if
                    // it was completed meanwhile, the next row is the first and nothing
                    // behind it is released early.
                    let head = if Self::CONCURRENT_CLAIMS {
                        key_head(key).sql(" FOR UPDATE")
                    } else {
                        key_head(key)
                    };
                    match head.get_result::<i64>(conn).optional()? {
                        Some(h) if ids.iter().any(|&id| id > h) => {
                            into_line(key, h, ids, now).execute(conn)
                        }
                        _ => Ok(0),
                    }
                })?;
            }
            Ok(moved)
        }

        fn release_next(&mut self, key: &str, after: i64, now: i64) -> QueryResult<usize> {
            use $crate::store::lease::{next_in_line, out_of_line};
            // Two statements: this runs after the commit that took row `after` out, which
            // waited for any transaction that was putting rows of the key in line (they lock
            // the key's first row), so what it reads here is settled.
            match next_in_line(key, after)
                .get_result::<(i64, i64)>(self)
                .optional()?
            {
                Some((id, at)) if at == $crate::status::WAITING => {
                    self.isolate_next()?;
                    out_of_line(id, now).execute(self)
                }
                _ => Ok(0),
            }
        }

        fn release_orphans(&mut self, queue: &str, now: i64, limit: i64) -> QueryResult<usize> {
            use $crate::store::stmt::{Bind, Stmt};
            let mut n = 0;
            for p in ($crate::queue::MIN_PRIORITY..=$crate::queue::MAX_PRIORITY).rev() {
                let ids: Vec<i64> =
                    $crate::store::lease::orphans_in_line(queue, p, limit).load(self)?;
                if ids.is_empty() {
                    continue;
                }
                self.isolate_next()?;
                n += Stmt::new("UPDATE consistency_task SET execute_time = ")
                    .bind(Bind::I64(now))
                    .sql(" WHERE execute_time = ")
                    .bind(Bind::I64($crate::status::WAITING))
                    .sql(" AND id IN ")
                    .ids(&ids)
                    .execute(self)?;
            }
            Ok(n)
        }

        fn hold_out_of_range(&mut self, queue: &str, now: i64) -> QueryResult<usize> {
            use $crate::queue::{MAX_PRIORITY, MIN_PRIORITY};
            use $crate::store::stmt::Bind;
            let message = format!(
                "tend: priority outside {MIN_PRIORITY}..{MAX_PRIORITY}, the levels tend \
                 claims (written by hand?): no pool would ever run this task; set its priority \
                 within the range, then `tend tasks retry ID`"
            );
            self.isolate_next()?;
            // No read of the row's other columns and no arithmetic, as `hold_unclaimable`.
            let s = $crate::store::lease::park($crate::status::TaskStatus::Held, now, &message)
                .sql(" WHERE queue = ")
                .bind(Bind::Text(queue))
                .sql(&format!(
                    " AND (priority > {MAX_PRIORITY} OR priority < {MIN_PRIORITY}) AND "
                ));
            $crate::store::lease::claimable(s, "task_status", "lease_expires_at", now)
                .sql(" AND execute_time <= ")
                .bind(Bind::I64(now))
                .execute(self)
        }

        fn cancel(&mut self, id: i64, now: i64, message: &str, running: bool) -> QueryResult<bool> {
            $crate::store::lease::park_by_id($crate::status::TaskStatus::Dead, id, now, message)
                .sql(if running {
                    " AND task_status IN (0, 1, 2, 5)"
                } else {
                    " AND task_status IN (0, 2, 5)"
                })
                .execute(self)
                .map(|n| n == 1)
        }

        fn hold_unclaimable(&mut self, id: i64, now: i64, message: &str) -> QueryResult<usize> {
            use $crate::store::stmt::Bind;
            // No arithmetic and no read of the row's other columns: this must work on the
            // rows the claim could not take.
            let s = $crate::store::lease::park_by_id(
                $crate::status::TaskStatus::Held,
                id,
                now,
                message,
            )
            .sql(" AND ");
            $crate::store::lease::claimable(s, "task_status", "lease_expires_at", now)
                .sql(" AND execute_time <= ")
                .bind(Bind::I64(now))
                .execute(self)
        }

        fn extend(&mut self, token: i64, ids: &[i64], until: i64) -> QueryResult<usize> {
            use $crate::store::stmt::{Bind, Stmt};
            let mut n = 0;
            // Chunks keep the padded lists within every backend's bind limit.
            for chunk in ids.chunks(1024) {
                self.isolate_next()?;
                // Only the lease's end, as the claim's lease (`lease::lease_set`): no indexed
                // column, so a HOT update on PostgreSQL.
                n += Stmt::new("UPDATE consistency_task SET lease_expires_at = ")
                    .bind(Bind::I64(until))
                    .sql(" WHERE lease_token = ")
                    .bind(Bind::I64(token))
                    .sql(" AND id IN ")
                    .ids(chunk)
                    .execute(self)?;
            }
            Ok(n)
        }

        fn held(&mut self, token: i64, ids: &[i64]) -> QueryResult<Vec<i64>> {
            let mut held = Vec::new();
            for chunk in ids.chunks(1024) {
                held.extend($crate::store::lease::leased_by(token, chunk).load::<i64>(self)?);
            }
            Ok(held)
        }

        fn purge_completed(&mut self, before: i64, limit: i64) -> QueryResult<usize> {
            use $crate::schema::consistency_task::dsl as t;
            use $crate::store::stmt::{Bind, Stmt};
            let done = $crate::status::TaskStatus::Succeeded.as_i32();
            // Two steps because MySQL/MariaDB refuse LIMIT inside an IN sub-select. PostgreSQL
            // and SQLite use the partial index `consistency_task_kept (gmt_modified) WHERE
            // duration_ms IS NOT NULL` (every kept success has a duration; the lease never
            // writes it, so the index costs the lease nothing) only for a query whose text
            // implies its predicate; the status is a literal too.
            let ids: Vec<i64> = Stmt::new(&format!(
                "SELECT id FROM consistency_task WHERE duration_ms IS NOT NULL AND \
                 task_status = {done} AND gmt_modified < "
            ))
            .bind(Bind::I64(before))
            .sql(" LIMIT ")
            .bind(Bind::I64(limit))
            .typed::<diesel::sql_types::BigInt>()
            .load(self)?;
            if ids.is_empty() {
                return Ok(0);
            }
            self.isolate_next()?;
            diesel::delete(
                t::consistency_task
                    .filter(t::id.eq_any(&ids))
                    .filter(t::task_status.eq(done)),
            )
            .execute(self)
        }

        fn node_claim(
            &mut self,
            node_id: i32,
            owner: &str,
            now: i64,
            stale_before: i64,
        ) -> QueryResult<bool> {
            use $crate::schema::tend_node::dsl as n;
            let taken = diesel::update(
                n::tend_node
                    .filter(n::node_id.eq(node_id))
                    .filter(n::heartbeat_at.lt(stale_before)),
            )
            .set((
                n::owner.eq(owner),
                n::heartbeat_at.eq(now),
                n::started_at.eq(now),
            ))
            .execute(self)?;
            if taken == 1 {
                return Ok(true);
            }
            // Free slot: insert; a unique violation means another process was faster (a plain
            // statement, so no transaction is left aborted on PostgreSQL).
            let exists: i64 = n::tend_node
                .filter(n::node_id.eq(node_id))
                .count()
                .get_result(self)?;
            if exists > 0 {
                return Ok(false);
            }
            match diesel::insert_into(n::tend_node)
                .values((
                    n::node_id.eq(node_id),
                    n::owner.eq(owner),
                    n::heartbeat_at.eq(now),
                    n::started_at.eq(now),
                ))
                .execute(self)
            {
                Ok(_) => Ok(true),
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                )) => Ok(false),
                Err(e) => Err(e),
            }
        }

        fn node_heartbeat(&mut self, node_id: i32, owner: &str, now: i64) -> QueryResult<bool> {
            use $crate::schema::tend_node::dsl as n;
            diesel::update(
                n::tend_node
                    .filter(n::node_id.eq(node_id))
                    .filter(n::owner.eq(owner)),
            )
            .set(n::heartbeat_at.eq(now))
            .execute(self)
            .map(|k| k == 1)
        }

        fn node_live(&mut self, since: i64) -> QueryResult<Vec<i32>> {
            use $crate::schema::tend_node::dsl as n;
            n::tend_node
                .filter(n::heartbeat_at.ge(since))
                .select(n::node_id)
                .order(n::node_id)
                .load(self)
        }

        fn node_leave(&mut self, node_id: i32, owner: &str) -> QueryResult<usize> {
            use $crate::schema::tend_node::dsl as n;
            diesel::delete(
                n::tend_node
                    .filter(n::node_id.eq(node_id))
                    .filter(n::owner.eq(owner)),
            )
            .execute(self)
        }

        fn schedule_get(
            &mut self,
            name: &str,
        ) -> QueryResult<Option<$crate::store::row::ScheduleRow>> {
            use $crate::schema::tend_schedule::dsl as s;
            s::tend_schedule
                .filter(s::name.eq(name))
                .select($crate::store::row::ScheduleRow::as_select())
                .first(self)
                .optional()
        }

        fn schedule_create(&mut self, row: &$crate::store::row::ScheduleRow) -> QueryResult<bool> {
            use $crate::schema::tend_schedule::dsl as s;
            // As `node_claim`: a plain statement, a unique violation means another process
            // created it first (no backend-specific "insert or ignore" needed).
            match diesel::insert_into(s::tend_schedule)
                .values(row)
                .execute(self)
            {
                Ok(n) => Ok(n == 1),
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                )) => Ok(false),
                Err(e) => Err(e),
            }
        }

        fn schedule_advance(
            &mut self,
            expected_last: i64,
            row: &$crate::store::row::ScheduleRow,
            tasks: &[$crate::store::row::NewRow],
        ) -> QueryResult<bool> {
            use $crate::schema::tend_schedule::dsl as s;
            self.isolate_next()?;
            self.transaction(|conn| {
                // The compare-and-set: a concurrent process blocks on the row lock (SQLite: on
                // the write lock) until this commits, then finds `last_slot_ms` changed and
                // updates nothing.
                let moved = diesel::update(
                    s::tend_schedule
                        .filter(s::name.eq(&row.name))
                        .filter(s::last_slot_ms.eq(expected_last)),
                )
                .set((
                    s::spec.eq(&row.spec),
                    s::last_slot_ms.eq(row.last_slot_ms),
                    s::next_slot_ms.eq(row.next_slot_ms),
                    s::updated_at.eq(row.updated_at),
                ))
                .execute(conn)?;
                if moved != 1 {
                    return Ok(false);
                }
                // In statements of at most 1000 rows, as `enqueue_many`: a catch-up of many
                // slots stays under every backend's limit on binds per statement.
                for chunk in tasks.chunks(1000) {
                    conn.insert_many(chunk)?;
                }
                Ok(true)
            })
        }

        fn schedules(&mut self) -> QueryResult<Vec<$crate::store::row::ScheduleRow>> {
            use $crate::schema::tend_schedule::dsl as s;
            s::tend_schedule
                .order(s::name)
                .select($crate::store::row::ScheduleRow::as_select())
                .load(self)
        }

        fn by_signature(
            &mut self,
            signature: &str,
        ) -> QueryResult<Vec<$crate::store::row::TaskRow>> {
            use $crate::schema::consistency_task::dsl as t;
            t::consistency_task
                .filter(t::method_sign_name.eq(signature))
                .order(t::id)
                .select($crate::store::row::TaskRow::as_select())
                .load(self)
        }

        fn find(&mut self, id: i64) -> QueryResult<Option<$crate::store::row::TaskRow>> {
            use $crate::schema::consistency_task::dsl as t;
            t::consistency_task
                .filter(t::id.eq(id))
                .select($crate::store::row::TaskRow::as_select())
                .first(self)
                .optional()
        }

        fn check_schema(&mut self) -> QueryResult<()> {
            use $crate::schema::consistency_task::dsl as t;
            t::consistency_task
                .select($crate::store::row::TaskRow::as_select())
                .limit(0)
                .load::<$crate::store::row::TaskRow>(self)
                .map(|_| ())
        }
    };
}
pub(crate) use common_ops;
