//! Periodic tasks: a schedule registered with the pool enqueues one task per slot, and several
//! processes registering the same schedule enqueue each slot once between them, with no
//! leader. Here three pools over one SQLite file stand for three processes, each with the
//! same 200 ms schedule; after about two seconds every slot they covered was enqueued and run
//! exactly once.
//!
//! ```text
//! cargo run --example periodic
//! cargo run --example periodic --features cron   # also prints a cron schedule's next runs
//! ```
//!
//! With PostgreSQL or MySQL the code is the same; run `tend::migrate` first (it creates
//! `tend_schedule`, the table whose compare-and-set makes each slot's enqueue happen once).

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use serde::{Deserialize, Serialize};
use tend::{Missed, Periodic, Registry, Task, TaskContext, TaskError, WorkerPool};

/// Slot (epoch ms) → how many times its task ran, over all pools.
static RAN: Mutex<BTreeMap<i64, u32>> = Mutex::new(BTreeMap::new());

#[derive(Serialize, Deserialize)]
struct Report {
    slot_ms: i64,
}

impl Task for Report {
    const SIGNATURE: &'static str = "reports.every_200ms";

    fn execute(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
        *RAN.lock().expect("lock").entry(self.slot_ms).or_default() += 1;
        Ok(())
    }
}

/// A slot's instant as epoch milliseconds.
fn millis(slot: SystemTime) -> i64 {
    slot.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::temp_dir().join("tend-periodic-example.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let pool = Pool::builder()
        .connection_customizer(Box::new(tend::SqliteSetup::new()))
        .build(ConnectionManager::<SqliteConnection>::new(
            path.to_str().ok_or("temp dir is not UTF-8")?,
        ))?;
    tend::migrate(&mut pool.get()?)?;

    // `CatchUp(100)` enqueues every slot a late tick passed over (the default,
    // `Missed::RunOnce`, enqueues only the latest). Three pools stand for three processes.
    // Every process declares the same schedule; slots are multiples of 200 ms since the epoch.
    let schedule = Periodic::every("reports.every_200ms", Duration::from_millis(200))?
        .missed(Missed::CatchUp(100))
        .task(|slot| Report {
            slot_ms: millis(slot), // the slot is a SystemTime
        });
    let handles = (0..3)
        .map(|i| {
            let mut registry = Registry::new();
            registry.register::<Report>()?;
            WorkerPool::builder(pool.clone(), registry)
                .owner(format!("process-{i}"))
                .threads(2)
                .periodic(schedule.clone())
                .build()?
                .start()
        })
        .collect::<Result<Vec<_>, tend::Error>>()?;
    std::thread::sleep(Duration::from_millis(2100));
    for h in handles {
        h.shutdown();
    }

    let ran = RAN.lock().expect("lock").clone();
    let slots: Vec<i64> = ran.keys().copied().collect();
    println!(
        "3 pools, one schedule: {} slots, each run {:?} time(s)",
        slots.len(),
        ran.values().collect::<std::collections::BTreeSet<_>>()
    );
    if slots.len() < 5 || ran.values().any(|n| *n != 1) {
        return Err(format!("expected about 10 slots, each run once: {ran:?}").into());
    }
    if slots.windows(2).any(|w| w[1] - w[0] != 200) {
        return Err(format!("a slot was skipped: {slots:?}").into());
    }
    // What operators see (`tend stats` shows the same): the schedule and its next run.
    let (last, next): (i64, i64) = diesel::select((
        diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "(SELECT last_slot_ms FROM tend_schedule WHERE name = 'reports.every_200ms')",
        ),
        diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "(SELECT next_slot_ms FROM tend_schedule WHERE name = 'reports.every_200ms')",
        ),
    ))
    .get_result(&mut pool.get()?)?;
    println!("tend_schedule: last slot {last}, next run {next} (epoch ms)");

    #[cfg(feature = "cron")]
    {
        // A cron expression in a time zone; DST gaps and overlaps follow croner's rules.
        let nightly =
            Periodic::cron("billing.nightly", "30 2 * * *", "Europe/Berlin")?.task(|slot| Report {
                slot_ms: millis(slot),
            });
        println!("{}: {}", nightly.name(), nightly.spec());
    }
    drop(pool);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
