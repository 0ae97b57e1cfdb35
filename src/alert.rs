//! Alerts: when a task keeps failing, its alert expression decides whether to tell someone, and
//! an [`Alerter`] registered by name does the telling, on its own thread.

/// A task's state when its alert expression fired.
///
/// An [`Alerter`] receives it; a closure is one:
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("alert");
/// use std::{sync::mpsc, time::Duration};
/// use tend::{Alert, NewTask, Registry, TaskStatus, WorkerPool};
/// let (tx, rx) = mpsc::channel();
/// let mut registry = Registry::new();
/// registry.alerter("pager", move |a: &Alert| tx.send(a.clone()).unwrap())?;
/// registry.register::<AlwaysFails>()?; // every attempt fails with "boom"
/// let handle = WorkerPool::builder(pool.clone(), registry).build()?.start()?;
/// let task = NewTask::new(&AlwaysFails)?.alert_expression(Some("executeTimes >= 1"));
/// tend::enqueue_new(&mut pool.get()?, task.alerter("pager"))?;
/// handle.wake();
/// let alert = rx.recv_timeout(Duration::from_secs(10))?;
/// assert_eq!((alert.attempt(), alert.status), (1, TaskStatus::Failed));
/// assert_eq!((alert.error_msg.as_str(), alert.alerter.as_deref()), ("boom", Some("pager")));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Alert {
    /// The row's primary key.
    pub id: i64,
    /// The task id (custom id or signature).
    pub task_id: String,
    /// The signature.
    pub signature: String,
    /// The shard key.
    pub shard_key: i64,
    /// Attempts so far, this one included (`execute_times`).
    #[deprecated(
        since = "0.2.0",
        note = "use `Alert::attempt()`, a `u32` like `TaskContext::attempt()`"
    )]
    pub execute_times: i32,
    /// Attempts allowed.
    #[deprecated(
        since = "0.2.0",
        note = "use `Alert::max_attempts()`, a `u32` like `TaskContext::max_attempts()`"
    )]
    pub max_attempts: i32,
    /// The status the task is left in (`Failed` or `Dead`).
    pub status: crate::status::TaskStatus,
    /// The attempt's error.
    pub error_msg: String,
    /// The fallback's error, when the fallback ran and failed.
    pub fallback_error_msg: Option<String>,
    /// The expression that fired.
    pub expression: String,
    /// The alerter the task names (`alert_action_bean_name`), if any.
    pub alerter: Option<String>,
}

/// Receives alerts (the seed's `ConsistencyFrameworkAlerter`). Register it by name with
/// [`Registry::alerter`](crate::Registry::alerter); tasks name it with
/// [`TaskOptions::alerter`](crate::TaskOptions::alerter).
///
/// Alerts are delivered on the pool's alert thread through a bounded queue: a slow alerter
/// delays only other alerts, a panicking one is logged and the thread goes on, and when the
/// queue is full new alerts are dropped with a warning (counted by
/// [`PoolHandle::dropped_alerts`](crate::PoolHandle::dropped_alerts)), never blocking a worker.
///
/// ```
/// use tend::{Alert, Alerter};
/// struct Pager;
/// impl Alerter for Pager {
///     fn alert(&self, alert: &Alert) {
///         eprintln!("task {} failed {} times: {}", alert.id, alert.attempt(), alert.error_msg);
///     }
/// }
/// let mut registry = tend::Registry::new();
/// registry.alerter("pager", Pager).unwrap();
/// ```
pub trait Alerter: Send + Sync + 'static {
    /// Tells someone. Runs on the alert thread; a panic is caught and logged.
    fn alert(&self, alert: &Alert);
}

impl<F: Fn(&Alert) + Send + Sync + 'static> Alerter for F {
    fn alert(&self, alert: &Alert) {
        self(alert)
    }
}

#[allow(deprecated)] // the i32 fields stay readable until they are removed
impl Alert {
    /// Attempts so far, this one included, as [`TaskContext::attempt`](crate::TaskContext::attempt)
    /// counts them (a hand-written negative `execute_times` reads as 0).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let alert = first_alert()?;
    /// assert_eq!((alert.attempt(), alert.max_attempts()), (1, 25));
    /// # Ok(()) }
    /// ```
    pub fn attempt(&self) -> u32 {
        u32::try_from(self.execute_times).unwrap_or(0)
    }

    /// Attempts allowed, as [`TaskContext::max_attempts`](crate::TaskContext::max_attempts)
    /// counts them.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let alert = first_alert()?;
    /// assert_eq!(alert.max_attempts(), 25); // the default
    /// # Ok(()) }
    /// ```
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.max_attempts).unwrap_or(0)
    }
}
