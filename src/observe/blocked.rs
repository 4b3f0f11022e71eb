//! Blocked-poll detection: a task whose single poll holds its worker thread for longer than a
//! threshold is reported while it blocks, by a watcher on an OS thread of its own.
//!
//! A blocked poll cannot be seen from inside the runtime it blocks: on a current-thread
//! runtime nothing else runs, and on a multi-thread one the blocked worker may be the one that
//! drives the timer. So each thread that polls a supervised run keeps, in a slot of its own,
//! "inside a poll of task X, poll number k", written by the run's wrapper; a watcher thread
//! reads one slot per such thread every quarter of the smallest threshold (less often, down
//! to once a threshold, while every thread is idle), and a poll number that has not moved
//! while the thread is inside a poll is a poll that has not returned.
//!
//! # Invariants
//!
//! 1. The poll path pays no clock read, no lock and no allocation: a thread-local lookup, one
//!    load and three stores. Only a thread's first poll registers its slot (a lock, once).
//! 2. The watcher's work is proportional to the threads that ever polled a supervised run,
//!    not to the tasks; it sleeps while no supervisor watches, and ends when none is left.
//! 3. A poll is reported blocked at most once, and then unblocked exactly once, when the
//!    watcher next sees its thread leave it (or the supervisor has stopped).
//!
//! # Why sharing is safe
//!
//! A slot is written only by its own thread and read by the watcher. The watcher reads the
//! poll number, then the task, then the poll number again: if the two agree and say "inside a
//! poll", the task read is the one of that poll (the task is written before the number).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::observe::events::{Event, EventKind};
use crate::shared::Shared;

/// The default threshold: a poll that holds its thread for a tenth of a second is a thousand
/// times longer than what Tokio asks of a task between two awaits (10 – 100 us), and long
/// enough that no CPU-heavy but well-behaved poll comes near it; short enough to be told long
/// before a heartbeat timeout (2 s by default) would notice a stalled runtime.
pub(crate) const DEFAULT_THRESHOLD: Duration = Duration::from_millis(100);

/// What one thread is polling: written by the thread, read by the watcher.
#[derive(Debug, Default)]
struct PollSlot {
    /// Polls entered plus polls left: odd while inside a poll.
    polls: AtomicU64,
    /// The run being polled: its supervisor's id (high 32 bits) and task slot (low 32).
    task: AtomicU64,
    /// Cleared when the thread exits.
    alive: AtomicBool,
}

thread_local! {
    /// This thread's slot, registered on its first poll of a supervised run.
    static SLOT: Cell<Option<&'static PollSlot>> = const { Cell::new(None) };
    /// Marks the slot dead when the thread exits.
    static OWNER: SlotOwner = const { SlotOwner(Cell::new(None)) };
}

struct SlotOwner(Cell<Option<&'static PollSlot>>);

impl Drop for SlotOwner {
    fn drop(&mut self) {
        if let Some(slot) = self.0.get() {
            slot.alive.store(false, Ordering::Release);
        }
    }
}

/// Marks the current thread as inside a poll of the run `task` until dropped (see
/// [`task_key`]).
pub(crate) struct Polling(&'static PollSlot);

impl Polling {
    #[inline]
    pub(crate) fn enter(task: u64) -> Self {
        let slot = SLOT.with(|slot| match slot.get() {
            Some(registered) => registered,
            None => {
                let registered = register_thread();
                slot.set(Some(registered));
                registered
            }
        });
        slot.task.store(task, Ordering::Relaxed);
        let polls = slot.polls.load(Ordering::Relaxed);
        // Release: a watcher that sees this number sees the task written before it.
        slot.polls.store(polls.wrapping_add(1), Ordering::Release);
        Self(slot)
    }
}

impl Drop for Polling {
    #[inline]
    fn drop(&mut self) {
        let polls = self.0.polls.load(Ordering::Relaxed);
        self.0.polls.store(polls.wrapping_add(1), Ordering::Release);
    }
}

/// The key a run's polls are marked with: its supervisor's id and its task's slot.
pub(crate) fn task_key(supervisor: u32, slot: u32) -> u64 {
    (u64::from(supervisor) << 32) | u64::from(slot)
}

/// Registers the current thread's slot: a slot of a thread that has exited is reused, so there
/// are never more slots than threads that polled a supervised run at once (they are leaked,
/// never freed, so that a thread and the watcher can hold them without counting).
#[cold]
#[inline(never)]
fn register_thread() -> &'static PollSlot {
    let mut watcher = watcher();
    let reused = watcher.threads.iter().copied().find(|slot| {
        slot.alive
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
    let slot = reused.unwrap_or_else(|| {
        let slot: &'static PollSlot = Box::leak(Box::new(PollSlot {
            alive: AtomicBool::new(true),
            ..PollSlot::default()
        }));
        watcher.threads.push(slot);
        slot
    });
    drop(watcher);
    let _ = OWNER.try_with(|owner| owner.0.set(Some(slot)));
    slot
}

/// A supervisor the watcher watches: where to report, and from what poll length.
struct Watched {
    shared: Weak<Shared>,
    threshold: Duration,
}

/// What the watcher knows of one thread's current poll.
struct Seen {
    polls: u64,
    since: Instant,
    /// Reported as blocked (then it must be reported unblocked).
    reported: Option<u64>,
}

#[derive(Default)]
struct Watcher {
    threads: Vec<&'static PollSlot>,
    supervisors: HashMap<u32, Watched>,
    next_id: u32,
    /// Whether the watcher's thread is running.
    running: bool,
}

static WATCHER: Mutex<Option<Watcher>> = Mutex::new(None);

/// The watcher's state, made on first use.
struct WatcherGuard(MutexGuard<'static, Option<Watcher>>);

impl std::ops::Deref for WatcherGuard {
    type Target = Watcher;
    fn deref(&self) -> &Watcher {
        self.0.as_ref().expect("made on first use")
    }
}

impl std::ops::DerefMut for WatcherGuard {
    fn deref_mut(&mut self) -> &mut Watcher {
        self.0.get_or_insert_with(Watcher::default)
    }
}

fn watcher() -> WatcherGuard {
    let mut guard = WATCHER.lock().unwrap_or_else(PoisonError::into_inner);
    guard.get_or_insert_with(Watcher::default);
    WatcherGuard(guard)
}

/// Watches the polls of `shared`'s runs from now on, with `threshold`; returns the id its
/// runs mark their polls with. Starts the watcher's thread if it is not running.
pub(crate) fn watch(shared: Weak<Shared>, threshold: Duration) -> u32 {
    let mut watcher = watcher();
    let id = watcher.next_id;
    watcher.next_id = watcher.next_id.wrapping_add(1);
    watcher
        .supervisors
        .insert(id, Watched { shared, threshold });
    if !watcher.running {
        let spawned = std::thread::Builder::new()
            .name("task-supervisor-watcher".to_owned())
            .spawn(watch_polls);
        watcher.running = spawned.is_ok();
        if let Err(error) = spawned {
            tracing::warn!(%error, "no thread for the blocked-poll watcher; blocked polls go unreported");
        }
    }
    id
}

/// Stops watching the supervisor `id` (it has stopped).
pub(crate) fn unwatch(id: u32) {
    watcher().supervisors.remove(&id);
}

/// The watcher's thread: samples every slot every quarter of the smallest threshold while the
/// threads poll, less often (down to once a threshold) while they are idle; ends when no
/// supervisor is watched any more (a new one starts it again).
fn watch_polls() {
    let mut seen: HashMap<usize, Seen> = HashMap::new();
    let mut quiet_ticks: u32 = 0;
    let mut threads: Vec<&'static PollSlot> = Vec::new();
    let mut supervisors: HashMap<u32, (Duration, Weak<Shared>)> = HashMap::new();
    loop {
        {
            let mut watcher = watcher();
            if watcher.supervisors.is_empty() {
                watcher.running = false;
                return;
            }
            supervisors.clear();
            supervisors.extend(
                watcher
                    .supervisors
                    .iter()
                    .map(|(&id, watched)| (id, (watched.threshold, watched.shared.clone()))),
            );
            threads.clear();
            threads.extend(
                watcher
                    .threads
                    .iter()
                    .copied()
                    .filter(|slot| slot.alive.load(Ordering::Acquire)),
            );
        }
        let threshold = supervisors
            .values()
            .map(|(threshold, _)| *threshold)
            .min()
            .unwrap_or(DEFAULT_THRESHOLD);
        let now = Instant::now();
        let mut quiet = true;
        for slot in &threads {
            let key = *slot as *const PollSlot as usize;
            let before = slot.polls.load(Ordering::Acquire);
            let task = slot.task.load(Ordering::Relaxed);
            let after = slot.polls.load(Ordering::Acquire);
            let inside = before == after && before % 2 == 1;
            let entry = seen.entry(key).or_insert(Seen {
                polls: before,
                since: now,
                reported: None,
            });
            if entry.polls != before || !inside {
                quiet &= entry.polls == before;
                if let Some(reported) = entry.reported.take() {
                    report(
                        &supervisors,
                        reported,
                        EventKind::Unblocked {
                            blocked_for: now - entry.since,
                        },
                    );
                }
                *entry = Seen {
                    polls: before,
                    since: now,
                    reported: None,
                };
                continue;
            }
            // Inside the same poll as at the last sample: watch it closely.
            quiet = false;
            let blocked_for = now - entry.since;
            let Some((threshold, _)) = supervisors.get(&((task >> 32) as u32)) else {
                continue;
            };
            if entry.reported.is_none() && blocked_for >= *threshold {
                entry.reported = Some(task);
                report(&supervisors, task, EventKind::Blocked { blocked_for });
            }
        }
        seen.retain(|key, _| {
            threads
                .iter()
                .any(|slot| *slot as *const PollSlot as usize == *key)
        });
        quiet_ticks = if quiet {
            quiet_ticks.saturating_add(1)
        } else {
            0
        };
        std::thread::sleep(tick(threshold, quiet_ticks));
    }
}

/// How long the watcher sleeps between two samples: a quarter of `threshold` while any thread
/// polls, doubling with every sample that found every thread idle (no poll entered or left
/// since the last one) up to the whole threshold. So a poll is reported at most 1.25
/// thresholds after it began on a busy runtime, and 2.25 after a second of idleness; an idle
/// process is woken ten times a second by default, not forty.
fn tick(threshold: Duration, quiet_ticks: u32) -> Duration {
    let busy = threshold / 4;
    busy.saturating_mul(1 << quiet_ticks.min(2))
        .min(threshold)
        .max(Duration::from_millis(1))
}

/// Reports a blocked or unblocked poll of the run `task` to its supervisor: an event, a
/// warning through tracing, the task's blocked flag.
fn report(supervisors: &HashMap<u32, (Duration, Weak<Shared>)>, task: u64, kind: EventKind) {
    let Some(shared) = supervisors
        .get(&((task >> 32) as u32))
        .and_then(|(_, shared)| shared.upgrade())
    else {
        return;
    };
    let slot = task as u32;
    let Some((name, attempt)) = shared.registry.name_and_attempt(slot) else {
        return;
    };
    shared.set_blocked(
        slot,
        match kind {
            EventKind::Blocked { blocked_for } => Some(Instant::now() - blocked_for),
            _ => None,
        },
    );
    crate::observe::events::trace(Some(&name), attempt, &kind);
    #[cfg(feature = "metrics")]
    crate::observe::metrics::record(&name, &kind);
    if let Some(sender) = shared.events.sender() {
        let _ = sender.send(Event {
            task: Some(name),
            attempt,
            at: tokio::time::Instant::now(),
            kind,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watcher_samples_less_often_while_every_thread_is_idle() {
        let threshold = Duration::from_millis(100);
        let ticks: Vec<Duration> = (0..5).map(|quiet| tick(threshold, quiet)).collect();
        assert_eq!(
            ticks,
            [25, 50, 100, 100, 100].map(Duration::from_millis),
            "a quarter of the threshold while busy, doubling up to the threshold while idle"
        );
        assert_eq!(
            tick(Duration::from_micros(100), 0),
            Duration::from_millis(1)
        );
    }
}
