//! Which tasks a failure stops and restarts (Erlang/OTP's restart strategies).

use std::ops::Range;

/// Which tasks are restarted when one fails (Erlang/OTP's restart strategies). Set it with
/// [`SupervisorBuilder::with_strategy`](crate::SupervisorBuilder::with_strategy).
///
/// Under `OneForAll` and `RestForOne`, the tasks a failure affects restart together, as a
/// group: each running one is asked to stop (cancellation, its grace period, then it is
/// dropped), and none of them starts again until every one of them has ended and the failed
/// task's back-off is over; then they start in start order. Tasks that are
/// [`Temporary`](crate::RestartPolicy::Temporary), killed, or dead are left as they are, as
/// OTP leaves them. The task that failed counts one restart against its limits and the
/// supervisor's intensity; the others count none, and keep their status until they start
/// again.
///
/// "Start order" is the order tasks were registered in: the builder's tasks first, then
/// those added at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Only the task that failed is restarted (the default, and OTP's).
    #[default]
    OneForOne,
    /// Every task is stopped and restarted with the one that failed: for tasks that cannot
    /// work without each other.
    OneForAll,
    /// The task that failed and every task started after it are stopped and restarted: for a
    /// chain in which later tasks depend on earlier ones (a listener, then its workers).
    RestForOne,
}

/// The tasks, as a range of start positions out of `len`, that a failure of the task at
/// position `failed` stops and restarts under `strategy`.
pub(crate) fn affected(strategy: Strategy, failed: usize, len: usize) -> Range<usize> {
    match strategy {
        Strategy::OneForOne => failed..failed + 1,
        Strategy::OneForAll => 0..len,
        Strategy::RestForOne => failed..len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_for_one_is_the_failed_task_alone() {
        assert_eq!(affected(Strategy::OneForOne, 3, 10), 3..4);
    }

    #[test]
    fn one_for_all_is_every_task() {
        assert_eq!(affected(Strategy::OneForAll, 3, 10), 0..10);
        assert_eq!(affected(Strategy::OneForAll, 0, 1), 0..1);
    }

    #[test]
    fn rest_for_one_is_the_failed_task_and_every_later_one() {
        assert_eq!(affected(Strategy::RestForOne, 3, 10), 3..10);
        assert_eq!(affected(Strategy::RestForOne, 9, 10), 9..10);
        assert_eq!(affected(Strategy::RestForOne, 0, 10), 0..10);
    }
}
