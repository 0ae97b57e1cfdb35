//! The cross-process wake-up figures (issue 14): a task committed here (process A, through an
//! outbox of a pool that is never started) starts in a child process of this bench (process B,
//! a tend pool polling every `WAKE_CHILD_POLL`, with `WakeUp::Auto`: LISTEN/NOTIFY on
//! PostgreSQL, a 20 ms due-probe elsewhere); and the enqueue rate with wake-up on against off,
//! B draining meanwhile in both, in the same run: off, B polls every `TEND_BENCH_POLL_MS`
//! (10 ms), the latency one would otherwise buy by polling; on, B polls every 5 s and wakes up.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

use crossbeam_channel::Receiver;
use tend::WakeUp;

use super::*;

/// B's poll interval: far longer than any wake-up, so that a poll never explains one.
const WAKE_CHILD_POLL: Duration = Duration::from_secs(5);
/// Probes of the latency figures (fewer when `TEND_BENCH_N` is smaller).
const WAKE_PROBES: usize = 300;
/// Rounds of the on/off enqueue comparison (each mode once per round, the order alternating).
const WAKE_ROUNDS: usize = 4;
/// How long B is left idle to measure what the wake-up costs it at rest.
const IDLE_WINDOW: Duration = Duration::from_secs(3);

/// A probe for B: prints when its handler started.
#[derive(Serialize, Deserialize)]
struct WakeProbe {
    seq: u64,
}

impl Task for WakeProbe {
    const SIGNATURE: &'static str = "bench.wake_probe";
    fn execute(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
        let line = format!("WAKE {} {}\n", self.seq, now_us());
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
        Ok(())
    }
}

/// Process B: started by [`Child::spawn`] with `TEND_BENCH_WAKE_CHILD` set to the backend's
/// name; returns whether this process is such a child (it has then done its work).
pub(crate) fn child_main() -> bool {
    let Ok(backend) = std::env::var("TEND_BENCH_WAKE_CHILD") else {
        return false;
    };
    let url = std::env::var("TEND_BENCH_WAKE_URL").expect("TEND_BENCH_WAKE_URL");
    let on = std::env::var("TEND_BENCH_WAKE").is_ok_and(|v| v == "on");
    let poll = std::env::var("TEND_BENCH_WAKE_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(WAKE_CHILD_POLL, Duration::from_millis);
    let r = match backend.as_str() {
        #[cfg(feature = "sqlite")]
        "sqlite" => child::<sqlite_db::Sqlite>(&url, on, poll),
        #[cfg(feature = "postgres")]
        "pg" => child::<pg_db::Pg>(&url, on, poll),
        #[cfg(feature = "mysql")]
        "mysql" => child::<mysql_db::My>(&url, on, poll),
        other => Err(format!("no backend {other} in this build").into()),
    };
    if let Err(e) = r {
        eprintln!("[bench child] {e}");
        std::process::exit(1);
    }
    true
}

fn child<D: Db>(url: &str, on: bool, poll: Duration) -> Res<()> {
    let mut registry = registry();
    registry.register::<WakeProbe>()?;
    let handle = tend::WorkerPool::builder(D::pool(url, 6)?, registry)
        .threads(4)
        .poll_interval(poll)
        .wake_up(if on { WakeUp::Auto } else { WakeUp::Off })
        .build()?
        .start()?;
    println!("READY");
    std::io::stdout().flush()?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    handle.shutdown();
    Ok(())
}

/// Process B, seen from A.
struct WakeChild {
    child: Child,
    lines: Receiver<String>,
}

impl WakeChild {
    /// B, with wake-up (`on`) or without, polling every `poll`.
    fn spawn<D: Db>(url: &str, on: bool, poll: Duration) -> Res<WakeChild> {
        let mut child = Command::new(std::env::current_exe()?)
            .env("TEND_BENCH_WAKE_POLL_MS", poll.as_millis().to_string())
            .env("TEND_BENCH_WAKE_CHILD", D::NAME)
            .env("TEND_BENCH_WAKE_URL", url)
            .env("TEND_BENCH_WAKE", if on { "on" } else { "off" })
            .env_remove("TEND_BENCH_PROFILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let out = child.stdout.take().ok_or("child stdout")?;
        let (tx, lines) = crossbeam_channel::unbounded();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = lines.recv_timeout(Duration::from_secs(60))?;
        if ready != "READY" {
            return Err(format!("wake child said {ready:?}").into());
        }
        Ok(WakeChild { child, lines })
    }

    /// CPU time (user + system) used so far, in clock ticks (1/100 s).
    fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let Some(i) = stat.rfind(')') else { return 0 };
        let f: Vec<&str> = stat[i + 2..].split(' ').collect();
        let tick = |k: usize| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        tick(11) + tick(12)
    }

    /// The child's CPU use while it idles for `IDLE_WINDOW`, in % of one core.
    fn idle_cpu_pct(&self) -> f64 {
        let before = self.cpu_ticks();
        thread::sleep(IDLE_WINDOW);
        (self.cpu_ticks() - before) as f64 / IDLE_WINDOW.as_secs_f64()
    }

    fn stop(mut self) -> Res<()> {
        drop(self.child.stdin.take());
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("wake child exited with {status}").into());
        }
        Ok(())
    }
}

impl Drop for WakeChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl<D: Db> Bench<D> {
    /// An outbox of a pool that is never started: every right-now task it enqueues stays due
    /// for other processes, as in a process that only enqueues.
    fn enqueue_only(&self, wake: WakeUp) -> Res<tend::Outbox<D::C>> {
        let mut registry = registry();
        registry.register::<WakeProbe>()?;
        Ok(tend::WorkerPool::builder(self.pool.clone(), registry)
            .wake_up(wake)
            .build()?
            .outbox())
    }

    pub(crate) fn wake(&self) -> Res<()> {
        // Latency: one transaction (business row + probe) every 10-30 ms, so that each probe
        // needs a wake-up of its own.
        self.clear()?;
        let outbox = self.enqueue_only(WakeUp::Auto)?;
        let b = WakeChild::spawn::<D>(&self.url, true, WAKE_CHILD_POLL)?;
        let idle_on = b.idle_cpu_pct();
        let probes = WAKE_PROBES.min(self.s.probes());
        let mut c = self.conn()?;
        let mut sent = HashMap::new();
        for seq in 0..probes as u64 {
            thread::sleep(Duration::from_millis(10 + (seq * 7919) % 21));
            retry_tx(|| {
                outbox.transaction(&mut *c, |c, tx| -> Res<()> {
                    D::insert_order(c, seq as i64)?;
                    tx.enqueue(c, &WakeProbe { seq })?;
                    Ok(())
                })
            })?;
            sent.insert(seq, now_us());
        }
        let mut lat_ms = Vec::with_capacity(probes);
        let deadline = Instant::now() + WAKE_CHILD_POLL * 4;
        while lat_ms.len() < probes {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = b
                .lines
                .recv_timeout(left)
                .map_err(|_| format!("wake: {} of {probes} probes started in B", lat_ms.len()))?;
            let f: Vec<&str> = line.split(' ').collect();
            if let ["WAKE", seq, at] = f[..] {
                let at: i64 = at.parse()?;
                let sent = sent.get(&seq.parse()?).ok_or("unknown probe")?;
                lat_ms.push((at - sent).max(0) as f64 / 1000.0);
            }
        }
        b.stop()?;
        let b = WakeChild::spawn::<D>(&self.url, false, WAKE_CHILD_POLL)?;
        let idle_off = b.idle_cpu_pct();
        b.stop()?;
        self.figure(
            "wake_cross_process_p50_ms",
            percentile(&lat_ms, 50.0),
            "ms",
            "tend",
            probes,
        );
        self.figure(
            "wake_cross_process_p99_ms",
            percentile(&lat_ms, 99.0),
            "ms",
            "tend",
            probes,
        );
        log(format!(
            "{}: wake-up max {:.1} ms; B idle CPU {idle_on:.2} % with wake-up, {idle_off:.2} % \
             without (poll {WAKE_CHILD_POLL:?})",
            D::NAME,
            percentile(&lat_ms, 100.0),
        ));
        self.figure("wake_idle_cpu_pct", idle_on, "%", "tend", 1);

        // Enqueue rate, wake-up on (A notifies on PostgreSQL; B listens or probes, polling every
        // 5 s) against off (B polls every TEND_BENCH_POLL_MS), B draining the tasks meanwhile
        // in both; rounds alternate which goes first.
        let outboxes = [
            self.enqueue_only(WakeUp::Off)?,
            self.enqueue_only(WakeUp::Auto)?,
        ];
        let mut took = [Duration::ZERO; 2];
        let mut done = [0usize; 2];
        let per = self.s.n / WAKE_ROUNDS;
        let mut order = 0i64;
        for round in 0..WAKE_ROUNDS {
            for on in [round % 2, 1 - round % 2] {
                self.clear()?;
                // Off: B polls every TEND_BENCH_POLL_MS, so that it drains meanwhile too.
                let poll = if on == 1 {
                    WAKE_CHILD_POLL
                } else {
                    self.s.poll
                };
                let b = WakeChild::spawn::<D>(&self.url, on == 1, poll)?;
                let start = Instant::now();
                for _ in 0..per {
                    if start.elapsed() > ENQUEUE_CAP {
                        break;
                    }
                    order += 1;
                    let i = order;
                    retry_tx(|| {
                        outboxes[on].transaction(&mut *c, |c, tx| -> Res<()> {
                            D::insert_order(c, i)?;
                            tx.enqueue(c, &Noop { order_id: i })?;
                            Ok(())
                        })
                    })?;
                    done[on] += 1;
                }
                took[on] += start.elapsed();
                b.stop()?;
            }
        }
        self.clear()?;
        let rate = |k: usize| done[k] as f64 / took[k].as_secs_f64();
        self.figure(
            "enqueue_wake_off_tx_per_s",
            rate(0),
            "tx/s",
            "tend",
            done[0],
        );
        self.figure("enqueue_wake_on_tx_per_s", rate(1), "tx/s", "tend", done[1]);
        self.figure(
            "enqueue_wake_on_over_off",
            rate(1) / rate(0),
            "ratio",
            "tend",
            done[0] + done[1],
        );
        Ok(())
    }
}
