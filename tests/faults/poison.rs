//! Scenario 5, poison.

use super::*;

// ------------------------------------------------------------------------------ 5. poison

/// A task type no pool registers.
#[derive(Debug, Serialize, Deserialize)]
struct Unknown {
    n: i64,
}

impl Task for Unknown {
    const SIGNATURE: &'static str = "tend.tests.unknown";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Registered; the test overwrites its payload with bytes that do not decode.
#[derive(Debug, Serialize, Deserialize)]
struct Garbled {
    n: i64,
    name: String,
}

impl Task for Garbled {
    const SIGNATURE: &'static str = "tend.tests.garbled";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Its handler panics; one attempt allowed.
#[derive(Debug, Serialize, Deserialize)]
struct Panics {
    n: i64,
}

impl Task for Panics {
    const SIGNATURE: &'static str = "tend.tests.panics";
    fn options() -> TaskOptions {
        TaskOptions::new().max_attempts(1)
    }
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        panic!("{INTENDED}: handler of task {}", self.n)
    }
}

/// Its handler hangs past its lease (the pool's task timeout equals the lease), then
/// succeeds: too late, the outcome must be refused. One attempt allowed.
#[derive(Debug, Serialize, Deserialize)]
struct Hangs {
    log: u32,
    ms: u64,
}

impl Task for Hangs {
    const SIGNATURE: &'static str = "tend.tests.hangs";
    fn options() -> TaskOptions {
        TaskOptions::new().max_attempts(1)
    }
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let log = support::runlog::get(self.log);
        let run = log.start(-1, ctx.attempt());
        std::thread::sleep(Duration::from_millis(self.ms));
        log.end(-1, run);
        Ok(())
    }
}

/// Fails for good; its alerter (named in `alerter`) is told.
#[derive(Debug, Serialize, Deserialize)]
struct Alerting<const OK: bool> {
    n: i64,
}

impl<const OK: bool> Task for Alerting<OK> {
    const SIGNATURE: &'static str = if OK {
        "tend.tests.alerting_ok"
    } else {
        "tend.tests.alerting_panics"
    };
    fn options() -> TaskOptions {
        TaskOptions::new()
            .max_attempts(1)
            .alert_expression(Some("executeTimes >= 1"))
            .alerter(if OK { "recorder" } else { "panicky" })
    }
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Err(TaskError::new(format!("alerting task {} fails", self.n)))
    }
}

/// Poison tasks of every kind among healthy ones: none is deleted or counted as a success,
/// each ends held or dead with a message, and the healthy ones drain meanwhile.
fn poison<C: TestConn>() {
    let Some(db) = Db::create(C::BACKEND, "faults") else {
        return;
    };
    quiet_intended_panics();
    let b = C::BACKEND.name();
    let pool = support::migrated::<C>(&db, 6);
    let log = RunLog::create(&format!("poison-{b}"));
    let healthy: Vec<i64> = (1..=if quick() { 100 } else { 400 }).collect();
    let mut conn = pool.get().unwrap();
    let id = |e: tend::Enqueued| e.id().unwrap();
    let unknown = id(tend::enqueue(&mut *conn, &Unknown { n: 1 }).unwrap());
    // Three ways a payload fails to decode: empty, garbage, a valid value with a byte more.
    let garbled: Vec<(i64, Vec<u8>)> = [vec![], vec![0xff; 11], vec![2, 1, b'x', 0]]
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            let g = Garbled {
                n: i as i64,
                name: "x".into(),
            };
            (id(tend::enqueue(&mut *conn, &g).unwrap()), bytes)
        })
        .collect();
    for (gid, bytes) in &garbled {
        conn.batch_execute(&format!(
            "UPDATE consistency_task SET task_parameter = {} WHERE id = {gid}",
            C::BACKEND.bytes_literal(bytes)
        ))
        .unwrap();
    }
    let panics = id(tend::enqueue(&mut *conn, &Panics { n: 1 }).unwrap());
    let hang_ms = 6000;
    let hangs = id(tend::enqueue(
        &mut *conn,
        &Hangs {
            log: log.id,
            ms: hang_ms,
        },
    )
    .unwrap());
    let alert_panics = id(tend::enqueue(&mut *conn, &Alerting::<false> { n: 1 }).unwrap());
    support::enqueue_work(&mut *conn, &healthy, 5, log.id);

    // Alerters: one panics, one records; the second alert must still be delivered.
    let panicky_called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorded = std::sync::Arc::new(Mutex::new(Vec::<i64>::new()));
    let mut registry = tend::Registry::new();
    let pc = panicky_called.clone();
    registry
        .alerter("panicky", move |a: &tend::Alert| {
            pc.store(true, std::sync::atomic::Ordering::SeqCst);
            panic!("{INTENDED}: alerter on task {}", a.id)
        })
        .unwrap();
    let rec = recorded.clone();
    registry
        .alerter("recorder", move |a: &tend::Alert| {
            rec.lock().unwrap().push(a.id)
        })
        .unwrap();
    registry.register::<support::Work>().unwrap();
    registry.register::<Garbled>().unwrap();
    registry.register::<Panics>().unwrap();
    registry.register::<Hangs>().unwrap();
    registry.register::<Alerting<false>>().unwrap();
    registry.register::<Alerting<true>>().unwrap();
    // Independent of the run log: which tasks tend reported as succeeded, and refusals.
    let succeeded = std::sync::Arc::new(Mutex::new(HashSet::<i64>::new()));
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (su, re) = (succeeded.clone(), refused.clone());
    let lease = Duration::from_secs(1);
    let handle = tend::WorkerPool::builder(pool.clone(), registry)
        .threads(4)
        .lease(lease)
        .task_timeout(lease)
        .poll_interval(Duration::from_millis(100))
        .events(move |e: &tend::Event<'_>| match e {
            tend::Event::Succeeded { task, .. } => {
                su.lock().unwrap().insert(task.id);
            }
            tend::Event::OutcomesRefused { count } => {
                re.fetch_add(*count, std::sync::atomic::Ordering::SeqCst);
            }
            _ => {}
        })
        .build()
        .unwrap()
        .start()
        .unwrap();
    let started = Instant::now();
    wait_for("the panicking alerter", Duration::from_secs(30), || {
        panicky_called.load(std::sync::atomic::Ordering::SeqCst)
    });
    let alert_ok = id(tend::enqueue(&mut *conn, &Alerting::<true> { n: 2 }).unwrap());
    handle.wake();
    wait_for("the recording alerter", Duration::from_secs(30), || {
        recorded.lock().unwrap().contains(&alert_ok)
    });
    let healthy_done_at = {
        wait_for("the healthy tasks", Duration::from_secs(60), || {
            let done = log.read().done_keys();
            healthy.iter().all(|k| done.contains(k))
        });
        started.elapsed()
    };
    // The hung task: dead once its lease lapsed, and its late success refused.
    let status_of = |conn: &mut C, id: i64| conn.tasks().into_iter().find(|t| t.id == id);
    wait_for("the hung task to be dead", Duration::from_secs(30), || {
        status_of(&mut conn, hangs).is_some_and(|t| t.task_status == 4)
    });
    wait_for(
        "the late outcome to be refused",
        Duration::from_secs(30),
        || refused.load(std::sync::atomic::Ordering::SeqCst) >= 1,
    );
    let report = handle.shutdown();
    let rows = conn.tasks();
    let row = |id: i64| {
        rows.iter()
            .find(|t| t.id == id)
            .unwrap_or_else(|| panic!("task {id} was deleted"))
            .clone()
    };
    let mut states = Vec::new();
    let mut expect = |what: &str, id: i64, status: i32, msg: &str| {
        let r = row(id);
        assert_eq!(
            r.task_status, status,
            "{what} (task {id}) ended in status {} with `{}`",
            r.task_status, r.error_msg
        );
        assert!(
            r.error_msg.contains(msg),
            "{what}: message `{}` lacks `{msg}`",
            r.error_msg
        );
        states.push(format!(
            "{what}={}",
            tend::TaskStatus::from_i32(status).unwrap()
        ));
    };
    expect(
        "unknown_signature",
        unknown,
        5,
        "no task type is registered",
    );
    for (gid, _) in &garbled {
        expect("undecodable", *gid, 5, "does not decode");
    }
    expect("handler_panics", panics, 4, "panicked");
    expect("hangs_past_lease", hangs, 4, "never reported back");
    expect("alerter_panics", alert_panics, 4, "fails");
    expect("alerter_ok", alert_ok, 4, "fails");
    let poison: Vec<i64> = [unknown, panics, hangs, alert_panics, alert_ok]
        .into_iter()
        .chain(garbled.iter().map(|g| g.0))
        .collect();
    let parsed = log.read();
    let hang_runs: Vec<_> = parsed.runs.iter().filter(|r| r.key == -1).collect();
    let remaining_healthy = rows
        .iter()
        .filter(|t| t.method_sign_name == support::Work::SIGNATURE)
        .count();
    // tend's events report the hung attempt's success before its write is refused; the table
    // is what counts: the row is kept, dead.
    let reported = succeeded.lock().unwrap().clone();
    let poison_reported_ok: Vec<i64> = poison
        .iter()
        .copied()
        .filter(|p| reported.contains(p) && *p != hangs)
        .collect();
    figures(format!(
        "FAULTS poison backend={b} poison_tasks={} healthy={} healthy_drained_s={:.1} \
         {} hung_runs={} late_outcomes_refused={} poison_rows_kept={} lost_healthy={} \
         hung_task_reported_succeeded_event={}",
        poison.len(),
        healthy.len(),
        healthy_done_at.as_secs_f64(),
        states.join(" "),
        hang_runs.len(),
        refused.load(std::sync::atomic::Ordering::SeqCst),
        rows.len(),
        remaining_healthy,
        reported.contains(&hangs),
    ));
    assert_eq!(rows.len(), poison.len(), "only the poison tasks are left");
    assert_eq!(remaining_healthy, 0);
    assert!(poison_reported_ok.is_empty(), "{poison_reported_ok:?}");
    assert_eq!(
        hang_runs.len(),
        1,
        "the hung task ran once (then was parked)"
    );
    assert!(hang_runs[0].end.is_some());
    assert!(report.all_joined());
}

per_backend!(here: poison);
