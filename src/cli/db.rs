//! Database URLs: which backend a URL names, how it is shown (never with its password), and
//! opening a connection behind the backend-neutral [`Admin`] trait.

use diesel::Connection;

use crate::admin::Admin;

/// The backend a URL's scheme names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Postgres,
    Mysql,
    Sqlite,
}

impl Backend {
    fn feature(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
            Backend::Sqlite => "sqlite",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL",
            Backend::Mysql => "MySQL/MariaDB",
            Backend::Sqlite => "SQLite",
        }
    }

    fn enabled(self) -> bool {
        match self {
            Backend::Postgres => cfg!(feature = "postgres"),
            Backend::Mysql => cfg!(feature = "mysql"),
            Backend::Sqlite => cfg!(feature = "sqlite"),
        }
    }
}

/// One database (one shard) as given on the command line.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    /// What the driver gets.
    pub(crate) target: String,
    /// What people see: the URL with its password masked.
    pub shown: String,
    pub backend: Backend,
}

impl Database {
    /// Reads a URL: `postgres://` or `postgresql://` is PostgreSQL, `mysql://` or `mariadb://`
    /// is MySQL/MariaDB, `sqlite://path` or anything else is a SQLite file path.
    ///
    /// # Errors
    /// A backend this binary was built without, named with the feature that adds it.
    pub fn parse(url: &str) -> Result<Database, String> {
        if url.trim().is_empty() || url.trim().eq_ignore_ascii_case("sqlite://") {
            return Err(
                "an empty database URL: give postgres://…, mysql://… (or mariadb://…), \
                        or the path of a SQLite file"
                    .to_string(),
            );
        }
        let lower = url.to_ascii_lowercase();
        let (backend, target) =
            if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
                // libpq waits forever for a host that drops packets; an operator wants an answer.
                let target = if lower.contains("connect_timeout=") {
                    url.to_string()
                } else {
                    let sep = if url.contains('?') { '&' } else { '?' };
                    format!("{url}{sep}connect_timeout=10")
                };
                (Backend::Postgres, target)
            } else if lower.starts_with("mysql://") {
                (Backend::Mysql, url.to_string())
            } else if lower.starts_with("mariadb://") {
                // The MySQL client speaks to MariaDB; diesel only accepts the `mysql` scheme.
                (
                    Backend::Mysql,
                    format!("mysql://{}", &url["mariadb://".len()..]),
                )
            } else if lower.starts_with("sqlite://") {
                (Backend::Sqlite, url["sqlite://".len()..].to_string())
            } else {
                (Backend::Sqlite, url.to_string())
            };
        let (shown, _) = mask(url);
        if !backend.enabled() {
            let built: Vec<&str> = [Backend::Postgres, Backend::Mysql, Backend::Sqlite]
                .into_iter()
                .filter(|b| b.enabled())
                .map(Backend::feature)
                .collect();
            return Err(format!(
                "`{shown}` is a {} database, but this tend binary was built without {} support \
                 (it has: {}); rebuild it with the `{}` feature, for example \
                 `cargo install tend --features cli,{}`",
                backend.title(),
                backend.title(),
                built.join(", "),
                backend.feature(),
                backend.feature(),
            ));
        }
        Ok(Database {
            target,
            shown,
            backend,
        })
    }

    /// Opens a connection. A SQLite file that does not exist is created only when `create`
    /// (for `tend migrate`); otherwise it is an error, not a fresh empty database.
    ///
    /// # Errors
    /// The driver's message (passwords scrubbed by the caller).
    pub fn connect(&self, create: bool) -> Result<Box<dyn Admin>, String> {
        let _ = create;
        let cannot = |e: diesel::ConnectionError| format!("cannot connect to {}: {e}", self.shown);
        match self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres => Ok(Box::new(
                diesel::PgConnection::establish(&self.target).map_err(cannot)?,
            )),
            #[cfg(feature = "mysql")]
            Backend::Mysql => Ok(Box::new(
                diesel::MysqlConnection::establish(&self.target).map_err(cannot)?,
            )),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                use diesel::RunQueryDsl;
                let path = self.target.as_str();
                let in_memory = path == ":memory:" || path.starts_with("file:");
                if !create && !in_memory && !std::path::Path::new(path).exists() {
                    return Err(format!(
                        "the SQLite database `{path}` does not exist; check --database-url, or \
                         create it with `tend migrate --database-url {path}`"
                    ));
                }
                let mut conn = diesel::SqliteConnection::establish(path).map_err(cannot)?;
                // Wait for a busy worker pool's write lock instead of failing at once.
                diesel::sql_query("PRAGMA busy_timeout = 5000")
                    .execute(&mut conn)
                    .map_err(|e| format!("cannot set up {}: {e}", self.shown))?;
                Ok(Box::new(conn))
            }
            #[allow(unreachable_patterns)] // reachable only when a backend feature is off
            _ => unreachable!("Database::parse refuses backends this binary lacks"),
        }
    }
}

/// The URL with its password replaced by `***` (in the user-info part and in a `password=`
/// query parameter), and the passwords found, raw and percent-decoded.
pub(crate) fn mask(url: &str) -> (String, Vec<String>) {
    let mut secrets = Vec::new();
    let Some(scheme_end) = url.find("://") else {
        return (url.to_string(), secrets);
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    let query_at = rest.find(['?', '#']).unwrap_or(rest.len());
    let (before_query, query) = rest.split_at(query_at);
    // The last `@` ends the user info: a raw `@` in a password is common enough.
    let masked_auth = match before_query.rfind('@') {
        Some(at) => {
            let (userinfo, host) = before_query.split_at(at);
            match userinfo.split_once(':') {
                Some((user, password)) if !password.is_empty() => {
                    secrets.push(password.to_string());
                    format!("{user}:***{host}")
                }
                _ => before_query.to_string(),
            }
        }
        None => before_query.to_string(),
    };
    let mut masked_query = String::new();
    if let Some(q) = query.strip_prefix('?') {
        masked_query.push('?');
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, v))
                    if !v.is_empty()
                        && matches!(
                            k.to_ascii_lowercase().as_str(),
                            "password" | "pass" | "pwd" | "sslpassword"
                        ) =>
                {
                    secrets.push(v.to_string());
                    format!("{k}=***")
                }
                _ => kv.to_string(),
            })
            .collect();
        masked_query.push_str(&parts.join("&"));
    } else {
        masked_query.push_str(query);
    }
    let decoded: Vec<String> = secrets
        .iter()
        .map(|s| percent_decode(s))
        .filter(|d| !secrets.contains(d))
        .collect();
    secrets.extend(decoded);
    (format!("{head}{masked_auth}{masked_query}"), secrets)
}

/// `%xx` escapes decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with every secret replaced by `***`.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    // Longest first, so that a password containing another one is masked whole.
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in sorted {
        out = out.replace(s.as_str(), "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        let (shown, secrets) = mask("mysql://root:secret@127.0.0.1:1/x");
        assert_eq!(shown, "mysql://root:***@127.0.0.1:1/x");
        assert_eq!(secrets, ["secret"]);
        let (shown, secrets) = mask("postgres://u:p%40ss@h/db?sslmode=disable&password=two");
        assert_eq!(shown, "postgres://u:***@h/db?sslmode=disable&password=***");
        assert_eq!(secrets, ["p%40ss", "two", "p@ss"]);
        let (shown, secrets) = mask("mysql://root:p@ss@host/db");
        assert_eq!(shown, "mysql://root:***@host/db");
        assert_eq!(secrets, ["p@ss"]);
        assert_eq!(
            mask("postgres://postgres@h/db").0,
            "postgres://postgres@h/db"
        );
        assert_eq!(mask("/tmp/a.db").0, "/tmp/a.db");
        assert_eq!(
            scrub("access denied for root:p@ss (p%40ss)", &secrets),
            "access denied for root:*** (p%40ss)"
        );
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%20b%2"), "a b%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn picks_the_backend_by_scheme() {
        for empty in ["", "  ", "sqlite://"] {
            let err = Database::parse(empty).unwrap_err();
            assert!(err.contains("an empty database URL"), "{err}");
        }
        if cfg!(feature = "sqlite") {
            let db = Database::parse("sqlite:///tmp/x.db").unwrap();
            assert_eq!(
                (db.backend, db.target.as_str()),
                (Backend::Sqlite, "/tmp/x.db")
            );
            assert_eq!(Database::parse("x.db").unwrap().backend, Backend::Sqlite);
        }
        let pg = Database::parse("postgresql://u:pw@h/db");
        match pg {
            Ok(db) => {
                assert_eq!(db.backend, Backend::Postgres);
                assert_eq!(db.target, "postgresql://u:pw@h/db?connect_timeout=10");
                assert_eq!(db.shown, "postgresql://u:***@h/db");
                let db = Database::parse("postgres://h/db?sslmode=disable").unwrap();
                assert_eq!(
                    db.target,
                    "postgres://h/db?sslmode=disable&connect_timeout=10"
                );
                let db = Database::parse("postgres://h/db?connect_timeout=3").unwrap();
                assert_eq!(db.target, "postgres://h/db?connect_timeout=3");
            }
            Err(e) => {
                assert!(e.contains("built without PostgreSQL support"), "{e}");
                assert!(e.contains("u:***@h") && !e.contains("pw"), "{e}");
            }
        }
        if let Ok(db) = Database::parse("mariadb://root@h/db") {
            assert_eq!(db.target, "mysql://root@h/db");
        }
    }
}
