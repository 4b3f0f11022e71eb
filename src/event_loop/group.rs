//! Group restarts, for the one-for-all and rest-for-one strategies: the tasks a failure
//! affects are stopped together and started again together.
//!
//! # Invariants
//!
//! 9. A group starts no run of its members until every run it stopped has ended (and the
//!    failed tasks' back-off is over): the same at-most-one rule as for a single restart.
//!    `stopping` counts the members whose run is still ending; the group starts only when it
//!    is zero, and every member then has no run.
//! 11. The group counts no restart: the failed task's restart was counted when it was
//!     decided, once; the other members count none.
//!
//! At most one group is pending at a time: the tasks a failure affects are all of them, or
//! every task from the failed one on, so a second failure while a group is pending only adds
//! the tasks it affects that are not in it yet.

use std::time::Duration;

use tokio::time::Instant;

use super::slot::{AfterExit, TimerKind};
use super::{EventLoop, LoopTimer, NEVER};
use crate::deadline::{nanos_since, Nanos};
use crate::observe::events::EventKind;
use crate::policy::strategy::{self, Strategy};
use crate::spec::RestartPolicy;
use crate::status::TaskStatus;

/// The pending group restart.
#[derive(Debug, Default)]
pub(super) struct Group {
    /// The members, by slot; those still `in_group` start with it, in start order.
    pub(super) members: Vec<u32>,
    /// Members whose run is still ending.
    pub(super) stopping: usize,
    /// The group starts no earlier than this (nanoseconds since the epoch): the end of the
    /// latest back-off of the tasks whose failure made it.
    pub(super) not_before: Nanos,
    /// Failed members whose run is still being stopped (they hung), with their back-off: as
    /// under one-for-one, a back-off counts from the end of the failed run.
    pub(super) backoffs_after_stop: Vec<(u32, Duration)>,
}

impl EventLoop {
    /// The task in `index` failed (or completed, under a permanent policy) and is to be
    /// restarted, its restart counted: after its back-off alone under one-for-one, or with
    /// the tasks its failure affects under a group strategy.
    pub(super) fn restart_later(&mut self, index: usize) {
        if self.ending.is_some() {
            // Ending: nothing starts again, and no group may take the runs the end is
            // stopping (a reverse stop waits for them one by one).
            return;
        }
        match self.config.strategy {
            Strategy::OneForOne => {
                if self.slots[index].run.is_some() {
                    // Hung, and being stopped: the back-off starts once it has ended.
                    self.slots[index].after_exit = AfterExit::BackOff;
                } else {
                    self.schedule_restart(index);
                }
            }
            strategy => self.join_group(strategy, index),
        }
    }

    /// Adds the task that failed in `failed`, and every task its failure affects under
    /// `strategy` that can be restarted, to the pending group (making one if none is): their
    /// runs are asked to stop, their pending restarts cancelled.
    fn join_group(&mut self, strategy: Strategy, failed: usize) {
        let delay = self.backoff(failed);
        let mut group = self.group.take().unwrap_or_default();
        if self.slots[failed].run.is_some() {
            // Hung, and being stopped: its back-off counts from the end of its run.
            group.backoffs_after_stop.push((failed as u32, delay));
        } else {
            let not_before = self.nanos_after(delay);
            group.not_before = group.not_before.max(not_before);
        }
        for index in strategy::affected(strategy, failed, self.slots.len()) {
            let slot = &mut self.slots[index];
            let joins = index == failed
                || (slot.policy.restart != RestartPolicy::Temporary
                    && slot.status != TaskStatus::Dead);
            if slot.in_group || !joins {
                continue;
            }
            slot.in_group = true;
            group.members.push(index as u32);
            match slot.run.as_ref() {
                Some(run) => {
                    let stopping = run.stopping;
                    slot.after_exit = AfterExit::Group;
                    group.stopping += 1;
                    if !stopping {
                        self.stop_run(index, None);
                    }
                }
                None => {
                    // Its own pending restart is the group's now.
                    slot.timer.due = NEVER;
                }
            }
        }
        let tasks = group.members.len();
        self.group = Some(group);
        self.report(Some(failed), EventKind::GroupRestart { strategy, tasks });
        self.report(Some(failed), EventKind::RestartScheduled { delay });
        self.start_group_when_ready();
    }

    /// The run of the group member in `index` has ended.
    pub(super) fn group_member_stopped(&mut self, index: usize) {
        let Some(group) = self.group.as_mut() else {
            return;
        };
        group.stopping -= 1;
        if let Some(at) = group
            .backoffs_after_stop
            .iter()
            .position(|&(member, _)| member as usize == index)
        {
            let (_, delay) = group.backoffs_after_stop.swap_remove(at);
            let not_before = self.nanos_after(delay);
            if let Some(group) = self.group.as_mut() {
                group.not_before = group.not_before.max(not_before);
            }
        }
        self.start_group_when_ready();
    }

    /// `delay` from now, in nanoseconds since the epoch (`NEVER` past the clock's end).
    fn nanos_after(&self, delay: Duration) -> Nanos {
        Instant::now()
            .checked_add(delay)
            .map_or(NEVER, |at| nanos_since(self.settings.epoch, at))
    }

    /// Takes the task in `index` out of the pending group, for a command about it alone.
    /// Returns whether its run was one the group was waiting for.
    pub(super) fn leave_group(&mut self, index: usize) -> bool {
        let slot = &mut self.slots[index];
        if !slot.in_group {
            return false;
        }
        slot.in_group = false;
        let waited_for = slot.run.is_some() && slot.after_exit == AfterExit::Group;
        if let Some(group) = self.group.as_mut() {
            if waited_for {
                group.stopping -= 1;
            }
            group
                .backoffs_after_stop
                .retain(|&(member, _)| member as usize != index);
        }
        waited_for
    }

    /// Starts the pending group if every run it stopped has ended and its back-off is over;
    /// if only the back-off is left, sets the loop's group timer for its end.
    pub(super) fn start_group_when_ready(&mut self) {
        let Some(group) = self.group.as_ref() else {
            return;
        };
        if group.stopping > 0 {
            return;
        }
        let not_before = group.not_before;
        let now = nanos_since(self.settings.epoch, Instant::now());
        if not_before > now {
            let at = self
                .settings
                .epoch
                .checked_add(Duration::from_nanos(not_before));
            self.set_loop_timer(LoopTimer::Group, at);
            return;
        }
        let Some(group) = self.group.take() else {
            return;
        };
        let mut members = group.members;
        members.sort_unstable();
        for index in members {
            let index = index as usize;
            let slot = &mut self.slots[index];
            if !std::mem::replace(&mut slot.in_group, false) {
                continue; // Left the group.
            }
            debug_assert!(slot.run.is_none(), "a member still runs (invariant 9)");
            slot.timer_kind = TimerKind::BackOff;
            self.start(index);
        }
    }
}
