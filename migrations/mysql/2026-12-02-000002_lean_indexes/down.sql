CREATE INDEX consistency_task_shard_key ON consistency_task (shard_key);
