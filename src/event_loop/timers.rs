//! Time: back-off, heartbeat and grace deadlines, queued by tick, and the precise wait for a
//! silent run's exact deadline.

use std::time::Duration;

use tokio::time::Instant;

use super::slot::{AfterExit, Timer, TimerKind};
use super::{EventLoop, NEVER};
use crate::deadline::{nanos_since, round_up, tick_of, DeadlineQueue, Nanos, Tick};
use crate::message::{Failure, FailureKind};

/// How close to its deadline a silent run must be for the loop to finish the wait off Tokio's
/// millisecond timer (see [`EventLoop::approach`]).
const PRECISE_WINDOW: Nanos = 2_000_000;

/// A blocking sleep on a thread of Tokio's blocking pool, which a timer with millisecond ticks
/// cannot do: it ends when its time is up, or at once when the loop drops it.
pub(super) struct PreciseWait {
    pub(super) done: tokio::task::JoinHandle<()>,
    /// Dropping it wakes the sleeping thread.
    _cancel: std::sync::mpsc::Sender<()>,
}

impl PreciseWait {
    pub(super) fn start(wait: Duration) -> Self {
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

/// The loop's own deadlines, queued beside the slots' under ids no slot can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoopTimer {
    /// The pending group restart's back-off ends.
    Group = 0,
    /// The shutdown bound has passed.
    ShutdownBound = 1,
}

/// How many loop timers there are.
pub(super) const LOOP_TIMERS: usize = 2;

impl LoopTimer {
    /// The queue id of this timer: counted down from `u32::MAX`.
    fn id(self) -> u32 {
        u32::MAX - self as u32
    }

    /// The loop timer a queue id stands for, if it is one.
    fn of(id: u32) -> Option<Self> {
        match u32::MAX - id {
            0 => Some(Self::Group),
            1 => Some(Self::ShutdownBound),
            _ => None,
        }
    }
}

/// Whether Tokio's clock is paused (`tokio::time::pause` or `start_paused`, in tests): it then
/// stands still while real time moves. Unpaused, it reads the same monotonic clock as
/// `std::time::Instant`, so it has moved once real time has. Costs a few clock reads.
fn clock_is_paused() -> bool {
    let before = Instant::now();
    let real = std::time::Instant::now();
    // The monotonic clock ticks in nanoseconds: a few spins at most.
    for _ in 0..10_000 {
        if std::time::Instant::now() != real {
            break;
        }
        std::hint::spin_loop();
    }
    Instant::now() == before
}

/// Makes sure `deadlines` wakes `timer` (queued under `id`) at `tick` or earlier.
fn queue(deadlines: &mut DeadlineQueue, timer: &mut Timer, id: u32, tick: Tick) {
    if timer.due != NEVER && tick < timer.queued {
        // Earlier than the entry already queued (or none is): queue one more. A later
        // deadline needs nothing: the queued entry re-queues it when it fires.
        deadlines.push(tick, id);
        timer.queued = tick;
    }
}

impl EventLoop {
    /// Watches the run in `index` for silence: it is hung if it does not beat again within the
    /// timeout after `since`.
    pub(super) fn watch(&mut self, index: usize, since: Instant) {
        let due = since.checked_add(self.slots[index].policy.timeout_threshold);
        let granularity = self.config.heartbeat_granularity_millis();
        self.set_timer(index, TimerKind::Heartbeat, due, granularity);
    }

    /// Makes `due` (`None`: never) the slot's one deadline, rounded up to `granularity`
    /// milliseconds when that is coarser than the clock's.
    pub(super) fn set_timer(
        &mut self,
        index: usize,
        kind: TimerKind,
        due: Option<Instant>,
        granularity: u64,
    ) {
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
    pub(super) fn queue(&mut self, index: usize, tick: Tick) {
        queue(
            &mut self.deadlines,
            &mut self.slots[index].timer,
            index as u32,
            tick,
        );
    }

    /// Makes `at` (`None`: never) the loop's own deadline `which`.
    pub(super) fn set_loop_timer(&mut self, which: LoopTimer, at: Option<Instant>) {
        let timer = &mut self.loop_timers[which as usize];
        timer.due = at.map_or(NEVER, |at| nanos_since(self.settings.epoch, at));
        let tick = tick_of(timer.due);
        queue(&mut self.deadlines, timer, which.id(), tick);
    }

    /// A loop timer's entry popped at `tick`: fires it if it is due, queues it again if not.
    fn on_loop_timer(&mut self, which: LoopTimer, tick: Tick, now: Nanos) {
        let timer = &mut self.loop_timers[which as usize];
        if timer.queued != tick {
            return; // Superseded by an earlier entry.
        }
        timer.queued = NEVER;
        if timer.due == NEVER {
            return;
        }
        if timer.due > now {
            let later = tick_of(timer.due).max(tick_of(now) + 1);
            queue(&mut self.deadlines, timer, which.id(), later);
            return;
        }
        timer.due = NEVER;
        match which {
            LoopTimer::Group => self.start_group_when_ready(),
            LoopTimer::ShutdownBound => self.drop_every_run(),
        }
    }

    pub(super) fn on_timers(&mut self) {
        let now = Instant::now();
        let now_nanos = nanos_since(self.settings.epoch, now);
        let now_tick = tick_of(now_nanos);
        let mut due = std::mem::take(&mut self.due);
        self.deadlines.pop_due(now_tick, &mut due);
        for (tick, slot) in due.drain(..) {
            if let Some(which) = LoopTimer::of(slot) {
                self.on_loop_timer(which, tick, now_nanos);
                continue;
            }
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
    pub(super) fn approach(&mut self, index: usize, due: Nanos, now: Nanos) -> bool {
        let slot = &self.slots[index];
        let Some(run) = slot.run.as_ref() else {
            return false;
        };
        if run.stopping {
            return false;
        }
        // A driver that moved on to the next run in place reset the beat for it: no beat of
        // this generation is found, and the check at the deadline misses (see below).
        if let Some(stamp) = slot.cells.beat_of(slot.generation) {
            let last_beat = self.settings.instant_of(stamp);
            let moved = last_beat
                .checked_add(slot.policy.timeout_threshold)
                .map_or(NEVER, |at| nanos_since(self.settings.epoch, at));
            if moved > due {
                self.watch(index, last_beat);
                return true;
            }
        }
        if clock_is_paused() {
            // Paused, Tokio's time moves only when the program moves it: a wait in real time
            // means nothing, and its wake-up from another thread, at a moment the OS picks,
            // would make what a paused runtime does between two steps depend on thread
            // scheduling (it made the model test flaky under load). The queued tick does it.
            return false;
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
    pub(super) fn on_precise(&mut self) {
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

    pub(super) fn check_heartbeat(&mut self, index: usize, now: Instant) {
        let slot = &self.slots[index];
        let Some(run) = slot.run.as_ref() else {
            return;
        };
        let generation = slot.generation;
        if run.stopping {
            return;
        }
        let timeout = slot.policy.timeout_threshold;
        // One read of the beat the run's thread keeps writing, in the dense table (the slot
        // and one line of beats: the run's own state is not touched on this path). Both
        // decisions below use it. A run its driver has replaced in place has no beat of this
        // generation: the stop below then misses, and the driver's report of the new run, on
        // its way, watches that one.
        let silent_since = match slot.cells.beat_of(generation) {
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
        let failure = Failure::new(
            FailureKind::Hang,
            format!("hung: no heartbeat for {timeout:?}"),
        );
        // The silence was not healthy time: it must not earn the task its attempts back.
        self.slots[index].after_exit = AfterExit::Nothing;
        if self.fail(index, failure, Some(silent_since)) {
            self.restart_later(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::clock_is_paused;

    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_is_seen_paused() {
        assert!(clock_is_paused());
    }

    #[tokio::test]
    async fn a_running_clock_is_not() {
        assert!(!clock_is_paused());
    }
}
