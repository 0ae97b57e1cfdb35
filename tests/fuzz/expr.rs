//! Alert expressions: arbitrary strings never panic, well-formed ones match a reference evaluator, the corpus.

use super::*;

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
    for line in include_str!("../fuzz_corpus/expressions.txt").lines() {
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
