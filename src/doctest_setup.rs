// The setup tend's doctests share, the way diesel's doctests share theirs: an example includes
// it on a hidden first line, `# include!("doctest_setup.rs");` (`../doctest_setup.rs` from a
// folder), and then needs its own `fn main`, since the included items must sit at the top
// level. It is not a module of the crate: only doctests compile it, each as its own program.
//
// It imports nothing, so that an example's own `use` lines never clash with it.

/// The examples' task: always succeeds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Ship {
    order_id: i64,
}

impl tend::Task for Ship {
    const SIGNATURE: &'static str = "orders.ship";
    fn execute(&self, _: &tend::TaskContext) -> Result<(), tend::TaskError> {
        Ok(())
    }
}

/// A task whose every attempt fails with "boom".
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct AlwaysFails;

impl tend::Task for AlwaysFails {
    const SIGNATURE: &'static str = "demo.always_fails";
    fn execute(&self, _: &tend::TaskContext) -> Result<(), tend::TaskError> {
        Err(tend::TaskError::new("boom"))
    }
}

type SqlitePool = diesel::r2d2::Pool<diesel::r2d2::ConnectionManager<diesel::SqliteConnection>>;

/// An in-memory SQLite database with tend's table.
fn memory_db() -> diesel::SqliteConnection {
    let mut conn = <diesel::SqliteConnection as diesel::Connection>::establish(":memory:").unwrap();
    tend::migrate(&mut conn).unwrap();
    conn
}

/// A temporary SQLite file, removed with its WAL files when dropped (and when created, in case
/// a killed run left one behind).
struct TempDb(std::path::PathBuf);

impl TempDb {
    fn new(name: &str) -> TempDb {
        let file = format!("tend-doc-{name}-{}.db", std::process::id());
        let db = TempDb(std::env::temp_dir().join(file));
        db.remove();
        db
    }

    fn url(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

/// An r2d2 pool on a fresh, migrated SQLite file named after the example (and the process, so
/// that examples running at the same time never share one). Keep the `TempDb` alive as long
/// as the pool.
fn temp_pool(name: &str) -> (SqlitePool, TempDb) {
    let db = TempDb::new(name);
    let pool = diesel::r2d2::Pool::builder()
        .connection_customizer(Box::new(tend::SqliteSetup::new()))
        .build(diesel::r2d2::ConnectionManager::new(db.url()))
        .unwrap();
    tend::migrate(&mut pool.get().unwrap()).unwrap();
    (pool, db)
}

/// `n` r2d2 pools over in-memory SQLite databases, not migrated. Each pool has one connection,
/// since each in-memory connection is a database of its own.
fn memory_pools(n: usize) -> Vec<SqlitePool> {
    let manager = || diesel::r2d2::ConnectionManager::new(":memory:");
    (0..n)
        .map(|_| diesel::r2d2::Pool::builder().max_size(1).build(manager()).unwrap())
        .collect()
}

/// The outbox of a worker pool that runs `T`, over a fresh in-memory database. The pool is not
/// started: right-now sync tasks run in the caller's thread, the rest stay queued.
fn outbox_for<T: tend::Task>() -> tend::Outbox<diesel::SqliteConnection> {
    let pool = memory_pools(1).remove(0);
    tend::migrate(&mut pool.get().unwrap()).unwrap();
    let mut registry = tend::Registry::new();
    registry.register::<T>().unwrap();
    tend::WorkerPool::builder(pool, registry).build().unwrap().outbox()
}

/// How many rows `consistency_task` holds.
fn task_count(conn: &mut diesel::SqliteConnection) -> i64 {
    use diesel::RunQueryDsl;
    let count = diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT COUNT(*) FROM consistency_task)",
    );
    diesel::select(count).get_result(conn).unwrap()
}

/// The status of task `id`, or `None` once its row is gone.
fn task_status(conn: &mut diesel::SqliteConnection, id: i64) -> Option<tend::TaskStatus> {
    use diesel::RunQueryDsl;
    let status = diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::Integer>>(
        &format!("(SELECT task_status FROM consistency_task WHERE id = {id})"),
    );
    let status: Option<i32> = diesel::select(status).get_result(conn).unwrap();
    status.and_then(tend::TaskStatus::from_i32)
}

/// Whether `done` holds within 10 s (checked every 5 ms).
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    done()
}

/// The first alert of an `AlwaysFails` task whose expression fires on every failure.
#[allow(dead_code)]
fn first_alert() -> Result<tend::Alert, Box<dyn std::error::Error>> {
    let (pool, _db) = temp_pool("first-alert");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut registry = tend::Registry::new();
    registry.alerter("pager", move |a: &tend::Alert| tx.send(a.clone()).unwrap())?;
    registry.register::<AlwaysFails>()?;
    let handle = tend::WorkerPool::builder(pool.clone(), registry).build()?.start()?;
    let task = tend::NewTask::new(&AlwaysFails)?.alert_expression(Some("executeTimes >= 1"));
    tend::enqueue_new(&mut pool.get()?, task.alerter("pager"))?;
    handle.wake();
    let alert = rx.recv_timeout(std::time::Duration::from_secs(10))?;
    handle.shutdown();
    Ok(alert)
}
