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
//! Membership and the lifecycle sit behind one `RwLock`. Statuses are one atomic byte per task in
//! a table of fixed-size chunks that are never moved or removed, so the loop publishes without
//! taking the lock, and a reader that found an id under the lock always sees a status the loop
//! published. The table is dense (a hundred thousand statuses fit in 100 KB), so a status read
//! touches one cache line beyond the map's own, and a listing reads statuses in runs.
//!
//! The last failure of each task is kept beside the table, in a vector the loop alone writes,
//! on failures only; a task that never failed costs it nothing beyond its place in the vector.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::context::RunSettings;
use crate::error::SupervisorHandleError;
use crate::observe;
use crate::observe::info::TaskInfo;
use crate::status::TaskStatus;
use crate::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use crate::table::{TaskCells, TaskChunk, CHUNK};

/// One registered task, as the loop holds it: its id and the chunk of the task table its
/// fields are published in.
#[derive(Debug, Clone)]
pub(crate) struct TaskEntry {
    /// The task's slot in the loop.
    pub(crate) id: u32,
    chunk: Arc<TaskChunk>,
}

impl TaskEntry {
    /// Where to publish this task's fields.
    pub(crate) fn into_cells(self) -> TaskCells {
        TaskCells::new(self.chunk, self.id)
    }

    #[cfg(loom)]
    pub(crate) fn status(&self) -> TaskStatus {
        self.chunk.status(self.id as usize % CHUNK)
    }

    /// Publishes a status, as the loop would (unit and `loom` tests only).
    #[cfg(any(test, loom))]
    pub(crate) fn publish(&self, status: TaskStatus) {
        self.clone().into_cells().publish_status(status);
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
    /// Each name's id. Ids are dense: the `n`th task registered has id `n - 1`.
    by_name: HashMap<Arc<str>, u32>,
    /// Each id's name, in id order (the same `Arc`s as `by_name`): a listing in start order
    /// reads it front to back, and a name is found from an id without a scan.
    names: Vec<Arc<str>>,
    /// The task table: id `i` is place `i % CHUNK` of chunk `i / CHUNK`. Only grows.
    statuses: Vec<Arc<TaskChunk>>,
    /// What every chunk of the table is made with: the settings of the supervisor's runs.
    settings: Arc<RunSettings>,
    lifecycle: Lifecycle,
}

impl Inner {
    fn status(&self, id: u32) -> TaskStatus {
        let id = id as usize;
        self.statuses[id / CHUNK].status(id % CHUNK)
    }

    /// Gives the next task its id and its entry. The caller inserts the name.
    fn reserve(&mut self) -> Option<TaskEntry> {
        let id = u32::try_from(self.by_name.len()).ok()?;
        let chunk_index = id as usize / CHUNK;
        if chunk_index == self.statuses.len() {
            self.statuses.push(TaskChunk::new(&self.settings));
        }
        // An id given before and undone (its `Add` was never sent) comes back with its byte
        // untouched: only the loop writes statuses, and it never heard of that id.
        Some(TaskEntry {
            id,
            chunk: Arc::clone(&self.statuses[chunk_index]),
        })
    }
}

/// See the [module documentation](self).
#[derive(Debug)]
pub(crate) struct Registry {
    inner: RwLock<Inner>,
    /// Why each task's last failed run failed, by id, up to the highest id that failed.
    /// Written by the loop on failures only, so the lock is off every other path.
    failures: std::sync::Mutex<Vec<Option<Arc<str>>>>,
}

impl Registry {
    /// An empty registry of the supervisor whose runs share `settings`.
    pub(crate) fn new(settings: Arc<RunSettings>) -> Self {
        Self {
            inner: RwLock::new(Inner {
                by_name: HashMap::new(),
                names: Vec::new(),
                statuses: Vec::new(),
                settings,
                lifecycle: Lifecycle::Running,
            }),
            failures: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Records why task `id`'s last run failed. Only the loop calls this (invariant 1).
    pub(crate) fn record_failure(&self, id: u32, reason: Arc<str>) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let index = id as usize;
        if index >= failures.len() {
            failures.resize(index + 1, None);
        }
        failures[index] = Some(reason);
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
        send: impl FnOnce(Arc<str>, TaskEntry) -> Result<(), SupervisorHandleError>,
    ) -> Result<(), SupervisorHandleError> {
        let mut inner = self.write();
        if inner.lifecycle != Lifecycle::Running {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        let Some(entry) = inner.reserve() else {
            // Out of ids: the name may still be taken, which is the better answer.
            return Err(if inner.by_name.contains_key(name) {
                SupervisorHandleError::TaskAlreadyExists {
                    name: name.to_owned(),
                }
            } else {
                SupervisorHandleError::SupervisorStopped
            });
        };
        // One hash and one probe: the name (and the id, which a refusal leaves to the next
        // add) is made before the name is known to be new, which costs only on the error path.
        let name: Arc<str> = Arc::from(name);
        match inner.by_name.entry(Arc::clone(&name)) {
            Entry::Occupied(_) => {
                return Err(SupervisorHandleError::TaskAlreadyExists {
                    name: name.to_string(),
                })
            }
            Entry::Vacant(vacant) => {
                vacant.insert(entry.id);
            }
        }
        inner.names.push(Arc::clone(&name));
        if let Err(error) = send(Arc::clone(&name), entry) {
            inner.by_name.remove(&name);
            inner.names.pop();
            return Err(error);
        }
        Ok(())
    }

    /// Finds `name` and hands its id to `send` under the read lock (invariant 2).
    pub(crate) fn command(
        &self,
        name: &str,
        send: impl FnOnce(u32) -> Result<(), SupervisorHandleError>,
    ) -> Result<(), SupervisorHandleError> {
        let inner = self.read();
        if inner.lifecycle != Lifecycle::Running {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        match inner.by_name.get(name) {
            Some(&id) => send(id),
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

    /// Marks the supervisor stopped: from now on every call fails.
    pub(crate) fn mark_stopped(&self) {
        self.write().lifecycle = Lifecycle::Stopped;
    }

    /// Registers the tasks the supervisor was built with, before its loop starts.
    ///
    /// Returns `None` once `u32::MAX` tasks are registered.
    pub(crate) fn add_initial(&self, name: Arc<str>) -> Option<TaskEntry> {
        let mut inner = self.write();
        let entry = inner.reserve()?;
        inner.names.push(Arc::clone(&name));
        let replaced = inner.by_name.insert(name, entry.id);
        // The builder keeps one task per name, so ids stay dense.
        debug_assert!(replaced.is_none(), "a builder task registered twice");
        Some(entry)
    }

    pub(crate) fn status(&self, name: &str) -> Result<Option<TaskStatus>, SupervisorHandleError> {
        let inner = self.read();
        if inner.lifecycle == Lifecycle::Stopped {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        Ok(inner.by_name.get(name).map(|&id| inner.status(id)))
    }

    pub(crate) fn last_failure(
        &self,
        name: &str,
    ) -> Result<Option<Arc<str>>, SupervisorHandleError> {
        let inner = self.read();
        if inner.lifecycle == Lifecycle::Stopped {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        let Some(&id) = inner.by_name.get(name) else {
            return Err(SupervisorHandleError::TaskNotFound {
                name: name.to_owned(),
            });
        };
        drop(inner);
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(failures.get(id as usize).cloned().flatten())
    }

    pub(crate) fn statuses(&self) -> Result<HashMap<String, TaskStatus>, SupervisorHandleError> {
        let inner = self.read();
        if inner.lifecycle == Lifecycle::Stopped {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        // The registry's own hasher, and room for as many: each name then lands in the new
        // table where it sits in the registry's, so walking the registry's table front to back
        // writes the new one front to back too, instead of at random. (A `String` hashes as
        // the `str` it holds, as an `Arc<str>` does.)
        let mut statuses =
            HashMap::with_capacity_and_hasher(inner.by_name.len(), inner.by_name.hasher().clone());
        statuses.extend(
            inner
                .by_name
                .iter()
                .map(|(name, &id)| (String::from(&**name), inner.status(id))),
        );
        Ok(statuses)
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
                .map(|(name, &id)| (Arc::clone(name), inner.status(id))),
        );
        Ok(statuses)
    }

    /// Every task's id, name and status, in id order (the order tasks were registered in).
    pub(crate) fn statuses_in_order(
        &self,
    ) -> Result<Vec<(u32, Arc<str>, TaskStatus)>, SupervisorHandleError> {
        let inner = self.read();
        if inner.lifecycle == Lifecycle::Stopped {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        Ok(inner
            .names
            .iter()
            .enumerate()
            .map(|(id, name)| (id as u32, Arc::clone(name), inner.status(id as u32)))
            .collect())
    }

    /// The info of the task `name`, or `None` if no task has that name (see
    /// [`observe::info`]).
    pub(crate) fn task_info(
        &self,
        name: &str,
        epoch: Instant,
        blocked_for: impl Fn(u32) -> Option<Duration>,
    ) -> Result<Option<TaskInfo>, SupervisorHandleError> {
        let inner = self.read();
        if inner.lifecycle == Lifecycle::Stopped {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        let Some((name, &id)) = inner.by_name.get_key_value(name) else {
            return Ok(None);
        };
        let name = Arc::clone(name);
        let place = id as usize;
        let published = inner.statuses[place / CHUNK].read(place % CHUNK);
        drop(inner);
        let failure = self
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(place)
            .cloned()
            .flatten();
        let now = Instant::now();
        Ok(Some(observe::info::info(
            name,
            &published,
            failure,
            blocked_for(id),
            epoch,
            now,
        )))
    }

    /// The info of every task, in start order.
    pub(crate) fn task_infos(
        &self,
        epoch: Instant,
        blocked_for: impl Fn(u32) -> Option<Duration>,
    ) -> Result<Vec<TaskInfo>, SupervisorHandleError> {
        // Filled in place, at its size: a collected iterator would grow it by doubling.
        let mut infos = Vec::with_capacity(self.len());
        self.for_each_task_info(epoch, blocked_for, |_, _, info| infos.push(info))?;
        Ok(infos)
    }

    /// Calls `each` with the id, the published flags and the info of every task, in start
    /// order.
    pub(crate) fn for_each_task_info(
        &self,
        epoch: Instant,
        blocked_for: impl Fn(u32) -> Option<Duration>,
        mut each: impl FnMut(u32, u8, TaskInfo),
    ) -> Result<(), SupervisorHandleError> {
        let inner = self.read();
        if inner.lifecycle == Lifecycle::Stopped {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        // Ids are dense: the names in id order, the table read in the same order, chunk by
        // chunk.
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        for (place, name) in inner.names.iter().enumerate() {
            let published = inner.statuses[place / CHUNK].read(place % CHUNK);
            let failure = failures.get(place).cloned().flatten();
            let id = place as u32;
            let info = observe::info::info(
                Arc::clone(name),
                &published,
                failure,
                blocked_for(id),
                epoch,
                now,
            );
            each(id, published.flags, info);
        }
        Ok(())
    }

    /// The name and restart count of task `id`.
    pub(crate) fn name_and_attempt(&self, id: u32) -> Option<(Arc<str>, u32)> {
        let inner = self.read();
        let place = id as usize;
        let name = Arc::clone(inner.names.get(place)?);
        let attempt = inner
            .statuses
            .get(place / CHUNK)?
            .read(place % CHUNK)
            .attempt;
        Some((name, attempt))
    }

    /// The id of the task `name`.
    pub(crate) fn id_of(&self, name: &str) -> Result<u32, SupervisorHandleError> {
        let inner = self.read();
        if inner.lifecycle == Lifecycle::Stopped {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        inner
            .by_name
            .get(name)
            .copied()
            .ok_or_else(|| SupervisorHandleError::TaskNotFound {
                name: name.to_owned(),
            })
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
pub struct LoomEntry(TaskEntry);

#[cfg(loom)]
impl LoomRegistry {
    /// An empty, running registry.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(Registry::new(crate::context::RunSettings::detached()))
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
        self.0.command(name, send)
    }

    /// See [`Registry::close`].
    pub fn close(
        &self,
        send: impl FnOnce() -> Result<(), SupervisorHandleError>,
    ) -> Result<(), SupervisorHandleError> {
        self.0.close(send)
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

    fn ok(_: Arc<str>, _: TaskEntry) -> Result<(), SupervisorHandleError> {
        Ok(())
    }

    #[test]
    fn a_name_is_reserved_once() {
        let registry = Registry::new(RunSettings::detached());
        registry.add("a", ok).unwrap();
        assert_eq!(
            registry.add("a", ok),
            Err(SupervisorHandleError::TaskAlreadyExists { name: "a".into() })
        );
        assert_eq!(registry.status("a"), Ok(Some(TaskStatus::Created)));
    }

    #[test]
    fn a_failed_send_undoes_the_reservation() {
        let registry = Registry::new(RunSettings::detached());
        let refused = registry.add("a", |_, _| Err(SupervisorHandleError::SupervisorStopped));
        assert_eq!(refused, Err(SupervisorHandleError::SupervisorStopped));
        assert_eq!(registry.status("a"), Ok(None));
        registry.add("a", ok).unwrap();
    }

    #[test]
    fn ids_follow_the_order_of_reservation() {
        let registry = Registry::new(RunSettings::detached());
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
        let registry = Registry::new(RunSettings::detached());
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

    /// Adds `count` tasks named by their index and keeps the entries the loop would get.
    fn registry_of(count: usize) -> (Registry, Vec<TaskEntry>) {
        let registry = Registry::new(RunSettings::detached());
        let mut entries = Vec::new();
        for index in 0..count {
            registry
                .add(&index.to_string(), |_, entry| {
                    entries.push(entry);
                    Ok(())
                })
                .unwrap();
        }
        (registry, entries)
    }

    #[test]
    fn each_task_reads_its_own_status_across_chunks() {
        let count = 3 * CHUNK + 1;
        let (registry, entries) = registry_of(count);
        let status_of = |index: usize| match index % 3 {
            0 => TaskStatus::Healthy,
            1 => TaskStatus::Failed,
            _ => TaskStatus::Dead,
        };
        for (index, entry) in entries.iter().enumerate() {
            assert_eq!(entry.id as usize, index);
            entry.publish(status_of(index));
        }
        for index in 0..count {
            assert_eq!(
                registry.status(&index.to_string()),
                Ok(Some(status_of(index)))
            );
        }
        let listed = registry.statuses().unwrap();
        let shared = registry.shared_statuses().unwrap();
        assert_eq!(listed.len(), count);
        assert_eq!(shared.len(), count);
        for (name, status) in shared {
            let index: usize = name.parse().unwrap();
            assert_eq!(status, status_of(index));
            assert_eq!(listed[&*name], status);
        }
    }

    #[test]
    fn an_undone_id_comes_back_created() {
        let (registry, entries) = registry_of(CHUNK);
        entries[0].publish(TaskStatus::Healthy);
        // The next id opens the second chunk; refused, it is given again, to the next add.
        let refused = registry.add("late", |_, _| Err(SupervisorHandleError::SupervisorStopped));
        assert_eq!(refused, Err(SupervisorHandleError::SupervisorStopped));
        let mut ids = Vec::new();
        for name in ["x", "y"] {
            registry
                .add(name, |_, entry| {
                    ids.push(entry.id);
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(ids, [CHUNK as u32, CHUNK as u32 + 1]);
        assert_eq!(registry.read().statuses.len(), 2);
        assert_eq!(registry.status("late"), Ok(None));
        assert_eq!(registry.status("x"), Ok(Some(TaskStatus::Created)));
        assert_eq!(registry.status("y"), Ok(Some(TaskStatus::Created)));
        assert_eq!(registry.status("0"), Ok(Some(TaskStatus::Healthy)));
    }

    #[test]
    fn the_last_failure_is_kept_per_task() {
        let (registry, entries) = registry_of(CHUNK + 2);
        let far = entries.last().unwrap().id;
        assert_eq!(registry.last_failure("1"), Ok(None));
        registry.record_failure(far, Arc::from("first"));
        registry.record_failure(1, Arc::from("one"));
        registry.record_failure(far, Arc::from("second"));
        let far_name = far.to_string();
        assert_eq!(
            registry.last_failure(&far_name).unwrap().as_deref(),
            Some("second")
        );
        assert_eq!(registry.last_failure("1").unwrap().as_deref(), Some("one"));
        assert_eq!(registry.last_failure("0"), Ok(None));
        assert_eq!(
            registry.last_failure("nobody"),
            Err(SupervisorHandleError::TaskNotFound {
                name: "nobody".into()
            })
        );
    }
}
