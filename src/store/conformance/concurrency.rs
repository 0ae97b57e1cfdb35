//! Concurrency: claimers never share a row, lock conflicts are transient, pooled connections.

use super::*;

pub(super) fn concurrent_claimers_never_share_a_row<D: Db>(db: &D) {
    const ROWS: usize = 300;
    const CLAIMERS: i64 = 4;
    let mut conn = migrated(db);
    let rows: Vec<NewRow> = (0..ROWS as i64).map(|i| row(T0 - i)).collect();
    assert_eq!(conn.insert_many(&rows).unwrap(), ROWS);
    let claimed = Mutex::new(Vec::<(i64, i64)>::new()); // (id, token)
    let total = AtomicUsize::new(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    thread::scope(|s| {
        for claimer in 0..CLAIMERS {
            let mut conn = db.connect();
            let (claimed, total) = (&claimed, &total);
            s.spawn(move || {
                let mut round = 0;
                while total.load(Ordering::SeqCst) < ROWS {
                    assert!(
                        Instant::now() < deadline,
                        "claimers did not drain the table"
                    );
                    round += 1;
                    let token = claimer * 1_000_000 + round;
                    let args = claim_args(T0, T0 + 60_000, token, 7, None);
                    let got = retry_transient(|| conn.claim(&args)).expect("claim");
                    total.fetch_add(got.len(), Ordering::SeqCst);
                    claimed
                        .lock()
                        .unwrap()
                        .extend(got.iter().map(|c| (c.task.id, token)));
                }
            });
        }
    });
    let claimed = claimed.into_inner().unwrap();
    let mut by_id = HashMap::new();
    for (id, token) in &claimed {
        if let Some(other) = by_id.insert(*id, *token) {
            panic!("row {id} was claimed under token {other} and again under {token}");
        }
    }
    assert_eq!(by_id.len(), ROWS);
    for r in D::rows(&mut conn) {
        assert_eq!(
            r.lease_token,
            Some(by_id[&r.id]),
            "row {} holds its claimer's token",
            r.id
        );
        assert_eq!(r.execute_times, 1);
    }
}

/// A claim takes its whole batch when due rows ahead of it are locked by another
/// transaction (a shard's other claimer mid-claim): on PostgreSQL the locking sub-select skips
/// them; on MySQL/MariaDB the claim reads twice its batch of candidates and locks them by
/// primary key slice by slice, skipping the held ones, until it has its batch. Every other
/// row of the first 2 × 8 is held: the claim gets exactly the 8 free ones, in due order, and
/// none of the held ones. SQLite has one writer (a held write lock stops every claim): skipped.
pub(super) fn a_claim_fills_its_batch_past_rows_others_hold<D: Db>(db: &D) {
    if D::BACKEND == "sqlite" {
        return;
    }
    const BATCH: usize = 8;
    let mut conn = migrated(db);
    let ids: Vec<i64> = (0..3 * BATCH as i64)
        .map(|i| insert(&mut conn, &row(T0 - 1_000 + i)))
        .collect();
    let held: Vec<i64> = ids[..2 * BATCH].iter().copied().step_by(2).collect();
    let free: Vec<i64> = ids[1..2 * BATCH].iter().copied().step_by(2).collect();
    let mut holder = db.connect();
    // One row a statement: InnoDB at REPEATABLE READ keeps a lock on every row a scan reads,
    // and for an `IN` list over a table this small it scans the whole table.
    let locks: String = held
        .iter()
        .map(|id| format!("SELECT id FROM consistency_task WHERE id = {id} FOR UPDATE; "))
        .collect();
    holder.batch_execute(&format!("BEGIN; {locks}")).unwrap();
    let got = claimed(&mut conn, T0, T0 + 30_000, 1, BATCH as i64, None);
    holder.batch_execute("ROLLBACK").unwrap();
    let got: Vec<i64> = got.iter().map(|c| c.task.id).collect();
    assert_eq!(
        got,
        free,
        "the free rows of the first {}, in due order",
        2 * BATCH
    );
    // The held rows are untouched, and due for the next claim.
    for id in &held {
        let r = found(&mut conn, *id);
        assert_eq!((r.task_status, r.lease_token), (0, None), "held row {id}");
    }
    let next = claimed(&mut conn, T0, T0 + 30_000, 2, BATCH as i64, None);
    assert_eq!(next.iter().map(|c| c.task.id).collect::<Vec<_>>(), held);
}

pub(super) fn lock_conflicts_are_transient<D: Db>(db: &D) {
    let mut conn = migrated(db);
    insert(&mut conn, &row(T0));
    let e = db.lock_conflict();
    assert!(
        is_transient(&e),
        "a real lock conflict must be retried, not surfaced: {e:?}"
    );
}

pub(super) fn pooled_connections_store_like_their_connection<D: Db>(db: &D) {
    let pool = db.pool();
    let mut pc = pool.get().unwrap();
    crate::store::migrate(&mut pc).unwrap();
    crate::store::check_schema(&mut pc).unwrap();
    assert_eq!(Ops::backend(&pc), D::BACKEND);
    let a = pc.insert_one(&row(T0)).unwrap().unwrap();
    assert_eq!(pc.insert_many(&[row(T0 + 1)]).unwrap(), 1);
    let got: BTreeSet<i64> = Ops::claim(&mut pc, &claim_args(T0 + 1, T0 + 1_000, 1, 10, None))
        .unwrap()
        .iter()
        .map(|c| c.task.id)
        .collect();
    assert_eq!(got.len(), 2);
    let b = *got.iter().find(|&&id| id != a).unwrap();
    assert_eq!(pc.extend(1, &[a, b], T0 + 2_000).unwrap(), 2);
    assert_eq!(
        pc.finish(&[finish(b, 1, 2, T0 + 9_000, T0 + 3)]).unwrap(),
        [b]
    );
    assert_eq!(pc.complete(1, &[a]).unwrap(), 1);
    assert!(pc.find(a).unwrap().is_none());
    assert_eq!(pc.find(b).unwrap().unwrap().task_status, 2);
    assert!(pc.run_migrations().is_ok());
}
