//! The web dashboard (`tend web`, `tend::web`) against real databases: every page, the
//! actions with their confirmation, `/metrics`, and the attacks a dashboard must refuse (no
//! token, wrong token, cross-site POSTs, oversized and malformed input, path traversal, HTML
//! injected through a task's columns, foreign Host names).
//!
//! SQLite always; PostgreSQL and MariaDB when `TEND_PG_URL` / `TEND_MYSQL_URL` are set (as in
//! `tests/cli.rs`, whose harness this reuses: each test gets a database of its own). The
//! browser test drives headless Chromium through chromedriver when they are installed (Debian
//! `chromium`, `chromium-driver`), and fails instead of skipping with `TEND_REQUIRE_BROWSER=1`.

mod support;

use std::net::SocketAddr;

use support::cli::*;
use support::per_backend;
use support::web::{get, login, post, raw};
use tend::web::{Options, Server};
use tend::Registry;

const TOKEN: &str = "correct-horse-battery-staple";

/// The registry of the application that seeded the rows: payloads decode.
fn registry() -> Registry {
    let mut r = Registry::new();
    r.register::<Ship>().unwrap();
    r.register::<Refund>().unwrap();
    r
}

fn start(db: &Db, token: Option<&str>) -> Server {
    let opts = Options::new([db.url.clone()])
        .listen("127.0.0.1:0")
        .token(token.map(str::to_string));
    Server::start(registry(), opts).expect("the dashboard starts")
}

/// A task's status as `tend tasks show` reads it.
fn status_of(db: &Db, id: i64) -> String {
    db.status(id)
}

/// The CSRF value of the confirmation form of `path` for a logged-in session.
fn csrf(addr: SocketAddr, path: &str, session: &str) -> String {
    get(addr, path)
        .cookie(session)
        .send()
        .expect(200)
        .input("csrf")
        .unwrap_or_else(|| panic!("{path} has no CSRF field"))
}

// ---------------------------------------------------------------------------------------------
// Every page
/// Every page renders, payloads decode, filters and the cursor work, and HTML in a task's
/// columns is shown as text.
fn pages(db: &Db) {
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
    ] {
        assert!(home.body.contains(needle), "overview lacks {needle}");
    }
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

// ---------------------------------------------------------------------------------------------
// The attacks a dashboard must refuse
/// Changes need the token, the same origin and the session's CSRF value; each attack leaves
/// the row as it was.
fn attacks(db: &Db) {
    let s = seed(db);
    let read_only = start(db, None);
    let a = read_only.addr();
    post(a, &format!("/tasks/{}/retry", s.dead_old))
        .same_origin()
        .bearer(TOKEN)
        .form(&[("db", "0")])
        .send()
        .expect(403)
        .has("read-only");
    post(a, "/login")
        .same_origin()
        .form(&[("token", TOKEN)])
        .send()
        .expect(403);
    read_only.shutdown();
    assert_eq!(status_of(db, s.dead_old), "dead");

    let server = start(db, Some(TOKEN));
    let a = server.addr();
    let retry = format!("/tasks/{}/retry", s.dead_old);
    // No token at all (a plain form post from anywhere).
    post(a, &retry).form(&[("db", "0")]).send().expect(403);
    post(a, &retry)
        .same_origin()
        .form(&[("db", "0")])
        .send()
        .expect(401);
    // A wrong token, as a header or at the login.
    post(a, &retry)
        .bearer("guess")
        .form(&[("db", "0")])
        .send()
        .expect(401);
    post(a, &retry)
        .header("Authorization", "Basic Z3Vlc3M=")
        .send()
        .expect(401);
    post(a, "/login")
        .same_origin()
        .form(&[("token", "guess")])
        .send()
        .expect(401)
        .has("wrong token");
    // A cross-site login (login CSRF).
    post(a, "/login")
        .header("Origin", "http://evil.example")
        .form(&[("token", TOKEN)])
        .send()
        .expect(403);
    let session = login(a, TOKEN);
    let token = csrf(a, &retry, &session);
    // Forged cross-site POSTs with the victim's cookie: a foreign Origin, a foreign Referer,
    // neither; then a missing and a wrong CSRF value from the right origin.
    post(a, &retry)
        .cookie(&session)
        .header("Origin", "http://evil.example")
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(403)
        .has("cross-site");
    post(a, &retry)
        .cookie(&session)
        .header("Origin", "null")
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(403);
    post(a, &retry)
        .cookie(&session)
        .header("Referer", "http://evil.example/x")
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(403);
    post(a, &retry)
        .cookie(&session)
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(403);
    post(a, &retry)
        .cookie(&session)
        .same_origin()
        .form(&[("db", "0")])
        .send()
        .expect(403)
        .has("CSRF");
    post(a, &retry)
        .cookie(&session)
        .same_origin()
        .form(&[("db", "0"), ("csrf", "0123456789abcdef0123456789abcdef")])
        .send()
        .expect(403);
    post(a, &retry)
        .cookie("forged-session")
        .same_origin()
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(401);
    // A page under a name that is not ours (DNS rebinding) is refused, even for reading.
    get(a, "/")
        .header("Host", "evil.example:8080")
        .send()
        .expect(421);
    post(a, &retry)
        .header("Host", "evil.example")
        .header("Origin", "http://evil.example")
        .bearer(TOKEN)
        .send()
        .expect(421);
    // A GET never changes anything.
    get(a, &format!("{retry}?db=0&csrf={token}"))
        .cookie(&session)
        .send()
        .expect(200);
    assert_eq!(
        status_of(db, s.dead_old),
        "dead",
        "no attack changed the row"
    );

    // Oversized and malformed input: clear 4xx pages, never a crash.
    let long = format!("/tasks?signature={}", "x".repeat(5000));
    get(a, &long).send().expect(414);
    post(a, &retry)
        .bearer(TOKEN)
        .body(format!("db=0&pad={}", "x".repeat(20_000)))
        .send()
        .expect(413);
    let many: Vec<String> = (0..100).map(|i| format!("p{i}=1")).collect();
    get(a, &format!("/tasks?{}", many.join("&")))
        .send()
        .expect(400);
    get(a, &format!("/tasks?error={}", "e".repeat(2000)))
        .send()
        .expect(400);
    for (path, status) in [
        ("/tasks?limit=abc", 400),
        ("/tasks?limit=0", 400),
        ("/tasks?limit=100000", 400),
        ("/tasks?status=bogus", 400),
        ("/tasks?shard_key=1e9", 400),
        ("/tasks?after_id=--1", 400),
        ("/tasks?db=7", 400),
        ("/tasks?db=-1", 400),
        ("/tasks?status=%FF%FE", 400),
        ("/tasks/99999999999999999999999", 404),
        ("/tasks/abc", 404),
        ("/tasks/1/explode", 404),
        ("/tasks/987654321", 404),
        ("/purge?older_than=forever", 400),
        ("/nope", 404),
        // Path traversal: nothing is served from the file system.
        ("/static/../../../../etc/passwd", 404),
        ("/static/..%2F..%2FCargo.toml", 404),
        ("/static/%2e%2e/%2e%2e/etc/passwd", 404),
        ("/..%2f..%2fetc%2fpasswd", 404),
    ] {
        let r = get(a, path).send();
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(!r.body.contains("root:"), "{path} leaked a file");
        assert!(r.body.contains("<h1>"), "{path} answers with an error page");
    }
    post(a, &format!("/tasks/{}/retry", s.dead_old))
        .bearer(TOKEN)
        .form(&[("db", "x")])
        .send()
        .expect(400);
    post(a, "/purge")
        .bearer(TOKEN)
        .form(&[("db", "0")])
        .send()
        .expect(400);
    post(a, "/purge")
        .bearer(TOKEN)
        .form(&[("older_than", "1d"), ("status", "pending")])
        .send()
        .expect(400);
    let put = raw(
        a,
        format!("PUT /tasks/1/retry HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    );
    assert_eq!(put.status, 405);
    let garbage = raw(a, b"\x16\x03\x01garbage\r\n\r\n");
    assert!((400..500).contains(&garbage.status), "{garbage:?}");
    let no_host = raw(a, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!((400..500).contains(&no_host.status), "{no_host:?}");
    assert_eq!(status_of(db, s.dead_old), "dead");
    // The server still answers after all that.
    get(a, "/").send().expect(200);

    // The real thing: a logged-in browser form, and a script's Bearer token.
    post(a, &retry)
        .cookie(&session)
        .same_origin()
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(303);
    assert_eq!(status_of(db, s.dead_old), "failed");
    // Same rules as the CLI: retry applies to failed, dead and held tasks only...
    post(a, &format!("/tasks/{}/retry", s.pending))
        .bearer(TOKEN)
        .form(&[("db", "0")])
        .send()
        .expect(409);
    // ...and running tasks are cancelled or deleted only when forced.
    let cancel_running = format!("/tasks/{}/cancel", s.running);
    post(a, &cancel_running)
        .bearer(TOKEN)
        .form(&[("db", "0")])
        .send()
        .expect(409)
        .has("running");
    assert_eq!(status_of(db, s.running), "running");
    post(a, &cancel_running)
        .bearer(TOKEN)
        .form(&[("db", "0"), ("force", "1")])
        .send()
        .expect(303);
    assert_eq!(status_of(db, s.running), "dead");
    post(a, &format!("/tasks/{}/retry", s.held))
        .bearer(TOKEN)
        .form(&[("db", "0"), ("reset_attempts", "1")])
        .send()
        .expect(303);
    let row = db.row(s.held).unwrap();
    assert_eq!(
        (row["status"].as_str(), row["execute_times"].as_i64()),
        (Some("pending"), Some(0))
    );
    post(a, &format!("/tasks/{}/delete", s.pending))
        .bearer(TOKEN)
        .form(&[("db", "0")])
        .send()
        .expect(303);
    assert!(db.row(s.pending).is_none());
    // Purge: dead and succeeded rows older than 7 days (dead_old was retried above).
    let r = post(a, "/purge")
        .bearer(TOKEN)
        .form(&[("db", "0"), ("older_than", "7d")])
        .send()
        .expect(303);
    assert_eq!(r.header("Location"), Some("/purge?db=0&purged=1"));
    assert!(db.row(s.done_old).is_none());
    assert!(db.row(s.dead_new).is_some(), "a recent dead task stays");
    // Bulk actions: the list's filter, the CLI's rules, a confirmation with the count.
    get(a, "/bulk/retry?db=0")
        .send()
        .expect(400)
        .has("needs a filter");
    get(a, "/bulk/retry?db=0&status=pending")
        .send()
        .expect(409)
        .has("not pending");
    get(a, "/bulk/retry?db=0&status=dead")
        .send()
        .expect(200)
        .has("retry 2 tasks?");
    let bulk = [("db", "0"), ("status", "dead")];
    post(a, "/bulk/retry")
        .cookie(&session)
        .header("Origin", "http://evil.example")
        .form(&[("db", "0"), ("status", "dead"), ("csrf", &token)])
        .send()
        .expect(403);
    post(a, "/bulk/retry").form(&bulk).send().expect(403);
    assert_eq!(status_of(db, s.dead_new), "dead");
    let r = post(a, "/bulk/retry")
        .bearer(TOKEN)
        .form(&bulk)
        .send()
        .expect(303);
    assert_eq!(
        r.header("Location"),
        Some("/tasks?db=0&status=dead&changed=2")
    );
    assert_eq!(status_of(db, s.dead_new), "failed");
    assert_eq!(status_of(db, s.running), "failed");
    let r = post(a, "/bulk/cancel")
        .bearer(TOKEN)
        .form(&[("db", "0"), ("signature", "payments.refund")])
        .send()
        .expect(303);
    assert!(r.header("Location").unwrap().ends_with("changed=1"));
    assert_eq!(status_of(db, s.running), "dead");
    // Logging out ends the session.
    post(a, "/logout")
        .cookie(&session)
        .same_origin()
        .form(&[("csrf", &token)])
        .send()
        .expect(303);
    post(a, &format!("/tasks/{}/cancel", s.failed))
        .cookie(&session)
        .same_origin()
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(401);
    server.shutdown();
}

per_backend!(processes: pages, attacks);

#[test]
fn passwords_are_never_shown() {
    let err = Server::start(
        Registry::new(),
        Options::new(["postgres://app:hunter2@127.0.0.1:1/db?password=hunter3"])
            .listen("127.0.0.1:0"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        !err.contains("hunter2") && !err.contains("hunter3"),
        "{err}"
    );
    assert!(err.contains("app:***@127.0.0.1:1"), "{err}");
}

/// `tend web` from the binary: it says where it listens, serves, and is read-only without a
/// token.
#[cfg(feature = "sqlite")]
#[test]
fn the_binary_serves() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let db = Db::for_processes(Backend::Sqlite).unwrap();
    seed(&db);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(["web", "--database-url", &db.url, "--listen", "127.0.0.1:0"])
        .env_remove("TEND_WEB_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .parse()
        .unwrap();
    assert!(line.contains("read-only"), "{line}");
    let r = get(addr, "/tasks").send();
    let _ = child.kill();
    let _ = child.wait();
    r.expect(200).has("orders.ship");
}

/// The pools of a process report to the dashboard's `/metrics` through `MetricsEvents`.
#[cfg(feature = "sqlite")]
#[test]
fn pools_report_to_metrics() {
    use diesel::r2d2::{ConnectionManager, Pool};
    use diesel::SqliteConnection;
    let db = Db::for_processes(Backend::Sqlite).unwrap();
    let pool = Pool::builder()
        .connection_customizer(Box::new(tend::SqliteSetup::new()))
        .build(ConnectionManager::<SqliteConnection>::new(&db.url))
        .unwrap();
    tend::migrate(&mut pool.get().unwrap()).unwrap();
    let metrics = tend::web::MetricsEvents::new();
    let handle = tend::WorkerPool::builder(pool.clone(), registry())
        .events(metrics.clone())
        .build()
        .unwrap()
        .start()
        .unwrap();
    for n in 0..5 {
        tend::enqueue(&mut pool.get().unwrap(), &Ship { order_id: n }).unwrap();
    }
    handle.wake();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !metrics
        .render()
        .contains("tend_attempts_succeeded_total{signature=\"orders.ship\"} 5")
    {
        assert!(std::time::Instant::now() < deadline, "{}", metrics.render());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    handle.shutdown();
    let server = Server::start(
        registry(),
        Options::new([db.url.clone()])
            .listen("127.0.0.1:0")
            .metrics(metrics),
    )
    .unwrap();
    let m = get(server.addr(), "/metrics").send().expect(200).body;
    assert!(
        m.contains("tend_attempts_total{signature=\"orders.ship\"} 5"),
        "{m}"
    );
    assert!(
        m.contains("tend_attempt_duration_seconds_count{signature=\"orders.ship\"} 5"),
        "{m}"
    );
    assert!(m.contains("le=\"+Inf\"} 5"), "{m}");
    get(server.addr(), "/")
        .send()
        .expect(200)
        .has("Attempts by this process");
    server.shutdown();
}

/// Headless Chromium through chromedriver: every page loads, retry and cancel go through their
/// confirmation, and the rows change. With `TEND_WEB_SCREENSHOT=PATH` the overview's screenshot
/// is written there (docs/web-overview.png is made that way).
#[cfg(feature = "sqlite")]
#[test]
fn in_a_browser() {
    use support::web::webdriver::Driver;
    let require = std::env::var("TEND_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let Some(driver) = Driver::start() else {
        assert!(
            !require,
            "TEND_REQUIRE_BROWSER=1 but chromium/chromedriver are not installed"
        );
        eprintln!("\n*** SKIPPED: browser test: install the Debian packages chromium and chromium-driver ***\n");
        return;
    };
    let db = Db::for_processes(Backend::Sqlite).unwrap();
    let s = seed(&db);
    // Some history for the chart: rows that changed over the last hour.
    db.with_conn(|c| {
        let now = now_ms();
        for n in 0..120i64 {
            let id = c.enqueue(tend::NewTask::new(&Ship { order_id: 100 + n }).unwrap());
            let (status, parked) = match n % 6 {
                0..=2 => (3, true),
                3..=4 => (2, false),
                _ => (4, true),
            };
            let modified = now - (n * 29_000) % 3_540_000;
            let due = if parked { i64::MAX } else { now + 600_000 };
            c.sql(&format!(
                "UPDATE consistency_task SET task_status = {status}, execute_time = {due}, \
                 execute_times = 1, gmt_modified = {modified}, \
                 error_msg = CASE WHEN {status} = 3 THEN '' ELSE 'carrier timeout' END \
                 WHERE id = {id}"
            ));
        }
    });
    let server = start(&db, Some(TOKEN));
    let base = format!("http://{}", server.addr());

    driver.goto(&format!("{base}/"));
    assert!(driver.title().starts_with("Overview"), "{}", driver.title());
    assert!(driver.source().contains("<svg"));
    let png = driver.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
    if let Ok(path) = std::env::var("TEND_WEB_SCREENSHOT") {
        std::fs::write(&path, &png).unwrap();
    }
    for (path, title) in [
        ("/tasks".to_string(), "Tasks"),
        ("/tasks?status=dead&limit=20".to_string(), "Tasks"),
        (format!("/tasks/{}", s.running), "Task "),
        ("/purge?older_than=7d".to_string(), "Purge"),
        ("/login".to_string(), "Log in"),
    ] {
        driver.goto(&format!("{base}{path}"));
        assert!(
            driver.title().starts_with(title),
            "{path}: {}",
            driver.title()
        );
    }
    driver.goto(&format!("{base}/metrics"));
    assert!(driver.source().contains("tend_tasks{"), "/metrics renders");
    // The cursor link leads to the next page.
    driver.goto(&format!("{base}/tasks?limit=20"));
    driver.click("a.next");
    assert!(driver.url().contains("after_id="), "{}", driver.url());

    // Log in, then retry a dead task and cancel a pending one through their confirmations.
    driver.goto(&format!("{base}/login?next=/tasks"));
    driver.type_into("input[name=token]", TOKEN);
    driver.click("button[type=submit]");
    assert!(driver.url().ends_with("/tasks"), "{}", driver.url());
    driver.goto(&format!("{base}/tasks/{}?db=0", s.dead_old));
    driver.click("a.button.retry");
    assert!(
        driver.title().starts_with("retry task"),
        "{}",
        driver.title()
    );
    assert_eq!(
        status_of(&db, s.dead_old),
        "dead",
        "nothing happens before the confirmation"
    );
    driver.click("#confirm");
    assert!(
        driver.text(".flash").starts_with("Retried"),
        "{}",
        driver.source()
    );
    assert_eq!(status_of(&db, s.dead_old), "failed");

    driver.goto(&format!("{base}/tasks/{}?db=0", s.pending));
    driver.click("a.button.cancel");
    driver.click("#confirm");
    assert!(driver.text(".flash").starts_with("Cancelled"));
    assert_eq!(status_of(&db, s.pending), "dead");
    driver.goto(&format!("{base}/tasks?status=dead&limit=500"));
    let page = driver.source();
    assert!(
        page.contains(&format!("id=\"task-{}\"", s.pending)),
        "the cancelled task is listed as dead"
    );
    assert!(
        !page.contains(&format!("id=\"task-{}\"", s.dead_old)),
        "the retried task is no longer dead"
    );
    drop(driver);
    server.shutdown();
}

/// The WebDriver client's base64 decoder (screenshots). Here, not in `support/web/webdriver.rs`,
/// so that the other test binaries, which include the same harness, do not run it too.
#[test]
fn decodes_base64() {
    use support::web::webdriver::base64_decode;
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
