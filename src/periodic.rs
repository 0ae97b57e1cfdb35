//! Periodic tasks: a [`Periodic`] names a schedule (a fixed interval, or a cron expression in
//! a time zone with the `cron` feature) and the task each of its slots enqueues. The pool's
//! scheduler thread (`pool::scheduler`) runs them.
//!
//! # How a slot is enqueued once
//!
//! A slot is an instant (epoch milliseconds) every process computes alike: multiples of the
//! interval since the Unix epoch, or the cron expression's occurrences. The table
//! `tend_schedule` holds, per schedule name, the last slot enqueued. A process that finds a
//! slot due runs one transaction: a compare-and-set of that row from the value it read to the
//! new slot, and the insert of the slot's task row, both or neither. Of several processes only
//! the one whose update matched enqueues; the others update nothing and insert nothing. No
//! leader, no lock held between transactions, and no reliance on the task row (which is deleted
//! once it succeeds). Running the task is then an ordinary task's business: leased, retried,
//! at least once.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::enqueue::{row_to_write, NewTask};
use crate::error::Error;
use crate::store::row::NewRow;
use crate::task::Task;

/// What a schedule does with slots that passed while no process ran it (a deploy, an outage):
/// the choice between running late work once or catching up on each missed slot.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tend::{Missed, Periodic};
/// // A report that only needs the latest state: one run, however long the pool was down.
/// let report = Periodic::every("report", Duration::from_secs(300))?
///     .missed(Missed::RunOnce)
///     .task(|_slot| Ship { order_id: 0 });
/// // An hourly aggregation: each missed hour once, up to a day of them.
/// let hourly = Periodic::every("aggregate", Duration::from_secs(3600))?
///     .missed(Missed::CatchUp(24))
///     .task(|_slot| Ship { order_id: 1 });
/// # let _ = (report, hourly);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Missed {
    /// Enqueue only the latest due slot; the earlier missed ones are skipped. The default.
    #[default]
    RunOnce,
    /// Enqueue each missed slot, oldest first, but at most this many (the latest ones); older
    /// ones are skipped. At least 1.
    CatchUp(u32),
}

/// How a schedule repeats.
#[derive(Clone)]
enum Every {
    /// Every so many milliseconds, slots aligned on the Unix epoch.
    Interval(i64),
    #[cfg(feature = "cron")]
    Cron(Box<cron::CronSpec>),
}

type MakeTask = dyn Fn(SystemTime) -> Result<NewTask, Error> + Send + Sync;

/// A periodic task: a schedule name, when it repeats, and the task each slot enqueues.
/// Register it with [`WorkerPoolBuilder::periodic`](crate::WorkerPoolBuilder::periodic); every
/// process that registers the same name shares its slots, and each slot is enqueued once
/// across all of them (the README's "Periodic tasks" says how).
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pool, _db) = temp_pool("periodic");
/// # let mut registry = tend::Registry::new();
/// # registry.register::<Ship>()?;
/// use std::time::{Duration, UNIX_EPOCH};
/// use tend::{Periodic, WorkerPool};
/// let every_minute = Periodic::every("orders.sweep", Duration::from_secs(60))?
///     // The slot is the instant the run is for (here a multiple of 60 s since the epoch).
///     .task(|slot| Ship { order_id: slot.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 });
/// let handle = WorkerPool::builder(pool, registry).periodic(every_minute).build()?.start()?;
/// handle.shutdown();
/// // A zero interval is refused where it is written:
/// assert!(Periodic::every("never", Duration::ZERO).is_err());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Periodic {
    pub(crate) name: String,
    every: Every,
    pub(crate) missed: Missed,
    make: Option<Arc<MakeTask>>,
}

impl std::fmt::Debug for Periodic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Periodic")
            .field("name", &self.name)
            .field("spec", &self.spec())
            .field("missed", &self.missed)
            .finish()
    }
}

/// The longest schedule name (the primary key of `tend_schedule`).
pub const MAX_SCHEDULE_NAME_BYTES: usize = 200;

fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_SCHEDULE_NAME_BYTES {
        return Err(Error::invalid_setting(
            "periodic",
            format!("a schedule name must be 1 to {MAX_SCHEDULE_NAME_BYTES} bytes, got {name:?}"),
        ));
    }
    Ok(())
}

impl Periodic {
    /// A schedule whose slots are every `interval`, aligned on the Unix epoch (so an interval
    /// of 5 minutes runs at :00, :05, …, in UTC), in every process alike. At least 1 ms, at
    /// most [`MAX_SETTING_DURATION`](crate::MAX_SETTING_DURATION).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSetting`](crate::ErrorKind::InvalidSetting) for an empty or
    /// over-long name or an interval out of range.
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = tend::Periodic::every("tick", Duration::from_micros(10)).unwrap_err();
    /// assert!(err.to_string().contains("at least 1 ms"), "{err}");
    /// ```
    pub fn every(name: &str, interval: Duration) -> Result<Periodic, Error> {
        check_name(name)?;
        if interval < Duration::from_millis(1) {
            return Err(Error::invalid_setting(
                "periodic",
                format!("schedule `{name}`: the interval must be at least 1 ms"),
            ));
        }
        // `MAX_SETTING_DURATION` (the pool's, not imported: the pool imports this module).
        if interval > Duration::from_secs(3650 * 24 * 3600) {
            return Err(Error::invalid_setting(
                "periodic",
                format!("schedule `{name}`: the interval must be at most 3650 days (10 years)"),
            ));
        }
        Ok(Periodic {
            name: name.to_string(),
            every: Every::Interval(interval.as_millis() as i64),
            missed: Missed::RunOnce,
            make: None,
        })
    }

    /// A schedule whose slots are the occurrences of a cron `expression` in the IANA time
    /// zone `zone` (`"UTC"`, `"Europe/Berlin"`). Five fields (minute to day of week) or six
    /// (seconds first), as the `croner` crate reads them, nicknames such as `@hourly` too.
    /// Across DST changes a time that does not exist runs right after the gap, and one that
    /// occurs twice runs once (croner's rules, which follow Vixie cron). Needs the `cron`
    /// feature.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSetting`](crate::ErrorKind::InvalidSetting) for a bad name, an
    /// expression croner cannot parse or that never occurs, or an unknown zone.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tend::Periodic;
    /// let nightly = Periodic::cron("billing.nightly", "30 2 * * *", "Europe/Berlin")?
    ///     .task(|_slot| Ship { order_id: 0 });
    /// assert!(Periodic::cron("bad", "61 * * * *", "UTC").is_err());
    /// assert!(Periodic::cron("bad", "0 * * * *", "Mars/Olympus").is_err());
    /// # let _ = nightly;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "cron")]
    pub fn cron(name: &str, expression: &str, zone: &str) -> Result<Periodic, Error> {
        check_name(name)?;
        let spec = cron::CronSpec::parse(expression, zone).map_err(|why| {
            Error::invalid_setting("periodic", format!("schedule `{name}`: {why}"))
        })?;
        Ok(Periodic {
            name: name.to_string(),
            every: Every::Cron(Box::new(spec)),
            missed: Missed::RunOnce,
            make: None,
        })
    }

    /// What to do with slots missed while no process ran the schedule. Defaults to
    /// [`Missed::RunOnce`].
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tend::{Missed, Periodic};
    /// let p = Periodic::every("sweep", Duration::from_secs(60))?.missed(Missed::CatchUp(10));
    /// # let _ = p;
    /// # Ok(()) }
    /// ```
    pub fn missed(mut self, policy: Missed) -> Self {
        self.missed = policy;
        self
    }

    /// The task each slot enqueues, built from the slot's instant, with its type's options.
    /// [`build`](crate::WorkerPoolBuilder::build) also calls it once (for the next slot,
    /// enqueueing nothing) to check that the task can be enqueued.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let p = tend::Periodic::every("sweep", Duration::from_secs(60))?
    ///     .task(|slot| Ship { order_id: slot.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 });
    /// # let _ = p;
    /// # Ok(()) }
    /// ```
    pub fn task<T: Task>(self, make: impl Fn(SystemTime) -> T + Send + Sync + 'static) -> Self {
        self.new_task(move |slot| NewTask::new(&make(slot)))
    }

    /// Like [`task`](Self::task), with per-enqueue overrides ([`NewTask`]).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tend::NewTask;
    /// let p = tend::Periodic::every("sweep", Duration::from_secs(60))?
    ///     .new_task(|_slot| Ok(NewTask::new(&Ship { order_id: 0 })?.max_attempts(3)));
    /// # let _ = p;
    /// # Ok(()) }
    /// ```
    pub fn new_task(
        mut self,
        make: impl Fn(SystemTime) -> Result<NewTask, Error> + Send + Sync + 'static,
    ) -> Self {
        self.make = Some(Arc::new(make));
        self
    }

    /// The schedule's name.
    ///
    /// ```
    /// let p = tend::Periodic::every("sweep", std::time::Duration::from_secs(1)).unwrap();
    /// assert_eq!(p.name(), "sweep");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the schedule repeats, as `tend_schedule.spec` and the CLI show it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = tend::Periodic::every("sweep", Duration::from_millis(1500)).unwrap();
    /// assert_eq!(p.spec(), "every 1500ms");
    /// let p = tend::Periodic::every("sweep", Duration::from_secs(300)).unwrap();
    /// assert_eq!(p.spec(), "every 5m");
    /// ```
    pub fn spec(&self) -> String {
        match &self.every {
            Every::Interval(ms) => {
                // The largest unit that divides it: `every 5m`, `every 1500ms`.
                let (n, unit) = [
                    (86_400_000, "d"),
                    (3_600_000, "h"),
                    (60_000, "m"),
                    (1000, "s"),
                ]
                .into_iter()
                .find(|(u, _)| ms % u == 0)
                .map_or((*ms, "ms"), |(u, name)| (ms / u, name));
                format!("every {n}{unit}")
            }
            #[cfg(feature = "cron")]
            Every::Cron(c) => c.describe(),
        }
    }

    /// The latest slot at or before `now_ms`.
    pub(crate) fn slot_at_or_before(&self, now_ms: i64) -> Option<i64> {
        match &self.every {
            Every::Interval(ms) => Some(now_ms.div_euclid(*ms) * ms),
            #[cfg(feature = "cron")]
            Every::Cron(c) => c.at_or_before(now_ms),
        }
    }

    /// The first slot after `slot_ms` (`i64::MAX` if there is none).
    pub(crate) fn slot_after(&self, slot_ms: i64) -> i64 {
        match &self.every {
            Every::Interval(ms) => (slot_ms.div_euclid(*ms) + 1).saturating_mul(*ms),
            #[cfg(feature = "cron")]
            Every::Cron(c) => c.after(slot_ms).unwrap_or(i64::MAX),
        }
    }

    /// The slots to enqueue at `now_ms` when `last` was the last one enqueued, oldest first,
    /// under the missed-slot policy (none when nothing is due).
    pub(crate) fn due_slots(&self, last: i64, now_ms: i64) -> Vec<i64> {
        let Some(latest) = self.slot_at_or_before(now_ms) else {
            return Vec::new();
        };
        if latest <= last {
            return Vec::new();
        }
        let most = match self.missed {
            Missed::RunOnce => 1,
            Missed::CatchUp(n) => n.max(1) as usize,
        };
        let mut slots = vec![latest];
        while slots.len() < most {
            let before = slots[slots.len() - 1] - 1;
            match self.slot_at_or_before(before) {
                Some(s) if s > last => slots.push(s),
                _ => break,
            }
        }
        slots.reverse();
        slots
    }

    /// Checks what only a complete schedule can tell: a task is set, the policy is valid, and
    /// a slot's task can be written by the plain enqueue (not sync, not without transaction).
    pub(crate) fn validate(&self, now_ms: i64) -> Result<(), Error> {
        let bad = |why: String| Err(Error::invalid_setting("periodic", why));
        if self.make.is_none() {
            return bad(format!(
                "schedule `{}` has no task (call `.task(…)`)",
                self.name
            ));
        }
        if self.missed == Missed::CatchUp(0) {
            return bad(format!(
                "schedule `{}`: Missed::CatchUp needs at least 1 slot",
                self.name
            ));
        }
        self.rows(&[self.slot_after(now_ms)], now_ms)
            .map(|_| ())
            .map_err(|e| {
                Error::invalid_setting("periodic", format!("schedule `{}`: {e}", self.name))
            })
    }

    /// The task rows of `slots`, due now.
    pub(crate) fn rows(&self, slots: &[i64], now_ms: i64) -> Result<Vec<NewRow>, Error> {
        let make = self.make.as_ref().expect("validated at build");
        slots
            .iter()
            .map(|&s| {
                let at = if s >= 0 {
                    UNIX_EPOCH + Duration::from_millis(s as u64)
                } else {
                    UNIX_EPOCH - Duration::from_millis(s.unsigned_abs())
                };
                row_to_write(make(at)?, now_ms)
            })
            .collect()
    }
}

#[cfg(feature = "cron")]
mod cron {
    use chrono::{DateTime, TimeZone, Utc};
    use chrono_tz::Tz;
    use croner::parser::{CronParser, Seconds};
    use croner::Cron;

    /// A parsed cron expression and its zone.
    #[derive(Clone)]
    pub(super) struct CronSpec {
        cron: Cron,
        zone: Tz,
        expression: String,
    }

    impl CronSpec {
        pub(super) fn parse(expression: &str, zone: &str) -> Result<CronSpec, String> {
            let zone: Tz = zone.parse().map_err(|_| {
                format!("unknown time zone `{zone}` (an IANA name such as UTC or Europe/Berlin)")
            })?;
            let cron = CronParser::builder()
                .seconds(Seconds::Optional)
                .build()
                .parse(expression)
                .map_err(|e| format!("bad cron expression `{expression}`: {e}"))?;
            let spec = CronSpec {
                cron,
                zone,
                expression: expression.trim().to_string(),
            };
            // A pattern that parses but never matches (30 February) is refused now, not
            // found out by the scheduler.
            if spec.after(crate::util::now_ms()).is_none() {
                return Err(format!("cron expression `{expression}` never occurs"));
            }
            Ok(spec)
        }

        pub(super) fn describe(&self) -> String {
            format!("cron {} in {}", self.expression, self.zone.name())
        }

        fn at(&self, ms: i64) -> Option<DateTime<Tz>> {
            // Whole seconds: cron has no finer unit.
            let utc = Utc.timestamp_opt(ms.div_euclid(1000), 0).single()?;
            Some(utc.with_timezone(&self.zone))
        }

        pub(super) fn at_or_before(&self, ms: i64) -> Option<i64> {
            let t = self
                .cron
                .find_previous_occurrence(&self.at(ms)?, true)
                .ok()?;
            Some(t.timestamp_millis())
        }

        pub(super) fn after(&self, ms: i64) -> Option<i64> {
            let t = self.cron.find_next_occurrence(&self.at(ms)?, false).ok()?;
            Some(t.timestamp_millis())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_slots_align_on_the_epoch() {
        let p = Periodic::every("t", Duration::from_millis(100)).unwrap();
        assert_eq!(p.slot_at_or_before(1_234), Some(1_200));
        assert_eq!(p.slot_at_or_before(1_200), Some(1_200));
        assert_eq!(p.slot_after(1_200), 1_300);
        assert_eq!(p.slot_after(1_234), 1_300);
    }

    #[test]
    fn run_once_takes_only_the_latest_missed_slot() {
        let p = Periodic::every("t", Duration::from_millis(100)).unwrap();
        assert_eq!(p.due_slots(1_000, 1_050), Vec::<i64>::new()); // nothing due yet
        assert_eq!(p.due_slots(1_000, 1_100), vec![1_100]); // on time
        assert_eq!(p.due_slots(1_000, 1_950), vec![1_900]); // 9 missed: one run
    }

    #[test]
    fn catch_up_takes_the_latest_n_oldest_first() {
        let p = Periodic::every("t", Duration::from_millis(100))
            .unwrap()
            .missed(Missed::CatchUp(3));
        assert_eq!(p.due_slots(1_000, 1_250), vec![1_100, 1_200]);
        assert_eq!(p.due_slots(1_000, 1_950), vec![1_700, 1_800, 1_900]);
        assert_eq!(p.due_slots(1_900, 1_950), Vec::<i64>::new());
    }

    #[test]
    fn bad_settings_are_refused_where_they_are_written() {
        assert!(Periodic::every("t", Duration::ZERO).is_err());
        assert!(Periodic::every("", Duration::from_secs(1)).is_err());
        assert!(Periodic::every(&"x".repeat(201), Duration::from_secs(1)).is_err());
        let no_task = Periodic::every("t", Duration::from_secs(1)).unwrap();
        let err = no_task.validate(0).unwrap_err().to_string();
        assert!(err.contains("has no task"), "{err}");
    }

    #[cfg(feature = "cron")]
    #[test]
    fn cron_expressions_are_checked_and_follow_dst() {
        for (expr, zone) in [
            ("61 * * * *", "UTC"),
            ("* * *", "UTC"),
            ("0 0 30 2 *", "UTC"),
            ("0 * * * *", "Europe/Nowhere"),
        ] {
            assert!(Periodic::cron("c", expr, zone).is_err(), "{expr} in {zone}");
        }
        // 02:30 every day in Berlin. On 2026-03-29 clocks jump from 02:00 to 03:00: that day's
        // run is at 03:00 CEST (01:00 UTC), right after the gap. On 2026-10-25 02:00-03:00
        // happens twice: one run, at the first 02:30 (CEST, 00:30 UTC).
        let p = Periodic::cron("c", "30 2 * * *", "Europe/Berlin").unwrap();
        let utc = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        assert_eq!(
            p.slot_after(utc("2026-03-28T12:00:00Z")),
            utc("2026-03-29T01:00:00Z")
        );
        assert_eq!(
            p.slot_after(utc("2026-03-29T01:00:00Z")),
            utc("2026-03-30T00:30:00Z")
        );
        let first = p.slot_after(utc("2026-10-24T12:00:00Z"));
        assert_eq!(first, utc("2026-10-25T00:30:00Z"));
        assert_eq!(p.slot_after(first), utc("2026-10-26T01:30:00Z"));
        assert_eq!(p.spec(), "cron 30 2 * * * in Europe/Berlin");
        // Seconds are optional: every 10 s.
        let s = Periodic::cron("s", "*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            s.slot_at_or_before(utc("2026-01-01T00:00:15Z")),
            Some(utc("2026-01-01T00:00:10Z"))
        );
    }
}
