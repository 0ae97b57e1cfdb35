//! The worker threads: take claimed tasks, run each through the executor, hand the outcome to
//! the shard's completer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{select, Receiver, Sender};

use super::{Config, Job, Shared};
use crate::events::Event;
use crate::exec::{info, run_one, Done};
use crate::supervise::{fault, supervise};

/// What a worker needs of each shard: its state, its completer and its fetchers' wake-ups.
pub(super) struct ShardLink {
    pub shared: Arc<Shared>,
    pub done: Sender<Done>,
    pub freed: Vec<Sender<()>>,
}

/// A worker thread: [`work_loop`] under [`supervise`]. A handler's panic is caught around the
/// handler (the task fails); a panic anywhere else in the loop is survived too: the task in
/// hand gives its slot back and is forgotten, so its lease lapses and it runs again.
pub(super) fn worker(
    cfg: Arc<Config>,
    shards: Vec<ShardLink>,
    jobs: (Receiver<Job>, Sender<Job>),
    stop: Receiver<()>,
) {
    let in_hand = std::cell::Cell::new(None);
    let queues = cfg.queues.clone();
    supervise(
        Some(&stop),
        || work_loop(&cfg, &shards, &jobs, &stop, &in_hand),
        || {
            if let Some((shard, queue, id)) = in_hand.take() {
                let shared: &Shared = &shards[shard].shared;
                queues.done(queue);
                shared.inflight().remove(&id);
                shared.free(1);
                log::error!(
                    "tend: task {id} was in hand when its worker panicked; it runs again once \
                     its lease lapses"
                );
            }
        },
    );
}

fn work_loop(
    cfg: &Config,
    shards: &[ShardLink],
    (jobs, again): &(Receiver<Job>, Sender<Job>),
    stop: &Receiver<()>,
    in_hand: &std::cell::Cell<Option<(usize, usize, i64)>>,
) {
    loop {
        let mut job = select! {
            recv(stop) -> _ => return,
            recv(jobs) -> r => match r { Ok(r) => r, Err(_) => return },
        };
        let Some(claimed) = job.claimed.pop() else {
            continue;
        };
        if !job.claimed.is_empty() {
            // The rest of the batch goes back at once, before anything here can fail, for the
            // next free worker: a sleeping one is woken by this worker, not by the fetcher,
            // and only when no other worker is awake to take it.
            let _ = again.send(job.rest());
        }
        in_hand.set(Some((job.shard, job.queue, claimed.task.id)));
        fault::hit("worker");
        let link = &shards[job.shard];
        let (shared, done) = (&link.shared, &link.done);
        let row = claimed.task;
        if shared.stopping.load(Ordering::SeqCst) {
            shared.released.fetch_add(1, Ordering::SeqCst);
            in_hand.set(None);
            cfg.queues.done(job.queue);
            shared.free(1);
            let _ = done.send(Done::release(row));
            return;
        }
        let id = row.id;
        if let Some(l) = shared.inflight().get_mut(&id) {
            l.started = Some(Instant::now());
        }
        cfg.exec.events.emit(Event::Started(info(&row)));
        let outcome = run_one(&cfg.exec, row);
        if let Some(l) = shared.inflight().get_mut(&id) {
            l.finished = true;
        }
        in_hand.set(None);
        // A fetcher may wait for this queue's concurrency limit to leave room.
        let limited = cfg.queues.done(job.queue);
        let _ = done.send(outcome);
        // The slot is free once the handler returned: the fetcher may claim while the
        // completer writes.
        if shared.free_one(cfg.batch_size) || limited {
            for f in &link.freed {
                let _ = f.try_send(());
            }
        }
    }
}
