//! `tend stats` lists the periodic schedules (`tend_schedule`) with their next run.

use super::*;

/// A schedule row as the pool's scheduler writes it shows in `tend stats`, text and JSON; a
/// database without schedules shows no such section.
pub(crate) fn stats_lists_schedules(db: &Db) {
    db.tend(&["migrate"]).ok();
    let st = db.tend(&["stats"]).ok();
    assert!(!st.stdout.contains("SCHEDULE"), "{}", st.stdout);
    assert_eq!(
        db.tend(&["stats", "--json"]).ok().json()[0]["schedules"],
        serde_json::json!([])
    );
    // 2030-01-01T00:00:00Z, last run five seconds before.
    let next = 1_893_456_000_000_i64;
    db.sql(&format!(
        "INSERT INTO tend_schedule (name, spec, last_slot_ms, next_slot_ms, updated_at) \
         VALUES ('reports.nightly', 'cron 0 0 * * * in UTC', {}, {next}, {})",
        next - 5000,
        next - 5000
    ));
    let st = db.tend(&["stats"]).ok();
    for needle in [
        "SCHEDULE",
        "NEXT RUN",
        "reports.nightly",
        "cron 0 0 * * * in UTC",
        "2030-01-01",
    ] {
        assert!(st.stdout.contains(needle), "{needle}: {}", st.stdout);
    }
    let doc = db.tend(&["stats", "--json"]).ok().json();
    let s = &doc[0]["schedules"][0];
    assert_eq!(s["name"], "reports.nightly");
    assert_eq!(s["next_run_ms"], next);
    assert_eq!(s["last_slot_ms"], next - 5000);
}
