//! Health: whether a supervisor is live and whether it is ready, as the level above it asks
//! (a Kubernetes probe, systemd's watchdog). One rule, read by the HTTP endpoints, the systemd
//! notifier and anyone who calls [`SupervisorHandle::health`](crate::SupervisorHandle::health).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::shared::Shared;
use crate::status::TaskStatus;
use crate::table;

/// How many problems the one-line summary names before it counts the rest.
const NAMED_PROBLEMS: usize = 5;

/// A supervisor's health, read from what it last published (see
/// [`SupervisorHandle::health`](crate::SupervisorHandle::health)), down its whole tree.
///
/// - **Live** ([`is_live`](Self::is_live)): the supervisor has not stopped, no poll of any
///   task holds its thread past the blocked-poll threshold, and no significant task is
///   dead. A process that is not live should be restarted from above.
/// - **Ready** ([`is_ready`](Self::is_ready)): live, not shutting down, and every task that
///   counts for readiness (all of them, unless a spec says otherwise with
///   [`TaskSpec::with_readiness`](crate::TaskSpec::with_readiness)) is `Healthy`, or has
///   `Completed` its work for good. A process that is not ready should get no traffic.
///
/// Tasks of a child supervisor are named by their path from this supervisor, `parent/child`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use task_supervisor::{task_fn, SupervisorBuilder};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let handle = SupervisorBuilder::new()
///     .with_task("server", task_fn(std::future::pending))
///     .build()
///     .run();
/// assert!(!handle.health().is_ready(), "nothing has started yet");
///
/// tokio::time::sleep(Duration::from_millis(10)).await;
/// let health = handle.health();
/// assert!(health.is_live() && health.is_ready(), "{health}");
///
/// handle.shutdown().unwrap();
/// assert!(!handle.health().is_ready(), "a supervisor shutting down takes no traffic");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The supervisor has stopped.
    pub stopped: bool,
    /// The supervisor is shutting down, or has stopped.
    pub stopping: bool,
    /// Tasks a poll of which blocks its thread right now, with how long so far.
    pub blocked: Vec<(String, Duration)>,
    /// Significant tasks that are dead.
    pub dead_significant: Vec<String>,
    /// Tasks that count for readiness and are neither healthy nor completed, with their status.
    pub not_ready: Vec<(String, TaskStatus)>,
}

impl Health {
    /// Whether the supervisor runs and is not wedged: it has not stopped, no poll is blocked
    /// past the threshold and no significant task is dead.
    pub fn is_live(&self) -> bool {
        !self.stopped && self.blocked.is_empty() && self.dead_significant.is_empty()
    }

    /// Whether the supervisor should take traffic: it is live, not shutting down, and every
    /// task that counts for readiness is `Healthy` or `Completed`.
    pub fn is_ready(&self) -> bool {
        self.is_live() && !self.stopping && self.not_ready.is_empty()
    }

    /// Reads the health of the supervisor behind `shared`, and of its children.
    pub(crate) fn of(shared: &Shared) -> Self {
        let mut health = Self {
            stopped: false,
            stopping: !shared.registry.is_running(),
            blocked: Vec::new(),
            dead_significant: Vec::new(),
            not_ready: Vec::new(),
        };
        // A supervisor that stopped between the two reads has no tasks to list: stopped.
        if shared.stopped.is_cancelled() || !health.add_tasks(shared, "") {
            health.stopped = true;
            health.stopping = true;
            health.blocked.clear();
            health.dead_significant.clear();
            health.not_ready.clear();
        }
        health
    }

    /// Adds the problems of the tasks of `shared` (and, below them, its children's), their
    /// names prefixed with `path`; `false` if that supervisor has stopped.
    fn add_tasks(&mut self, shared: &Shared, path: &str) -> bool {
        let blocked = shared.blocked_now();
        let children = shared.children();
        let mut below = Vec::new();
        let listed = shared
            .registry
            .for_each_task_info(
                shared.epoch,
                |id| blocked.of(id),
                |id, flags, info| {
                    let name = || format!("{path}{}", info.name);
                    if let Some(blocked_for) = info.blocked_for {
                        self.blocked.push((name(), blocked_for));
                    }
                    // A significant task killed on purpose is no failure of the process.
                    if info.significant
                        && info.status == TaskStatus::Dead
                        && flags & table::DIED_OF_FAILURE != 0
                    {
                        self.dead_significant.push(name());
                    }
                    let ready = matches!(info.status, TaskStatus::Healthy | TaskStatus::Completed);
                    if info.counts_for_readiness && !ready {
                        self.not_ready.push((name(), info.status));
                    }
                    if let Some(child) = children.get(&id) {
                        below.push((format!("{path}{}/", info.name), Arc::clone(child)));
                    }
                },
            )
            .is_ok();
        for (path, child) in below {
            // A child that stopped meanwhile: its parent's view of the task says the rest.
            self.add_tasks(&child.shared, &path);
        }
        listed
    }

    /// Counts of tasks by status, for a one-line summary (systemd's `STATUS=`).
    #[cfg(all(feature = "systemd", unix))]
    pub(crate) fn counts(shared: &Shared) -> Vec<(TaskStatus, usize)> {
        let mut counts: Vec<(TaskStatus, usize)> = Vec::new();
        if let Ok(statuses) = shared.registry.shared_statuses() {
            for (_, status) in statuses {
                match counts.iter_mut().find(|(seen, _)| *seen == status) {
                    Some((_, count)) => *count += 1,
                    None => counts.push((status, 1)),
                }
            }
        }
        counts.sort_by_key(|(status, _)| status.as_u8());
        counts
    }
}

impl fmt::Display for Health {
    /// One line: `live, ready`, or what keeps it from being so (the first five problems, then
    /// how many more).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.stopped {
            return f.write_str("stopped");
        }
        let stopping = self.stopping.then(|| "shutting down".to_owned());
        let blocked = self.blocked.iter().map(|(task, blocked_for)| {
            format!("`{task}` blocks its thread ({blocked_for:?} so far)")
        });
        let dead = self
            .dead_significant
            .iter()
            .map(|task| format!("significant task `{task}` is dead"));
        let down = self
            .not_ready
            .iter()
            .map(|(task, status)| format!("`{task}` is {status}"));
        let total = usize::from(self.stopping)
            + self.blocked.len()
            + self.dead_significant.len()
            + self.not_ready.len();
        if total == 0 {
            return f.write_str("live, ready");
        }
        // Only the problems named are formatted: 100k tasks starting make one short line.
        let named: Vec<String> = stopping
            .into_iter()
            .chain(blocked)
            .chain(dead)
            .chain(down)
            .take(NAMED_PROBLEMS)
            .collect();
        let live = if self.is_live() { "live" } else { "not live" };
        write!(f, "{live}, not ready: {}", named.join(", "))?;
        if total > named.len() {
            write!(f, ", and {} more", total - named.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Health {
        Health {
            stopped: false,
            stopping: false,
            blocked: Vec::new(),
            dead_significant: Vec::new(),
            not_ready: Vec::new(),
        }
    }

    #[test]
    fn a_blocked_poll_or_a_dead_significant_task_is_not_live() {
        assert!(healthy().is_live() && healthy().is_ready());
        let blocked = Health {
            blocked: vec![("db".into(), Duration::from_secs(2))],
            ..healthy()
        };
        assert!(!blocked.is_live() && !blocked.is_ready());
        let dead = Health {
            dead_significant: vec!["import".into()],
            ..healthy()
        };
        assert!(!dead.is_live());
        assert_eq!(
            dead.to_string(),
            "not live, not ready: significant task `import` is dead"
        );
    }

    #[test]
    fn a_task_down_or_a_shutdown_is_live_but_not_ready() {
        let down = Health {
            not_ready: vec![("web/acceptor".into(), TaskStatus::Failed)],
            ..healthy()
        };
        assert!(down.is_live() && !down.is_ready());
        assert_eq!(
            down.to_string(),
            "live, not ready: `web/acceptor` is failed"
        );
        let stopping = Health {
            stopping: true,
            ..healthy()
        };
        assert!(stopping.is_live() && !stopping.is_ready());
        let stopped = Health {
            stopped: true,
            stopping: true,
            ..healthy()
        };
        assert!(!stopped.is_live());
        assert_eq!(stopped.to_string(), "stopped");
    }

    #[test]
    fn the_summary_names_five_problems_and_counts_the_rest() {
        let starting = Health {
            not_ready: (0..100_000)
                .map(|i| (format!("task-{i}"), TaskStatus::Starting))
                .collect(),
            ..healthy()
        };
        assert_eq!(
            starting.to_string(),
            "live, not ready: `task-0` is starting, `task-1` is starting, `task-2` is starting, \
             `task-3` is starting, `task-4` is starting, and 99995 more"
        );
    }
}
