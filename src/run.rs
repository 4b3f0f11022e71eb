//! One run of a task, wrapped once: the context around it, panics caught with their message,
//! the news that the run proved alive, then one report of how the run ended.
//!
//! # Invariants
//!
//! 1. The wrapper never panics and never lets a panic of the task escape: a panic in `run`, in
//!    a `Drop` of the run's state, in the task's own `Drop`, in its error's `Display` or `Drop`,
//!    or in a panic payload's `Drop` becomes [`RunOutcome::Panicked`] (or is leaked, for a
//!    payload that panics again). So every run reports back with a [`RunExit`].
//! 2. The user's future is dropped before the wrapper returns its [`RunExit`], so when the loop
//!    sees the exit, nothing of the run is left.
//! 3. Each run sends at most two progress messages, whatever it does: one from its first poll
//!    (tasks that did not declare heartbeats) and one from its first beat (see
//!    [`RunShared::beat`]).

use std::any::Any;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use crate::context::RunShared;
use crate::event_loop::Message;
use crate::task::{SupervisedTask, TaskResult};

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
    /// The error's message: formatted in the run, since formatting is user code.
    Failed(String),
    Panicked(String),
}

/// The report a run's wrapper returns to the loop.
#[derive(Debug)]
pub(crate) struct RunExit {
    pub(crate) id: RunId,
    pub(crate) outcome: RunOutcome,
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

/// Runs `task` once inside `shared`'s context and reports how it ended.
///
/// `watched_from_start` is true for tasks that declared heartbeats: they prove alive with
/// their first beat (reported by the beat itself) rather than their first poll.
pub(crate) async fn supervise(
    id: RunId,
    task: Box<dyn SupervisedTask>,
    shared: Arc<RunShared>,
    watched_from_start: bool,
) -> RunExit {
    let events = &shared.settings().events;
    let user_run = async move {
        let mut task = task;
        let result = task.run().await;
        drop(task);
        result
    };
    let mut future = pin!(Some(Arc::clone(&shared).scope(user_run)));
    let mut reported_alive = watched_from_start;

    let polled = poll_fn(|cx| {
        let Some(running) = future.as_mut().as_pin_mut() else {
            return Poll::Ready(Ok(Ok(())));
        };
        let poll = catch_unwind(AssertUnwindSafe(|| running.poll(cx)));
        if !reported_alive && matches!(poll, Ok(Poll::Pending)) {
            // Polled once and still running: alive. A first beat during that poll has
            // told the loop already.
            reported_alive = true;
            if shared.last_beat().is_none() {
                // The loop may be gone (shutdown): then nobody needs the news.
                let _ = events.send(Message::Progress(RunProgress {
                    id,
                    alive: true,
                    beaten: false,
                }));
            }
        }
        match poll {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    })
    .await;

    // Drop whatever is left of the run here, where a panicking `Drop` is caught.
    let dropped = catch_unwind(AssertUnwindSafe(|| future.as_mut().set(None)));

    let outcome = match (polled, dropped) {
        (Err(payload), dropped) => {
            if let Err(second) = dropped {
                dispose(second);
            }
            RunOutcome::Panicked(describe_panic(payload))
        }
        (Ok(_), Err(payload)) => RunOutcome::Panicked(describe_panic(payload)),
        (Ok(result), Ok(())) => outcome_of(result),
    };
    RunExit { id, outcome }
}

/// Reads a panic's message and drops its payload, where a panicking `Drop` of the payload
/// is caught too.
pub(crate) fn describe_panic(payload: Box<dyn Any + Send>) -> String {
    let message = catch_unwind(AssertUnwindSafe(|| panic_message(payload.as_ref())))
        .unwrap_or_else(|_| "panic with a payload that could not be read".to_owned());
    dispose(payload);
    message
}

/// Drops `value` (a task, a message holding one) where a panicking `Drop` is caught: the
/// supervisor and its callers never unwind because of a task's `Drop`.
pub(crate) fn drop_guarded<T>(value: T) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
        dispose(payload);
    }
}

/// Drops a panic payload; one whose `Drop` panics as well is leaked instead, as the standard
/// library does with a panic during a panic.
pub(crate) fn dispose(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// A run that fails at once: used when making the run's instance panicked.
pub(crate) async fn failed_to_start(id: RunId, message: String) -> RunExit {
    RunExit {
        id,
        outcome: RunOutcome::Panicked(message),
    }
}

/// Formats an error and drops it here, in the run's own task: its `Display` and its `Drop`
/// are user code, and a panic in either must not reach the loop.
fn outcome_of(result: TaskResult) -> RunOutcome {
    let error = match result {
        Ok(()) => return RunOutcome::Completed,
        Err(error) => error,
    };
    let formatted = catch_unwind(AssertUnwindSafe(|| error.to_string()));
    let dropped = catch_unwind(AssertUnwindSafe(move || drop(error)));
    match (formatted, dropped) {
        (Ok(message), Ok(())) => RunOutcome::Failed(message),
        (Ok(_), Err(payload)) => RunOutcome::Panicked(describe_panic(payload)),
        (Err(payload), dropped) => {
            if let Err(second) = dropped {
                dispose(second);
            }
            RunOutcome::Panicked(describe_panic(payload))
        }
    }
}

/// The message of a panic payload: panics with a formatted message carry a `String`, panics
/// with a literal carry a `&'static str`.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic with a payload that is not a string".to_owned()
    }
}
