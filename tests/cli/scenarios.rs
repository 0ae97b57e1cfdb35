//! The scenarios run against every backend (`per_backend!(processes: ..)` in `main.rs`).

use super::*;

// ---------------------------------------------------------------------------------------------
// The scenarios, run against every backend

/// A database that was never migrated: every command but `migrate` says how to fix it.
pub(crate) fn unmigrated(db: &Db) {
    if db.backend == Backend::Sqlite {
        // An existing file without tend's table (a missing file is another error).
        db.with_conn(|c| c.sql("CREATE TABLE unrelated (id INTEGER)"));
    }
    for args in [
        &["stats"][..],
        &["tasks", "list"],
        &["tasks", "show", "1"],
        &["tasks", "retry", "--all"],
        &["purge", "--older-than", "7d"],
    ] {
        db.tend(args)
            .fails(1, "consistency_task")
            .fails(1, "tend migrate --database-url");
    }
    db.tend(&["migrate"]).ok().says("migrated").says(&db.url);
    db.tend(&["migrate"]).ok().says("migrated");
    db.tend(&["stats"]).ok().says("total");
    db.tend(&["tasks", "list"]).ok().says("no tasks match");
}

/// list, show and stats, with every filter and both output formats.
pub(crate) fn inspect(db: &Db) {
    let s = seed(db);
    let now = now_ms();

    let all = db.tend(&["tasks", "list"]).ok();
    assert_eq!(all.ids(), s.all());
    let header = all.stdout.lines().next().unwrap();
    for col in [
        "ID",
        "STATUS",
        "SIGNATURE",
        "SHARD",
        "QUEUE",
        "PRI",
        "KEY",
        "ATTEMPTS",
        "DUE",
        "MODIFIED",
        "ERROR",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let dead_line = all
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{} ", s.dead_old)))
        .unwrap();
    assert!(
        dead_line.contains("dead") && dead_line.contains("never"),
        "{dead_line}"
    );
    assert!(dead_line.contains("3/3") && dead_line.contains("out of attempts: boom"));

    let ids = |args: &[&str]| {
        let mut a = vec!["tasks", "list"];
        a.extend_from_slice(args);
        db.tend(&a).ok().ids()
    };
    assert_eq!(ids(&["--status", "dead"]), [s.dead_old, s.dead_new]);
    assert_eq!(
        ids(&["--status", "dead,held"]),
        [s.dead_old, s.held, s.dead_new]
    );
    assert_eq!(
        ids(&["--status", "dead", "--status", "held"]),
        [s.dead_old, s.held, s.dead_new]
    );
    assert_eq!(ids(&["--status", "1"]), [s.running]);
    assert_eq!(ids(&["--signature", "payments.refund"]), [s.running]);
    assert_eq!(ids(&["--shard-key", "7"]), [s.running]);
    assert_eq!(
        ids(&["--shard-key", "7", "--status", "dead"]),
        Vec::<i64>::new()
    );
    let soon = (now + 5_000).to_string();
    assert_eq!(ids(&["--due-before", &soon]), [s.pending]);
    assert_eq!(
        ids(&["--due-after", Y2000]),
        [s.pending, s.failed, s.running]
    );
    let later = (now + 1_800_000).to_string();
    assert_eq!(ids(&["--due-after", &later]), [s.failed]);
    db.tend(&["tasks", "list", "--due-before", Y2000])
        .ok()
        .says("no tasks match");

    // Paging: by cursor and by offset.
    let page1 = db.tend(&["tasks", "list", "--limit", "3"]).ok();
    assert_eq!(page1.ids(), s.all()[..3]);
    let cursor = s.all()[2].to_string();
    assert!(
        page1.stderr.contains(&format!("--after-id {cursor}")),
        "{page1:#?}"
    );
    let page2 = db.tend(&["tasks", "list", "--limit", "3", "--after-id", &cursor]);
    assert_eq!(page2.ok().ids(), s.all()[3..6]);
    assert_eq!(ids(&["--offset", "6"]), s.all()[6..]);
    db.tend(&["tasks", "list", "--limit", "0"])
        .fails(2, "--limit");

    // JSON.
    let doc = db.tend(&["tasks", "list", "--json"]).ok().json();
    let tasks = doc[0]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 7);
    assert_eq!(doc[0]["next_after_id"], Value::Null);
    let dead = tasks.iter().find(|t| t["id"] == s.dead_old).unwrap();
    assert_eq!(dead["status"], "dead");
    assert_eq!(dead["task_status"], 4);
    assert_eq!(dead["execute_time"], Value::Null);
    assert_eq!(dead["signature"], "orders.ship");
    assert_eq!(dead["error_msg"], "out of attempts: boom");
    let running = tasks.iter().find(|t| t["id"] == s.running).unwrap();
    assert_eq!(running["lease_owner"], "host-1");
    assert_eq!(running["shard_key"], 7);

    // show: every column, the payload undecodable by the plain binary.
    let shown = db.tend(&["tasks", "show", &s.dead_old.to_string()]).ok();
    for col in [
        "id",
        "task_id",
        "idempotency_key",
        "task_status",
        "execute_times",
        "max_attempts",
        "execute_time",
        "parameter_types",
        "method_name",
        "method_sign_name",
        "execute_interval_sec",
        "delay_time",
        "task_parameter",
        "payload_version",
        "execute_way",
        "thread_way",
        "transaction_way",
        "error_msg",
        "alert_expression",
        "alert_action_bean_name",
        "fallback_class_name",
        "fallback_error_msg",
        "shard_key",
        "lease_token",
        "lease_owner",
        "lease_expires_at",
        "gmt_create",
        "gmt_modified",
        "duration_ms",
        "trace_parent",
        "queue",
        "priority",
        "ordering_key",
    ] {
        assert!(
            shown
                .stdout
                .lines()
                .any(|l| l.starts_with(&format!("{col} "))),
            "show lacks column {col}: {}",
            shown.stdout
        );
    }
    let shown = shown
        .says("4 (dead)")
        .says("never")
        .says("out of attempts: boom")
        .says("bytes, signature orders.ship, not decodable by this binary>");
    assert!(!shown.stdout.contains("payload:"), "{}", shown.stdout);
    db.tend(&["tasks", "show", &s.running.to_string()])
        .ok()
        .says("host-1")
        .says("payments.refund");
    let row = db.row(s.dead_old).unwrap();
    assert_eq!(row["execute_time"], Value::Null);
    assert_eq!(row["max_attempts"], 3);
    assert_eq!(row["task_parameter"]["decoded"], Value::Null);
    assert!(row["task_parameter"]["bytes"].as_u64().unwrap() > 0);
    assert!(row["task_parameter"]["note"]
        .as_str()
        .unwrap()
        .contains("not decodable by this binary"));

    // stats, as a table and as JSON.
    let st = db.tend(&["stats"]).ok();
    for needle in [
        "STATUS",
        "dead",
        "total",
        "SIGNATURE",
        "orders.ship",
        "payments.refund",
    ] {
        assert!(st.stdout.contains(needle), "{needle}: {}", st.stdout);
    }
    let st = st.says(&format!("due now: 1 task; oldest: task {}", s.pending));
    let dead_line = st.stdout.lines().find(|l| l.starts_with("dead ")).unwrap();
    assert!(dead_line.ends_with(" 2"), "{dead_line}");
    let doc = db.tend(&["stats", "--json"]).ok().json();
    let d = &doc[0];
    assert_eq!(d["total"], 7);
    for (k, v) in [
        ("pending", 1),
        ("running", 1),
        ("failed", 1),
        ("succeeded", 1),
        ("dead", 2),
        ("held", 1),
    ] {
        assert_eq!(d["by_status"][k], v, "{k}: {d:#}");
    }
    let sigs = d["by_signature"].as_array().unwrap();
    assert_eq!(sigs[0]["signature"], "orders.ship");
    assert_eq!(sigs[0]["total"], 6);
    assert_eq!(sigs[0]["dead"], 2);
    assert_eq!(sigs[1]["signature"], "payments.refund");
    assert_eq!(sigs[1]["running"], 1);
    assert_eq!(d["due_now"], 1);
    assert_eq!(d["oldest_due"]["id"], s.pending);
    assert!(d["oldest_due"]["lag_seconds"].as_f64().unwrap() >= 0.0);

    // Bad input.
    db.tend(&["tasks", "show", "999999"])
        .fails(1, "no task with id 999999");
    db.tend(&["tasks", "list", "--status", "zombie"])
        .fails(2, "unknown status `zombie`");
    db.tend(&["tasks", "list", "--due-before", "yesterday"])
        .fails(2, "is not a time");
    db.tend(&["tasks", "list", "--due-after", "2026-13-01T00:00:00Z"])
        .fails(2, "RFC 3339");
    db.tend(&["tasks", "list", "--shard-key", "seven"])
        .fails(2, "--shard-key");
    db.tend(&["tasks", "show", "abc"]).fails(2, "invalid value");
}

/// retry, cancel and delete: targets, refusals, dry runs, and what they write.
pub(crate) fn changes(db: &Db) {
    let s = seed(db);
    let id = |n: i64| n.to_string();

    // Nothing destructive without a target.
    for cmd in ["retry", "cancel", "delete"] {
        db.tend(&["tasks", cmd])
            .fails(2, "needs a task ID, a filter")
            .fails(2, "nothing was changed");
    }

    // retry
    db.tend(&["tasks", "retry", &id(s.pending)])
        .fails(1, &format!("task {} is pending", s.pending));
    db.tend(&["tasks", "retry", &id(s.running)])
        .fails(1, "applies to failed, dead, held tasks");
    db.tend(&["tasks", "retry", "999999"])
        .fails(1, "no task with id 999999");
    db.tend(&["tasks", "retry", "--status", "pending"])
        .fails(2, "not pending");
    db.tend(&["tasks", "retry", "--status", "dead", "--dry-run"])
        .ok()
        .says(&format!(
            "would retry 2 tasks: {}, {}",
            s.dead_old, s.dead_new
        ))
        .says("dry run: nothing was changed");
    assert_eq!(db.status(s.dead_old), "dead");

    let t0 = now_ms();
    db.tend(&["tasks", "retry", &id(s.dead_old)])
        .ok()
        .says(&format!("retrying 1 task: {}", s.dead_old))
        .says("retried 1 task");
    let row = db.row(s.dead_old).unwrap();
    assert_eq!(row["status"], "failed");
    // Kept attempts, lowered to allow exactly one more (3 of 3 -> 2 of 3).
    assert_eq!(row["execute_times"], 2);
    let due = row["execute_time"].as_i64().unwrap();
    assert!(due >= t0 - 1000 && due <= now_ms(), "{row:#}");
    assert_eq!(row["lease_token"], Value::Null);
    assert_eq!(
        row["error_msg"], "out of attempts: boom",
        "the last error stays"
    );

    db.tend(&["tasks", "retry", &id(s.held), "--reset-attempts"])
        .ok()
        .says("retried 1 task");
    let row = db.row(s.held).unwrap();
    assert_eq!(row["status"], "pending");
    assert_eq!(row["execute_times"], 0);
    assert!(row["execute_time"].as_i64().unwrap() <= now_ms());

    // By filter: the failed task (due in an hour) becomes due now; dead_new too.
    db.tend(&[
        "tasks",
        "retry",
        "--signature",
        "orders.ship",
        "--status",
        "failed,dead",
    ])
    .ok()
    .says("retried 3 tasks");
    assert_eq!(db.status(s.dead_new), "failed");
    assert_eq!(db.row(s.dead_new).unwrap()["execute_times"], 24);
    assert!(db.row(s.failed).unwrap()["execute_time"].as_i64().unwrap() <= now_ms());
    db.tend(&["tasks", "retry", "--all"])
        .ok()
        .says("retried 3 tasks");
    db.tend(&["tasks", "retry", "--status", "dead"])
        .ok()
        .says("no tasks to retry");

    // cancel
    db.tend(&["tasks", "cancel", &id(s.running)])
        .fails(1, "is running; pass --force");
    db.tend(&["tasks", "cancel", "--signature", "payments.refund"])
        .ok()
        .says("leaving 1 task alone: running (pass --force")
        .says("no tasks to cancel");
    assert_eq!(db.status(s.running), "running");
    db.tend(&["tasks", "cancel", &id(s.running), "--force", "--dry-run"])
        .ok()
        .says(&format!("would cancel 1 task: {}", s.running));
    assert_eq!(db.status(s.running), "running");
    db.tend(&["tasks", "cancel", &id(s.running), "--force"])
        .ok()
        .says("cancelled 1 task");
    let row = db.row(s.running).unwrap();
    assert_eq!(row["status"], "dead");
    assert_eq!(row["execute_time"], Value::Null);
    assert_eq!(row["lease_token"], Value::Null);
    assert_eq!(row["lease_owner"], Value::Null);
    assert!(row["error_msg"]
        .as_str()
        .unwrap()
        .starts_with("cancelled by an operator at "));
    db.tend(&["tasks", "cancel", &id(s.pending)])
        .ok()
        .says("cancelled 1 task");
    assert_eq!(db.status(s.pending), "dead");
    db.tend(&["tasks", "cancel", &id(s.pending)])
        .fails(1, "is dead");
    db.tend(&["tasks", "cancel", "--status", "succeeded"])
        .fails(2, "not succeeded");

    // delete
    db.sql(&format!(
        "UPDATE consistency_task SET task_status = 1, lease_token = 7 WHERE id = {}",
        s.failed
    ));
    db.tend(&["tasks", "delete", &id(s.failed)])
        .fails(1, "is running; pass --force");
    db.tend(&["tasks", "delete", "--status", "running"])
        .fails(2, "not running");
    let dry = db
        .tend(&["tasks", "delete", "--all", "--dry-run"])
        .ok()
        .says("leaving 1 task alone: running")
        .says("would delete 6 tasks");
    assert!(!dry.stdout.contains(&format!(" {},", s.failed)), "{dry:#?}");
    assert_eq!(db.tend(&["tasks", "list"]).ok().ids().len(), 7);
    db.tend(&["tasks", "delete", &id(s.done_old)])
        .ok()
        .says(&format!("deleting 1 task: {}", s.done_old))
        .says("deleted 1 task");
    assert!(db.row(s.done_old).is_none());
    db.tend(&["tasks", "delete", &id(s.done_old)])
        .fails(1, "no task with id");
    db.tend(&["tasks", "delete", "--status", "running", "--force"])
        .ok()
        .says("deleted 1 task");
    assert!(db.row(s.failed).is_none());
    db.tend(&["tasks", "delete", "--all"])
        .ok()
        .says("deleted 5 tasks");
    db.tend(&["tasks", "list"]).ok().says("no tasks match");
}

/// purge: old dead and kept completed rows, in batches, with progress and a dry run.
pub(crate) fn purge(db: &Db) {
    let s = seed(db);
    let old = now_ms() - 10 * DAY_MS;
    db.with_conn(|c| {
        for n in 0..25 {
            c.enqueue(NewTask::new(&Bulk { n }).unwrap());
        }
        c.sql(&format!(
            "UPDATE consistency_task SET task_status = 4, execute_time = {PARKED}, \
             gmt_modified = {old} WHERE method_sign_name = 'reports.bulk'"
        ));
    });

    db.tend(&["purge"]).fails(2, "--older-than");
    db.tend(&["purge", "--older-than", "7x"])
        .fails(2, "is not a duration");
    db.tend(&["purge", "--older-than", "7d", "--status", "pending"])
        .fails(2, "invalid value 'pending'");
    db.tend(&["purge", "--older-than", "7d", "--batch", "0"])
        .fails(2, "--batch");

    db.tend(&["purge", "--older-than", "7d", "--dry-run"])
        .ok()
        .says("would purge 27 tasks (succeeded or dead tasks last modified before ")
        .says("dry run: nothing was changed");
    assert_eq!(db.tend(&["stats", "--json"]).ok().json()[0]["total"], 32);

    db.tend(&["purge", "--older-than", "7d", "--status", "succeeded"])
        .ok()
        .says("purging 1 task (succeeded tasks last modified before")
        .says(&format!(": {}", s.done_old))
        .says("purged 1 task in 1 batch of at most 1000");
    assert!(db.row(s.done_old).is_none());

    let r = db
        .tend(&["purge", "--older-than", "7d", "--batch", "10"])
        .ok()
        .says("purging 26 tasks")
        .says("purged 26 tasks in 3 batches of at most 10");
    assert!(r.stderr.contains("purged 10 of ~26"), "{r:#?}");
    assert!(r.stderr.contains("purged 26 of ~26"), "{r:#?}");
    assert!(db.row(s.dead_old).is_none());
    // Recent dead tasks and everything unfinished stay.
    assert_eq!(db.status(s.dead_new), "dead");
    assert_eq!(db.tend(&["stats", "--json"]).ok().json()[0]["total"], 5);

    db.tend(&["purge", "--older-than", "7d"])
        .ok()
        .says("nothing to purge");
    db.tend(&[
        "purge",
        "--older-than",
        "0s",
        "--signature",
        "orders.ship",
        "--status",
        "dead",
    ])
    .ok()
    .says("purged 1 task");
    assert!(db.row(s.dead_new).is_none());
}

/// Statuses this build does not know (a newer tend wrote them, or a hand-written row) are
/// counted by `stats`, listed and filtered by `--status unknown` or their value, and changed
/// only when named.
pub(crate) fn unknown_statuses(db: &Db) {
    let s = seed(db);
    db.sql(&format!(
        "UPDATE consistency_task SET task_status = 9 WHERE id = {}",
        s.pending
    ));
    db.sql(&format!(
        "UPDATE consistency_task SET task_status = -1 WHERE id = {}",
        s.failed
    ));
    let ids = |args: &[&str]| {
        let mut a = vec!["tasks", "list"];
        a.extend_from_slice(args);
        db.tend(&a).ok().ids()
    };
    db.tend(&["stats"])
        .ok()
        .says("unknown(9)")
        .says("unknown(-1)");
    assert_eq!(ids(&["--status", "unknown"]), [s.pending, s.failed]);
    assert_eq!(ids(&["--status", "9"]), [s.pending]);
    assert_eq!(ids(&["--status=-1"]), [s.failed]);
    assert_eq!(ids(&["--status=-1,9"]), [s.pending, s.failed]);
    assert_eq!(
        ids(&["--status", "unknown,held"]),
        [s.pending, s.held, s.failed]
    );
    db.tend(&["tasks", "list", "--status", "nine"])
        .fails(2, "unknown (any value this build does not know)");
    let line = db.tend(&["tasks", "list", "--status", "9"]).ok().stdout;
    assert!(line.contains("unknown(9)"), "{line}");
    // Filters that do not name them leave them alone.
    db.tend(&["tasks", "cancel", "--all"]).ok();
    assert_eq!(db.status(s.pending), "unknown(9)");
    assert_eq!(db.status(s.failed), "unknown(-1)");
    // Named, an operator can act on them: by id, or by --status.
    db.tend(&["tasks", "retry", &s.pending.to_string()])
        .ok()
        .says("retried 1 task");
    assert_eq!(db.status(s.pending), "failed");
    db.tend(&["tasks", "delete", "--status", "unknown"])
        .ok()
        .says("deleted 1 task");
    assert!(db.row(s.failed).is_none());
}
