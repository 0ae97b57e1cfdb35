-- Fewer index entries per task (issue 16): every insert and every lease (which changes
-- execute_time and gmt_modified) writes into each index that covers the row. Each index left
-- here is justified by a hot path; the others cover only the rows they serve.
--
-- * consistency_task_due (execute_time): the claim (hot path), unchanged.
-- * The idempotency key is NULL on most rows: a partial unique index holds only keyed rows.
--   Enqueue's `ON CONFLICT DO NOTHING` names no conflict target, so a partial unique index
--   still makes a duplicate key a no-op.
-- * The purge of kept completed rows (status 3) walks a partial index of those rows only; its
--   query spells `task_status = 3` as a literal, which SQLite needs to use a partial index.
--   The claim, whose status test is `+task_status IN (0, 1, 2)`, can never use it. The
--   dashboard's per-minute activity query (`gmt_modified >= …`, operators only) now reads the
--   table instead.
-- * No tend statement looks rows up by shard_key (only the operator's list filter does,
--   beside other filters): no index.
DROP INDEX consistency_task_idempotency_key;
CREATE UNIQUE INDEX consistency_task_idempotency_key ON consistency_task (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX consistency_task_modified;
CREATE INDEX consistency_task_kept ON consistency_task (gmt_modified) WHERE task_status = 3;
DROP INDEX consistency_task_shard_key;
