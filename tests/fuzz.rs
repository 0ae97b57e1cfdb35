//! Fuzzing (issue 7, scenario 7) with proptest, on stable Rust: payload decoding of arbitrary
//! bytes into a few task types, and the alert expression parser and evaluator on arbitrary
//! strings and on generated well-formed expressions checked against a reference evaluator.
//!
//! Bounded: `TEND_FUZZ_CASES` (default 1000) cases per property, each property well under a
//! minute. Failures are persisted by proptest in `tests/fuzz.proptest-regressions` (commit it)
//! and replayed first on every run; `tests/fuzz_corpus/` holds a seed corpus that
//! `corpus_*` always replays.
//!
//! Payloads go through the public API only: a task is enqueued, its payload overwritten with
//! the bytes by SQL (as a corrupt row or another deployment would leave it), and
//! `tend::testing::TestWorker` runs it; the outcome must be "ran once" or "held with a
//! message", never a panic, a failure, a dead task or a lost row.
#![cfg(all(feature = "testing", feature = "sqlite"))]

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
    for line in include_str!("fuzz_corpus/payloads.txt").lines() {
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

// ----------------------------------------------------------------------- alert expressions

/// Parses `src` and, when it parses, evaluates it on `vars`: never panics, and every error
/// position lies within the input.
fn check_expr(
    src: &str,
    vars: &AlertVars,
) -> Result<Option<Result<bool, tend::ExprError>>, TestCaseError> {
    match Expr::parse(src) {
        Err(e) => {
            prop_assert!(
                e.position <= src.len(),
                "position {} beyond {} bytes: {e} in {src:?}",
                e.position,
                src.len()
            );
            prop_assert!(!e.message.is_empty());
            Ok(None)
        }
        Ok(expr) => {
            prop_assert_eq!(expr.source(), src);
            let r = expr.eval(vars);
            if let Err(e) = &r {
                prop_assert!(e.position < src.len(), "{e} in {src:?}");
                prop_assert!(
                    e.message.contains("overflow") || e.message.contains("division by zero"),
                    "evaluation can only fail on overflow or division by zero: {e}"
                );
            }
            Ok(Some(r))
        }
    }
}

fn vars() -> impl Strategy<Value = AlertVars> {
    (
        any::<(i64, i64, i64, i64, i64)>(),
        ".{0,6}",
        ".{0,6}",
        any::<(bool, bool)>(),
    )
        .prop_map(
            |((id, e, m, st, sk), signature, task_id, (fr, ff))| AlertVars {
                id,
                execute_times: e,
                max_attempts: m,
                status: st,
                signature,
                task_id,
                shard_key: sk,
                fallback_ran: fr,
                fallback_failed: ff,
            },
        )
}

/// Fragments the lexer and parser care about, glued at random.
fn tokens() -> impl Strategy<Value = String> {
    let tok = prop_oneof![
        Just("executeTimes"),
        Just("#taskInstance."),
        Just("#taskInstance.maxAttempts"),
        Just("fallbackFailed"),
        Just("signature"),
        Just("and"),
        Just("OR"),
        Just("not"),
        Just("true"),
        Just("False"),
        Just("&&"),
        Just("||"),
        Just("!"),
        Just("=="),
        Just("!="),
        Just("<"),
        Just("<="),
        Just(">"),
        Just(">="),
        Just("+"),
        Just("-"),
        Just("*"),
        Just("/"),
        Just("%"),
        Just("("),
        Just(")"),
        Just("'"),
        Just("\""),
        Just("\\"),
        Just("''"),
        Just("'a''b'"),
        Just("\"x\\\"y\""),
        Just("0"),
        Just("9223372036854775807"),
        Just("9223372036854775808"),
        Just(" "),
        Just("é"),
        Just("#"),
        Just("="),
        Just("&"),
    ];
    proptest::collection::vec(tok, 0..16).prop_map(|v| v.concat())
}

#[test]
fn expressions_from_arbitrary_strings_never_panic() {
    let started = std::time::Instant::now();
    let n = cases();
    let parsed = std::cell::Cell::new(0usize);
    proptest!(config(n), |(src in any::<String>(), v in vars())| {
        if check_expr(&src, &v)?.is_some() { parsed.set(parsed.get() + 1); }
    });
    proptest!(config(n), |(src in tokens(), v in vars())| {
        if check_expr(&src, &v)?.is_some() { parsed.set(parsed.get() + 1); }
    });
    let parsed = parsed.get();
    // Long and deeply nested inputs hit the limits, with a position inside the input.
    proptest!(config(n / 10), |(depth in 0usize..200, open in "[(!-]", v in vars())| {
        let src = format!("{}true{}", open.repeat(depth), if open == "(" { ")".repeat(depth) } else { String::new() });
        check_expr(&src, &v)?;
    });
    figures(format!(
        "FUZZ expr_arbitrary cases={}x2+{} parsed={parsed} elapsed_ms={}",
        n,
        n / 10,
        started.elapsed().as_millis()
    ));
}

/// Generated expressions: a source and its tree, evaluated by a reference evaluator.
#[derive(Debug, Clone)]
enum IntTree {
    Lit(i64),
    Var(&'static str),
    Neg(Box<IntTree>),
    Op(Box<IntTree>, char, Box<IntTree>),
}

#[derive(Debug, Clone)]
enum StrTree {
    Lit(String),
    Var(&'static str),
}

#[derive(Debug, Clone)]
enum BoolTree {
    Lit(bool),
    Var(&'static str),
    Not(Box<BoolTree>),
    And(Box<BoolTree>, Box<BoolTree>),
    Or(Box<BoolTree>, Box<BoolTree>),
    CmpInt(Box<IntTree>, &'static str, Box<IntTree>),
    CmpStr(Box<StrTree>, &'static str, Box<StrTree>),
    EqBool(Box<BoolTree>, &'static str, Box<BoolTree>),
}

type Eval<T> = Result<T, ()>;

fn int_var(name: &str, v: &AlertVars) -> i64 {
    match name {
        "id" => v.id,
        "execute_times" | "executeTimes" | "#taskInstance.executeTimes" => v.execute_times,
        "max_attempts" | "maxAttempts" => v.max_attempts,
        "status" | "taskStatus" => v.status,
        "shard_key" | "#taskInstance.shardKey" => v.shard_key,
        n => panic!("int var {n}"),
    }
}

impl IntTree {
    fn eval(&self, v: &AlertVars) -> Eval<i64> {
        match self {
            IntTree::Lit(n) => Ok(*n),
            IntTree::Var(n) => Ok(int_var(n, v)),
            IntTree::Neg(a) => a.eval(v)?.checked_neg().ok_or(()),
            IntTree::Op(a, op, b) => {
                let (a, b) = (a.eval(v)?, b.eval(v)?);
                match op {
                    '+' => a.checked_add(b).ok_or(()),
                    '-' => a.checked_sub(b).ok_or(()),
                    '*' => a.checked_mul(b).ok_or(()),
                    '/' if b == 0 => Err(()),
                    '/' => a.checked_div(b).ok_or(()),
                    '%' if b == 0 => Err(()),
                    _ => Ok(a.wrapping_rem(b)),
                }
            }
        }
    }
}

impl StrTree {
    fn eval(&self, v: &AlertVars) -> String {
        match self {
            StrTree::Lit(s) => s.clone(),
            StrTree::Var("signature" | "methodSignName") => v.signature.clone(),
            StrTree::Var(_) => v.task_id.clone(),
        }
    }
}

fn cmp<T: Ord>(a: T, op: &str, b: T) -> bool {
    match op {
        "==" => a == b,
        "!=" => a != b,
        "<" => a < b,
        "<=" => a <= b,
        ">" => a > b,
        _ => a >= b,
    }
}

impl BoolTree {
    fn eval(&self, v: &AlertVars) -> Eval<bool> {
        match self {
            BoolTree::Lit(b) => Ok(*b),
            BoolTree::Var("fallbackRan" | "fallback_ran") => Ok(v.fallback_ran),
            BoolTree::Var(_) => Ok(v.fallback_failed),
            BoolTree::Not(a) => Ok(!a.eval(v)?),
            BoolTree::And(a, b) => Ok(a.eval(v)? && b.eval(v)?),
            BoolTree::Or(a, b) => Ok(a.eval(v)? || b.eval(v)?),
            BoolTree::CmpInt(a, op, b) => {
                let (a, b) = (a.eval(v)?, b.eval(v)?);
                Ok(cmp(a, op, b))
            }
            BoolTree::CmpStr(a, op, b) => Ok(cmp(a.eval(v), op, b.eval(v))),
            BoolTree::EqBool(a, op, b) => {
                let (a, b) = (a.eval(v)?, b.eval(v)?);
                Ok(cmp(a, op, b))
            }
        }
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn int_gen() -> impl Strategy<Value = (String, IntTree)> {
    let leaf = prop_oneof![
        prop_oneof![
            0i64..10,
            any::<i64>().prop_map(|n| n.checked_abs().unwrap_or(i64::MAX))
        ]
        .prop_map(|n| (n.to_string(), IntTree::Lit(n))),
        prop::sample::select(vec![
            "id",
            "execute_times",
            "executeTimes",
            "#taskInstance.executeTimes",
            "max_attempts",
            "maxAttempts",
            "status",
            "taskStatus",
            "shard_key",
            "#taskInstance.shardKey",
        ])
        .prop_map(|n| (n.to_string(), IntTree::Var(n))),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            inner
                .clone()
                .prop_map(|(s, t)| (format!("-({s})"), IntTree::Neg(Box::new(t)))),
            (
                inner.clone(),
                prop::sample::select(vec!['+', '-', '*', '/', '%']),
                inner
            )
                .prop_map(|((a, ta), op, (b, tb))| (
                    format!("({a} {op} {b})"),
                    IntTree::Op(Box::new(ta), op, Box::new(tb))
                )),
        ]
    })
}

fn str_gen() -> impl Strategy<Value = (String, StrTree)> {
    prop_oneof![
        "[a-z'\\\\ é\"]{0,5}".prop_map(|s| (quote(&s), StrTree::Lit(s))),
        prop::sample::select(vec!["signature", "methodSignName", "task_id", "taskId"])
            .prop_map(|n| (n.to_string(), StrTree::Var(n))),
    ]
}

const CMP: [&str; 6] = ["==", "!=", "<", "<=", ">", ">="];

fn bool_gen() -> impl Strategy<Value = (String, BoolTree)> {
    let leaf = prop_oneof![
        prop::sample::select(vec!["true", "false", "TRUE", "False"])
            .prop_map(|s| (s.to_string(), BoolTree::Lit(s.eq_ignore_ascii_case("true")))),
        prop::sample::select(vec![
            "fallbackRan",
            "fallback_ran",
            "fallbackFailed",
            "fallback_failed"
        ])
        .prop_map(|n| (n.to_string(), BoolTree::Var(n))),
        (int_gen(), prop::sample::select(CMP.to_vec()), int_gen()).prop_map(
            |((a, ta), op, (b, tb))| (
                format!("({a} {op} {b})"),
                BoolTree::CmpInt(Box::new(ta), op, Box::new(tb))
            )
        ),
        (str_gen(), prop::sample::select(CMP.to_vec()), str_gen()).prop_map(
            |((a, ta), op, (b, tb))| (
                format!("({a} {op} {b})"),
                BoolTree::CmpStr(Box::new(ta), op, Box::new(tb))
            )
        ),
    ];
    leaf.prop_recursive(4, 32, 2, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec!["!", "not ", "NOT "])
            )
                .prop_map(|((s, t), op)| (format!("{op}({s})"), BoolTree::Not(Box::new(t)))),
            (
                inner.clone(),
                prop::sample::select(vec!["&&", "and", "AND"]),
                inner.clone()
            )
                .prop_map(|((a, ta), op, (b, tb))| (
                    format!("({a} {op} {b})"),
                    BoolTree::And(Box::new(ta), Box::new(tb))
                )),
            (
                inner.clone(),
                prop::sample::select(vec!["||", "or", "Or"]),
                inner.clone()
            )
                .prop_map(|((a, ta), op, (b, tb))| (
                    format!("({a} {op} {b})"),
                    BoolTree::Or(Box::new(ta), Box::new(tb))
                )),
            (inner.clone(), prop::sample::select(vec!["==", "!="]), inner).prop_map(
                |((a, ta), op, (b, tb))| (
                    format!("({a} {op} {b})"),
                    BoolTree::EqBool(Box::new(ta), op, Box::new(tb))
                )
            ),
        ]
    })
}

#[test]
fn well_formed_expressions_parse_and_match_a_reference_evaluator() {
    let started = std::time::Instant::now();
    let n = cases();
    let (ok, errs) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    proptest!(config(n), |((src, tree) in bool_gen(), v in vars())| {
        let got = check_expr(&src, &v)?;
        let Some(got) = got else {
            return Err(TestCaseError::fail(format!("a well-formed expression was rejected: {src}: {:?}", Expr::parse(&src).unwrap_err())));
        };
        match (got, tree.eval(&v)) {
            (Ok(a), Ok(b)) => { prop_assert_eq!(a, b, "{}", src); ok.set(ok.get() + 1); }
            (Err(_), Err(())) => errs.set(errs.get() + 1),
            (a, b) => return Err(TestCaseError::fail(format!("{src}: tend {a:?}, reference {b:?}"))),
        }
    });
    // Ill-typed ones (an int or a string where a bool is wanted) are rejected with a position.
    proptest!(config(n / 4), |((src, _) in int_gen(), v in vars())| {
        prop_assert!(check_expr(&src, &v)?.is_none(), "an int expression parsed as a condition: {}", src);
    });
    let (ok, errs) = (ok.get(), errs.get());
    figures(format!(
        "FUZZ expr_well_formed cases={n}+{} evaluated={ok} overflow_or_div0={errs} elapsed_ms={}",
        n / 4,
        started.elapsed().as_millis()
    ));
}

/// Replays `tests/fuzz_corpus/expressions.txt`: one expression per line, `\n` for a newline.
#[test]
fn corpus_expressions() {
    let mut n = 0;
    let v = AlertVars {
        execute_times: i64::MAX,
        max_attempts: -1,
        ..AlertVars::default()
    };
    for line in include_str!("fuzz_corpus/expressions.txt").lines() {
        if line.starts_with("##") {
            continue;
        }
        let src = line.replace("\\n", "\n");
        check_expr(&src, &v).unwrap_or_else(|e| panic!("{line}: {e}"));
        check_expr(&src, &AlertVars::default()).unwrap_or_else(|e| panic!("{line}: {e}"));
        n += 1;
    }
    // The limits, built here rather than stored.
    for src in [
        "(".repeat(100_000),
        "!".repeat(65) + "true",
        "1".repeat(5000),
    ] {
        check_expr(&src, &v).unwrap();
        n += 1;
    }
    assert!(n >= 20);
    figures(format!("FUZZ corpus_expressions inputs={n}"));
}
