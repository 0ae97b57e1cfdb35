//! An async service (tokio, diesel-async) that enqueues in its own transactions, with tend's
//! synchronous `WorkerPool` running beside it.
//!
//! Four request handlers run as tokio tasks, each on its own diesel-async connection. A request
//! places an order: in one async transaction it inserts the order row and enqueues
//! `SendConfirmation` with `tend::enqueue_async::enqueue`. Every tenth payment is declined
//! after the enqueue, and its transaction rolls back, task included. The worker pool, on an
//! r2d2 pool of synchronous connections to the same database, sends the confirmations. At the
//! end the example checks its own claim: every committed order was confirmed, no declined one
//! was, and tend's table is empty. It exits non-zero when that does not hold.
//!
//! ```text
//! cargo run --example async_service --features async
//! ```
//!
//! Needs nothing but Rust: SQLite is bundled, reached from async code through diesel-async's
//! `SyncConnectionWrapper`; the database is a file in the temp directory. With PostgreSQL or
//! MariaDB the service code is the same on `AsyncPgConnection` / `AsyncMysqlConnection`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::r2d2::{ConnectionManager, Pool};
use diesel::{ExpressionMethods, SqliteConnection};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use serde::{Deserialize, Serialize};
use tend::{Registry, Task, TaskContext, TaskError, WorkerPool};

/// The service's async connection type.
type AsyncConn = SyncConnectionWrapper<SqliteConnection>;

const ORDERS: i64 = 200;
const HANDLERS: i64 = 4;

diesel::table! {
    demo_orders (id) {
        id -> BigInt,
        total_cents -> BigInt,
    }
}

/// What the worker pool did: the orders it confirmed (a stand-in for the mail it would send).
static CONFIRMED: Mutex<Vec<i64>> = Mutex::new(Vec::new());

#[derive(Serialize, Deserialize)]
struct SendConfirmation {
    order_id: i64,
}

impl Task for SendConfirmation {
    const SIGNATURE: &'static str = "orders.send_confirmation";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        CONFIRMED.lock().unwrap().push(self.order_id);
        Ok(())
    }
}

/// Why a request failed; a declined payment rolls the whole transaction back.
#[derive(Debug)]
enum RequestError {
    Declined,
    Tend(tend::Error),
}

impl From<tend::Error> for RequestError {
    fn from(e: tend::Error) -> Self {
        RequestError::Tend(e)
    }
}

impl From<diesel::result::Error> for RequestError {
    fn from(e: diesel::result::Error) -> Self {
        RequestError::Tend(e.into())
    }
}

/// The request handler: the order and its confirmation task commit (or roll back) together.
async fn place_order(conn: &mut AsyncConn, order_id: i64) -> Result<(), RequestError> {
    use diesel_async::RunQueryDsl;
    conn.transaction(async |conn| {
        diesel::insert_into(demo_orders::table)
            .values((
                demo_orders::id.eq(order_id),
                demo_orders::total_cents.eq(order_id * 100),
            ))
            .execute(conn)
            .await?;
        tend::enqueue_async::enqueue(conn, &SendConfirmation { order_id }).await?;
        if order_id % 10 == 0 {
            return Err(RequestError::Declined); // after the enqueue: it rolls back too
        }
        Ok(())
    })
    .await
}

/// One handler task of the service: its own connection, its share of the requests.
async fn handler(path: String, first: i64) -> Result<Vec<i64>, String> {
    let mut conn = AsyncConn::establish(&path)
        .await
        .map_err(|e| e.to_string())?;
    // The worker pool writes to the same file: wait for its lock instead of failing.
    conn.batch_execute("PRAGMA busy_timeout = 5000")
        .await
        .map_err(|e| e.to_string())?;
    let mut committed = Vec::new();
    for order_id in (first..=ORDERS).step_by(HANDLERS as usize) {
        match place_order(&mut conn, order_id).await {
            Ok(()) => committed.push(order_id),
            Err(RequestError::Declined) => {}
            Err(RequestError::Tend(e)) => return Err(format!("order {order_id}: {e}")),
        }
    }
    Ok(committed)
}

fn main() -> ExitCode {
    let path: PathBuf = std::env::temp_dir().join(format!("tend-async-{}.db", std::process::id()));
    let result = run(path.to_str().expect("a UTF-8 temp path"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("async_service: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    // The synchronous side: the r2d2 pool tend's workers use, the migration, the pool itself.
    let pool = Pool::builder()
        .max_size(4)
        .connection_customizer(Box::new(tend::SqliteSetup::new()))
        .build(ConnectionManager::<SqliteConnection>::new(path))?;
    {
        use diesel::connection::SimpleConnection;
        let mut conn = pool.get()?;
        tend::migrate(&mut conn)?;
        conn.batch_execute(
            "CREATE TABLE demo_orders (id BIGINT PRIMARY KEY, total_cents BIGINT NOT NULL)",
        )?;
    }
    let mut registry = Registry::new();
    registry.register::<SendConfirmation>()?;
    let workers = WorkerPool::builder(pool.clone(), registry)
        .threads(2)
        .poll_interval(Duration::from_millis(50))
        .build()?
        .start()?;

    // The async service, on a tokio runtime beside the worker pool's threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let committed: BTreeSet<i64> = runtime.block_on(async {
        let handlers: Vec<_> = (1..=HANDLERS)
            .map(|first| tokio::spawn(handler(path.to_string(), first)))
            .collect();
        let mut committed = BTreeSet::new();
        for h in handlers {
            committed.extend(h.await.map_err(|e| e.to_string())??);
        }
        Ok::<_, Box<dyn std::error::Error>>(committed)
    })?;
    workers.wake();
    println!(
        "the service committed {} orders and declined {}",
        committed.len(),
        ORDERS as usize - committed.len()
    );

    // Wait for the pool to confirm them, then check the claim.
    let deadline = Instant::now() + Duration::from_secs(60);
    let remaining = || count(&pool, "consistency_task");
    while remaining()? > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = workers.shutdown();
    let confirmed: BTreeSet<i64> = CONFIRMED.lock().unwrap().iter().copied().collect();
    println!(
        "the worker pool confirmed {} orders; shutdown: {report:?}",
        confirmed.len()
    );
    if remaining()? != 0 {
        return Err(format!("{} tasks were still in the table after 60 s", remaining()?).into());
    }
    if committed.len() != (ORDERS - ORDERS / 10) as usize {
        return Err(format!("expected 180 committed orders, got {}", committed.len()).into());
    }
    let orders = count(&pool, "demo_orders")?;
    if orders != committed.len() as i64 {
        return Err(format!(
            "{orders} order rows for {} committed orders",
            committed.len()
        )
        .into());
    }
    if confirmed != committed {
        let missing: Vec<_> = committed.difference(&confirmed).collect();
        let extra: Vec<_> = confirmed.difference(&committed).collect();
        return Err(format!(
            "confirmations differ from the committed orders: missing {missing:?}, \
             confirmed but rolled back {extra:?}"
        )
        .into());
    }
    println!("ok: every committed order was confirmed once its transaction committed, no rolled-back one was");
    Ok(())
}

/// Rows in `table`, read on the synchronous side.
fn count(
    pool: &Pool<ConnectionManager<SqliteConnection>>,
    table: &str,
) -> Result<i64, Box<dyn std::error::Error>> {
    use diesel::RunQueryDsl;
    let sql = format!("(SELECT COUNT(*) FROM {table})");
    Ok(
        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&sql))
            .get_result(&mut pool.get()?)?,
    )
}
