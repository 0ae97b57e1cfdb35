//! Fuzzing (issue 7, scenario 7) with proptest, on stable Rust: payload decoding of arbitrary
//! bytes into a few task types, and the alert expression parser and evaluator on arbitrary
//! strings and on generated well-formed expressions checked against a reference evaluator.
//!
//! Bounded: `TEND_FUZZ_CASES` (default 1000) cases per property, each property well under a
//! minute. Failures are persisted by proptest in `tests/fuzz/<file>.proptest-regressions` (commit it)
//! and replayed first on every run; `tests/fuzz_corpus/` holds a seed corpus that
//! `corpus_*` always replays.
//!
//! Payloads go through the public API only: a task is enqueued, its payload overwritten with
//! the bytes by SQL (as a corrupt row or another deployment would leave it), and
//! `tend::testing::TestWorker` runs it; the outcome must be "ran once" or "held with a
//! message", never a panic, a failure, a dead task or a lost row.
#![cfg(all(feature = "testing", feature = "sqlite"))]

mod expr;

use std::cell::RefCell;
use std::collections::BTreeMap;

use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl, SqliteConnection};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde::{Deserialize, Serialize};
use tend::testing::TestWorker;
use tend::{AlertVars, Expr, Task, TaskContext, TaskError};

/// Writes a figures line straight to stderr (the harness swallows `eprintln!` of passing
/// tests; these lines must show in CI's log).
fn figures(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn cases() -> u32 {
    std::env::var("TEND_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

// ------------------------------------------------------------------------ payload decoding

thread_local! {
    /// What the handlers of this thread decoded (payload type, debug form).
    static DECODED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn decoded(v: String) {
    DECODED.with(|d| d.borrow_mut().push(v));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: i64,
    name: String,
    tags: Vec<u32>,
    flag: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Pair(u8, i16),
    Named { text: String, bytes: Vec<u8> },
    Nested(Box<Option<Shape>>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Numbers(u64, i32, f64, char);

macro_rules! fuzz_task {
    ($t:ty, $sig:literal) => {
        impl Task for $t {
            const SIGNATURE: &'static str = $sig;
            fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
                decoded(format!("{self:?}"));
                Ok(())
            }
        }
    };
}
fuzz_task!(Record, "tend.fuzz.record");
fuzz_task!(Shape, "tend.fuzz.shape");
fuzz_task!(Numbers, "tend.fuzz.numbers");

/// A SQLite database in memory with tend's table, and a worker for the three types.
struct Bench {
    conn: SqliteConnection,
    worker: TestWorker,
}

impl Bench {
    fn new() -> Bench {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        tend::migrate(&mut conn).unwrap();
        let mut registry = tend::Registry::new();
        registry.register::<Record>().unwrap();
        registry.register::<Shape>().unwrap();
        registry.register::<Numbers>().unwrap();
        Bench {
            conn,
            worker: TestWorker::new(registry),
        }
    }

    /// Stores `bytes` as the payload of a task of the type named by `kind` and runs it.
    /// Returns what happened, after checking it is one of the two allowed outcomes.
    fn run(&mut self, kind: u8, bytes: &[u8]) -> Result<Outcome, TestCaseError> {
        self.conn
            .batch_execute("DELETE FROM consistency_task")
            .unwrap();
        DECODED.with(|d| d.borrow_mut().clear());
        let template = match kind % 3 {
            0 => tend::enqueue(
                &mut self.conn,
                &Record {
                    id: 0,
                    name: String::new(),
                    tags: vec![],
                    flag: None,
                },
            ),
            1 => tend::enqueue(&mut self.conn, &Shape::Unit),
            _ => tend::enqueue(&mut self.conn, &Numbers(0, 0, 0.0, 'x')),
        };
        let id = template.unwrap().id().unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.conn
            .batch_execute(&format!(
                "UPDATE consistency_task SET task_parameter = X'{hex}' WHERE id = {id}"
            ))
            .unwrap();
        let drained = self.worker.drain(&mut self.conn).unwrap();
        let ran = DECODED.with(|d| d.borrow().clone());
        let rows: Vec<(i32, String)> = diesel::sql_query(
            "SELECT task_status AS status, error_msg AS msg FROM consistency_task",
        )
        .load::<StatusRow>(&mut self.conn)
        .unwrap()
        .into_iter()
        .map(|r| (r.status, r.msg))
        .collect();
        prop_assert_eq!(drained.failed + drained.dead, 0, "{:?}", drained);
        match (drained.succeeded, drained.held) {
            (1, 0) => {
                prop_assert_eq!(ran.len(), 1, "the handler ran once");
                prop_assert!(rows.is_empty(), "a success deletes the row");
                Ok(Outcome::Ran)
            }
            (0, 1) => {
                prop_assert!(ran.is_empty(), "a held task's handler never runs");
                prop_assert_eq!(rows.len(), 1, "a held task is kept");
                prop_assert_eq!(rows[0].0, 5, "status held");
                prop_assert!(
                    rows[0].1.contains("does not decode"),
                    "message: {}",
                    rows[0].1
                );
                Ok(Outcome::Held)
            }
            _ => Err(TestCaseError::fail(format!(
                "unexpected outcome {drained:?}"
            ))),
        }
    }
}

#[derive(diesel::QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    status: i32,
    #[diesel(sql_type = diesel::sql_types::Text)]
    msg: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ran,
    Held,
}

fn record() -> impl Strategy<Value = Record> {
    (
        any::<i64>(),
        ".{0,12}",
        proptest::collection::vec(any::<u32>(), 0..4),
        any::<Option<bool>>(),
    )
        .prop_map(|(id, name, tags, flag)| Record {
            id,
            name,
            tags,
            flag,
        })
}

fn shape() -> impl Strategy<Value = Shape> {
    let leaf = prop_oneof![
        Just(Shape::Unit),
        (any::<u8>(), any::<i16>()).prop_map(|(a, b)| Shape::Pair(a, b)),
        (".{0,8}", proptest::collection::vec(any::<u8>(), 0..6))
            .prop_map(|(text, bytes)| Shape::Named { text, bytes }),
    ];
    leaf.prop_recursive(3, 8, 1, |inner| {
        proptest::option::of(inner).prop_map(|s| Shape::Nested(Box::new(s)))
    })
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap()
}

/// A valid encoding of a value of `kind`.
fn valid(kind: u8) -> BoxedStrategy<Vec<u8>> {
    match kind % 3 {
        0 => record().prop_map(|r| enc(&r)).boxed(),
        1 => shape().prop_map(|s| enc(&s)).boxed(),
        _ => (any::<u64>(), any::<i32>(), any::<f64>(), any::<char>())
            .prop_map(|(a, b, c, d)| enc(&Numbers(a, b, c, d)))
            .boxed(),
    }
}

/// Bytes near a valid encoding: truncated, extended, or with bytes changed.
fn mutated(kind: u8) -> impl Strategy<Value = Vec<u8>> {
    (
        valid(kind),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        0usize..4,
        proptest::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(mut bytes, flips, cut, tail)| {
            for (i, b) in flips {
                if !bytes.is_empty() {
                    let i = i.index(bytes.len());
                    bytes[i] = b;
                }
            }
            let keep = bytes.len().saturating_sub(cut);
            bytes.truncate(keep);
            bytes.extend(tail);
            bytes
        })
}

#[test]
fn payloads_of_arbitrary_bytes_run_or_are_held() {
    let started = std::time::Instant::now();
    let bench = RefCell::new(Bench::new());
    let seen = RefCell::new(BTreeMap::<Outcome, usize>::new());
    let n = cases();
    proptest!(config(n), |(kind in 0u8..3, bytes in proptest::collection::vec(any::<u8>(), 0..48))| {
        let o = bench.borrow_mut().run(kind, &bytes)?;
        *seen.borrow_mut().entry(o).or_default() += 1;
    });
    let seen = seen.into_inner();
    figures(format!(
        "FUZZ payload_arbitrary cases={n} outcomes={seen:?} elapsed_ms={}",
        started.elapsed().as_millis()
    ));
}

#[test]
fn payloads_near_valid_encodings_run_or_are_held() {
    let started = std::time::Instant::now();
    let bench = RefCell::new(Bench::new());
    let seen = RefCell::new(BTreeMap::<Outcome, usize>::new());
    let n = cases();
    proptest!(config(n), |((kind, bytes) in (0u8..3).prop_flat_map(|k| (Just(k), mutated(k))))| {
        let o = bench.borrow_mut().run(kind, &bytes)?;
        *seen.borrow_mut().entry(o).or_default() += 1;
    });
    // Valid encodings must always run.
    proptest!(config(n / 4), |((kind, bytes) in (0u8..3).prop_flat_map(|k| (Just(k), valid(k))))| {
        prop_assert_eq!(bench.borrow_mut().run(kind, &bytes)?, Outcome::Ran);
    });
    let seen = seen.into_inner();
    figures(format!(
        "FUZZ payload_mutated cases={n}+{} outcomes={seen:?} elapsed_ms={}",
        n / 4,
        started.elapsed().as_millis()
    ));
}

/// Replays `tests/fuzz_corpus/payloads.txt`: `kind hex expected` per line.
#[test]
fn corpus_payloads() {
    let mut bench = Bench::new();
    let mut n = 0;
    for line in include_str!("../fuzz_corpus/payloads.txt").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let kind = match f[0] {
            "record" => 0,
            "shape" => 1,
            "numbers" => 2,
            k => panic!("unknown kind {k}"),
        };
        let hex = if f[1] == "-" { "" } else { f[1] };
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let got = bench
            .run(kind, &bytes)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        let want = match f[2] {
            "ran" => Outcome::Ran,
            "held" => Outcome::Held,
            w => panic!("unknown outcome {w}"),
        };
        assert_eq!(got, want, "{line}");
        n += 1;
    }
    assert!(n >= 10);
    figures(format!("FUZZ corpus_payloads inputs={n}"));
}
