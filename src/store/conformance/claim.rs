//! Claiming: due order, leases, limits, parked rows, targeted claims, stale tokens.

use super::*;

pub(super) fn claim_takes_due_rows_oldest_first<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let mut at = HashMap::new();
    // Inserted out of due order; one is a week overdue (the seed's one-hour window starved
    // those), one is not due yet.
    for when in [
        T0 - 1_000,
        T0 - 3_000,
        T0 + 60_000,
        T0 - WEEK,
        T0,
        T0 - 2_000,
    ] {
        at.insert(when, insert(&mut conn, &row(when)));
    }
    let want = |times: &[i64]| times.iter().map(|w| at[w]).collect::<BTreeSet<i64>>();
    let lease = T0 + 30_000;
    assert_eq!(
        ids(&claim(&mut conn, T0, lease, 1, 2, None)),
        want(&[T0 - WEEK, T0 - 3_000])
    );
    assert_eq!(
        ids(&claim(&mut conn, T0, lease, 2, 2, None)),
        want(&[T0 - 2_000, T0 - 1_000])
    );
    assert_eq!(ids(&claim(&mut conn, T0, lease, 3, 10, None)), want(&[T0]));
    assert!(claim(&mut conn, T0, lease, 4, 10, None).is_empty());
    assert_eq!(found(&mut conn, at[&(T0 + 60_000)]).task_status, 0);
}

pub(super) fn claim_leases_the_rows<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let before = NewRow {
        task_status: 2,
        execute_times: 2,
        error_msg: "the previous attempt's failure".into(),
        idempotency_key: Some("claimed-with-a-key".into()),
        ..row(T0 - 10)
    };
    let id = insert(&mut conn, &before);
    let claimed = claim(&mut conn, T0, T0 + 30_000, 77, 10, None);
    assert_eq!(claimed.len(), 1);
    let got = &claimed[0];
    assert_eq!(got.id, id);
    assert_eq!(got.task_status, 1, "running");
    assert_eq!(got.execute_times, 3, "the attempt is counted at claim");
    assert_eq!(
        got.execute_time,
        T0 - 10,
        "the lease leaves the due time (it touches no indexed column)"
    );
    assert_eq!(got.lease_expires_at, Some(T0 + 30_000));
    assert_eq!(got.lease_token, Some(77));
    assert_eq!(got.lease_owner.as_deref(), Some("conformance-owner"));
    let stored = found(&mut conn, id);
    assert_eq!(
        (stored.execute_time, stored.gmt_modified),
        (T0 - 10, before.gmt_modified),
        "the lease writes neither the due time nor gmt_modified"
    );
    // Everything else is untouched.
    let expect = NewRow {
        task_status: 1,
        execute_times: 3,
        lease_expires_at: Some(T0 + 30_000),
        lease_token: Some(77),
        lease_owner: Some("conformance-owner".into()),
        ..before
    };
    let stored = found(&mut conn, id);
    assert_stored(&expect, &stored);
    // What the claim returned is what it stored, but for the columns it does not read.
    assert_same_row(got, &as_claimed(&stored));
    assert_eq!(got.queue, "", "a claim reads no queue name");
    assert_eq!(stored.queue, "default");
    // Due, but held: no claim takes it before the lease lapses; one at the lapse does.
    assert!(claim(&mut conn, T0 + 29_999, T0 + 60_000, 78, 10, None).is_empty());
    assert_eq!(
        ids(&claim(&mut conn, T0 + 30_000, T0 + 60_000, 79, 10, None)),
        [id].into()
    );
}

pub(super) fn claim_reports_the_previous_status<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let pending = insert(&mut conn, &row(T0 - 3));
    let failed = insert(
        &mut conn,
        &NewRow {
            task_status: 2,
            execute_times: 1,
            ..row(T0 - 2)
        },
    );
    let expired = insert(&mut conn, &row(T0 - 1));
    claim(&mut conn, T0 - 1, T0, 1, 1, Some(&[expired]));
    // `expired` is now running under a lease that ends at T0: a reclaim at T0 takes it over.
    let got: HashMap<i64, i32> = claimed(&mut conn, T0, T0 + 30_000, 2, 10, None)
        .into_iter()
        .map(|c| (c.task.id, c.prev_status))
        .collect();
    assert_eq!(got, [(pending, 0), (failed, 2), (expired, 1)].into());
}

pub(super) fn claim_skips_leased_rows<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let id = insert(&mut conn, &row(T0));
    assert_eq!(
        ids(&claim(&mut conn, T0, T0 + 30_000, 1, 10, None)),
        [id].into()
    );
    let held = found(&mut conn, id);
    for now in [T0, T0 + 1, T0 + 29_999] {
        assert!(
            claim(&mut conn, now, now + 30_000, 2, 10, None).is_empty(),
            "claimed at {now} while leased until {}",
            T0 + 30_000
        );
        assert!(claim(&mut conn, now, now + 30_000, 3, 10, Some(&[id])).is_empty());
    }
    assert_same_row(&held, &found(&mut conn, id));
}

pub(super) fn expired_lease_is_claimed_again_with_a_new_token<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let id = insert(&mut conn, &row(T0));
    let first = claim(&mut conn, T0, T0 + 1_000, 1, 10, None);
    assert_eq!(first[0].lease_token, Some(1));
    // The worker died. At its lease's expiry (inclusive) the row is due again.
    let again = claim(&mut conn, T0 + 1_000, T0 + 2_000, 2, 10, None);
    assert_eq!(ids(&again), [id].into());
    let r = found(&mut conn, id);
    assert_eq!(r.lease_token, Some(2), "a new fencing token");
    assert_eq!(r.execute_times, 2);
    assert_eq!(r.lease_expires_at, Some(T0 + 2_000));
    assert_eq!(r.task_status, 1);
}

pub(super) fn stale_token_cannot_complete_finish_or_extend<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let id = insert(&mut conn, &row(T0));
    claim(&mut conn, T0, T0 + 1_000, 1, 10, None);
    claim(&mut conn, T0 + 5_000, T0 + 35_000, 2, 10, None);
    let before = found(&mut conn, id);
    assert_eq!(before.lease_token, Some(2));

    // The worker whose lease was taken over reports late: every write is refused.
    assert_eq!(conn.complete(1, &[id]).unwrap(), 0);
    let late = Finish {
        error_msg: "late failure".into(),
        ..finish(id, 1, 2, T0 + 60_000, T0 + 6_000)
    };
    assert_eq!(conn.finish(&[late]).unwrap(), Vec::<i64>::new());
    assert_eq!(conn.extend(1, &[id], T0 + 99_000).unwrap(), 0);
    assert_same_row(&before, &found(&mut conn, id));
    // Which rows a token still holds (what a claim that returned late keeps): none for the
    // old one, the row for the new one; ids that are no row are not held.
    assert_eq!(
        conn.held(1, &[id, id + 1000, -1]).unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(conn.held(2, &[id, id + 1000, -1]).unwrap(), vec![id]);
    assert_eq!(conn.held(2, &[]).unwrap(), Vec::<i64>::new());

    // The current holder's token works.
    assert_eq!(conn.extend(2, &[id], T0 + 60_000).unwrap(), 1);
    assert_eq!(conn.complete(2, &[id]).unwrap(), 1);
    assert!(conn.find(id).unwrap().is_none(), "success deletes the row");
}

pub(super) fn complete_deletes_only_rows_held_under_the_token<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let all: Vec<i64> = (0..5)
        .map(|i| insert(&mut conn, &row(T0 - 10 + i)))
        .collect();
    let mine = ids(&claim(&mut conn, T0, T0 + 30_000, 1, 3, None));
    let theirs = ids(&claim(&mut conn, T0, T0 + 30_000, 2, 10, None));
    assert_eq!(mine, all[..3].iter().copied().collect());
    assert_eq!(theirs, all[3..].iter().copied().collect());
    assert_eq!(conn.complete(1, &[all[0], all[1], all[3]]).unwrap(), 2);
    assert_eq!(conn.complete(1, &[]).unwrap(), 0);
    let left: Vec<i64> = D::rows(&mut conn).iter().map(|r| r.id).collect();
    assert_eq!(left, [all[2], all[3], all[4]]);
    // Ids that are no row, extremes and repeats delete nothing more and fail nothing.
    let odd = [i64::MIN, -1, 0, i64::MAX, all[2], all[2], all[3]];
    assert_eq!(conn.complete(1, &odd).unwrap(), 1);
    let left: Vec<i64> = D::rows(&mut conn).iter().map(|r| r.id).collect();
    assert_eq!(left, [all[3], all[4]]);
}

/// A completion larger than any claim batch (300 ids, beyond the 128 of the largest padded
/// id list) deletes every row held under its token, in one call.
pub(super) fn a_large_completion_deletes_every_held_row<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let rows: Vec<NewRow> = (0..300).map(|i| row(T0 - 1_000 + i)).collect();
    assert_eq!(conn.insert_many(&rows).unwrap(), 300);
    let held: Vec<i64> = ids(&claim(&mut conn, T0, T0 + 30_000, 7, 300, None))
        .into_iter()
        .collect();
    assert_eq!(held.len(), 300);
    assert_eq!(conn.complete(7, &held).unwrap(), 300);
    assert!(D::rows(&mut conn).is_empty());
}

pub(super) fn claim_respects_the_limit<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let all: BTreeSet<i64> = (0..10)
        .map(|i| insert(&mut conn, &row(T0 - 100 + i)))
        .collect();
    let mut seen = BTreeSet::new();
    for (token, want) in [(1, 3), (2, 3), (3, 1), (4, 3), (5, 10), (6, 10)] {
        let got = claim(&mut conn, T0, T0 + 30_000, token, want, None);
        let expected = want.min(10 - seen.len() as i64) as usize;
        assert_eq!(got.len(), expected, "claim with limit {want}");
        for r in &got {
            assert!(seen.insert(r.id), "row {} claimed twice", r.id);
        }
    }
    assert_eq!(seen, all);
}

pub(super) fn parked_and_finished_rows_are_never_claimed<D: Db>(db: &D) {
    let mut conn = migrated(db);
    // Dead, held and kept-succeeded rows: parked, and also due, and with their statuses the
    // claim never takes them, however late "now" is.
    for status in [3, 4, 5] {
        insert(
            &mut conn,
            &NewRow {
                task_status: status,
                ..row(PARKED)
            },
        );
        insert(
            &mut conn,
            &NewRow {
                task_status: status,
                ..row(T0 - WEEK)
            },
        );
    }
    assert!(claim(&mut conn, i64::MAX, i64::MAX, 1, 100, None).is_empty());
    // A claimable status parked at i64::MAX is out of reach of any real clock.
    for status in [0, 1, 2] {
        insert(
            &mut conn,
            &NewRow {
                task_status: status,
                ..row(PARKED)
            },
        );
    }
    assert!(claim(&mut conn, i64::MAX - 1, i64::MAX - 1, 2, 100, None).is_empty());
    let statuses: Vec<i32> = D::rows(&mut conn).iter().map(|r| r.task_status).collect();
    assert_eq!(statuses, [3, 3, 4, 4, 5, 5, 0, 1, 2], "nothing was touched");
}

pub(super) fn claim_by_ids_takes_only_those<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let due: Vec<i64> = (0..5)
        .map(|i| insert(&mut conn, &row(T0 - 10 + i)))
        .collect();
    let later = insert(&mut conn, &row(T0 + 60_000));
    let leased = insert(&mut conn, &row(T0 - 1_000));
    claim(&mut conn, T0, T0 + 30_000, 9, 1, Some(&[leased]));
    assert_eq!(found(&mut conn, leased).lease_token, Some(9));

    let asked = [due[1], due[3], later, leased, 999_999];
    let got = claim(&mut conn, T0, T0 + 30_000, 10, 100, Some(&asked));
    assert_eq!(ids(&got), [due[1], due[3]].into());
    assert!(claim(&mut conn, T0, T0 + 30_000, 11, 100, Some(&[])).is_empty());
    // The limit holds for targeted claims too.
    let got = claim(
        &mut conn,
        T0,
        T0 + 30_000,
        12,
        1,
        Some(&[due[0], due[2], due[4]]),
    );
    assert_eq!(got.len(), 1);
    for id in [due[0], due[2], due[4]] {
        if id != got[0].id {
            assert_eq!(found(&mut conn, id).task_status, 0);
        }
    }
}

/// A row whose attempt count is already at i32::MAX (written by hand or by another program) is
/// still claimed: the count saturates instead of overflowing (an error on PostgreSQL and MySQL
/// that failed every claim the row was in; a panic in `as_leased`). Found by fuzz/task_row.
pub(super) fn claim_saturates_the_attempt_count<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let at_max = NewRow {
        execute_times: i32::MAX,
        max_attempts: i32::MAX,
        ..row(T0 - 2)
    };
    let below = NewRow {
        execute_times: i32::MAX - 1,
        ..row(T0 - 1)
    };
    let (at_max, below) = (insert(&mut conn, &at_max), insert(&mut conn, &below));
    let claimed = claim(&mut conn, T0, T0 + 30_000, 78, 10, None);
    assert_eq!(ids(&claimed), BTreeSet::from([at_max, below]));
    for got in &claimed {
        assert_eq!(got.execute_times, i32::MAX, "row {}", got.id);
        assert_same_row(got, &as_claimed(&found(&mut conn, got.id)));
    }
}
