//! The checks on a run log: nothing lost, no two runs of a task at the same time, and re-runs
//! only where a process was killed (or an outage made the outcome unwritable).

use std::collections::{HashMap, HashSet};

use super::runlog::Parsed;

/// A child the test SIGKILLed, and by when it was surely dead (µs).
#[derive(Debug, Clone, Copy)]
pub struct Kill {
    pub pid: u32,
    pub at: i64,
}

#[derive(Debug, Default)]
pub struct Report {
    pub tasks: usize,
    /// Runs started.
    pub runs: usize,
    /// Expected keys without a finished run.
    pub lost: Vec<i64>,
    /// Keys started more than once.
    pub duplicates: usize,
    /// Two runs of one key at the same time (described).
    pub overlaps: Vec<String>,
    /// Re-runs not explained by a kill (described).
    pub unexplained: Vec<String>,
    /// Runs of keys nobody enqueued.
    pub unknown: Vec<i64>,
    /// Runs that never ended although their process was not killed.
    pub unfinished: Vec<String>,
}

impl Report {
    /// Panics, with the first offenders, unless nothing was lost and no task ran twice at once.
    pub fn assert_sound(&self, what: &str) {
        assert!(
            self.lost.is_empty(),
            "{what}: {} task(s) never finished a run, e.g. {:?}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(10)]
        );
        assert!(
            self.overlaps.is_empty(),
            "{what}: {} task(s) ran twice at the same time, e.g. {:?}",
            self.overlaps.len(),
            &self.overlaps[..self.overlaps.len().min(5)]
        );
        assert!(
            self.unknown.is_empty(),
            "{what}: runs of tasks never enqueued: {:?}",
            &self.unknown[..self.unknown.len().min(10)]
        );
        assert!(
            self.unfinished.is_empty(),
            "{what}: runs that never ended in a live process: {:?}",
            &self.unfinished[..self.unfinished.len().min(10)]
        );
    }

    /// Also panics on any re-run that no kill explains.
    pub fn assert_reruns_explained(&self, what: &str) {
        assert!(
            self.unexplained.is_empty(),
            "{what}: {} re-run(s) without a kill to explain them, e.g. {:?}",
            self.unexplained.len(),
            &self.unexplained[..self.unexplained.len().min(5)]
        );
    }
}

/// Checks `log` against the keys that were enqueued and the kills the test made.
pub fn check(log: &Parsed, expected: &[i64], kills: &[Kill]) -> Report {
    let killed: HashMap<u32, i64> = kills.iter().map(|k| (k.pid, k.at)).collect();
    let expected_set: HashSet<i64> = expected.iter().copied().collect();
    let done = log.done_keys();
    let mut r = Report {
        tasks: expected.len(),
        runs: log.runs.len(),
        lost: expected
            .iter()
            .copied()
            .filter(|k| !done.contains(k))
            .collect(),
        ..Report::default()
    };
    r.lost.sort_unstable();
    for (key, runs) in log.by_key() {
        if !expected_set.contains(&key) {
            r.unknown.push(key);
        }
        if runs.len() > 1 {
            r.duplicates += 1;
        }
        // The end of each run: its end line, else the moment its process was killed.
        let ends: Vec<i64> = runs
            .iter()
            .map(|run| match (run.end, killed.get(&run.pid)) {
                (Some(e), _) => e,
                (None, Some(&k)) if k >= run.start => k,
                (None, _) => {
                    r.unfinished
                        .push(format!("key {key} pid {} start {}", run.pid, run.start));
                    i64::MAX
                }
            })
            .collect();
        for i in 1..runs.len() {
            // Every earlier run must have ended before this one started.
            let prev_end = ends[..i].iter().copied().max().unwrap();
            if runs[i].start < prev_end {
                r.overlaps.push(format!(
                    "key {key}: run by pid {} started at {} before the run by pid {} ended at {}",
                    runs[i].pid,
                    runs[i].start,
                    runs[i - 1].pid,
                    prev_end
                ));
            }
        }
        // Every run but the last must belong to a process killed after it started.
        for run in &runs[..runs.len() - 1] {
            match killed.get(&run.pid) {
                Some(&k) if k >= run.start => {}
                _ => r.unexplained.push(format!(
                    "key {key}: run by pid {} (attempt {}) was followed by another run",
                    run.pid, run.attempt
                )),
            }
        }
    }
    r
}

/// For each kill: the longest time (ms) from the kill to the first run, by another process,
/// of a task the killed process had claimed or started and not seen through; and how many
/// such tasks there were.
pub fn handover(log: &Parsed, kills: &[Kill]) -> Vec<(u32, usize, i64)> {
    let by_key = log.by_key();
    kills
        .iter()
        .map(|k| {
            let held: HashSet<i64> = log
                .claims
                .iter()
                .filter(|(_, pid, _)| *pid == k.pid)
                .map(|(key, _, _)| *key)
                .chain(log.runs.iter().filter(|r| r.pid == k.pid).map(|r| r.key))
                .collect();
            let mut n = 0;
            let mut worst = 0;
            for key in held {
                let later = by_key
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .filter(|r| r.pid != k.pid && r.start > k.at)
                    .map(|r| r.start)
                    .min();
                if let Some(s) = later {
                    n += 1;
                    worst = worst.max((s - k.at) / 1000);
                }
            }
            (k.pid, n, worst)
        })
        .collect()
}
