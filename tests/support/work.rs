//! The reliability suites' task types (their runs go to the run log) and a seeded generator.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::Connection;
use serde::{Deserialize, Serialize};
use tend::{Task, TaskContext, TaskError};

use super::{runlog, TestConn};

/// Rows of `consistency_task`.
pub fn task_count<C: TestConn>(conn: &mut C) -> i64 {
    conn.i64s("SELECT COUNT(*) AS v FROM consistency_task")[0]
}

/// The suites' task: records its run in the run log named by `log`, sleeps `ms`, succeeds.
/// Its shard key is always `key`, so tend's events name the same key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Work {
    pub key: i64,
    pub ms: u32,
    pub log: u32,
}

impl Task for Work {
    const SIGNATURE: &'static str = "tend.tests.work";
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let log = runlog::get(self.log);
        let run = log.start(self.key, ctx.attempt());
        if self.ms > 0 {
            std::thread::sleep(Duration::from_millis(u64::from(self.ms)));
        }
        log.end(self.key, run);
        Ok(())
    }
}

/// Adds one to the single row of `tend_test_counter` and completes the task in the same
/// transaction (`tend::complete_in`): exactly-once local effects. The transaction is the
/// [`Counter`] state's, since the task type cannot name the connection type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Increment {
    pub key: i64,
}

impl Task for Increment {
    const SIGNATURE: &'static str = "tend.tests.increment";
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        (ctx.state::<Counter>()?.0)(ctx)
    }
}

/// The state behind [`Increment`]: its transaction on the task's database.
#[allow(clippy::type_complexity)] // one boxed closure, named by the struct
pub struct Counter(Box<dyn Fn(&TaskContext) -> Result<(), TaskError> + Send + Sync>);

/// The counter table, its one row at 0.
pub const COUNTER_DDL: &str = "CREATE TABLE tend_test_counter (id INTEGER PRIMARY KEY, n BIGINT \
     NOT NULL); INSERT INTO tend_test_counter (id, n) VALUES (1, 0);";

impl Counter {
    pub fn new<C: TestConn>(pool: Pool<ConnectionManager<C>>) -> Counter {
        Counter(Box::new(move |ctx| {
            let mut conn = pool.get()?;
            conn.transaction(|conn| {
                conn.batch_execute("UPDATE tend_test_counter SET n = n + 1 WHERE id = 1")?;
                tend::complete_in(conn, ctx)?;
                Ok::<_, TaskError>(())
            })
        }))
    }
}

impl Work {
    /// A `NewTask` with the shard key set to the work's key.
    pub fn new_task(&self) -> tend::NewTask {
        tend::NewTask::new(self).unwrap().shard_key(self.key)
    }
}

/// Enqueues `Work` for every key, in batches of 500.
pub fn enqueue_work<C: TestConn>(conn: &mut C, keys: &[i64], ms: u32, log: u32) {
    for chunk in keys.chunks(500) {
        let tasks: Vec<tend::NewTask> = chunk
            .iter()
            .map(|&key| Work { key, ms, log }.new_task())
            .collect();
        let n = tend::enqueue_many(conn, tasks).expect("enqueue_many");
        assert_eq!(n, chunk.len());
    }
}

/// splitmix64: a tiny seeded generator, so every run can be replayed from its printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The seed from `TEND_FAULTS_SEED`, else one derived from the clock (printed by callers).
    pub fn seed() -> u64 {
        std::env::var("TEND_FAULTS_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}
