//! The loop: the one Tokio task that owns every supervised task's state.
//!
//! Two things reach it. **Messages** arrive on one unbounded channel: commands from handles,
//! and what runs report (progress, restarts in place, and the exit each driver sends as it
//! ends, see [`crate::run`]). **Time** arrives as the earliest deadline of a
//! [`DeadlineQueue`]: back-offs, heartbeat deadlines and grace periods. Nothing is polled and
//! nothing is scanned: the loop sleeps until one of the two wakes it. Heartbeat deadlines are
//! looked at a millisecond early; a run still silent then is timed to its exact deadline by a
//! blocking sleep on Tokio's blocking pool, since Tokio's own timer ticks in milliseconds.
//!
//! # Invariants
//!
//! 1. At most one run of a task is alive at any moment: a driver is spawned only when its slot
//!    holds none, a slot lets go of its driver only when the driver's exit has arrived, which
//!    is sent after its last run's future was dropped, and a driver runs one run at a time.
//! 2. The loop is the only writer of task state. Statuses are published to the registry with
//!    [`StatusCell::publish`], and only from [`EventLoop::set_status`].
//! 3. Every status change is an edge of the state machine in [`crate::status`]
//!    (checked in debug builds by `set_status`).
//! 4. `kill_task` is final for the run it stops: killing clears the slot's deadline, so a
//!    pending back-off does nothing when it fires.
//! 5. The loop returns only once it is ending and every driver it spawned has reported its
//!    exit: when `wait()` sees the loop's task finish, no run is alive. A precise wait still
//!    sleeping is woken as the loop returns; it holds nothing of any task.
//! 6. Nothing a task does panics the loop: making an instance, asking it about heartbeats and
//!    dropping it are all guarded, and runs catch their own panics.
//! 7. A slot's memory does not grow with its restarts: it holds one run, one deadline and
//!    counters, and a superseded deadline entry leaves the queue when its tick passes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::chunked::ChunkedVec;
use crate::config::Config;
use crate::context::{RunSettings, RunShared};
use crate::deadline::{instant_of, nanos_since, round_up, tick_of, DeadlineQueue, Nanos, Tick};
use crate::error::SupervisorError;
use crate::message::{Message, RanAgain, RunExit, RunId, RunOutcome, RunProgress};
use crate::policy;
use crate::policy::backoff::{exponential_delay, with_jitter, JitterSource};
use crate::registry::{StatusCell, TaskEntry};
use crate::run::{self, DriverStart};
use crate::shared::Shared;
use crate::status::{StatusChange, TaskStatus};
use crate::task::TaskTemplate;
use crate::unwind;

/// A task the supervisor was built with: its name, its registry entry and its template.
pub(crate) type InitialTask = (Arc<str>, TaskEntry, Box<dyn TaskTemplate>);

/// What to do when the live run's exit arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterExit {
    /// The run ends by itself: its outcome decides.
    Decide,
    /// The run was stopped as hung and the task is `Failed`: restart after the back-off.
    BackOff,
    /// A manual restart: start a fresh run at once.
    Start,
    /// Killed, shut down, or hung with no attempts left: start nothing.
    Nothing,
}

/// What a slot's deadline means; a slot waits for at most one deadline at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    /// No run: start one when it falls due.
    BackOff,
    /// A watched run: check its last heartbeat.
    Heartbeat,
    /// A stopping run: drop it.
    Grace,
}

/// How many more ready events of one kind a wake-up handles before it looks at the others.
const BATCH: usize = 64;

/// How close to its deadline a silent run must be for the loop to finish the wait off Tokio's
/// millisecond timer (see [`EventLoop::approach`]).
const PRECISE_WINDOW: Nanos = 2_000_000;

/// No deadline, or no queued tick.
const NEVER: u64 = u64::MAX;

#[derive(Debug)]
struct Timer {
    /// When the slot wants to be woken, exactly, or `NEVER`.
    due: Nanos,
    /// The earliest tick at which the queue holds an entry for this slot, or `NEVER`. An entry
    /// popped at any other tick has been superseded and is ignored.
    queued: Tick,
}

/// The run a slot holds: its driver, and the run the driver is on.
struct LiveRun {
    shared: Arc<RunShared>,
    abort: AbortHandle,
    /// Whether it has been asked to stop.
    stopping: bool,
    /// Whether it has been aborted (dropped without waiting for it to return).
    aborted: bool,
}

/// Everything the loop knows about one task.
///
/// Every byte of it counts once per task (about 11 MB at 100k tasks), so it keeps what it can
/// in the smallest form: its id is its index, times are nanoseconds since the loop's epoch.
struct Slot {
    name: Arc<str>,
    /// Where the task's status is published: a chunk of the status table, and the byte's
    /// place in it.
    status_cell: StatusCell,
    status_offset: u8,
    /// `None` while a driver holds it.
    template: Option<Box<dyn TaskTemplate>>,
    declares_heartbeats: bool,
    status: TaskStatus,
    /// Restarts since the count was last cleared.
    attempts: u32,
    generation: u32,
    run: Option<LiveRun>,
    /// The shared state of the last run, kept for the next one.
    spare_run: Option<Arc<RunShared>>,
    after_exit: AfterExit,
    timer: Timer,
    /// What `timer` is for (kept out of `Timer`, whose padding it would double).
    timer_kind: TimerKind,
    /// Since when the live run has been healthy, in nanoseconds since the epoch, or `NEVER`.
    healthy_since: Nanos,
    /// Dead because its attempts ran out (a kill does not count).
    dead_of_failure: bool,
}

/// See the [module documentation](self).
pub(crate) struct EventLoop {
    config: Config,
    shared: Arc<Shared>,
    receiver: UnboundedReceiver<Message>,
    settings: Arc<RunSettings>,
    slots: ChunkedVec<Slot>,
    /// Drivers spawned whose exit has not arrived yet.
    live_runs: usize,
    deadlines: DeadlineQueue,
    /// Scratch space for due deadlines, kept to avoid allocating on every wake-up.
    due: Vec<(Tick, u32)>,
    /// Silent runs whose heartbeat deadline is less than `PRECISE_WINDOW` away, and the one
    /// precise wait (a blocking sleep until the earliest of them) that is in flight.
    precise_slots: Vec<u32>,
    precise: Option<PreciseWait>,
    jitter: JitterSource,
    /// Slots that are `Dead` because their attempts ran out.
    dead_of_failure: usize,
    /// Set once the supervisor is ending, with how it ends.
    ending: Option<Result<(), SupervisorError>>,
    status_sender: Option<broadcast::Sender<StatusChange>>,
}

/// A blocking sleep on a thread of Tokio's blocking pool, which a timer with millisecond ticks
/// cannot do: it ends when its time is up, or at once when the loop drops it.
struct PreciseWait {
    done: tokio::task::JoinHandle<()>,
    /// Dropping it wakes the sleeping thread.
    _cancel: std::sync::mpsc::Sender<()>,
}

impl PreciseWait {
    fn start(wait: Duration) -> Self {
        let (cancel, cancelled) = std::sync::mpsc::channel::<()>();
        let done = tokio::task::spawn_blocking(move || {
            let _ = cancelled.recv_timeout(wait);
        });
        Self {
            done,
            _cancel: cancel,
        }
    }
}

/// Marks the supervisor stopped however the loop ends, including when its runtime drops it.
struct StoppedOnDrop(Arc<Shared>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.registry.mark_stopped();
        self.0.close_status_changes();
    }
}

impl EventLoop {
    pub(crate) fn new(
        config: Config,
        shared: Arc<Shared>,
        receiver: UnboundedReceiver<Message>,
        tasks: Vec<InitialTask>,
    ) -> Self {
        let settings = Arc::new(RunSettings {
            epoch: Instant::now(),
            heartbeat_interval: config.heartbeat_interval,
            restart_in_place: config.base_restart_delay.is_zero(),
            max_restart_attempts: config.max_restart_attempts,
            ending: Arc::clone(&shared.ending),
            events: shared.sender.clone(),
        });
        let jitter = config
            .jitter_seed
            .map_or_else(JitterSource::from_entropy, JitterSource::new);
        let mut event_loop = Self {
            config,
            shared,
            receiver,
            settings,
            slots: ChunkedVec::new(),
            live_runs: 0,
            deadlines: DeadlineQueue::default(),
            due: Vec::new(),
            precise_slots: Vec::new(),
            precise: None,
            jitter,
            dead_of_failure: 0,
            ending: None,
            status_sender: None,
        };
        for (name, entry, task) in tasks {
            event_loop.push_slot(name, entry, task);
        }
        event_loop
    }

    /// Runs the supervisor until it has ended and every run is gone.
    pub(crate) async fn run(mut self) {
        let _stopped = StoppedOnDrop(Arc::clone(&self.shared));
        for index in 0..self.slots.len() {
            self.start(index);
        }
        let epoch = self.settings.epoch;
        let mut sleep = pin!(tokio::time::sleep_until(epoch));
        let mut sleeping_until: Option<Tick> = None;

        let result = loop {
            if self.ending.is_some() && self.live_runs == 0 {
                break self.ending.take().unwrap_or(Ok(()));
            }
            let next = self.deadlines.next_tick();
            if next != sleeping_until {
                sleeping_until = next.and_then(|tick| {
                    let at = instant_of(epoch, tick)?;
                    sleep.as_mut().reset(at);
                    Some(tick)
                });
            }
            // From here until an arm runs, a handle's message may find the loop waiting.
            self.shared.set_loop_waiting(true);
            // Unbiased: with many runs failing at once, messages are always ready, and a fixed
            // order would starve timers.
            tokio::select! {
                Some(message) = self.receiver.recv() => {
                    self.shared.set_loop_waiting(false);
                    self.on_message(message);
                    // What else is ready now, in a bounded batch: one wake-up, many events.
                    for _ in 0..BATCH {
                        let Ok(message) = self.receiver.try_recv() else { break };
                        self.on_message(message);
                    }
                }
                () = &mut sleep, if sleeping_until.is_some() => {
                    self.shared.set_loop_waiting(false);
                    sleeping_until = None;
                    self.on_timers();
                }
                _ = async { (&mut self.precise.as_mut()?.done).await.ok() }, if self.precise.is_some() => {
                    self.shared.set_loop_waiting(false);
                    self.precise = None;
                    self.on_precise();
                }
            }
        };
        // A precise wait in flight is woken and ends at once; it holds nothing of any task.
        self.precise = None;

        self.status_sender = None;
        let _ = self.shared.outcome.set(result);
        // A task's `Drop` may panic; the loop must not (invariant 6). Each is dropped on its
        // own, since a second panic while the first unwinds would abort the process.
        for slot in self.slots.take_all() {
            unwind::drop_guarded(slot);
        }
        // Commands that arrived as the supervisor ended may hold tasks too.
        while let Ok(message) = self.receiver.try_recv() {
            unwind::drop_guarded(message);
        }
    }

    fn push_slot(&mut self, name: Arc<str>, entry: TaskEntry, task: Box<dyn TaskTemplate>) {
        if entry.id as usize != self.slots.len() {
            tracing::error!(
                task = %name,
                id = entry.id,
                slots = self.slots.len(),
                "task id does not match its slot; this is a bug in task-supervisor"
            );
        }
        // Its status goes to its own byte even if the id and the slot ever disagree.
        let (status_cell, status_offset) = entry.into_cell();
        let declares_heartbeats = catch_unwind(AssertUnwindSafe(|| task.sends_heartbeats()))
            .unwrap_or_else(|payload| {
                unwind::dispose(payload);
                false
            });
        self.slots.push(Slot {
            name,
            status_cell,
            status_offset,
            template: Some(task),
            declares_heartbeats,
            status: TaskStatus::Created,
            attempts: 0,
            generation: 0,
            run: None,
            spare_run: None,
            after_exit: AfterExit::Decide,
            timer: Timer {
                due: NEVER,
                queued: NEVER,
            },
            timer_kind: TimerKind::BackOff,
            healthy_since: NEVER,
            dead_of_failure: false,
        });
    }

    // ----- messages -----

    fn on_message(&mut self, message: Message) {
        match message {
            Message::Add { name, entry, task } => {
                self.push_slot(name, entry, task);
                self.start(self.slots.len() - 1);
            }
            Message::Restart { id } => {
                if let Some(index) = self.index(id) {
                    self.restart(index);
                }
            }
            Message::Kill { id } => {
                if let Some(index) = self.index(id) {
                    self.kill(index);
                }
            }
            Message::Shutdown => self.begin_ending(Ok(())),
            Message::Progress(progress) => self.on_progress(progress),
            Message::RanAgain(again) => self.on_ran_again(again),
            Message::Exit(exit) => self.on_exit(exit),
        }
    }

    fn index(&self, id: u32) -> Option<usize> {
        let index = id as usize;
        if index < self.slots.len() {
            Some(index)
        } else {
            tracing::error!(
                id,
                "command for an unknown task id; this is a bug in task-supervisor"
            );
            None
        }
    }

    fn restart(&mut self, index: usize) {
        if self.ending.is_some() {
            return;
        }
        let slot = &mut self.slots[index];
        if slot.run.is_some() {
            slot.after_exit = AfterExit::Start;
            self.stop_run(index, None);
        } else {
            slot.timer.due = NEVER;
            slot.attempts = 0;
            self.start(index);
        }
    }

    fn kill(&mut self, index: usize) {
        if self.ending.is_some() {
            return;
        }
        self.set_status(index, TaskStatus::Dead, Some(Arc::from("killed")));
        let slot = &mut self.slots[index];
        if slot.run.is_some() {
            // A stopping run keeps its grace deadline: it must still be dropped when it ends.
            slot.after_exit = AfterExit::Nothing;
            self.stop_run(index, None);
        } else {
            slot.timer.due = NEVER; // A pending back-off does nothing (invariant 4).
        }
    }

    fn on_progress(&mut self, progress: RunProgress) {
        let index = progress.id.slot as usize;
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if slot.generation != progress.id.generation {
            return; // From a run that has already ended.
        }
        let Some(run) = slot.run.as_mut() else {
            return;
        };
        if run.stopping {
            return;
        }
        // The first beat starts the watch, or, for a run watched from its start, brings its
        // deadline forward from the end of the start-up grace.
        let watch_from = if progress.beaten {
            run.shared
                .last_beat()
                .map(|stamp| self.settings.instant_of(stamp))
        } else {
            None
        };
        if progress.alive && slot.status == TaskStatus::Starting {
            slot.healthy_since = nanos_since(self.settings.epoch, Instant::now());
            self.set_status(index, TaskStatus::Healthy, None);
        }
        if let Some(last_beat) = watch_from {
            self.watch(index, last_beat);
        }
    }

    /// A run failed before proving alive, and its driver started the next one in place: as if
    /// the run had exited with that failure and the next had been started at once, without the
    /// spawn.
    fn on_ran_again(&mut self, again: RanAgain) {
        let RanAgain {
            id,
            attempts,
            reason,
        } = again;
        let index = id.slot as usize;
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let Some(run) = slot.run.as_ref() else {
            tracing::error!(task = %slot.name, "restart of a run that is gone; this is a bug in task-supervisor");
            return;
        };
        run.shared.renewal_handled();
        if slot.generation.wrapping_add(1) != id.generation {
            tracing::error!(task = %slot.name, "restart out of order; this is a bug in task-supervisor");
        }
        slot.generation = id.generation;
        self.shared
            .registry
            .record_failure(index as u32, Arc::clone(&reason));
        if run.stopping {
            // Asked to stop after the driver moved on: the stop is the new run's, and the
            // status stays what the stop made it.
            return;
        }
        slot.attempts = attempts;
        self.set_status(index, TaskStatus::Failed, Some(reason));
        self.started(index);
    }

    // ----- runs -----

    /// Spawns a driver for the next run of the task in `index`, unless the supervisor is
    /// ending.
    fn start(&mut self, index: usize) {
        if self.ending.is_some() {
            return;
        }
        let slot = &mut self.slots[index];
        debug_assert!(slot.run.is_none(), "a second live run (invariant 1)");
        let Some(template) = slot.template.take() else {
            tracing::error!(task = %slot.name, "no template to start from; this is a bug in task-supervisor");
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        let id = RunId {
            slot: index as u32,
            generation: slot.generation,
        };
        // The last run's shared state is reused unless something (a `TaskContext` the run
        // gave away) still holds it: a restart then allocates nothing for it.
        let shared = slot
            .spare_run
            .take()
            .and_then(|mut spare| {
                Arc::get_mut(&mut spare)?.reset(id);
                Some(spare)
            })
            .unwrap_or_else(|| Arc::new(RunShared::new(id, Arc::clone(&self.settings))));
        let watched = slot.declares_heartbeats;
        let driver = tokio::spawn(run::drive(DriverStart {
            id,
            template,
            shared: Arc::clone(&shared),
            watched,
            attempts: slot.attempts,
        }));
        self.live_runs += 1;
        slot.run = Some(LiveRun {
            shared,
            abort: driver.abort_handle(),
            stopping: false,
            aborted: false,
        });
        self.started(index);
    }

    /// The run in `index` has started: `Starting`, and watched for its first beat if it
    /// declared heartbeats.
    fn started(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.after_exit = AfterExit::Decide;
        slot.timer.due = NEVER;
        slot.healthy_since = NEVER;
        let watched = slot.declares_heartbeats;
        self.set_status(index, TaskStatus::Starting, None);
        if watched {
            // An initial delay too long for the clock means the first beat is never due.
            let first_beat_due = Instant::now().checked_add(self.config.health_check_initial_delay);
            if let Some(first_beat_due) = first_beat_due {
                self.watch(index, first_beat_due);
            }
        }
    }

    /// Asks the run in `index` to stop (the run of generation `expected`, or whichever is
    /// current): a cooperative run gets the grace period, any other is dropped at once. Returns
    /// whether it asked: not when the run is stopping already, or when `expected` is gone.
    fn stop_run(&mut self, index: usize, expected: Option<u32>) -> bool {
        let Some(run) = self.slots[index].run.as_mut() else {
            return false;
        };
        if run.stopping {
            return false;
        }
        let Some(cooperative) = run.shared.request_stop(expected) else {
            return false;
        };
        run.stopping = true;
        if cooperative && !self.config.grace_period.is_zero() {
            let due = Instant::now().checked_add(self.config.grace_period);
            self.set_timer(index, TimerKind::Grace, due, 1);
        } else {
            self.abort_run(index);
        }
        true
    }

    fn abort_run(&mut self, index: usize) {
        let Some(run) = self.slots[index].run.as_mut() else {
            return;
        };
        if !run.aborted {
            run.aborted = true;
            run.abort.abort();
        }
    }

    /// A driver has ended: its last run ended with `exit.outcome`.
    fn on_exit(&mut self, exit: RunExit) {
        let RunExit {
            id,
            outcome,
            template,
        } = exit;
        let index = id.slot as usize;
        let Some(slot) = self.slots.get_mut(index) else {
            unwind::drop_guarded(template);
            return;
        };
        let Some(run) = slot.run.take() else {
            tracing::error!(task = %slot.name, "exit of an unknown run; this is a bug in task-supervisor");
            unwind::drop_guarded(template);
            return;
        };
        if slot.generation != id.generation {
            tracing::error!(task = %slot.name, "exit out of order; this is a bug in task-supervisor");
            slot.generation = id.generation;
        }
        self.live_runs -= 1;
        slot.template = Some(template);
        slot.spare_run = Some(run.shared);
        slot.timer.due = NEVER;
        if let RunOutcome::Dropped { panicked: true } = outcome {
            tracing::warn!(task = %slot.name, "a stopped run panicked while being dropped");
        }
        match std::mem::replace(&mut slot.after_exit, AfterExit::Decide) {
            AfterExit::Start => {
                slot.attempts = 0;
                self.start(index);
            }
            AfterExit::BackOff => self.schedule_restart(index),
            AfterExit::Nothing => {}
            AfterExit::Decide => match outcome {
                RunOutcome::Completed => {
                    self.set_status(index, TaskStatus::Completed, None);
                }
                RunOutcome::Failed(reason) => self.fail_and_restart(index, reason),
                RunOutcome::Dropped { .. } => self.fail_and_restart(index, Arc::from("dropped")),
            },
        }
    }

    fn fail_and_restart(&mut self, index: usize, reason: Arc<str>) {
        if self.fail(index, reason, None) {
            self.schedule_restart(index);
        }
    }

    /// Counts a failure of the task in `index`, whose run was healthy until `healthy_until`
    /// (`None`: until now): `Failed` with one more attempt used, or `Dead` when none is left.
    /// Returns whether it will be restarted.
    fn fail(&mut self, index: usize, reason: Arc<str>, healthy_until: Option<Instant>) -> bool {
        let stable_after = self.config.task_being_stable_after;
        let slot = &mut self.slots[index];
        let since = std::mem::replace(&mut slot.healthy_since, NEVER);
        if since != NEVER {
            // The clock is read only for a run that proved healthy: a crash loop skips it.
            let until = healthy_until.unwrap_or_else(Instant::now);
            let healthy_for = nanos_since(self.settings.epoch, until).saturating_sub(since);
            if u128::from(healthy_for) >= stable_after.as_nanos() {
                slot.attempts = 0;
            }
        }
        self.shared
            .registry
            .record_failure(index as u32, Arc::clone(&reason));
        if self.config.may_restart(slot.attempts) {
            slot.attempts = slot.attempts.saturating_add(1);
            self.set_status(index, TaskStatus::Failed, Some(reason));
            true
        } else {
            // Counted as dead of failure (a kill is not); `set_status` uncounts it when it leaves `Dead`.
            slot.dead_of_failure = true;
            self.dead_of_failure += 1;
            self.set_status(index, TaskStatus::Dead, Some(reason));
            self.check_dead_threshold();
            false
        }
    }

    /// Starts the task in `index` after its back-off: at once when the delay is zero, without
    /// going through the timer.
    fn schedule_restart(&mut self, index: usize) {
        let attempt = self.slots[index].attempts;
        let delay = with_jitter(
            exponential_delay(
                self.config.base_restart_delay,
                attempt,
                self.config.max_backoff_exponent,
            ),
            self.config.restart_jitter,
            self.jitter.next_unit(),
        );
        if delay.is_zero() {
            self.start(index);
        } else {
            let due = Instant::now().checked_add(delay);
            self.set_timer(index, TimerKind::BackOff, due, 1);
        }
    }

    // ----- time -----

    /// Watches the run in `index` for silence: it is hung if it does not beat again within the
    /// timeout after `since`.
    fn watch(&mut self, index: usize, since: Instant) {
        let due = since.checked_add(self.config.timeout_threshold);
        let granularity = self.config.heartbeat_granularity_millis();
        self.set_timer(index, TimerKind::Heartbeat, due, granularity);
    }

    /// Makes `due` (`None`: never) the slot's one deadline, rounded up to `granularity`
    /// milliseconds when that is coarser than the clock's.
    fn set_timer(&mut self, index: usize, kind: TimerKind, due: Option<Instant>, granularity: u64) {
        let due = match due {
            Some(at) if granularity > 1 => {
                round_up(nanos_since(self.settings.epoch, at), granularity)
            }
            Some(at) => nanos_since(self.settings.epoch, at),
            None => NEVER,
        };
        let slot = &mut self.slots[index];
        slot.timer_kind = kind;
        slot.timer.due = due;
        let mut tick = tick_of(due);
        if kind == TimerKind::Heartbeat && granularity == 1 {
            // A tick early: Tokio's timer wakes up to a millisecond late, so the loop looks a
            // millisecond ahead and finishes the wait precisely (see `approach`).
            tick = tick.saturating_sub(1);
        }
        self.queue(index, tick);
    }

    /// Makes sure the queue wakes the slot in `index` at `tick` or earlier.
    fn queue(&mut self, index: usize, tick: Tick) {
        let timer = &mut self.slots[index].timer;
        if timer.due != NEVER && tick < timer.queued {
            // Earlier than the entry already queued (or none is): queue one more. A later
            // deadline needs nothing: the queued entry re-queues it when it fires.
            self.deadlines.push(tick, index as u32);
            timer.queued = tick;
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        let now_nanos = nanos_since(self.settings.epoch, now);
        let now_tick = tick_of(now_nanos);
        let mut due = std::mem::take(&mut self.due);
        self.deadlines.pop_due(now_tick, &mut due);
        for (tick, slot) in due.drain(..) {
            let index = slot as usize;
            let slot = &mut self.slots[index];
            let (timer, kind) = (&mut slot.timer, slot.timer_kind);
            if timer.queued != tick {
                continue; // Superseded by an earlier entry.
            }
            timer.queued = NEVER;
            if timer.due == NEVER {
                continue; // Cancelled.
            }
            if timer.due > now_nanos {
                // Later in this tick, or in a later one: never act early.
                let early_look = kind == TimerKind::Heartbeat && tick < tick_of(timer.due);
                let (due_at, later) = (timer.due, tick_of(timer.due).max(now_tick + 1));
                if early_look
                    && due_at - now_nanos < PRECISE_WINDOW
                    && self.approach(index, due_at, now_nanos)
                {
                    continue; // It beat since: its deadline has moved, and is queued.
                }
                self.queue(index, later);
                continue;
            }
            timer.due = NEVER;
            match kind {
                TimerKind::BackOff => self.start(index),
                TimerKind::Heartbeat => self.check_heartbeat(index, now),
                TimerKind::Grace => self.abort_run(index),
            }
        }
        self.due = due;
    }

    /// The watched run in `index` is due at `due`, less than `PRECISE_WINDOW` from `now`. If it
    /// beat since its deadline was set, its deadline moves on; if it is still silent, a
    /// blocking sleep until `due` (tens of microseconds precise) wakes the loop on time, where
    /// Tokio's timer, with its millisecond ticks, could be a millisecond late. Returns whether
    /// the deadline moved; if not, the caller queues the deadline's own tick as the fallback.
    fn approach(&mut self, index: usize, due: Nanos, now: Nanos) -> bool {
        let slot = &self.slots[index];
        let Some(run) = slot.run.as_ref() else {
            return false;
        };
        if run.stopping || run.shared.generation() != slot.generation {
            return false;
        }
        if let Some(stamp) = run.shared.last_beat() {
            let last_beat = self.settings.instant_of(stamp);
            let moved = last_beat
                .checked_add(self.config.timeout_threshold)
                .map_or(NEVER, |at| nanos_since(self.settings.epoch, at));
            if moved > due {
                self.watch(index, last_beat);
                return true;
            }
        }
        self.precise_slots.push(index as u32);
        if self.precise.is_none() {
            // One wait at a time: a second silent run due earlier within the window falls back
            // to its tick.
            self.precise = Some(PreciseWait::start(Duration::from_nanos(due - now)));
        }
        false
    }

    /// A precise wait has ended: check the silent runs that are due now. One that is not (the
    /// wait was for another, or the clock is paused) is left to its queued tick.
    fn on_precise(&mut self) {
        let now = Instant::now();
        let now_nanos = nanos_since(self.settings.epoch, now);
        let mut slots = std::mem::take(&mut self.precise_slots);
        for slot in slots.drain(..) {
            let index = slot as usize;
            let slot = &mut self.slots[index];
            let timer = &mut slot.timer;
            if slot.timer_kind == TimerKind::Heartbeat
                && timer.due != NEVER
                && timer.due <= now_nanos
            {
                timer.due = NEVER;
                self.check_heartbeat(index, now);
            }
        }
        self.precise_slots = slots;
    }

    fn check_heartbeat(&mut self, index: usize, now: Instant) {
        let slot = &self.slots[index];
        let Some(run) = slot.run.as_ref() else {
            return;
        };
        let generation = slot.generation;
        if run.stopping || run.shared.generation() != generation {
            // Stopping already, or its driver has moved on to the next run in place: the
            // report of that is on its way, and watches the new run.
            return;
        }
        let timeout = self.config.timeout_threshold;
        // One read of the beat the run's thread keeps writing: both decisions below use it.
        let silent_since = match run.shared.last_beat() {
            Some(stamp) => {
                let last_beat = self.settings.instant_of(stamp);
                if last_beat.checked_add(timeout).is_some_and(|due| due > now) {
                    self.watch(index, last_beat);
                    return;
                }
                last_beat
            }
            // Declared heartbeats and none yet: the start-up grace is over, and the run was
            // never healthy.
            None => now,
        };
        // Stopped first, and only if it is still the run this verdict is about: its driver may
        // have started the next one in place since the generation was read.
        if !self.stop_run(index, Some(generation)) {
            return;
        }
        let reason = Arc::from(format!("hung: no heartbeat for {timeout:?}"));
        // The silence was not healthy time: it must not earn the task its attempts back.
        let restart = self.fail(index, reason, Some(silent_since));
        self.slots[index].after_exit = if restart {
            AfterExit::BackOff
        } else {
            AfterExit::Nothing
        };
    }

    // ----- the supervisor's own end -----

    fn check_dead_threshold(&mut self) {
        let Some(threshold) = self.config.dead_tasks_threshold else {
            return;
        };
        let total = self.slots.len();
        let dead = self.dead_of_failure;
        let Some(share) = policy::dead_tasks::exceeded(dead, total, threshold) else {
            return;
        };
        tracing::error!(
            dead,
            total,
            threshold,
            "too many dead tasks; the supervisor stops"
        );
        let _ = self.shared.registry.close(|| Ok(()));
        self.begin_ending(Err(SupervisorError::TooManyDeadTasks {
            current_percentage: share,
            threshold,
        }));
    }

    /// Ends the supervisor with `result`: no run starts any more and every live run is stopped.
    fn begin_ending(&mut self, result: Result<(), SupervisorError>) {
        if self.ending.is_some() {
            return;
        }
        self.ending = Some(result);
        self.shared
            .ending
            .store(true, std::sync::atomic::Ordering::Release);
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            if slot.run.is_some() {
                slot.after_exit = AfterExit::Nothing;
                self.stop_run(index, None);
            } else {
                slot.timer.due = NEVER;
            }
        }
    }

    // ----- statuses -----

    /// The one place a status changes (invariant 2).
    fn set_status(&mut self, index: usize, to: TaskStatus, reason: Option<Arc<str>>) {
        let slot = &mut self.slots[index];
        let from = slot.status;
        if from == to {
            return;
        }
        debug_assert!(
            from.can_change_to(to),
            "{from} -> {to} is not an edge (invariant 3)"
        );
        slot.status = to;
        slot.status_cell.publish(slot.status_offset, to);
        // Only the loop sets statuses, and only here, so these counts stay exact.
        if from == TaskStatus::Dead && slot.dead_of_failure {
            slot.dead_of_failure = false;
            self.dead_of_failure -= 1;
        }
        let name = &slot.name;
        let why = reason.as_deref().unwrap_or_default();
        match to {
            TaskStatus::Failed => tracing::warn!(
                task = %name,
                reason = %why,
                attempt = slot.attempts,
                "task failed; it restarts after its back-off"
            ),
            TaskStatus::Dead => tracing::warn!(task = %name, reason = %why, "task is dead"),
            TaskStatus::Completed => tracing::info!(task = %name, "task completed"),
            _ => tracing::debug!(task = %name, %from, %to, "task status changed"),
        }
        if self.status_sender.is_none() {
            self.status_sender = self.shared.status_sender();
        }
        if let Some(sender) = &self.status_sender {
            // No receiver left is not an error: the stream is best effort for its readers.
            let _ = sender.send(StatusChange {
                task: Arc::clone(name),
                from,
                to,
                reason,
            });
        }
    }
}
