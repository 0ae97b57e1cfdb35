//! tend's table and the tests' own tables, declared with plain diesel, as a user would, and the
//! rows the tests read from them.

use diesel::prelude::*;

diesel::table! {
    /// tend's table, declared here so that tests read it with plain diesel, as a user would.
    consistency_task (id) {
        id -> BigInt,
        task_id -> Text,
        idempotency_key -> Nullable<Text>,
        task_status -> Integer,
        execute_times -> Integer,
        max_attempts -> Integer,
        execute_time -> BigInt,
        parameter_types -> Text,
        method_name -> Text,
        method_sign_name -> Text,
        execute_interval_sec -> Integer,
        delay_time -> Integer,
        task_parameter -> Binary,
        payload_version -> Integer,
        execute_way -> Integer,
        thread_way -> Integer,
        transaction_way -> Integer,
        error_msg -> Text,
        alert_expression -> Nullable<Text>,
        alert_action_bean_name -> Nullable<Text>,
        fallback_class_name -> Nullable<Text>,
        fallback_error_msg -> Nullable<Text>,
        shard_key -> BigInt,
        lease_token -> Nullable<BigInt>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<BigInt>,
        gmt_create -> BigInt,
        gmt_modified -> BigInt,
        duration_ms -> Nullable<BigInt>,
        trace_parent -> Nullable<Text>,
    }
}

/// See `tend_test_orders`.
pub const ORDERS_DDL: &str =
    "CREATE TABLE tend_test_orders (id BIGINT PRIMARY KEY, note VARCHAR(100) NOT NULL)";

/// One row of `consistency_task`, every column.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = consistency_task)]
pub struct Row {
    pub id: i64,
    pub task_id: String,
    pub idempotency_key: Option<String>,
    pub task_status: i32,
    pub execute_times: i32,
    pub max_attempts: i32,
    pub execute_time: i64,
    pub parameter_types: String,
    pub method_name: String,
    pub method_sign_name: String,
    pub execute_interval_sec: i32,
    pub delay_time: i32,
    pub task_parameter: Vec<u8>,
    pub payload_version: i32,
    pub execute_way: i32,
    pub thread_way: i32,
    pub transaction_way: i32,
    pub error_msg: String,
    pub alert_expression: Option<String>,
    pub alert_action_bean_name: Option<String>,
    pub fallback_class_name: Option<String>,
    pub fallback_error_msg: Option<String>,
    pub shard_key: i64,
    pub lease_token: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub gmt_create: i64,
    pub gmt_modified: i64,
    pub duration_ms: Option<i64>,
    pub trace_parent: Option<String>,
}

diesel::table! {
    /// The business table of "the task commits or rolls back with my rows".
    tend_test_orders (id) {
        id -> BigInt,
        note -> Text,
    }
}

diesel::table! {
    /// What processes under test did, written by their handlers on their own connections:
    /// `label` says what (e.g. "started"), `task` which task, `pid` which process.
    tend_test_marks (label, task, pid, at_ms) {
        label -> Text,
        task -> BigInt,
        pid -> BigInt,
        at_ms -> BigInt,
        end_ms -> BigInt,
    }
}

pub const MARKS_DDL: &str = "CREATE TABLE tend_test_marks (label VARCHAR(50) NOT NULL, \
     task BIGINT NOT NULL, pid BIGINT NOT NULL, at_ms BIGINT NOT NULL, end_ms BIGINT NOT NULL)";

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tend_test_marks)]
pub struct Mark {
    pub label: String,
    pub task: i64,
    pub pid: i64,
    pub at_ms: i64,
    pub end_ms: i64,
}

/// A row of `consistency_task` as the checks see it.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct TaskView {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub id: i64,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub task_status: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub execute_times: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub shard_key: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub method_sign_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub error_msg: String,
}
