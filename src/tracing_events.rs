//! [`TracingEvents`]: a `tracing` span per attempt, and tend's events as `tracing` events.

use std::cell::RefCell;

use crate::events::{Event, Events, TaskInfo};

thread_local! {
    /// The attempt span open on this worker thread: (task id, entered span).
    static OPEN: RefCell<Option<(i64, tracing::span::EnteredSpan)>> = const { RefCell::new(None) };
}

/// Opens a span `tend.attempt` (fields `task.id`, `task.signature`, `task.attempt`,
/// `task.shard_key`, `outcome`) when a worker starts a task, entered on the worker's thread
/// while the handler runs, so the handler's own spans and events are its children; it closes
/// with the attempt's outcome (`succeeded`, `failed`, `dead`, `held`). The other events
/// (enqueued, retried, dead, alerts, …) become `tracing` events at target `tend::events`.
///
/// The worker emits `Started`, runs the handler and emits the outcome on one thread, which is
/// what lets an [`Events`] implementation hold the span.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("tracing-events");
/// use tend::{Registry, TracingEvents, WorkerPool};
/// let workers = WorkerPool::builder(pool, Registry::new()).events(TracingEvents).build();
/// assert!(workers.is_ok());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingEvents;

fn close(task: &TaskInfo<'_>, outcome: &'static str) -> bool {
    OPEN.with(|o| {
        let mut o = o.borrow_mut();
        match o.take() {
            Some((id, span)) if id == task.id => {
                span.record("outcome", outcome);
                drop(span);
                true
            }
            other => {
                *o = other;
                false
            }
        }
    })
}

impl Events for TracingEvents {
    fn event(&self, event: &Event<'_>) {
        match event {
            Event::Started(t) => {
                let span = tracing::info_span!(
                    "tend.attempt",
                    task.id = t.id,
                    task.signature = t.signature,
                    task.attempt = t.attempt,
                    task.shard_key = t.shard_key,
                    outcome = tracing::field::Empty,
                );
                OPEN.with(|o| {
                    // A span left open (an outcome this version does not close on) ends here.
                    *o.borrow_mut() = Some((t.id, span.entered()));
                });
            }
            Event::Succeeded { task, duration } => {
                tracing::debug!(target: "tend::events", duration_ms = duration.as_millis() as u64, "attempt succeeded");
                close(task, "succeeded");
            }
            Event::Failed {
                task,
                error,
                duration,
            } => {
                tracing::warn!(target: "tend::events", error, duration_ms = duration.as_millis() as u64, "attempt failed");
                close(task, "failed");
            }
            Event::Dead { task, error } => {
                tracing::warn!(target: "tend::events", task_id = task.id, signature = task.signature, error, "task dead");
                close(task, "dead");
            }
            Event::Held { task, error } => {
                tracing::warn!(target: "tend::events", task_id = task.id, signature = task.signature, error, "task held");
                close(task, "held");
            }
            Event::Enqueued(t) => {
                tracing::debug!(target: "tend::events", task_id = t.id, signature = t.signature, "enqueued")
            }
            Event::Retried {
                task,
                next_attempt_at_ms,
            } => {
                tracing::debug!(target: "tend::events", task_id = task.id, signature = task.signature, next_attempt_at_ms, "retry scheduled")
            }
            Event::AlertFired(t) => {
                tracing::warn!(target: "tend::events", task_id = t.id, signature = t.signature, "alert fired")
            }
            Event::LeaseExpired(t) => {
                tracing::warn!(target: "tend::events", task_id = t.id, signature = t.signature, "lease expired; claimed again")
            }
            Event::OutcomesRefused { count } => {
                tracing::warn!(target: "tend::events", count, "outcomes refused: another worker took the lease over")
            }
            other => tracing::debug!(target: "tend::events", "{other:?}"),
        }
    }
}
