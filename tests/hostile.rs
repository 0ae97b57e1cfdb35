//! Hostile rows end to end (issue 11): a pool drains 1000 healthy tasks past rows with extreme
//! and malformed values in every column, rows in statuses this build does not know, and rows an
//! application trigger refuses to let tend lease, on every backend. Each hostile row ends in a
//! visible state with a message naming what is wrong; none is deleted; no thread dies.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tend::{NewTask, Registry, Task, TaskContext, TaskError, WorkerPool};

use support::{now_ms, per_backend, wait_for, Backend, Row, TestConn, TestDb, PARKED};

const HEALTHY: usize = 1000;

/// Runs per test (the backends' tests run at once in one process).
fn ran() -> &'static Mutex<HashMap<u64, u64>> {
    static RAN: OnceLock<Mutex<HashMap<u64, u64>>> = OnceLock::new();
    RAN.get_or_init(Default::default)
}

#[derive(Serialize, Deserialize)]
struct Healthy {
    run: u64,
}

impl Task for Healthy {
    const SIGNATURE: &'static str = "hostile.healthy";
    fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
        *ran().lock().unwrap().entry(self.run).or_default() += 1;
        Ok(())
    }
}

/// A trigger, as an application might have one, that refuses some updates of tend's rows:
/// `task_id = 'poison'` cannot be leased (status 1), `task_id = 'poison-any'` cannot be
/// updated at all.
fn install_poison_trigger<C: TestConn>(db: &TestDb<C>) {
    match C::BACKEND {
        Backend::Postgres => db.exec(
            "CREATE FUNCTION tend_test_poison() RETURNS trigger AS $$ BEGIN \
               IF NEW.task_id = 'poison-any' OR (NEW.task_id = 'poison' AND NEW.task_status = 1) \
               THEN RAISE EXCEPTION 'poison row %', NEW.id; END IF; RETURN NEW; END $$ \
             LANGUAGE plpgsql; \
             CREATE TRIGGER tend_test_poison BEFORE UPDATE ON consistency_task \
             FOR EACH ROW EXECUTE FUNCTION tend_test_poison();",
        ),
        Backend::Mysql => db.exec(
            "CREATE TRIGGER tend_test_poison BEFORE UPDATE ON consistency_task FOR EACH ROW \
             BEGIN IF NEW.task_id = 'poison-any' OR (NEW.task_id = 'poison' AND NEW.task_status = 1) \
             THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poison row'; END IF; END",
        ),
        Backend::Sqlite => db.exec(
            "CREATE TRIGGER tend_test_poison BEFORE UPDATE ON consistency_task FOR EACH ROW \
             WHEN NEW.task_id = 'poison-any' OR (NEW.task_id = 'poison' AND NEW.task_status = 1) \
             BEGIN SELECT RAISE(ABORT, 'poison row'); END;",
        ),
    }
}

/// A hostile row: a healthy task's row with `sets` applied, and what must become of it.
struct Hostile {
    sets: String,
    want: Want,
}

#[derive(Debug, Clone)]
enum Want {
    /// Runs and is deleted.
    Runs,
    /// Ends in this status with an error message containing these words.
    Ends(i32, &'static str),
    /// Left exactly as it was (status unknown to this build, or untouchable).
    Untouched(i32),
}

fn hostile_rows(backend: Backend) -> Vec<Hostile> {
    let now = now_ms();
    let long = |n: usize| format!("'{}'", "é".repeat(n));
    let bytes = |b: &[u8]| match backend {
        Backend::Postgres => format!(
            "'\\x{}'::bytea",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
        _ => format!(
            "X'{}'",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    };
    let h = |sets: String, want| Hostile { sets, want };
    vec![
        // The reported row: every claim failed on PostgreSQL/MySQL, the fetcher panicked on
        // SQLite. Now: dead, the message names the count.
        h(
            "task_status = 2, execute_times = 2147483647".into(),
            Want::Ends(4, "execute_times (now 2147483647"),
        ),
        h(
            "execute_times = 2147483646".into(),
            Want::Ends(4, "is past max_attempts = 25"),
        ),
        h(
            "execute_times = -2147483648".into(),
            Want::Ends(5, "execute_times = -2147483648 is out of range"),
        ),
        h(
            "execute_times = -1".into(),
            Want::Ends(5, "execute_times = -1 is out of range"),
        ),
        h(
            "max_attempts = 0".into(),
            Want::Ends(5, "max_attempts = 0 is out of range"),
        ),
        h(
            "max_attempts = -2147483648".into(),
            Want::Ends(5, "max_attempts = -2147483648 is out of range"),
        ),
        h("max_attempts = 2147483647".into(), Want::Runs),
        h(
            "execute_interval_sec = 0".into(),
            Want::Ends(5, "execute_interval_sec = 0 is out of range"),
        ),
        h(
            "execute_interval_sec = -2147483648".into(),
            Want::Ends(5, "execute_interval_sec"),
        ),
        h("execute_interval_sec = 2147483647".into(), Want::Runs),
        h("task_status = 9".into(), Want::Untouched(9)),
        h("task_status = -1".into(), Want::Untouched(-1)),
        h("task_status = 2147483647".into(), Want::Untouched(i32::MAX)),
        h("execute_time = -9223372036854775808".into(), Want::Runs),
        h(
            "execute_time = 9223372036854775807".into(),
            Want::Untouched(0),
        ),
        h(
            format!(
                "task_status = 1, lease_token = 9223372036854775807, lease_expires_at = \
                 -9223372036854775808, lease_owner = {}, execute_time = {}",
                long(255),
                now - 1000
            ),
            Want::Runs,
        ),
        h(
            "shard_key = -9223372036854775808, gmt_create = 9223372036854775807, \
             gmt_modified = -9223372036854775808"
                .into(),
            Want::Runs,
        ),
        h(
            "payload_version = -2147483648, execute_way = 2147483647, thread_way = -1, \
             transaction_way = 0, delay_time = -1"
                .into(),
            Want::Runs,
        ),
        h(
            format!(
                "task_id = {}, parameter_types = '', method_name = {}",
                long(500),
                long(100)
            ),
            Want::Runs,
        ),
        h(
            format!(
                "error_msg = {}, fallback_error_msg = {}",
                long(30_000),
                long(30_000)
            ),
            Want::Runs,
        ),
        h(
            "alert_expression = '((((((((', alert_action_bean_name = 'nobody'".into(),
            Want::Runs,
        ),
        h(
            format!("task_parameter = {}", bytes(&[])),
            Want::Ends(5, "does not decode"),
        ),
        h(
            format!("task_parameter = {}", bytes(&[0xff; 64])),
            Want::Ends(5, "does not decode"),
        ),
        h(
            "method_sign_name = ''".into(),
            Want::Ends(5, "no task type is registered"),
        ),
        h(
            format!("method_sign_name = {}", long(200)),
            Want::Ends(5, "no task type is registered"),
        ),
        // Rows an application trigger refuses: held with the database's error...
        h("task_id = 'poison'".into(), Want::Ends(5, "poison row")),
        // ...or, when no update of it is allowed at all, left alone by this process.
        h("task_id = 'poison-any'".into(), Want::Untouched(0)),
    ]
}

fn drains_1000_healthy_tasks_past_hostile_rows<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    static RUNS: AtomicU64 = AtomicU64::new(1);
    let run = RUNS.fetch_add(1, Ordering::SeqCst) * 10 + C::BACKEND as u64;
    let hostile = hostile_rows(C::BACKEND);
    let mut conn = db.pooled();
    // Hostile rows first (the oldest, so every claim meets them), from healthy payloads.
    let mut ids = Vec::new();
    for h in &hostile {
        let id = tend::enqueue(&mut conn, &Healthy { run })
            .unwrap()
            .id()
            .unwrap();
        db.exec(&format!(
            "UPDATE consistency_task SET execute_time = execute_time - 60000 WHERE id = {id}"
        ));
        db.exec(&format!(
            "UPDATE consistency_task SET {} WHERE id = {id}",
            h.sets
        ));
        ids.push(id);
    }
    install_poison_trigger(&db);
    let before: HashMap<i64, Row> = db.rows().into_iter().map(|r| (r.id, r)).collect();
    let tasks: Vec<NewTask> = (0..HEALTHY)
        .map(|_| NewTask::new(&Healthy { run }).unwrap())
        .collect();
    tend::enqueue_many(&mut conn, tasks).unwrap();
    drop(conn);

    let mut registry = Registry::new();
    registry.register::<Healthy>().unwrap();
    let handle = WorkerPool::builder(db.pool.clone(), registry)
        .threads(4)
        .batch_size(10)
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap()
        .start()
        .unwrap();
    let runs_expected = HEALTHY
        + hostile
            .iter()
            .filter(|h| matches!(h.want, Want::Runs))
            .count();
    wait_for(
        "every healthy task to run",
        Duration::from_secs(120),
        || {
            let n = ran().lock().unwrap().get(&run).copied().unwrap_or(0);
            let settled = db
                .rows()
                .iter()
                .all(|r| !ids.contains(&r.id) || r.task_status != 1);
            (n as usize >= runs_expected && settled).then_some(())
        },
    );
    let report = handle.shutdown();
    assert!(report.all_joined(), "{report:?}");

    let rows: HashMap<i64, Row> = db.rows().into_iter().map(|r| (r.id, r)).collect();
    let healthy_left = rows.values().filter(|r| !ids.contains(&r.id)).count();
    assert_eq!(healthy_left, 0, "every healthy task ran and was deleted");
    let mut outcomes = Vec::new();
    for (h, id) in hostile.iter().zip(&ids) {
        let got = rows.get(id);
        match (&h.want, got) {
            (Want::Runs, None) => {}
            (Want::Ends(status, words), Some(r)) => {
                assert_eq!(r.task_status, *status, "`{}`: {r:?}", h.sets);
                assert_eq!(r.execute_time, PARKED, "`{}` is parked", h.sets);
                assert!(
                    r.error_msg.contains(words),
                    "`{}`: error_msg {:?} lacks {words:?}",
                    h.sets,
                    r.error_msg
                );
            }
            (Want::Untouched(status), Some(r)) => {
                assert_eq!(r.task_status, *status, "`{}`", h.sets);
                let was = &before[id];
                assert_eq!(
                    (
                        r.execute_times,
                        r.execute_time,
                        r.gmt_modified,
                        &r.error_msg
                    ),
                    (
                        was.execute_times,
                        was.execute_time,
                        was.gmt_modified,
                        &was.error_msg
                    ),
                    "`{}` untouched",
                    h.sets
                );
            }
            (want, got) => panic!("`{}`: wanted {want:?}, got {got:?}", h.sets),
        }
        outcomes.push(format!("{:?}", h.want));
    }
    assert_eq!(
        ran().lock().unwrap()[&run] as usize,
        runs_expected,
        "each ran once"
    );
    println!(
        "HOSTILE backend={} hostile_rows={} healthy_drained={HEALTHY} runs={}",
        C::BACKEND.name(),
        hostile.len(),
        runs_expected
    );
}

/// `enqueue_many` of more rows than one statement may bind (SQLite takes 32 766 binds, the
/// servers 65 535; a row has 27) is one transaction of several statements, not an error.
fn enqueue_many_takes_more_rows_than_one_statement_binds<C: TestConn>() {
    let Some(db) = TestDb::<C>::fresh() else {
        return;
    };
    let mut conn = db.pooled();
    let tasks: Vec<NewTask> = (0..5000)
        .map(|_| NewTask::new(&Healthy { run: 0 }).unwrap())
        .collect();
    let n = diesel::Connection::transaction(&mut *conn, |c| tend::enqueue_many(c, tasks)).unwrap();
    assert_eq!(n, 5000);
    assert_eq!(db.rows().len(), 5000);
}

per_backend!(
    drains_1000_healthy_tasks_past_hostile_rows,
    enqueue_many_takes_more_rows_than_one_statement_binds
);
