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

mod commands;
mod exits;
mod group;
mod runs;
mod slot;
mod timers;

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::chunked::ChunkedVec;
use crate::config::Config;
use crate::context::{stamp_since, RunSettings};
use crate::deadline::{instant_of, DeadlineQueue, Tick};
use crate::error::SupervisorError;
use crate::message::{Message, NewTask};
use crate::observe::blocked;
use crate::observe::events::{self, Event, EventKind};
use crate::observe::stream::Publisher;
use crate::policy::backoff::JitterSource;
use crate::policy::window::RestartWindow;
use crate::shared::Shared;
use crate::status::{StatusChange, TaskStatus};
use crate::unwind;

use self::group::Group;
use self::slot::{Slot, Timer};
use self::timers::{LoopTimer, PreciseWait, LOOP_TIMERS};

/// How many more ready events of one kind a wake-up handles before it looks at the others.
const BATCH: usize = 64;

/// No deadline, or no queued tick.
const NEVER: u64 = u64::MAX;

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
    /// Slots that are `Dead` by the supervisor's rules (not killed).
    dead_of_failure: usize,
    /// The significant tasks, in start order.
    significant: Vec<u32>,
    /// Why each significant task that is dead died, by slot.
    significant_deaths: HashMap<u32, Arc<str>>,
    /// The restarts each task with a restart limit made within its window, by slot.
    windows: HashMap<u32, RestartWindow>,
    /// The restarts of every task within the supervisor's intensity window, if it has one.
    intensity: Option<RestartWindow>,
    /// In a reverse shutdown, how many slots from the start are still to be stopped.
    reverse_stops_left: Option<usize>,
    /// The pending group restart, under a group strategy.
    group: Option<Group>,
    /// The loop's own deadlines (see [`LoopTimer`]).
    loop_timers: [Timer; LOOP_TIMERS],
    /// Set once the supervisor is ending, with how it ends.
    ending: Option<Result<(), SupervisorError>>,
    status_changes: Publisher<StatusChange>,
    events: Publisher<Event>,
    /// The time of the current wake-up, read once, when first needed: what is published of it
    /// (a run's start, a failure, an event) needs no more precision than that.
    now: Option<Instant>,
}

/// Marks the supervisor stopped however the loop ends, including when its runtime drops it.
struct StoppedOnDrop(Arc<Shared>, Option<u32>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.registry.mark_stopped();
        self.0.status_changes.close();
        self.0.events.close();
        if let Some(watched) = self.1 {
            blocked::unwatch(watched);
        }
    }
}

impl EventLoop {
    pub(crate) fn new(
        config: Config,
        shared: Arc<Shared>,
        receiver: UnboundedReceiver<Message>,
        tasks: Vec<NewTask>,
    ) -> Self {
        let settings = Arc::clone(&shared.run_settings);
        let jitter = config
            .jitter_seed
            .map_or_else(JitterSource::from_entropy, JitterSource::new);
        let intensity = config.intensity.map(RestartWindow::new);
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
            significant: Vec::new(),
            significant_deaths: HashMap::new(),
            windows: HashMap::new(),
            intensity,
            group: None,
            reverse_stops_left: None,
            loop_timers: std::array::from_fn(|_| Timer {
                due: NEVER,
                queued: NEVER,
            }),
            ending: None,
            status_changes: Publisher::new(),
            events: Publisher::new(),
            now: None,
        };
        for task in tasks {
            event_loop.push_slot(task);
        }
        event_loop
    }

    /// Runs the supervisor until it has ended and every run is gone.
    pub(crate) async fn run(mut self) {
        let _stopped = StoppedOnDrop(Arc::clone(&self.shared), self.settings.poll_watch);
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
            self.now = None;
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

        self.report(
            None,
            EventKind::Stopped {
                outcome: result.clone(),
            },
        );
        self.status_changes.release();
        self.events.release();
        let _ = self.shared.outcome.set(result);
        // A task's `Drop` may panic; the loop must not (invariant 6). Each is dropped on its
        // own, since a second panic while the first unwinds would abort the process.
        for slot in self.slots.take_all() {
            #[cfg(feature = "metrics")]
            crate::observe::metrics::task_gone(slot.status);
            unwind::drop_guarded(slot);
        }
        // Commands that arrived as the supervisor ended may hold tasks too.
        while let Ok(message) = self.receiver.try_recv() {
            unwind::drop_guarded(message);
        }
        // Last: whoever waits on it (a signal listener, a server) sees every task gone.
        self.shared.stopped.cancel();
    }

    fn on_message(&mut self, message: Message) {
        match message {
            Message::Add(task) => {
                self.push_slot(task);
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
            Message::Shutdown => self.begin_ending(Ok(()), None),
            Message::DropEveryRun => {
                let _ = self.shared.registry.close(|| Ok(()));
                self.begin_ending(Ok(()), None);
                self.drop_every_run();
            }
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
        slot.cells.publish_status(to);
        #[cfg(feature = "metrics")]
        crate::observe::metrics::status_changed(Some(from), to);
        slot.cells.publish_attempt(slot.attempts);
        // Only the loop sets statuses, and only here, so these counts stay exact.
        if from == TaskStatus::Dead && slot.dead_of_failure {
            slot.dead_of_failure = false;
            slot.cells
                .publish_flag(crate::table::DIED_OF_FAILURE, false);
            self.dead_of_failure -= 1;
        }
        let name = &slot.name;
        self.status_changes
            .publish(&self.shared.status_changes, || StatusChange {
                task: Arc::clone(name),
                from,
                to,
                reason,
            });
    }

    /// The time of the current wake-up (see the `now` field).
    fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }

    /// A stamp of the time of the current wake-up, for the task table.
    fn stamp_now(&mut self) -> u64 {
        let now = self.now();
        stamp_since(self.settings.epoch, now)
    }

    /// The one place an event is reported: logged through `tracing` at its level, and
    /// published to the event stream if anyone subscribed. `index` is the task's slot; `None`
    /// for the supervisor's own events.
    fn report(&mut self, index: Option<usize>, kind: EventKind) {
        let (task, attempt) = match index {
            Some(index) => {
                let slot = &self.slots[index];
                (Some(&slot.name), slot.attempts)
            }
            None => (None, 0),
        };
        events::trace(task.map(|name| &**name), attempt, &kind);
        #[cfg(feature = "metrics")]
        if let Some(task) = task {
            crate::observe::metrics::record(task, &kind);
        }
        // Nothing is cloned, and the clock is not read, unless someone subscribed.
        let (slots, now) = (&self.slots, &mut self.now);
        self.events.publish(&self.shared.events, || Event {
            task: index.map(|index| Arc::clone(&slots[index].name)),
            attempt,
            at: *now.get_or_insert_with(Instant::now),
            kind,
        });
    }
}
