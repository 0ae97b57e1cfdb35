//! The fetcher: claims due tasks in batches, within the pool's capacity, and claims the tasks
//! the outbox hands over right after their commit.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{after, select, Receiver, Sender};
use diesel::r2d2::{ConnectionManager, Pool, R2D2Connection};

use super::complete::{Backoff, Conn};
use super::run::random_token;
use super::{Config, Job, Lease, Shared};
use crate::events::{Event, TaskInfo};
use crate::store::{now_ms, Claim, StoreConnection};
use crate::TaskStatus;

pub(super) struct Channels {
    pub shard: usize,
    pub jobs: Sender<Job>,
    pub stop: Receiver<()>,
    pub wake: Receiver<()>,
    pub freed: Receiver<()>,
    pub dispatch: Receiver<i64>,
}

pub(super) fn fetcher<C: R2D2Connection + StoreConnection + 'static>(
    pool: Pool<ConnectionManager<C>>,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    mut ch: Channels,
) {
    let mut conn = Conn::new(pool);
    let capacity = shared.capacity;
    // Claim only once a useful batch fits, so that fast tasks do not cost a claim each.
    let low_water = (cfg.batch_size / 2).max(1).min(capacity);
    let mut backoff = Backoff::default();
    // Ids handed over by the outbox, waiting for a targeted claim.
    let mut handed: Vec<i64> = Vec::new();
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let inflight = shared.inflight.lock().expect("inflight lock").len();
        let free = capacity.saturating_sub(inflight);
        let full = free == 0 || (free < low_water && inflight > 0 && handed.is_empty());
        // With shard affinity, a shard given to other processes is only claimed from for
        // this process's own hand-offs.
        let idle = handed.is_empty() && !shared.assigned.load(Ordering::Relaxed);
        if idle {
            select! {
                recv(ch.stop) -> _ => return,
                recv(ch.wake) -> _ => {},
                recv(ch.dispatch) -> id => match id {
                    Ok(id) => handed.push(id),
                    // Every outbox is gone: a closed channel is always ready, so stop
                    // selecting on it or this loop would spin.
                    Err(_) => ch.dispatch = crossbeam_channel::never(),
                },
                recv(after(cfg.poll_interval)) -> _ => {},
            }
            continue;
        }
        if full {
            select! {
                recv(ch.stop) -> _ => return,
                recv(ch.freed) -> _ => {},
                recv(after(cfg.poll_interval)) -> _ => {},
            }
            continue;
        }
        let limit = free.min(cfg.batch_size);
        let now = now_ms();
        let targeted = !handed.is_empty();
        let ids: Vec<i64> = if targeted {
            handed.drain(..limit.min(handed.len())).collect()
        } else {
            Vec::new()
        };
        let claim = Claim {
            now,
            lease_until: now + cfg.lease.as_millis() as i64,
            token: random_token(),
            owner: &cfg.owner,
            limit: limit as i64,
            ids: targeted.then_some(&ids[..]),
        };
        match conn.with(|c| c.claim(&claim)) {
            Ok(rows) => {
                backoff.reset();
                let n = rows.len();
                if n > 0 {
                    let mut map = shared.inflight.lock().expect("inflight lock");
                    for r in &rows {
                        map.insert(r.task.id, Lease::new(claim.token));
                    }
                }
                for r in rows {
                    let info = TaskInfo {
                        id: r.task.id,
                        signature: &r.task.method_sign_name,
                        shard_key: r.task.shard_key,
                        attempt: r.task.execute_times,
                    };
                    cfg.events.emit(Event::Claimed(info));
                    if r.prev_status == TaskStatus::Running.as_i32() {
                        log::warn!(
                            "tend: task {} ({}) claimed again: the lease of its previous attempt \
                             expired (that worker crashed, was killed, or hung)",
                            info.id,
                            info.signature
                        );
                        cfg.events.emit(Event::LeaseExpired(info));
                    }
                    let _ = ch.jobs.send(Job {
                        shard: ch.shard,
                        claimed: r,
                    });
                }
                if targeted || n == limit {
                    continue; // more may be due or handed over
                }
            }
            Err(e) => {
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
                continue;
            }
        }
        select! {
            recv(ch.stop) -> _ => return,
            recv(ch.wake) -> _ => {},
            recv(ch.dispatch) -> id => match id {
                Ok(id) => {
                    handed.push(id);
                    handed.extend(ch.dispatch.try_iter().take(cfg.batch_size * 4));
                }
                Err(_) => ch.dispatch = crossbeam_channel::never(),
            },
            recv(after(cfg.poll_interval)) -> _ => {},
        }
    }
}
