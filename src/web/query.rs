//! The dashboard's queries beyond the operator CLI's ([`Admin`]): recent activity by minute.
//! Stamped out per connection type like `admin_ops!`; connections are opened here, one set per
//! server thread.

use diesel::prelude::*;

use crate::admin::{Admin, OldestDue, Stats};
use crate::cli::db::{Backend, Database};

/// Rows by the minute of their last change and their current status.
pub(crate) type Activity = Vec<(i64, i32, i64)>;

/// The operator queries plus the dashboard's own.
pub(crate) trait WebDb: Admin {
    /// `(minute, status, rows)` for the rows last modified at or after `since` (epoch ms),
    /// where `minute` is `gmt_modified / 60000`. Walks `consistency_task_modified` on MySQL;
    /// reads the table on PostgreSQL and SQLite, like `summary` (their `gmt_modified` index
    /// covers kept completed rows only: an index of every row would cost each lease an entry).
    fn activity(&mut self, since: i64) -> QueryResult<Activity>;

    /// [`Admin::stats`] with one scan of the table instead of two: the counts by status are
    /// the sums of the counts by signature and status.
    fn summary(&mut self, now: i64) -> QueryResult<Stats>;
}

/// The counts by status, from the counts by signature and status (sorted by status).
fn by_status(by_signature: &[(String, i32, i64)]) -> Vec<(i32, i64)> {
    let mut m = std::collections::BTreeMap::new();
    for (_, status, n) in by_signature {
        *m.entry(*status).or_insert(0) += n;
    }
    m.into_iter().collect()
}

#[derive(QueryableByName)]
struct Bucket {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    minute: i64,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    task_status: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

macro_rules! web_ops {
    ($conn:ty, $sql:literal) => {
        impl WebDb for $conn {
            fn activity(&mut self, since: i64) -> QueryResult<Activity> {
                let rows: Vec<Bucket> = diesel::sql_query($sql)
                    .bind::<diesel::sql_types::BigInt, _>(since)
                    .load(self)?;
                Ok(rows
                    .into_iter()
                    .map(|b| (b.minute, b.task_status, b.n))
                    .collect())
            }

            fn summary(&mut self, now: i64) -> QueryResult<Stats> {
                use diesel::dsl::count_star;
                use $crate::schema::consistency_task::dsl as t;
                use $crate::status::TaskStatus::{Failed, Pending, Running};
                let by_signature: Vec<(String, i32, i64)> = t::consistency_task
                    .group_by((t::method_sign_name, t::task_status))
                    .select((t::method_sign_name, t::task_status, count_star()))
                    .order((t::method_sign_name, t::task_status))
                    .load(self)?;
                // As `Admin::stats`: claimable and due (walks the due index).
                // `lease::claimable` and due: idle, or running under a lapsed (or no) lease.
                let due = t::consistency_task
                    .filter(
                        t::task_status
                            .eq_any([Pending.as_i32(), Failed.as_i32()])
                            .or(t::task_status.eq(Running.as_i32()).and(
                                t::lease_expires_at
                                    .is_null()
                                    .or(t::lease_expires_at.le(now)),
                            )),
                    )
                    .filter(t::execute_time.le(now));
                let due_now = due.clone().count().get_result(self)?;
                let oldest_due = due
                    .order(t::execute_time)
                    .select((t::id, t::method_sign_name, t::execute_time))
                    .first::<(i64, String, i64)>(self)
                    .optional()?
                    .map(|(id, signature, execute_time)| OldestDue {
                        id,
                        signature,
                        execute_time,
                    });
                Ok(Stats {
                    by_status: by_status(&by_signature),
                    by_signature,
                    due_now,
                    oldest_due,
                })
            }
        }
    };
}

// Integer division: `/` on PostgreSQL's bigint and SQLite's integer, `DIV` on MySQL (whose `/`
// is decimal).
#[cfg(feature = "postgres")]
web_ops!(
    diesel::pg::PgConnection,
    "SELECT gmt_modified / 60000 AS minute, task_status, COUNT(*) AS n FROM consistency_task \
     WHERE gmt_modified >= $1 GROUP BY 1, 2"
);
#[cfg(feature = "mysql")]
web_ops!(
    diesel::mysql::MysqlConnection,
    "SELECT gmt_modified DIV 60000 AS minute, task_status, COUNT(*) AS n FROM consistency_task \
     WHERE gmt_modified >= ? GROUP BY 1, 2"
);
#[cfg(feature = "sqlite")]
web_ops!(
    diesel::sqlite::SqliteConnection,
    "SELECT gmt_modified / 60000 AS minute, task_status, COUNT(*) AS n FROM consistency_task \
     WHERE gmt_modified >= ? GROUP BY 1, 2"
);

/// Opens a connection to an existing database (a SQLite file is never created here).
///
/// # Errors
/// The driver's message, with the URL as shown (the caller scrubs passwords from it too).
pub(crate) fn connect(db: &Database) -> Result<Box<dyn WebDb>, String> {
    let cannot = |e: diesel::ConnectionError| format!("cannot connect to {}: {e}", db.shown);
    match db.backend {
        #[cfg(feature = "postgres")]
        Backend::Postgres => Ok(Box::new(
            diesel::PgConnection::establish(&db.target).map_err(cannot)?,
        )),
        #[cfg(feature = "mysql")]
        Backend::Mysql => Ok(Box::new(
            diesel::MysqlConnection::establish(&db.target).map_err(cannot)?,
        )),
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => {
            let path = db.target.as_str();
            let in_memory = path == ":memory:" || path.starts_with("file:");
            if !in_memory && !std::path::Path::new(path).exists() {
                return Err(format!(
                    "the SQLite database `{path}` does not exist; check --database-url, or \
                     create it with `tend migrate --database-url {path}`"
                ));
            }
            let mut conn = diesel::SqliteConnection::establish(path).map_err(cannot)?;
            // Wait for a busy worker pool's write lock instead of failing at once.
            diesel::sql_query("PRAGMA busy_timeout = 5000")
                .execute(&mut conn)
                .map_err(|e| format!("cannot set up {}: {e}", db.shown))?;
            Ok(Box::new(conn))
        }
        #[allow(unreachable_patterns)] // reachable only when a backend feature is off
        _ => unreachable!("Database::parse refuses backends this binary lacks"),
    }
}
