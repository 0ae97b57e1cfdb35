//! Events: what happens to tasks, for metrics and tracing. Implement [`Events`] (or pass a
//! closure) to feed Prometheus, OpenTelemetry or a log without changing tend.

use std::time::Duration;

/// Which task an event is about.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("task-info");
/// use std::sync::mpsc;
/// use tend::{Event, NewTask, Registry, WorkerPool};
/// let (tx, rx) = mpsc::channel();
/// let events = move |e: &Event<'_>| {
///     if let Event::Enqueued(info) = e {
///         tx.send((info.id, info.signature.to_string(), info.shard_key, info.attempt)).unwrap();
///     }
/// };
/// let outbox = WorkerPool::builder(pool, Registry::new()).events(events).build()?.outbox();
/// let task = NewTask::new(&Ship { order_id: 7 })?.shard_key(42);
/// let id = outbox.enqueue_new_detached(task)?.into_value().id().unwrap();
/// assert_eq!(rx.try_recv()?, (id, "orders.ship".to_string(), 42, 0));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive] // build one with `TaskInfo::new`; fields are added as tend learns more
pub struct TaskInfo<'a> {
    /// The row id.
    pub id: i64,
    /// The signature.
    pub signature: &'a str,
    /// The shard key.
    pub shard_key: i64,
    /// Attempts so far, the current one included (`execute_times`).
    #[deprecated(
        since = "0.2.0",
        note = "use `TaskInfo::attempt()`, a `u32` like `TaskContext::attempt()`"
    )]
    pub attempt: i32,
    /// The W3C `traceparent` stored with the task (see [`TraceParent`](crate::TraceParent)),
    /// when it has a valid one.
    pub trace_parent: Option<&'a str>,
}

#[allow(deprecated)] // the field stays readable until it is removed
impl<'a> TaskInfo<'a> {
    /// Attempts so far, the current one included, as [`TaskContext::attempt`](crate::TaskContext::attempt)
    /// counts them (a hand-written negative `execute_times` reads as 0).
    ///
    /// ```
    /// let info = tend::TaskInfo::new(7, "orders.ship", 0, 3);
    /// assert_eq!(info.attempt(), 3);
    /// ```
    pub fn attempt(&self) -> u32 {
        u32::try_from(self.attempt).unwrap_or(0)
    }

    /// The view of a row, its `execute_times` as stored.
    pub(crate) fn of(id: i64, signature: &str, shard_key: i64, execute_times: i32) -> TaskInfo<'_> {
        TaskInfo {
            id,
            signature,
            shard_key,
            attempt: execute_times,
            trace_parent: None,
        }
    }

    /// A task's event view (for tests of [`Events`] receivers).
    ///
    /// ```
    /// let info = tend::TaskInfo::new(7, "orders.ship", 42, 1);
    /// assert_eq!((info.id, info.signature, info.shard_key), (7, "orders.ship", 42));
    /// ```
    pub fn new(id: i64, signature: &str, shard_key: i64, attempt: u32) -> TaskInfo<'_> {
        TaskInfo {
            id,
            signature,
            shard_key,
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            trace_parent: None,
        }
    }

    /// The same view with a trace context (for tests of [`Events`] receivers).
    ///
    /// ```
    /// let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// let info = tend::TaskInfo::new(7, "orders.ship", 42, 1).with_trace_parent(Some(tp));
    /// assert_eq!(info.trace_parent, Some(tp));
    /// ```
    pub fn with_trace_parent(self, trace_parent: Option<&'a str>) -> TaskInfo<'a> {
        TaskInfo {
            trace_parent,
            ..self
        }
    }
}

/// One thing that happened to a task.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("event");
/// use std::sync::mpsc;
/// use tend::{Event, NewTask, Registry, ThreadWay, WorkerPool};
/// let (tx, rx) = mpsc::channel();
/// let events = move |e: &Event<'_>| match e {
///     Event::Failed { task, error, .. } => tx.send(format!("{}: {error}", task.signature)).unwrap(),
///     _ => {} // the enum is non-exhaustive: new kinds of events may come
/// };
/// let mut registry = Registry::new();
/// registry.register::<AlwaysFails>()?; // every attempt fails with "boom"
/// let outbox = WorkerPool::builder(pool, registry).events(events).build()?.outbox();
/// outbox.enqueue_new_detached(NewTask::new(&AlwaysFails)?.thread_way(ThreadWay::Sync))?;
/// assert_eq!(rx.try_recv()?, "demo.always_fails: boom");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Written through an [`Outbox`](crate::Outbox) and committed (plain
    /// [`enqueue`](crate::enqueue) calls have no pool to report to).
    Enqueued(TaskInfo<'a>),
    /// Leased by a worker pool.
    Claimed(TaskInfo<'a>),
    /// Claimed again because the lease of its previous attempt expired (that worker crashed,
    /// was killed, or hung).
    LeaseExpired(TaskInfo<'a>),
    /// A worker started running it.
    Started(TaskInfo<'a>),
    /// The attempt succeeded. Its completion can still be refused if another worker took the
    /// lease over meanwhile: then [`Event::OutcomesRefused`] follows and the row's state is
    /// the other worker's.
    Succeeded {
        /// The task.
        task: TaskInfo<'a>,
        /// How long the attempt ran.
        duration: Duration,
    },
    /// The attempt failed (an error or a panic).
    Failed {
        /// The task.
        task: TaskInfo<'a>,
        /// The handler's message.
        error: &'a str,
        /// How long the attempt ran.
        duration: Duration,
    },
    /// After a failure, the next attempt is scheduled.
    Retried {
        /// The task.
        task: TaskInfo<'a>,
        /// When the next attempt is due (epoch ms).
        next_attempt_at_ms: i64,
    },
    /// The fallback ran and succeeded: the task is complete.
    FallbackSucceeded(TaskInfo<'a>),
    /// The fallback ran and failed.
    FallbackFailed {
        /// The task.
        task: TaskInfo<'a>,
        /// The fallback's message.
        error: &'a str,
    },
    /// The alert expression held and an alert was queued.
    AlertFired(TaskInfo<'a>),
    /// Out of attempts, or given up: kept as dead.
    Dead {
        /// The task.
        task: TaskInfo<'a>,
        /// The stored message.
        error: &'a str,
    },
    /// This deployment cannot run it (unknown signature, undecodable payload): kept as held.
    Held {
        /// The task.
        task: TaskInfo<'a>,
        /// The stored message.
        error: &'a str,
    },
    /// Outcomes that were not written because another worker had taken the lease over.
    OutcomesRefused {
        /// How many.
        count: usize,
    },
}

/// Receives [`Event`]s. Called on tend's threads: keep it quick (increment a counter, record
/// a histogram) and never block. A panic in it is not caught.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use tend::Event;
/// let succeeded = Arc::new(AtomicU64::new(0));
/// let counter = succeeded.clone();
/// let events = move |e: &Event<'_>| {
///     if let Event::Succeeded { .. } = e {
///         counter.fetch_add(1, Ordering::Relaxed);
///     }
/// };
/// # fn takes(_: impl tend::Events) {}
/// takes(events); // e.g. WorkerPool::builder(pool, registry).events(events)
/// ```
pub trait Events: Send + Sync + 'static {
    /// Called for every event. Defaults to doing nothing.
    fn event(&self, event: &Event<'_>) {
        let _ = event;
    }
}

impl<F: Fn(&Event<'_>) + Send + Sync + 'static> Events for F {
    fn event(&self, event: &Event<'_>) {
        self(event)
    }
}

/// Ignores every event (the default).
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("no-events");
/// use tend::{NoEvents, Registry, WorkerPool};
/// // The same as not calling `events` at all.
/// let workers = WorkerPool::builder(pool, Registry::new()).events(NoEvents).build();
/// assert!(workers.is_ok());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl Events for NoEvents {}

/// Logs every event through `log` (target `tend::events`): failures at warn, the rest at debug.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("log-events");
/// use tend::{LogEvents, Registry, WorkerPool};
/// // With env_logger, say: RUST_LOG=tend::events=debug
/// let mut registry = Registry::new();
/// registry.register::<Ship>()?;
/// let handle = WorkerPool::builder(pool.clone(), registry).events(LogEvents).build()?.start()?;
/// tend::enqueue(&mut pool.get()?, &Ship { order_id: 7 })?; // logged as it runs
/// handle.wake();
/// assert!(handle.shutdown().all_joined());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct LogEvents;

impl Events for LogEvents {
    fn event(&self, event: &Event<'_>) {
        match event {
            Event::Failed { .. }
            | Event::FallbackFailed { .. }
            | Event::Dead { .. }
            | Event::Held { .. }
            | Event::LeaseExpired(_)
            | Event::AlertFired(_)
            | Event::OutcomesRefused { .. } => {
                log::warn!(target: "tend::events", "{event:?}")
            }
            _ => log::debug!(target: "tend::events", "{event:?}"),
        }
    }
}
