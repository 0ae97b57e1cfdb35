-- How long the successful attempt ran, for completed rows kept for the audit trail (status 3).
ALTER TABLE consistency_task ADD COLUMN duration_ms BIGINT NULL;
-- The background purge of kept completed rows walks this index. Not (task_status, ...):
-- SQLite without statistics would then plan the claim on it and sort every due row.
CREATE INDEX consistency_task_modified ON consistency_task (gmt_modified);
