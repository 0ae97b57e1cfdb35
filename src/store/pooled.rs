//! Pooled connections store tasks exactly like the connection they wrap.

use diesel::prelude::*;

use super::ops;
use super::row::{Claim, ClaimRow, Claimed, Finish, NewRow, ScheduleRow, TaskRow, Written};

/// Pooled connections store tasks exactly like the connection they wrap.
impl<C> ops::Ops for diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<C>>
where
    C: ops::Ops + diesel::r2d2::R2D2Connection + 'static,
{
    const CONCURRENT_CLAIMS: bool = C::CONCURRENT_CLAIMS;
    const LISTEN_NOTIFY: bool = C::LISTEN_NOTIFY;
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn insert_one(&mut self, row: &NewRow) -> QueryResult<Option<i64>> {
        (**self).insert_one(row)
    }
    fn insert_many(&mut self, rows: &[NewRow]) -> QueryResult<usize> {
        (**self).insert_many(rows)
    }
    fn claim(&mut self, c: &Claim<'_>) -> QueryResult<Vec<Claimed>> {
        (**self).claim(c)
    }
    fn lease(&mut self, c: &Claim<'_>, rows: Vec<ClaimRow>) -> QueryResult<Vec<Claimed>> {
        (**self).lease(c, rows)
    }
    fn complete(&mut self, token: i64, ids: &[i64]) -> QueryResult<usize> {
        (**self).complete(token, ids)
    }
    fn write_and_claim(
        &mut self,
        completes: &[(i64, Vec<i64>)],
        finishes: &[Finish],
        c: &Claim<'_>,
    ) -> QueryResult<Written> {
        (**self).write_and_claim(completes, finishes, c)
    }
    fn defer_blocked(&mut self, queue: &str, now: i64, limit: i64) -> QueryResult<usize> {
        (**self).defer_blocked(queue, now, limit)
    }

    fn release_next(&mut self, key: &str, after: i64, now: i64) -> QueryResult<usize> {
        (**self).release_next(key, after, now)
    }

    fn release_orphans(&mut self, queue: &str, now: i64, limit: i64) -> QueryResult<usize> {
        (**self).release_orphans(queue, now, limit)
    }

    fn hold_out_of_range(&mut self, queue: &str, now: i64) -> QueryResult<usize> {
        (**self).hold_out_of_range(queue, now)
    }

    fn first_due(&mut self, queue: &str, now: i64, exclude: &[i64]) -> QueryResult<Option<i64>> {
        (**self).first_due(queue, now, exclude)
    }
    fn hold_unclaimable(&mut self, id: i64, now: i64, message: &str) -> QueryResult<usize> {
        (**self).hold_unclaimable(id, now, message)
    }
    fn cancel(&mut self, id: i64, now: i64, message: &str, running: bool) -> QueryResult<bool> {
        (**self).cancel(id, now, message, running)
    }
    fn finish(&mut self, rows: &[Finish]) -> QueryResult<Vec<i64>> {
        (**self).finish(rows)
    }
    fn extend(&mut self, token: i64, ids: &[i64], until: i64) -> QueryResult<usize> {
        (**self).extend(token, ids, until)
    }
    fn held(&mut self, token: i64, ids: &[i64]) -> QueryResult<Vec<i64>> {
        (**self).held(token, ids)
    }
    fn purge_completed(&mut self, before: i64, limit: i64) -> QueryResult<usize> {
        (**self).purge_completed(before, limit)
    }
    fn node_claim(
        &mut self,
        node_id: i32,
        owner: &str,
        now: i64,
        stale_before: i64,
    ) -> QueryResult<bool> {
        (**self).node_claim(node_id, owner, now, stale_before)
    }
    fn node_heartbeat(&mut self, node_id: i32, owner: &str, now: i64) -> QueryResult<bool> {
        (**self).node_heartbeat(node_id, owner, now)
    }
    fn node_live(&mut self, since: i64) -> QueryResult<Vec<i32>> {
        (**self).node_live(since)
    }
    fn schedule_get(&mut self, name: &str) -> QueryResult<Option<ScheduleRow>> {
        (**self).schedule_get(name)
    }
    fn schedule_create(&mut self, row: &ScheduleRow) -> QueryResult<bool> {
        (**self).schedule_create(row)
    }
    fn schedule_advance(
        &mut self,
        expected_last: i64,
        row: &ScheduleRow,
        tasks: &[NewRow],
    ) -> QueryResult<bool> {
        (**self).schedule_advance(expected_last, row, tasks)
    }
    fn schedules(&mut self) -> QueryResult<Vec<ScheduleRow>> {
        (**self).schedules()
    }
    fn node_leave(&mut self, node_id: i32, owner: &str) -> QueryResult<usize> {
        (**self).node_leave(node_id, owner)
    }
    fn by_signature(&mut self, signature: &str) -> QueryResult<Vec<TaskRow>> {
        (**self).by_signature(signature)
    }
    fn find(&mut self, id: i64) -> QueryResult<Option<TaskRow>> {
        (**self).find(id)
    }
    fn check_schema(&mut self) -> QueryResult<()> {
        (**self).check_schema()
    }
    fn check_setup(&mut self) -> Result<(), String> {
        (**self).check_setup()
    }
    fn defer_checkpoints(&mut self, defer: bool) -> QueryResult<()> {
        (**self).defer_checkpoints(defer)
    }
    fn generic_plans(&mut self, on: bool) -> QueryResult<()> {
        (**self).generic_plans(on)
    }
    fn checkpoint(&mut self) -> QueryResult<()> {
        (**self).checkpoint()
    }
    fn take_notifications(&mut self) -> QueryResult<usize> {
        (**self).take_notifications()
    }
    fn run_migrations(&mut self) -> Result<(), String> {
        (**self).run_migrations()
    }
    fn isolate_next(&mut self) -> QueryResult<()> {
        (**self).isolate_next()
    }
}
