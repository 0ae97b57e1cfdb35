//! [`MetricsFacade`]: tend's events as `metrics` crate counters and histograms, for
//! applications that export metrics themselves (Prometheus, StatsD, … through any `metrics`
//! recorder).

use crate::events::{Event, Events};

/// Reports every [`Event`] to the `metrics` facade: counters `tend_enqueued_total`,
/// `tend_attempts_total`, `tend_attempts_succeeded_total`, `tend_attempt_failures_total`,
/// `tend_retries_total`, `tend_dead_total`, `tend_held_total`, `tend_alerts_total`,
/// `tend_lease_expired_total` (label `signature`), `tend_outcomes_refused_total`, and the
/// histogram `tend_attempt_duration_seconds` (labels `signature`, `outcome`). With no recorder
/// installed these cost next to nothing.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("metrics-facade");
/// use tend::{MetricsFacade, Registry, WorkerPool};
/// // metrics_exporter_prometheus::PrometheusBuilder::new().install()?; or any recorder
/// let workers = WorkerPool::builder(pool, Registry::new()).events(MetricsFacade).build();
/// assert!(workers.is_ok());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsFacade;

impl Events for MetricsFacade {
    fn event(&self, event: &Event<'_>) {
        let count = |name: &'static str, sig: &str| {
            metrics::counter!(name, "signature" => sig.to_string()).increment(1);
        };
        match event {
            Event::Enqueued(t) => count("tend_enqueued_total", t.signature),
            Event::Started(t) => count("tend_attempts_total", t.signature),
            Event::Succeeded { task, duration } => {
                count("tend_attempts_succeeded_total", task.signature);
                metrics::histogram!("tend_attempt_duration_seconds",
                    "signature" => task.signature.to_string(), "outcome" => "succeeded")
                .record(duration.as_secs_f64());
            }
            Event::Failed { task, duration, .. } => {
                count("tend_attempt_failures_total", task.signature);
                metrics::histogram!("tend_attempt_duration_seconds",
                    "signature" => task.signature.to_string(), "outcome" => "failed")
                .record(duration.as_secs_f64());
            }
            Event::Retried { task, .. } => count("tend_retries_total", task.signature),
            Event::Dead { task, .. } => count("tend_dead_total", task.signature),
            Event::Held { task, .. } => count("tend_held_total", task.signature),
            Event::AlertFired(t) => count("tend_alerts_total", t.signature),
            Event::LeaseExpired(t) => count("tend_lease_expired_total", t.signature),
            Event::OutcomesRefused { count } => {
                metrics::counter!("tend_outcomes_refused_total").increment(*count as u64)
            }
            _ => {}
        }
    }
}
