//! Fallback and alerts: a task whose action keeps failing runs its fallback after the first
//! failure (threshold 0, the seed's default), and when the fallback fails too, the alert
//! expression decides whether to page someone. Right-now tasks go through an `Outbox`, which
//! hands them to the pool the moment the transaction commits, and a sync task runs in this
//! thread and returns its outcome.
//!
//! ```text
//! cargo run --example fallback_alert
//! ```

use std::error::Error;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use serde::{Deserialize, Serialize};
use tend::{Alert, Registry, Task, TaskContext, TaskError, TaskOptions, ThreadWay, WorkerPool};

/// Refund a payment through a gateway that is down; the fallback files a manual refund
/// ticket, and fails for order 2 as well, which fires the alert.
#[derive(Serialize, Deserialize)]
struct Refund {
    order_id: i64,
}

impl Task for Refund {
    const SIGNATURE: &'static str = "payments.refund";

    fn options() -> TaskOptions {
        TaskOptions::new()
            .fallback("payments.manual_refund_ticket")
            .fallback_threshold(0)
            .execute_interval(Duration::from_secs(1))
            .max_attempts(3)
            // Page on every failure of the fallback (the seed's default would wait for the
            // second attempt: `executeTimes > 1 && executeTimes < 5`).
            .alert_expression(Some("fallbackFailed && executeTimes >= 1"))
            .alerter("pager")
    }

    fn execute(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
        Err(TaskError::new("payment gateway returned 503"))
    }

    fn fallback(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        if self.order_id == 2 {
            return Err(TaskError::new("ticket system is down too"));
        }
        println!(
            "  fallback: filed a manual refund ticket for order {} (attempt {})",
            self.order_id,
            ctx.attempt()
        );
        Ok(())
    }
}

/// A receipt printed in the caller's thread right after the commit (thread way Sync).
#[derive(Serialize, Deserialize)]
struct PrintReceipt {
    order_id: i64,
}

impl Task for PrintReceipt {
    const SIGNATURE: &'static str = "orders.print_receipt";

    fn options() -> TaskOptions {
        TaskOptions::new().thread_way(ThreadWay::Sync)
    }

    fn execute(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
        println!(
            "  sync: printed the receipt of order {} on thread {:?}",
            self.order_id,
            std::thread::current().name().unwrap_or("main")
        );
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    let path = std::env::temp_dir().join("tend-fallback-alert.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let pool = Pool::builder()
        .connection_customizer(Box::new(tend::SqliteSetup::new()))
        .build(ConnectionManager::<SqliteConnection>::new(
            path.to_str().ok_or("temp dir is not UTF-8")?,
        ))?;
    tend::migrate(&mut pool.get()?)?;

    let pages = Arc::new(AtomicU32::new(0));
    let counter = pages.clone();
    let mut registry = Registry::new();
    registry.alerter("pager", move |a: &Alert| {
        counter.fetch_add(1, Ordering::SeqCst);
        println!(
            "  ALERT via pager: task {} ({}) attempt {}: {} / fallback: {}",
            a.id,
            a.signature,
            a.attempt(),
            a.error_msg,
            a.fallback_error_msg.as_deref().unwrap_or("-")
        );
    })?;
    registry.register::<Refund>()?.register::<PrintReceipt>()?;

    let workers = WorkerPool::builder(pool.clone(), registry)
        .threads(2)
        .poll_interval(Duration::from_millis(100))
        .build()?;
    let outbox = workers.outbox();
    let handle = workers.start()?;

    println!("1. Two refunds and a receipt, committed in one transaction:");
    let mut conn = pool.get()?;
    let committed = outbox.transaction(&mut conn, |conn, tx| {
        tx.enqueue(conn, &Refund { order_id: 1 })?;
        tx.enqueue(conn, &Refund { order_id: 2 })?;
        tx.enqueue(conn, &PrintReceipt { order_id: 1 })?;
        Ok::<_, tend::Error>(())
    })?;
    for o in committed.sync_outcomes() {
        println!("  sync outcome returned to the caller: {o:?}");
    }

    println!("2. The pool runs the refunds at once (no poll wait); watching the table:");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        #[derive(QueryableByName, Debug)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            id: i64,
            #[diesel(sql_type = diesel::sql_types::Integer)]
            task_status: i32,
            #[diesel(sql_type = diesel::sql_types::Integer)]
            execute_times: i32,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            fallback_error_msg: Option<String>,
        }
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT id, task_status, execute_times, fallback_error_msg FROM consistency_task",
        )
        .load(&mut conn)?;
        let dead = rows.iter().all(|r| r.task_status == 4);
        if dead || Instant::now() > deadline {
            for r in &rows {
                println!(
                    "  left in the table: task {} status {} after {} attempts, fallback error: {}",
                    r.id,
                    tend::TaskStatus::from_i32(r.task_status).map_or("?", |s| s.name()),
                    r.execute_times,
                    r.fallback_error_msg.as_deref().unwrap_or("-")
                );
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = handle.shutdown();
    println!(
        "3. Shut down ({} released); the pager was called {} time(s).",
        report.released,
        pages.load(Ordering::SeqCst)
    );
    if pages.load(Ordering::SeqCst) == 0 {
        return Err("expected at least one alert".into());
    }
    Ok(())
}
