//! Scenario 4, atomicity.

use super::*;

// -------------------------------------------------------------------------- 4. atomicity

/// What a transaction of the atomicity scenario does after writing its business row and task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Commit,
    /// The closure returns an error after the enqueue.
    Rollback,
    /// The closure panics after the enqueue.
    Panic,
}

/// 10k transactions from 4 threads, each inserting a business row and a task, then committing,
/// rolling back after the enqueue, or panicking inside the closure; half through
/// `conn.transaction` + `tend::enqueue_new`, half through `Outbox::transaction`. Afterwards the
/// tasks are exactly the committed business rows.
fn atomicity<C: TestConn>() {
    let Some(db) = Db::create(C::BACKEND, "faults") else {
        return;
    };
    quiet_intended_panics();
    let b = C::BACKEND.name();
    let total: i64 = if quick() { 2000 } else { 10_000 };
    let threads = 4;
    let seed = Rng::seed();
    let pool = support::migrated::<C>(&db, threads as u32 + 1);
    pool.get()
        .unwrap()
        .batch_execute("CREATE TABLE tend_biz (k BIGINT PRIMARY KEY)")
        .unwrap();
    let mut registry = tend::Registry::new();
    registry.register::<support::Work>().unwrap();
    // The outbox of a pool that is never started: tasks wait in the table.
    let outbox = tend::WorkerPool::builder(pool.clone(), registry)
        .build()
        .unwrap()
        .outbox();
    let started = Instant::now();
    let results: Vec<Vec<(i64, Ending, bool)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (pool, outbox) = (pool.clone(), outbox.clone());
                s.spawn(move || {
                    let mut rng = Rng::new(seed ^ (t as u64 + 1));
                    let mut out = Vec::new();
                    for k in (1..=total).filter(|k| k % threads == t) {
                        // A panic costs a connection (r2d2 discards it, the server rolls
                        // back): 10% of them keeps the run short on PostgreSQL.
                        let ending = match rng.range(0, 20) {
                            0..=8 => Ending::Commit,
                            9..=17 => Ending::Rollback,
                            _ => Ending::Panic,
                        };
                        let via_outbox = rng.range(0, 2) == 0;
                        let work = support::Work {
                            key: k,
                            ms: 0,
                            log: 0,
                        };
                        let business = format!("INSERT INTO tend_biz (k) VALUES ({k})");
                        let end = move || -> Result<(), tend::Error> {
                            match ending {
                                Ending::Commit => Ok(()),
                                Ending::Rollback => {
                                    Err(tend::Error::invalid_setting("test", "rolled back"))
                                }
                                Ending::Panic => panic!("{INTENDED} in transaction {k}"),
                            }
                        };
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            // A connection per transaction, as a service takes one per request;
                            // one that unwound mid-transaction is discarded by r2d2.
                            let mut conn = pool.get().unwrap();
                            if via_outbox {
                                outbox
                                    .transaction(&mut conn, |conn, tx| {
                                        conn.batch_execute(&business)?;
                                        tx.enqueue_new(conn, work.new_task())?;
                                        end()
                                    })
                                    .map(|_| ())
                            } else {
                                conn.transaction(|conn| {
                                    conn.batch_execute(&business)?;
                                    tend::enqueue_new(conn, work.new_task())?;
                                    end()
                                })
                            }
                        }));
                        let committed = matches!(r, Ok(Ok(())));
                        assert_eq!(committed, ending == Ending::Commit, "transaction {k}");
                        out.push((k, ending, via_outbox));
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let all: Vec<(i64, Ending, bool)> = results.into_iter().flatten().collect();
    let committed: HashSet<i64> = all
        .iter()
        .filter(|(_, e, _)| *e == Ending::Commit)
        .map(|(k, _, _)| *k)
        .collect();
    let mut conn = pool.get().unwrap();
    let business: HashSet<i64> = conn
        .i64s("SELECT k AS v FROM tend_biz")
        .into_iter()
        .collect();
    let task_keys: Vec<i64> = conn.i64s("SELECT shard_key AS v FROM consistency_task");
    let tasks: HashSet<i64> = task_keys.iter().copied().collect();
    let count = |e: Ending| all.iter().filter(|(_, x, _)| *x == e).count();
    let orphans = tasks.difference(&business).count();
    let missing = business.difference(&tasks).count();
    figures(format!(
        "FAULTS atomicity backend={b} transactions={} threads={threads} committed={} \
         rolled_back={} panicked={} via_outbox={} business_rows={} tasks={} \
         tasks_without_business_row={orphans} business_rows_without_task={missing} \
         elapsed_s={:.1} seed={seed}",
        all.len(),
        count(Ending::Commit),
        count(Ending::Rollback),
        count(Ending::Panic),
        all.iter().filter(|x| x.2).count(),
        business.len(),
        task_keys.len(),
        elapsed.as_secs_f64()
    ));
    assert_eq!(all.len() as i64, total);
    assert_eq!(task_keys.len(), tasks.len(), "one task per business row");
    assert_eq!(business, committed, "business rows are the committed ones");
    assert_eq!(tasks, committed, "tasks are the committed ones");
}

per_backend!(here: atomicity);
