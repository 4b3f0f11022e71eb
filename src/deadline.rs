//! The loop's timers: deadlines keyed by millisecond tick, so the loop sleeps until the
//! earliest one and never scans every task.
//!
//! Deadlines in the same tick share one bucket and fire in one wake-up; rounding heartbeat
//! deadlines up to a coarser tick (the health-check interval) coalesces them further.
//!
//! # Invariants
//!
//! 1. An entry names only a slot. Whether it still means anything is decided by the slot
//!    when it fires (see `Slot::timer` in the loop): a stale entry costs one lookup, never a
//!    wrong action.
//! 2. Ticks saturate: a deadline too far away to represent never fires, it does not wrap.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// Milliseconds since the supervisor's epoch: the key deadlines are queued under.
pub(crate) type Tick = u64;

/// Nanoseconds since the supervisor's epoch: an exact deadline.
pub(crate) type Nanos = u64;

const NANOS_PER_MILLI: u64 = 1_000_000;

/// The exact time of `instant`, in nanoseconds since `epoch` (saturating).
pub(crate) fn nanos_since(epoch: Instant, instant: Instant) -> Nanos {
    u64::try_from(instant.saturating_duration_since(epoch).as_nanos()).unwrap_or(Nanos::MAX)
}

/// The tick `nanos` falls in. A deadline is queued under the tick that contains it and
/// checked exactly when that tick fires, so it is never acted on early, and never more than
/// one tick late.
pub(crate) fn tick_of(nanos: Nanos) -> Tick {
    nanos / NANOS_PER_MILLI
}

/// `nanos` rounded up to a whole multiple of `granularity` milliseconds (at least 1), so
/// deadlines close together share one wake-up.
pub(crate) fn round_up(nanos: Nanos, granularity: u64) -> Nanos {
    let step = granularity.max(1).saturating_mul(NANOS_PER_MILLI);
    nanos.div_ceil(step).saturating_mul(step)
}

/// The instant a tick starts, or `None` when it is too far away for the clock.
pub(crate) fn instant_of(epoch: Instant, tick: Tick) -> Option<Instant> {
    epoch.checked_add(Duration::from_millis(tick))
}

/// Slots waiting for a tick, earliest first.
#[derive(Debug, Default)]
pub(crate) struct DeadlineQueue {
    buckets: BTreeMap<Tick, Vec<u32>>,
    /// Emptied buckets kept for reuse, so steady heartbeat traffic does not allocate.
    spare: Vec<Vec<u32>>,
}

/// How many emptied buckets to keep for reuse.
const SPARE_BUCKETS: usize = 64;

impl DeadlineQueue {
    pub(crate) fn push(&mut self, tick: Tick, slot: u32) {
        if tick == Tick::MAX {
            return; // Never due (invariant 2).
        }
        let spare = &mut self.spare;
        self.buckets
            .entry(tick)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(slot);
    }

    pub(crate) fn next_tick(&self) -> Option<Tick> {
        self.buckets.first_key_value().map(|(tick, _)| *tick)
    }

    /// Moves every entry due at or before `now` into `due`, as `(tick, slot)` pairs.
    pub(crate) fn pop_due(&mut self, now: Tick, due: &mut Vec<(Tick, u32)>) {
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() > now {
                break;
            }
            let (tick, mut slots) = entry.remove_entry();
            due.extend(slots.drain(..).map(|slot| (tick, slot)));
            if self.spare.len() < SPARE_BUCKETS {
                self.spare.push(slots);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = NANOS_PER_MILLI;

    #[test]
    fn a_deadline_is_queued_under_the_tick_that_contains_it() {
        assert_eq!(tick_of(0), 0);
        assert_eq!(tick_of(7 * MS), 7);
        assert_eq!(tick_of(7 * MS + 999_999), 7);
    }

    #[test]
    fn rounding_up_reaches_the_next_multiple_of_the_granularity() {
        assert_eq!(round_up(7 * MS, 5), 10 * MS);
        assert_eq!(round_up(10 * MS, 5), 10 * MS);
        assert_eq!(round_up(7 * MS + 1, 1), 8 * MS);
        assert_eq!(
            round_up(3 * MS, 0),
            3 * MS,
            "zero granularity means one millisecond"
        );
        assert_eq!(round_up(Nanos::MAX, 7), Nanos::MAX, "saturates");
    }

    #[test]
    fn nanos_saturate_for_far_instants() {
        let epoch = Instant::now();
        assert_eq!(nanos_since(epoch, epoch), 0);
        assert_eq!(
            nanos_since(epoch + Duration::from_millis(3), epoch),
            0,
            "before the epoch"
        );
        let far = epoch + Duration::from_secs(u64::MAX / 1_000_000);
        assert_eq!(nanos_since(epoch, far), Nanos::MAX);
    }

    #[test]
    fn pops_only_what_is_due_in_tick_order() {
        let mut queue = DeadlineQueue::default();
        queue.push(30, 3);
        queue.push(10, 1);
        queue.push(20, 2);
        queue.push(10, 4);
        let mut due = Vec::new();
        queue.pop_due(20, &mut due);
        assert_eq!(due, [(10, 1), (10, 4), (20, 2)]);
        assert_eq!(queue.next_tick(), Some(30));
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn a_deadline_beyond_the_clock_never_fires() {
        let mut queue = DeadlineQueue::default();
        queue.push(Tick::MAX, 1);
        assert_eq!(queue.next_tick(), None);
        assert!(queue.buckets.is_empty());
    }
}
