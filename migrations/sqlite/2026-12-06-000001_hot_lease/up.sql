-- The claim's lease writes no indexed column (issue 16; see the PostgreSQL migration of the
-- same name): it no longer moves execute_time nor gmt_modified, and the kept rows' index,
-- which SQLite rewrites when a column of its predicate changes, is now partial on
-- `duration_ms IS NOT NULL` (only a kept success writes it; older kept rows without one get 0)
-- instead of on the status every lease changes.
UPDATE consistency_task SET duration_ms = 0 WHERE task_status = 3 AND duration_ms IS NULL;
DROP INDEX consistency_task_kept;
CREATE INDEX consistency_task_kept ON consistency_task (gmt_modified)
    WHERE duration_ms IS NOT NULL;
