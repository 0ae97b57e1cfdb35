//! Scenario 2, outage.

use super::*;

// ------------------------------------------------------------------------------ 2. outage

/// Mid-drain, the database is cut off for 10 s (proxy down / file locked): nothing is lost,
/// the pool resumes within 2 s of the database coming back, no thread dies, and the pool backs
/// off instead of spinning (its CPU time and its error lines during the outage are bounded).
fn outage<C: TestConn>() {
    let Some(db) = Db::create(C::BACKEND, "faults") else {
        return;
    };
    let _g = heavy();
    let b = C::BACKEND.name();
    let tasks = if quick() { 1000 } else { 3000 };
    let outage = Duration::from_secs(if quick() { 5 } else { 10 });
    let pool = support::migrated::<C>(&db, 2);
    let log = RunLog::create(&format!("outage-{b}"));
    let keys: Vec<i64> = (1..=tasks).collect();
    support::enqueue_work(&mut *pool.get().unwrap(), &keys, 4, log.id);

    let (mut cutter, url) = Cutter::new(&db);
    let mut cfg = ChildCfg::new(C::BACKEND, vec![url]);
    cfg.lease = Duration::from_secs(3);
    cfg.poll = Duration::from_millis(500);
    // r2d2 retries a failed connect after a backoff capped at half its checkout timeout (15 s
    // with its default of 30 s): a service that wants to be back within 2 s of its database
    // keeps it short. 1 s here: tend's own backoff (at most 1 s) plus r2d2's (0.5 s).
    cfg.conn_timeout = Duration::from_secs(1);
    cfg.busy = Duration::from_millis(100);
    let child = ChildWorker::spawn(&cfg, &log);
    wait_for("a quarter of the tasks", Duration::from_secs(60), || {
        log.read().ended() >= keys.len() / 4
    });
    let threads_before = child.tend_threads();
    let cpu_before = child.cpu_ticks();
    let down_at = now_us();
    cutter.down();
    // The outage itself: a fault window of fixed length, not a synchronisation.
    std::thread::sleep(outage);
    let cpu_during = child.cpu_ticks() - cpu_before;
    let done_before_up = log.read().ended();
    cutter.up();
    let up_at = now_us();
    wait_for("the table to empty", Duration::from_secs(120), || {
        task_count(&mut *pool.get().unwrap()) == 0
    });
    let threads_after = child.tend_threads();
    let stats = child.stop();

    let parsed = log.read();
    let report = verify::check(&parsed, &keys, &[]);
    // Resumed: the first run that started and finished after the database came back.
    let first_start = parsed
        .runs
        .iter()
        .filter(|r| r.start >= up_at)
        .map(|r| r.start)
        .min()
        .expect("runs after the outage");
    let first_done = parsed
        .runs
        .iter()
        .filter(|r| r.start >= up_at)
        .filter_map(|r| r.end)
        .min()
        .expect("a finished run after the outage");
    let (resume_ms, done_ms) = ((first_start - up_at) / 1000, (first_done - up_at) / 1000);
    let in_window = |kind: &str| {
        parsed
            .logs
            .iter()
            .filter(|(k, _, t)| k == kind && *t >= down_at && *t <= up_at)
            .count()
    };
    let (claim_errors, write_errors) = (in_window("claim"), in_window("write"));
    let all_errors = parsed
        .logs
        .iter()
        .filter(|(_, _, t)| *t >= down_at && *t <= up_at)
        .count();
    // Re-runs are allowed only for tasks whose outcome could not be written: the earlier run
    // started before the database came back.
    let by_key = parsed.by_key();
    let late_reruns: Vec<i64> = by_key
        .iter()
        .filter(|(_, runs)| {
            runs.len() > 1 && runs[..runs.len() - 1].iter().any(|r| r.start > up_at)
        })
        .map(|(k, _)| *k)
        .collect();
    figures(format!(
        "FAULTS outage backend={b} tasks={tasks} outage_s={} done_before_up={done_before_up} \
         resumed_ms={resume_ms} recovery_ms={done_ms} duplicates={} lost={} overlaps={} \
         claim_errors_logged={claim_errors} write_errors_logged={write_errors} \
         all_warnings_logged={all_errors} cpu_ms_during_outage={} threads={} via={}",
        outage.as_secs(),
        report.duplicates,
        report.lost.len(),
        report.overlaps.len(),
        cpu_during * 10,
        threads_after.len(),
        if C::BACKEND == Backend::Sqlite {
            "exclusive lock"
        } else {
            "proxy"
        },
    ));
    report.assert_sound("outage");
    assert!(
        late_reruns.is_empty(),
        "re-runs after the outage: {late_reruns:?}"
    );
    assert_eq!(
        task_count(&mut *pool.get().unwrap()),
        0,
        "the table is empty"
    );
    assert!(
        done_ms <= 2000,
        "the pool took {done_ms} ms after the database came back to complete a task"
    );
    assert_eq!(threads_before, threads_after, "a tend thread died");
    assert_eq!(stat(&stats, "abandoned"), 0, "{stats}");
    // Backoff, not a spin: at most ~2 error lines a second per role, and little CPU.
    let limit = 3 * outage.as_secs() as usize + 10;
    assert!(
        claim_errors <= limit && write_errors <= limit,
        "the pool spun on errors: {claim_errors} claim and {write_errors} write errors logged \
         in {outage:?}"
    );
    assert!(
        cpu_during * 10 < outage.as_millis() as u64 / 5,
        "the pool used {} ms of CPU during a {outage:?} outage",
        cpu_during * 10
    );
}

per_backend!(here: outage);
