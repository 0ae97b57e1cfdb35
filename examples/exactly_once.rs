//! Exactly-once local effects: each task adds loyalty points in the same transaction that
//! completes it (`tend::complete_in`). The example runs a worker as a child process, SIGKILLs
//! it five times mid-drain, lets a last worker finish, and then checks its own claim: the points
//! equal the number of tasks, although tasks in flight at each kill ran again. It exits non-zero
//! when the claim does not hold.
//!
//! ```text
//! cargo run --example exactly_once
//! ```
//!
//! Needs nothing but Rust: SQLite is bundled; the database is a file in the temp directory.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use serde::{Deserialize, Serialize};
use tend::{NewTask, Registry, Task, TaskContext, TaskError, WorkerPool};

type Db = Pool<ConnectionManager<SqliteConnection>>;

const TASKS: i64 = 3000;
const KILLS: usize = 5;

/// "Give this customer `points` loyalty points": a local database effect that must happen once.
#[derive(Serialize, Deserialize)]
struct AddPoints {
    customer: i64,
    points: i64,
}

impl Task for AddPoints {
    const SIGNATURE: &'static str = "loyalty.add_points";
    fn execute(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        // The application's pool, registered once with the registry: no global.
        let mut conn = ctx.state::<Db>()?.get()?;
        conn.transaction(|conn| {
            diesel::sql_query("UPDATE points SET total = total + ? WHERE customer = ?")
                .bind::<diesel::sql_types::BigInt, _>(self.points)
                .bind::<diesel::sql_types::BigInt, _>(self.customer)
                .execute(conn)?;
            // The task completes in this transaction, fenced by its lease: both or neither.
            tend::complete_in(conn, ctx)?;
            Ok(())
        })
    }
}

fn pool(path: &Path) -> Db {
    Pool::builder()
        .max_size(8)
        .connection_customizer(Box::new(tend::SqliteSetup::new()))
        .build(ConnectionManager::new(path.to_str().expect("a UTF-8 path")))
        .expect("opening the database")
}

fn one(conn: &mut SqliteConnection, sql: &str) -> i64 {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(sql))
        .get_result(conn)
        .expect(sql)
}

/// The worker process: drains until killed or until stdin closes.
fn worker(path: &Path) {
    let db = pool(path);
    let mut registry = Registry::new();
    registry
        .state(db.clone())
        .and_then(|r| r.register::<AddPoints>())
        .expect("registering");
    let handle = WorkerPool::builder(db, registry)
        .threads(4)
        .lease(Duration::from_secs(1))
        .poll_interval(Duration::from_millis(50))
        .task_timeout(Duration::from_secs(5))
        .build()
        .and_then(|p| p.start())
        .expect("starting the pool");
    println!("ready");
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    handle.shutdown();
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--worker" {
        worker(Path::new(&args[2]));
        return ExitCode::SUCCESS;
    }
    let path: PathBuf =
        std::env::temp_dir().join(format!("tend-exactly-once-{}.db", std::process::id()));
    let db = pool(&path);
    let mut conn = db.get().expect("a connection");
    tend::migrate(&mut conn).expect("migrating");
    conn.batch_execute(
        "CREATE TABLE points (customer INTEGER PRIMARY KEY, total BIGINT NOT NULL); \
         INSERT INTO points VALUES (1, 0), (2, 0), (3, 0);",
    )
    .expect("the points table");
    let tasks: Vec<NewTask> = (0..TASKS)
        .map(|i| {
            NewTask::new(&AddPoints {
                customer: i % 3 + 1,
                points: 1,
            })
            .expect("a task")
        })
        .collect();
    tend::enqueue_many(&mut conn, tasks).expect("enqueueing");

    let spawn = || {
        let mut child = Command::new(std::env::current_exe().expect("this program"))
            .args(["--worker", path.to_str().expect("a UTF-8 path")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting a worker process");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().expect("its stdout")),
            &mut line,
        )
        .expect("reading the worker");
        child
    };
    let left = |conn: &mut SqliteConnection| one(conn, "(SELECT COUNT(*) FROM consistency_task)");
    for kill in 1..=KILLS {
        let mut child = spawn();
        let before = left(&mut conn);
        while left(&mut conn) > before - 100 && left(&mut conn) > 0 {
            thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaping");
        println!(
            "killed worker {kill} of {KILLS} with {} tasks left",
            left(&mut conn)
        );
    }
    let mut last = spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while left(&mut conn) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    drop(last.stdin.take());
    last.wait().expect("the last worker");

    let points = one(&mut conn, "(SELECT SUM(total) FROM points)");
    let remaining = left(&mut conn);
    drop(conn);
    drop(db);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    println!("{TASKS} tasks, {KILLS} kills: {points} points given, {remaining} tasks left");
    if points == TASKS && remaining == 0 {
        println!("exactly once: every task's points were given once");
        ExitCode::SUCCESS
    } else {
        eprintln!("NOT exactly once: expected {TASKS} points and no task left");
        ExitCode::FAILURE
    }
}
