//! Scenario 6, bad input.

use super::*;

// --------------------------------------------------------------------------- 6. bad input

#[derive(Debug, Serialize, Deserialize)]
struct BadExpr;

impl Task for BadExpr {
    const SIGNATURE: &'static str = "tend.tests.bad_expr";
    fn options() -> TaskOptions {
        TaskOptions::new().alert_expression(Some("executeTimes >= 3 && "))
    }
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TypoExpr;

impl Task for TypoExpr {
    const SIGNATURE: &'static str = "tend.tests.typo_expr";
    fn options() -> TaskOptions {
        TaskOptions::new().alert_expression(Some("executeTimes > 1 || fallbackFialed"))
    }
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct NamesMissingAlerter;

impl Task for NamesMissingAlerter {
    const SIGNATURE: &'static str = "tend.tests.missing_alerter";
    fn options() -> TaskOptions {
        TaskOptions::new().alerter("nobody")
    }
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct BadSignature;

impl Task for BadSignature {
    const SIGNATURE: &'static str = "orders ship(long)";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Big {
    data: Vec<u8>,
}

impl Task for Big {
    const SIGNATURE: &'static str = "tend.tests.big";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Every invalid setting, expression and input gets a clear error at the earliest point, and
/// nothing panics.
fn bad_input<C: TestConn>() {
    let (Some(db), Some(empty)) = (
        Db::create(C::BACKEND, "faults"),
        Db::create(C::BACKEND, "faults"),
    ) else {
        return;
    };
    let b = C::BACKEND.name();
    let pool = support::migrated::<C>(&db, 3);
    let checked = std::cell::Cell::new(0);
    let check = |what: &str, r: Result<(), tend::Error>, must: &[&str]| {
        let e = r.err().unwrap_or_else(|| panic!("{what}: accepted"));
        let msg = e.to_string();
        for m in must {
            assert!(msg.contains(m), "{what}: `{msg}` lacks `{m}`");
        }
        checked.set(checked.get() + 1);
    };
    let reg = || {
        let mut r = tend::Registry::new();
        r.register::<support::Work>().unwrap();
        r
    };
    let builder = || tend::WorkerPool::builder(pool.clone(), reg());
    // The pool builder: rejected by build(), before any thread starts.
    let bad_builders: Vec<(&str, tend::WorkerPoolBuilder<C>, &str)> = vec![
        ("threads 0", builder().threads(0), "`threads`"),
        ("threads 1025", builder().threads(1025), "`threads`"),
        ("batch 0", builder().batch_size(0), "`batch_size`"),
        ("batch 10001", builder().batch_size(10_001), "`batch_size`"),
        (
            "poll 0",
            builder().poll_interval(Duration::ZERO),
            "`poll_interval`",
        ),
        (
            "lease 999 ms",
            builder().lease(Duration::from_millis(999)),
            "`lease`",
        ),
        (
            "timeout < lease",
            builder()
                .lease(Duration::from_secs(10))
                .task_timeout(Duration::from_secs(5)),
            "`task_timeout`",
        ),
        (
            "keep_completed 10 ms",
            builder().keep_completed(Duration::from_millis(10)),
            "`keep_completed`",
        ),
        ("owner empty", builder().owner(""), "`owner`"),
        ("owner 256", builder().owner("o".repeat(256)), "`owner`"),
    ];
    for (what, bld, name) in bad_builders {
        check(what, bld.build().map(|_| ()), &["invalid setting", name]);
    }
    check(
        "no shards",
        tend::Shards::<C>::new(vec![]).map(|_| ()),
        &["`shards`"],
    );
    check(
        "snowflake node 1024",
        tend::Snowflake::new(1024).map(|_| ()),
        &["`node_id`", "1023"],
    );
    // Task types: rejected when registered, before any task is enqueued.
    let mut r = tend::Registry::new();
    let e = r.register::<BadExpr>().map(|_| ()).unwrap_err();
    match e.kind() {
        tend::ErrorKind::InvalidExpression { error, expression } => {
            assert_eq!(error.position, expression.len(), "{e}");
            assert!(e.to_string().contains("at position 21"), "{e}");
        }
        k => panic!("bad expression: {k:?}"),
    }
    checked.set(checked.get() + 1);
    let e = r.register::<TypoExpr>().map(|_| ()).unwrap_err();
    match e.kind() {
        tend::ErrorKind::InvalidExpression { error, .. } => {
            assert_eq!(error.position, 20, "the typo's position: {e}");
        }
        k => panic!("typo: {k:?}"),
    }
    checked.set(checked.get() + 1);
    check(
        "unknown alerter",
        r.register::<NamesMissingAlerter>().map(|_| ()),
        &["nobody", "Registry::alerter"],
    );
    check(
        "bad signature",
        r.register::<BadSignature>().map(|_| ()),
        &["invalid task signature", "orders ship(long)"],
    );
    r.register::<support::Work>().unwrap();
    check(
        "duplicate signature",
        r.register::<support::Work>().map(|_| ()),
        &["tend.tests.work", "unique"],
    );
    check(
        "alerter without a name",
        r.alerter("", |_: &tend::Alert| {}).map(|_| ()),
        &["`alerter`"],
    );
    // Per-task settings and payloads: rejected by enqueue, before anything is written.
    let mut conn = pool.get().unwrap();
    let w = support::Work {
        key: 1,
        ms: 0,
        log: 0,
    };
    let bad_tasks: Vec<(&str, tend::NewTask, &str)> = vec![
        (
            "interval 0",
            w.new_task().execute_interval(Duration::ZERO),
            "`execute_interval`",
        ),
        (
            "interval 1.5 s",
            w.new_task().execute_interval(Duration::from_millis(1500)),
            "`execute_interval`",
        ),
        (
            "delay 0.5 s",
            w.new_task().delay(Duration::from_millis(500)),
            "`delay`",
        ),
        (
            "max_attempts 0",
            w.new_task().max_attempts(0),
            "`max_attempts`",
        ),
        (
            "expression",
            w.new_task().alert_expression(Some("executeTimes + 1")),
            "must be a bool",
        ),
        ("alerter empty", w.new_task().alerter(""), "`alerter`"),
        (
            "task_id 501",
            w.new_task().task_id("t".repeat(501)),
            "`task_id`",
        ),
        (
            "idempotency empty",
            w.new_task().idempotency_key(""),
            "`idempotency_key`",
        ),
        (
            "idempotency 256",
            w.new_task().idempotency_key("k".repeat(256)),
            "`idempotency_key`",
        ),
        (
            "without transaction",
            w.new_task()
                .transaction_way(tend::TransactionWay::WithoutTransaction),
            "Outbox",
        ),
    ];
    for (what, t, name) in bad_tasks {
        check(what, tend::enqueue_new(&mut *conn, t).map(|_| ()), &[name]);
    }
    let big = Big {
        data: vec![7; tend::MAX_PAYLOAD_BYTES + 1],
    };
    let e = tend::NewTask::new(&big).map(|_| ()).unwrap_err();
    assert!(
        matches!(e.kind(), tend::ErrorKind::PayloadTooLarge { .. }),
        "oversized payload: {e}"
    );
    assert!(e.to_string().contains("your own table"), "{e}");
    checked.set(checked.get() + 1);
    check(
        "oversized payload through enqueue",
        tend::enqueue(&mut *conn, &big).map(|_| ()),
        &["more than"],
    );
    assert_eq!(task_count(&mut *conn), 0, "nothing was written");
    // An outbox transaction inside another transaction cannot see the real commit.
    let outbox = builder().build().unwrap().outbox();
    check(
        "nested outbox transaction",
        conn.transaction(|c| {
            outbox
                .transaction(c, |_, _| Ok::<_, tend::Error>(()))
                .map(|_| ())
        }),
        &["outermost"],
    );
    drop(conn);
    // An unmigrated database: the first call that touches tend's table says to migrate.
    let unmigrated = support::pool::<C>(&empty.url, 2, Duration::from_secs(10));
    for (what, r) in [
        (
            "unmigrated start",
            tend::WorkerPool::builder(unmigrated.clone(), reg())
                .build()
                .unwrap()
                .start()
                .map(|_| ()),
        ),
        (
            "unmigrated enqueue",
            tend::enqueue(&mut *unmigrated.get().unwrap(), &w).map(|_| ()),
        ),
        (
            "unmigrated check",
            tend::check_schema(&mut *unmigrated.get().unwrap()),
        ),
    ] {
        let e = r.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(e.is_not_migrated(), "{what}: {e}");
        assert!(e.to_string().contains("tend::migrate"), "{what}: {e}");
        checked.set(checked.get() + 1);
    }
    // A bad database URL: r2d2 reports it when the pool is built; a pool built unchecked
    // fails tend's start with a pool error within the checkout timeout.
    let bad_url = match C::BACKEND {
        Backend::Postgres => "postgres://postgres@127.0.0.1:1/test".to_string(),
        Backend::Mysql => "mysql://root@127.0.0.1:1/test".to_string(),
        Backend::Sqlite => "/nonexistent-tend-dir/sub/x.db".to_string(),
    };
    let t0 = Instant::now();
    let lazy = C::customize(
        diesel::r2d2::Pool::builder()
            .max_size(1)
            .connection_timeout(Duration::from_secs(1)),
        Duration::from_secs(1),
    )
    .build_unchecked(diesel::r2d2::ConnectionManager::<C>::new(bad_url.clone()));
    let e = tend::WorkerPool::builder(lazy.clone(), reg())
        .build()
        .unwrap()
        .start()
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e.kind(), tend::ErrorKind::Pool(_)), "bad url: {e}");
    assert!(
        e.to_string()
            .contains("could not get a database connection"),
        "{e}"
    );
    let e2 = tend::Shards::new(vec![lazy])
        .unwrap()
        .migrate_all()
        .unwrap_err();
    assert!(e2.to_string().contains("connection"), "{e2}");
    checked.set(checked.get() + 2);
    let bad_url_s = t0.elapsed().as_secs_f64();
    figures(format!(
        "FAULTS bad_input backend={b} rejected={} panics=0 bad_url_error_after_s={bad_url_s:.1} \
         bad_url_message=\"{e}\"",
        checked.get()
    ));
}

per_backend!(here: bad_input);
