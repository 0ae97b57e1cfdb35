-- Fewer index entries per task (issue 16): InnoDB writes every secondary index whose columns a
-- statement changes (a delete-mark and an insert per lease). MySQL/MariaDB have no partial
-- indexes, so the idempotency key's unique index stays as it is (InnoDB stores its NULLs
-- too), and so does consistency_task_modified: the purge of kept completed rows has no other
-- index to walk.
--
-- No tend statement looks rows up by shard_key (claims, completions and the routing of a task
-- never do; only the operator's list filter does, beside other filters): no index.
DROP INDEX consistency_task_shard_key ON consistency_task;
