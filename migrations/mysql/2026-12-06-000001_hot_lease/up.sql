-- The claim's lease writes no indexed column (issue 16; see the PostgreSQL migration of the
-- same name): it no longer moves execute_time (the due index) nor gmt_modified (the kept rows'
-- index), so InnoDB changes no secondary index per lease. The purge of kept rows now also
-- asks for `duration_ms IS NOT NULL` (every kept success has one): older kept rows without
-- one get 0.
UPDATE consistency_task SET duration_ms = 0 WHERE task_status = 3 AND duration_ms IS NULL;
