//! The database's work per task: counters read before and after a drain (PostgreSQL: the WAL
//! position and the task table's tuple counters; MariaDB/MySQL: InnoDB's redo and buffer pool
//! counters; SQLite, which runs in the bench's process: the bytes and write calls the process
//! made, from `/proc/self/io`), and on PostgreSQL `EXPLAIN (ANALYZE, BUFFERS, WAL)` of single
//! statements.
//!
//! The server-wide counters (PostgreSQL's WAL position, every InnoDB counter) include whatever
//! else the server did meanwhile (autovacuum, other databases' clients): run the bench on an
//! otherwise idle server for these figures. The table counters and `EXPLAIN` are this bench's
//! own.

use super::*;

/// One reading of the counters; `None` fields where the backend has no such counter.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Work {
    /// PostgreSQL: WAL insert position in bytes; MariaDB: `Innodb_os_log_written`; SQLite: the
    /// process's `wchar`.
    pub(crate) log_bytes: f64,
    /// Updates of the task table (PostgreSQL `n_tup_upd`; MariaDB `Handler_update`).
    pub(crate) upd: f64,
    /// PostgreSQL `n_tup_hot_upd`: updates that wrote no index entry.
    pub(crate) hot: f64,
    /// Deletes (PostgreSQL `n_tup_del`; MariaDB `Handler_delete`).
    pub(crate) del: f64,
    /// PostgreSQL: indexes of the table without a predicate (every non-HOT update writes one
    /// entry into each); MariaDB: `Innodb_buffer_pool_write_requests`; SQLite: the process's
    /// `syscw`.
    pub(crate) other: f64,
}

#[derive(QueryableByName)]
pub(crate) struct WorkRow {
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub(crate) log_bytes: f64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub(crate) upd: f64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub(crate) hot: f64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub(crate) del: f64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub(crate) other: f64,
}

impl From<WorkRow> for Work {
    fn from(r: WorkRow) -> Work {
        Work {
            log_bytes: r.log_bytes,
            upd: r.upd,
            hot: r.hot,
            del: r.del,
            other: r.other,
        }
    }
}

/// The work of the drains of one system, summed over its runs.
#[derive(Default)]
pub(crate) struct WorkSum {
    pub(crate) tasks: f64,
    pub(crate) d: Work,
}

impl WorkSum {
    /// `pg`: the readings are PostgreSQL's, whose `other` is an index count, not a counter.
    pub(crate) fn add(&mut self, pg: bool, tasks: usize, before: Work, after: Work) {
        self.tasks += tasks as f64;
        self.d.log_bytes += after.log_bytes - before.log_bytes;
        self.d.upd += after.upd - before.upd;
        self.d.hot += after.hot - before.hot;
        self.d.del += after.del - before.del;
        self.d.other += if pg {
            (after.upd - before.upd - (after.hot - before.hot)) * after.other
        } else {
            after.other - before.other
        };
    }
}

impl<D: Db> Bench<D> {
    /// Reads the counters once the drain's deletes are counted: PostgreSQL backends report their
    /// table counters when idle or at exit, up to a second late.
    pub(crate) fn work_after(&self, before: Work, deleted: usize) -> Res<Option<Work>> {
        let mut c = self.conn()?;
        let log_now = match D::work(&mut *c)? {
            Some(w) => w.log_bytes,
            None => return Ok(None),
        };
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let w = D::work(&mut *c)?.expect("read before");
            // SQLite's counters are the process's own, current when the drain returns.
            let counted = D::NAME == "sqlite" || w.del - before.del >= deleted as f64;
            if counted || Instant::now() > deadline {
                // The log position as the drain ended, not after the wait.
                return Ok(Some(Work {
                    log_bytes: log_now,
                    ..w
                }));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Prints the per-task work figures of one system's drains.
    pub(crate) fn work_figures(&self, sys: &'static str, w: &WorkSum, n: usize) {
        if w.tasks == 0.0 {
            return;
        }
        let per = |v: f64| v / w.tasks;
        if D::NAME == "pg" {
            self.figure("wal_bytes_per_task", per(w.d.log_bytes), "B", sys, n);
            let nonhot = w.d.upd - w.d.hot;
            self.figure("nonhot_updates_per_task", per(nonhot), "rows", sys, n);
            let hot_pct = if w.d.upd > 0.0 {
                100.0 * w.d.hot / w.d.upd
            } else {
                0.0
            };
            self.figure("hot_update_pct", hot_pct, "%", sys, n);
            self.figure("index_entries_per_task", per(w.d.other), "entries", sys, n);
        } else if D::NAME == "sqlite" {
            self.figure("written_bytes_per_task", per(w.d.log_bytes), "B", sys, n);
            self.figure("write_calls_per_task", per(w.d.other), "calls", sys, n);
        } else {
            self.figure("redo_bytes_per_task", per(w.d.log_bytes), "B", sys, n);
            self.figure(
                "bp_write_requests_per_task",
                per(w.d.other),
                "pages",
                sys,
                n,
            );
        }
    }
}

/// This process's `(wchar, syscw)` from `/proc/self/io` (`None` where it cannot be read).
pub(crate) fn proc_io() -> Option<(f64, f64)> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    let field = |k: &str| -> Option<f64> {
        io.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((field("wchar:")?, field("syscw:")?))
}

/// `EXPLAIN (ANALYZE, BUFFERS, WAL)` figures of one statement: the top plan node's (inclusive)
/// dirtied shared buffers and WAL bytes.
#[cfg(feature = "postgres")]
pub(crate) fn explain_pg(c: &mut diesel::pg::PgConnection, sql: &str) -> QueryResult<(f64, f64)> {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text)]
        #[diesel(column_name = "QUERY PLAN")]
        line: String,
    }
    let lines: Vec<Line> =
        diesel::sql_query(format!("EXPLAIN (ANALYZE, BUFFERS, WAL) {sql}")).load(c)?;
    let field = |prefix: &str, key: &str| -> f64 {
        lines
            .iter()
            .find(|l| l.line.trim_start().starts_with(prefix))
            .and_then(|l| {
                l.line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0.0)
    };
    Ok((field("Buffers:", "dirtied="), field("WAL:", "bytes=")))
}

/// `sql` with each `?` replaced by the next literal.
#[cfg(feature = "postgres")]
pub(crate) fn inline(sql: &str, literals: &[String]) -> String {
    let mut out = String::new();
    let mut lit = literals.iter();
    for (i, piece) in sql.split('?').enumerate() {
        if i > 0 {
            out.push_str(lit.next().expect("one literal per placeholder"));
        }
        out.push_str(piece);
    }
    out
}
