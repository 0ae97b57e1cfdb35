//! The measurements, generic over the backend: setup, the enqueue figures, and the helpers of every phase.

use super::*;

// ---------------------------------------------------------------------------------------------
// The measurements, generic over the backend
// ---------------------------------------------------------------------------------------------

pub(crate) struct Bench<D: Db> {
    /// For setup, enqueue, dispatch and lateness; each drain gets a pool of its own, sized
    /// for it, so that idle connections (SQLite page caches) of other phases stay out of rss.
    pub(crate) pool: Pool<Cm<D::C>>,
    pub(crate) url: String,
    pub(crate) s: &'static Settings,
    /// The same backend with `consistency_task` as the seed's script made it, for the limit
    /// on the seed's schema (`system=seed`); `None` on that bench itself.
    pub(crate) seed: Option<Box<Bench<D>>>,
}

pub(crate) type Pooled<D> = PooledConnection<Cm<<D as Db>::C>>;

impl<D: Db> Bench<D> {
    pub(crate) fn conn(&self) -> Res<Pooled<D>> {
        Ok(self.pool.get()?)
    }

    pub(crate) fn clear(&self) -> Res<()> {
        let mut c = self.conn()?;
        D::clear(&mut c)?;
        Ok(())
    }

    /// `n` due no-op tasks (and, for the backlog, rows due in a day), generated on the server.
    pub(crate) fn fill(&self, due: usize, future: usize) -> Res<()> {
        let mut c = self.conn()?;
        let now = now_ms();
        if future > 0 {
            D::fill(&mut c, future, now + 86_400_000)?;
        }
        if due > 0 {
            D::fill(&mut c, due, now - 20 * 60_000)?;
        }
        D::analyze(&mut c)?;
        Ok(())
    }

    pub(crate) fn figure(
        &self,
        name: &str,
        value: f64,
        unit: &'static str,
        system: &'static str,
        n: usize,
    ) {
        figure(name, value, unit, D::NAME, system, n);
    }

    pub(crate) fn run(&self) -> Res<()> {
        let t0 = Instant::now();
        let phase = |name: &str, f: &dyn Fn() -> Res<()>| -> Res<()> {
            if !self.s.wants(name) {
                return Ok(());
            }
            let t = Instant::now();
            expect_done(PHASE_BUDGET, format!("{} {name}", D::NAME));
            f()?;
            log(format!(
                "{}: {name} took {:.1} s",
                D::NAME,
                t.elapsed().as_secs_f64()
            ));
            Ok(())
        };
        phase("enqueue", &|| self.enqueue())?;
        phase("drains", &|| self.drains())?;
        phase("dispatch", &|| self.dispatch())?;
        phase("lateness", &|| self.lateness())?;
        phase("wake", &|| self.wake())?;
        phase("multiproc", &|| self.multiproc())?;
        phase("peers", &|| self.peers())?;
        log(format!(
            "{}: done in {:.1} s",
            D::NAME,
            t0.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    // ----- enqueue -------------------------------------------------------------------------

    /// Business-only, tend and limit transactions, interleaved in rounds so that drift of the
    /// machine hits all three alike.
    pub(crate) fn enqueue(&self) -> Res<()> {
        let n = self.s.n;
        // The four kinds take turns transaction by transaction (in a random order each
        // turn), each transaction timed on its own, in 8 rounds of `ROUND_TIME`: a server's
        // commit waits for an fsync whose latency drifts by 2x from second to second on a VM,
        // and turns this fine cancel that drift, which rounds of one kind at a time did not
        // (half-second rounds of one kind read 1 310-3 639 tx/s for the limit on MariaDB in one
        // run). A figure is the median (the 4th of 8, as `percentile` takes it) of a kind's
        // per-round rates, so a stall that lands on one round moves it little. With one kind
        // per round and a sum over rounds, the business-only pair, the same code on both
        // sides, read 0.92 on SQLite and 1.14 on MariaDB in runs of 2026-12-04. `TEND_BENCH_N`
        // does not change this phase.
        const ROUNDS: usize = 8;
        const ROUND_TIME: Duration = Duration::from_secs(2);
        // business (tend slot), tend, limit, business (limit slot)
        let mut rates: [Vec<f64>; 4] = Default::default();
        let mut done = [0usize; 4];
        let mut c = self.conn()?;
        self.clear()?;
        let mut order = 0i64;
        // xorshift64: the turns' orders (fixed seed: the same sequence every run).
        let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
        profile_phase(&format!("{} enqueue (4 kinds in turn)", D::NAME), n);
        // SQLite: the commit that takes the WAL past 1000 pages runs the checkpoint, copying
        // every kind's pages: charged to whichever kind crossed the line, it moved a kind's
        // round by several percent at random (the business-only pair, the same code, read
        // 0.94-1.13 in runs of 2026-12-05). The checkpoints run between turns, untimed, about
        // as often (every 64 turns: ~800 pages); tend and the limit write the same pages per
        // transaction (`enqueue_written_bytes_per_tx`).
        D::auto_checkpoint(&mut c, false)?;
        let mut turns = 0u64;
        for _ in 0..ROUNDS {
            let mut t = [Duration::ZERO; 4];
            let mut txs = [0usize; 4];
            let round = Instant::now();
            while round.elapsed() < ROUND_TIME {
                // A fresh random order each turn: with a rotating one, each kind mostly
                // followed the same other kind, and on SQLite a business transaction after
                // a business one read 0.78 of one after a task insert, systematically.
                let mut parts = [0usize, 1, 2, 3];
                for k in (1..4).rev() {
                    parts.swap(k, (xorshift(&mut rng) % (k as u64 + 1)) as usize);
                }
                turns += 1;
                if turns % 64 == 0 {
                    D::checkpoint(&mut c)?;
                }
                for part in parts {
                    order += 1;
                    let i = order;
                    let start = Instant::now();
                    enqueue_tx::<D>(&mut c, Kind::of(part), i)?;
                    t[part] += start.elapsed();
                    txs[part] += 1;
                }
            }
            for part in 0..4 {
                rates[part].push(txs[part] as f64 / t[part].as_secs_f64());
                done[part] += txs[part];
            }
            self.clear()?;
        }
        log(format!(
            "{}: enqueue per-round rates (tx/s): tend {:.0?}, limit {:.0?}, business {:.0?} / {:.0?}",
            D::NAME,
            rates[1],
            rates[2],
            rates[0],
            rates[3]
        ));
        let rate = |p: usize| percentile(&rates[p], 50.0);
        profile_phase("-", 0);
        self.figure("enqueue_tx_per_s", rate(1), "tx/s", "tend", done[1]);
        self.figure("enqueue_tx_per_s", rate(2), "tx/s", "limit", done[2]);
        let name = "enqueue_business_only_tx_per_s";
        self.figure(name, rate(0), "tx/s", "tend", done[0]);
        self.figure(name, rate(3), "tx/s", "limit", done[3]);
        D::auto_checkpoint(&mut c, true)?;
        self.enqueue_work(&mut c, &mut order)?;

        // 100 tasks per transaction, `n / 2` tasks per kind and round; as above, the two
        // kinds take turns transaction by transaction (who goes first drawn each turn), each
        // transaction timed, and a figure is the median of 8 per-round rates. With one kind
        // per round and sums over 6 rounds, SQLite read 0.88 and 0.73 in two runs of one
        // binary (2026-12-04), PostgreSQL 0.67 and 0.91 with 2 rounds.
        const BATCH_ROUNDS: usize = 8;
        let txs = n / BATCH;
        let mut rates: [Vec<f64>; 2] = Default::default();
        let mut total = 0usize;
        profile_phase(&format!("{} enqueue batch (2 kinds in turn)", D::NAME), n);
        // As above, SQLite's checkpoints between turns, untimed (every 8 turns: 1 600 rows).
        D::auto_checkpoint(&mut c, false)?;
        for _ in 0..BATCH_ROUNDS {
            self.clear()?;
            let mut t = [Duration::ZERO; 2];
            for tx in 0..txs / 2 {
                if tx % 8 == 7 {
                    D::checkpoint(&mut c)?;
                }
                let base = (tx * BATCH) as i64;
                let first = (xorshift(&mut rng) & 1) as usize;
                for part in [first, 1 - first] {
                    let start = Instant::now();
                    if part == 0 {
                        let tasks = (0..BATCH as i64)
                            .map(|i| NewTask::new(&Noop { order_id: base + i }))
                            .collect::<Result<Vec<_>, _>>()?;
                        c.transaction(|c| -> Res<()> {
                            tend::enqueue_many(c, tasks)?;
                            Ok(())
                        })?;
                    } else {
                        let now = now_ms();
                        let rows: Vec<LimitRow> = (0..BATCH as i64)
                            .map(|i| LimitRow::noop(base + i, now))
                            .collect();
                        c.transaction(|c| D::insert_tasks(c, &rows))?;
                    }
                    t[part] += start.elapsed();
                }
            }
            total += txs / 2 * BATCH;
            for part in 0..2 {
                rates[part].push((txs / 2 * BATCH) as f64 / t[part].as_secs_f64());
            }
        }
        D::auto_checkpoint(&mut c, true)?;
        self.clear()?;
        profile_phase("-", 0);
        log(format!(
            "{}: enqueue_many per-round rates (tasks/s): tend {:.0?}, limit {:.0?}",
            D::NAME,
            rates[0],
            rates[1]
        ));
        self.figure(
            "enqueue_batch_tasks_per_s",
            percentile(&rates[0], 50.0),
            "tasks/s",
            "tend",
            total,
        );
        self.figure(
            "enqueue_batch_tasks_per_s",
            percentile(&rates[1], 50.0),
            "tasks/s",
            "limit",
            total,
        );
        Ok(())
    }
}

impl<D: Db> Bench<D> {
    /// The log the database writes per enqueue transaction (business row + task), tend's and
    /// the limit's, untimed: PostgreSQL's WAL bytes, InnoDB's redo bytes and buffer pool write
    /// requests, SQLite's written bytes and write calls (WAL frames, and the checkpoints'
    /// copies that ran meanwhile). Blocks of 250 transactions of one kind, the counters read
    /// around each block, 8 blocks per kind, the kinds (tend, the limit, the business row
    /// alone: what a task adds is the difference) in rotating order.
    fn enqueue_work(&self, c: &mut Pooled<D>, order: &mut i64) -> Res<()> {
        const BLOCKS: usize = 8;
        const TXS: usize = 250;
        // business only, tend, limit
        let mut sum = [Work::default(); 3];
        let mut txs = [0usize; 3];
        for block in 0..BLOCKS {
            for part in [block % 3, (block + 1) % 3, (block + 2) % 3] {
                let Some(before) = D::work(&mut *c)? else {
                    return Ok(());
                };
                for _ in 0..TXS {
                    *order += 1;
                    let i = *order;
                    enqueue_tx::<D>(c, Kind::of(part), i)?;
                }
                let after = D::work(&mut *c)?.expect("read before");
                sum[part].log_bytes += after.log_bytes - before.log_bytes;
                sum[part].other += after.other - before.other;
                txs[part] += TXS;
            }
        }
        self.clear()?;
        let (log_name, other_name, other_unit) = match D::NAME {
            "pg" => ("enqueue_wal_bytes_per_tx", None, ""),
            "sqlite" => (
                "enqueue_written_bytes_per_tx",
                Some("enqueue_write_calls_per_tx"),
                "calls",
            ),
            _ => (
                "enqueue_redo_bytes_per_tx",
                Some("enqueue_bp_write_requests_per_tx"),
                "pages",
            ),
        };
        for (part, sys) in [(1, "tend"), (2, "limit"), (0, "business_only")] {
            let per = |v: f64| v / txs[part] as f64;
            self.figure(log_name, per(sum[part].log_bytes), "B", sys, txs[part]);
            if let Some(name) = other_name {
                self.figure(name, per(sum[part].other), other_unit, sys, txs[part]);
            }
        }
        Ok(())
    }
}

/// What an enqueue-phase transaction writes after its business row.
enum Kind {
    BusinessOnly,
    Tend,
    Limit,
}

impl Kind {
    /// The phase's slots: 1 tend, 2 the limit, any other the business row alone.
    fn of(part: usize) -> Kind {
        match part {
            1 => Kind::Tend,
            2 => Kind::Limit,
            _ => Kind::BusinessOnly,
        }
    }
}

/// One transaction of the enqueue phase: business row `i`, then what `kind` adds.
fn enqueue_tx<D: Db>(c: &mut Pooled<D>, kind: Kind, i: i64) -> Res<()> {
    c.transaction(|c| -> Res<()> {
        D::insert_order(c, i)?;
        match kind {
            Kind::Tend => drop(tend::enqueue(c, &Noop { order_id: i })?),
            Kind::Limit => D::insert_task(c, &LimitRow::noop(i, now_ms()))?,
            Kind::BusinessOnly => {}
        }
        Ok(())
    })
}

/// The next value of a xorshift64 generator (the enqueue phase's turn orders).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Sleeps until `next`, then moves it one `gap` on (never into the past: no catching up).
pub(crate) fn pace(next: &mut Instant, gap: Duration) {
    let now = Instant::now();
    if *next > now {
        thread::sleep(*next - now);
    }
    *next = (*next).max(now) + gap;
}

pub(crate) fn wait_for(mut done: impl FnMut() -> bool, what: &str) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("{what}: timed out after 120 s").into());
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// What a drain did: handler runs (of `n` tasks) in how long, and whether `DRAIN_CAP` cut it.
pub(crate) struct Drained {
    pub(crate) ran: usize,
    pub(crate) took: Duration,
    pub(crate) capped: bool,
}

impl Drained {
    pub(crate) fn new(n: usize, took: Duration, who: &str) -> Drained {
        let ran = RAN.load(Ordering::SeqCst);
        let capped = took >= DRAIN_CAP;
        if capped {
            log(format!(
                "WARNING: {who} drain CAPPED at {DRAIN_CAP:?} after {ran} of {n} tasks; \
                 its rate is of the tasks it ran"
            ));
        } else if ran != n {
            log(format!("WARNING: {who} ran {ran} handlers for {n} tasks"));
        }
        Drained { ran, took, capped }
    }

    pub(crate) fn rate(&self) -> f64 {
        self.ran as f64 / self.took.as_secs_f64()
    }
}

/// Handler start − commit return, per probe, in µs (clamped at 0: a handler may start before
/// the caller's `Instant::now()` after the return).
pub(crate) fn latencies_us(returned: &[Instant]) -> Vec<f64> {
    let starts = STARTS.lock().unwrap();
    let mut negative = 0;
    let lat: Vec<f64> = starts
        .iter()
        .map(
            |s| match s.at.checked_duration_since(returned[s.seq as usize]) {
                Some(d) => d.as_secs_f64() * 1e6,
                None => {
                    negative += 1;
                    0.0
                }
            },
        )
        .collect();
    if negative > 0 {
        log(format!(
            "dispatch: {negative} handler(s) started before the caller saw the return"
        ));
    }
    lat
}

pub(crate) fn lateness_ms(due: &HashMap<i64, i64>) -> Vec<f64> {
    let starts = STARTS.lock().unwrap();
    let mut missing = 0;
    let late: Vec<f64> = starts
        .iter()
        .filter_map(|s| match due.get(&s.id) {
            Some(&d) => Some(s.wall_us as f64 / 1000.0 - d as f64),
            None => {
                missing += 1;
                None
            }
        })
        .collect();
    if missing > 0 {
        log(format!(
            "lateness: {missing} task(s) without a known due time were left out"
        ));
    }
    late
}

/// Whether a transaction's error is a lock conflict (a MariaDB deadlock between the producer
/// and the workers, SQLite busy): the caller retries the transaction, tend's or the limit's.
pub(crate) fn is_transient_box(e: &BoxError) -> bool {
    if let Some(d) = e.downcast_ref::<DieselError>() {
        return is_transient(d);
    }
    e.downcast_ref::<tend::Error>()
        .is_some_and(|t| t.is_transient())
}

pub(crate) fn retry_tx<T>(mut op: impl FnMut() -> Res<T>) -> Res<T> {
    let mut attempt = 0;
    loop {
        match op() {
            Err(e) if attempt < 50 && is_transient_box(&e) => {
                attempt += 1;
                thread::sleep(Duration::from_micros(200 * attempt));
            }
            other => return other,
        }
    }
}
