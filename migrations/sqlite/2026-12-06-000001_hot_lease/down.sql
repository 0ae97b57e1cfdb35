DROP INDEX consistency_task_kept;
CREATE INDEX consistency_task_kept ON consistency_task (gmt_modified) WHERE task_status = 3;
