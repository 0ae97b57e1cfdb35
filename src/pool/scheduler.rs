//! The scheduler thread: enqueues the due slots of the pool's periodic schedules
//! ([`Periodic`]), on shard 0, each slot once across every process (the compare-and-set in
//! `Ops::schedule_advance`; see `crate::periodic`).
//!
//! It holds no lease and no lock between transactions: a process that stops or hangs only
//! stops enqueueing, and any other process running the same schedule enqueues the next slot.

use std::time::Duration;

use crossbeam_channel::{after, select, Receiver, Sender};
use diesel::r2d2::{ConnectionManager, Pool, R2D2Connection};

use super::complete::{Backoff, Conn};
use crate::periodic::Periodic;
use crate::store::row::ScheduleRow;
use crate::store::StoreConnection;
use crate::supervise::{fault, supervise, Spawned};
use crate::util::now_ms;

/// The longest sleep between two looks at the schedules, so that a clock step or a schedule
/// moved by another process is noticed within a second.
const MAX_WAIT_MS: i64 = 1000;

/// Starts the scheduler thread over shard 0's pool; `wake` is shard 0's fetcher wake-up,
/// pulled after each enqueue so the slot's task runs without waiting for a poll.
pub(super) fn start<C: R2D2Connection + StoreConnection + Send + 'static>(
    pool: Pool<ConnectionManager<C>>,
    schedules: Vec<Periodic>,
    wake: Sender<()>,
    stop: Receiver<()>,
) -> Spawned {
    let known = vec![None; schedules.len()];
    let s = Scheduler {
        conn: Conn::new(pool),
        schedules,
        known,
        wake,
        backoff: Backoff::default(),
    };
    crate::supervise::spawn("tend-scheduler".into(), move || {
        let s = std::cell::RefCell::new(s);
        supervise(
            Some(&stop),
            || s.borrow_mut().run(&stop),
            // The connection is dropped (rolling back a transaction a panic left open); the
            // next tick reads every schedule afresh from the database.
            || {
                let mut s = s.borrow_mut();
                s.conn.reset();
                s.known.iter_mut().for_each(|k| *k = None);
            },
        );
    })
}

struct Scheduler<C: R2D2Connection + StoreConnection + 'static> {
    conn: Conn<C>,
    schedules: Vec<Periodic>,
    /// Per schedule, the last slot this process saw enqueued (by anyone); `None`: read it.
    known: Vec<Option<i64>>,
    wake: Sender<()>,
    backoff: Backoff,
}

impl<C: R2D2Connection + StoreConnection + 'static> Scheduler<C> {
    fn run(&mut self, stop: &Receiver<()>) {
        loop {
            fault::hit("scheduler");
            let wait = self.tick();
            select! {
                recv(stop) -> _ => return,
                recv(after(wait)) -> _ => {}
            }
        }
    }

    /// Enqueues what is due; returns how long to sleep.
    fn tick(&mut self) -> Duration {
        let now = now_ms();
        let mut next = now.saturating_add(MAX_WAIT_MS);
        let mut failed = false;
        for i in 0..self.schedules.len() {
            match self.step(i, now) {
                Ok(n) => next = next.min(n),
                Err(e) => {
                    failed = true;
                    log::warn!(
                        "tend: periodic schedule `{}`: {e}; retrying (no slot is lost: a \
                         late slot is enqueued by its missed-slot policy)",
                        self.schedules[i].name
                    );
                }
            }
        }
        if failed {
            return self.backoff.next();
        }
        self.backoff.reset();
        let left = next.saturating_sub(now_ms()).clamp(1, MAX_WAIT_MS);
        Duration::from_millis(left as u64)
    }

    /// Enqueues schedule `i`'s due slots if any; returns when to look at it again (epoch ms).
    fn step(&mut self, i: usize, now: i64) -> Result<i64, String> {
        let p = &self.schedules[i];
        let Some(latest) = p.slot_at_or_before(now) else {
            return Ok(p.slot_after(now)); // a cron schedule with no past occurrence
        };
        if let Some(last) = self.known[i] {
            if last >= latest {
                return Ok(p.slot_after(last));
            }
        }
        let name = p.name.clone();
        let stored = self
            .conn
            .with(|c| c.schedule_get(&name))
            .map_err(|e| e.to_string())?;
        let Some(stored) = stored else {
            // A new schedule: the slot in progress counts as done, so that registering (or
            // deploying) it does not run it at once; its first run is the next slot.
            let row = ScheduleRow {
                name,
                spec: p.spec(),
                last_slot_ms: latest,
                next_slot_ms: p.slot_after(latest),
                updated_at: now,
            };
            let created = self
                .conn
                .with(|c| c.schedule_create(&row))
                .map_err(|e| e.to_string())?;
            if created {
                log::info!(
                    "tend: periodic schedule `{}` ({}) created; first run at {} ms",
                    row.name,
                    row.spec,
                    row.next_slot_ms
                );
            }
            return Ok(now); // read it back
        };
        let last = stored.last_slot_ms;
        let slots = p.due_slots(last, now);
        let Some(&new_last) = slots.last() else {
            self.known[i] = Some(last);
            return Ok(p.slot_after(last.max(latest)));
        };
        if slots[0] > p.slot_after(last) {
            log::info!(
                "tend: periodic schedule `{name}` missed slots after {last} ms; enqueueing {} \
                 of them ({:?})",
                slots.len(),
                p.missed
            );
        }
        let rows = p.rows(&slots, now).map_err(|e| {
            log::error!("tend: periodic schedule `{name}` could not build its task: {e}");
            e.to_string()
        })?;
        let row = ScheduleRow {
            name,
            spec: p.spec(),
            last_slot_ms: new_last,
            next_slot_ms: p.slot_after(new_last),
            updated_at: now,
        };
        let moved = self
            .conn
            .with(|c| c.schedule_advance(last, &row, &rows))
            .map_err(|e| e.to_string())?;
        if moved {
            log::debug!(
                "tend: periodic schedule `{}` enqueued slot(s) {slots:?}",
                row.name
            );
            self.known[i] = Some(new_last);
            let _ = self.wake.try_send(());
            Ok(row.next_slot_ms)
        } else {
            // Another process enqueued them first: read its result.
            self.known[i] = None;
            Ok(now)
        }
    }
}
