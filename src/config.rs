//! The supervisor's settings, their defaults and the checks that keep them workable.

use std::time::Duration;

use crate::error::BuilderError;

/// Settings that apply to every task of one supervisor.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// How long a watched run may stay silent before it is hung.
    pub(crate) timeout_threshold: Duration,
    /// The beat period tasks are told to keep.
    pub(crate) heartbeat_interval: Duration,
    /// Extra time a run that declared heartbeats has for its first beat.
    pub(crate) health_check_initial_delay: Duration,
    /// Heartbeat deadlines are rounded up to a multiple of this, so that deadlines close to
    /// each other are checked in one wake-up.
    pub(crate) health_check_interval: Duration,
    /// Restarts allowed after failures before the task is dead; `None` for no limit.
    pub(crate) max_restart_attempts: Option<u32>,
    /// The delay before the first restart.
    pub(crate) base_restart_delay: Duration,
    /// The delay doubles at most this many times.
    pub(crate) max_backoff_exponent: u32,
    /// A run healthy this long resets the task's restart count.
    pub(crate) task_being_stable_after: Duration,
    /// The share of dead tasks at which the supervisor gives up.
    pub(crate) dead_tasks_threshold: Option<f64>,
    /// How long a cooperative run has to return after it is asked to stop.
    pub(crate) grace_period: Duration,
    /// Each back-off is lengthened by up to this fraction of itself.
    pub(crate) restart_jitter: f64,
    /// Seed for the jitter, for reproducible delays.
    pub(crate) jitter_seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            timeout_threshold: Duration::from_secs(2),
            heartbeat_interval: Duration::from_millis(100),
            health_check_initial_delay: Duration::from_secs(3),
            health_check_interval: Duration::from_millis(1),
            max_restart_attempts: Some(5),
            base_restart_delay: Duration::from_secs(1),
            max_backoff_exponent: 5,
            task_being_stable_after: Duration::from_secs(60),
            dead_tasks_threshold: None,
            grace_period: Duration::from_secs(5),
            restart_jitter: 0.1,
            jitter_seed: None,
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
        if self.timeout_threshold.is_zero() {
            return Err(BuilderError::ZeroTimeoutThreshold);
        }
        if self.heartbeat_interval.is_zero() {
            return Err(BuilderError::ZeroHeartbeatInterval);
        }
        if self.heartbeat_interval >= self.timeout_threshold {
            return Err(BuilderError::HeartbeatIntervalNotBelowTimeout {
                interval: self.heartbeat_interval,
                timeout: self.timeout_threshold,
            });
        }
        if !(0.0..=1.0).contains(&self.restart_jitter) {
            return Err(BuilderError::InvalidRestartJitter {
                value: self.restart_jitter,
            });
        }
        Ok(())
    }

    /// Makes unworkable settings workable, for the infallible `build`: a threshold that is not
    /// a number turns the check off, one outside `0..=1` is clamped; zero durations that would
    /// spin become one millisecond; a heartbeat interval not below the timeout becomes half the
    /// timeout; a jitter that is not a fraction becomes none.
    pub(crate) fn sanitized(mut self) -> Self {
        self.dead_tasks_threshold = self
            .dead_tasks_threshold
            .filter(|value| !value.is_nan())
            .map(|value| value.clamp(0.0, 1.0));
        let millisecond = Duration::from_millis(1);
        self.timeout_threshold = self.timeout_threshold.max(millisecond);
        self.heartbeat_interval = self.heartbeat_interval.max(millisecond);
        if self.heartbeat_interval >= self.timeout_threshold {
            // A task beating at the interval it is told must not be hung between two beats.
            self.heartbeat_interval = self.timeout_threshold / 2;
        }
        if !(0.0..=1.0).contains(&self.restart_jitter) {
            self.restart_jitter = 0.0;
        }
        self
    }

    /// The coalescing granularity of heartbeat deadlines, in whole milliseconds (at least 1).
    pub(crate) fn heartbeat_granularity_millis(&self) -> u64 {
        u64::try_from(self.health_check_interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether a task that has used `attempts` restarts may have another.
    pub(crate) fn may_restart(&self, attempts: u32) -> bool {
        may_restart(self.max_restart_attempts, attempts)
    }
}

/// Whether a task that has used `attempts` restarts may have another under `limit` (`None`: no
/// limit). The loop and a driver restarting in place both decide by this.
pub(crate) fn may_restart(limit: Option<u32>, attempts: u32) -> bool {
    limit.map_or(true, |limit| attempts < limit)
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
            timeout_threshold: Duration::ZERO,
            heartbeat_interval: Duration::ZERO,
            restart_jitter: -3.0,
            ..Config::default()
        }
        .sanitized();
        assert_eq!(config.dead_tasks_threshold, None);
        assert_eq!(config.timeout_threshold, Duration::from_millis(1));
        assert_eq!(config.restart_jitter, 0.0);
        let clamped = Config {
            dead_tasks_threshold: Some(7.0),
            ..Config::default()
        }
        .sanitized();
        assert_eq!(clamped.dead_tasks_threshold, Some(1.0));
    }

    #[test]
    fn the_interval_must_be_below_the_timeout() {
        let config = Config {
            heartbeat_interval: Duration::from_secs(2),
            timeout_threshold: Duration::from_secs(2),
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(BuilderError::HeartbeatIntervalNotBelowTimeout { .. })
        ));
    }

    #[test]
    fn restart_limit_counts_restarts() {
        let config = Config {
            max_restart_attempts: Some(2),
            ..Config::default()
        };
        assert!(config.may_restart(0));
        assert!(config.may_restart(1));
        assert!(!config.may_restart(2));
        let unlimited = Config {
            max_restart_attempts: None,
            ..Config::default()
        };
        assert!(unlimited.may_restart(u32::MAX));
    }
}
