//! Task statuses: the one place their values and meanings are defined.

use std::fmt;

/// Where a task is in its life. Stored as an integer in `consistency_task.task_status`.
///
/// Values 0-3 keep the original framework's numbers (`INIT`, `START`, `FAIL`, `SUCCESS`);
/// 4 and 5 are tend's additions so that no task is ever lost or retried forever.
///
/// | value | status      | claimable | meaning |
/// |-------|-------------|-----------|---------|
/// | 0     | `Pending`   | when due  | enqueued, never started |
/// | 1     | `Running`   | when its lease expired | claimed by a worker holding the lease |
/// | 2     | `Failed`    | when due  | last attempt failed; the retry is scheduled at `execute_time` |
/// | 3     | `Succeeded` | never     | done; only present when completed rows are kept (success deletes by default) |
/// | 4     | `Dead`      | never     | out of attempts, or the handler gave up; kept for an operator |
/// | 5     | `Held`      | never     | this deployment cannot run it (unknown signature, payload that does not decode); kept for an operator |
///
/// Rows that are never claimable are *parked*: their `execute_time` is `i64::MAX`, so the claim
/// index never visits them.
///
/// ```
/// use tend::TaskStatus;
/// assert_eq!(TaskStatus::from_i32(4), Some(TaskStatus::Dead));
/// assert_eq!(TaskStatus::Dead.as_i32(), 4);
/// assert!(TaskStatus::Failed.is_claimable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Enqueued, never started (the seed's `INIT`).
    Pending,
    /// Leased by a worker (the seed's `START`).
    Running,
    /// Failed, retry scheduled (the seed's `FAIL`).
    Failed,
    /// Completed and kept for the audit trail (the seed's `SUCCESS`).
    Succeeded,
    /// Out of attempts or given up; never retried until an operator retries it.
    Dead,
    /// Cannot be run by this deployment; never deleted, never retried automatically.
    Held,
}

impl TaskStatus {
    /// Every status, in value order.
    ///
    /// ```
    /// use tend::TaskStatus;
    /// assert_eq!(TaskStatus::ALL.len(), 6);
    /// assert!(TaskStatus::ALL.iter().all(|s| TaskStatus::from_i32(s.as_i32()) == Some(*s)));
    /// ```
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Pending,
        TaskStatus::Running,
        TaskStatus::Failed,
        TaskStatus::Succeeded,
        TaskStatus::Dead,
        TaskStatus::Held,
    ];

    /// The stored integer.
    ///
    /// ```
    /// use tend::TaskStatus;
    /// assert_eq!(TaskStatus::Dead.as_i32(), 4);
    /// // e.g. for your own query: SELECT id FROM consistency_task WHERE task_status = 4
    /// let dead = format!("task_status = {}", TaskStatus::Dead.as_i32());
    /// assert_eq!(dead, "task_status = 4");
    /// ```
    pub fn as_i32(self) -> i32 {
        match self {
            TaskStatus::Pending => 0,
            TaskStatus::Running => 1,
            TaskStatus::Failed => 2,
            TaskStatus::Succeeded => 3,
            TaskStatus::Dead => 4,
            TaskStatus::Held => 5,
        }
    }

    /// The status for a stored integer, or `None` for an unknown value.
    ///
    /// ```
    /// use tend::TaskStatus;
    /// assert_eq!(TaskStatus::from_i32(2), Some(TaskStatus::Failed));
    /// assert_eq!(TaskStatus::from_i32(9), None);
    /// ```
    pub fn from_i32(v: i32) -> Option<TaskStatus> {
        Some(match v {
            0 => TaskStatus::Pending,
            1 => TaskStatus::Running,
            2 => TaskStatus::Failed,
            3 => TaskStatus::Succeeded,
            4 => TaskStatus::Dead,
            5 => TaskStatus::Held,
            _ => return None,
        })
    }

    /// Whether a worker may claim a row in this status once it is due.
    ///
    /// ```
    /// use tend::TaskStatus;
    /// let all = (0..6).filter_map(TaskStatus::from_i32);
    /// let claimable: Vec<&str> = all.filter(|s| s.is_claimable()).map(TaskStatus::name).collect();
    /// assert_eq!(claimable, ["pending", "running", "failed"]);
    /// ```
    pub fn is_claimable(self) -> bool {
        matches!(
            self,
            TaskStatus::Pending | TaskStatus::Running | TaskStatus::Failed
        )
    }

    /// Lower-case name, as shown by logs and the CLI.
    ///
    /// ```
    /// use tend::TaskStatus;
    /// assert_eq!(TaskStatus::Held.name(), "held");
    /// assert_eq!(TaskStatus::Held.to_string(), "held"); // Display says the same
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Failed => "failed",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Dead => "dead",
            TaskStatus::Held => "held",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `execute_time` of rows that are never claimed (dead, held, kept-succeeded).
pub(crate) const PARKED: i64 = i64::MAX;

/// `execute_time` of a pending task that waits in line behind an earlier task of its ordering
/// key (moved there by a fetcher that found it blocked, so that claims stop reading it; moved
/// back to "due now" when the task before it is done). Correctness never rests on it: the
/// claim checks the order itself.
pub(crate) const WAITING: i64 = i64::MAX - 1;

/// The latest `execute_time` a due time, retry or snooze may have (below [`WAITING`]).
pub(crate) const LATEST_DUE: i64 = i64::MAX - 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_value() {
        for v in 0..6 {
            assert_eq!(TaskStatus::from_i32(v).unwrap().as_i32(), v);
        }
        assert_eq!(TaskStatus::from_i32(6), None);
        assert_eq!(TaskStatus::from_i32(-1), None);
    }
}
