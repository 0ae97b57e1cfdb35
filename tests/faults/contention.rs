//! Scenario 3, contention.

use super::*;

// -------------------------------------------------------------------------- 3. contention

/// 4 processes × 8 threads drain one table, then two databases through `WorkerPool::sharded`:
/// no task runs twice at the same time (nor twice at all: nothing failed).
fn contention<C: TestConn>() {
    let (Some(db1), Some(db2)) = (
        Db::create(C::BACKEND, "faults"),
        Db::create(C::BACKEND, "faults"),
    ) else {
        return;
    };
    let _g = heavy();
    let b = C::BACKEND.name();
    let (procs, threads) = (4, 8);
    let tasks: i64 = if quick() { 2000 } else { 10_000 };
    let pools = [
        support::migrated::<C>(&db1, 2),
        support::migrated::<C>(&db2, 2),
    ];
    for shards in [1usize, 2] {
        let log = RunLog::create(&format!("contention-{b}-{shards}"));
        let keys: Vec<i64> = (1..=tasks).collect();
        for (i, p) in pools.iter().take(shards).enumerate() {
            // Key k lives on shard k mod shards, as the default router puts it.
            let mine: Vec<i64> = keys
                .iter()
                .copied()
                .filter(|k| (*k as usize) % shards == i)
                .collect();
            support::enqueue_work(&mut *p.get().unwrap(), &mine, 1, log.id);
        }
        let urls = [&db1, &db2]
            .iter()
            .take(shards)
            .map(|d| d.url.clone())
            .collect();
        let mut cfg = ChildCfg::new(C::BACKEND, urls);
        cfg.threads = threads;
        cfg.batch = 20;
        cfg.lease = Duration::from_secs(30);
        cfg.poll = Duration::from_millis(100);
        let started = Instant::now();
        let children: Vec<ChildWorker> =
            (0..procs).map(|_| ChildWorker::spawn(&cfg, &log)).collect();
        wait_for("every shard to empty", Duration::from_secs(180), || {
            pools
                .iter()
                .take(shards)
                .all(|p| task_count(&mut *p.get().unwrap()) == 0)
        });
        let elapsed = started.elapsed();
        let pids: Vec<u32> = children.iter().map(|c| c.pid).collect();
        for c in children {
            let stats = c.stop();
            assert_eq!(stat(&stats, "abandoned"), 0, "{stats}");
        }
        let parsed = log.read();
        let report = verify::check(&parsed, &keys, &[]);
        let share: Vec<usize> = pids
            .iter()
            .map(|p| parsed.runs.iter().filter(|r| r.pid == *p).count())
            .collect();
        figures(format!(
            "FAULTS contention backend={b} databases={shards} processes={procs} \
             threads={threads} tasks={tasks} runs={} duplicates={} lost={} overlaps={} \
             runs_per_process={share:?} elapsed_s={:.1}",
            report.runs,
            report.duplicates,
            report.lost.len(),
            report.overlaps.len(),
            elapsed.as_secs_f64()
        ));
        report.assert_sound("contention");
        assert_eq!(report.duplicates, 0, "tasks ran twice without any fault");
    }
}

per_backend!(here: contention);
