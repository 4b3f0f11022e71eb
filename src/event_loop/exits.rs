//! What a run's end leads to: its outcome, the task's restart policy, the dead tasks threshold.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::slot::{AfterExit, TimerKind};
use super::{EventLoop, NEVER};
use crate::deadline::nanos_since;
use crate::error::SupervisorError;
use crate::message::{Failure, FailureKind, RanAgain, RunExit, RunOutcome};
use crate::observe::events::EventKind;
use crate::policy;
use crate::policy::auto_shutdown::AutoShutdown;
use crate::policy::backoff::{exponential_delay, with_jitter};
use crate::policy::restart::Ending;
use crate::policy::shutdown::ShutdownOrder;
use crate::policy::window::{RestartLimit, RestartWindow};
use crate::status::TaskStatus;
use crate::table;
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
        if slot.run.take().is_none() {
            tracing::error!(task = %slot.name, "exit of an unknown run; this is a bug in task-supervisor");
            unwind::drop_guarded(template);
            return;
        }
        if slot.generation != id.generation {
            tracing::error!(task = %slot.name, "exit out of order; this is a bug in task-supervisor");
            slot.generation = id.generation;
        }
        self.live_runs -= 1;
        #[cfg(feature = "metrics")]
        {
            let started = slot.cells.started();
            let now = *self.now.get_or_insert_with(Instant::now);
            if started != 0 {
                let began = crate::context::instant_of_stamp(self.settings.epoch, started);
                crate::observe::metrics::run_ended(
                    &slot.name,
                    now.saturating_duration_since(began),
                );
            }
        }
        slot.cells.publish_ended();
        slot.template = Some(template);
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
            AfterExit::Group => self.group_member_stopped(index),
            AfterExit::Nothing => {}
            AfterExit::Decide => match outcome {
                RunOutcome::Completed => self.complete(index),
                RunOutcome::Failed(failure) => self.fail_and_restart(index, failure),
                RunOutcome::Dropped { .. } => {
                    self.fail_and_restart(index, Failure::new(FailureKind::Dropped, "dropped"))
                }
            },
        }
        // A reverse stop moves on whatever the run that ended was waited for by.
        self.stop_next_in_reverse();
    }

    /// A run failed before proving alive, and its driver started the next one in place: as if
    /// the run had exited with that failure and the next had been started at once, without the
    /// spawn.
    pub(super) fn on_ran_again(&mut self, again: RanAgain) {
        let RanAgain {
            id,
            attempts,
            failure,
        } = again;
        let index = id.slot as usize;
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let Some(run) = slot.run.as_ref() else {
            tracing::error!(task = %slot.name, "restart of a run that is gone; this is a bug in task-supervisor");
            return;
        };
        slot.cells.run().renewal_handled();
        if slot.generation.wrapping_add(1) != id.generation {
            tracing::error!(task = %slot.name, "restart out of order; this is a bug in task-supervisor");
        }
        slot.generation = id.generation;
        let stopping = run.stopping;
        self.shared
            .registry
            .record_failure(index as u32, Arc::clone(&failure.reason));
        let stamp = self.stamp_now();
        self.slots[index].cells.publish_failed(stamp);
        self.report_failure(index, &failure);
        if stopping {
            // Asked to stop after the driver moved on: the stop is the new run's, and the
            // status stays what the stop made it.
            return;
        }
        self.slots[index].attempts = attempts;
        self.set_status(index, TaskStatus::Failed, Some(failure.reason));
        self.report(
            Some(index),
            EventKind::RestartScheduled {
                delay: Duration::ZERO,
            },
        );
        self.started(index);
    }

    /// The run in `index` returned `Ok(())`: `Completed`, and restarted after the base delay if
    /// its policy says so, with its restart count cleared (the run did its work).
    fn complete(&mut self, index: usize) {
        self.report(Some(index), EventKind::Completed);
        self.set_status(index, TaskStatus::Completed, None);
        let slot = &mut self.slots[index];
        slot.healthy_since = NEVER;
        if !policy::restart::policy_restarts(slot.policy.restart, Ending::Completed) {
            self.ended_for_good(index, None);
            return;
        }
        slot.attempts = 0;
        match self.count_restart(index) {
            Counted::Yes => self.restart_later(index),
            Counted::OverTaskLimit(limit) => {
                let reason = format!("restart limit reached: {}", describe(limit));
                self.die(index, Arc::from(reason));
            }
            Counted::OverIntensity => {}
        }
    }

    pub(super) fn fail_and_restart(&mut self, index: usize, failure: Failure) {
        if self.fail(index, failure, None) {
            self.restart_later(index);
        }
    }

    /// Reports how the run of the task in `index` failed: failed, panicked, or hung.
    fn report_failure(&mut self, index: usize, failure: &Failure) {
        let kind = match failure.kind {
            FailureKind::Error | FailureKind::Dropped => EventKind::Failed {
                reason: Arc::clone(&failure.reason),
            },
            FailureKind::Panic => EventKind::Panicked {
                message: failure
                    .reason
                    .strip_prefix("panicked: ")
                    .map_or_else(|| Arc::clone(&failure.reason), Arc::from),
            },
            FailureKind::Hang => EventKind::HeartbeatMissed {
                timeout: self.slots[index].policy.timeout_threshold,
            },
        };
        self.report(Some(index), kind);
    }

    /// Counts a failure of the task in `index`, whose run was healthy until `healthy_until`
    /// (`None`: until now): `Failed` with one more attempt used when its policy restarts it, an
    /// attempt is left and its restart limit allows it, `Dead` otherwise. Returns whether it
    /// will be restarted: not when the restart would exceed the supervisor's restart intensity
    /// either (it is left `Failed`, and the supervisor stops).
    pub(super) fn fail(
        &mut self,
        index: usize,
        failure: Failure,
        healthy_until: Option<Instant>,
    ) -> bool {
        self.report_failure(index, &failure);
        let reason = failure.reason;
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
        let stamp = self.stamp_now();
        let slot = &mut self.slots[index];
        slot.cells.publish_failed(stamp);
        let policy = &slot.policy;
        let restarts = policy::restart::policy_restarts(policy.restart, Ending::Failed)
            && policy::restart::attempts_left(policy.max_restart_attempts, slot.attempts);
        let counted = if restarts {
            self.count_restart(index)
        } else {
            Counted::OverTaskLimit(None)
        };
        match counted {
            Counted::Yes | Counted::OverIntensity => {
                let slot = &mut self.slots[index];
                slot.attempts = slot.attempts.saturating_add(1);
                self.set_status(index, TaskStatus::Failed, Some(reason));
                counted == Counted::Yes
            }
            Counted::OverTaskLimit(_) => {
                self.die(index, reason);
                false
            }
        }
    }

    /// The task in `index` is dead by the supervisor's rules (out of attempts, over its restart
    /// limit, or temporary): `Dead`, counted towards the dead tasks threshold.
    fn die(&mut self, index: usize, reason: Arc<str>) {
        // Counted as dead of failure (a kill is not); `set_status` uncounts it when it leaves
        // `Dead`.
        self.slots[index].dead_of_failure = true;
        self.slots[index]
            .cells
            .publish_flag(table::DIED_OF_FAILURE, true);
        self.dead_of_failure += 1;
        self.report(
            Some(index),
            EventKind::Dead {
                reason: Arc::clone(&reason),
            },
        );
        self.set_status(index, TaskStatus::Dead, Some(Arc::clone(&reason)));
        self.check_dead_threshold();
        self.ended_for_good(index, Some(reason));
    }

    /// The task in `index` ended for good by itself: it completed and will not be restarted
    /// (`died` is `None`), or it died of `died`. If it is significant, the supervisor may stop
    /// by its auto-shutdown setting.
    fn ended_for_good(&mut self, index: usize, died: Option<Arc<str>>) {
        let setting = self.config.auto_shutdown;
        if !self.slots[index].policy.significant
            || setting == AutoShutdown::Never
            || self.ending.is_some()
        {
            return;
        }
        if let Some(reason) = &died {
            self.significant_deaths
                .insert(index as u32, Arc::clone(reason));
        }
        let others_active = self
            .significant
            .iter()
            .filter(|&&other| other as usize != index && self.is_active(other as usize))
            .count();
        if !policy::auto_shutdown::stops(setting, others_active) {
            return;
        }
        // Any significant task: this one's end says how it went. All of them: a death among
        // them says the work was not done (the first of them, in start order).
        let death = match setting {
            AutoShutdown::AllSignificant => self.significant.iter().find_map(|&other| {
                let reason = self.significant_deaths.get(&other)?;
                Some((other as usize, Arc::clone(reason)))
            }),
            _ => died.map(|reason| (index, reason)),
        };
        let result = match death {
            None => Ok(()),
            Some((task, reason)) => Err(SupervisorError::SignificantTaskDied {
                task: self.slots[task].name.to_string(),
                reason: reason.to_string(),
            }),
        };
        tracing::info!(
            task = %self.slots[index].name,
            ?setting,
            "a significant task ended; the supervisor stops"
        );
        let _ = self.shared.registry.close(|| Ok(()));
        self.begin_ending(result, None);
    }

    /// Whether the task in `index` is running, or will be started again by the supervisor.
    fn is_active(&self, index: usize) -> bool {
        let slot = &self.slots[index];
        slot.run.is_some() || slot.timer.due != NEVER || slot.in_group || !slot.status.is_final()
    }

    /// Counts a restart of the task in `index`, which its policy wants, against the task's
    /// restart limit and then the supervisor's restart intensity (each restart is counted once,
    /// invariant 11). Over the intensity, the supervisor begins to stop.
    fn count_restart(&mut self, index: usize) -> Counted {
        let task_limit = self.slots[index].policy.restart_limit;
        if task_limit.is_none() && self.intensity.is_none() {
            return Counted::Yes; // Nothing to count against: no clock read.
        }
        let now = nanos_since(self.settings.epoch, Instant::now());
        if let Some(limit) = task_limit {
            let window = self
                .windows
                .entry(index as u32)
                .or_insert_with(|| RestartWindow::new(limit));
            if !window.admit(now) {
                return Counted::OverTaskLimit(Some(limit));
            }
        }
        let Some(intensity) = self.intensity.as_mut() else {
            return Counted::Yes;
        };
        if intensity.admit(now) {
            return Counted::Yes;
        }
        let limit = intensity.limit();
        self.report(
            Some(index),
            EventKind::IntensityExceeded {
                restarts: limit.max_restarts.saturating_add(1),
                within: limit.within,
            },
        );
        self.give_up(SupervisorError::RestartIntensityExceeded {
            restarts: limit.max_restarts.saturating_add(1),
            within: limit.within,
        });
        Counted::OverIntensity
    }

    /// Starts the task in `index` after its back-off for its restart count (the base delay for
    /// a count of zero or one): at once when the delay is zero, without going through the
    /// timer.
    pub(super) fn schedule_restart(&mut self, index: usize) {
        let delay = self.backoff(index);
        self.report(Some(index), EventKind::RestartScheduled { delay });
        if delay.is_zero() {
            self.start(index);
        } else {
            let due = Instant::now().checked_add(delay);
            self.set_timer(index, TimerKind::BackOff, due, 1);
        }
    }

    /// The back-off before the next run of the task in `index`, for its restart count, with
    /// jitter drawn.
    pub(super) fn backoff(&mut self, index: usize) -> Duration {
        let slot = &self.slots[index];
        let policy = &slot.policy;
        with_jitter(
            exponential_delay(
                policy.base_restart_delay,
                slot.attempts,
                policy.max_backoff_exponent,
            ),
            policy.restart_jitter,
            self.jitter.next_unit(),
        )
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
        self.give_up(SupervisorError::TooManyDeadTasks {
            current_percentage: share,
            threshold,
        });
    }

    /// The supervisor stops by its own rules, with `error`: it takes no more commands, and every
    /// run is stopped.
    fn give_up(&mut self, error: SupervisorError) {
        // Over its intensity, a supervisor stops its tasks in reverse start order, as OTP's.
        let order = matches!(error, SupervisorError::RestartIntensityExceeded { .. })
            .then_some(ShutdownOrder::Reverse);
        let _ = self.shared.registry.close(|| Ok(()));
        self.begin_ending(Err(error), order);
    }
}

/// Whether a restart the policy wants was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// Counted: make it.
    Yes,
    /// One too many for the task's own limit (`None`: no restart was wanted at all): the task
    /// is dead.
    OverTaskLimit(Option<RestartLimit>),
    /// One too many for the supervisor's intensity: the supervisor stops.
    OverIntensity,
}

/// `limit` as the reason of a death says it.
fn describe(limit: Option<RestartLimit>) -> String {
    match limit {
        Some(limit) => format!(
            "more than {} restarts within {:?}",
            limit.max_restarts, limit.within
        ),
        None => "no restart allowed".to_owned(),
    }
}
