//! The alert thread: alerts queued by the executor are delivered to the registry's
//! [`Alerter`](crate::alert::Alerter)s one at a time, off the workers' threads.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::alert::Alert;
use crate::registry::Registry;
use crate::supervise::{fault, supervise};
use crate::util::panic_message;

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
