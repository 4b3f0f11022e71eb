//! `SupervisorBuilder`: the tasks a supervisor starts with and the settings it runs by.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::error::BuilderError;
use crate::policy::auto_shutdown::AutoShutdown;
use crate::policy::shutdown::ShutdownOrder;
use crate::policy::strategy::Strategy;
use crate::policy::window::RestartLimit;
use crate::spec::{TaskPolicy, TaskSpec};
use crate::supervisor::{InitialTask, Supervisor};
use crate::task::SupervisedTask;

/// Builds a [`Supervisor`]: its initial tasks and its settings.
///
/// Every setting has a default chosen for a typical service; the table below lists them.
///
/// | setting | default | why |
/// | --- | --- | --- |
/// | [`with_max_restart_attempts`](Self::with_max_restart_attempts) | 5 | enough to ride out a brief outage, few enough to surface a broken task |
/// | [`with_base_restart_delay`](Self::with_base_restart_delay) | 1 s | long enough not to hammer a failing dependency |
/// | [`with_max_backoff_exponent`](Self::with_max_backoff_exponent) | 5 | delays grow 1, 2, 4, 8, 16, 32 s and stop there |
/// | [`with_restart_jitter`](Self::with_restart_jitter) | 0.1 | tasks that failed together restart up to 10% apart |
/// | [`with_task_being_stable_after`](Self::with_task_being_stable_after) | 60 s | longer than the longest default back-off |
/// | [`with_timeout_threshold`](Self::with_timeout_threshold) | 2 s | twenty missed beats at the default interval |
/// | [`with_heartbeat_interval`](Self::with_heartbeat_interval) | 100 ms | cheap (a beat is one clock read and one compare-and-swap) and well inside the timeout |
/// | [`with_health_check_initial_delay`](Self::with_health_check_initial_delay) | 3 s | start-up work before the first beat |
/// | [`with_health_check_interval`](Self::with_health_check_interval) | 1 ms | Tokio's timer resolution: hangs are caught within a millisecond of the timeout |
/// | [`with_grace_period`](Self::with_grace_period) | 5 s | as Erlang/OTP gives its workers |
/// | [`with_dead_tasks_threshold`](Self::with_dead_tasks_threshold) | none | the supervisor keeps running whatever dies |
/// | [`with_strategy`](Self::with_strategy) | one for one | a failure should not disturb tasks that do not depend on it |
/// | [`with_shutdown_order`](Self::with_shutdown_order) | concurrent | the fastest way down for independent tasks |
/// | [`with_shutdown_timeout`](Self::with_shutdown_timeout) | none | each run's grace period bounds its stop already |
/// | [`with_blocked_poll_threshold`](Self::with_blocked_poll_threshold) | 100 ms | a thousand times what Tokio asks of a poll, far below a heartbeat timeout |
/// | [`with_auto_shutdown`](Self::with_auto_shutdown) | never | a supervisor lives until it is told to stop, as OTP's does |
/// | [`with_restart_intensity`](Self::with_restart_intensity) | none | each task's own limits bound its restarts; a supervisor-wide bound is a choice of the service |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_trait::async_trait;
/// use task_supervisor::{SupervisedTask, SupervisorBuilder, TaskResult};
///
/// #[derive(Clone)]
/// struct Job;
///
/// #[async_trait]
/// impl SupervisedTask for Job {
///     async fn run(&mut self) -> TaskResult {
///         Ok(())
///     }
/// }
///
/// let supervisor = SupervisorBuilder::new()
///     .with_task("job", Job)
///     .with_max_restart_attempts(3)
///     .with_base_restart_delay(Duration::from_millis(200))
///     .build();
/// # drop(supervisor);
/// ```
pub struct SupervisorBuilder {
    tasks: Vec<(String, TaskSpec)>,
    config: Config,
}

impl SupervisorBuilder {
    /// A builder with no tasks and the default settings.
    pub fn new() -> Self {
        Self {
            tasks: Vec::new(),
            config: Config::default(),
        }
    }

    /// Registers `task` under `name`; it starts when the supervisor runs.
    ///
    /// Tasks start in the order they were registered. Registering a name twice is an error
    /// for [`try_build`](Self::try_build); [`build`](Self::build) keeps the last task
    /// registered under that name.
    #[must_use]
    pub fn with_task(self, name: &str, task: impl SupervisedTask + Clone) -> Self {
        self.with_task_spec(name, TaskSpec::new(task))
    }

    /// Registers the task of `spec` under `name`, with the settings of `spec` overriding the
    /// supervisor's for this task; it starts when the supervisor runs, in registration order
    /// with the other tasks.
    ///
    /// The spec is checked by [`try_build`](Self::try_build), as the supervisor's own
    /// settings are; [`build`](Self::build) makes unworkable values workable.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_trait::async_trait;
    /// use task_supervisor::{RestartPolicy, SupervisedTask, SupervisorBuilder, TaskResult, TaskSpec};
    ///
    /// #[derive(Clone)]
    /// struct Migrate;
    ///
    /// #[async_trait]
    /// impl SupervisedTask for Migrate {
    ///     async fn run(&mut self) -> TaskResult {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let supervisor = SupervisorBuilder::new()
    ///     // Runs once: a failed migration is not retried behind the operator's back.
    ///     .with_task_spec("migrate", TaskSpec::new(Migrate).with_restart_policy(RestartPolicy::Temporary))
    ///     .try_build()
    ///     .expect("valid settings");
    /// # drop(supervisor);
    /// ```
    #[must_use]
    pub fn with_task_spec(mut self, name: &str, spec: TaskSpec) -> Self {
        self.tasks.push((name.to_owned(), spec));
        self
    }

    /// How long a run that sends heartbeats may stay silent before it is treated as hung:
    /// stopped, counted as a failure and restarted. Runs that never beat are never hung.
    #[must_use]
    pub fn with_timeout_threshold(mut self, threshold: Duration) -> Self {
        self.config.task.timeout_threshold = threshold;
        self
    }

    /// The beat period tasks are asked to keep, as read by
    /// [`TaskContext::heartbeat_interval`](crate::TaskContext::heartbeat_interval). It must be
    /// shorter than the timeout threshold.
    #[must_use]
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval;
        self
    }

    /// The start-up grace of a task that declared heartbeats: each run must send its first
    /// beat within this delay plus the timeout threshold.
    #[must_use]
    pub fn with_health_check_initial_delay(mut self, delay: Duration) -> Self {
        self.config.health_check_initial_delay = delay;
        self
    }

    /// The granularity of hang detection: heartbeat deadlines are rounded up to a multiple of
    /// this interval so that deadlines close together are checked in one wake-up. A hung run
    /// is caught within this interval after its timeout. There is no periodic scan: the
    /// supervisor only wakes when a deadline falls due.
    #[must_use]
    pub fn with_health_check_interval(mut self, interval: Duration) -> Self {
        self.config.health_check_interval = interval;
        self
    }

    /// How many times a failing task is restarted before it is marked dead. Zero means the
    /// first failure is final.
    #[must_use]
    pub fn with_max_restart_attempts(mut self, attempts: u32) -> Self {
        self.config.task.max_restart_attempts = Some(attempts);
        self
    }

    /// Restarts failing tasks forever; they are never marked dead for failing.
    #[must_use]
    pub fn with_unlimited_restarts(mut self) -> Self {
        self.config.task.max_restart_attempts = None;
        self
    }

    /// The delay before the first restart; each later restart doubles it. Zero restarts a
    /// failed task at once, without going through the timer; a run that fails before it ever
    /// proved alive (its first poll, or its first heartbeat) is then followed by the next run
    /// in the same Tokio task, without a spawn, while its statuses are published as usual.
    #[must_use]
    pub fn with_base_restart_delay(mut self, delay: Duration) -> Self {
        self.config.task.base_restart_delay = delay;
        self
    }

    /// How many times the restart delay may double: the longest delay is
    /// `base * 2^max_exponent` (before jitter). Delays saturate instead of overflowing.
    #[must_use]
    pub fn with_max_backoff_exponent(mut self, exponent: u32) -> Self {
        self.config.task.max_backoff_exponent = exponent;
        self
    }

    /// How long a run must stay healthy for the task's restart count to start over.
    #[must_use]
    pub fn with_task_being_stable_after(mut self, duration: Duration) -> Self {
        self.config.task.task_being_stable_after = duration;
        self
    }

    /// Stops the supervisor with [`SupervisorError::TooManyDeadTasks`] once **more** than this
    /// fraction of its tasks (from 0 to 1) has died of failures: with 0.5, one dead task of two
    /// is tolerated, as in the released 0.3 crate. Tasks killed by
    /// [`kill_task`](crate::SupervisorHandle::kill_task) do not count (0.3 counted them: a kill
    /// is an operator's decision, not a failure of the task). `None` turns the check off.
    ///
    /// [`SupervisorError::TooManyDeadTasks`]: crate::SupervisorError::TooManyDeadTasks
    #[must_use]
    pub fn with_dead_tasks_threshold(mut self, threshold: Option<f64>) -> Self {
        self.config.dead_tasks_threshold = threshold;
        self
    }

    /// At most `max_restarts` restarts of all tasks together within any `within`: a restart
    /// that would be one more stops the supervisor instead, every task with it, and
    /// [`wait`](crate::SupervisorHandle::wait) returns
    /// [`SupervisorError::RestartIntensityExceeded`](crate::SupervisorError::RestartIntensityExceeded)
    /// (Erlang/OTP's intensity and period). Off by default, so that a supervisor restarts its
    /// tasks as long as their own limits allow.
    ///
    /// It counts every restart the supervisor decides by itself: after a failure, and after
    /// `Ok(())` for a [`Permanent`](crate::RestartPolicy::Permanent) task; a group restart
    /// counts once, for the task that failed. Restarts asked for with
    /// [`restart`](crate::SupervisorHandle::restart) do not count.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use task_supervisor::SupervisorBuilder;
    ///
    /// // As OTP's default would be too strict for tasks with back-off: 10 restarts a minute.
    /// let supervisor = SupervisorBuilder::new()
    ///     .with_restart_intensity(10, Duration::from_secs(60))
    ///     .try_build()
    ///     .expect("valid settings");
    /// # drop(supervisor);
    /// ```
    #[must_use]
    pub fn with_restart_intensity(mut self, max_restarts: u32, within: Duration) -> Self {
        self.config.intensity = Some(RestartLimit {
            max_restarts,
            within,
        });
        self
    }

    /// Which tasks are restarted when one fails: [`Strategy::OneForOne`] (the default),
    /// [`OneForAll`](Strategy::OneForAll) or [`RestForOne`](Strategy::RestForOne). The rules of
    /// a group restart are on [`Strategy`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_trait::async_trait;
    /// use task_supervisor::{Strategy, SupervisedTask, SupervisorBuilder, TaskResult};
    ///
    /// #[derive(Clone)]
    /// struct Listener;
    /// #[derive(Clone)]
    /// struct Worker;
    ///
    /// #[async_trait]
    /// impl SupervisedTask for Listener {
    ///     async fn run(&mut self) -> TaskResult {
    ///         std::future::pending().await
    ///     }
    /// }
    /// #[async_trait]
    /// impl SupervisedTask for Worker {
    ///     async fn run(&mut self) -> TaskResult {
    ///         std::future::pending().await
    ///     }
    /// }
    ///
    /// // The workers use the listener's socket: if it fails, they start over with it.
    /// let supervisor = SupervisorBuilder::new()
    ///     .with_strategy(Strategy::RestForOne)
    ///     .with_task("listener", Listener)
    ///     .with_task("worker-1", Worker)
    ///     .with_task("worker-2", Worker)
    ///     .build();
    /// # drop(supervisor);
    /// ```
    #[must_use]
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.config.strategy = strategy;
        self
    }

    /// In what order the supervisor stops its tasks when it ends:
    /// [`ShutdownOrder::Concurrent`] (the default: every run is asked at once) or
    /// [`ShutdownOrder::Reverse`] (one at a time, the last started first, each once every task
    /// started after it has ended).
    #[must_use]
    pub fn with_shutdown_order(mut self, order: ShutdownOrder) -> Self {
        self.config.shutdown_order = order;
        self
    }

    /// The longest the supervisor's end may take: once `bound` has passed since it began to
    /// stop, every run still alive is dropped at once, whatever its grace period. None by
    /// default: each run gets its whole grace period, which bounds a concurrent shutdown
    /// already (by the longest grace), while a reverse one may take the sum of them.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use task_supervisor::{ShutdownOrder, SupervisorBuilder};
    ///
    /// // Stop in reverse order, but never take longer than systemd's 90 s default.
    /// let supervisor = SupervisorBuilder::new()
    ///     .with_shutdown_order(ShutdownOrder::Reverse)
    ///     .with_shutdown_timeout(Duration::from_secs(80))
    ///     .build();
    /// # drop(supervisor);
    /// ```
    #[must_use]
    pub fn with_shutdown_timeout(mut self, bound: Duration) -> Self {
        self.config.shutdown_timeout = Some(bound);
        self
    }

    /// From what length a single poll of a task, one that holds its worker thread without
    /// yielding (a synchronous sleep, a CPU loop, a `std` mutex held too long), is reported
    /// while it blocks: as an [`EventKind::Blocked`](crate::EventKind::Blocked) event, a
    /// warning through `tracing`, the task's [`TaskInfo::blocked_for`](crate::TaskInfo), and a
    /// metric; then as `Unblocked` once the poll returns. Such a poll cannot be interrupted,
    /// by this crate or any other: it is reported so that someone can find it.
    ///
    /// The default, 100 ms, is a thousand times what Tokio asks of a task between two awaits
    /// (10 to 100 us), so no well-behaved poll comes near it, and still far below a heartbeat
    /// timeout. A watcher on an OS thread of its own (one for every supervisor of the process)
    /// samples each thread that polls a supervised run every quarter of the threshold while
    /// the threads are busy, so a block is seen between the threshold and a quarter more; while
    /// every thread is idle it samples less often, down to once a threshold, so that an idle
    /// process is not woken forty times a second (a block that starts after a second of
    /// idleness is seen within 2.25 thresholds). The poll itself pays a
    /// thread-local lookup and three stores. Turn it off with
    /// [`without_blocked_poll_detection`](Self::without_blocked_poll_detection).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use task_supervisor::SupervisorBuilder;
    ///
    /// // A latency-sensitive service: report any poll longer than 20 ms.
    /// let supervisor = SupervisorBuilder::new()
    ///     .with_blocked_poll_threshold(Duration::from_millis(20))
    ///     .build();
    /// # drop(supervisor);
    /// ```
    #[must_use]
    pub fn with_blocked_poll_threshold(mut self, threshold: Duration) -> Self {
        self.config.blocked_poll_threshold = Some(threshold);
        self
    }

    /// Turns blocked-poll detection off: polls are not marked, and no watcher thread runs for
    /// this supervisor.
    #[must_use]
    pub fn without_blocked_poll_detection(mut self) -> Self {
        self.config.blocked_poll_threshold = None;
        self
    }

    /// Whether the supervisor stops by itself once its significant tasks (see
    /// [`TaskSpec::significant`](crate::TaskSpec::significant)) have ended for good:
    /// [`AutoShutdown::Never`] (the default: it lives until told to stop),
    /// [`AnySignificant`](AutoShutdown::AnySignificant) or
    /// [`AllSignificant`](AutoShutdown::AllSignificant). The rule is on [`AutoShutdown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_trait::async_trait;
    /// use task_supervisor::{AutoShutdown, SupervisedTask, SupervisorBuilder, TaskResult, TaskSpec};
    ///
    /// #[derive(Clone)]
    /// struct Import;
    ///
    /// #[async_trait]
    /// impl SupervisedTask for Import {
    ///     async fn run(&mut self) -> TaskResult {
    ///         Ok(()) // imports everything, then is done
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let handle = SupervisorBuilder::new()
    ///     .with_auto_shutdown(AutoShutdown::AllSignificant)
    ///     .with_task_spec("import", TaskSpec::new(Import).significant())
    ///     .build()
    ///     .run();
    /// // The import completes, so the supervisor stops by itself.
    /// assert_eq!(handle.wait().await, Ok(()));
    /// # }
    /// ```
    #[must_use]
    pub fn with_auto_shutdown(mut self, setting: AutoShutdown) -> Self {
        self.config.auto_shutdown = setting;
        self
    }

    /// How long a run that asked for its cancellation token has to return after it was asked
    /// to stop (by `restart`, `kill_task`, `shutdown` or a hang) before it is dropped.
    #[must_use]
    pub fn with_grace_period(mut self, grace: Duration) -> Self {
        self.config.task.grace_period = grace;
        self
    }

    /// Lengthens each restart delay by a random share of up to `fraction` of itself (0 to 1),
    /// so tasks that failed together do not restart together. Zero turns jitter off.
    #[must_use]
    pub fn with_restart_jitter(mut self, fraction: f64) -> Self {
        self.config.task.restart_jitter = fraction;
        self
    }

    /// Seeds the jitter so that restart delays are the same from one run of the program to
    /// the next.
    #[must_use]
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.config.jitter_seed = Some(seed);
        self
    }

    /// Builds the supervisor, making unworkable settings workable instead of failing.
    ///
    /// A dead tasks threshold that is not a number turns the check off and one outside 0..=1 is
    /// clamped; a zero timeout or heartbeat interval becomes one millisecond; a heartbeat
    /// interval not shorter than every task's timeout becomes half the shortest; a jitter
    /// outside 0..=1 becomes none; a restart limit over no time at all is dropped; a name
    /// registered twice keeps its last task. The same holds for each task's spec. Use
    /// [`try_build`](Self::try_build) to have such settings reported instead.
    pub fn build(self) -> Supervisor {
        let mut by_name: HashMap<String, usize> = HashMap::with_capacity(self.tasks.len());
        let mut specs: Vec<(Arc<str>, TaskSpec)> = Vec::with_capacity(self.tasks.len());
        for (name, spec) in self.tasks {
            match by_name.get(&name) {
                Some(&index) => {
                    let replaced = std::mem::replace(&mut specs[index].1, spec);
                    crate::unwind::drop_guarded(replaced);
                }
                None => {
                    by_name.insert(name.clone(), specs.len());
                    specs.push((Arc::from(name), spec));
                }
            }
        }
        let policies: Vec<Option<TaskPolicy>> = specs
            .iter()
            .map(|(_, spec)| {
                let overrides = &spec.overrides;
                (!overrides.is_empty()).then(|| self.config.task.with(overrides).sanitized())
            })
            .collect();
        let shortest_timeout = policies
            .iter()
            .flatten()
            .map(|policy| policy.timeout_threshold)
            .min()
            .unwrap_or(Duration::MAX);
        let config = self.config.sanitized(shortest_timeout);
        let default_policy = Arc::new(config.default_policy());
        let tasks: Vec<InitialTask> = specs
            .into_iter()
            .zip(policies)
            .map(|((name, spec), policy)| {
                let policy = match policy {
                    Some(policy) => {
                        Arc::new(policy.for_supervisor(config.allows_restart_in_place()))
                    }
                    None => Arc::clone(&default_policy),
                };
                (name, spec.task, policy)
            })
            .collect();
        Supervisor::new(config, default_policy, tasks)
    }

    /// Builds the supervisor, or says which setting cannot work.
    ///
    /// # Errors
    ///
    /// [`BuilderError`] when a name was registered twice, the dead tasks threshold or the
    /// jitter is not a fraction between 0 and 1, the timeout or the heartbeat interval is
    /// zero, the heartbeat interval is not shorter than the timeout, or a restart limit is
    /// over no time at all; [`BuilderError::InvalidTaskSpec`] when a task's spec has such a
    /// setting, with the task's name.
    pub fn try_build(self) -> Result<Supervisor, BuilderError> {
        let mut seen = std::collections::HashSet::with_capacity(self.tasks.len());
        let duplicate = self
            .tasks
            .iter()
            .find(|(name, _)| !seen.insert(name.as_str()))
            .map(|(name, _)| name.clone());
        let invalid_spec = || {
            self.tasks.iter().find_map(|(name, spec)| {
                let policy = self.config.task.with(&spec.overrides);
                let reason = policy.validate(self.config.heartbeat_interval).err()?;
                Some(BuilderError::InvalidTaskSpec {
                    name: name.clone(),
                    reason: Box::new(reason),
                })
            })
        };
        let refused = match (self.config.validate(), duplicate) {
            (Err(error), _) => error,
            (Ok(()), Some(name)) => BuilderError::DuplicateTaskName { name },
            (Ok(()), None) => match invalid_spec() {
                Some(error) => error,
                None => return Ok(self.build()),
            },
        };
        // The tasks are dropped here, where a panicking `Drop` cannot unwind into the caller.
        for (_, spec) in self.tasks {
            crate::unwind::drop_guarded(spec);
        }
        Err(refused)
    }
}

impl Default for SupervisorBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field(
                "tasks",
                &self.tasks.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .finish()
    }
}
