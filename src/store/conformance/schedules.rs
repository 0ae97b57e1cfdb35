//! Periodic schedules (`tend_schedule`): a schedule row is created once, and the
//! compare-and-set that enqueues a slot moves it, with its task rows, for exactly one caller.

use super::*;
use crate::store::row::ScheduleRow;

fn schedule(name: &str, last: i64) -> ScheduleRow {
    ScheduleRow {
        name: name.to_string(),
        spec: "every 1000ms".to_string(),
        last_slot_ms: last,
        next_slot_ms: last + 1000,
        updated_at: T0,
    }
}

pub(super) fn schedule_rows_are_created_once_and_moved_by_compare_and_set<D: Db>(db: &D) {
    let mut conn = migrated(db);
    assert_eq!(conn.schedule_get("s").unwrap(), None);
    assert!(conn.schedule_create(&schedule("s", T0)).unwrap());
    // A second create (another process) leaves the first row as it was.
    assert!(!conn.schedule_create(&schedule("s", T0 + 5000)).unwrap());
    assert_eq!(conn.schedule_get("s").unwrap(), Some(schedule("s", T0)));
    // The compare-and-set from the value read moves the row and inserts the slot's task...
    let next = schedule("s", T0 + 1000);
    assert!(conn.schedule_advance(T0, &next, &[row(T0 + 1000)]).unwrap());
    assert_eq!(conn.schedule_get("s").unwrap(), Some(next.clone()));
    assert_eq!(D::rows(&mut conn).len(), 1);
    // ...and one from a stale value moves nothing and inserts nothing.
    let late = schedule("s", T0 + 1000);
    assert!(!conn.schedule_advance(T0, &late, &[row(T0 + 1000)]).unwrap());
    assert_eq!(D::rows(&mut conn).len(), 1);
    // Several slots at once (catching up), in the same transaction.
    let caught_up = schedule("s", T0 + 3000);
    let rows = [row(T0 + 2000), row(T0 + 3000)];
    assert!(conn.schedule_advance(T0 + 1000, &caught_up, &rows).unwrap());
    assert_eq!(D::rows(&mut conn).len(), 3);
    assert_eq!(conn.schedules().unwrap(), [caught_up]);
    // A long catch-up: more rows than one statement may carry on SQLite (27 binds a row).
    let long: Vec<NewRow> = (0..2500).map(|k| row(T0 + 4000 + k)).collect();
    let after_long = schedule("s", T0 + 4000 + 2499);
    assert!(conn
        .schedule_advance(T0 + 3000, &after_long, &long)
        .unwrap());
    assert_eq!(D::rows(&mut conn).len(), 3 + 2500);
    // No row, no move.
    assert!(!conn
        .schedule_advance(T0, &schedule("other", T0 + 1000), &[row(T0)])
        .unwrap());
    assert_eq!(D::rows(&mut conn).len(), 3 + 2500);
}

/// Four processes find the same slot due at once: one enqueues it, the others insert nothing.
pub(super) fn racing_schedule_advances_enqueue_a_slot_once<D: Db>(db: &D) {
    let mut conn = migrated(db);
    assert!(conn.schedule_create(&schedule("race", T0)).unwrap());
    for slot in 1..=20 {
        let (expected, new) = (T0 + (slot - 1) * 1000, T0 + slot * 1000);
        let wins = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..4 {
                let wins = &wins;
                s.spawn(move || {
                    let mut conn = db.connect();
                    let next = schedule("race", new);
                    let won =
                        retry_transient(|| conn.schedule_advance(expected, &next, &[row(new)]))
                            .expect("schedule_advance");
                    if won {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.load(Ordering::SeqCst), 1, "{} slot {slot}", D::BACKEND);
    }
    let due: Vec<i64> = D::rows(&mut conn).iter().map(|r| r.execute_time).collect();
    assert_eq!(due, (1..=20).map(|k| T0 + k * 1000).collect::<Vec<_>>());
}
