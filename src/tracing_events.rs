//! [`TracingEvents`]: a `tracing` span per attempt, and tend's events as `tracing` events.

use std::cell::RefCell;

use crate::events::{Event, Events, TaskInfo};

thread_local! {
    /// The attempt span open on this worker thread: (task id, entered span).
    static OPEN: RefCell<Option<(i64, tracing::span::EnteredSpan)>> = const { RefCell::new(None) };
}

/// Opens a span `tend.attempt` (fields `task.id`, `task.signature`, `task.attempt`,
/// `task.shard_key`, `trace.parent`, `outcome`) when a worker starts a task, entered on the
/// worker's thread while the handler runs, so the handler's own spans and events are its
/// children; it closes with the attempt's outcome (`succeeded`, `failed`, `dead`, `held`). The
/// other events (enqueued, retried, dead, alerts, …) become `tracing` events at target
/// `tend::events`.
///
/// `trace.parent` is the W3C [`TraceParent`](crate::TraceParent) stored with the task. With
/// the `opentelemetry` feature and a `tracing-opentelemetry` layer installed, tend stores the
/// enqueuing span's context there by itself and makes it the parent of every attempt's span,
/// so a request's trace shows the task's runs, on whichever process and however late they run.
///
/// The worker emits `Started`, runs the handler and emits the outcome on one thread, which is
/// what lets an [`Events`] implementation hold the span.
///
/// tend's own log lines go through the `log` crate; to see them as `tracing` events too,
/// install `tracing_log::LogTracer` in the application.
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
                    task.attempt = t.attempt(),
                    task.shard_key = t.shard_key,
                    trace.parent = t.trace_parent,
                    outcome = tracing::field::Empty,
                );
                // The enqueuing span's trace goes on in this attempt's span.
                #[cfg(feature = "opentelemetry")]
                if let Some(cx) = t
                    .trace_parent
                    .and_then(|s| crate::trace::TraceParent::parse(s).ok())
                    .and_then(|tp| tp.otel_context())
                {
                    use tracing_opentelemetry::OpenTelemetrySpanExt;
                    let _ = span.set_parent(cx);
                }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event as TEvent, Metadata, Subscriber};

    use super::*;

    /// What a test subscriber saw, as lines.
    #[derive(Default, Clone)]
    struct Seen {
        lines: Arc<Mutex<Vec<String>>>,
        stack: Arc<Mutex<Vec<u64>>>,
        next: Arc<AtomicU64>,
    }

    struct Fields(String);
    impl Visit for Fields {
        fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
            self.0.push_str(&format!(" {}={v:?}", f.name()));
        }
    }

    impl Subscriber for Seen {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, a: &Attributes<'_>) -> Id {
            let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
            let mut f = Fields(format!("new {id} {}", a.metadata().name()));
            a.record(&mut f);
            self.lines.lock().unwrap().push(f.0);
            Id::from_u64(id)
        }
        fn record(&self, id: &Id, r: &Record<'_>) {
            let mut f = Fields(format!("record {}", id.into_u64()));
            r.record(&mut f);
            self.lines.lock().unwrap().push(f.0);
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, e: &TEvent<'_>) {
            let parent = self.stack.lock().unwrap().last().copied().unwrap_or(0);
            let mut f = Fields(format!("event in {parent}"));
            e.record(&mut f);
            self.lines.lock().unwrap().push(f.0);
        }
        fn enter(&self, id: &Id) {
            self.stack.lock().unwrap().push(id.into_u64());
        }
        fn exit(&self, id: &Id) {
            self.stack.lock().unwrap().retain(|x| *x != id.into_u64());
            self.lines
                .lock()
                .unwrap()
                .push(format!("exit {}", id.into_u64()));
        }
    }

    #[test]
    fn a_span_per_attempt_around_the_handler() {
        let seen = Seen::default();
        let t = TaskInfo::new(42, "orders.ship", 7, 2);
        tracing::subscriber::with_default(seen.clone(), || {
            TracingEvents.event(&Event::Started(t));
            tracing::info!("the handler logs");
            TracingEvents.event(&Event::Failed {
                task: t,
                error: "boom",
                duration: Duration::from_millis(5),
            });
            TracingEvents.event(&Event::Retried {
                task: t,
                next_attempt_at_ms: 1,
            });
            TracingEvents.event(&Event::Started(t));
            TracingEvents.event(&Event::Succeeded {
                task: t,
                duration: Duration::from_millis(1),
            });
        });
        let lines = seen.lines.lock().unwrap().clone();
        let text = lines.join("\n");
        assert!(
            lines[0].starts_with("new 1 tend.attempt")
                && lines[0].contains("task.id=42")
                && lines[0].contains("task.signature=\"orders.ship\"")
                && lines[0].contains("task.attempt=2")
                && lines[0].contains("task.shard_key=7"),
            "{text}"
        );
        assert!(
            text.contains("event in 1 message=the handler logs"),
            "{text}"
        );
        assert!(
            text.contains("event in 1 message=attempt failed error=\"boom\""),
            "{text}"
        );
        assert!(
            text.contains("record 1 outcome=\"failed\"\nexit 1"),
            "{text}"
        );
        assert!(
            text.contains("event in 0 message=retry scheduled"),
            "{text}"
        );
        assert!(
            text.contains("record 2 outcome=\"succeeded\"\nexit 2"),
            "{text}"
        );
    }
}
