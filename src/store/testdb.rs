//! Throw-away databases for tests: a fresh database per test on the PostgreSQL and
//! MariaDB/MySQL servers named by `TEND_PG_URL` and `TEND_MYSQL_URL`, a temp file for SQLite.
//! Each is removed again by a drop guard, which only ever removes what it created itself.
//!
//! This file depends on nothing in tend, so that the unit tests (`store::conformance`) and the
//! integration tests (`tests/support`, through `#[path]`) provision databases the same way.
//!
//! Policy: a backend whose URL is unset is skipped with a loud line on stderr, unless
//! `TEND_REQUIRE_DBS=1` (CI), where that fails the test. A URL that is set but unreachable is
//! skipped the same way without `TEND_REQUIRE_DBS`, and fails with it.

// Each of the two test crates that include this file uses only part of it.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use diesel::Connection;

/// A database server the tests can create databases on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    /// PostgreSQL, from `TEND_PG_URL`.
    Postgres,
    /// MariaDB or MySQL, from `TEND_MYSQL_URL`.
    Mysql,
}

impl Server {
    /// The environment variable holding the server's URL.
    pub fn env_var(self) -> &'static str {
        match self {
            Server::Postgres => "TEND_PG_URL",
            Server::Mysql => "TEND_MYSQL_URL",
        }
    }

    /// The server's name in messages.
    pub fn label(self) -> &'static str {
        match self {
            Server::Postgres => "PostgreSQL",
            Server::Mysql => "MariaDB/MySQL",
        }
    }
}

/// Whether a missing or unreachable database fails the tests instead of skipping them.
pub fn require_dbs() -> bool {
    std::env::var("TEND_REQUIRE_DBS").is_ok_and(|v| v.trim() == "1")
}

/// Says once per process and reason that a suite did not run. Written straight to stderr: the
/// test harness swallows `eprintln!` of passing tests, and a skip must be seen.
fn loud_skip(key: String, line: String) {
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if said.get_or_insert_with(HashSet::new).insert(key) {
        let _ = writeln!(std::io::stderr(), "\n{line}\n");
    }
}

/// Skips (returning `None`) or, under `TEND_REQUIRE_DBS=1`, fails.
fn skip_or_fail<T>(server: Server, suite: &str, why: &str) -> Option<T> {
    if require_dbs() {
        panic!(
            "{why}, and TEND_REQUIRE_DBS=1 requires the {} {suite} tests to run",
            server.label()
        );
    }
    loud_skip(
        format!("{server:?}/{suite}/{why}"),
        format!(
            "SKIPPED: {why}, {} {suite} tests did not run",
            server.label()
        ),
    );
    None
}

/// The server's URL, or `None` when its tests are to be skipped.
pub fn server_url(server: Server, suite: &str) -> Option<String> {
    match std::env::var(server.env_var()) {
        Ok(u) if !u.trim().is_empty() => Some(without_tls(server, u.trim())),
        _ => skip_or_fail(server, suite, &format!("{} not set", server.env_var())),
    }
}

/// A PostgreSQL URL that names no `sslmode` gets `sslmode=disable`. With TLS, libpq's OpenSSL
/// registers an exit handler that frees OpenSSL's state while r2d2's connection threads may
/// still be opening or closing a TLS connection, and the process then dies of SIGSEGV after
/// its work is done (diesel-rs/diesel#3441, sfackler/r2d2#137). The tests start and stop many
/// processes, so that race would fail a run now and then; TLS itself is not what they test.
/// A URL that sets `sslmode` is left alone.
pub fn without_tls(server: Server, url: &str) -> String {
    if server != Server::Postgres || url.contains("sslmode=") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode=disable")
}

/// `url` with its database (the path) replaced by `db`, keeping any query string.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A name no other test of this or any concurrent run uses: pid and a per-process counter.
fn fresh_name() -> String {
    format!(
        "tend_t_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn exec<C: Connection>(url: &str, sql: &str) -> Result<(), String> {
    let mut conn = C::establish(url).map_err(|e| e.to_string())?;
    conn.batch_execute(sql).map_err(|e| e.to_string())
}

/// Runs `sql` on a new connection to `url` of the server's connection type.
pub fn server_exec(server: Server, url: &str, sql: &str) -> Result<(), String> {
    match server {
        #[cfg(feature = "postgres")]
        Server::Postgres => exec::<diesel::PgConnection>(url, sql),
        #[cfg(feature = "mysql")]
        Server::Mysql => exec::<diesel::MysqlConnection>(url, sql),
        // Reached only when a backend's feature is off.
        #[allow(unreachable_patterns)]
        _ => Err(format!(
            "cannot run `{sql}` on {url}: tend was built without the feature for {}",
            server.label()
        )),
    }
}

/// A database this process created on a server; dropped (with any connections still open to
/// it) when the guard goes.
#[derive(Debug)]
pub struct ServerDb {
    /// Where it lives.
    pub server: Server,
    /// Its name.
    pub name: String,
    /// A URL that connects to it.
    pub url: String,
    admin_url: String,
}

impl ServerDb {
    /// Creates a fresh, empty database, or returns `None` when the server's tests are skipped.
    pub fn create(server: Server, suite: &str) -> Option<ServerDb> {
        let admin_url = server_url(server, suite)?;
        let mut last_err = String::new();
        for _ in 0..100 {
            let name = fresh_name();
            // The name is ours only if CREATE succeeds; a leftover of an earlier run with the
            // same pid is left alone and the next name tried.
            match server_exec(server, &admin_url, &format!("CREATE DATABASE {name}")) {
                Ok(()) => {
                    return Some(ServerDb {
                        server,
                        url: with_database(&admin_url, &name),
                        name,
                        admin_url,
                    })
                }
                Err(e) if e.contains("exists") => last_err = e,
                Err(e) => {
                    return skip_or_fail(
                        server,
                        suite,
                        &format!(
                            "cannot create a database through {} ({e})",
                            server.env_var()
                        ),
                    )
                }
            }
        }
        panic!("could not find a free database name: {last_err}")
    }
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        let sql = match self.server {
            // FORCE (PostgreSQL 13+) ends connections a test left open, e.g. a killed child's.
            Server::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Server::Mysql => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        if let Err(e) = server_exec(self.server, &self.admin_url, &sql) {
            let _ = writeln!(
                std::io::stderr(),
                "warning: could not drop test database {}: {e}",
                self.name
            );
        }
    }
}

/// A SQLite database file in the temp directory, removed (with its WAL files) by the guard.
#[derive(Debug)]
pub struct SqliteFile {
    /// The file.
    pub path: PathBuf,
    /// Its path as a diesel URL.
    pub url: String,
}

impl SqliteFile {
    /// A path no file exists at yet.
    pub fn create() -> SqliteFile {
        loop {
            let path = std::env::temp_dir().join(format!("{}.db", fresh_name()));
            if !path.exists() {
                let url = path.to_str().expect("temp dir is UTF-8").to_string();
                return SqliteFile { path, url };
            }
        }
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}
