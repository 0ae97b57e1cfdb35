DROP INDEX consistency_task_modified;
ALTER TABLE consistency_task DROP COLUMN duration_ms;
