//! What a task is: the [`Task`] trait, its options, and what a handler returns.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::retry::RetryPolicy;

/// A unit of work that must happen: a serde type, found by a stable signature.
///
/// The value is encoded with bincode into `consistency_task.task_parameter` when it is
/// enqueued, and decoded by a worker to run [`Task::execute`].
///
/// **The signature is the task's identity**: rows are dispatched by it, never by the Rust type
/// name, so renaming or moving the type keeps queued rows runnable. Changing the *fields* of a
/// type changes its bincode encoding: rows queued before the change will not decode and end
/// [`Held`](crate::TaskStatus::Held) with a message (never deleted). To change a payload, add a
/// new type with a new signature (or bump [`Task::VERSION`] and keep the old type registered
/// until the old rows are drained).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use std::time::Duration;
/// use tend::{Task, TaskContext, TaskError, TaskOptions};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendPaymentTimeout { order_id: i64 }
///
/// impl Task for SendPaymentTimeout {
///     const SIGNATURE: &'static str = "orders.send_payment_timeout";
///
///     fn options() -> TaskOptions {
///         TaskOptions::new().execute_interval(Duration::from_secs(30)).max_attempts(10)
///     }
///
///     fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
///         println!("order {} timed out (attempt {})", self.order_id, ctx.attempt());
///         Ok(())
///     }
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable name rows are dispatched by (the seed's `method_sign_name`), for example
    /// `"orders.send_payment_timeout"`. At most 200 bytes of ASCII letters, digits and `._:-/#`.
    const SIGNATURE: &'static str;

    /// Version of the payload's shape, stored in `payload_version`. Defaults to 1.
    const VERSION: i32 = 1;

    /// The defaults for every task of this type; a single enqueue can override them through
    /// [`NewTask`](crate::NewTask). Defaults to [`TaskOptions::new`].
    fn options() -> TaskOptions {
        TaskOptions::new()
    }

    /// Does the work. `Ok` completes the task (its row is deleted); an error schedules a retry
    /// (or, with [`TaskError::give_up`], makes the task dead at once). A panic counts as an
    /// error; the worker thread survives it.
    ///
    /// Runs **at least once**: after a crash, a lost lease or a completion that could not be
    /// written, it runs again. Make its side effects idempotent (for example, keyed by the task's
    /// business id).
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError>;

    /// The fallback action (the seed's `fallbackClass`), run after a failed attempt once the
    /// task has failed more than the fallback threshold, if [`TaskOptions::fallback`] names one.
    /// `Ok` completes the task. Defaults to an error saying no fallback is defined.
    fn fallback(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let _ = ctx;
        Err(TaskError::new("this task type defines no fallback"))
    }
}

/// When a task first runs (the seed's `executeMode` / `execute_way`).
///
/// ```
/// use std::time::Duration;
/// use tend::{ExecuteWay, TaskOptions};
/// assert_eq!(ExecuteWay::default(), ExecuteWay::RightNow);
/// // A reminder, due 15 minutes after the enqueue:
/// let reminder = TaskOptions::new()
///     .execute_way(ExecuteWay::Schedule)
///     .delay(Duration::from_secs(15 * 60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecuteWay {
    /// As soon as the enqueuing transaction commits (the seed's `EXECUTE_RIGHT_NOW`, stored as 1).
    #[default]
    RightNow,
    /// `delay` after enqueue, by the pool's poller (the seed's `EXECUTE_SCHEDULE`, stored as 2).
    Schedule,
}

/// Which thread runs a right-now task (the seed's `threadMode` / `thread_way`).
///
/// ```
/// use tend::{TaskOptions, ThreadWay};
/// assert_eq!(ThreadWay::default(), ThreadWay::Async);
/// // Run in the committing thread (through an Outbox), right after the commit:
/// let inline = TaskOptions::new().thread_way(ThreadWay::Sync);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThreadWay {
    /// On the worker pool (stored as 1).
    #[default]
    Async,
    /// In the caller's thread right after commit (stored as 2).
    Sync,
}

/// Whether the row joins the caller's transaction (the seed's `transactionMode`).
///
/// ```
/// use tend::{TaskOptions, TransactionWay};
/// assert_eq!(TransactionWay::default(), TransactionWay::WithTransaction);
/// // Written even if the caller's transaction rolls back (through an Outbox):
/// let audit = TaskOptions::new().transaction_way(TransactionWay::WithoutTransaction);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransactionWay {
    /// Written in the caller's transaction: it commits or rolls back with the business rows
    /// (stored as 1).
    #[default]
    WithTransaction,
    /// Written in its own transaction on a pool connection: it exists even if the caller then
    /// rolls back. No atomicity with business data (stored as 2). On SQLite,
    /// [`OutboxTx::enqueue_new`](crate::OutboxTx::enqueue_new) refuses it inside an
    /// [`Outbox::transaction`](crate::Outbox::transaction) (it would wait for the caller's own
    /// write lock); enqueue it with [`Outbox::enqueue_new_detached`](crate::Outbox::enqueue_new_detached) instead.
    WithoutTransaction,
}

macro_rules! way_codes {
    ($t:ty { $($v:ident = $n:expr),* }) => {
        impl $t {
            pub(crate) fn code(self) -> i32 {
                match self { $(<$t>::$v => $n),* }
            }
        }
    };
}
way_codes!(ExecuteWay { RightNow = 1, Schedule = 2 });
way_codes!(ThreadWay { Async = 1, Sync = 2 });
way_codes!(TransactionWay { WithTransaction = 1, WithoutTransaction = 2 });

/// The original framework's default alert expression.
///
/// ```
/// use tend::{AlertVars, Expr, DEFAULT_ALERT_EXPRESSION};
/// let e = Expr::parse(DEFAULT_ALERT_EXPRESSION).unwrap();
/// let fires = |n| e.eval(&AlertVars { execute_times: n, ..AlertVars::default() }) == Ok(true);
/// let attempts: Vec<i64> = (1..=6).filter(|&n| fires(n)).collect();
/// assert_eq!(attempts, [2, 3, 4]); // after the 2nd, 3rd and 4th failed attempts
/// ```
pub const DEFAULT_ALERT_EXPRESSION: &str = "executeTimes > 1 && executeTimes < 5";

/// Per-task-type defaults, the seed's `@ConsistencyTask` attributes. Every setter says its
/// default and the seed's name for it.
///
/// ```
/// use std::time::Duration;
/// use tend::{ExecuteWay, RetryPolicy, TaskOptions};
/// let opts = TaskOptions::new()
///     .execute_way(ExecuteWay::Schedule)
///     .delay(Duration::from_secs(900))
///     .retry_policy(RetryPolicy::Fixed)
///     .max_attempts(5);
/// assert_eq!(opts.get_max_attempts(), 5);
/// ```
#[derive(Debug, Clone)]
pub struct TaskOptions {
    pub(crate) execute_interval: Duration,
    pub(crate) delay: Duration,
    pub(crate) execute_way: ExecuteWay,
    pub(crate) thread_way: ThreadWay,
    pub(crate) transaction_way: TransactionWay,
    pub(crate) max_attempts: u32,
    pub(crate) retry: RetryPolicy,
    pub(crate) fallback: Option<String>,
    pub(crate) fallback_threshold: u32,
    pub(crate) snooze_limit: Duration,
    pub(crate) alert_expression: Option<Cow<'static, str>>,
    pub(crate) alerter: Option<String>,
    pub(crate) task_id: Option<String>,
    pub(crate) queue: Cow<'static, str>,
    pub(crate) priority: i32,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions::new()
    }
}

impl TaskOptions {
    /// The seed's defaults: 60 s interval, 60 s delay, right now, async, with transaction,
    /// linear retry, 25 attempts, no fallback, alert expression
    /// `executeTimes > 1 && executeTimes < 5`, no alerter, task id = signature.
    ///
    /// ```
    /// use tend::{RetryPolicy, TaskOptions};
    /// let opts = TaskOptions::new();
    /// assert_eq!(opts.get_max_attempts(), 25);
    /// assert_eq!(opts.get_retry_policy(), RetryPolicy::Linear);
    /// ```
    pub fn new() -> TaskOptions {
        TaskOptions {
            execute_interval: Duration::from_secs(60),
            delay: Duration::from_secs(60),
            execute_way: ExecuteWay::RightNow,
            thread_way: ThreadWay::Async,
            transaction_way: TransactionWay::WithTransaction,
            max_attempts: 25,
            retry: RetryPolicy::Linear,
            fallback: None,
            fallback_threshold: 0,
            snooze_limit: DEFAULT_SNOOZE_LIMIT,
            alert_expression: Some(Cow::Borrowed(DEFAULT_ALERT_EXPRESSION)),
            alerter: None,
            task_id: None,
            queue: Cow::Borrowed(crate::queue::DEFAULT_QUEUE),
            priority: 0,
        }
    }

    /// Base of the retry schedule (the seed's `executeIntervalSec`). Whole seconds, 1 s to
    /// `i32::MAX` s. Defaults to 60 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tend::{Registry, Task, TaskContext, TaskError, TaskOptions};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct PollFeed;
    /// impl Task for PollFeed {
    ///     const SIGNATURE: &'static str = "feeds.poll";
    ///     fn options() -> TaskOptions {
    ///         // Retry 10 s after the first failure, 20 s after the second, ...
    ///         TaskOptions::new().execute_interval(Duration::from_secs(10))
    ///     }
    /// #   fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
    /// }
    /// assert!(Registry::new().register::<PollFeed>().is_ok());
    /// ```
    pub fn execute_interval(mut self, d: Duration) -> Self {
        self.execute_interval = d;
        self
    }

    /// How long after enqueue a [`ExecuteWay::Schedule`] task becomes due (the seed's
    /// `delayTime`). Whole seconds. Defaults to 60 s; ignored for right-now tasks.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tend::{ExecuteWay, Registry, Task, TaskContext, TaskError, TaskOptions};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Remind;
    /// impl Task for Remind {
    ///     const SIGNATURE: &'static str = "carts.remind";
    ///     fn options() -> TaskOptions {
    ///         // Due one hour after the enqueue.
    ///         TaskOptions::new().execute_way(ExecuteWay::Schedule).delay(Duration::from_secs(3600))
    ///     }
    /// #   fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
    /// }
    /// assert!(Registry::new().register::<Remind>().is_ok());
    /// ```
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// When the task first runs (the seed's `executeMode`). Defaults to [`ExecuteWay::RightNow`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{ExecuteWay, Task, TaskContext, TaskError, TaskOptions, ThreadWay};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Remind;
    /// impl Task for Remind {
    ///     const SIGNATURE: &'static str = "carts.remind";
    ///     fn options() -> TaskOptions {
    ///         TaskOptions::new().execute_way(ExecuteWay::Schedule).thread_way(ThreadWay::Sync)
    ///     }
    /// #   fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let outbox = outbox_for::<Remind>();
    /// let committed = outbox.enqueue_detached(&Remind)?;
    /// // Even a sync task waits for its delay (60 s by default) when it is scheduled.
    /// assert!(committed.sync_outcomes().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn execute_way(mut self, w: ExecuteWay) -> Self {
        self.execute_way = w;
        self
    }

    /// Which thread runs a right-now task (the seed's `threadMode`). Defaults to
    /// [`ThreadWay::Async`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{Task, TaskContext, TaskError, TaskOptions, ThreadWay};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Receipt;
    /// impl Task for Receipt {
    ///     const SIGNATURE: &'static str = "orders.receipt";
    ///     fn options() -> TaskOptions {
    ///         TaskOptions::new().thread_way(ThreadWay::Sync)
    ///     }
    /// #   fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let outbox = outbox_for::<Receipt>();
    /// let committed = outbox.enqueue_detached(&Receipt)?;
    /// assert!(committed.sync_outcomes()[0].is_success()); // it ran in this thread
    /// # Ok(()) }
    /// ```
    pub fn thread_way(mut self, w: ThreadWay) -> Self {
        self.thread_way = w;
        self
    }

    /// Whether the row joins the caller's transaction (the seed's `transactionMode`). Defaults
    /// to [`TransactionWay::WithTransaction`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{Task, TaskContext, TaskError, TaskOptions, TransactionWay};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Audit;
    /// impl Task for Audit {
    ///     const SIGNATURE: &'static str = "audit.record";
    ///     fn options() -> TaskOptions {
    ///         TaskOptions::new().transaction_way(TransactionWay::WithoutTransaction)
    ///     }
    /// #   fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = memory_db();
    /// # let outbox = outbox_for::<Audit>();
    /// // The plain functions write on your connection, so they refuse it; an Outbox takes it.
    /// assert!(tend::enqueue(&mut conn, &Audit).is_err());
    /// assert!(outbox.enqueue_detached(&Audit)?.value().id().is_some());
    /// # Ok(()) }
    /// ```
    pub fn transaction_way(mut self, w: TransactionWay) -> Self {
        self.transaction_way = w;
        self
    }

    /// Attempts before the task is dead (the seed retried forever). At least 1. Defaults to 25.
    ///
    /// ```
    /// use tend::TaskOptions;
    /// let opts = TaskOptions::new().max_attempts(5); // dead after the 5th failure
    /// assert_eq!(opts.get_max_attempts(), 5);
    /// ```
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// How the wait between attempts grows. Defaults to [`RetryPolicy::Linear`] (the seed's).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tend::{RetryPolicy, TaskOptions};
    /// let backoff = RetryPolicy::Exponential { cap: Duration::from_secs(3600), jitter: true };
    /// let opts = TaskOptions::new().retry_policy(backoff);
    /// assert_eq!(opts.get_retry_policy(), backoff);
    /// ```
    pub fn retry_policy(mut self, p: RetryPolicy) -> Self {
        self.retry = p;
        self
    }

    /// Names the fallback action (the seed's `fallbackClass`, stored in `fallback_class_name`)
    /// and turns it on: [`Task::fallback`] then runs after failed attempts past the threshold.
    /// Defaults to none.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{Task, TaskContext, TaskError, TaskOptions, ThreadWay};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge;
    /// impl Task for Charge {
    ///     const SIGNATURE: &'static str = "billing.charge";
    ///     fn options() -> TaskOptions {
    ///         TaskOptions::new().fallback("cancel_order").thread_way(ThreadWay::Sync)
    ///     }
    ///     fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
    ///         Err(TaskError::new("card declined"))
    ///     }
    ///     fn fallback(&self, _: &TaskContext) -> Result<(), TaskError> {
    ///         Ok(()) // cancel the order instead
    ///     }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let outbox = outbox_for::<Charge>();
    /// // The attempt failed, the fallback succeeded: the task is complete.
    /// assert!(outbox.enqueue_detached(&Charge)?.sync_outcomes()[0].is_success());
    /// # Ok(()) }
    /// ```
    pub fn fallback(mut self, name: impl Into<String>) -> Self {
        self.fallback = Some(name.into());
        self
    }

    /// The fallback runs after a failed attempt when the number of failed attempts exceeds
    /// this (the seed's `fail-count-threshold`): 0 means after the first failure. Defaults to 0.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{SyncOutcome, Task, TaskContext, TaskError, TaskOptions, TaskStatus, ThreadWay};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge;
    /// impl Task for Charge {
    ///     const SIGNATURE: &'static str = "billing.charge";
    ///     fn options() -> TaskOptions {
    ///         let opts = TaskOptions::new().fallback("cancel_order").fallback_threshold(2);
    ///         opts.thread_way(ThreadWay::Sync)
    ///     }
    ///     fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
    ///         Err(TaskError::new("card declined"))
    ///     }
    /// #   fn fallback(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let outbox = outbox_for::<Charge>();
    /// // One failure is not past the threshold: no fallback yet, a retry is scheduled.
    /// let outcome = outbox.enqueue_detached(&Charge)?.sync_outcomes()[0].clone();
    /// assert!(matches!(outcome, SyncOutcome::Failed { status: TaskStatus::Failed, .. }));
    /// # Ok(()) }
    /// ```
    pub fn fallback_threshold(mut self, n: u32) -> Self {
        self.fallback_threshold = n;
        self
    }

    /// The alert expression (the seed's `alertExpression`), or `None` for no alerts. Checked
    /// when the type is registered or the task enqueued. Defaults to
    /// `executeTimes > 1 && executeTimes < 5`.
    ///
    /// ```
    /// use tend::{ErrorKind, Registry, Task, TaskContext, TaskError, TaskOptions};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge;
    /// impl Task for Charge {
    ///     const SIGNATURE: &'static str = "billing.charge";
    ///     fn options() -> TaskOptions {
    ///         // Alert once the fallback failed too, or from the 3rd attempt on (a typo).
    ///         TaskOptions::new().alert_expression(Some("fallbackFailed || executTimes >= 3"))
    ///     }
    /// #   fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
    /// }
    /// let err = Registry::new().register::<Charge>().unwrap_err(); // caught at startup
    /// assert!(matches!(err.kind(), ErrorKind::InvalidExpression { error, .. } if error.position == 18));
    /// ```
    pub fn alert_expression(mut self, e: Option<&str>) -> Self {
        self.alert_expression = e.map(|e| Cow::Owned(e.to_string()));
        self
    }

    /// The name of the [`Alerter`](crate::Alerter) to notify (the seed's
    /// `alertActionBeanName`). Defaults to none: a firing alert is a warn log line.
    ///
    /// ```
    /// use tend::{Alert, Registry, Task, TaskContext, TaskError, TaskOptions};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge;
    /// impl Task for Charge {
    ///     const SIGNATURE: &'static str = "billing.charge";
    ///     fn options() -> TaskOptions {
    ///         TaskOptions::new().alerter("pager")
    ///     }
    /// #   fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
    /// }
    /// let mut registry = Registry::new();
    /// registry.alerter("pager", |a: &Alert| eprintln!("task {} failed: {}", a.id, a.error_msg))?;
    /// registry.register::<Charge>()?; // refused unless "pager" is registered first
    /// # Ok::<(), tend::Error>(())
    /// ```
    pub fn alerter(mut self, name: impl Into<String>) -> Self {
        self.alerter = Some(name.into());
        self
    }

    /// The custom task id (the seed's `id`), stored in `task_id`. Defaults to the signature.
    /// Not unique; see [`NewTask::idempotency_key`](crate::NewTask::idempotency_key) for that.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{Task, TaskContext, TaskError, TaskOptions, ThreadWay};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge;
    /// impl Task for Charge {
    ///     const SIGNATURE: &'static str = "billing.charge";
    ///     fn options() -> TaskOptions {
    ///         TaskOptions::new().task_id("payments").thread_way(ThreadWay::Sync)
    ///     }
    ///     fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
    ///         assert_eq!(ctx.task_id(), "payments"); // the signature without `task_id`
    ///         Ok(())
    ///     }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let outbox = outbox_for::<Charge>();
    /// assert!(outbox.enqueue_detached(&Charge)?.sync_outcomes()[0].is_success());
    /// # Ok(()) }
    /// ```
    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.task_id = Some(id.into());
        self
    }

    /// How long after its enqueue a task may [snooze](TaskError::snooze) without using
    /// attempts; after that a snooze counts as an attempt. Defaults to 24 hours; at most
    /// 10 years.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tend::TaskOptions;
    /// let opts = TaskOptions::new().snooze_limit(Duration::from_secs(3600));
    /// assert_eq!(opts.get_snooze_limit(), Duration::from_secs(3600));
    /// assert_eq!(TaskOptions::new().get_snooze_limit(), Duration::from_secs(24 * 3600));
    /// ```
    pub fn snooze_limit(mut self, limit: Duration) -> Self {
        self.snooze_limit = limit;
        self
    }

    /// The named queue the task belongs to (1 to 64 bytes of ASCII letters, digits and `._:-`;
    /// checked at registration and enqueue). Defaults to `default`. A pool works `default` and
    /// the queues given to [`WorkerPoolBuilder::queue`](crate::WorkerPoolBuilder::queue): a
    /// task in a queue no running pool works waits (visible in `tend stats`).
    ///
    /// ```
    /// use tend::TaskOptions;
    /// assert_eq!(TaskOptions::new().get_queue(), "default");
    /// assert_eq!(TaskOptions::new().queue("mail").get_queue(), "mail");
    /// ```
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.queue = Cow::Owned(name.into());
        self
    }

    /// The task's queue ([`TaskOptions::queue`]).
    pub fn get_queue(&self) -> &str {
        &self.queue
    }

    /// The task's priority, from [`MIN_PRIORITY`](crate::MIN_PRIORITY) (-3, lowest) to
    /// [`MAX_PRIORITY`](crate::MAX_PRIORITY) (3, highest); default 0. Within a queue, a claim
    /// takes due tasks of the highest priority first, then the earliest due. Checked at
    /// registration and enqueue.
    ///
    /// ```
    /// use tend::TaskOptions;
    /// assert_eq!(TaskOptions::new().get_priority(), 0);
    /// assert_eq!(TaskOptions::new().priority(2).get_priority(), 2);
    /// ```
    pub fn priority(mut self, p: i32) -> Self {
        self.priority = p;
        self
    }

    /// The task's priority ([`TaskOptions::priority`]).
    pub fn get_priority(&self) -> i32 {
        self.priority
    }

    /// The snooze limit ([`TaskOptions::snooze_limit`]).
    ///
    /// ```
    /// assert_eq!(tend::TaskOptions::new().get_snooze_limit().as_secs(), 86_400);
    /// ```
    pub fn get_snooze_limit(&self) -> Duration {
        self.snooze_limit
    }

    /// The fallback's name, if a fallback is on ([`TaskOptions::fallback`]).
    ///
    /// ```
    /// use tend::TaskOptions;
    /// assert_eq!(TaskOptions::new().get_fallback(), None);
    /// assert_eq!(TaskOptions::new().fallback("undo").get_fallback(), Some("undo"));
    /// ```
    pub fn get_fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The configured maximum number of attempts.
    ///
    /// ```
    /// use tend::TaskOptions;
    /// assert_eq!(TaskOptions::new().get_max_attempts(), 25);
    /// assert_eq!(TaskOptions::new().max_attempts(3).get_max_attempts(), 3);
    /// ```
    pub fn get_max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The configured retry policy.
    ///
    /// ```
    /// use tend::{RetryPolicy, TaskOptions};
    /// assert_eq!(TaskOptions::new().get_retry_policy(), RetryPolicy::Linear);
    /// let fixed = TaskOptions::new().retry_policy(RetryPolicy::Fixed);
    /// assert_eq!(fixed.get_retry_policy(), RetryPolicy::Fixed);
    /// ```
    pub fn get_retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Checks every option; called at registration and at enqueue.
    pub(crate) fn validate(&self) -> Result<(), crate::error::Error> {
        use crate::error::Error;
        let secs = |name: &'static str, d: Duration, min: u64| {
            if d.subsec_nanos() != 0 {
                return Err(Error::invalid_setting(name, "must be whole seconds"));
            }
            if d.as_secs() < min || d.as_secs() > i32::MAX as u64 {
                return Err(Error::invalid_setting(
                    name,
                    format!(
                        "must be between {min} s and {} s, got {} s",
                        i32::MAX,
                        d.as_secs()
                    ),
                ));
            }
            Ok(())
        };
        crate::queue::validate_queue(&self.queue)?;
        crate::queue::validate_priority(self.priority)?;
        secs("execute_interval", self.execute_interval, 1)?;
        if self.snooze_limit > MAX_SNOOZE_LIMIT {
            return Err(Error::invalid_setting(
                "snooze_limit",
                format!(
                    "must be at most 10 years, got {} s",
                    self.snooze_limit.as_secs()
                ),
            ));
        }
        secs("delay", self.delay, 0)?;
        if self.max_attempts == 0 || self.max_attempts > i32::MAX as u32 {
            return Err(Error::invalid_setting(
                "max_attempts",
                "must be at least 1 (and fit an i32)",
            ));
        }
        if let Some(e) = &self.alert_expression {
            check_expression(e)?;
        }
        for (name, v, max) in [
            ("fallback", &self.fallback, 255),
            ("alerter", &self.alerter, 255),
            ("task_id", &self.task_id, 500),
        ] {
            if let Some(v) = v {
                if v.is_empty() || v.len() > max {
                    return Err(Error::invalid_setting(
                        name,
                        format!("must be 1 to {max} bytes, got {}", v.len()),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Parses `e` unless this thread has already seen it parse: every enqueue validates its
/// task's options, and parsing the same alert expression again for each row was a sixth of
/// the client's work per enqueued task (perf, SQLite enqueue bench). Parsing is pure, so a
/// string that parsed once always will.
fn check_expression(e: &str) -> Result<(), crate::error::Error> {
    use std::cell::RefCell;
    /// The expressions this thread has seen parse, newest last: a handful per application.
    const KEEP: usize = 16;
    thread_local! {
        static PARSED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }
    if e == DEFAULT_ALERT_EXPRESSION || PARSED.with(|p| p.borrow().iter().any(|s| s == e)) {
        return Ok(());
    }
    crate::expr::Expr::parse(e).map_err(|error| {
        crate::error::Error::new(crate::error::ErrorKind::InvalidExpression {
            expression: e.to_string(),
            error,
        })
    })?;
    PARSED.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() == KEEP {
            p.remove(0);
        }
        p.push(e.to_string());
    });
    Ok(())
}

/// Application state by type, shared by every handler ([`TaskContext::state`]).
#[derive(Clone, Default)]
pub(crate) struct States(pub(crate) Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>);

impl States {
    pub(crate) fn get<S: Send + Sync + 'static>(&self) -> Option<&S> {
        self.0.get(&TypeId::of::<S>())?.downcast_ref::<S>()
    }
}

impl fmt::Debug for States {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "States({} registered)", self.0.len())
    }
}

/// [`TaskOptions::snooze_limit`]'s default: a day.
const DEFAULT_SNOOZE_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// The longest snooze limit: ten years.
const MAX_SNOOZE_LIMIT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What a running task knows about itself.
///
/// ```
/// # include!("doctest_setup.rs");
/// use tend::{Task, TaskContext, TaskError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge { order_id: i64 }
/// impl Task for Charge {
///     const SIGNATURE: &'static str = "billing.charge";
///     fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
///         // A key the payment provider deduplicates on, the same in every attempt:
///         let key = format!("{}-{}", ctx.signature(), ctx.id());
///         let last_try = ctx.attempt() == ctx.max_attempts();
///         assert_eq!((key.as_str(), last_try), ("billing.charge-1", false));
///         Ok(())
///     }
/// }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let outbox = outbox_for::<Charge>(); // the task runs once, in this thread:
/// # let task = tend::NewTask::new(&Charge { order_id: 7 })?.thread_way(tend::ThreadWay::Sync);
/// # assert!(outbox.enqueue_new_detached(task)?.sync_outcomes()[0].is_success());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub(crate) id: i64,
    pub(crate) task_id: String,
    pub(crate) signature: String,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) shard_key: i64,
    /// The lease this attempt holds (the fencing token of [`crate::complete_in`]).
    pub(crate) token: i64,
    /// Whether a success keeps the row (as `Succeeded`) instead of deleting it.
    pub(crate) keep_completed: bool,
    /// The application state registered with [`Registry::state`](crate::Registry::state).
    pub(crate) states: States,
    /// Set by [`crate::complete_in`]: the handler's own transaction completes the task.
    pub(crate) completed_in: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// When the attempt started: a row kept by [`crate::complete_in`] records how long the
    /// attempt had run (every kept success has a duration; the kept rows' index is partial
    /// on it).
    pub(crate) started: std::time::Instant,
}

impl TaskContext {
    /// The row's primary key.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{Task, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge;
    /// impl Task for Charge {
    ///     const SIGNATURE: &'static str = "billing.charge";
    ///     fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
    ///         assert_eq!(ctx.id(), 1); // the first row of a fresh table
    ///         Ok(())
    ///     }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let outbox = outbox_for::<Charge>(); // the task runs once, in this thread:
    /// # let task = tend::NewTask::new(&Charge)?.thread_way(tend::ThreadWay::Sync);
    /// # assert!(outbox.enqueue_new_detached(task)?.sync_outcomes()[0].is_success());
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> i64 {
        self.id
    }
    /// The task id (custom id or signature).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{Task, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge;
    /// impl Task for Charge {
    ///     const SIGNATURE: &'static str = "billing.charge";
    ///     fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
    ///         assert_eq!(ctx.task_id(), "billing.charge"); // no custom id: the signature
    ///         Ok(())
    ///     }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let outbox = outbox_for::<Charge>(); // the task runs once, in this thread:
    /// # let task = tend::NewTask::new(&Charge)?.thread_way(tend::ThreadWay::Sync);
    /// # assert!(outbox.enqueue_new_detached(task)?.sync_outcomes()[0].is_success());
    /// # Ok(()) }
    /// ```
    pub fn task_id(&self) -> &str {
        &self.task_id
    }
    /// The signature.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{Task, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge;
    /// impl Task for Charge {
    ///     const SIGNATURE: &'static str = "billing.charge";
    ///     fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
    ///         assert_eq!(ctx.signature(), Charge::SIGNATURE);
    ///         Ok(())
    ///     }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let outbox = outbox_for::<Charge>(); // the task runs once, in this thread:
    /// # let task = tend::NewTask::new(&Charge)?.thread_way(tend::ThreadWay::Sync);
    /// # assert!(outbox.enqueue_new_detached(task)?.sync_outcomes()[0].is_success());
    /// # Ok(()) }
    /// ```
    pub fn signature(&self) -> &str {
        &self.signature
    }
    /// This attempt's number, 1 for the first run (`execute_times` after the claim).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{Task, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge;
    /// impl Task for Charge {
    ///     const SIGNATURE: &'static str = "billing.charge";
    ///     fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
    ///         assert_eq!(ctx.attempt(), 1); // its first run
    ///         Ok(())
    ///     }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let outbox = outbox_for::<Charge>(); // the task runs once, in this thread:
    /// # let task = tend::NewTask::new(&Charge)?.thread_way(tend::ThreadWay::Sync);
    /// # assert!(outbox.enqueue_new_detached(task)?.sync_outcomes()[0].is_success());
    /// # Ok(()) }
    /// ```
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// Attempts allowed before the task is dead.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{Task, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge;
    /// impl Task for Charge {
    ///     const SIGNATURE: &'static str = "billing.charge";
    ///     fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
    ///         assert_eq!(ctx.max_attempts(), 3); // enqueued with `.max_attempts(3)`
    ///         Ok(())
    ///     }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let outbox = outbox_for::<Charge>(); // the task runs once, in this thread:
    /// # let task = tend::NewTask::new(&Charge)?.max_attempts(3).thread_way(tend::ThreadWay::Sync);
    /// # assert!(outbox.enqueue_new_detached(task)?.sync_outcomes()[0].is_success());
    /// # Ok(()) }
    /// ```
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
    /// The task's shard key.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{Task, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge;
    /// impl Task for Charge {
    ///     const SIGNATURE: &'static str = "billing.charge";
    ///     fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
    ///         assert_eq!(ctx.shard_key(), 42); // enqueued with `.shard_key(42)`
    ///         Ok(())
    ///     }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let outbox = outbox_for::<Charge>(); // the task runs once, in this thread:
    /// # let task = tend::NewTask::new(&Charge)?.shard_key(42).thread_way(tend::ThreadWay::Sync);
    /// # assert!(outbox.enqueue_new_detached(task)?.sync_outcomes()[0].is_success());
    /// # Ok(()) }
    /// ```
    pub fn shard_key(&self) -> i64 {
        self.shard_key
    }

    /// The application state of type `S` registered with
    /// [`Registry::state`](crate::Registry::state): a database pool, an HTTP client, the
    /// configuration. Registered once, shared by every handler, no globals.
    ///
    /// # Errors
    /// A [`TaskError`] (retried on the task's schedule) naming the type when no state of type
    /// `S` was registered: a deployment mistake, fixed by registering it.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use tend::{Registry, Task, TaskContext, TaskError};
    /// struct Mailer { sent: AtomicU64 } // e.g. an HTTP client
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Welcome { user_id: i64 }
    /// impl Task for Welcome {
    ///     const SIGNATURE: &'static str = "users.welcome";
    ///     fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
    ///         let mailer = ctx.state::<Mailer>()?;
    ///         mailer.sent.fetch_add(1, Ordering::SeqCst);
    ///         Ok(())
    ///     }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut registry = Registry::new();
    /// registry.state(Mailer { sent: AtomicU64::new(0) })?.register::<Welcome>()?;
    /// # let (pool, _db) = temp_pool("ctx-state");
    /// # let outbox = tend::WorkerPool::builder(pool, registry.clone()).build()?.outbox();
    /// # let task = tend::NewTask::new(&Welcome { user_id: 7 })?.thread_way(tend::ThreadWay::Sync);
    /// # assert!(outbox.enqueue_new_detached(task)?.sync_outcomes()[0].is_success());
    /// assert_eq!(registry.get_state::<Mailer>().unwrap().sent.load(Ordering::SeqCst), 1);
    /// # Ok(()) }
    /// ```
    pub fn state<S: Send + Sync + 'static>(&self) -> Result<&S, TaskError> {
        self.states.get::<S>().ok_or_else(|| {
            TaskError::new(format!(
                "no application state of type `{}` is registered in this process: add it with \
                 `Registry::state` before starting the pool",
                std::any::type_name::<S>()
            ))
        })
    }
}

/// A failed attempt, and what to do about it.
///
/// Any `std::error::Error` converts into one (so `?` works in a handler) and means "retry on
/// the task's schedule".
///
/// ```
/// use std::time::Duration;
/// use tend::TaskError;
/// let retry = TaskError::new("gateway returned 503");
/// let later = TaskError::retry_after("rate limited", Duration::from_secs(120));
/// let fatal = TaskError::give_up("order no longer exists");
/// assert!(!retry.is_give_up() && fatal.is_give_up());
/// assert_eq!(later.message(), "rate limited");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    message: String,
    action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Retry,
    RetryAfter(Duration),
    Snooze(Duration),
    GiveUp,
}

impl TaskError {
    /// Retry on the task's schedule.
    ///
    /// ```
    /// use tend::TaskError;
    /// let err = TaskError::new("gateway returned 503");
    /// assert!(!err.is_give_up());
    /// // `?` turns any std error into one, which means the same: retry.
    /// fn parse(amount: &str) -> Result<i64, TaskError> {
    ///     Ok(amount.parse::<i64>()?)
    /// }
    /// assert_eq!(parse("x").unwrap_err().message(), "invalid digit found in string");
    /// ```
    pub fn new(message: impl Into<String>) -> TaskError {
        TaskError {
            message: message.into(),
            action: Action::Retry,
        }
    }
    /// Retry after `wait` instead of the schedule's wait (still counts as an attempt).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tend::TaskError;
    /// // e.g. on HTTP 429, honour the server's Retry-After header:
    /// let retry_after_secs = 120;
    /// let err = TaskError::retry_after("rate limited", Duration::from_secs(retry_after_secs));
    /// assert_eq!(err.message(), "rate limited");
    /// assert!(!err.is_give_up());
    /// ```
    pub fn retry_after(message: impl Into<String>, wait: Duration) -> TaskError {
        TaskError {
            message: message.into(),
            action: Action::RetryAfter(wait),
        }
    }
    /// Not a failure: run again after `wait` without using an attempt (e.g. a partner's rate
    /// limit, or a resource that is not ready yet). No fallback runs and no alert fires. Bounded:
    /// once the task was enqueued longer ago than its type's
    /// [`TaskOptions::snooze_limit`] (24 h by default), a snooze counts as an attempt, so that
    /// a task cannot postpone itself forever unseen.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tend::TaskError;
    /// let later = TaskError::snooze("partner API quota used up", Duration::from_secs(600));
    /// assert!(later.is_snooze() && !later.is_give_up());
    /// ```
    pub fn snooze(message: impl Into<String>, wait: Duration) -> TaskError {
        TaskError {
            message: message.into(),
            action: Action::Snooze(wait),
        }
    }

    /// Whether this is a [`snooze`](TaskError::snooze).
    ///
    /// ```
    /// assert!(!tend::TaskError::new("boom").is_snooze());
    /// ```
    pub fn is_snooze(&self) -> bool {
        matches!(self.action, Action::Snooze(_))
    }

    /// Do not retry: the task becomes dead now (kept, visible, retryable by an operator).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{SyncOutcome, Task, TaskContext, TaskError, TaskStatus};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Refund { order_id: i64 }
    /// impl Task for Refund {
    ///     const SIGNATURE: &'static str = "billing.refund";
    ///     fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
    ///         Err(TaskError::give_up(format!("order {} no longer exists", self.order_id)))
    ///     }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let outbox = outbox_for::<Refund>();
    /// # let task = tend::NewTask::new(&Refund { order_id: 7 })?.thread_way(tend::ThreadWay::Sync);
    /// let outcome = outbox.enqueue_new_detached(task)?.sync_outcomes()[0].clone(); // ran once, right now
    /// assert!(matches!(outcome, SyncOutcome::Failed { status: TaskStatus::Dead, .. }));
    /// # Ok(()) }
    /// ```
    pub fn give_up(message: impl Into<String>) -> TaskError {
        TaskError {
            message: message.into(),
            action: Action::GiveUp,
        }
    }
    /// The message stored in `error_msg`.
    ///
    /// ```
    /// let err = tend::TaskError::new("gateway returned 503");
    /// assert_eq!(err.message(), "gateway returned 503");
    /// assert_eq!(err.to_string(), err.message());
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Whether the handler asked not to retry.
    ///
    /// ```
    /// use tend::TaskError;
    /// assert!(TaskError::give_up("order no longer exists").is_give_up());
    /// assert!(!TaskError::new("gateway returned 503").is_give_up());
    /// ```
    pub fn is_give_up(&self) -> bool {
        self.action == Action::GiveUp
    }
    pub(crate) fn action(&self) -> Action {
        self.action
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for TaskError {
    fn from(e: E) -> TaskError {
        TaskError::new(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-thread cache of parsed expressions keeps the answer of a parse: a bad one is
    /// refused every time, a good one is accepted every time, whatever came first.
    #[test]
    fn expressions_are_checked_every_time_they_are_new_to_the_thread() {
        let bad = TaskOptions::new().alert_expression(Some("executeTimes >"));
        let good = TaskOptions::new().alert_expression(Some("executeTimes % 7 == 0"));
        for _ in 0..3 {
            assert!(matches!(
                bad.validate().unwrap_err().kind(),
                crate::error::ErrorKind::InvalidExpression { .. }
            ));
            good.validate().unwrap();
        }
        // More distinct expressions than the cache keeps: each still parses (or not) alone.
        for i in 0..40 {
            let ok = TaskOptions::new().alert_expression(Some(&format!("executeTimes > {i}")));
            ok.validate().unwrap();
            let ko = TaskOptions::new().alert_expression(Some(&format!("executeTimes > {i} &&")));
            assert!(ko.validate().is_err());
        }
    }
}
