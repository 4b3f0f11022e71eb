//! Lifecycle events: what happened to which task, and to the supervisor, as it happened.
//!
//! The loop reports each event once, in [`EventLoop::report`](crate::event_loop): that one
//! call logs it through `tracing` at its level, counts it in the metrics (with the `metrics`
//! feature), and publishes it to subscribers of
//! [`SupervisorHandle::events`](crate::SupervisorHandle::events), if there are any.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::SupervisorError;
use crate::policy::strategy::Strategy;

/// One thing that happened to a task or to the supervisor, as
/// [`SupervisorHandle::events`](crate::SupervisorHandle::events) publishes it.
///
/// # Examples
///
/// ```
/// use task_supervisor::{task_fn, EventKind, SupervisorBuilder};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let handle = SupervisorBuilder::new().build().run();
/// let mut events = handle.events();
/// handle.add_task("once", task_fn(|| async { Ok(()) })).unwrap();
///
/// let started = events.recv().await.unwrap();
/// assert_eq!(started.task.as_deref(), Some("once"));
/// assert_eq!(started.kind, EventKind::Started);
/// assert_eq!(events.recv().await.unwrap().kind, EventKind::Completed);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The task it happened to; `None` for the supervisor's own events.
    pub task: Option<Arc<str>>,
    /// The task's restart count when it happened: 0 for a run that started afresh, `n` for
    /// its `n`th restart since the count was last cleared (by a stable run, a completion, or
    /// a manual restart). 0 for the supervisor's own events.
    pub attempt: u32,
    /// When it happened, on Tokio's clock.
    pub at: Instant,
    /// What happened.
    pub kind: EventKind,
}

/// What an [`Event`] says happened.
///
/// New kinds may be added, so a `match` needs a catch-all arm.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// A run started (the task is `Starting`).
    Started,
    /// The run proved alive: its first poll, or its first heartbeat (`Healthy`).
    Healthy,
    /// The run sent no heartbeat for `timeout`: it is hung, and is stopped.
    HeartbeatMissed {
        /// The heartbeat timeout it missed.
        timeout: Duration,
    },
    /// The run returned an error.
    Failed {
        /// The error, with its whole cause chain.
        reason: Arc<str>,
    },
    /// The run panicked.
    Panicked {
        /// The panic's message.
        message: Arc<str>,
    },
    /// The task will be started again after `delay`: its back-off, or the base delay after a
    /// permanent task completed. A group restart waits for its members too.
    RestartScheduled {
        /// How long until the restart.
        delay: Duration,
    },
    /// The run returned `Ok(())`.
    Completed,
    /// The task was killed with [`kill_task`](crate::SupervisorHandle::kill_task).
    Killed,
    /// The task is dead by the supervisor's rules: out of attempts, over its restart limit,
    /// or a failed temporary task.
    Dead {
        /// Why: its last failure, or the limit it reached.
        reason: Arc<str>,
    },
    /// A poll of the task has held its worker thread for `blocked_for` so far, more than the
    /// supervisor's blocked-poll threshold: reported while it blocks.
    Blocked {
        /// How long the poll has blocked so far.
        blocked_for: Duration,
    },
    /// A poll reported as blocked has returned, after `blocked_for` in all.
    Unblocked {
        /// How long the poll blocked.
        blocked_for: Duration,
    },
    /// The failure of this task restarts a group of tasks, by `strategy`.
    GroupRestart {
        /// The strategy that made the group.
        strategy: Strategy,
        /// How many tasks the group holds now.
        tasks: usize,
    },
    /// A restart would have exceeded the supervisor's restart intensity: it stops.
    IntensityExceeded {
        /// The restarts within the window, counting the one that was not made.
        restarts: u32,
        /// The window.
        within: Duration,
    },
    /// The supervisor began to stop: every run is being asked to.
    Stopping,
    /// The supervisor has stopped: every run has ended. The last event of the stream.
    Stopped {
        /// What [`wait`](crate::SupervisorHandle::wait) returns.
        outcome: Result<(), SupervisorError>,
    },
}

/// Logs an event through `tracing`, at its level: a start at debug, a failure or a hang at
/// warn, a panic or a death at error, a scheduled restart at info with its delay.
pub(crate) fn trace(task: Option<&str>, attempt: u32, kind: &EventKind) {
    let task = task.unwrap_or("");
    match kind {
        EventKind::Started => tracing::debug!(task, attempt, "run started"),
        EventKind::Healthy => tracing::debug!(task, attempt, "run is healthy"),
        EventKind::HeartbeatMissed { timeout } => {
            tracing::warn!(task, attempt, ?timeout, "run missed its heartbeat: hung")
        }
        EventKind::Failed { reason } => {
            tracing::warn!(task, attempt, reason = %reason, "run failed")
        }
        EventKind::Panicked { message } => {
            tracing::error!(task, attempt, panic = %message, "run panicked")
        }
        EventKind::RestartScheduled { delay } => {
            tracing::info!(task, attempt, ?delay, "restart scheduled")
        }
        EventKind::Completed => tracing::info!(task, attempt, "run completed"),
        EventKind::Killed => tracing::info!(task, attempt, "task killed"),
        EventKind::Dead { reason } => {
            tracing::error!(task, attempt, reason = %reason, "task is dead")
        }
        EventKind::Blocked { blocked_for } => tracing::warn!(
            task,
            attempt,
            ?blocked_for,
            "a poll of the task is blocking its thread"
        ),
        EventKind::Unblocked { blocked_for } => tracing::warn!(
            task,
            attempt,
            ?blocked_for,
            "a blocked poll of the task has returned"
        ),
        EventKind::GroupRestart { strategy, tasks } => tracing::warn!(
            task,
            attempt,
            ?strategy,
            tasks,
            "a failure restarts a group of tasks"
        ),
        EventKind::IntensityExceeded { restarts, within } => tracing::error!(
            task,
            restarts,
            ?within,
            "restart intensity exceeded; the supervisor stops"
        ),
        EventKind::Stopping => tracing::info!("the supervisor is stopping"),
        EventKind::Stopped { outcome: Ok(()) } => tracing::info!("the supervisor has stopped"),
        EventKind::Stopped {
            outcome: Err(error),
        } => tracing::error!(error = %error, "the supervisor has stopped"),
    }
}
