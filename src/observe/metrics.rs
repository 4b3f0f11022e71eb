//! Metrics, with the `metrics` feature: counters of runs by outcome, restarts, hangs, panics
//! and blocked polls by task, a gauge of tasks by status, and a histogram of run durations,
//! through the [`metrics`](::metrics) facade (0.24). The application installs the recorder
//! (Prometheus or another); without one, every call is a no-op.
//!
//! | name | kind | labels | counts |
//! | --- | --- | --- | --- |
//! | `task_supervisor_runs_total` | counter | `task`, `outcome` (`completed`, `failed`, `panicked`, `hung`) | runs that ended by themselves, or hung |
//! | `task_supervisor_restarts_total` | counter | `task` | restarts scheduled by the supervisor |
//! | `task_supervisor_hangs_total` | counter | `task` | runs stopped for missing their heartbeat |
//! | `task_supervisor_panics_total` | counter | `task` | runs that panicked |
//! | `task_supervisor_blocked_polls_total` | counter | `task` | polls reported as blocking their thread |
//! | `task_supervisor_tasks` | gauge | `status` (`created`, `starting`, `healthy`, `failed`, `completed`, `dead`) | tasks of each status |
//! | `task_supervisor_run_duration_seconds` | histogram | `task` | how long each run lasted, however it ended |
//!
//! Labels stay bounded: a task name, an outcome or a status, never a run's number. Several
//! supervisors in one process add to the same series (their task names tell them apart).

use std::sync::Arc;
use std::time::Duration;

use crate::observe::events::EventKind;
use crate::status::TaskStatus;

/// Counts what `kind` says happened to `task`.
pub(crate) fn record(task: &Arc<str>, kind: &EventKind) {
    let outcome = match kind {
        EventKind::Completed => Some("completed"),
        EventKind::Failed { .. } => Some("failed"),
        EventKind::Panicked { .. } => {
            ::metrics::counter!("task_supervisor_panics_total", "task" => Arc::clone(task))
                .increment(1);
            Some("panicked")
        }
        EventKind::HeartbeatMissed { .. } => {
            ::metrics::counter!("task_supervisor_hangs_total", "task" => Arc::clone(task))
                .increment(1);
            Some("hung")
        }
        EventKind::RestartScheduled { .. } => {
            ::metrics::counter!("task_supervisor_restarts_total", "task" => Arc::clone(task))
                .increment(1);
            None
        }
        EventKind::Blocked { .. } => {
            ::metrics::counter!("task_supervisor_blocked_polls_total", "task" => Arc::clone(task))
                .increment(1);
            None
        }
        _ => None,
    };
    if let Some(outcome) = outcome {
        ::metrics::counter!(
            "task_supervisor_runs_total",
            "task" => Arc::clone(task),
            "outcome" => outcome
        )
        .increment(1);
    }
}

/// One task moved from `from` to `to` (`None`: it was just registered).
pub(crate) fn status_changed(from: Option<TaskStatus>, to: TaskStatus) {
    if let Some(from) = from {
        ::metrics::gauge!("task_supervisor_tasks", "status" => from.name()).decrement(1.0);
    }
    ::metrics::gauge!("task_supervisor_tasks", "status" => to.name()).increment(1.0);
}

/// A task of status `status` is gone with its supervisor.
pub(crate) fn task_gone(status: TaskStatus) {
    ::metrics::gauge!("task_supervisor_tasks", "status" => status.name()).decrement(1.0);
}

/// A run of `task` lasted `duration`.
pub(crate) fn run_ended(task: &Arc<str>, duration: Duration) {
    ::metrics::histogram!("task_supervisor_run_duration_seconds", "task" => Arc::clone(task))
        .record(duration.as_secs_f64());
}
