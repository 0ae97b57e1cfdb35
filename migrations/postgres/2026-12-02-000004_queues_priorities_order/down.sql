DROP INDEX consistency_task_ordering;
DROP INDEX consistency_task_due;
CREATE INDEX consistency_task_due ON consistency_task (execute_time);
ALTER TABLE consistency_task DROP COLUMN ordering_key;
ALTER TABLE consistency_task DROP COLUMN priority;
ALTER TABLE consistency_task DROP COLUMN queue;
