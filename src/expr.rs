//! Alert expressions: a small, safe expression language.
//!
//! A task type may carry an *alert expression*: a condition over the task's
//! state (how often it ran, whether its fallback failed, ...) saying when to
//! raise an alert. The Java framework this crate replaces used Spring SpEL for
//! that; this module accepts the subset those expressions used and nothing
//! that could run code or touch I/O: variables, literals, arithmetic,
//! comparison and logic.
//!
//! # Grammar
//!
//! ```text
//! expr     := or
//! or       := and     ( ("||" | "or")  and )*
//! and      := eq      ( ("&&" | "and") eq )*
//! eq       := cmp     ( ("==" | "!=") cmp )*
//! cmp      := sum     ( ("<" | "<=" | ">" | ">=") sum )*
//! sum      := product ( ("+" | "-") product )*
//! product  := unary   ( ("*" | "/" | "%") unary )*
//! unary    := ("!" | "not" | "-") unary | primary
//! primary  := integer | "true" | "false" | string | variable | "(" expr ")"
//! variable := ["#taskInstance."] identifier
//! ```
//!
//! Binary operators are left-associative. The keywords `and`, `or`, `not`,
//! `true` and `false` are case-insensitive, as in SpEL. Integers are `i64`
//! (a literal out of range is rejected). Strings use single or double quotes,
//! with the escapes `\\`, `\'` and `\"`; SpEL's doubled quote (`'it''s'`) also
//! works.
//!
//! # Types
//!
//! Values are ints, bools or strings, and every expression is type-checked
//! when parsed: `==`/`!=` compare two values of the same type, `<`, `<=`, `>`,
//! `>=` compare two ints or two strings (lexicographically), arithmetic takes
//! ints, `&&`/`||`/`!` take bools (and short-circuit), and the whole
//! expression must be a bool. Evaluation can then only fail on integer
//! overflow or division by zero.
//!
//! # Variables
//!
//! | Names                                             | Type   | [`AlertVars`] field |
//! |---------------------------------------------------|--------|---------------------|
//! | `id`                                              | int    | `id`                |
//! | `execute_times`, `executeTimes`                   | int    | `execute_times`     |
//! | `max_attempts`, `maxAttempts`                     | int    | `max_attempts`      |
//! | `status`, `task_status`, `taskStatus`             | int    | `status`            |
//! | `signature`, `method_sign_name`, `methodSignName` | string | `signature`         |
//! | `task_id`, `taskId`                               | string | `task_id`           |
//! | `shard_key`, `shardKey`                           | int    | `shard_key`         |
//! | `fallback_ran`, `fallbackRan`                     | bool   | `fallback_ran`      |
//! | `fallback_failed`, `fallbackFailed`               | bool   | `fallback_failed`   |
//!
//! Any of them may be written with SpEL's `#taskInstance.` prefix. An unknown
//! name is a parse error, so a typo is caught when the task type is registered.
//!
//! # Limits
//!
//! Sources longer than 4096 bytes, and nesting (parentheses and unary
//! operators) deeper than 64 levels, are rejected.
//!
//! ```rust
//! use tend::{AlertVars, Expr};
//!
//! let e = Expr::parse("#taskInstance.executeTimes >= 3 || fallbackFailed").unwrap();
//! let vars = AlertVars { execute_times: 1, fallback_failed: true, ..AlertVars::default() };
//! assert_eq!(e.eval(&vars), Ok(true));
//! ```

use std::cmp::Ordering;
use std::fmt;

const MAX_LEN: usize = 4096;
const MAX_DEPTH: usize = 64;
const PREFIX: &str = "#taskInstance.";

/// A parsed, type-checked alert expression.
///
/// ```rust
/// use tend::{AlertVars, Expr};
///
/// let e = Expr::parse("executeTimes > 1 && executeTimes < 5").unwrap();
/// let mut vars = AlertVars::default();
/// vars.execute_times = 3;
/// assert_eq!(e.eval(&vars), Ok(true));
/// vars.execute_times = 5;
/// assert_eq!(e.eval(&vars), Ok(false));
/// ```
#[derive(Debug, Clone)]
pub struct Expr {
    source: String,
    root: BoolExpr,
}

/// What an expression can read.
///
/// ```
/// use tend::{AlertVars, Expr, TaskStatus};
/// let vars = AlertVars {
///     execute_times: 3,
///     status: TaskStatus::Failed.as_i32().into(),
///     signature: "orders.ship".into(),
///     ..AlertVars::default()
/// };
/// let e = Expr::parse("signature == 'orders.ship' && status == 2 && executeTimes >= 3").unwrap();
/// assert_eq!(e.eval(&vars), Ok(true));
/// ```
#[derive(Debug, Clone, Default)]
pub struct AlertVars {
    /// The task's row id (`id`).
    pub id: i64,
    /// How many times the task has been executed (`execute_times`, `executeTimes`).
    pub execute_times: i64,
    /// The task's attempt budget (`max_attempts`, `maxAttempts`).
    pub max_attempts: i64,
    /// The task's status code (`status`, `task_status`, `taskStatus`).
    pub status: i64,
    /// The task type's signature (`signature`, `method_sign_name`, `methodSignName`).
    pub signature: String,
    /// The task's id (`task_id`, `taskId`).
    pub task_id: String,
    /// The task's shard key (`shard_key`, `shardKey`).
    pub shard_key: i64,
    /// Whether the fallback ran (`fallback_ran`, `fallbackRan`).
    pub fallback_ran: bool,
    /// Whether the fallback failed (`fallback_failed`, `fallbackFailed`).
    pub fallback_failed: bool,
}

/// Why an expression was rejected: byte offset (0-based) into the source and a message.
///
/// ```
/// use tend::Expr;
/// let err = Expr::parse("executeTimes > 1 && fallbackFailed == 1").unwrap_err();
/// assert_eq!(err.position, 35); // where the `==` is
/// assert_eq!(err.message, "`==` needs two values of the same type, found bool and int");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// Byte offset (0-based) into the source where the problem is.
    pub position: usize,
    /// What is wrong, in words.
    pub message: String,
}

impl ExprError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        ExprError {
            position,
            message: message.into(),
        }
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}

impl std::error::Error for ExprError {}

impl Expr {
    /// Parses and type-checks `source`; the result must be a bool.
    ///
    /// ```rust
    /// use tend::Expr;
    ///
    /// assert!(Expr::parse("executeTimes % 2 == 0").is_ok());
    /// let err = Expr::parse("executeTimes >").unwrap_err();
    /// assert_eq!(err.to_string(), "at position 14: expected an operand, found end of input");
    /// assert_eq!(Expr::parse("exectueTimes > 1").unwrap_err().position, 0);
    /// ```
    pub fn parse(source: &str) -> Result<Expr, ExprError> {
        if source.len() > MAX_LEN {
            let msg = format!(
                "expression is {} bytes long; the limit is {MAX_LEN}",
                source.len()
            );
            return Err(ExprError::new(MAX_LEN, msg));
        }
        let tokens = tokenize(source);
        let start = tokens[0].pos;
        let mut parser = Parser {
            src: source,
            tokens,
            next: 0,
        };
        let root = parser.expr(0, 0)?;
        if parser.peek().kind != Tok::Eof {
            return Err(parser.unexpected("an operator or end of input"));
        }
        match root {
            Typed::Bool(root) => Ok(Expr {
                source: source.to_owned(),
                root,
            }),
            other => {
                let msg = format!("the expression must be a bool, found {}", other.type_name());
                Err(ExprError::new(start, msg))
            }
        }
    }

    /// The source text this expression was parsed from.
    ///
    /// ```
    /// use tend::Expr;
    /// let e = Expr::parse("executeTimes >= 3").unwrap();
    /// assert_eq!(e.source(), "executeTimes >= 3");
    /// ```
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression against `vars`.
    ///
    /// Fails only on integer overflow or division (or modulo) by zero; the
    /// error's position is the offending operator's.
    ///
    /// ```rust
    /// use tend::{AlertVars, Expr};
    ///
    /// let e = Expr::parse("10 / executeTimes > 2").unwrap();
    /// assert_eq!(e.eval(&AlertVars { execute_times: 4, ..AlertVars::default() }), Ok(false));
    /// assert_eq!(e.eval(&AlertVars::default()).unwrap_err().position, 3);
    /// ```
    pub fn eval(&self, vars: &AlertVars) -> Result<bool, ExprError> {
        self.root.eval(vars)
    }
}

// ---------------------------------------------------------------- operators

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::Ne => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl ArithOp {
    fn apply(self, a: i64, b: i64, pos: usize) -> Result<i64, ExprError> {
        if b == 0 && matches!(self, ArithOp::Div | ArithOp::Rem) {
            return Err(ExprError::new(pos, "division by zero"));
        }
        let result = match self {
            ArithOp::Add => a.checked_add(b),
            ArithOp::Sub => a.checked_sub(b),
            ArithOp::Mul => a.checked_mul(b),
            ArithOp::Div => a.checked_div(b),
            // `i64::MIN % -1` is mathematically 0; only `checked_rem` calls it overflow.
            ArithOp::Rem => Some(a.wrapping_rem(b)),
        };
        let symbol = ["+", "-", "*", "/", "%"][self as usize]; // in declaration order
        result.ok_or_else(|| ExprError::new(pos, format!("integer overflow in `{symbol}`")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Or,
    And,
    Cmp(CmpOp),
    Arith(ArithOp),
}

impl BinOp {
    fn level(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Cmp(CmpOp::Eq | CmpOp::Ne) => 3,
            BinOp::Cmp(_) => 4,
            BinOp::Arith(ArithOp::Add | ArithOp::Sub) => 5,
            BinOp::Arith(_) => 6,
        }
    }

    fn operands(self) -> &'static str {
        match self {
            BinOp::Or | BinOp::And => "two bools",
            BinOp::Cmp(CmpOp::Eq | CmpOp::Ne) => "two values of the same type",
            BinOp::Cmp(_) => "two ints or two strings",
            BinOp::Arith(_) => "two ints",
        }
    }
}

// ---------------------------------------------------------------- variables

#[derive(Debug, Clone, Copy)]
enum IntVar {
    Id,
    ExecuteTimes,
    MaxAttempts,
    Status,
    ShardKey,
}

#[derive(Debug, Clone, Copy)]
enum StrVar {
    Signature,
    TaskId,
}

#[derive(Debug, Clone, Copy)]
enum BoolVar {
    FallbackRan,
    FallbackFailed,
}

#[derive(Debug, Clone, Copy)]
enum Var {
    Int(IntVar),
    Str(StrVar),
    Bool(BoolVar),
}

const VARIABLES: &[(&str, Var)] = &[
    ("id", Var::Int(IntVar::Id)),
    ("execute_times", Var::Int(IntVar::ExecuteTimes)),
    ("executeTimes", Var::Int(IntVar::ExecuteTimes)),
    ("max_attempts", Var::Int(IntVar::MaxAttempts)),
    ("maxAttempts", Var::Int(IntVar::MaxAttempts)),
    ("status", Var::Int(IntVar::Status)),
    ("task_status", Var::Int(IntVar::Status)),
    ("taskStatus", Var::Int(IntVar::Status)),
    ("signature", Var::Str(StrVar::Signature)),
    ("method_sign_name", Var::Str(StrVar::Signature)),
    ("methodSignName", Var::Str(StrVar::Signature)),
    ("task_id", Var::Str(StrVar::TaskId)),
    ("taskId", Var::Str(StrVar::TaskId)),
    ("shard_key", Var::Int(IntVar::ShardKey)),
    ("shardKey", Var::Int(IntVar::ShardKey)),
    ("fallback_ran", Var::Bool(BoolVar::FallbackRan)),
    ("fallbackRan", Var::Bool(BoolVar::FallbackRan)),
    ("fallback_failed", Var::Bool(BoolVar::FallbackFailed)),
    ("fallbackFailed", Var::Bool(BoolVar::FallbackFailed)),
];

fn lookup(name: &str, pos: usize) -> Result<Typed, ExprError> {
    match VARIABLES.iter().find(|(n, _)| *n == name) {
        Some((_, Var::Int(v))) => Ok(Typed::Int(IntExpr::Var(*v))),
        Some((_, Var::Str(v))) => Ok(Typed::Str(StrExpr::Var(*v))),
        Some((_, Var::Bool(v))) => Ok(Typed::Bool(BoolExpr::Var(*v))),
        None => {
            let mut msg = format!("unknown variable `{name}`");
            let closest = VARIABLES
                .iter()
                .map(|(n, _)| (edit_distance(n, name), *n))
                .min();
            if let Some((_, suggestion)) = closest.filter(|(distance, _)| *distance <= 2) {
                msg.push_str(&format!("; did you mean `{suggestion}`?"));
            }
            Err(ExprError::new(pos, msg))
        }
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            row.push(substitute.min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------- typed AST

#[derive(Debug, Clone)]
enum IntExpr {
    Lit(i64),
    Var(IntVar),
    Neg(usize, Box<IntExpr>),
    Arith(ArithOp, usize, Box<IntExpr>, Box<IntExpr>),
}

#[derive(Debug, Clone)]
enum StrExpr {
    Lit(String),
    Var(StrVar),
}

#[derive(Debug, Clone)]
enum BoolExpr {
    Lit(bool),
    Var(BoolVar),
    Not(Box<BoolExpr>),
    And(Box<BoolExpr>, Box<BoolExpr>),
    Or(Box<BoolExpr>, Box<BoolExpr>),
    CmpInt(CmpOp, Box<IntExpr>, Box<IntExpr>),
    CmpStr(CmpOp, StrExpr, StrExpr),
    CmpBool(CmpOp, Box<BoolExpr>, Box<BoolExpr>),
}

/// A subexpression together with its type, as the parser builds it.
#[derive(Debug)]
enum Typed {
    Int(IntExpr),
    Str(StrExpr),
    Bool(BoolExpr),
}

impl Typed {
    fn type_name(&self) -> &'static str {
        match self {
            Typed::Int(_) => "int",
            Typed::Str(_) => "string",
            Typed::Bool(_) => "bool",
        }
    }
}

impl IntExpr {
    fn eval(&self, v: &AlertVars) -> Result<i64, ExprError> {
        match self {
            IntExpr::Lit(n) => Ok(*n),
            IntExpr::Var(IntVar::Id) => Ok(v.id),
            IntExpr::Var(IntVar::ExecuteTimes) => Ok(v.execute_times),
            IntExpr::Var(IntVar::MaxAttempts) => Ok(v.max_attempts),
            IntExpr::Var(IntVar::Status) => Ok(v.status),
            IntExpr::Var(IntVar::ShardKey) => Ok(v.shard_key),
            IntExpr::Neg(pos, e) => e
                .eval(v)?
                .checked_neg()
                .ok_or_else(|| ExprError::new(*pos, "integer overflow in `-`")),
            IntExpr::Arith(op, pos, l, r) => op.apply(l.eval(v)?, r.eval(v)?, *pos),
        }
    }
}

impl StrExpr {
    fn eval<'a>(&'a self, v: &'a AlertVars) -> &'a str {
        match self {
            StrExpr::Lit(s) => s,
            StrExpr::Var(StrVar::Signature) => &v.signature,
            StrExpr::Var(StrVar::TaskId) => &v.task_id,
        }
    }
}

impl BoolExpr {
    fn eval(&self, v: &AlertVars) -> Result<bool, ExprError> {
        Ok(match self {
            BoolExpr::Lit(b) => *b,
            BoolExpr::Var(BoolVar::FallbackRan) => v.fallback_ran,
            BoolExpr::Var(BoolVar::FallbackFailed) => v.fallback_failed,
            BoolExpr::Not(e) => !e.eval(v)?,
            BoolExpr::And(l, r) => l.eval(v)? && r.eval(v)?,
            BoolExpr::Or(l, r) => l.eval(v)? || r.eval(v)?,
            BoolExpr::CmpInt(op, l, r) => op.holds(l.eval(v)?.cmp(&r.eval(v)?)),
            BoolExpr::CmpStr(op, l, r) => op.holds(l.eval(v).cmp(r.eval(v))),
            BoolExpr::CmpBool(op, l, r) => op.holds(l.eval(v)?.cmp(&r.eval(v)?)),
        })
    }
}

/// Type-checks a binary operation, building its node; `text` is the operator
/// as written, at `pos`.
fn combine(op: BinOp, pos: usize, text: &str, lhs: Typed, rhs: Typed) -> Result<Typed, ExprError> {
    use Typed::{Bool, Int, Str};
    Ok(match (op, lhs, rhs) {
        (BinOp::And, Bool(l), Bool(r)) => Bool(BoolExpr::And(Box::new(l), Box::new(r))),
        (BinOp::Or, Bool(l), Bool(r)) => Bool(BoolExpr::Or(Box::new(l), Box::new(r))),
        (BinOp::Cmp(c), Int(l), Int(r)) => Bool(BoolExpr::CmpInt(c, Box::new(l), Box::new(r))),
        (BinOp::Cmp(c), Str(l), Str(r)) => Bool(BoolExpr::CmpStr(c, l, r)),
        (BinOp::Cmp(c @ (CmpOp::Eq | CmpOp::Ne)), Bool(l), Bool(r)) => {
            Bool(BoolExpr::CmpBool(c, Box::new(l), Box::new(r)))
        }
        (BinOp::Arith(a), Int(l), Int(r)) => Int(IntExpr::Arith(a, pos, Box::new(l), Box::new(r))),
        (op, l, r) => {
            let msg = format!(
                "`{text}` needs {}, found {} and {}",
                op.operands(),
                l.type_name(),
                r.type_name()
            );
            return Err(ExprError::new(pos, msg));
        }
    })
}

// ---------------------------------------------------------------- tokenizer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Str(String),
    Ident(String),
    True,
    False,
    Not,
    Op(BinOp),
    LParen,
    RParen,
    Eof,
    /// A lexical error; the parser reports it only if it gets this far.
    Error(ExprError),
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    pos: usize,
    end: usize,
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Splits `src` into tokens ending with `Eof`, or with `Error` at the first
/// lexical error.
fn tokenize(src: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let (kind, pos) = match lex(src, &mut tokens) {
        Ok(()) => (Tok::Eof, src.len()),
        Err(e) => (Tok::Error(e.clone()), e.position),
    };
    tokens.push(Token {
        kind,
        pos,
        end: pos,
    });
    tokens
}

fn lex(src: &str, tokens: &mut Vec<Token>) -> Result<(), ExprError> {
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let kind = match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'0'..=b'9' => {
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let text = &src[start..i];
                let n = text.parse().map_err(|_| {
                    ExprError::new(start, format!("integer literal `{text}` is out of range"))
                })?;
                Tok::Int(n)
            }
            b'\'' | b'"' => {
                let (s, next) = lex_string(src, start)?;
                i = next;
                Tok::Str(s)
            }
            b'#' => {
                if !src[i..].starts_with(PREFIX) {
                    return Err(ExprError::new(
                        start,
                        "expected `#taskInstance.` followed by a variable name",
                    ));
                }
                i += PREFIX.len();
                let name_start = i;
                while i < bytes.len() && is_ident_byte(bytes[i]) {
                    i += 1;
                }
                if i == name_start || bytes[name_start].is_ascii_digit() {
                    return Err(ExprError::new(
                        name_start,
                        "expected a variable name after `#taskInstance.`",
                    ));
                }
                Tok::Ident(src[name_start..i].to_owned())
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                while i < bytes.len() && is_ident_byte(bytes[i]) {
                    i += 1;
                }
                let word = &src[start..i];
                match word.to_ascii_lowercase().as_str() {
                    "and" => Tok::Op(BinOp::And),
                    "or" => Tok::Op(BinOp::Or),
                    "not" => Tok::Not,
                    "true" => Tok::True,
                    "false" => Tok::False,
                    _ => Tok::Ident(word.to_owned()),
                }
            }
            b => {
                let (kind, width) = match (b, bytes.get(i + 1).copied()) {
                    (b'|', Some(b'|')) => (Tok::Op(BinOp::Or), 2),
                    (b'&', Some(b'&')) => (Tok::Op(BinOp::And), 2),
                    (b'=', Some(b'=')) => (Tok::Op(BinOp::Cmp(CmpOp::Eq)), 2),
                    (b'!', Some(b'=')) => (Tok::Op(BinOp::Cmp(CmpOp::Ne)), 2),
                    (b'<', Some(b'=')) => (Tok::Op(BinOp::Cmp(CmpOp::Le)), 2),
                    (b'>', Some(b'=')) => (Tok::Op(BinOp::Cmp(CmpOp::Ge)), 2),
                    (b'<', _) => (Tok::Op(BinOp::Cmp(CmpOp::Lt)), 1),
                    (b'>', _) => (Tok::Op(BinOp::Cmp(CmpOp::Gt)), 1),
                    (b'+', _) => (Tok::Op(BinOp::Arith(ArithOp::Add)), 1),
                    (b'-', _) => (Tok::Op(BinOp::Arith(ArithOp::Sub)), 1),
                    (b'*', _) => (Tok::Op(BinOp::Arith(ArithOp::Mul)), 1),
                    (b'/', _) => (Tok::Op(BinOp::Arith(ArithOp::Div)), 1),
                    (b'%', _) => (Tok::Op(BinOp::Arith(ArithOp::Rem)), 1),
                    (b'!', _) => (Tok::Not, 1),
                    (b'(', _) => (Tok::LParen, 1),
                    (b')', _) => (Tok::RParen, 1),
                    _ => {
                        let c = src[i..].chars().next().unwrap_or('?');
                        let hint = match c {
                            '&' => "; did you mean `&&`?",
                            '|' => "; did you mean `||`?",
                            '=' => "; did you mean `==`?",
                            _ => "",
                        };
                        return Err(ExprError::new(
                            start,
                            format!("unexpected character `{c}`{hint}"),
                        ));
                    }
                };
                i += width;
                kind
            }
        };
        tokens.push(Token {
            kind,
            pos: start,
            end: i,
        });
    }
    Ok(())
}

/// Lexes the string literal whose opening quote is at `start`; returns its
/// value and the offset just past the closing quote.
fn lex_string(src: &str, start: usize) -> Result<(String, usize), ExprError> {
    let quote = char::from(src.as_bytes()[start]);
    let mut out = String::new();
    let mut chars = src[start + 1..]
        .char_indices()
        .map(|(o, c)| (start + 1 + o, c))
        .peekable();
    while let Some((pos, c)) = chars.next() {
        if c == quote {
            if chars.peek().map(|&(_, n)| n) == Some(quote) {
                chars.next();
                out.push(quote);
                continue;
            }
            return Ok((out, pos + 1));
        }
        if c == '\\' {
            match chars.next() {
                Some((_, e @ ('\\' | '\'' | '"'))) => out.push(e),
                Some((_, e)) => {
                    return Err(ExprError::new(
                        pos,
                        format!("unknown escape `\\{e}` in string literal"),
                    ));
                }
                None => break,
            }
            continue;
        }
        out.push(c);
    }
    Err(ExprError::new(start, "unterminated string literal"))
}

// ---------------------------------------------------------------- parser

struct Parser<'s> {
    src: &'s str,
    tokens: Vec<Token>,
    next: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        // The last token (`Eof` or `Error`) is never consumed.
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    /// The error for finding the next token where `expected` should be.
    fn unexpected(&self, expected: &str) -> ExprError {
        let t = self.peek();
        let found = match &t.kind {
            Tok::Error(e) => return e.clone(),
            Tok::Eof => "end of input".to_owned(),
            Tok::Str(_) => "a string literal".to_owned(),
            _ => format!("`{}`", &self.src[t.pos..t.end]),
        };
        ExprError::new(t.pos, format!("expected {expected}, found {found}"))
    }

    fn enter(depth: usize, pos: usize) -> Result<usize, ExprError> {
        if depth >= MAX_DEPTH {
            let msg = format!("expression is nested more than {MAX_DEPTH} levels deep");
            return Err(ExprError::new(pos, msg));
        }
        Ok(depth + 1)
    }

    /// Precedence climbing: parses operators of level `min_level` and up.
    fn expr(&mut self, min_level: u8, depth: usize) -> Result<Typed, ExprError> {
        let mut lhs = self.unary(depth)?;
        while let Tok::Op(op) = self.peek().kind {
            if op.level() < min_level {
                break;
            }
            let Token { pos, end, .. } = *self.peek();
            self.next += 1;
            let rhs = self.expr(op.level() + 1, depth)?;
            lhs = combine(op, pos, &self.src[pos..end], lhs, rhs)?;
        }
        Ok(lhs)
    }

    fn unary(&mut self, depth: usize) -> Result<Typed, ExprError> {
        let Token { ref kind, pos, end } = *self.peek();
        let negate = match kind {
            Tok::Not => false,
            Tok::Op(BinOp::Arith(ArithOp::Sub)) => true,
            _ => return self.primary(depth),
        };
        let depth = Self::enter(depth, pos)?;
        self.next += 1;
        match (negate, self.unary(depth)?) {
            (false, Typed::Bool(e)) => Ok(Typed::Bool(BoolExpr::Not(Box::new(e)))),
            (true, Typed::Int(e)) => Ok(Typed::Int(IntExpr::Neg(pos, Box::new(e)))),
            (_, other) => {
                let wanted = if negate { "an int" } else { "a bool" };
                let text = &self.src[pos..end];
                let msg = format!("`{text}` needs {wanted}, found {}", other.type_name());
                Err(ExprError::new(pos, msg))
            }
        }
    }

    fn primary(&mut self, depth: usize) -> Result<Typed, ExprError> {
        let token = self.peek().clone();
        let node = match token.kind {
            Tok::Int(n) => Typed::Int(IntExpr::Lit(n)),
            Tok::True => Typed::Bool(BoolExpr::Lit(true)),
            Tok::False => Typed::Bool(BoolExpr::Lit(false)),
            Tok::Str(s) => Typed::Str(StrExpr::Lit(s)),
            Tok::Ident(ref name) => lookup(name, token.pos)?,
            Tok::LParen => {
                let depth = Self::enter(depth, token.pos)?;
                self.next += 1;
                let inner = self.expr(0, depth)?;
                if self.peek().kind != Tok::RParen {
                    let expected = format!("`)` to close the `(` at position {}", token.pos);
                    return Err(self.unexpected(&expected));
                }
                inner
            }
            _ => return Err(self.unexpected("an operand")),
        };
        self.next += 1;
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(n: i64) -> AlertVars {
        AlertVars {
            execute_times: n,
            ..AlertVars::default()
        }
    }

    fn eval(src: &str, vars: &AlertVars) -> bool {
        Expr::parse(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .eval(vars)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    /// Evaluates `src` for executeTimes 0..=7 and returns the values where it held.
    fn holds_for(src: &str) -> Vec<i64> {
        (0..=7).filter(|&n| eval(src, &times(n))).collect()
    }

    fn parse_err(src: &str) -> ExprError {
        match Expr::parse(src) {
            Ok(e) => panic!("{src}: parsed as {e:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn seed_default_truth_table() {
        let e = Expr::parse("executeTimes > 1 && executeTimes < 5").unwrap();
        for n in [2, 3, 4] {
            assert_eq!(e.eval(&times(n)), Ok(true), "{n}");
        }
        for n in [0, 1, 5, 6] {
            assert_eq!(e.eval(&times(n)), Ok(false), "{n}");
        }
    }

    #[test]
    fn seed_expressions_truth_tables() {
        assert_eq!(holds_for("executeTimes % 2 == 0"), [0, 2, 4, 6]);
        assert_eq!(
            holds_for("executeTimes >= 3 || executeTimes == 1"),
            [1, 3, 4, 5, 6, 7]
        );
        assert_eq!(holds_for("executeTimes == 2"), [2]);
        assert_eq!(holds_for("#taskInstance.executeTimes > 2"), [3, 4, 5, 6, 7]);
        assert_eq!(
            holds_for("executeTimes > 1 and executeTimes < 5"),
            [2, 3, 4]
        );
        assert_eq!(
            holds_for("not (executeTimes <= 5) or executeTimes != executeTimes"),
            [6, 7]
        );
        assert_eq!(
            holds_for("(executeTimes == 1 || executeTimes == 4) && !(executeTimes > 3)"),
            [1]
        );
        assert_eq!(holds_for("-executeTimes < -5"), [6, 7]);
    }

    #[test]
    fn strings_and_bools() {
        let mut vars = times(3);
        vars.signature = "orders.pay".into();
        assert!(eval("signature == 'orders.pay'", &vars));
        assert!(eval("methodSignName == \"orders.pay\"", &vars));
        assert!(!eval(
            "#taskInstance.method_sign_name != 'orders.pay'",
            &vars
        ));
        assert!(eval(
            "signature < 'orders.refund' && 'a' < 'b' && 'b' >= 'b'",
            &vars
        ));
        assert!(eval("taskId == ''", &vars));

        assert!(!eval("fallbackFailed && executeTimes >= 3", &vars));
        vars.fallback_failed = true;
        assert!(eval("fallbackFailed && executeTimes >= 3", &vars));
        assert!(eval("!fallback_ran", &vars));
        vars.fallback_ran = true;
        assert!(!eval("!fallback_ran", &vars));
        assert!(eval(
            "fallbackRan == fallback_failed && true != false",
            &vars
        ));
        assert!(eval("TRUE And Not FALSE", &vars));
    }

    #[test]
    fn every_variable_name_reads_its_field() {
        let vars = AlertVars {
            id: 11,
            execute_times: 12,
            max_attempts: 13,
            status: 14,
            signature: "sig".into(),
            task_id: "tid".into(),
            shard_key: 15,
            fallback_ran: true,
            fallback_failed: true,
        };
        let cases = [
            ("id == 11", ["id"].as_slice()),
            ("{} == 12", &["execute_times", "executeTimes"]),
            ("{} == 13", &["max_attempts", "maxAttempts"]),
            ("{} == 14", &["status", "taskStatus", "task_status"]),
            (
                "{} == 'sig'",
                &["signature", "methodSignName", "method_sign_name"],
            ),
            ("{} == 'tid'", &["task_id", "taskId"]),
            ("{} == 15", &["shard_key", "shardKey"]),
            (
                "{}",
                &[
                    "fallback_ran",
                    "fallbackRan",
                    "fallback_failed",
                    "fallbackFailed",
                ],
            ),
        ];
        for (template, names) in cases {
            for name in names {
                for prefix in ["", PREFIX] {
                    let src = template.replace("{}", &format!("{prefix}{name}"));
                    assert!(eval(&src, &vars), "{src}");
                }
            }
        }
    }

    #[test]
    fn precedence_and_associativity() {
        let v = AlertVars::default();
        for src in [
            "1 + 2 * 3 == 7",
            "(1 + 2) * 3 == 9",
            "10 - 3 - 2 == 5",
            "20 / 2 / 5 == 2",
            "7 % 4 * 2 == 6",
            "-2 - -3 == 1",
            "- - 4 == 4",
            "-7 / 2 == -3 && -7 % 2 == -1",
            "!true == false",
            "true || false && false",
            "1 < 2 == 2 < 3",
            "(((1))) == 1",
        ] {
            assert!(eval(src, &v), "{src}");
        }
        assert!(!eval("(true || false) && false", &v));
    }

    #[test]
    fn string_escapes() {
        let mut v = AlertVars::default();
        for (lit, value) in [
            (r"'it\'s'", "it's"),
            ("'it''s'", "it's"),
            (r#""say \"hi\"""#, "say \"hi\""),
            (r"'a\\b'", r"a\b"),
            (r#"'"'"#, "\""),
            ("'héllo ✓'", "héllo ✓"),
        ] {
            v.signature = value.into();
            assert!(eval(&format!("signature == {lit}"), &v), "{lit}");
        }
        assert_eq!(parse_err(r"signature == 'a\nb'").position, 15);
    }

    #[test]
    fn logic_short_circuits() {
        let v = times(0);
        assert!(eval("executeTimes == 0 || 1 / executeTimes > 0", &v));
        assert!(!eval("executeTimes != 0 && 1 / executeTimes > 0", &v));
        assert!(Expr::parse("executeTimes == 1 || 1 / executeTimes > 0")
            .unwrap()
            .eval(&v)
            .is_err());
    }

    #[test]
    fn parse_errors_have_positions() {
        let e = parse_err("executeTimes >");
        assert_eq!(e.position, 14);
        assert_eq!(
            e.to_string(),
            "at position 14: expected an operand, found end of input"
        );

        let e = parse_err("executeTimes > 1 &&& 2");
        assert_eq!(
            (e.position, e.message.as_str()),
            (19, "unexpected character `&`; did you mean `&&`?")
        );

        let e = parse_err("exectueTimes > 1");
        assert_eq!(e.position, 0);
        assert!(e.message.contains("unknown variable `exectueTimes`"), "{e}");
        assert!(e.message.contains("did you mean `executeTimes`"), "{e}");
        assert_eq!(parse_err("executeTimes > 1 && bogus").position, 20);
        assert_eq!(parse_err("#taskInstance.nope == 1").position, 0);

        let e = parse_err("executeTimes + true > 1");
        assert_eq!(e.position, 13);
        assert_eq!(e.message, "`+` needs two ints, found int and bool");
        let e = parse_err("1 or fallbackRan");
        assert_eq!(
            (e.position, e.message.as_str()),
            (2, "`or` needs two bools, found int and bool")
        );
        let e = parse_err("not 1 == 1");
        assert_eq!(
            (e.position, e.message.as_str()),
            (0, "`not` needs a bool, found int")
        );

        let e = parse_err("executeTimes");
        assert_eq!(e.position, 0);
        assert!(e.message.contains("must be a bool, found int"), "{e}");
        assert_eq!(parse_err("  signature").position, 2);

        assert_eq!(parse_err("signature == 'orders.pay").position, 13);
        assert_eq!(parse_err("signature == \"orders.pay\\\"").position, 13);
        let e = parse_err("executeTimes > 9223372036854775808");
        assert_eq!(e.position, 15);
        assert!(e.message.contains("out of range"), "{e}");
        assert!(Expr::parse("executeTimes < 9223372036854775807").is_ok());

        assert_eq!(parse_err("").position, 0);
        assert_eq!(parse_err("executeTimes > 1 2").position, 17);
        assert_eq!(parse_err("(executeTimes > 1").position, 17);
        assert_eq!(parse_err("executeTimes > 1)").position, 16);
        assert_eq!(parse_err("1 < 2 < 3").position, 6);
        assert_eq!(parse_err("'a' == 1").position, 4);
        assert_eq!(parse_err("true < false").position, 5);
        assert_eq!(parse_err("signature + 'x' == 'y'").position, 10);
        assert_eq!(parse_err("-true").position, 0);
        assert_eq!(parse_err("!1 == 1").position, 0);
        assert_eq!(parse_err("executeTimes = 1").position, 13);
        assert_eq!(parse_err("executeTimes > 1 | true").position, 17);
        assert_eq!(parse_err("T(java.lang.Runtime).exec('x')").position, 0);
        assert_eq!(parse_err("#root.executeTimes > 1").position, 0);
        assert_eq!(parse_err("#taskInstance. > 1").position, 14);
        assert_eq!(parse_err("x @ 1").position, 0);
        assert_eq!(parse_err("1 + @").position, 4);
        assert_eq!(parse_err("1 + (2 @").position, 7);
        assert_eq!(parse_err("1 + 'x").position, 4);
        assert_eq!(parse_err("1 == 1 @").position, 7);
        assert_eq!(parse_err("1 == é").position, 5);
    }

    #[test]
    fn nesting_limit() {
        let ok = format!("{}true{}", "(".repeat(64), ")".repeat(64));
        assert!(Expr::parse(&ok).is_ok());
        let deep = format!("{}true{}", "(".repeat(65), ")".repeat(65));
        assert_eq!(parse_err(&deep).position, 64);
        let e = parse_err(&"(".repeat(100));
        assert_eq!(e.position, 64);
        assert!(e.message.contains("nested"), "{e}");
        assert_eq!(parse_err(&format!("{}true", "!".repeat(100))).position, 64);
        assert_eq!(
            parse_err(&format!("{}1 == 1", "-".repeat(100))).position,
            64
        );
    }

    #[test]
    fn length_limit() {
        let ok = format!("true{}", " ".repeat(MAX_LEN - 4));
        assert!(Expr::parse(&ok).is_ok());
        let long = format!("true{}", " ".repeat(MAX_LEN - 3));
        let e = parse_err(&long);
        assert_eq!(e.position, MAX_LEN);
        assert!(e.message.contains("4096"), "{e}");
    }

    #[test]
    fn long_flat_chains_do_not_overflow_the_stack() {
        // ~2000-deep left-leaning trees: parsing is iterative, evaluation recurses.
        let sum = format!("executeTimes{}>0", "+1".repeat(2040));
        assert!(sum.len() <= MAX_LEN);
        assert!(eval(&sum, &times(0)));
        let ors = format!("false{}", "||false".repeat(580));
        assert!(!eval(&ors, &times(0)));
        let clone = Expr::parse(&sum).unwrap().clone();
        drop(clone);
    }

    #[test]
    fn evaluation_errors_never_panic() {
        let e = Expr::parse("executeTimes / 0 == 0").unwrap();
        let err = e.eval(&times(1)).unwrap_err();
        assert_eq!(err.position, 13);
        assert_eq!(err.to_string(), "at position 13: division by zero");
        let e = Expr::parse("executeTimes % (executeTimes - executeTimes) == 0").unwrap();
        assert_eq!(e.eval(&times(5)).unwrap_err().position, 13);

        let max = "9223372036854775807";
        let e = Expr::parse(&format!("{max} + executeTimes > 0")).unwrap();
        assert_eq!(e.eval(&times(0)), Ok(true));
        assert_eq!(e.eval(&times(1)).unwrap_err().position, 20);

        let min = format!("(0 - {max} - 1)");
        let e = Expr::parse(&format!("-{min} > 0")).unwrap();
        let err = e.eval(&times(0)).unwrap_err();
        assert_eq!(
            (err.position, err.message.as_str()),
            (0, "integer overflow in `-`")
        );
        assert_eq!(
            Expr::parse(&format!("{min} / -1 > 0"))
                .unwrap()
                .eval(&times(0))
                .unwrap_err()
                .position,
            30
        );
        assert!(eval(&format!("{min} % -1 == 0"), &times(0)));
        assert!(Expr::parse(&format!("{min} - 1 < 0"))
            .unwrap()
            .eval(&times(0))
            .is_err());
        assert!(Expr::parse("executeTimes * executeTimes > 0")
            .unwrap()
            .eval(&times(i64::MAX))
            .is_err());
        assert!(Expr::parse("-executeTimes > 0")
            .unwrap()
            .eval(&times(i64::MIN))
            .is_err());
    }

    #[test]
    fn source_is_kept_and_errors_are_std_errors() {
        let src = "  executeTimes > 1 && executeTimes < 5 ";
        assert_eq!(Expr::parse(src).unwrap().source(), src);
        let err: Box<dyn std::error::Error + Send + Sync> = Box::new(parse_err("executeTimes >"));
        assert!(err.to_string().starts_with("at position 14"));
        fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
        assert_traits::<Expr>();
        assert_traits::<AlertVars>();
        assert_traits::<ExprError>();
    }

    /// xorshift64: a deterministic PRNG for the property test.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 16) as usize % n
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const PIECES: &[&str] = &[
        "executeTimes",
        "#taskInstance.",
        "#taskInstance.executeTimes",
        "signature",
        "fallbackRan",
        "maxAttempts",
        "id",
        "taskId",
        "exectueTimes",
        "true",
        "false",
        "and",
        "or",
        "not",
        "0",
        "1",
        "2",
        "-1",
        "9223372036854775807",
        "9223372036854775808",
        "(",
        ")",
        "&&",
        "||",
        "!",
        "-",
        "+",
        "*",
        "/",
        "%",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "'",
        "\"",
        "\\",
        "'orders.pay'",
        " ",
        "  ",
        "#",
        ".",
        "&",
        "|",
        "=",
        "é",
        "✓",
        "_",
        "a",
        "Z",
        "\n",
        "\0",
        "@",
        "{",
        "]",
    ];

    /// A random well-typed expression: of type bool if `bool`, else int.
    fn random_expr(rng: &mut Rng, bool: bool, depth: u32, out: &mut String) {
        let leaf = depth >= 5 || rng.below(3) == 0;
        match (bool, leaf, rng.below(4)) {
            (true, true, _) => out.push_str(rng.pick(&["fallbackRan", "true", "not false"])),
            (false, true, _) => out.push_str(rng.pick(&[
                "executeTimes",
                "#taskInstance.maxAttempts",
                "id",
                "0",
                "2",
                "7",
                "9223372036854775807",
            ])),
            (true, false, 0) => {
                out.push_str(rng.pick(&["signature == 'orders.pay'", "'a' < taskId", "!"]));
                random_expr(rng, true, depth + 1, out);
            }
            (true, false, 1) => {
                random_expr(rng, false, depth + 1, out);
                out.push_str(rng.pick(&[" == ", " != ", " < ", " <= ", " > ", " >= "]));
                random_expr(rng, false, depth + 1, out);
            }
            (false, false, 0) => {
                out.push('-');
                random_expr(rng, false, depth + 1, out);
            }
            (_, false, 2) => {
                out.push('(');
                random_expr(rng, bool, depth + 1, out);
                out.push(')');
            }
            _ => {
                random_expr(rng, bool, depth + 1, out);
                out.push_str(if bool {
                    rng.pick(&[" && ", " || ", " and ", " or ", " == ", " != "])
                } else {
                    rng.pick(&[" + ", " - ", " * ", " / ", " % "])
                });
                random_expr(rng, bool, depth + 1, out);
            }
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let var_sets = [
            AlertVars::default(),
            times(3),
            AlertVars {
                execute_times: i64::MAX,
                max_attempts: i64::MIN,
                signature: "orders.pay".into(),
                fallback_ran: true,
                ..AlertVars::default()
            },
        ];
        let (mut parsed, mut evaluated) = (0, 0);
        for round in 0..20_000 {
            let mut src = String::new();
            if round % 2 == 0 {
                // Token soup with the odd arbitrary printable byte.
                for _ in 0..rng.below(24) {
                    if rng.below(5) == 0 {
                        src.push(char::from(b' ' + rng.below(95) as u8));
                    } else {
                        src.push_str(rng.pick(PIECES));
                    }
                }
            } else {
                // A well-typed expression, sometimes corrupted with a stray piece.
                random_expr(&mut rng, true, 0, &mut src);
                if rng.below(3) == 0 {
                    let at = rng.below(src.len() + 1);
                    if src.is_char_boundary(at) {
                        src.insert_str(at, rng.pick(PIECES));
                    }
                }
            }
            if let Ok(e) = Expr::parse(&src) {
                parsed += 1;
                assert_eq!(e.source(), src);
                for v in &var_sets {
                    evaluated += usize::from(e.eval(v).is_ok());
                }
            }
        }
        assert!(parsed > 1000, "only {parsed} inputs parsed");
        assert!(evaluated > 1000, "only {evaluated} evaluations succeeded");
    }
}
