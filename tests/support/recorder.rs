//! What handlers did in this process. Tests run in parallel in one process, so every test gets
//! a `Run` of its own, found through the run id its tasks carry in their payload.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// One execution of a handler.
#[derive(Debug, Clone)]
pub struct Ran {
    /// Which task of the run (the payload's `n`).
    pub n: u64,
    /// The row id.
    pub id: i64,
    pub attempt: u32,
    /// Which pool ran it (tests with two pools register two types under one signature).
    pub pool: u8,
    pub thread: String,
    pub start: Instant,
    pub end: Instant,
    pub start_ms: i64,
}

/// One test's record of executions, and a gate its handlers can wait on.
#[derive(Default)]
pub struct Run {
    started: Mutex<Vec<u64>>,
    ran: Mutex<Vec<Ran>>,
    gate: Mutex<bool>,
    opened: Condvar,
}

impl Run {
    /// Notes that task `n` entered its handler (before it blocks or fails).
    pub fn start(&self, n: u64) {
        self.started.lock().unwrap().push(n);
    }

    pub fn has_started(&self, n: u64) -> bool {
        self.started.lock().unwrap().contains(&n)
    }

    pub fn record(&self, r: Ran) {
        self.ran.lock().unwrap().push(r);
    }

    pub fn ran(&self) -> Vec<Ran> {
        self.ran.lock().unwrap().clone()
    }

    /// How many executions task `n` had.
    pub fn times(&self, n: u64) -> usize {
        self.ran.lock().unwrap().iter().filter(|r| r.n == n).count()
    }

    /// Blocks until the gate opens; `false` if it stayed shut for a minute (a test that failed
    /// elsewhere must not leave threads blocked for ever).
    pub fn wait_gate(&self) -> bool {
        let open = self.gate.lock().unwrap();
        let (open, _) = self
            .opened
            .wait_timeout_while(open, Duration::from_secs(60), |o| !*o)
            .unwrap();
        *open
    }

    pub fn open_gate(&self) {
        *self.gate.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

static RUNS: LazyLock<Mutex<HashMap<u64, Arc<Run>>>> = LazyLock::new(Default::default);
static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

/// A new run: its id goes into the tasks' payloads.
pub fn new_run() -> (u64, Arc<Run>) {
    let id = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
    let run = Arc::new(Run::default());
    RUNS.lock().unwrap().insert(id, run.clone());
    (id, run)
}

/// The run a handler belongs to.
pub fn run(id: u64) -> Arc<Run> {
    RUNS.lock().unwrap()[&id].clone()
}
