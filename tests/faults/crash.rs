//! Scenario 1, crash.

use super::*;

// ------------------------------------------------------------------------------- 1. crash

/// A worker process drains N tasks while the test SIGKILLs it K times at seeded random
/// moments, restarting it each time.
fn crash<C: TestConn>() {
    let Some(db) = Db::create(C::BACKEND, "faults") else {
        return;
    };
    let _g = heavy();
    let (tasks, kills_wanted) = if quick() { (2000, 5) } else { (10_000, 20) };
    let seed = Rng::seed();
    let mut rng = Rng::new(seed);
    let b = C::BACKEND.name();
    figures(format!(
        "FAULTS crash backend={b} seed={seed} (replay with TEND_FAULTS_SEED={seed})"
    ));

    let pool = support::migrated::<C>(&db, 2);
    let log = RunLog::create(&format!("crash-{b}"));
    let mut keys: Vec<i64> = (1..=tasks).collect();
    support::enqueue_work(&mut *pool.get().unwrap(), &keys, 2, log.id);
    let mut cfg = ChildCfg::new(C::BACKEND, vec![db.url.clone()]);
    cfg.lease = Duration::from_secs(2);
    cfg.poll = Duration::from_millis(100);

    let started = Instant::now();
    let mut kills = Vec::new();
    while kills.len() < kills_wanted {
        let child = ChildWorker::spawn(&cfg, &log);
        let pid = child.pid;
        // Kill it at a random moment after it started running tasks.
        wait_for("the child's first task", Duration::from_secs(60), || {
            log.read().runs.iter().any(|r| r.pid == pid)
        });
        std::thread::sleep(Duration::from_millis(rng.range(20, 250)));
        let at = child.kill();
        kills.push(Kill { pid, at });
        // On a fast machine the tasks could run out before the last kill: top them up, so that
        // every kill lands mid-drain.
        if task_count(&mut *pool.get().unwrap()) < 500 && kills.len() < kills_wanted {
            let more: Vec<i64> = (keys.len() as i64 + 1..=keys.len() as i64 + 2000).collect();
            support::enqueue_work(&mut *pool.get().unwrap(), &more, 2, log.id);
            keys.extend(more);
        }
    }
    // A last worker drains what is left.
    let child = ChildWorker::spawn(&cfg, &log);
    wait_for("the table to empty", Duration::from_secs(180), || {
        task_count(&mut *pool.get().unwrap()) == 0
    });
    child.stop();
    let elapsed = started.elapsed();

    let parsed = log.read();
    let report = verify::check(&parsed, &keys, &kills);
    let handover = verify::handover(&parsed, &kills);
    let worst = handover.iter().map(|h| h.2).max().unwrap_or(0);
    figures(format!(
        "FAULTS crash backend={b} tasks={} kills={} runs={} duplicates={} lost={} overlaps={} \
         unexplained={} worst_rerun_after_kill_ms={worst} lease_ms={} elapsed_s={:.1} seed={seed}",
        keys.len(),
        kills.len(),
        report.runs,
        report.duplicates,
        report.lost.len(),
        report.overlaps.len(),
        report.unexplained.len(),
        cfg.lease.as_millis(),
        elapsed.as_secs_f64()
    ));
    report.assert_sound("crash");
    report.assert_reruns_explained("crash");
    assert_eq!(
        task_count(&mut *pool.get().unwrap()),
        0,
        "the table is empty"
    );
}

per_backend!(here: crash);
