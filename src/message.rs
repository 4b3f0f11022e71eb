//! What reaches the loop: the messages of its one channel, and what runs report in them.
//!
//! Handles, drivers and run contexts send these; only the loop receives them. They live here,
//! apart from the loop, so that nothing that sends imports the loop itself.

use std::sync::Arc;

use crate::registry::TaskEntry;
use crate::spec::TaskPolicy;
use crate::task::TaskTemplate;

/// What reaches the loop over its channel.
pub(crate) enum Message {
    /// A task added through a handle; its name is already reserved in the registry.
    Add(NewTask),
    Restart {
        id: u32,
    },
    Kill {
        id: u32,
    },
    Shutdown,
    /// Drop every run at once, shutting down first if not already: from a parent whose grace
    /// for this (child) supervisor's run has passed.
    DropEveryRun,
    /// A run proved alive or sent its first heartbeat.
    Progress(RunProgress),
    /// A run failed, and its driver started the next one in place.
    RanAgain(RanAgain),
    /// A driver ended.
    Exit(RunExit),
}

/// A task to register: its name (reserved in the registry), the entry its status is published
/// in, its template and its policy.
pub(crate) struct NewTask {
    pub(crate) name: Arc<str>,
    pub(crate) entry: TaskEntry,
    pub(crate) task: Box<dyn TaskTemplate>,
    pub(crate) policy: Arc<TaskPolicy>,
}

/// Identifies one run: the task's slot and the run's generation within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunId {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// How a run ended.
#[derive(Debug)]
pub(crate) enum RunOutcome {
    Completed,
    Failed(Failure),
    /// The loop dropped it (after its grace period, or at once); `panicked` when a `Drop` of
    /// the run panicked meanwhile.
    Dropped {
        panicked: bool,
    },
}

/// Why a run failed.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// As the task's status change and last failure say it: the error with its cause chain
    /// (formatted in the run, since formatting is user code), `panicked: ` and the panic's
    /// message, or a note that the run hung.
    pub(crate) reason: Arc<str>,
    pub(crate) kind: FailureKind,
}

/// How a run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// It returned an error.
    Error,
    /// It panicked (or making its instance did).
    Panic,
    /// It missed its heartbeat.
    Hang,
    /// It was dropped while nobody asked it to stop (its driver was cancelled).
    Dropped,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, reason: impl Into<Arc<str>>) -> Self {
        Self {
            reason: reason.into(),
            kind,
        }
    }
}

/// The last report of a driver: how its last run ended, and the task's template, back.
pub(crate) struct RunExit {
    pub(crate) id: RunId,
    pub(crate) outcome: RunOutcome,
    pub(crate) template: Box<dyn TaskTemplate>,
}

/// A driver's report that its run failed and that it has started the next one in place.
#[derive(Debug)]
pub(crate) struct RanAgain {
    /// The new run.
    pub(crate) id: RunId,
    /// The task's restart attempts, counting this one.
    pub(crate) attempts: u32,
    /// Why the last run failed.
    pub(crate) failure: Failure,
}

/// What a run tells the loop while it is running.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunProgress {
    pub(crate) id: RunId,
    /// The run proved alive: `Starting` can become `Healthy`.
    pub(crate) alive: bool,
    /// The run has sent at least one heartbeat: it is watched for silence from now on.
    pub(crate) beaten: bool,
}
