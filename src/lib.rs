//! Keeps Tokio tasks alive: restarts with exponential back-off, hang detection through real
//! heartbeats, and stops that give a task time to finish.
//!
//! Implement [`SupervisedTask`] for a type, register it under a name with a
//! [`SupervisorBuilder`] (or later, through a [`SupervisorHandle`]), and run the supervisor.
//! From then on it:
//!
//! - restarts a task whose run returns an error or panics, after an exponential back-off with
//!   jitter, until its restart attempts run out and it is [`Dead`](TaskStatus::Dead); a run
//!   that returns `Ok(())` leaves the task [`Completed`](TaskStatus::Completed);
//! - watches tasks that send heartbeats (see [`heartbeat`] and [`TaskContext`]) and stops and
//!   restarts one that falls silent for longer than its timeout;
//! - stops a run properly: its `CancellationToken` is cancelled, it gets a grace period to
//!   return, then it is dropped; a new run of a task never starts while the old one lives.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use async_trait::async_trait;
//! use task_supervisor::{bail, heartbeat, SupervisedTask, SupervisorBuilder, TaskResult, TaskStatus};
//!
//! #[derive(Clone)]
//! struct Flaky {
//!     work_left: u32,
//! }
//!
//! #[async_trait]
//! impl SupervisedTask for Flaky {
//!     async fn run(&mut self) -> TaskResult {
//!         while self.work_left > 0 {
//!             heartbeat();
//!             tokio::time::sleep(Duration::from_millis(100)).await;
//!             self.work_left -= 1;
//!         }
//!         bail!("ran out of work")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let handle = SupervisorBuilder::new()
//!     .with_task("flaky", Flaky { work_left: 3 })
//!     .with_max_restart_attempts(2)
//!     .with_base_restart_delay(Duration::from_millis(50))
//!     .build()
//!     .run();
//!
//! // Three runs of 300 ms and two back-offs (50 and 100 ms) later, the task has used up its
//! // restarts: 1 050 ms in all.
//! tokio::time::sleep(Duration::from_millis(1_100)).await;
//! assert_eq!(handle.get_task_status("flaky").await?, Some(TaskStatus::Dead));
//! assert_eq!(handle.last_failure("flaky")?.as_deref(), Some("ran out of work"));
//!
//! // The supervisor lives until it is told to stop.
//! handle.shutdown()?;
//! handle.wait().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What happens when
//!
//! | a run | the task becomes | then |
//! | --- | --- | --- |
//! | returns `Ok(())` | `Completed` | nothing, until [`SupervisorHandle::restart`] |
//! | returns `Err`, panics, or misses its heartbeat timeout | `Failed` | a new run after the back-off |
//! | does so with no restart attempt left, or over its restart limit | `Dead` | nothing, until [`SupervisorHandle::restart`] |
//! | is killed with [`SupervisorHandle::kill_task`] | `Dead` | nothing, until [`SupervisorHandle::restart`] |
//!
//! The statuses and the edges between them are in [`status`].
//!
//! # Compared with doing it by hand
//!
//! A `JoinSet` or a `TaskTracker` runs tasks and tells you when they end; a loop around
//! `tokio::spawn` restarts one. This crate adds what such code usually gets wrong: back-off
//! with a limit, panics kept apart from errors with their message, hang detection, a grace
//! period before a run is dropped, and the guarantee that a restart never overlaps the run it
//! replaces.
//!
//! Do not use it for work that should run once and report a value (use `tokio::spawn` and
//! its `JoinHandle`), or for tasks that block their thread: a blocked thread cannot be
//! interrupted, by this crate or any other.
//!
//! # Heartbeats
//!
//! A heartbeat is a statement, from inside the run, that it is making progress: call
//! [`heartbeat()`] or [`TaskContext::heartbeat`]. It costs one clock read and one compare-and-swap.
//! A run opts into hang detection by beating once, or for every run from its very start by
//! declaring [`SupervisedTask::sends_heartbeats`]. A task that never beats is never stopped
//! for being silent, whatever timeout the supervisor is built with.
//!
//! # Supervision as in Erlang/OTP
//!
//! Every rule of an OTP supervisor has its counterpart here, beside back-off and heartbeats:
//!
//! - per task, a [`TaskSpec`]: its [`RestartPolicy`] (`Permanent`, `Transient`, `Temporary`),
//!   its own back-off, attempts, restart limit, timeout and grace period, and whether it is
//!   significant;
//! - per supervisor, a [`Strategy`] (one-for-one, one-for-all, rest-for-one), a restart
//!   intensity ([`SupervisorBuilder::with_restart_intensity`]), an [`AutoShutdown`] setting, a
//!   [`ShutdownOrder`] and a shutdown bound;
//! - trees: a [`ChildSupervisor`] is a task whose runs are supervisors; their failures
//!   escalate to the parent, the parent's stop stops them first, and
//!   [`SupervisorHandle::tree`] shows every level;
//! - closures as tasks, with [`task_fn`].
//!
//! # Watching it run
//!
//! [`SupervisorHandle::events`] streams every lifecycle [`Event`];
//! [`SupervisorHandle::task_info`] and [`task_infos`](SupervisorHandle::task_infos) read a
//! [`TaskInfo`] without a round trip; each run runs in a `tracing` span (`task`, `attempt`) and
//! every event is logged at its level; a poll that blocks its thread is reported while it blocks
//! ([`SupervisorBuilder::with_blocked_poll_threshold`]). With the `metrics` feature:
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `task_supervisor_runs_total` | counter | `task`, `outcome` (`completed`, `failed`, `panicked`, `hung`) |
//! | `task_supervisor_restarts_total` | counter | `task` |
//! | `task_supervisor_hangs_total` | counter | `task` |
//! | `task_supervisor_panics_total` | counter | `task` |
//! | `task_supervisor_blocked_polls_total` | counter | `task` |
//! | `task_supervisor_tasks` | gauge | `status` |
//! | `task_supervisor_run_duration_seconds` | histogram | `task` |
//!
//! # Supervised from above
//!
//! [`SupervisorHandle::health`] says whether the supervisor is live and ready ([`Health`]);
//! [`exit_code`] maps how it ended to a process exit code, so that systemd or Kubernetes
//! restarts a process whose supervisor gave up and leaves alone one that was asked to stop.
//! Behind features, [`integrations`] serves health endpoints and a live page (`axum`), speaks
//! systemd's notification protocol with its watchdog (`systemd`), and shuts down on SIGTERM
//! and SIGINT (`signal`).

#![warn(missing_docs)]

mod builder;
mod chunked;
mod config;
mod context;
mod deadline;
mod error;
mod event_loop;
mod exit;
mod handle;
pub mod integrations;
mod message;
mod observe;
mod policy;
mod registry;
mod run;
mod shared;
mod spec;
pub mod status;
mod supervisor;
mod sync;
mod table;
mod task;
mod tree;
mod unwind;

#[cfg(loom)]
#[doc(hidden)]
pub use sync::loom_model;

pub use builder::SupervisorBuilder;
pub use context::{heartbeat, TaskContext};
pub use error::{BuilderError, SupervisorError, SupervisorHandleError};
pub use exit::exit_code;
pub use handle::SupervisorHandle;
pub use observe::events::{Event, EventKind};
pub use observe::health::Health;
pub use observe::info::{LastFailure, TaskInfo};
pub use policy::auto_shutdown::AutoShutdown;
pub use policy::shutdown::ShutdownOrder;
pub use policy::strategy::Strategy;
pub use spec::{RestartPolicy, TaskSpec};
pub use status::{StatusChange, TaskStatus};
pub use supervisor::Supervisor;
pub use task::{task_fn, SupervisedTask, TaskError, TaskFactory, TaskFn, TaskResult};
pub use tree::{ChildSupervisor, SupervisorTree, TreeTask};

/// The name a task is registered under, as the keys of
/// [`SupervisorHandle::get_all_task_statuses`].
pub type TaskName = String;

pub use async_trait::async_trait;

/// The error crate behind [`TaskError`], re-exported so that a task can use
/// [`anyhow::Context`] and the rest without a dependency of its own.
pub use ::anyhow;
/// Re-exported from [`anyhow`](mod@anyhow): `bail!`, `anyhow!` and `ensure!` build a [`TaskError`] inside
/// `run` without a dependency on `anyhow`.
pub use ::anyhow::{anyhow, bail, ensure};

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
pub use tokio_util::sync::CancellationToken;
