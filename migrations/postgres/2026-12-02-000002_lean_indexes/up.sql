-- Fewer index entries per task (issue 16). The lease UPDATE changes execute_time, which the
-- claim's index holds, so PostgreSQL can never make it a HOT update: every lease and every
-- insert writes one entry into *every* index that covers the row. Each index left here is
-- justified by a hot path; the others cover only the rows they serve.
--
-- * consistency_task_due (execute_time): the claim (hot path), unchanged.
-- * The idempotency key is NULL on most rows: a partial unique index holds only keyed rows.
--   Enqueue's `ON CONFLICT DO NOTHING` names no conflict target, so any unique index (partial
--   too) makes a duplicate key a no-op.
-- * The purge of kept completed rows (status 3) walks a partial index of those rows only; its
--   query spells `task_status = 3` as a literal so that the planner can match the predicate.
--   The dashboard's per-minute activity query (`gmt_modified >= …`, operators only) now reads
--   the table instead.
-- * No tend statement looks rows up by shard_key (claims, completions and the routing of a
--   task never do; only the operator's list filter does, beside other filters): no index.
DROP INDEX consistency_task_idempotency_key;
CREATE UNIQUE INDEX consistency_task_idempotency_key ON consistency_task (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX consistency_task_modified;
CREATE INDEX consistency_task_kept ON consistency_task (gmt_modified) WHERE task_status = 3;
DROP INDEX consistency_task_shard_key;
