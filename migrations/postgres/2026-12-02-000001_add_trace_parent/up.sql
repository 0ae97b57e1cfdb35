-- The W3C `traceparent` of the span that enqueued the task (`00-<trace id>-<span id>-<flags>`,
-- 55 characters), the parent of the task's runs in a trace. NULL when none was known.
ALTER TABLE consistency_task ADD COLUMN trace_parent VARCHAR(55) NULL;
