//! Settings from the environment, the figures and their statistics, the clocks and RSS.

use super::*;

// ---------------------------------------------------------------------------------------------
// Settings, figures, statistics
// ---------------------------------------------------------------------------------------------

pub(crate) struct Settings {
    pub(crate) n: usize,
    pub(crate) large: bool,
    pub(crate) poll: Duration,
    pub(crate) profile: bool,
    pub(crate) only: Option<Vec<String>>,
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) sqlite: bool,
    /// tend's `batch_size` in the drains (the limit always claims `BATCH`).
    pub(crate) tend_batch: usize,
}

impl Settings {
    pub(crate) fn from_env() -> Settings {
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

    /// Whether a phase (enqueue, drains, dispatch, lateness, wake, multiproc) is to run.
    pub(crate) fn wants(&self, phase: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == phase))
    }

    pub(crate) fn probes(&self) -> usize {
        self.n.min(PROBES_MAX)
    }
}

#[derive(Clone)]
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) backend: &'static str,
    pub(crate) system: &'static str,
    pub(crate) n: usize,
}

pub(crate) static FIGURES: Mutex<Vec<Figure>> = Mutex::new(Vec::new());

pub(crate) fn figure(
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

/// Rates rounded to whole tasks per second, for the logs of individual runs.
pub(crate) fn rounded(runs: &[f64]) -> Vec<f64> {
    runs.iter().map(|r| r.round()).collect()
}

/// Nearest-rank percentile of unsorted samples.
pub(crate) fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub(crate) fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

/// Peak resident set size (VmHWM) in MiB.
pub(crate) fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Current resident set size (VmRSS) in MiB.
pub(crate) fn rss_now_mb() -> f64 {
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
pub(crate) fn reset_peak_rss() -> bool {
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
