//! Events as metrics: count what happens to tasks with plain atomics (a Prometheus or
//! OpenTelemetry exporter would read the same numbers), and keep completed rows for an audit
//! trail.
//!
//! ```text
//! cargo run --example metrics
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use serde::{Deserialize, Serialize};
use tend::{Event, Registry, Task, TaskContext, TaskError, TaskOptions, WorkerPool};

#[derive(Serialize, Deserialize)]
struct Charge {
    n: i64,
}

impl Task for Charge {
    const SIGNATURE: &'static str = "billing.charge";

    fn options() -> TaskOptions {
        TaskOptions::new().execute_interval(Duration::from_secs(1))
    }

    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        // Every fifth charge fails once, to show failures and retries in the counters.
        if self.n % 5 == 0 && ctx.attempt() == 1 {
            return Err(TaskError::new("card network timeout"));
        }
        Ok(())
    }
}

/// Counters by event kind, and a sum of attempt durations: what an exporter would publish.
#[derive(Default)]
struct Metrics {
    counts: BTreeMap<&'static str, u64>,
    run_time: Duration,
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::temp_dir().join("tend-metrics.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let pool = Pool::builder()
        .connection_customizer(Box::new(tend::SqliteSetup::new()))
        .build(ConnectionManager::<SqliteConnection>::new(
            path.to_str().ok_or("temp dir is not UTF-8")?,
        ))?;
    tend::migrate(&mut pool.get()?)?;

    let metrics = Arc::new(Mutex::new(Metrics::default()));
    let sink = metrics.clone();
    let events = move |e: &Event<'_>| {
        let mut m = sink.lock().expect("metrics lock");
        let kind = match e {
            Event::Enqueued(_) => "enqueued",
            Event::Claimed(_) => "claimed",
            Event::Started(_) => "started",
            Event::Succeeded { duration, .. } => {
                m.run_time += *duration;
                "succeeded"
            }
            Event::Failed { .. } => "failed",
            Event::Retried { .. } => "retried",
            Event::Dead { .. } => "dead",
            _ => "other",
        };
        *m.counts.entry(kind).or_default() += 1;
    };

    let mut registry = Registry::new();
    registry.register::<Charge>()?;
    let workers = WorkerPool::builder(pool.clone(), registry)
        .threads(2)
        .poll_interval(Duration::from_millis(100))
        .events(events)
        .keep_completed(Duration::from_secs(7 * 24 * 3600))
        .build()?;
    let outbox = workers.outbox();
    let handle = workers.start()?;

    let mut conn = pool.get()?;
    outbox.transaction(&mut conn, |conn, tx| {
        for n in 1..=20 {
            tx.enqueue(conn, &Charge { n })?;
        }
        Ok::<_, tend::Error>(())
    })?;

    // Wait until all 20 are kept as succeeded (status 3).
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let c: Count =
            diesel::sql_query("SELECT COUNT(*) AS n FROM consistency_task WHERE task_status = 3")
                .get_result(&mut conn)?;
        if c.n == 20 || Instant::now() > deadline {
            break c.n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    handle.shutdown();

    let m = metrics.lock().expect("metrics lock");
    println!("tasks kept as succeeded for the audit trail: {done}");
    for (kind, n) in &m.counts {
        println!("tend_events_total{{kind=\"{kind}\"}} {n}");
    }
    println!("tend_run_seconds_sum {:.6}", m.run_time.as_secs_f64());
    if done != 20 || m.counts.get("succeeded") != Some(&20) {
        return Err("expected 20 succeeded tasks".into());
    }
    Ok(())
}
