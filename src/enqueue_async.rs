//! Enqueue from async services (feature `async`): [`enqueue`], [`enqueue_new`] and
//! [`enqueue_many`] on [diesel-async](https://docs.rs/diesel-async) connections, inside the
//! caller's async transaction.
//!
//! They write exactly the rows the synchronous [`tend::enqueue`](crate::enqueue) functions
//! write: the same row encoder, the same checks (a [`ThreadWay::Sync`](crate::ThreadWay::Sync)
//! or [`TransactionWay::WithoutTransaction`](crate::TransactionWay::WithoutTransaction) task is
//! refused, as are bad options, before any SQL), the same idempotency keys
//! ([`Enqueued::Duplicate`]) and the same 1000-row statements of `enqueue_many`. The
//! [`WorkerPool`](crate::WorkerPool) that runs the tasks stays synchronous: it runs beside the
//! async service on its own r2d2 pool, as in `examples/async_service.rs`.
//!
//! The connections ([`AsyncStoreConnection`]), each with tend's matching backend feature:
//!
//! * `postgres`: [`AsyncPgConnection`](diesel_async::AsyncPgConnection);
//! * `mysql`: [`AsyncMysqlConnection`](diesel_async::AsyncMysqlConnection) (MySQL 8, MariaDB);
//! * `sqlite`:
//!   [`SyncConnectionWrapper<SqliteConnection>`](diesel_async::sync_connection_wrapper::SyncConnectionWrapper),
//!   diesel-async's wrapper that runs a synchronous connection on tokio's blocking threads (the
//!   insert runs there, on the wrapped connection, as the synchronous `enqueue` would).
//!
//! Pooled connections (bb8, deadpool, mobc) dereference to these: pass `&mut *pooled`.
//!
//! The README's example (`cargo test --doc` compiles and runs it):
//!
//! ```
//! # include!("doctest_setup.rs");
//! use diesel::SqliteConnection;
//! use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
//! use diesel_async::AsyncConnection; // AsyncPgConnection / AsyncMysqlConnection work the same
//! use serde::{Deserialize, Serialize};
//! use tend::{Task, TaskContext, TaskError};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendConfirmation {
//!     order_id: i64,
//! }
//!
//! impl Task for SendConfirmation {
//!     const SIGNATURE: &'static str = "orders.send_confirmation";
//!     fn execute(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
//!         Ok(())
//!     }
//! }
//!
//! async fn place_order(conn: &mut SyncConnectionWrapper<SqliteConnection>) -> Result<(), tend::Error> {
//!     conn.transaction(async |conn| {
//!         // diesel::insert_into(orders::table).values(...).execute(conn).await?; then:
//!         tend::enqueue_async::enqueue(conn, &SendConfirmation { order_id: 42 }).await?;
//!         Ok(())
//!     })
//!     .await
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // tend::migrate and the WorkerPool stay synchronous: run them at startup as usual.
//!     let url = "shop.db";
//! # let db = TempDb::new("enqueue-async"); let url = db.url();
//!     let mut sync_conn = <SqliteConnection as diesel::Connection>::establish(url)?;
//!     tend::migrate(&mut sync_conn)?;
//!
//!     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//!     runtime.block_on(async {
//!         let mut conn = SyncConnectionWrapper::<SqliteConnection>::establish(url).await?;
//!         place_order(&mut conn).await?;
//!         Ok(())
//!     })
//! }
//! ```

use std::future::Future;

use crate::enqueue::{enqueued, row_to_write, rows_to_write, INSERT_CHUNK};
use crate::enqueue::{Enqueued, NewTask};
use crate::error::Error;
use crate::task::Task;
use crate::util::now_ms;

/// A diesel-async connection tend can enqueue on: `AsyncPgConnection` (feature `postgres`),
/// `AsyncMysqlConnection` (feature `mysql`) and `SyncConnectionWrapper<SqliteConnection>`
/// (feature `sqlite`).
///
/// The trait is sealed, like [`StoreConnection`](crate::StoreConnection): its methods are tend's
/// internal storage contract.
///
/// ```
/// # include!("doctest_setup.rs");
/// use tend::enqueue_async::AsyncStoreConnection;
/// // One function for every backend (the future is Send: spawn it on a multi-thread runtime).
/// async fn ship_later<C: AsyncStoreConnection>(conn: &mut C, order_id: i64) -> Result<(), tend::Error> {
///     tend::enqueue_async::enqueue(conn, &Ship { order_id }).await?;
///     Ok(())
/// }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # use diesel_async::AsyncConnection;
/// # let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// # runtime.block_on(async {
/// # let mut conn = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<diesel::SqliteConnection>::establish(":memory:").await?;
/// # conn.spawn_blocking(|conn| Ok(tend::migrate(conn))).await??;
/// ship_later(&mut conn, 7).await?;
/// # Ok::<_, Box<dyn std::error::Error>>(()) })?;
/// # Ok(()) }
/// ```
pub trait AsyncStoreConnection: ops::AsyncOps {}

impl<T: ops::AsyncOps> AsyncStoreConnection for T {}

pub(crate) mod ops {
    use std::future::Future;

    use diesel::QueryResult;

    use crate::store::row::NewRow;

    /// The async half of the storage contract: only the inserts of the `enqueue` functions,
    /// the same statements as the synchronous `Ops::insert_one`; `insert_many` writes the same
    /// rows with diesel's multi-row insert (the synchronous one uses cached statements:
    /// PostgreSQL's `unnest` insert, MySQL's `JSON_TABLE` insert, SQLite's chunks of 64 and
    /// powers of two).
    pub trait AsyncOps: Send {
        /// `postgres`, `mysql` or `sqlite`.
        const BACKEND: &'static str;
        /// Inserts one row; `None` when its idempotency key already exists.
        fn insert_one(
            &mut self,
            row: NewRow,
        ) -> impl Future<Output = QueryResult<Option<i64>>> + Send + '_;
        /// Inserts at most `INSERT_CHUNK` rows, in one statement where the backend allows;
        /// returns how many were new.
        fn insert_many(
            &mut self,
            rows: Vec<NewRow>,
        ) -> impl Future<Output = QueryResult<usize>> + Send + '_;
    }
}

/// Enqueues `task` with its type's options on `conn`, an async connection: inside
/// `conn.transaction(async |conn| …)` the task commits or rolls back with everything else the
/// transaction wrote. The async twin of [`tend::enqueue`](crate::enqueue); the task is encoded
/// when this is called, before the first `.await`.
///
/// # Errors
/// As [`tend::enqueue`](crate::enqueue): bad options, an encoding error or an oversized
/// payload (before any SQL is sent), or the database's error
/// ([`ErrorKind::NotMigrated`](crate::ErrorKind::NotMigrated) when tend's table is missing).
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use diesel::SqliteConnection;
/// use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
/// use diesel_async::AsyncConnection;
///
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// runtime.block_on(async {
///     let mut conn = SyncConnectionWrapper::<SqliteConnection>::establish(":memory:").await?;
///     // Without tend's table the error says how to create it:
///     let err = tend::enqueue_async::enqueue(&mut conn, &Ship { order_id: 1 }).await.unwrap_err();
///     assert!(err.to_string().contains("tend::migrate"));
///     conn.spawn_blocking(|conn| Ok(tend::migrate(conn))).await??;
///
///     // A transaction that rolls back takes its task with it:
///     let rolled_back: Result<(), tend::Error> = conn
///         .transaction(async |conn| {
///             tend::enqueue_async::enqueue(conn, &Ship { order_id: 2 }).await?;
///             Err(tend::Error::from(diesel::result::Error::RollbackTransaction))
///         })
///         .await;
///     assert!(rolled_back.is_err());
///     let committed = conn
///         .transaction(async |conn| tend::enqueue_async::enqueue(conn, &Ship { order_id: 3 }).await)
///         .await?;
///     assert!(committed.id().is_some());
///     # let count = conn.spawn_blocking(|conn| Ok(task_count(conn))).await?;
///     # assert_eq!(count, 1);
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })?;
/// # Ok(()) }
/// ```
pub fn enqueue<'c, C: AsyncStoreConnection, T: Task>(
    conn: &'c mut C,
    task: &T,
) -> impl Future<Output = Result<Enqueued, Error>> + Send + 'c {
    let task = NewTask::new(task);
    async move { enqueue_new(conn, task?).await }
}

/// Enqueues a [`NewTask`] (a task with per-enqueue overrides) on an async connection. See
/// [`enqueue`].
///
/// # Errors
/// As [`enqueue`].
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use diesel::SqliteConnection;
/// use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
/// use diesel_async::AsyncConnection;
/// use tend::{Enqueued, NewTask, ThreadWay};
///
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// runtime.block_on(async {
///     let mut conn = SyncConnectionWrapper::<SqliteConnection>::establish(":memory:").await?;
///     conn.spawn_blocking(|conn| Ok(tend::migrate(conn))).await??;
///     let task = NewTask::new(&Ship { order_id: 7 })?.max_attempts(3).idempotency_key("ship-7");
///     let first = tend::enqueue_async::enqueue_new(&mut conn, task.clone()).await?;
///     assert!(matches!(first, Enqueued::Inserted(_)));
///     assert_eq!(tend::enqueue_async::enqueue_new(&mut conn, task).await?, Enqueued::Duplicate);
///     // As with the synchronous functions, a Sync task needs an Outbox:
///     let sync = NewTask::new(&Ship { order_id: 8 })?.thread_way(ThreadWay::Sync);
///     assert!(tend::enqueue_async::enqueue_new(&mut conn, sync).await.is_err());
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })?;
/// # Ok(()) }
/// ```
pub fn enqueue_new<C: AsyncStoreConnection>(
    conn: &mut C,
    task: NewTask,
) -> impl Future<Output = Result<Enqueued, Error>> + Send + '_ {
    let row = row_to_write(task, now_ms());
    async move {
        // No retry here: inside the caller's transaction a lock conflict is theirs to handle.
        enqueued(C::BACKEND, conn.insert_one(row?).await)
    }
}

/// Enqueues many tasks on an async connection, in multi-row `INSERT`s of at most 1000 rows
/// (on MySQL/MariaDB, rows with an idempotency key are inserted one by one, since one duplicate
/// would fail the whole statement). Returns how many rows were inserted: duplicates of
/// existing idempotency keys are skipped. The async twin of
/// [`tend::enqueue_many`](crate::enqueue_many).
///
/// # Errors
/// As [`enqueue`]; nothing is inserted if any task is invalid (every task is checked when this
/// is called, before the first `.await`).
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use diesel::SqliteConnection;
/// use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
/// use diesel_async::AsyncConnection;
/// use tend::NewTask;
///
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// runtime.block_on(async {
///     let mut conn = SyncConnectionWrapper::<SqliteConnection>::establish(":memory:").await?;
///     conn.spawn_blocking(|conn| Ok(tend::migrate(conn))).await??;
///     let tasks = (0..2500)
///         .map(|i| NewTask::new(&Ship { order_id: i }))
///         .collect::<Result<Vec<_>, _>>()?;
///     let n = conn
///         .transaction(async |conn| tend::enqueue_async::enqueue_many(conn, tasks).await)
///         .await?;
///     assert_eq!(n, 2500); // three statements: 1000 + 1000 + 500 rows
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })?;
/// # Ok(()) }
/// ```
pub fn enqueue_many<C: AsyncStoreConnection>(
    conn: &mut C,
    tasks: impl IntoIterator<Item = NewTask>,
) -> impl Future<Output = Result<usize, Error>> + Send + '_ {
    let rows = rows_to_write(tasks, now_ms());
    async move {
        let mut rows = rows?;
        // The chunks of the synchronous enqueue_many, in order, each moved (not copied) out.
        let mut inserted = 0;
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(INSERT_CHUNK));
            let chunk = std::mem::replace(&mut rows, rest);
            inserted += conn
                .insert_many(chunk)
                .await
                .map_err(|e| Error::from_db(C::BACKEND, e))?;
        }
        Ok(inserted)
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use diesel::{OptionalExtension, QueryResult};
    use diesel_async::{AsyncPgConnection, RunQueryDsl};

    use crate::enqueue_async::ops::AsyncOps;
    use crate::schema::consistency_task::dsl as t;
    use crate::store::row::NewRow;

    /// The statements of the synchronous `Ops for PgConnection`.
    impl AsyncOps for AsyncPgConnection {
        const BACKEND: &'static str = "postgres";

        async fn insert_one(&mut self, row: NewRow) -> QueryResult<Option<i64>> {
            diesel::insert_into(t::consistency_task)
                .values(&row)
                .on_conflict_do_nothing()
                .returning(t::id)
                .get_result::<i64>(self)
                .await
                .optional()
        }

        async fn insert_many(&mut self, rows: Vec<NewRow>) -> QueryResult<usize> {
            diesel::insert_into(t::consistency_task)
                .values(&rows)
                .on_conflict_do_nothing()
                .execute(self)
                .await
        }
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    use diesel::QueryResult;
    use diesel_async::{AsyncMysqlConnection, RunQueryDsl};

    use crate::enqueue_async::ops::AsyncOps;
    use crate::schema::consistency_task::dsl as t;
    use crate::store::row::NewRow;

    async fn insert_one(conn: &mut AsyncMysqlConnection, row: &NewRow) -> QueryResult<Option<i64>> {
        // As the synchronous insert: a duplicate key fails only this statement on InnoDB (the
        // caller's transaction goes on), so a plain INSERT is the race-free "insert unless the
        // key exists".
        match diesel::insert_into(t::consistency_task)
            .values(row)
            .execute(conn)
            .await
        {
            Ok(_) => {}
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
                if row.idempotency_key.is_some() =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
        // LAST_INSERT_ID() is BIGINT UNSIGNED; the cast reads it as the id column's type.
        let id = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "CAST(LAST_INSERT_ID() AS SIGNED)",
        ))
        .get_result::<i64>(conn)
        .await?;
        Ok(Some(id))
    }

    /// The statements of the synchronous `Ops for MysqlConnection`.
    impl AsyncOps for AsyncMysqlConnection {
        const BACKEND: &'static str = "mysql";

        async fn insert_one(&mut self, row: NewRow) -> QueryResult<Option<i64>> {
            insert_one(self, &row).await
        }

        async fn insert_many(&mut self, rows: Vec<NewRow>) -> QueryResult<usize> {
            if rows.iter().any(|r| r.idempotency_key.is_some()) {
                // One duplicate would fail the whole multi-row statement: one by one.
                let mut n = 0;
                for r in &rows {
                    n += usize::from(insert_one(self, r).await?.is_some());
                }
                return Ok(n);
            }
            diesel::insert_into(t::consistency_task)
                .values(&rows)
                .execute(self)
                .await
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::future::Future;

    use diesel::{QueryResult, SqliteConnection};
    use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncConnectionWrapper};

    use crate::enqueue_async::ops::AsyncOps;
    use crate::store::ops::Ops;
    use crate::store::row::NewRow;

    /// The synchronous `Ops for SqliteConnection` itself, on the wrapped connection (in the
    /// wrapper's transaction: its transaction manager is the wrapped connection's).
    impl<S: SpawnBlocking + Send> AsyncOps for SyncConnectionWrapper<SqliteConnection, S> {
        const BACKEND: &'static str = "sqlite";

        fn insert_one(
            &mut self,
            row: NewRow,
        ) -> impl Future<Output = QueryResult<Option<i64>>> + Send + '_ {
            self.spawn_blocking(move |conn| conn.insert_one(&row))
        }

        fn insert_many(
            &mut self,
            rows: Vec<NewRow>,
        ) -> impl Future<Output = QueryResult<usize>> + Send + '_ {
            self.spawn_blocking(move |conn| conn.insert_many(&rows))
        }
    }
}
