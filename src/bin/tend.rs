//! The `tend` operator CLI; see `tend --help` and the README's "Operating tend".

use std::process::ExitCode;

fn main() -> ExitCode {
    // Logs go to stderr; `RUST_LOG=tend=debug` shows tend's own statements and retries.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    tend::cli::run(tend::Registry::new())
}
