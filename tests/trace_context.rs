//! The W3C trace context a task carries (issue 15), on every backend: a `traceparent` given at
//! enqueue is stored in `trace_parent` and handed to each run's events; a hand-edited garbage
//! value never stops the task; and with the `opentelemetry` feature the span that enqueued the
//! task becomes the parent of the span of its run, on a worker thread, through the database.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use serde::{Deserialize, Serialize};
use support::{per_backend, wait_for, Db, TestConn};
use tend::{Event, NewTask, Registry, Task, TaskContext, TaskError, TraceParent, WorkerPool};

per_backend!(scenarios: stored_and_handed_to_runs, garbage_is_ignored);
#[cfg(feature = "opentelemetry")]
per_backend!(scenarios: enqueuing_span_parents_the_run);

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Debug, Serialize, Deserialize)]
struct Traced {
    n: i64,
}

impl Task for Traced {
    const SIGNATURE: &'static str = "tests.traced";
    fn execute(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
        tracing_child_event(self.n);
        Ok(())
    }
}

/// An event inside the handler (a child of the attempt's span where a subscriber records it).
fn tracing_child_event(_n: i64) {
    #[cfg(feature = "tracing")]
    tracing::info!(n = _n, "handler ran");
}

type Seen = Arc<Mutex<Vec<(i64, Option<String>)>>>;

/// Runs a pool until every task of `ids` has started, recording each start's trace parent.
fn run_until_started<C: TestConn>(db: &Db, ids: &[i64]) -> Seen {
    let pool = support::migrated::<C>(db, 3);
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let mut registry = Registry::new();
    registry.register::<Traced>().unwrap();
    let handle = WorkerPool::builder(pool, registry)
        .threads(2)
        .poll_interval(Duration::from_millis(50))
        .events(move |e: &Event<'_>| {
            if let Event::Started(t) = e {
                record
                    .lock()
                    .unwrap()
                    .push((t.id, t.trace_parent.map(str::to_string)));
            }
        })
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the tasks to start", Duration::from_secs(30), || {
        let s = seen.lock().unwrap();
        ids.iter().all(|id| s.iter().any(|(i, _)| i == id))
    });
    handle.shutdown();
    seen
}

fn stored<C: TestConn>(conn: &mut C, id: i64) -> Option<String> {
    C::row(conn, id).expect("the row").trace_parent
}

fn stored_and_handed_to_runs<C: TestConn>() {
    let Some(db) = Db::create(C::BACKEND, "trace-context") else {
        return;
    };
    let pool = support::migrated::<C>(&db, 2);
    let mut conn = pool.get().unwrap();
    let tp = TraceParent::parse(TP).unwrap();
    let with = tend::enqueue_new(
        &mut *conn,
        NewTask::new(&Traced { n: 1 })
            .unwrap()
            .trace_parent(Some(tp.clone())),
    )
    .unwrap()
    .id()
    .unwrap();
    // Without the `opentelemetry` feature (or with it, outside any span) nothing is stored.
    let without = tend::enqueue(&mut *conn, &Traced { n: 2 })
        .unwrap()
        .id()
        .unwrap();
    let cleared = tend::enqueue_new(
        &mut *conn,
        NewTask::new(&Traced { n: 3 }).unwrap().trace_parent(None),
    )
    .unwrap()
    .id()
    .unwrap();
    // enqueue_many writes it too.
    let written = tend::enqueue_many(
        &mut *conn,
        vec![NewTask::new(&Traced { n: 4 })
            .unwrap()
            .trace_parent(Some(tp.clone()))],
    )
    .unwrap();
    assert_eq!(written, 1);
    let many = conn.i64s("SELECT MAX(id) AS v FROM consistency_task")[0];
    assert_eq!(stored(&mut *conn, with).as_deref(), Some(TP));
    assert_eq!(stored(&mut *conn, without), None);
    assert_eq!(stored(&mut *conn, cleared), None);
    assert_eq!(stored(&mut *conn, many).as_deref(), Some(TP));
    drop(conn);

    let seen = run_until_started::<C>(&db, &[with, without, cleared, many]);
    let seen = seen.lock().unwrap();
    let of = |id: i64| seen.iter().find(|(i, _)| *i == id).unwrap().1.clone();
    assert_eq!(of(with).as_deref(), Some(TP));
    assert_eq!(of(many).as_deref(), Some(TP));
    assert_eq!(of(without), None);
    assert_eq!(of(cleared), None);
}

/// A value that is not a traceparent (written by hand, or by an older tool) is ignored with a
/// debug line; the task runs as if it had none.
fn garbage_is_ignored<C: TestConn>() {
    let Some(db) = Db::create(C::BACKEND, "trace-garbage") else {
        return;
    };
    let pool = support::migrated::<C>(&db, 2);
    let mut conn = pool.get().unwrap();
    let mut ids = Vec::new();
    for garbage in [
        "",
        "not a trace",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        let id = tend::enqueue(&mut *conn, &Traced { n: 9 })
            .unwrap()
            .id()
            .unwrap();
        conn.batch_execute(&format!(
            "UPDATE consistency_task SET trace_parent = '{garbage}' WHERE id = {id}"
        ))
        .unwrap();
        ids.push(id);
    }
    drop(conn);
    let seen = run_until_started::<C>(&db, &ids);
    for (id, tp) in seen.lock().unwrap().iter() {
        assert_eq!(*tp, None, "task {id}");
    }
    let mut conn = pool.get().unwrap();
    wait_for("the tasks to succeed", Duration::from_secs(30), || {
        support::task_count(&mut *conn) == 0
    });
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use std::sync::OnceLock;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    /// One process-wide subscriber with an OpenTelemetry layer that exports to memory: the
    /// workers run on their own threads, so a thread-local subscriber would not see them.
    pub fn exporter() -> &'static (InMemorySpanExporter, SdkTracerProvider) {
        static SETUP: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
        SETUP.get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("tend-tests"));
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                .expect("the only global subscriber");
            (exporter, provider)
        })
    }
}

#[cfg(feature = "opentelemetry")]
fn enqueuing_span_parents_the_run<C: TestConn>() {
    use opentelemetry::Value;
    let Some(db) = Db::create(C::BACKEND, "trace-otel") else {
        return;
    };
    let (exporter, provider) = otel::exporter();
    let pool = support::migrated::<C>(&db, 3);
    let request = tracing::info_span!("http.request", route = "/orders");
    let (key, tp) = {
        let _in = request.enter();
        let tp = TraceParent::current().expect("the request span has an OpenTelemetry context");
        let mut conn = pool.get().unwrap();
        // Ids repeat across the backends' databases; the shard key tells their spans apart.
        static KEY: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(7000);
        let key = KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let task = NewTask::new(&Traced { n: 1 }).unwrap().shard_key(key);
        let id = tend::enqueue_new(&mut *conn, task).unwrap().id().unwrap();
        assert_eq!(stored(&mut *conn, id), Some(tp.to_string()));
        (key, tp)
    };
    drop(request);

    let mut registry = Registry::new();
    registry.register::<Traced>().unwrap();
    let handle = WorkerPool::builder(pool.clone(), registry)
        .threads(2)
        .poll_interval(Duration::from_millis(50))
        .events(tend::TracingEvents)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let mut conn = pool.get().unwrap();
    wait_for("the task to succeed", Duration::from_secs(30), || {
        support::task_count(&mut *conn) == 0
    });
    handle.shutdown();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let attempt = spans
        .iter()
        .find(|s| {
            s.name == "tend.attempt"
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "task.shard_key" && kv.value == Value::I64(key))
        })
        .unwrap_or_else(|| panic!("no tend.attempt span for shard key {key} among {spans:#?}"));
    assert_eq!(
        attempt.span_context.trace_id().to_string(),
        tp.trace_id(),
        "the run is in the request's trace"
    );
    assert_eq!(
        attempt.parent_span_id.to_string(),
        tp.parent_id(),
        "the request's span is its parent"
    );
    let attr = |k: &str| {
        attempt
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attr("outcome").as_deref(), Some("succeeded"));
    assert_eq!(attr("trace.parent").as_deref(), Some(tp.as_str()));
    // The handler's own event is inside the attempt's span.
    assert!(
        attempt.events.iter().any(|e| e.name == "handler ran"),
        "{attempt:#?}"
    );
}
