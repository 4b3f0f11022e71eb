//! Restarts within a sliding window: at most `max_restarts` within any `within`. One window per
//! task that has a restart limit, and one for the supervisor's restart intensity.

use std::collections::VecDeque;
use std::time::Duration;

/// At most `max_restarts` restarts within any `within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RestartLimit {
    pub(crate) max_restarts: u32,
    pub(crate) within: Duration,
}

/// The restarts made within the last `within` of a [`RestartLimit`], oldest first.
///
/// # Invariants
///
/// 1. It holds at most `max_restarts` instants: memory is bounded by the limit, whatever the
///    number of restarts over time.
/// 2. Every instant it holds is less than `within` before the latest one admitted.
#[derive(Debug, Clone)]
pub(crate) struct RestartWindow {
    limit: RestartLimit,
    /// Nanoseconds since the supervisor's epoch.
    restarts: VecDeque<u64>,
}

impl RestartWindow {
    pub(crate) fn new(limit: RestartLimit) -> Self {
        Self {
            limit,
            restarts: VecDeque::new(),
        }
    }

    /// Counts a restart at `now` (nanoseconds since the supervisor's epoch, never decreasing)
    /// if it is within the limit, and says whether it was. A restart that would be one too
    /// many is not counted: the caller does not make it.
    ///
    /// A restart `within` or longer before `now` has left the window: with a limit of one
    /// within a second, restarts exactly a second apart are all allowed.
    pub(crate) fn admit(&mut self, now: u64) -> bool {
        let within = u64::try_from(self.limit.within.as_nanos()).unwrap_or(u64::MAX);
        while self
            .restarts
            .front()
            .is_some_and(|&then| now.saturating_sub(then) >= within)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.limit.max_restarts as usize {
            return false;
        }
        self.restarts.push_back(now);
        true
    }

    pub(crate) fn limit(&self) -> RestartLimit {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn window(max_restarts: u32, within_ms: u64) -> RestartWindow {
        RestartWindow::new(RestartLimit {
            max_restarts,
            within: Duration::from_millis(within_ms),
        })
    }

    #[test]
    fn admits_up_to_the_limit_within_the_window() {
        let mut window = window(3, 1000);
        assert!(window.admit(0));
        assert!(window.admit(100 * MS));
        assert!(window.admit(200 * MS));
        assert!(!window.admit(300 * MS), "a fourth within a second");
        assert!(!window.admit(999 * MS), "the first is still in the window");
        assert!(window.admit(1000 * MS), "the first has left it");
    }

    #[test]
    fn a_refused_restart_is_not_counted() {
        let mut window = window(1, 1000);
        assert!(window.admit(0));
        assert!(!window.admit(500 * MS));
        assert!(
            window.admit(1000 * MS),
            "only the admitted restart at 0 counted"
        );
    }

    #[test]
    fn restarts_spread_wider_than_the_window_never_exceed_it() {
        let mut window = window(3, 250);
        for restart in 1..1000 {
            assert!(window.admit(restart * 100 * MS), "restart {restart}");
        }
        assert!(window.restarts.len() <= 3, "bounded by the limit");
    }

    #[test]
    fn zero_restarts_admits_none() {
        let mut window = window(0, 1000);
        assert!(!window.admit(0));
        assert!(!window.admit(u64::MAX));
    }

    #[test]
    fn an_enormous_window_never_forgets() {
        let mut window = RestartWindow::new(RestartLimit {
            max_restarts: 2,
            within: Duration::MAX,
        });
        assert!(window.admit(0));
        assert!(window.admit(u64::MAX / 2));
        assert!(
            !window.admit(u64::MAX - 1),
            "within the longest window the clock has"
        );
    }
}
