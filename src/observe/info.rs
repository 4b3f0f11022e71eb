//! Task info: everything a handle can tell about a task at once, read from the task table
//! without a round trip through the loop.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::context::instant_of_stamp;
use crate::spec::RestartPolicy;
use crate::status::TaskStatus;
use crate::table::{self, Published};

/// What a supervisor knows about one task, as
/// [`SupervisorHandle::task_info`](crate::SupervisorHandle::task_info) and
/// [`task_infos`](crate::SupervisorHandle::task_infos) read it.
///
/// Read from what the supervisor last published, field by field: the fields of one task may
/// be from instants a few microseconds apart while the task changes.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use task_supervisor::{heartbeat, task_fn, SupervisorBuilder, TaskStatus};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let handle = SupervisorBuilder::new().build().run();
/// handle
///     .add_task(
///         "beats",
///         task_fn(|| async {
///             heartbeat();
///             std::future::pending().await
///         }),
///     )
///     .unwrap();
/// tokio::time::sleep(Duration::from_millis(250)).await;
///
/// let info = handle.task_info("beats").unwrap().expect("registered");
/// assert_eq!(info.status, TaskStatus::Healthy);
/// assert!(info.watched, "it beat, so it is watched for silence");
/// assert_eq!(info.since_last_heartbeat, Some(Duration::from_millis(250)));
/// assert_eq!(info.restarts, 0);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// The task's name.
    pub name: Arc<str>,
    /// Its status.
    pub status: TaskStatus,
    /// Its restart policy.
    pub policy: RestartPolicy,
    /// Its restart count: restarts since it was last cleared (by a stable run, a completion
    /// or a manual restart), which its back-off and attempt limit go by.
    pub attempt: u32,
    /// Every run it started after its first, whatever started it.
    pub restarts: u32,
    /// Why its last failed run failed, and when; kept after it recovered.
    pub last_failure: Option<LastFailure>,
    /// How long ago the current run last beat; `None` if it has not beaten, or no run is up.
    pub since_last_heartbeat: Option<Duration>,
    /// When the current run started; `None` when no run is up.
    pub run_started_at: Option<Instant>,
    /// Since when the current run has been healthy; `None` if it has not proved alive yet.
    pub healthy_since: Option<Instant>,
    /// Whether the current run is watched for silence: it declared heartbeats, or it beat.
    pub watched: bool,
    /// How long a poll of it has been blocking its thread, if one is right now (past the
    /// supervisor's blocked-poll threshold).
    pub blocked_for: Option<Duration>,
    /// Whether it is significant (see [`TaskSpec::significant`](crate::TaskSpec::significant)).
    pub significant: bool,
    /// Whether the supervisor is ready only while it is healthy (see
    /// [`TaskSpec::with_readiness`](crate::TaskSpec::with_readiness)).
    pub counts_for_readiness: bool,
}

/// The last failure of a task, in a [`TaskInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastFailure {
    /// Why the run failed, as [`SupervisorHandle::last_failure`](crate::SupervisorHandle::last_failure)
    /// says it.
    pub reason: Arc<str>,
    /// When.
    pub at: Instant,
}

/// Makes the info of a task from what the table holds of it.
pub(crate) fn info(
    name: Arc<str>,
    published: &Published,
    failure: Option<Arc<str>>,
    blocked_for: Option<Duration>,
    epoch: Instant,
    now: Instant,
) -> TaskInfo {
    let at = |stamp: u64| (stamp != 0).then(|| instant_of_stamp(epoch, stamp));
    let running = published.started != 0;
    let beat = published.beat & table::MAX_STAMP;
    let beaten = running && beat != 0;
    TaskInfo {
        name,
        status: published.status,
        policy: table::policy_of(published.flags),
        attempt: published.attempt,
        restarts: published.restarts,
        last_failure: failure.map(|reason| LastFailure {
            reason,
            at: at(published.failed).unwrap_or(epoch),
        }),
        since_last_heartbeat: beaten
            .then(|| now.saturating_duration_since(instant_of_stamp(epoch, beat))),
        run_started_at: at(published.started),
        healthy_since: at(published.healthy),
        watched: published.flags & table::DECLARES_HEARTBEATS != 0 || beaten,
        blocked_for,
        significant: published.flags & table::SIGNIFICANT != 0,
        counts_for_readiness: published.flags & table::NOT_FOR_READINESS == 0,
    }
}
