//! The application's own transactions next to a draining pool (issue 11): tend's claims, lease
//! updates and deletes must never make an application transaction fail, on any backend.
//!
//! 4 application threads each run checkout transactions (insert an order row, then
//! `tend::enqueue`, in one transaction) while a `WorkerPool` polling every 10 ms drains the
//! table, with `batch_size` 10 and then 100. Every failed transaction is counted with its error,
//! raw (no retry hides a deadlock here), and the test asserts there were none. The application
//! threads conflict with nothing but tend (distinct order ids, no idempotency keys), so any
//! failure is caused by tend's statements. Then every task of a committed transaction must have
//! run exactly once, and no other.
//!
//! Size: 4 threads × 500 transactions per setting by default; `TEND_LONG=1` runs the issue's
//! 4 × 2500. The counts are printed (`cargo test --test app_transactions -- --nocapture`).

mod support;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use tend::{Registry, Task, TaskContext, TaskError, WorkerPool};

use support::{per_backend, wait_for, TestConn, TestDb};

/// The load: 4 application threads.
const APP_THREADS: u64 = 4;

/// Transactions per application thread and setting.
fn per_thread() -> u64 {
    match std::env::var("TEND_LONG") {
        Ok(v) if !v.is_empty() && v != "0" => 2500,
        _ => 500,
    }
}

/// The stress runs of one process take turns: two at once on a 2-core machine would measure the
/// machine, not tend.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How many times each (run, n) ran.
static RAN: LazyLock<Mutex<HashMap<(u64, u64), u32>>> = LazyLock::new(Default::default);

#[derive(Serialize, Deserialize)]
struct Checkout {
    run: u64,
    n: u64,
}

impl Task for Checkout {
    const SIGNATURE: &'static str = "test.checkout";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        *RAN.lock().unwrap().entry((self.run, self.n)).or_default() += 1;
        Ok(())
    }
}

/// One application thread's committed task numbers and failures (number, error).
type ThreadResult = (Vec<u64>, Vec<(u64, String)>);

/// One setting's outcome.
struct Outcome {
    committed: Vec<u64>,
    failures: Vec<(u64, String)>,
    elapsed: Duration,
}

fn stress<C: TestConn + Connection>(run: u64, batch: usize) -> Option<Outcome> {
    let db = TestDb::<C>::fresh()?;
    // One r2d2 pool for the application and tend, as a service has.
    let pool = support::pool_for::<C>(&db.url, 16);
    let mut registry = Registry::new();
    registry.register::<Checkout>().unwrap();
    let handle = WorkerPool::builder(pool.clone(), registry)
        .threads(4)
        .batch_size(batch)
        .poll_interval(Duration::from_millis(10))
        .build()
        .unwrap()
        .start()
        .unwrap();
    let per_thread = per_thread();
    let started = Instant::now();
    let results: Vec<ThreadResult> = thread::scope(|s| {
        let threads: Vec<_> = (0..APP_THREADS)
            .map(|t| {
                let pool = pool.clone();
                s.spawn(move || {
                    let mut conn = pool.get().expect("an application connection");
                    let (mut ok, mut failed) = (Vec::new(), Vec::new());
                    for i in 0..per_thread {
                        let n = t * per_thread + i;
                        let r = conn.transaction(|conn| {
                            conn.batch_execute(&format!(
                                "INSERT INTO tend_test_orders (id, note) VALUES ({n}, 'checkout')"
                            ))?;
                            tend::enqueue(&mut *conn, &Checkout { run, n })
                        });
                        match r {
                            Ok(_) => ok.push(n),
                            Err(e) => failed.push((n, e.to_string())),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let (mut committed, mut failures) = (Vec::new(), Vec::new());
    for (ok, failed) in results {
        committed.extend(ok);
        failures.extend(failed);
    }
    wait_for("the table to drain", Duration::from_secs(120), || {
        db.rows().is_empty().then_some(())
    });
    let report = handle.shutdown();
    assert!(report.all_joined(), "{report:?}");
    assert_eq!(db.orders(), committed.len() as i64);
    Some(Outcome {
        committed,
        failures,
        elapsed,
    })
}

fn application_transactions_never_fail_because_of_tend<C: TestConn + Connection>() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let total = APP_THREADS * per_thread();
    let mut failed_somewhere = Vec::new();
    for (k, batch) in [10usize, 100].into_iter().enumerate() {
        let run = C::BACKEND as u64 * 10 + k as u64;
        let Some(out) = stress::<C>(run, batch) else {
            return;
        };
        println!(
            "app_transactions: {} batch_size {batch} poll 10 ms: {} of {total} application \
             transactions failed ({:.1} per 10 000), {} committed, in {:.1} s",
            C::BACKEND.name(),
            out.failures.len(),
            out.failures.len() as f64 * 10_000.0 / total as f64,
            out.committed.len(),
            out.elapsed.as_secs_f64()
        );
        let mut kinds: HashMap<&str, usize> = HashMap::new();
        for (_, e) in &out.failures {
            *kinds.entry(e.as_str()).or_default() += 1;
        }
        for (e, k) in &kinds {
            println!("    {k} × {e}");
        }
        // Every committed task ran exactly once; the rolled back ones never.
        let ran = RAN.lock().unwrap();
        for n in &out.committed {
            assert_eq!(ran.get(&(run, *n)), Some(&1), "task {n} of batch {batch}");
        }
        let ran_here = ran.keys().filter(|(r, _)| *r == run).count();
        assert_eq!(ran_here, out.committed.len(), "only committed tasks ran");
        if !out.failures.is_empty() {
            failed_somewhere.push((batch, out.failures.len()));
        }
    }
    assert!(
        failed_somewhere.is_empty(),
        "application transactions failed because of tend (batch_size, failures): \
         {failed_somewhere:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// `tend::transaction_with_retry`: the application's own deadlocks, run again.

/// diesel's error for a lock conflict, as a server reports it.
fn conflict() -> diesel::result::Error {
    diesel::result::Error::DatabaseError(
        diesel::result::DatabaseErrorKind::SerializationFailure,
        Box::new(String::from("could not serialize access (test)")),
    )
}

fn retry_helper_runs_the_whole_transaction_again<C: TestConn + Connection>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let mut conn = db.pooled();
    // A conflict on the first attempt: rolled back (order and task), then run again.
    let mut attempts = 0;
    let enqueued = tend::transaction_with_retry(&mut conn, |conn| {
        attempts += 1;
        conn.batch_execute("INSERT INTO tend_test_orders (id, note) VALUES (1, 'retried')")?;
        let e = tend::enqueue(&mut *conn, &Checkout { run: 0, n: 1 })?;
        if attempts == 1 {
            return Err(tend::Error::from(conflict()));
        }
        Ok(e)
    })
    .unwrap();
    assert_eq!(attempts, 2);
    assert!(enqueued.id().is_some());
    assert_eq!((db.orders(), db.rows().len()), (1, 1));

    // Not transient: returned at once, rolled back.
    let mut attempts = 0;
    let e = tend::transaction_with_retry(&mut conn, |conn| {
        attempts += 1;
        conn.batch_execute("INSERT INTO tend_test_orders (id, note) VALUES (2, 'refused')")?;
        Err::<(), _>(diesel::result::Error::NotFound)
    })
    .unwrap_err();
    assert_eq!((attempts, e), (1, diesel::result::Error::NotFound));
    assert_eq!(db.orders(), 1);

    // Transient every time: the last error after the bounded attempts.
    let mut attempts = 0;
    let started = Instant::now();
    let e = tend::TransactionRetry::new()
        .attempts(3)
        .backoff(Duration::from_millis(1), Duration::from_millis(4))
        .run(&mut conn, |_| {
            attempts += 1;
            Err::<(), tend::Error>(conflict().into())
        })
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(attempts, 3);
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// A real deadlock between two application transactions on the servers (rows taken in opposite
/// orders): the server rolls one back, the helper runs it again, and both commit.
fn retry_helper_resolves_a_real_deadlock<C: TestConn + Connection>() {
    if C::BACKEND == support::Backend::Sqlite {
        return; // one writer: the second transaction waits, it cannot deadlock
    }
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    db.exec("INSERT INTO tend_test_orders (id, note) VALUES (1, 'a'), (2, 'b')");
    let barrier = std::sync::Barrier::new(2);
    let attempts: Vec<u32> = thread::scope(|s| {
        let threads: Vec<_> = [(1, 2), (2, 1)]
            .into_iter()
            .map(|(first, second)| {
                let (pool, barrier) = (db.pool.clone(), &barrier);
                s.spawn(move || {
                    let mut conn = pool.get().unwrap();
                    let mut attempts = 0;
                    tend::transaction_with_retry(&mut conn, |conn| {
                        attempts += 1;
                        let update =
                            |id| format!("UPDATE tend_test_orders SET note = 'x' WHERE id = {id}");
                        conn.batch_execute(&update(first))?;
                        if attempts == 1 {
                            barrier.wait();
                        }
                        conn.batch_execute(&update(second))?;
                        tend::enqueue(&mut *conn, &Checkout { run: 0, n: first })
                    })
                    .unwrap_or_else(|e| panic!("transaction {first} failed: {e}"));
                    attempts
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    println!(
        "retry helper: {} attempts per transaction {attempts:?}",
        C::BACKEND.name()
    );
    assert_eq!(
        attempts.iter().sum::<u32>(),
        3,
        "one of them deadlocked once"
    );
    assert_eq!(db.rows().len(), 2);
}

per_backend!(
    application_transactions_never_fail_because_of_tend,
    retry_helper_runs_the_whole_transaction_again,
    retry_helper_resolves_a_real_deadlock
);
