//! `cargo bench --bench throughput`: tend against "the limit", a hand-written Diesel loop doing
//! the same work, measured in the same run so that their ratio holds on a noisy machine.
//!
//! SQLite (a temp file in WAL mode) always runs; PostgreSQL and MariaDB/MySQL run when
//! `TEND_PG_URL` / `TEND_MYSQL_URL` are set and the crate is built with their features. Each
//! server gets its own database, `tend_bench_<pid>`, dropped at the end.
//!
//! Environment:
//! * `TEND_BENCH_N`: tasks per figure (default 20000, rounded up to a multiple of 100);
//! * `TEND_BENCH_LARGE=1`: also the drain with a one-million-row backlog;
//! * `TEND_BENCH_POLL_MS`: poll interval of tend's pool and of the limit's pollers (default 10);
//! * `TEND_BENCH_PROFILE=1`: count every statement per phase (diesel instrumentation) and print
//!   which ones the statement cache holds; timings are then not representative;
//! * `TEND_BENCH_ONLY=enqueue,drains,dispatch,lateness`: only these phases (for iterating);
//! * `TEND_BENCH_SQLITE=0`: skip SQLite (for iterating on a server backend);
//! * `TEND_BENCH_TEND_BATCH`: tend's `batch_size` in the drains (default 100, like the limit;
//!   for diagnosis only).
//!
//! Every figure is printed as one line:
//! `FIGURE <name>=<value> unit=<unit> backend=<pg|mysql|sqlite> system=<tend|limit> n=<tasks>`.
//! See `benches/README.md` for what each figure measures and the last recorded run.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel::backend::Backend;
use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection, R2D2Connection};
use diesel::result::Error as DieselError;
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Binary, HasSqlType, Text};
use serde::{Deserialize, Serialize};
use tend::{ExecuteWay, NewTask, Registry, StoreConnection, Task, TaskContext, TaskError};

type BoxError = Box<dyn StdError + Send + Sync>;
type Res<T> = Result<T, BoxError>;
type Cm<C> = ConnectionManager<C>;

/// Most rows one claim takes, for tend (its `batch_size`) and for the limit.
const BATCH: usize = 100;
/// The size of the one-million-row backlog.
const BACKLOG_ROWS: usize = 1_000_000;
/// Probes for the dispatch and lateness figures (fewer when `TEND_BENCH_N` is smaller).
const PROBES_MAX: usize = 2_000;
/// Gap between two dispatch transactions: latency at a steady ~1k tx/s, not under saturation.
const DISPATCH_GAP: Duration = Duration::from_millis(1);
/// The longest one of the 4 rounds of single-transaction enqueues runs, per system: enough
/// for a rate, and it keeps slow fsyncs from blowing the run's time budget.
const ENQUEUE_CAP: Duration = Duration::from_secs(2);
/// The longest a phase (or one drain with its fill) may take before the watchdog aborts.
const PHASE_BUDGET: Duration = Duration::from_secs(240);
/// Each drain figure is the median of this many runs (tend and limit alternating first).
const DRAIN_REPEATS: usize = 3;
/// The longest one drain may take: a pathological case must not blow the run's time budget.
const DRAIN_CAP: Duration = Duration::from_secs(45);
/// The longest the lateness producers write tasks.
const LATENESS_CAP: Duration = Duration::from_secs(15);
/// Connections in the pool of the enqueue, dispatch and lateness phases.
const POOL_SIZE: u32 = 4;

// ---------------------------------------------------------------------------------------------
// Settings, figures, statistics
// ---------------------------------------------------------------------------------------------

struct Settings {
    n: usize,
    large: bool,
    poll: Duration,
    profile: bool,
    only: Option<Vec<String>>,
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    sqlite: bool,
    /// tend's `batch_size` in the drains (the limit always claims `BATCH`).
    tend_batch: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let n: usize = std::env::var("TEND_BENCH_N")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(20_000)
            .max(BATCH);
        let flag = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0");
        Settings {
            n: n.div_ceil(BATCH) * BATCH,
            large: flag("TEND_BENCH_LARGE"),
            poll: Duration::from_millis(
                std::env::var("TEND_BENCH_POLL_MS")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(10)
                    .max(1),
            ),
            profile: flag("TEND_BENCH_PROFILE"),
            only: std::env::var("TEND_BENCH_ONLY")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.split(',').map(|p| p.trim().to_string()).collect()),
            sqlite: std::env::var("TEND_BENCH_SQLITE").map_or(true, |v| v != "0"),
            tend_batch: std::env::var("TEND_BENCH_TEND_BATCH")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(BATCH),
        }
    }

    /// Whether a phase (enqueue, drains, dispatch, lateness) is to run.
    fn wants(&self, phase: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == phase))
    }

    fn probes(&self) -> usize {
        self.n.min(PROBES_MAX)
    }
}

#[derive(Clone)]
struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    backend: &'static str,
    system: &'static str,
    n: usize,
}

static FIGURES: Mutex<Vec<Figure>> = Mutex::new(Vec::new());

fn figure(
    name: &str,
    value: f64,
    unit: &'static str,
    backend: &'static str,
    system: &'static str,
    n: usize,
) {
    let shown = if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    };
    println!("FIGURE {name}={shown} unit={unit} backend={backend} system={system} n={n}");
    FIGURES.lock().unwrap().push(Figure {
        name: name.to_string(),
        value,
        unit,
        backend,
        system,
        n,
    });
}

/// Nearest-rank percentile of unsorted samples.
fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

/// Peak resident set size (VmHWM) in MiB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Current resident set size (VmRSS) in MiB.
fn rss_now_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resets VmHWM to the current RSS (Linux 4.0+), so that each drain's peak is its own. First
/// hands the heap's free pages back to the kernel (glibc's `malloc_trim`): without it the
/// "current RSS" includes whatever earlier phases freed but the allocator kept, and the figure
/// climbed through the run (17 MiB before the first SQLite drain, 37 before the first
/// PostgreSQL one) whatever the drain itself used.
fn reset_peak_rss() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only releases free memory; it takes no pointers.
        unsafe {
            malloc_trim(0);
        }
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------------------------------------
// The tasks: a no-op, and a probe that records when its handler started
// ---------------------------------------------------------------------------------------------

/// Handler runs of no-op tasks, tend's and the limit's.
static RAN: AtomicUsize = AtomicUsize::new(0);

#[derive(Serialize, Deserialize)]
struct Noop {
    order_id: i64,
}

impl Task for Noop {
    const SIGNATURE: &'static str = "bench.noop";
    fn execute(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
        RAN.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A handler start: which probe, which row, and when (monotonic and wall clock).
struct Start {
    seq: u64,
    id: i64,
    at: Instant,
    wall_us: i64,
}

static STARTS: Mutex<Vec<Start>> = Mutex::new(Vec::new());

#[derive(Serialize, Deserialize)]
struct Probe {
    seq: u64,
}

fn probe_started(seq: u64, id: i64) {
    let at = Instant::now();
    let wall_us = now_us();
    STARTS.lock().unwrap().push(Start {
        seq,
        id,
        at,
        wall_us,
    });
}

impl Task for Probe {
    const SIGNATURE: &'static str = "bench.probe";
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        probe_started(self.seq, ctx.id());
        Ok(())
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register::<Noop>().expect("register Noop");
    r.register::<Probe>().expect("register Probe");
    r
}

fn encode<T: Serialize>(t: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(t, bincode::config::standard()).expect("encode")
}

/// What the limit does with a claimed row: decode the payload and call the handler, as tend
/// does (tend also looks the signature up; the limit knows its one task type).
fn limit_run_noop(payload: &[u8]) {
    let (t, _): (Noop, usize) =
        bincode::serde::decode_from_slice(payload, bincode::config::standard()).expect("decode");
    std::hint::black_box(t.order_id);
    RAN.fetch_add(1, Ordering::Relaxed);
}

fn limit_run_probe(id: i64, payload: &[u8]) {
    let (t, _): (Probe, usize) =
        bincode::serde::decode_from_slice(payload, bincode::config::standard()).expect("decode");
    probe_started(t.seq, id);
}

// ---------------------------------------------------------------------------------------------
// Hand-written statements that stay in diesel's prepared statement cache
// ---------------------------------------------------------------------------------------------

/// One bind value. `Ids` fills a fixed list of `BATCH` placeholders (padded with -1), so that
/// `IN (…)` has one shape whatever the batch holds, and the statement stays cached.
enum Bind {
    I(i64),
    T(&'static str),
    B(Vec<u8>),
    Ids(Vec<i64>),
}

impl Bind {
    fn ids(ids: &[i64]) -> Bind {
        let mut v = ids.to_vec();
        v.resize(BATCH, -1);
        Bind::Ids(v)
    }
}

/// A statement's SQL, with `?` for each bind and `@` for a `Bind::Ids` list, and the SQL type
/// of its result row. The marker type is the statement's cache key.
trait Sql: 'static {
    type St: 'static;
    fn sql() -> &'static str;
}

macro_rules! sql {
    ($name:ident, $st:ty, $sql:expr) => {
        struct $name;
        impl Sql for $name {
            type St = $st;
            fn sql() -> &'static str {
                $sql
            }
        }
    };
}

struct Raw<M> {
    binds: Vec<Bind>,
    m: PhantomData<M>,
}

fn raw<M: Sql>(binds: Vec<Bind>) -> Raw<M> {
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

const TASK_COLUMNS: &str =
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
sql!(
    CountBelow,
    BigInt,
    "SELECT COUNT(*) FROM consistency_task WHERE execute_time < ?"
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

const LEASED_COLUMNS: &str = "task_id, method_sign_name, task_parameter, execute_time, \
     error_msg, gmt_create, gmt_modified, task_status, execute_times, lease_token, lease_owner, \
     lease_expires_at";
const LEASED_VALUES: &str = "(?, ?, ?, ?, '', ?, ?, 1, 1, ?, ?, ?)";

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

const LEASE_SET: &str = "SET task_status = 1, execute_times = execute_times + 1, \
     execute_time = ?, lease_expires_at = ?, lease_token = ?, lease_owner = ?, gmt_modified = ?";

/// The claim's lease: the same columns tend writes.
struct Lease {
    now: i64,
    until: i64,
    token: i64,
}

static TOKENS: AtomicI64 = AtomicI64::new(0);

impl Lease {
    fn new() -> Lease {
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

    fn set_binds(&self) -> Vec<Bind> {
        vec![
            Bind::I(self.until),
            Bind::I(self.until),
            Bind::I(self.token),
            Bind::T(LIMIT_OWNER),
            Bind::I(self.now),
        ]
    }
}

const LIMIT_OWNER: &str = "bench-limit";

/// One task row the limit writes: what a hand-written outbox insert would fill in.
struct LimitRow {
    payload: Vec<u8>,
    execute_time: i64,
    now: i64,
}

impl LimitRow {
    fn noop(order_id: i64, execute_time: i64) -> LimitRow {
        LimitRow {
            payload: encode(&Noop { order_id }),
            execute_time,
            now: now_ms(),
        }
    }

    fn leased_binds(&self, l: &Lease) -> Vec<Bind> {
        let mut b = Vec::with_capacity(9);
        self.push_binds(&mut b, Probe::SIGNATURE);
        b.extend([Bind::I(l.token), Bind::T(LIMIT_OWNER), Bind::I(l.until)]);
        b
    }

    fn push_binds(&self, b: &mut Vec<Bind>, signature: &'static str) {
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
fn is_transient(e: &DieselError) -> bool {
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
static LOCK_CONFLICTS: AtomicUsize = AtomicUsize::new(0);

fn retry<T>(mut op: impl FnMut() -> QueryResult<T>) -> QueryResult<T> {
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
fn retry_fresh<D: Db, T>(
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

/// Whether a transaction's error is a lock conflict (a MariaDB deadlock between the producer
/// and the workers, SQLite busy): the caller retries the transaction, tend's or the limit's.
fn is_transient_box(e: &BoxError) -> bool {
    if let Some(d) = e.downcast_ref::<DieselError>() {
        return is_transient(d);
    }
    e.downcast_ref::<tend::Error>()
        .is_some_and(|t| t.is_transient())
}

fn retry_tx<T>(mut op: impl FnMut() -> Res<T>) -> Res<T> {
    let mut attempt = 0;
    loop {
        match op() {
            Err(e) if attempt < 50 && is_transient_box(&e) => {
                attempt += 1;
                thread::sleep(Duration::from_micros(200 * attempt));
            }
            other => return other,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Per-backend statements
// ---------------------------------------------------------------------------------------------

/// A backend: its connection type and the statements that differ.
trait Db: 'static {
    type C: R2D2Connection + StoreConnection + Send + 'static;
    const NAME: &'static str;
    fn pool(url: &str, size: u32) -> Res<Pool<Cm<Self::C>>>;
    /// One connection outside any pool, set up like the pool's.
    fn connect(url: &str) -> Res<Self::C> {
        Ok(<Self::C as diesel::Connection>::establish(url)?)
    }
    /// Creates `bench_orders` and `bench_digits`.
    fn setup(c: &mut Self::C) -> QueryResult<()>;
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

const DIGITS: &str = "CREATE TABLE bench_digits (d BIGINT NOT NULL); \
     INSERT INTO bench_digits (d) VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9);";

#[cfg(feature = "sqlite")]
mod sqlite_db {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::sqlite::SqliteConnection;

    pub struct Sqlite;

    // `+task_status`: without ANALYZE statistics SQLite's planner takes the (task_status,
    // gmt_modified) index for `task_status IN (…)` and sorts every pending row to find the
    // first 100 by execute_time (5 ms per claim at 20k rows, 220 ms at 1M); the unary plus
    // keeps it on the execute_time index, O(batch). See benches/README.md.
    sql!(SqliteClaim, (BigInt, Binary), {
        static S: OnceLock<String> = OnceLock::new();
        S.get_or_init(|| {
            format!(
                "UPDATE consistency_task {LEASE_SET} WHERE id IN (SELECT id FROM consistency_task \
                 WHERE execute_time <= ? AND +task_status IN (0, 1, 2) ORDER BY execute_time \
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
        fn clear(c: &mut Self::C) -> QueryResult<()> {
            c.batch_execute("DELETE FROM consistency_task; DELETE FROM bench_orders;")
        }
        fn analyze(_c: &mut Self::C) -> QueryResult<()> {
            Ok(())
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
            b.push(Bind::I(l.now));
            raw::<SqliteClaim>(b).load(c)
        }
        shared_ops!();
    }
}

#[cfg(feature = "postgres")]
mod pg_db {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::pg::PgConnection;

    pub struct Pg;

    sql!(PgClaim, (BigInt, Binary), {
        static S: OnceLock<String> = OnceLock::new();
        S.get_or_init(|| {
            format!(
                "UPDATE consistency_task {LEASE_SET} WHERE id IN (SELECT id FROM consistency_task \
                 WHERE execute_time <= ? AND task_status IN (0, 1, 2) ORDER BY execute_time \
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
            b.push(Bind::I(l.now));
            raw::<PgClaim>(b).load(c)
        }
        shared_ops!();
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
mod mysql_db {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::mysql::MysqlConnection;

    pub struct My;

    // No UPDATE … RETURNING and no self-referencing UPDATE subquery on MariaDB/MySQL: a short
    // transaction of SELECT … FOR UPDATE SKIP LOCKED, then UPDATE of the listed ids.
    sql!(MyClaimSelect, (BigInt, Binary), {
        static S: OnceLock<String> = OnceLock::new();
        S.get_or_init(|| {
            format!(
                "SELECT id, task_parameter FROM consistency_task WHERE execute_time <= ? \
                 AND task_status IN (0, 1, 2) ORDER BY execute_time LIMIT {BATCH} \
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
        fn claim(c: &mut Self::C, l: &Lease) -> QueryResult<Vec<(i64, Vec<u8>)>> {
            c.transaction(|c| {
                let rows: Vec<(i64, Vec<u8>)> =
                    raw::<MyClaimSelect>(vec![Bind::I(l.now)]).load(c)?;
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

// ---------------------------------------------------------------------------------------------
// Statement profile (TEND_BENCH_PROFILE=1)
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Profile {
    phase: String,
    /// (phase, normalized sql) -> [executions, prepares into the cache, nanoseconds]
    counts: BTreeMap<(String, String), [u64; 3]>,
    /// (phase, normalized sql) -> distinct SQL texts seen (an IN list per length, say)
    texts: HashMap<(String, String), std::collections::HashSet<String>>,
    /// normalized SQL of every statement diesel ever put into a statement cache
    cached: std::collections::HashSet<String>,
    /// phase -> tasks it handled
    tasks: BTreeMap<String, usize>,
    /// phase -> wall-clock time
    walls: BTreeMap<String, Duration>,
    started: Option<Instant>,
}

static PROFILE: Mutex<Option<Profile>> = Mutex::new(None);

/// `$1`-style placeholders become `?`, and lists of placeholders become one `?…`.
fn normalize_sql(sql: &str) -> String {
    let sql = sql.split(" -- binds:").next().unwrap_or_default().trim();
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '$' && chars.peek().is_some_and(|c| c.is_ascii_digit()) {
            while chars.peek().is_some_and(|c| c.is_ascii_digit()) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(ch);
        }
    }
    while out.contains("?, ?") {
        out = out.replace("?, ?", "?");
    }
    out.replace("(?)", "(?…)")
}

/// Per connection: the statement running now, to time it.
struct Timer {
    running: Option<(String, String, Instant)>,
}

impl Instrumentation for Timer {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { query, .. } => {
                let raw = query.to_string();
                let sql = normalize_sql(&raw);
                let text = raw
                    .split(" -- binds:")
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if let Some(p) = PROFILE.lock().unwrap().as_mut() {
                    let key = (p.phase.clone(), sql.clone());
                    p.counts.entry(key.clone()).or_default()[0] += 1;
                    p.texts.entry(key.clone()).or_default().insert(text);
                    self.running = Some((key.0, key.1, Instant::now()));
                }
            }
            InstrumentationEvent::CacheQuery { sql, .. } => {
                let sql = normalize_sql(sql);
                if let Some(p) = PROFILE.lock().unwrap().as_mut() {
                    let key = (p.phase.clone(), sql.clone());
                    p.counts.entry(key).or_default()[1] += 1;
                    p.cached.insert(sql);
                }
            }
            InstrumentationEvent::FinishQuery { .. } => {
                if let Some((phase, sql, t)) = self.running.take() {
                    let ns = t.elapsed().as_nanos() as u64;
                    if let Some(p) = PROFILE.lock().unwrap().as_mut() {
                        p.counts.entry((phase, sql)).or_default()[2] += ns;
                    }
                }
            }
            _ => {}
        }
    }
}

fn profile_instrumentation() -> Option<Box<dyn Instrumentation>> {
    Some(Box::new(Timer { running: None }))
}

fn profile_phase(name: &str, tasks: usize) {
    if let Some(p) = PROFILE.lock().unwrap().as_mut() {
        if let Some(t) = p.started.take() {
            let wall = t.elapsed();
            let phase = p.phase.clone();
            *p.walls.entry(phase).or_default() += wall;
        }
        p.phase = name.to_string();
        if name != "-" {
            p.tasks.insert(name.to_string(), tasks);
            p.started = Some(Instant::now());
        }
    }
}

fn print_profile() {
    let Some(p) = PROFILE.lock().unwrap().take() else {
        return;
    };
    println!(
        "\n==== statement profile: per phase, executions and their time summed over all \
         connections; `cached` = diesel keeps it prepared ===="
    );
    let mut last = String::new();
    for ((phase, sql), [runs, prepared, ns]) in &p.counts {
        if phase.is_empty() || phase == "-" || *runs == 0 {
            continue;
        }
        let tasks = p.tasks.get(phase).copied().unwrap_or(0).max(1);
        if *phase != last {
            let wall = p.walls.get(phase).map_or(0.0, |w| w.as_secs_f64() * 1e3);
            println!("-- {phase} ({tasks} tasks, {wall:.0} ms wall)");
            last = phase.clone();
        }
        let mut s: String = sql.chars().take(100).collect();
        if sql.chars().count() > 100 {
            s.push('…');
        }
        let texts = p
            .texts
            .get(&(phase.clone(), sql.clone()))
            .map_or(0, |t| t.len());
        let kind = if p.cached.contains(sql) {
            "cached"
        } else {
            "NOT CACHED"
        };
        println!(
            "  {runs:>8} runs {:>7.3}/task {:>8.1} ms {:>7.1} us/run {prepared:>3} prep {texts:>3} texts  {kind:<10} {s}",
            *runs as f64 / tasks as f64,
            *ns as f64 / 1e6,
            *ns as f64 / 1e3 / *runs as f64,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The measurements, generic over the backend
// ---------------------------------------------------------------------------------------------

struct Bench<D: Db> {
    /// For setup, enqueue, dispatch and lateness; each drain gets a pool of its own, sized
    /// for it, so that idle connections (SQLite page caches) of other phases stay out of rss.
    pool: Pool<Cm<D::C>>,
    url: String,
    s: &'static Settings,
}

type Pooled<D> = PooledConnection<Cm<<D as Db>::C>>;

impl<D: Db> Bench<D> {
    fn conn(&self) -> Res<Pooled<D>> {
        Ok(self.pool.get()?)
    }

    fn clear(&self) -> Res<()> {
        let mut c = self.conn()?;
        D::clear(&mut c)?;
        Ok(())
    }

    /// `n` due no-op tasks (and, for the backlog, rows due in a day), generated on the server.
    fn fill(&self, due: usize, future: usize) -> Res<()> {
        let mut c = self.conn()?;
        let now = now_ms();
        if future > 0 {
            D::fill(&mut c, future, now + 86_400_000)?;
        }
        if due > 0 {
            D::fill(&mut c, due, now - 20 * 60_000)?;
        }
        D::analyze(&mut c)?;
        Ok(())
    }

    fn figure(&self, name: &str, value: f64, unit: &'static str, system: &'static str, n: usize) {
        figure(name, value, unit, D::NAME, system, n);
    }

    fn run(&self) -> Res<()> {
        let t0 = Instant::now();
        let phase = |name: &str, f: &dyn Fn() -> Res<()>| -> Res<()> {
            if !self.s.wants(name) {
                return Ok(());
            }
            let t = Instant::now();
            expect_done(PHASE_BUDGET, format!("{} {name}", D::NAME));
            f()?;
            log(format!(
                "{}: {name} took {:.1} s",
                D::NAME,
                t.elapsed().as_secs_f64()
            ));
            Ok(())
        };
        phase("enqueue", &|| self.enqueue())?;
        phase("drains", &|| self.drains())?;
        phase("dispatch", &|| self.dispatch())?;
        phase("lateness", &|| self.lateness())?;
        log(format!(
            "{}: done in {:.1} s",
            D::NAME,
            t0.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    // ----- enqueue -------------------------------------------------------------------------

    /// Business-only, tend and limit transactions, interleaved in rounds so that drift of the
    /// machine hits all three alike.
    fn enqueue(&self) -> Res<()> {
        let n = self.s.n;
        const ROUNDS: usize = 4;
        let per = n / ROUNDS;
        // business (tend slot), tend, limit, business (limit slot)
        let mut t = [Duration::ZERO; 4];
        let mut done = [0usize; 4];
        let mut c = self.conn()?;
        self.clear()?;
        let mut order = 0i64;
        for round in 0..ROUNDS {
            let mut parts: Vec<usize> = vec![0, 1, 2, 3];
            parts.rotate_left(round);
            for part in parts {
                let sys = ["business", "tend", "limit", "business"][part];
                profile_phase(&format!("{} enqueue {sys}", D::NAME), per * ROUNDS);
                let start = Instant::now();
                for _ in 0..per {
                    if start.elapsed() > ENQUEUE_CAP {
                        break;
                    }
                    done[part] += 1;
                    order += 1;
                    let i = order;
                    match part {
                        0 | 3 => c.transaction(|c| D::insert_order(c, i))?,
                        1 => c.transaction(|c| -> Res<()> {
                            D::insert_order(c, i)?;
                            tend::enqueue(c, &Noop { order_id: i })?;
                            Ok(())
                        })?,
                        _ => c.transaction(|c| -> Res<()> {
                            D::insert_order(c, i)?;
                            D::insert_task(c, &LimitRow::noop(i, now_ms()))?;
                            Ok(())
                        })?,
                    }
                }
                t[part] += start.elapsed();
            }
            self.clear()?;
        }
        if done.iter().any(|&d| d < per * ROUNDS) {
            log(format!(
                "{}: enqueue capped at {ENQUEUE_CAP:?} per round: {done:?} of {} transactions",
                D::NAME,
                per * ROUNDS
            ));
        }
        let rate = |p: usize| done[p] as f64 / t[p].as_secs_f64();
        profile_phase("-", 0);
        self.figure("enqueue_tx_per_s", rate(1), "tx/s", "tend", done[1]);
        self.figure("enqueue_tx_per_s", rate(2), "tx/s", "limit", done[2]);
        let name = "enqueue_business_only_tx_per_s";
        self.figure(name, rate(0), "tx/s", "tend", done[0]);
        self.figure(name, rate(3), "tx/s", "limit", done[3]);

        // 100 tasks per transaction.
        let txs = n / BATCH;
        let mut tb = [Duration::ZERO; 2];
        for round in 0..2 {
            for part in [round, 1 - round] {
                self.clear()?;
                profile_phase(
                    &format!("{} enqueue batch {}", D::NAME, ["tend", "limit"][part]),
                    n,
                );
                let start = Instant::now();
                for tx in 0..txs / 2 {
                    let base = (tx * BATCH) as i64;
                    if part == 0 {
                        let tasks = (0..BATCH as i64)
                            .map(|i| NewTask::new(&Noop { order_id: base + i }))
                            .collect::<Result<Vec<_>, _>>()?;
                        c.transaction(|c| -> Res<()> {
                            tend::enqueue_many(c, tasks)?;
                            Ok(())
                        })?;
                    } else {
                        let now = now_ms();
                        let rows: Vec<LimitRow> = (0..BATCH as i64)
                            .map(|i| LimitRow::noop(base + i, now))
                            .collect();
                        c.transaction(|c| D::insert_tasks(c, &rows))?;
                    }
                }
                tb[part] += start.elapsed();
            }
        }
        self.clear()?;
        let total = txs / 2 * 2 * BATCH;
        self.figure(
            "enqueue_batch_tasks_per_s",
            total as f64 / tb[0].as_secs_f64(),
            "tasks/s",
            "tend",
            total,
        );
        self.figure(
            "enqueue_batch_tasks_per_s",
            total as f64 / tb[1].as_secs_f64(),
            "tasks/s",
            "limit",
            total,
        );
        Ok(())
    }

    // ----- drains --------------------------------------------------------------------------

    /// Starts a pool of `k` threads on `n` due tasks and waits until they ran and none of the
    /// rows below `below` is left (or `DRAIN_CAP` passed).
    fn tend_drain(&self, k: usize, n: usize, below: i64) -> Res<Drained> {
        RAN.store(0, Ordering::SeqCst);
        // tend takes 2 connections (fetcher, completer), 1 more to check the schema; 1 counts.
        // 6: the smallest pool on which tend gives a shard its second claimer (it holds 3).
        let pool = D::pool(&self.url, 6)?;
        let workers = tend::WorkerPool::builder(pool.clone(), registry())
            .threads(k)
            .batch_size(self.s.tend_batch)
            .poll_interval(self.s.poll)
            .build()?;
        let mut c = pool.get()?;
        let start = Instant::now();
        let deadline = start + DRAIN_CAP;
        let handle = workers.start()?;
        while RAN.load(Ordering::SeqCst) < n && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        while Instant::now() < deadline && D::count_below(&mut c, below)? > 0 {
            thread::sleep(Duration::from_millis(1));
        }
        let d = Drained::new(n, start.elapsed(), "tend");
        handle.shutdown();
        Ok(d)
    }

    /// `k` threads, each looping claim → run → delete on its own connection until a claim
    /// comes back empty (or `DRAIN_CAP` passed).
    fn limit_drain(&self, k: usize, n: usize, below: i64) -> Res<Drained> {
        RAN.store(0, Ordering::SeqCst);
        let conflicts = LOCK_CONFLICTS.load(Ordering::Relaxed);
        let conns = (0..k)
            .map(|_| D::connect(&self.url))
            .collect::<Res<Vec<_>>>()?;
        let url = self.url.as_str();
        let start = Instant::now();
        let deadline = start + DRAIN_CAP;
        thread::scope(|s| -> Res<()> {
            let hs: Vec<_> = conns
                .into_iter()
                .map(|mut c| {
                    s.spawn(move || -> Res<()> {
                        while Instant::now() < deadline {
                            let l = Lease::new();
                            let rows = retry_fresh::<D, _>(&mut c, url, |c| D::claim(c, &l))?;
                            if rows.is_empty() {
                                return Ok(());
                            }
                            for (_, p) in &rows {
                                limit_run_noop(p);
                            }
                            let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
                            retry_fresh::<D, _>(&mut c, url, |c| D::delete(c, l.token, &ids))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in hs {
                h.join().expect("limit thread panicked")?;
            }
            Ok(())
        })?;
        let mut c = self.conn()?;
        let left = D::count_below(&mut c, below)?;
        let d = Drained::new(n, start.elapsed(), "limit");
        let conflicts = LOCK_CONFLICTS.load(Ordering::Relaxed) - conflicts;
        if conflicts > 0 {
            log(format!(
                "{}: limit w{k} retried {conflicts} lock conflict(s)",
                D::NAME
            ));
        }
        if left > 0 && !d.capped {
            return Err(format!("limit drain left {left} rows").into());
        }
        Ok(d)
    }

    fn drains(&self) -> Res<()> {
        let n = self.s.n;
        let below = now_ms() + 3_600_000;
        let rss_ok = reset_peak_rss();
        if !rss_ok {
            log("cannot reset VmHWM (/proc/self/clear_refs): rss_mb is the process-wide peak");
        }
        let mut rss = [0f64; 2];
        let mut w4 = [0f64; 2];
        for k in [1usize, 2, 4, 8] {
            let mut runs: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            for rep in 0..DRAIN_REPEATS {
                // Alternate who goes first.
                let order = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
                for sys in order {
                    expect_done(
                        DRAIN_CAP + Duration::from_secs(60),
                        format!("{} drain w{k} {}", D::NAME, ["tend", "limit"][sys]),
                    );
                    self.clear()?;
                    self.fill(n, 0)?;
                    profile_phase(
                        &format!("{} drain w{k} {}", D::NAME, ["tend", "limit"][sys]),
                        n * DRAIN_REPEATS,
                    );
                    reset_peak_rss();
                    let before = rss_now_mb();
                    let d = if sys == 0 {
                        self.tend_drain(k, n, below)?
                    } else {
                        self.limit_drain(k, n, below)?
                    };
                    rss[sys] = rss[sys].max(peak_rss_mb());
                    if rep == 0 {
                        log(format!(
                            "{}: drain w{k} {}: rss {before:.1} MiB before, peak {:.1} MiB",
                            D::NAME,
                            ["tend", "limit"][sys],
                            peak_rss_mb()
                        ));
                    }
                    profile_phase("-", 0);
                    runs[sys].push(d.rate());
                }
            }
            log(format!(
                "{}: drain w{k} runs (tasks/s): tend {:?}, limit {:?}",
                D::NAME,
                runs[0].iter().map(|r| r.round()).collect::<Vec<_>>(),
                runs[1].iter().map(|r| r.round()).collect::<Vec<_>>()
            ));
            let rates = [percentile(&runs[0], 50.0), percentile(&runs[1], 50.0)];
            let name = format!("drain_w{k}_tasks_per_s");
            self.figure(&name, rates[0], "tasks/s", "tend", n);
            self.figure(&name, rates[1], "tasks/s", "limit", n);
            if k == 4 {
                w4 = rates;
            }
        }
        if self.s.large {
            // The rows due in a day are written once; each system then gets its n due rows.
            let future = BACKLOG_ROWS - n;
            let mut rates = [0f64; 2];
            self.clear()?;
            let t = Instant::now();
            self.fill(0, future)?;
            log(format!(
                "{}: wrote {future} rows due in a day in {:.1} s",
                D::NAME,
                t.elapsed().as_secs_f64()
            ));
            for sys in [0, 1] {
                expect_done(
                    DRAIN_CAP + Duration::from_secs(60),
                    format!("{} backlog drain {}", D::NAME, ["tend", "limit"][sys]),
                );
                self.fill(n, 0)?;
                profile_phase(
                    &format!("{} backlog w4 {}", D::NAME, ["tend", "limit"][sys]),
                    n,
                );
                reset_peak_rss();
                let before = rss_now_mb();
                let d = if sys == 0 {
                    self.tend_drain(4, n, below)?
                } else {
                    self.limit_drain(4, n, below)?
                };
                rss[sys] = rss[sys].max(peak_rss_mb());
                log(format!(
                    "{}: backlog drain {}: rss {before:.1} MiB before, peak {:.1} MiB",
                    D::NAME,
                    ["tend", "limit"][sys],
                    peak_rss_mb()
                ));
                profile_phase("-", 0);
                rates[sys] = d.rate();
                // A capped drain leaves due rows behind: start the next one clean.
                if d.capped {
                    let mut c = self.conn()?;
                    D::delete_due(&mut c, below)?;
                }
            }
            self.figure(
                "drain_backlog_1m_tasks_per_s",
                rates[0],
                "tasks/s",
                "tend",
                n,
            );
            self.figure(
                "drain_backlog_1m_tasks_per_s",
                rates[1],
                "tasks/s",
                "limit",
                n,
            );
            log(format!(
                "{}: backlog / 20k drain (w4): tend {:.2}, limit {:.2}",
                D::NAME,
                rates[0] / w4[0],
                rates[1] / w4[1]
            ));
        }
        self.clear()?;
        self.figure("rss_mb", rss[0], "MiB", "tend", n);
        self.figure("rss_mb", rss[1], "MiB", "limit", n);
        Ok(())
    }

    // ----- dispatch ------------------------------------------------------------------------

    /// Right-now tasks through `Outbox::transaction` (business row + task), one transaction
    /// every `DISPATCH_GAP`; latency = handler start − the instant `transaction` returned.
    fn dispatch(&self) -> Res<()> {
        let d = self.s.probes();
        self.clear()?;
        STARTS.lock().unwrap().clear();
        // The default 1 s poll: what is measured is the hand-off, not the poll.
        let workers = tend::WorkerPool::builder(self.pool.clone(), registry())
            .threads(4)
            .build()?;
        let outbox = workers.outbox();
        let handle = workers.start()?;
        let mut c = self.conn()?;
        profile_phase(&format!("{} dispatch tend", D::NAME), d);
        let mut returned = Vec::with_capacity(d);
        let mut next = Instant::now();
        for seq in 0..d as u64 {
            pace(&mut next, DISPATCH_GAP);
            retry_tx(|| {
                outbox.transaction(&mut *c, |c, tx| -> Res<()> {
                    D::insert_order(c, seq as i64)?;
                    tx.enqueue(c, &Probe { seq })?;
                    Ok(())
                })
            })?;
            returned.push(Instant::now());
        }
        wait_for(|| STARTS.lock().unwrap().len() >= d, "tend dispatch")?;
        handle.shutdown();
        profile_phase("-", 0);
        let tend_lat = latencies_us(&returned);
        drop(c);

        // The limit: the same transaction inserts the task already leased to this process, as
        // tend's outbox does; after the commit the row goes over a channel to a worker thread,
        // which runs it and deletes what it ran in one statement.
        self.clear()?;
        STARTS.lock().unwrap().clear();
        let (tx_rows, rx_rows) = crossbeam_channel::unbounded::<(i64, Vec<u8>)>();
        let mut wc = self.conn()?;
        let mut c = self.conn()?;
        let lease = Lease::new();
        let token = lease.token;
        profile_phase(&format!("{} dispatch limit", D::NAME), d);
        let returned = thread::scope(|s| -> Res<Vec<Instant>> {
            let worker = s.spawn(move || -> QueryResult<()> {
                while let Ok(first) = rx_rows.recv() {
                    let mut rows = vec![first];
                    rows.extend(rx_rows.try_iter().take(BATCH - 1));
                    for (id, p) in &rows {
                        limit_run_probe(*id, p);
                    }
                    let done: Vec<i64> = rows.iter().map(|r| r.0).collect();
                    retry(|| D::delete(&mut wc, token, &done))?;
                }
                Ok(())
            });
            let mut returned = Vec::with_capacity(d);
            let mut next = Instant::now();
            for seq in 0..d as u64 {
                pace(&mut next, DISPATCH_GAP);
                let now = now_ms();
                let row = LimitRow {
                    payload: encode(&Probe { seq }),
                    execute_time: lease.until,
                    now,
                };
                let id = retry_tx(|| {
                    c.transaction(|c| -> Res<i64> {
                        D::insert_order(c, seq as i64)?;
                        Ok(D::insert_leased_id(c, &row, &lease)?)
                    })
                })?;
                let _ = tx_rows.send((id, row.payload));
                returned.push(Instant::now());
            }
            drop(tx_rows);
            worker.join().expect("limit worker panicked")?;
            Ok(returned)
        })?;
        profile_phase("-", 0);
        let limit_lat = latencies_us(&returned);
        self.clear()?;
        for (sys, lat) in [("tend", &tend_lat), ("limit", &limit_lat)] {
            self.figure("dispatch_p50_us", percentile(lat, 50.0), "us", sys, d);
            self.figure("dispatch_p99_us", percentile(lat, 99.0), "us", sys, d);
        }
        Ok(())
    }

    // ----- schedule lateness ---------------------------------------------------------------

    /// Tasks scheduled 1 s ahead (tend takes whole seconds), written one per transaction at an
    /// even pace over about 2 s while the pool runs; lateness = handler start − due time.
    fn lateness(&self) -> Res<()> {
        let l = self.s.probes();
        let gap = Duration::from_micros(2_000_000 / l as u64);
        let delay = 1_000i64;

        // tend: the pool polls every TEND_BENCH_POLL_MS.
        self.clear()?;
        STARTS.lock().unwrap().clear();
        let workers = tend::WorkerPool::builder(self.pool.clone(), registry())
            .threads(4)
            .poll_interval(self.s.poll)
            .build()?;
        let handle = workers.start()?;
        let mut c = self.conn()?;
        profile_phase(&format!("{} lateness tend", D::NAME), l);
        let mut due = HashMap::new();
        let mut next = Instant::now();
        let cap = Instant::now() + LATENESS_CAP;
        for seq in 0..l as u64 {
            if Instant::now() > cap {
                log(format!(
                    "lateness: tend CAPPED after writing {seq} of {l} tasks"
                ));
                break;
            }
            pace(&mut next, gap);
            let t = NewTask::new(&Probe { seq })?
                .execute_way(ExecuteWay::Schedule)
                .delay(Duration::from_millis(delay as u64));
            let id = retry_tx(|| Ok(tend::enqueue_new(&mut c, t.clone())?))?
                .id()
                .ok_or("duplicate probe")?;
            // tend computed the due time itself: read it back (it is a second away).
            due.insert(id, D::due_time(&mut c, id)?);
        }
        let written = due.len();
        wait_for(|| STARTS.lock().unwrap().len() >= written, "tend lateness")?;
        handle.shutdown();
        profile_phase("-", 0);
        let tend_late = lateness_ms(&due);

        // The limit: one poller (tend polls with one fetcher), sleeping the same poll interval
        // after a short claim.
        self.clear()?;
        STARTS.lock().unwrap().clear();
        let stop = AtomicBool::new(false);
        let mut due = HashMap::new();
        profile_phase(&format!("{} lateness limit", D::NAME), l);
        thread::scope(|s| -> Res<()> {
            let mut pc = self.conn()?;
            let (stop, poll) = (&stop, self.s.poll);
            let poller = s.spawn(move || -> QueryResult<()> {
                while !stop.load(Ordering::Relaxed) {
                    let l = Lease::new();
                    let rows = retry(|| D::claim(&mut pc, &l))?;
                    for (id, p) in &rows {
                        limit_run_probe(*id, p);
                    }
                    if !rows.is_empty() {
                        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
                        retry(|| D::delete(&mut pc, l.token, &ids))?;
                    }
                    if rows.len() < BATCH {
                        thread::sleep(poll);
                    }
                }
                Ok(())
            });
            let mut next = Instant::now();
            let cap = Instant::now() + LATENESS_CAP;
            for seq in 0..l as u64 {
                if Instant::now() > cap {
                    log(format!(
                        "lateness: limit CAPPED after writing {seq} of {l} tasks"
                    ));
                    break;
                }
                pace(&mut next, gap);
                let now = now_ms();
                let row = LimitRow {
                    payload: encode(&Probe { seq }),
                    execute_time: now + delay,
                    now,
                };
                let id = retry_tx(|| Ok(D::insert_task_id(&mut c, &row, Probe::SIGNATURE)?))?;
                due.insert(id, row.execute_time);
            }
            let written = due.len();
            let r = wait_for(|| STARTS.lock().unwrap().len() >= written, "limit lateness");
            stop.store(true, Ordering::Relaxed);
            poller.join().expect("poller panicked")?;
            r
        })?;
        profile_phase("-", 0);
        let limit_late = lateness_ms(&due);
        self.clear()?;
        self.figure(
            "schedule_lateness_p99_ms",
            percentile(&tend_late, 99.0),
            "ms",
            "tend",
            tend_late.len(),
        );
        self.figure(
            "schedule_lateness_p99_ms",
            percentile(&limit_late, 99.0),
            "ms",
            "limit",
            limit_late.len(),
        );
        log(format!(
            "{}: lateness p50 tend {:.1} ms, limit {:.1} ms (poll {:?})",
            D::NAME,
            percentile(&tend_late, 50.0),
            percentile(&limit_late, 50.0),
            self.s.poll
        ));
        Ok(())
    }
}

/// Sleeps until `next`, then moves it one `gap` on (never into the past: no catching up).
fn pace(next: &mut Instant, gap: Duration) {
    let now = Instant::now();
    if *next > now {
        thread::sleep(*next - now);
    }
    *next = (*next).max(now) + gap;
}

fn wait_for(mut done: impl FnMut() -> bool, what: &str) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("{what}: timed out after 120 s").into());
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// What a drain did: handler runs (of `n` tasks) in how long, and whether `DRAIN_CAP` cut it.
struct Drained {
    ran: usize,
    took: Duration,
    capped: bool,
}

impl Drained {
    fn new(n: usize, took: Duration, who: &str) -> Drained {
        let ran = RAN.load(Ordering::SeqCst);
        let capped = took >= DRAIN_CAP;
        if capped {
            log(format!(
                "WARNING: {who} drain CAPPED at {DRAIN_CAP:?} after {ran} of {n} tasks; \
                 its rate is of the tasks it ran"
            ));
        } else if ran != n {
            log(format!("WARNING: {who} ran {ran} handlers for {n} tasks"));
        }
        Drained { ran, took, capped }
    }

    fn rate(&self) -> f64 {
        self.ran as f64 / self.took.as_secs_f64()
    }
}

/// Handler start − commit return, per probe, in µs (clamped at 0: a handler may start before
/// the caller's `Instant::now()` after the return).
fn latencies_us(returned: &[Instant]) -> Vec<f64> {
    let starts = STARTS.lock().unwrap();
    let mut negative = 0;
    let lat: Vec<f64> = starts
        .iter()
        .map(
            |s| match s.at.checked_duration_since(returned[s.seq as usize]) {
                Some(d) => d.as_secs_f64() * 1e6,
                None => {
                    negative += 1;
                    0.0
                }
            },
        )
        .collect();
    if negative > 0 {
        log(format!(
            "dispatch: {negative} handler(s) started before the caller saw the return"
        ));
    }
    lat
}

fn lateness_ms(due: &HashMap<i64, i64>) -> Vec<f64> {
    let starts = STARTS.lock().unwrap();
    let mut missing = 0;
    let late: Vec<f64> = starts
        .iter()
        .filter_map(|s| match due.get(&s.id) {
            Some(&d) => Some(s.wall_us as f64 / 1000.0 - d as f64),
            None => {
                missing += 1;
                None
            }
        })
        .collect();
    if missing > 0 {
        log(format!(
            "lateness: {missing} task(s) without a known due time were left out"
        ));
    }
    late
}

// ---------------------------------------------------------------------------------------------
// Backends and main
// ---------------------------------------------------------------------------------------------

/// Creates the backend's tables in a fresh database and runs every figure.
fn run_backend<D: Db>(s: &'static Settings, url: &str) -> Res<()> {
    let pool = D::pool(url, POOL_SIZE)?;
    {
        let mut c = pool.get()?;
        tend::migrate(&mut c)?;
        D::setup(&mut c)?;
    }
    Bench::<D> {
        pool,
        url: url.to_string(),
        s,
    }
    .run()
}

/// The URL with its database name replaced.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// What the run is doing and by when it must be done: past it, the watchdog drops the bench
/// databases and exits, so that a hang (a client library waiting forever) cannot outlive the
/// time budget or leave databases behind.
static DEADLINE: Mutex<Option<(Instant, String)>> = Mutex::new(None);
/// Run by the watchdog before it exits: drop this run's databases, remove its SQLite file.
type Cleanup = Box<dyn Fn() + Send>;
static CLEANUP: Mutex<Vec<(&'static str, Cleanup)>> = Mutex::new(Vec::new());

fn expect_done(within: Duration, what: String) {
    *DEADLINE.lock().unwrap() = Some((Instant::now() + within, what));
}

fn on_abort(backend: &'static str, f: impl Fn() + Send + 'static) {
    CLEANUP.lock().unwrap().push((backend, Box::new(f)));
}

fn cleaned_up(backend: &str) {
    CLEANUP.lock().unwrap().retain(|(b, _)| *b != backend);
}

fn start_watchdog() {
    thread::spawn(|| loop {
        thread::sleep(Duration::from_secs(1));
        let hung = DEADLINE
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|(t, what)| (Instant::now() > *t).then(|| what.clone()));
        if let Some(what) = hung {
            println!("!!!! HUNG: {what} did not finish in time; dropping the bench databases and exiting !!!!");
            for (_, f) in CLEANUP.lock().unwrap().iter() {
                f();
            }
            std::process::exit(3);
        }
    });
}

fn skipped(backend: &str, why: &str) {
    println!("!!!! SKIPPED backend={backend}: {why} !!!!");
}

fn summary() {
    let figs = FIGURES.lock().unwrap().clone();
    let get = |backend: &str, name: &str, system: &str| {
        figs.iter()
            .find(|f| f.backend == backend && f.name == name && f.system == system)
            .map(|f| f.value)
    };
    let mut backends: Vec<&str> = Vec::new();
    for f in &figs {
        if !backends.contains(&f.backend) {
            backends.push(f.backend);
        }
    }
    println!("\n==== summary: tend / limit (same run) ====");
    println!(
        "{:<8} {:<32} {:>8} {:>7} {:>12} {:>12} {:>7}  target",
        "backend", "figure", "unit", "n", "tend", "limit", "ratio"
    );
    for b in &backends {
        let mut names: Vec<&str> = Vec::new();
        for f in figs.iter().filter(|f| f.backend == *b) {
            if !names.contains(&f.name.as_str()) {
                names.push(&f.name);
            }
        }
        for name in names {
            let (Some(t), l) = (get(b, name, "tend"), get(b, name, "limit")) else {
                continue;
            };
            let f = figs
                .iter()
                .find(|f| f.backend == *b && f.name == name)
                .expect("listed");
            let ratio = l.map(|l| t / l);
            let target = match name {
                "drain_w4_tasks_per_s" => ratio.map(|r| verdict(r >= 0.8, "tend >= 0.8 x limit")),
                "enqueue_tx_per_s" => ratio.map(|r| verdict(r >= 0.95, "tend >= 0.95 x limit")),
                "dispatch_p50_us" => Some(verdict(t <= 100.0, "tend <= 100 us")),
                "dispatch_p99_us" => Some(verdict(t <= 1000.0, "tend <= 1 ms")),
                "rss_mb" => Some(verdict(t <= 32.0, "tend <= 32 MiB")),
                "drain_backlog_1m_tasks_per_s" => {
                    get(b, "drain_w4_tasks_per_s", "tend").map(|w4| {
                        verdict(
                            t / w4 >= 0.8,
                            &format!("tend >= 0.8 x its 20k w4 drain ({:.2})", t / w4),
                        )
                    })
                }
                _ => None,
            };
            println!(
                "{:<8} {:<32} {:>8} {:>7} {:>12.1} {:>12} {:>7}  {}",
                b,
                name,
                f.unit,
                f.n,
                t,
                l.map_or("-".into(), |l| format!("{l:.1}")),
                ratio.map_or("-".into(), |r| format!("{r:.2}")),
                target.unwrap_or_default()
            );
        }
    }
}

fn verdict(ok: bool, what: &str) -> String {
    format!("{} {what}", if ok { "met   " } else { "MISSED" })
}

fn main() {
    let s: &'static Settings = Box::leak(Box::new(Settings::from_env()));
    if s.profile {
        *PROFILE.lock().unwrap() = Some(Profile::default());
        diesel::connection::set_default_instrumentation(profile_instrumentation)
            .expect("instrumentation");
        println!(
            "!!!! PROFILE mode: every statement is counted; timings are not representative !!!!"
        );
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    println!(
        "tend throughput bench: n={} large={} poll={:?} tend_batch={} cpus={} cpu=\"{cpu}\" loadavg=\"{}\"",
        s.n,
        s.large,
        s.poll,
        s.tend_batch,
        thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    );
    let started = Instant::now();
    start_watchdog();
    let mut failed = false;
    let mut report = |backend: &str, r: Res<()>| {
        if let Err(e) = r {
            println!("!!!! FAILED backend={backend}: {e} !!!!");
            failed = true;
        }
    };

    #[cfg(feature = "sqlite")]
    if !s.sqlite {
        skipped("sqlite", "TEND_BENCH_SQLITE=0");
    } else {
        let path = std::env::temp_dir().join(format!("tend_bench_{}.db", std::process::id()));
        let remove = {
            let path = path.display().to_string();
            move || {
                for ext in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{ext}"));
                }
            }
        };
        on_abort("sqlite", remove.clone());
        let r = run_backend::<sqlite_db::Sqlite>(s, path.to_str().expect("utf-8 temp path"));
        remove();
        cleaned_up("sqlite");
        report("sqlite", r);
    }
    #[cfg(not(feature = "sqlite"))]
    skipped("sqlite", "built without the `sqlite` feature");

    #[cfg(any(feature = "postgres", feature = "mysql"))]
    let db = format!("tend_bench_{}", std::process::id());
    match std::env::var("TEND_PG_URL") {
        #[cfg(feature = "postgres")]
        Ok(url) => {
            let drop_sql = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
            let r = pg_db::admin(&url, &format!("CREATE DATABASE {db}"))
                .map_err(BoxError::from)
                .and_then(|()| {
                    let (u, d) = (url.clone(), drop_sql.clone());
                    on_abort("pg", move || {
                        let _ = pg_db::admin(&u, &d);
                    });
                    let r = run_backend::<pg_db::Pg>(s, &with_db(&url, &db));
                    if let Err(e) = pg_db::admin(&url, &drop_sql) {
                        log(format!("could not drop the PostgreSQL database {db}: {e}"));
                    }
                    cleaned_up("pg");
                    r
                });
            report("pg", r);
        }
        #[cfg(not(feature = "postgres"))]
        Ok(_) => skipped(
            "pg",
            "TEND_PG_URL is set but the bench was built without `--features postgres`",
        ),
        Err(_) => skipped("pg", "TEND_PG_URL is not set"),
    }
    match std::env::var("TEND_MYSQL_URL") {
        #[cfg(feature = "mysql")]
        Ok(url) => {
            let drop_sql = format!("DROP DATABASE IF EXISTS {db}");
            let r = mysql_db::admin(&url, &format!("CREATE DATABASE {db}"))
                .map_err(BoxError::from)
                .and_then(|()| {
                    let (u, d) = (url.clone(), drop_sql.clone());
                    on_abort("mysql", move || {
                        let _ = mysql_db::admin(&u, &d);
                    });
                    let r = run_backend::<mysql_db::My>(s, &with_db(&url, &db));
                    if let Err(e) = mysql_db::admin(&url, &drop_sql) {
                        log(format!("could not drop the MySQL database {db}: {e}"));
                    }
                    cleaned_up("mysql");
                    r
                });
            report("mysql", r);
        }
        #[cfg(not(feature = "mysql"))]
        Ok(_) => skipped(
            "mysql",
            "TEND_MYSQL_URL is set but the bench was built without `--features mysql`",
        ),
        Err(_) => skipped("mysql", "TEND_MYSQL_URL is not set"),
    }

    summary();
    print_profile();
    println!(
        "\ntotal {:.1} s, loadavg at the end \"{}\"",
        started.elapsed().as_secs_f64(),
        load()
    );
    if failed {
        std::process::exit(1);
    }
}
