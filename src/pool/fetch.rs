//! The fetcher: claims due tasks in batches, within the pool's capacity, and claims the tasks
//! the outbox hands over right after their commit. A shard has one or two fetchers (see
//! `Config::claimers`); they share the shard's slots through `Shared::reserve`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{after, select, Receiver, Sender};
use diesel::r2d2::R2D2Connection;

use super::complete::{self, Backoff, Conn, ConnError};
use super::{Config, Job, Lease, Shared};
use crate::events::Event;
use crate::exec::Done;
use crate::status::TaskStatus;
use crate::store::row::{Claim, Claimed};
use crate::store::StoreConnection;
use crate::supervise::{fault, supervise};
use crate::util::now_ms;
use crate::util::random_token;

pub(super) struct Channels {
    pub shard: usize,
    pub jobs: Sender<Job>,
    pub stop: Receiver<()>,
    pub wake: Receiver<()>,
    /// A slot freed (a handler returned) or an outcome was written.
    pub freed: Receiver<()>,
    pub dispatch: Receiver<(i64, usize)>,
    /// The due-probe interval, for the shard's one prober (`WakeUp::Probe`, see `wake`).
    pub probe: Option<std::time::Duration>,
    /// On a single-writer backend: the shard's outcome queue, so that outcomes are written in
    /// the claim's transaction (and the sender to give them back if that fails).
    pub outcomes: Option<(Receiver<Done>, Sender<Done>)>,
}

/// The fetcher thread: [`fetch_loop`] under [`supervise`], which survives a panic. The
/// connection is dropped after one (diesel reports a connection with an open transaction as
/// broken and r2d2 discards it, which rolls back and releases SQLite's write lock), so the
/// next pass takes a fresh one; slots the pass had reserved are freed by its [`Reserved`]
/// guard, and rows it had already leased lapse and are claimed again.
pub(super) fn fetcher<C: R2D2Connection + StoreConnection + 'static>(
    mut conn: Conn<C>,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    mut ch: Channels,
) {
    let stop = ch.stop.clone();
    let conn = std::cell::RefCell::new(&mut conn);
    supervise(
        Some(&stop),
        || fetch_loop(&mut conn.borrow_mut(), &cfg, &shared, &mut ch),
        || conn.borrow_mut().reset(),
    );
}

/// Slots reserved for a claim: freed when dropped (also when a panic unwinds), unless handed
/// to workers.
struct Reserved<'a> {
    shared: &'a Shared,
    n: usize,
}

impl Reserved<'_> {
    /// Frees `n` of the slots now.
    fn free(&mut self, n: usize) {
        let n = n.min(self.n);
        self.shared.free(n);
        self.n -= n;
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.shared.free(self.n);
    }
}

/// Outcomes a single-writer fetcher took to write with its claim: given back to the completer
/// when dropped (after a failed write, or when a panic unwinds), unless written.
struct Taken<'a> {
    outcomes: Vec<Done>,
    back: Option<&'a Sender<Done>>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Some(tx) = self.back {
            for d in self.outcomes.drain(..) {
                let _ = tx.send(d);
            }
        }
    }
}

fn fetch_loop<C: R2D2Connection + StoreConnection + 'static>(
    conn: &mut Conn<C>,
    cfg: &Arc<Config>,
    shared: &Arc<Shared>,
    ch: &mut Channels,
) {
    let gate = &cfg.queues;
    // Claim only once a whole batch fits (the capacity leaves room for two), so that fast
    // tasks do not cost a claim each; an idle pool claims whatever is due. Workers wake the
    // fetchers when this much room is free (`Shared::free_one`).
    let low_water = shared.low_water(cfg.batch_size);
    let mut backoff = Backoff::default();
    // Ids handed over by the outbox (with their queue), waiting for a targeted claim.
    let mut handed: Vec<(i64, usize)> = Vec::new();
    // Per queue, whether an untargeted claim is due: at start, once per poll interval, after a
    // wake, and right after a claim of that queue that filled its batch (more may be due). A
    // targeted claim of handed ids does not make one due, so hand-offs cost one claim, not two.
    let mut pending = vec![true; gate.len()];
    // The queue the next untargeted claim looks at first: queues take turns.
    let mut turn = 0;
    let mut next_poll = Instant::now();
    let mut next_probe = Instant::now();
    // Bad-row isolation (see `Isolation`): the current cap on an untargeted claim's size.
    let mut iso = Isolation::new(cfg.batch_size);
    // Order per key (see `Line`): when each queue's blocked rows were last put in line, and
    // when the line is next swept for rows whose release was missed.
    let mut line = Line::new(gate.len());
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if Instant::now() >= next_poll {
            pending.fill(true);
            next_poll = super::later(cfg.poll_interval);
        }
        if shared.assigned.load(Ordering::Relaxed) && line.sweep_due() && line.sweep(conn, gate) {
            pending.fill(true);
        }
        // With shard affinity, a shard given to other processes is only claimed from for this
        // process's own hand-offs.
        let polling = pending.contains(&true) && shared.assigned.load(Ordering::Relaxed);
        let targeted = !handed.is_empty();
        let reserved = if targeted {
            shared.reserve(1, cfg.batch_size.min(handed.len()))
        } else if polling {
            let idle = shared.busy.load(Ordering::SeqCst) == 0;
            let min = if idle { 1 } else { low_water.min(iso.cap) };
            shared.reserve(min, iso.cap)
        } else {
            0
        };
        let mut slots = Reserved {
            shared,
            n: reserved,
        };
        // The queue to claim from and the room its limits leave (taken from the gate now).
        let mut chosen = None;
        if targeted && reserved > 0 {
            let q = handed[0].1;
            match gate.take(q, reserved) {
                0 => {
                    // Full: its handed rows stay due in the table for a later claim.
                    handed.retain(|h| h.1 != q);
                    pending[q] = true;
                    continue;
                }
                room => chosen = Some((q, room)),
            }
        } else if reserved > 0 {
            for k in 0..gate.len() {
                let q = (turn + k) % gate.len();
                if !pending[q] {
                    continue;
                }
                let room = gate.take(q, reserved);
                if room > 0 {
                    chosen = Some((q, room));
                    break;
                }
            }
        }
        let Some((queue, room)) = chosen else {
            drop(slots);
            // Nothing to claim, or no room: wait for a reason to look again (`next_poll` is
            // in the future here, so this never spins).
            let mut wait = next_poll.saturating_duration_since(Instant::now());
            if polling {
                // A queue out of tokens: look again when it has one.
                if let Some(t) = gate.next_token_in() {
                    wait = wait.min(t.max(std::time::Duration::from_millis(1)));
                }
            }
            // Between polls, the due-probe (see `wake`): a claim only when a row is due. Not
            // while a poll is due already (then there is no room to claim into).
            let assigned = shared.assigned.load(Ordering::Relaxed);
            if let Some(every) = ch.probe.filter(|_| !polling && assigned) {
                if Instant::now() >= next_probe {
                    next_probe = super::later(every);
                    if super::wake::probe(conn, gate.names(), &iso.excluded) {
                        pending.fill(true);
                        continue;
                    }
                }
                wait = wait.min(next_probe.saturating_duration_since(Instant::now()));
            }
            select! {
                recv(ch.stop) -> _ => return,
                recv(ch.wake) -> _ => pending.fill(true),
                recv(ch.freed) -> _ => {},
                recv(ch.dispatch) -> id => match id {
                    Ok(id) => {
                        handed.push(id);
                        handed.extend(ch.dispatch.try_iter().take(cfg.batch_size * 4));
                    }
                    // Every outbox is gone: a closed channel is always ready, so stop
                    // selecting on it or this loop would spin.
                    Err(_) => ch.dispatch = crossbeam_channel::never(),
                },
                recv(after(wait)) -> _ => {},
            }
            continue;
        };
        slots.free(reserved - room);
        let room_guard = Room {
            gate,
            queue,
            n: room,
        };
        let ids: Vec<i64> = if targeted {
            let mut ids = Vec::with_capacity(room);
            handed.retain(|&(id, q)| {
                if q == queue && ids.len() < room {
                    ids.push(id);
                    false
                } else {
                    true
                }
            });
            ids
        } else {
            Vec::new()
        };
        // Almost always empty (cloning it costs nothing then).
        let excluded = iso.excluded.clone();
        let token = random_token();
        // The claim as of `now`, read when its statement runs (each retry of `Conn::with`
        // reads the clock again): a claim built before a wait (a pool checkout, a locked
        // SQLite file, retries of a lock conflict) would otherwise write a lease that ends
        // too early, or has already ended, and its rows would be claimed again while they run.
        let claim = |now: i64| Claim {
            now,
            lease_until: now.saturating_add(crate::util::millis(cfg.lease)),
            token,
            owner: &cfg.owner,
            queue: Some(gate.name(queue)),
            limit: room as i64,
            ids: targeted.then_some(&ids[..]),
            exclude: &excluded,
        };
        let claimed_now = std::cell::Cell::new(0);
        let claim_at = |now: i64| {
            claimed_now.set(now);
            claim(now)
        };
        let mut taken = Taken {
            outcomes: match &ch.outcomes {
                Some((rx, _)) => rx.try_iter().take(4 * cfg.batch_size).collect(),
                None => Vec::new(),
            },
            back: ch.outcomes.as_ref().map(|(_, tx)| tx),
        };
        if fault::take("fetcher") {
            let _ = conn.with(panic_in_transaction);
        }
        let claimed = if taken.outcomes.is_empty() {
            conn.with(|c| c.claim(&claim_at(now_ms())))
        } else {
            let (completes, finishes) = complete::group(&taken.outcomes);
            match conn.with(|c| c.write_and_claim(&completes, &finishes, &claim_at(now_ms()))) {
                Ok(w) => {
                    for ((_, ids), deleted) in completes.iter().zip(&w.deleted) {
                        complete::report_completed(cfg, ids.len(), *deleted);
                    }
                    complete::report_finished(cfg, finishes.len(), w.held.len());
                    complete::release_lines(conn, &taken.outcomes);
                    complete::forget(shared, &mut taken.outcomes);
                    Ok(w.claimed)
                }
                // The completer writes them, with its retries (`taken` gives them back).
                Err(e) => Err(e),
            }
        };
        match claimed {
            Ok(rows) => {
                backoff.reset();
                let rows = confirm_lease(conn, cfg, ch.shard, token, claimed_now.get(), rows);
                if !targeted {
                    iso.succeeded();
                }
                let n = rows.len();
                room_guard.used(n);
                slots.free(room - n);
                hand_to_workers(cfg, shared, ch, token, queue, rows);
                slots.n = 0; // the workers free them
                if !targeted {
                    pending[queue] = n == room;
                    // A short claim may have read past rows waiting behind their key: put
                    // them in line, and claim again if that moved any.
                    if n < room && line.defer(conn, gate, queue) {
                        pending[queue] = true;
                    }
                    turn = queue + 1;
                    if !pending.contains(&true) {
                        next_poll = super::later(cfg.poll_interval);
                    }
                }
            }
            Err(ConnError::Db(e)) if !targeted && iso.may_be_a_row(&e) => {
                drop(slots);
                drop(room_guard);
                if room > 1 {
                    // One row may be failing the whole claim: claim half as many at once.
                    iso.cap = (room / 2).max(1);
                    log::warn!(
                        "tend: a claim of {room} task(s) of queue {} from shard {} failed \
                         ({e}); claiming {} at a time to isolate a bad row",
                        gate.name(queue),
                        ch.shard,
                        iso.cap
                    );
                    continue;
                }
                if iso.isolate(conn, cfg, ch.shard, gate.name(queue), &e) {
                    continue;
                }
                let wait = backoff.next();
                log::warn!(
                    "tend: claiming tasks from shard {} failed ({e}); retrying in {wait:?}",
                    ch.shard
                );
                select! {
                    recv(ch.stop) -> _ => return,
                    recv(after(wait)) -> _ => {},
                }
            }
            Err(e) => {
                drop(slots);
                drop(room_guard);
                let wait = backoff.next();
                log::warn!(
                    "tend: claiming tasks from shard {} failed ({e}); retrying in {wait:?}",
                    ch.shard
                );
                // Handed-over ids stay due in the table; the poll picks them up.
                select! {
                    recv(ch.stop) -> _ => return,
                    recv(after(wait)) -> _ => {},
                }
            }
        }
    }
}

/// The rows of a claim that still hold its lease `token`, re-leased from now when the claim
/// took so long that its lease (`cfg.lease` from `claimed_now`, the time its statement was
/// built) has run at least half down by the time it returned. A claim's commit can wait far
/// longer than its statement ran: a Galera cluster blocks every commit until a dead node is
/// evicted (seconds), a synchronous standby or a stalled disk does the same. Its rows were then
/// leased for less than the lease, or not at all any more, and another claim (this pool's
/// next one, too) may already have taken them and be running them: the Galera failover test
/// saw three tasks run twice at once that way. So the lease is renewed under the claim's token
/// before any row runs; a row that no longer holds the token belongs to the claim that took
/// it and is dropped here, and when the renewal cannot be written none runs (their lease lapses
/// and a later claim takes them: delayed, never run twice at once).
fn confirm_lease<C: R2D2Connection + StoreConnection + 'static>(
    conn: &mut Conn<C>,
    cfg: &Config,
    shard: usize,
    token: i64,
    claimed_now: i64,
    mut rows: Vec<Claimed>,
) -> Vec<Claimed> {
    let lease = crate::util::millis(cfg.lease);
    let left = claimed_now.saturating_add(lease).saturating_sub(now_ms());
    if rows.is_empty() || left >= lease / 2 {
        return rows;
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.task.id).collect();
    match conn.with(|c| c.renew(token, &ids, now_ms().saturating_add(lease))) {
        Ok(held) if held.len() == ids.len() => {
            log::warn!(
                "tend: a claim of {} task(s) from shard {shard} returned with {left} ms of its \
                 {lease} ms lease left (its commit waited); their leases were renewed before \
                 they run",
                rows.len()
            );
        }
        Ok(held) => {
            let before = rows.len();
            rows.retain(|r| held.contains(&r.task.id));
            log::warn!(
                "tend: a claim of {before} task(s) from shard {shard} returned with {left} ms of \
                 its {lease} ms lease left (its commit waited): {} of them were meanwhile \
                 claimed by another claim, which runs them; the other {} were renewed and run \
                 here",
                before - rows.len(),
                rows.len()
            );
        }
        Err(e) => {
            log::warn!(
                "tend: a claim of {} task(s) from shard {shard} returned with {left} ms of its \
                 {lease} ms lease left (its commit waited), and renewing their leases failed \
                 ({e}): none runs here; a later claim takes them once the lease lapsed",
                rows.len()
            );
            rows.clear();
        }
    }
    rows
}

/// Order per key: rows that wait behind an earlier row of their key are due, but no claim may
/// take them, and a claim walks past each one (one index probe each). After a claim came back
/// short, the fetcher moves them into the line (`Ops::defer_blocked`, at most once a second
/// per queue), where claims no longer read them; the completion of the row before releases
/// the next (`complete::release_lines`), and at start and every 30 s a sweep releases rows
/// whose release was missed (`Ops::release_orphans`) and holds rows whose priority is out of
/// range (`Ops::hold_out_of_range`), which no claim would ever read.
struct Line {
    deferred_at: Vec<Option<Instant>>,
    next_sweep: Instant,
}

/// How often blocked rows of one queue are put in line, at most.
const DEFER_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often the line is swept for rows whose release was missed.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// Rows per priority level one defer or sweep moves, at most.
const LINE_BATCH: i64 = 1000;

impl Line {
    fn new(queues: usize) -> Line {
        Line {
            deferred_at: vec![None; queues],
            // The first sweep runs at start: a process that died may have left rows behind.
            next_sweep: Instant::now(),
        }
    }

    fn sweep_due(&self) -> bool {
        Instant::now() >= self.next_sweep
    }

    /// Puts the blocked rows of `queue` in line; whether any moved.
    fn defer<C: R2D2Connection + StoreConnection + 'static>(
        &mut self,
        conn: &mut Conn<C>,
        gate: &super::queues::Gate,
        queue: usize,
    ) -> bool {
        if self.deferred_at[queue].is_some_and(|t| t.elapsed() < DEFER_EVERY) {
            return false;
        }
        self.deferred_at[queue] = Some(Instant::now());
        let name = gate.name(queue);
        match conn.with(|c| c.defer_blocked(name, now_ms(), LINE_BATCH)) {
            Ok(0) => false,
            Ok(n) => {
                log::debug!("tend: {n} task(s) of queue {name} wait in line behind their key");
                true
            }
            Err(e) => {
                log::debug!("tend: putting blocked tasks of queue {name} in line failed ({e})");
                false
            }
        }
    }

    /// Releases rows in line whose release was missed; whether any were.
    fn sweep<C: R2D2Connection + StoreConnection + 'static>(
        &mut self,
        conn: &mut Conn<C>,
        gate: &super::queues::Gate,
    ) -> bool {
        self.next_sweep = super::later(SWEEP_EVERY);
        let mut any = false;
        for name in gate.names() {
            match conn.with(|c| c.hold_out_of_range(name, now_ms())) {
                Ok(0) => {}
                Ok(n) => log::error!(
                    "tend: held {n} task(s) of queue {name} whose priority is outside {}..{} \
                     (no claim reads them); see their error message",
                    crate::queue::MIN_PRIORITY,
                    crate::queue::MAX_PRIORITY
                ),
                Err(e) => log::debug!("tend: holding out-of-range priorities failed ({e})"),
            }
            match conn.with(|c| c.release_orphans(name, now_ms(), LINE_BATCH)) {
                Ok(0) => {}
                Ok(n) => {
                    log::info!(
                        "tend: released {n} task(s) of queue {name} that waited in line behind \
                         a task no longer there"
                    );
                    any = true;
                }
                Err(e) => log::debug!("tend: sweeping the line of queue {name} failed ({e})"),
            }
        }
        any
    }
}

/// Room taken from a queue's limits for a claim: what the claim did not use is given back
/// when dropped (also when a panic unwinds).
struct Room<'a> {
    gate: &'a super::queues::Gate,
    queue: usize,
    n: usize,
}

impl Room<'_> {
    /// `n` claimed tasks keep their places (their workers give them back).
    fn used(mut self, n: usize) {
        self.n -= n.min(self.n);
    }
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        self.gate.unused(self.queue, self.n);
    }
}

/// Records the leases of freshly claimed rows and queues them for the workers (their slots
/// were reserved before the claim).
fn hand_to_workers(
    cfg: &Config,
    shared: &Shared,
    ch: &Channels,
    token: i64,
    queue: usize,
    rows: Vec<Claimed>,
) {
    if rows.is_empty() {
        return;
    }
    {
        let mut map = shared.inflight();
        for r in &rows {
            map.insert(r.task.id, Lease::new(token));
        }
    }
    let mut batch = Vec::with_capacity(rows.len());
    for r in rows {
        let info = crate::exec::info(&r.task);
        cfg.exec.events.emit(Event::Claimed(info));
        if r.prev_status == TaskStatus::Running.as_i32() {
            log::warn!(
                "tend: task {} ({}) claimed again: the lease of its previous attempt expired \
                 (that worker crashed, was killed, or hung)",
                info.id,
                info.signature
            );
            cfg.exec.events.emit(Event::LeaseExpired(info));
        }
        batch.push(r);
    }
    // One hand-off for the whole claim; workers take the rows in claim order.
    batch.reverse();
    let _ = ch.jobs.send(Job {
        shard: ch.shard,
        queue,
        claimed: batch,
    });
}

/// Isolates a row that fails every claim it is in, so that it cannot stop the claims of every
/// other row. tend's own statements cannot fail on any stored value (their arithmetic
/// saturates), so this is the second line of defence: against what tend cannot foresee, such
/// as an application's trigger, a check constraint or a type the schema was altered to.
///
/// A claim that fails with a database error (not a lost connection or a lock conflict) is
/// retried at once with half as many rows, down to one. When a claim of one row fails, that
/// row's id is read alone (`Ops::first_due`, which reads no other column) and claimed alone;
/// if that fails too, the row is held with the error as its message (`Ops::hold_unclaimable`),
/// visible to operators and never deleted. If even that update fails, this fetcher leaves the
/// row out of its claims until the process restarts, logging it as an error. The cap doubles
/// back after each successful claim.
struct Isolation {
    batch: usize,
    cap: usize,
    /// Rows that could neither be claimed nor held (bounded).
    excluded: Vec<i64>,
}

/// At most this many rows are left out of claims by one fetcher.
const MAX_EXCLUDED: usize = 256;

impl Isolation {
    fn new(batch: usize) -> Isolation {
        Isolation {
            batch,
            cap: batch,
            excluded: Vec::new(),
        }
    }

    fn succeeded(&mut self) {
        self.cap = (self.cap * 2).min(self.batch);
    }

    /// Whether a failed claim may have failed because of a row's values: a database error
    /// that is neither a lock conflict nor a statement cut short from outside (a killed or
    /// cancelled query, a lost connection, a timeout), which says nothing about the rows.
    fn may_be_a_row(&self, e: &diesel::result::Error) -> bool {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match e {
            E::DatabaseError(K::ClosedConnection | K::UnableToSendCommand, _) => false,
            E::DatabaseError(_, info) => {
                let m = info.message().to_ascii_lowercase();
                let cut_short = [
                    "interrupted",
                    "cancel",
                    "killed",
                    "terminating connection",
                    "lost connection",
                    "gone away",
                    "server closed the connection",
                    "timeout",
                    "shutdown",
                    "read-only",
                ]
                .iter()
                .any(|w| m.contains(w));
                !cut_short && !crate::error::is_transient(e)
            }
            E::DeserializationError(_) => true,
            _ => false,
        }
    }

    /// After a one-row claim failed with `err`: finds the row and claims it alone, then holds
    /// or excludes it. Returns whether it made progress (so the fetcher should claim again at
    /// once).
    fn isolate<C: R2D2Connection + StoreConnection + 'static>(
        &mut self,
        conn: &mut Conn<C>,
        cfg: &Config,
        shard: usize,
        queue: &str,
        batch_err: &diesel::result::Error,
    ) -> bool {
        let now = now_ms();
        let excluded = self.excluded.clone();
        let id = match conn.with(|c| c.first_due(queue, now, &excluded)) {
            Ok(Some(id)) => id,
            // Nothing due, or the database is unreachable: not a row's fault.
            Ok(None) | Err(_) => return false,
        };
        // The same claim, of this row alone (released at once if it succeeds: the fetcher
        // claims it again the normal way).
        let probe = Claim {
            now,
            lease_until: now.saturating_add(crate::util::millis(cfg.lease)),
            token: random_token(),
            owner: &cfg.owner,
            queue: Some(queue),
            limit: 1,
            ids: Some(&[id]),
            exclude: &[],
        };
        // A row that fails every claim fails this one twice; a failure from outside (one
        // killed statement) does not, and a healthy row must never be held for it.
        let mut err = None;
        for _ in 0..2 {
            match conn.with(|c| c.claim(&probe)) {
                Ok(rows) => {
                    // It can be claimed: the failure was not this row's. Hand it back unstarted.
                    let released: Vec<_> =
                        rows.into_iter().map(|r| Done::release(r.task)).collect();
                    let (completes, finishes) = complete::group(&released);
                    debug_assert!(completes.is_empty());
                    let _ = conn.with(|c| c.finish(&finishes));
                    return false;
                }
                Err(ConnError::Db(e)) if self.may_be_a_row(&e) => err = Some(e),
                Err(_) => return false,
            }
        }
        let Some(err) = err else { return false };
        let message = crate::util::truncate(
            &format!(
                "held: no claim could lease this row ({err}; the claim before failed with: \
                 {batch_err}). Fix the row or what the error names (a trigger, a constraint, a \
                 column type), then `tend tasks retry {id}`"
            ),
            64 * 1024,
        );
        match conn.with(|c| c.hold_unclaimable(id, now, &message)) {
            Ok(_) => {
                log::error!("tend: task {id} on shard {shard} {message}");
                true
            }
            Err(e) => {
                if self.excluded.len() < MAX_EXCLUDED {
                    self.excluded.push(id);
                }
                log::error!(
                    "tend: task {id} on shard {shard} can be neither claimed ({err}) nor held \
                     ({e}); this process leaves it out of its claims until it restarts"
                );
                true
            }
        }
    }
}

/// The fetcher's fault point (tests only): panics inside a transaction that has written, so
/// that on SQLite the connection holds the write lock when the thread unwinds.
fn panic_in_transaction<C: diesel::Connection>(c: &mut C) -> diesel::QueryResult<()> {
    c.transaction(|c| {
        c.batch_execute("UPDATE consistency_task SET task_status = task_status WHERE id < 0")?;
        panic!("tend test fault: injected panic in a fetcher thread, inside a transaction");
    })
}
