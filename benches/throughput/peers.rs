//! The peer figure: graphile-worker (`benches/peers/graphile_drain.js`) draining no-op jobs on
//! the same PostgreSQL server, interleaved with tend's w4 drain in the same run, so that the
//! issue's "tend >= 20x graphile-worker" is a ratio of one run, not of two runs at different
//! times on a machine whose speed drifts.
//!
//! Runs on PostgreSQL when `TEND_BENCH_GRAPHILE` names a directory whose `node_modules` holds
//! graphile-worker (`npm install graphile-worker@0.17.3` there); otherwise it says loudly that
//! it skipped. graphile-worker's schema goes into the bench's own database (dropped at the
//! end). Both systems connect over the same transport: node-postgres speaks plain TCP unless
//! told otherwise, so tend's drains here add `sslmode=disable` to the URL when it names no
//! `sslmode` (libpq's default, `prefer`, negotiates SSL on a server that has it).

use std::process::{Command, Stdio};

use diesel::connection::SimpleConnection;

use super::*;

/// graphile-worker's concurrency (its `run({ concurrency })`): 8 unless
/// `TEND_BENCH_GRAPHILE_CONCURRENCY` says otherwise. Measured here: 4, 8 and 16 drain within
/// the machine's noise of each other (the server's CPU is the bound).
fn graphile_concurrency() -> usize {
    std::env::var("TEND_BENCH_GRAPHILE_CONCURRENCY")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(8)
}

/// `url` with `sslmode=disable` unless it names an `sslmode` of its own.
fn plain_transport(url: &str) -> String {
    if url.contains("sslmode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&sslmode=disable")
    } else {
        format!("{url}?sslmode=disable")
    }
}

impl<D: Db> Bench<D> {
    pub(crate) fn peers(&self) -> Res<()> {
        if D::NAME != "pg" {
            return Ok(());
        }
        let dir = match std::env::var("TEND_BENCH_GRAPHILE") {
            Ok(d) if !d.is_empty() => d,
            _ => {
                println!(
                    "!!!! SKIPPED peer=graphile-worker: TEND_BENCH_GRAPHILE is not set (a \
                     directory where `npm install graphile-worker@0.17.3` ran) !!!!"
                );
                return Ok(());
            }
        };
        let modules = std::path::Path::new(&dir).join("node_modules");
        if !modules.join("graphile-worker").is_dir() {
            return Err(format!(
                "TEND_BENCH_GRAPHILE={dir}: no node_modules/graphile-worker there (run `npm \
                 install graphile-worker@0.17.3` in it)"
            )
            .into());
        }
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/peers/graphile_drain.js"
        );
        let url = plain_transport(&self.url);
        let conc = graphile_concurrency();
        let n = self.s.n;
        let below = now_ms() + 3_600_000;
        let plain = Bench::<D> {
            pool: D::pool(&url, 2)?,
            url: url.clone(),
            s: self.s,
            seed: None,
        };
        // tend, graphile-worker with its defaults, graphile-worker with its batching preset.
        const WHO: [&str; 3] = ["tend", "graphile", "graphile_batched"];
        let mut runs: [Vec<f64>; 3] = Default::default();
        for rep in 0..DRAIN_REPEATS {
            let mut order = vec![0, 1, 2];
            order.rotate_left(rep % 3);
            for sys in order {
                expect_done(
                    DRAIN_CAP + Duration::from_secs(60),
                    format!("pg peer drain {}", WHO[sys]),
                );
                let rate = if sys == 0 {
                    plain.clear()?;
                    plain.fill(n, 0)?;
                    plain.tend_drain(4, n, below)?.rate()
                } else {
                    let r = graphile_drain(script, &modules, &url, conc, sys == 2, n)?;
                    // Its deleted jobs are dead tuples, and autovacuum may be off.
                    plain
                        .conn()?
                        .batch_execute("VACUUM ANALYZE graphile_worker._private_jobs")?;
                    r
                };
                runs[sys].push(rate);
            }
        }
        log(format!(
            "pg: peer drain runs (tasks/s): tend w4 {:?}, graphile-worker (concurrency {conc}) \
             defaults {:?}, batching preset {:?}",
            rounded(&runs[0]),
            rounded(&runs[1]),
            rounded(&runs[2])
        ));
        plain.clear()?;
        for (sys, who) in WHO.iter().enumerate() {
            self.figure(
                "peer_drain_tasks_per_s",
                percentile(&runs[sys], 50.0),
                "tasks/s",
                who,
                n,
            );
        }
        Ok(())
    }
}

/// One run of `graphile_drain.js`: `n` jobs enqueued with one call, then one `run()` until the
/// handlers ran and the jobs table is empty; its rate as the script measured it (handlers run /
/// drain time). `batched`: graphile-worker's batching options (`GRAPHILE_BATCHED=1`, see the
/// script), else its defaults.
fn graphile_drain(
    script: &str,
    modules: &std::path::Path,
    url: &str,
    conc: usize,
    batched: bool,
    n: usize,
) -> Res<f64> {
    let out = Command::new("node")
        .arg(script)
        .arg(conc.to_string())
        .arg(n.to_string())
        .env("NODE_PATH", modules)
        .env("DATABASE_URL", url)
        .env("GRAPHILE_BATCHED", if batched { "1" } else { "0" })
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running node {script}: {e} (is Node.js installed?)"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("graphile_drain.js failed ({}): {err}", out.status).into());
    }
    let json = err
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("graphile_drain.js printed no result: {err}"))?;
    let field = |name: &str| -> Option<f64> {
        let rest = &json[json.find(&format!("\"{name}\":"))? + name.len() + 3..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest[..end].trim().parse().ok()
    };
    let (secs, calls) = field("drain_s")
        .zip(field("handler_calls"))
        .ok_or_else(|| format!("graphile_drain.js: no drain_s/handler_calls in {json}"))?;
    if calls as usize != n {
        log(format!(
            "WARNING: graphile-worker ran {calls} handlers for {n} jobs"
        ));
    }
    Ok(calls / secs)
}
