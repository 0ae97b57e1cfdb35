//! tend in one file: orders and their tasks written in one transaction, a rolled-back order that
//! leaves no task, and a 2-thread pool that runs the tasks, retrying one that fails once.
//!
//! ```text
//! cargo run --example quickstart
//! RUST_LOG=tend=debug cargo run --example quickstart   # also every log line tend writes
//! ```
//!
//! Needs nothing but Rust: SQLite is bundled, and the database is a file in the system's temp
//! directory, removed at the start of every run.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use serde::{Deserialize, Serialize};
use tend::{Registry, Task, TaskContext, TaskError, TaskOptions, TaskStatus, WorkerPool};

/// The order whose task fails on its first attempt, to show a retry.
const FLAKY_ORDER: i64 = 2;

/// The base of the retry schedule. tend's default is 60 s; 1 s keeps the demo short.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How long the example waits for the queue to drain before it calls the run a failure.
const DEADLINE: Duration = Duration::from_secs(30);

/// Every attempt the handler saw, as (order, attempt, succeeded), for the summary at the end.
static ATTEMPTS: Mutex<Vec<(i64, u32, bool)>> = Mutex::new(Vec::new());

diesel::table! {
    /// The business table: what your service already has.
    orders (id) {
        id -> BigInt,
        item -> Text,
        amount_cents -> BigInt,
    }
}

diesel::table! {
    /// The few columns of tend's table this example looks at, to show what is queued.
    consistency_task (id) {
        id -> BigInt,
        task_status -> Integer,
        execute_times -> Integer,
        error_msg -> Text,
    }
}

/// "If this order is still unpaid, tell the customer the payment window is closing."
/// Found by its signature, never by its Rust name, so renaming the type keeps queued rows
/// runnable.
#[derive(Serialize, Deserialize)]
struct SendPaymentTimeout {
    order_id: i64,
}

impl Task for SendPaymentTimeout {
    const SIGNATURE: &'static str = "orders.send_payment_timeout";

    fn options() -> TaskOptions {
        // The retry schedule is the original framework's: after the k-th failed attempt wait
        // k × execute_interval.
        TaskOptions::new().execute_interval(RETRY_INTERVAL)
    }

    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let me = thread::current();
        let worker = me.name().unwrap_or("worker");
        let fail = self.order_id == FLAKY_ORDER && ctx.attempt() == 1;
        ATTEMPTS
            .lock()
            .expect("attempts lock")
            .push((self.order_id, ctx.attempt(), !fail));
        if fail {
            println!(
                "  [{worker}] order {}: attempt {} of {}: the payment service timed out \
                 (simulated); returning an error so tend retries",
                self.order_id,
                ctx.attempt(),
                ctx.max_attempts()
            );
            return Err(TaskError::new("payment service timed out"));
        }
        println!(
            "  [{worker}] order {}: attempt {}: payment-timeout notice sent",
            self.order_id,
            ctx.attempt()
        );
        Ok(())
    }
}

/// What placing an order can fail with: the database, tend, or the business rule that makes
/// this example roll one order back.
#[derive(Debug)]
enum CheckoutError {
    Database(diesel::result::Error),
    Tend(tend::Error),
    OutOfStock(String),
}

impl fmt::Display for CheckoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckoutError::Database(e) => write!(f, "database error: {e}"),
            CheckoutError::Tend(e) => write!(f, "{e}"),
            CheckoutError::OutOfStock(item) => write!(f, "{item} is out of stock"),
        }
    }
}

impl StdError for CheckoutError {}

// `conn.transaction` needs its error type to absorb diesel's own errors.
impl From<diesel::result::Error> for CheckoutError {
    fn from(e: diesel::result::Error) -> Self {
        CheckoutError::Database(e)
    }
}

impl From<tend::Error> for CheckoutError {
    fn from(e: tend::Error) -> Self {
        CheckoutError::Tend(e)
    }
}

/// Inserts the order and enqueues its task in ONE transaction: both commit or neither does.
/// Returns the task's row id.
fn place_order(
    conn: &mut SqliteConnection,
    id: i64,
    item: &str,
    amount_cents: i64,
    in_stock: bool,
) -> Result<i64, CheckoutError> {
    conn.transaction(|conn| {
        diesel::insert_into(orders::table)
            .values((
                orders::id.eq(id),
                orders::item.eq(item),
                orders::amount_cents.eq(amount_cents),
            ))
            .execute(conn)?;
        let task = tend::enqueue(conn, &SendPaymentTimeout { order_id: id })?;
        if !in_stock {
            // Any error out of the closure rolls back everything in it, the task included.
            return Err(CheckoutError::OutOfStock(item.to_string()));
        }
        Ok(task.id().expect("no idempotency key, so always a new row"))
    })
}

fn main() -> ExitCode {
    // `RUST_LOG=tend=debug` shows tend's own logs; by default only its warnings (such as the
    // failed attempt below) are shown.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn StdError>> {
    let dir = std::env::temp_dir().join("tend-quickstart");
    // A clean slate on every run.
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    std::fs::create_dir_all(&dir)?;
    let path: PathBuf = dir.join("shop.db");
    let url = path
        .to_str()
        .ok_or("the temp directory's path is not UTF-8")?;

    println!("1. Database: {}", path.display());
    // SqliteSetup turns on WAL and a busy timeout, so the pool's threads and ours take turns.
    let pool = Pool::builder()
        .max_size(4)
        .connection_customizer(Box::new(tend::SqliteSetup::new()))
        .build(ConnectionManager::<SqliteConnection>::new(url))?;
    let mut conn = pool.get()?;
    diesel::sql_query(
        "CREATE TABLE orders (
             id           INTEGER PRIMARY KEY,
             item         TEXT    NOT NULL,
             amount_cents BIGINT  NOT NULL
         )",
    )
    .execute(&mut conn)?;
    tend::migrate(&mut conn)?;
    println!("   created the `orders` table and ran tend's migrations (table `consistency_task`)");

    println!("2. Three checkouts, each one transaction: insert the order, enqueue its task");
    let mut task_of = BTreeMap::new();
    for (id, item, cents, in_stock) in [
        (1, "teapot", 2_500, true),
        (FLAKY_ORDER, "kettle", 4_000, true),
        (3, "samovar", 19_900, false),
    ] {
        match place_order(&mut conn, id, item, cents, in_stock) {
            Ok(task_id) => {
                println!("   order {id} ({item}): committed, with task #{task_id}");
                task_of.insert(task_id, id);
            }
            Err(e @ CheckoutError::OutOfStock(_)) => {
                println!("   order {id} ({item}): rolled back ({e})");
            }
            Err(e) => return Err(e.into()),
        }
    }

    println!("3. What the database holds now");
    let order_ids: Vec<i64> = orders::table
        .select(orders::id)
        .order(orders::id)
        .load(&mut conn)?;
    let task_ids: Vec<i64> = consistency_task::table
        .select(consistency_task::id)
        .order(consistency_task::id)
        .load(&mut conn)?;
    println!("   orders: {order_ids:?}; queued tasks: {task_ids:?}");
    if order_ids != [1, FLAKY_ORDER] || task_ids.len() != 2 {
        return Err(format!(
            "expected orders [1, {FLAKY_ORDER}] and 2 tasks, found {order_ids:?} and {task_ids:?}"
        )
        .into());
    }
    println!("   order 3 rolled back: neither the order nor its task exists");

    println!("4. Starting a worker pool with 2 threads, polling every 100 ms");
    let mut registry = Registry::new();
    registry.register::<SendPaymentTimeout>()?;
    let handle = WorkerPool::builder(pool.clone(), registry)
        .threads(2)
        .poll_interval(Duration::from_millis(100))
        .build()?
        .start()?;

    // Watch tend's table until it is empty: a successful task's row is deleted.
    let started = Instant::now();
    let mut reported_failures = BTreeSet::new();
    let mut reported_done = BTreeSet::new();
    loop {
        let rows: Vec<(i64, i32, i32, String)> = consistency_task::table
            .select((
                consistency_task::id,
                consistency_task::task_status,
                consistency_task::execute_times,
                consistency_task::error_msg,
            ))
            .load(&mut conn)?;
        for (task_id, status, attempts, error_msg) in &rows {
            if TaskStatus::from_i32(*status) == Some(TaskStatus::Failed)
                && reported_failures.insert((*task_id, *attempts))
            {
                println!(
                    "   task #{task_id} (order {}) is `failed` after attempt {attempts}: \
                     \"{error_msg}\"; tend retries it in {attempts} × {RETRY_INTERVAL:?}",
                    task_of[task_id]
                );
            }
        }
        for (task_id, order_id) in &task_of {
            if !rows.iter().any(|r| r.0 == *task_id) && reported_done.insert(*task_id) {
                println!("   task #{task_id} (order {order_id}) succeeded: its row is deleted");
            }
        }
        if rows.is_empty() {
            break;
        }
        if started.elapsed() > DEADLINE {
            // Dropping the handle on the way out shuts the pool down.
            return Err(format!(
                "tasks still queued after {DEADLINE:?} (id, status, attempts, error): {rows:?}"
            )
            .into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    println!(
        "5. The queue is empty after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let report = handle.shutdown();
    println!(
        "6. Pool shut down: {} claimed-but-unstarted task(s) handed back, {}",
        report.released,
        if report.all_joined() {
            "every worker thread joined".to_string()
        } else {
            format!("{} worker(s) still busy at the deadline", report.abandoned)
        }
    );
    if !report.all_joined() {
        return Err("the pool did not shut down cleanly".into());
    }

    println!("7. What ran");
    let attempts = ATTEMPTS.lock().expect("attempts lock").clone();
    for order_id in [1, FLAKY_ORDER, 3] {
        let runs: Vec<String> = attempts
            .iter()
            .filter(|a| a.0 == order_id)
            .map(|&(_, attempt, ok)| {
                format!(
                    "attempt {attempt} {}",
                    if ok { "succeeded" } else { "failed" }
                )
            })
            .collect();
        if runs.is_empty() {
            println!("   order {order_id}: never ran (its transaction rolled back)");
        } else {
            println!("   order {order_id}: {}", runs.join(", "));
        }
    }
    let mut expected = vec![
        (1, 1, true),
        (FLAKY_ORDER, 1, false),
        (FLAKY_ORDER, 2, true),
    ];
    let mut seen = attempts;
    expected.sort_unstable();
    seen.sort_unstable();
    if seen != expected {
        return Err(format!("expected the attempts {expected:?}, saw {seen:?}").into());
    }
    println!(
        "Done. The database is left at {} for you to look at.",
        path.display()
    );
    Ok(())
}
