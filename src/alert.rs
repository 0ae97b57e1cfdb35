//! Alerts: when a task keeps failing, its alert expression decides whether to tell someone, and
//! an [`Alerter`] registered by name does the telling, on its own thread.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::pool::supervise::{fault, supervise};
use crate::registry::Registry;
use crate::util::panic_message;

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
/// [`Registry::alerter`]; tasks name it with
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

/// How many alerts may wait for the alert thread.
const ALERT_QUEUE: usize = 1024;

/// The sending side of the alert queue, shared by the pool's workers and its outbox.
#[derive(Clone)]
pub(crate) struct AlertSink {
    tx: Sender<Alert>,
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for AlertSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertSink")
            .field("queued", &self.tx.len())
            .field("dropped", &self.dropped())
            .finish()
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

impl AlertSink {
    pub(crate) fn new() -> (AlertSink, Receiver<Alert>) {
        let (tx, rx) = bounded(ALERT_QUEUE);
        (
            AlertSink {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Queues an alert without ever blocking.
    pub(crate) fn send(&self, alert: Alert) {
        match self.tx.try_send(alert) {
            Ok(()) => {}
            Err(TrySendError::Full(a)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                log::warn!(
                    "tend: alert queue full; dropped the alert for task {} ({}); {n} dropped so far",
                    a.id,
                    a.signature
                );
            }
            Err(TrySendError::Disconnected(a)) => log::warn!(
                "tend: the pool's alert thread has stopped; alert for task {} ({}) not delivered",
                a.id,
                a.signature
            ),
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Starts the alert thread; it ends when every sender is gone.
///
/// It survives a panic (see `pool::supervise`): the alert being delivered is lost (logged
/// first), the next ones are delivered.
pub(crate) fn spawn_alert_thread(registry: Registry, rx: Receiver<Alert>) -> JoinHandle<()> {
    thread::Builder::new()
        .name("tend-alerts".into())
        .spawn(move || {
            supervise(
                None,
                || {
                    for alert in rx.iter() {
                        fault::hit("alerts");
                        deliver(&registry, &alert);
                    }
                },
                || {},
            )
        })
        .expect("spawning the tend alert thread")
}

pub(crate) fn deliver(registry: &Registry, alert: &Alert) {
    log::warn!(
        "tend: ALERT task {} ({}) attempt {}/{} is {}: `{}` fired; error: {}",
        alert.id,
        alert.signature,
        alert.attempt(),
        alert.max_attempts(),
        alert.status,
        alert.expression,
        alert.error_msg
    );
    let Some(name) = &alert.alerter else { return };
    // Resolved here, not at enqueue: a per-enqueue override may name any alerter, while
    // registration already rejected unknown names on task types.
    let Some(alerter) = registry.get_alerter(name) else {
        log::warn!(
            "tend: task {} names alerter `{name}`, which this process has not registered",
            alert.id
        );
        return;
    };
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| alerter.alert(alert))) {
        log::error!(
            "tend: alerter `{name}` panicked on task {}: {}",
            alert.id,
            panic_message(&*p)
        );
    }
}
