//! Bad input: names no one would choose, settings that cannot work, commands at the wrong time,
//! and tasks that misbehave outside `run` (a `clone` or a `Drop` that panics). Each is answered
//! with a clear, typed error or handled as documented; nothing panics, hangs or is lost.

mod common;
mod reliability_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{every_task_final, every_task_final_within, finish};
use proptest::prelude::*;
use reliability_common::{
    poll_once, quiet_injected_panics, settle, PanickyPayload, RecursivePayload, INJECTED,
};
use task_supervisor::{
    anyhow, BuilderError, StatusChange, SupervisedTask, SupervisorBuilder, SupervisorError,
    SupervisorHandle, SupervisorHandleError, TaskContext, TaskError, TaskResult, TaskStatus,
};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::{sleep, timeout, Instant};

// ----- tasks -----

/// Counts its runs; each run does what `way` says.
#[derive(Clone)]
struct Counted {
    runs: Arc<AtomicU64>,
    way: Way,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    /// Never returns, never beats, never asks for its token.
    Pend,
    /// Returns an error at once.
    Fail,
    /// Fails its first run, then completes.
    FailOnce,
    /// Beats once, then hangs without its token.
    BeatThenHang,
    /// Beats at the interval its context advertises, forever.
    BeatAtTheInterval,
    /// Waits for its token, then returns `Ok(())`.
    Cooperate,
    /// Sends its first beat after `Duration`, then beats every 100 ms.
    FirstBeatAfter(Duration),
}

impl Counted {
    fn new(way: Way) -> (Self, Arc<AtomicU64>) {
        let runs = Arc::new(AtomicU64::new(0));
        (
            Self {
                runs: Arc::clone(&runs),
                way,
            },
            runs,
        )
    }
}

#[async_trait]
impl SupervisedTask for Counted {
    async fn run(&mut self) -> TaskResult {
        let run = self.runs.fetch_add(1, Ordering::SeqCst);
        let context = TaskContext::current().expect("inside a run");
        match self.way {
            Way::Pend => std::future::pending().await,
            Way::Fail => Err(anyhow!("{INJECTED} failure")),
            Way::FailOnce if run == 0 => Err(anyhow!("{INJECTED} failure")),
            Way::FailOnce => Ok(()),
            Way::BeatThenHang => {
                context.heartbeat();
                std::future::pending().await
            }
            Way::BeatAtTheInterval => loop {
                context.heartbeat();
                sleep(context.heartbeat_interval()).await;
            },
            Way::Cooperate => {
                context.cancellation_token().cancelled().await;
                Ok(())
            }
            Way::FirstBeatAfter(delay) => {
                sleep(delay).await;
                loop {
                    context.heartbeat();
                    sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn sends_heartbeats(&self) -> bool {
        matches!(self.way, Way::FirstBeatAfter(_))
    }
}

/// Never runs: offered under a name that is taken.
#[derive(Clone)]
struct MustNotRun(Arc<AtomicBool>);

#[async_trait]
impl SupervisedTask for MustNotRun {
    async fn run(&mut self) -> TaskResult {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Its `clone` (which makes every run's instance) panics.
struct PanicsWhenCloned;

impl Clone for PanicsWhenCloned {
    fn clone(&self) -> Self {
        panic!("{INJECTED} clone");
    }
}

#[async_trait]
impl SupervisedTask for PanicsWhenCloned {
    async fn run(&mut self) -> TaskResult {
        unreachable!("no instance can be made to run")
    }
}

/// Panics whenever it is dropped, as a careless `Drop` would: no check of
/// `std::thread::panicking()`.
struct PanicsWhenDropped {
    drops: Arc<AtomicU64>,
    way: Way,
}

impl PanicsWhenDropped {
    fn new(way: Way) -> (Self, Arc<AtomicU64>) {
        let drops = Arc::new(AtomicU64::new(0));
        (
            Self {
                drops: Arc::clone(&drops),
                way,
            },
            drops,
        )
    }
}

impl Clone for PanicsWhenDropped {
    fn clone(&self) -> Self {
        Self {
            drops: Arc::clone(&self.drops),
            way: self.way,
        }
    }
}

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        panic!("{INJECTED} drop");
    }
}

#[async_trait]
impl SupervisedTask for PanicsWhenDropped {
    async fn run(&mut self) -> TaskResult {
        match self.way {
            Way::Pend => std::future::pending().await,
            _ => Ok(()),
        }
    }
}

// ----- helpers -----

/// The name of the task [`supervisor`] starts with: a run that never ends, beside whatever each
/// test adds.
const ANCHOR: &str = "anchor";

fn supervisor() -> SupervisorHandle {
    SupervisorBuilder::new()
        .with_task(ANCHOR, Counted::new(Way::Pend).0)
        .try_build()
        .expect("default settings")
        .run()
}

async fn status(handle: &SupervisorHandle, name: &str) -> Option<TaskStatus> {
    handle.get_task_status(name).await.expect("running")
}

/// Every change received so far.
fn drain(changes: &mut tokio::sync::broadcast::Receiver<StatusChange>) -> Vec<StatusChange> {
    let mut seen = Vec::new();
    loop {
        match changes.try_recv() {
            Ok(change) => seen.push(change),
            Err(TryRecvError::Empty | TryRecvError::Closed) => return seen,
            Err(TryRecvError::Lagged(missed)) => panic!("missed {missed} changes"),
        }
    }
}

/// Shuts down and waits, bounded in paused time: a hang fails the test instead of stalling it.
async fn shut_down(handle: &SupervisorHandle) -> Result<(), SupervisorError> {
    handle.shutdown().expect("running");
    timeout(Duration::from_secs(3600), handle.wait())
        .await
        .expect("wait() returns once every run has ended")
}

/// Adds a task under `name`, checks every command about it, and that its status changes name
/// it exactly.
async fn round_trip(handle: &SupervisorHandle, name: &str) {
    settle().await;
    let mut changes = handle.status_changes();
    let (task, runs) = Counted::new(Way::Pend);
    handle.add_task(name, task).expect("a fresh name");
    settle().await;
    assert_eq!(status(handle, name).await, Some(TaskStatus::Healthy));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        handle
            .get_all_task_statuses()
            .await
            .expect("running")
            .get(name),
        Some(&TaskStatus::Healthy)
    );

    let taken = Arc::new(AtomicBool::new(false));
    assert_eq!(
        handle.add_task(name, MustNotRun(Arc::clone(&taken))),
        Err(SupervisorHandleError::TaskAlreadyExists {
            name: name.to_owned()
        })
    );
    handle.restart(name).expect("registered");
    settle().await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    handle.kill_task(name).expect("registered");
    settle().await;
    assert_eq!(status(handle, name).await, Some(TaskStatus::Dead));
    assert!(!taken.load(Ordering::SeqCst), "a rejected task never runs");

    let seen = drain(&mut changes);
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|change| &*change.task == name),
        "changes name the task exactly"
    );
}

// ----- names -----

#[tokio::test(start_paused = true)]
async fn an_empty_name_is_an_ordinary_name() {
    let handle = supervisor();
    round_trip(&handle, "").await;
    assert_eq!(
        SupervisorBuilder::new()
            .with_task("", Counted::new(Way::Pend).0)
            .with_task("", Counted::new(Way::Pend).0)
            .try_build()
            .map(drop),
        Err(BuilderError::DuplicateTaskName {
            name: String::new()
        })
    );
    assert_eq!(shut_down(&handle).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_one_mebibyte_name_round_trips() {
    let handle = supervisor();
    let name: String = "ß∂x".repeat((1 << 20) / 6 + 1);
    assert!(name.len() >= 1 << 20);
    round_trip(&handle, &name).await;
    // A name one byte different is another task.
    let neighbour = format!("{}!", &name[..name.len() - 1]);
    assert_eq!(status(&handle, &neighbour).await, None);
    assert_eq!(
        handle.restart(&neighbour),
        Err(SupervisorHandleError::TaskNotFound { name: neighbour })
    );
    assert_eq!(shut_down(&handle).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn names_that_look_alike_are_different_tasks() {
    let handle = supervisor();
    let names = [
        "\u{e9}",   // é, precomposed
        "e\u{301}", // é, decomposed: another name
        "\0",
        "\u{202e}gnp.exe",
        " ",
        "\n",
        "\u{1F980}",
        "\u{FEFF}",
        "A",
        "a",
    ];
    for name in names {
        round_trip(&handle, name).await;
    }
    let statuses = handle.get_all_task_statuses().await.expect("running");
    assert_eq!(statuses.len(), names.len() + 1);
    assert_eq!(shut_down(&handle).await, Ok(()));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any Unicode string is a name: distinct names are distinct tasks, equal names are
    /// duplicates, and the error names the name exactly.
    #[test]
    fn any_unicode_name_is_a_name(
        names in prop::collection::vec(
            prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter),
            1..6,
        )
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let handle = supervisor();
            let mut registered: Vec<String> = Vec::new();
            for name in names.iter().filter(|name| *name != ANCHOR) {
                let added = handle.add_task(name, Counted::new(Way::Pend).0);
                if registered.contains(name) {
                    prop_assert_eq!(
                        added,
                        Err(SupervisorHandleError::TaskAlreadyExists { name: name.clone() })
                    );
                } else {
                    prop_assert_eq!(added, Ok(()));
                    registered.push(name.clone());
                }
            }
            settle().await;
            let statuses = handle.get_all_task_statuses().await.expect("running");
            prop_assert_eq!(statuses.len(), registered.len() + 1);
            for name in &registered {
                prop_assert_eq!(statuses.get(name), Some(&TaskStatus::Healthy));
                prop_assert_eq!(handle.kill_task(name), Ok(()));
            }
            prop_assert_eq!(shut_down(&handle).await, Ok(()));
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_name_is_refused_and_the_registered_task_is_untouched() {
    let handle = supervisor();
    let (original, runs) = Counted::new(Way::Pend);
    handle.add_task("job", original).expect("a fresh name");
    settle().await;
    let taken = Arc::new(AtomicBool::new(false));
    let refused = handle.add_task("job", MustNotRun(Arc::clone(&taken)));
    assert_eq!(
        refused,
        Err(SupervisorHandleError::TaskAlreadyExists { name: "job".into() })
    );
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains("`job`") && message.contains("already exists"),
        "{message}"
    );
    settle().await;
    assert!(!taken.load(Ordering::SeqCst));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the registered task was not restarted"
    );
    assert_eq!(status(&handle, "job").await, Some(TaskStatus::Healthy));
    assert_eq!(shut_down(&handle).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_name_registered_twice_in_the_builder_is_reported_or_the_last_one_kept() {
    let first_ran = Arc::new(AtomicBool::new(false));
    let refused = SupervisorBuilder::new()
        .with_task("job", MustNotRun(Arc::clone(&first_ran)))
        .with_task("job", Counted::new(Way::Pend).0)
        .try_build()
        .map(drop);
    assert_eq!(
        refused,
        Err(BuilderError::DuplicateTaskName { name: "job".into() })
    );
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains("`job`") && message.contains("twice"),
        "{message}"
    );

    let (last, runs) = Counted::new(Way::Pend);
    let handle = SupervisorBuilder::new()
        .with_task("job", MustNotRun(Arc::clone(&first_ran)))
        .with_task("job", last)
        .build()
        .run();
    settle().await;
    assert!(
        !first_ran.load(Ordering::SeqCst),
        "build() keeps the last task of a name"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        handle.get_all_task_statuses().await.expect("running").len(),
        1
    );
    assert_eq!(shut_down(&handle).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_name_is_reported_by_name() {
    let handle = supervisor();
    handle
        .add_task("known", Counted::new(Way::Pend).0)
        .expect("a fresh name");
    for command in [SupervisorHandle::restart, SupervisorHandle::kill_task] {
        let error = command(&handle, "unknown").unwrap_err();
        assert_eq!(
            error,
            SupervisorHandleError::TaskNotFound {
                name: "unknown".into()
            }
        );
        let message = error.to_string();
        assert!(
            message.contains("`unknown`") && message.contains("no task"),
            "{message}"
        );
    }
    assert_eq!(status(&handle, "unknown").await, None);
    assert_eq!(
        status(&handle, "Known").await,
        None,
        "names are case-sensitive"
    );
    settle().await;
    assert_eq!(status(&handle, "known").await, Some(TaskStatus::Healthy));
    assert_eq!(shut_down(&handle).await, Ok(()));
}

// ----- commands at the wrong time -----

#[tokio::test(start_paused = true)]
async fn every_command_after_shutdown_fails_at_once_and_nothing_is_started() {
    let handle = supervisor();
    let (task, runs) = Counted::new(Way::Cooperate);
    handle.add_task("job", task).expect("a fresh name");
    settle().await;
    let mut changes = handle.status_changes();
    handle.shutdown().expect("running");
    let stopped = Err(SupervisorHandleError::SupervisorStopped);
    let late = Arc::new(AtomicBool::new(false));

    assert_eq!(handle.shutdown(), stopped);
    assert_eq!(
        handle.add_task("late", MustNotRun(Arc::clone(&late))),
        stopped
    );
    assert_eq!(handle.restart("job"), stopped);
    assert_eq!(handle.kill_task("job"), stopped);
    assert_eq!(handle.restart("unknown"), stopped);
    assert!(!handle.is_running());
    let message = SupervisorHandleError::SupervisorStopped.to_string();
    assert!(
        message.contains("shutting down or has stopped"),
        "{message}"
    );
    // Statuses can be read until the supervisor has stopped.
    assert!(matches!(
        poll_once(handle.get_task_status("job")),
        Some(Ok(Some(_)))
    ));

    let waiter = handle.clone();
    let concurrent = tokio::spawn(async move { waiter.wait().await });
    assert_eq!(
        timeout(Duration::from_secs(60), handle.wait()).await,
        Ok(Ok(()))
    );
    assert_eq!(concurrent.await.expect("no panic"), Ok(()));
    assert_eq!(
        handle.wait().await,
        Ok(()),
        "waiting again answers the same at once"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!late.load(Ordering::SeqCst));

    assert_eq!(
        poll_once(handle.get_task_status("job")),
        Some(Err(SupervisorHandleError::SupervisorStopped))
    );
    assert_eq!(
        poll_once(handle.get_all_task_statuses()),
        Some(Err(SupervisorHandleError::SupervisorStopped))
    );
    assert_eq!(
        handle.add_task("late", MustNotRun(Arc::clone(&late))),
        stopped
    );
    while let Ok(change) = changes.recv().await {
        assert_eq!(&*change.task, "job");
    }
    let mut after = handle.status_changes();
    assert_eq!(after.recv().await, Err(RecvError::Closed));
}

/// A handle kept after the runtime that ran its supervisor was dropped: every call returns an
/// error at once, `wait` says the loop ended early, and the runs were dropped with the runtime.
#[test]
fn a_handle_used_after_its_runtime_is_gone_gets_errors_not_hangs() {
    quiet_injected_panics();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let (task, runs) = Counted::new(Way::Pend);
    let (bomb, bomb_drops) = PanicsWhenDropped::new(Way::Pend);
    let handle = first.block_on(async {
        let handle = supervisor();
        handle.add_task("job", task).expect("a fresh name");
        handle.add_task("bomb", bomb).expect("a fresh name");
        settle().await;
        assert_eq!(status(&handle, "job").await, Some(TaskStatus::Healthy));
        handle
    });
    let drops_before = bomb_drops.load(Ordering::SeqCst);
    drop(first);
    assert!(
        bomb_drops.load(Ordering::SeqCst) > drops_before,
        "the runs were dropped with the runtime"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // Outside any runtime.
    let stopped = Err(SupervisorHandleError::SupervisorStopped);
    assert!(!handle.is_running());
    assert_eq!(handle.add_task("late", Counted::new(Way::Pend).0), stopped);
    assert_eq!(handle.restart("job"), stopped);
    assert_eq!(handle.kill_task("job"), stopped);
    assert_eq!(handle.shutdown(), stopped);
    assert_eq!(
        poll_once(handle.get_task_status("job")),
        Some(Err(SupervisorHandleError::SupervisorStopped))
    );
    assert_eq!(
        poll_once(handle.get_all_task_statuses()),
        Some(Err(SupervisorHandleError::SupervisorStopped))
    );

    // In another runtime.
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    second.block_on(async {
        assert_eq!(
            timeout(Duration::from_secs(60), handle.wait()).await,
            Ok(Err(SupervisorError::LoopEnded))
        );
        assert_eq!(handle.wait().await, Err(SupervisorError::LoopEnded));
        let message = SupervisorError::LoopEnded.to_string();
        assert!(message.contains("ended early"), "{message}");
        let mut changes = handle.status_changes();
        assert_eq!(changes.recv().await, Err(RecvError::Closed));
    });
    drop(handle); // The last handle, dropped outside any runtime: nothing to do, no panic.
}

// ----- durations -----

#[derive(Debug, Clone, Copy, PartialEq)]
enum Setting {
    TimeoutThreshold,
    HeartbeatInterval,
    HealthCheckInitialDelay,
    HealthCheckInterval,
    BaseRestartDelay,
    TaskBeingStableAfter,
    GracePeriod,
}

impl Setting {
    const ALL: [Setting; 7] = [
        Self::TimeoutThreshold,
        Self::HeartbeatInterval,
        Self::HealthCheckInitialDelay,
        Self::HealthCheckInterval,
        Self::BaseRestartDelay,
        Self::TaskBeingStableAfter,
        Self::GracePeriod,
    ];

    fn apply(self, builder: SupervisorBuilder, value: Duration) -> SupervisorBuilder {
        match self {
            Self::TimeoutThreshold => builder.with_timeout_threshold(value),
            Self::HeartbeatInterval => builder.with_heartbeat_interval(value),
            Self::HealthCheckInitialDelay => builder.with_health_check_initial_delay(value),
            Self::HealthCheckInterval => builder.with_health_check_interval(value),
            Self::BaseRestartDelay => builder.with_base_restart_delay(value),
            Self::TaskBeingStableAfter => builder.with_task_being_stable_after(value),
            Self::GracePeriod => builder.with_grace_period(value),
        }
    }

    /// What `try_build` answers for `value`, with every other setting at its default.
    fn expected(self, value: Duration) -> Result<(), BuilderError> {
        match (self, value.is_zero()) {
            (Self::TimeoutThreshold, true) => Err(BuilderError::ZeroTimeoutThreshold),
            (Self::HeartbeatInterval, true) => Err(BuilderError::ZeroHeartbeatInterval),
            (Self::HeartbeatInterval, false) => {
                Err(BuilderError::HeartbeatIntervalNotBelowTimeout {
                    interval: value,
                    timeout: Duration::from_secs(2),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Zero and `Duration::MAX` for every duration setting: `try_build` accepts the value or names
/// what is wrong, and the supervisor `build()` makes from it runs a mixed workload (tasks that
/// beat, fail, hang, cooperate) and shuts down in bounded time without a panic.
#[tokio::test(start_paused = true)]
async fn zero_and_enormous_durations_are_refused_or_survived() {
    quiet_injected_panics();
    for setting in Setting::ALL {
        for value in [Duration::ZERO, Duration::MAX] {
            let case = format!("{setting:?} = {value:?}");
            let checked = setting.apply(SupervisorBuilder::new(), value).try_build();
            assert_eq!(checked.map(drop), setting.expected(value), "{case}");
            if let Err(error) = setting.expected(value) {
                assert!(!error.to_string().is_empty());
            }

            let mut builder = setting
                .apply(SupervisorBuilder::new(), value)
                .with_max_restart_attempts(2)
                .with_jitter_seed(1);
            let mut all_runs = Vec::new();
            for way in [
                Way::Pend,
                Way::Fail,
                Way::FailOnce,
                Way::BeatThenHang,
                Way::BeatAtTheInterval,
                Way::Cooperate,
                Way::FirstBeatAfter(Duration::from_millis(500)),
            ] {
                let (task, runs) = Counted::new(way);
                builder = builder.with_task(&format!("{way:?}"), task);
                all_runs.push(runs);
            }
            let handle = builder.build().run();
            let mut changes = handle.status_changes();
            sleep(Duration::from_secs(30)).await;
            let statuses = handle.get_all_task_statuses().await;
            assert!(statuses.is_ok(), "{case}: {statuses:?}");
            handle.restart("Fail").expect("running");
            handle.kill_task("Pend").expect("running");
            settle().await;
            assert_eq!(
                status(&handle, "Pend").await,
                Some(TaskStatus::Dead),
                "{case}"
            );
            assert_eq!(shut_down(&handle).await, Ok(()), "{case}");
            while let Ok(change) = changes.recv().await {
                assert!(change.from.can_change_to(change.to), "{case}: {change:?}");
            }
            assert!(
                all_runs.iter().all(|runs| runs.load(Ordering::SeqCst) >= 1),
                "{case}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_zero_restart_delay_restarts_at_the_same_instant() {
    let (task, runs) = Counted::new(Way::Fail);
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(Duration::ZERO)
        .with_max_restart_attempts(3)
        .with_task("job", task)
        .build()
        .run();
    let started = Instant::now();
    settle().await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        4,
        "the first run and three restarts"
    );
    assert_eq!(
        Instant::now(),
        started,
        "no time passed: the timer was not used"
    );
    every_task_final(&handle).await;
    assert_eq!(
        status(&handle, "job").await,
        Some(TaskStatus::Dead),
        "the only task died"
    );
    assert_eq!(shut_down(&handle).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn an_enormous_restart_delay_leaves_the_task_failed_until_restarted() {
    let (task, runs) = Counted::new(Way::FailOnce);
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(Duration::MAX)
        .with_task("job", task)
        .build()
        .run();
    sleep(Duration::from_secs(365 * 24 * 3600)).await;
    assert_eq!(status(&handle, "job").await, Some(TaskStatus::Failed));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    handle.restart("job").expect("running");
    // The restarted run completes.
    every_task_final(&handle).await;
    assert_eq!(status(&handle, "job").await, Some(TaskStatus::Completed));
    assert_eq!(shut_down(&handle).await, Ok(()));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_enormous_timeout_never_declares_a_silent_run_hung() {
    let (task, runs) = Counted::new(Way::BeatThenHang);
    let handle = SupervisorBuilder::new()
        .with_timeout_threshold(Duration::MAX)
        .with_task("job", task)
        .try_build()
        .expect("an enormous timeout is valid")
        .run();
    sleep(Duration::from_secs(365 * 24 * 3600)).await;
    assert_eq!(status(&handle, "job").await, Some(TaskStatus::Healthy));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(shut_down(&handle).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_zero_timeout_is_refused_or_becomes_a_millisecond() {
    assert_eq!(
        SupervisorBuilder::new()
            .with_timeout_threshold(Duration::ZERO)
            .try_build()
            .map(drop),
        Err(BuilderError::ZeroTimeoutThreshold)
    );
    let (task, runs) = Counted::new(Way::BeatThenHang);
    let handle = SupervisorBuilder::new()
        .with_timeout_threshold(Duration::ZERO)
        .with_base_restart_delay(Duration::from_secs(10))
        .with_task("job", task)
        .build()
        .run();
    let mut changes = handle.status_changes();
    sleep(Duration::from_millis(3)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let seen = drain(&mut changes);
    assert!(
        seen.iter().any(|change| change.to == TaskStatus::Failed),
        "a run silent for more than a millisecond is hung: {seen:?}"
    );
    assert_eq!(shut_down(&handle).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_zero_heartbeat_interval_is_refused_or_becomes_a_millisecond() {
    assert_eq!(
        SupervisorBuilder::new()
            .with_heartbeat_interval(Duration::ZERO)
            .try_build()
            .map(drop),
        Err(BuilderError::ZeroHeartbeatInterval)
    );
    let seen = Arc::new(Mutex::new(None));
    #[derive(Clone)]
    struct ReadsInterval(Arc<Mutex<Option<Duration>>>);
    #[async_trait]
    impl SupervisedTask for ReadsInterval {
        async fn run(&mut self) -> TaskResult {
            let interval = TaskContext::current()
                .expect("in a run")
                .heartbeat_interval();
            *self.0.lock().expect("not poisoned") = Some(interval);
            Ok(())
        }
    }
    let handle = SupervisorBuilder::new()
        .with_heartbeat_interval(Duration::ZERO)
        .with_task("job", ReadsInterval(Arc::clone(&seen)))
        .build()
        .run();
    finish(&handle).await;
    assert_eq!(
        *seen.lock().expect("not poisoned"),
        Some(Duration::from_millis(1))
    );
}

/// `build()` promises to make unworkable settings workable, and `try_build()` calls a heartbeat
/// interval that is not below the timeout unworkable. A run that beats at the interval its
/// context advertises must therefore never be declared hung by a supervisor from `build()`.
#[tokio::test(start_paused = true)]
async fn build_makes_a_heartbeat_interval_above_the_timeout_workable() {
    let (task, runs) = Counted::new(Way::BeatAtTheInterval);
    let handle = SupervisorBuilder::new()
        .with_timeout_threshold(Duration::from_secs(2))
        .with_heartbeat_interval(Duration::from_secs(3))
        .with_task("job", task)
        .build()
        .run();
    let mut changes = handle.status_changes();
    sleep(Duration::from_secs(60)).await;
    let failures: Vec<_> = drain(&mut changes)
        .into_iter()
        .filter(|change| change.to == TaskStatus::Failed)
        .collect();
    assert_eq!(
        failures,
        [],
        "a run beating at the advertised interval was declared hung"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(shut_down(&handle).await, Ok(()));
}

/// An enormous start-up grace (`health_check_initial_delay`) must not be read as none: a run
/// that declared heartbeats and sends its first one after 10 s is not hung.
#[tokio::test(start_paused = true)]
async fn an_enormous_initial_delay_is_not_treated_as_none() {
    let (task, runs) = Counted::new(Way::FirstBeatAfter(Duration::from_secs(10)));
    let handle = SupervisorBuilder::new()
        .with_health_check_initial_delay(Duration::MAX)
        .with_task("job", task)
        .build()
        .run();
    sleep(Duration::from_secs(11)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the run was stopped as hung"
    );
    assert_eq!(status(&handle, "job").await, Some(TaskStatus::Healthy));
    assert_eq!(shut_down(&handle).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_zero_initial_delay_leaves_one_timeout_for_the_first_beat() {
    let (late, late_runs) = Counted::new(Way::FirstBeatAfter(Duration::from_secs(3)));
    let (early, early_runs) = Counted::new(Way::FirstBeatAfter(Duration::from_secs(1)));
    let handle = SupervisorBuilder::new()
        .with_health_check_initial_delay(Duration::ZERO)
        .with_base_restart_delay(Duration::from_secs(60))
        .with_task("late", late)
        .with_task("early", early)
        .build()
        .run();
    sleep(Duration::from_millis(2_500)).await;
    assert_eq!(status(&handle, "late").await, Some(TaskStatus::Failed));
    assert_eq!(status(&handle, "early").await, Some(TaskStatus::Healthy));
    assert_eq!(
        (
            late_runs.load(Ordering::SeqCst),
            early_runs.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    assert_eq!(shut_down(&handle).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_zero_health_check_interval_catches_a_hang_within_a_millisecond() {
    let (task, _runs) = Counted::new(Way::BeatThenHang);
    let handle = SupervisorBuilder::new()
        .with_health_check_interval(Duration::ZERO)
        .with_base_restart_delay(Duration::from_secs(60))
        .with_task("job", task)
        .try_build()
        .expect("valid")
        .run();
    sleep(Duration::from_millis(1_999)).await;
    assert_eq!(status(&handle, "job").await, Some(TaskStatus::Healthy));
    sleep(Duration::from_millis(2)).await;
    assert_eq!(status(&handle, "job").await, Some(TaskStatus::Failed));
    assert_eq!(shut_down(&handle).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn an_enormous_health_check_interval_postpones_hang_detection_without_panicking() {
    let (task, runs) = Counted::new(Way::BeatThenHang);
    let handle = SupervisorBuilder::new()
        .with_health_check_interval(Duration::MAX)
        .with_task("job", task)
        .try_build()
        .expect("valid")
        .run();
    sleep(Duration::from_secs(24 * 3600)).await;
    // Deadlines are rounded up to a multiple of the interval: beyond the clock, never.
    assert_eq!(status(&handle, "job").await, Some(TaskStatus::Healthy));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(shut_down(&handle).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_zero_stability_time_forgives_every_failure_after_a_healthy_run() {
    #[derive(Clone)]
    struct WorksThenFails(Arc<AtomicU64>);
    #[async_trait]
    impl SupervisedTask for WorksThenFails {
        async fn run(&mut self) -> TaskResult {
            self.0.fetch_add(1, Ordering::SeqCst);
            sleep(Duration::from_millis(10)).await;
            Err(anyhow!("{INJECTED} failure"))
        }
    }
    let runs = Arc::new(AtomicU64::new(0));
    let handle = SupervisorBuilder::new()
        .with_task_being_stable_after(Duration::ZERO)
        .with_max_restart_attempts(1)
        .with_base_restart_delay(Duration::from_millis(1))
        .with_task("job", WorksThenFails(Arc::clone(&runs)))
        .build()
        .run();
    sleep(Duration::from_secs(1)).await;
    assert!(
        runs.load(Ordering::SeqCst) > 20,
        "never used up its one restart"
    );
    assert_ne!(status(&handle, "job").await, Some(TaskStatus::Dead));
    assert_eq!(shut_down(&handle).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn an_enormous_stability_time_never_forgives() {
    #[derive(Clone)]
    struct WorksLongThenFails(Arc<AtomicU64>);
    #[async_trait]
    impl SupervisedTask for WorksLongThenFails {
        async fn run(&mut self) -> TaskResult {
            self.0.fetch_add(1, Ordering::SeqCst);
            sleep(Duration::from_secs(365 * 24 * 3600)).await;
            Err(anyhow!("{INJECTED} failure"))
        }
    }
    let runs = Arc::new(AtomicU64::new(0));
    let handle = SupervisorBuilder::new()
        .with_task_being_stable_after(Duration::MAX)
        .with_max_restart_attempts(1)
        .with_base_restart_delay(Duration::from_millis(1))
        .with_task("job", WorksLongThenFails(Arc::clone(&runs)))
        .build()
        .run();
    every_task_final_within(&handle, Duration::from_secs(3 * 365 * 24 * 3600)).await;
    assert_eq!(status(&handle, "job").await, Some(TaskStatus::Dead));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "one run and its one restart, then dead"
    );
    assert_eq!(shut_down(&handle).await, Ok(()));
}

/// Finishes its clean-up (10 ms) when cancelled, and says whether it got to.
#[derive(Clone)]
struct CleansUp(Arc<AtomicBool>);

#[async_trait]
impl SupervisedTask for CleansUp {
    async fn run(&mut self) -> TaskResult {
        let stop = TaskContext::current()
            .expect("in a run")
            .cancellation_token();
        stop.cancelled().await;
        sleep(Duration::from_millis(10)).await;
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_zero_grace_period_drops_a_cooperative_run_at_once() {
    let cleaned = Arc::new(AtomicBool::new(false));
    let handle = SupervisorBuilder::new()
        .with_grace_period(Duration::ZERO)
        .with_task("job", CleansUp(Arc::clone(&cleaned)))
        .try_build()
        .expect("valid")
        .run();
    settle().await;
    let stopped_at = Instant::now();
    assert_eq!(shut_down(&handle).await, Ok(()));
    assert_eq!(Instant::now(), stopped_at);
    assert!(!cleaned.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn an_enormous_grace_period_lets_a_cooperative_run_finish() {
    let cleaned = Arc::new(AtomicBool::new(false));
    let handle = SupervisorBuilder::new()
        .with_grace_period(Duration::MAX)
        .with_task("job", CleansUp(Arc::clone(&cleaned)))
        .try_build()
        .expect("valid")
        .run();
    settle().await;
    assert_eq!(shut_down(&handle).await, Ok(()));
    assert!(cleaned.load(Ordering::SeqCst));
}

// ----- thresholds -----

#[tokio::test(start_paused = true)]
async fn a_dead_tasks_threshold_outside_zero_to_one_is_refused_or_clamped() {
    for value in [
        -0.1,
        -3.0,
        1.000_001,
        7.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ] {
        let refused = SupervisorBuilder::new()
            .with_dead_tasks_threshold(Some(value))
            .try_build()
            .map(drop);
        match refused {
            Err(BuilderError::InvalidDeadTasksThreshold { value: said }) => {
                assert!(said.to_bits() == value.to_bits(), "{said} for {value}");
            }
            other => panic!("{value}: {other:?}"),
        }
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("between 0 and 1"), "{message}");
    }
    for value in [0.0, 0.5, 1.0] {
        assert!(SupervisorBuilder::new()
            .with_dead_tasks_threshold(Some(value))
            .try_build()
            .is_ok());
    }

    // build(): above 1 is clamped to 1, below 0 to 0, NaN turns the check off.
    let stops_when = |threshold: f64| async move {
        let (dies, _) = Counted::new(Way::Fail);
        let handle = SupervisorBuilder::new()
            .with_dead_tasks_threshold(Some(threshold))
            .with_max_restart_attempts(0)
            .with_task("dies", dies)
            .with_task("lives", Counted::new(Way::Pend).0)
            .build()
            .run();
        settle().await;
        let running = handle.is_running();
        if running {
            handle.shutdown().expect("running");
        }
        (running, handle.wait().await)
    };
    assert_eq!(
        stops_when(7.0).await,
        (true, Ok(())),
        "clamped to 1: one of two is not all"
    );
    assert_eq!(
        stops_when(-3.0).await,
        (
            false,
            Err(SupervisorError::TooManyDeadTasks {
                current_percentage: 0.5,
                threshold: 0.0
            })
        ),
        "clamped to 0: the first death stops it"
    );
    assert_eq!(
        stops_when(f64::NAN).await,
        (true, Ok(())),
        "NaN turns the check off"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_jitter_outside_zero_to_one_is_refused_or_dropped() {
    for value in [-0.5, 1.5, f64::NAN, f64::INFINITY] {
        match SupervisorBuilder::new()
            .with_restart_jitter(value)
            .try_build()
            .map(drop)
        {
            Err(BuilderError::InvalidRestartJitter { value: said }) => {
                assert!(said.to_bits() == value.to_bits());
            }
            other => panic!("{value}: {other:?}"),
        }
    }
    // build(): no jitter, so the first restart comes exactly after the base delay.
    let (task, runs) = Counted::new(Way::Fail);
    let handle = SupervisorBuilder::new()
        .with_restart_jitter(f64::NAN)
        .with_base_restart_delay(Duration::from_millis(100))
        .with_task("job", task)
        .build()
        .run();
    sleep(Duration::from_millis(99)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    sleep(Duration::from_millis(2)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(shut_down(&handle).await, Ok(()));
}

// ----- back-off overflow -----

#[tokio::test(start_paused = true)]
async fn an_exponent_that_would_overflow_saturates_without_panicking() {
    let (task, runs) = Counted::new(Way::Fail);
    let handle = SupervisorBuilder::new()
        .with_max_backoff_exponent(u32::MAX)
        .with_base_restart_delay(Duration::from_secs(1))
        .with_restart_jitter(0.0)
        .with_unlimited_restarts()
        .with_task("job", task)
        .build()
        .run();
    // Restarts after 1, 2, 4, 8 s: at 15 s plus a little, five runs.
    sleep(Duration::from_millis(15_001)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 5);
    sleep(Duration::from_secs(365 * 24 * 3600)).await;
    assert!(runs.load(Ordering::SeqCst) < 40);
    assert_eq!(status(&handle, "job").await, Some(TaskStatus::Failed));
    assert_eq!(shut_down(&handle).await, Ok(()));
}

/// The documented delay is `base * 2^min(attempt - 1, max_exponent)`, saturating at
/// `Duration::MAX`. With a 1 ns base, the 33rd restart should wait 2^32 ns (4.3 s); the
/// arithmetic saturates as soon as 2^exponent leaves a `u32`, so that restart never comes.
#[tokio::test(start_paused = true)]
async fn the_back_off_saturates_only_when_the_delay_itself_overflows() {
    let (task, runs) = Counted::new(Way::Fail);
    let handle = SupervisorBuilder::new()
        .with_max_backoff_exponent(40)
        .with_base_restart_delay(Duration::from_nanos(1))
        .with_restart_jitter(0.0)
        .with_unlimited_restarts()
        .with_task("job", task)
        .build()
        .run();
    // Restarts 1..=35 wait 2^0..2^34 ns (rounded up to whole milliseconds): about 34 s.
    sleep(Duration::from_secs(60)).await;
    assert!(
        runs.load(Ordering::SeqCst) >= 36,
        "{} runs: the restarts stopped",
        runs.load(Ordering::SeqCst)
    );
    assert_eq!(shut_down(&handle).await, Ok(()));
}

// ----- tasks that panic outside `run` -----

#[tokio::test(start_paused = true)]
async fn a_task_whose_clone_panics_fails_each_start_and_dies() {
    quiet_injected_panics();
    let (bystander, bystander_runs) = Counted::new(Way::Pend);
    let handle = SupervisorBuilder::new()
        .with_max_restart_attempts(2)
        .with_base_restart_delay(Duration::from_millis(10))
        .with_task("bystander", bystander)
        .build()
        .run();
    let mut changes = handle.status_changes();
    handle
        .add_task("clone-panics", PanicsWhenCloned)
        .expect("adding does not clone");
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        status(&handle, "clone-panics").await,
        Some(TaskStatus::Dead)
    );
    let failures: Vec<_> = drain(&mut changes)
        .into_iter()
        .filter(|change| &*change.task == "clone-panics" && change.reason.is_some())
        .collect();
    assert_eq!(failures.len(), 3, "two restarts, then dead: {failures:?}");
    for failure in &failures {
        let reason = failure.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("clone"),
            "the panic's message is kept: {reason}"
        );
    }
    handle.restart("clone-panics").expect("running");
    settle().await;
    assert_eq!(
        status(&handle, "bystander").await,
        Some(TaskStatus::Healthy)
    );
    assert_eq!(
        bystander_runs.load(Ordering::SeqCst),
        1,
        "the bystander was untouched"
    );
    assert_eq!(shut_down(&handle).await, Ok(()));
}

// One task whose `Drop` panics per supervisor here; several in one supervisor are covered by
// `two_tasks_that_panic_when_dropped_do_not_abort_the_process`.

#[tokio::test(start_paused = true)]
async fn a_run_whose_instance_panics_when_dropped_counts_as_failed() {
    quiet_injected_panics();
    let (completes, drops) = PanicsWhenDropped::new(Way::FailOnce);
    let handle = SupervisorBuilder::new()
        .with_max_restart_attempts(1)
        .with_base_restart_delay(Duration::from_millis(10))
        .build()
        .run();
    let mut changes = handle.status_changes();
    handle
        .add_task("completes", completes)
        .expect("a fresh name");
    // A run that returned Ok(()) but whose instance panicked when dropped failed: restarted
    // once, then dead.
    every_task_final(&handle).await;
    assert_eq!(status(&handle, "completes").await, Some(TaskStatus::Dead));
    assert_eq!(shut_down(&handle).await, Ok(()));
    assert_eq!(
        drops.load(Ordering::SeqCst),
        3,
        "two runs' instances and the registered one"
    );
    let seen = drain(&mut changes);
    let reasons: Vec<_> = seen
        .iter()
        .filter_map(|change| change.reason.clone())
        .collect();
    assert_eq!(reasons.len(), 2, "{seen:?}");
    assert!(
        reasons.iter().all(|reason| reason.contains("drop")),
        "{reasons:?}"
    );
    assert_eq!(seen.last().map(|change| change.to), Some(TaskStatus::Dead));
}

#[tokio::test(start_paused = true)]
async fn a_killed_run_that_panics_when_dropped_is_contained() {
    quiet_injected_panics();
    let (pends, drops) = PanicsWhenDropped::new(Way::Pend);
    let (bystander, bystander_runs) = Counted::new(Way::Pend);
    let handle = SupervisorBuilder::new()
        .with_task("pends", pends)
        .with_task("bystander", bystander)
        .build()
        .run();
    settle().await;
    // Not cooperative, so dropped at once: the panic of its drop stays inside.
    handle.kill_task("pends").expect("running");
    settle().await;
    assert_eq!(status(&handle, "pends").await, Some(TaskStatus::Dead));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    handle.restart("pends").expect("running");
    settle().await;
    assert_eq!(status(&handle, "pends").await, Some(TaskStatus::Healthy));
    assert_eq!(
        status(&handle, "bystander").await,
        Some(TaskStatus::Healthy)
    );
    assert_eq!(bystander_runs.load(Ordering::SeqCst), 1);
    assert_eq!(shut_down(&handle).await, Ok(()));
    assert_eq!(
        drops.load(Ordering::SeqCst),
        3,
        "the second run and the registered instance"
    );
}

/// An error or a panic payload that misbehaves in turn: its `Display` or its `Drop` panics.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Treacherous {
    /// Returns an error whose `Display` panics.
    ErrorDisplay,
    /// Returns an error whose `Drop` panics.
    ErrorDrop,
    /// Panics with a payload whose `Drop` panics.
    PayloadDrop,
}

#[derive(Debug)]
struct TreacherousError {
    display_panics: bool,
}

impl std::fmt::Display for TreacherousError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.display_panics {
            panic!("{INJECTED} display");
        }
        f.write_str("an error that panics when dropped")
    }
}

impl std::error::Error for TreacherousError {}

impl Drop for TreacherousError {
    fn drop(&mut self) {
        if !self.display_panics && !std::thread::panicking() {
            panic!("{INJECTED} error drop");
        }
    }
}

#[derive(Clone)]
struct FailsTreacherously(Treacherous, Arc<AtomicU64>);

#[async_trait]
impl SupervisedTask for FailsTreacherously {
    async fn run(&mut self) -> TaskResult {
        self.1.fetch_add(1, Ordering::SeqCst);
        match self.0 {
            Treacherous::ErrorDisplay => Err(TaskError::from(TreacherousError {
                display_panics: true,
            })),
            Treacherous::ErrorDrop => Err(TaskError::from(TreacherousError {
                display_panics: false,
            })),
            Treacherous::PayloadDrop => std::panic::panic_any(PanickyPayload),
        }
    }
}

/// A run that fails with an error whose `Display` or `Drop` panics, or panics with a payload
/// whose `Drop` panics, is a failure of that task like any other: counted, restarted after its
/// back-off, dead when its attempts run out, and a `restart` brings it back. The loop, its
/// status stream (subscribed, so reasons are formatted) and the other tasks are unaffected.
#[tokio::test(start_paused = true)]
async fn errors_and_panic_payloads_that_panic_in_turn_are_ordinary_failures() {
    quiet_injected_panics();
    for way in [
        Treacherous::ErrorDisplay,
        Treacherous::ErrorDrop,
        Treacherous::PayloadDrop,
    ] {
        let runs = Arc::new(AtomicU64::new(0));
        let handle = SupervisorBuilder::new()
            .with_max_restart_attempts(2)
            .with_base_restart_delay(Duration::from_millis(10))
            .with_task(ANCHOR, Counted::new(Way::Pend).0)
            .build()
            .run();
        let mut changes = handle.status_changes();
        handle
            .add_task("treacherous", FailsTreacherously(way, Arc::clone(&runs)))
            .expect("a fresh name");
        sleep(Duration::from_secs(1)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "{way:?}: one run and two restarts"
        );
        assert_eq!(
            status(&handle, "treacherous").await,
            Some(TaskStatus::Dead),
            "{way:?}"
        );
        let failures = drain(&mut changes)
            .into_iter()
            .filter(|change| &*change.task == "treacherous" && change.reason.is_some())
            .count();
        assert_eq!(failures, 3, "{way:?}");
        handle.restart("treacherous").expect("running");
        settle().await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "{way:?}: the restart took effect"
        );
        assert_eq!(status(&handle, ANCHOR).await, Some(TaskStatus::Healthy));
        assert_eq!(shut_down(&handle).await, Ok(()), "{way:?}");
    }
}

/// Offering a duplicate whose `Drop` panics: the supervisor drops the refused task; its panic
/// should not unwind into the caller of `add_task`.
#[tokio::test(start_paused = true)]
async fn a_refused_task_that_panics_when_dropped_does_not_panic_the_caller() {
    quiet_injected_panics();
    let handle = supervisor();
    handle
        .add_task("taken", Counted::new(Way::Pend).0)
        .expect("a fresh name");
    let (bomb, _drops) = PanicsWhenDropped::new(Way::Pend);
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handle.add_task("taken", bomb)
    }));
    assert!(
        matches!(
            refused,
            Ok(Err(SupervisorHandleError::TaskAlreadyExists { .. }))
        ),
        "add_task panicked instead of returning TaskAlreadyExists"
    );
    assert_eq!(shut_down(&handle).await, Ok(()));
}

/// Run in a child process by the test below: when the supervisor ends it drops the
/// registered instances of its tasks; two of them panic when dropped.
#[test]
fn child_process_drops_two_templates_that_panic() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    quiet_injected_panics();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let handle = SupervisorBuilder::new()
            .with_task("first", PanicsWhenDropped::new(Way::Pend).0)
            .with_task("second", PanicsWhenDropped::new(Way::Pend).0)
            .build()
            .run();
        settle().await;
        handle.shutdown().expect("running");
        assert_eq!(handle.wait().await, Ok(()));
    });
    println!("{CHILD_DONE}");
}

const CHILD: &str = "TASK_SUPERVISOR_BAD_INPUT_CHILD";
const CHILD_DONE: &str = "child finished without aborting";

/// Two tasks whose `Drop` panics, at the end of a supervisor: the loop drops all registered
/// instances in one `catch_unwind`, so the second panic happens while the first unwinds, and
/// Rust aborts the process. Checked in a child process, since an abort cannot be caught.
#[test]
fn two_tasks_that_panic_when_dropped_do_not_abort_the_process() {
    let output = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "child_process_drops_two_templates_that_panic",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(CHILD_DONE),
        "the child ended with {:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Holds a value that panics with a [`RecursivePayload`] when the run is dropped mid-flight.
struct DropsWithAPanickyPayload;

impl Drop for DropsWithAPanickyPayload {
    fn drop(&mut self) {
        std::panic::panic_any(RecursivePayload);
    }
}

#[derive(Clone)]
struct PendsOverADropBomb;

#[async_trait]
impl SupervisedTask for PendsOverADropBomb {
    async fn run(&mut self) -> TaskResult {
        let _bomb = DropsWithAPanickyPayload;
        std::future::pending().await
    }
}

// Regression: since runs report their exit over the loop's channel, Tokio itself dropped an
// aborted run, and the payload of a panic in its `Drop`, unguarded: a payload whose `Drop`
// panics again unwound out of the runtime's worker.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn killing_a_run_whose_drop_panics_with_a_panicking_payload_is_survived() {
    quiet_injected_panics();
    let handle = supervisor();
    handle.add_task("bomb", PendsOverADropBomb).unwrap();
    settle().await;

    handle.kill_task("bomb").unwrap();
    settle().await;

    assert_eq!(status(&handle, "bomb").await, Some(TaskStatus::Dead));
    handle.restart("bomb").unwrap();
    settle().await;
    assert_eq!(status(&handle, "bomb").await, Some(TaskStatus::Healthy));
    assert_eq!(shut_down(&handle).await, Ok(()));
}
