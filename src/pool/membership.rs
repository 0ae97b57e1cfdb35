//! Shard affinity: live processes register in `tend_node` (on shard 0) and split the shards
//! among themselves by rendezvous hashing (Thaler & Ravishankar's highest-random-weight), so
//! every process computes the same assignment from the same live set without a leader.
//!
//! Only contention depends on this, never correctness: while membership changes two processes
//! may poll the same shard, and row leases with `SKIP LOCKED` still keep each task exclusive.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, tick, Receiver};
use diesel::r2d2::{ConnectionManager, Pool, R2D2Connection};

use super::complete::{Conn, ConnError};
use super::{Config, Shared};
use crate::error::Error;
use crate::store::StoreConnection;
use crate::supervise::{fault, supervise, Spawned};
use crate::util::now_ms;

/// Registers this process and starts the heartbeat thread.
pub(super) fn start<C: R2D2Connection + StoreConnection + Send + 'static>(
    pool: Pool<ConnectionManager<C>>,
    cfg: Arc<Config>,
    shared: Vec<Arc<Shared>>,
    stop: Receiver<()>,
) -> Result<Spawned, Error> {
    let mut conn = Conn::new(pool);
    let node = register(&mut conn, &cfg)?;
    crate::shard::default_snowflake().set_node_id(node as u16);
    log::info!("tend: registered as node {node} ({})", cfg.owner);
    let mut m = Membership {
        conn,
        cfg,
        shared,
        node,
    };
    m.refresh();
    Ok(crate::supervise::spawn(
        "tend-membership".into(),
        move || {
            let m = std::cell::RefCell::new(m);
            supervise(
                Some(&stop),
                || m.borrow_mut().run(&stop),
                // The connection is dropped; the next heartbeat takes a fresh one.
                || m.borrow_mut().conn.reset(),
            );
            m.into_inner().leave();
        },
    ))
}

struct Membership<C: R2D2Connection + StoreConnection + 'static> {
    conn: Conn<C>,
    cfg: Arc<Config>,
    shared: Vec<Arc<Shared>>,
    node: i32,
}

/// Heartbeats every quarter lease; a node silent for three quarters of a lease is dead, so its
/// shards move within one lease.
fn period(cfg: &Config) -> Duration {
    cfg.lease / 4
}

fn stale_after(cfg: &Config) -> i64 {
    crate::util::millis(cfg.lease) / 4 * 3
}

/// Takes the lowest free node slot.
fn register<C: R2D2Connection + StoreConnection + 'static>(
    conn: &mut Conn<C>,
    cfg: &Config,
) -> Result<i32, Error> {
    let now = now_ms();
    let stale_before = now - stale_after(cfg);
    let live = conn
        .with(|c| c.node_live(stale_before))
        .map_err(ConnError::into_error)?;
    for candidate in (0..1024).filter(|n| !live.contains(n)) {
        let owner = cfg.owner.as_str();
        match conn.with(|c| c.node_claim(candidate, owner, now, stale_before)) {
            Ok(true) => return Ok(candidate),
            Ok(false) => continue,
            Err(e) => return Err(e.into_error()),
        }
    }
    Err(Error::invalid_setting(
        "shard_affinity",
        "all 1024 node slots are taken by live processes",
    ))
}

impl<C: R2D2Connection + StoreConnection + 'static> Membership<C> {
    fn run(&mut self, stop: &Receiver<()>) {
        let ticker = tick(period(&self.cfg));
        loop {
            select! {
                recv(stop) -> _ => break,
                recv(ticker) -> _ => {
                    fault::hit("membership");
                    self.refresh()
                }
            }
        }
    }

    /// Leaves the node registry when the pool stops.
    fn leave(mut self) {
        let (node, owner) = (self.node, self.cfg.owner.clone());
        if let Err(e) = self.conn.with(|c| c.node_leave(node, &owner)) {
            log::warn!("tend: could not leave the node registry ({e}); the slot expires by itself");
        }
    }

    /// Heartbeats, reads the live set and recomputes which shards this process polls.
    fn refresh(&mut self) {
        let now = now_ms();
        let (node, owner) = (self.node, self.cfg.owner.clone());
        match self.conn.with(|c| c.node_heartbeat(node, &owner, now)) {
            Ok(true) => {}
            Ok(false) => {
                // Our slot expired (a long pause) and may have been taken: register again.
                log::warn!("tend: node slot {node} was lost; registering again");
                match register(&mut self.conn, &self.cfg) {
                    Ok(n) => {
                        self.node = n;
                        crate::shard::default_snowflake().set_node_id(n as u16);
                    }
                    Err(e) => return self.fallback(&e.to_string()),
                }
            }
            Err(e) => return self.fallback(&e.to_string()),
        }
        let since = now - stale_after(&self.cfg);
        let live = match self.conn.with(|c| c.node_live(since)) {
            Ok(l) => l,
            Err(e) => return self.fallback(&e.to_string()),
        };
        let mine = assignment(self.node, &live, self.shared.len());
        for (i, sh) in self.shared.iter().enumerate() {
            let was = sh.assigned.swap(mine[i], Ordering::Relaxed);
            if was != mine[i] {
                log::info!(
                    "tend: node {} {} shard {i} ({} live node(s))",
                    self.node,
                    if mine[i] { "takes" } else { "hands over" },
                    live.len()
                );
            }
        }
    }

    /// Without a membership view, poll every shard: more contention, never a stranded shard.
    fn fallback(&self, why: &str) {
        log::warn!("tend: node registry unavailable ({why}); polling every shard meanwhile");
        for sh in &self.shared {
            sh.assigned.store(true, Ordering::Relaxed);
        }
    }
}

/// Which of `shards` this node polls. Each shard goes to `r = ceil(live / shards)` live nodes,
/// so every shard has a poller: rendezvous hashing with bounded loads (Mirrokni, Thorup and
/// Zadimoghaddam's consistent hashing with bounded loads, applied to highest-random-weight
/// ranking): shards are visited in order, and each takes the highest-ranked nodes still below
/// their share of the `shards × r` slots (`floor`, or `floor + 1` for the first few to get
/// there). Every process computes the same answer from the same live set, loads differ by at
/// most one, and a membership change moves few shards.
pub(super) fn assignment(node: i32, live: &[i32], shards: usize) -> Vec<bool> {
    let mut live: Vec<i32> = live.to_vec();
    if !live.contains(&node) {
        live.push(node);
    }
    live.sort_unstable();
    live.dedup();
    let r = live.len().div_ceil(shards).max(1);
    let slots = shards * r;
    let (base, extra) = (slots / live.len(), slots % live.len());
    let mut load = vec![0usize; live.len()];
    let mut above_base = 0;
    (0..shards)
        .map(|d| {
            let mut ranked: Vec<(u64, usize)> = live
                .iter()
                .enumerate()
                .map(|(i, &n)| (weight(n, d), i))
                .collect();
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            let mut chosen: Vec<usize> = Vec::with_capacity(r);
            for &(_, i) in &ranked {
                if chosen.len() == r {
                    break;
                }
                if load[i] < base || (load[i] == base && above_base < extra) {
                    if load[i] == base {
                        above_base += 1;
                    }
                    load[i] += 1;
                    chosen.push(i);
                }
            }
            // Never leave a shard short of pollers: top up by rank, whatever the loads.
            for &(_, i) in &ranked {
                if chosen.len() == r {
                    break;
                }
                if !chosen.contains(&i) {
                    load[i] += 1;
                    chosen.push(i);
                }
            }
            chosen.iter().any(|&i| live[i] == node)
        })
        .collect()
}

/// splitmix64 of (node, shard): a fixed hash, identical in every process.
fn weight(node: i32, shard: usize) -> u64 {
    let mut z = ((node as u64) << 32 ^ shard as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::assignment;

    #[test]
    fn every_shard_has_a_poller_and_views_agree() {
        for nodes in 1..8 {
            for shards in 1..6 {
                let live: Vec<i32> = (0..nodes).map(|n| n * 7 + 3).collect();
                let views: Vec<Vec<bool>> =
                    live.iter().map(|&n| assignment(n, &live, shards)).collect();
                for d in 0..shards {
                    let pollers = views.iter().filter(|v| v[d]).count();
                    let r = (nodes as usize).div_ceil(shards);
                    assert_eq!(pollers, r.max(1), "nodes {nodes} shards {shards} shard {d}");
                }
            }
        }
    }

    #[test]
    fn loads_are_balanced() {
        for nodes in 1..10 {
            for shards in 1..10 {
                let live: Vec<i32> = (0..nodes).map(|n| n * 13 + 1).collect();
                let loads: Vec<usize> = live
                    .iter()
                    .map(|&n| assignment(n, &live, shards).iter().filter(|m| **m).count())
                    .collect();
                let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
                assert!(max - min <= 1, "nodes {nodes} shards {shards}: {loads:?}");
            }
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_shards() {
        let live = [1, 2, 3];
        let before: Vec<Vec<bool>> = live.iter().map(|&n| assignment(n, &live, 12)).collect();
        let after: Vec<Vec<bool>> = [1, 2].iter().map(|&n| assignment(n, &[1, 2], 12)).collect();
        for d in 0..12 {
            // Shards that node 3 did not hold keep their pollers (r stays 1 with 12 shards).
            if !before[2][d] {
                assert_eq!(before[0][d], after[0][d]);
                assert_eq!(before[1][d], after[1][d]);
            }
            assert!(after[0][d] || after[1][d]);
        }
    }
}
