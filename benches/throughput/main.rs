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
//! * `TEND_BENCH_ONLY=enqueue,drains,dispatch,lateness,wake,multiproc,peers`: only these phases
//!   (for iterating);
//! * `TEND_BENCH_GRAPHILE=<dir>`: also graphile-worker's drain on PostgreSQL (`peers.rs`), from
//!   the `node_modules` of `<dir>` (`TEND_BENCH_GRAPHILE_CONCURRENCY`, default 8);
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

#[macro_use]
mod limit;
mod bench;
mod db;
mod drain;
mod figures;
mod latency;
mod multiproc;
mod peers;
mod profile;
mod wake;
mod work;

use bench::*;
use db::*;
use figures::*;
use limit::*;
use multiproc::{proc_ticks, LockWaits, ServerCpu};
use profile::*;
use work::*;

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
// Backends and main
// ---------------------------------------------------------------------------------------------

/// Creates the backend's tables in a fresh database and runs every figure; `seed_url` is a
/// second fresh database for the limit on the seed's schema (`SEED_TABLE`).
fn run_backend<D: Db>(s: &'static Settings, url: &str, seed_url: &str) -> Res<()> {
    let pool = D::pool(url, POOL_SIZE)?;
    {
        let mut c = pool.get()?;
        tend::migrate(&mut c)?;
        D::setup(&mut c)?;
    }
    let seed_pool = D::pool(seed_url, 2)?;
    {
        let mut c = seed_pool.get()?;
        D::setup_seed(&mut c)?;
        D::setup(&mut c)?;
    }
    Bench::<D> {
        pool,
        url: url.to_string(),
        s,
        seed: Some(Box::new(Bench {
            pool: seed_pool,
            url: seed_url.to_string(),
            s,
            seed: None,
        })),
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
    println!("\n==== summary: tend / limit, tend / seed-schema limit (same run) ====");
    println!(
        "{:<8} {:<32} {:>8} {:>7} {:>12} {:>12} {:>7} {:>12} {:>7}  target",
        "backend", "figure", "unit", "n", "tend", "limit", "ratio", "seed", "t/seed"
    );
    for b in &backends {
        let mut names: Vec<&str> = Vec::new();
        for f in figs.iter().filter(|f| f.backend == *b) {
            if !names.contains(&f.name.as_str()) {
                names.push(&f.name);
            }
        }
        for name in names {
            let (tend, l, seed) = (
                get(b, name, "tend"),
                get(b, name, "limit"),
                get(b, name, "seed"),
            );
            // Figures of the limits alone (their statements' work) show a NaN for tend.
            let t = tend.unwrap_or(f64::NAN);
            let ratio = l.filter(|_| tend.is_some()).map(|l| t / l);
            let seed_ratio = seed.filter(|_| tend.is_some()).map(|s| t / s);
            let f = figs
                .iter()
                .find(|f| f.backend == *b && f.name == name)
                .expect("listed");
            let target = match name {
                "drain_w4_tasks_per_s" => match seed_ratio {
                    Some(r) => Some(verdict(r >= 0.8, "tend >= 0.8 x seed-schema limit")),
                    None => ratio.map(|r| verdict(r >= 0.8, "tend >= 0.8 x limit")),
                },
                "enqueue_batch_tasks_per_s" => {
                    ratio.map(|r| verdict(r >= 0.8, "tend >= 0.8 x limit"))
                }
                "enqueue_tx_per_s" => ratio.map(|r| verdict(r >= 0.95, "tend >= 0.95 x limit")),
                "dispatch_p50_us" => Some(verdict(t <= 100.0, "tend <= 100 us")),
                "dispatch_p99_us" => Some(verdict(t <= 1000.0, "tend <= 1 ms")),
                "wake_cross_process_p99_ms" => Some(verdict(t <= 50.0, "tend <= 50 ms")),
                "enqueue_wake_on_over_off" => Some(verdict(t >= 0.95, "on >= 0.95 x off")),
                "rss_mb" => Some(verdict(t <= 32.0, "tend <= 32 MiB")),
                // The peer figure: tend's w4 drain against graphile-worker's, interleaved.
                // The 20x is of graphile-worker's defaults; its batching preset is
                // shown beside it (no target: the fair comparison with tend's batched claims).
                "peer_drain_tasks_per_s" => get(b, name, "graphile").map(|g| {
                    let batched = get(b, name, "graphile_batched").map_or("-".into(), |gb| {
                        format!("{:.1} x its batching preset's {gb:.0}", t / gb)
                    });
                    verdict(
                        t / g >= 20.0,
                        &format!(
                            "tend w4 >= 20 x graphile-worker defaults ({:.1} x {g:.0} jobs/s; \
                             {batched})",
                            t / g
                        ),
                    )
                }),
                // 4 processes of one thread against the limit's 4 threads. The issue's
                // reference is the seed-schema limit's w4 drain (as for the drain target); the
                // limit on tend's own table (its w4 drain of the drains phase, or, that phase
                // not run, the one interleaved in this phase) is shown beside it.
                "drain_p4_tasks_per_s" => {
                    let own = get(b, "drain_w4_tasks_per_s", "limit")
                        .map(|l| (t / l, "drains phase"))
                        .or(ratio.map(|r| (r, "interleaved")));
                    let own = own.map_or("-".into(), |(r, from)| format!("{r:.2}, {from}"));
                    match get(b, "drain_w4_tasks_per_s", "seed") {
                        Some(seed) => Some(verdict(
                            t / seed >= 0.8,
                            &format!(
                                "tend p4 >= 0.8 x seed-schema limit drain_w4 ({:.2}; of the \
                                 limit's drain_w4 on tend's table: {own})",
                                t / seed
                            ),
                        )),
                        None => Some(format!(
                            "- (no seed-schema drain_w4 in this run; of the limit's drain_w4 \
                             on tend's table: {own})"
                        )),
                    }
                }
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
                "{:<8} {:<32} {:>8} {:>7} {:>12.1} {:>12} {:>7} {:>12} {:>7}  {}",
                b,
                name,
                f.unit,
                f.n,
                t,
                l.map_or("-".into(), |l| format!("{l:.1}")),
                ratio.map_or("-".into(), |r| format!("{r:.2}")),
                seed.map_or("-".into(), |s| format!("{s:.1}")),
                seed_ratio.map_or("-".into(), |r| format!("{r:.2}")),
                target.unwrap_or_default()
            );
        }
    }
}

fn verdict(ok: bool, what: &str) -> String {
    format!("{} {what}", if ok { "met   " } else { "MISSED" })
}

fn main() {
    // Process B of the wake-up figures: this binary, started by itself.
    if wake::child_main() {
        return;
    }
    // A worker process of the multi-process drain (`multiproc.rs`).
    if multiproc::child_main() {
        return;
    }
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
        let seed_path =
            std::env::temp_dir().join(format!("tend_bench_{}_seed.db", std::process::id()));
        let remove = {
            let seed = seed_path.display().to_string();
            move || {
                remove();
                for ext in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{seed}{ext}"));
                }
            }
        };
        on_abort("sqlite", remove.clone());
        let r = run_backend::<sqlite_db::Sqlite>(
            s,
            path.to_str().expect("utf-8 temp path"),
            seed_path.to_str().expect("utf-8 temp path"),
        );
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
        Ok(url) => report(
            "pg",
            on_server(
                &Server {
                    backend: "pg",
                    label: "PostgreSQL",
                    url,
                    db: db.clone(),
                    force: " WITH (FORCE)",
                    admin: pg_db::admin,
                    run: |s, url, seed| run_backend::<pg_db::Pg>(s, url, seed),
                },
                s,
            ),
        ),
        #[cfg(not(feature = "postgres"))]
        Ok(_) => skipped(
            "pg",
            "TEND_PG_URL is set but the bench was built without `--features postgres`",
        ),
        Err(_) => skipped("pg", "TEND_PG_URL is not set"),
    }
    match std::env::var("TEND_MYSQL_URL") {
        #[cfg(feature = "mysql")]
        Ok(url) => report(
            "mysql",
            on_server(
                &Server {
                    backend: "mysql",
                    label: "MySQL",
                    url,
                    db: db.clone(),
                    force: "",
                    admin: mysql_db::admin,
                    run: |s, url, seed| run_backend::<mysql_db::My>(s, url, seed),
                },
                s,
            ),
        ),
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
