//! Inserting: every column round-trips, hot statements stay prepared, idempotency keys.

use super::*;

pub(super) fn insert_one_reads_back_every_column<D: Db>(db: &D) {
    let mut conn = migrated(db);
    assert_eq!(conn.backend(), D::BACKEND);
    let full = NewRow {
        task_id: "order-42".into(),
        idempotency_key: Some("ship-42".into()),
        task_status: 2,
        execute_times: 3,
        max_attempts: 7,
        execute_time: T0 + 123,
        parameter_types: "app::orders::Ship".into(),
        method_name: "ship".into(),
        method_sign_name: "orders.ship".into(),
        execute_interval_sec: 30,
        delay_time: 900,
        task_parameter: (0..=255u8).collect(),
        payload_version: 4,
        execute_way: 2,
        thread_way: 2,
        transaction_way: 2,
        error_msg: "gateway said 503 — réessayer 🚚".into(),
        alert_expression: Some("executeTimes > 1 && executeTimes < 5".into()),
        alert_action_bean_name: Some("pager".into()),
        fallback_class_name: Some("orders.ship_fallback".into()),
        fallback_error_msg: Some("fallback: 无法发货".into()),
        shard_key: -9_000_000_000,
        lease_token: Some(i64::MAX - 1),
        lease_owner: Some("host/1/ab".into()),
        lease_expires_at: Some(T0 + 30_000),
        gmt_create: T0 - 5,
        gmt_modified: T0 - 1,
        trace_parent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        queue: "mail.eu-1:x".into(),
        priority: -3,
        ordering_key: Some("訂單-42 🚚".into()),
    };
    let bare = NewRow {
        task_parameter: Vec::new(),
        shard_key: i64::MIN,
        execute_time: PARKED,
        ..row(0)
    };
    let full_id = insert(&mut conn, &full);
    let bare_id = insert(&mut conn, &bare);
    assert!(bare_id > full_id, "ids grow: {full_id} then {bare_id}");
    let got = found(&mut conn, full_id);
    assert_eq!(got.id, full_id);
    assert_stored(&full, &got);
    assert_stored(&bare, &found(&mut conn, bare_id));
    // A row whose options hold their defaults binds only 11 columns (`insert::is_bare`): the
    // database's defaults must be the values it stands for. One option off its default makes
    // it a lean row (18 columns, `insert::is_lean`).
    let defaults = NewRow {
        delay_time: 60,
        error_msg: "an error kept from before — 🚚".into(),
        alert_expression: Some(crate::task::DEFAULT_ALERT_EXPRESSION.into()),
        shard_key: i64::MAX,
        ..row(T0 + 9)
    };
    assert!(crate::store::insert::is_bare(&defaults));
    let id = insert(&mut conn, &defaults);
    assert_stored(&defaults, &found(&mut conn, id));
    for lean in [
        NewRow {
            max_attempts: 1,
            ..defaults.clone()
        },
        NewRow {
            execute_interval_sec: 1,
            ..defaults.clone()
        },
        NewRow {
            delay_time: 0,
            ..defaults.clone()
        },
        NewRow {
            payload_version: 0,
            ..defaults.clone()
        },
        NewRow {
            execute_way: 2,
            thread_way: 2,
            ..defaults.clone()
        },
        NewRow {
            transaction_way: 2,
            ..defaults.clone()
        },
    ] {
        assert!(!crate::store::insert::is_bare(&lean));
        let id = insert(&mut conn, &lean);
        assert_stored(&lean, &found(&mut conn, id));
    }
    // A lean row binds only the columns that differ from their defaults (`insert::is_lean`);
    // one non-default value among the others makes it bind every column.
    for one in [
        NewRow {
            priority: 1,
            ..row(0)
        },
        NewRow {
            queue: "q2".into(),
            ..row(0)
        },
        NewRow {
            execute_times: 1,
            ..row(0)
        },
        NewRow {
            lease_owner: Some("me".into()),
            ..row(0)
        },
    ] {
        let id = insert(&mut conn, &one);
        assert_stored(&one, &found(&mut conn, id));
    }
    // The same through `insert_many`: a batch of bare rows (the lean statement), then a batch
    // with one row off its defaults (every column bound for every row).
    let off = NewRow {
        priority: -2,
        queue: "q3".into(),
        ..row(7)
    };
    // Then batches of 3 whose rows share every column but their own (payload, shard key,
    // due time, name): on SQLite the later rows name the first row's placeholders for the
    // shared ones; a batch where a shared column differs, or with full rows, binds them all.
    let own = |t: i64, i: u8| NewRow {
        task_parameter: vec![i; i as usize],
        shard_key: -(i as i64) * 1_000_000_007,
        task_id: format!("conformance.task/{i}").into(),
        ..row(t)
    };
    let keyed = |t: i64, i: u8| NewRow {
        idempotency_key: Some(format!("batch-{t}")),
        ordering_key: Some(format!("k{i}")),
        trace_parent: Some(format!("00-{:032x}-00f067aa0ba902b7-01", t)),
        lease_owner: Some(format!("owner-{i}")),
        lease_token: Some(t * 3),
        lease_expires_at: Some(t * 5),
        queue: "q4".into(),
        alert_expression: Some("executeTimes > 3".into()),
        ..own(t, i)
    };
    let one_differs = NewRow {
        method_name: "other".into(),
        max_attempts: 3,
        ..own(13, 3)
    };
    for batch in [
        vec![row(5), row(6)],
        vec![row(8), off],
        vec![own(9, 0), own(10, 1), own(11, 2)],
        vec![own(12, 4), one_differs, own(14, 5)],
        vec![keyed(15, 6), keyed(16, 7), keyed(17, 8)],
    ] {
        assert_eq!(conn.insert_many(&batch).unwrap(), batch.len());
        let stored = D::rows(&mut conn);
        for r in &batch {
            let got: Vec<&TaskRow> = stored
                .iter()
                .filter(|g| g.execute_time == r.execute_time)
                .collect();
            assert_eq!(got.len(), 1, "one row due at {}", r.execute_time);
            assert_stored(r, got[0]);
        }
    }
    assert!(conn.find(bare_id + 1_000).unwrap().is_none());
}

/// The hot path (claim, targeted claim, complete, finish, extend, and the insert of one task)
/// runs on statements diesel keeps prepared, and lists of other lengths within the same padded
/// size reuse them: a second round prepares nothing. (diesel never caches its own `UPDATE`s,
/// `sql_query` or `IN` lists on MySQL/SQLite; each would cost a prepare per batch.)
pub(super) fn hot_path_statements_stay_prepared<D: Db>(db: &D) {
    let mut conn = migrated(db);
    #[derive(Default)]
    struct Seen {
        started: Vec<String>,
        cached: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| match event {
        InstrumentationEvent::StartQuery { query, .. } => {
            // The display form ends with ` -- binds: [..]`.
            let sql = query.to_string();
            let sql = sql
                .split(" -- binds:")
                .next()
                .unwrap_or_default()
                .to_string();
            log.lock().unwrap().started.push(sql)
        }
        InstrumentationEvent::CacheQuery { sql, .. } => {
            log.lock().unwrap().cached.push(sql.to_string())
        }
        _ => {}
    });
    let round = |conn: &mut D::Conn, n: i64, token: i64| {
        // Bare rows (`insert::is_bare`) and lean ones: both single-row shapes.
        let fresh: Vec<i64> = (0..n)
            .map(|i| {
                let r = row(T0 - 1000 + i);
                let delay_time = if i % 2 == 0 { 60 } else { r.delay_time };
                insert(conn, &NewRow { delay_time, ..r })
            })
            .collect();
        let got = claim(conn, T0, T0 + WEEK, token, n - 1, None);
        assert_eq!(got.len() as i64, n - 1);
        let rest = claim(conn, T0, T0 + WEEK, token, n, Some(&fresh));
        assert_eq!(rest.len(), 1);
        let all: Vec<i64> = got.iter().chain(&rest).map(|r| r.id).collect();
        assert_eq!(conn.extend(token, &all, T0 + 2 * WEEK).unwrap(), n as usize);
        let (last, done) = all.split_last().unwrap();
        assert_eq!(
            conn.finish(&[finish(*last, token, 2, T0 + 10, T0)])
                .unwrap(),
            vec![*last]
        );
        assert_eq!(conn.complete(token, done).unwrap(), done.len());
        assert_eq!(conn.complete(token + 1, &[*last]).unwrap(), 0);
    };
    round(&mut conn, 5, 11);
    let first = std::mem::take(&mut *seen.lock().unwrap());
    let control = |sql: &str| {
        let s = sql.trim_start().to_ascii_uppercase();
        [
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT",
            "RELEASE",
            "START",
            // MySQL's per-transaction READ COMMITTED: a text-protocol statement, nothing to
            // prepare.
            "SET TRANSACTION",
        ]
        .iter()
        .any(|k| s.starts_with(k))
    };
    let uncached: Vec<&String> = first
        .started
        .iter()
        .filter(|q| !control(q) && !first.cached.iter().any(|c| c == *q))
        .collect();
    assert!(
        uncached.is_empty(),
        "statements diesel prepares on every run: {uncached:#?}"
    );
    // Different list lengths within the same padded size (8): nothing new to prepare.
    round(&mut conn, 7, 12);
    let second = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        second.cached.is_empty(),
        "a second round prepared again: {:#?}",
        second.cached
    );
    assert!(!second.started.is_empty());
}

/// Outcomes and the next claim in one call (on SQLite, one transaction): the deletes and the
/// fenced updates apply (stale tokens refused), and the claim sees their effect.
pub(super) fn write_and_claim_writes_outcomes_then_claims<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let a = insert(&mut conn, &row(T0 - 3));
    let b = insert(&mut conn, &row(T0 - 2));
    let c = insert(&mut conn, &row(T0 - 1));
    let later = insert(&mut conn, &row(T0 + 60_000));
    assert_eq!(
        ids(&claim(&mut conn, T0, T0 + WEEK, 1, 2, None)),
        [a, b].into()
    );
    // b failed and is due again at once; a succeeded; a stale token completes nothing.
    let retry = finish(b, 1, 2, T0 - 1, T0);
    let w = conn
        .write_and_claim(
            &[(1, vec![a]), (9, vec![c])],
            &[retry],
            &claim_args(T0, T0 + WEEK, 2, 10, None),
        )
        .expect("write_and_claim");
    assert_eq!(w.deleted, vec![1, 0]);
    assert_eq!(w.held, vec![b]);
    let claimed: BTreeSet<i64> = w.claimed.iter().map(|c| c.task.id).collect();
    assert_eq!(
        claimed,
        [b, c].into(),
        "the claim sees the retry and skips the deleted row"
    );
    assert!(conn.find(a).unwrap().is_none());
    assert_eq!(found(&mut conn, b).lease_token, Some(2));
    assert_eq!(found(&mut conn, b).error_msg, "");
    assert_eq!(found(&mut conn, later).task_status, 0);
    // Nothing to write: a plain claim.
    let w = conn
        .write_and_claim(&[], &[], &claim_args(T0 + 60_000, T0 + WEEK, 3, 10, None))
        .unwrap();
    assert_eq!(w.claimed.len(), 1);
    assert!(w.deleted.is_empty() && w.held.is_empty());
}

pub(super) fn insert_many_is_a_few_prepared_statements<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let rows: Vec<NewRow> = (0..50)
        .map(|i| NewRow {
            task_id: format!("task-{i}").into(),
            shard_key: i,
            execute_time: T0 + i,
            task_parameter: vec![i as u8; i as usize],
            error_msg: format!("message {i}"),
            fallback_class_name: (i % 2 == 0).then(|| format!("fallback-{i}")),
            ..row(0)
        })
        .collect();
    // (statements started, statements prepared into the cache)
    let counts = Arc::new(Mutex::new((0usize, 0usize)));
    let seen = counts.clone();
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| match event {
        InstrumentationEvent::StartQuery { .. } => seen.lock().unwrap().0 += 1,
        InstrumentationEvent::CacheQuery { .. } => seen.lock().unwrap().1 += 1,
        _ => {}
    });
    assert_eq!(conn.insert_many(&rows).unwrap(), 50);
    // PostgreSQL: one `unnest` statement of column arrays; MySQL/MariaDB one `JSON_TABLE`;
    // SQLite 50 rows are 32 + 16 + 2, each shape prepared once.
    let chunks = if conn.backend() == "sqlite" {
        crate::store::insert::insert_chunks(50).len()
    } else {
        1
    };
    assert_eq!(
        *counts.lock().unwrap(),
        (chunks, chunks),
        "insert_many without idempotency keys: one prepared statement per chunk"
    );
    let stored = D::rows(&mut conn);
    assert_eq!(stored.len(), rows.len());
    for (new, got) in rows.iter().zip(&stored) {
        assert_stored(new, got);
    }
    // The same shapes again: nothing is prepared a second time.
    *counts.lock().unwrap() = (0, 0);
    let again: Vec<NewRow> = rows
        .iter()
        .map(|r| NewRow {
            task_id: format!("{}-again", r.task_id).into(),
            ..r.clone()
        })
        .collect();
    assert_eq!(conn.insert_many(&again).unwrap(), 50);
    assert_eq!(*counts.lock().unwrap(), (chunks, 0));
    assert_eq!(conn.insert_many(&[]).unwrap(), 0);
}

/// `insert_many` stores every value as given whatever the batch's shape: a full row beside
/// bare ones, bare rows that share hostile text (quotes, backslashes, control characters,
/// emoji: MySQL's batch travels as JSON), extreme numbers, empty and megabyte payloads (more
/// than one statement's worth), more rows than one statement takes; in the given order.
pub(super) fn insert_many_round_trips_every_value<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let hostile = "q\"uote \\back\\\\slash\n\ttab\r\u{1}\u{1f} é 訂單 🚚 ' ; -- ?1 $1 [\"]";
    let full = NewRow {
        task_id: hostile.into(),
        task_status: 2,
        execute_times: i32::MAX,
        max_attempts: i32::MAX,
        execute_time: i64::MAX,
        parameter_types: hostile.into(),
        method_name: "\\".into(),
        method_sign_name: "orders.ship".into(),
        execute_interval_sec: i32::MAX,
        delay_time: i32::MIN,
        task_parameter: (0..=255u8).rev().collect(),
        payload_version: i32::MIN,
        error_msg: hostile.repeat(100),
        alert_expression: Some(String::new().into()),
        alert_action_bean_name: Some(hostile.into()),
        fallback_class_name: Some("\"".into()),
        fallback_error_msg: Some(hostile.into()),
        shard_key: i64::MIN,
        lease_token: Some(i64::MIN),
        lease_owner: Some(hostile.into()),
        lease_expires_at: Some(i64::MAX),
        gmt_create: i64::MIN,
        gmt_modified: i64::MAX,
        trace_parent: Some(hostile.into()),
        queue: "q\"\\".into(),
        priority: -3,
        ordering_key: Some(hostile.into()),
        ..row(T0)
    };
    let bare = |i: i64| NewRow {
        task_id: format!("{hostile}{i}").into(),
        method_sign_name: hostile.into(),
        method_name: hostile.into(),
        execute_time: T0 - i,
        task_parameter: vec![0; (i % 3) as usize],
        shard_key: i64::MAX - i,
        ..row(0)
    };
    let big = |i: i64| NewRow {
        task_parameter: vec![i as u8; 1 << 20],
        ..bare(i)
    };
    // Full rows that share every column but those that tell rows apart (PostgreSQL then binds
    // the shared ones once, the rest as arrays).
    let full_row = |i: i64| NewRow {
        task_id: format!("{hostile}{i}").into(),
        idempotency_key: Some(format!("{hostile}{i}")),
        execute_time: i64::MAX - i,
        task_parameter: vec![i as u8; i as usize],
        shard_key: i64::MIN + i,
        lease_token: (i != 1).then_some(i64::MIN + i),
        lease_owner: (i != 2).then(|| format!("{hostile}{i}")),
        lease_expires_at: (i != 0).then_some(i64::MAX - i),
        trace_parent: (i != 1).then(|| format!("{i}{hostile}")),
        ordering_key: (i != 2).then(|| format!("{i}")),
        ..full.clone()
    };
    // One name and one due time for the whole batch (MySQL then binds both once), and one
    // due time with names of their own.
    let same_name = |i: i64| NewRow {
        execute_time: T0,
        task_id: hostile.into(),
        ..bare(i)
    };
    let same_due = |i: i64| NewRow {
        execute_time: i64::MIN,
        ..bare(i)
    };
    // Rows that share every shared column but the last, which differs in one (the insert
    // finds out after binding the others as sharing).
    let late_differ = |i: i64| NewRow {
        max_attempts: bare(i).max_attempts + i32::from(i == 3),
        ..bare(i)
    };
    let batches: Vec<Vec<NewRow>> = vec![
        (0..4).map(same_name).collect(),
        (0..4).map(late_differ).collect(),
        (0..4).map(same_due).collect(),
        vec![bare(1), full.clone(), bare(2)],
        (0..3).map(full_row).collect(),
        (0..3).map(bare).collect(),
        (0..130).map(bare).collect(),
        (0..6).map(big).collect(),
        vec![full.clone()],
    ];
    for rows in batches {
        conn.batch_execute("DELETE FROM consistency_task").unwrap();
        assert_eq!(conn.insert_many(&rows).unwrap(), rows.len());
        let stored = D::rows(&mut conn);
        assert_eq!(stored.len(), rows.len());
        for (new, got) in rows.iter().zip(&stored) {
            assert_stored(new, got);
        }
    }
}

pub(super) fn idempotency_key_duplicates_are_skipped<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let keyed = |key: &str, msg: &str| NewRow {
        idempotency_key: Some(key.into()),
        error_msg: msg.into(),
        ..row(T0)
    };
    let first = insert(&mut conn, &keyed("k1", "first"));
    assert_eq!(conn.insert_one(&keyed("k1", "second")).unwrap(), None);

    // A duplicate inside the caller's transaction must not spoil it (the enqueue contract):
    // the rows written after it in the same transaction still commit.
    let (dup, other) = conn
        .transaction(|c| {
            let dup = c.insert_one(&keyed("k1", "third"))?;
            let other = c.insert_one(&row(T0))?;
            Ok::<_, DieselError>((dup, other))
        })
        .unwrap();
    assert_eq!(dup, None);
    let other = other.expect("the row after the duplicate");
    assert!(conn.find(other).unwrap().is_some());

    // insert_many skips keys that exist and repeats within the batch, and counts only new rows.
    let batch = [
        keyed("k1", "fourth"),
        keyed("k2", "k2 first"),
        keyed("k2", "k2 again"),
        row(T0),
        row(T0),
    ];
    assert_eq!(conn.insert_many(&batch).unwrap(), 3);
    let rows = D::rows(&mut conn);
    assert_eq!(rows.len(), 5);
    let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for r in &rows {
        if let Some(k) = &r.idempotency_key {
            by_key.entry(k).or_default().push(&r.error_msg);
        }
    }
    assert_eq!(by_key["k1"], ["first"], "the first row with a key is kept");
    assert_eq!(by_key["k2"], ["k2 first"]);
    assert_eq!(found(&mut conn, first).error_msg, "first");
}

/// `insert_one` returns the id the row got, whatever ids the table holds: with rows of
/// negative ids only (hand-written or foreign rows) and a `sqlite_sequence` counter below them
/// (a hand-edited or restored table), SQLite gives the next row id 0, which its connection's
/// last-rowid field reads as "none" (tend then asks with a statement). PostgreSQL's sequence
/// and MySQL's auto-increment count on from their own counters.
pub(super) fn insert_one_returns_the_id_after_negative_ids<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let first = insert(&mut conn, &row(T0));
    conn.batch_execute(&format!(
        "UPDATE consistency_task SET id = -1 WHERE id = {first}"
    ))
    .unwrap();
    if D::BACKEND == "sqlite" {
        conn.batch_execute("UPDATE sqlite_sequence SET seq = -10 WHERE name = 'consistency_task'")
            .unwrap();
    }
    for _ in 0..2 {
        let id = conn.insert_one(&row(T0)).unwrap().expect("a new row");
        let r = found(&mut conn, id);
        assert_eq!(r.id, id, "the returned id is the row's");
    }
    let ids: Vec<i64> = D::rows(&mut conn).iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 3);
    if D::BACKEND == "sqlite" {
        assert_eq!(ids, [-1, 0, 1], "SQLite numbers on from the largest rowid");
    }
}
