-- HOT leases (issue 16). The claim's lease now writes only columns that no index holds and no
-- partial index's predicate reads (task_status, execute_times, lease_expires_at, lease_token,
-- lease_owner), so PostgreSQL updates the row on its own page without touching any index (a
-- HOT update): no index entry written per lease, none left dead for the next claims to step
-- over. The lease no longer moves execute_time (a running row keeps its due time, and claims
-- skip it until its lease lapses) nor gmt_modified.
--
-- The kept rows' index was partial on `task_status = 3`, a column every lease changes (so no
-- lease could be HOT): it is now partial on `duration_ms IS NOT NULL`, which only a kept
-- success writes (each one has a duration; older kept rows without one get 0).
UPDATE consistency_task SET duration_ms = 0 WHERE task_status = 3 AND duration_ms IS NULL;
DROP INDEX consistency_task_kept;
CREATE INDEX consistency_task_kept ON consistency_task (gmt_modified)
    WHERE duration_ms IS NOT NULL;
-- Room on each page for a leased row's new version beside the old one (new pages only).
ALTER TABLE consistency_task SET (fillfactor = 90);
