//! `Supervisor`, a built supervisor waiting to run.

use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::event_loop::EventLoop;
use crate::handle::SupervisorHandle;
use crate::message::NewTask;
use crate::shared::Shared;
use crate::spec::TaskPolicy;
use crate::task::TaskTemplate;
use crate::unwind;

/// A supervisor that has been built and not started yet.
///
/// Make one with [`SupervisorBuilder`](crate::SupervisorBuilder), then call
/// [`run`](Supervisor::run).
pub struct Supervisor {
    config: Config,
    /// The policy of every task registered without a spec of its own.
    default_policy: Arc<TaskPolicy>,
    tasks: Vec<InitialTask>,
}

/// A task the supervisor is built with: its name, its template and its policy.
pub(crate) type InitialTask = (Arc<str>, Box<dyn TaskTemplate>, Arc<TaskPolicy>);

impl Supervisor {
    pub(crate) fn new(
        config: Config,
        default_policy: Arc<TaskPolicy>,
        tasks: Vec<InitialTask>,
    ) -> Self {
        Self {
            config,
            default_policy,
            tasks,
        }
    }

    /// Starts the supervisor and its tasks, and returns the handle that controls it.
    ///
    /// The supervisor runs as one Tokio task until it is told to stop: by
    /// [`shutdown`](SupervisorHandle::shutdown), by the drop of the last clone of the handle,
    /// or by reaching the dead tasks threshold. It does not stop because its tasks have
    /// finished: a supervisor whose tasks all completed or died still answers, takes new tasks
    /// and restarts old ones, as the released 0.3 crate and Erlang/OTP supervisors do. Keep a
    /// handle for as long as the tasks should run.
    ///
    /// # Panics
    ///
    /// Panics when called outside a Tokio runtime, as `tokio::spawn` does.
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
    /// let handle = SupervisorBuilder::new().with_task("once", Once).build().run();
    /// tokio::task::yield_now().await; // the only task runs and completes
    /// assert_eq!(handle.get_task_status("once").await, Ok(Some(TaskStatus::Completed)));
    ///
    /// // The supervisor is still up: it takes more work until it is told to stop.
    /// handle.add_task("again", Once).unwrap();
    /// handle.shutdown().unwrap();
    /// handle.wait().await.unwrap();
    /// # }
    /// ```
    pub fn run(self) -> SupervisorHandle {
        let (sender, receiver) = mpsc::unbounded_channel();
        let shared = Shared::new(sender, self.config.clone(), self.default_policy);
        let tasks = self
            .tasks
            .into_iter()
            .filter_map(|(name, task, policy)| {
                // Only a builder holding over four billion tasks runs out of ids.
                let Some(entry) = shared.registry.add_initial(Arc::clone(&name)) else {
                    tracing::error!(task = %name, "no id left for this task; it is not supervised");
                    unwind::drop_guarded(task);
                    return None;
                };
                Some(NewTask {
                    name,
                    entry,
                    task,
                    policy,
                })
            })
            .collect();
        let event_loop = EventLoop::new(self.config, Arc::clone(&shared), receiver, tasks);
        // Spawned from a worker, the loop starts in that worker's LIFO slot, as if woken
        // there: see `Shared::nudge_loop`.
        shared.set_loop_waiting(true);
        let task = tokio::spawn(event_loop.run());
        shared.nudge_loop();
        // Nobody else can hold the lock yet: the handle that would is made below.
        if let Ok(mut slot) = shared.loop_task.try_lock() {
            *slot = Some(task);
        }
        SupervisorHandle::new(shared)
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field(
                "tasks",
                &self.tasks.iter().map(|(name, ..)| name).collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .finish()
    }
}
