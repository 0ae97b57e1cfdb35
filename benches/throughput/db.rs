//! Per-backend statements of the bench and the limit (`Db`, one module per backend), and the
//! provisioning of a server database, written once for PostgreSQL and MariaDB/MySQL.

use super::*;

/// A server database for one backend's run: `db` (`tend_bench_<pid>`) on the server of `url`.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) struct Server {
    /// The backend's name in figures and `on_abort`.
    pub(crate) backend: &'static str,
    /// Its name in messages.
    pub(crate) label: &'static str,
    pub(crate) url: String,
    pub(crate) db: String,
    /// What `DROP DATABASE` needs to end connections a hung phase left open.
    pub(crate) force: &'static str,
    pub(crate) admin: fn(&str, &str) -> QueryResult<()>,
    pub(crate) run: fn(&'static Settings, &str, &str) -> Res<()>,
}

/// Creates the server's database, runs the bench on it and drops it again (the watchdog drops
/// it too when a phase hangs). Written once for PostgreSQL and MariaDB/MySQL.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn on_server(sv: &Server, s: &'static Settings) -> Res<()> {
    let (backend, label, db, admin) = (sv.backend, sv.label, sv.db.as_str(), sv.admin);
    let url = sv.url.clone();
    let force = sv.force;
    let run = sv.run;
    let seed_db = format!("{db}_seed");
    let drop_sql = format!("DROP DATABASE IF EXISTS {db}{force}");
    let drop_seed = format!("DROP DATABASE IF EXISTS {seed_db}{force}");
    admin(&url, &format!("CREATE DATABASE {db}"))
        .map_err(BoxError::from)
        .and_then(|()| {
            let (u, d, ds) = (url.clone(), drop_sql.clone(), drop_seed.clone());
            on_abort(backend, move || {
                let _ = admin(&u, &d);
                let _ = admin(&u, &ds);
            });
            let r = admin(&url, &format!("CREATE DATABASE {seed_db}"))
                .map_err(BoxError::from)
                .and_then(|()| run(s, &with_db(&url, db), &with_db(&url, &seed_db)));
            for (name, sql) in [(db, &drop_sql), (seed_db.as_str(), &drop_seed)] {
                if let Err(e) = admin(&url, sql) {
                    log(format!("could not drop the {label} database {name}: {e}"));
                }
            }
            cleaned_up(backend);
            r
        })
}

// ---------------------------------------------------------------------------------------------
// Per-backend statements
// ---------------------------------------------------------------------------------------------

/// A backend: its connection type and the statements that differ.
pub(crate) trait Db: 'static {
    type C: R2D2Connection + StoreConnection + Send + 'static;
    const NAME: &'static str;
    fn pool(url: &str, size: u32) -> Res<Pool<Cm<Self::C>>>;
    /// One connection outside any pool, set up like the pool's.
    fn connect(url: &str) -> Res<Self::C> {
        Ok(<Self::C as diesel::Connection>::establish(url)?)
    }
    /// Creates `bench_orders` and `bench_digits`.
    fn setup(c: &mut Self::C) -> QueryResult<()>;
    /// Creates `consistency_task` as the seed's script did (`SEED_TABLE`), for the limit on the
    /// seed's schema.
    fn setup_seed(c: &mut Self::C) -> QueryResult<()>;
    /// Empties the task and business tables.
    fn clear(c: &mut Self::C) -> QueryResult<()>;
    /// Refreshes planner statistics after a fill.
    fn analyze(c: &mut Self::C) -> QueryResult<()>;
    fn insert_order(c: &mut Self::C, i: i64) -> QueryResult<()>;
    fn insert_task(c: &mut Self::C, row: &LimitRow) -> QueryResult<()>;
    fn insert_task_id(c: &mut Self::C, row: &LimitRow, signature: &'static str)
        -> QueryResult<i64>;
    /// A right-now task inserted already leased to this process: no claim is needed to run it.
    fn insert_leased_id(c: &mut Self::C, row: &LimitRow, l: &Lease) -> QueryResult<i64>;
    fn insert_tasks(c: &mut Self::C, rows: &[LimitRow]) -> QueryResult<()>;
    fn fill(c: &mut Self::C, n: usize, base: i64) -> QueryResult<usize>;
    fn count_below(c: &mut Self::C, t: i64) -> QueryResult<i64>;
    fn due_time(c: &mut Self::C, id: i64) -> QueryResult<i64>;
    /// The limit's claim: at most `BATCH` due rows leased, their ids and payloads.
    fn claim(c: &mut Self::C, l: &Lease) -> QueryResult<Vec<(i64, Vec<u8>)>>;
    fn delete(c: &mut Self::C, token: i64, ids: &[i64]) -> QueryResult<usize>;
    /// Deletes every row below `t` (what a capped drain left).
    fn delete_due(c: &mut Self::C, t: i64) -> QueryResult<usize>;
    /// The database's work counters (`work.rs`), where the backend has them.
    fn work(_c: &mut Self::C) -> QueryResult<Option<Work>> {
        Ok(None)
    }
    /// The server's dirty and total buffer pool pages, where the backend reports them (InnoDB):
    /// the backlog drains wait for the fill's dirty pages to be flushed.
    fn dirty_pages(_c: &mut Self::C) -> QueryResult<Option<(f64, f64)>> {
        Ok(None)
    }
    /// Asks the server to write the task table's dirty pages now, where it can (InnoDB).
    fn flush_table(_c: &mut Self::C) -> QueryResult<()> {
        Ok(())
    }
    /// SQLite: turns the connection's automatic WAL checkpoint off (`false`) or back on at
    /// SQLite's default of 1000 pages (`true`). The enqueue phase checkpoints between turns
    /// instead, untimed (`checkpoint`).
    fn auto_checkpoint(_c: &mut Self::C, _on: bool) -> QueryResult<()> {
        Ok(())
    }
    /// SQLite: copies the WAL's frames into the database file now (`PRAGMA wal_checkpoint`).
    fn checkpoint(_c: &mut Self::C) -> QueryResult<()> {
        Ok(())
    }
    /// The server's row-lock counters (`multiproc.rs`), where the backend has them.
    fn lock_waits(_c: &mut Self::C) -> QueryResult<Option<LockWaits>> {
        Ok(None)
    }
    /// Per-row work of the limit's single statements (`EXPLAIN (ANALYZE, BUFFERS, WAL)` on
    /// PostgreSQL): `(statement, dirtied buffers per row, WAL bytes per row)`, measured on
    /// `reps` × `BATCH` due rows the caller wrote.
    fn statement_work(
        _c: &mut Self::C,
        _reps: usize,
    ) -> QueryResult<Vec<(&'static str, f64, f64)>> {
        Ok(Vec::new())
    }
}

/// The statements that are the same SQL on every backend.
macro_rules! shared_ops {
    () => {
        fn insert_order(c: &mut Self::C, i: i64) -> QueryResult<()> {
            raw::<InsertOrder>(vec![Bind::T("customer"), Bind::I(i), Bind::I(now_ms())])
                .execute(c)
                .map(|_| ())
        }
        fn insert_task(c: &mut Self::C, row: &LimitRow) -> QueryResult<()> {
            let mut b = Vec::with_capacity(6);
            row.push_binds(&mut b, Noop::SIGNATURE);
            raw::<InsertTask>(b).execute(c).map(|_| ())
        }
        fn insert_tasks(c: &mut Self::C, rows: &[LimitRow]) -> QueryResult<()> {
            assert_eq!(rows.len(), BATCH);
            let mut b = Vec::with_capacity(6 * BATCH);
            for r in rows {
                r.push_binds(&mut b, Noop::SIGNATURE);
            }
            raw::<InsertTasks>(b).execute(c).map(|_| ())
        }
        fn fill(c: &mut Self::C, n: usize, base: i64) -> QueryResult<usize> {
            let now = now_ms();
            raw::<Fill>(vec![
                Bind::B(encode(&Noop { order_id: 1 })),
                Bind::I(base),
                Bind::I(now),
                Bind::I(now),
                Bind::I(n as i64),
            ])
            .execute(c)
        }
        fn count_below(c: &mut Self::C, t: i64) -> QueryResult<i64> {
            raw::<CountBelow>(vec![Bind::I(t)]).get_result(c)
        }
        fn due_time(c: &mut Self::C, id: i64) -> QueryResult<i64> {
            raw::<DueTime>(vec![Bind::I(id)]).get_result(c)
        }
        fn delete_due(c: &mut Self::C, t: i64) -> QueryResult<usize> {
            raw::<DeleteBelow>(vec![Bind::I(t)]).execute(c)
        }
        fn delete(c: &mut Self::C, token: i64, ids: &[i64]) -> QueryResult<usize> {
            raw::<DeleteBatch>(vec![Bind::I(token), Bind::ids(ids)]).execute(c)
        }
    };
}

/// The seed's `consistency_task` (its README's script: the primary key and a unique key on
/// `(id, shard_key)`, no other index), per backend: `{id}` is the key column, `{bytes}` the
/// payload type. Changed only where the limit's statements need it, and the same on every
/// backend: times are epoch-ms BIGINTs (the seed's `gmt_*` were `datetime`), the payload is
/// binary (the seed's was `varchar(200)`), `execute_times`, `execute_way` and `thread_way` have
/// defaults (the limit's inserts leave them out), and the three lease columns the limit writes
/// are added, unindexed, as are `queue` and `priority` with tend's defaults (the limit's claim
/// names the one queue and level its tasks are in, which on tend's table is the leading part
/// of the due index `(queue, priority, execute_time)`).
pub(crate) fn seed_table(id: &str, bytes: &str) -> String {
    format!(
        "CREATE TABLE consistency_task (\
         id {id}, \
         task_id VARCHAR(500) NOT NULL, \
         task_status INT NOT NULL DEFAULT 0, \
         execute_times INT NOT NULL DEFAULT 0, \
         execute_time BIGINT NOT NULL, \
         parameter_types VARCHAR(255) NOT NULL DEFAULT '', \
         method_name VARCHAR(100) NOT NULL DEFAULT '', \
         method_sign_name VARCHAR(200) NOT NULL DEFAULT '', \
         execute_interval_sec INT NOT NULL DEFAULT 60, \
         delay_time INT NOT NULL DEFAULT 60, \
         task_parameter {bytes} NOT NULL, \
         execute_way INT NOT NULL DEFAULT 1, \
         thread_way INT NOT NULL DEFAULT 1, \
         error_msg VARCHAR(200) NOT NULL DEFAULT '', \
         alert_expression VARCHAR(100) NULL, \
         alert_action_bean_name VARCHAR(255) NULL, \
         fallback_class_name VARCHAR(255) NULL, \
         fallback_error_msg VARCHAR(200) NULL, \
         shard_key BIGINT DEFAULT 0, \
         gmt_create BIGINT NOT NULL, \
         gmt_modified BIGINT NOT NULL, \
         lease_token BIGINT NULL, \
         lease_owner VARCHAR(255) NULL, \
         lease_expires_at BIGINT NULL, \
         queue VARCHAR(64) NOT NULL DEFAULT 'default', \
         priority INT NOT NULL DEFAULT 0, \
         UNIQUE (id, shard_key))"
    )
}

pub(crate) const DIGITS: &str = "CREATE TABLE bench_digits (d BIGINT NOT NULL); \
     INSERT INTO bench_digits (d) VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9);";

#[cfg(feature = "sqlite")]
pub(crate) mod sqlite_db {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::sqlite::SqliteConnection;

    pub struct Sqlite;

    // `+task_status`: without ANALYZE statistics SQLite's planner takes the (task_status,
    // gmt_modified) index for `task_status IN (…)` and sorts every pending row to find the
    // first 100 by execute_time (5 ms per claim at 20k rows, 220 ms at 1M); the unary plus
    // keeps it on the execute_time index, O(batch). See benches/README.md.
    /// `DUE` with SQLite's `+task_status` (see above).
    const SQLITE_DUE: &str = "execute_time <= ? AND (+task_status IN (0, 2) OR (+task_status = \
         1 AND (lease_expires_at IS NULL OR lease_expires_at <= ?)))";

    sql!(SqliteClaim, (BigInt, Binary), {
        static S: OnceLock<String> = OnceLock::new();
        S.get_or_init(|| {
            format!(
                "UPDATE consistency_task {LEASE_SET} WHERE id IN (SELECT id FROM consistency_task \
                 WHERE queue = 'default' AND priority = 0 AND {SQLITE_DUE} ORDER BY execute_time \
                 LIMIT {BATCH}) RETURNING id, task_parameter"
            )
        })
    });

    impl Db for Sqlite {
        type C = SqliteConnection;
        const NAME: &'static str = "sqlite";

        fn pool(url: &str, size: u32) -> Res<Pool<Cm<Self::C>>> {
            Ok(Pool::builder()
                .max_size(size)
                .test_on_check_out(false)
                .connection_customizer(Box::new(tend::SqliteSetup::new()))
                .build(ConnectionManager::new(url))?)
        }
        fn connect(url: &str) -> Res<Self::C> {
            use diesel::r2d2::CustomizeConnection;
            let mut c = SqliteConnection::establish(url)?;
            tend::SqliteSetup::new().on_acquire(&mut c)?;
            Ok(c)
        }
        fn setup(c: &mut Self::C) -> QueryResult<()> {
            c.batch_execute(
                "CREATE TABLE bench_orders (id INTEGER PRIMARY KEY AUTOINCREMENT, \
                 customer TEXT NOT NULL, amount_cents BIGINT NOT NULL, created_at BIGINT NOT NULL);",
            )?;
            c.batch_execute(DIGITS)
        }
        fn setup_seed(c: &mut Self::C) -> QueryResult<()> {
            c.batch_execute(&seed_table("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"))
        }
        fn clear(c: &mut Self::C) -> QueryResult<()> {
            c.batch_execute("DELETE FROM consistency_task; DELETE FROM bench_orders;")
        }
        fn analyze(_c: &mut Self::C) -> QueryResult<()> {
            Ok(())
        }
        fn auto_checkpoint(c: &mut Self::C, on: bool) -> QueryResult<()> {
            c.batch_execute(if on {
                "PRAGMA wal_autocheckpoint = 1000"
            } else {
                "PRAGMA wal_autocheckpoint = 0"
            })
        }
        fn checkpoint(c: &mut Self::C) -> QueryResult<()> {
            c.batch_execute("PRAGMA wal_checkpoint(PASSIVE)")
        }
        /// SQLite runs in this process: what the process wrote (`/proc/self/io`: `wchar`,
        /// bytes passed to write calls, i.e. WAL frames and checkpoints' page copies; `syscw`,
        /// write calls). During a drain nothing else in the process writes.
        fn work(_c: &mut Self::C) -> QueryResult<Option<Work>> {
            Ok(proc_io().map(|(wchar, syscw)| Work {
                log_bytes: wchar,
                other: syscw,
                ..Work::default()
            }))
        }
        fn insert_leased_id(c: &mut Self::C, row: &LimitRow, l: &Lease) -> QueryResult<i64> {
            raw::<InsertLeasedReturning>(row.leased_binds(l)).get_result(c)
        }
        fn insert_task_id(
            c: &mut Self::C,
            row: &LimitRow,
            signature: &'static str,
        ) -> QueryResult<i64> {
            let mut b = Vec::with_capacity(6);
            row.push_binds(&mut b, signature);
            raw::<InsertTaskReturning>(b).get_result(c)
        }
        fn claim(c: &mut Self::C, l: &Lease) -> QueryResult<Vec<(i64, Vec<u8>)>> {
            // One autocommit statement: SQLite takes the write lock when the UPDATE starts.
            let mut b = l.set_binds();
            b.extend([Bind::I(l.now), Bind::I(l.now)]);
            raw::<SqliteClaim>(b).load(c)
        }
        shared_ops!();
    }
}

#[cfg(feature = "postgres")]
pub(crate) mod pg_db {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::pg::PgConnection;

    pub struct Pg;

    sql!(PgClaim, (BigInt, Binary), {
        static S: OnceLock<String> = OnceLock::new();
        S.get_or_init(|| {
            format!(
                "UPDATE consistency_task {LEASE_SET} WHERE id IN (SELECT id FROM consistency_task \
                 WHERE queue = 'default' AND priority = 0 AND {DUE} ORDER BY execute_time \
                 LIMIT {BATCH} FOR UPDATE SKIP LOCKED) RETURNING id, task_parameter"
            )
        })
    });

    impl Db for Pg {
        type C = PgConnection;
        const NAME: &'static str = "pg";

        fn pool(url: &str, size: u32) -> Res<Pool<Cm<Self::C>>> {
            Ok(Pool::builder()
                .max_size(size)
                .test_on_check_out(false)
                .build(ConnectionManager::new(url))?)
        }
        fn setup(c: &mut Self::C) -> QueryResult<()> {
            c.batch_execute(
                "CREATE TABLE bench_orders (id BIGSERIAL PRIMARY KEY, customer VARCHAR(100) NOT NULL, \
                 amount_cents BIGINT NOT NULL, created_at BIGINT NOT NULL);",
            )?;
            c.batch_execute(DIGITS)
        }
        fn setup_seed(c: &mut Self::C) -> QueryResult<()> {
            c.batch_execute(&seed_table("BIGSERIAL PRIMARY KEY", "BYTEA"))
        }
        fn clear(c: &mut Self::C) -> QueryResult<()> {
            c.batch_execute("TRUNCATE consistency_task, bench_orders")
        }
        fn analyze(c: &mut Self::C) -> QueryResult<()> {
            // Also clears the dead index entries a previous drain left at the due end.
            c.batch_execute("VACUUM ANALYZE consistency_task")
        }
        fn insert_leased_id(c: &mut Self::C, row: &LimitRow, l: &Lease) -> QueryResult<i64> {
            raw::<InsertLeasedReturning>(row.leased_binds(l)).get_result(c)
        }
        fn insert_task_id(
            c: &mut Self::C,
            row: &LimitRow,
            signature: &'static str,
        ) -> QueryResult<i64> {
            let mut b = Vec::with_capacity(6);
            row.push_binds(&mut b, signature);
            raw::<InsertTaskReturning>(b).get_result(c)
        }
        fn claim(c: &mut Self::C, l: &Lease) -> QueryResult<Vec<(i64, Vec<u8>)>> {
            let mut b = l.set_binds();
            b.extend([Bind::I(l.now), Bind::I(l.now)]);
            raw::<PgClaim>(b).load(c)
        }
        fn work(c: &mut Self::C) -> QueryResult<Option<Work>> {
            diesel::sql_query(
                "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::float8 AS log_bytes, \
                 n_tup_upd::float8 AS upd, n_tup_hot_upd::float8 AS hot, \
                 n_tup_del::float8 AS del, (SELECT COUNT(*) FROM pg_index i \
                 WHERE i.indrelid = s.relid AND i.indpred IS NULL)::float8 AS other \
                 FROM pg_stat_user_tables s WHERE s.relname = 'consistency_task'",
            )
            .get_result::<WorkRow>(c)
            .map(|r| Some(r.into()))
        }
        fn statement_work(
            c: &mut Self::C,
            reps: usize,
        ) -> QueryResult<Vec<(&'static str, f64, f64)>> {
            let mut sums = [(0f64, 0f64); 3];
            let mut rows = 0f64;
            for _ in 0..reps {
                let l = Lease::new();
                // `set_binds`, then `DUE`'s two.
                let lits = [
                    l.until.to_string(),
                    l.token.to_string(),
                    format!("'{LIMIT_OWNER}'"),
                    l.now.to_string(),
                    l.now.to_string(),
                ];
                let (d, w) = explain_pg(c, &inline(PgClaim::sql(), &lits))?;
                sums[0].0 += d;
                sums[0].1 += w;
                let ids: Vec<i64> = diesel::sql_query(format!(
                    "SELECT id AS v FROM consistency_task WHERE lease_token = {}",
                    l.token
                ))
                .load::<IdRow>(c)?
                .into_iter()
                .map(|r| r.v)
                .collect();
                rows += ids.len() as f64;
                let list = ids
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                let (d, w) = explain_pg(
                    c,
                    &format!(
                        "DELETE FROM consistency_task WHERE lease_token = {} AND id IN ({list})",
                        l.token
                    ),
                )?;
                sums[1].0 += d;
                sums[1].1 += w;
                for _ in 0..ids.len() {
                    let now = now_ms();
                    let lits = [
                        "'bench.noop'".to_string(),
                        "'bench.noop'".to_string(),
                        "'\\x0102'::bytea".to_string(),
                        now.to_string(),
                        now.to_string(),
                        now.to_string(),
                    ];
                    let (d, w) = explain_pg(c, &inline(InsertTask::sql(), &lits))?;
                    sums[2].0 += d;
                    sums[2].1 += w;
                }
            }
            let rows = rows.max(1.0);
            Ok(vec![
                ("claim", sums[0].0 / rows, sums[0].1 / rows),
                ("delete", sums[1].0 / rows, sums[1].1 / rows),
                ("insert", sums[2].0 / rows, sums[2].1 / rows),
            ])
        }
        shared_ops!();
    }

    #[derive(QueryableByName)]
    struct IdRow {
        #[diesel(sql_type = BigInt)]
        v: i64,
    }

    /// Creates and drops the bench database on the server.
    pub fn admin(url: &str, sql: &str) -> QueryResult<()> {
        let mut c = PgConnection::establish(url).map_err(|e| {
            DieselError::QueryBuilderError(format!("connecting to {url}: {e}").into())
        })?;
        c.batch_execute(sql)
    }
}

#[cfg(feature = "mysql")]
pub(crate) mod mysql_db {
    use super::*;

    /// A scalar subquery reading the server-wide status counter `name` as a double (0 when the
    /// server has no such counter).
    fn global_status(name: &str) -> String {
        format!(
            "COALESCE((SELECT CAST(VARIABLE_VALUE AS DOUBLE) \
             FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = '{name}'), 0e0)"
        )
    }
    use diesel::connection::SimpleConnection;
    use diesel::mysql::MysqlConnection;

    pub struct My;

    // No UPDATE … RETURNING and no self-referencing UPDATE subquery on MariaDB/MySQL: a short
    // transaction of SELECT … FOR UPDATE SKIP LOCKED, then UPDATE of the listed ids.
    sql!(MyClaimSelect, (BigInt, Binary), {
        static S: OnceLock<String> = OnceLock::new();
        S.get_or_init(|| {
            format!(
                "SELECT id, task_parameter FROM consistency_task WHERE queue = 'default' \
                 AND priority = 0 AND {DUE} ORDER BY execute_time LIMIT {BATCH} \
                 FOR UPDATE SKIP LOCKED"
            )
        })
    });
    sql!(MyClaimUpdate, BigInt, {
        static S: OnceLock<String> = OnceLock::new();
        S.get_or_init(|| format!("UPDATE consistency_task {LEASE_SET} WHERE id IN (@)"))
    });
    sql!(
        LastInsertId,
        BigInt,
        "SELECT CAST(LAST_INSERT_ID() AS SIGNED)"
    );

    fn lease_rows(c: &mut MysqlConnection, l: &Lease, rows: &[(i64, Vec<u8>)]) -> QueryResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let mut b = l.set_binds();
        b.push(Bind::ids(&ids));
        raw::<MyClaimUpdate>(b).execute(c).map(|_| ())
    }

    impl Db for My {
        type C = MysqlConnection;
        const NAME: &'static str = "mysql";

        fn pool(url: &str, size: u32) -> Res<Pool<Cm<Self::C>>> {
            Ok(Pool::builder()
                .max_size(size)
                .test_on_check_out(false)
                .build(ConnectionManager::new(url))?)
        }
        fn setup(c: &mut Self::C) -> QueryResult<()> {
            c.batch_execute(
                "CREATE TABLE bench_orders (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                 customer VARCHAR(100) NOT NULL, amount_cents BIGINT NOT NULL, \
                 created_at BIGINT NOT NULL) ENGINE = InnoDB;",
            )?;
            c.batch_execute(DIGITS)
        }
        fn setup_seed(c: &mut Self::C) -> QueryResult<()> {
            c.batch_execute(&format!(
                "{} ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_general_ci",
                seed_table("BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY", "LONGBLOB")
            ))
        }
        fn clear(c: &mut Self::C) -> QueryResult<()> {
            c.batch_execute("TRUNCATE TABLE consistency_task; TRUNCATE TABLE bench_orders;")
        }
        fn analyze(_c: &mut Self::C) -> QueryResult<()> {
            Ok(())
        }
        fn insert_leased_id(c: &mut Self::C, row: &LimitRow, l: &Lease) -> QueryResult<i64> {
            raw::<InsertLeased>(row.leased_binds(l)).execute(c)?;
            raw::<LastInsertId>(vec![]).get_result(c)
        }
        fn insert_task_id(
            c: &mut Self::C,
            row: &LimitRow,
            signature: &'static str,
        ) -> QueryResult<i64> {
            let mut b = Vec::with_capacity(6);
            row.push_binds(&mut b, signature);
            raw::<InsertTask>(b).execute(c)?;
            raw::<LastInsertId>(vec![]).get_result(c)
        }
        fn work(c: &mut Self::C) -> QueryResult<Option<Work>> {
            let v = global_status;
            diesel::sql_query(format!(
                "SELECT {} AS log_bytes, {} AS upd, 0e0 AS hot, {} AS del, {} AS other",
                v("INNODB_OS_LOG_WRITTEN"),
                // MariaDB has no Innodb_rows_* (MySQL 8 does); the handler counts are both's.
                v("HANDLER_UPDATE"),
                v("HANDLER_DELETE"),
                v("INNODB_BUFFER_POOL_WRITE_REQUESTS")
            ))
            .get_result::<WorkRow>(c)
            .map(|r| Some(r.into()))
        }
        fn flush_table(c: &mut Self::C) -> QueryResult<()> {
            // Writes the table's dirty pages and holds a read lock until UNLOCK TABLES.
            c.batch_execute("FLUSH TABLES consistency_task FOR EXPORT")?;
            c.batch_execute("UNLOCK TABLES")
        }
        fn dirty_pages(c: &mut Self::C) -> QueryResult<Option<(f64, f64)>> {
            #[derive(QueryableByName)]
            struct Pages {
                #[diesel(sql_type = diesel::sql_types::Double)]
                dirty: f64,
                #[diesel(sql_type = diesel::sql_types::Double)]
                total: f64,
            }
            let v = global_status;
            diesel::sql_query(format!(
                "SELECT {} AS dirty, {} AS total",
                v("INNODB_BUFFER_POOL_PAGES_DIRTY"),
                v("INNODB_BUFFER_POOL_PAGES_TOTAL")
            ))
            .get_result::<Pages>(c)
            .map(|p| Some((p.dirty, p.total)))
        }
        fn lock_waits(c: &mut Self::C) -> QueryResult<Option<LockWaits>> {
            let v = global_status;
            diesel::sql_query(format!(
                "SELECT {} AS waits, {} AS wait_ms, {} AS deadlocks",
                v("INNODB_ROW_LOCK_WAITS"),
                v("INNODB_ROW_LOCK_TIME"),
                v("INNODB_DEADLOCKS"),
            ))
            .get_result::<LockWaits>(c)
            .map(Some)
        }
        fn claim(c: &mut Self::C, l: &Lease) -> QueryResult<Vec<(i64, Vec<u8>)>> {
            c.transaction(|c| {
                let rows: Vec<(i64, Vec<u8>)> =
                    raw::<MyClaimSelect>(vec![Bind::I(l.now), Bind::I(l.now)]).load(c)?;
                lease_rows(c, l, &rows)?;
                Ok(rows)
            })
        }
        shared_ops!();
    }

    pub fn admin(url: &str, sql: &str) -> QueryResult<()> {
        let mut c = MysqlConnection::establish(url).map_err(|e| {
            DieselError::QueryBuilderError(format!("connecting to {url}: {e}").into())
        })?;
        c.batch_execute(sql)
    }
}
