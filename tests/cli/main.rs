//! End-to-end tests of the `tend` binary, run as a process: its output and exit codes for
//! every command and every error case, against real databases.
//!
//! SQLite always (temp files). PostgreSQL and MariaDB/MySQL when `TEND_PG_URL` /
//! `TEND_MYSQL_URL` name a server: each test creates its own database there
//! (`tend_cli_<pid>_<n>`) and drops it afterwards. Without a URL those tests print a loud
//! SKIPPED line, or fail when `TEND_REQUIRE_DBS=1`. Rows are seeded through the library
//! (`tend::migrate`, `tend::enqueue`) and raw SQL turns them dead, held, running, …; every
//! change the CLI makes is checked by reading the row back with `tend tasks show --json`.

#[path = "../support/mod.rs"]
mod support;

mod keys;
mod scenarios;
mod schedules;

use keys::*;
use scenarios::*;
use schedules::*;

#[cfg(feature = "sqlite")] // the run_from test spawns itself
use std::process::Command;

use serde_json::Value;
use tend::NewTask;

use support::cli::*;
use support::per_backend;

/// A time in RFC 3339 long before any seeded row (the parser's own tests cover the format).
const Y2000: &str = "2000-01-01T00:00:00Z";

per_backend!(processes: unmigrated, inspect, changes, purge, unknown_statuses, stats_lists_schedules);
per_backend!(processes: queues_in_lists, queues_in_stats, blocked_keys);

// ---------------------------------------------------------------------------------------------
// Backend-independent errors, the URL handling, several shards, help

#[test]
fn passwords_never_appear_when_a_server_is_unreachable() {
    for (url, shown) in [
        (
            "mysql://root:secret@127.0.0.1:1/x",
            "mysql://root:***@127.0.0.1:1/x",
        ),
        (
            "postgres://app:secret@127.0.0.1:1/x",
            "postgres://app:***@127.0.0.1:1/x",
        ),
        (
            "postgresql://app@127.0.0.1:1/x?password=secret",
            "postgresql://app@127.0.0.1:1/x?password=***",
        ),
    ] {
        for args in [&["stats"][..], &["migrate"], &["tasks", "retry", "--all"]] {
            let mut all = vec!["--database-url", url];
            all.extend_from_slice(args);
            let r = tend(&all).fails(1, shown);
            assert!(!r.stderr.contains("secret"), "{r:#?}");
            assert!(!r.stdout.contains("secret"), "{r:#?}");
            // Either the driver's refusal or, in a build without the backend, which one.
            assert!(
                r.stderr.contains("cannot connect to") || r.stderr.contains("built without"),
                "{r:#?}"
            );
        }
    }
}

#[test]
fn a_wrong_password_is_not_echoed() {
    #[cfg(feature = "mysql")]
    if let Ok(server) = std::env::var("TEND_MYSQL_URL") {
        let (head, rest) = server.split_at(server.find("://").unwrap() + 3);
        let host = rest.rsplit('@').next().unwrap();
        let url = format!("{head}root:Wr0ngPassw0rd@{host}");
        let r = tend(&["stats", "--database-url", &url]).fails(1, "root:***@");
        assert!(!r.stderr.contains("Wr0ngPassw0rd"), "{r:#?}");
    }
    #[cfg(feature = "postgres")]
    if let Ok(server) = std::env::var("TEND_PG_URL") {
        // A trust setup accepts any password: whether this works or not, it is never shown.
        let (head, rest) = server.split_at(server.find("://").unwrap() + 3);
        let host = rest.rsplit('@').next().unwrap();
        let url = format!("{head}postgres:Wr0ngPassw0rd@{host}");
        let r = tend(&["stats", "--json", "--database-url", &url]);
        assert!(!r.stderr.contains("Wr0ngPassw0rd") && !r.stdout.contains("Wr0ngPassw0rd"));
        assert!(
            r.stdout.contains("postgres:***@") || r.stderr.contains("postgres:***@"),
            "{r:#?}"
        );
    }
}

#[test]
fn no_database_is_a_usage_error() {
    tend(&["stats"]).fails(2, "pass --database-url URL");
    tend(&["tasks", "list"]).fails(2, "or set DATABASE_URL");
}

#[cfg(feature = "sqlite")]
#[test]
fn database_url_comes_from_the_environment() {
    let db = Db::for_processes(Backend::Sqlite).unwrap();
    tend_env(&["migrate"], &[("DATABASE_URL", &db.url)])
        .ok()
        .says("migrated");
    let sqlite_url = format!("sqlite://{}", db.url);
    tend_env(&["stats"], &[("DATABASE_URL", &sqlite_url)])
        .ok()
        .says("total");
    // --database-url wins over the environment.
    tend_env(
        &["stats", "--database-url", &db.url],
        &[("DATABASE_URL", "/nonexistent/dir/x.db")],
    )
    .ok();
}

#[cfg(feature = "sqlite")]
#[test]
fn a_missing_sqlite_file_is_not_created() {
    let path = std::env::temp_dir().join(unique("tend-cli-missing") + ".db");
    let p = path.to_str().unwrap();
    tend(&["stats", "--database-url", p])
        .fails(1, "does not exist")
        .fails(1, "tend migrate --database-url");
    assert!(!path.exists());
}

#[cfg(feature = "sqlite")]
#[test]
fn several_shards_are_reported_separately() {
    let a = Db::for_processes(Backend::Sqlite).unwrap();
    let b = Db::for_processes(Backend::Sqlite).unwrap();
    let sa = seed(&a);
    b.with_conn(|c| {
        c.migrate();
        c.enqueue(NewTask::new(&Ship { order_id: 100 }).unwrap());
    });
    let both = |args: &[&str]| {
        let mut all = vec!["--database-url", &a.url, "--database-url", &b.url];
        all.extend_from_slice(args);
        tend(&all)
    };
    both(&["migrate"]).ok().says(&a.url).says(&b.url);
    let list = both(&["tasks", "list"]).ok();
    let ha = list
        .stdout
        .find(&format!("== {} (sqlite) ==", a.url))
        .unwrap();
    let hb = list
        .stdout
        .find(&format!("== {} (sqlite) ==", b.url))
        .unwrap();
    assert!(ha < hb);
    let doc = both(&["stats", "--json"]).ok().json();
    assert_eq!(doc.as_array().unwrap().len(), 2);
    assert_eq!(doc[0]["total"], 7);
    assert_eq!(doc[1]["total"], 1);
    assert_eq!(doc[1]["database"], b.url.as_str());
    let doc = both(&["tasks", "list", "--json"]).ok().json();
    assert_eq!(doc[1]["tasks"][0]["id"], 1);

    // Id 1 exists in both: show shows both, a change refuses to guess.
    let show = both(&["tasks", "show", "1", "--json"]).ok().json();
    assert_eq!(show.as_array().unwrap().len(), 2);
    both(&["tasks", "cancel", "1"]).fails(1, "exists in 2 databases");
    // An id only one shard has is changed there.
    both(&["tasks", "retry", &sa.dead_old.to_string()])
        .ok()
        .says("retried 1 task");
    // A filter applies to every shard, each reported.
    let r = both(&["tasks", "cancel", "--signature", "orders.ship", "--dry-run"]).ok();
    assert!(r.stdout.contains("would cancel 4 tasks"), "{r:#?}");
    assert!(r.stdout.contains("would cancel 1 task: 1"), "{r:#?}");
    // One bad shard stops everything before any change.
    let r = tend(&[
        "--database-url",
        &a.url,
        "--database-url",
        "mysql://root:secret@127.0.0.1:1/x",
        "tasks",
        "delete",
        "--all",
    ]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(!r.stderr.contains("secret"));
    assert_eq!(a.tend(&["stats", "--json"]).ok().json()[0]["total"], 7);
}

#[test]
fn every_command_has_help() {
    for cmd in [
        &[][..],
        &["migrate"],
        &["tasks"],
        &["tasks", "list"],
        &["tasks", "show"],
        &["tasks", "retry"],
        &["tasks", "cancel"],
        &["tasks", "delete"],
        &["purge"],
        &["stats"],
        &["keys"],
        &["keys", "blocked"],
        &["keys", "skip"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let r = tend(&args).ok().says("Usage: tend");
        assert!(r.stdout.lines().count() > 5, "{r:#?}");
    }
    tend(&["tasks", "retry", "--help"])
        .ok()
        .says("--reset-attempts")
        .says("--dry-run");
    tend(&["purge", "--help"])
        .ok()
        .says("--older-than")
        .says("--batch");
    tend(&["keys", "skip", "--help"])
        .ok()
        .says("--dry-run")
        .says("dead or held");
    tend(&["--version"]).ok().says("tend ");
    tend(&["frobnicate"]).fails(2, "unrecognized subcommand");
}

// ---------------------------------------------------------------------------------------------
// An application's own build of the CLI: `tend::cli::run_from` with its registry

/// The child side of `run_from_decodes_payloads_with_the_applications_registry`: runs the CLI
/// in-process with a registry that knows `Ship`, on the arguments in `TEND_CLI_CHILD_ARGS`.
#[test]
#[ignore = "run as a child process by run_from_decodes_payloads_with_the_applications_registry"]
fn run_from_child() {
    let Ok(args) = std::env::var("TEND_CLI_CHILD_ARGS") else {
        return;
    };
    let mut registry = tend::Registry::new();
    registry.register::<Ship>().unwrap();
    let args = std::iter::once("my-service-admin").chain(args.split('\u{1f}'));
    let code = tend::cli::run_from(args, registry);
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

#[cfg(feature = "sqlite")]
#[test]
fn run_from_decodes_payloads_with_the_applications_registry() {
    let db = Db::for_processes(Backend::Sqlite).unwrap();
    let s = seed(&db);
    db.sql(&format!(
        "UPDATE consistency_task SET task_parameter = X'FFFFFFFFFF' WHERE id = {}",
        s.held
    ));
    let child = |args: &[&str]| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "run_from_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--quiet",
            ])
            .env("TEND_CLI_CHILD_ARGS", args.join("\u{1f}"))
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let id = |n: i64| n.to_string();

    let r = child(&["tasks", "show", &id(s.pending), "--database-url", &db.url]).ok();
    let r = r
        .says("bytes, decoded below")
        .says("payload:\n{\n  \"order_id\": 1\n}");
    assert!(!r.stdout.contains("not decodable"), "{r:#?}");

    let r = child(&[
        "tasks",
        "show",
        &id(s.pending),
        "--json",
        "--database-url",
        &db.url,
    ])
    .ok();
    let start = r.stdout.find('[').unwrap();
    let end = r.stdout.rfind(']').unwrap();
    let doc: Value = serde_json::from_str(&r.stdout[start..=end]).unwrap();
    assert_eq!(doc[0]["task"]["task_parameter"]["decoded"]["order_id"], 1);
    assert_eq!(doc[0]["task"]["task_parameter"]["note"], Value::Null);

    // A type this registry lacks, and bytes that do not decode as the registered type.
    child(&["tasks", "show", &id(s.running), "--database-url", &db.url])
        .ok()
        .says("signature payments.refund, not decodable by this binary>");
    child(&["tasks", "show", &id(s.held), "--database-url", &db.url])
        .ok()
        .says("5 bytes, signature orders.ship, does not decode as");
    let r = child(&["tasks", "show", "999999", "--database-url", &db.url]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains("no task with id 999999"), "{r:#?}");
}
