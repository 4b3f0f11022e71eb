//! The run context: what code inside a run uses to reach its supervisor.
//!
//! Each run gets its own [`RunShared`], made this thread's current run around every poll (and
//! the drop) of the run's future, so `run` reaches it without any change to
//! [`SupervisedTask`](crate::SupervisedTask)'s signature.
//!
//! # Invariants
//!
//! 1. A heartbeat is one clock read, at most two atomic loads and one compare-and-swap, into the task's
//!    place in the task table (see [`crate::table`]). It allocates nothing and takes no lock.
//!    Only a run's first beat also sends one message, so the loop learns at once that the run
//!    is alive and starts watching it.
//! 2. A run's beat in the table is "none" until the run's first beat, and its latest stamp from
//!    then on; a context that outlived its run cannot write into a later run's (invariant 2 of
//!    the table).
//! 3. Once the loop has asked a run to stop, the run's cancellation token is cancelled, whether
//!    the run asked for the token before or after the stop.
//! 4. One `RunShared` serves one run at a time. Its driver may hand it on to the next run in
//!    place ([`RunShared::renew`]) only when nothing but the driver and the loop holds it, the
//!    run never proved alive, never asked for its token and was never asked to stop; the
//!    generation it carries then moves on, so a stop meant for the old run cannot reach the new
//!    one ([`RunShared::request_stop`] with an expected generation).
//! 5. This thread's current run (see [`RunShared::enter`]) is set only while the driver polls
//!    or drops the run's future, and the driver holds an `Arc` of it for all that time: the
//!    pointer it is kept as never outlives what it points to, and no other thread ever sees it.
//!
//! # Why sharing is safe
//!
//! The run and the loop share only atomics and a `OnceLock`. The stop handshake (invariant 3)
//! runs through one atomic word that holds the run's generation and its flags: the loop sets
//! `STOP`, a run asking for its token sets `COOPERATIVE`, and each side reads the other's flag
//! from the same read-modify-write, so whichever side comes second cancels the token. A renewal
//! is a compare-and-swap of that same word from "this generation, no flag" to "next generation,
//! no flag": it and a stop are ordered, and exactly one of them wins.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::message::{Message, RunId, RunProgress};
use crate::shared::{HandleInner, Shared};
use crate::spec::TaskPolicy;
use crate::sync::{AtomicU32, AtomicU64, OnceLock, Ordering};
use crate::table::{self, TaskChunk, CHUNK};

std::thread_local! {
    /// The run whose future this thread is polling or dropping now, or null (invariant 5): two
    /// pointer stores around every poll, where a `task_local!` swaps an `Arc` through a
    /// `RefCell`. It points into the driver's own future, which the poll touches anyway.
    static CURRENT_RUN: std::cell::Cell<*const RunLocal<'static>> =
        const { std::cell::Cell::new(std::ptr::null()) };
}

/// Calls `f` with this thread's current run, if it is inside one.
fn with_current<R>(f: impl FnOnce(&RunLocal<'_>) -> R) -> Option<R> {
    let current = CURRENT_RUN.try_with(std::cell::Cell::get).ok()?;
    // SAFETY: a non-null current run was set by `RunLocal::enter` from a reference that its
    // guard borrows, and is put back before that borrow ends (invariant 5), so it points to a
    // live `RunLocal` for as long as this call lasts; the lifetime it is read with does not
    // outlive the call.
    let local = unsafe { current.as_ref() }?;
    Some(f(local))
}

/// This thread's current run while it lives (see [`RunLocal::enter`]); puts back the run that
/// was current before it when dropped. Never forgotten (`mem::forget`): only the driver makes
/// one, and drops it on the same stack frame, unwinding or not.
pub(crate) struct Entered<'a> {
    previous: *const RunLocal<'static>,
    _local: std::marker::PhantomData<&'a ()>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        // Fails only while the thread's locals are being destroyed: nothing reads it then.
        let _ = CURRENT_RUN.try_with(|current| current.set(self.previous));
    }
}

/// What code inside a run reaches through this thread's current run: a copy of what a
/// heartbeat needs (the run's generation, its beat's place in the table, the supervisor's
/// settings), kept in the driver's future. A beat from the run's own code then touches the
/// driver's future, the settings all runs share and one line of beats, never the run's
/// separately allocated [`RunShared`]. It serves one run (one generation): a run its driver
/// replaces in place gets a new one.
pub(crate) struct RunLocal<'a> {
    shared: &'a Arc<RunShared>,
    settings: &'a RunSettings,
    beat: &'a AtomicU64,
    generation: u32,
}

impl<'a> RunLocal<'a> {
    /// The run `shared` serves now.
    pub(crate) fn new(shared: &'a Arc<RunShared>) -> Self {
        Self {
            shared,
            settings: &shared.settings,
            beat: shared.beat_cell(),
            generation: shared.generation(),
        }
    }

    /// The run's shared state.
    pub(crate) fn shared(&self) -> &'a Arc<RunShared> {
        self.shared
    }

    /// Makes this run the thread's current run until the guard is dropped: what
    /// [`heartbeat`] and [`TaskContext::current`] find. The driver enters it around every
    /// poll and the drop of the run's future, and around the call that makes that future.
    pub(crate) fn enter(&self) -> Entered<'_> {
        let this: *const RunLocal<'_> = self;
        let previous = CURRENT_RUN
            .try_with(|current| current.replace(this.cast()))
            .unwrap_or(std::ptr::null());
        Entered {
            previous,
            _local: std::marker::PhantomData,
        }
    }

    fn beat(&self) {
        if beat(self.settings, self.beat, self.generation) {
            // Only now the run's own state: its slot.
            announce_first_beat(self.settings, self.shared.slot, self.generation);
        }
    }
}

/// A beat of the run of `generation` into `cell` (invariant 1); returns whether it was the
/// run's first.
fn beat(settings: &RunSettings, cell: &AtomicU64, generation: u32) -> bool {
    table::beat(cell, generation, settings.stamp(Instant::now()))
}

/// Tells the loop of the first beat of the run of `generation` of task `slot`, wherever it
/// came from (the run, or a task it handed its context to). The loop may be gone (shutdown):
/// then nobody needs the news.
fn announce_first_beat(settings: &RunSettings, slot: u32, generation: u32) {
    let _ = settings.events.send(Message::Progress(RunProgress {
        id: RunId { slot, generation },
        alive: true,
        beaten: true,
    }));
}

/// Set by the loop when it wants the run to end.
const STOP: u64 = 1;
/// Set once the run has asked for its cancellation token or checked for cancellation: such a
/// run gets the grace period to finish; any other run is dropped at once.
const COOPERATIVE: u64 = 2;
/// Set by a run that runs a child supervisor: when its grace period is over, the loop asks the
/// child to drop every run at once instead of dropping the run itself, so that the run still
/// ends only after every run of the child has ended (invariant 10 of the loop).
const STOPS_ITS_CHILD: u64 = 4;
/// Set by the loop on a run that stops its child, when its grace period is over: the run's
/// child must drop every run at once (the loop tells it, or the run does when it links the
/// child after the loop looked).
const FORCED: u64 = 8;
/// The flags live in the low bits of the state word, the generation in the high 32.
const GENERATION_SHIFT: u32 = 32;

fn state_of(generation: u32) -> u64 {
    u64::from(generation) << GENERATION_SHIFT
}

fn generation_of(state: u64) -> u32 {
    (state >> GENERATION_SHIFT) as u32
}

/// Settings shared by every run of one supervisor.
#[derive(Debug)]
pub(crate) struct RunSettings {
    /// The zero of every heartbeat timestamp.
    pub(crate) epoch: Instant,
    /// The beat period tasks are told to keep.
    pub(crate) heartbeat_interval: Duration,
    /// Set once the supervisor is ending: no more restarts in place.
    pub(crate) ending: Arc<std::sync::atomic::AtomicBool>,
    /// Where runs report progress to the loop: one sender for all runs, not one per run.
    pub(crate) events: tokio::sync::mpsc::UnboundedSender<Message>,
    /// The supervisor's shared state, for a run that runs a child supervisor to make it
    /// reachable from the parent's handle.
    pub(crate) supervisor: Weak<Shared>,
    /// The id the blocked-poll watcher knows the supervisor by, if it watches its polls.
    pub(crate) poll_watch: Option<u32>,
}

impl RunSettings {
    /// Microseconds from the epoch to `instant`, rounded up (so that a deadline computed from
    /// a beat is never early), plus one so that zero can mean "never"; at most what a beat can
    /// hold (about eight years).
    pub(crate) fn stamp(&self, instant: Instant) -> u64 {
        stamp_since(self.epoch, instant)
    }

    /// The instant a [`stamp`](Self::stamp) stands for.
    pub(crate) fn instant_of(&self, stamp: u64) -> Instant {
        instant_of_stamp(self.epoch, stamp)
    }
}

/// Microseconds from `epoch` to `instant`, rounded up, plus one (zero means "never"), and at
/// most what a beat can hold.
pub(crate) fn stamp_since(epoch: Instant, instant: Instant) -> u64 {
    let nanos = instant.saturating_duration_since(epoch).as_nanos();
    let micros = u64::try_from(nanos.div_ceil(1_000)).unwrap_or(u64::MAX);
    micros.saturating_add(1).min(table::MAX_STAMP)
}

/// The instant a stamp of [`stamp_since`] stands for.
pub(crate) fn instant_of_stamp(epoch: Instant, stamp: u64) -> Instant {
    epoch + Duration::from_micros(stamp.saturating_sub(1))
}

/// State shared between one run and the loop.
#[derive(Debug)]
pub(crate) struct RunShared {
    slot: u32,
    /// Restarts in place its driver has reported and the loop has not handled yet.
    unreported: AtomicU32,
    settings: Arc<RunSettings>,
    /// The task's policy, which its driver decides restarts in place by.
    policy: Arc<TaskPolicy>,
    /// The chunk of the task table that holds this task's beat.
    table: Arc<TaskChunk>,
    /// The run's generation (high 32 bits) and its flags (`STOP`, `COOPERATIVE`).
    state: AtomicU64,
    /// Made on first request: most runs never ask for one.
    token: OnceLock<CancellationToken>,
}

impl RunShared {
    pub(crate) fn new(
        id: RunId,
        settings: Arc<RunSettings>,
        policy: Arc<TaskPolicy>,
        table: Arc<TaskChunk>,
    ) -> Self {
        let shared = Self {
            slot: id.slot,
            unreported: AtomicU32::new(0),
            settings,
            policy,
            table,
            state: AtomicU64::new(state_of(id.generation)),
            token: OnceLock::new(),
        };
        shared.give_beat_to(id.generation);
        shared
    }

    /// Gives the task's beat to the run of `generation`, which has not beaten yet. Done before
    /// the run exists, so that no beat of an earlier run's context lands in this one's. A swap,
    /// not a store: an earlier run's context may be beating at this instant, and its
    /// compare-and-swap must see this write as the latest (a store would do on real hardware;
    /// `loom`, tokio-rs/loom#389, only models a read-modify-write in the order it happened).
    fn give_beat_to(&self, generation: u32) {
        self.beat_cell()
            .swap(table::beat_value(generation, 0), Ordering::AcqRel);
    }

    /// Makes this state new again for the run `id`. Only possible through `Arc::get_mut`, so
    /// nothing else holds it: no beat or stop of the last run can reach the next one.
    pub(crate) fn reset(&mut self, id: RunId) {
        self.slot = id.slot;
        self.unreported = AtomicU32::new(0);
        self.state = AtomicU64::new(state_of(id.generation));
        self.token = OnceLock::new();
        self.give_beat_to(id.generation);
    }

    /// The task's slot.
    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    /// The run this state currently serves.
    pub(crate) fn id(&self) -> RunId {
        RunId {
            slot: self.slot,
            generation: self.generation(),
        }
    }

    /// The generation of the run this state currently serves.
    pub(crate) fn generation(&self) -> u32 {
        generation_of(self.state.load(Ordering::Acquire))
    }

    /// Hands this state from run `generation` on to the next run, in place. Succeeds only when
    /// that run asked for no token and was not asked to stop (invariant 4): then no token needs
    /// replacing, and no stop is lost. The caller has checked that the run never beat; the
    /// beat is handed on to the next run too.
    pub(crate) fn renew(&self, generation: u32) -> bool {
        let next = generation.wrapping_add(1);
        let renewed = self
            .state
            .compare_exchange(
                state_of(generation),
                state_of(next),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if renewed {
            self.give_beat_to(next);
        }
        renewed
    }

    fn beat_cell(&self) -> &AtomicU64 {
        self.table.beat_cell(self.slot as usize % CHUNK)
    }

    /// Counts one more restart in place reported to the loop; returns how many are unhandled.
    pub(crate) fn report_renewal(&self) -> u32 {
        self.unreported.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The loop has handled one reported restart in place.
    pub(crate) fn renewal_handled(&self) {
        self.unreported.fetch_sub(1, Ordering::AcqRel);
    }

    /// Reported restarts in place the loop has not handled yet.
    pub(crate) fn unreported(&self) -> u32 {
        self.unreported.load(Ordering::Acquire)
    }

    pub(crate) fn settings(&self) -> &RunSettings {
        &self.settings
    }

    pub(crate) fn policy(&self) -> &TaskPolicy {
        &self.policy
    }

    pub(crate) fn beat(&self) {
        let generation = self.generation();
        if beat(&self.settings, self.beat_cell(), generation) {
            announce_first_beat(&self.settings, self.slot, generation);
        }
    }

    /// The stamp of the current run's last heartbeat, `None` before its first one.
    pub(crate) fn last_beat(&self) -> Option<u64> {
        table::beat_of(self.beat_cell().load(Ordering::Relaxed), self.generation())
    }

    pub(crate) fn token(&self) -> CancellationToken {
        let token = self.token.get_or_init(CancellationToken::new).clone();
        let before = self.state.fetch_or(COOPERATIVE, Ordering::AcqRel);
        if before & STOP != 0 {
            token.cancel();
        }
        token
    }

    pub(crate) fn is_stop_requested(&self) -> bool {
        let before = self.state.fetch_or(COOPERATIVE, Ordering::AcqRel);
        before & STOP != 0
    }

    /// Whether this run runs a child supervisor (see [`STOPS_ITS_CHILD`]).
    pub(crate) fn stops_its_child(&self) -> bool {
        self.state.load(Ordering::Acquire) & STOPS_ITS_CHILD != 0
    }

    /// The loop's grace for this run (which stops its child) is over: its child must drop
    /// every run at once. Only the flag is set here; see [`TaskContext::adopt_child`].
    pub(crate) fn force(&self) {
        self.state.fetch_or(FORCED, Ordering::AcqRel);
    }

    /// Whether the loop has asked the current run to stop. Unlike
    /// [`is_stop_requested`](Self::is_stop_requested), this is the driver's look and marks
    /// nothing.
    pub(crate) fn stopping(&self) -> bool {
        self.state.load(Ordering::Acquire) & STOP != 0
    }

    /// Asks the run to stop: the run of generation `expected`, or whichever run this state
    /// serves when `expected` is `None`. Returns `None` when `expected` is no longer the
    /// current run (its driver has started the next one in place), `Some(true)` when the run is
    /// cooperative (it asked for its token), so it deserves a grace period, and `Some(false)`
    /// when it should be dropped at once.
    pub(crate) fn request_stop(&self, expected: Option<u32>) -> Option<bool> {
        let before = match expected {
            None => self.state.fetch_or(STOP, Ordering::AcqRel),
            Some(generation) => {
                let mut current = self.state.load(Ordering::Acquire);
                loop {
                    if generation_of(current) != generation {
                        return None;
                    }
                    match self.state.compare_exchange_weak(
                        current,
                        current | STOP,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(before) => break before,
                        Err(actual) => current = actual,
                    }
                }
            }
        };
        Some(self.cancel_if_cooperative(before))
    }

    fn cancel_if_cooperative(&self, before: u64) -> bool {
        if before & COOPERATIVE == 0 {
            return false;
        }
        if let Some(token) = self.token.get() {
            token.cancel();
        }
        true
    }
}

/// Sends a heartbeat for the run this code is part of.
///
/// This is the cheapest way to beat: one clock read and one compare-and-swap. Called outside a
/// supervised run (including from a task the run spawned: take a [`TaskContext`] along for
/// that), it does nothing; [`TaskContext::current`] tells whether there is a run to beat for.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_trait::async_trait;
/// use task_supervisor::{heartbeat, SupervisedTask, TaskResult};
///
/// #[derive(Clone)]
/// struct Ticker;
///
/// #[async_trait]
/// impl SupervisedTask for Ticker {
///     async fn run(&mut self) -> TaskResult {
///         loop {
///             heartbeat();
///             tokio::time::sleep(Duration::from_millis(100)).await;
///         }
///     }
///
///     fn sends_heartbeats(&self) -> bool {
///         true
///     }
/// }
/// ```
pub fn heartbeat() {
    let _outside_a_run = with_current(|run| run.beat());
}

/// A run's link to its supervisor: heartbeats and cancellation.
///
/// Get it inside [`SupervisedTask::run`](crate::SupervisedTask::run) with
/// [`TaskContext::current`]. It is cheap to clone and can be moved into tasks the run spawns,
/// so that they beat or watch for cancellation on the run's behalf. It belongs to one run: a
/// context kept after its run ended affects nothing.
///
/// # Examples
///
/// A run that beats while it works and finishes cleanly when asked to stop:
///
/// ```
/// use async_trait::async_trait;
/// use task_supervisor::{SupervisedTask, TaskContext, TaskResult};
///
/// #[derive(Clone)]
/// struct Worker;
///
/// #[async_trait]
/// impl SupervisedTask for Worker {
///     async fn run(&mut self) -> TaskResult {
///         let context = TaskContext::current().expect("run by a supervisor");
///         let stop = context.cancellation_token();
///         let mut tick = tokio::time::interval(context.heartbeat_interval());
///         loop {
///             tokio::select! {
///                 _ = stop.cancelled() => return Ok(()), // flush, close, then return
///                 _ = tick.tick() => context.heartbeat(),
///             }
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct TaskContext {
    run: Arc<RunShared>,
}

impl TaskContext {
    /// The context of the run this code is part of, or `None` outside a supervised run.
    pub fn current() -> Option<TaskContext> {
        with_current(|local| TaskContext {
            run: Arc::clone(local.shared),
        })
    }

    /// Tells the supervisor the run is making progress.
    ///
    /// The first heartbeat of a run proves it alive (`Starting` becomes `Healthy`) and opts
    /// the run into hang detection: from then on, a run silent for longer than the
    /// supervisor's `timeout_threshold` is stopped and restarted.
    pub fn heartbeat(&self) {
        self.run.beat();
    }

    /// The token the supervisor cancels when it wants this run to finish (on `restart`,
    /// `kill_task`, `shutdown`, or when the run is hung).
    ///
    /// Asking for the token marks the run as cooperative: when stopped, it gets the
    /// supervisor's grace period to return before it is dropped. A run that never asks is
    /// dropped at once, since it could not know it should finish.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.run.token()
    }

    /// Whether the supervisor has asked this run to finish. Checking marks the run as
    /// cooperative, as [`cancellation_token`](Self::cancellation_token) does.
    pub fn is_cancelled(&self) -> bool {
        self.run.is_stop_requested()
    }

    /// The beat period the supervisor asks its tasks to keep.
    pub fn heartbeat_interval(&self) -> Duration {
        self.run.settings.heartbeat_interval
    }

    /// Declares that this run runs a child supervisor: the parent will not drop it when its
    /// grace period is over, but have its child drop every run of its own, so that the run
    /// ends only after the child has. Called before the run can be stopped at all (before it
    /// asks for its token), so that no stop finds it undeclared.
    pub(crate) fn will_run_a_child(&self) {
        self.run.state.fetch_or(STOPS_ITS_CHILD, Ordering::AcqRel);
    }

    /// Makes `child`, the supervisor this run runs, reachable from the parent's handle. If the
    /// parent already gave up waiting for the run (it forced it before the child existed), the
    /// child is told at once to drop every run. The link is undone when the returned guard is
    /// dropped.
    pub(crate) fn adopt_child(&self, child: Weak<HandleInner>) -> ChildLink {
        let slot = self.run.id().slot;
        let supervisor = self.run.settings.supervisor.clone();
        if let Some(shared) = supervisor.upgrade() {
            shared.adopt_child(slot, child.clone());
        }
        // After the link (a mutex the loop's look takes too): a force that looked before it
        // is seen here; one that looks after it finds the child. Telling it twice is harmless.
        if self.run.state.load(Ordering::Acquire) & FORCED != 0 {
            if let Some(child) = child.upgrade() {
                let _ = child.shared.sender.send(Message::DropEveryRun);
            }
        }
        ChildLink {
            supervisor,
            slot,
            child,
        }
    }
}

/// Undoes a [`TaskContext::adopt_child`] when dropped.
pub(crate) struct ChildLink {
    supervisor: Weak<Shared>,
    slot: u32,
    child: Weak<HandleInner>,
}

impl Drop for ChildLink {
    fn drop(&mut self) {
        if let Some(shared) = self.supervisor.upgrade() {
            shared.release_child(self.slot, &self.child);
        }
    }
}

/// One run's shared state, for the `loom` model checks in `tests/loom.rs` (built with
/// `--cfg loom` only; not part of the public API).
#[cfg(loom)]
#[doc(hidden)]
pub struct LoomRun {
    shared: Arc<RunShared>,
    events: std::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Message>>,
}

#[cfg(loom)]
impl LoomRun {
    /// A run of slot 0, generation 1, whose progress messages [`Self::progress_messages`]
    /// counts.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let settings = Arc::new(RunSettings {
            epoch: Instant::now(),
            heartbeat_interval: Duration::from_millis(100),
            ending: Arc::default(),
            events: sender,
            supervisor: Weak::new(),
            poll_watch: None,
        });
        let id = RunId {
            slot: 0,
            generation: 1,
        };
        Self {
            shared: Arc::new(RunShared::new(
                id,
                settings,
                Arc::default(),
                TaskChunk::new(),
            )),
            events: std::sync::Mutex::new(receiver),
        }
    }

    /// The next run of the same task, as the loop starts it while something (a context the
    /// last run gave away) still holds this run's state: a new state for the next generation,
    /// over the same place in the task table, whose progress messages it counts.
    pub fn next_run(&self) -> Self {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let old = &self.shared;
        let settings = Arc::new(RunSettings {
            epoch: old.settings.epoch,
            heartbeat_interval: old.settings.heartbeat_interval,
            ending: Arc::default(),
            events: sender,
            supervisor: Weak::new(),
            poll_watch: None,
        });
        let id = RunId {
            slot: old.slot,
            generation: old.generation().wrapping_add(1),
        };
        Self {
            shared: Arc::new(RunShared::new(
                id,
                settings,
                Arc::default(),
                Arc::clone(&old.table),
            )),
            events: std::sync::Mutex::new(receiver),
        }
    }

    /// [`RunShared::beat`], as a run's heartbeat calls it.
    pub fn beat(&self) {
        self.shared.beat();
    }

    /// [`RunShared::last_beat`], as the loop's heartbeat check reads it.
    pub fn last_beat(&self) -> Option<u64> {
        self.shared.last_beat()
    }

    /// The beat of the run of `generation` as the loop's heartbeat check reads it: through the
    /// task's place in the dense table ([`crate::table::TaskCells::beat_of`]) with the
    /// generation its slot holds, without touching this run's state.
    pub fn loop_beat(&self, generation: u32) -> Option<u64> {
        table::TaskCells::new(Arc::clone(&self.shared.table), self.shared.slot).beat_of(generation)
    }

    /// [`RunShared::token`], as [`TaskContext::cancellation_token`] calls it.
    pub fn token(&self) -> CancellationToken {
        self.shared.token()
    }

    /// [`RunShared::is_stop_requested`], as [`TaskContext::is_cancelled`] calls it.
    pub fn is_stop_requested(&self) -> bool {
        self.shared.is_stop_requested()
    }

    /// [`RunShared::request_stop`] of whichever run is current, as a kill, a restart or a
    /// shutdown calls it.
    pub fn request_stop(&self) -> bool {
        self.shared.request_stop(None).unwrap_or(false)
    }

    /// [`RunShared::request_stop`] of run `generation`, as the loop's hang check calls it:
    /// `None` when that run is no longer current.
    pub fn request_stop_of(&self, generation: u32) -> Option<bool> {
        self.shared.request_stop(Some(generation))
    }

    /// [`RunShared::renew`], as a driver calls it to start the next run in place.
    pub fn renew(&self, generation: u32) -> bool {
        self.shared.renew(generation)
    }

    /// The generation of the run this state serves.
    pub fn generation(&self) -> u32 {
        self.shared.generation()
    }

    /// How many progress messages the run has sent to the loop since the last call.
    pub fn progress_messages(&self) -> usize {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut count = 0;
        while events.try_recv().is_ok() {
            count += 1;
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Arc<RunShared> {
        let id = RunId {
            slot: 0,
            generation: 1,
        };
        Arc::new(RunShared::new(
            id,
            Arc::new(RunSettings {
                epoch: Instant::now(),
                heartbeat_interval: Duration::from_millis(100),
                ending: Arc::default(),
                events: tokio::sync::mpsc::unbounded_channel().0,
                supervisor: Weak::new(),
                poll_watch: None,
            }),
            Arc::default(),
            TaskChunk::new(),
        ))
    }

    #[tokio::test]
    async fn heartbeat_outside_a_run_does_nothing() {
        heartbeat();
        assert!(TaskContext::current().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_inside_a_run_stores_the_time() {
        let shared = run();
        tokio::time::advance(Duration::from_millis(5)).await;
        let inside = {
            let local = RunLocal::new(&shared);
            let _entered = local.enter();
            heartbeat();
            TaskContext::current().is_some()
        };
        assert!(inside);
        assert!(TaskContext::current().is_none(), "left with the guard");
        let stamp = shared.last_beat().expect("a beat was stored");
        assert_eq!(
            shared.settings().instant_of(stamp),
            shared.settings().epoch + Duration::from_millis(5)
        );
    }

    #[test]
    fn stop_before_the_token_is_asked_for_still_cancels_it() {
        let shared = run();
        assert_eq!(
            shared.request_stop(None),
            Some(false),
            "not cooperative yet"
        );
        assert!(shared.token().is_cancelled());
    }

    #[test]
    fn stop_after_the_token_is_asked_for_cancels_it() {
        let shared = run();
        let token = shared.token();
        assert!(!token.is_cancelled());
        assert_eq!(shared.request_stop(None), Some(true), "cooperative");
        assert!(token.is_cancelled());
    }

    #[test]
    fn a_renewal_moves_the_generation_on_and_a_stop_for_the_old_run_misses() {
        let shared = run();
        assert!(shared.renew(1));
        assert_eq!(shared.id().generation, 2);
        assert_eq!(shared.request_stop(Some(1)), None, "run 1 is gone");
        assert!(!shared.stopping());
        assert_eq!(shared.request_stop(Some(2)), Some(false));
        assert!(shared.stopping());
    }

    #[test]
    fn a_stopped_run_is_not_renewed() {
        let shared = run();
        assert_eq!(shared.request_stop(None), Some(false));
        assert!(
            !shared.renew(1),
            "the stop must reach the loop, not a new run"
        );
        assert_eq!(shared.generation(), 1);
    }

    #[test]
    fn a_run_that_asked_for_its_token_is_not_renewed() {
        let shared = run();
        let token = shared.token();
        assert!(
            !shared.renew(1),
            "its token cannot be handed to the next run"
        );
        assert!(!token.is_cancelled());
    }

    #[test]
    fn only_the_current_generation_renews() {
        let shared = run();
        assert!(!shared.renew(7));
        assert!(shared.renew(1));
        assert!(!shared.renew(1), "run 1 was renewed already");
    }

    #[test]
    fn checking_for_cancellation_makes_a_run_cooperative() {
        let shared = run();
        assert!(!shared.is_stop_requested());
        assert_eq!(shared.request_stop(None), Some(true));
        assert!(shared.is_stop_requested());
    }
}
