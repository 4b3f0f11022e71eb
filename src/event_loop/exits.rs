//! What a run's end leads to: its outcome, the task's restart policy, the dead tasks threshold.

use std::sync::Arc;

use tokio::time::Instant;

use super::slot::{AfterExit, TimerKind};
use super::{EventLoop, NEVER};
use crate::deadline::nanos_since;
use crate::error::SupervisorError;
use crate::message::{RanAgain, RunExit, RunOutcome};
use crate::policy;
use crate::policy::backoff::{exponential_delay, with_jitter};
use crate::policy::restart::Ending;
use crate::status::TaskStatus;
use crate::unwind;

impl EventLoop {
    /// A driver has ended: its last run ended with `exit.outcome`.
    pub(super) fn on_exit(&mut self, exit: RunExit) {
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
                RunOutcome::Completed => self.complete(index),
                RunOutcome::Failed(reason) => self.fail_and_restart(index, reason),
                RunOutcome::Dropped { .. } => self.fail_and_restart(index, Arc::from("dropped")),
            },
        }
    }

    /// A run failed before proving alive, and its driver started the next one in place: as if
    /// the run had exited with that failure and the next had been started at once, without the
    /// spawn.
    pub(super) fn on_ran_again(&mut self, again: RanAgain) {
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

    /// The run in `index` returned `Ok(())`: `Completed`, and restarted after the base delay if
    /// its policy says so, with its restart count cleared (the run did its work).
    fn complete(&mut self, index: usize) {
        self.set_status(index, TaskStatus::Completed, None);
        let slot = &mut self.slots[index];
        slot.healthy_since = NEVER;
        if policy::restart::policy_restarts(slot.policy.restart, Ending::Completed) {
            slot.attempts = 0;
            self.schedule_restart(index);
        }
    }

    pub(super) fn fail_and_restart(&mut self, index: usize, reason: Arc<str>) {
        if self.fail(index, reason, None) {
            self.schedule_restart(index);
        }
    }

    /// Counts a failure of the task in `index`, whose run was healthy until `healthy_until`
    /// (`None`: until now): `Failed` with one more attempt used when its policy restarts it
    /// and an attempt is left, `Dead` otherwise. Returns whether it will be restarted.
    pub(super) fn fail(
        &mut self,
        index: usize,
        reason: Arc<str>,
        healthy_until: Option<Instant>,
    ) -> bool {
        let slot = &mut self.slots[index];
        let stable_after = slot.policy.task_being_stable_after;
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
        let policy = &slot.policy;
        if policy::restart::policy_restarts(policy.restart, Ending::Failed)
            && policy::restart::attempts_left(policy.max_restart_attempts, slot.attempts)
        {
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

    /// Starts the task in `index` after its back-off for its restart count (the base delay for
    /// a count of zero or one): at once when the delay is zero, without going through the
    /// timer.
    pub(super) fn schedule_restart(&mut self, index: usize) {
        let slot = &self.slots[index];
        let policy = &slot.policy;
        let delay = with_jitter(
            exponential_delay(
                policy.base_restart_delay,
                slot.attempts,
                policy.max_backoff_exponent,
            ),
            policy.restart_jitter,
            self.jitter.next_unit(),
        );
        if delay.is_zero() {
            self.start(index);
        } else {
            let due = Instant::now().checked_add(delay);
            self.set_timer(index, TimerKind::BackOff, due, 1);
        }
    }

    pub(super) fn check_dead_threshold(&mut self) {
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
}
