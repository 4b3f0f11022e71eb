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
    /// `add_task_spec` was given a spec with a setting that cannot work; nothing was
    /// registered.
    #[error("the spec of task `{name}` cannot work: {reason}")]
    InvalidTaskSpec {
        /// The name that was asked for.
        name: String,
        /// Which setting, as the builder would say it.
        reason: BuilderError,
    },
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
    /// A restart would have exceeded the restart intensity set with
    /// [`with_restart_intensity`](crate::SupervisorBuilder::with_restart_intensity): the
    /// supervisor stopped every task instead (Erlang/OTP's `reached_max_restart_intensity`).
    #[error("restart intensity exceeded: a restart would have made {restarts} within {within:?}")]
    RestartIntensityExceeded {
        /// The restarts within the window, counting the one that was not made.
        restarts: u32,
        /// The window.
        within: Duration,
    },
    /// A significant task died, and the supervisor stopped by its
    /// [`AutoShutdown`](crate::AutoShutdown) setting: the work it was for did not get done.
    #[error("significant task `{task}` died ({reason}), so the supervisor stopped")]
    SignificantTaskDied {
        /// The task's name.
        task: String,
        /// Why it died: its last failure, or the limit it reached.
        reason: String,
    },
    /// The supervisor's loop ended without finishing its work: the Tokio runtime it ran on
    /// shut down (runs it had started were dropped with that runtime), or the loop panicked,
    /// which would be a bug in this crate.
    #[error("the supervisor's loop ended early: its runtime shut down, or it panicked")]
    LoopEnded,
}

/// Why [`SupervisorBuilder::try_build`](crate::SupervisorBuilder::try_build) refused its
/// settings.
///
/// Errors compare equal when they say the same thing; the values they carry are compared
/// exactly (floats by their bits), so every error equals itself, a rejected `NaN` included.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// A restart limit or intensity counts restarts within no time at all, so it could never
    /// be reached.
    #[error("a restart limit must count restarts within a window longer than zero")]
    ZeroRestartWindow,
    /// The spec of one task has a setting that cannot work.
    #[error("the spec of task `{name}` cannot work: {reason}")]
    InvalidTaskSpec {
        /// The task's name.
        name: String,
        /// Which setting.
        reason: Box<BuilderError>,
    },
}

impl PartialEq for BuilderError {
    fn eq(&self, other: &Self) -> bool {
        use BuilderError::*;
        match (self, other) {
            (DuplicateTaskName { name: a }, DuplicateTaskName { name: b }) => a == b,
            (InvalidDeadTasksThreshold { value: a }, InvalidDeadTasksThreshold { value: b })
            | (InvalidRestartJitter { value: a }, InvalidRestartJitter { value: b }) => {
                a.to_bits() == b.to_bits()
            }
            (ZeroTimeoutThreshold, ZeroTimeoutThreshold)
            | (ZeroHeartbeatInterval, ZeroHeartbeatInterval)
            | (ZeroRestartWindow, ZeroRestartWindow) => true,
            (
                HeartbeatIntervalNotBelowTimeout {
                    interval: a,
                    timeout: b,
                },
                HeartbeatIntervalNotBelowTimeout {
                    interval: c,
                    timeout: d,
                },
            ) => a == c && b == d,
            (InvalidTaskSpec { name: a, reason: b }, InvalidTaskSpec { name: c, reason: d }) => {
                a == c && b == d
            }
            _ => false,
        }
    }
}

impl Eq for BuilderError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_builder_error() -> Vec<BuilderError> {
        vec![
            BuilderError::DuplicateTaskName { name: "a".into() },
            BuilderError::InvalidDeadTasksThreshold { value: f64::NAN },
            BuilderError::ZeroTimeoutThreshold,
            BuilderError::ZeroHeartbeatInterval,
            BuilderError::HeartbeatIntervalNotBelowTimeout {
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
            },
            BuilderError::InvalidRestartJitter { value: 1.5 },
            BuilderError::ZeroRestartWindow,
            BuilderError::InvalidTaskSpec {
                name: "b".into(),
                reason: Box::new(BuilderError::ZeroRestartWindow),
            },
        ]
    }

    #[test]
    fn every_builder_error_equals_itself_and_no_other() {
        let errors = every_builder_error();
        for (i, a) in errors.iter().enumerate() {
            for (j, b) in errors.iter().enumerate() {
                assert_eq!(a == b, i == j, "{a:?} vs {b:?}");
            }
            assert_eq!(a, &a.clone());
        }
    }

    #[test]
    fn messages_name_the_task_and_the_setting() {
        let error = SupervisorHandleError::InvalidTaskSpec {
            name: "poller".into(),
            reason: BuilderError::InvalidRestartJitter { value: 2.0 },
        };
        assert_eq!(
            error.to_string(),
            "the spec of task `poller` cannot work: the restart jitter must be between 0 and 1, got 2"
        );
    }
}
