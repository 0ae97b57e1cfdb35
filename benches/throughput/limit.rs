//! "The limit": the hand-written Diesel loop tend is measured against. Its statements are
//! hand-written `QueryFragment`s with a static `QueryId` (so diesel keeps every one prepared),
//! its lease, its rows, its own transient-error test and retries.
//!
//! It deliberately shares no tend code (no tend type, no tend SQL, no tend helper): it is what a
//! careful hand-written loop would do, so that the ratio measures tend, not shared code.

use super::*;

// ---------------------------------------------------------------------------------------------
// Hand-written statements that stay in diesel's prepared statement cache
// ---------------------------------------------------------------------------------------------

/// One bind value. `Ids` fills a fixed list of `BATCH` placeholders (padded with -1), so that
/// `IN (…)` has one shape whatever the batch holds, and the statement stays cached.
pub(crate) enum Bind {
    I(i64),
    T(&'static str),
    B(Vec<u8>),
    Ids(Vec<i64>),
}

impl Bind {
    pub(crate) fn ids(ids: &[i64]) -> Bind {
        let mut v = ids.to_vec();
        v.resize(BATCH, -1);
        Bind::Ids(v)
    }
}

/// A statement's SQL, with `?` for each bind and `@` for a `Bind::Ids` list, and the SQL type
/// of its result row. The marker type is the statement's cache key.
pub(crate) trait Sql: 'static {
    type St: 'static;
    fn sql() -> &'static str;
}

macro_rules! sql {
    ($name:ident, $st:ty, $sql:expr) => {
        pub(crate) struct $name;
        impl Sql for $name {
            type St = $st;
            fn sql() -> &'static str {
                $sql
            }
        }
    };
}

pub(crate) struct Raw<M> {
    pub(crate) binds: Vec<Bind>,
    pub(crate) m: PhantomData<M>,
}

pub(crate) fn raw<M: Sql>(binds: Vec<Bind>) -> Raw<M> {
    Raw {
        binds,
        m: PhantomData,
    }
}

impl<M: Sql> QueryId for Raw<M> {
    type QueryId = M;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<M: Sql> Query for Raw<M> {
    type SqlType = M::St;
}

impl<M: Sql, C> RunQueryDsl<C> for Raw<M> {}

impl<M: Sql, DB> QueryFragment<DB> for Raw<M>
where
    DB: Backend + HasSqlType<BigInt> + HasSqlType<Text> + HasSqlType<Binary>,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
    Vec<u8>: ToSql<Binary, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mismatch =
            || DieselError::QueryBuilderError("bench: binds do not match the SQL".into());
        let mut binds = self.binds.iter();
        let mut rest = M::sql();
        while let Some(pos) = rest.find(['?', '@']) {
            out.push_sql(&rest[..pos]);
            match (rest.as_bytes()[pos], binds.next()) {
                (b'?', Some(Bind::I(v))) => out.push_bind_param::<BigInt, _>(v)?,
                (b'?', Some(Bind::T(v))) => out.push_bind_param::<Text, str>(*v)?,
                (b'?', Some(Bind::B(v))) => out.push_bind_param::<Binary, _>(v)?,
                (b'@', Some(Bind::Ids(ids))) => {
                    for (i, id) in ids.iter().enumerate() {
                        if i > 0 {
                            out.push_sql(", ");
                        }
                        out.push_bind_param::<BigInt, _>(id)?;
                    }
                }
                _ => return Err(mismatch()),
            }
            rest = &rest[pos + 1..];
        }
        out.push_sql(rest);
        if binds.next().is_some() {
            return Err(mismatch());
        }
        Ok(())
    }
}

pub(crate) const TASK_COLUMNS: &str =
    "task_id, method_sign_name, task_parameter, execute_time, error_msg, gmt_create, gmt_modified";

sql!(
    InsertOrder,
    BigInt,
    "INSERT INTO bench_orders (customer, amount_cents, created_at) VALUES (?, ?, ?)"
);
sql!(InsertTask, BigInt, {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| {
        format!("INSERT INTO consistency_task ({TASK_COLUMNS}) VALUES (?, ?, ?, ?, '', ?, ?)")
    })
});
#[cfg(any(feature = "postgres", feature = "sqlite"))]
sql!(InsertTaskReturning, BigInt, {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| {
        format!("INSERT INTO consistency_task ({TASK_COLUMNS}) VALUES (?, ?, ?, ?, '', ?, ?) RETURNING id")
    })
});
sql!(InsertTasks, BigInt, {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| {
        let row = "(?, ?, ?, ?, '', ?, ?)";
        format!(
            "INSERT INTO consistency_task ({TASK_COLUMNS}) VALUES {}",
            vec![row; BATCH].join(", ")
        )
    })
});
sql!(
    DeleteBatch,
    BigInt,
    "DELETE FROM consistency_task WHERE lease_token = ? AND id IN (@)"
);
sql!(
    DeleteBelow,
    BigInt,
    "DELETE FROM consistency_task WHERE execute_time < ?"
);
// The drains' end test (tend's polls it every 1 ms once its handlers ran). Every bench row is
// in the default queue at priority 0, so on tend's table this counts a range of its due index
// `(queue, priority, execute_time)`; on `execute_time` alone it scanned the whole table, a
// million rows per poll in the backlog drain, which measured the bench, not the systems.
sql!(
    CountBelow,
    BigInt,
    "SELECT COUNT(*) FROM consistency_task WHERE queue = 'default' AND priority = 0 \
     AND execute_time < ?"
);
sql!(
    DueTime,
    BigInt,
    "SELECT execute_time FROM consistency_task WHERE id = ?"
);
// Server-side generation of `?` rows from a 10-row digits table: no client memory, one
// statement, portable across the three backends.
sql!(
    Fill,
    BigInt,
    "INSERT INTO consistency_task (task_id, method_sign_name, method_name, parameter_types, \
     task_parameter, execute_time, error_msg, gmt_create, gmt_modified) \
     SELECT 'bench.noop', 'bench.noop', 'noop', 'throughput::Noop', ?, \
     ? + a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 100000 * g.d, '', ?, ? \
     FROM bench_digits a, bench_digits b, bench_digits c, bench_digits e, bench_digits f, \
     bench_digits g LIMIT ?"
);

pub(crate) const LEASED_COLUMNS: &str = "task_id, method_sign_name, task_parameter, execute_time, \
     error_msg, gmt_create, gmt_modified, task_status, execute_times, lease_token, lease_owner, \
     lease_expires_at";
pub(crate) const LEASED_VALUES: &str = "(?, ?, ?, ?, '', ?, ?, 1, 1, ?, ?, ?)";

#[cfg(any(feature = "postgres", feature = "sqlite"))]
sql!(InsertLeasedReturning, BigInt, {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| {
        format!(
            "INSERT INTO consistency_task ({LEASED_COLUMNS}) VALUES {LEASED_VALUES} RETURNING id"
        )
    })
});
#[cfg(feature = "mysql")]
sql!(InsertLeased, BigInt, {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| {
        format!("INSERT INTO consistency_task ({LEASED_COLUMNS}) VALUES {LEASED_VALUES}")
    })
});

pub(crate) const LEASE_SET: &str = "SET task_status = 1, execute_times = execute_times + 1, \
     lease_expires_at = ?, lease_token = ?, lease_owner = ?";

/// Claimable and due, as tend's claim reads it (`lease::claimable`): the lease leaves the due
/// time alone, so a running row is skipped until its lease lapses. Two binds: now, now.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const DUE: &str = "execute_time <= ? AND (task_status IN (0, 2) OR (task_status = 1 \
     AND (lease_expires_at IS NULL OR lease_expires_at <= ?)))";

/// The claim's lease: the same columns tend writes.
pub(crate) struct Lease {
    pub(crate) now: i64,
    pub(crate) until: i64,
    pub(crate) token: i64,
}

pub(crate) static TOKENS: AtomicI64 = AtomicI64::new(0);

impl Lease {
    pub(crate) fn new() -> Lease {
        let now = now_ms();
        if TOKENS.load(Ordering::Relaxed) == 0 {
            let _ = TOKENS.compare_exchange(
                0,
                (now_us() & 0xffff_ffff) << 20,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        Lease {
            now,
            until: now + 30_000,
            token: TOKENS.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub(crate) fn set_binds(&self) -> Vec<Bind> {
        vec![
            Bind::I(self.until),
            Bind::I(self.token),
            Bind::T(LIMIT_OWNER),
        ]
    }
}

pub(crate) const LIMIT_OWNER: &str = "bench-limit";

/// One task row the limit writes: what a hand-written outbox insert would fill in.
pub(crate) struct LimitRow {
    pub(crate) payload: Vec<u8>,
    pub(crate) execute_time: i64,
    pub(crate) now: i64,
}

impl LimitRow {
    pub(crate) fn noop(order_id: i64, execute_time: i64) -> LimitRow {
        LimitRow {
            payload: encode(&Noop { order_id }),
            execute_time,
            now: now_ms(),
        }
    }

    pub(crate) fn leased_binds(&self, l: &Lease) -> Vec<Bind> {
        let mut b = Vec::with_capacity(9);
        self.push_binds(&mut b, Probe::SIGNATURE);
        b.extend([Bind::I(l.token), Bind::T(LIMIT_OWNER), Bind::I(l.until)]);
        b
    }

    pub(crate) fn push_binds(&self, b: &mut Vec<Bind>, signature: &'static str) {
        b.extend([
            Bind::T(signature),
            Bind::T(signature),
            Bind::B(self.payload.clone()),
            Bind::I(self.execute_time),
            Bind::I(self.now),
            Bind::I(self.now),
        ]);
    }
}

/// Whether an error is a lock conflict that retrying resolves (MariaDB deadlock 1213, SQLite
/// busy): the limit retries them like tend does.
pub(crate) fn is_transient(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(diesel::result::DatabaseErrorKind::SerializationFailure, _) => {
            true
        }
        DieselError::DatabaseError(_, info) => {
            let m = info.message().to_ascii_lowercase();
            m.contains("deadlock")
                || m.contains("lock wait timeout")
                || m.contains("database is locked")
        }
        _ => false,
    }
}

/// Lock conflicts the limit retried (MariaDB deadlocks, SQLite busy), reported per drain.
pub(crate) static LOCK_CONFLICTS: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn retry<T>(mut op: impl FnMut() -> QueryResult<T>) -> QueryResult<T> {
    let mut attempt = 0;
    loop {
        match op() {
            Err(e) if attempt < 50 && is_transient(&e) => {
                attempt += 1;
                LOCK_CONFLICTS.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_micros(200 * attempt));
            }
            other => return other,
        }
    }
}

/// [`retry`] on a fresh connection after each conflict: once, after a MariaDB deadlock, the C
/// client hung for good in the next `mysql_stmt_execute` of a cached statement on the same
/// connection (the server showed it idle), so a limit thread never reuses one after an error.
pub(crate) fn retry_fresh<D: Db, T>(
    c: &mut D::C,
    url: &str,
    mut op: impl FnMut(&mut D::C) -> QueryResult<T>,
) -> Res<T> {
    let mut attempt = 0;
    loop {
        match op(c) {
            Err(e) if attempt < 50 && is_transient(&e) => {
                attempt += 1;
                LOCK_CONFLICTS.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_micros(200 * attempt));
                *c = D::connect(url)?;
            }
            other => return Ok(other?),
        }
    }
}
