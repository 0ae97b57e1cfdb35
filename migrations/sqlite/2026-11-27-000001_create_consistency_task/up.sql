-- tend's task table (SQLite 3.35+). Column names and meanings follow the original framework's
-- `consistency_task`; see src/status.rs for status values.
-- Times are epoch milliseconds (INTEGER), like the seed's execute_time.
CREATE TABLE consistency_task (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id                TEXT    NOT NULL,
    idempotency_key        TEXT    NULL,
    task_status            INTEGER NOT NULL DEFAULT 0,
    execute_times          INTEGER NOT NULL DEFAULT 0,
    max_attempts           INTEGER NOT NULL DEFAULT 25,
    execute_time           BIGINT  NOT NULL,
    parameter_types        TEXT    NOT NULL DEFAULT '',
    method_name            TEXT    NOT NULL DEFAULT '',
    method_sign_name       TEXT    NOT NULL,
    execute_interval_sec   INTEGER NOT NULL DEFAULT 60,
    delay_time             INTEGER NOT NULL DEFAULT 60,
    task_parameter         BLOB    NOT NULL,
    payload_version        INTEGER NOT NULL DEFAULT 1,
    execute_way            INTEGER NOT NULL DEFAULT 1,
    thread_way             INTEGER NOT NULL DEFAULT 1,
    transaction_way        INTEGER NOT NULL DEFAULT 1,
    error_msg              TEXT    NOT NULL DEFAULT '',
    alert_expression       TEXT    NULL,
    alert_action_bean_name TEXT    NULL,
    fallback_class_name    TEXT    NULL,
    fallback_error_msg     TEXT    NULL,
    shard_key              BIGINT  NOT NULL DEFAULT 0,
    lease_token            BIGINT  NULL,
    lease_owner            TEXT    NULL,
    lease_expires_at       BIGINT  NULL,
    gmt_create             BIGINT  NOT NULL,
    gmt_modified           BIGINT  NOT NULL
);
-- The claim query walks this index in due order: O(batch), whatever the table size.
-- Rows that must never be claimed (dead, held, done) are parked at execute_time = i64::MAX.
CREATE INDEX consistency_task_due ON consistency_task (execute_time);
CREATE UNIQUE INDEX consistency_task_idempotency_key ON consistency_task (idempotency_key);
CREATE INDEX consistency_task_shard_key ON consistency_task (shard_key);
