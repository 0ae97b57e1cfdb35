//! [`TraceParent`]: the W3C trace context a task carries from the span that enqueued it to the
//! spans of its runs.

use std::fmt;

use crate::error::Error;

/// A W3C [`traceparent`](https://www.w3.org/TR/trace-context/#traceparent-header) value,
/// `00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>`, stored with a task (column
/// `trace_parent`) so that its runs join the trace of the request that enqueued it.
///
/// With the `opentelemetry` feature, [`NewTask::new`](crate::NewTask::new) takes it from the
/// current `tracing` span (through `tracing-opentelemetry`) and `TracingEvents` makes it the
/// parent of each attempt's span. Without it, set one with
/// [`NewTask::trace_parent`](crate::NewTask::trace_parent) (from an incoming `traceparent`
/// header, say) and read it back from [`TaskInfo::trace_parent`](crate::TaskInfo) in your own
/// [`Events`](crate::Events).
///
/// Parsing follows the W3C rules: lowercase hex only, neither id all zeros, version `ff`
/// refused; a later version is read for its first four fields, as the recommendation asks,
/// and stored as version `00`.
///
/// ```
/// use tend::TraceParent;
/// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")?;
/// assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(tp.parent_id(), "00f067aa0ba902b7");
/// assert!(tp.sampled());
/// assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_err());
/// # Ok::<(), tend::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TraceParent(String);

/// Length of a version-00 `traceparent`.
pub(crate) const LEN: usize = 55;

impl TraceParent {
    /// Parses and checks a `traceparent` value.
    pub fn parse(s: &str) -> Result<TraceParent, Error> {
        parse(s).map_err(|why| {
            let shown: String = s.chars().take(80).collect();
            Error::invalid_setting(
                "trace_parent",
                format!("`{shown}` is not a W3C traceparent ({why}); expected 00-<32 hex>-<16 hex>-<2 hex>"),
            )
        })
    }

    /// Builds one from its parts (lowercase hex), as a tracing library hands them out.
    pub fn from_parts(trace_id: &str, parent_id: &str, flags: u8) -> Result<TraceParent, Error> {
        TraceParent::parse(&format!("00-{trace_id}-{parent_id}-{flags:02x}"))
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }

    /// The 16-hex-digit id of the span that enqueued the task.
    pub fn parent_id(&self) -> &str {
        &self.0[36..52]
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        u8::from_str_radix(&self.0[53..55], 16).unwrap_or(0)
    }

    /// Whether the caller sampled the trace (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags() & 1 == 1
    }

    /// The value, 55 characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn into_string(self) -> String {
        self.0
    }

    /// The trace context of the current `tracing` span, if an OpenTelemetry layer gave it one.
    #[cfg(feature = "opentelemetry")]
    pub fn current() -> Option<TraceParent> {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return None;
        }
        TraceParent::from_parts(
            &sc.trace_id().to_string(),
            &sc.span_id().to_string(),
            sc.trace_flags().to_u8(),
        )
        .ok()
    }

    /// The OpenTelemetry context whose remote parent this is.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn otel_context(&self) -> Option<opentelemetry::Context> {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        let trace_id = TraceId::from_hex(self.trace_id()).ok()?;
        let span_id = SpanId::from_hex(self.parent_id()).ok()?;
        let sc = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(self.flags()),
            true,
            TraceState::default(),
        );
        Some(opentelemetry::Context::new().with_remote_span_context(sc))
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({})", self.0)
    }
}

impl std::str::FromStr for TraceParent {
    type Err = Error;
    fn from_str(s: &str) -> Result<TraceParent, Error> {
        TraceParent::parse(s)
    }
}

fn hex(s: &str, len: usize, what: &str) -> Result<(), String> {
    if s.len() != len
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!("the {what} must be {len} lowercase hex digits"));
    }
    Ok(())
}

fn parse(s: &str) -> Result<TraceParent, String> {
    let s = s.trim();
    if s.len() < LEN || !s.is_ascii() {
        return Err(format!("{} characters, at least {LEN} needed", s.len()));
    }
    let version = &s[..2];
    hex(version, 2, "version")?;
    if version == "ff" {
        return Err("version ff is invalid".into());
    }
    // Version 00 is exactly 55 characters; a later one may append fields after a dash.
    if s.len() > LEN && (version == "00" || s.as_bytes()[LEN] != b'-') {
        return Err(format!(
            "{} characters, version {version} has {LEN}",
            s.len()
        ));
    }
    let b = s.as_bytes();
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return Err("fields are not separated by dashes".into());
    }
    let (trace, parent, flags) = (&s[3..35], &s[36..52], &s[53..55]);
    hex(trace, 32, "trace id")?;
    hex(parent, 16, "parent id")?;
    hex(flags, 2, "flags field")?;
    if trace.bytes().all(|c| c == b'0') {
        return Err("the trace id is all zeros".into());
    }
    if parent.bytes().all(|c| c == b'0') {
        return Err("the parent id is all zeros".into());
    }
    Ok(TraceParent(format!("00-{trace}-{parent}-{flags}")))
}

/// A stored value read back: `None` (with a debug line) when a hand-edited row holds something
/// that is not a traceparent; a bad trace context never stops a task.
pub(crate) fn stored(id: i64, s: Option<&str>) -> Option<TraceParent> {
    let s = s?;
    match parse(s) {
        Ok(tp) => Some(tp),
        Err(why) => {
            log::debug!("tend: task {id}: ignoring its trace_parent: {why}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_w3c_example() {
        let tp = TraceParent::parse(OK).unwrap();
        assert_eq!(tp.as_str(), OK);
        assert_eq!(tp.flags(), 1);
        assert_eq!(OK.parse::<TraceParent>().unwrap(), tp);
    }

    #[test]
    fn refuses_what_the_recommendation_refuses() {
        let bad = [
            "",
            "00",
            &OK[..54],
            &format!("{OK}0"),
            &format!("{OK}-extra"),
            &OK.to_uppercase(),
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é",
            "0é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for s in bad {
            let e = TraceParent::parse(s).unwrap_err().to_string();
            assert!(e.contains("not a W3C traceparent"), "{s:?}: {e}");
        }
    }

    #[test]
    fn a_later_version_keeps_its_first_four_fields() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert_eq!(TraceParent::parse(later).unwrap().as_str(), OK);
        assert!(TraceParent::parse(&format!("{}x", &later[..55])).is_err());
    }

    #[test]
    fn from_parts_and_stored() {
        let tp = TraceParent::from_parts("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1);
        assert_eq!(tp.unwrap().as_str(), OK);
        assert!(TraceParent::from_parts("x", "00f067aa0ba902b7", 1).is_err());
        assert_eq!(stored(1, Some(OK)).unwrap().as_str(), OK);
        assert!(stored(1, Some("garbage")).is_none());
        assert!(stored(1, None).is_none());
    }
}
