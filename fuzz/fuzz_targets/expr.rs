//! Alert expressions: `Expr::parse` on arbitrary text, and `eval` of what parses.
//!
//! Input: the expression's source (UTF-8; other inputs are skipped), optionally followed by a
//! NUL byte and bytes that choose the variables' values. Every parsed expression is also
//! evaluated at the integer edges (0, -1, i64::MIN, i64::MAX), where overflow lives.
//!
//! Invariants: nothing panics or overflows the stack; a parse error's position is a char
//! boundary inside the input; a parsed expression keeps its source; evaluation fails only on
//! integer overflow or division by zero, at a position inside the input.
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use tend::{AlertVars, Expr};

fn vars(u: &mut Unstructured<'_>) -> arbitrary::Result<AlertVars> {
    Ok(AlertVars {
        id: u.arbitrary()?,
        execute_times: u.arbitrary()?,
        max_attempts: u.arbitrary()?,
        status: u.arbitrary()?,
        signature: u.arbitrary()?,
        task_id: u.arbitrary()?,
        shard_key: u.arbitrary()?,
        fallback_ran: u.arbitrary()?,
        fallback_failed: u.arbitrary()?,
    })
}

fn edge(n: i64) -> AlertVars {
    AlertVars {
        id: n,
        execute_times: n,
        max_attempts: n,
        status: n,
        signature: "orders.ship".into(),
        task_id: String::new(),
        shard_key: n,
        fallback_ran: n != 0,
        fallback_failed: n < 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let (src, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(src) = std::str::from_utf8(src) else {
        return;
    };
    let expr = match Expr::parse(src) {
        Ok(e) => e,
        Err(e) => {
            assert!(
                e.position <= src.len() && src.is_char_boundary(e.position),
                "error position {} is not a char boundary in {} bytes: {e} in {src:?}",
                e.position,
                src.len()
            );
            assert!(!e.message.is_empty());
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(expr.source(), src);
    let mut all = vec![edge(0), edge(-1), edge(i64::MIN), edge(i64::MAX)];
    if let Ok(v) = vars(&mut Unstructured::new(rest)) {
        all.push(v);
    }
    for v in &all {
        if let Err(e) = expr.eval(v) {
            assert!(e.position < src.len(), "{e} in {src:?}");
            assert!(
                e.message.contains("overflow") || e.message.contains("division by zero"),
                "evaluation can only fail on overflow or division by zero: {e} in {src:?}"
            );
        }
    }
});
