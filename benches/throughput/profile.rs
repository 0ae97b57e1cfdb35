//! The statement profile (`TEND_BENCH_PROFILE=1`): every statement counted and timed per phase.

use super::*;

// ---------------------------------------------------------------------------------------------
// Statement profile (TEND_BENCH_PROFILE=1)
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
pub(crate) struct Profile {
    pub(crate) phase: String,
    /// (phase, normalized sql) -> [executions, prepares into the cache, nanoseconds]
    pub(crate) counts: BTreeMap<(String, String), [u64; 3]>,
    /// (phase, normalized sql) -> distinct SQL texts seen (an IN list per length, say)
    pub(crate) texts: HashMap<(String, String), std::collections::HashSet<String>>,
    /// normalized SQL of every statement diesel ever put into a statement cache
    pub(crate) cached: std::collections::HashSet<String>,
    /// phase -> tasks it handled
    pub(crate) tasks: BTreeMap<String, usize>,
    /// phase -> wall-clock time
    pub(crate) walls: BTreeMap<String, Duration>,
    pub(crate) started: Option<Instant>,
}

pub(crate) static PROFILE: Mutex<Option<Profile>> = Mutex::new(None);

/// `$1`-style placeholders become `?`, and lists of placeholders become one `?…`.
pub(crate) fn normalize_sql(sql: &str) -> String {
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
pub(crate) struct Timer {
    pub(crate) running: Option<(String, String, Instant)>,
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

pub(crate) fn profile_instrumentation() -> Option<Box<dyn Instrumentation>> {
    Some(Box::new(Timer { running: None }))
}

/// `TEND_BENCH_PERF=<dir>`: each phase (between two `profile_phase` calls) is recorded by its
/// own `perf record -a -g` into `<dir>/<n>-<phase>.data`, the whole machine (tend's threads and
/// the database server's processes alike), so that a phase's samples can be compared with
/// another's (tend's drain with the limit's) without slicing one recording by time.
struct PerfRun {
    child: std::process::Child,
}

static PERF: Mutex<(Option<PerfRun>, usize)> = Mutex::new((None, 0));

fn perf_phase(name: &str) {
    let Ok(dir) = std::env::var("TEND_BENCH_PERF") else {
        return;
    };
    let mut g = PERF.lock().unwrap();
    if let Some(mut run) = g.0.take() {
        let _ = std::process::Command::new("kill")
            .arg("-INT")
            .arg(run.child.id().to_string())
            .status();
        let _ = run.child.wait();
    }
    if name == "-" {
        return;
    }
    g.1 += 1;
    let file: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let out = format!("{dir}/{:03}-{file}.data", g.1);
    match std::process::Command::new("perf")
        .args(["record", "-q", "-F", "1999", "-a", "-g", "-o", &out])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => {
            // perf needs a moment to open its events on every CPU.
            thread::sleep(Duration::from_millis(300));
            g.0 = Some(PerfRun { child });
        }
        Err(e) => log(format!("TEND_BENCH_PERF: cannot start perf: {e}")),
    }
}

pub(crate) fn profile_phase(name: &str, tasks: usize) {
    perf_phase(name);
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

pub(crate) fn print_profile() {
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
