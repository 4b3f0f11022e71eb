//! The run context: what code inside a run uses to reach its supervisor.
//!
//! A run is a generation of its task's place in the task table: all that it shares with the
//! loop (its beat, its stop word, its cancellation token, its driver's unreported restarts)
//! sits there, in dense per-task arrays, and a run or a context knows its run by a [`RunRef`]:
//! the chunk, the slot and the generation. A run allocates nothing of its own. The driver makes
//! its run this thread's current run around every poll (and the drop) of the run's future, so
//! `run` reaches it without any change to [`SupervisedTask`](crate::SupervisedTask)'s
//! signature.
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
//! 4. A task's run state serves one run at a time, the one whose generation its stop word
//!    carries. The loop gives it to a new run ([`RunCells::begin`]) only once the last run has
//!    ended, and cancels the last run's token then. A driver hands it on to the next run in
//!    place ([`RunCells::renew`]) only when the run never proved alive, never asked for its
//!    token and was never asked to stop. A stop meant for an earlier run cannot reach a later
//!    one ([`RunCells::request_stop`] with an expected generation), and a context of an
//!    earlier run changes nothing of a later one: once the later run has started, its beat
//!    misses, its token is a cancelled one, its cancellation check says the run is over.
//! 5. This thread's current run (see [`RunLocal::enter`]) is set only while the driver polls
//!    or drops the run's future, and the driver's future holds what it points to for all that
//!    time: the pointer never outlives what it points to, and no other thread ever sees it.
//!
//! # Why sharing is safe
//!
//! The run and the loop share atomics and, per chunk of the task table, a mutex around the
//! tokens of its runs. The stop
//! handshake (invariant 3) runs through one atomic word that holds the run's generation and its
//! flags: the loop sets `STOP`, a run asking for its token sets `COOPERATIVE`, and each side
//! reads the other's flag from the same read-modify-write, so whichever side comes second
//! cancels the token. A run sets its flags only by a compare-and-swap from a word of its own
//! generation. A renewal is a compare-and-swap of that same word from "this generation, no
//! flag" to "next generation, no flag": it and a stop (or a token request) are ordered, and
//! exactly one of them wins. A token request sets `COOPERATIVE` and makes the token under the
//! mutex. The loop moves the word to a new run first, and takes the old run's token out under
//! the mutex if the word it replaced says that run asked for one: a token request of the old
//! run either set its flag before the move (then the loop waits for its token and cancels it)
//! or sees the new generation and gets a cancelled token. So the chunk never holds a token but
//! the current runs', and a task's token is there only when its word says `COOPERATIVE`.

use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::message::{Message, RunId, RunProgress};
use crate::shared::{HandleInner, Shared};
use crate::sync::{AtomicU64, Ordering};
use crate::table::{self, TaskChunk, Tokens, CHUNK};

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

/// What code inside a run reaches through this thread's current run: the run, and a copy of
/// what a heartbeat needs (its beat's place in the table, the supervisor's settings), kept in
/// the driver's future. A beat from the run's own code then touches the driver's future, the
/// settings all runs share and one line of beats. It serves one run (one generation): a run
/// its driver replaces in place gets a new one.
pub(crate) struct RunLocal<'a> {
    run: &'a RunRef,
    settings: &'a RunSettings,
    beat: &'a AtomicU64,
}

impl<'a> RunLocal<'a> {
    /// What `run` reaches from its code.
    pub(crate) fn new(run: &'a RunRef) -> Self {
        Self {
            run,
            settings: run.settings(),
            beat: run.beat_cell(),
        }
    }

    /// The run.
    pub(crate) fn run(&self) -> &'a RunRef {
        self.run
    }

    /// The settings the run shares with every run of its supervisor.
    pub(crate) fn settings(&self) -> &'a RunSettings {
        self.settings
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
        let generation = self.run.generation;
        if beat(self.settings, self.beat, generation) {
            announce_first_beat(self.settings, self.run.slot, generation);
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
    /// Settings of no supervisor, for tests: nobody receives what runs send.
    #[cfg(any(test, loom))]
    pub(crate) fn detached() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            heartbeat_interval: Duration::from_millis(100),
            ending: Arc::default(),
            events: tokio::sync::mpsc::unbounded_channel().0,
            supervisor: Weak::new(),
            poll_watch: None,
        })
    }

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

/// One run of a task, as its driver and its contexts know it: the chunk of the task table its
/// state sits in, the task's slot, and the run's generation (see the [module
/// documentation](self)). Cloning it costs one reference count.
#[derive(Debug, Clone)]
pub(crate) struct RunRef {
    chunk: Arc<TaskChunk>,
    slot: u32,
    generation: u32,
}

impl RunRef {
    /// Run `id`, whose state is in `chunk`.
    pub(crate) fn new(chunk: Arc<TaskChunk>, id: RunId) -> Self {
        Self {
            chunk,
            slot: id.slot,
            generation: id.generation,
        }
    }

    /// Which run this is.
    pub(crate) fn id(&self) -> RunId {
        RunId {
            slot: self.slot,
            generation: self.generation,
        }
    }

    /// The task's slot.
    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    /// The settings of the supervisor the run belongs to.
    pub(crate) fn settings(&self) -> &RunSettings {
        self.chunk.settings()
    }

    /// The task's run state, which serves this run or a later one.
    pub(crate) fn cells(&self) -> RunCells<'_> {
        RunCells::new(&self.chunk, self.slot as usize % CHUNK)
    }

    fn beat_cell(&self) -> &AtomicU64 {
        self.chunk.beat_cell(self.slot as usize % CHUNK)
    }

    /// A heartbeat of this run (invariant 1); the first is announced to the loop.
    ///
    /// A context handed to another task can outlive its run by any number of runs, and the
    /// beat's own check compares only 16 bits of the generation: this one compares all 32
    /// first, so a context 65 536 runs old (a crash loop restarting in place gets there fast)
    /// does not beat for the current run. The run's own beats, through [`RunLocal`], are
    /// always the current run's and skip it.
    pub(crate) fn beat(&self) {
        let state = self.cells().state().load(Ordering::Relaxed);
        if generation_of(state) != self.generation {
            return;
        }
        if beat(self.settings(), self.beat_cell(), self.generation) {
            announce_first_beat(self.settings(), self.slot, self.generation);
        }
    }

    /// The stamp of this run's last heartbeat, `None` before its first one (or once the task's
    /// beat belongs to a later run).
    pub(crate) fn last_beat(&self) -> Option<u64> {
        table::beat_of(self.beat_cell().load(Ordering::Relaxed), self.generation)
    }

    /// Hands the task's run state from this run on to the next, in place, and becomes that
    /// run (invariant 4). Returns whether it did; when not, nothing changed.
    pub(crate) fn renew(&mut self) -> bool {
        let renewed = self.cells().renew(self.generation);
        if renewed {
            self.generation = self.generation.wrapping_add(1);
        }
        renewed
    }

    /// This run's cancellation token (see [`TaskContext::cancellation_token`]).
    pub(crate) fn token(&self) -> CancellationToken {
        self.cells().token(self.generation)
    }

    /// Whether this run was asked to stop (see [`TaskContext::is_cancelled`]).
    pub(crate) fn is_stop_requested(&self) -> bool {
        self.cells().is_stop_requested(self.generation)
    }
}

/// One task's run state in the task table: the stop word, the token and the count of
/// restarts in place its driver reported that the loop has not handled. The loop and the
/// driver act on whichever run the state serves; a run acts only on its own generation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunCells<'a> {
    chunk: &'a TaskChunk,
    place: usize,
}

impl<'a> RunCells<'a> {
    /// The run state of the task at `place` in `chunk`.
    pub(crate) fn new(chunk: &'a TaskChunk, place: usize) -> Self {
        Self { chunk, place }
    }

    fn state(&self) -> &'a AtomicU64 {
        self.chunk.run_state(self.place)
    }

    fn lock_tokens(&self) -> crate::sync::MutexGuard<'a, Tokens> {
        // Nothing panics while it is held; a poisoned lock still holds a consistent value.
        self.chunk
            .tokens()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives the state to the run of `generation`, which has not started yet: no flag, no
    /// token, nothing unreported, no beat. The loop's call, once the last run has ended; that
    /// run's token, if it asked for one, is cancelled: a task it handed it to learns that the
    /// run is over.
    pub(crate) fn begin(&self, generation: u32) {
        let before = self.state().swap(state_of(generation), Ordering::AcqRel);
        self.chunk
            .unreported(self.place)
            .store(0, Ordering::Release);
        self.give_beat_to(generation);
        if before & COOPERATIVE != 0 {
            // The last run asked for its token: it is there, or its request still holds the
            // lock and puts it there first (see the module documentation).
            let old = self.lock_tokens().take(self.place);
            if let Some(old) = old {
                old.cancel();
            }
        }
    }

    /// Gives the task's beat to the run of `generation`, which has not beaten yet. Done before
    /// the run exists, so that no beat of an earlier run's context lands in this one's. A swap,
    /// not a store: an earlier run's context may be beating at this instant, and its
    /// compare-and-swap must see this write as the latest (a store would do on real hardware;
    /// `loom`, tokio-rs/loom#389, only models a read-modify-write in the order it happened).
    fn give_beat_to(&self, generation: u32) {
        self.chunk
            .beat_cell(self.place)
            .swap(table::beat_value(generation, 0), Ordering::AcqRel);
    }

    /// The generation of the run the state serves.
    #[cfg(loom)]
    fn generation(&self) -> u32 {
        generation_of(self.state().load(Ordering::Acquire))
    }

    /// Hands the state from run `generation` on to the next run, in place. Succeeds only when
    /// that run never beat, asked for no token and was not asked to stop (invariant 4): then
    /// no token needs replacing, no stop is lost and no beat of the old run is hidden. The beat
    /// is handed on to the next run too.
    fn renew(&self, generation: u32) -> bool {
        let next = generation.wrapping_add(1);
        // The beat first, from "run `generation`, never beaten": a context of that run that
        // beats now (a task the run handed it to) either lands first, and the run proved alive
        // after all, or misses. Checked before, the beat could land between the check and the
        // renewal, and its announcement would reach the loop for a run reported as never
        // alive.
        let beat = self.chunk.beat_cell(self.place);
        if beat
            .compare_exchange(
                table::beat_value(generation, 0),
                table::beat_value(next, 0),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return false;
        }
        let renewed = self
            .state()
            .compare_exchange(
                state_of(generation),
                state_of(next),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if !renewed {
            // A stop or a token request came first: the beat goes back to the run it belongs
            // to, unbeaten (a beat of that run's context in between missed, and its run has
            // ended anyway).
            beat.swap(table::beat_value(generation, 0), Ordering::AcqRel);
        }
        renewed
    }

    /// Sets `flag` on the state of run `generation`; what the state was before, or `None` if
    /// the state serves another run.
    fn mark(&self, generation: u32, flag: u64) -> Option<u64> {
        let state = self.state();
        let mut current = state.load(Ordering::Acquire);
        loop {
            if generation_of(current) != generation {
                return None;
            }
            match state.compare_exchange_weak(
                current,
                current | flag,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(before) => return Some(before),
                Err(actual) => current = actual,
            }
        }
    }

    /// Run `generation`'s token, made on its first request, which marks the run cooperative.
    /// A run that is over gets a cancelled token of its own.
    fn token(&self, generation: u32) -> CancellationToken {
        let mut tokens = self.lock_tokens();
        let Some(before) = self.mark(generation, COOPERATIVE) else {
            drop(tokens);
            let over = CancellationToken::new();
            over.cancel();
            return over;
        };
        let token = tokens.get_or_make(self.place);
        drop(tokens);
        if before & STOP != 0 {
            token.cancel();
        }
        token
    }

    /// Whether run `generation` was asked to stop (or is over); marks it cooperative.
    fn is_stop_requested(&self, generation: u32) -> bool {
        self.mark(generation, COOPERATIVE)
            .map_or(true, |before| before & STOP != 0)
    }

    /// Marks run `generation` as one that runs a child supervisor (see [`STOPS_ITS_CHILD`]).
    fn declare_child(&self, generation: u32) {
        let _ = self.mark(generation, STOPS_ITS_CHILD);
    }

    /// Whether the child supervisor of run `generation` must drop every run at once: the loop
    /// forced the run, or the run is over.
    fn forced(&self, generation: u32) -> bool {
        let state = self.state().load(Ordering::Acquire);
        generation_of(state) != generation || state & FORCED != 0
    }

    /// Whether the run the state serves runs a child supervisor (see [`STOPS_ITS_CHILD`]).
    pub(crate) fn stops_its_child(&self) -> bool {
        self.state().load(Ordering::Acquire) & STOPS_ITS_CHILD != 0
    }

    /// The loop's grace for the run (which stops its child) is over: its child must drop
    /// every run at once. Only the flag is set here; see [`TaskContext::adopt_child`].
    pub(crate) fn force(&self) {
        self.state().fetch_or(FORCED, Ordering::AcqRel);
    }

    /// Whether the loop has asked the run the state serves to stop. Unlike a run's own check,
    /// this is the driver's look and marks nothing.
    pub(crate) fn stopping(&self) -> bool {
        self.state().load(Ordering::Acquire) & STOP != 0
    }

    /// Counts one more restart in place reported to the loop; returns how many are unhandled.
    pub(crate) fn report_renewal(&self) -> u32 {
        self.chunk
            .unreported(self.place)
            .fetch_add(1, Ordering::AcqRel)
            + 1
    }

    /// The loop has handled one reported restart in place.
    pub(crate) fn renewal_handled(&self) {
        self.chunk
            .unreported(self.place)
            .fetch_sub(1, Ordering::AcqRel);
    }

    /// Reported restarts in place the loop has not handled yet.
    pub(crate) fn unreported(&self) -> u32 {
        self.chunk.unreported(self.place).load(Ordering::Acquire)
    }

    /// Asks the run to stop: the run of generation `expected`, or whichever run the state
    /// serves when `expected` is `None`. Returns `None` when `expected` is no longer the
    /// current run (its driver has started the next one in place), `Some(true)` when the run is
    /// cooperative (it asked for its token), so it deserves a grace period, and `Some(false)`
    /// when it should be dropped at once.
    pub(crate) fn request_stop(&self, expected: Option<u32>) -> Option<bool> {
        let before = match expected {
            None => self.state().fetch_or(STOP, Ordering::AcqRel),
            Some(generation) => self.mark(generation, STOP)?,
        };
        if before & COOPERATIVE == 0 {
            return Some(false);
        }
        // The run asked for its token: made under the lock, so it is there once the lock is
        // had. Cancelled outside it: cancelling wakes whoever waits on it.
        let token = self.lock_tokens().get(self.place);
        if let Some(token) = token {
            token.cancel();
        }
        Some(true)
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
/// context kept after its run ended affects nothing. Once the task's next run has started, its
/// heartbeats are ignored, it reports itself cancelled, and the token it handed out is
/// cancelled, so a helper task waiting on it learns that the run is over.
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
    run: RunRef,
}

impl TaskContext {
    /// The context of the run this code is part of, or `None` outside a supervised run.
    pub fn current() -> Option<TaskContext> {
        with_current(|local| TaskContext {
            run: local.run.clone(),
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
    /// dropped at once, since it could not know it should finish. Once the task's next run has
    /// started, a context kept from this run gets a token that is cancelled already.
    ///
    /// The token lives in a table shared by a few hundred tasks, behind one lock: take it once
    /// per run and keep it, rather than asking for it in a loop.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.run.token()
    }

    /// Whether the supervisor has asked this run to finish. Checking marks the run as
    /// cooperative, as [`cancellation_token`](Self::cancellation_token) does. Once the task's
    /// next run has started, it is `true` for a context kept from this run.
    pub fn is_cancelled(&self) -> bool {
        self.run.is_stop_requested()
    }

    /// The beat period the supervisor asks its tasks to keep.
    pub fn heartbeat_interval(&self) -> Duration {
        self.run.settings().heartbeat_interval
    }

    /// Declares that this run runs a child supervisor: the parent will not drop it when its
    /// grace period is over, but have its child drop every run of its own, so that the run
    /// ends only after the child has. Called before the run can be stopped at all (before it
    /// asks for its token), so that no stop finds it undeclared.
    pub(crate) fn will_run_a_child(&self) {
        self.run.cells().declare_child(self.run.generation);
    }

    /// Makes `child`, the supervisor this run runs, reachable from the parent's handle. If the
    /// parent already gave up waiting for the run (it forced it before the child existed), the
    /// child is told at once to drop every run. The link is undone when the returned guard is
    /// dropped.
    pub(crate) fn adopt_child(&self, child: Weak<HandleInner>) -> ChildLink {
        let slot = self.run.slot;
        let supervisor = self.run.settings().supervisor.clone();
        if let Some(shared) = supervisor.upgrade() {
            shared.adopt_child(slot, child.clone());
        }
        // After the link (a mutex the loop's look takes too): a force that looked before it
        // is seen here; one that looks after it finds the child. Telling it twice is harmless.
        if self.run.cells().forced(self.run.generation) {
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

/// One task's run state, as a run, its driver and the loop act on it, for the `loom` model
/// checks in `tests/loom.rs` (built with `--cfg loom` only; not part of the public API).
#[cfg(loom)]
#[doc(hidden)]
pub struct LoomRun {
    chunk: Arc<TaskChunk>,
    /// The run this stands for: moved on by [`Self::renew`], as a driver's is. A plain atomic,
    /// not a `loom` one: only the thread that renews and threads joined after it read it.
    generation: std::sync::atomic::AtomicU32,
    /// Progress messages of every run of the task, and those read but not yet counted.
    events: Arc<std::sync::Mutex<LoomEvents>>,
}

#[cfg(loom)]
struct LoomEvents {
    receiver: tokio::sync::mpsc::UnboundedReceiver<Message>,
    read: Vec<u32>,
}

#[cfg(loom)]
impl LoomRun {
    /// Run 1 of the task in slot 0, whose progress messages [`Self::progress_messages`]
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
        let run = Self {
            chunk: TaskChunk::new(&settings),
            generation: std::sync::atomic::AtomicU32::new(1),
            events: Arc::new(std::sync::Mutex::new(LoomEvents {
                receiver,
                read: Vec::new(),
            })),
        };
        run.cells().begin(1);
        run
    }

    fn cells(&self) -> RunCells<'_> {
        RunCells::new(&self.chunk, 0)
    }

    fn run(&self) -> RunRef {
        RunRef::new(
            Arc::clone(&self.chunk),
            RunId {
                slot: 0,
                generation: self.generation(),
            },
        )
    }

    /// The next run of the same task, as the loop starts it while something (a context the
    /// last run gave away) still holds this run: the task's run state given to the next
    /// generation ([`RunCells::begin`]), in the same place of the task table.
    pub fn next_run(&self) -> Self {
        let next = self.generation().wrapping_add(1);
        self.cells().begin(next);
        Self {
            chunk: Arc::clone(&self.chunk),
            generation: std::sync::atomic::AtomicU32::new(next),
            events: Arc::clone(&self.events),
        }
    }

    /// A context of the run this stands for, as the run hands it to a task of its own: it
    /// keeps this run's generation whatever the driver does next.
    pub fn context(&self) -> Self {
        Self {
            chunk: Arc::clone(&self.chunk),
            generation: std::sync::atomic::AtomicU32::new(self.generation()),
            events: Arc::clone(&self.events),
        }
    }

    /// [`RunRef::beat`], as a run's heartbeat calls it.
    pub fn beat(&self) {
        self.run().beat();
    }

    /// [`RunRef::last_beat`], as the driver reads it.
    pub fn last_beat(&self) -> Option<u64> {
        self.run().last_beat()
    }

    /// The beat of the run of `generation` as the loop's heartbeat check reads it: through the
    /// task's place in the dense table ([`crate::table::TaskCells::beat_of`]) with the
    /// generation its slot holds.
    pub fn loop_beat(&self, generation: u32) -> Option<u64> {
        table::TaskCells::new(Arc::clone(&self.chunk), 0).beat_of(generation)
    }

    /// [`RunRef::token`], as [`TaskContext::cancellation_token`] calls it.
    pub fn token(&self) -> CancellationToken {
        self.run().token()
    }

    /// [`RunRef::is_stop_requested`], as [`TaskContext::is_cancelled`] calls it.
    pub fn is_stop_requested(&self) -> bool {
        self.run().is_stop_requested()
    }

    /// [`RunCells::request_stop`] of whichever run is current, as a kill, a restart or a
    /// shutdown calls it.
    pub fn request_stop(&self) -> bool {
        self.cells().request_stop(None).unwrap_or(false)
    }

    /// [`RunCells::request_stop`] of run `generation`, as the loop's hang check calls it:
    /// `None` when that run is no longer current.
    pub fn request_stop_of(&self, generation: u32) -> Option<bool> {
        self.cells().request_stop(Some(generation))
    }

    /// [`RunCells::renew`], as a driver calls it to start the next run in place; this then
    /// stands for the next run.
    pub fn renew(&self, generation: u32) -> bool {
        let renewed = self.cells().renew(generation);
        if renewed {
            self.generation.store(
                generation.wrapping_add(1),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        renewed
    }

    /// The generation of the run this stands for.
    pub fn generation(&self) -> u32 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The generation the task's run state serves.
    pub fn current_generation(&self) -> u32 {
        self.cells().generation()
    }

    /// How many progress messages this run has sent to the loop since the last call.
    pub fn progress_messages(&self) -> usize {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let events = &mut *events;
        while let Ok(message) = events.receiver.try_recv() {
            if let Message::Progress(progress) = message {
                events.read.push(progress.id.generation);
            }
        }
        let generation = self.generation();
        let before = events.read.len();
        events.read.retain(|&read| read != generation);
        before - events.read.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run 1 of the task in slot 0, as the loop starts it.
    fn run() -> RunRef {
        let settings = RunSettings::detached();
        let id = RunId {
            slot: 0,
            generation: 1,
        };
        let run = RunRef::new(TaskChunk::new(&settings), id);
        run.cells().begin(1);
        run
    }

    /// The next run of `run`'s task, as the loop starts it after `run` ended.
    fn next(run: &RunRef) -> RunRef {
        let mut next = run.clone();
        next.generation = run.generation.wrapping_add(1);
        next.cells().begin(next.generation);
        next
    }

    #[tokio::test]
    async fn heartbeat_outside_a_run_does_nothing() {
        heartbeat();
        assert!(TaskContext::current().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_inside_a_run_stores_the_time() {
        let run = run();
        tokio::time::advance(Duration::from_millis(5)).await;
        let inside = {
            let local = RunLocal::new(&run);
            let _entered = local.enter();
            heartbeat();
            TaskContext::current().is_some()
        };
        assert!(inside);
        assert!(TaskContext::current().is_none(), "left with the guard");
        let stamp = run.last_beat().expect("a beat was stored");
        assert_eq!(
            run.settings().instant_of(stamp),
            run.settings().epoch + Duration::from_millis(5)
        );
    }

    #[test]
    fn stop_before_the_token_is_asked_for_still_cancels_it() {
        let run = run();
        assert_eq!(
            run.cells().request_stop(None),
            Some(false),
            "not cooperative yet"
        );
        assert!(run.token().is_cancelled());
    }

    #[test]
    fn stop_after_the_token_is_asked_for_cancels_it() {
        let run = run();
        let token = run.token();
        assert!(!token.is_cancelled());
        assert_eq!(run.cells().request_stop(None), Some(true), "cooperative");
        assert!(token.is_cancelled());
    }

    #[test]
    fn a_renewal_moves_the_generation_on_and_a_stop_for_the_old_run_misses() {
        let mut run = run();
        assert!(run.renew());
        assert_eq!(run.id().generation, 2);
        let cells = run.cells();
        assert_eq!(cells.request_stop(Some(1)), None, "run 1 is gone");
        assert!(!cells.stopping());
        assert_eq!(cells.request_stop(Some(2)), Some(false));
        assert!(cells.stopping());
    }

    #[test]
    fn a_stopped_run_is_not_renewed() {
        let mut run = run();
        assert_eq!(run.cells().request_stop(None), Some(false));
        assert!(!run.renew(), "the stop must reach the loop, not a new run");
        assert_eq!(run.id().generation, 1);
    }

    #[test]
    fn a_run_that_asked_for_its_token_is_not_renewed() {
        let mut run = run();
        let token = run.token();
        assert!(!run.renew(), "its token cannot be handed to the next run");
        assert!(!token.is_cancelled());
    }

    #[test]
    fn only_the_current_generation_renews() {
        let run = run();
        assert!(!run.cells().renew(7));
        assert!(run.cells().renew(1));
        assert!(!run.cells().renew(1), "run 1 was renewed already");
    }

    #[test]
    fn checking_for_cancellation_makes_a_run_cooperative() {
        let run = run();
        assert!(!run.is_stop_requested());
        assert_eq!(run.cells().request_stop(None), Some(true));
        assert!(run.is_stop_requested());
    }

    #[test]
    fn the_next_run_starting_cancels_the_last_runs_token_and_makes_its_own() {
        let old = run();
        let old_token = old.token();
        let new = next(&old);
        assert!(old_token.is_cancelled(), "the run it belongs to is over");
        let new_token = new.token();
        assert!(!new_token.is_cancelled(), "a token of its own");
        assert_eq!(new.cells().request_stop(None), Some(true));
        assert!(new_token.is_cancelled());
    }

    #[test]
    fn a_context_of_an_ended_run_changes_nothing_of_the_next_run() {
        let old = run();
        let new = next(&old);
        assert!(old.is_stop_requested(), "its run is over");
        assert!(old.token().is_cancelled(), "a cancelled token of its own");
        old.beat();
        assert_eq!(new.last_beat(), None, "the old beat missed");
        assert!(!new.cells().stops_its_child());
        assert_eq!(
            new.cells().request_stop(None),
            Some(false),
            "the old context's checks did not make the new run cooperative"
        );
    }

    #[test]
    fn a_context_a_whole_generation_cycle_old_does_not_beat_for_the_current_run() {
        let old = run();
        let mut current = old.clone();
        // 65 536 runs later the beat's 16 bits of generation are the old run's again.
        current.generation = old.generation.wrapping_add(1 << 16);
        current.cells().begin(current.generation);
        old.beat();
        assert_eq!(
            current.last_beat(),
            None,
            "the old context beat for the current run"
        );
        current.beat();
        assert!(current.last_beat().is_some());
    }

    #[test]
    fn the_next_run_starts_with_nothing_unreported() {
        let run = run();
        assert_eq!(run.cells().report_renewal(), 1);
        assert_eq!(run.cells().report_renewal(), 2);
        run.cells().renewal_handled();
        assert_eq!(run.cells().unreported(), 1);
        let new = next(&run);
        assert_eq!(new.cells().unreported(), 0);
    }
}
