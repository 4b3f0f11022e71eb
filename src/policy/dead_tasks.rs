//! The dead tasks threshold: when the share of dead tasks makes the supervisor give up.

/// The share of dead tasks, `dead / total`, when it is **greater than** `threshold`: the
/// supervisor then gives up. `None` while the share is at or below it, and for a supervisor
/// with no task.
///
/// The comparison is the released 0.3 crate's: with a threshold of 0.5, one dead task of two
/// is tolerated, and a second of three is not. The share is a fraction from 0 to 1, as
/// [`SupervisorError::TooManyDeadTasks`](crate::SupervisorError::TooManyDeadTasks) reports it.
pub(crate) fn exceeded(dead: usize, total: usize, threshold: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let share = dead as f64 / total as f64;
    (share > threshold).then_some(share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_equal_to_the_threshold_is_tolerated() {
        assert_eq!(exceeded(1, 2, 0.5), None);
        assert_eq!(exceeded(2, 4, 0.5), None);
        assert_eq!(exceeded(3, 4, 0.75), None);
    }

    #[test]
    fn a_share_above_the_threshold_gives_up_with_that_share() {
        assert_eq!(exceeded(2, 3, 0.5), Some(2.0 / 3.0));
        assert_eq!(exceeded(1, 1, 0.99), Some(1.0));
    }

    #[test]
    fn a_zero_threshold_gives_up_at_the_first_death_only() {
        assert_eq!(exceeded(0, 10, 0.0), None);
        assert_eq!(exceeded(1, 10, 0.0), Some(0.1));
    }

    #[test]
    fn a_threshold_of_one_never_gives_up() {
        assert_eq!(exceeded(10, 10, 1.0), None);
    }

    #[test]
    fn no_task_never_gives_up() {
        assert_eq!(exceeded(0, 0, 0.0), None);
    }
}
