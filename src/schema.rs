//! The `consistency_task` table as Diesel sees it. One definition serves every backend: the
//! migrations under `migrations/<backend>/` map each column to the same Diesel SQL type.

diesel::table! {
    /// tend's task table; see the migrations for column comments and `TaskStatus` for statuses.
    consistency_task (id) {
        /// Surrogate primary key (MySQL/MariaDB: `AUTO_INCREMENT`, which lets an insert read
        /// the new id from the executed statement, `execute_returning_id`).
        #[auto_increment]
        id -> BigInt,
        /// The custom task id, or the signature when none was given (the seed's meaning).
        task_id -> Text,
        /// Optional unique key: enqueuing the same key twice leaves one row.
        idempotency_key -> Nullable<Text>,
        /// See `TaskStatus`.
        task_status -> Integer,
        /// How many times the task was started (claimed).
        execute_times -> Integer,
        /// After this many failed attempts the task is dead.
        max_attempts -> Integer,
        /// Next due time (epoch ms); while running, the lease expiry; parked rows hold i64::MAX.
        execute_time -> BigInt,
        /// The payload's Rust type name, for operators only (lookup never uses it).
        parameter_types -> Text,
        /// The task's short name, for operators only.
        method_name -> Text,
        /// The stable signature the registry dispatches on.
        method_sign_name -> Text,
        /// Retry interval base in seconds.
        execute_interval_sec -> Integer,
        /// Delay in seconds before the first run of a scheduled task.
        delay_time -> Integer,
        /// The bincode-encoded task.
        task_parameter -> Binary,
        /// Version of the payload encoding (the task type's `VERSION`).
        payload_version -> Integer,
        /// 1 = right now, 2 = schedule.
        execute_way -> Integer,
        /// 1 = async, 2 = sync.
        thread_way -> Integer,
        /// 1 = with the caller's transaction, 2 = without.
        transaction_way -> Integer,
        /// Last failure message.
        error_msg -> Text,
        /// Alert expression evaluated after failures.
        alert_expression -> Nullable<Text>,
        /// Name of the alerter to notify.
        alert_action_bean_name -> Nullable<Text>,
        /// Name of the fallback action, if any.
        fallback_class_name -> Nullable<Text>,
        /// Last fallback failure message.
        fallback_error_msg -> Nullable<Text>,
        /// Shard key (routing and node affinity).
        shard_key -> BigInt,
        /// Fencing token of the current lease.
        lease_token -> Nullable<BigInt>,
        /// Which process holds the lease (for operators).
        lease_owner -> Nullable<Text>,
        /// When the current lease expires (epoch ms).
        lease_expires_at -> Nullable<BigInt>,
        /// Creation time (epoch ms).
        gmt_create -> BigInt,
        /// Last modification time (epoch ms).
        gmt_modified -> BigInt,
        /// How long the successful attempt ran (kept completed rows only).
        duration_ms -> Nullable<BigInt>,
        /// The W3C `traceparent` of the span that enqueued the task, if known.
        trace_parent -> Nullable<Text>,
        /// The named queue the task belongs to (`default` unless set).
        queue -> Text,
        /// -3 (lowest) to 3 (highest): claimed highest first, then in due order.
        priority -> Integer,
        /// Tasks with the same key run one at a time, in enqueue order.
        ordering_key -> Nullable<Text>,
    }
}

diesel::table! {
    /// Live worker processes, for shard affinity.
    tend_node (node_id) {
        /// 0-1023; also the process's snowflake node id.
        node_id -> Integer,
        /// The pool's owner name (unique per process).
        owner -> Text,
        /// Last heartbeat (epoch ms).
        heartbeat_at -> BigInt,
        /// When the process registered (epoch ms).
        started_at -> BigInt,
    }
}

diesel::table! {
    /// Periodic schedules: the last slot enqueued per name (the compare-and-set target).
    tend_schedule (name) {
        /// The schedule's name (unique).
        name -> Text,
        /// How it repeats, for operators (`every 5s`, `cron 0 */5 * * * * in Europe/Berlin`).
        spec -> Text,
        /// The last slot whose task was enqueued (epoch ms).
        last_slot_ms -> BigInt,
        /// The slot after it: when the schedule next runs (epoch ms).
        next_slot_ms -> BigInt,
        /// When a process last wrote the row (epoch ms).
        updated_at -> BigInt,
    }
}
