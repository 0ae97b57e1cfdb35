//! Flow control in the claim: one queue per claim, highest priority first, order per key.

use super::*;

fn queued(execute_time: i64, queue: &str, priority: i32) -> NewRow {
    NewRow {
        queue: queue.to_string().into(),
        priority,
        ..row(execute_time)
    }
}

fn keyed(execute_time: i64, key: &str) -> NewRow {
    NewRow {
        ordering_key: Some(key.into()),
        ..row(execute_time)
    }
}

fn claim_of<C: Ops>(conn: &mut C, queue: &str, now: i64, token: i64, limit: i64) -> Vec<i64> {
    let c = Claim {
        queue: Some(queue),
        ..claim_args(now, now + 30_000, token, limit, None)
    };
    // In claim order: the union's branches come highest priority first.
    let mut rows: Vec<TaskRow> = conn
        .claim(&c)
        .expect("claim")
        .into_iter()
        .map(|c| c.task)
        .collect();
    rows.sort_by_key(|r| (-r.priority, r.execute_time, r.id));
    rows.iter().map(|r| r.id).collect()
}

/// Four due rows of queue `mail` at three priorities, ids not in due order: `(low_old,
/// mid_new, mid_old, top)`.
fn mail_rows<C: Ops>(conn: &mut C) -> (i64, i64, i64, i64) {
    let low_old = insert(conn, &queued(T0 - 9_000, "mail", -3));
    let mid_new = insert(conn, &queued(T0 - 1_000, "mail", 0));
    let mid_old = insert(conn, &queued(T0 - 5_000, "mail", 0));
    let top = insert(conn, &queued(T0 - 10, "mail", 3));
    (low_old, mid_new, mid_old, top)
}

pub(super) fn claim_takes_one_queue_highest_priority_first<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let (low_old, mid_new, mid_old, top) = mail_rows(&mut conn);
    // Not due yet, at the top priority: never taken before its time, never in the way.
    let top_later = insert(&mut conn, &queued(T0 + 60_000, "mail", 3));
    let other_queue = insert(&mut conn, &queued(T0 - 99_000, "sms", 3));
    let default = insert(&mut conn, &row(T0 - 99_000));
    // The due-probe looks at one queue, highest priority first, too.
    assert_eq!(conn.first_due("mail", T0, &[]).unwrap(), Some(top));
    assert_eq!(conn.first_due("mail", T0, &[top]).unwrap(), Some(mid_old));
    assert_eq!(conn.first_due("sms", T0, &[]).unwrap(), Some(other_queue));
    assert_eq!(conn.first_due("nobody-works-this", T0, &[]).unwrap(), None);

    assert_eq!(claim_of(&mut conn, "mail", T0, 1, 2), vec![top, mid_old]);
    assert_eq!(
        claim_of(&mut conn, "mail", T0, 2, 10),
        vec![mid_new, low_old]
    );
    assert!(claim_of(&mut conn, "mail", T0, 3, 10).is_empty());
    assert_eq!(found(&mut conn, top_later).task_status, 0);
    assert_eq!(claim_of(&mut conn, "sms", T0, 4, 10), vec![other_queue]);
    assert_eq!(claim_of(&mut conn, "default", T0, 5, 10), vec![default]);
    assert!(claim_of(&mut conn, "nobody-works-this", T0, 6, 10).is_empty());
}

/// A claim hands its rows over in the order the workers should start them: highest priority
/// first, then oldest due first (not id order), whatever order the server returned them in.
pub(super) fn a_claim_returns_its_rows_in_claim_order<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let (low_old, mid_new, mid_old, top) = mail_rows(&mut conn);
    let c = Claim {
        queue: Some("mail"),
        ..claim_args(T0, T0 + 30_000, 9, 10, None)
    };
    let got: Vec<i64> = conn
        .claim(&c)
        .expect("claim")
        .into_iter()
        .map(|c| c.task.id)
        .collect();
    assert_eq!(got, vec![top, mid_old, mid_new, low_old]);
}

/// A claim of one priority level reads only that level's due rows: the levels above it with
/// thousands of rows not due yet cost nothing (the union's branches are index ranges).
pub(super) fn claim_is_not_slowed_by_rows_not_due<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let later: Vec<NewRow> = (0..2_000)
        .map(|i| queued(T0 + 60_000 + i, "default", 3))
        .collect();
    assert_eq!(conn.insert_many(&later).unwrap(), 2_000);
    let due = insert(&mut conn, &queued(T0, "default", -3));
    assert_eq!(claim_of(&mut conn, "default", T0, 1, 10), vec![due]);
}

pub(super) fn ordering_key_runs_one_at_a_time_in_order<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let now = T0;
    let a1 = insert(&mut conn, &keyed(T0 - 100, "order-1"));
    let a2 = insert(&mut conn, &keyed(T0 - 200, "order-1")); // due earlier, enqueued later
    let a3 = insert(&mut conn, &keyed(T0 - 300, "order-1"));
    let b1 = insert(&mut conn, &keyed(T0 - 50, "order-2"));
    let free = insert(&mut conn, &row(T0 - 400));

    // Only each key's first row, and unkeyed rows.
    let first = claim_of(&mut conn, "default", now, 1, 10);
    assert_eq!(
        first.iter().copied().collect::<BTreeSet<_>>(),
        [a1, b1, free].into()
    );
    // a1 runs: nothing of its key is claimable.
    assert!(claim_of(&mut conn, "default", now, 2, 10).is_empty());
    // a1 fails and waits for its retry: a2 still waits behind it.
    assert_eq!(
        conn.finish(&[finish(a1, 1, 2, T0 + 5_000, now)]).unwrap(),
        vec![a1]
    );
    assert!(claim_of(&mut conn, "default", now, 3, 10).is_empty());
    // a1 is retried and succeeds (deleted): a2 is next, a3 still waits.
    assert_eq!(claim_of(&mut conn, "default", T0 + 5_000, 4, 10), vec![a1]);
    assert_eq!(conn.complete(4, &[a1]).unwrap(), 1);
    assert_eq!(claim_of(&mut conn, "default", T0 + 5_000, 5, 10), vec![a2]);
    // a2 dies: a dead task blocks its key until an operator acts.
    conn.finish(&[finish(a2, 5, 4, PARKED, now)]).unwrap();
    assert!(claim_of(&mut conn, "default", T0 + 9_000, 6, 10).is_empty());
    assert_eq!(conn.first_due("default", T0 + 9_000, &[]).unwrap(), None);
    // A kept succeeded row (status 3) does not block.
    conn.finish(&[finish(b1, 1, 3, PARKED, now)]).unwrap();
    let b2 = insert(&mut conn, &keyed(T0, "order-2"));
    assert_eq!(claim_of(&mut conn, "default", T0 + 9_000, 7, 10), vec![b2]);
    // The operator takes a2 out of the line (its key cleared): a3 runs.
    conn.batch_execute(&format!(
        "UPDATE consistency_task SET ordering_key = NULL WHERE id = {a2}"
    ))
    .unwrap();
    assert_eq!(claim_of(&mut conn, "default", T0 + 9_000, 8, 10), vec![a3]);
}

/// Two transactions that enqueue one key at once may commit in the other order than they
/// inserted: the later id can run first, and then the earlier one waits for it instead of
/// running beside it. Once the later one's lease lapses (its worker died), the earlier goes.
pub(super) fn ordering_key_waits_for_a_later_row_running<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let early = insert(&mut conn, &keyed(T0 - 10, "k"));
    let late = insert(&mut conn, &keyed(T0 - 20, "k"));
    // `late` was claimed while `early`'s transaction had not committed yet.
    conn.batch_execute(&format!(
        "UPDATE consistency_task SET task_status = 1, lease_expires_at = {}, lease_token = 77 \
         WHERE id = {late}",
        T0 + 30_000
    ))
    .unwrap();
    assert!(claim_of(&mut conn, "default", T0, 1, 10).is_empty());
    // The lease lapsed: `early` is claimable, and `late` waits behind it now.
    assert_eq!(
        claim_of(&mut conn, "default", T0 + 30_001, 2, 10),
        vec![early]
    );
}

/// Claimers racing over many keys never hold two rows of one key at once, and take each key's
/// rows in id order.
pub(super) fn racing_claimers_keep_each_key_in_line<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let keys = 20usize;
    let per_key = 10i64;
    let total = keys * per_key as usize;
    let rows: Vec<NewRow> = (0..per_key)
        .flat_map(|i| (0..keys).map(move |k| keyed(T0 - 1_000 + i, &format!("key-{k}"))))
        .collect();
    assert_eq!(conn.insert_many(&rows).unwrap(), total);
    // Every row but each key's first waits in line from the start: from here on each key
    // advances only through the releases below.
    assert_eq!(
        conn.defer_blocked("default", T0, 1000).unwrap(),
        total - keys
    );
    drop(conn);
    let order: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let holding: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let deferred = Arc::new(AtomicUsize::new(0));
    thread::scope(|s| {
        // Puts blocked rows in line all along (rows released early by a race would be put
        // back): with the releases below, and no sweep, every row must still run (a release
        // lost to a race with this would leave its key stuck and the test would time out).
        let (done2, deferred2) = (done.clone(), deferred.clone());
        s.spawn(move || {
            let mut conn = db.connect();
            while done2.load(Ordering::SeqCst) < total {
                let n = retry_transient(|| conn.defer_blocked("default", T0, 1000))
                    .unwrap_or_else(|e| panic!("defer_blocked: {e}"));
                deferred2.fetch_add(n, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(2));
            }
        });
        for w in 0..4i64 {
            let (order, holding, done) = (order.clone(), holding.clone(), done.clone());
            s.spawn(move || {
                let mut conn = db.connect();
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut token = 1_000 * (w + 1);
                while done.load(Ordering::SeqCst) < total {
                    assert!(Instant::now() < deadline, "the keys did not drain in 60 s");
                    token += 1;
                    let c = Claim {
                        queue: Some("default"),
                        ..claim_args(T0, T0 + 60_000, token, 3, None)
                    };
                    let got = match retry_transient(|| conn.claim(&c)) {
                        Ok(got) => got,
                        Err(e) => panic!("claim: {e}"),
                    };
                    for r in &got {
                        let key = r.task.ordering_key.clone().expect("keyed");
                        assert!(
                            holding.lock().unwrap().insert(key.clone()),
                            "two rows of {key} held at once"
                        );
                        order.lock().unwrap().push((key, r.task.id));
                    }
                    thread::sleep(Duration::from_millis(1));
                    for r in &got {
                        let key = r.task.ordering_key.clone().unwrap();
                        holding.lock().unwrap().remove(&key);
                        assert_eq!(
                            retry_transient(|| conn.complete(token, &[r.task.id])).unwrap(),
                            1
                        );
                        retry_transient(|| conn.release_next(&key, r.task.id, T0)).unwrap();
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let order = order.lock().unwrap();
    assert_eq!(order.len(), total);

    let mut last: HashMap<&str, i64> = HashMap::new();
    for (key, id) in order.iter() {
        if let Some(prev) = last.insert(key, *id) {
            assert!(prev < *id, "{key}: {id} ran after {prev}");
        }
    }
}

fn waiting<C: Ops>(conn: &mut C, id: i64) -> bool {
    found(conn, id).execute_time == crate::status::WAITING
}

/// Rows blocked behind their key move into the line, out of the claims' way, and come out one
/// at a time as the row before each is deleted or kept as succeeded.
pub(super) fn blocked_rows_wait_in_line_and_come_out_in_order<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let a1 = insert(&mut conn, &keyed(T0 - 100, "a"));
    let a2 = insert(&mut conn, &keyed(T0 - 100, "a"));
    let a3 = insert(&mut conn, &keyed(T0 - 100, "a"));
    let b1 = insert(&mut conn, &keyed(T0 - 100, "b"));
    let later = insert(&mut conn, &keyed(T0 + 60_000, "a")); // not due: not touched
    assert_eq!(claim_of(&mut conn, "default", T0, 1, 10), vec![a1, b1]);
    assert_eq!(conn.defer_blocked("default", T0, 1000).unwrap(), 2);
    assert!(waiting(&mut conn, a2) && waiting(&mut conn, a3));
    assert_eq!(found(&mut conn, later).execute_time, T0 + 60_000);
    assert_eq!(
        conn.defer_blocked("default", T0, 1000).unwrap(),
        0,
        "nothing left"
    );
    assert!(claim_of(&mut conn, "default", T0 + 1, 2, 10).is_empty());
    // a1 done: a2 comes out, a3 stays in line behind it.
    assert_eq!(conn.complete(1, &[a1]).unwrap(), 1);
    assert_eq!(conn.release_next("a", a1, T0 + 5).unwrap(), 1);
    assert_eq!(found(&mut conn, a2).execute_time, T0 + 5);
    assert!(waiting(&mut conn, a3));
    assert_eq!(claim_of(&mut conn, "default", T0 + 5, 3, 10), vec![a2]);
    // Released twice (a retried release): nothing more comes out.
    assert_eq!(conn.release_next("a", a1, T0 + 5).unwrap(), 0);
    // a2 kept as succeeded (status 3): a3 comes out.
    conn.finish(&[finish(a2, 3, 3, PARKED, T0 + 6)]).unwrap();
    assert_eq!(conn.release_next("a", a2, T0 + 6).unwrap(), 1);
    assert_eq!(claim_of(&mut conn, "default", T0 + 6, 4, 10), vec![a3]);
    // The sweep: b2 in line behind b1, b1 deleted without a release (a process died between
    // the two): the sweep releases b2, and never a row whose key still has a row before it.
    let b2 = insert(&mut conn, &keyed(T0 - 100, "b"));
    let a4 = insert(&mut conn, &keyed(T0 - 100, "a"));
    assert_eq!(conn.defer_blocked("default", T0 + 7, 1000).unwrap(), 2);
    assert_eq!(conn.complete(1, &[b1]).unwrap(), 1);
    assert_eq!(conn.release_orphans("default", T0 + 8, 1000).unwrap(), 1);
    assert_eq!(found(&mut conn, b2).execute_time, T0 + 8);
    assert!(waiting(&mut conn, a4), "a3 still runs: a4 waits");
    assert_eq!(conn.release_orphans("default", T0 + 8, 1000).unwrap(), 0);
    // A row in line is never claimed, whatever the time.
    assert!(claim_of(&mut conn, "default", T0 + 1_000_000_000, 5, 10)
        .iter()
        .all(|id| *id != a4));
}

/// A row whose priority is outside the claimed levels (written by hand) is never claimed, so the
/// sweep holds it with a message saying why; in-range, other-queue, not-yet-due and finished
/// rows are left alone.
pub(super) fn out_of_range_priorities_are_held_not_left_unseen<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let high = insert(&mut conn, &queued(T0 - 10, "mail", 9));
    let low = insert(&mut conn, &queued(T0 - 10, "mail", i32::MIN));
    let top = insert(&mut conn, &queued(T0 - 10, "mail", 3));
    let other = insert(&mut conn, &queued(T0 - 10, "sms", 9));
    let later = insert(&mut conn, &queued(T0 + 60_000, "mail", 9));
    assert_eq!(claim_of(&mut conn, "mail", T0, 1, 10), vec![top]);
    assert_eq!(conn.hold_out_of_range("mail", T0).unwrap(), 2);
    for id in [high, low] {
        let r = found(&mut conn, id);
        assert_eq!(r.task_status, 5, "held");
        assert_eq!(r.execute_time, PARKED);
        assert!(
            r.error_msg.contains("priority outside -3..3"),
            "{}",
            r.error_msg
        );
    }
    for id in [other, later] {
        assert_eq!(found(&mut conn, id).task_status, 0, "left alone");
    }
    assert_eq!(
        found(&mut conn, top).task_status,
        1,
        "the claimed row keeps its lease"
    );
    assert_eq!(conn.hold_out_of_range("mail", T0).unwrap(), 0);
}
