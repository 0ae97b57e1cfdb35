//! The independent record of what ran: an append-only file every handler writes a start line
//! and an end line to, one `write` each (O_APPEND, so lines from many threads and processes
//! never interleave, and a SIGKILL loses nothing already written: the kernel holds it).
//!
//! Lines (times are microseconds since the epoch, the clock all processes share):
//! * `S key pid run attempt t`: run `run` of task `key` started (attempt as tend counts it);
//! * `E key pid run t`: that run ended;
//! * `C key pid t`: the pool of process `pid` claimed task `key` (from tend's events; used only
//!   to know which tasks a killed process held, never to count runs);
//! * `L what pid t`: process `pid` logged a tend warning or error of kind `what`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::now_us;

#[derive(Debug)]
pub struct RunLog {
    pub id: u32,
    pub path: PathBuf,
    file: File,
    runs: AtomicU64,
    /// Whether this process created (and so removes) the file.
    owner: bool,
}

/// Weak, so that a log is closed (and its file removed) when its test drops it.
fn logs() -> &'static Mutex<HashMap<u32, Weak<RunLog>>> {
    static LOGS: OnceLock<Mutex<HashMap<u32, Weak<RunLog>>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The run log registered under `id` in this process.
pub fn get(id: u32) -> Arc<RunLog> {
    logs()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .and_then(Weak::upgrade)
        .unwrap_or_else(|| panic!("no run log {id} in process {}", std::process::id()))
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

impl RunLog {
    /// A new, empty log in the temp directory, registered in this process.
    pub fn create(label: &str) -> Arc<RunLog> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "tend-runlog-{}-{id}-{label}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        Self::register(id, &path, true)
    }

    /// Opens an existing log (a child process writing its parent's log).
    pub fn open(id: u32, path: &Path) -> Arc<RunLog> {
        Self::register(id, path, false)
    }

    fn register(id: u32, path: &Path, owner: bool) -> Arc<RunLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("opening run log {}: {e}", path.display()));
        let log = Arc::new(RunLog {
            id,
            path: path.to_path_buf(),
            file,
            runs: AtomicU64::new(0),
            owner,
        });
        logs()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::downgrade(&log));
        log
    }

    fn line(&self, s: String) {
        // One write call per line: appends are atomic with respect to each other.
        (&self.file)
            .write_all(s.as_bytes())
            .expect("writing the run log");
    }

    /// Records the start of a run; returns its run number for [`end`](Self::end).
    pub fn start(&self, key: i64, attempt: u32) -> u64 {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        self.line(format!(
            "S {key} {} {run} {attempt} {}\n",
            std::process::id(),
            now_us()
        ));
        run
    }

    pub fn end(&self, key: i64, run: u64) {
        self.line(format!(
            "E {key} {} {run} {}\n",
            std::process::id(),
            now_us()
        ));
    }

    pub fn claimed(&self, key: i64) {
        self.line(format!("C {key} {} {}\n", std::process::id(), now_us()));
    }

    pub fn logged(&self, what: &str) {
        self.line(format!("L {what} {} {}\n", std::process::id(), now_us()));
    }

    /// Everything recorded so far.
    pub fn read(&self) -> Parsed {
        parse(&std::fs::read_to_string(&self.path).expect("reading the run log"))
    }
}

impl Drop for RunLog {
    fn drop(&mut self) {
        logs()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        // Kept when the test failed, to look at.
        if self.owner && !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One run of one task.
#[derive(Debug, Clone)]
pub struct Run {
    pub key: i64,
    pub pid: u32,
    pub attempt: u32,
    pub start: i64,
    pub end: Option<i64>,
}

#[derive(Debug, Default, Clone)]
pub struct Parsed {
    pub runs: Vec<Run>,
    /// (key, pid, t)
    pub claims: Vec<(i64, u32, i64)>,
    /// (what, pid, t)
    pub logs: Vec<(String, u32, i64)>,
}

impl Parsed {
    /// Keys with at least one finished run.
    pub fn done_keys(&self) -> std::collections::HashSet<i64> {
        self.runs
            .iter()
            .filter(|r| r.end.is_some())
            .map(|r| r.key)
            .collect()
    }

    /// How many runs finished (with an end line).
    pub fn ended(&self) -> usize {
        self.runs.iter().filter(|r| r.end.is_some()).count()
    }

    /// Runs grouped by key, each group sorted by start.
    pub fn by_key(&self) -> HashMap<i64, Vec<&Run>> {
        let mut m: HashMap<i64, Vec<&Run>> = HashMap::new();
        for r in &self.runs {
            m.entry(r.key).or_default().push(r);
        }
        for v in m.values_mut() {
            v.sort_by_key(|r| r.start);
        }
        m
    }
}

/// Parses a log. A last line without its newline is ignored: a process killed mid-write cannot
/// tear a single `write` to a regular file, but a read while a handler is writing can see part
/// of its line (seen: `S key pid run attempt ` with the time not yet there, which failed to
/// parse), and the next read sees all of it.
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut open: HashMap<(u32, u64), usize> = HashMap::new();
    let mut ends: Vec<(u32, u64, i64)> = Vec::new();
    let whole = text.rfind('\n').map_or("", |i| &text[..=i]);
    for line in whole.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["S", key, pid, run, attempt, t] => {
                let (pid, run): (u32, u64) = (pid.parse().unwrap(), run.parse().unwrap());
                open.insert((pid, run), out.runs.len());
                out.runs.push(Run {
                    key: key.parse().unwrap(),
                    pid,
                    attempt: attempt.parse().unwrap(),
                    start: t.parse().unwrap(),
                    end: None,
                });
            }
            ["E", _key, pid, run, t] => ends.push((
                pid.parse().unwrap(),
                run.parse().unwrap(),
                t.parse().unwrap(),
            )),
            ["C", key, pid, t] => out.claims.push((
                key.parse().unwrap(),
                pid.parse().unwrap(),
                t.parse().unwrap(),
            )),
            ["L", what, pid, t] => {
                out.logs
                    .push((what.to_string(), pid.parse().unwrap(), t.parse().unwrap()))
            }
            _ => {}
        }
    }
    for (pid, run, t) in ends {
        if let Some(&i) = open.get(&(pid, run)) {
            out.runs[i].end = Some(t);
        }
    }
    out
}
