//! `/metrics`: Prometheus text for the table's state (read from the databases on each scrape)
//! and for what the pools of this process report through [`MetricsEvents`].

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::events::{Event, Events};

/// Upper bounds (seconds) of the attempt duration histogram's buckets.
const BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Minutes of per-minute counts kept for the dashboard's chart.
const MINUTES: usize = 60;

#[derive(Debug, Default, Clone)]
struct PerSignature {
    attempts: u64,
    succeeded: u64,
    failures: u64,
    retries: u64,
    dead: u64,
    held: u64,
    alerts: u64,
    lease_expired: u64,
    /// Counts per bucket (not cumulative), the last one for +Inf.
    buckets: [u64; BUCKETS.len() + 1],
    sum_seconds: f64,
    durations: u64,
}

#[derive(Debug, Default)]
struct Counters {
    by_signature: BTreeMap<String, PerSignature>,
    outcomes_refused: u64,
    /// (minute since the epoch, attempts succeeded, attempts failed), oldest first.
    minutes: VecDeque<(i64, u64, u64)>,
}

/// An [`Events`] implementation that counts attempts, failures, dead and held tasks, alerts and
/// attempt durations, for the dashboard's `/metrics` and its chart. Clones share the counts:
/// give one clone to each [`WorkerPool`](crate::WorkerPool) of the process and one to
/// [`Options::metrics`](super::Options::metrics).
///
/// ```
/// let metrics = tend::web::MetricsEvents::new();
/// # fn takes(_: impl tend::Events) {}
/// takes(metrics.clone()); // WorkerPool::builder(pool, registry).events(metrics.clone())
/// assert!(metrics.render().contains("tend_attempts_total"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct MetricsEvents {
    inner: Arc<Mutex<Counters>>,
}

impl MetricsEvents {
    /// Empty counters.
    pub fn new() -> MetricsEvents {
        MetricsEvents::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        // A poisoned lock only means a panic elsewhere mid-increment: the counts stay usable.
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut c)
    }

    fn minute(c: &mut Counters, ok: bool) {
        let now = crate::util::now_ms() / 60_000;
        match c.minutes.back_mut() {
            Some((m, s, f)) if *m == now => *if ok { s } else { f } += 1,
            _ => {
                c.minutes.push_back((now, u64::from(ok), u64::from(!ok)));
                while c.minutes.len() > MINUTES {
                    c.minutes.pop_front();
                }
            }
        }
    }

    /// `(minute since the epoch, succeeded, failed)` attempts of the last hour, oldest first.
    pub(crate) fn recent(&self) -> Vec<(i64, u64, u64)> {
        self.with(|c| c.minutes.iter().copied().collect())
    }

    /// The counters in Prometheus text format (`tend_attempts_total`, …).
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.with(|c| render_counters(c, &mut out));
        out
    }
}

fn record(p: &mut PerSignature, d: Duration) {
    let s = d.as_secs_f64();
    let i = BUCKETS
        .iter()
        .position(|b| s <= *b)
        .unwrap_or(BUCKETS.len());
    p.buckets[i] += 1;
    p.sum_seconds += s;
    p.durations += 1;
}

impl Events for MetricsEvents {
    fn event(&self, event: &Event<'_>) {
        self.with(|c| {
            fn per<'a>(c: &'a mut Counters, name: &str) -> &'a mut PerSignature {
                if !c.by_signature.contains_key(name) {
                    c.by_signature
                        .insert(name.to_string(), PerSignature::default());
                }
                c.by_signature.get_mut(name).expect("inserted above")
            }
            match event {
                Event::Started(t) => per(c, t.signature).attempts += 1,
                Event::Succeeded { task, duration } => {
                    let p = per(c, task.signature);
                    p.succeeded += 1;
                    record(p, *duration);
                    Self::minute(c, true);
                }
                Event::Failed { task, duration, .. } => {
                    let p = per(c, task.signature);
                    p.failures += 1;
                    record(p, *duration);
                    Self::minute(c, false);
                }
                Event::Retried { task, .. } => per(c, task.signature).retries += 1,
                Event::Dead { task, .. } => per(c, task.signature).dead += 1,
                Event::Held { task, .. } => per(c, task.signature).held += 1,
                Event::AlertFired(t) => per(c, t.signature).alerts += 1,
                Event::LeaseExpired(t) => per(c, t.signature).lease_expired += 1,
                Event::OutcomesRefused { count } => c.outcomes_refused += *count as u64,
                _ => {}
            }
        });
    }
}

/// A label value escaped for the text format.
pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_counters(c: &Counters, out: &mut String) {
    type Get = fn(&PerSignature) -> u64;
    let counters: [(&str, &str, Get); 8] = [
        (
            "tend_attempts_total",
            "Attempts started by this process's pools.",
            |p| p.attempts,
        ),
        (
            "tend_attempts_succeeded_total",
            "Attempts that succeeded.",
            |p| p.succeeded,
        ),
        (
            "tend_attempt_failures_total",
            "Attempts that failed (an error or a panic).",
            |p| p.failures,
        ),
        (
            "tend_retries_total",
            "Failed attempts with a retry scheduled.",
            |p| p.retries,
        ),
        (
            "tend_dead_total",
            "Tasks that became dead (out of attempts or given up).",
            |p| p.dead,
        ),
        (
            "tend_held_total",
            "Tasks held: this deployment cannot run them.",
            |p| p.held,
        ),
        ("tend_alerts_total", "Alerts fired.", |p| p.alerts),
        (
            "tend_lease_expired_total",
            "Tasks claimed again after their lease expired.",
            |p| p.lease_expired,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (sig, p) in &c.by_signature {
            let _ = writeln!(out, "{name}{{signature=\"{}\"}} {}", label(sig), get(p));
        }
    }
    let name = "tend_attempt_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} How long attempts ran.\n# TYPE {name} histogram"
    );
    for (sig, p) in &c.by_signature {
        let sig = label(sig);
        let mut cumulative = 0;
        for (i, n) in p.buckets.iter().enumerate() {
            cumulative += n;
            let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{signature=\"{sig}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(out, "{name}_sum{{signature=\"{sig}\"}} {}", p.sum_seconds);
        let _ = writeln!(out, "{name}_count{{signature=\"{sig}\"}} {}", p.durations);
    }
    let name = "tend_outcomes_refused_total";
    let _ = writeln!(
        out,
        "# HELP {name} Outcomes not written because another worker took the lease over.\n\
         # TYPE {name} counter\n{name} {}",
        c.outcomes_refused
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::TaskInfo;

    #[test]
    fn counts_and_renders() {
        let m = MetricsEvents::new();
        let t = TaskInfo::new(1, "a\"b", 0, 1);
        m.event(&Event::Started(t));
        m.event(&Event::Failed {
            task: t,
            error: "x",
            duration: Duration::from_millis(30),
        });
        m.event(&Event::Succeeded {
            task: t,
            duration: Duration::from_secs(100),
        });
        let text = m.render();
        assert!(
            text.contains("tend_attempts_total{signature=\"a\\\"b\"} 1"),
            "{text}"
        );
        assert!(text.contains("tend_attempt_failures_total{signature=\"a\\\"b\"} 1"));
        assert!(text.contains("le=\"0.05\"} 1"), "{text}");
        assert!(text.contains("le=\"60\"} 1"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("tend_attempt_duration_seconds_count{signature=\"a\\\"b\"} 2"));
        let recent = m.recent();
        assert_eq!(recent.len(), 1);
        assert_eq!((recent[0].1, recent[0].2), (1, 1));
    }
}
