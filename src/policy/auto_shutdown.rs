//! When the end of significant tasks stops the whole supervisor (Erlang/OTP's `auto_shutdown`).

/// Whether the supervisor stops by itself once its significant tasks have ended (Erlang/OTP's
/// `auto_shutdown`). Set it with
/// [`SupervisorBuilder::with_auto_shutdown`](crate::SupervisorBuilder::with_auto_shutdown);
/// mark tasks with [`TaskSpec::significant`](crate::TaskSpec::significant).
///
/// A significant task *ends for good* when it will not be started again by the supervisor:
/// it completed and its policy does not restart it, or it died by the supervisor's rules (out
/// of attempts, over its restart limit, or a failed `Temporary` task). Only a task's own end
/// counts: one killed with [`kill_task`](crate::SupervisorHandle::kill_task) does not stop the
/// supervisor, as OTP ignores children that the supervisor itself terminated.
///
/// When it stops this way, [`wait`](crate::SupervisorHandle::wait) returns `Ok(())` if the
/// significant tasks that ended completed, and
/// [`SupervisorError::SignificantTaskDied`](crate::SupervisorError::SignificantTaskDied) if
/// one of them died: the work did not get done, and a parent supervisor treats that as a
/// failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AutoShutdown {
    /// The supervisor lives until it is told to stop, whatever its tasks do (the default,
    /// and OTP's).
    #[default]
    Never,
    /// It stops once any significant task has ended for good.
    AnySignificant,
    /// It stops once every significant task has ended for good: when the last one still
    /// active ends by itself.
    AllSignificant,
}

/// Whether the supervisor stops now that a significant task ended for good by itself, while
/// `others_active` other significant tasks are still active (running, or to be started again).
pub(crate) fn stops(setting: AutoShutdown, others_active: usize) -> bool {
    match setting {
        AutoShutdown::Never => false,
        AutoShutdown::AnySignificant => true,
        AutoShutdown::AllSignificant => others_active == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_stops() {
        assert!(!stops(AutoShutdown::Never, 0));
    }

    #[test]
    fn any_significant_stops_at_the_first_end() {
        assert!(stops(AutoShutdown::AnySignificant, 0));
        assert!(stops(AutoShutdown::AnySignificant, 7));
    }

    #[test]
    fn all_significant_stops_at_the_last_end() {
        assert!(!stops(AutoShutdown::AllSignificant, 1));
        assert!(stops(AutoShutdown::AllSignificant, 0));
    }
}
