//! Whether a task is started again after a run of it ended by itself: its restart policy, and
//! what is left of its attempts. The loop and a driver restarting in place both decide by this.

use crate::spec::RestartPolicy;

/// How a run ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// It returned `Ok(())`.
    Completed,
    /// It returned an error, panicked, or was hung.
    Failed,
}

/// Whether `policy` restarts a task whose run ended so, before any limit is looked at.
pub(crate) fn policy_restarts(policy: RestartPolicy, ending: Ending) -> bool {
    match policy {
        RestartPolicy::Permanent => true,
        RestartPolicy::Transient => ending == Ending::Failed,
        RestartPolicy::Temporary => false,
    }
}

/// Whether a task that has used `attempts` restarts after failures may have another under
/// `limit` (`None`: no limit).
pub(crate) fn attempts_left(limit: Option<u32>, attempts: u32) -> bool {
    limit.map_or(true, |limit| attempts < limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_restarts_what_it_says() {
        use Ending::*;
        use RestartPolicy::*;
        let table = [
            (Permanent, Completed, true),
            (Permanent, Failed, true),
            (Transient, Completed, false),
            (Transient, Failed, true),
            (Temporary, Completed, false),
            (Temporary, Failed, false),
        ];
        for (policy, ending, restarts) in table {
            assert_eq!(
                policy_restarts(policy, ending),
                restarts,
                "{policy:?} {ending:?}"
            );
        }
    }

    #[test]
    fn the_attempt_limit_counts_restarts() {
        assert!(attempts_left(Some(2), 0));
        assert!(attempts_left(Some(2), 1));
        assert!(!attempts_left(Some(2), 2));
        assert!(
            !attempts_left(Some(0), 0),
            "zero attempts: the first failure is final"
        );
        assert!(attempts_left(None, u32::MAX));
    }
}
