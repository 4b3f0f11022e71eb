//! `SupervisorHandle`: the cheap, cloneable remote control of a running supervisor.
//!
//! Commands are checked against the shared registry and answered at once; what changes state
//! travels to the loop over an unbounded channel, so no command waits for the loop.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};

use tokio::sync::broadcast;

use crate::error::{SupervisorError, SupervisorHandleError};
use crate::message::{Message, NewTask};
use crate::observe::events::Event;
use crate::observe::health::Health;
use crate::observe::info::TaskInfo;
use crate::shared::{close, send, HandleInner, Shared};
use crate::spec::{TaskPolicy, TaskSpec};
use crate::status::{StatusChange, TaskStatus};
use crate::task::{SupervisedTask, TaskTemplate};
use crate::tree::{SupervisorTree, TreeTask};
use crate::unwind;

/// Controls a running supervisor: adds, restarts and kills tasks, reads statuses, shuts down.
///
/// Clones are cheap and all control the same supervisor; a handle can be sent to and used from
/// any thread. Dropping a clone changes nothing; dropping the last one shuts the supervisor
/// down, as [`shutdown`](Self::shutdown) does. (In the released 0.3 crate, dropping any clone
/// shut it down.)
///
/// Commands that change something (`add_task`, `restart`, `kill_task`, `shutdown`) return at
/// once: errors the handle can see (an unknown or duplicate name, a supervisor that stopped)
/// come back from the call, and the change itself is carried out by the supervisor right
/// after, in the order the commands were made.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_trait::async_trait;
/// use task_supervisor::{SupervisedTask, SupervisorBuilder, TaskResult, TaskStatus};
///
/// #[derive(Clone)]
/// struct Forever;
///
/// #[async_trait]
/// impl SupervisedTask for Forever {
///     async fn run(&mut self) -> TaskResult {
///         std::future::pending().await
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let handle = SupervisorBuilder::new().build().run();
/// handle.add_task("forever", Forever)?;
/// tokio::time::sleep(Duration::from_millis(10)).await;
/// assert_eq!(handle.get_task_status("forever").await?, Some(TaskStatus::Healthy));
///
/// handle.kill_task("forever")?;
/// handle.shutdown()?;
/// handle.wait().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SupervisorHandle {
    inner: Arc<HandleInner>,
}

impl SupervisorHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            inner: Arc::new(HandleInner { shared }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Registers `task` under `name` and starts it, with the supervisor's settings.
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::TaskAlreadyExists`] if a task of that name is registered
    /// (whatever its status); [`SupervisorHandleError::SupervisorStopped`] if the supervisor
    /// is shutting down or has stopped.
    pub fn add_task(
        &self,
        name: &str,
        task: impl SupervisedTask + Clone,
    ) -> Result<(), SupervisorHandleError> {
        let policy = Arc::clone(&self.shared().default_policy);
        self.add(name, task.__into_template().0, policy)
    }

    /// Registers the task of `spec` under `name` and starts it, with the settings of `spec`
    /// overriding the supervisor's for this task.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_trait::async_trait;
    /// use task_supervisor::{RestartPolicy, SupervisedTask, SupervisorBuilder, TaskResult, TaskSpec};
    ///
    /// #[derive(Clone)]
    /// struct Report;
    ///
    /// #[async_trait]
    /// impl SupervisedTask for Report {
    ///     async fn run(&mut self) -> TaskResult {
    ///         task_supervisor::bail!("the mail server is down")
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let handle = SupervisorBuilder::new().build().run();
    /// handle.add_task_spec(
    ///     "report",
    ///     TaskSpec::new(Report)
    ///         .with_max_restart_attempts(1)
    ///         .with_base_restart_delay(Duration::from_millis(10)),
    /// )?;
    /// tokio::time::sleep(Duration::from_millis(50)).await; // one run, one restart
    /// assert!(handle.get_task_status("report").await?.is_some_and(|status| status.is_dead()));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::InvalidTaskSpec`] if a setting of `spec` cannot work (the
    /// same checks as [`SupervisorBuilder::try_build`](crate::SupervisorBuilder::try_build));
    /// nothing is registered then. Otherwise as [`add_task`](Self::add_task).
    pub fn add_task_spec(&self, name: &str, spec: TaskSpec) -> Result<(), SupervisorHandleError> {
        let TaskSpec { task, overrides } = spec;
        match self.shared().policy_for(&overrides) {
            Ok(policy) => self.add(name, task, policy),
            Err(reason) => {
                // Dropped here, where a panicking `Drop` cannot unwind into the caller.
                unwind::drop_guarded(task);
                Err(SupervisorHandleError::InvalidTaskSpec {
                    name: name.to_owned(),
                    reason,
                })
            }
        }
    }

    fn add(
        &self,
        name: &str,
        task: Box<dyn TaskTemplate>,
        policy: Arc<TaskPolicy>,
    ) -> Result<(), SupervisorHandleError> {
        let shared = self.shared();
        let mut refused: Option<Box<dyn TaskTemplate>> = Some(task);
        let added = shared.registry.add(name, |name, entry| {
            let Some(task) = refused.take() else {
                return Err(SupervisorHandleError::SupervisorStopped);
            };
            let new = NewTask {
                name,
                entry,
                task,
                policy,
            };
            shared.sender.send(Message::Add(new)).map_err(|unsent| {
                if let Message::Add(new) = unsent.0 {
                    refused = Some(new.task);
                }
                SupervisorHandleError::SupervisorStopped
            })
        });
        if added.is_ok() {
            shared.nudge_loop();
        }
        // A task that was not taken is dropped here, where its `Drop` cannot unwind into
        // the caller.
        unwind::drop_guarded(refused);
        added
    }

    /// Starts a fresh run of the task `name` and clears its restart count.
    ///
    /// A running task is asked to stop first (cancellation, then the grace period, then it is
    /// dropped), and the new run starts only once the old one has ended. A completed or dead
    /// task is brought back.
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::TaskNotFound`] if no task has that name;
    /// [`SupervisorHandleError::SupervisorStopped`] if the supervisor is shutting down or has
    /// stopped.
    pub fn restart(&self, name: &str) -> Result<(), SupervisorHandleError> {
        let shared = self.shared();
        shared
            .registry
            .command(name, |id| send(shared, Message::Restart { id }))
    }

    /// Kills the task `name` for good: its run is stopped (cancellation, then the grace period,
    /// then it is dropped), a pending restart is cancelled, and it is marked
    /// [`Dead`](TaskStatus::Dead). Only [`restart`](Self::restart) brings it back.
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::TaskNotFound`] if no task has that name;
    /// [`SupervisorHandleError::SupervisorStopped`] if the supervisor is shutting down or has
    /// stopped.
    pub fn kill_task(&self, name: &str) -> Result<(), SupervisorHandleError> {
        let shared = self.shared();
        shared
            .registry
            .command(name, |id| send(shared, Message::Kill { id }))
    }

    /// Shuts the supervisor down: every run is asked to stop (cancellation, then the grace
    /// period, then it is dropped) and no task is started again. Use [`wait`](Self::wait) to
    /// know when it is done.
    ///
    /// From this call on, commands that change something fail; statuses can still be read
    /// until the supervisor has stopped.
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::SupervisorStopped`] if the supervisor is already shutting down
    /// or has stopped.
    pub fn shutdown(&self) -> Result<(), SupervisorHandleError> {
        close(self.shared())
    }

    /// The status of the task `name`, or `None` if no task has that name.
    ///
    /// It is read from the status the supervisor last published, without a round trip to it,
    /// so it returns at once.
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::SupervisorStopped`] once the supervisor has stopped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it completes on its first poll.
    pub async fn get_task_status(
        &self,
        name: &str,
    ) -> Result<Option<TaskStatus>, SupervisorHandleError> {
        self.shared().registry.status(name)
    }

    /// Why the last failed run of the task `name` failed: its error's message, its panic's
    /// message (as `panicked: ...`), or a note that it hung. `None` if it never failed.
    ///
    /// It is kept after the task recovered, until the next failure replaces it.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_trait::async_trait;
    /// use task_supervisor::{SupervisedTask, SupervisorBuilder, TaskResult};
    ///
    /// #[derive(Clone)]
    /// struct Broken;
    ///
    /// #[async_trait]
    /// impl SupervisedTask for Broken {
    ///     async fn run(&mut self) -> TaskResult {
    ///         panic!("config file missing")
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let handle = SupervisorBuilder::new().build().run();
    /// # std::panic::set_hook(Box::new(|_| {}));
    /// handle.add_task("broken", Broken)?;
    /// assert_eq!(handle.last_failure("broken")?, None);
    /// tokio::time::sleep(std::time::Duration::from_millis(1)).await; // it panics, waits to restart
    /// let reason = handle.last_failure("broken")?.expect("it failed");
    /// assert_eq!(&*reason, "panicked: config file missing");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::TaskNotFound`] if no task has that name;
    /// [`SupervisorHandleError::SupervisorStopped`] once the supervisor has stopped.
    pub fn last_failure(&self, name: &str) -> Result<Option<Arc<str>>, SupervisorHandleError> {
        self.shared().registry.last_failure(name)
    }

    /// The status of every registered task, by name.
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::SupervisorStopped`] once the supervisor has stopped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it completes on its first poll.
    pub async fn get_all_task_statuses(
        &self,
    ) -> Result<HashMap<String, TaskStatus>, SupervisorHandleError> {
        self.shared().registry.statuses()
    }

    /// Everything the supervisor knows about the task `name` (see [`TaskInfo`]), or `None` if
    /// no task has that name.
    ///
    /// Read from what the supervisor last published, without a round trip to it.
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::SupervisorStopped`] once the supervisor has stopped.
    pub fn task_info(&self, name: &str) -> Result<Option<TaskInfo>, SupervisorHandleError> {
        let shared = self.shared();
        shared
            .registry
            .task_info(name, shared.epoch, |id| shared.blocked_for(id))
    }

    /// The [`TaskInfo`] of every registered task, in start order.
    ///
    /// Read as [`task_info`](Self::task_info) reads one, in one pass: it costs about what
    /// [`task_statuses`](Self::task_statuses) does.
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::SupervisorStopped`] once the supervisor has stopped.
    pub fn task_infos(&self) -> Result<Vec<TaskInfo>, SupervisorHandleError> {
        let shared = self.shared();
        let blocked = shared.blocked_now();
        shared
            .registry
            .task_infos(shared.epoch, |id| blocked.of(id))
    }

    /// The status of every registered task, with the name the supervisor holds for it.
    ///
    /// The same snapshot as [`get_all_task_statuses`](Self::get_all_task_statuses), made
    /// without copying a name or building a map: each name is a reference-counted pointer to the
    /// supervisor's own copy. Use it to list or scan many tasks; collect it into a map if you
    /// look names up. The order is unspecified.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_trait::async_trait;
    /// use task_supervisor::{SupervisedTask, SupervisorBuilder, TaskResult, TaskStatus};
    ///
    /// #[derive(Clone)]
    /// struct Idle;
    ///
    /// #[async_trait]
    /// impl SupervisedTask for Idle {
    ///     async fn run(&mut self) -> TaskResult {
    ///         std::future::pending().await
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let handle = SupervisorBuilder::new()
    ///     .with_task("a", Idle)
    ///     .with_task("b", Idle)
    ///     .build()
    ///     .run();
    /// tokio::task::yield_now().await; // let both runs start
    /// let mut statuses = handle.task_statuses()?;
    /// statuses.sort_by(|a, b| a.0.cmp(&b.0));
    /// assert_eq!(statuses.len(), 2);
    /// assert_eq!(&*statuses[0].0, "a");
    /// assert!(statuses.iter().all(|(_, status)| *status == TaskStatus::Healthy));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::SupervisorStopped`] once the supervisor has stopped.
    pub fn task_statuses(&self) -> Result<Vec<(Arc<str>, TaskStatus)>, SupervisorHandleError> {
        self.shared().registry.shared_statuses()
    }

    /// Every status change from now on, in the order the supervisor made them.
    ///
    /// The stream holds the last 4096 changes; a receiver that falls further behind gets
    /// [`RecvError::Lagged`](broadcast::error::RecvError::Lagged) and then the newest changes.
    /// It ends ([`RecvError::Closed`](broadcast::error::RecvError::Closed)) when the supervisor
    /// has stopped. Nothing is published, and nothing is paid, until the first subscription.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_trait::async_trait;
    /// use task_supervisor::{SupervisedTask, SupervisorBuilder, TaskResult, TaskStatus};
    ///
    /// #[derive(Clone)]
    /// struct Once;
    ///
    /// #[async_trait]
    /// impl SupervisedTask for Once {
    ///     async fn run(&mut self) -> TaskResult {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let handle = SupervisorBuilder::new().build().run();
    /// let mut changes = handle.status_changes();
    /// handle.add_task("once", Once).unwrap();
    /// let first = changes.recv().await.unwrap();
    /// let second = changes.recv().await.unwrap();
    /// assert_eq!(&*first.task, "once");
    /// assert_eq!((first.to, second.to), (TaskStatus::Starting, TaskStatus::Completed));
    ///
    /// // The stream ends once the supervisor has stopped.
    /// handle.shutdown().unwrap();
    /// handle.wait().await.unwrap();
    /// assert!(changes.recv().await.is_err());
    /// # }
    /// ```
    pub fn status_changes(&self) -> broadcast::Receiver<StatusChange> {
        self.shared().status_changes.subscribe()
    }

    /// Every lifecycle event from now on: each run's start, proof of life, failure, panic,
    /// hang, scheduled restart, completion, kill and death; blocked and unblocked polls; group
    /// restarts; and the supervisor's own (intensity exceeded, stopping, stopped), in the
    /// order the supervisor made them (blocked-poll events come from the watcher, as they are
    /// seen). See [`EventKind`](crate::EventKind) for each.
    ///
    /// The stream holds the last 4096 events; a receiver that falls further behind gets
    /// [`RecvError::Lagged`](broadcast::error::RecvError::Lagged) with how many it missed, and
    /// then the newest events: a slow subscriber never slows the supervisor down. The last
    /// event is [`EventKind::Stopped`](crate::EventKind::Stopped); then the stream ends. Nothing is built, and nothing is
    /// paid, until the first subscription.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use task_supervisor::{bail, task_fn, EventKind, SupervisorBuilder};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let handle = SupervisorBuilder::new()
    ///     .with_base_restart_delay(Duration::from_millis(100))
    ///     .with_restart_jitter(0.0)
    ///     .build()
    ///     .run();
    /// let mut events = handle.events();
    /// handle.add_task("flaky", task_fn(|| async { bail!("no route to host") })).unwrap();
    ///
    /// let kinds: Vec<EventKind> = [
    ///     events.recv().await.unwrap(),
    ///     events.recv().await.unwrap(),
    ///     events.recv().await.unwrap(),
    /// ]
    /// .into_iter()
    /// .map(|event| event.kind)
    /// .collect();
    /// assert_eq!(
    ///     kinds,
    ///     [
    ///         EventKind::Started,
    ///         EventKind::Failed { reason: "no route to host".into() },
    ///         EventKind::RestartScheduled { delay: Duration::from_millis(100) },
    ///     ]
    /// );
    /// # }
    /// ```
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared().events.subscribe()
    }

    /// Waits until the supervisor has stopped and every run it started has ended, and says
    /// why it stopped.
    ///
    /// The supervisor stops only when it is told to, and the answer says which:
    ///
    /// | it stopped because | `wait` returns |
    /// | --- | --- |
    /// | [`shutdown`](Self::shutdown) was called, or the last handle was dropped | `Ok(())` |
    /// | its significant tasks ended, by its [`AutoShutdown`](crate::AutoShutdown) setting, having completed | `Ok(())` |
    /// | the same, but one of them died | [`SupervisorError::SignificantTaskDied`] |
    /// | more than the dead tasks threshold of its tasks died | [`SupervisorError::TooManyDeadTasks`] |
    /// | a restart would have exceeded its restart intensity | [`SupervisorError::RestartIntensityExceeded`] |
    /// | its Tokio runtime shut down first | [`SupervisorError::LoopEnded`] |
    ///
    /// It does **not** stop because every task has completed or died (unless its
    /// auto-shutdown setting says so): it keeps answering and keeps taking tasks, and `wait`
    /// keeps waiting, as in the released 0.3 crate and in Erlang/OTP. Any number of clones
    /// may wait at once, and waiting again after it returned returns the same answer at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_trait::async_trait;
    /// use task_supervisor::{SupervisedTask, SupervisorBuilder, TaskResult};
    ///
    /// #[derive(Clone)]
    /// struct Once;
    ///
    /// #[async_trait]
    /// impl SupervisedTask for Once {
    ///     async fn run(&mut self) -> TaskResult {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let handle = SupervisorBuilder::new().with_task("once", Once).build().run();
    /// let waiter = tokio::spawn({
    ///     let handle = handle.clone();
    ///     async move { handle.wait().await }
    /// });
    /// tokio::task::yield_now().await; // "once" completes; the supervisor stays up
    /// assert!(!waiter.is_finished());
    ///
    /// handle.shutdown().unwrap();
    /// assert_eq!(waiter.await.unwrap(), Ok(()));
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The supervisor's [`SupervisorError`] when it stopped by its own rules, as the table above
    /// says.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing, and a later `wait` picks up where it
    /// left off.
    pub async fn wait(&self) -> Result<(), SupervisorError> {
        let shared = self.shared();
        {
            let mut loop_task = shared.loop_task.lock().await;
            if let Some(task) = loop_task.as_mut() {
                // The loop only ends by returning; a join error means its runtime went away,
                // and the outcome below tells that apart.
                let _ = task.await;
                *loop_task = None;
            }
        }
        shared
            .outcome
            .get()
            .cloned()
            .unwrap_or(Err(SupervisorError::LoopEnded))
    }

    /// The handle of the child supervisor that the current run of task `name` runs (see
    /// [`ChildSupervisor`](crate::ChildSupervisor)); `None` if that task is no child
    /// supervisor, or its run is not up. Each run of the task builds a new child, so a
    /// handle got before a restart of the task controls the child that was stopped.
    ///
    /// A task name keeps meaning what it means everywhere else: to reach a grandchild, ask
    /// the child.
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::TaskNotFound`] if no task has that name;
    /// [`SupervisorHandleError::SupervisorStopped`] once the supervisor has stopped.
    pub fn child(&self, name: &str) -> Result<Option<SupervisorHandle>, SupervisorHandleError> {
        let shared = self.shared();
        let id = shared.registry.id_of(name)?;
        Ok(shared.child_of(id).map(|inner| SupervisorHandle { inner }))
    }

    /// A snapshot of this supervisor's tasks and statuses, in start order, with each child
    /// supervisor's own below the task that runs it, down the whole tree.
    ///
    /// Each supervisor's part is read from the statuses it last published, without a round
    /// trip; parts of different supervisors are read one after another, not at one instant.
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::SupervisorStopped`] once this supervisor has stopped (a child
    /// that stopped meanwhile is shown without its tasks).
    pub fn tree(&self) -> Result<SupervisorTree, SupervisorHandleError> {
        let shared = self.shared();
        let tasks = shared
            .registry
            .statuses_in_order()?
            .into_iter()
            .map(|(id, name, status)| TreeTask {
                name,
                status,
                child: shared
                    .child_of(id)
                    .and_then(|inner| SupervisorHandle { inner }.tree().ok()),
            })
            .collect();
        Ok(SupervisorTree { tasks })
    }

    /// A reference to this handle that does not keep the supervisor up.
    pub(crate) fn downgrade(&self) -> Weak<HandleInner> {
        Arc::downgrade(&self.inner)
    }

    /// Whether the supervisor still takes commands: it is neither shutting down nor stopped.
    pub fn is_running(&self) -> bool {
        self.shared().registry.is_running()
    }

    /// Whether the supervisor has stopped: every run has ended and every task has been
    /// dropped, and [`wait`](Self::wait) returns as soon as the loop's task is done.
    pub fn has_stopped(&self) -> bool {
        self.shared().stopped.is_cancelled()
    }

    /// Whether the supervisor is live and ready, down its whole tree (see [`Health`] for the
    /// rules). Read from what it last published, without a round trip; it costs about what
    /// [`task_infos`](Self::task_infos) does.
    pub fn health(&self) -> Health {
        Health::of(self.shared())
    }

    /// Shuts the supervisor down at once: every run still alive, in this supervisor and its
    /// children, is dropped without waiting for its grace period, and no task starts again.
    /// It works while a [`shutdown`](Self::shutdown) is under way, to cut it short (a second
    /// Ctrl-C, say). [`wait`](Self::wait) returns `Ok(())` once the runs are gone.
    ///
    /// # Errors
    ///
    /// [`SupervisorHandleError::SupervisorStopped`] if the supervisor has stopped already.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use task_supervisor::{task_fn, SupervisorBuilder, TaskContext};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// // A task that takes its time to stop: a minute of grace.
    /// let slow = task_fn(|| async {
    ///     let token = TaskContext::current().expect("inside a run").cancellation_token();
    ///     token.cancelled().await;
    ///     tokio::time::sleep(Duration::from_secs(50)).await; // cleaning up
    ///     Ok(())
    /// });
    /// let handle = SupervisorBuilder::new()
    ///     .with_grace_period(Duration::from_secs(60))
    ///     .with_task("slow", slow)
    ///     .build()
    ///     .run();
    /// tokio::time::sleep(Duration::from_millis(10)).await;
    ///
    /// let start = tokio::time::Instant::now();
    /// handle.shutdown().unwrap();
    /// handle.shutdown_now().unwrap(); // don't wait for the clean-up
    /// handle.wait().await.unwrap();
    /// assert!(start.elapsed() < Duration::from_secs(1));
    /// # }
    /// ```
    pub fn shutdown_now(&self) -> Result<(), SupervisorHandleError> {
        let shared = self.shared();
        // Closed first, so that no command is taken and the health says "shutting down" from
        // the call on; a supervisor already shutting down is closed already.
        let _ = close(shared);
        send(shared, Message::DropEveryRun)
    }

    /// The state the handle shares with its supervisor, for helpers that must not keep the
    /// supervisor up (a signal listener, the systemd notifier).
    #[cfg(any(feature = "axum", feature = "signal", all(feature = "systemd", unix)))]
    pub(crate) fn shared_state(&self) -> Arc<Shared> {
        Arc::clone(&self.inner.shared)
    }
}

impl fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorHandle")
            .field("tasks", &self.shared().registry.len())
            .field("running", &self.is_running())
            .finish()
    }
}
