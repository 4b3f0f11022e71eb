//! The runs of a task, driven one after another by one Tokio task, the **driver**: each run
//! wrapped once (the context around it, panics caught with their message, the news that the run
//! proved alive), and one report to the loop when the driver ends.
//!
//! The loop spawns a driver to start a run. Usually the driver runs that one run and ends. When
//! a run fails without ever proving alive and its task restarts with zero back-off, the driver
//! starts the next run itself, in place, and tells the loop afterwards
//! ([`Message::RanAgain`]): a crash loop then costs no spawn, no join and no wait for the loop.
//!
//! # Invariants
//!
//! 1. The wrapper never panics and never lets a panic of the task escape: a panic in `run`, in
//!    a `Drop` of the run's state, in the task's own `Drop`, in its error's `Display` or `Drop`,
//!    or in a panic payload's `Drop` becomes a failure (or is leaked, for a payload that panics
//!    again).
//! 2. Every driver ends with exactly one [`Message::Exit`], sent by its [`ExitReport`] when the
//!    driver's future is dropped: after it returned, or when the loop aborted it. The report is
//!    dropped last, after the run's future, so when the loop sees the exit nothing of the run is
//!    left. The exit carries the task's template back to the loop.
//! 3. A driver runs one run at a time, and starts the next one in place only after the last
//!    one's future was dropped, and only when the run's [`RunShared`] could be renewed (see
//!    its invariant 4: nothing else holds it, no stop was asked for), and it does not start it
//!    at all if a stop arrives in between. Its reports reach the loop in the order it sent
//!    them, on the channel its exit takes too.
//! 4. A driver never gets more than [`MAX_UNREPORTED`] restarts in place ahead of the loop, and
//!    gives its worker back to the scheduler as Tokio's budget asks: a crash loop neither
//!    grows the loop's queue without bound nor starves other tasks.
//! 5. Each run sends at most two progress messages, whatever it does: one from its first poll
//!    (tasks that did not declare heartbeats) and one from its first beat (see
//!    [`RunShared::beat`]).

use std::any::Any;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::context::RunShared;
use crate::message::{
    Failure, FailureKind, Message, RanAgain, RunExit, RunId, RunOutcome, RunProgress,
};
use crate::observe::blocked::{task_key, Polling};
use crate::policy::restart::{self, Ending};
use crate::task::{SupervisedTask, TaskResult, TaskTemplate};
use crate::unwind::{describe_panic, dispose, drop_guarded};

/// How many restarts in place a driver may report before it waits for the loop to catch up.
///
/// Each report is one message of 48 bytes, so a crash loop holds at most 6 KiB of them. A
/// wait costs the driver a few microseconds when the loop's worker must be woken; at 32 that
/// happened to one restart in 32 and set the 99th percentile of the restart gap (4 – 9 us),
/// at 128 it stays below it (0.3 us).
pub(crate) const MAX_UNREPORTED: u32 = 128;

/// What the loop gives a driver to start with.
pub(crate) struct DriverStart {
    pub(crate) id: RunId,
    pub(crate) template: Box<dyn TaskTemplate>,
    pub(crate) shared: Arc<RunShared>,
    /// Whether runs are watched from their start (they declared heartbeats).
    pub(crate) watched: bool,
    /// The task's restart attempts so far.
    pub(crate) attempts: u32,
    /// The span every poll and drop of the driver runs in (task name and attempt), if a
    /// `tracing` subscriber wants it; boxed, so that a driver nobody traces pays a pointer.
    pub(crate) span: Option<Box<tracing::Span>>,
}

/// Sends the driver's [`RunExit`] once, however the driver ends (invariant 2): with the last
/// run's outcome when the driver returns, or as [`RunOutcome::Dropped`] when it is dropped
/// before that.
struct ExitReport {
    id: RunId,
    shared: Arc<RunShared>,
    /// `None` once the exit is sent.
    template: Option<Box<dyn TaskTemplate>>,
}

impl ExitReport {
    fn send(&mut self, outcome: RunOutcome) {
        let Some(template) = self.template.take() else {
            return;
        };
        let exit = Message::Exit(RunExit {
            id: self.id,
            outcome,
            template,
        });
        if let Err(unsent) = self.shared.settings().events.send(exit) {
            // The loop is gone (its runtime is dropping every task). Dropping the template
            // here is user code; while unwinding, a second panic would abort the process.
            if std::thread::panicking() {
                std::mem::forget(unsent);
            } else {
                drop_guarded(unsent);
            }
        }
    }
}

impl Drop for ExitReport {
    fn drop(&mut self) {
        // Dropped mid-run. While a `Drop` of the run unwinds, this runs as part of the
        // unwinding.
        self.send(RunOutcome::Dropped {
            panicked: std::thread::panicking(),
        });
    }
}

/// Drives the runs of one task, starting with `start.id`, until one of them must be decided by
/// the loop; then reports to it (see the [module documentation](self)).
///
/// The report is made here, before the driver's future exists, so that it is sent even when the
/// loop aborts the driver before its first poll. The future captures it and uses it in place:
/// it is dropped after whatever run is in flight (invariant 2), and not stored twice.
pub(crate) fn drive(mut start: DriverStart) -> Driver<impl Future<Output = ()> + Send> {
    let span = start.span.take();
    Driver {
        future: Some(drive_runs(start)),
        span,
    }
}

pin_project_lite::pin_project! {
    /// A driver as it is spawned. When the loop aborts it, Tokio drops it, and with it the run
    /// in flight: that `Drop` is user code. Dropped here, inside `catch_unwind`, a panic of it
    /// is disposed of like every other (a payload whose own `Drop` panics is leaked); left to
    /// Tokio, the payload would be dropped unguarded, and a second panic would unwind out of a
    /// runtime worker.
    pub(crate) struct Driver<F> {
        // `None` only once dropped.
        #[pin]
        future: Option<F>,
        // Entered around every poll and the drop: what the task logs says which task it is.
        span: Option<Box<tracing::Span>>,
    }

    impl<F> PinnedDrop for Driver<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let _entered = this.span.as_deref().map(tracing::Span::enter);
            let mut future = this.future;
            // The exit report, dropped last, sends its exit during this, unwinding or not.
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| future.set(None))) {
                dispose(payload);
            }
        }
    }
}

impl<F: Future> Future for Driver<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.as_deref().map(tracing::Span::enter);
        match this.future.as_pin_mut() {
            Some(future) => future.poll(cx),
            None => Poll::Pending,
        }
    }
}

fn drive_runs(start: DriverStart) -> impl Future<Output = ()> + Send {
    let DriverStart {
        id,
        template,
        shared,
        watched,
        mut attempts,
        span: _,
    } = start;
    let mut report = ExitReport {
        id,
        shared,
        template: Some(template),
    };
    async move {
        loop {
            // The template is taken only when the exit is sent, which ends the driver.
            let Some(template) = report.template.as_deref() else {
                return;
            };
            let (outcome, alive) = match make_instance(template) {
                Ok(task) => supervise(task, &report.shared, watched).await,
                Err(failure) => (RunOutcome::Failed(failure), false),
            };
            let failure = match outcome {
                RunOutcome::Failed(failure)
                    if !alive
                        && may_restart_in_place(&report.shared, attempts)
                        && report.shared.renew(report.id.generation) =>
                {
                    failure
                }
                outcome => return report.send(outcome),
            };
            attempts = attempts.saturating_add(1);
            // The driver's span is the current one here (see `Driver`).
            tracing::Span::current().record("attempt", attempts);
            report.id.generation = report.id.generation.wrapping_add(1);
            report.shared.report_renewal();
            let events = &report.shared.settings().events;
            let _ = events.send(Message::RanAgain(RanAgain {
                id: report.id,
                attempts,
                failure,
            }));
            // Invariant 4: wait for the loop when it falls behind, then let others run. A stop
            // ends the wait: the check below sees it.
            while report.shared.unreported() >= MAX_UNREPORTED
                && !report.shared.stopping()
                && !events.is_closed()
            {
                tokio::task::yield_now().await;
            }
            tokio::task::consume_budget().await;
            // The loop may have stopped the new run (a kill, a restart, the supervisor's end)
            // while it was not started yet: then it never starts. The loop has decided what
            // follows, so the outcome reported does not matter.
            if report.shared.stopping() || report.shared.settings().ending.load(Ordering::Acquire) {
                return report.send(RunOutcome::Dropped { panicked: false });
            }
        }
    }
}

/// Whether a run that failed without proving alive may be followed by the next at once, by its
/// own driver: the back-off is zero, an attempt is left, and nothing but the driver and the
/// loop holds the run's state (no [`TaskContext`](crate::TaskContext) of the old run is left
/// to beat for the new one).
fn may_restart_in_place(shared: &Arc<RunShared>, attempts: u32) -> bool {
    let (settings, policy) = (shared.settings(), shared.policy());
    if !policy.restart_in_place
        || settings.ending.load(Ordering::Acquire)
        || settings.events.is_closed()
        || !restart::policy_restarts(policy.restart, Ending::Failed)
        || !restart::attempts_left(policy.max_restart_attempts, attempts)
    {
        return false;
    }
    if Arc::strong_count(shared) != 2 {
        return false;
    }
    // Pairs with the release of the last other holder's drop: what it did before letting go
    // (a beat, a token) is visible from here on.
    std::sync::atomic::fence(Ordering::Acquire);
    shared.last_beat().is_none()
}

/// Makes the run's instance; a panic doing so is the run's failure.
fn make_instance(template: &dyn TaskTemplate) -> Result<Box<dyn SupervisedTask>, Failure> {
    catch_unwind(AssertUnwindSafe(|| template.make_run())).map_err(|payload| {
        Failure::new(
            FailureKind::Panic,
            format!(
                "panicked: making the run's instance panicked: {}",
                describe_panic(payload)
            ),
        )
    })
}

/// Runs `task` once inside `shared`'s context and says how it ended, and whether it proved
/// alive (polled once without finishing, or beat).
///
/// `watched_from_start` is true for tasks that declared heartbeats: they prove alive with
/// their first beat (reported by the beat itself) rather than their first poll.
///
/// Written as a function returning a block, not as an `async fn`, and with only the run's own
/// (already boxed) future inside the context: this future lives in every supervised task's
/// Tokio task, and each byte of it shows at 100k tasks.
#[allow(clippy::manual_async_fn)] // An `async fn` would keep its arguments twice.
fn supervise(
    mut task: Box<dyn SupervisedTask>,
    shared: &Arc<RunShared>,
    watched_from_start: bool,
) -> impl Future<Output = (RunOutcome, bool)> + Send + '_ {
    async move {
        let mut watch = AliveWatch {
            reported: watched_from_start,
            polled_alive: false,
        };
        let instance = &mut *task;
        // Moved into the closure's body, so the run's future may borrow the task for as long
        // as the task lives (a reborrow would end with the closure).
        let start = move || {
            let instance = instance;
            instance.run()
        };
        let (polled, dropped) = match catch_unwind(AssertUnwindSafe(start)) {
            Ok(run) => {
                let mut running = pin!(Some(Arc::clone(shared).scope(run)));
                let polled = poll_fn(|cx| watch.poll(running.as_mut(), shared, cx)).await;
                // Drop whatever is left of the run here, where a panicking `Drop` is caught.
                let dropped = catch_unwind(AssertUnwindSafe(|| running.as_mut().set(None)));
                (polled, dropped)
            }
            Err(payload) => (Err(payload), Ok(())),
        };
        let dropped = dropped.and(catch_unwind(AssertUnwindSafe(move || drop(task))));
        let outcome = match (polled, dropped) {
            (Err(payload), dropped) => {
                if let Err(second) = dropped {
                    dispose(second);
                }
                panicked(payload)
            }
            (Ok(_), Err(payload)) => panicked(payload),
            (Ok(result), Ok(())) => outcome_of(result),
        };
        let alive = watch.polled_alive || shared.last_beat().is_some();
        (outcome, alive)
    }
}

/// The run's future inside its context, as `supervise` holds it.
type Running<'a> = Option<
    tokio::task::futures::TaskLocalFuture<
        Arc<RunShared>,
        Pin<Box<dyn Future<Output = TaskResult> + Send + 'a>>,
    >,
>;

/// Whether a run has proved alive, and whether the loop has been told.
struct AliveWatch {
    reported: bool,
    polled_alive: bool,
}

impl AliveWatch {
    /// Polls the run once, catching a panic, and tells the loop when it first proves alive.
    fn poll(
        &mut self,
        running: Pin<&mut Running<'_>>,
        shared: &RunShared,
        cx: &mut Context<'_>,
    ) -> Poll<Result<TaskResult, Box<dyn Any + Send>>> {
        let Some(running) = running.as_pin_mut() else {
            return Poll::Ready(Ok(Ok(())));
        };
        // Marks this thread as inside a poll of the task, for the blocked-poll watcher.
        let _polling = shared
            .settings()
            .poll_watch
            .map(|supervisor| Polling::enter(task_key(supervisor, shared.slot())));
        match catch_unwind(AssertUnwindSafe(|| running.poll(cx))) {
            Ok(Poll::Pending) => {
                self.polled_alive = true;
                if !self.reported {
                    // Polled once and still running: alive. A first beat during that poll
                    // has told the loop already.
                    self.reported = true;
                    if shared.last_beat().is_none() {
                        // The loop may be gone (shutdown): then nobody needs the news.
                        let _ = shared
                            .settings()
                            .events
                            .send(Message::Progress(RunProgress {
                                id: shared.id(),
                                alive: true,
                                beaten: false,
                            }));
                    }
                }
                Poll::Pending
            }
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The failure a panic is: `panicked: ` and its message.
fn panicked(payload: Box<dyn Any + Send>) -> RunOutcome {
    RunOutcome::Failed(Failure::new(
        FailureKind::Panic,
        format!("panicked: {}", describe_panic(payload)),
    ))
}

/// Formats an error with its whole cause chain (`{:#}`: `outer: cause: root cause`) and drops
/// it here, in the run's own task: its `Display` and its `Drop` are user code, and a panic in
/// either must not reach the loop.
fn outcome_of(result: TaskResult) -> RunOutcome {
    let error = match result {
        Ok(()) => return RunOutcome::Completed,
        Err(error) => error,
    };
    let formatted = catch_unwind(AssertUnwindSafe(|| format!("{error:#}")));
    let dropped = catch_unwind(AssertUnwindSafe(move || drop(error)));
    match (formatted, dropped) {
        (Ok(message), Ok(())) => RunOutcome::Failed(Failure::new(FailureKind::Error, message)),
        (Ok(_), Err(payload)) => panicked(payload),
        (Err(payload), dropped) => {
            if let Err(second) = dropped {
                dispose(second);
            }
            panicked(payload)
        }
    }
}
