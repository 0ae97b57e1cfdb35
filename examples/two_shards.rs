//! Two shards: each customer's orders live in the database their customer id routes to, and
//! each order's task is enqueued in the same transaction, on the same database. One pool
//! drains both.
//!
//! ```text
//! cargo run --example two_shards
//! ```
//!
//! With PostgreSQL or MySQL the code is the same: one r2d2 pool per server (or per database),
//! `Shards::new(vec![pool0, pool1])`.

use std::error::Error;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use serde::{Deserialize, Serialize};
use tend::{NewTask, Registry, Shards, Task, TaskContext, TaskError, WorkerPool};

diesel::table! {
    orders (id) {
        id -> BigInt,
        customer_id -> BigInt,
    }
}

static RAN: Mutex<Vec<(i64, i64)>> = Mutex::new(Vec::new());

#[derive(Serialize, Deserialize)]
struct Confirm {
    order_id: i64,
}

impl Task for Confirm {
    const SIGNATURE: &'static str = "orders.confirm";

    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        RAN.lock()
            .expect("lock")
            .push((self.order_id, ctx.shard_key()));
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut pools = Vec::new();
    for i in 0..2 {
        let path = std::env::temp_dir().join(format!("tend-two-shards-{i}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let pool = Pool::builder()
            .connection_customizer(Box::new(tend::SqliteSetup::new()))
            .build(ConnectionManager::<SqliteConnection>::new(
                path.to_str().ok_or("temp dir is not UTF-8")?,
            ))?;
        diesel::sql_query(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL)",
        )
        .execute(&mut pool.get()?)?;
        pools.push(pool);
    }
    let shards = Shards::new(pools)?;
    shards.migrate_all()?;

    let mut registry = Registry::new();
    registry.register::<Confirm>()?;
    let workers = WorkerPool::sharded(shards.clone(), registry)
        .poll_interval(Duration::from_millis(100))
        .build()?;
    let outbox = workers.outbox();
    let handle = workers.start()?;

    for order_id in 1..=6_i64 {
        let customer = 100 + order_id; // the key the business data is sharded by
        let mut conn = shards.get(customer)?;
        outbox.transaction(&mut conn, |conn, tx| {
            diesel::insert_into(orders::table)
                .values((orders::id.eq(order_id), orders::customer_id.eq(customer)))
                .execute(conn)?;
            tx.enqueue_new(
                conn,
                NewTask::new(&Confirm { order_id })?.shard_key(customer),
            )?;
            Ok::<_, tend::Error>(())
        })?;
        println!(
            "order {order_id} of customer {customer}: row and task on shard {}",
            shards.index_for(customer)
        );
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    while RAN.lock().expect("lock").len() < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    handle.shutdown();
    let ran = RAN.lock().expect("lock").clone();
    for (order, key) in &ran {
        println!(
            "confirmed order {order} (shard key {key}, shard {})",
            shards.index_for(*key)
        );
    }
    if ran.len() != 6 {
        return Err(format!("expected 6 confirmations, got {}", ran.len()).into());
    }
    Ok(())
}
