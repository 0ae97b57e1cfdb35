//! Queues, priorities and ordering keys as operators see them: `tasks list --queue/--key`,
//! `tasks show`, the per-queue part of `stats`, `keys blocked` and `keys skip`, on every backend.

use super::*;

/// Keyed rows: `acct-1` is blocked by a dead first task with two tasks behind it, `acct-2`'s
/// first task only failed (it will be retried: not blocked), `acct-3`'s first is held with
/// nothing behind it.
pub(crate) struct Keyed {
    pub dead_head: i64,
    pub behind: [i64; 2],
    pub failed_head: i64,
    pub behind_failed: i64,
    pub held_head: i64,
    pub plain: i64,
}

pub(crate) fn seed_keyed(db: &Db) -> Keyed {
    db.with_conn(|c| {
        c.migrate();
        let ship = |n: i64| NewTask::new(&Ship { order_id: n }).unwrap();
        let k = Keyed {
            dead_head: c.enqueue(ship(1).ordering_key("acct-1").queue("mail").priority(2)),
            behind: [
                c.enqueue(ship(2).ordering_key("acct-1").queue("mail")),
                c.enqueue(ship(3).ordering_key("acct-1").queue("mail").priority(-1)),
            ],
            failed_head: c.enqueue(ship(4).ordering_key("acct-2")),
            behind_failed: c.enqueue(ship(5).ordering_key("acct-2")),
            held_head: c.enqueue(ship(6).ordering_key("acct-3").queue("mail")),
            plain: c.enqueue(ship(7)),
        };
        c.sql(&format!(
            "UPDATE consistency_task SET task_status = 4, execute_time = {PARKED}, \
             execute_times = 3, error_msg = 'out of attempts: boom' WHERE id = {}",
            k.dead_head
        ));
        c.sql(&format!(
            "UPDATE consistency_task SET task_status = 5, execute_time = {PARKED}, \
             error_msg = 'unknown signature' WHERE id = {}",
            k.held_head
        ));
        let later = now_ms() + 3_600_000;
        c.sql(&format!(
            "UPDATE consistency_task SET task_status = 2, execute_time = {later}, \
             execute_times = 1, error_msg = 'carrier down' WHERE id = {}",
            k.failed_head
        ));
        k
    })
}

/// Runs every task a worker may claim now, through the real claim (`tend::testing`), and
/// returns the ids still in the table.
#[cfg(feature = "testing")]
fn drain(db: &Db, ids: &[i64]) -> Vec<i64> {
    use diesel::Connection;
    let mut registry = tend::Registry::new();
    registry.register::<Ship>().unwrap();
    let w = tend::testing::TestWorker::new(registry);
    match db.backend {
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => {
            w.drain(&mut diesel::SqliteConnection::establish(&db.url).unwrap())
                .unwrap();
        }
        #[cfg(feature = "postgres")]
        Backend::Postgres => {
            w.drain(&mut diesel::PgConnection::establish(&db.url).unwrap())
                .unwrap();
        }
        #[cfg(feature = "mysql")]
        Backend::Mysql => {
            w.drain(&mut diesel::MysqlConnection::establish(&db.url).unwrap())
                .unwrap();
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("skipped without the backend's feature"),
    }
    ids.iter()
        .copied()
        .filter(|id| db.row(*id).is_some())
        .collect()
}

/// list and show: the columns and the `--queue` / `--key` filters.
pub(crate) fn queues_in_lists(db: &Db) {
    let k = seed_keyed(db);
    let all = db.tend(&["tasks", "list"]).ok();
    let header = all.stdout.lines().next().unwrap();
    for col in ["QUEUE", "PRI", "KEY"] {
        assert!(header.contains(col), "{header}");
    }
    let line = |id: i64| {
        all.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")))
            .unwrap()
            .to_string()
    };
    let head = line(k.dead_head);
    assert!(
        head.contains(" mail ") && head.contains(" 2 ") && head.contains(" acct-1 "),
        "{head}"
    );
    let plain = line(k.plain);
    assert!(
        plain.contains(" default ") && plain.contains(" - "),
        "{plain}"
    );

    let ids = |args: &[&str]| {
        let mut a = vec!["tasks", "list"];
        a.extend_from_slice(args);
        db.tend(&a).ok().ids()
    };
    assert_eq!(
        ids(&["--queue", "mail"]),
        [k.dead_head, k.behind[0], k.behind[1], k.held_head]
    );
    assert_eq!(
        ids(&["--key", "acct-1"]),
        [k.dead_head, k.behind[0], k.behind[1]]
    );
    assert_eq!(
        ids(&["--key", "acct-2", "--queue", "mail"]),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(&["--key", "acct-2", "--status", "pending"]),
        [k.behind_failed]
    );
    db.tend(&["tasks", "list", "--queue", "nope"])
        .ok()
        .says("no tasks match");
    let doc = db
        .tend(&["tasks", "list", "--key", "acct-1", "--json"])
        .ok()
        .json();
    let t = &doc[0]["tasks"][2];
    assert_eq!(t["queue"], "mail");
    assert_eq!(t["priority"], -1);
    assert_eq!(t["ordering_key"], "acct-1");
    let doc = db
        .tend(&["tasks", "list", "--queue", "default", "--json"])
        .ok()
        .json();
    assert_eq!(doc[0]["tasks"][2]["ordering_key"], Value::Null);

    let shown = db.tend(&["tasks", "show", &k.dead_head.to_string()]).ok();
    for (field, value) in [
        ("queue", "mail"),
        ("priority", "2"),
        ("ordering_key", "acct-1"),
    ] {
        let l = shown
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{field} ")))
            .unwrap_or_else(|| panic!("show lacks {field}: {}", shown.stdout));
        assert!(l.trim_end().ends_with(value), "{l}");
    }
    let row = db.row(k.plain).unwrap();
    assert_eq!(row["queue"], "default");
    assert_eq!(row["priority"], 0);
    assert_eq!(row["ordering_key"], Value::Null);

    // The filters narrow changes too.
    db.tend(&[
        "tasks",
        "cancel",
        "--queue",
        "mail",
        "--key",
        "acct-1",
        "--dry-run",
    ])
    .ok()
    .says(&format!(
        "would cancel 2 tasks: {}, {}",
        k.behind[0], k.behind[1]
    ));
}

/// stats: counts per queue and blocked keys, as text and JSON.
pub(crate) fn queues_in_stats(db: &Db) {
    seed_keyed(db);
    let st = db.tend(&["stats"]).ok().says("blocked keys: 2");
    let header = st.stdout.lines().find(|l| l.starts_with("QUEUE")).unwrap();
    assert!(
        header.contains("BLOCKED KEYS") && header.contains("DUE"),
        "{header}"
    );
    let mail = st.stdout.lines().find(|l| l.starts_with("mail ")).unwrap();
    // pending running failed succeeded dead held total due blocked
    let nums: Vec<&str> = mail.split_whitespace().skip(1).collect();
    assert_eq!(
        nums,
        ["2", "0", "0", "0", "1", "1", "4", "2", "2"],
        "{mail}"
    );

    let doc = db.tend(&["stats", "--json"]).ok().json();
    let d = &doc[0];
    assert_eq!(d["blocked_keys"], 2);
    assert_eq!(d["total"], 7, "the existing counts stay");
    let queues = d["by_queue"].as_array().unwrap();
    assert_eq!(queues.len(), 2);
    assert_eq!(queues[0]["queue"], "default");
    assert_eq!(queues[0]["failed"], 1);
    assert_eq!(queues[0]["pending"], 2);
    assert_eq!(queues[0]["blocked_keys"], 0);
    assert_eq!(queues[1]["queue"], "mail");
    assert_eq!(queues[1]["dead"], 1);
    assert_eq!(queues[1]["held"], 1);
    assert_eq!(queues[1]["total"], 4);
    assert_eq!(queues[1]["blocked_keys"], 2);
}

/// keys blocked and keys skip: what blocks, refusals, the change and its effect on the claim.
pub(crate) fn blocked_keys(db: &Db) {
    let k = seed_keyed(db);

    #[cfg(feature = "testing")]
    {
        // Before any change: acct-1 waits behind its dead task, acct-2 behind its failed one.
        let left = drain(db, &[k.behind[0], k.behind[1], k.behind_failed, k.plain]);
        assert_eq!(left, [k.behind[0], k.behind[1], k.behind_failed]);
    }

    let r = db.tend(&["keys", "blocked"]).ok();
    let header = r.stdout.lines().next().unwrap();
    for col in ["KEY", "TASK", "STATUS", "QUEUE", "WAITING", "ERROR"] {
        assert!(header.contains(col), "{header}");
    }
    let acct1 = r.stdout.lines().find(|l| l.starts_with("acct-1 ")).unwrap();
    assert!(
        acct1.contains(&format!(" {} ", k.dead_head))
            && acct1.contains(" dead ")
            && acct1.contains("out of attempts: boom"),
        "{acct1}"
    );
    let acct3 = r.stdout.lines().find(|l| l.starts_with("acct-3 ")).unwrap();
    assert!(acct3.contains(" held "), "{acct3}");
    assert!(
        !r.stdout.contains("acct-2"),
        "a failed first task does not block: {r:#?}"
    );

    let doc = db.tend(&["keys", "blocked", "--json"]).ok().json();
    let keys = doc[0]["blocked_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["key"], "acct-1");
    assert_eq!(keys[0]["task"], k.dead_head);
    assert_eq!(keys[0]["status"], "dead");
    assert_eq!(keys[0]["waiting"], 2);
    assert_eq!(keys[0]["queue"], "mail");
    assert_eq!(keys[1]["key"], "acct-3");
    assert_eq!(keys[1]["waiting"], 0);
    assert_eq!(doc[0]["more"], false);
    let doc = db
        .tend(&["keys", "blocked", "--json", "--limit", "1"])
        .ok()
        .json();
    assert_eq!(doc[0]["blocked_keys"].as_array().unwrap().len(), 1);
    assert_eq!(doc[0]["more"], true);

    // Refusals: a key whose first task is not dead or held, an unknown key.
    db.tend(&["keys", "skip", "acct-2"])
        .fails(
            1,
            &format!(
                "key `acct-2` is not blocked: its first task {} is failed",
                k.failed_head
            ),
        )
        .fails(1, "nothing was changed");
    db.tend(&["keys", "skip", "no-such-key"])
        .fails(1, "no task with ordering key `no-such-key`");
    db.tend(&["keys", "skip"]).fails(2, "KEY");
    assert_eq!(db.row(k.failed_head).unwrap()["ordering_key"], "acct-2");

    // A dry run changes nothing.
    db.tend(&["keys", "skip", "acct-1", "--dry-run"])
        .ok()
        .says(&format!(
            "would skip task {} (dead) out of the line of key `acct-1`; 2 tasks wait behind it",
            k.dead_head
        ))
        .says("dry run: nothing was changed");
    assert_eq!(db.row(k.dead_head).unwrap()["ordering_key"], "acct-1");

    db.tend(&["keys", "skip", "acct-1"])
        .ok()
        .says(&format!(
            "skipped task {} (dead) out of the line of key `acct-1`",
            k.dead_head
        ))
        .says("stays dead");
    let row = db.row(k.dead_head).unwrap();
    assert_eq!(row["status"], "dead", "the row stays dead and visible");
    assert_eq!(row["ordering_key"], Value::Null);
    assert_eq!(row["queue"], "mail");
    let msg = row["error_msg"].as_str().unwrap();
    assert!(msg.starts_with("out of attempts: boom\n"), "{msg}");
    assert!(
        msg.contains("skipped out of the line of key acct-1 by an operator at ")
            && msg.ends_with("(tend keys skip)"),
        "{msg}"
    );
    // Now acct-1 is no longer blocked, and skipping again is refused.
    let r = db.tend(&["keys", "blocked"]).ok();
    assert!(
        !r.stdout.contains("acct-1") && r.stdout.contains("acct-3"),
        "{r:#?}"
    );
    db.tend(&["keys", "skip", "acct-1"])
        .fails(1, &format!("its first task {} is pending", k.behind[0]));
    assert_eq!(
        db.tend(&["stats", "--json"]).ok().json()[0]["blocked_keys"],
        1
    );

    #[cfg(feature = "testing")]
    {
        // The tasks behind it run now, in order; acct-2 still waits for its retry.
        let left = drain(
            db,
            &[k.dead_head, k.behind[0], k.behind[1], k.behind_failed],
        );
        assert_eq!(left, [k.dead_head, k.behind_failed]);
    }

    // A held first task with nothing behind it: skipped too, and stays held.
    db.tend(&["keys", "skip", "acct-3"]).ok().says("(held)");
    assert_eq!(db.status(k.held_head), "held");
    db.tend(&["keys", "blocked"]).ok().says("no blocked keys");
    db.tend(&["stats"]).ok().says("blocked keys: none");
}
