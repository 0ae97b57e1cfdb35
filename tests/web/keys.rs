//! Queues, priorities and ordering keys on the dashboard: the overview's queues and blocked
//! keys, the list's columns and queue/key filters, the detail page, all escaped.

use super::*;
use support::web::enc;
use tend::NewTask;

/// The ids of the rows a list page shows.
fn ids(a: SocketAddr, path: &str) -> Vec<i64> {
    let body = get(a, path).send().expect(200).body;
    body.match_indices("id=\"task-")
        .map(|(i, _)| {
            let rest = &body[i + 9..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        })
        .collect()
}

pub(crate) fn queues_and_keys(db: &Db) {
    let key = "acct-<i>1</i>";
    let (head, behind, plain) = db.with_conn(|c| {
        c.migrate();
        let ship = |n: i64| NewTask::new(&Ship { order_id: n }).unwrap();
        let head = c.enqueue(ship(1).ordering_key(key).queue("mail").priority(2));
        let behind = c.enqueue(ship(2).ordering_key(key).queue("mail"));
        let plain = c.enqueue(ship(3));
        c.sql(&format!(
            "UPDATE consistency_task SET task_status = 4, execute_time = {PARKED}, \
             error_msg = '<script>alert(3)</script>' WHERE id = {head}"
        ));
        (head, behind, plain)
    });
    let server = start(db, None);
    let a = server.addr();

    let home = get(a, "/")
        .send()
        .expect(200)
        .has("By queue")
        .has("Blocked ordering keys (1)")
        .has("acct-&lt;i&gt;1&lt;/i&gt;")
        .has(&format!("href=\"/tasks/{head}?db=0\""))
        .has("tend keys skip KEY")
        .lacks("<i>1</i>")
        .lacks("<script>alert(3)");
    // The queue table: mail has one pending and one dead task, and one blocked key.
    let mail = &home.body[home.body.find("queue=mail").unwrap()..];
    let row = &mail[..mail.find("</tr>").unwrap()];
    let cells: Vec<&str> = row
        .match_indices("<td class=\"num")
        .map(|(i, _)| {
            let rest = &row[i..];
            let start = rest.find('>').unwrap() + 1;
            &rest[start..rest.find("</td>").unwrap()]
        })
        .collect();
    // pending running failed succeeded dead held other total due blocked
    assert_eq!(
        cells,
        ["1", "0", "0", "0", "1", "0", "0", "2", "1", "1"],
        "{row}"
    );

    let list = get(a, "/tasks")
        .send()
        .expect(200)
        .has("<th>queue</th>")
        .has("<th>priority</th>")
        .has("<th>ordering key</th>")
        .has("name=\"queue\"")
        .has("acct-&lt;i&gt;1&lt;/i&gt;")
        .lacks("<i>1</i>");
    drop(list);
    assert_eq!(ids(a, "/tasks?queue=mail"), [head, behind]);
    assert_eq!(ids(a, "/tasks?queue=default"), [plain]);
    assert_eq!(ids(a, &format!("/tasks?key={}", enc(key))), [head, behind]);
    assert_eq!(
        ids(a, &format!("/tasks?key={}&status=pending", enc(key))),
        [behind]
    );
    assert_eq!(ids(a, "/tasks?queue=nope"), Vec::<i64>::new());

    get(a, &format!("/tasks/{head}"))
        .send()
        .expect(200)
        .has("<th>queue</th><td>mail</td>")
        .has("<th>priority</th><td>2</td>")
        .has("<th>ordering key</th><td>acct-&lt;i&gt;1&lt;/i&gt;</td>")
        .lacks("<i>1</i>");
    get(a, &format!("/tasks/{plain}"))
        .send()
        .has("<th>queue</th><td>default</td>")
        .has("<th>ordering key</th><td>–</td>");

    // A bulk action from a queue-filtered list is about that queue only, not every task.
    get(a, "/bulk/cancel?db=0&queue=mail")
        .send()
        .expect(200)
        .has("cancel 1 task?")
        .has("queue = mail");

    // Skipping needs the token: the read-only dashboard shows the page but no form.
    let page = format!("/keys/skip?db=0&key={}", enc(key));
    get(a, &page)
        .send()
        .expect(200)
        .has(&format!("Task <a href=\"/tasks/{head}?db=0\">{head}</a>"))
        .has("1 task waiting behind it")
        .has("read-only")
        .lacks("name=\"csrf\"")
        .lacks("<script>alert(3)");
    assert!(home
        .body
        .contains(&format!("href=\"/keys/skip?db=0&amp;key={}\"", enc(key))));
    server.shutdown();

    let server = start(db, Some(TOKEN));
    let a = server.addr();
    let session = login(a, TOKEN);
    let token = csrf(a, &page, &session);
    let skip = |k: &str, csrf: &str| {
        post(a, "/keys/skip")
            .cookie(&session)
            .same_origin()
            .form(&[("db", "0"), ("key", k), ("csrf", csrf)])
            .send()
    };
    skip(key, "stale").expect(403);
    assert_eq!(db.row(head).unwrap()["ordering_key"], key);
    skip("no-such-key", &token)
        .expect(404)
        .has("no task with ordering key");
    let done = skip(key, &token).expect(303);
    assert_eq!(
        done.header("Location"),
        Some(format!("/tasks/{head}?db=0&done=skipped").as_str())
    );
    let row = db.row(head).unwrap();
    assert_eq!(row["status"], "dead", "the row stays dead and visible");
    assert_eq!(row["ordering_key"], serde_json::Value::Null);
    let msg = row["error_msg"].as_str().unwrap();
    assert!(
        msg.starts_with("<script>alert(3)</script>\n")
            && msg.contains(&format!(
                "skipped out of the line of key {key} by an operator at "
            ))
            && msg.ends_with("(tend web)"),
        "{msg}"
    );
    // The key is no longer blocked: its first task is now the pending one, and skip refuses.
    skip(key, &token)
        .expect(409)
        .has(&format!("its first task {behind} is pending"));
    get(a, "/")
        .send()
        .expect(200)
        .has("Blocked ordering keys (0)");
    get(a, &format!("/tasks/{head}?db=0&done=skipped"))
        .send()
        .has("Skipped out of its ordering key")
        .has("<th>ordering key</th><td>–</td>");
}
