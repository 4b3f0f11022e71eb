//! The errors of each boundary: the handle's commands, the supervisor's end, the builder.

use std::time::Duration;

/// Why a command sent through a [`SupervisorHandle`](crate::SupervisorHandle) was refused.
///
/// Every command answers at once: these errors come from the call itself, never later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorHandleError {
    /// `add_task` named a task that is already registered.
    #[error("a task named `{name}` already exists")]
    TaskAlreadyExists {
        /// The name that was asked for.
        name: String,
    },
    /// `restart` or `kill_task` named a task that is not registered.
    #[error("no task named `{name}` is registered")]
    TaskNotFound {
        /// The name that was asked for.
        name: String,
    },
    /// The supervisor is shutting down or has stopped, so it takes no more commands.
    #[error("the supervisor is shutting down or has stopped")]
    SupervisorStopped,
}

/// Why a supervisor stopped, when it was not asked to; returned by
/// [`SupervisorHandle::wait`](crate::SupervisorHandle::wait).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SupervisorError {
    /// The share of dead tasks exceeded the threshold set with
    /// [`with_dead_tasks_threshold`](crate::SupervisorBuilder::with_dead_tasks_threshold).
    ///
    /// The fields are those of the released 0.3 crate, and like there both are fractions
    /// between 0 and 1, despite the name `current_percentage`. The counts behind the share are
    /// logged (at error level, fields `dead` and `total`) when the supervisor gives up.
    ///
    /// # Examples
    ///
    /// ```
    /// use task_supervisor::SupervisorError;
    ///
    /// let error = SupervisorError::TooManyDeadTasks { current_percentage: 0.75, threshold: 0.5 };
    /// assert_eq!(
    ///     error.to_string(),
    ///     "too many dead tasks: 75.0% of the tasks are dead, above the threshold of 50.0%"
    /// );
    /// if let SupervisorError::TooManyDeadTasks { current_percentage, threshold } = error {
    ///     assert!(current_percentage > threshold);
    /// }
    /// ```
    #[error(
        "too many dead tasks: {:.1}% of the tasks are dead, above the threshold of {:.1}%",
        .current_percentage * 100.0,
        .threshold * 100.0
    )]
    TooManyDeadTasks {
        /// The share of the registered tasks that were dead, from 0 to 1.
        current_percentage: f64,
        /// The threshold it exceeded, from 0 to 1.
        threshold: f64,
    },
    /// The supervisor's loop ended without finishing its work: the Tokio runtime it ran on
    /// shut down (runs it had started were dropped with that runtime), or the loop panicked,
    /// which would be a bug in this crate.
    #[error("the supervisor's loop ended early: its runtime shut down, or it panicked")]
    LoopEnded,
}

/// Why [`SupervisorBuilder::try_build`](crate::SupervisorBuilder::try_build) refused its
/// settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuilderError {
    /// Two tasks were registered under one name.
    #[error("a task named `{name}` was registered twice")]
    DuplicateTaskName {
        /// The name registered twice.
        name: String,
    },
    /// The dead tasks threshold is not a fraction between 0 and 1.
    #[error("the dead tasks threshold must be between 0 and 1, got {value}")]
    InvalidDeadTasksThreshold {
        /// The value given.
        value: f64,
    },
    /// The heartbeat timeout is zero, which would declare every beating task hung at once.
    #[error("the heartbeat timeout threshold must be longer than zero")]
    ZeroTimeoutThreshold,
    /// The heartbeat interval is zero, which would ask tasks to beat without pause.
    #[error("the heartbeat interval must be longer than zero")]
    ZeroHeartbeatInterval,
    /// Tasks beating at the interval asked would be declared hung between two beats.
    #[error(
        "the heartbeat interval ({interval:?}) must be shorter than the timeout threshold ({timeout:?})"
    )]
    HeartbeatIntervalNotBelowTimeout {
        /// The heartbeat interval given.
        interval: Duration,
        /// The timeout threshold given.
        timeout: Duration,
    },
    /// The restart jitter is not a fraction between 0 and 1.
    #[error("the restart jitter must be between 0 and 1, got {value}")]
    InvalidRestartJitter {
        /// The value given.
        value: f64,
    },
}
