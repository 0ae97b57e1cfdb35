//! The latency figures: dispatch (hand-off after commit) and schedule lateness.

use super::*;

impl<D: Db> Bench<D> {
    // ----- dispatch ------------------------------------------------------------------------

    /// Right-now tasks through `Outbox::transaction` (business row + task), one transaction
    /// every `DISPATCH_GAP`; latency = handler start − the instant `transaction` returned.
    pub(crate) fn dispatch(&self) -> Res<()> {
        let d = self.s.probes();
        self.clear()?;
        STARTS.lock().unwrap().clear();
        // The default 1 s poll: what is measured is the hand-off, not the poll.
        let workers = tend::WorkerPool::builder(self.pool.clone(), registry())
            .threads(4)
            .build()?;
        let outbox = workers.outbox();
        let handle = workers.start()?;
        let mut c = self.conn()?;
        profile_phase(&format!("{} dispatch tend", D::NAME), d);
        let mut returned = Vec::with_capacity(d);
        let mut next = Instant::now();
        for seq in 0..d as u64 {
            pace(&mut next, DISPATCH_GAP);
            retry_tx(|| {
                outbox.transaction(&mut *c, |c, tx| -> Res<()> {
                    D::insert_order(c, seq as i64)?;
                    tx.enqueue(c, &Probe { seq })?;
                    Ok(())
                })
            })?;
            returned.push(Instant::now());
        }
        wait_for(|| STARTS.lock().unwrap().len() >= d, "tend dispatch")?;
        handle.shutdown();
        profile_phase("-", 0);
        let tend_lat = latencies_us(&returned);
        drop(c);

        // The limit: the same transaction inserts the task already leased to this process, as
        // tend's outbox does; after the commit the row goes over a channel to a worker thread,
        // which runs it and deletes what it ran in one statement.
        self.clear()?;
        STARTS.lock().unwrap().clear();
        let (tx_rows, rx_rows) = crossbeam_channel::unbounded::<(i64, Vec<u8>)>();
        let mut wc = self.conn()?;
        let mut c = self.conn()?;
        let lease = Lease::new();
        let token = lease.token;
        profile_phase(&format!("{} dispatch limit", D::NAME), d);
        let returned = thread::scope(|s| -> Res<Vec<Instant>> {
            let worker = s.spawn(move || -> QueryResult<()> {
                while let Ok(first) = rx_rows.recv() {
                    let mut rows = vec![first];
                    rows.extend(rx_rows.try_iter().take(BATCH - 1));
                    for (id, p) in &rows {
                        limit_run_probe(*id, p);
                    }
                    let done: Vec<i64> = rows.iter().map(|r| r.0).collect();
                    retry(|| D::delete(&mut wc, token, &done))?;
                }
                Ok(())
            });
            let mut returned = Vec::with_capacity(d);
            let mut next = Instant::now();
            for seq in 0..d as u64 {
                pace(&mut next, DISPATCH_GAP);
                let now = now_ms();
                let row = LimitRow {
                    payload: encode(&Probe { seq }),
                    execute_time: lease.until,
                    now,
                };
                let id = retry_tx(|| {
                    c.transaction(|c| -> Res<i64> {
                        D::insert_order(c, seq as i64)?;
                        Ok(D::insert_leased_id(c, &row, &lease)?)
                    })
                })?;
                let _ = tx_rows.send((id, row.payload));
                returned.push(Instant::now());
            }
            drop(tx_rows);
            worker.join().expect("limit worker panicked")?;
            Ok(returned)
        })?;
        profile_phase("-", 0);
        let limit_lat = latencies_us(&returned);
        self.clear()?;
        for (sys, lat) in [("tend", &tend_lat), ("limit", &limit_lat)] {
            self.figure("dispatch_p50_us", percentile(lat, 50.0), "us", sys, d);
            self.figure("dispatch_p99_us", percentile(lat, 99.0), "us", sys, d);
        }
        Ok(())
    }

    // ----- schedule lateness ---------------------------------------------------------------

    /// Tasks scheduled 1 s ahead (tend takes whole seconds), written one per transaction at an
    /// even pace over about 2 s while the pool runs; lateness = handler start − due time.
    pub(crate) fn lateness(&self) -> Res<()> {
        let l = self.s.probes();
        let gap = Duration::from_micros(2_000_000 / l as u64);
        let delay = 1_000i64;

        // tend: the pool polls every TEND_BENCH_POLL_MS.
        self.clear()?;
        STARTS.lock().unwrap().clear();
        let workers = tend::WorkerPool::builder(self.pool.clone(), registry())
            .threads(4)
            .poll_interval(self.s.poll)
            .build()?;
        let handle = workers.start()?;
        let mut c = self.conn()?;
        profile_phase(&format!("{} lateness tend", D::NAME), l);
        let mut due = HashMap::new();
        let mut next = Instant::now();
        let cap = Instant::now() + LATENESS_CAP;
        for seq in 0..l as u64 {
            if Instant::now() > cap {
                log(format!(
                    "lateness: tend CAPPED after writing {seq} of {l} tasks"
                ));
                break;
            }
            pace(&mut next, gap);
            let t = NewTask::new(&Probe { seq })?
                .execute_way(ExecuteWay::Schedule)
                .delay(Duration::from_millis(delay as u64));
            let id = retry_tx(|| Ok(tend::enqueue_new(&mut c, t.clone())?))?
                .id()
                .ok_or("duplicate probe")?;
            // tend computed the due time itself: read it back (it is a second away).
            due.insert(id, D::due_time(&mut c, id)?);
        }
        let written = due.len();
        wait_for(|| STARTS.lock().unwrap().len() >= written, "tend lateness")?;
        handle.shutdown();
        profile_phase("-", 0);
        let tend_late = lateness_ms(&due);

        // The limit: one poller (tend polls with one fetcher), sleeping the same poll interval
        // after a short claim.
        self.clear()?;
        STARTS.lock().unwrap().clear();
        let stop = AtomicBool::new(false);
        let mut due = HashMap::new();
        profile_phase(&format!("{} lateness limit", D::NAME), l);
        thread::scope(|s| -> Res<()> {
            let mut pc = self.conn()?;
            let (stop, poll) = (&stop, self.s.poll);
            let poller = s.spawn(move || -> QueryResult<()> {
                while !stop.load(Ordering::Relaxed) {
                    let l = Lease::new();
                    let rows = retry(|| D::claim(&mut pc, &l))?;
                    for (id, p) in &rows {
                        limit_run_probe(*id, p);
                    }
                    if !rows.is_empty() {
                        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
                        retry(|| D::delete(&mut pc, l.token, &ids))?;
                    }
                    if rows.len() < BATCH {
                        thread::sleep(poll);
                    }
                }
                Ok(())
            });
            let mut next = Instant::now();
            let cap = Instant::now() + LATENESS_CAP;
            for seq in 0..l as u64 {
                if Instant::now() > cap {
                    log(format!(
                        "lateness: limit CAPPED after writing {seq} of {l} tasks"
                    ));
                    break;
                }
                pace(&mut next, gap);
                let now = now_ms();
                let row = LimitRow {
                    payload: encode(&Probe { seq }),
                    execute_time: now + delay,
                    now,
                };
                let id = retry_tx(|| Ok(D::insert_task_id(&mut c, &row, Probe::SIGNATURE)?))?;
                due.insert(id, row.execute_time);
            }
            let written = due.len();
            let r = wait_for(|| STARTS.lock().unwrap().len() >= written, "limit lateness");
            stop.store(true, Ordering::Relaxed);
            poller.join().expect("poller panicked")?;
            r
        })?;
        profile_phase("-", 0);
        let limit_late = lateness_ms(&due);
        self.clear()?;
        self.figure(
            "schedule_lateness_p99_ms",
            percentile(&tend_late, 99.0),
            "ms",
            "tend",
            tend_late.len(),
        );
        self.figure(
            "schedule_lateness_p99_ms",
            percentile(&limit_late, 99.0),
            "ms",
            "limit",
            limit_late.len(),
        );
        log(format!(
            "{}: lateness p50 tend {:.1} ms, limit {:.1} ms (poll {:?})",
            D::NAME,
            percentile(&tend_late, 50.0),
            percentile(&limit_late, 50.0),
            self.s.poll
        ));
        Ok(())
    }
}
