//! Supervision trees: a supervisor run as a task of another, and a snapshot of the whole tree.
//!
//! A [`ChildSupervisor`] is a task whose every run builds a fresh supervisor and runs it until
//! it stops. The parent treats the child as any task: when the child stops with an error (its
//! restart intensity exceeded, its dead tasks threshold, a significant task's death) the run
//! fails and the parent's policy applies, so the failure escalates; when the parent stops the
//! run, the child shuts down, and the run ends only once every run of the child has ended.
//!
//! # Invariants
//!
//! 10. A child supervisor's tasks have all ended before the child's run is reported ended to
//!     its parent: the run returns only once the child's `wait()` has, and the parent never
//!     drops such a run after its grace period; it tells the child to drop every run of its
//!     own at once instead. So a parent's stop takes at most its grace periods (or its
//!     shutdown bound) plus the time its children take to drop their runs.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::builder::SupervisorBuilder;
use crate::context::TaskContext;
use crate::status::TaskStatus;
use crate::task::{SupervisedTask, TaskError, TaskResult};

/// A supervisor as a task of another: every run builds a fresh child supervisor with `make`
/// and runs it until it stops.
///
/// | the child | its run |
/// | --- | --- |
/// | is stopped by the parent (a restart, a kill, a group restart, the parent's end) | asks the child to shut down, and ends once every run of the child has ended |
/// | stops with an error (see [`SupervisorHandle::wait`](crate::SupervisorHandle::wait)) | fails with that error: the parent restarts it, or lets it die, by its own policy |
/// | stops without one (an auto-shutdown whose tasks completed, or its handle's `shutdown`) | completes |
///
/// The parent gives the run its grace period (per task, with
/// [`TaskSpec::with_grace_period`](crate::TaskSpec::with_grace_period)) for the child to shut
/// down; when it is over, the child drops every run of its own at once, and the run ends right
/// after. Reach the child of the current run with
/// [`SupervisorHandle::child`](crate::SupervisorHandle::child), and see the whole tree with
/// [`SupervisorHandle::tree`](crate::SupervisorHandle::tree).
///
/// # Examples
///
/// ```
/// use async_trait::async_trait;
/// use task_supervisor::{ChildSupervisor, Strategy, SupervisedTask, SupervisorBuilder, TaskResult};
///
/// #[derive(Clone)]
/// struct Worker;
///
/// #[async_trait]
/// impl SupervisedTask for Worker {
///     async fn run(&mut self) -> TaskResult {
///         std::future::pending().await
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let root = SupervisorBuilder::new()
///     .with_task(
///         "workers",
///         ChildSupervisor::new(|| {
///             SupervisorBuilder::new()
///                 .with_strategy(Strategy::OneForAll)
///                 .with_task("worker-1", Worker)
///                 .with_task("worker-2", Worker)
///         }),
///     )
///     .build()
///     .run();
/// tokio::task::yield_now().await;
///
/// let workers = root.child("workers").unwrap().expect("its run is up");
/// assert_eq!(workers.task_statuses().unwrap().len(), 2);
/// println!("{}", root.tree().unwrap());
///
/// root.shutdown().unwrap();
/// root.wait().await.unwrap(); // the workers have stopped first
/// # }
/// ```
#[derive(Clone)]
pub struct ChildSupervisor {
    make: Arc<dyn Fn() -> SupervisorBuilder + Send + Sync>,
}

impl ChildSupervisor {
    /// A task whose every run builds its supervisor with `make` and runs it.
    pub fn new<F>(make: F) -> Self
    where
        F: Fn() -> SupervisorBuilder + Send + Sync + 'static,
    {
        Self {
            make: Arc::new(make),
        }
    }
}

impl fmt::Debug for ChildSupervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSupervisor").finish_non_exhaustive()
    }
}

#[async_trait]
impl SupervisedTask for ChildSupervisor {
    async fn run(&mut self) -> TaskResult {
        let Some(context) = TaskContext::current() else {
            return Err(TaskError::msg(
                "a child supervisor runs only as a task of another supervisor",
            ));
        };
        // Before the token: from now on no stop drops this run (see `adopt_child`).
        context.will_run_a_child();
        let stop = context.cancellation_token();
        let child = (self.make)().build().run();
        let _link = context.adopt_child(child.downgrade());
        let outcome = tokio::select! {
            outcome = child.wait() => outcome,
            () = stop.cancelled() => {
                // Stopped by the parent: the child shuts down, and this run ends when it has.
                let _ = child.shutdown();
                child.wait().await
            }
        };
        outcome.map_err(TaskError::from)
    }
}

/// A snapshot of a supervisor's tasks and their statuses, with the tasks of each child
/// supervisor below the task that runs it; made by
/// [`SupervisorHandle::tree`](crate::SupervisorHandle::tree).
///
/// Its `Display` draws it as an indented list, one task a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorTree {
    /// The supervisor's tasks, in start order.
    pub tasks: Vec<TreeTask>,
}

/// One task in a [`SupervisorTree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeTask {
    /// The task's name.
    pub name: Arc<str>,
    /// Its status when the snapshot was made.
    pub status: TaskStatus,
    /// The tasks of the child supervisor its current run runs, if it runs one.
    pub child: Option<SupervisorTree>,
}

impl SupervisorTree {
    fn write(&self, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
        for task in &self.tasks {
            writeln!(
                f,
                "{:indent$}{} ({})",
                "",
                task.name,
                task.status,
                indent = depth * 2
            )?;
            if let Some(child) = &task.child {
                child.write(f, depth + 1)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for SupervisorTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_drawn_indented_by_depth() {
        let tree = SupervisorTree {
            tasks: vec![
                TreeTask {
                    name: Arc::from("db"),
                    status: TaskStatus::Healthy,
                    child: None,
                },
                TreeTask {
                    name: Arc::from("web"),
                    status: TaskStatus::Healthy,
                    child: Some(SupervisorTree {
                        tasks: vec![TreeTask {
                            name: Arc::from("acceptor"),
                            status: TaskStatus::Failed,
                            child: None,
                        }],
                    }),
                },
            ],
        };
        assert_eq!(
            tree.to_string(),
            "db (healthy)\nweb (healthy)\n  acceptor (failed)\n"
        );
    }
}
