//! The supervisor's settings, their defaults and the checks that keep them workable.

use std::time::Duration;

use crate::error::BuilderError;
use crate::policy::auto_shutdown::AutoShutdown;
use crate::policy::shutdown::ShutdownOrder;
use crate::policy::strategy::Strategy;
use crate::policy::window::RestartLimit;
use crate::spec::TaskPolicy;

/// Settings of one supervisor: those of the supervisor itself, and the defaults every task
/// takes unless its [`TaskSpec`](crate::TaskSpec) overrides them.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// What every task is decided by, unless it says otherwise.
    pub(crate) task: TaskPolicy,
    /// The beat period tasks are told to keep.
    pub(crate) heartbeat_interval: Duration,
    /// Extra time a run that declared heartbeats has for its first beat.
    pub(crate) health_check_initial_delay: Duration,
    /// Heartbeat deadlines are rounded up to a multiple of this, so that deadlines close to
    /// each other are checked in one wake-up.
    pub(crate) health_check_interval: Duration,
    /// The share of dead tasks above which the supervisor gives up.
    pub(crate) dead_tasks_threshold: Option<f64>,
    /// Seed for the jitter, for reproducible delays.
    pub(crate) jitter_seed: Option<u64>,
    /// At most this many restarts of all tasks together within a window, or the supervisor
    /// gives up (OTP's intensity and period); `None`: no limit.
    pub(crate) intensity: Option<RestartLimit>,
    /// Whether the end of significant tasks stops the supervisor.
    pub(crate) auto_shutdown: AutoShutdown,
    /// Which tasks a failure restarts.
    pub(crate) strategy: Strategy,
    /// In what order the supervisor stops its tasks when it ends.
    pub(crate) shutdown_order: ShutdownOrder,
    /// How long the supervisor's end may take before every run still alive is dropped.
    pub(crate) shutdown_timeout: Option<Duration>,
    /// From what length a poll of a task is reported as blocking its thread; `None`: never.
    pub(crate) blocked_poll_threshold: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            task: TaskPolicy::default(),
            heartbeat_interval: Duration::from_millis(100),
            health_check_initial_delay: Duration::from_secs(3),
            health_check_interval: Duration::from_millis(1),
            dead_tasks_threshold: None,
            jitter_seed: None,
            intensity: None,
            auto_shutdown: AutoShutdown::Never,
            strategy: Strategy::OneForOne,
            shutdown_order: ShutdownOrder::Concurrent,
            shutdown_timeout: None,
            blocked_poll_threshold: Some(crate::observe::blocked::DEFAULT_THRESHOLD),
        }
    }
}

impl Config {
    /// Checks that the settings can work together.
    pub(crate) fn validate(&self) -> Result<(), BuilderError> {
        if let Some(value) = self.dead_tasks_threshold {
            if !(0.0..=1.0).contains(&value) {
                return Err(BuilderError::InvalidDeadTasksThreshold { value });
            }
        }
        if self.task.timeout_threshold.is_zero() {
            return Err(BuilderError::ZeroTimeoutThreshold);
        }
        if self.heartbeat_interval.is_zero() {
            return Err(BuilderError::ZeroHeartbeatInterval);
        }
        if self.intensity.is_some_and(|limit| limit.within.is_zero()) {
            return Err(BuilderError::ZeroRestartWindow);
        }
        self.task.validate(self.heartbeat_interval)
    }

    /// Makes unworkable settings workable, for the infallible `build`: a threshold that is not
    /// a number turns the check off, one outside `0..=1` is clamped; zero durations that would
    /// spin become one millisecond; a jitter that is not a fraction becomes none; and a
    /// heartbeat interval not below `shortest_timeout` (the shortest timeout of any task)
    /// becomes half of it, so that no task beating at the interval it is told is hung between
    /// two beats.
    pub(crate) fn sanitized(mut self, shortest_timeout: Duration) -> Self {
        self.dead_tasks_threshold = self
            .dead_tasks_threshold
            .filter(|value| !value.is_nan())
            .map(|value| value.clamp(0.0, 1.0));
        self.task = self.task.sanitized();
        self.intensity = self.intensity.filter(|limit| !limit.within.is_zero());
        let millisecond = Duration::from_millis(1);
        let shortest_timeout = shortest_timeout
            .max(millisecond)
            .min(self.task.timeout_threshold);
        self.heartbeat_interval = self.heartbeat_interval.max(millisecond);
        if self.heartbeat_interval >= shortest_timeout {
            self.heartbeat_interval = shortest_timeout / 2;
        }
        self
    }

    /// The coalescing granularity of heartbeat deadlines, in whole milliseconds (at least 1).
    pub(crate) fn heartbeat_granularity_millis(&self) -> u64 {
        u64::try_from(self.health_check_interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether the supervisor's own rules let a task's driver restart its runs in place,
    /// without asking the loop first.
    pub(crate) fn allows_restart_in_place(&self) -> bool {
        // Every restart must be counted by the loop before it is made, and a group restart
        // must be decided by the loop, which sees every task.
        self.intensity.is_none() && self.strategy == Strategy::OneForOne
    }

    /// The policy of a task registered without a spec.
    pub(crate) fn default_policy(&self) -> TaskPolicy {
        self.task
            .clone()
            .for_supervisor(self.allows_restart_in_place())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn thresholds_outside_the_unit_interval_are_rejected() {
        for value in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            let config = Config {
                dead_tasks_threshold: Some(value),
                ..Config::default()
            };
            assert!(matches!(
                config.validate(),
                Err(BuilderError::InvalidDeadTasksThreshold { .. })
            ));
        }
    }

    #[test]
    fn sanitizing_makes_every_config_valid() {
        let config = Config {
            dead_tasks_threshold: Some(f64::NAN),
            task: TaskPolicy {
                timeout_threshold: Duration::ZERO,
                restart_jitter: -3.0,
                ..TaskPolicy::default()
            },
            heartbeat_interval: Duration::ZERO,
            ..Config::default()
        }
        .sanitized(Duration::MAX);
        assert_eq!(config.dead_tasks_threshold, None);
        assert_eq!(config.task.timeout_threshold, Duration::from_millis(1));
        assert_eq!(config.task.restart_jitter, 0.0);
        assert_eq!(config.validate(), Ok(()));
        let clamped = Config {
            dead_tasks_threshold: Some(7.0),
            ..Config::default()
        }
        .sanitized(Duration::MAX);
        assert_eq!(clamped.dead_tasks_threshold, Some(1.0));
    }

    #[test]
    fn the_interval_must_be_below_the_timeout() {
        let config = Config {
            heartbeat_interval: Duration::from_secs(2),
            task: TaskPolicy {
                timeout_threshold: Duration::from_secs(2),
                ..TaskPolicy::default()
            },
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(BuilderError::HeartbeatIntervalNotBelowTimeout { .. })
        ));
    }

    #[test]
    fn sanitizing_brings_the_interval_below_the_shortest_task_timeout() {
        let config = Config::default().sanitized(Duration::from_millis(60));
        assert_eq!(config.heartbeat_interval, Duration::from_millis(30));
        let untouched = Config::default().sanitized(Duration::from_secs(10));
        assert_eq!(untouched.heartbeat_interval, Duration::from_millis(100));
    }
}
