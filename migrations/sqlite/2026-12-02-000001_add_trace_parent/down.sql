ALTER TABLE consistency_task DROP COLUMN trace_parent;
