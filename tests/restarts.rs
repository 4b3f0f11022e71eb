//! Restarts: what each way a run can end leads to, and the back-off between runs.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{advance, finish, settle, Changes, Scripted, Step};
use task_supervisor::{
    anyhow, SupervisedTask, SupervisorBuilder, SupervisorError, TaskResult, TaskStatus,
};
use TaskStatus::*;

const SECOND: Duration = Duration::from_secs(1);

fn builder() -> SupervisorBuilder {
    SupervisorBuilder::new()
        .with_restart_jitter(0.0)
        .with_base_restart_delay(SECOND)
}

/// A supervisor that restarts failed tasks at once and for ever.
fn crash_loop_supervisor() -> task_supervisor::SupervisorHandle {
    SupervisorBuilder::new()
        .with_base_restart_delay(Duration::ZERO)
        .with_unlimited_restarts()
        .build()
        .run()
}

#[tokio::test(start_paused = true)]
async fn completed_task_is_not_restarted() {
    let task = Scripted::always(Step::Complete);
    let handle = builder().with_task("once", task.clone()).build().run();
    let mut changes = Changes::watch(&handle);

    finish(&handle).await;

    assert_eq!(changes.sequence("once"), [Starting, Completed]);
    assert_eq!(task.liveness.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn failing_task_is_restarted_after_the_base_delay_then_doubling_delays() {
    let task = Scripted::new([Step::Fail, Step::Fail, Step::Fail], Step::Pend);
    let handle = builder()
        .with_max_backoff_exponent(5)
        .with_task("flaky", task.clone())
        .build()
        .run();

    settle().await;
    advance(Duration::from_secs(20)).await;

    let starts = task.liveness.started_at();
    assert_eq!(starts.len(), 4, "three failures, three restarts");
    let gaps: Vec<Duration> = starts.windows(2).map(|pair| pair[1] - pair[0]).collect();
    assert_eq!(
        gaps,
        [SECOND, 2 * SECOND, 4 * SECOND],
        "first restart waits the base delay"
    );
    assert_eq!(
        handle.get_task_status("flaky").await.unwrap(),
        Some(Healthy)
    );
}

#[tokio::test(start_paused = true)]
async fn back_off_stops_doubling_at_the_exponent() {
    let task = Scripted::new([Step::Fail; 5], Step::Pend);
    let handle = builder()
        .with_max_backoff_exponent(2)
        .with_task("capped", task.clone())
        .build()
        .run();

    advance(Duration::from_secs(30)).await;

    let starts = task.liveness.started_at();
    let gaps: Vec<u64> = starts
        .windows(2)
        .map(|pair| (pair[1] - pair[0]).as_secs())
        .collect();
    assert_eq!(gaps, [1, 2, 4, 4, 4]);
    drop(handle);
}

#[tokio::test(start_paused = true)]
async fn status_sequence_of_a_failing_then_recovering_task() {
    let task = Scripted::new([Step::Fail], Step::Pend);
    let handle = builder().with_task("flaky", task.clone()).build().run();
    let mut changes = Changes::watch(&handle);

    advance(Duration::from_millis(1500)).await;

    // The failing run ends within its first poll, before it could prove alive.
    assert_eq!(
        changes.sequence("flaky"),
        [Starting, Failed, Starting, Healthy]
    );
    changes.assert_valid_edges();
}

#[tokio::test(start_paused = true)]
async fn panic_is_restarted_and_its_message_kept() {
    let task = Scripted::new([Step::Panic], Step::Pend);
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(Duration::ZERO)
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    handle.add_task("panicky", task.clone()).unwrap();
    let (_, failed) = changes.until("panicky", Failed).await;
    changes.until("panicky", Healthy).await;

    let reason = failed.reason.expect("a failure carries its reason");
    assert!(reason.contains("scripted panic"), "{reason}");
    assert_eq!(task.liveness.runs(), 2);
    assert_eq!(
        changes.sequence("panicky"),
        [Starting, Failed, Starting, Healthy]
    );
}

#[tokio::test(start_paused = true)]
async fn error_message_is_the_failure_reason() {
    let handle = builder().build().run();
    let mut changes = Changes::watch(&handle);

    handle
        .add_task("fails", Scripted::always(Step::Fail))
        .unwrap();
    let (_, failed) = changes.until("fails", Failed).await;

    assert_eq!(failed.reason.as_deref(), Some("scripted failure"));
}

#[tokio::test(start_paused = true)]
async fn exhausted_attempts_make_the_task_dead() {
    let task = Scripted::always(Step::Fail);
    let handle = builder()
        .with_max_restart_attempts(2)
        .with_task("doomed", task.clone())
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    finish(&handle).await;

    assert_eq!(
        changes.sequence("doomed"),
        [Starting, Failed, Starting, Failed, Starting, Dead],
        "two restarts, then dead"
    );
    assert_eq!(task.liveness.runs(), 3);
}

#[tokio::test(start_paused = true)]
async fn zero_restart_attempts_make_the_first_failure_final() {
    let task = Scripted::always(Step::Panic);
    let handle = builder()
        .with_max_restart_attempts(0)
        .with_task("fragile", task.clone())
        .build()
        .run();

    finish(&handle).await;

    assert_eq!(task.liveness.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn unlimited_restarts_never_give_up() {
    let task = Scripted::always(Step::Fail);
    let handle = builder()
        .with_unlimited_restarts()
        .with_max_backoff_exponent(0)
        .with_task("stubborn", task.clone())
        .build()
        .run();

    advance(Duration::from_secs(100)).await;

    assert!(task.liveness.runs() >= 100, "{} runs", task.liveness.runs());
    assert_eq!(
        handle.get_task_status("stubborn").await.unwrap(),
        Some(Failed)
    );
}

#[tokio::test(start_paused = true)]
async fn zero_base_delay_restarts_without_waiting_for_the_timer() {
    let task = Scripted::new([Step::Fail; 50], Step::Pend);
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(Duration::ZERO)
        .with_max_restart_attempts(100)
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    let start = tokio::time::Instant::now();

    handle.add_task("quick", task.clone()).unwrap();
    changes.until("quick", Healthy).await;

    assert_eq!(task.liveness.runs(), 51);
    // On the paused clock, time moves only when every task waits on the timer: 50 restarts
    // that never touched it took no time at all.
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_task_stable_long_enough_gets_its_attempts_back() {
    // Each run works for 10 s, then fails. Stable after 5 s: the count resets every time,
    // so the task never runs out of its single attempt.
    let task = Scripted::always(Step::FailAfter {
        work: Duration::from_secs(10),
    });
    let handle = builder()
        .with_max_restart_attempts(1)
        .with_task_being_stable_after(Duration::from_secs(5))
        .with_task("steady", task.clone())
        .build()
        .run();

    advance(Duration::from_secs(60)).await;

    assert!(task.liveness.runs() >= 5, "{} runs", task.liveness.runs());
    assert_ne!(handle.get_task_status("steady").await.unwrap(), Some(Dead));
}

#[tokio::test(start_paused = true)]
async fn a_task_never_stable_long_enough_uses_up_its_attempts() {
    let task = Scripted::always(Step::FailAfter {
        work: Duration::from_secs(1),
    });
    let handle = builder()
        .with_max_restart_attempts(2)
        .with_task_being_stable_after(Duration::from_secs(5))
        .with_task("shaky", task.clone())
        .build()
        .run();

    finish(&handle).await;

    assert_eq!(task.liveness.runs(), 3);
}

#[tokio::test(start_paused = true)]
async fn jitter_lengthens_delays_by_at_most_its_fraction() {
    let task = Scripted::new([Step::Fail; 6], Step::Pend);
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(SECOND)
        .with_max_backoff_exponent(0)
        .with_max_restart_attempts(10)
        .with_restart_jitter(0.5)
        .with_jitter_seed(7)
        .with_task("jittery", task.clone())
        .build()
        .run();

    advance(Duration::from_secs(20)).await;

    let starts = task.liveness.started_at();
    assert_eq!(starts.len(), 7);
    let gaps: Vec<Duration> = starts.windows(2).map(|pair| pair[1] - pair[0]).collect();
    for gap in &gaps {
        // Deadlines are kept at millisecond precision, rounded up.
        assert!(
            *gap >= SECOND && *gap <= SECOND * 3 / 2 + Duration::from_millis(1),
            "{gap:?}"
        );
    }
    let distinct: std::collections::HashSet<_> = gaps.iter().collect();
    assert!(distinct.len() > 1, "jitter spreads delays: {gaps:?}");
    drop(handle);
}

#[tokio::test(start_paused = true)]
async fn tasks_that_fail_together_restart_apart() {
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(SECOND)
        .with_restart_jitter(0.2)
        .build()
        .run();
    let tasks: Vec<Scripted> = (0..20)
        .map(|_| Scripted::new([Step::Fail], Step::Pend))
        .collect();
    for (index, task) in tasks.iter().enumerate() {
        handle.add_task(&format!("t{index}"), task.clone()).unwrap();
    }

    advance(Duration::from_secs(2)).await;

    let restarts: std::collections::HashSet<_> = tasks
        .iter()
        .map(|task| task.liveness.started_at()[1])
        .collect();
    assert!(
        restarts.len() > 5,
        "only {} distinct restart instants",
        restarts.len()
    );
}

#[tokio::test(start_paused = true)]
async fn exceeding_the_dead_tasks_threshold_stops_the_supervisor_with_an_error() {
    let healthy = Scripted::always(Step::Pend);
    let handle = builder()
        .with_max_restart_attempts(0)
        .with_dead_tasks_threshold(Some(0.4))
        .with_task("dies", Scripted::always(Step::Fail))
        .with_task("lives", healthy.clone())
        .build()
        .run();

    let result = handle.wait().await;

    // Matched by the released fields, both fractions: one of two is dead, above 0.4.
    let Err(SupervisorError::TooManyDeadTasks {
        current_percentage,
        threshold,
    }) = result
    else {
        panic!("expected TooManyDeadTasks, got {result:?}");
    };
    assert_eq!((current_percentage, threshold), (0.5, 0.4));
    assert_eq!(healthy.liveness.live(), 0, "the healthy task was stopped");
    assert!(handle
        .add_task("late", Scripted::always(Step::Pend))
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn a_share_of_dead_tasks_equal_to_the_threshold_is_tolerated() {
    let handle = builder()
        .with_max_restart_attempts(0)
        .with_dead_tasks_threshold(Some(0.5))
        .with_task("dies", Scripted::always(Step::Fail))
        .with_task("lives", Scripted::always(Step::Pend))
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    changes.until("dies", Dead).await;
    advance(SECOND).await;

    // One of two is exactly the threshold: tolerated, as released.
    assert!(handle.is_running());
    assert_eq!(handle.get_task_status("lives").await, Ok(Some(Healthy)));

    // Two of three is above it.
    handle
        .add_task("dies too", Scripted::always(Step::Fail))
        .unwrap();
    assert_eq!(
        handle.wait().await,
        Err(SupervisorError::TooManyDeadTasks {
            current_percentage: 2.0 / 3.0,
            threshold: 0.5
        })
    );
}

#[tokio::test(start_paused = true)]
async fn killed_tasks_do_not_count_towards_the_dead_tasks_threshold() {
    let handle = builder()
        .with_dead_tasks_threshold(Some(0.5))
        .with_task("a", Scripted::always(Step::Pend))
        .with_task("b", Scripted::always(Step::Pend))
        .build()
        .run();
    settle().await;

    handle.kill_task("a").unwrap();
    advance(SECOND).await;

    assert!(handle.is_running());
    assert_eq!(handle.get_task_status("a").await.unwrap(), Some(Dead));
    assert_eq!(handle.get_task_status("b").await.unwrap(), Some(Healthy));
}

// The same behaviours with zero back-off, which need no clock, on both runtimes.

async fn panic_restart_and_exhaustion_without_back_off() {
    let task = Scripted::new([Step::Panic, Step::Fail, Step::Panic], Step::Fail);
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(Duration::ZERO)
        .with_max_restart_attempts(3)
        .build()
        .run();
    // Subscribe before anything happens: on worker threads the loop does not wait for us.
    let mut changes = Changes::watch(&handle);
    // Keeps the supervisor up until the test is done with it.
    handle
        .add_task("keeper", Scripted::always(Step::Pend))
        .unwrap();
    handle.add_task("zero", task.clone()).unwrap();
    handle
        .add_task("done", Scripted::always(Step::Complete))
        .unwrap();

    changes.until("zero", Dead).await;
    changes.until("done", Completed).await;
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    assert_eq!(task.liveness.runs(), 4);
    assert_eq!(task.liveness.most(), 1);
    let reasons: Vec<String> = changes
        .of("zero")
        .into_iter()
        .filter_map(|(_, change)| change.reason.map(|reason| reason.to_string()))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("scripted panic"), "{reasons:?}");
    assert_eq!(reasons[1], "scripted failure");
    assert_eq!(changes.sequence("zero").last(), Some(&Dead));
    assert_eq!(changes.sequence("done").last(), Some(&Completed));
    changes.assert_valid_edges();
}

on_both_runtimes!(
    zero_back_off_panics_and_exhaustion,
    panic_restart_and_exhaustion_without_back_off()
);

// Regression: with many runs failing at once and no back-off, run exits were always handled
// first, and on a current-thread runtime commands (shutdown among them) were never reached.
#[tokio::test(start_paused = true)]
async fn a_crash_loop_does_not_starve_commands() {
    let handle = crash_loop_supervisor();
    let task = Scripted::always(Step::Fail);
    for index in 0..400 {
        handle
            .add_task(&format!("crash{index}"), task.clone())
            .unwrap();
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }

    handle.shutdown().unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(5), handle.wait()).await;

    assert_eq!(stopped, Ok(Ok(())));
    let runs_at_stop = task.liveness.runs();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        task.liveness.runs(),
        runs_at_stop,
        "nothing starts after the stop"
    );
}

mod hostile_errors {
    use super::*;
    use async_trait::async_trait;
    use std::fmt;
    use task_supervisor::{SupervisedTask, TaskResult};

    #[derive(Debug)]
    struct PanickingDisplay;
    impl fmt::Display for PanickingDisplay {
        fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
            panic!("display panicked")
        }
    }
    impl std::error::Error for PanickingDisplay {}

    #[derive(Debug)]
    struct PanickingDrop;
    impl fmt::Display for PanickingDrop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an error that panics when dropped")
        }
    }
    impl std::error::Error for PanickingDrop {}
    impl Drop for PanickingDrop {
        fn drop(&mut self) {
            panic!("drop panicked")
        }
    }

    struct PanickingPayload;
    impl Drop for PanickingPayload {
        fn drop(&mut self) {
            panic!("payload drop panicked")
        }
    }

    #[derive(Clone)]
    enum Hostile {
        Display,
        Drop,
        Payload,
    }

    #[async_trait]
    impl SupervisedTask for Hostile {
        async fn run(&mut self) -> TaskResult {
            match self {
                Hostile::Display => Err(PanickingDisplay.into()),
                Hostile::Drop => Err(PanickingDrop.into()),
                Hostile::Payload => std::panic::panic_any(PanickingPayload),
            }
        }
    }

    // Regression: an error's `Display` or `Drop`, or a panic payload's `Drop`, ran in the loop
    // (or outside any guard) and a panic there took the supervisor down or lost the task.
    #[tokio::test(start_paused = true)]
    async fn a_task_whose_error_panics_is_restarted_and_the_supervisor_lives() {
        let survivor = Scripted::always(Step::Pend);
        let handle = SupervisorBuilder::new()
            .with_base_restart_delay(Duration::from_millis(10))
            .with_max_restart_attempts(2)
            .with_task("survivor", survivor.clone())
            .build()
            .run();
        let mut changes = Changes::watch(&handle);
        for (name, task) in [
            ("display", Hostile::Display),
            ("drop", Hostile::Drop),
            ("payload", Hostile::Payload),
        ] {
            handle.add_task(name, task).unwrap();
        }

        for name in ["display", "drop", "payload"] {
            let (_, dead) = changes.until(name, Dead).await;
            assert!(dead.reason.is_some(), "{name}: {dead:?}");
        }

        assert!(handle.is_running());
        assert_eq!(survivor.liveness.live(), 1);
        assert_eq!(
            handle.get_task_status("survivor").await.unwrap(),
            Some(Healthy)
        );
        assert_eq!(
            changes.sequence("payload"),
            [Starting, Failed, Starting, Failed, Starting, Dead]
        );
        handle.shutdown().unwrap();
        handle.wait().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn the_last_failure_is_kept_after_the_task_recovers() {
    let task = Scripted::new([Step::Fail, Step::Panic], Step::Pend);
    let handle = builder()
        .with_base_restart_delay(Duration::from_millis(10))
        .with_task("recovers", task)
        .with_task("fine", Scripted::always(Step::Pend))
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    changes.until("recovers", Failed).await;
    assert_eq!(
        handle.last_failure("recovers").unwrap().as_deref(),
        Some("scripted failure")
    );
    changes.until("recovers", Healthy).await;

    assert_eq!(
        handle.last_failure("recovers").unwrap().as_deref(),
        Some("panicked: scripted panic")
    );
    assert_eq!(handle.last_failure("fine").unwrap(), None);
    handle.kill_task("fine").unwrap();
    settle().await;
    assert_eq!(
        handle.last_failure("fine").unwrap(),
        None,
        "a kill is not a failure"
    );
    assert_eq!(
        handle.last_failure("nobody"),
        Err(task_supervisor::SupervisorHandleError::TaskNotFound {
            name: "nobody".into()
        })
    );
}

// ----- restarts in place -----
//
// With zero back-off, a run that fails before proving alive is followed by the next one by the
// same driver, without a spawn, and the loop is told afterwards. These check that the loop's
// view (statuses, attempts, stops) keeps up with such a driver.

/// Counts its runs, how far ahead of the failures the test has seen published each run
/// starts, and the Tokio tasks its runs ran in; every run fails at once.
#[derive(Clone, Default)]
struct RunsAhead {
    runs: Arc<AtomicUsize>,
    published: Arc<AtomicUsize>,
    widest: Arc<AtomicUsize>,
    tokio_tasks: Arc<Mutex<HashSet<tokio::task::Id>>>,
}

#[async_trait::async_trait]
impl SupervisedTask for RunsAhead {
    async fn run(&mut self) -> TaskResult {
        let runs = self.runs.fetch_add(1, SeqCst) + 1;
        let ahead = runs.saturating_sub(self.published.load(SeqCst));
        self.widest.fetch_max(ahead, SeqCst);
        self.tokio_tasks.lock().unwrap().insert(tokio::task::id());
        Err(anyhow!("crash"))
    }
}

/// A crash loop runs ahead of the statuses the loop publishes by a bounded number of runs,
/// and leaves the runtime to its other tasks: on a current-thread runtime, this test itself
/// runs only when the driver yields.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_crash_loop_in_place_stays_within_a_bounded_distance_of_the_loop() {
    let handle = crash_loop_supervisor();
    let mut changes = Changes::watch(&handle);
    let task = RunsAhead::default();
    handle.add_task("crash", task.clone()).unwrap();

    for _ in 0..500 {
        tokio::task::yield_now().await;
        let published = changes
            .drain()
            .iter()
            .filter(|(_, change)| change.to == Failed)
            .count();
        assert!(
            task.runs.load(SeqCst) >= published,
            "a failure published before its run"
        );
        task.published.store(published, SeqCst);
    }
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    let widest = task.widest.load(SeqCst);
    // 128 unhandled reports at most, plus the run that is starting.
    assert!(
        widest <= 129,
        "the driver ran {widest} runs ahead of the loop"
    );
    assert!(task.runs.load(SeqCst) > 10_000);
    assert_eq!(
        task.tokio_tasks.lock().unwrap().len(),
        1,
        "every run in the one driver: restarted in place, never spawned"
    );
    changes.assert_valid_edges();
}

/// Waits, without letting paused time pass, until `condition` holds: a crash loop never
/// leaves the runtime idle, so a paused clock would never move.
async fn spin_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1_000_000 {
        if condition() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

async fn a_kill_stops_a_crash_loop_in_place() {
    let handle = crash_loop_supervisor();
    let mut changes = Changes::watch(&handle);
    handle
        .add_task("keeper", Scripted::always(Step::Pend))
        .unwrap();
    let task = Scripted::always(Step::Fail);
    handle.add_task("crash", task.clone()).unwrap();
    spin_until("the crash loop is going", || task.liveness.runs() > 100).await;

    handle.kill_task("crash").unwrap();
    changes.until("crash", Dead).await;
    settle().await;
    let runs_after_kill = task.liveness.runs();
    settle().await;
    assert_eq!(
        task.liveness.runs(),
        runs_after_kill,
        "a run started after the kill"
    );
    assert_eq!(handle.get_task_status("crash").await, Ok(Some(Dead)));
    // `Dead` is published as the kill is made; on worker threads the run it stops may still
    // be being dropped on the other worker, so its end is waited for, not assumed.
    spin_until("the killed run is dropped", || task.liveness.live() == 0).await;

    // The documented way back.
    handle.restart("crash").unwrap();
    spin_until("it crash-loops again", || {
        task.liveness.runs() > runs_after_kill + 100
    })
    .await;
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
    assert_eq!(task.liveness.live(), 0);
    assert_eq!(task.liveness.most(), 1);
    changes.assert_valid_edges();
}

on_both_runtimes!(
    kill_during_a_crash_loop_in_place,
    a_kill_stops_a_crash_loop_in_place()
);

// Regression: a driver aborted before its first poll never reported its exit (the report
// was made inside it), so the task kept its run for ever and `wait()` never returned.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_run_killed_before_its_first_poll_still_reports_its_exit() {
    let handle = SupervisorBuilder::new().build().run();
    let task = Scripted::always(Step::Pend);
    handle
        .add_task("keeper", Scripted::always(Step::Pend))
        .unwrap();
    // Both reach the loop in one wake-up: its driver is spawned, then aborted unpolled.
    handle.add_task("early", task.clone()).unwrap();
    handle.kill_task("early").unwrap();
    settle().await;
    assert_eq!(task.liveness.runs(), 0, "the run never started");
    assert_eq!(handle.get_task_status("early").await, Ok(Some(Dead)));

    handle.restart("early").unwrap();
    settle().await;
    assert_eq!(
        task.liveness.live(),
        1,
        "the task came back: its template was returned"
    );
    handle.shutdown().unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(60), handle.wait()).await;
    assert_eq!(stopped, Ok(Ok(())));
    assert_eq!(task.liveness.live(), 0);
}

/// Fails at once; each run first checks whether the supervisor has already published its task
/// `Dead`, and counts the runs that start after that.
#[derive(Clone)]
struct ChecksForItsDeath {
    handle: Arc<std::sync::OnceLock<task_supervisor::SupervisorHandle>>,
    runs: Arc<AtomicUsize>,
    after_death: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl SupervisedTask for ChecksForItsDeath {
    async fn run(&mut self) -> TaskResult {
        self.runs.fetch_add(1, SeqCst);
        if let Some(handle) = self.handle.get() {
            if handle.get_task_status("crash").await == Ok(Some(Dead)) {
                self.after_death.fetch_add(1, SeqCst);
            }
        }
        Err(anyhow!("crash"))
    }
}

// A kill during a crash loop in place: once `Dead` is published, no run starts. Exact on a
// current-thread runtime. On worker threads a run can still start while the kill is being
// made (between the driver's last look at the stop flag and the run's first poll): a race of a
// few hundred nanoseconds that no design closes, so that case is not asserted here. (Before the
// driver looked again after its yields, the window spanned them: a review measured runs seeing
// `Dead` in 5 of 5 sessions of 3 000 kills on 4 workers, 1 of 5 before restarts in place, and
// none in 5 with the second look.)
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn no_run_starts_after_a_kill_is_published() {
    let handle = crash_loop_supervisor();
    handle
        .add_task("keeper", Scripted::always(Step::Pend))
        .unwrap();
    let task = ChecksForItsDeath {
        handle: Arc::default(),
        runs: Arc::default(),
        after_death: Arc::default(),
    };
    let _ = task.handle.set(handle.clone());
    for round in 0..20 {
        if round == 0 {
            handle.add_task("crash", task.clone()).unwrap();
        } else {
            handle.restart("crash").unwrap();
        }
        let before = task.runs.load(SeqCst);
        spin_until("the crash loop is going", || {
            task.runs.load(SeqCst) > before + 50
        })
        .await;
        handle.kill_task("crash").unwrap();
        while handle.get_task_status("crash").await != Ok(Some(Dead)) {
            tokio::task::yield_now().await;
        }
        settle().await;
    }
    assert_eq!(
        task.after_death.load(SeqCst),
        0,
        "runs started after the kill was published"
    );
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}
