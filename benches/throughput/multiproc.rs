//! The multi-process drain (issue 16): `P4_PROCS` child processes of this bench, each a tend
//! pool of one worker thread (batch and poll as in the drains), drain the same due rows of one
//! database together; against the limit's w4 drain, run interleaved with it in this phase and
//! measured in the drains phase of the same run.
//!
//! A child is this binary started again with `TEND_BENCH_P4_CHILD` set to the backend's name.
//! It builds its pool, says `READY`, starts the pool when the parent writes `GO` on its stdin
//! (the parent starts the clock there), prints `RAN <k>` whenever its handler count moved
//! (checked every 5 ms) and, at EOF on its stdin (the parent is done, or dead), shuts the pool
//! down, prints `DONE <k>` and exits; 10 s after the EOF it exits whatever its pool does.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::*;

/// Child processes of the multi-process drain, one worker thread each.
pub(crate) const P4_PROCS: usize = 4;
/// How often a child looks whether its handler count moved: at 1 ms, the four reporters cost
/// as much CPU as a child's fetcher on this 2-core machine (measured: 70-160 ms per drain each).
const REPORT_EVERY: Duration = Duration::from_millis(5);
/// The longest a child may take from its stdin's EOF to its exit.
const CHILD_EXIT_CAP: Duration = Duration::from_secs(10);

/// The child: returns whether this process is one (it has then done its work).
pub(crate) fn child_main() -> bool {
    let Ok(backend) = std::env::var("TEND_BENCH_P4_CHILD") else {
        return false;
    };
    let url = std::env::var("TEND_BENCH_P4_URL").expect("TEND_BENCH_P4_URL");
    let s = Settings::from_env();
    if s.profile {
        *PROFILE.lock().unwrap() = Some(Profile::default());
        diesel::connection::set_default_instrumentation(profile_instrumentation)
            .expect("instrumentation");
    }
    let r = match backend.as_str() {
        #[cfg(feature = "sqlite")]
        "sqlite" => child::<sqlite_db::Sqlite>(&url, &s),
        #[cfg(feature = "postgres")]
        "pg" => child::<pg_db::Pg>(&url, &s),
        #[cfg(feature = "mysql")]
        "mysql" => child::<mysql_db::My>(&url, &s),
        other => Err(format!("no backend {other} in this build").into()),
    };
    if let Err(e) = r {
        eprintln!("[bench p4 child {}] {e}", std::process::id());
        std::process::exit(1);
    }
    true
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn child<D: Db>(url: &str, s: &Settings) -> Res<()> {
    RAN.store(0, Ordering::SeqCst);
    // As `tend_drain`: a pool of 6; with one thread the shard has one claimer and a completer.
    let workers = tend::WorkerPool::builder(D::pool(url, 6)?, registry())
        .threads(1)
        .batch_size(s.tend_batch)
        .poll_interval(s.poll)
        .build()?;
    say("READY");
    let mut stdin = std::io::stdin().lock();
    let mut go = String::new();
    if stdin.read_line(&mut go)? == 0 || go.trim() != "GO" {
        return Ok(()); // the parent is gone
    }
    profile_phase(&format!("{} p4 child {}", D::NAME, std::process::id()), 0);
    let handle = workers.start()?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let reporter = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let ran = RAN.load(Ordering::Relaxed);
                if ran != last {
                    say(&format!("RAN {ran}"));
                    last = ran;
                }
                thread::sleep(REPORT_EVERY);
            }
        })
    };
    let _ = stdin.read_to_end(&mut Vec::new());
    thread::spawn(|| {
        thread::sleep(CHILD_EXIT_CAP);
        eprintln!("[bench p4 child] pool did not shut down within {CHILD_EXIT_CAP:?}; exiting");
        std::process::exit(2);
    });
    stop.store(true, Ordering::Relaxed);
    let _ = reporter.join();
    handle.shutdown();
    let ran = RAN.load(Ordering::SeqCst);
    if let Some(p) = PROFILE.lock().unwrap().as_mut() {
        let phase = p.phase.clone();
        p.tasks.insert(phase, ran);
    }
    profile_phase("-", 0);
    print_profile();
    say(&format!("DONE {ran}"));
    Ok(())
}

/// InnoDB's row-lock counters (server-wide): lock waits, the time waited (ms), deadlocks.
#[derive(QueryableByName, Clone, Copy)]
pub(crate) struct LockWaits {
    #[diesel(sql_type = diesel::sql_types::Double)]
    waits: f64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    wait_ms: f64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    deadlocks: f64,
}

impl LockWaits {
    fn since(self, before: Option<LockWaits>) -> String {
        before.map_or(String::new(), |b| {
            format!(
                "; row-lock waits {:.0} ({:.0} ms waited), deadlocks {:.0}",
                self.waits - b.waits,
                self.wait_ms - b.wait_ms,
                self.deadlocks - b.deadlocks
            )
        })
    }
}

/// CPU ticks per thread name of process `pid` (`/proc/<pid>/task/*`), largest first.
fn thread_ticks(pid: u32) -> Vec<(String, u64)> {
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.filter_map(Result::ok) {
            let tid = t.file_name().to_string_lossy().to_string();
            let comm =
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
            *by.entry(comm.trim().to_string()).or_default() +=
                proc_ticks(&format!("{pid}/task/{tid}"));
        }
    }
    let mut v: Vec<_> = by.into_iter().filter(|(_, t)| *t > 0).collect();
    v.sort_by_key(|t| std::cmp::Reverse(t.1));
    v
}

/// The children, seen from the parent; dropping them kills those still running.
struct Children {
    kids: Vec<Child>,
    /// (child, line) of every child's stdout.
    lines: Receiver<(usize, String)>,
}

impl Children {
    fn spawn<D: Db>(url: &str) -> Res<Children> {
        let (tx, lines) = crossbeam_channel::unbounded();
        let mut kids = Children {
            kids: Vec::with_capacity(P4_PROCS),
            lines,
        };
        for k in 0..P4_PROCS {
            let mut child = Command::new(std::env::current_exe()?)
                .env("TEND_BENCH_P4_CHILD", D::NAME)
                .env("TEND_BENCH_P4_URL", url)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let out = child.stdout.take().ok_or("child stdout")?;
            kids.kids.push(child);
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send((k, line)).is_err() {
                        break;
                    }
                }
            });
        }
        let mut ready = 0;
        while ready < P4_PROCS {
            match kids.lines.recv_timeout(Duration::from_secs(60)) {
                Ok((_, l)) if l == "READY" => ready += 1,
                Ok((k, l)) => return Err(format!("p4 child {k} said {l:?}").into()),
                Err(_) => kids.check("before READY")?,
            }
        }
        Ok(kids)
    }

    /// An error if a child has exited.
    fn check(&mut self, when: &str) -> Res<()> {
        for (k, c) in self.kids.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()? {
                return Err(format!("p4 child {k} exited with {status} {when}").into());
            }
        }
        Ok(())
    }

    fn go(&mut self) -> Res<()> {
        for c in &mut self.kids {
            let stdin = c.stdin.as_mut().ok_or("child stdin")?;
            stdin.write_all(b"GO\n")?;
            stdin.flush()?;
        }
        Ok(())
    }

    /// EOF to every child, then their `DONE` counts and other output (the profile, if any).
    fn stop(mut self) -> Res<(Vec<usize>, Vec<Vec<String>>)> {
        for c in &mut self.kids {
            drop(c.stdin.take());
        }
        let mut done = vec![None; P4_PROCS];
        let mut other = vec![Vec::new(); P4_PROCS];
        let deadline = Instant::now() + CHILD_EXIT_CAP + Duration::from_secs(5);
        while done.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((k, l)) => {
                    if let Some(v) = l.strip_prefix("DONE ") {
                        done[k] = Some(v.parse::<usize>()?);
                    } else if !l.starts_with("RAN ") {
                        other[k].push(l);
                    }
                }
                Err(_) => return Err("p4 children did not all say DONE".into()),
            }
        }
        for (k, c) in self.kids.iter_mut().enumerate() {
            let status = c.wait()?;
            if !status.success() {
                return Err(format!("p4 child {k} exited with {status}").into());
            }
        }
        Ok((
            done.into_iter().map(Option::unwrap_or_default).collect(),
            other,
        ))
    }

    fn cpu_ticks(&self) -> u64 {
        self.kids
            .iter()
            .map(|c| proc_ticks(&c.id().to_string()))
            .sum()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.kids {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// CPU time (user + system) of `/proc/<pid>` so far, in clock ticks (1/100 s).
pub(crate) fn proc_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(i) = stat.rfind(')') else { return 0 };
    let f: Vec<&str> = stat[i + 2..].split(' ').collect();
    let tick = |k: usize| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    tick(11) + tick(12)
}

/// The database server's CPU over a drain, in ticks: its processes (`postgres`, `mariadbd`,
/// `mysqld`) on this machine, sampled every 20 ms, so that a PostgreSQL backend that exits
/// during the drain (the limit closes its connections at its end) counts up to its last sample.
/// Other clients' queries on the same server count too.
pub(crate) struct ServerCpu {
    stop: std::sync::Arc<AtomicBool>,
    sampler: thread::JoinHandle<u64>,
}

impl ServerCpu {
    pub(crate) fn start() -> ServerCpu {
        let mut known: HashMap<String, bool> = HashMap::new();
        let base = server_procs(&mut known);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut last = base.clone();
                loop {
                    last.extend(server_procs(&mut known));
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                last.iter()
                    .map(|(p, t)| t.saturating_sub(base.get(p).copied().unwrap_or(0)))
                    .sum()
            })
        };
        ServerCpu { stop, sampler }
    }

    pub(crate) fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().unwrap_or(0)
    }
}

/// pid -> CPU ticks of the server's processes; `known` remembers which pids are the server's.
fn server_procs(known: &mut HashMap<String, bool>) -> HashMap<String, u64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .filter(|p| {
            *known.entry(p.clone()).or_insert_with(|| {
                let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                matches!(comm.trim(), "postgres" | "mariadbd" | "mysqld")
            })
        })
        .map(|p| {
            let t = proc_ticks(&p);
            (p, t)
        })
        .collect()
}

/// The machine's busy ticks (all CPUs: everything but idle and iowait) from `/proc/stat`.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    v.iter().sum::<u64>() - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0)
}

/// Where the CPU went during one drain, in seconds: the drain's clients (the children, or the
/// bench process for the limit), the database server, and everything else on the machine.
struct Cpu {
    clients: u64,
    server: ServerCpu,
    machine: u64,
}

impl Cpu {
    fn start(clients: u64) -> Cpu {
        Cpu {
            clients,
            server: ServerCpu::start(),
            machine: machine_busy_ticks(),
        }
    }

    /// The drain is over: `clients` are the clients' ticks now.
    fn show(self, clients: u64, wall: Duration) -> String {
        let machine = machine_busy_ticks();
        let s = |a: u64, b: u64| b.saturating_sub(a) as f64 / 100.0;
        let (c, sv, m) = (
            s(self.clients, clients),
            self.server.stop() as f64 / 100.0,
            s(self.machine, machine),
        );
        format!(
            "CPU s: clients {c:.2}, server {sv:.2}, rest of the machine (the bench parent, \
             other users) {:.2}, of {:.2} ({} cores x {:.2} s wall)",
            (m - c - sv).max(0.0),
            wall.as_secs_f64() * thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            thread::available_parallelism().map_or(1, |n| n.get()),
            wall.as_secs_f64()
        )
    }
}

impl<D: Db> Bench<D> {
    /// `P4_PROCS` children, one worker thread each, on `n` due tasks: the clock runs from `GO`
    /// until their handlers ran `n` tasks and a `COUNT` says no row below `below` is left.
    fn p4_drain(&self, n: usize, below: i64, rep: usize) -> Res<Drained> {
        let mut kids = Children::spawn::<D>(&self.url)?;
        let mut c = self.conn()?;
        let locks = D::lock_waits(&mut c)?;
        let cpu = Cpu::start(kids.cpu_ticks());
        let start = Instant::now();
        let deadline = start + DRAIN_CAP;
        kids.go()?;
        let mut ran = [0usize; P4_PROCS];
        while ran.iter().sum::<usize>() < n && Instant::now() < deadline {
            match kids.lines.recv_timeout(Duration::from_millis(50)) {
                Ok((k, l)) => {
                    if let Some(v) = l.strip_prefix("RAN ") {
                        ran[k] = v.parse()?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => kids.check("during the drain")?,
                Err(RecvTimeoutError::Disconnected) => return Err("p4 children gone".into()),
            }
        }
        while Instant::now() < deadline && D::count_below(&mut c, below)? > 0 {
            thread::sleep(Duration::from_millis(1));
        }
        let took = start.elapsed();
        let cpu = cpu.show(kids.cpu_ticks(), took);
        let locks = D::lock_waits(&mut c)?.map_or(String::new(), |l| l.since(locks));
        let threads = thread_ticks(kids.kids[0].id());
        let (done, other) = kids.stop()?;
        let total: usize = done.iter().sum();
        let d = Drained {
            ran: total,
            took,
            capped: took >= DRAIN_CAP,
        };
        if d.capped {
            log(format!(
                "WARNING: p4 drain CAPPED at {DRAIN_CAP:?} after {total} of {n} tasks"
            ));
        } else if total != n {
            log(format!(
                "WARNING: p4 children ran {total} handlers for {n} tasks"
            ));
        }
        log(format!(
            "{}: p4 run {rep}: {:.0} tasks/s in {:.3} s, per child {done:?}; {cpu}{locks}; \
             child 0's threads (CPU ticks of 10 ms since its start): {threads:?}",
            D::NAME,
            d.rate(),
            took.as_secs_f64(),
        ));
        for (k, lines) in other.iter().enumerate() {
            for l in lines {
                println!("[p4 child {k}] {l}");
            }
        }
        Ok(d)
    }

    /// The limit's w4 drain with the same CPU accounting (the bench process is the client).
    fn p4_limit(&self, n: usize, below: i64, rep: usize) -> Res<Drained> {
        let me = std::process::id().to_string();
        let locks = D::lock_waits(&mut *self.conn()?)?;
        let cpu = Cpu::start(proc_ticks(&me));
        let d = self.limit_drain(P4_PROCS, n, below)?;
        let cpu = cpu.show(proc_ticks(&me), d.took);
        let locks = D::lock_waits(&mut *self.conn()?)?.map_or(String::new(), |l| l.since(locks));
        log(format!(
            "{}: p4 limit w4 run {rep}: {:.0} tasks/s; {cpu} (the CPU window includes \
             connecting, the wall time does not){locks}",
            D::NAME,
            d.rate(),
        ));
        Ok(d)
    }

    pub(crate) fn multiproc(&self) -> Res<()> {
        let n = self.s.n;
        let below = now_ms() + 3_600_000;
        let mut runs: [Vec<f64>; 2] = Default::default();
        for rep in 0..DRAIN_REPEATS {
            for sys in [rep % 2, 1 - rep % 2] {
                let who = ["tend p4", "limit w4"][sys];
                expect_done(
                    DRAIN_CAP + Duration::from_secs(90),
                    format!("{} multiproc {who}", D::NAME),
                );
                self.clear()?;
                self.fill(n, 0)?;
                profile_phase(&format!("{} multiproc {who}", D::NAME), n * DRAIN_REPEATS);
                let d = if sys == 0 {
                    self.p4_drain(n, below, rep)?
                } else {
                    self.p4_limit(n, below, rep)?
                };
                profile_phase("-", 0);
                if d.capped {
                    let mut c = self.conn()?;
                    D::delete_due(&mut c, below)?;
                }
                runs[sys].push(d.rate());
            }
        }
        self.clear()?;
        log(format!(
            "{}: multiproc runs (tasks/s): tend p4 {:?}, limit w4 {:?}",
            D::NAME,
            rounded(&runs[0]),
            rounded(&runs[1])
        ));
        let (p4, lw4) = (percentile(&runs[0], 50.0), percentile(&runs[1], 50.0));
        self.figure("drain_p4_tasks_per_s", p4, "tasks/s", "tend", n);
        // The limit's row of this figure is its w4 drain, run interleaved in this phase.
        self.figure("drain_p4_tasks_per_s", lw4, "tasks/s", "limit", n);
        let drains = FIGURES
            .lock()
            .unwrap()
            .iter()
            .find(|f| {
                f.backend == D::NAME && f.name == "drain_w4_tasks_per_s" && f.system == "limit"
            })
            .map(|f| f.value);
        println!(
            "RATIO backend={} drain_p4 / limit drain_w4: {} (drains phase), {:.2} (interleaved \
             in this phase)",
            D::NAME,
            drains.map_or("- (not run)".into(), |l| format!("{:.2}", p4 / l)),
            p4 / lw4
        );
        Ok(())
    }
}
