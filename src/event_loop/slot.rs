//! One task's state, as the loop holds it: its slot, the run it has, its one timer.

use std::sync::Arc;

use tokio::task::AbortHandle;

use crate::deadline::{Nanos, Tick};
use crate::spec::TaskPolicy;
use crate::status::TaskStatus;
use crate::table::TaskCells;
use crate::task::TaskTemplate;

/// What to do when the live run's exit arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterExit {
    /// The run ends by itself: its outcome decides.
    Decide,
    /// The run was stopped as hung and the task is `Failed`: restart after the back-off.
    BackOff,
    /// A manual restart: start a fresh run at once.
    Start,
    /// Stopped for a group restart (or failed and part of one): the group decides.
    Group,
    /// Killed, shut down, or hung with no attempts left: start nothing.
    Nothing,
}

/// What a slot's deadline means; a slot waits for at most one deadline at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerKind {
    /// No run: start one when it falls due.
    BackOff,
    /// A watched run: check its last heartbeat.
    Heartbeat,
    /// A stopping run: drop it.
    Grace,
}

#[derive(Debug)]
pub(super) struct Timer {
    /// When the slot wants to be woken, exactly, or `NEVER`.
    pub(super) due: Nanos,
    /// The earliest tick at which the queue holds an entry for this slot, or `NEVER`. An entry
    /// popped at any other tick has been superseded and is ignored.
    pub(super) queued: Tick,
}

/// The run a slot holds: its driver (the run's state is the slot's place in the task table).
pub(super) struct LiveRun {
    pub(super) abort: AbortHandle,
    /// Whether it has been asked to stop.
    pub(super) stopping: bool,
    /// Whether it has been aborted (dropped without waiting for it to return).
    pub(super) aborted: bool,
}

/// Everything the loop knows about one task.
///
/// Every byte of it counts once per task (about 11 MB at 100k tasks), so it keeps what it can
/// in the smallest form: its id is its index, times are nanoseconds since the loop's epoch.
pub(super) struct Slot {
    pub(super) name: Arc<str>,
    /// Where the task's fields are published for handles to read: its place in the table.
    pub(super) cells: TaskCells,
    /// `None` while a driver holds it.
    pub(super) template: Option<Box<dyn TaskTemplate>>,
    /// What the task's runs are decided by; shared with every task of the same settings.
    pub(super) policy: Arc<TaskPolicy>,
    pub(super) declares_heartbeats: bool,
    pub(super) status: TaskStatus,
    /// Restarts since the count was last cleared.
    pub(super) attempts: u32,
    pub(super) generation: u32,
    pub(super) run: Option<LiveRun>,
    pub(super) after_exit: AfterExit,
    pub(super) timer: Timer,
    /// What `timer` is for (kept out of `Timer`, whose padding it would double).
    pub(super) timer_kind: TimerKind,
    /// Since when the live run has been healthy, in nanoseconds since the epoch, or `NEVER`.
    pub(super) healthy_since: Nanos,
    /// Dead by the supervisor's rules (a kill does not count).
    pub(super) dead_of_failure: bool,
    /// Part of the pending group restart: started with the group, not on its own.
    pub(super) in_group: bool,
}
