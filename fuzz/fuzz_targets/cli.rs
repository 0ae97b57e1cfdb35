//! The `tend` CLI's argument and URL parsing (through `tend::__fuzz`, feature `fuzzing`): no
//! database is ever opened.
//!
//! Input: an argv without the program name, arguments separated by NUL bytes (raw bytes, so
//! not always UTF-8). Each argument is also read on its own as a database URL, a time and a
//! duration.
//!
//! Invariants: nothing panics; a URL is shown as its mask; a time the CLI reads and shows as a
//! four-digit year reads back to the same instant; a duration is never negative.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;
use tend::__fuzz;

/// 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z in epoch ms: the range RFC 3339 can write.
const YEAR_0: i64 = -62_167_219_200_000;
const YEAR_10000: i64 = 253_402_300_800_000;

fuzz_target!(|data: &[u8]| {
    let args: Vec<OsString> = data
        .split(|&b| b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    let _ = __fuzz::parse_args(args);
    for arg in data.split(|&b| b == 0) {
        let Ok(s) = std::str::from_utf8(arg) else {
            continue;
        };
        let (masked, secrets) = __fuzz::mask(s);
        let _ = __fuzz::scrub(s, &secrets);
        if let Ok((_, shown)) = __fuzz::database_url(s) {
            assert_eq!(shown, masked);
        }
        if let Ok(ms) = __fuzz::parse_time(s) {
            let shown = __fuzz::fmt_time(ms);
            if (YEAR_0..YEAR_10000).contains(&ms) {
                assert_eq!(__fuzz::parse_time(&shown), Ok(ms), "{s:?} shown as {shown}");
            }
        }
        if let Ok(ms) = __fuzz::parse_duration(s) {
            assert!(ms >= 0, "{s:?} is {ms} ms");
            let _ = __fuzz::fmt_span(ms);
        }
    }
});
