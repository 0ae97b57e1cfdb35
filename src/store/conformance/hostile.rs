//! Hostile rows: every column's extremes, rows another claimer took between a claim's read and
//! its lease, and rows no claim can lease. No stored value may fail a claim or an outcome
//! write, since one such row would stop every other row of the table from being claimed.

use super::*;

/// `n` characters of two bytes each: the longest value a `VARCHAR(n)` takes, as bytes too.
fn longest(n: usize) -> String {
    "é".repeat(n)
}

/// Rows with one column at an extreme each, every other column plain and due at `T0 - 1`.
fn extreme_rows() -> Vec<(String, NewRow)> {
    let mut out: Vec<(String, NewRow)> = Vec::new();
    let base = || row(T0 - 1);
    for v in [i32::MIN, -1, 0, 1, 9, i32::MAX] {
        out.push((
            format!("task_status={v}"),
            NewRow {
                task_status: v,
                ..base()
            },
        ));
    }
    for v in [i32::MIN, -1, 0, i32::MAX - 1, i32::MAX] {
        for (name, set) in [
            (
                "execute_times",
                (|r: &mut NewRow, v| r.execute_times = v) as fn(&mut NewRow, i32),
            ),
            ("max_attempts", |r, v| r.max_attempts = v),
            ("execute_interval_sec", |r, v| r.execute_interval_sec = v),
            ("delay_time", |r, v| r.delay_time = v),
            ("payload_version", |r, v| r.payload_version = v),
            ("execute_way", |r, v| r.execute_way = v),
            ("thread_way", |r, v| r.thread_way = v),
            ("transaction_way", |r, v| r.transaction_way = v),
        ] {
            let mut r = base();
            set(&mut r, v);
            out.push((format!("{name}={v}"), r));
        }
    }
    for v in [i64::MIN, -1, 0, i64::MAX] {
        for (name, set) in [
            (
                "execute_time",
                (|r: &mut NewRow, v| r.execute_time = v) as fn(&mut NewRow, i64),
            ),
            ("shard_key", |r, v| r.shard_key = v),
            ("lease_token", |r, v| r.lease_token = Some(v)),
            ("lease_expires_at", |r, v| r.lease_expires_at = Some(v)),
            ("gmt_create", |r, v| r.gmt_create = v),
            ("gmt_modified", |r, v| r.gmt_modified = v),
        ] {
            let mut r = base();
            set(&mut r, v);
            out.push((format!("{name}={v}"), r));
        }
    }
    // Empty and longest strings; NULL and longest for the nullable ones.
    type SetText = fn(&mut NewRow, Option<String>);
    let texts: [(&str, SetText, usize); 12] = [
        (
            "task_id",
            |r, v| r.task_id = v.unwrap_or_default().into(),
            500,
        ),
        (
            "parameter_types",
            |r, v| r.parameter_types = v.unwrap_or_default().into(),
            255,
        ),
        (
            "method_name",
            |r, v| r.method_name = v.unwrap_or_default().into(),
            100,
        ),
        (
            "method_sign_name",
            |r, v| r.method_sign_name = v.unwrap_or_default().into(),
            200,
        ),
        (
            "error_msg",
            |r, v| r.error_msg = v.unwrap_or_default(),
            32 * 1024,
        ),
        ("idempotency_key", |r, v| r.idempotency_key = v, 255),
        (
            "alert_expression",
            |r, v| r.alert_expression = v.map(Into::into),
            16 * 1024,
        ),
        (
            "alert_action_bean_name",
            |r, v| r.alert_action_bean_name = v,
            255,
        ),
        ("fallback_class_name", |r, v| r.fallback_class_name = v, 255),
        (
            "fallback_error_msg",
            |r, v| r.fallback_error_msg = v,
            32 * 1024,
        ),
        ("lease_owner", |r, v| r.lease_owner = v, 255),
        (
            "task_parameter",
            |r, v| r.task_parameter = v.map(String::into_bytes).unwrap_or_default(),
            32 * 1024,
        ),
    ];
    for (name, set, max) in texts {
        for (what, v) in [
            ("null/empty", None),
            ("empty", Some(String::new())),
            ("longest", Some(longest(max))),
        ] {
            // An empty idempotency key is unique like any other: one of them.
            if name == "idempotency_key" && what == "null/empty" {
                continue;
            }
            let mut r = base();
            set(&mut r, v);
            out.push((format!("{name} {what}"), r));
        }
    }
    // Extremes together: the worst row.
    out.push((
        "all extremes".into(),
        NewRow {
            task_status: 1,
            execute_times: i32::MAX,
            max_attempts: i32::MIN,
            execute_time: i64::MIN,
            execute_interval_sec: i32::MIN,
            shard_key: i64::MIN,
            lease_token: Some(i64::MAX),
            lease_expires_at: Some(i64::MIN),
            gmt_create: i64::MAX,
            gmt_modified: i64::MIN,
            ..base()
        },
    ));
    out
}

/// Every column at its minimum, maximum, -1, NULL where nullable, empty and longest: each
/// row stores, is claimed when its status and due time say so, and takes every outcome, and
/// no claim or outcome fails.
pub(super) fn extreme_values_never_fail_a_claim_or_an_outcome<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let rows = extreme_rows();
    let mut expect_claimed = BTreeSet::new();
    let mut by_id: HashMap<i64, (String, NewRow)> = HashMap::new();
    for (what, r) in rows {
        let id = conn
            .insert_one(&r)
            .unwrap_or_else(|e| panic!("{}: inserting {what}: {e}", D::BACKEND))
            .expect("a new row");
        assert_stored(&r, &found(&mut conn, id));
        // `lease::claimable`: idle, or running under a lapsed (or no) lease; and due.
        let lapsed = r.lease_expires_at.is_none_or(|l| l <= T0);
        if (r.task_status == 0 || r.task_status == 2 || (r.task_status == 1 && lapsed))
            && r.execute_time <= T0
        {
            expect_claimed.insert(id);
        }
        by_id.insert(id, (what, r));
    }
    // Small claims, so that every row meets others in a batch.
    let mut claimed: Vec<TaskRow> = Vec::new();
    for token in 1.. {
        let got = conn
            .claim(&claim_args(T0, T0 + 30_000, token, 7, None))
            .unwrap_or_else(|e| panic!("{}: a claim failed: {e}", D::BACKEND));
        if got.is_empty() {
            break;
        }
        claimed.extend(got.into_iter().map(|c| c.task));
    }
    assert_eq!(
        ids(&claimed),
        expect_claimed,
        "{}: claimed rows",
        D::BACKEND
    );
    for r in &claimed {
        let (what, new) = &by_id[&r.id];
        let want = new.execute_times.saturating_add(1);
        assert_eq!(
            r.execute_times,
            want,
            "{}: {what}: execute_times",
            D::BACKEND
        );
        assert_eq!(found(&mut conn, r.id).execute_times, want, "{what}: stored");
    }
    // Released unstarted (-1), claimed again, then parked: no outcome fails either.
    let release: Vec<Finish> = claimed
        .iter()
        .map(|r| Finish {
            attempts_delta: -1,
            ..finish(r.id, r.lease_token.unwrap(), 2, T0 - 1, T0)
        })
        .collect();
    let held = conn.finish(&release).expect("releasing every claimed row");
    assert_eq!(held.len(), claimed.len());
    for r in &claimed {
        let (what, new) = &by_id[&r.id];
        // Saturating at both ends: i32::MAX stays, i32::MIN + 1 - 1 is i32::MIN again.
        let want = new.execute_times.saturating_add(1).saturating_sub(1);
        assert_eq!(
            found(&mut conn, r.id).execute_times,
            want,
            "{what}: released"
        );
    }
    let again = conn
        .claim(&claim_args(T0, T0 + 30_000, 99, 1000, None))
        .expect("claiming the released rows");
    assert_eq!(again.len(), claimed.len());
    let park: Vec<Finish> = again
        .iter()
        .map(|c| Finish {
            error_msg: longest(32 * 1024),
            ..finish(c.task.id, 99, 4, PARKED, T0)
        })
        .collect();
    assert_eq!(conn.finish(&park).expect("parking").len(), again.len());
    assert_eq!(
        conn.first_due("default", i64::MAX - 1, &[])
            .expect("first_due"),
        None
    );
}

/// A claim whose `SELECT` read rows that another claimer leased before this claim's update
/// (a server whose `SKIP LOCKED` takes no lock, or locks on one node only) leases only the
/// rows still claimable, and returns only those: no row is ever leased twice.
pub(super) fn lease_rechecks_rows_another_claimer_took<D: Db>(db: &D) {
    let mut conn = migrated(db);
    for i in 0..5 {
        insert(&mut conn, &row(T0 - 10 + i));
    }
    // Claimer A reads the due rows as its SELECT would, without locking anything...
    let read_by_a = D::rows(&mut conn);
    assert_eq!(read_by_a.len(), 5);
    // ...claimer B leases the two oldest meanwhile, and a third becomes dead.
    let b = claim(&mut conn, T0, T0 + 30_000, 2, 2, None);
    assert_eq!(ids(&b), ids(&read_by_a[..2]));
    let c = claim(&mut conn, T0, T0 + 30_000, 3, 1, None);
    conn.finish(&[finish(c[0].id, 3, 4, PARKED, T0)]).unwrap();
    // A's lease takes only the two rows nobody touched.
    let a = conn
        .lease(
            &claim_args(T0, T0 + 30_000, 1, 10, None),
            read_by_a.iter().map(ClaimRow::of).collect(),
        )
        .expect("A's lease");
    let a_ids: BTreeSet<i64> = a.iter().map(|c| c.task.id).collect();
    assert_eq!(a_ids, ids(&read_by_a[3..]), "{}", D::BACKEND);
    assert!(a
        .iter()
        .all(|c| c.task.lease_token == Some(1) && c.prev_status == 0));
    for r in &b {
        let now = found(&mut conn, r.id);
        assert_eq!(now.lease_token, Some(2), "B's lease stands");
        assert_eq!(now.execute_times, 1, "leased once");
    }
    let dead = found(&mut conn, c[0].id);
    assert_eq!((dead.task_status, dead.lease_token), (4, None));
    // The common case: every row still claimable, all leased, no extra read.
    insert(&mut conn, &row(T0 - 1));
    let fresh: Vec<TaskRow> = D::rows(&mut conn)
        .into_iter()
        .filter(|r| r.task_status == 0)
        .collect();
    let leased = conn
        .lease(
            &claim_args(T0, T0 + 30_000, 4, 10, None),
            fresh.iter().map(ClaimRow::of).collect(),
        )
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].task.execute_times, 1);
    assert_eq!(found(&mut conn, fresh[0].id).lease_token, Some(4));
}

/// The fetcher's isolation of a row no claim can lease: `first_due` finds it reading only its
/// id (skipping excluded ids), and `hold_unclaimable` holds it with a message unless it is no
/// longer claimable.
pub(super) fn an_unclaimable_row_is_found_and_held<D: Db>(db: &D) {
    let mut conn = migrated(db);
    assert_eq!(conn.first_due("default", T0, &[]).unwrap(), None);
    let a = insert(&mut conn, &row(T0 - 3));
    let b = insert(&mut conn, &row(T0 - 2));
    let parked = insert(
        &mut conn,
        &NewRow {
            task_status: 4,
            ..row(PARKED)
        },
    );
    let unknown = insert(
        &mut conn,
        &NewRow {
            task_status: 9,
            ..row(T0 - 9)
        },
    );
    assert_eq!(conn.first_due("default", T0, &[]).unwrap(), Some(a));
    assert_eq!(conn.first_due("default", T0, &[a]).unwrap(), Some(b));
    assert_eq!(conn.first_due("default", T0, &[a, b]).unwrap(), None);
    assert_eq!(conn.first_due("default", T0 - 3, &[]).unwrap(), Some(a));
    assert_eq!(conn.first_due("default", T0 - 4, &[]).unwrap(), None);

    let msg = "held: no claim could lease this row (boom)";
    assert_eq!(conn.hold_unclaimable(a, T0, msg).unwrap(), 1);
    let held = found(&mut conn, a);
    assert_eq!(
        (held.task_status, held.execute_time, held.error_msg.as_str()),
        (5, PARKED, msg)
    );
    assert_eq!(
        (held.lease_token, held.lease_owner, held.gmt_modified),
        (None, None, T0)
    );
    // Not again, and never a row that is not claimable now.
    assert_eq!(conn.hold_unclaimable(a, T0, msg).unwrap(), 0);
    assert_eq!(conn.hold_unclaimable(parked, T0, msg).unwrap(), 0);
    assert_eq!(conn.hold_unclaimable(unknown, T0, msg).unwrap(), 0);
    let leased = claim(&mut conn, T0, T0 + 30_000, 7, 1, None);
    assert_eq!(leased[0].id, b);
    assert_eq!(conn.hold_unclaimable(b, T0, msg).unwrap(), 0, "leased");
    assert_eq!(found(&mut conn, b).lease_token, Some(7));
    assert_eq!(
        found(&mut conn, unknown).task_status,
        9,
        "unknown status left alone"
    );
}
