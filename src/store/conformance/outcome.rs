//! Finishing and extending: reschedule, park, release, purge, lease extension.

use super::*;

pub(super) fn finish_reschedules_and_parks<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let id = insert(&mut conn, &row(T0));
    claim(&mut conn, T0, T0 + 30_000, 5, 10, None);
    let failed = Finish {
        error_msg: "boom".into(),
        fallback_error_msg: Some("fallback boom".into()),
        ..finish(id, 5, 2, T0 + 5_000, T0 + 100)
    };
    assert_eq!(conn.finish(&[failed]).unwrap(), [id]);
    let r = found(&mut conn, id);
    assert_eq!(
        (r.task_status, r.execute_times, r.execute_time),
        (2, 1, T0 + 5_000)
    );
    assert_eq!(r.error_msg, "boom");
    assert_eq!(r.fallback_error_msg.as_deref(), Some("fallback boom"));
    assert_eq!(
        (r.lease_token, r.lease_owner, r.lease_expires_at),
        (None, None, None),
        "the lease is cleared"
    );
    assert_eq!(r.gmt_modified, T0 + 100);

    // Due exactly at the scheduled time, not before.
    assert!(claim(&mut conn, T0 + 4_999, T0 + 40_000, 6, 10, None).is_empty());
    let again = claim(&mut conn, T0 + 5_000, T0 + 40_000, 7, 10, None);
    assert_eq!(again[0].execute_times, 2);
    assert_eq!(
        again[0].error_msg, "boom",
        "the claim keeps the last message"
    );

    // Dead: parked for good.
    let dead = Finish {
        error_msg: "out of attempts: boom".into(),
        ..finish(id, 7, 4, PARKED, T0 + 6_000)
    };
    assert_eq!(conn.finish(&[dead]).unwrap(), [id]);
    assert!(claim(&mut conn, i64::MAX, i64::MAX, 8, 10, None).is_empty());
    let r = found(&mut conn, id);
    assert_eq!((r.task_status, r.execute_time), (4, PARKED));
    assert_eq!(r.error_msg, "out of attempts: boom");
}

pub(super) fn kept_completed_rows_are_purged_when_old<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let ids_in =
        |conn: &mut D::Conn| -> BTreeSet<i64> { D::rows(conn).iter().map(|r| r.id).collect() };
    // Three completed rows kept at T0 + 1..3, one kept at T0 + 50, and rows in other statuses
    // last modified long ago: only old *completed* rows may go.
    let mut done = Vec::new();
    for i in 0..4 {
        let id = insert(&mut conn, &row(T0));
        claim(&mut conn, T0, T0 + 30_000, 100 + i, 1, Some(&[id]));
        let at = if i < 3 { T0 + 1 + i } else { T0 + 50 };
        let kept = Finish {
            duration_ms: Some(1_234 + i),
            ..finish(id, 100 + i, 3, PARKED, at)
        };
        assert_eq!(conn.finish(&[kept]).unwrap(), [id]);
        done.push(id);
    }
    let r = found(&mut conn, done[0]);
    assert_eq!(
        (r.task_status, r.execute_time, r.duration_ms),
        (3, PARKED, Some(1_234))
    );
    assert!(claim(&mut conn, i64::MAX, i64::MAX, 1, 10, None).is_empty());
    let others: Vec<i64> = [0, 2, 4, 5]
        .iter()
        .map(|&status| {
            insert(
                &mut conn,
                &NewRow {
                    task_status: status,
                    gmt_modified: T0 - WEEK,
                    ..row(PARKED)
                },
            )
        })
        .collect();

    assert_eq!(
        conn.purge_completed(T0 + 10, 2).unwrap(),
        2,
        "the limit holds"
    );
    assert_eq!(conn.purge_completed(T0 + 10, 2).unwrap(), 1);
    assert_eq!(conn.purge_completed(T0 + 10, 2).unwrap(), 0);
    let mut left: BTreeSet<i64> = others.iter().copied().collect();
    left.insert(done[3]);
    assert_eq!(ids_in(&mut conn), left);
    // `before` is exclusive.
    assert_eq!(conn.purge_completed(T0 + 50, 10).unwrap(), 0);
    assert_eq!(conn.purge_completed(T0 + 51, 10).unwrap(), 1);
}

pub(super) fn finish_with_minus_one_releases_the_attempt<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let fresh = insert(&mut conn, &row(T0));
    let retried = insert(
        &mut conn,
        &NewRow {
            task_status: 2,
            execute_times: 1,
            error_msg: "first failure".into(),
            ..row(T0)
        },
    );
    claim(&mut conn, T0, T0 + 30_000, 3, 10, None);
    // Shutdown hands both back unstarted: the attempt is not counted.
    let release = |id, status, msg: &str| Finish {
        error_msg: msg.into(),
        attempts_delta: -1,
        ..finish(id, 3, status, T0 + 10, T0 + 10)
    };
    let held = conn
        .finish(&[release(fresh, 0, ""), release(retried, 2, "first failure")])
        .unwrap();
    assert_eq!(
        held.iter().copied().collect::<BTreeSet<_>>(),
        [fresh, retried].into()
    );
    for (id, status, times, msg) in [(fresh, 0, 0, ""), (retried, 2, 1, "first failure")] {
        let r = found(&mut conn, id);
        assert_eq!((r.task_status, r.execute_times), (status, times));
        assert_eq!(r.execute_time, T0 + 10);
        assert_eq!(r.error_msg, msg);
        assert_eq!(
            (r.lease_token, r.lease_owner, r.lease_expires_at),
            (None, None, None)
        );
    }
    // And it is claimable again at once.
    assert_eq!(
        ids(&claim(&mut conn, T0 + 10, T0 + 30_000, 4, 10, None)),
        [fresh, retried].into()
    );
}

pub(super) fn finish_reports_only_rows_still_held<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let a = insert(&mut conn, &row(T0));
    let b = insert(&mut conn, &row(T0));
    claim(&mut conn, T0, T0 + 1_000, 1, 10, None);
    // b's lease runs out and another worker takes it.
    claim(&mut conn, T0 + 2_000, T0 + 30_000, 2, 10, Some(&[b]));
    let b_before = found(&mut conn, b);
    let held = conn
        .finish(&[
            finish(a, 1, 2, T0 + 9_000, T0 + 2_500),
            finish(b, 1, 2, T0 + 9_000, T0 + 2_500),
            finish(999_999, 1, 2, T0 + 9_000, T0 + 2_500),
        ])
        .unwrap();
    assert_eq!(held, [a]);
    assert_eq!(found(&mut conn, a).task_status, 2);
    assert_same_row(&b_before, &found(&mut conn, b));
    assert_eq!(conn.finish(&[]).unwrap(), Vec::<i64>::new());
}

pub(super) fn extend_pushes_the_lease<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let mine = insert(&mut conn, &row(T0));
    let theirs = insert(&mut conn, &row(T0));
    claim(&mut conn, T0, T0 + 1_000, 1, 1, Some(&[mine]));
    claim(&mut conn, T0, T0 + 1_000, 2, 1, Some(&[theirs]));
    assert_eq!(
        conn.extend(1, &[mine, theirs], T0 + 10_000).unwrap(),
        1,
        "only rows held under the token"
    );
    let r = found(&mut conn, mine);
    assert_eq!(r.lease_expires_at, Some(T0 + 10_000));
    assert_eq!(
        (r.execute_time, r.gmt_modified),
        (T0, T0),
        "only the lease's end moves (no indexed column)"
    );
    assert_eq!((r.task_status, r.execute_times), (1, 1));
    assert_eq!(found(&mut conn, theirs).lease_expires_at, Some(T0 + 1_000));
    // Past the old expiry the extended row is still held; the other one is free.
    assert_eq!(
        ids(&claim(&mut conn, T0 + 5_000, T0 + 40_000, 3, 10, None)),
        [theirs].into()
    );
    assert_eq!(
        ids(&claim(&mut conn, T0 + 10_000, T0 + 40_000, 4, 10, None)),
        [mine].into()
    );
}

/// `cancel`: pending, failed and held rows become dead and parked with the message; running
/// ones only when asked (their lease dropped); succeeded, dead and unknown statuses never.
pub(super) fn cancel_parks_what_the_rules_allow<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let ids: Vec<i64> = [0, 2, 5, 3, 4, 9]
        .into_iter()
        .map(|status| {
            insert(
                &mut conn,
                &NewRow {
                    task_status: status,
                    ..row(T0)
                },
            )
        })
        .collect();
    let running = insert(&mut conn, &row(T0 - 1));
    let leased = claim(&mut conn, T0 - 1, T0 + 30_000, 8, 1, None);
    assert_eq!(leased[0].id, running);
    let cancelled: Vec<bool> = ids
        .iter()
        .map(|&id| conn.cancel(id, T0 + 5, "cancelled", false).unwrap())
        .collect();
    assert_eq!(cancelled, [true, true, true, false, false, false]);
    for &id in &ids[..3] {
        let r = found(&mut conn, id);
        assert_eq!(
            (
                r.task_status,
                r.execute_time,
                r.error_msg.as_str(),
                r.gmt_modified
            ),
            (4, PARKED, "cancelled", T0 + 5)
        );
    }
    assert_eq!(found(&mut conn, ids[5]).task_status, 9);
    assert!(!conn.cancel(running, T0 + 5, "x", false).unwrap());
    assert!(conn.cancel(running, T0 + 5, "forced", true).unwrap());
    let r = found(&mut conn, running);
    assert_eq!((r.task_status, r.lease_token), (4, None));
    // The worker's fenced write finds no lease.
    assert!(conn.complete(8, &[running]).unwrap() == 0);
    assert!(!conn.cancel(424_242, T0, "x", true).unwrap());
}
