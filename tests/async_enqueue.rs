//! `tend::enqueue_async` (feature `async`) on each backend whose feature is on: enqueue inside
//! a diesel-async transaction that commits or rolls back, rows identical to the synchronous
//! path's, idempotency keys, `enqueue_many` across its 1000-row chunks, the tasks it refuses,
//! and a synchronous `WorkerPool` draining what the async side enqueued.
//!
//! Each test runs its async part on a tokio current-thread runtime, as a small service would.

// Its `per_backend!` is for synchronous connections; `per_async_backend!` below pairs each with
// its async connection type.
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use serde::{Deserialize, Serialize};
use tend::enqueue_async::{self as tend_async, AsyncStoreConnection};
use tend::{Enqueued, ErrorKind, NewTask, Registry, Task, TaskContext, TaskError, WorkerPool};

use support::{wait_for, Row, TestConn as DbConn, TestDb};

/// The ids each run's handler saw, by the run id in the payload.
static RAN: LazyLock<Mutex<HashMap<u64, HashSet<u64>>>> = LazyLock::new(Default::default);
static NEXT_RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    run: u64,
    n: u64,
}

impl Task for Job {
    const SIGNATURE: &'static str = "async_test.job";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        RAN.lock()
            .unwrap()
            .entry(self.run)
            .or_default()
            .insert(self.n);
        Ok(())
    }
}

fn ran(run: u64) -> usize {
    RAN.lock().unwrap().get(&run).map_or(0, HashSet::len)
}

/// A diesel-async connection to the same database as the synchronous `Sync` connections.
trait AsyncDb: AsyncConnection + AsyncStoreConnection + Sized {
    type Sync: DbConn;
    async fn open(url: &str) -> Self;
}

#[cfg(feature = "sqlite")]
impl AsyncDb
    for diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>
{
    type Sync = diesel::SqliteConnection;
    async fn open(url: &str) -> Self {
        let mut c = Self::establish(url).await.expect("connecting to SQLite");
        // The pool beside it writes too: wait for its lock rather than fail.
        c.batch_execute("PRAGMA busy_timeout = 10000")
            .await
            .expect("busy timeout");
        c
    }
}

#[cfg(feature = "postgres")]
impl AsyncDb for diesel_async::AsyncPgConnection {
    type Sync = diesel::PgConnection;
    async fn open(url: &str) -> Self {
        Self::establish(url)
            .await
            .expect("connecting to PostgreSQL")
    }
}

#[cfg(feature = "mysql")]
impl AsyncDb for diesel_async::AsyncMysqlConnection {
    type Sync = diesel::MysqlConnection;
    async fn open(url: &str) -> Self {
        Self::establish(url)
            .await
            .expect("connecting to MariaDB/MySQL")
    }
}

/// A business row in the caller's transaction (`tend_test_orders`).
async fn order<A: AsyncDb>(conn: &mut A, id: i64, note: &str) -> diesel::QueryResult<()> {
    conn.batch_execute(&format!(
        "INSERT INTO tend_test_orders (id, note) VALUES ({id}, '{note}')"
    ))
    .await
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
        .block_on(f)
}

/// A task with every per-enqueue option set away from its default.
fn every_option(run: u64, key: &str) -> NewTask {
    NewTask::new(&Job { run, n: 0 })
        .unwrap()
        .task_id(format!("task-{key}"))
        .idempotency_key(key)
        .shard_key(4242)
        .execute_way(tend::ExecuteWay::Schedule)
        .delay(Duration::from_secs(30))
        .execute_interval(Duration::from_secs(7))
        .max_attempts(3)
        .alert_expression(Some("executeTimes > 2"))
        .alerter("pager")
        .fallback(Some("refund_order"))
}

/// Every column but the id and the clock's (`execute_time`, `gmt_create`, `gmt_modified`).
fn without_id_and_times(r: &Row) -> Row {
    Row {
        id: 0,
        execute_time: r.execute_time - r.gmt_create, // the delay, which must agree
        gmt_create: 0,
        gmt_modified: 0,
        ..r.clone()
    }
}

/// Commit, then the same task through the synchronous path: byte-identical rows.
fn rows_match_the_sync_path<A: AsyncDb>() {
    let Some(db) = TestDb::<A::Sync>::fresh() else {
        return;
    };
    let run = NEXT_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let task = every_option(run, "same-row");
    let sent = task.clone();
    let id = block_on(async {
        let mut conn = A::open(&db.url).await;
        conn.transaction(async |conn| {
            order(conn, 1, "paid").await?;
            tend_async::enqueue_new(conn, sent).await
        })
        .await
        .expect("the async transaction commits")
    })
    .id()
    .expect("a new row");
    assert_eq!(db.orders(), 1);
    let rows = db.rows();
    assert_eq!(rows.len(), 1);
    let from_async = rows[0].clone();
    assert_eq!(from_async.id, id);
    assert_eq!(from_async.execute_time - from_async.gmt_create, 30_000);

    // The same task, written by the synchronous enqueue on the same database.
    db.exec("DELETE FROM consistency_task");
    let sync_id = tend::enqueue_new(&mut db.pooled(), task)
        .unwrap()
        .id()
        .unwrap();
    let from_sync = db.row(sync_id).expect("the sync row");
    let (a, s) = (
        without_id_and_times(&from_async),
        without_id_and_times(&from_sync),
    );
    // Row's Debug lists every column: equal Debug, equal rows (payload bytes included).
    assert_eq!(format!("{a:?}"), format!("{s:?}"));
    assert_eq!(from_async.task_parameter, from_sync.task_parameter);
}

/// Rollback leaves nothing; a duplicate key is `Duplicate` and the transaction goes on.
fn rollback_and_duplicates<A: AsyncDb>() {
    let Some(db) = TestDb::<A::Sync>::fresh() else {
        return;
    };
    let run = NEXT_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    block_on(async {
        let mut conn = A::open(&db.url).await;
        // Rolled back by an error after the enqueue: neither the order nor the task exist.
        let rolled: Result<Enqueued, tend::Error> = conn
            .transaction(async |conn| {
                order(conn, 1, "x").await?;
                let e = tend_async::enqueue(conn, &Job { run, n: 1 }).await?;
                assert!(e.id().is_some());
                Err(diesel::result::Error::RollbackTransaction.into())
            })
            .await;
        assert!(rolled.is_err());

        let keyed = NewTask::new(&Job { run, n: 2 })
            .unwrap()
            .idempotency_key(format!("order-2-{run}"));
        let first = tend_async::enqueue_new(&mut conn, keyed.clone())
            .await
            .unwrap();
        assert!(matches!(first, Enqueued::Inserted(_)));
        // Inside a transaction the duplicate fails nothing else: the order after it commits.
        let dup = conn
            .transaction(async |conn| {
                let dup = tend_async::enqueue_new(conn, keyed).await?;
                order(conn, 2, "y").await?;
                Ok::<_, tend::Error>(dup)
            })
            .await
            .unwrap();
        assert_eq!(dup, Enqueued::Duplicate);
    });
    assert_eq!(db.orders(), 1);
    let rows = db.rows();
    assert_eq!(rows.len(), 1, "only the keyed task: {rows:?}");
    assert_eq!(
        rows[0].idempotency_key.as_deref(),
        Some(&*format!("order-2-{run}"))
    );
}

/// The tasks the plain functions cannot honour are refused before any SQL, as synchronously.
fn refuses_what_it_cannot_honour<A: AsyncDb>() {
    let Some(db) = TestDb::<A::Sync>::fresh() else {
        return;
    };
    block_on(async {
        let mut conn = A::open(&db.url).await;
        let job = || NewTask::new(&Job { run: 0, n: 0 }).unwrap();
        for (task, setting) in [
            (job().thread_way(tend::ThreadWay::Sync), "thread_way"),
            (
                job().transaction_way(tend::TransactionWay::WithoutTransaction),
                "transaction_way",
            ),
            (job().max_attempts(0), "max_attempts"),
        ] {
            let sync_err = tend::enqueue_new(&mut db.pooled(), task.clone()).unwrap_err();
            let err = tend_async::enqueue_new(&mut conn, task.clone())
                .await
                .unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::InvalidSetting { name, .. } if *name == setting),
                "{err}"
            );
            assert_eq!(err.to_string(), sync_err.to_string());
            // One bad task in a batch: nothing of the batch is written.
            let err = tend_async::enqueue_many(&mut conn, [job(), task])
                .await
                .unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::InvalidSetting { .. }));
        }
    });
    assert!(db.rows().is_empty());
}

/// Without tend's table the error names the fix.
fn not_migrated<A: AsyncDb>() {
    let Some(db) = TestDb::<A::Sync>::unmigrated() else {
        return;
    };
    let err = block_on(async {
        let mut conn = A::open(&db.url).await;
        tend_async::enqueue(&mut conn, &Job { run: 0, n: 0 })
            .await
            .unwrap_err()
    });
    assert!(
        matches!(err.kind(), ErrorKind::NotMigrated { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("tend::migrate"), "{err}");
}

/// 2500 tasks through `enqueue_many` in one async transaction (three statements), keyed ones
/// with a duplicate, then a synchronous WorkerPool runs every one of them.
fn many_then_the_pool_drains<A: AsyncDb>() {
    let Some(db) = TestDb::<A::Sync>::fresh() else {
        return;
    };
    let run = NEXT_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (plain, keyed) = block_on(async {
        let mut conn = A::open(&db.url).await;
        let tasks: Vec<NewTask> = (0..2500)
            .map(|n| NewTask::new(&Job { run, n }).unwrap())
            .collect();
        let plain = conn
            .transaction(async |conn| tend_async::enqueue_many(conn, tasks).await)
            .await
            .unwrap();
        // Keyed rows (one by one on MySQL), one key already there: 2 of 3 are new.
        let key = |n: u64| format!("many-{run}-{n}");
        tend_async::enqueue_new(
            &mut conn,
            NewTask::new(&Job { run, n: 2500 })
                .unwrap()
                .idempotency_key(key(2500)),
        )
        .await
        .unwrap();
        let keyed_tasks: Vec<NewTask> = (2500..2503)
            .map(|n| {
                NewTask::new(&Job { run, n })
                    .unwrap()
                    .idempotency_key(key(n))
            })
            .collect();
        let keyed = tend_async::enqueue_many(&mut conn, keyed_tasks)
            .await
            .unwrap();
        (plain, keyed)
    });
    assert_eq!(plain, 2500);
    assert_eq!(keyed, 2);
    assert_eq!(db.rows().len(), 2503);

    let mut registry = Registry::new();
    registry.register::<Job>().unwrap();
    let handle = WorkerPool::builder(db.pool.clone(), registry)
        .threads(4)
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap()
        .start()
        .unwrap();
    handle.wake();
    wait_for(
        "the pool to run every task",
        Duration::from_secs(120),
        || (ran(run) == 2503 && db.rows().is_empty()).then_some(()),
    );
    handle.shutdown();
}

/// One `#[test]` per backend whose feature is on, each with its async connection type.
macro_rules! per_async_backend {
    ($($test:ident),* $(,)?) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            type A = diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;
            $( #[test] fn $test() { super::$test::<A>(); } )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $( #[test] fn $test() { super::$test::<diesel_async::AsyncPgConnection>(); } )*
        }
        #[cfg(feature = "mysql")]
        mod mysql {
            $( #[test] fn $test() { super::$test::<diesel_async::AsyncMysqlConnection>(); } )*
        }
    };
}

per_async_backend!(
    rows_match_the_sync_path,
    rollback_and_duplicates,
    refuses_what_it_cannot_honour,
    not_migrated,
    many_then_the_pool_drains,
);
