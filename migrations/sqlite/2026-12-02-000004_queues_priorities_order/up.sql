-- Queues, priorities and order per key (issue 14). Existing rows keep working: they land in the
-- queue 'default' at priority 0 with no ordering key, which is what every pool works by default.
--
-- * queue: the named queue a task belongs to; a pool claims only from the queues it works, one
--   queue per claim, with per-queue concurrency and rate limits in the pool.
-- * priority: -3 (lowest) .. 3 (highest), claimed highest first, then in due order.
-- * ordering_key: tasks with the same key run one at a time, in enqueue (id) order; a task whose
--   key has an earlier row that still exists (pending, running, failed, dead or held; succeeded
--   rows are deleted, kept ones do not count) is not claimed.
ALTER TABLE consistency_task ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE consistency_task ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE consistency_task ADD COLUMN ordering_key TEXT NULL;
-- The claim reads one (queue, priority) range at a time, up to `now`: O(batch + levels) per
-- claim whatever the table holds. It replaces the plain due index (same number of indexes).
DROP INDEX consistency_task_due;
CREATE INDEX consistency_task_due ON consistency_task (queue, priority, execute_time);
-- The claim's "is an earlier row of this key still there?" probe; only keyed rows.
CREATE INDEX consistency_task_ordering ON consistency_task (ordering_key, id)
    WHERE ordering_key IS NOT NULL;
