//! Task statuses, the state machine they follow, and the change events the supervisor publishes.
//!
//! # The state machine
//!
//! ```text
//!            spawn              first beat / first poll
//! Created ──────────► Starting ───────────────────────► Healthy
//!                      ▲  │ │                             │ │
//!        back-off ends │  │ └──── Ok(()) ──► Completed ◄──┘ │
//!                      │  ▼                                 ▼
//!                     Failed ◄── Err, panic, hang ── (Starting or Healthy)
//!                                                           │
//!              Dead ◄── Err, panic or hang with no attempts left; kill_task
//! ```
//!
//! Every edge the supervisor may take is listed by [`TaskStatus::can_change_to`]. Besides the
//! automatic edges above, `kill_task` moves any status that is not `Dead` to `Dead`, and
//! `restart` moves any status to `Starting` (once the previous run, if any, has ended).

use std::fmt;
use std::sync::Arc;

/// Where a supervised task is in its life.
///
/// See the [module documentation](crate::status) for the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Registered, not started yet.
    Created,
    /// A run has been spawned and has not yet proved it is alive: for a task that sends
    /// heartbeats, until its first beat; for any other task, until its first poll.
    Starting,
    /// The current run has proved it is alive.
    Healthy,
    /// The last run failed (error, panic or hang); a restart is scheduled after the back-off.
    Failed,
    /// The last run returned `Ok(())`. The task is not restarted unless asked to, or unless
    /// its [`RestartPolicy`](crate::RestartPolicy) is `Permanent`.
    Completed,
    /// The task used up its restart attempts or was killed. It is not restarted unless asked to.
    Dead,
}

impl TaskStatus {
    /// All statuses, in the order a task's life usually visits them.
    pub const ALL: [TaskStatus; 6] = [
        Self::Created,
        Self::Starting,
        Self::Healthy,
        Self::Failed,
        Self::Completed,
        Self::Dead,
    ];

    /// Whether the task is waiting out its back-off before a restart.
    pub fn is_restarting(&self) -> bool {
        matches!(self, Self::Failed)
    }

    /// Whether the current run has proved it is alive.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy)
    }

    /// Whether the task is dead: out of restart attempts, or killed.
    pub fn is_dead(&self) -> bool {
        matches!(self, Self::Dead)
    }

    /// Whether the last run finished its work with `Ok(())`.
    pub fn has_completed(&self) -> bool {
        matches!(self, Self::Completed)
    }

    /// Whether the supervisor will not start the task again by itself (`Completed` or `Dead`),
    /// under the default policy: a `Permanent` task is restarted after `Completed` too, and a
    /// group strategy may restart a `Completed` task with the group.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Completed | Self::Dead)
    }

    /// Whether the supervisor may move a task from `self` to `next` in one step.
    ///
    /// This is the documented state machine as a predicate; tests and monitoring code can
    /// check every observed change against it.
    ///
    /// # Examples
    ///
    /// ```
    /// use task_supervisor::TaskStatus;
    ///
    /// assert!(TaskStatus::Starting.can_change_to(TaskStatus::Healthy));
    /// assert!(!TaskStatus::Completed.can_change_to(TaskStatus::Healthy));
    /// ```
    pub fn can_change_to(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        match (self, next) {
            // A manual restart starts a fresh run from any status.
            (_, Starting) => true,
            // A kill is final from any status but `Dead`.
            (Dead, Dead) => false,
            (_, Dead) => true,
            (Starting, Healthy) => true,
            (Starting | Healthy, Failed | Completed) => true,
            _ => false,
        }
    }

    pub(crate) const fn as_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Created,
            1 => Self::Starting,
            2 => Self::Healthy,
            3 => Self::Failed,
            4 => Self::Completed,
            _ => Self::Dead,
        }
    }
}

impl TaskStatus {
    /// The status in lower case, as `Display` writes it (and metrics label it).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Failed => "failed",
            Self::Completed => "completed",
            Self::Dead => "dead",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One status change of one task, as published by
/// [`SupervisorHandle::status_changes`](crate::SupervisorHandle::status_changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// The task's name.
    pub task: Arc<str>,
    /// The status before the change.
    pub from: TaskStatus,
    /// The status after the change.
    pub to: TaskStatus,
    /// Why the run ended, for changes to `Failed` or `Dead` caused by a run: the error's
    /// message, the panic's message, or a note that the run was hung.
    pub reason: Option<Arc<str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_u8() {
        for status in TaskStatus::ALL {
            assert_eq!(TaskStatus::from_u8(status.as_u8()), status);
        }
    }

    #[test]
    fn final_statuses_only_leave_by_restart_or_kill() {
        for from in [TaskStatus::Completed, TaskStatus::Dead] {
            for to in TaskStatus::ALL {
                let allowed = from.can_change_to(to);
                let expected = to == TaskStatus::Starting
                    || (to == TaskStatus::Dead && from != TaskStatus::Dead);
                assert_eq!(allowed, expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn nothing_returns_to_created() {
        for from in TaskStatus::ALL {
            assert!(
                !from.can_change_to(TaskStatus::Created),
                "{from} -> created"
            );
        }
    }
}
