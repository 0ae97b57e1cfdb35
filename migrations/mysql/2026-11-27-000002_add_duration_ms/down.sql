DROP INDEX consistency_task_modified ON consistency_task;
ALTER TABLE consistency_task DROP COLUMN duration_ms;
