//! The drain figures: tend's pool and the limit's loop on the same due rows, and RSS.

use super::*;

/// The drains' systems: tend, the limit on tend's table, the limit on the seed's table.
pub(crate) const SYSTEMS: [&str; 3] = ["tend", "limit", "seed"];

impl<D: Db> Bench<D> {
    // ----- drains --------------------------------------------------------------------------

    /// Starts a pool of `k` threads on `n` due tasks and waits until they ran and none of the
    /// rows below `below` is left (or `DRAIN_CAP` passed).
    pub(crate) fn tend_drain(&self, k: usize, n: usize, below: i64) -> Res<Drained> {
        RAN.store(0, Ordering::SeqCst);
        // tend takes 2 connections (fetcher, completer), 1 more to check the schema; 1 counts.
        // 6: the smallest pool on which tend gives a shard its second claimer (it holds 3).
        let pool = D::pool(&self.url, 6)?;
        let workers = tend::WorkerPool::builder(pool.clone(), registry())
            .threads(k)
            .batch_size(self.s.tend_batch)
            .poll_interval(self.s.poll)
            .build()?;
        let mut c = pool.get()?;
        let start = Instant::now();
        let deadline = start + DRAIN_CAP;
        let handle = workers.start()?;
        while RAN.load(Ordering::SeqCst) < n && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        while Instant::now() < deadline && D::count_below(&mut c, below)? > 0 {
            thread::sleep(Duration::from_millis(1));
        }
        let d = Drained::new(n, start.elapsed(), "tend");
        handle.shutdown();
        Ok(d)
    }

    /// `k` threads, each looping claim → run → delete on its own connection until a claim
    /// comes back empty (or `DRAIN_CAP` passed).
    pub(crate) fn limit_drain(&self, k: usize, n: usize, below: i64) -> Res<Drained> {
        RAN.store(0, Ordering::SeqCst);
        let conflicts = LOCK_CONFLICTS.load(Ordering::Relaxed);
        let conns = (0..k)
            .map(|_| D::connect(&self.url))
            .collect::<Res<Vec<_>>>()?;
        let url = self.url.as_str();
        let start = Instant::now();
        let deadline = start + DRAIN_CAP;
        thread::scope(|s| -> Res<()> {
            let hs: Vec<_> = conns
                .into_iter()
                .map(|mut c| {
                    s.spawn(move || -> Res<()> {
                        while Instant::now() < deadline {
                            let l = Lease::new();
                            let rows = retry_fresh::<D, _>(&mut c, url, |c| D::claim(c, &l))?;
                            if rows.is_empty() {
                                return Ok(());
                            }
                            for (_, p) in &rows {
                                limit_run_noop(p);
                            }
                            let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
                            retry_fresh::<D, _>(&mut c, url, |c| D::delete(c, l.token, &ids))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in hs {
                h.join().expect("limit thread panicked")?;
            }
            Ok(())
        })?;
        let mut c = self.conn()?;
        let left = D::count_below(&mut c, below)?;
        let d = Drained::new(n, start.elapsed(), "limit");
        let conflicts = LOCK_CONFLICTS.load(Ordering::Relaxed) - conflicts;
        if conflicts > 0 {
            log(format!(
                "{}: limit w{k} retried {conflicts} lock conflict(s)",
                D::NAME
            ));
        }
        if left > 0 && !d.capped {
            return Err(format!("limit drain left {left} rows").into());
        }
        Ok(d)
    }

    pub(crate) fn drains(&self) -> Res<()> {
        let n = self.s.n;
        let below = now_ms() + 3_600_000;
        let rss_ok = reset_peak_rss();
        if !rss_ok {
            log("cannot reset VmHWM (/proc/self/clear_refs): rss_mb is the process-wide peak");
        }
        let mut rss = [0f64; 2];
        let mut w4 = [0f64; 2];
        let mut work: [WorkSum; 3] = Default::default();
        // w4: CPU ticks of this process (tend's threads or the limit's) and of the database
        // server's processes, and the tasks they drained, per system.
        let mut cpu = [(0u64, 0u64, 0usize); 3];
        // tend, the limit on tend's table, the limit on the seed's table (its own database).
        let systems: &[usize] = if self.seed.is_some() {
            &[0, 1, 2]
        } else {
            &[0, 1]
        };
        // `TEND_BENCH_DRAIN_K=4` (a comma list) runs only those thread counts: an A/B of one
        // figure without the others' minutes.
        let ks: Vec<usize> = std::env::var("TEND_BENCH_DRAIN_K")
            .ok()
            .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect())
            .filter(|ks: &Vec<usize>| !ks.is_empty())
            .unwrap_or_else(|| vec![1, 2, 4, 8]);
        for k in ks {
            let mut runs: [Vec<f64>; 3] = Default::default();
            for rep in 0..DRAIN_REPEATS {
                // Rotate who goes first.
                let mut order = systems.to_vec();
                order.rotate_left(rep % systems.len());
                for sys in order {
                    let who = SYSTEMS[sys];
                    let b: &Bench<D> = if sys == 2 {
                        self.seed.as_deref().expect("seed bench")
                    } else {
                        self
                    };
                    expect_done(
                        DRAIN_CAP + Duration::from_secs(60),
                        format!("{} drain w{k} {who}", D::NAME),
                    );
                    b.clear()?;
                    b.fill(n, 0)?;
                    profile_phase(&format!("{} drain w{k} {who}", D::NAME), n * DRAIN_REPEATS);
                    reset_peak_rss();
                    let before = rss_now_mb();
                    let w0 = if k == 4 {
                        D::work(&mut *b.conn()?)?
                    } else {
                        None
                    };
                    let server = (k == 4 && D::NAME != "sqlite").then(ServerCpu::start);
                    let client = proc_ticks("self");
                    let d = if sys == 0 {
                        b.tend_drain(k, n, below)?
                    } else {
                        b.limit_drain(k, n, below)?
                    };
                    if k == 4 {
                        cpu[sys].0 += proc_ticks("self").saturating_sub(client);
                        cpu[sys].1 += server.map_or(0, ServerCpu::stop);
                        cpu[sys].2 += d.ran;
                    }
                    if sys < 2 {
                        rss[sys] = rss[sys].max(peak_rss_mb());
                    }
                    if let Some(w0) = w0 {
                        if let Some(w1) = b.work_after(w0, d.ran)? {
                            work[sys].add(D::NAME == "pg", d.ran, w0, w1);
                        }
                    }
                    if rep == 0 {
                        log(format!(
                            "{}: drain w{k} {who}: rss {before:.1} MiB before, peak {:.1} MiB",
                            D::NAME,
                            peak_rss_mb()
                        ));
                    }
                    profile_phase("-", 0);
                    runs[sys].push(d.rate());
                }
            }
            log(format!(
                "{}: drain w{k} runs (tasks/s): tend {:?}, limit {:?}, seed {:?}",
                D::NAME,
                rounded(&runs[0]),
                rounded(&runs[1]),
                rounded(&runs[2])
            ));
            let name = format!("drain_w{k}_tasks_per_s");
            for &sys in systems {
                let rate = percentile(&runs[sys], 50.0);
                self.figure(&name, rate, "tasks/s", SYSTEMS[sys], n);
                if k == 4 && sys < 2 {
                    w4[sys] = rate;
                }
            }
            if k == 4 {
                for &sys in systems {
                    self.work_figures(SYSTEMS[sys], &work[sys], n);
                    let (client, server, ran) = cpu[sys];
                    // Clock ticks are 10 ms: per task in microseconds.
                    let per_task = |ticks: u64| ticks as f64 * 10_000.0 / ran.max(1) as f64;
                    self.figure(
                        "client_cpu_us_per_task",
                        per_task(client),
                        "us",
                        SYSTEMS[sys],
                        ran,
                    );
                    if D::NAME != "sqlite" {
                        self.figure(
                            "server_cpu_us_per_task",
                            per_task(server),
                            "us",
                            SYSTEMS[sys],
                            ran,
                        );
                    }
                }
            }
        }
        self.statement_work()?;
        if self.s.large {
            // The rows due in a day are written once; each system then gets its n due rows.
            let future = BACKLOG_ROWS - n;
            let mut runs: [Vec<f64>; 2] = Default::default();
            self.clear()?;
            let t = Instant::now();
            self.fill(0, future)?;
            log(format!(
                "{}: wrote {future} rows due in a day in {:.1} s",
                D::NAME,
                t.elapsed().as_secs_f64()
            ));
            // As the other drains: medians of 3 runs, who goes first alternating.
            for rep in 0..DRAIN_REPEATS {
                for sys in [rep % 2, 1 - rep % 2] {
                    let who = ["tend", "limit"][sys];
                    expect_done(
                        DRAIN_CAP + Duration::from_secs(60),
                        format!("{} backlog drain {who}", D::NAME),
                    );
                    self.fill(n, 0)?;
                    self.settle(who)?;
                    profile_phase(&format!("{} backlog w4 {who}", D::NAME), n);
                    reset_peak_rss();
                    let before = rss_now_mb();
                    let d = if sys == 0 {
                        self.tend_drain(4, n, below)?
                    } else {
                        self.limit_drain(4, n, below)?
                    };
                    rss[sys] = rss[sys].max(peak_rss_mb());
                    if rep == 0 {
                        log(format!(
                            "{}: backlog drain {who}: rss {before:.1} MiB before, peak {:.1} MiB",
                            D::NAME,
                            peak_rss_mb()
                        ));
                    }
                    profile_phase("-", 0);
                    runs[sys].push(d.rate());
                    // A capped drain leaves due rows behind: start the next one clean.
                    if d.capped {
                        let mut c = self.conn()?;
                        D::delete_due(&mut c, below)?;
                    }
                }
            }
            log(format!(
                "{}: backlog drain runs (tasks/s): tend {:?}, limit {:?}",
                D::NAME,
                rounded(&runs[0]),
                rounded(&runs[1])
            ));
            let rates = [percentile(&runs[0], 50.0), percentile(&runs[1], 50.0)];
            self.figure(
                "drain_backlog_1m_tasks_per_s",
                rates[0],
                "tasks/s",
                "tend",
                n,
            );
            self.figure(
                "drain_backlog_1m_tasks_per_s",
                rates[1],
                "tasks/s",
                "limit",
                n,
            );
            log(format!(
                "{}: backlog / 20k drain (w4): tend {:.2}, limit {:.2}",
                D::NAME,
                rates[0] / w4[0],
                rates[1] / w4[1]
            ));
        }
        self.clear()?;
        self.figure("rss_mb", rss[0], "MiB", "tend", n);
        self.figure("rss_mb", rss[1], "MiB", "limit", n);
        Ok(())
    }
}

impl<D: Db> Bench<D> {
    /// Has the server write what a fill dirtied and waits (at most `SETTLE_CAP`) until it has,
    /// where it says (InnoDB: `FLUSH TABLES … FOR EXPORT` of the task table, then dirty pages
    /// at most 3 % of the buffer pool or no longer falling: the rest is other tables' and the
    /// undo logs'). A backlog of a million rows builds up over time and is flushed long before
    /// it drains; right after the bench's bulk fill the pool is mostly dirty pages (its page
    /// cleaner wrote ~27 pages/s on the 2026-12-03 VM), and a drain timed then measures that
    /// flushing, for tend and the limit alike.
    fn settle(&self, who: &str) -> Res<()> {
        const SETTLE_CAP: Duration = Duration::from_secs(30);
        let mut c = self.conn()?;
        let Some((dirty0, total)) = D::dirty_pages(&mut c)? else {
            return Ok(());
        };
        expect_done(
            SETTLE_CAP + DRAIN_CAP + Duration::from_secs(60),
            format!("{} backlog settle + drain {who}", D::NAME),
        );
        let t = Instant::now();
        D::flush_table(&mut c)?;
        let mut dirty = D::dirty_pages(&mut c)?.map_or(0.0, |p| p.0);
        // Until at most 3 % is dirty, or the count has not fallen for a second: what the flush
        // leaves (other tables, undo, purge) can stay above 3 % for good, and waiting on it
        // only slept the cap away (30 s, seen 15:35 UTC: 343 -> 285 of 8112 pages).
        let (mut best, mut since) = (dirty, Instant::now());
        while dirty > total * 0.03
            && t.elapsed() < SETTLE_CAP
            && since.elapsed() < Duration::from_secs(1)
        {
            thread::sleep(Duration::from_millis(250));
            dirty = D::dirty_pages(&mut c)?.map_or(0.0, |p| p.0);
            if dirty < best {
                (best, since) = (dirty, Instant::now());
            }
        }
        log(format!(
            "{}: backlog drain {who}: waited {:.1} s for the fill's dirty pages to be written \
             ({dirty0:.0} -> {dirty:.0} of {total:.0} buffer pool pages dirty)",
            D::NAME,
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Per-row work of the limit's single statements on PostgreSQL (see `Db::statement_work`).
    pub(crate) fn statement_work(&self) -> Res<()> {
        const REPS: usize = 5;
        let mut on = vec![(self, "limit")];
        if let Some(seed) = self.seed.as_deref() {
            on.push((seed, "seed"));
        }
        for (b, sys) in on {
            b.clear()?;
            b.fill(REPS * BATCH, 0)?;
            let figs = D::statement_work(&mut *b.conn()?, REPS)?;
            for (stmt, dirtied, wal) in figs {
                let n = REPS * BATCH;
                self.figure(
                    &format!("{stmt}_dirtied_per_row"),
                    dirtied,
                    "buffers",
                    sys,
                    n,
                );
                self.figure(&format!("{stmt}_wal_bytes_per_row"), wal, "B", sys, n);
            }
            b.clear()?;
        }
        Ok(())
    }
}
