//! What the handles and the loop share: the registry, the loop's channel, how the supervisor
//! ended, the status change stream, and the flags that let handles and drivers see the loop's
//! state without asking it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, Weak};

use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::context::RunSettings;
use crate::error::{BuilderError, SupervisorError, SupervisorHandleError};
use crate::message::Message;
use crate::observe::events::Event;
use crate::observe::stream::LazyBroadcast;
use crate::registry::Registry;
use crate::spec::{Overrides, TaskPolicy};
use crate::status::StatusChange;

/// How many status changes a slow subscriber may fall behind before it misses some.
const STATUS_CHANGES_CAPACITY: usize = 4096;

/// How many events a slow subscriber may fall behind before it misses some.
const EVENTS_CAPACITY: usize = 4096;

/// What the handles and the loop share.
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    /// What every run of the supervisor shares (made here, before the loop, so that the task
    /// table's chunks can point to it).
    pub(crate) run_settings: Arc<RunSettings>,
    /// The zero of every stamp in the task table.
    pub(crate) epoch: tokio::time::Instant,
    /// The supervisor's settings, for the handles to resolve and check a task's spec.
    pub(crate) config: Config,
    /// The policy of every task registered without a spec of its own.
    pub(crate) default_policy: Arc<TaskPolicy>,
    /// The handle of each child supervisor that a run of one of its tasks is running, by
    /// slot; weak, so that only the runs keep their children alive.
    children: std::sync::Mutex<HashMap<u32, Weak<HandleInner>>>,
    /// Since when a poll of each task reported blocked has been blocking, by slot (written by
    /// the blocked-poll watcher).
    blocked: std::sync::Mutex<HashMap<u32, std::time::Instant>>,
    pub(crate) sender: mpsc::UnboundedSender<Message>,
    /// How the supervisor ended, set by the loop just before it returns.
    pub(crate) outcome: OnceLock<Result<(), SupervisorError>>,
    /// Cancelled by the loop as its very last step, after it set [`outcome`](Self::outcome)
    /// and dropped every task: what a helper that must not keep the supervisor up (a signal
    /// listener, the systemd notifier, a server) waits on.
    pub(crate) stopped: tokio_util::sync::CancellationToken,
    /// The loop's task. A `wait` awaits it under this (asynchronous) lock, so that `wait`
    /// returns only once the loop's task itself is gone; a `wait` dropped halfway leaves it
    /// for the next.
    pub(crate) loop_task: Mutex<Option<JoinHandle<()>>>,
    /// The status change stream and the event stream: made on their first subscription, so a
    /// supervisor nobody watches pays nothing, and closed by the loop when it ends.
    pub(crate) status_changes: LazyBroadcast<StatusChange>,
    pub(crate) events: LazyBroadcast<Event>,
    /// Set once the supervisor is ending (after the `Shutdown` message is sent, or when the loop
    /// gives up at the dead tasks threshold): drivers stop restarting runs in place at once, instead of when
    /// the loop gets to their stop.
    pub(crate) ending: Arc<AtomicBool>,
    /// Whether the loop is waiting, or about to wait, for its next event (see
    /// [`Shared::nudge_loop`]). On a cache line of its own: the loop writes it once per
    /// wake-up, and every `add_task` reads it.
    loop_waiting: Padded<AtomicBool>,
}

/// Keeps a value on cache lines of its own (128 bytes: x86 fetches lines in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl Shared {
    /// Tells handles whether the loop is waiting for its next event. The loop sets it before
    /// it waits and clears it when it wakes.
    pub(crate) fn set_loop_waiting(&self, waiting: bool) {
        self.loop_waiting.0.store(waiting, Ordering::Relaxed);
    }

    /// Called by `run()` after spawning the loop, and by `add_task` after sending it an `Add`:
    /// lets another worker run the loop beside the caller.
    ///
    /// A message to a waiting loop wakes it, and Tokio schedules a task woken (or spawned)
    /// from a worker in that worker's LIFO slot, which no other worker may steal from
    /// (tokio-rs/tokio#4941). A caller that adds many tasks without yielding would hold the
    /// loop there until it yields, and the loop's work (spawning every run) would follow the
    /// caller's instead of running beside it. Scheduling one more, empty, task pushes the loop
    /// out of the slot to the worker's run queue and wakes an idle worker, which takes it.
    ///
    /// This costs a spawn (and the wake-up of an idle worker) per `add_task` that finds the
    /// loop waiting, and nothing while the loop is busy or for the loop's own wake-ups. It is
    /// a heuristic: a stale flag either way costs one needless spawn or leaves the loop where
    /// Tokio put it; so does a call from a thread whose wake-ups never use a LIFO slot (a
    /// blocking thread, another runtime), where the spawn is needless. Other commands do not
    /// nudge: they ask little of the loop, and a caller that holds its worker delays them only
    /// until it yields, as it would delay any task it woke.
    pub(crate) fn nudge_loop(&self) {
        let waiting = &self.loop_waiting.0;
        if !waiting.load(Ordering::Relaxed) || !waiting.swap(false, Ordering::Relaxed) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                drop(runtime.spawn(async {}));
            }
        }
    }

    /// The shared state of a supervisor about to run, whose loop receives what `sender`
    /// sends. It holds the settings its runs share ([`RunSettings`]), which every chunk of its
    /// task table points to; a run reaches them, and this state, from its chunk.
    pub(crate) fn new(
        sender: mpsc::UnboundedSender<Message>,
        config: Config,
        default_policy: Arc<TaskPolicy>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Self::with_settings(this, sender, config, default_policy))
    }

    fn with_settings(
        this: &Weak<Self>,
        sender: mpsc::UnboundedSender<Message>,
        config: Config,
        default_policy: Arc<TaskPolicy>,
    ) -> Self {
        let epoch = tokio::time::Instant::now();
        let ending = Arc::new(AtomicBool::new(false));
        let run_settings = Arc::new(RunSettings {
            epoch,
            heartbeat_interval: config.heartbeat_interval,
            ending: Arc::clone(&ending),
            events: sender.clone(),
            supervisor: Weak::clone(this),
            poll_watch: config
                .blocked_poll_threshold
                .map(|threshold| crate::observe::blocked::watch(Weak::clone(this), threshold)),
        });
        Self {
            registry: Registry::new(Arc::clone(&run_settings)),
            run_settings,
            epoch,
            config,
            default_policy,
            children: std::sync::Mutex::default(),
            blocked: std::sync::Mutex::default(),
            sender,
            outcome: OnceLock::new(),
            stopped: tokio_util::sync::CancellationToken::new(),
            loop_task: Mutex::new(None),
            status_changes: LazyBroadcast::new(STATUS_CHANGES_CAPACITY),
            events: LazyBroadcast::new(EVENTS_CAPACITY),
            loop_waiting: Padded(AtomicBool::new(false)),
            ending,
        }
    }

    /// The policy of a task registered with `overrides`: the supervisor's own when nothing is
    /// overridden, or a new one, checked as the builder checks its settings.
    pub(crate) fn policy_for(
        &self,
        overrides: &Overrides,
    ) -> Result<Arc<TaskPolicy>, BuilderError> {
        if overrides.is_empty() {
            return Ok(Arc::clone(&self.default_policy));
        }
        let policy = self.config.task.with(overrides);
        policy.validate(self.config.heartbeat_interval)?;
        Ok(Arc::new(
            policy.for_supervisor(self.config.allows_restart_in_place()),
        ))
    }

    /// Records that the current run of task `slot` runs the child supervisor `child`.
    pub(crate) fn adopt_child(&self, slot: u32, child: Weak<HandleInner>) {
        self.children_map().insert(slot, child);
    }

    /// Forgets the child of task `slot`, if it is still `child` (a later run may have put its
    /// own there).
    pub(crate) fn release_child(&self, slot: u32, child: &Weak<HandleInner>) {
        let mut children = self.children_map();
        if children.get(&slot).is_some_and(|held| held.ptr_eq(child)) {
            children.remove(&slot);
        }
    }

    /// How long a poll of task `slot` has been blocking its thread, if one is now.
    pub(crate) fn blocked_for(&self, slot: u32) -> Option<std::time::Duration> {
        let blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        blocked.get(&slot).map(std::time::Instant::elapsed)
    }

    /// How long each poll blocking its thread now has been, by task slot: one look at the
    /// (almost always empty) map for a listing of every task, instead of one per task.
    pub(crate) fn blocked_now(&self) -> Blocked {
        let blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        let now = std::time::Instant::now();
        Blocked(
            blocked
                .iter()
                .map(|(&slot, since)| (slot, now.saturating_duration_since(*since)))
                .collect(),
        )
    }

    /// Records that a poll of task `slot` has been blocking since `since`, or (`None`) no
    /// longer. Only the blocked-poll watcher calls this.
    pub(crate) fn set_blocked(&self, slot: u32, since: Option<std::time::Instant>) {
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        match since {
            Some(since) => {
                blocked.insert(slot, since);
            }
            None => {
                blocked.remove(&slot);
            }
        }
    }

    /// The child supervisor the current run of task `slot` runs, if it runs one.
    pub(crate) fn child_of(&self, slot: u32) -> Option<Arc<HandleInner>> {
        self.children_map().get(&slot)?.upgrade()
    }

    /// Every child supervisor a run of one of its tasks runs now, by that task's slot.
    pub(crate) fn children(&self) -> HashMap<u32, Arc<HandleInner>> {
        self.children_map()
            .iter()
            .filter_map(|(&slot, child)| Some((slot, child.upgrade()?)))
            .collect()
    }

    fn children_map(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Weak<HandleInner>>> {
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A snapshot of the polls blocking their threads (see [`Shared::blocked_now`]).
pub(crate) struct Blocked(HashMap<u32, std::time::Duration>);

impl Blocked {
    /// How long a poll of task `slot` has been blocking, if one was at the snapshot.
    pub(crate) fn of(&self, slot: u32) -> Option<std::time::Duration> {
        if self.0.is_empty() {
            return None;
        }
        self.0.get(&slot).copied()
    }
}

/// Shared by all clones of one `SupervisorHandle`; its drop is the last handle's drop. It lives
/// here, beside the state it closes, so that a parent's shared state can hold its children's.
pub(crate) struct HandleInner {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        // The last handle is gone: nobody can command or wait for the supervisor any more.
        // Closing fails only if it is stopping already, which is what we want anyway.
        let _ = close(&self.shared);
    }
}

pub(crate) fn close(shared: &Shared) -> Result<(), SupervisorHandleError> {
    shared.registry.close(|| send(shared, Message::Shutdown))?;
    // After the send: a driver that sees this and reports its exit queues it behind the
    // `Shutdown`, so the loop starts nothing more for it.
    shared
        .ending
        .store(true, std::sync::atomic::Ordering::Release);
    Ok(())
}

pub(crate) fn send(shared: &Shared, message: Message) -> Result<(), SupervisorHandleError> {
    shared
        .sender
        .send(message)
        .map_err(|_| SupervisorHandleError::SupervisorStopped)
}
