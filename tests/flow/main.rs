//! Flow control through the worker pool, on every backend (issue 14):
//!
//! * order per key: four worker processes, 100 keys × 100 tasks, random failures; per key the
//!   tasks ran one at a time and in enqueue order, counted from marks the handlers wrote on
//!   their own connections (an independent record, not tend's bookkeeping);
//! * a queue's concurrency limit is never exceeded (tasks claimed by polls and handed over by
//!   an outbox alike), and its rate limit spaces the starts;
//! * a pool works only its queues; higher priorities run first.
//!
//! The children of the multi-process test are this test binary re-run as its ignored test
//! `flow_child`.

#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::r2d2::{ConnectionManager, Pool};
use serde::{Deserialize, Serialize};
use tend::{NewTask, Queue, Registry, Task, TaskContext, TaskError, WorkerPool};

use support::child::{self_as, ChildProc};
use support::{figures, now_ms, per_backend, pool_for, wait_for, Backend, Mark, TestConn, TestDb};

const PATIENCE: Duration = Duration::from_secs(300);
const KEYS: i64 = 100;
const STEPS: i64 = 100;

// ------------------------------------------------------------------ order per key, 4 processes

/// Step `step` of key `key`: writes a mark per attempt ("ok" or "fail", with its start and
/// end) and fails some attempts, the same ones in every process.
#[derive(Serialize, Deserialize)]
struct Step {
    key: i64,
    step: i64,
}

/// Where handlers write their marks: a pool over the test's database.
struct Marks(Box<dyn Fn(&Mark) + Send + Sync>);

impl Task for Step {
    const SIGNATURE: &'static str = "test.flow.step";

    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let at_ms = now_ms();
        // Some work, so that a second run of the key at the same time would overlap.
        std::thread::sleep(Duration::from_millis(1));
        let fail =
            ctx.attempt() < 3 && (self.key * 31 + self.step * 17 + ctx.attempt() as i64) % 7 == 0;
        (ctx.state::<Marks>()?.0)(&Mark {
            label: if fail { "fail" } else { "ok" }.into(),
            task: self.key * 1_000 + self.step,
            pid: std::process::id().into(),
            at_ms,
            end_ms: now_ms(),
        });
        if fail {
            return Err(TaskError::retry_after(
                "flaky on purpose",
                Duration::from_millis(10),
            ));
        }
        Ok(())
    }
}

fn enqueue_steps<C: TestConn>(db: &TestDb<C>, steps: std::ops::Range<i64>) {
    let mut conn = db.pooled();
    for step in steps {
        // One statement per step: each key's steps get ids in enqueue order.
        let tasks: Vec<NewTask> = (0..KEYS)
            .map(|key| {
                NewTask::new(&Step { key, step })
                    .unwrap()
                    .ordering_key(format!("key-{key}"))
            })
            .collect();
        let n = tend::enqueue_many(&mut *conn, tasks).unwrap();
        assert_eq!(n, KEYS as usize);
    }
}

fn four_processes_keep_every_key_in_order<C: TestConn>(db: &TestDb<C>) {
    let started = Instant::now();
    enqueue_steps(db, 0..STEPS / 2);
    let mut children: Vec<ChildProc> = (0..4)
        .map(|i| {
            let mut cmd = self_as("flow_child");
            cmd.env("TEND_FLOW_BACKEND", C::BACKEND.name())
                .env("TEND_FLOW_URL", &db.url);
            ChildProc::spawn(
                cmd,
                &format!("tend-flow-{}-{}-{i}", C::BACKEND.name(), std::process::id()),
            )
        })
        .collect();
    // The rest while the children run.
    enqueue_steps(db, STEPS / 2..STEPS);
    let total = (KEYS * STEPS) as usize;
    wait_for("every step of every key to succeed", PATIENCE, || {
        for c in &mut children {
            c.assert_running();
        }
        (db.marks("ok").len() >= total).then_some(())
    });
    let elapsed = started.elapsed();
    drop(children);

    let mut marks = db.marks("ok");
    let fails = db.marks("fail");
    let (ok_count, fail_count) = (marks.len(), fails.len());
    marks.extend(fails);
    let mut by_key: BTreeMap<i64, Vec<Mark>> = BTreeMap::new();
    for m in marks {
        by_key.entry(m.task / 1_000).or_default().push(m);
    }
    assert_eq!(by_key.len(), KEYS as usize);
    for (key, mut runs) in by_key {
        runs.sort_by_key(|m| (m.at_ms, m.end_ms));
        let mut next = 0;
        for (i, m) in runs.iter().enumerate() {
            let step = m.task % 1_000;
            assert_eq!(
                step, next,
                "key {key}: ran step {step} when step {next} was next ({runs:?})"
            );
            if m.label == "ok" {
                next += 1;
            }
            if i > 0 {
                let prev = &runs[i - 1];
                assert!(
                    m.at_ms >= prev.end_ms,
                    "key {key}: step {step} started at {} while step {} ran until {}",
                    m.at_ms,
                    prev.task % 1_000,
                    prev.end_ms
                );
            }
        }
        assert_eq!(next, STEPS, "key {key}: every step succeeded once");
    }
    assert_eq!(ok_count, total, "each step succeeded exactly once");
    assert!(fail_count > 0, "some attempts failed and were retried");
    let pids: BTreeSet<i64> = db.marks("ok").iter().map(|m| m.pid).collect();
    figures(format!(
        "order per key {}: 4 processes, {KEYS} keys x {STEPS} tasks, {fail_count} failed \
         attempts retried, handlers in {} process(es), per-key order and one-at-a-time held, \
         {:.1} s",
        C::BACKEND.name(),
        pids.len(),
        elapsed.as_secs_f64()
    ));
}

/// What the children run: a pool of 4 threads until killed.
#[test]
#[ignore = "run by four_processes_keep_every_key_in_order as its child process"]
fn flow_child() {
    let Ok(backend) = std::env::var("TEND_FLOW_BACKEND") else {
        return;
    };
    match Backend::from_name(&backend) {
        #[cfg(feature = "sqlite")]
        Some(Backend::Sqlite) => child_main::<diesel::SqliteConnection>(),
        #[cfg(feature = "postgres")]
        Some(Backend::Postgres) => child_main::<diesel::PgConnection>(),
        #[cfg(feature = "mysql")]
        Some(Backend::Mysql) => child_main::<diesel::MysqlConnection>(),
        _ => panic!("backend `{backend}` is not built in"),
    }
}

fn child_main<C: TestConn>() {
    support::init_logs();
    let url = std::env::var("TEND_FLOW_URL").unwrap();
    let pool: Pool<ConnectionManager<C>> = pool_for::<C>(&url, 6);
    let marks: Pool<ConnectionManager<C>> = pool_for::<C>(&url, 4);
    let mut registry = Registry::new();
    registry.register::<Step>().unwrap();
    registry
        .state(Marks(Box::new(move |m| {
            C::put_mark(&mut marks.get().expect("a marks connection"), m)
        })))
        .unwrap();
    let _handle = WorkerPool::builder(pool, registry)
        .threads(4)
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap()
        .start()
        .unwrap();
    // Runs until killed by the parent (stdin is null: this read returns at once, so wait).
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

// ------------------------------------------------------------------ queues and priorities

/// Records how many of its queue run at once, and when each started.
#[derive(Serialize, Deserialize)]
struct Probe {
    n: u64,
    sleep_ms: u64,
}

#[derive(Default)]
struct Seen {
    now: AtomicUsize,
    max: AtomicUsize,
    starts: Mutex<Vec<(u64, Instant)>>,
}

impl Task for Probe {
    const SIGNATURE: &'static str = "test.flow.probe";

    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let seen = ctx.state::<Arc<Seen>>()?;
        seen.starts.lock().unwrap().push((self.n, Instant::now()));
        let now = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
        seen.max.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(self.sleep_ms));
        seen.now.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

fn probe_registry(seen: &Arc<Seen>) -> Registry {
    let mut r = Registry::new();
    r.register::<Probe>().unwrap();
    r.state(seen.clone()).unwrap();
    r
}

fn probe(n: u64, sleep_ms: u64, queue: &str) -> NewTask {
    NewTask::new(&Probe { n, sleep_ms }).unwrap().queue(queue)
}

fn ran(seen: &Seen) -> usize {
    seen.starts.lock().unwrap().len()
}

/// 8 threads, queue `narrow` limited to 2 at once: never more than 2 of it run, whether the
/// poll claimed them or an outbox handed them over after its commit.
fn a_queue_never_runs_more_than_its_concurrency<C: TestConn>(db: &TestDb<C>) {
    let seen = Arc::new(Seen::default());
    let pool = WorkerPool::builder(db.pool.clone(), probe_registry(&seen))
        .threads(8)
        .poll_interval(Duration::from_millis(20))
        .queue("narrow", Queue::new().concurrency(2))
        .build()
        .unwrap();
    let outbox = pool.outbox();
    let handle = pool.start().unwrap();
    for n in 0..12 {
        tend::enqueue_new(&mut db.pooled(), probe(n, 30, "narrow")).unwrap();
    }
    let mut conn = db.pooled();
    for n in 12..24 {
        outbox
            .transaction(&mut *conn, |conn, tx| {
                tx.enqueue_new(conn, probe(n, 30, "narrow"))?;
                Ok::<_, tend::Error>(())
            })
            .unwrap();
    }
    wait_for(
        "24 tasks of `narrow` to run",
        Duration::from_secs(60),
        || (ran(&seen) == 24 && seen.now.load(Ordering::SeqCst) == 0).then_some(()),
    );
    handle.shutdown();
    assert_eq!(
        seen.max.load(Ordering::SeqCst),
        2,
        "at most 2 at once, and 2 were"
    );
}

/// One claim hands its rows to the workers as one message that each worker splits (it takes
/// one row and passes the rest on): the rows of one claim still run on every worker at once,
/// not one after the other on the worker that got the message.
fn one_claim_spreads_over_every_worker<C: TestConn>(db: &TestDb<C>) {
    let seen = Arc::new(Seen::default());
    let tasks: Vec<NewTask> = (0..8)
        .map(|n| NewTask::new(&Probe { n, sleep_ms: 150 }).unwrap())
        .collect();
    tend::enqueue_many(&mut *db.pooled(), tasks).unwrap();
    let handle = WorkerPool::builder(db.pool.clone(), probe_registry(&seen))
        .threads(4)
        .batch_size(8)
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("8 tasks to run", Duration::from_secs(60), || {
        (ran(&seen) == 8 && seen.now.load(Ordering::SeqCst) == 0).then_some(())
    });
    handle.shutdown();
    assert_eq!(
        seen.max.load(Ordering::SeqCst),
        4,
        "the 8 rows of one claim ran on the 4 workers at once"
    );
}

/// A rate limit of 5 per second: the starts of 15 tasks never outpace a bucket of 5 refilled
/// at 5 per second (without the limit all 15 start at once).
fn a_queue_rate_limit_spaces_the_starts<C: TestConn>(db: &TestDb<C>) {
    let seen = Arc::new(Seen::default());
    let handle = WorkerPool::builder(db.pool.clone(), probe_registry(&seen))
        .threads(8)
        .poll_interval(Duration::from_millis(20))
        .queue("paced", Queue::new().rate_limit(5, Duration::from_secs(1)))
        .build()
        .unwrap()
        .start()
        .unwrap();
    let tasks: Vec<NewTask> = (0..15).map(|n| probe(n, 0, "paced")).collect();
    tend::enqueue_many(&mut *db.pooled(), tasks).unwrap();
    handle.wake();
    wait_for("15 paced tasks to run", Duration::from_secs(60), || {
        (ran(&seen) == 15).then_some(())
    });
    handle.shutdown();
    let mut starts: Vec<Instant> = seen.starts.lock().unwrap().iter().map(|s| s.1).collect();
    starts.sort();
    for i in 0..starts.len() {
        for j in i + 1..starts.len() {
            let window = starts[j] - starts[i];
            // A bucket of 5 allows j - i + 1 starts within `window` only if 5 + 5/s × window
            // covers them (one token of slack for the edges of the window).
            let allowed = 5.0 + 5.0 * window.as_secs_f64() + 1.0;
            assert!(
                (j - i + 1) as f64 <= allowed,
                "{} starts within {window:?}",
                j - i + 1
            );
        }
    }
    let spread = starts[14] - starts[0];
    assert!(
        spread >= Duration::from_millis(1_500),
        "15 starts at 5/s after a burst of 5 take about 2 s, took {spread:?}"
    );
}

/// A pool works `default` and the queues it names; `skip_default_queue` leaves `default` out.
fn a_pool_works_only_its_queues<C: TestConn>(db: &TestDb<C>) {
    let seen = Arc::new(Seen::default());
    tend::enqueue_new(&mut db.pooled(), probe(1, 0, "elsewhere")).unwrap();
    tend::enqueue_new(&mut db.pooled(), probe(2, 0, "default")).unwrap();
    let only_elsewhere = WorkerPool::builder(db.pool.clone(), probe_registry(&seen))
        .poll_interval(Duration::from_millis(20))
        .skip_default_queue()
        .queue("elsewhere", Queue::new())
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the task of `elsewhere`", Duration::from_secs(60), || {
        (ran(&seen) == 1).then_some(())
    });
    // Several polls later, `default`'s task is still waiting for a pool that works it.
    std::thread::sleep(Duration::from_millis(300));
    only_elsewhere.shutdown();
    assert_eq!(seen.starts.lock().unwrap()[0].0, 1);
    assert_eq!(ran(&seen), 1);
    let default = WorkerPool::builder(db.pool.clone(), probe_registry(&seen))
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the task of `default`", Duration::from_secs(60), || {
        (ran(&seen) == 2).then_some(())
    });
    default.shutdown();
}

/// One thread, tasks enqueued before the pool starts: priority 3 first, then 0, then -3, each
/// level in due order.
fn higher_priorities_run_first<C: TestConn>(db: &TestDb<C>) {
    let seen = Arc::new(Seen::default());
    let mut conn = db.pooled();
    let mut want = Vec::new();
    for (n, p) in [(0, 0), (1, -3), (2, 3), (3, 0), (4, 3), (5, -3), (6, 1)] {
        tend::enqueue_new(&mut *conn, probe(n, 0, "default").priority(p)).unwrap();
        want.push((-p, n));
    }
    want.sort();
    let handle = WorkerPool::builder(db.pool.clone(), probe_registry(&seen))
        .threads(1)
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("7 tasks", Duration::from_secs(60), || {
        (ran(&seen) == 7).then_some(())
    });
    handle.shutdown();
    let order: Vec<u64> = seen.starts.lock().unwrap().iter().map(|s| s.0).collect();
    assert_eq!(order, want.iter().map(|w| w.1).collect::<Vec<_>>());
}

/// Bad queue, priority and key values are refused at enqueue, naming the setting.
fn bad_flow_values_are_refused_at_enqueue<C: TestConn>(db: &TestDb<C>) {
    let mut conn = db.pooled();
    let cases: Vec<(NewTask, &str)> = vec![
        (probe(1, 0, ""), "queue"),
        (probe(1, 0, "has space"), "queue"),
        (probe(1, 0, &"q".repeat(65)), "queue"),
        (probe(1, 0, "default").priority(4), "priority"),
        (probe(1, 0, "default").priority(i32::MIN), "priority"),
        (probe(1, 0, "default").ordering_key(""), "ordering_key"),
        (
            probe(1, 0, "default").ordering_key("k".repeat(256)),
            "ordering_key",
        ),
    ];
    for (task, setting) in cases {
        let err = tend::enqueue_new(&mut *conn, task).unwrap_err();
        assert!(
            matches!(err.kind(), tend::ErrorKind::InvalidSetting { name, .. } if *name == setting),
            "{err}"
        );
    }
    // A sync task runs in the caller at commit (through an outbox): it cannot wait in line.
    let outbox = WorkerPool::builder(db.pool.clone(), probe_registry(&Arc::default()))
        .build()
        .unwrap()
        .outbox();
    let sync_keyed = probe(1, 0, "default")
        .ordering_key("k")
        .thread_way(tend::ThreadWay::Sync);
    let err = outbox.enqueue_new_detached(sync_keyed).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            tend::ErrorKind::InvalidSetting {
                name: "ordering_key",
                ..
            }
        ),
        "{err}"
    );
    assert!(db.rows().is_empty(), "nothing was written");
}

per_backend!(
    fresh: four_processes_keep_every_key_in_order,
    a_queue_never_runs_more_than_its_concurrency,
    one_claim_spreads_over_every_worker,
    a_queue_rate_limit_spaces_the_starts,
    a_pool_works_only_its_queues,
    higher_priorities_run_first,
    bad_flow_values_are_refused_at_enqueue,
);
