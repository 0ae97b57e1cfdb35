//! Writing tasks: [`NewTask`] and the `enqueue` functions, which run on the caller's connection
//! so that the task commits or rolls back with the caller's transaction.

use std::borrow::Cow;
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::store::row::NewRow;
use crate::store::StoreConnection;
use crate::task::{ExecuteWay, Task, TaskOptions, ThreadWay, TransactionWay};
use crate::trace::TraceParent;
use crate::util::now_ms;
use crate::util::truncate_str;

/// The largest encoded task tend stores: 4 MiB. Larger data belongs in your own table, with
/// its key in the task.
///
/// ```
/// use tend::{ErrorKind, NewTask};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Attachment { bytes: Vec<u8> }
/// # impl tend::Task for Attachment {
/// #     const SIGNATURE: &'static str = "mail.attachment";
/// #     fn execute(&self, _: &tend::TaskContext) -> Result<(), tend::TaskError> { Ok(()) }
/// # }
/// // The bytes plus their length prefix are over the limit:
/// let too_big = Attachment { bytes: vec![0; tend::MAX_PAYLOAD_BYTES] };
/// let err = NewTask::new(&too_big).unwrap_err();
/// assert!(matches!(err.kind(), ErrorKind::PayloadTooLarge { .. }));
/// ```
pub const MAX_PAYLOAD_BYTES: usize = 4 << 20;

/// The longest signature, in bytes (the seed's `method_sign_name` column width).
///
/// ```
/// # use tend::{Task, TaskContext, TaskError};
/// # const LONG: &str = match std::str::from_utf8(&[b'a'; 201]) { Ok(s) => s, Err(_) => panic!() };
/// # #[derive(serde::Serialize, serde::Deserialize)] struct TooLong;
/// # impl Task for TooLong {
/// #     const SIGNATURE: &'static str = LONG;
/// #     fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
/// # }
/// use tend::{ErrorKind, NewTask, Registry};
/// assert_eq!(TooLong::SIGNATURE.len(), tend::MAX_SIGNATURE_BYTES + 1);
/// let err = Registry::new().register::<TooLong>().unwrap_err();
/// assert!(matches!(err.kind(), ErrorKind::InvalidSignature { .. }));
/// assert!(NewTask::new(&TooLong).is_err());
/// ```
pub const MAX_SIGNATURE_BYTES: usize = 200;

/// The bincode configuration of every payload. Decoding is limited to [`MAX_PAYLOAD_BYTES`] so
/// that a corrupt length prefix cannot make a worker allocate without bound.
/// The current span's trace context (the `opentelemetry` feature), else none.
fn current_trace() -> Option<TraceParent> {
    #[cfg(feature = "opentelemetry")]
    return TraceParent::current();
    #[cfg(not(feature = "opentelemetry"))]
    None
}

pub(crate) fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_PAYLOAD_BYTES>()
}

/// Checks a signature: 1 to 200 bytes of ASCII letters, digits and `._:-/#`.
pub(crate) fn validate_signature(s: &str) -> Result<(), Error> {
    let bad = |reason: &str| {
        Err(Error::new(ErrorKind::InvalidSignature {
            signature: s.to_string(),
            reason: reason.to_string(),
        }))
    };
    if s.is_empty() {
        return bad("it is empty");
    }
    if s.len() > MAX_SIGNATURE_BYTES {
        return bad("it is longer than 200 bytes");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:-/#".contains(&b))
    {
        return bad("only ASCII letters, digits and `._:-/#` are allowed");
    }
    Ok(())
}

/// A task ready to enqueue, with its type's options and any per-enqueue overrides.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use tend::{Task, TaskContext, TaskError};
/// # #[derive(Serialize, Deserialize)] struct Ship { order_id: i64 }
/// # impl Task for Ship {
/// #     const SIGNATURE: &'static str = "orders.ship";
/// #     fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
/// # }
/// use std::time::Duration;
/// use diesel::{Connection, SqliteConnection};
/// use tend::{ExecuteWay, NewTask};
///
/// let mut conn = SqliteConnection::establish(":memory:").unwrap();
/// tend::migrate(&mut conn).unwrap();
/// let task = NewTask::new(&Ship { order_id: 42 })
///     .unwrap()
///     .execute_way(ExecuteWay::Schedule)
///     .delay(Duration::from_secs(30))
///     .shard_key(42)
///     .idempotency_key("ship-42");
/// let first = tend::enqueue_new(&mut conn, task.clone()).unwrap();
/// let second = tend::enqueue_new(&mut conn, task).unwrap();
/// assert!(first.id().is_some());
/// assert!(second.is_duplicate());
/// ```
#[derive(Debug, Clone)]
pub struct NewTask {
    signature: &'static str,
    type_name: &'static str,
    version: i32,
    payload: Vec<u8>,
    opts: TaskOptions,
    idempotency_key: Option<String>,
    shard_key: i64,
    /// An absolute due time (epoch ms), set by [`NewTask::run_at`].
    run_at: Option<i64>,
    /// The trace context the task's runs continue.
    trace_parent: Option<TraceParent>,
    /// Tasks with the same key run one at a time, in enqueue order.
    ordering_key: Option<String>,
    /// Whether `shard_key` was set by the caller (else an ordering key routes the task).
    explicit_shard_key: bool,
}

impl NewTask {
    /// Encodes `task` with bincode and takes its type's [`Task::options`].
    ///
    /// # Errors
    /// An invalid signature, a task that bincode cannot encode, or one larger than
    /// [`MAX_PAYLOAD_BYTES`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use std::time::Duration;
    /// use tend::{ExecuteWay, NewTask};
    /// let task = NewTask::new(&Ship { order_id: 42 })?
    ///     .execute_way(ExecuteWay::Schedule)
    ///     .delay(Duration::from_secs(30))
    ///     .max_attempts(3)
    ///     .shard_key(42);
    /// assert_eq!(task.signature(), "orders.ship");
    /// assert_eq!(task.get_shard_key(), 42);
    /// assert_eq!(task.options().get_max_attempts(), 3);
    /// assert!(tend::enqueue_new(&mut conn, task)?.id().is_some());
    /// # Ok(()) }
    /// ```
    pub fn new<T: Task>(task: &T) -> Result<NewTask, Error> {
        validate_signature(T::SIGNATURE)?;
        let payload = bincode::serde::encode_to_vec(task, bincode_config()).map_err(|source| {
            Error::new(ErrorKind::Encode {
                signature: T::SIGNATURE.to_string(),
                source,
            })
        })?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::new(ErrorKind::PayloadTooLarge {
                signature: T::SIGNATURE.to_string(),
                size: payload.len(),
                max: MAX_PAYLOAD_BYTES,
            }));
        }
        Ok(NewTask {
            signature: T::SIGNATURE,
            type_name: std::any::type_name::<T>(),
            version: T::VERSION,
            payload,
            opts: T::options(),
            idempotency_key: None,
            shard_key: crate::shard::next_shard_key(),
            run_at: None,
            trace_parent: current_trace(),
            ordering_key: None,
            explicit_shard_key: false,
        })
    }

    /// Sets the W3C trace context the task's runs continue (`None`: none). By default it is
    /// the current `tracing` span's with the `opentelemetry` feature, and none without it.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use tend::{NewTask, TraceParent};
    /// // From the request's `traceparent` header, say.
    /// let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")?;
    /// let task = NewTask::new(&Ship { order_id: 7 })?.trace_parent(Some(parent));
    /// assert_eq!(task.get_trace_parent().unwrap().trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// tend::enqueue_new(&mut conn, task)?;
    /// # Ok(()) }
    /// ```
    pub fn trace_parent(mut self, parent: Option<TraceParent>) -> Self {
        self.trace_parent = parent;
        self
    }

    /// The trace context the task's runs will continue, if any.
    pub fn get_trace_parent(&self) -> Option<&TraceParent> {
        self.trace_parent.as_ref()
    }

    /// Runs the task at `when` (an absolute time) instead of now or after a delay: the row is
    /// due then (a time in the past is due at once). Sets [`ExecuteWay::Schedule`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use std::time::{Duration, SystemTime, UNIX_EPOCH};
    /// use tend::NewTask;
    /// let nine_tomorrow = SystemTime::now() + Duration::from_secs(24 * 3600); // say
    /// let id = tend::enqueue_new(&mut conn, NewTask::new(&Ship { order_id: 7 })?.run_at(nine_tomorrow))?
    ///     .id()
    ///     .unwrap();
    /// # let due = diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!("(SELECT execute_time FROM consistency_task WHERE id = {id})"));
    /// # let due: i64 = diesel::RunQueryDsl::get_result(diesel::select(due), &mut conn)?;
    /// let want = nine_tomorrow.duration_since(UNIX_EPOCH)?.as_millis() as i64;
    /// assert_eq!(due, want); // stored as epoch milliseconds in execute_time
    /// # Ok(()) }
    /// ```
    pub fn run_at(mut self, when: std::time::SystemTime) -> Self {
        let ms = match when.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |m| -m),
        };
        self.run_at = Some(ms);
        self.opts = self.opts.execute_way(ExecuteWay::Schedule);
        self
    }

    /// Overrides [`TaskOptions::fallback`] for this enqueue: `Some(name)` turns the type's
    /// [`Task::fallback`] on for this task, `None` turns it off. The fallback that runs is the
    /// type's; the name is what `fallback_class_name` records.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use tend::NewTask;
    /// let with = NewTask::new(&Ship { order_id: 7 })?.fallback(Some("refund_shipping"));
    /// assert_eq!(with.options().get_fallback(), Some("refund_shipping"));
    /// let without = NewTask::new(&Ship { order_id: 8 })?.fallback(None);
    /// assert_eq!(without.options().get_fallback(), None);
    /// tend::enqueue_many(&mut conn, [with, without])?;
    /// # Ok(()) }
    /// ```
    pub fn fallback(mut self, name: Option<&str>) -> Self {
        self.opts.fallback = name.map(str::to_string);
        self
    }

    /// Overrides [`TaskOptions::delay`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use std::time::Duration;
    /// use tend::{ExecuteWay, NewTask};
    /// let task = NewTask::new(&Ship { order_id: 7 })?
    ///     .execute_way(ExecuteWay::Schedule)
    ///     .delay(Duration::from_secs(15 * 60)); // due in 15 minutes
    /// tend::enqueue_new(&mut conn, task)?;
    /// // Delays are stored in whole seconds:
    /// let odd = NewTask::new(&Ship { order_id: 8 })?.delay(Duration::from_millis(1500));
    /// assert!(tend::enqueue_new(&mut conn, odd).is_err());
    /// # Ok(()) }
    /// ```
    pub fn delay(mut self, d: Duration) -> Self {
        self.opts = self.opts.delay(d);
        self
    }
    /// Overrides [`TaskOptions::execute_way`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("newtask-execute-way");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// # let outbox = tend::WorkerPool::builder(pool, registry).build()?.outbox();
    /// use tend::{ExecuteWay, NewTask, ThreadWay};
    /// let now = NewTask::new(&Ship { order_id: 7 })?.thread_way(ThreadWay::Sync);
    /// let later = now.clone().execute_way(ExecuteWay::Schedule);
    /// // The right-now sync task ran in this thread; the scheduled one waits for its delay.
    /// assert_eq!(outbox.enqueue_new_detached(now)?.sync_outcomes().len(), 1);
    /// assert!(outbox.enqueue_new_detached(later)?.sync_outcomes().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn execute_way(mut self, w: ExecuteWay) -> Self {
        self.opts = self.opts.execute_way(w);
        self
    }
    /// Overrides [`TaskOptions::thread_way`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (pool, _db) = temp_pool("newtask-thread-way");
    /// # let mut registry = tend::Registry::new();
    /// # registry.register::<Ship>()?;
    /// # let outbox = tend::WorkerPool::builder(pool, registry).build()?.outbox();
    /// use tend::{NewTask, ThreadWay};
    /// let task = NewTask::new(&Ship { order_id: 7 })?.thread_way(ThreadWay::Sync);
    /// let committed = outbox.enqueue_new_detached(task)?;
    /// assert!(committed.sync_outcomes()[0].is_success()); // it ran in this thread
    /// # Ok(()) }
    /// ```
    pub fn thread_way(mut self, w: ThreadWay) -> Self {
        self.opts = self.opts.thread_way(w);
        self
    }
    /// Overrides [`TaskOptions::transaction_way`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use tend::{NewTask, TransactionWay};
    /// let task = NewTask::new(&Ship { order_id: 7 })?
    ///     .transaction_way(TransactionWay::WithoutTransaction);
    /// // Only an Outbox writes a task in its own transaction; the plain functions refuse it.
    /// let err = tend::enqueue_new(&mut conn, task).unwrap_err();
    /// assert!(err.to_string().contains("Outbox"));
    /// # Ok(()) }
    /// ```
    pub fn transaction_way(mut self, w: TransactionWay) -> Self {
        self.opts = self.opts.transaction_way(w);
        self
    }
    /// Overrides [`TaskOptions::execute_interval`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use std::time::Duration;
    /// use tend::NewTask;
    /// let task = NewTask::new(&Ship { order_id: 7 })?.execute_interval(Duration::from_secs(10));
    /// assert!(tend::enqueue_new(&mut conn, task)?.id().is_some());
    /// let zero = NewTask::new(&Ship { order_id: 8 })?.execute_interval(Duration::ZERO);
    /// assert!(tend::enqueue_new(&mut conn, zero).is_err()); // at least 1 s
    /// # Ok(()) }
    /// ```
    pub fn execute_interval(mut self, d: Duration) -> Self {
        self.opts = self.opts.execute_interval(d);
        self
    }
    /// Overrides [`TaskOptions::max_attempts`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use tend::NewTask;
    /// let task = NewTask::new(&Ship { order_id: 7 })?.max_attempts(3);
    /// assert_eq!(task.options().get_max_attempts(), 3);
    /// tend::enqueue_new(&mut conn, task)?;
    /// let never = NewTask::new(&Ship { order_id: 8 })?.max_attempts(0);
    /// assert!(tend::enqueue_new(&mut conn, never).is_err()); // at least 1
    /// # Ok(()) }
    /// ```
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.opts = self.opts.max_attempts(n);
        self
    }
    /// Overrides [`TaskOptions::alert_expression`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use tend::{ErrorKind, NewTask};
    /// let quiet = NewTask::new(&Ship { order_id: 7 })?.alert_expression(None); // never alert
    /// tend::enqueue_new(&mut conn, quiet)?;
    /// let typo = NewTask::new(&Ship { order_id: 8 })?.alert_expression(Some("executeTimes >"));
    /// let err = tend::enqueue_new(&mut conn, typo).unwrap_err();
    /// assert!(matches!(err.kind(), ErrorKind::InvalidExpression { error, .. } if error.position == 14));
    /// # Ok(()) }
    /// ```
    pub fn alert_expression(mut self, e: Option<&str>) -> Self {
        self.opts = self.opts.alert_expression(e);
        self
    }
    /// Overrides [`TaskOptions::alerter`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use tend::NewTask;
    /// // Names an alerter registered with `Registry::alerter` in the processes that run it.
    /// let task = NewTask::new(&Ship { order_id: 7 })?.alerter("pager");
    /// assert!(tend::enqueue_new(&mut conn, task)?.id().is_some());
    /// let unnamed = NewTask::new(&Ship { order_id: 8 })?.alerter("");
    /// assert!(tend::enqueue_new(&mut conn, unnamed).is_err());
    /// # Ok(()) }
    /// ```
    pub fn alerter(mut self, name: impl Into<String>) -> Self {
        self.opts = self.opts.alerter(name);
        self
    }
    /// Overrides [`TaskOptions::task_id`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use tend::NewTask;
    /// let task = NewTask::new(&Ship { order_id: 7 })?.task_id("ship-order-7");
    /// assert!(tend::enqueue_new(&mut conn, task)?.id().is_some());
    /// let empty = NewTask::new(&Ship { order_id: 8 })?.task_id("");
    /// assert!(tend::enqueue_new(&mut conn, empty).is_err());
    /// # Ok(()) }
    /// ```
    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.opts = self.opts.task_id(id);
        self
    }
    /// A unique key: while a row with this key exists, enqueuing it again inserts nothing and
    /// returns [`Enqueued::Duplicate`]. Enforced by a unique index, so concurrent enqueues
    /// cannot race. At most 255 bytes. Defaults to none.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// use tend::{Enqueued, NewTask};
    /// let task = NewTask::new(&Ship { order_id: 7 })?.idempotency_key("ship-7");
    /// assert!(matches!(tend::enqueue_new(&mut conn, task.clone())?, Enqueued::Inserted(_)));
    /// assert_eq!(tend::enqueue_new(&mut conn, task)?, Enqueued::Duplicate);
    /// let long = NewTask::new(&Ship { order_id: 8 })?.idempotency_key("k".repeat(256));
    /// assert!(tend::enqueue_new(&mut conn, long).is_err());
    /// # Ok(()) }
    /// ```
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
    /// The task's shard key: with [`Shards`](crate::Shards), the key that routes to the database
    /// you enqueue on (for example your customer id, the key your business rows are sharded
    /// by). Defaults to a fresh key from [`next_shard_key`](crate::next_shard_key).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let customer_id = 1234;
    /// let task = tend::NewTask::new(&Ship { order_id: 7 })?.shard_key(customer_id);
    /// assert_eq!(task.get_shard_key(), 1234);
    /// # Ok(()) }
    /// ```
    pub fn shard_key(mut self, key: i64) -> Self {
        self.shard_key = key;
        self.explicit_shard_key = true;
        self
    }

    /// Overrides [`TaskOptions::queue`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let task = tend::NewTask::new(&Ship { order_id: 7 })?.queue("mail").priority(2);
    /// assert_eq!(task.options().get_queue(), "mail");
    /// assert_eq!(task.options().get_priority(), 2);
    /// # Ok(()) }
    /// ```
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.opts = self.opts.queue(name);
        self
    }

    /// Overrides [`TaskOptions::priority`].
    pub fn priority(mut self, p: i32) -> Self {
        self.opts = self.opts.priority(p);
        self
    }

    /// Puts the task in line behind every earlier task with the same key: tasks of one key run
    /// one at a time, in enqueue order (the order of their inserts; enqueue one key's tasks
    /// from one transaction at a time for that to be the order you mean), across threads,
    /// processes and retries. A task of the key that fails waits for its retry and the rest
    /// wait behind it; one that is **dead or held blocks its key** until an operator acts
    /// (`tend tasks retry ID`, or `tend keys skip KEY`, which takes the blocking task out of
    /// the line and leaves it dead for inspection). 1 to 255 bytes.
    ///
    /// Unless [`NewTask::shard_key`] is set, the shard key becomes a hash of the ordering key,
    /// so that with [`Shards`](crate::Shards) one key's tasks stay on one database. Not with
    /// [`ThreadWay::Sync`](crate::ThreadWay::Sync) (refused at enqueue: a sync task runs in the
    /// caller at once, not in line).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// for step in 0..3 {
    ///     let task = tend::NewTask::new(&Ship { order_id: step })?.ordering_key("order-42");
    ///     tend::enqueue_new(&mut conn, task)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        if !self.explicit_shard_key {
            self.shard_key = crate::queue::shard_key_of(&key);
        }
        self.ordering_key = Some(key);
        self
    }

    /// The task's ordering key ([`NewTask::ordering_key`]).
    pub fn get_ordering_key(&self) -> Option<&str> {
        self.ordering_key.as_deref()
    }

    /// The task type's signature.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tend::Task;
    /// let task = tend::NewTask::new(&Ship { order_id: 7 })?;
    /// assert_eq!(task.signature(), Ship::SIGNATURE);
    /// # Ok(()) }
    /// ```
    pub fn signature(&self) -> &'static str {
        self.signature
    }

    /// The shard key this task will be stored with.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tend::NewTask;
    /// // Without `shard_key`, every task gets a fresh key from `tend::next_shard_key`.
    /// let a = NewTask::new(&Ship { order_id: 7 })?;
    /// let b = NewTask::new(&Ship { order_id: 7 })?;
    /// assert_ne!(a.get_shard_key(), b.get_shard_key());
    /// assert_eq!(a.shard_key(5).get_shard_key(), 5);
    /// # Ok(()) }
    /// ```
    pub fn get_shard_key(&self) -> i64 {
        self.shard_key
    }

    /// The options this task will be stored with.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tend::{NewTask, RetryPolicy};
    /// let task = NewTask::new(&Ship { order_id: 7 })?; // Ship keeps the default options
    /// assert_eq!(task.options().get_max_attempts(), 25);
    /// assert_eq!(task.options().get_retry_policy(), RetryPolicy::Linear);
    /// assert_eq!(task.max_attempts(3).options().get_max_attempts(), 3);
    /// # Ok(()) }
    /// ```
    pub fn options(&self) -> &TaskOptions {
        &self.opts
    }

    /// The plain `enqueue` functions write on the caller's connection, which cannot honour
    /// [`TransactionWay::WithoutTransaction`]: say so rather than silently join the transaction.
    fn check_written_here(&self) -> Result<(), Error> {
        if self.opts.thread_way == crate::task::ThreadWay::Sync {
            return Err(Error::invalid_setting(
                "thread_way",
                format!(
                    "task `{}` is Sync (run in the caller's thread right after the commit), \
                     which the plain enqueue functions cannot honour (they do not see the \
                     commit); enqueue it through an Outbox, or make it Async for the pool",
                    self.signature
                ),
            ));
        }
        if self.opts.transaction_way == TransactionWay::WithoutTransaction {
            return Err(Error::invalid_setting(
                "transaction_way",
                format!(
                    "task `{}` is WithoutTransaction, which the plain enqueue functions cannot \
                     honour (they write on your connection); enqueue it through an Outbox",
                    self.signature
                ),
            ));
        }
        Ok(())
    }

    /// Validates the options and builds the row, due now or after the delay.
    pub(crate) fn into_row(self, now: i64) -> Result<NewRow, Error> {
        self.opts.validate()?;
        if let Some(k) = &self.idempotency_key {
            if k.is_empty() || k.len() > 255 {
                return Err(Error::invalid_setting(
                    "idempotency_key",
                    format!("must be 1 to 255 bytes, got {}", k.len()),
                ));
            }
        }
        if let Some(k) = &self.ordering_key {
            crate::queue::validate_ordering_key(k)?;
            if self.opts.thread_way == crate::task::ThreadWay::Sync
                && self.opts.execute_way == ExecuteWay::RightNow
            {
                return Err(Error::invalid_setting(
                    "ordering_key",
                    format!(
                        "task `{}` is ThreadWay::Sync, which runs in the caller at commit and \
                         cannot wait in line behind earlier tasks of its key; use \
                         ThreadWay::Async for ordered tasks",
                        self.signature
                    ),
                ));
            }
        }
        let o = self.opts;
        let execute_time = match (self.run_at, o.execute_way) {
            // Not PARKED: a task due "never" would be invisible to the claim for good.
            (Some(at), _) => at.min(crate::status::LATEST_DUE),
            (None, ExecuteWay::RightNow) => now,
            (None, ExecuteWay::Schedule) => now.saturating_add(o.delay.as_millis() as i64),
        };
        let method_name = self
            .signature
            .rsplit(['.', ':', '/', '#'])
            .next()
            .unwrap_or(self.signature);
        Ok(NewRow {
            task_id: o.task_id.map_or(Cow::Borrowed(self.signature), Cow::Owned),
            idempotency_key: self.idempotency_key,
            task_status: crate::status::TaskStatus::Pending.as_i32(),
            execute_times: 0,
            max_attempts: o.max_attempts as i32,
            execute_time,
            parameter_types: Cow::Borrowed(truncate_str(self.type_name, 255)),
            method_name: Cow::Borrowed(truncate_str(method_name, 100)),
            method_sign_name: Cow::Borrowed(self.signature),
            execute_interval_sec: o.execute_interval.as_secs() as i32,
            delay_time: o.delay.as_secs() as i32,
            task_parameter: self.payload,
            payload_version: self.version,
            execute_way: o.execute_way.code(),
            thread_way: o.thread_way.code(),
            transaction_way: o.transaction_way.code(),
            error_msg: String::new(),
            alert_expression: o.alert_expression,
            alert_action_bean_name: o.alerter,
            fallback_class_name: o.fallback,
            fallback_error_msg: None,
            shard_key: self.shard_key,
            lease_token: None,
            lease_owner: None,
            lease_expires_at: None,
            gmt_create: now,
            gmt_modified: now,
            trace_parent: self.trace_parent.map(TraceParent::into_string),
            queue: o.queue,
            priority: o.priority,
            ordering_key: self.ordering_key,
        })
    }
}

/// What an enqueue did.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut conn = memory_db();
/// use tend::{Enqueued, NewTask};
/// let task = NewTask::new(&Ship { order_id: 7 })?.idempotency_key("ship-7");
/// match tend::enqueue_new(&mut conn, task.clone())? {
///     Enqueued::Inserted(id) => println!("enqueued task {id}"),
///     Enqueued::Duplicate => unreachable!("the first enqueue of a key inserts"),
/// }
/// assert_eq!(tend::enqueue_new(&mut conn, task)?, Enqueued::Duplicate);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new row with this id.
    Inserted(i64),
    /// A row with the same idempotency key already exists; nothing was inserted.
    Duplicate,
}

impl Enqueued {
    /// The new row's id, if one was inserted.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// let id = tend::enqueue(&mut conn, &Ship { order_id: 7 })?.id();
    /// assert!(id.is_some());
    /// assert_eq!(task_count(&mut conn), 1);
    /// # Ok(()) }
    /// ```
    pub fn id(self) -> Option<i64> {
        match self {
            Enqueued::Inserted(id) => Some(id),
            Enqueued::Duplicate => None,
        }
    }
    /// Whether the idempotency key already existed.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// let task = tend::NewTask::new(&Ship { order_id: 7 })?.idempotency_key("ship-7");
    /// assert!(!tend::enqueue_new(&mut conn, task.clone())?.is_duplicate());
    /// assert!(tend::enqueue_new(&mut conn, task)?.is_duplicate());
    /// assert_eq!(task_count(&mut conn), 1); // the second enqueue inserted nothing
    /// # Ok(()) }
    /// ```
    pub fn is_duplicate(self) -> bool {
        self == Enqueued::Duplicate
    }
}

/// Enqueues `task` with its type's options, on `conn`: inside `conn.transaction(…)` the task
/// commits or rolls back with everything else the transaction wrote. Outside a transaction it
/// commits at once.
///
/// A right-now task is due at once; the pool picks it up on its next poll, or at once if you
/// call [`PoolHandle::wake`](crate::PoolHandle::wake) after your commit.
///
/// # Errors
/// Bad options, an encoding error or an oversized payload (before any SQL is sent), or the
/// database's error ([`ErrorKind::NotMigrated`] when tend's table is missing).
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use tend::{Task, TaskContext, TaskError};
/// # #[derive(Serialize, Deserialize)] struct Ship { order_id: i64 }
/// # impl Task for Ship {
/// #     const SIGNATURE: &'static str = "orders.ship";
/// #     fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
/// # }
/// use diesel::{Connection, SqliteConnection};
/// let mut conn = SqliteConnection::establish(":memory:").unwrap();
/// tend::migrate(&mut conn).unwrap();
/// conn.transaction(|conn| {
///     // insert your business rows here, then:
///     tend::enqueue(conn, &Ship { order_id: 42 })
/// })
/// .unwrap();
/// ```
pub fn enqueue<C: StoreConnection, T: Task>(conn: &mut C, task: &T) -> Result<Enqueued, Error> {
    enqueue_new(conn, NewTask::new(task)?)
}

/// Enqueues a [`NewTask`] (a task with per-enqueue overrides). See [`enqueue`].
///
/// # Errors
/// As [`enqueue`].
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut conn = memory_db();
/// use diesel::Connection;
/// use tend::NewTask;
/// conn.transaction(|conn| {
///     // your business rows, then the task with this enqueue's overrides:
///     let task = NewTask::new(&Ship { order_id: 7 })?.max_attempts(3);
///     tend::enqueue_new(conn, task)
/// })?;
/// assert_eq!(task_count(&mut conn), 1);
/// # Ok(()) }
/// ```
pub fn enqueue_new<C: StoreConnection>(conn: &mut C, task: NewTask) -> Result<Enqueued, Error> {
    let row = row_to_write(task, now_ms())?;
    let backend = conn.backend();
    // No retry here: inside the caller's transaction a lock conflict is theirs to handle.
    enqueued(backend, conn.insert_one(&row))
}

/// The row the `enqueue` functions write for `task` (sync and async alike): refuses what they
/// cannot honour, validates, encodes.
pub(crate) fn row_to_write(task: NewTask, now: i64) -> Result<NewRow, Error> {
    task.check_written_here()?;
    task.into_row(now)
}

/// The rows of `enqueue_many` (sync and async alike): every task checked before any SQL.
pub(crate) fn rows_to_write(
    tasks: impl IntoIterator<Item = NewTask>,
    now: i64,
) -> Result<Vec<NewRow>, Error> {
    // Sized up front: collecting `Result`s cannot see the length, and grew the vector by
    // doubling (copying every row written so far each time).
    let tasks = tasks.into_iter();
    let mut rows = Vec::with_capacity(tasks.size_hint().0);
    for t in tasks {
        rows.push(row_to_write(t, now)?);
    }
    Ok(rows)
}

/// What an insert of one row did, as the `enqueue` functions report it.
pub(crate) fn enqueued(
    backend: &'static str,
    inserted: diesel::QueryResult<Option<i64>>,
) -> Result<Enqueued, Error> {
    match inserted {
        Ok(Some(id)) => Ok(Enqueued::Inserted(id)),
        Ok(None) => Ok(Enqueued::Duplicate),
        Err(e) => Err(Error::from_db(backend, e)),
    }
}

/// Enqueues many tasks in one multi-row `INSERT` (on MySQL/MariaDB, rows with an idempotency
/// key are inserted one by one, since one duplicate would fail the whole statement). Returns
/// how many rows were inserted: duplicates of existing idempotency keys are skipped.
///
/// # Errors
/// As [`enqueue`]; nothing is inserted if any task is invalid.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use tend::{Task, TaskContext, TaskError};
/// # #[derive(Serialize, Deserialize)] struct Ship { order_id: i64 }
/// # impl Task for Ship {
/// #     const SIGNATURE: &'static str = "orders.ship";
/// #     fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
/// # }
/// use diesel::{Connection, SqliteConnection};
/// use tend::NewTask;
/// let mut conn = SqliteConnection::establish(":memory:").unwrap();
/// tend::migrate(&mut conn).unwrap();
/// let tasks = (0..100).map(|i| NewTask::new(&Ship { order_id: i })).collect::<Result<Vec<_>, _>>().unwrap();
/// assert_eq!(tend::enqueue_many(&mut conn, tasks).unwrap(), 100);
/// ```
pub fn enqueue_many<C: StoreConnection>(
    conn: &mut C,
    tasks: impl IntoIterator<Item = NewTask>,
) -> Result<usize, Error> {
    let rows = rows_to_write(tasks, now_ms())?;
    if rows.is_empty() {
        return Ok(0);
    }
    let backend = conn.backend();
    // Every backend caps the binds of one statement (SQLite 32 766, PostgreSQL and MySQL
    // 65 535) and a row has 28: insert in chunks that stay under all of them.
    let mut inserted = 0;
    for chunk in rows.chunks(INSERT_CHUNK) {
        inserted += conn
            .insert_many(chunk)
            .map_err(|e| Error::from_db(backend, e))?;
    }
    Ok(inserted)
}

/// The most rows one multi-row `INSERT` of [`enqueue_many`] carries: 28 binds a row stay under
/// SQLite's 32 766.
pub(crate) const INSERT_CHUNK: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked() {
        assert!(validate_signature("orders.send_payment_timeout").is_ok());
        assert!(validate_signature("com.x.Svc#pay(long)").is_err()); // parentheses
        assert!(validate_signature("").is_err());
        assert!(validate_signature(&"a".repeat(201)).is_err());
        assert!(validate_signature("orders pay").is_err());
    }
}
