//! Every page renders, payloads decode, filters and the cursor work.

use super::*;

// ---------------------------------------------------------------------------------------------
// Every page
/// Every page renders, payloads decode, filters and the cursor work, and HTML in a task's
/// columns is shown as text.
pub(crate) fn pages(db: &Db) {
    let s = seed(db);
    let hostile_sig = "<script>alert('sig')</script>";
    db.sql(&format!(
        "UPDATE consistency_task SET error_msg = '<img src=x onerror=alert(1)>\"><script>alert(2)</script>', \
         method_sign_name = '{}' WHERE id = {}",
        hostile_sig.replace('\'', "''"),
        s.held
    ));
    db.sql(&format!(
        "UPDATE consistency_task SET task_status = 9 WHERE id = {}",
        s.done_old
    ));
    // Two periodic schedules: one on time, one whose slot passed with no process to enqueue it
    // (and a name with HTML in it, shown as text).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    db.sql(&format!(
        "INSERT INTO tend_schedule (name, spec, last_slot_ms, next_slot_ms, updated_at) VALUES \
         ('reports.nightly', 'cron 0 3 * * * Europe/Berlin', {}, {}, {now}), \
         ('<b>cleanup</b>', 'every 5m', {}, {}, {now})",
        now - 3_600_000,
        now + 7_200_000,
        now - 900_000,
        now - 600_000
    ));
    let server = start(db, None);
    let a = server.addr();

    let home = get(a, "/")
        .send()
        .expect(200)
        .has("Overview")
        .has("read-only");
    for needle in [
        "dead",
        "held",
        "orders.ship",
        "payments.refund",
        "oldest due",
        "unknown(9)",
        "Periodic schedules",
        "reports.nightly",
        "cron 0 3 * * * Europe/Berlin",
        "&lt;b&gt;cleanup&lt;/b&gt;",
        "is a process running it?",
    ] {
        assert!(home.body.contains(needle), "overview lacks {needle}");
    }
    assert!(
        !home.body.contains("<b>cleanup"),
        "a schedule's name is escaped"
    );
    assert!(home.body.contains("<svg"), "the overview has its chart");
    let csp = home.header("Content-Security-Policy").unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    for r in [
        home,
        get(a, "/tasks").send().expect(200),
        get(a, &format!("/tasks/{}", s.held)).send().expect(200),
    ] {
        r.lacks("<script>alert")
            .lacks("<img src=x")
            .lacks("alert('sig')</script>");
    }
    get(a, &format!("/tasks/{}", s.held))
        .send()
        .has("&lt;img src=x onerror=alert(1)&gt;&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;")
        .has("&lt;script&gt;alert('sig')&lt;/script&gt;");

    // Every seeded row is listed; filters narrow; the cursor pages without OFFSET.
    let list = get(a, "/tasks").send().expect(200);
    for id in s.all() {
        assert!(
            list.body.contains(&format!("id=\"task-{id}\"")),
            "list lacks {id}"
        );
    }
    let ids = |path: &str| -> Vec<i64> {
        let body = get(a, path).send().expect(200).body;
        body.match_indices("id=\"task-")
            .map(|(i, _)| {
                let rest = &body[i + 9..];
                rest[..rest.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    };
    assert_eq!(ids("/tasks?status=dead"), vec![s.dead_old, s.dead_new]);
    assert_eq!(ids("/tasks?status=unknown"), vec![s.done_old]);
    assert_eq!(ids("/tasks?status=9"), vec![s.done_old]);
    assert_eq!(
        ids("/tasks?status=dead&status=held"),
        vec![s.dead_old, s.held, s.dead_new]
    );
    assert_eq!(ids("/tasks?signature=payments.refund"), vec![s.running]);
    assert_eq!(ids("/tasks?shard_key=7"), vec![s.running]);
    assert_eq!(ids("/tasks?error=carrier"), vec![s.failed]);
    // LIKE wildcards in the text are literal.
    assert_eq!(ids("/tasks?error=%25"), Vec::<i64>::new());
    assert_eq!(ids("/tasks?error=_"), Vec::<i64>::new());
    let first = ids("/tasks?limit=3");
    assert_eq!(first, s.all()[..3]);
    let page = get(a, "/tasks?limit=3").send().has("next page");
    let next = format!("after_id={}", first[2]);
    assert!(
        page.body.contains(&next),
        "the next link carries the cursor"
    );
    assert_eq!(ids(&format!("/tasks?limit=3&{next}")), s.all()[3..6]);

    // The detail page: decoded payload, attempts, last error, next run, lease owner.
    get(a, &format!("/tasks/{}", s.running))
        .send()
        .expect(200)
        .has("&quot;cents&quot;: 1250")
        .has("host-1")
        .has("1 of 25");
    get(a, &format!("/tasks/{}", s.failed))
        .send()
        .has("timeout talking to the carrier")
        .has("1 of 25");
    get(a, &format!("/tasks/{}", s.dead_old))
        .send()
        .has("never (parked");
    // Confirmation pages render, and say that changes need the token.
    get(a, &format!("/tasks/{}/retry", s.dead_old))
        .send()
        .expect(200)
        .has("read-only")
        .lacks("name=\"csrf\"");
    get(a, "/purge?older_than=7d")
        .send()
        .expect(200)
        .has("would be purged");
    get(a, "/login").send().expect(200);
    get(a, "/static/style.css").send().expect(200).has("--dead");

    // /metrics
    let m = get(a, "/metrics").send().expect(200).body;
    assert!(
        m.contains("tend_tasks{shard=\"0\",signature=\"orders.ship\",status=\"dead\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("tend_tasks{shard=\"0\",signature=\"payments.refund\",status=\"running\"} 1"),
        "{m}"
    );
    assert!(m.contains("status=\"unknown(9)\"} 1"), "{m}");
    assert!(
        m.contains("tend_oldest_due_age_seconds{shard=\"0\"}"),
        "{m}"
    );
    assert!(m.contains("tend_up{shard=\"0\"} 1"), "{m}");
    // The hostile signature is a well-formed label.
    assert!(
        m.contains("signature=\"<script>alert('sig')</script>\""),
        "{m}"
    );
    server.shutdown();
}
