//! Thin wrappers over the CLI's parsers for the cargo-fuzz targets (`fuzz/fuzz_targets/cli.rs`),
//! re-exported as `tend::__fuzz` under the `fuzzing` feature. They parse and format only: no
//! database is ever opened.

use std::ffi::OsString;

use clap::Parser;

use super::db::{self, Database};
use super::text;
use super::{Cli, Command, FilterArgs, TasksCommand};

/// Parses `args` (without the program name) as the `tend` binary would, then does everything
/// it does before connecting: reads each `--database-url` ([`database_url`]) and formats the
/// parsed times and durations back. `Ok` is a description of the command; `Err` is clap's
/// rendered usage error, help or version text.
pub fn parse_args(args: Vec<OsString>) -> Result<String, String> {
    let argv = std::iter::once(OsString::from("tend")).chain(args);
    let cli = Cli::try_parse_from(argv).map_err(|e| e.render().to_string())?;
    let mut out = format!("{cli:?}");
    for url in &cli.database_url {
        out.push_str(&format!("\n{:?}", database_url(url)));
    }
    let times = |f: &FilterArgs| {
        [f.due_before, f.due_after]
            .into_iter()
            .flatten()
            .map(text::fmt_time)
            .collect::<Vec<_>>()
    };
    let shown = match &cli.command {
        Command::Tasks(TasksCommand::List(a)) => times(&a.filter),
        Command::Tasks(TasksCommand::Retry(a)) => times(&a.target.filter),
        Command::Tasks(TasksCommand::Cancel(a) | TasksCommand::Delete(a)) => {
            times(&a.target.filter)
        }
        // As `purge` shows its cutoff.
        Command::Purge(a) => vec![
            text::fmt_time(crate::util::now_ms().saturating_sub(a.older_than)),
            text::fmt_span(a.older_than),
        ],
        Command::Migrate
        | Command::Tasks(TasksCommand::Show(_))
        | Command::Stats(_)
        | Command::Keys(_) => vec![],
        #[cfg(feature = "web")]
        Command::Web(_) => vec![],
    };
    out.push_str(&format!("\n{shown:?}"));
    Ok(out)
}

/// What the CLI makes of one `--database-url`: the backend's name and the URL as shown (its
/// password masked), or why it refuses it.
pub fn database_url(url: &str) -> Result<(&'static str, String), String> {
    let d = Database::parse(url)?;
    let backend = match d.backend {
        db::Backend::Postgres => "postgres",
        db::Backend::Mysql => "mysql",
        db::Backend::Sqlite => "sqlite",
    };
    Ok((backend, d.shown))
}

/// The URL with its passwords masked, and the passwords found (raw and percent-decoded).
pub fn mask(url: &str) -> (String, Vec<String>) {
    db::mask(url)
}

/// `text` with every secret replaced by `***`, as error messages are scrubbed.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    db::scrub(text, secrets)
}

/// `--due-before` / `--due-after`: epoch ms or RFC 3339, to epoch ms.
pub fn parse_time(s: &str) -> Result<i64, String> {
    text::parse_time(s)
}

/// How the CLI shows an epoch-ms time (RFC 3339 in UTC, or `never`).
pub fn fmt_time(ms: i64) -> String {
    text::fmt_time(ms)
}

/// `--older-than`: `30s`, `1h30m`, ... to milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    text::parse_duration(s)
}

/// How the CLI shows a span of milliseconds.
pub fn fmt_span(ms: i64) -> String {
    text::fmt_span(ms)
}
