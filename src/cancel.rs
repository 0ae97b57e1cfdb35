//! Cancelling a task from code, with the CLI's rules.

use crate::error::Error;
use crate::store::StoreConnection;
use crate::util::now_ms;

/// Cancels task `id` (as `tend tasks cancel ID` does): a pending, failed or held task becomes
/// dead and parked with the message "cancelled by the application", its lease dropped, and is
/// never run unless an operator retries it. A running task is left alone unless `running` is
/// true; then its worker's result is discarded (its fenced write finds no lease), although its
/// attempt may still finish its side effects. Runs on your connection, so it can be part of
/// your transaction (cancel the reminder in the transaction that pays the order).
///
/// Returns whether the task was cancelled: `false` when no such task is on this database, or it
/// is succeeded, dead, running (without `running`) or in a status this build does not know.
///
/// # Errors
/// [`ErrorKind::Database`](crate::ErrorKind::Database) when the statement fails.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut conn = memory_db();
/// let id = tend::enqueue(&mut conn, &Ship { order_id: 7 })?.id().unwrap();
/// assert!(tend::cancel(&mut conn, id, false)?);
/// assert_eq!(task_status(&mut conn, id), Some(tend::TaskStatus::Dead));
/// assert!(!tend::cancel(&mut conn, id, false)?); // already dead
/// assert!(!tend::cancel(&mut conn, 999, false)?); // no such task
/// # Ok(()) }
/// ```
pub fn cancel<C: StoreConnection>(conn: &mut C, id: i64, running: bool) -> Result<bool, Error> {
    let backend = conn.backend();
    conn.cancel(id, now_ms(), "cancelled by the application", running)
        .map_err(|e| Error::from_db(backend, e))
}
