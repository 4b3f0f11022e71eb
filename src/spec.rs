//! What one task is registered with: the task, its restart policy, and the settings it takes
//! from the supervisor unless it says otherwise.
//!
//! A [`TaskSpec`] holds the overrides a user chose; when the task is registered they are laid
//! over the supervisor's settings into a [`TaskPolicy`], which the loop and the task's driver
//! read from then on. Tasks registered without a spec share the supervisor's own policy, so a
//! plain task costs one pointer for all of this.

use std::fmt;
use std::time::Duration;

use crate::error::BuilderError;
use crate::policy::window::RestartLimit;
use crate::task::{SupervisedTask, TaskTemplate};

/// When a task is started again after a run of it ends by itself (Erlang/OTP's restart types).
///
/// Whatever the policy, a run stopped by the supervisor (a `kill_task`, a `restart`, a
/// shutdown, a group restart) is not "ended by itself", and a [`restart`] always starts a
/// fresh run.
///
/// | policy | after `Ok(())` | after an error, a panic or a hang |
/// | --- | --- | --- |
/// | `Permanent` | restarted after the base delay | restarted after the back-off |
/// | `Transient` (default) | `Completed`, left alone | restarted after the back-off |
/// | `Temporary` | `Completed`, left alone | `Dead`, left alone |
///
/// A task restarted after `Ok(())` has done its work, so its restart count starts over and the
/// delay is the base delay, without doubling; the restart still counts against the task's
/// restart limit and the supervisor's restart intensity, as in OTP.
///
/// [`restart`]: crate::SupervisorHandle::restart
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartPolicy {
    /// Always restarted: after `Ok(())` too (OTP's `permanent`). For services that must run
    /// for as long as the supervisor does.
    Permanent,
    /// Restarted after a failure only (OTP's `transient`); the default, and what every task
    /// did before policies existed.
    #[default]
    Transient,
    /// Never restarted by the supervisor (OTP's `temporary`): a run that fails leaves the task
    /// `Dead`, one that returns `Ok(())` leaves it `Completed`. Its status and last failure
    /// stay readable; only [`restart`](crate::SupervisorHandle::restart) runs it again.
    Temporary,
}

/// A task and the settings it is registered with: its [`RestartPolicy`], and any of the
/// supervisor's settings it overrides for itself.
///
/// Register it with [`SupervisorBuilder::with_task_spec`] or
/// [`SupervisorHandle::add_task_spec`]. Every setting left unset is the supervisor's; the
/// setters are named as the builder's, and mean the same for this one task. A spec is checked
/// when it is registered, as the builder's settings are by `try_build`.
///
/// [`SupervisorBuilder::with_task_spec`]: crate::SupervisorBuilder::with_task_spec
/// [`SupervisorHandle::add_task_spec`]: crate::SupervisorHandle::add_task_spec
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_trait::async_trait;
/// use task_supervisor::{RestartPolicy, SupervisedTask, SupervisorBuilder, TaskResult, TaskSpec};
///
/// #[derive(Clone)]
/// struct Cleanup;
///
/// #[async_trait]
/// impl SupervisedTask for Cleanup {
///     async fn run(&mut self) -> TaskResult {
///         Ok(()) // sweeps, then returns; the policy brings it back
///     }
/// }
///
/// let supervisor = SupervisorBuilder::new()
///     .with_task_spec(
///         "cleanup",
///         TaskSpec::new(Cleanup)
///             .with_restart_policy(RestartPolicy::Permanent)
///             .with_base_restart_delay(Duration::from_secs(60)) // so: every minute
///             .with_unlimited_restarts(),
///     )
///     .try_build()
///     .expect("valid settings");
/// # drop(supervisor);
/// ```
pub struct TaskSpec {
    pub(crate) task: Box<dyn TaskTemplate>,
    pub(crate) overrides: Overrides,
}

/// The settings a spec sets for its task; `None` takes the supervisor's.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    restart: Option<RestartPolicy>,
    base_restart_delay: Option<Duration>,
    max_backoff_exponent: Option<u32>,
    restart_jitter: Option<f64>,
    max_restart_attempts: Option<Option<u32>>,
    restart_limit: Option<RestartLimit>,
    task_being_stable_after: Option<Duration>,
    timeout_threshold: Option<Duration>,
    grace_period: Option<Duration>,
    significant: bool,
    counts_for_readiness: Option<bool>,
}

impl Overrides {
    /// Whether nothing is overridden: the task takes the supervisor's policy as it is.
    pub(crate) fn is_empty(&self) -> bool {
        let Self {
            restart,
            base_restart_delay,
            max_backoff_exponent,
            restart_jitter,
            max_restart_attempts,
            restart_limit,
            task_being_stable_after,
            timeout_threshold,
            grace_period,
            significant,
            counts_for_readiness,
        } = self;
        restart.is_none()
            && base_restart_delay.is_none()
            && max_backoff_exponent.is_none()
            && restart_jitter.is_none()
            && max_restart_attempts.is_none()
            && restart_limit.is_none()
            && task_being_stable_after.is_none()
            && timeout_threshold.is_none()
            && grace_period.is_none()
            && !significant
            && counts_for_readiness.is_none()
    }
}

impl TaskSpec {
    /// A spec for `task` with every setting taken from the supervisor.
    pub fn new(task: impl SupervisedTask + Clone) -> Self {
        Self {
            task: task.__into_template().0,
            overrides: Overrides::default(),
        }
    }

    /// When the task is started again after a run ends by itself; see [`RestartPolicy`].
    #[must_use]
    pub fn with_restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.overrides.restart = Some(policy);
        self
    }

    /// The delay before this task's first restart; each later one doubles it. See
    /// [`SupervisorBuilder::with_base_restart_delay`](crate::SupervisorBuilder::with_base_restart_delay).
    #[must_use]
    pub fn with_base_restart_delay(mut self, delay: Duration) -> Self {
        self.overrides.base_restart_delay = Some(delay);
        self
    }

    /// How many times this task's restart delay may double. See
    /// [`SupervisorBuilder::with_max_backoff_exponent`](crate::SupervisorBuilder::with_max_backoff_exponent).
    #[must_use]
    pub fn with_max_backoff_exponent(mut self, exponent: u32) -> Self {
        self.overrides.max_backoff_exponent = Some(exponent);
        self
    }

    /// The share (0 to 1) by which this task's restart delays are randomly lengthened. See
    /// [`SupervisorBuilder::with_restart_jitter`](crate::SupervisorBuilder::with_restart_jitter).
    #[must_use]
    pub fn with_restart_jitter(mut self, fraction: f64) -> Self {
        self.overrides.restart_jitter = Some(fraction);
        self
    }

    /// How many times this task is restarted after failures before it is dead. See
    /// [`SupervisorBuilder::with_max_restart_attempts`](crate::SupervisorBuilder::with_max_restart_attempts).
    #[must_use]
    pub fn with_max_restart_attempts(mut self, attempts: u32) -> Self {
        self.overrides.max_restart_attempts = Some(Some(attempts));
        self
    }

    /// Restarts this task after failures forever, whatever the supervisor's limit.
    #[must_use]
    pub fn with_unlimited_restarts(mut self) -> Self {
        self.overrides.max_restart_attempts = Some(None);
        self
    }

    /// At most `max_restarts` restarts of this task within any `within`: a restart that would
    /// be one more leaves the task `Dead` instead (the restart limit of `task-supervisor` 0.5).
    ///
    /// It counts every restart the supervisor makes of the task by itself, after a failure or
    /// (for a [`Permanent`](RestartPolicy::Permanent) task) after `Ok(())`, not those asked
    /// for with [`restart`](crate::SupervisorHandle::restart). It applies beside the attempt
    /// limit: whichever is reached first makes the task dead. Zero restarts means the first
    /// failure is final. Off unless set.
    #[must_use]
    pub fn with_restart_limit(mut self, max_restarts: u32, within: Duration) -> Self {
        self.overrides.restart_limit = Some(RestartLimit {
            max_restarts,
            within,
        });
        self
    }

    /// How long a run of this task must stay healthy for its restart count to start over.
    #[must_use]
    pub fn with_task_being_stable_after(mut self, duration: Duration) -> Self {
        self.overrides.task_being_stable_after = Some(duration);
        self
    }

    /// How long a run of this task that sends heartbeats may stay silent before it is hung.
    /// It must be longer than the supervisor's heartbeat interval.
    #[must_use]
    pub fn with_timeout_threshold(mut self, threshold: Duration) -> Self {
        self.overrides.timeout_threshold = Some(threshold);
        self
    }

    /// How long a run of this task that asked for its cancellation token has to return after
    /// it was asked to stop, before it is dropped.
    #[must_use]
    pub fn with_grace_period(mut self, grace: Duration) -> Self {
        self.overrides.grace_period = Some(grace);
        self
    }

    /// Marks the task significant: with
    /// [`SupervisorBuilder::with_auto_shutdown`](crate::SupervisorBuilder::with_auto_shutdown),
    /// its end for good (it completed and will not be restarted, or it died of failures) can
    /// stop the whole supervisor. A kill is not such an end.
    #[must_use]
    pub fn significant(mut self) -> Self {
        self.overrides.significant = true;
        self
    }

    /// Whether the supervisor counts as ready only while this task is healthy (`true`, the
    /// default for every task) or whatever its state (`false`: a background job the service
    /// can answer without). It decides [`Health::is_ready`](crate::Health::is_ready), and so
    /// the `/readyz` endpoint and systemd's `READY=1`.
    ///
    /// # Examples
    ///
    /// ```
    /// use task_supervisor::{task_fn, SupervisorBuilder, TaskSpec};
    ///
    /// let reindex = task_fn(|| async { Ok(()) });
    /// let supervisor = SupervisorBuilder::new()
    ///     .with_task_spec("reindex", TaskSpec::new(reindex).with_readiness(false))
    ///     .try_build()
    ///     .expect("valid settings");
    /// # drop(supervisor);
    /// ```
    #[must_use]
    pub fn with_readiness(mut self, counts: bool) -> Self {
        self.overrides.counts_for_readiness = Some(counts);
        self
    }
}

impl<T: SupervisedTask + Clone> From<T> for TaskSpec {
    /// A spec with every setting taken from the supervisor, as [`TaskSpec::new`].
    fn from(task: T) -> Self {
        Self::new(task)
    }
}

impl fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSpec")
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

/// Everything one task's runs are decided by: the supervisor's settings with the task's own
/// laid over them. Shared, unchanged, by the loop and the task's driver.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskPolicy {
    pub(crate) restart: RestartPolicy,
    pub(crate) base_restart_delay: Duration,
    pub(crate) max_backoff_exponent: u32,
    pub(crate) restart_jitter: f64,
    /// Restarts allowed after failures before the task is dead; `None` for no limit.
    pub(crate) max_restart_attempts: Option<u32>,
    pub(crate) restart_limit: Option<RestartLimit>,
    pub(crate) task_being_stable_after: Duration,
    pub(crate) timeout_threshold: Duration,
    pub(crate) grace_period: Duration,
    pub(crate) significant: bool,
    /// Whether the supervisor is ready only while this task is healthy (see
    /// [`SupervisorHandle::health`](crate::SupervisorHandle::health)).
    pub(crate) counts_for_readiness: bool,
    /// Whether a run that fails before it proved alive may be followed by the next in its own
    /// driver, without the loop: the back-off is zero, and no rule needs the loop's view of
    /// the failure first (a restart limit, a supervisor-wide intensity or group strategy).
    /// Set when the policy is made for a supervisor (see [`TaskPolicy::for_supervisor`]).
    pub(crate) restart_in_place: bool,
}

impl Default for TaskPolicy {
    fn default() -> Self {
        Self {
            restart: RestartPolicy::Transient,
            base_restart_delay: Duration::from_secs(1),
            max_backoff_exponent: 5,
            restart_jitter: 0.1,
            max_restart_attempts: Some(5),
            restart_limit: None,
            task_being_stable_after: Duration::from_secs(60),
            timeout_threshold: Duration::from_secs(2),
            grace_period: Duration::from_secs(5),
            significant: false,
            counts_for_readiness: true,
            restart_in_place: false,
        }
    }
}

impl TaskPolicy {
    /// This policy with `overrides` laid over it.
    pub(crate) fn with(&self, overrides: &Overrides) -> Self {
        let Overrides {
            restart,
            base_restart_delay,
            max_backoff_exponent,
            restart_jitter,
            max_restart_attempts,
            restart_limit,
            task_being_stable_after,
            timeout_threshold,
            grace_period,
            significant,
            counts_for_readiness,
        } = overrides;
        Self {
            restart: restart.unwrap_or(self.restart),
            base_restart_delay: base_restart_delay.unwrap_or(self.base_restart_delay),
            max_backoff_exponent: max_backoff_exponent.unwrap_or(self.max_backoff_exponent),
            restart_jitter: restart_jitter.unwrap_or(self.restart_jitter),
            max_restart_attempts: max_restart_attempts.unwrap_or(self.max_restart_attempts),
            restart_limit: restart_limit.or(self.restart_limit),
            task_being_stable_after: task_being_stable_after
                .unwrap_or(self.task_being_stable_after),
            timeout_threshold: timeout_threshold.unwrap_or(self.timeout_threshold),
            grace_period: grace_period.unwrap_or(self.grace_period),
            significant: *significant || self.significant,
            counts_for_readiness: counts_for_readiness.unwrap_or(self.counts_for_readiness),
            restart_in_place: self.restart_in_place,
        }
    }

    /// Sets what depends on the supervisor: whether runs may restart in place, given whether
    /// the supervisor's own rules allow it (`supervisor_allows`).
    pub(crate) fn for_supervisor(mut self, supervisor_allows: bool) -> Self {
        self.restart_in_place = supervisor_allows
            && self.base_restart_delay.is_zero()
            && self.restart != RestartPolicy::Temporary
            && self.restart_limit.is_none();
        self
    }

    /// Checks that the task's settings can work, with the supervisor's heartbeat interval.
    pub(crate) fn validate(&self, heartbeat_interval: Duration) -> Result<(), BuilderError> {
        if self.timeout_threshold.is_zero() {
            return Err(BuilderError::ZeroTimeoutThreshold);
        }
        if heartbeat_interval >= self.timeout_threshold {
            return Err(BuilderError::HeartbeatIntervalNotBelowTimeout {
                interval: heartbeat_interval,
                timeout: self.timeout_threshold,
            });
        }
        if !(0.0..=1.0).contains(&self.restart_jitter) {
            return Err(BuilderError::InvalidRestartJitter {
                value: self.restart_jitter,
            });
        }
        if let Some(limit) = self.restart_limit {
            if limit.within.is_zero() {
                return Err(BuilderError::ZeroRestartWindow);
            }
        }
        Ok(())
    }

    /// Makes unworkable settings workable, for the infallible `build`: a zero timeout becomes
    /// one millisecond, a jitter that is not a fraction becomes none, a restart limit over no
    /// time at all is dropped. (A timeout not above the heartbeat interval is made workable
    /// by lowering the interval; see `Config::sanitized`.)
    pub(crate) fn sanitized(mut self) -> Self {
        self.timeout_threshold = self.timeout_threshold.max(Duration::from_millis(1));
        if !(0.0..=1.0).contains(&self.restart_jitter) {
            self.restart_jitter = 0.0;
        }
        if self
            .restart_limit
            .is_some_and(|limit| limit.within.is_zero())
        {
            self.restart_limit = None;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_overrides_keep_the_supervisors_settings() {
        let supervisor = TaskPolicy {
            grace_period: Duration::from_secs(9),
            ..TaskPolicy::default()
        };
        assert_eq!(supervisor.with(&Overrides::default()), supervisor);
    }

    #[test]
    fn set_overrides_win() {
        let overrides = Overrides {
            restart: Some(RestartPolicy::Permanent),
            max_restart_attempts: Some(None),
            grace_period: Some(Duration::ZERO),
            significant: true,
            ..Overrides::default()
        };
        let policy = TaskPolicy::default().with(&overrides);
        assert_eq!(policy.restart, RestartPolicy::Permanent);
        assert_eq!(
            policy.max_restart_attempts, None,
            "unlimited overrides a limit"
        );
        assert_eq!(policy.grace_period, Duration::ZERO);
        assert!(policy.significant);
        assert_eq!(policy.base_restart_delay, Duration::from_secs(1));
    }

    #[test]
    fn restarts_in_place_only_when_nothing_needs_the_loop_first() {
        let zero = TaskPolicy {
            base_restart_delay: Duration::ZERO,
            ..TaskPolicy::default()
        };
        assert!(zero.clone().for_supervisor(true).restart_in_place);
        assert!(!zero.clone().for_supervisor(false).restart_in_place);
        let limited = TaskPolicy {
            restart_limit: Some(RestartLimit {
                max_restarts: 3,
                within: Duration::from_secs(1),
            }),
            ..zero.clone()
        };
        assert!(!limited.for_supervisor(true).restart_in_place);
        let temporary = TaskPolicy {
            restart: RestartPolicy::Temporary,
            ..zero
        };
        assert!(!temporary.for_supervisor(true).restart_in_place);
        assert!(!TaskPolicy::default().for_supervisor(true).restart_in_place);
    }

    #[test]
    fn a_task_timeout_must_be_above_the_heartbeat_interval() {
        let policy = TaskPolicy {
            timeout_threshold: Duration::from_millis(100),
            ..TaskPolicy::default()
        };
        assert_eq!(policy.validate(Duration::from_millis(99)), Ok(()));
        assert_eq!(
            policy.validate(Duration::from_millis(100)),
            Err(BuilderError::HeartbeatIntervalNotBelowTimeout {
                interval: Duration::from_millis(100),
                timeout: Duration::from_millis(100),
            })
        );
    }

    #[test]
    fn a_restart_limit_over_no_time_is_refused_or_dropped() {
        let policy = TaskPolicy {
            restart_limit: Some(RestartLimit {
                max_restarts: 3,
                within: Duration::ZERO,
            }),
            ..TaskPolicy::default()
        };
        assert_eq!(
            policy.validate(Duration::from_millis(1)),
            Err(BuilderError::ZeroRestartWindow)
        );
        assert_eq!(policy.sanitized().restart_limit, None);
    }
}
