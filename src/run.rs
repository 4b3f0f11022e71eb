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
//!    one's future was dropped, and only when the task's run state could be renewed (see
//!    [`crate::context`]'s invariant 4: no token, no stop), and it does not start it
//!    at all if a stop arrives in between. Its reports reach the loop in the order it sent
//!    them, on the channel its exit takes too.
//! 4. A driver never gets more than [`MAX_UNREPORTED`] restarts in place ahead of the loop, and
//!    gives its worker back to the scheduler as Tokio's budget asks: a crash loop neither
//!    grows the loop's queue without bound nor starves other tasks.
//! 5. Each run sends at most two progress messages, whatever it does: one from its first poll
//!    (tasks that did not declare heartbeats) and one from its first beat (see
//!    [`RunRef::beat`]).

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use crate::context::{RunLocal, RunRef};
use crate::message::{Failure, FailureKind, Message, RanAgain, RunExit, RunOutcome, RunProgress};
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

/// What the loop gives a driver to start with, beside the task's template.
pub(crate) struct DriverStart {
    /// The first run.
    pub(crate) run: RunRef,
    /// Whether the driver may restart a run in place (see [`may_restart_in_place`]): `None`
    /// never, `Some(limit)` while the task's restart attempts stay within `limit` (`None`:
    /// no limit). Decided by the loop from the task's policy when it spawns the driver.
    pub(crate) in_place: Option<Option<u32>>,
    /// Whether runs are watched from their start (they declared heartbeats).
    pub(crate) watched: bool,
    /// The task's restart attempts so far.
    pub(crate) attempts: u32,
    /// The span every poll and drop of the driver runs in (task name and attempt), if a
    /// `tracing` subscriber wants it; boxed, so that a driver nobody traces pays a pointer.
    pub(crate) span: Option<Box<tracing::Span>>,
}

/// A task as its driver runs it: how one run is made and run, and how the template goes back
/// to the loop.
///
/// Two kinds implement it. `dyn TaskTemplate` is the **boxed** path, shared by every
/// [`SupervisedTask`]: each run is a fresh instance whose `#[async_trait]` future is a box of
/// its own, and one driver serves every task type. A closure task ([`crate::TaskFn`]) is the
/// **inline** path: its driver is monomorphised for the closure's future, which lives inside
/// the driver's own Tokio task, so a run allocates nothing of its own.
pub(crate) trait Runs: Send + 'static {
    /// Starts `run` in its context: the future that runs it to its end and drops it. What it
    /// returns borrows nothing of `self`, so that the template need not be `Sync`.
    fn run_once<'a>(
        &self,
        run: &'a RunRef,
        watched: bool,
    ) -> impl Future<Output = Ended> + Send + 'a;

    /// The template, as the loop keeps it between drivers.
    fn into_template(self: Box<Self>) -> Box<dyn TaskTemplate>;
}

impl Runs for dyn TaskTemplate {
    fn run_once<'a>(
        &self,
        run: &'a RunRef,
        watched: bool,
    ) -> impl Future<Output = Ended> + Send + 'a {
        let instance = make_instance(self);
        async move {
            match instance {
                Ok(task) => supervise(task, run, watched).await,
                Err(failure) => Ended::failed(failure),
            }
        }
    }

    fn into_template(self: Box<Self>) -> Box<dyn TaskTemplate> {
        self
    }
}

/// Spawns the driver of `template`'s runs, starting with `start.id`; see [`drive`].
pub(crate) fn spawn<T: Runs + ?Sized>(
    template: Box<T>,
    start: DriverStart,
) -> tokio::task::AbortHandle {
    tokio::spawn(drive(template, start)).abort_handle()
}

/// Sends the driver's [`RunExit`] once, however the driver ends (invariant 2): with the last
/// run's outcome when the driver returns, or as [`RunOutcome::Dropped`] when it is dropped
/// before that.
struct ExitReport<T: Runs + ?Sized> {
    /// The run in flight.
    run: RunRef,
    /// `None` once the exit is sent.
    template: Option<Box<T>>,
}

impl<T: Runs + ?Sized> ExitReport<T> {
    fn send(&mut self, outcome: RunOutcome) {
        let Some(template) = self.template.take() else {
            return;
        };
        let exit = Message::Exit(RunExit {
            id: self.run.id(),
            outcome,
            template: template.into_template(),
        });
        if let Err(unsent) = self.run.settings().events.send(exit) {
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

impl<T: Runs + ?Sized> Drop for ExitReport<T> {
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
fn drive<T: Runs + ?Sized>(
    template: Box<T>,
    mut start: DriverStart,
) -> Driver<impl Future<Output = ()> + Send> {
    let span = start.span.take();
    Driver {
        future: Some(drive_runs(template, start)),
        span,
    }
}

pin_project_lite::pin_project! {
    /// A driver as it is spawned. When the loop aborts it, Tokio drops it, and with it the run
    /// in flight: that `Drop` is user code. Dropped here, inside `catch_unwind`, a panic of it
    /// is disposed of like every other (a payload whose own `Drop` panics is leaked); left to
    /// Tokio, the payload would be dropped unguarded, and a second panic would unwind out of a
    /// runtime worker.
    ///
    /// `repr(C)`, with the span first: every poll reads it before anything else, and at the
    /// end of a future of a few hundred bytes it was a cache line of its own, the first miss of
    /// every wake-up at 100k tasks (two thirds of the driver's samples in a profile of beating
    /// tasks); at the start it shares the line Tokio's task cell has just touched.
    #[repr(C)]
    pub(crate) struct Driver<F> {
        // Entered around every poll and the drop: what the task logs says which task it is.
        span: Option<Box<tracing::Span>>,
        // `None` only once dropped.
        #[pin]
        future: Option<F>,
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

fn drive_runs<T: Runs + ?Sized>(
    template: Box<T>,
    start: DriverStart,
) -> impl Future<Output = ()> + Send {
    let DriverStart {
        run,
        in_place,
        watched,
        mut attempts,
        span: _,
    } = start;
    let mut report = ExitReport {
        run,
        template: Some(template),
    };
    async move {
        loop {
            // The template is taken only when the exit is sent, which ends the driver. It is
            // not kept across the run: the run's future borrows nothing of it.
            let running = match report.template.as_deref() {
                Some(template) => template.run_once(&report.run, watched),
                None => return,
            };
            let (outcome, alive) = running.await.settle();
            let failure = match outcome {
                RunOutcome::Failed(failure)
                    if !alive
                        && may_restart_in_place(&report.run, in_place, attempts)
                        && report.run.renew() =>
                {
                    failure
                }
                outcome => return report.send(outcome),
            };
            attempts = attempts.saturating_add(1);
            // The driver's span is the current one here (see `Driver`).
            tracing::Span::current().record("attempt", attempts);
            report.run.cells().report_renewal();
            let events = &report.run.settings().events;
            let _ = events.send(Message::RanAgain(RanAgain {
                id: report.run.id(),
                attempts,
                failure,
            }));
            // Invariant 4: wait for the loop when it falls behind, then let others run. A stop
            // ends the wait: the check below sees it.
            while report.run.cells().unreported() >= MAX_UNREPORTED
                && !report.run.cells().stopping()
                && !events.is_closed()
            {
                tokio::task::yield_now().await;
            }
            tokio::task::consume_budget().await;
            // The loop may have stopped the new run (a kill, a restart, the supervisor's end)
            // while it was not started yet: then it never starts. The loop has decided what
            // follows, so the outcome reported does not matter.
            if report.run.cells().stopping() || report.run.settings().ending.load(Ordering::Acquire)
            {
                return report.send(RunOutcome::Dropped { panicked: false });
            }
        }
    }
}

/// Whether a run that failed without proving alive may be followed by the next at once, by its
/// own driver: the task restarts in place (`in_place`, see [`DriverStart`]), an attempt is
/// left, the supervisor is not ending, and the run never beat. A context the run gave away
/// does not stand in the way: it belongs to the old run's generation, so it cannot beat, stop
/// or ask a token for the new one.
fn may_restart_in_place(run: &RunRef, in_place: Option<Option<u32>>, attempts: u32) -> bool {
    let Some(limit) = in_place else {
        return false;
    };
    let settings = run.settings();
    restart::attempts_left(limit, attempts)
        && !settings.ending.load(Ordering::Acquire)
        && !settings.events.is_closed()
        && run.last_beat().is_none()
}

/// What [`DriverStart::in_place`] is for a task of `policy`.
pub(crate) fn in_place_of(policy: &crate::spec::TaskPolicy) -> Option<Option<u32>> {
    (policy.restart_in_place && restart::policy_restarts(policy.restart, Ending::Failed))
        .then_some(policy.max_restart_attempts)
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

/// Runs `task` once as `run`, in its context (the boxed path), and drops it after its run's
/// future.
///
/// Written as a function returning a block, not as an `async fn`, and with only the run's own
/// (already boxed) future inside: this future lives in every supervised task's Tokio task,
/// and each byte of it shows at 100k tasks.
#[allow(clippy::manual_async_fn)] // An `async fn` would keep its arguments twice.
fn supervise(
    mut task: Box<dyn SupervisedTask>,
    run: &RunRef,
    watched_from_start: bool,
) -> impl Future<Output = Ended> + Send + '_ {
    async move {
        let instance = &mut *task;
        // Moved into the closure's body, so the run's future may borrow the task for as long
        // as the task lives (a reborrow would end with the closure).
        let start = move || {
            let instance = instance;
            instance.run()
        };
        let made = {
            let local = RunLocal::new(run);
            let _entered = local.enter();
            catch_unwind(AssertUnwindSafe(start))
        };
        let mut ended = RunToEnd::new(made, run, watched_from_start).await;
        let dropped = catch_unwind(AssertUnwindSafe(move || drop(task)));
        ended.dropped_too(dropped);
        ended
    }
}

/// A panic's payload, caught.
type Payload = Box<dyn Any + Send>;

/// How a run ended, before its outcome is settled: what its polls gave, whether dropping what
/// it left panicked, and whether it proved alive.
pub(crate) struct Ended {
    polled: Result<TaskResult, Payload>,
    dropped: Result<(), Payload>,
    /// A failure of the driver's own, found before the run could start.
    failure: Option<Failure>,
    alive: bool,
}

impl Ended {
    fn failed(failure: Failure) -> Self {
        Self {
            polled: Ok(Ok(())),
            dropped: Ok(()),
            failure: Some(failure),
            alive: false,
        }
    }

    /// Adds the result of one more drop after the run's (its instance's): a first panic wins,
    /// a second is disposed of.
    fn dropped_too(&mut self, dropped: Result<(), Payload>) {
        if let Err(payload) = dropped {
            if self.dropped.is_ok() {
                self.dropped = Err(payload);
            } else {
                dispose(payload);
            }
        }
    }

    /// The run's outcome, and whether it proved alive (polled once without finishing, or beat).
    fn settle(self) -> (RunOutcome, bool) {
        let outcome = match (self.failure, self.polled, self.dropped) {
            (Some(failure), _, _) => RunOutcome::Failed(failure),
            (None, Err(payload), dropped) => {
                if let Err(second) = dropped {
                    dispose(second);
                }
                panicked(payload)
            }
            (None, Ok(_), Err(payload)) => panicked(payload),
            (None, Ok(result), Ok(())) => outcome_of(result),
        };
        (outcome, self.alive)
    }
}

pin_project_lite::pin_project! {
    /// One run's future, polled to its end inside the run's context and dropped there, each
    /// poll and the drop with panics caught; the run's future is held inline.
    ///
    /// `watched_from_start` is true for tasks that declared heartbeats: they prove alive with
    /// their first beat (reported by the beat itself) rather than their first poll.
    pub(crate) struct RunToEnd<'a, F> {
        #[pin]
        stage: Stage<F>,
        // What this thread's current run points to during every poll and the drop.
        local: RunLocal<'a>,
        watch: AliveWatch,
    }

    impl<F> PinnedDrop for RunToEnd<'_, F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped mid-run (the driver aborted): the run's `Drop` still finds its context.
            // A panic here unwinds to the driver's own drop, which catches it.
            let this = this.project();
            let _entered = this.local.enter();
            let mut stage = this.stage;
            stage.set(Stage::Done);
        }
    }
}

pin_project_lite::pin_project! {
    /// A run's future, or why there is none: one field where a run that could not be made and a
    /// run that is over would take two (every byte of the driver's future counts, see
    /// [`Driver`]).
    #[project = StageProj]
    enum Stage<F> {
        Running { #[pin] future: F },
        // The run could not be made: its panic, until the first poll reports it.
        Unmade { payload: Option<Payload> },
        // Ended, and dropped.
        Done,
    }
}

impl<'a, F: Future<Output = TaskResult>> RunToEnd<'a, F> {
    /// Runs what `made` made, or reports its panic.
    pub(crate) fn new(
        made: Result<F, Payload>,
        run_ref: &'a RunRef,
        watched_from_start: bool,
    ) -> Self {
        let stage = match made {
            Ok(future) => Stage::Running { future },
            Err(payload) => Stage::Unmade {
                payload: Some(payload),
            },
        };
        Self {
            stage,
            local: RunLocal::new(run_ref),
            watch: AliveWatch {
                reported: watched_from_start,
                polled_alive: false,
            },
        }
    }
}

impl<F: Future<Output = TaskResult>> Future for RunToEnd<'_, F> {
    type Output = Ended;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let mut this = self.project();
        let local: &RunLocal<'_> = this.local;
        let polled = match this.stage.as_mut().project() {
            StageProj::Running { future } => match this.watch.poll(future, local, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(polled) => polled,
            },
            StageProj::Unmade { payload } => match payload.take() {
                Some(payload) => Err(payload),
                None => return Poll::Pending, // Reported already; never polled again.
            },
            StageProj::Done => return Poll::Pending, // Ended already; never polled again.
        };
        // Drop whatever is left of the run here, in its context, where a panicking `Drop` is
        // caught.
        let dropped = {
            let _entered = local.enter();
            catch_unwind(AssertUnwindSafe(|| this.stage.set(Stage::Done)))
        };
        let alive = this.watch.polled_alive || local.run().last_beat().is_some();
        Poll::Ready(Ended {
            polled,
            dropped,
            failure: None,
            alive,
        })
    }
}

/// Whether a run has proved alive, and whether the loop has been told.
struct AliveWatch {
    reported: bool,
    polled_alive: bool,
}

impl AliveWatch {
    /// Polls the run once in its context, catching a panic, and tells the loop when it first
    /// proves alive.
    fn poll<F: Future<Output = TaskResult>>(
        &mut self,
        running: Pin<&mut F>,
        local: &RunLocal<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<TaskResult, Payload>> {
        // Marks this thread as inside a poll of the task, for the blocked-poll watcher. The
        // supervisor's key is in the settings every run shares (a line in every worker's
        // cache), not in the driver's future, whose every byte counts.
        let _polling = local
            .settings()
            .poll_watch
            .map(|supervisor| Polling::enter(task_key(supervisor, local.run().slot())));
        let polled = {
            let _entered = local.enter();
            catch_unwind(AssertUnwindSafe(|| running.poll(cx)))
        };
        match polled {
            Ok(Poll::Pending) => {
                self.polled_alive = true;
                if !self.reported {
                    // Polled once and still running: alive. A first beat during that poll
                    // has told the loop already.
                    self.reported = true;
                    let run = local.run();
                    if run.last_beat().is_none() {
                        // The loop may be gone (shutdown): then nobody needs the news.
                        let _ = run.settings().events.send(Message::Progress(RunProgress {
                            id: run.id(),
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
