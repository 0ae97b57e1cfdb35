//! The queues a pool works and their limits: how many of each queue's tasks run at once and
//! how many may start per period, counted in this process. A fetcher takes room for a claim
//! before it claims ([`Gate::take`]) and gives back what the claim did not use; a worker gives
//! a task's place back when its handler returns ([`Gate::done`]). A full queue is not claimed
//! from at all, so no row waits in memory holding a lease.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::queue::{Bucket, Queue};

/// One worked queue.
#[derive(Debug)]
struct State {
    limits: Queue,
    /// Claimed (or being claimed) and whose handler has not returned.
    running: usize,
    bucket: Option<Bucket>,
}

/// The queues a pool works, in the order given (`default` first unless skipped).
#[derive(Debug)]
pub(crate) struct Gate {
    names: Vec<String>,
    state: Mutex<Vec<State>>,
}

impl Gate {
    pub(crate) fn new(queues: Vec<(String, Queue)>) -> Gate {
        let (names, state) = queues
            .into_iter()
            .map(|(name, limits)| {
                let state = State {
                    limits,
                    running: 0,
                    bucket: limits.rate.map(|(n, per)| Bucket::new(n, per)),
                };
                (name, state)
            })
            .unzip();
        Gate {
            names,
            state: Mutex::new(state),
        }
    }

    fn state(&self) -> MutexGuard<'_, Vec<State>> {
        // Every change is a whole update of a counter: a poisoned lock holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many queues.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// Queue `i`'s name.
    pub(crate) fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The names, in order.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The index of queue `name`, if this pool works it.
    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Whether a task of queue `i` may go to a worker without a claim (its queue has no limit).
    pub(crate) fn unlimited(&self, i: usize) -> bool {
        self.state()[i].limits.unlimited()
    }

    /// Room for a claim of up to `want` tasks of queue `i`, taken now (0: the queue is full or
    /// out of tokens). Give back what the claim did not use with [`Gate::unused`].
    pub(crate) fn take(&self, i: usize, want: usize) -> usize {
        let mut all = self.state();
        let q = &mut all[i];
        let mut room = want;
        if let Some(max) = q.limits.concurrency {
            room = room.min(max.saturating_sub(q.running));
        }
        if let Some(b) = &mut q.bucket {
            room = room.min(b.available(Instant::now()));
            b.take(room);
        }
        q.running += room;
        room
    }

    /// Gives back `n` places of a [`Gate::take`] that no claimed task used.
    pub(crate) fn unused(&self, i: usize, n: usize) {
        if n == 0 {
            return;
        }
        let mut all = self.state();
        let q = &mut all[i];
        q.running = q.running.saturating_sub(n);
        if let Some(b) = &mut q.bucket {
            b.give_back(n);
        }
    }

    /// A task of queue `i` went to a worker without a claim (an outbox's hand-over).
    pub(crate) fn started(&self, i: usize) {
        self.state()[i].running += 1;
    }

    /// A task of queue `i` finished (its handler returned, or it was handed back unstarted).
    /// Returns whether the queue has a concurrency limit (a fetcher may be waiting for the
    /// place this freed).
    pub(crate) fn done(&self, i: usize) -> bool {
        let mut all = self.state();
        all[i].running = all[i].running.saturating_sub(1);
        all[i].limits.concurrency.is_some()
    }

    /// How long until a rate-limited queue that is out of tokens has one again (`None`: no
    /// queue waits for tokens).
    pub(crate) fn next_token_in(&self) -> Option<Duration> {
        let now = Instant::now();
        self.state()
            .iter_mut()
            .filter_map(|q| q.bucket.as_mut().map(|b| b.next_token_in(now)))
            .filter(|d| !d.is_zero())
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_and_rate_bound_the_room() {
        let g = Gate::new(vec![
            ("default".into(), Queue::new()),
            ("mail".into(), Queue::new().concurrency(3)),
            (
                "sms".into(),
                Queue::new().rate_limit(5, Duration::from_secs(3600)),
            ),
        ]);
        assert_eq!(g.take(0, 100), 100);
        assert_eq!(g.take(1, 100), 3);
        assert_eq!(g.take(1, 100), 0);
        g.unused(1, 2);
        assert_eq!(g.take(1, 100), 2);
        g.done(1);
        assert_eq!(g.take(1, 100), 1);
        assert_eq!(g.take(2, 2), 2);
        assert_eq!(g.take(2, 100), 3);
        assert_eq!(g.take(2, 100), 0);
        assert!(g.next_token_in().unwrap() > Duration::from_secs(600));
        g.unused(2, 1);
        assert_eq!(g.take(2, 100), 1);
        assert_eq!(g.index("sms"), Some(2));
        assert_eq!(g.index("nope"), None);
        assert!(g.unlimited(0) && !g.unlimited(1) && !g.unlimited(2));
    }
}
