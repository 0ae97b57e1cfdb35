//! Order per key: tasks with the same ordering key run one at a time, in enqueue order, across
//! threads, processes and retries; tasks of different keys run side by side. Here 3 orders × 5
//! steps go to a pool of 4 threads, and the first attempt of some steps fails: each order's
//! steps still run 0, 1, 2, 3, 4, never two at once.
//!
//! ```text
//! cargo run --example ordered
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Mutex;
use std::time::Duration;

use diesel::r2d2::{ConnectionManager, Pool};
use diesel::SqliteConnection;
use serde::{Deserialize, Serialize};
use tend::{NewTask, Registry, Task, TaskContext, TaskError, WorkerPool};

/// Order id → the steps that succeeded, in the order they ran.
static RAN: Mutex<BTreeMap<u32, Vec<u32>>> = Mutex::new(BTreeMap::new());

#[derive(Serialize, Deserialize)]
struct OrderEvent {
    order: u32,
    step: u32,
}

impl Task for OrderEvent {
    const SIGNATURE: &'static str = "orders.event";

    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        if ctx.attempt() == 1 && (self.order + self.step) % 3 == 0 {
            // The next step of this order waits for this one's retry.
            return Err(TaskError::retry_after("flaky", Duration::from_millis(50)));
        }
        std::thread::sleep(Duration::from_millis(5));
        RAN.lock()
            .expect("lock")
            .entry(self.order)
            .or_default()
            .push(self.step);
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::temp_dir().join("tend-ordered-example.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let pool = Pool::builder()
        .connection_customizer(Box::new(tend::SqliteSetup::new()))
        .build(ConnectionManager::<SqliteConnection>::new(
            path.to_str().ok_or("temp dir is not UTF-8")?,
        ))?;
    tend::migrate(&mut pool.get()?)?;

    // Enqueued in order per key (in your service: in the transaction that changes the order).
    let mut conn = pool.get()?;
    for step in 0..5 {
        for order in 1..=3 {
            let event =
                NewTask::new(&OrderEvent { order, step })?.ordering_key(format!("order-{order}"));
            tend::enqueue_new(&mut conn, event)?;
        }
    }
    let mut registry = Registry::new();
    registry.register::<OrderEvent>()?;
    let handle = WorkerPool::builder(pool.clone(), registry)
        .threads(4)
        .poll_interval(Duration::from_millis(20))
        .build()?
        .start()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while RAN
        .lock()
        .expect("lock")
        .values()
        .map(Vec::len)
        .sum::<usize>()
        < 15
    {
        if std::time::Instant::now() > deadline {
            return Err("the 15 steps did not run within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    handle.shutdown();
    let ran = RAN.lock().expect("lock").clone();
    for (order, steps) in &ran {
        println!("order-{order}: steps ran in the order {steps:?}");
        if *steps != [0, 1, 2, 3, 4] {
            return Err(format!("order-{order} ran out of order: {steps:?}").into());
        }
    }
    drop((conn, pool));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
