-- tend's task table (MySQL 8 / MariaDB 10.6+, InnoDB). Column names and meanings follow the
-- original framework's `consistency_task`; see src/status.rs for status values.
-- Times are epoch milliseconds (BIGINT), like the seed's execute_time.
CREATE TABLE consistency_task (
    id                     BIGINT       NOT NULL AUTO_INCREMENT,
    task_id                VARCHAR(500) NOT NULL,
    idempotency_key        VARCHAR(255) NULL,
    task_status            INT          NOT NULL DEFAULT 0,
    execute_times          INT          NOT NULL DEFAULT 0,
    max_attempts           INT          NOT NULL DEFAULT 25,
    execute_time           BIGINT       NOT NULL,
    parameter_types        VARCHAR(255) NOT NULL DEFAULT '',
    method_name            VARCHAR(100) NOT NULL DEFAULT '',
    method_sign_name       VARCHAR(200) NOT NULL,
    execute_interval_sec   INT          NOT NULL DEFAULT 60,
    delay_time             INT          NOT NULL DEFAULT 60,
    task_parameter         LONGBLOB     NOT NULL,
    payload_version        INT          NOT NULL DEFAULT 1,
    execute_way            INT          NOT NULL DEFAULT 1,
    thread_way             INT          NOT NULL DEFAULT 1,
    transaction_way        INT          NOT NULL DEFAULT 1,
    -- MEDIUMTEXT: TEXT stops at 65 535 bytes, and tend stores messages of up to 64 KiB.
    error_msg              MEDIUMTEXT   NOT NULL,
    alert_expression       TEXT         NULL,
    alert_action_bean_name VARCHAR(255) NULL,
    fallback_class_name    VARCHAR(255) NULL,
    fallback_error_msg     MEDIUMTEXT   NULL,
    shard_key              BIGINT       NOT NULL DEFAULT 0,
    lease_token            BIGINT       NULL,
    lease_owner            VARCHAR(255) NULL,
    lease_expires_at       BIGINT       NULL,
    gmt_create             BIGINT       NOT NULL,
    gmt_modified           BIGINT       NOT NULL,
    PRIMARY KEY (id),
    -- The claim query walks this index in due order: O(batch), whatever the table size.
    -- Rows that must never be claimed (dead, held, done) are parked at execute_time = i64::MAX.
    KEY consistency_task_due (execute_time),
    UNIQUE KEY consistency_task_idempotency_key (idempotency_key),
    KEY consistency_task_shard_key (shard_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_general_ci;
