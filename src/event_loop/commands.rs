//! Commands from handles: add, restart, kill, and the supervisor's own end.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::slot::{AfterExit, Slot, Timer, TimerKind};
use super::{EventLoop, NEVER};
use crate::error::SupervisorError;
use crate::message::NewTask;
use crate::status::TaskStatus;
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
        // Its status goes to its own byte even if the id and the slot ever disagree.
        let (status_cell, status_offset) = entry.into_cell();
        let declares_heartbeats = catch_unwind(AssertUnwindSafe(|| task.sends_heartbeats()))
            .unwrap_or_else(|payload| {
                unwind::dispose(payload);
                false
            });
        if policy.significant {
            self.significant.push(self.slots.len() as u32);
        }
        self.slots.push(Slot {
            name,
            status_cell,
            status_offset,
            template: Some(task),
            policy,
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

    /// Ends the supervisor with `result`: no run starts any more and every live run is stopped.
    pub(super) fn begin_ending(&mut self, result: Result<(), SupervisorError>) {
        if self.ending.is_some() {
            return;
        }
        self.ending = Some(result);
        self.group = None;
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
}
