DROP INDEX consistency_task_status_modified ON consistency_task;
ALTER TABLE consistency_task DROP COLUMN duration_ms;
