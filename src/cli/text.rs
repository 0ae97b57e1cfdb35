//! Reading and writing what an operator types and reads: times, durations, statuses, tables.
//!
//! Times are epoch milliseconds in the table. The CLI accepts those or RFC 3339 in UTC or with
//! an offset, and shows RFC 3339 in UTC. A tiny calendar conversion is enough for that, so no
//! date crate is pulled in.

use crate::status::{TaskStatus, PARKED, WAITING};

const MS_PER_DAY: i64 = 86_400_000;

/// Parses a time: epoch milliseconds (`1795790786000`) or RFC 3339
/// (`2026-11-27T14:46:26Z`, `2026-11-27T14:46:26.5+01:00`).
pub(crate) fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "`{s}` is not a time: use epoch milliseconds (like 1795790786000) or RFC 3339 \
             (like 2026-11-27T14:46:26Z)"
        )
    };
    let t = s.trim();
    if !t.is_empty()
        && t.trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return t.parse::<i64>().map_err(|_| bad());
    }
    rfc3339(t).ok_or_else(bad)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to epoch milliseconds.
fn rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds: the first three digits, padded; finer digits are dropped.
        let mut ms = String::from(&frac[..digits.min(3)]);
        while ms.len() < 3 {
            ms.push('0');
        }
        millis = ms.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || rb[3] != b':' {
                return None;
            }
            let sign = match rb[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            if h > 23
                || m > 59
                || !rest[1..3]
                    .bytes()
                    .chain(rest[4..6].bytes())
                    .all(|c| c.is_ascii_digit())
            {
                return None;
            }
            sign * (h * 60 + m)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date. Howard Hinnant's `days_from_civil`
/// (<http://howardhinnant.github.io/date_algorithms.html>).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`], from the same source.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// An epoch-ms time as RFC 3339 in UTC (milliseconds only when there are some); parked rows'
/// `i64::MAX` as `never`, and a row waiting in line behind its ordering key as `in line`.
pub(crate) fn fmt_time(ms: i64) -> String {
    if ms == PARKED {
        return "never".to_string();
    }
    if ms == WAITING {
        return "in line (after the task before it in its key)".to_string();
    }
    let days = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, frac) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    if frac == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}Z")
    }
}

/// Parses a duration: one or more number-unit pairs (`ms`, `s`, `m`, `h`, `d`, `w`), like
/// `30s`, `15m`, `7d` or `1h30m`. Returns milliseconds.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || {
        format!("`{s}` is not a duration: use a number and a unit (ms, s, m, h, d, w), like 30s, 15m, 12h or 7d")
    };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => MS_PER_DAY,
            "w" => 7 * MS_PER_DAY,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// A short human form of a span of milliseconds: `850ms`, `42s`, `3m 20s`, `5h 2m`, `2d 4h`.
pub(crate) fn fmt_span(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86_400, s / 3600 % 24),
    }
}

/// Parses a status name (`dead`) or value (`4`).
pub(crate) fn parse_status(s: &str) -> Result<StatusArg, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "unknown" {
        return Ok(StatusArg::Unknown);
    }
    if let Some(st) = TaskStatus::ALL.iter().find(|st| st.name() == t) {
        return Ok(StatusArg::Known(*st));
    }
    match t.parse::<i32>() {
        Ok(v) => Ok(TaskStatus::from_i32(v).map_or(StatusArg::Value(v), StatusArg::Known)),
        Err(_) => Err(format!(
            "unknown status `{s}`; expected one of pending, running, failed, succeeded, dead, \
             held, unknown (any value this build does not know), or a stored integer"
        )),
    }
}

/// A status as `--status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusArg {
    /// One of [`TaskStatus`].
    Known(TaskStatus),
    /// A stored integer that is no known status (written by a newer tend, or by hand).
    Value(i32),
    /// Every value that is no known status.
    Unknown,
}

/// A stored status value by name, or `unknown(7)`.
pub(crate) fn status_name(v: i32) -> String {
    TaskStatus::from_i32(v).map_or_else(|| format!("unknown({v})"), |s| s.name().to_string())
}

/// The first line of `s`, at most `max` characters, with `…` when cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    let cut = line.chars().count() > max || s.lines().nth(1).is_some();
    let mut out: String = line.chars().take(max).collect();
    if cut {
        out.push('…');
    }
    out
}

/// Column alignment in [`table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// Rows under headers, columns padded to their widest cell and separated by two spaces; the
/// last column is not padded, so long error messages do not push lines wider.
pub(crate) fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.into_iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            match headers[i].1 {
                Align::Right => {
                    s.extend(std::iter::repeat_n(' ', pad));
                    s.push_str(cell);
                }
                Align::Left if i == last => s.push_str(cell),
                Align::Left => {
                    s.push_str(cell);
                    s.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(headers.iter().map(|(h, _)| *h).collect());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1795790786000"), Ok(1_795_790_786_000));
        assert_eq!(parse_time("2026-11-27T14:46:26Z"), Ok(1_795_790_786_000));
        assert_eq!(
            parse_time("2026-11-27T15:46:26+01:00"),
            Ok(1_795_790_786_000)
        );
        assert_eq!(parse_time("2026-11-27T14:46:26.5Z"), Ok(1_795_790_786_500));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), Ok(-1000));
        assert_eq!(parse_time("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        assert_eq!(fmt_time(1_795_790_786_000), "2026-11-27T14:46:26Z");
        assert_eq!(fmt_time(1_795_790_786_500), "2026-11-27T14:46:26.500Z");
        assert_eq!(fmt_time(-1000), "1969-12-31T23:59:59Z");
        assert_eq!(fmt_time(PARKED), "never");
        assert!(fmt_time(WAITING).starts_with("in line"));
        for ms in [0, 951_782_400_000, 1_709_164_800_123, 4_102_444_800_000] {
            assert_eq!(parse_time(&fmt_time(ms)), Ok(ms));
        }
    }

    #[test]
    fn bad_times_are_refused() {
        for s in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T14:46:26",
            "2026-11-27T14:46:26+1:00",
            "2026-11-27",
        ] {
            let e = parse_time(s).unwrap_err();
            assert!(e.contains("RFC 3339"), "{s}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("15m"), Ok(900_000));
        assert_eq!(parse_duration("7d"), Ok(604_800_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("2w"), Ok(1_209_600_000));
        for s in ["", "7", "d", "7x", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
        assert_eq!(fmt_span(42_000), "42s");
        assert_eq!(fmt_span(200_000), "3m 20s");
    }

    #[test]
    fn statuses() {
        assert_eq!(parse_status("dead"), Ok(StatusArg::Known(TaskStatus::Dead)));
        assert_eq!(parse_status("Held"), Ok(StatusArg::Known(TaskStatus::Held)));
        assert_eq!(parse_status("2"), Ok(StatusArg::Known(TaskStatus::Failed)));
        assert_eq!(parse_status("9"), Ok(StatusArg::Value(9)));
        assert_eq!(parse_status("-1"), Ok(StatusArg::Value(-1)));
        assert_eq!(parse_status("Unknown"), Ok(StatusArg::Unknown));
        assert!(parse_status("99999999999").is_err());
        assert!(parse_status("zombie")
            .unwrap_err()
            .contains("pending, running"));
        assert_eq!(status_name(9), "unknown(9)");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &[
                ("ID", Align::Right),
                ("NAME", Align::Left),
                ("NOTE", Align::Left),
            ],
            &[
                vec!["1".into(), "a".into(), "x".into()],
                vec!["100".into(), "long name".into(), String::new()],
            ],
        );
        assert_eq!(
            t,
            " ID  NAME       NOTE\n  1  a          x\n100  long name\n"
        );
        assert_eq!(clip("one\ntwo", 10), "one…");
        assert_eq!(clip("abcdef", 3), "abc…");
    }
}
