//! Real worker processes: the test binary re-executes itself running only one of its
//! `#[ignore]`d tests ([`self_as`]), so the children are real processes with their own
//! connections, killed for real with SIGKILL, and never left behind by a failing test.
//!
//! [`ChildWorker`] is the reliability suites' worker: their `child_worker` test, configured by
//! `TEND_CHILD_*` variables. The child starts a tend pool
//! draining `Work` tasks, says `TEND_CHILD_READY` on stdout, and runs until its stdin closes
//! (a graceful shutdown, after which it prints `TEND_CHILD_STATS ...`) or it is SIGKILLed.
//!
//! Each suite declares the entry point:
//!
//! ```ignore
//! #[test]
//! #[ignore = "a worker process started by the other tests"]
//! fn child_worker() { support::child::main() }
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};

use super::runlog::RunLog;
use super::{now_us, Backend, TestConn, Work};

/// How a child's pool is set up.
#[derive(Debug, Clone)]
pub struct ChildCfg {
    pub backend: Backend,
    /// One per shard; a shard's URLs separated by spaces go through a `tend::Failover`.
    pub urls: Vec<String>,
    pub threads: usize,
    pub batch: usize,
    pub lease: Duration,
    pub poll: Duration,
    pub affinity: bool,
    /// r2d2's checkout timeout (its reconnect backoff is capped at half of it).
    pub conn_timeout: Duration,
    /// SQLite busy timeout.
    pub busy: Duration,
    /// Cross-process wake-up: `off`, `listen`, `auto` or `probe:<ms>`.
    pub wake: String,
}

impl ChildCfg {
    pub fn new(backend: Backend, urls: Vec<String>) -> ChildCfg {
        ChildCfg {
            backend,
            urls,
            threads: 4,
            batch: 50,
            lease: Duration::from_secs(3),
            poll: Duration::from_millis(200),
            affinity: false,
            conn_timeout: Duration::from_secs(30),
            busy: Duration::from_secs(5),
            wake: "off".to_string(),
        }
    }
}

/// A running child worker.
pub struct ChildWorker {
    pub pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// When it was started (µs since the epoch).
    pub started_us: i64,
}

impl std::fmt::Debug for ChildWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChildWorker({})", self.pid)
    }
}

impl ChildWorker {
    /// Starts a child writing to `log` and waits until its pool runs.
    pub fn spawn(cfg: &ChildCfg, log: &RunLog) -> ChildWorker {
        let mut cmd = self_as("child_worker");
        cmd.arg("--test-threads=1")
            .env("TEND_CHILD", "1")
            .env("TEND_CHILD_BACKEND", cfg.backend.name())
            .env("TEND_CHILD_URLS", cfg.urls.join("|"))
            .env("TEND_CHILD_LOG_ID", log.id.to_string())
            .env("TEND_CHILD_LOG_PATH", &log.path)
            .env("TEND_CHILD_THREADS", cfg.threads.to_string())
            .env("TEND_CHILD_BATCH", cfg.batch.to_string())
            .env("TEND_CHILD_LEASE_MS", cfg.lease.as_millis().to_string())
            .env("TEND_CHILD_POLL_MS", cfg.poll.as_millis().to_string())
            .env("TEND_CHILD_AFFINITY", if cfg.affinity { "1" } else { "0" })
            .env(
                "TEND_CHILD_CONN_TIMEOUT_MS",
                cfg.conn_timeout.as_millis().to_string(),
            )
            .env("TEND_CHILD_BUSY_MS", cfg.busy.as_millis().to_string())
            .env("TEND_CHILD_WAKE", &cfg.wake)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let started_us = now_us();
        let mut child = cmd.spawn().expect("spawning a child worker");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = unbounded();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = ChildWorker {
            pid: child.id(),
            stdin: child.stdin.take(),
            child,
            lines: rx,
            started_us,
        };
        w.expect_line("TEND_CHILD_READY", Duration::from_secs(60));
        w
    }

    /// Waits for a stdout line containing `prefix`; returns it from `prefix` on.
    fn expect_line(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // libtest may have written `test child_worker ... ` on the same line.
                Ok(l) if l.contains(prefix) => return l[l.find(prefix).unwrap()..].to_string(),
                Ok(_) => {}
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "child {} did not print {prefix} within {limit:?} (exit status: {status:?})",
                        self.pid
                    );
                }
            }
        }
    }

    /// SIGKILLs the child and reaps it; returns the time (µs) by which it was surely dead.
    pub fn kill(mut self) -> i64 {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping the child");
        now_us()
    }

    /// Closes the child's stdin (a graceful shutdown) and waits for it to exit; returns its
    /// `TEND_CHILD_STATS` line.
    pub fn stop(mut self) -> String {
        drop(self.stdin.take());
        let stats = self.expect_line("TEND_CHILD_STATS", Duration::from_secs(60));
        let status = self.child.wait().expect("waiting for the child");
        assert!(status.success(), "child {} exited with {status}", self.pid);
        stats
    }

    /// [`stop`](Self::stop), but a child whose shutdown does not finish within `limit` is
    /// SIGKILLed instead: `None` then.
    pub fn stop_within(mut self, limit: Duration) -> Option<String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains("TEND_CHILD_STATS") => {
                    // Its exit, after the stats line, within the same limit.
                    let status = loop {
                        if let Some(s) = self.child.try_wait().expect("waiting for the child") {
                            break s;
                        }
                        if Instant::now() >= deadline {
                            self.kill();
                            return None;
                        }
                        thread::sleep(Duration::from_millis(10));
                    };
                    assert!(status.success(), "child {} exited with {status}", self.pid);
                    return Some(l[l.find("TEND_CHILD_STATS").unwrap()..].to_string());
                }
                Ok(_) => {}
                Err(_) => {
                    self.kill();
                    return None;
                }
            }
        }
    }

    /// CPU time (user + system) the child used so far, in clock ticks (1/100 s).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// The names of the child's tend threads, sorted.
    pub fn tend_threads(&self) -> Vec<String> {
        let mut names = Vec::new();
        for t in std::fs::read_dir(format!("/proc/{}/task", self.pid)).unwrap() {
            let p = t.unwrap().path().join("comm");
            if let Ok(n) = std::fs::read_to_string(p) {
                let n = n.trim().to_string();
                if n.starts_with("tend-") {
                    names.push(n);
                }
            }
        }
        names.sort();
        names
    }
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

/// The test binary, to be run as exactly its `#[ignore]`d test `test`: how every child process
/// of the suites starts.
pub fn self_as(test: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args([test, "--exact", "--ignored", "--nocapture"]);
    cmd
}

/// Kills and reaps a child that still runs.
fn reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// How long a child may take to exit.
const PATIENCE: Duration = Duration::from_secs(60);

/// A child process whose stdout and stderr go to a log file (shown when the test fails);
/// killed (if still running) when dropped, so a failing test leaves none behind. The crash
/// suite's children (`tests/crash.rs`, roles `hang`, `late`, `drain`) run as these.
pub struct ChildProc {
    child: Child,
    log: PathBuf,
}

impl ChildProc {
    /// Starts `cmd` (see [`self_as`]) with its output in the temp file `<name>.log`.
    pub fn spawn(mut cmd: Command, name: &str) -> ChildProc {
        let log = std::env::temp_dir().join(format!("{name}.log"));
        let out = File::create(&log).expect("child log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .expect("spawning the child worker");
        ChildProc { child, log }
    }

    pub fn pid(&self) -> i64 {
        self.child.id().into()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test, with the child's output, if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the child exited early ({status}):\n{}", self.output());
        }
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the child did not exit:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let status = self.child.wait().expect("reaping the child");
        assert!(!status.success(), "{status}");
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        reap(&mut self.child);
        if thread::panicking() {
            eprintln!("child output:\n{}", self.output());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A stats line's `name=value` field.
pub fn stat(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
}

// ------------------------------------------------------------------------- the child side

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn env_ms(name: &str) -> Duration {
    Duration::from_millis(env(name).parse().unwrap())
}

/// The child's entry point: does nothing unless started by [`ChildWorker::spawn`].
pub fn main() {
    if std::env::var("TEND_CHILD").as_deref() != Ok("1") {
        return;
    }
    match Backend::parse(&env("TEND_CHILD_BACKEND")) {
        #[cfg(feature = "postgres")]
        Backend::Postgres => run::<diesel::PgConnection>(),
        #[cfg(feature = "mysql")]
        Backend::Mysql => run::<diesel::MysqlConnection>(),
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => run::<diesel::SqliteConnection>(),
        #[allow(unreachable_patterns)]
        b => panic!("this build lacks the feature for {b:?}"),
    }
}

/// Counts tend's warnings and errors by kind and writes each to the run log, so the parent
/// can tell how often the pool retried during an outage.
struct CountingLogger {
    log: Arc<RunLog>,
    counts: [AtomicU64; 6],
}

const KINDS: [&str; 6] = ["claim", "write", "renew", "gaveup", "r2d2", "other"];

impl log::Log for CountingLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let msg = r.args().to_string();
        let kind = if r.target().starts_with("r2d2") {
            4
        } else if !r.target().starts_with("tend") {
            return;
        } else if msg.contains("claiming tasks") {
            0
        } else if msg.contains("writing task outcomes failed") {
            1
        } else if msg.contains("renewing") {
            2
        } else if msg.contains("could not write the outcome") {
            3
        } else {
            5
        };
        self.counts[kind].fetch_add(1, Ordering::Relaxed);
        self.log.logged(KINDS[kind]);
    }
    fn flush(&self) {}
}

/// A [`ChildCfg::wake`] setting.
pub fn wake_up(s: &str) -> tend::WakeUp {
    match s {
        "off" => tend::WakeUp::Off,
        "listen" => tend::WakeUp::Listen,
        "auto" => tend::WakeUp::Auto,
        probe => tend::WakeUp::Probe(Duration::from_millis(
            probe
                .strip_prefix("probe:")
                .and_then(|ms| ms.parse().ok())
                .unwrap_or_else(|| {
                    panic!("TEND_CHILD_WAKE={probe}: off, listen, auto or probe:<ms>")
                }),
        )),
    }
}

fn run<C: TestConn>() {
    let log = RunLog::open(
        env("TEND_CHILD_LOG_ID").parse().unwrap(),
        std::path::Path::new(&env("TEND_CHILD_LOG_PATH")),
    );
    let logger: &'static CountingLogger = Box::leak(Box::new(CountingLogger {
        log: log.clone(),
        counts: Default::default(),
    }));
    log::set_logger(logger).expect("one logger");
    log::set_max_level(log::LevelFilter::Warn);

    let threads: usize = env("TEND_CHILD_THREADS").parse().unwrap();
    // A shard given as several space-separated URLs goes through a `tend::Failover`.
    let mut failovers = Vec::new();
    let pools: Vec<diesel::r2d2::Pool<diesel::r2d2::ConnectionManager<C>>> = env("TEND_CHILD_URLS")
        .split('|')
        .map(|urls| {
            let list: Vec<&str> = urls.split(' ').collect();
            let url = if list.len() > 1 {
                failovers.push(tend::Failover::start(&list).expect("a failover"));
                failovers.last().unwrap().url().to_string()
            } else {
                urls.to_string()
            };
            super::pool_with::<C>(
                &url,
                4,
                env_ms("TEND_CHILD_CONN_TIMEOUT_MS"),
                env_ms("TEND_CHILD_BUSY_MS"),
            )
        })
        .collect();
    let counter = super::Counter::new::<C>(pools[0].clone());
    let shards = tend::Shards::new(pools).unwrap();
    let mut registry = tend::Registry::new();
    registry.register::<Work>().unwrap();
    registry.state(counter).unwrap();
    registry.register::<super::Increment>().unwrap();
    let claims = log.clone();
    let handle = tend::WorkerPool::sharded(shards, registry)
        .threads(threads)
        .batch_size(env("TEND_CHILD_BATCH").parse().unwrap())
        .lease(env_ms("TEND_CHILD_LEASE_MS"))
        .poll_interval(env_ms("TEND_CHILD_POLL_MS"))
        .shard_affinity(env("TEND_CHILD_AFFINITY") == "1")
        .wake_up(wake_up(&env("TEND_CHILD_WAKE")))
        .shutdown_timeout(Duration::from_secs(20))
        .events(move |e: &tend::Event<'_>| {
            if let tend::Event::Claimed(t) = e {
                claims.claimed(t.shard_key);
            }
        })
        .build()
        .unwrap()
        .start()
        .unwrap();
    println!("TEND_CHILD_READY {}", std::process::id());
    // Runs until the parent closes stdin (or kills this process).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let report = handle.shutdown();
    drop(failovers);
    let c = |i: usize| logger.counts[i].load(Ordering::Relaxed);
    println!(
        "TEND_CHILD_STATS released={} abandoned={} claim={} write={} renew={} gaveup={} r2d2={} other={}",
        report.released,
        report.abandoned,
        c(0),
        c(1),
        c(2),
        c(3),
        c(4),
        c(5)
    );
}
