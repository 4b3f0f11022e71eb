//! The task trait users implement, and the adapters that let any task be supervised.
//!
//! The supervisor never runs the instance a user registered: every start and every restart
//! runs a fresh instance made by [`SupervisedTask::clone_task`], so a run that failed halfway
//! cannot leave half-updated state behind for the next one.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use std::panic::{catch_unwind, AssertUnwindSafe};

use async_trait::async_trait;
use tokio::task::AbortHandle;

use crate::context::{RunLocal, RunRef};
use crate::run::{self, DriverStart, Ended, RunToEnd, Runs};

/// The error a task's run returns: an [`anyhow::Error`], as in every 0.3.x release.
///
/// Build it the `anyhow` way: `?` on any `std::error::Error + Send + Sync + 'static`,
/// [`bail!`](crate::bail), [`anyhow!`](crate::anyhow!), [`TaskError::msg`], or `.context(..)`
/// from [`anyhow::Context`] (re-exported as `task_supervisor::anyhow`, so no extra dependency
/// is needed). The supervisor keeps the whole cause chain as the failure's reason: a run that
/// fails with `Err(io_error).context("loading the config")` is recorded as
/// `loading the config: <the io error>` (the error's alternate form, `{:#}`).
///
/// # Examples
///
/// ```
/// use async_trait::async_trait;
/// use task_supervisor::anyhow::Context;
/// use task_supervisor::{bail, SupervisedTask, TaskError, TaskResult};
///
/// #[derive(Clone)]
/// struct Loader {
///     path: String,
/// }
///
/// #[async_trait]
/// impl SupervisedTask for Loader {
///     async fn run(&mut self) -> TaskResult {
///         if self.path.is_empty() {
///             bail!("no path to load from");
///         }
///         if self.path.ends_with('/') {
///             return Err(TaskError::msg("the path names a directory"));
///         }
///         let _text = std::fs::read_to_string(&self.path)
///             .with_context(|| format!("reading {}", self.path))?;
///         Ok(())
///     }
/// }
/// ```
pub type TaskError = anyhow::Error;

/// The result of one run of a task: `Ok(())` means the task finished its work.
pub type TaskResult = Result<(), TaskError>;

/// A unit of work that the supervisor keeps alive.
///
/// Implement [`run`](SupervisedTask::run) with `#[async_trait]` and derive `Clone`: that is all
/// a task needs. Each start and each restart runs a fresh clone of the instance that was
/// registered, so owned fields start from their registered values on every run, while fields
/// behind an `Arc` are shared by all runs.
///
/// | `run` ends with | the supervisor |
/// | --- | --- |
/// | `Ok(())` | marks the task [`Completed`](crate::TaskStatus::Completed) and leaves it alone |
/// | `Err(_)` or a panic | marks it [`Failed`](crate::TaskStatus::Failed) and restarts it after a back-off, or marks it [`Dead`](crate::TaskStatus::Dead) once the restart attempts are used up |
///
/// Inside `run`, [`TaskContext`](crate::TaskContext) (or the free function
/// [`heartbeat`](crate::heartbeat)) reaches the supervisor: to send heartbeats and to learn,
/// through a `CancellationToken`, that the run should finish.
///
/// # Tasks that are not `Clone`
///
/// A type that cannot be cloned (it owns a connection, a receiver, a file) is supervised
/// through a factory: [`TaskFactory`] wraps a closure that builds a fresh instance for every
/// run. Alternatively, override [`clone_task`](SupervisedTask::clone_task) on a `Clone` type
/// to control what a restart starts from.
///
/// # Examples
///
/// ```
/// use async_trait::async_trait;
/// use task_supervisor::{SupervisedTask, TaskResult};
///
/// #[derive(Clone)]
/// struct Poller {
///     url: String,
/// }
///
/// #[async_trait]
/// impl SupervisedTask for Poller {
///     async fn run(&mut self) -> TaskResult {
///         if self.url.is_empty() {
///             task_supervisor::bail!("no url to poll");
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait SupervisedTask: Send + 'static {
    /// Runs the task once, until it finishes (`Ok`), fails (`Err`) or is stopped.
    ///
    /// A run that loops forever is the normal case for a service. It is stopped by the
    /// supervisor on `restart`, `kill_task`, `shutdown` or a missed heartbeat; see
    /// [`TaskContext::cancellation_token`](crate::TaskContext::cancellation_token) for how
    /// to finish cleanly when that happens.
    async fn run(&mut self) -> TaskResult;

    /// Makes the instance the next run starts from.
    ///
    /// The default clones `self`, which is what a task that derives `Clone` wants. Override it
    /// to start every run from a state of your choosing.
    fn clone_task(&self) -> Box<dyn SupervisedTask>
    where
        Self: Clone + Sized,
    {
        Box::new(self.clone())
    }

    /// Declares that every run of this task sends heartbeats.
    ///
    /// When `true`, each run must send its first heartbeat within the supervisor's
    /// `health_check_initial_delay` plus `timeout_threshold` of starting, and then at least
    /// once per `timeout_threshold`, or it is treated as hung, stopped and restarted.
    ///
    /// When `false` (the default), a run opts in by sending its first heartbeat: from then on
    /// it is watched the same way. A run that never beats is never stopped for silence.
    ///
    /// The supervisor reads this once, when the task is registered.
    fn sends_heartbeats(&self) -> bool {
        false
    }

    /// Not part of the API: how the supervisor keeps this task once it is registered. The
    /// default, for every task, runs each run's boxed future; closure tasks ([`TaskFn`]) run
    /// theirs inline. Do not override it.
    #[doc(hidden)]
    fn __into_template(self) -> Template
    where
        Self: Clone + Sized,
    {
        Template(Box::new(self))
    }
}

/// Not part of the API: a registered task, as the supervisor keeps it (see
/// `SupervisedTask::__into_template`).
#[doc(hidden)]
pub struct Template(pub(crate) Box<dyn TaskTemplate>);

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template").finish_non_exhaustive()
    }
}

/// A task built afresh for every run by a closure.
///
/// This is how a type that cannot be `Clone` is supervised: the closure is cloned instead of
/// the task, and every start or restart calls it to build a new instance.
///
/// # Examples
///
/// ```
/// use async_trait::async_trait;
/// use task_supervisor::{SupervisedTask, SupervisorBuilder, TaskFactory, TaskResult};
///
/// // Owns a receiver, so it cannot be cloned.
/// struct Consumer {
///     inbox: tokio::sync::mpsc::Receiver<u32>,
/// }
///
/// #[async_trait]
/// impl SupervisedTask for Consumer {
///     async fn run(&mut self) -> TaskResult {
///         while let Some(_item) = self.inbox.recv().await {}
///         Ok(())
///     }
/// }
///
/// let supervisor = SupervisorBuilder::new()
///     .with_task(
///         "consumer",
///         TaskFactory::new(|| {
///             let (_tx, inbox) = tokio::sync::mpsc::channel(16);
///             Consumer { inbox }
///         }),
///     )
///     .build();
/// # drop(supervisor);
/// ```
pub struct TaskFactory<T> {
    make: Arc<dyn Fn() -> T + Send + Sync>,
    current: Option<T>,
    sends_heartbeats: bool,
}

impl<T: SupervisedTask> TaskFactory<T> {
    /// Wraps `make`, which builds the instance each run starts from.
    pub fn new<F>(make: F) -> Self
    where
        F: Fn() -> T + Send + Sync + 'static,
    {
        Self {
            make: Arc::new(make),
            current: None,
            sends_heartbeats: false,
        }
    }

    /// Declares that the tasks this factory builds send heartbeats from the start of every
    /// run (see [`SupervisedTask::sends_heartbeats`]).
    #[must_use]
    pub fn with_heartbeats(mut self) -> Self {
        self.sends_heartbeats = true;
        self
    }
}

impl<T> Clone for TaskFactory<T> {
    /// Clones the factory, not the instance: the clone builds its own on its first run.
    fn clone(&self) -> Self {
        Self {
            make: Arc::clone(&self.make),
            current: None,
            sends_heartbeats: self.sends_heartbeats,
        }
    }
}

impl<T> fmt::Debug for TaskFactory<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskFactory")
            .field("built", &self.current.is_some())
            .finish()
    }
}

#[async_trait]
impl<T: SupervisedTask> SupervisedTask for TaskFactory<T> {
    async fn run(&mut self) -> TaskResult {
        let make = &self.make;
        let task = self.current.get_or_insert_with(|| make());
        task.run().await
    }

    fn sends_heartbeats(&self) -> bool {
        self.sends_heartbeats
    }
}

/// A task made of a closure that returns a future: every run calls the closure again and runs
/// the future it returns.
///
/// Make one with [`task_fn`]. The closure is shared by all runs, not cloned, so what it
/// captures needs no `Clone`: only `Send + Sync`, since runs may start on any thread. Inside
/// the future (and in the closure's body), [`TaskContext::current`](crate::TaskContext::current)
/// and [`heartbeat`](crate::heartbeat) reach the run, as for any task.
///
/// A closure task is also the cheapest kind to run: its future lives inline in the Tokio task
/// that drives its runs, where a `#[async_trait]` task's future is a box of its own and each
/// run clones the task first. A run of a closure task allocates nothing of its own.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use task_supervisor::{bail, task_fn, SupervisorBuilder, TaskStatus};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let attempts = AtomicU32::new(0); // not Clone, and it need not be
/// let handle = SupervisorBuilder::new()
///     .with_base_restart_delay(Duration::from_millis(10))
///     .build()
///     .run();
/// handle.add_task(
///     "connect",
///     task_fn(move || {
///         let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
///         async move {
///             if attempt < 3 {
///                 bail!("refused, attempt {attempt}");
///             }
///             Ok(())
///         }
///     }),
/// )?;
/// tokio::time::sleep(Duration::from_millis(100)).await;
/// assert_eq!(handle.get_task_status("connect").await?, Some(TaskStatus::Completed));
/// # Ok(())
/// # }
/// ```
pub struct TaskFn<F> {
    make: Arc<F>,
    sends_heartbeats: bool,
}

/// A task whose every run calls `make` and runs the future it returns; see [`TaskFn`].
pub fn task_fn<F, Fut>(make: F) -> TaskFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskResult> + Send + 'static,
{
    TaskFn {
        make: Arc::new(make),
        sends_heartbeats: false,
    }
}

impl<F> TaskFn<F> {
    /// Declares that every run of this task sends heartbeats from its start (see
    /// [`SupervisedTask::sends_heartbeats`]).
    #[must_use]
    pub fn with_heartbeats(mut self) -> Self {
        self.sends_heartbeats = true;
        self
    }
}

impl<F> Clone for TaskFn<F> {
    /// Shares the closure: the clone calls the same one.
    fn clone(&self) -> Self {
        Self {
            make: Arc::clone(&self.make),
            sends_heartbeats: self.sends_heartbeats,
        }
    }
}

impl<F> fmt::Debug for TaskFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskFn")
            .field("sends_heartbeats", &self.sends_heartbeats)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<F, Fut> SupervisedTask for TaskFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskResult> + Send + 'static,
{
    async fn run(&mut self) -> TaskResult {
        (self.make)().await
    }

    fn sends_heartbeats(&self) -> bool {
        self.sends_heartbeats
    }

    fn __into_template(self) -> Template {
        Template(Box::new(Inline(self)))
    }
}

/// A closure task registered for the inline path: its driver is monomorphised for the
/// closure's future, which lives in the driver's Tokio task instead of a box of its own.
struct Inline<F>(TaskFn<F>);

impl<F, Fut> TaskTemplate for Inline<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskResult> + Send + 'static,
{
    fn make_run(&self) -> Box<dyn SupervisedTask> {
        // The boxed path's way to run it; its own driver calls the closure directly.
        Box::new(self.0.clone())
    }

    fn sends_heartbeats(&self) -> bool {
        self.0.sends_heartbeats
    }

    fn spawn(self: Box<Self>, start: DriverStart) -> AbortHandle {
        run::spawn(self, start)
    }
}

impl<F, Fut> Runs for Inline<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskResult> + Send + 'static,
{
    fn run_once<'a>(
        &self,
        run: &'a RunRef,
        watched: bool,
    ) -> impl Future<Output = Ended> + Send + 'a {
        // Called in the run's context, as the boxed path calls it inside the run's first
        // poll; a panic of it is the run's panic.
        let made = {
            let local = RunLocal::new(run);
            let _entered = local.enter();
            catch_unwind(AssertUnwindSafe(|| (self.0.make)()))
        };
        RunToEnd::new(made, run, watched)
    }

    fn into_template(self: Box<Self>) -> Box<dyn TaskTemplate> {
        self
    }
}

/// The supervisor's view of a registered task: something it can make runs from.
pub(crate) trait TaskTemplate: Send + 'static {
    /// Makes the instance the next run starts from.
    fn make_run(&self) -> Box<dyn SupervisedTask>;
    /// Whether runs are watched from their start (see [`SupervisedTask::sends_heartbeats`]).
    fn sends_heartbeats(&self) -> bool;
    /// Spawns the driver of this task's runs (see [`crate::run`]).
    fn spawn(self: Box<Self>, start: DriverStart) -> AbortHandle;
}

impl<T: SupervisedTask + Clone> TaskTemplate for T {
    fn make_run(&self) -> Box<dyn SupervisedTask> {
        self.clone_task()
    }

    fn sends_heartbeats(&self) -> bool {
        SupervisedTask::sends_heartbeats(self)
    }

    fn spawn(self: Box<Self>, start: DriverStart) -> AbortHandle {
        // One driver for every task type: the boxed path.
        run::spawn::<dyn TaskTemplate>(self, start)
    }
}
