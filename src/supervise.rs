//! Keeping the pool's threads alive, and joining them within a bound.
//!
//! Every thread tend starts runs its body under [`supervise`]: a panic (a bug, a poisoned
//! lock, an `Events` or `Alerter` callback that escaped its own guard) is logged with the
//! thread's name and message, the thread's recovery hook drops what it held (a pooled
//! connection with an open transaction is dropped: diesel reports it broken and r2d2 discards
//! it, which rolls the transaction back and releases SQLite's write lock; reserved slots are
//! freed; outcomes not yet written are forgotten so that their leases lapse and the tasks run
//! again), and after a capped backoff the body runs again. A thread never dies and never
//! spins.
//!
//! Every thread is also spawned with a `finished` signal ([`Spawned`]), so that
//! `PoolHandle::shutdown` joins only threads that have ended and leaves a thread stuck in the
//! database (a hung connection) detached, by name, instead of waiting for it forever.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{after, bounded, never, select, Receiver, RecvTimeoutError, Sender};

use crate::util::panic_message;

/// The first wait after a panic; it doubles with each panic in a row, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two runs of a body that keeps panicking.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A body that ran this long without panicking starts over at [`MIN_BACKOFF`].
const CALM_AFTER: Duration = Duration::from_secs(10);

/// Runs `body` until it returns; after a panic, logs it, runs `recover`, waits a capped
/// backoff (cut short by `stop`, so that a stopping pool does not wait) and runs `body` again.
pub(crate) fn supervise(
    stop: Option<&Receiver<()>>,
    mut body: impl FnMut(),
    mut recover: impl FnMut(),
) {
    let mut backoff = Duration::ZERO;
    loop {
        let started = Instant::now();
        let Err(p) = catch_unwind(AssertUnwindSafe(&mut body)) else {
            return;
        };
        if started.elapsed() >= CALM_AFTER {
            backoff = Duration::ZERO;
        }
        backoff = (backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        let name = thread::current()
            .name()
            .unwrap_or("tend thread")
            .to_string();
        log::error!(
            "tend: thread {name} panicked: {}; it drops what it held and carries on in {backoff:?}",
            panic_message(&*p)
        );
        if catch_unwind(AssertUnwindSafe(&mut recover)).is_err() {
            log::error!("tend: thread {name}: recovering from the panic panicked too");
        }
        let stop = stop.cloned().unwrap_or_else(never);
        select! {
            recv(stop) -> _ => {},
            recv(after(backoff)) -> _ => {},
        }
    }
}

/// A thread of the pool and the signal it sends when it ends (also when it unwinds).
pub(crate) struct Spawned {
    pub(crate) name: String,
    handle: JoinHandle<()>,
    finished: Receiver<()>,
}

/// Sends `finished` when dropped: at the end of the thread's closure, whatever happens.
struct Finished(#[allow(dead_code)] Sender<()>);

/// Spawns a named pool thread with a `finished` signal.
pub(crate) fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Spawned {
    let (tx, finished) = bounded::<()>(1);
    let handle = thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let done = Finished(tx);
            f();
            let _ = done.0.send(());
        })
        .expect("spawning a tend thread");
    Spawned {
        name,
        handle,
        finished,
    }
}

impl Spawned {
    /// Joins the thread if it ends by `deadline`; otherwise leaves it detached and returns
    /// its name.
    pub(crate) fn join_by(self, deadline: Instant) -> Result<(), String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.finished.recv_timeout(left) {
            // Ended (or unwound past `Finished`): joining returns at once.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                let _ = self.handle.join();
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => Err(self.name),
        }
    }
}

/// Test-only fault injection: a test arms a thread kind with a number of panics, and the next
/// that many passes of that kind's threads through their fault point panic. Compiled only
/// with the `testing` feature (and in tend's unit tests); without it, [`hit`] is an empty
/// inline function.
#[cfg(feature = "testing")]
pub(crate) mod fault {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// The thread kinds with a fault point, in the order of [`ARMED`].
    pub(crate) const KINDS: [&str; 8] = [
        "fetcher",
        "completer",
        "checkpoint",
        "membership",
        "worker",
        "alerts",
        "listener",
        "scheduler",
    ];

    static ANY: AtomicBool = AtomicBool::new(false);
    static ARMED: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];
    static HIT: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

    fn index(kind: &str) -> usize {
        KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("no fault point for thread kind `{kind}`: one of {KINDS:?}"))
    }

    /// Arms `times` panics for threads of `kind`.
    pub(crate) fn arm(kind: &str, times: usize) {
        ARMED[index(kind)].fetch_add(times, Ordering::SeqCst);
        ANY.store(true, Ordering::SeqCst);
    }

    /// Panics injected so far into threads of `kind`.
    pub(crate) fn hits(kind: &str) -> usize {
        HIT[index(kind)].load(Ordering::SeqCst)
    }

    /// Armed panics of `kind` not injected yet.
    pub(crate) fn pending(kind: &str) -> usize {
        ARMED[index(kind)].load(Ordering::SeqCst)
    }

    /// Whether a panic is armed for `kind` (and takes it).
    pub(crate) fn take(kind: &str) -> bool {
        if !ANY.load(Ordering::Relaxed) {
            return false;
        }
        let i = index(kind);
        let taken = ARMED[i]
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if taken {
            HIT[i].fetch_add(1, Ordering::SeqCst);
        }
        taken
    }

    /// The fault point of a thread of `kind`.
    pub(crate) fn hit(kind: &str) {
        if take(kind) {
            panic!("tend test fault: injected panic in a {kind} thread");
        }
    }
}

#[cfg(not(feature = "testing"))]
pub(crate) mod fault {
    /// No fault injection outside tests.
    #[inline(always)]
    pub(crate) fn hit(_kind: &str) {}

    /// No fault injection outside tests.
    #[inline(always)]
    pub(crate) fn take(_kind: &str) -> bool {
        false
    }
}
