-- How long the successful attempt ran, for completed rows kept for the audit trail (status 3).
ALTER TABLE consistency_task ADD COLUMN duration_ms BIGINT NULL;
-- The background purge of kept completed rows walks this index.
CREATE INDEX consistency_task_status_modified ON consistency_task (task_status, gmt_modified);
