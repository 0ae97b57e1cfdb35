//! The web dashboard (`tend web`, `tend::web`) against real databases: every page, the
//! actions with their confirmation, `/metrics`, and the attacks a dashboard must refuse (no
//! token, wrong token, cross-site POSTs, oversized and malformed input, path traversal, HTML
//! injected through a task's columns, foreign Host names).
//!
//! SQLite always; PostgreSQL and MariaDB when `TEND_PG_URL` / `TEND_MYSQL_URL` are set (as in
//! `tests/cli/`, whose harness, `support::cli`, this reuses: each test gets a database of its
//! own). The browser test drives headless Chromium through chromedriver when they are installed (Debian
//! `chromium`, `chromium-driver`), and fails instead of skipping with `TEND_REQUIRE_BROWSER=1`.

#[path = "../support/mod.rs"]
mod support;

mod dashboard;
mod keys;
mod refusals;

use dashboard::*;
use keys::*;
use refusals::*;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

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

per_backend!(processes: pages, attacks, queues_and_keys);

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
    // A click that submits a form can return before the next page has loaded: each one waits
    // for the page it leads to (a CI run went on from the login page, whose URL also ends in
    // "/tasks", and its next clicks landed on the list's bulk "retry all").
    driver.goto(&format!("{base}/login?next=/tasks"));
    driver.type_into("input[name=token]", TOKEN);
    driver.click("button[type=submit]");
    wait_for_page(&driver, "Tasks");
    assert!(
        driver.url().ends_with(&format!("{base}/tasks")),
        "{}",
        driver.url()
    );
    driver.goto(&format!("{base}/tasks/{}?db=0", s.dead_old));
    assert!(driver.title().starts_with("Task "), "{}", driver.title());
    driver.click("a.button.retry");
    wait_for_page(&driver, &format!("retry task {}", s.dead_old));
    assert_eq!(
        status_of(&db, s.dead_old),
        "dead",
        "nothing happens before the confirmation"
    );
    driver.click("#confirm");
    wait_for_page(&driver, "Task ");
    assert!(
        driver.text(".flash").starts_with("Retried"),
        "{}",
        driver.source()
    );
    assert_eq!(status_of(&db, s.dead_old), "failed");

    driver.goto(&format!("{base}/tasks/{}?db=0", s.pending));
    driver.click("a.button.cancel");
    wait_for_page(&driver, &format!("cancel task {}", s.pending));
    driver.click("#confirm");
    wait_for_page(&driver, "Task ");
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

/// Waits (10 s at most) until the browser shows a page whose title starts with `title`.
fn wait_for_page(driver: &support::web::webdriver::Driver, title: &str) {
    let found = support::wait_for_or(Duration::from_secs(10), || {
        driver.title().starts_with(title)
    });
    assert!(
        found.is_some(),
        "waiting for the page {title:?}: the browser shows {:?} at {}",
        driver.title(),
        driver.url()
    );
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
