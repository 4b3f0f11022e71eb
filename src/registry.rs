//! The shared, read-mostly registry: which names exist, the status the loop last published for
//! each, and whether the supervisor still takes commands.
//!
//! Handles answer what they can from here at once (a duplicate name, an unknown name, a status,
//! a supervisor that has stopped) instead of asking the loop and waiting.
//!
//! # Invariants
//!
//! 1. Statuses are written only by the loop. A handle writes only the membership: it reserves
//!    a name, as `Created`, when it adds a task.
//! 2. A message that depends on the registry's state is sent while the lock that checked the
//!    state is held: an `Add` under the write lock that reserved the name, a `Restart` or
//!    `Kill` under the read lock that found it, a `Shutdown` under the write lock that closed
//!    the registry. So the loop sees an `Add` before any command about that task, sees no
//!    command sent after the registry closed, and ids arrive in the order they were given.
//! 3. Once closed, the registry never opens again.
//!
//! # Why sharing is safe
//!
//! Membership and the lifecycle sit behind one `RwLock`; statuses are atomics inside entries
//! that are never removed, so a reader holding an entry always sees a status the loop published.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use crate::error::SupervisorHandleError;
use crate::status::TaskStatus;
use crate::sync::{AtomicU8, Ordering, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One registered task, as the handles see it.
#[derive(Debug)]
pub(crate) struct TaskEntry {
    /// The task's slot in the loop.
    pub(crate) id: u32,
    status: AtomicU8,
    /// Why its last failed run failed. Written by the loop on a failure only, so the lock is
    /// off every other path.
    last_failure: std::sync::Mutex<Option<Arc<str>>>,
}

impl TaskEntry {
    fn new(id: u32) -> Self {
        Self {
            id,
            status: AtomicU8::new(TaskStatus::Created.as_u8()),
            last_failure: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn status(&self) -> TaskStatus {
        TaskStatus::from_u8(self.status.load(Ordering::Acquire))
    }

    /// Records why the last run failed. Only the loop calls this (invariant 1).
    pub(crate) fn record_failure(&self, reason: Arc<str>) {
        *self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }

    pub(crate) fn last_failure(&self) -> Option<Arc<str>> {
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Publishes a status. Only the loop calls this (invariant 1).
    pub(crate) fn publish(&self, status: TaskStatus) {
        self.status.store(status.as_u8(), Ordering::Release);
    }
}

/// Where the supervisor is in its own life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// Takes every command.
    Running,
    /// Stopping its runs: takes no command that changes anything; statuses can still be read.
    ShuttingDown,
    /// Every run has ended: takes no command at all.
    Stopped,
}

#[derive(Debug)]
struct Inner {
    by_name: HashMap<Arc<str>, Arc<TaskEntry>>,
    lifecycle: Lifecycle,
}

/// See the [module documentation](self).
#[derive(Debug)]
pub(crate) struct Registry {
    inner: RwLock<Inner>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            inner: RwLock::new(Inner {
                by_name: HashMap::new(),
                lifecycle: Lifecycle::Running,
            }),
        }
    }

    // Nothing panics while the lock is held, but a poisoned lock must not take the
    // supervisor down with it: the data behind it is still consistent.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves `name` and hands the new entry to `send` under the write lock (invariant 2).
    /// If `send` fails, the reservation is undone.
    pub(crate) fn add(
        &self,
        name: &str,
        send: impl FnOnce(Arc<str>, Arc<TaskEntry>) -> Result<(), SupervisorHandleError>,
    ) -> Result<(), SupervisorHandleError> {
        let mut inner = self.write();
        if inner.lifecycle != Lifecycle::Running {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        if inner.by_name.contains_key(name) {
            return Err(SupervisorHandleError::TaskAlreadyExists {
                name: name.to_owned(),
            });
        }
        let id = u32::try_from(inner.by_name.len())
            .map_err(|_| SupervisorHandleError::SupervisorStopped)?;
        let name: Arc<str> = Arc::from(name);
        let entry = Arc::new(TaskEntry::new(id));
        inner.by_name.insert(Arc::clone(&name), Arc::clone(&entry));
        if let Err(error) = send(Arc::clone(&name), entry) {
            inner.by_name.remove(&name);
            return Err(error);
        }
        Ok(())
    }

    /// Finds `name` and hands its entry to `send` under the read lock (invariant 2).
    pub(crate) fn command(
        &self,
        name: &str,
        send: impl FnOnce(&TaskEntry) -> Result<(), SupervisorHandleError>,
    ) -> Result<(), SupervisorHandleError> {
        let inner = self.read();
        if inner.lifecycle != Lifecycle::Running {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        match inner.by_name.get(name) {
            Some(entry) => send(entry),
            None => Err(SupervisorHandleError::TaskNotFound {
                name: name.to_owned(),
            }),
        }
    }

    /// Closes the registry to commands and calls `send` under the write lock (invariant 2).
    /// Fails if it was closed already.
    pub(crate) fn close(
        &self,
        send: impl FnOnce() -> Result<(), SupervisorHandleError>,
    ) -> Result<(), SupervisorHandleError> {
        let mut inner = self.write();
        if inner.lifecycle != Lifecycle::Running {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        inner.lifecycle = Lifecycle::ShuttingDown;
        send()
    }

    /// Closes the registry to commands if `idle` says, under the write lock, that no command
    /// is on its way to the loop. Returns whether it closed it.
    pub(crate) fn close_if(&self, idle: impl FnOnce() -> bool) -> bool {
        let mut inner = self.write();
        if inner.lifecycle != Lifecycle::Running || !idle() {
            return false;
        }
        inner.lifecycle = Lifecycle::ShuttingDown;
        true
    }

    /// Marks the supervisor stopped: from now on every call fails.
    pub(crate) fn mark_stopped(&self) {
        self.write().lifecycle = Lifecycle::Stopped;
    }

    /// Registers the tasks the supervisor was built with, before its loop starts.
    pub(crate) fn add_initial(&self, name: Arc<str>) -> Arc<TaskEntry> {
        let mut inner = self.write();
        let id = u32::try_from(inner.by_name.len()).unwrap_or(u32::MAX);
        let entry = Arc::new(TaskEntry::new(id));
        inner.by_name.insert(name, Arc::clone(&entry));
        entry
    }

    pub(crate) fn status(&self, name: &str) -> Result<Option<TaskStatus>, SupervisorHandleError> {
        let inner = self.read();
        if inner.lifecycle == Lifecycle::Stopped {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        Ok(inner.by_name.get(name).map(|entry| entry.status()))
    }

    pub(crate) fn last_failure(
        &self,
        name: &str,
    ) -> Result<Option<Arc<str>>, SupervisorHandleError> {
        let inner = self.read();
        if inner.lifecycle == Lifecycle::Stopped {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        match inner.by_name.get(name) {
            Some(entry) => Ok(entry.last_failure()),
            None => Err(SupervisorHandleError::TaskNotFound {
                name: name.to_owned(),
            }),
        }
    }

    pub(crate) fn statuses(&self) -> Result<HashMap<String, TaskStatus>, SupervisorHandleError> {
        let inner = self.read();
        if inner.lifecycle == Lifecycle::Stopped {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        Ok(inner
            .by_name
            .iter()
            .map(|(name, entry)| (name.to_string(), entry.status()))
            .collect())
    }

    pub(crate) fn shared_statuses(
        &self,
    ) -> Result<Vec<(Arc<str>, TaskStatus)>, SupervisorHandleError> {
        let inner = self.read();
        if inner.lifecycle == Lifecycle::Stopped {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        let mut statuses = Vec::with_capacity(inner.by_name.len());
        statuses.extend(
            inner
                .by_name
                .iter()
                .map(|(name, entry)| (Arc::clone(name), entry.status())),
        );
        Ok(statuses)
    }

    pub(crate) fn len(&self) -> usize {
        self.read().by_name.len()
    }

    pub(crate) fn is_running(&self) -> bool {
        self.read().lifecycle == Lifecycle::Running
    }
}

/// The registry, for the `loom` model checks in `tests/loom.rs` (built with `--cfg loom`
/// only; not part of the public API). Each method calls the [`Registry`] method of that name.
#[cfg(loom)]
#[doc(hidden)]
#[derive(Debug)]
pub struct LoomRegistry(Registry);

/// A registered task's entry, as the loop holds it (`--cfg loom` only).
#[cfg(loom)]
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct LoomEntry(Arc<TaskEntry>);

#[cfg(loom)]
impl LoomRegistry {
    /// An empty, running registry.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(Registry::new())
    }

    /// See [`Registry::add`].
    pub fn add(
        &self,
        name: &str,
        send: impl FnOnce(Arc<str>, LoomEntry) -> Result<(), SupervisorHandleError>,
    ) -> Result<(), SupervisorHandleError> {
        self.0.add(name, |name, entry| send(name, LoomEntry(entry)))
    }

    /// See [`Registry::command`]; `send` gets the task's id.
    pub fn command(
        &self,
        name: &str,
        send: impl FnOnce(u32) -> Result<(), SupervisorHandleError>,
    ) -> Result<(), SupervisorHandleError> {
        self.0.command(name, |entry| send(entry.id))
    }

    /// See [`Registry::close`].
    pub fn close(
        &self,
        send: impl FnOnce() -> Result<(), SupervisorHandleError>,
    ) -> Result<(), SupervisorHandleError> {
        self.0.close(send)
    }

    /// See [`Registry::close_if`].
    pub fn close_if(&self, idle: impl FnOnce() -> bool) -> bool {
        self.0.close_if(idle)
    }

    /// See [`Registry::mark_stopped`].
    pub fn mark_stopped(&self) {
        self.0.mark_stopped();
    }

    /// See [`Registry::status`].
    pub fn status(&self, name: &str) -> Result<Option<TaskStatus>, SupervisorHandleError> {
        self.0.status(name)
    }

    /// See [`Registry::statuses`].
    pub fn statuses(&self) -> Result<HashMap<String, TaskStatus>, SupervisorHandleError> {
        self.0.statuses()
    }

    /// See [`Registry::is_running`].
    pub fn is_running(&self) -> bool {
        self.0.is_running()
    }
}

#[cfg(loom)]
impl LoomEntry {
    /// The task's slot in the loop.
    pub fn id(&self) -> u32 {
        self.0.id
    }

    /// See [`TaskEntry::status`].
    pub fn status(&self) -> TaskStatus {
        self.0.status()
    }

    /// See [`TaskEntry::publish`].
    pub fn publish(&self, status: TaskStatus) {
        self.0.publish(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: Arc<str>, _: Arc<TaskEntry>) -> Result<(), SupervisorHandleError> {
        Ok(())
    }

    #[test]
    fn a_name_is_reserved_once() {
        let registry = Registry::new();
        registry.add("a", ok).unwrap();
        assert_eq!(
            registry.add("a", ok),
            Err(SupervisorHandleError::TaskAlreadyExists { name: "a".into() })
        );
        assert_eq!(registry.status("a"), Ok(Some(TaskStatus::Created)));
    }

    #[test]
    fn a_failed_send_undoes_the_reservation() {
        let registry = Registry::new();
        let refused = registry.add("a", |_, _| Err(SupervisorHandleError::SupervisorStopped));
        assert_eq!(refused, Err(SupervisorHandleError::SupervisorStopped));
        assert_eq!(registry.status("a"), Ok(None));
        registry.add("a", ok).unwrap();
    }

    #[test]
    fn ids_follow_the_order_of_reservation() {
        let registry = Registry::new();
        let mut ids = Vec::new();
        for name in ["a", "b", "c"] {
            registry
                .add(name, |_, entry| {
                    ids.push(entry.id);
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(ids, [0, 1, 2]);
    }

    #[test]
    fn a_closed_registry_refuses_changes_but_still_answers_reads() {
        let registry = Registry::new();
        registry.add("a", ok).unwrap();
        registry.close(|| Ok(())).unwrap();
        assert_eq!(
            registry.close(|| Ok(())),
            Err(SupervisorHandleError::SupervisorStopped)
        );
        assert_eq!(
            registry.add("b", ok),
            Err(SupervisorHandleError::SupervisorStopped)
        );
        assert_eq!(
            registry.command("a", |_| Ok(())),
            Err(SupervisorHandleError::SupervisorStopped)
        );
        assert_eq!(registry.status("a"), Ok(Some(TaskStatus::Created)));
        registry.mark_stopped();
        assert_eq!(
            registry.status("a"),
            Err(SupervisorHandleError::SupervisorStopped)
        );
        assert_eq!(
            registry.statuses(),
            Err(SupervisorHandleError::SupervisorStopped)
        );
    }

    #[test]
    fn close_if_respects_pending_commands() {
        let registry = Registry::new();
        assert!(!registry.close_if(|| false));
        assert!(registry.is_running());
        assert!(registry.close_if(|| true));
        assert!(!registry.is_running());
    }
}
