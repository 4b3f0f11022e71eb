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

/// Milliseconds since the supervisor's epoch.
pub(crate) type Tick = u64;

/// The tick that `instant` falls in, rounded up to a multiple of `granularity` milliseconds so
/// a deadline never fires early.
pub(crate) fn tick_at(epoch: Instant, instant: Instant, granularity: u64) -> Tick {
    let nanos = instant.saturating_duration_since(epoch).as_nanos();
    let millis = u64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(Tick::MAX);
    let granularity = granularity.max(1);
    millis.div_ceil(granularity).saturating_mul(granularity)
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

    #[test]
    fn ticks_round_up_to_the_granularity() {
        let epoch = Instant::now();
        let at = |millis| epoch + Duration::from_millis(millis);
        assert_eq!(tick_at(epoch, at(0), 1), 0);
        assert_eq!(tick_at(epoch, at(7), 1), 7);
        assert_eq!(tick_at(epoch, at(7), 5), 10);
        assert_eq!(tick_at(epoch, at(10), 5), 10);
        assert_eq!(tick_at(epoch, epoch + Duration::from_micros(7_001), 1), 8);
        assert_eq!(
            tick_at(epoch, at(3), 0),
            3,
            "zero granularity means one millisecond"
        );
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
