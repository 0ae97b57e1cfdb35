CREATE INDEX consistency_task_shard_key ON consistency_task (shard_key);
DROP INDEX consistency_task_kept;
CREATE INDEX consistency_task_modified ON consistency_task (gmt_modified);
DROP INDEX consistency_task_idempotency_key;
CREATE UNIQUE INDEX consistency_task_idempotency_key ON consistency_task (idempotency_key);
