//! Restarts within a window: a task's own restart limit, and the supervisor's restart intensity.

mod common;

use std::time::Duration;

use common::{advance, settle, Changes, Scripted, Step};
use task_supervisor::{
    BuilderError, RestartPolicy, SupervisorBuilder, SupervisorError, TaskSpec, TaskStatus,
};
use TaskStatus::*;

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);

/// Restarts a failed task every 100 ms, without doubling, for as long as it is allowed to.
fn every_100_ms() -> SupervisorBuilder {
    SupervisorBuilder::new()
        .with_restart_jitter(0.0)
        .with_base_restart_delay(MS * 100)
        .with_max_backoff_exponent(0)
        .with_unlimited_restarts()
}

#[tokio::test(start_paused = true)]
async fn a_task_over_its_restart_limit_is_dead() {
    let task = Scripted::always(Step::Fail);
    let handle = every_100_ms()
        .with_task_spec(
            "flaky",
            TaskSpec::new(task.clone()).with_restart_limit(3, SECOND),
        )
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    let start = tokio::time::Instant::now();

    let (died_at, dead) = changes.until("flaky", Dead).await;

    // Restarts at 100, 200 and 300 ms; the failure at 300 ms would need a fourth within 1 s.
    assert_eq!(died_at - start, MS * 300);
    assert_eq!(task.liveness.runs(), 4);
    assert_eq!(dead.reason.as_deref(), Some("scripted failure"));
    assert!(handle.is_running(), "only the task is dead");
}

#[tokio::test(start_paused = true)]
async fn restarts_spread_wider_than_the_window_go_on_forever() {
    let task = Scripted::always(Step::Fail);
    let handle = every_100_ms()
        .with_task_spec(
            "slow-flaky",
            TaskSpec::new(task.clone()).with_restart_limit(3, MS * 250),
        )
        .build()
        .run();

    advance(SECOND * 10).await;

    // At most 3 restarts in any 250 ms: one every 100 ms never makes 4.
    assert!(task.liveness.runs() >= 100, "{} runs", task.liveness.runs());
    assert_eq!(handle.get_task_status("slow-flaky").await, Ok(Some(Failed)));
}

#[tokio::test(start_paused = true)]
async fn restarts_asked_for_do_not_count_against_the_limit() {
    let task = Scripted::always(Step::Pend);
    let handle = every_100_ms()
        .with_task_spec(
            "manual",
            TaskSpec::new(task.clone()).with_restart_limit(0, SECOND),
        )
        .build()
        .run();
    settle().await;

    for _ in 0..5 {
        handle.restart("manual").unwrap();
        settle().await;
    }

    assert_eq!(task.liveness.runs(), 6);
    assert_eq!(handle.get_task_status("manual").await, Ok(Some(Healthy)));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_tasks_restarts_after_completing_count_too() {
    let task = Scripted::always(Step::Complete);
    let handle = every_100_ms()
        .with_task_spec(
            "ticker",
            TaskSpec::new(task.clone())
                .with_restart_policy(RestartPolicy::Permanent)
                .with_restart_limit(2, SECOND),
        )
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    let (_, dead) = changes.until("ticker", Dead).await;

    assert_eq!(task.liveness.runs(), 3, "the first run and two restarts");
    assert_eq!(
        dead.reason.as_deref(),
        Some("restart limit reached: more than 2 restarts within 1s")
    );
    assert_eq!(
        handle.last_failure("ticker").unwrap(),
        None,
        "it never failed"
    );
}

#[tokio::test(start_paused = true)]
async fn exceeding_the_restart_intensity_stops_every_task() {
    let steady = Scripted::always(Step::Pend);
    let flaky = [Scripted::always(Step::Fail), Scripted::always(Step::Fail)];
    let handle = every_100_ms()
        .with_restart_intensity(3, SECOND)
        .with_task("steady", steady.clone())
        .with_task("flaky-1", flaky[0].clone())
        .with_task("flaky-2", flaky[1].clone())
        .build()
        .run();
    let start = tokio::time::Instant::now();

    let result = handle.wait().await;

    // Both fail at 0 (two restarts) and again at 100 ms: the fourth restart within 1 s.
    assert_eq!(
        result,
        Err(SupervisorError::RestartIntensityExceeded {
            restarts: 4,
            within: SECOND,
        })
    );
    assert_eq!(tokio::time::Instant::now() - start, MS * 100);
    assert_eq!(steady.liveness.live(), 0, "every task was stopped");
    assert_eq!(flaky[0].liveness.runs() + flaky[1].liveness.runs(), 4);
    let message = result.unwrap_err().to_string();
    assert_eq!(
        message,
        "restart intensity exceeded: a restart would have made 4 within 1s"
    );
}

#[tokio::test(start_paused = true)]
async fn restarts_within_the_intensity_keep_the_supervisor_up() {
    let flaky = Scripted::always(Step::Fail);
    let handle = every_100_ms()
        .with_restart_intensity(3, MS * 300)
        .with_task("flaky", flaky.clone())
        .build()
        .run();

    advance(SECOND * 5).await;

    assert!(handle.is_running());
    assert!(
        flaky.liveness.runs() >= 50,
        "{} runs",
        flaky.liveness.runs()
    );
    handle.shutdown().unwrap();
    assert_eq!(handle.wait().await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_task_over_its_own_limit_dies_without_counting_against_the_intensity() {
    let flaky = Scripted::always(Step::Fail);
    let handle = every_100_ms()
        .with_restart_intensity(2, SECOND)
        .with_task_spec(
            "flaky",
            TaskSpec::new(flaky.clone()).with_restart_limit(2, SECOND),
        )
        .with_task("steady", Scripted::always(Step::Pend))
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    changes.until("flaky", Dead).await;
    advance(SECOND).await;

    assert!(handle.is_running(), "two restarts, each counted once");
    assert_eq!(flaky.liveness.runs(), 3);
}

async fn zero_back_off_restarts_are_counted_by_the_intensity_too() {
    let flaky = Scripted::always(Step::Fail);
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(Duration::ZERO)
        .with_unlimited_restarts()
        .with_restart_intensity(100, SECOND * 3600)
        .with_task("crash-loop", flaky.clone())
        .build()
        .run();

    let result = handle.wait().await;

    assert_eq!(
        result,
        Err(SupervisorError::RestartIntensityExceeded {
            restarts: 101,
            within: SECOND * 3600,
        })
    );
    assert_eq!(flaky.liveness.runs(), 101, "no restart made past the limit");
}
on_both_runtimes!(
    zero_back_off_intensity,
    zero_back_off_restarts_are_counted_by_the_intensity_too()
);

#[test]
fn an_intensity_over_no_time_is_refused() {
    let refused = SupervisorBuilder::new()
        .with_restart_intensity(5, Duration::ZERO)
        .try_build()
        .map(drop);
    assert_eq!(refused, Err(BuilderError::ZeroRestartWindow));
}
