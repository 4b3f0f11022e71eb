//! Starting and stopping runs: a driver spawned per run, asked to stop, dropped after its grace.

use std::sync::Arc;

use tokio::time::Instant;

use super::slot::{AfterExit, LiveRun, TimerKind};
use super::{EventLoop, NEVER};
use crate::context::{stamp_since, RunRef};
use crate::deadline::nanos_since;
use crate::message::{Message, RunId, RunProgress};
use crate::observe::events::EventKind;
use crate::run::{self, DriverStart};
use crate::status::TaskStatus;

impl EventLoop {
    /// Spawns a driver for the next run of the task in `index`, unless the supervisor is
    /// ending.
    pub(super) fn start(&mut self, index: usize) {
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
        // The run's state is the task's place in the table: the last run has ended (invariant
        // 1), so it is given to this one, and a context the last run gave away is left with
        // a generation that is over.
        slot.cells.run().begin(id.generation);
        let watched = slot.declares_heartbeats;
        let span = tracing::info_span!("run", task = %slot.name, attempt = slot.attempts);
        let span = (!span.is_disabled()).then(|| Box::new(span));
        let abort = template.spawn(DriverStart {
            run: RunRef::new(Arc::clone(slot.cells.chunk()), id),
            in_place: run::in_place_of(&slot.policy),
            watched,
            attempts: slot.attempts,
            span,
        });
        self.live_runs += 1;
        slot.run = Some(LiveRun {
            abort,
            stopping: false,
            aborted: false,
        });
        self.started(index);
    }

    /// The run in `index` has started: `Starting`, and watched for its first beat if it
    /// declared heartbeats.
    pub(super) fn started(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.after_exit = AfterExit::Decide;
        slot.timer.due = NEVER;
        slot.healthy_since = NEVER;
        let watched = slot.declares_heartbeats;
        if slot.policy.significant {
            // Running again: no longer dead.
            self.significant_deaths.remove(&(index as u32));
        }
        self.set_status(index, TaskStatus::Starting, None);
        let stamp = self.stamp_now();
        let slot = &self.slots[index];
        if slot.generation > 1 {
            slot.cells.count_restart();
        }
        slot.cells.publish_started(stamp);
        self.report(Some(index), EventKind::Started);
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
    pub(super) fn stop_run(&mut self, index: usize, expected: Option<u32>) -> bool {
        let slot = &mut self.slots[index];
        let Some(run) = slot.run.as_mut() else {
            return false;
        };
        if run.stopping {
            return false;
        }
        let Some(cooperative) = slot.cells.run().request_stop(expected) else {
            return false;
        };
        run.stopping = true;
        let grace = self.slots[index].policy.grace_period;
        if cooperative && !grace.is_zero() {
            let due = Instant::now().checked_add(grace);
            self.set_timer(index, TimerKind::Grace, due, 1);
        } else {
            self.abort_run(index);
        }
        true
    }

    /// Drops the run in `index` without waiting for it any longer. A run that runs a child
    /// supervisor is not dropped: the child is told to drop every run of its own at once, and
    /// the run ends as soon as they have (invariant 10).
    pub(super) fn abort_run(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let Some(run) = slot.run.as_mut() else {
            return;
        };
        if run.aborted {
            return;
        }
        run.aborted = true;
        let cells = slot.cells.run();
        if cells.stops_its_child() {
            // Never dropped: it ends once its child has (invariant 10 of `tree`).
            cells.force();
            if let Some(child) = self.shared.child_of(index as u32) {
                let _ = child.shared.sender.send(Message::DropEveryRun);
            }
            return;
        }
        run.abort.abort();
    }

    pub(super) fn on_progress(&mut self, progress: RunProgress) {
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
            slot.cells
                .beat_of(slot.generation)
                .map(|stamp| self.settings.instant_of(stamp))
        } else {
            None
        };
        if progress.alive && slot.status == TaskStatus::Starting {
            let now = *self.now.get_or_insert_with(Instant::now);
            slot.healthy_since = nanos_since(self.settings.epoch, now);
            slot.cells
                .publish_healthy(stamp_since(self.settings.epoch, now));
            self.set_status(index, TaskStatus::Healthy, None);
            self.report(Some(index), EventKind::Healthy);
        }
        if let Some(last_beat) = watch_from {
            self.watch(index, last_beat);
        }
    }
}
