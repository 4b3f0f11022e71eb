//! Commands from handles: add, restart, kill, and the supervisor's own end.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use tokio::time::Instant;

use super::slot::{AfterExit, Slot, Timer, TimerKind};
use super::timers::LoopTimer;
use super::{EventLoop, NEVER};
use crate::error::SupervisorError;
use crate::message::NewTask;
use crate::observe::events::EventKind;
use crate::policy::shutdown::ShutdownOrder;
use crate::status::TaskStatus;
use crate::table;
use crate::unwind;

impl EventLoop {
    pub(super) fn push_slot(&mut self, new: NewTask) {
        let NewTask {
            name,
            entry,
            task,
            policy,
        } = new;
        if entry.id as usize != self.slots.len() {
            tracing::error!(
                task = %name,
                id = entry.id,
                slots = self.slots.len(),
                "task id does not match its slot; this is a bug in task-supervisor"
            );
        }
        // Its fields go to its own place even if the id and the slot ever disagree.
        let cells = entry.into_cells();
        let declares_heartbeats = catch_unwind(AssertUnwindSafe(|| task.sends_heartbeats()))
            .unwrap_or_else(|payload| {
                unwind::dispose(payload);
                false
            });
        if policy.significant {
            self.significant.push(self.slots.len() as u32);
        }
        let declares = if declares_heartbeats {
            table::DECLARES_HEARTBEATS
        } else {
            0
        };
        let significant = if policy.significant {
            table::SIGNIFICANT
        } else {
            0
        };
        let readiness = if policy.counts_for_readiness {
            0
        } else {
            table::NOT_FOR_READINESS
        };
        cells
            .publish_flags(declares | significant | readiness | table::policy_bits(policy.restart));
        #[cfg(feature = "metrics")]
        crate::observe::metrics::status_changed(None, TaskStatus::Created);
        self.slots.push(Slot {
            name,
            cells,
            template: Some(task),
            policy,
            declares_heartbeats,
            status: TaskStatus::Created,
            attempts: 0,
            generation: 0,
            run: None,
            after_exit: AfterExit::Decide,
            timer: Timer {
                due: NEVER,
                queued: NEVER,
            },
            timer_kind: TimerKind::BackOff,
            healthy_since: NEVER,
            dead_of_failure: false,
            in_group: false,
        });
    }

    pub(super) fn restart(&mut self, index: usize) {
        if self.ending.is_some() {
            return;
        }
        let waited_for = self.leave_group(index);
        let slot = &mut self.slots[index];
        if slot.run.is_some() {
            slot.after_exit = AfterExit::Start;
            self.stop_run(index, None);
            if waited_for {
                self.start_group_when_ready();
            }
        } else {
            slot.timer.due = NEVER;
            slot.attempts = 0;
            self.start(index);
        }
    }

    pub(super) fn kill(&mut self, index: usize) {
        if self.ending.is_some() {
            return;
        }
        let waited_for = self.leave_group(index);
        if self.slots[index].status != TaskStatus::Dead {
            self.report(Some(index), EventKind::Killed);
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
        if waited_for {
            self.start_group_when_ready();
        }
    }

    /// Ends the supervisor with `result`: no run starts any more, and every live run is
    /// stopped in `order` (the supervisor's own order unless its rules say otherwise).
    pub(super) fn begin_ending(
        &mut self,
        result: Result<(), SupervisorError>,
        order: Option<ShutdownOrder>,
    ) {
        if self.ending.is_some() {
            return;
        }
        self.ending = Some(result);
        self.group = None;
        self.report(None, EventKind::Stopping);
        self.shared
            .ending
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(bound) = self.config.shutdown_timeout {
            let at = Instant::now().checked_add(bound);
            self.set_loop_timer(LoopTimer::ShutdownBound, at);
        }
        match order.unwrap_or(self.config.shutdown_order) {
            ShutdownOrder::Concurrent => {
                for index in 0..self.slots.len() {
                    self.stop_for_the_end(index);
                }
            }
            ShutdownOrder::Reverse => {
                self.reverse_stops_left = Some(self.slots.len());
                self.stop_next_in_reverse();
            }
        }
    }

    /// Stops the run in `index`, if any, for the supervisor's end; returns whether it has one.
    fn stop_for_the_end(&mut self, index: usize) -> bool {
        let slot = &mut self.slots[index];
        if slot.run.is_none() {
            slot.timer.due = NEVER; // A pending restart does nothing.
            return false;
        }
        // A run stopping already keeps its grace deadline: it must still be dropped.
        slot.after_exit = AfterExit::Nothing;
        self.stop_run(index, None);
        true
    }

    /// In a reverse shutdown, stops the last started task that still has a run, once every
    /// task started after it has ended; called again as each run ends.
    pub(super) fn stop_next_in_reverse(&mut self) {
        while let Some(left) = self.reverse_stops_left {
            let Some(index) = left.checked_sub(1) else {
                self.reverse_stops_left = None;
                return;
            };
            if self.stop_for_the_end(index) {
                return; // Wait for its exit.
            }
            self.reverse_stops_left = Some(index);
        }
    }

    /// The shutdown bound has passed: every run still alive is dropped at once.
    pub(super) fn drop_every_run(&mut self) {
        self.reverse_stops_left = None;
        for index in 0..self.slots.len() {
            if self.stop_for_the_end(index) {
                self.abort_run(index);
            }
        }
    }
}
