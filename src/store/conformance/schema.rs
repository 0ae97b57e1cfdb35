//! Schema and sizes: missing tables and columns, migrations, the largest payloads and messages.

use super::*;

pub(super) fn check_schema_reports_a_missing_table<D: Db>(db: &D) {
    let mut conn = db.connect();
    let e = conn.check_schema().unwrap_err();
    assert!(
        is_missing_schema(&e),
        "not recognised as a missing schema: {e}"
    );
    let err = crate::store::check_schema(&mut conn).unwrap_err();
    assert!(err.is_not_migrated(), "{err:?}");
    assert!(err.to_string().contains("tend::migrate"), "{err}");
    // Every statement of the contract fails the same recognisable way.
    let e = conn.insert_one(&row(T0)).unwrap_err();
    assert!(is_missing_schema(&e), "insert: {e}");
    let e = conn.claim(&claim_args(T0, T0 + 1, 1, 1, None)).unwrap_err();
    assert!(is_missing_schema(&e), "claim: {e}");
    // And migrating fixes it.
    crate::store::migrate(&mut conn).unwrap();
    crate::store::check_schema(&mut conn).unwrap();
}

pub(super) fn check_schema_reports_a_missing_column<D: Db>(db: &D) {
    let mut conn = db.connect();
    conn.batch_execute(
        "CREATE TABLE consistency_task (id BIGINT PRIMARY KEY, task_id VARCHAR(500) NOT NULL)",
    )
    .unwrap();
    let e = conn.check_schema().unwrap_err();
    assert!(
        is_missing_schema(&e),
        "not recognised as a missing column: {e}"
    );
    let err = crate::store::check_schema(&mut conn).unwrap_err();
    assert!(err.is_not_migrated(), "{err:?}");
    assert!(err.to_string().contains("tend::migrate"), "{err}");
}

pub(super) fn migrate_twice_is_idempotent<D: Db>(db: &D) {
    let mut conn = db.connect();
    crate::store::migrate(&mut conn).unwrap();
    let id = insert(&mut conn, &row(T0));
    crate::store::migrate(&mut conn).unwrap();
    // A second connection (another process starting up) finds nothing to do either.
    crate::store::migrate(&mut db.connect()).unwrap();
    crate::store::check_schema(&mut conn).unwrap();
    assert_eq!(
        D::rows(&mut conn).iter().map(|r| r.id).collect::<Vec<_>>(),
        [id]
    );
}

pub(super) fn large_payloads_round_trip<D: Db>(db: &D) {
    let mut conn = migrated(db);
    // Every byte value, NULs included, in a pattern that is not periodic in 256.
    let bytes = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 7 + i / 251) as u8).collect() };
    let one_mib = NewRow {
        task_parameter: bytes(1 << 20),
        ..row(T0)
    };
    let max = NewRow {
        task_parameter: bytes(crate::enqueue::MAX_PAYLOAD_BYTES),
        ..row(T0 + 1)
    };
    let id = insert(&mut conn, &one_mib);
    assert_stored(&one_mib, &found(&mut conn, id));
    assert_eq!(
        conn.insert_many(&[max.clone(), one_mib.clone()]).unwrap(),
        2
    );
    let rows = D::rows(&mut conn);
    assert_stored(&max, &rows[1]);
    assert_stored(&one_mib, &rows[2]);
    // The claim hands workers the payload intact too.
    let claimed = claim(&mut conn, T0 + 1, T0 + 30_000, 1, 10, None);
    assert_eq!(claimed.len(), 3);
    for r in &claimed {
        let want = if r.id == rows[1].id { &max } else { &one_mib };
        assert!(
            r.task_parameter == want.task_parameter,
            "payload of {}",
            r.id
        );
    }
}

/// The pool cuts `error_msg` and `fallback_error_msg` at 64 KiB; every backend must store that.
pub(super) fn messages_of_64_kib_round_trip<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let long = "é".repeat(32 * 1024); // 65 536 bytes, two per character
    assert_eq!(long.len(), 64 * 1024);
    let id = insert(&mut conn, &row(T0));
    claim(&mut conn, T0, T0 + 30_000, 1, 10, None);
    let failed = Finish {
        error_msg: long.clone(),
        fallback_error_msg: Some(long.clone()),
        ..finish(id, 1, 2, T0 + 60_000, T0 + 1)
    };
    assert_eq!(conn.finish(&[failed]).unwrap(), [id]);
    let r = found(&mut conn, id);
    assert!(
        r.error_msg == long,
        "error_msg: {} bytes read",
        r.error_msg.len()
    );
    assert!(r.fallback_error_msg.as_deref() == Some(long.as_str()));
}
