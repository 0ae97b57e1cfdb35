//! Exactly-once local effects: a handler completes its task in its own transaction.

use std::sync::atomic::Ordering;

use crate::error::{Error, ErrorKind};
use crate::store::row::Finish;
use crate::store::StoreConnection;
use crate::task::TaskContext;
use crate::util::now_ms;

/// Completes the running task inside the caller's transaction on `conn`, fenced by the
/// attempt's lease: the handler's own database writes and the task's completion then commit
/// together or not at all.
///
/// Call it in the handler, inside a transaction on the task's own database (its shard), after
/// the writes it must make exactly once and just before the commit (the completed row stays
/// locked until then, which holds back the pool's lease renewals of it). If the lease was lost
/// (the attempt ran past it and another worker took the task over, or the task was cancelled),
/// it returns an error and writes nothing: return it, so that the transaction rolls back and
/// none of the handler's writes are kept. The worker then writes nothing more for the attempt.
///
/// Without it a handler's database writes are at-least-once: a crash between the handler's
/// commit and the completion runs them again. With it, a crash anywhere leaves either both or
/// neither. Effects outside the database (an HTTP call) stay at-least-once, as everywhere.
///
/// # Errors
/// [`ErrorKind::LeaseLost`] when the task is no longer held by this attempt (roll back);
/// [`ErrorKind::Database`] when the statement fails.
///
/// ```
/// # include!("doctest_setup.rs");
/// use diesel::prelude::*;
/// use diesel::r2d2::{ConnectionManager, Pool};
/// use tend::{Registry, Task, TaskContext, TaskError};
/// type Db = Pool<ConnectionManager<SqliteConnection>>;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct AddPoints { user_id: i64, points: i64 }
/// impl Task for AddPoints {
///     const SIGNATURE: &'static str = "loyalty.add_points";
///     fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
///         let mut conn = ctx.state::<Db>()?.get()?;
///         conn.transaction(|conn| {
///             diesel::sql_query("UPDATE points SET total = total + ? WHERE user_id = ?")
///                 .bind::<diesel::sql_types::BigInt, _>(self.points)
///                 .bind::<diesel::sql_types::BigInt, _>(self.user_id)
///                 .execute(conn)?;
///             tend::complete_in(conn, ctx)?; // both commit, or neither
///             Ok::<_, TaskError>(())
///         })
///     }
/// }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("complete-in");
/// # let mut conn = pool.get()?;
/// # diesel::sql_query("CREATE TABLE points (user_id BIGINT PRIMARY KEY, total BIGINT)").execute(&mut conn)?;
/// # diesel::sql_query("INSERT INTO points VALUES (7, 0)").execute(&mut conn)?;
/// let mut registry = Registry::new();
/// registry.state(pool.clone())?.register::<AddPoints>()?;
/// let handle = tend::WorkerPool::builder(pool.clone(), registry).build()?.start()?;
/// tend::enqueue(&mut conn, &AddPoints { user_id: 7, points: 10 })?;
/// handle.wake();
/// assert!(eventually(|| task_count(&mut conn) == 0));
/// # handle.shutdown();
/// # let total = diesel::dsl::sql::<diesel::sql_types::BigInt>("(SELECT total FROM points)");
/// # assert_eq!(diesel::select(total).get_result::<i64>(&mut conn)?, 10);
/// # Ok(()) }
/// ```
pub fn complete_in<C: StoreConnection>(conn: &mut C, ctx: &TaskContext) -> Result<(), Error> {
    let backend = conn.backend();
    let held = if ctx.keep_completed {
        let now = now_ms();
        let ran = crate::util::millis(ctx.started.elapsed());
        let kept = Finish::kept(ctx.id, ctx.token, String::new(), None, ran, now);
        conn.finish(std::slice::from_ref(&kept))
            .map(|held| held.len())
    } else {
        conn.complete(ctx.token, &[ctx.id])
    }
    .map_err(|e| Error::from_db(backend, e))?;
    if held == 0 {
        return Err(Error::new(ErrorKind::LeaseLost { id: ctx.id }));
    }
    ctx.completed_in.store(true, Ordering::SeqCst);
    Ok(())
}
