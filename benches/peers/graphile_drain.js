// graphile-worker's drain of no-op jobs, the peer figure of issue 16's "20x graphile-worker".
// Setup (any directory): npm install graphile-worker@0.17.3 && createdb graphile_bench
// Usage: node graphile_drain.js <concurrency> [jobs]   (VACUUM graphile_worker._private_jobs
// between runs when autovacuum is off, or the dead rows of earlier runs slow the next)
// Env: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/graphile_bench)
// Enqueues the jobs with one add_jobs call, then times one run() from start until the handlers
// ran and the jobs table is empty (polled every 5 ms) and prints the figures as JSON on stderr.
const fs = require("fs");
const { Pool } = require("pg");
const { run, runMigrations } = require("graphile-worker");

const connectionString =
  process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:5432/graphile_bench";
const concurrency = parseInt(process.argv[2] || "8", 10);
const N = parseInt(process.argv[3] || "20000", 10);
// GRAPHILE_BATCHED=1: graphile-worker's batching options as its performance page configures
// them for its published figures (https://worker.graphile.org/docs/performance): a local
// queue of 500 jobs fetched and locked in one query, completions batched (delay 0), and a
// pool one larger than the concurrency. Off: graphile-worker's defaults (one job per fetch,
// one completion per job), as in the figures recorded before 2026-12-03.
const batched = process.env.GRAPHILE_BATCHED === "1";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  // 1. migrations
  await runMigrations({ connectionString });

  const pool = new Pool({ connectionString, max: 2 });
  const count = async () =>
    Number(
      (await pool.query("SELECT count(*) AS c FROM graphile_worker._private_jobs")).rows[0].c,
    );

  const before = await count();
  if (before !== 0) throw new Error(`jobs table not empty: ${before}`);

  // 2. enqueue N jobs with ONE SQL call to graphile_worker.add_jobs(job_spec[])
  const tEnq = process.hrtime.bigint();
  await pool.query(
    `SELECT count(*) FROM graphile_worker.add_jobs(
       (SELECT array_agg(ROW('noop', '{}'::json, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec)
          FROM generate_series(1, $1::int)))`,
    [N],
  );
  const enqMs = Number(process.hrtime.bigint() - tEnq) / 1e6;
  const queued = await count();
  if (queued !== N) throw new Error(`expected ${N} queued, got ${queued}`);

  const loadavg = fs.readFileSync("/proc/loadavg", "utf8").trim();
  process.stderr.write(`loadavg before run: ${loadavg}\n`);

  // 3. start ONE worker pool via run(), concurrency as given, defaults otherwise
  let completed = 0;
  const t0 = process.hrtime.bigint();
  const runner = await run({
    connectionString,
    concurrency,
    ...(batched
      ? {
          maxPoolSize: concurrency + 1,
          preset: {
            worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 },
          },
        }
      : {}),
    taskList: {
      noop: async () => {
        completed++;
      },
    },
  });
  const tStarted = Number(process.hrtime.bigint() - t0) / 1e6;

  // wait until every handler ran (checked every 1 ms, as tend's bench does), then poll every
  // 5 ms until the jobs table is empty (completions may be batched)
  // 90 s: fail before the bench's watchdog (105 s a drain) kills the bench and leaves this
  // process behind.
  const giveUp = Date.now() + 90000;
  while (completed < N) {
    if (Date.now() > giveUp) throw new Error(`only ${completed} of ${N} handlers ran in 90 s`);
    await sleep(1);
  }
  let remaining = await count();
  while (remaining > 0) {
    await sleep(5);
    remaining = await count();
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  await runner.stop();
  await pool.end();

  const result = {
    concurrency,
    batched,
    jobs: N,
    enqueue_ms: +enqMs.toFixed(1),
    run_resolved_ms: +tStarted.toFixed(1),
    drain_s: +secs.toFixed(3),
    jobs_per_s: Math.round(N / secs),
    handler_calls: completed,
    loadavg_before: loadavg,
  };
  process.stderr.write(JSON.stringify(result) + "\n");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
