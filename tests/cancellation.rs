//! Stopping runs: cancellation, then the grace period, then the run is dropped; and never two
//! live runs of one task.

mod common;

use std::time::Duration;

use common::{advance, eventually, settle, Changes, Scripted, Step};
use task_supervisor::{SupervisorBuilder, TaskStatus};
use TaskStatus::*;

const GRACE: Duration = Duration::from_secs(2);

fn builder() -> SupervisorBuilder {
    SupervisorBuilder::new()
        .with_grace_period(GRACE)
        .with_restart_jitter(0.0)
}

#[tokio::test(start_paused = true)]
async fn a_cooperative_run_finishes_within_the_grace_before_the_next_starts() {
    let finish_in = Duration::from_millis(300);
    let task = Scripted::new([Step::Cooperate { after: finish_in }], Step::Pend);
    let handle = builder().with_task("polite", task.clone()).build().run();
    settle().await;
    let asked_at = tokio::time::Instant::now();

    handle.restart("polite").unwrap();
    advance(Duration::from_secs(1)).await;

    let dropped = task.liveness.dropped_at();
    let started = task.liveness.started_at();
    assert_eq!(
        dropped[0] - asked_at,
        finish_in,
        "it returned on its own, in its time"
    );
    assert_eq!(started.len(), 2);
    assert!(started[1] >= dropped[0], "no overlap");
    assert_eq!(task.liveness.most(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_run_ignoring_cancellation_is_dropped_when_the_grace_ends() {
    let task = Scripted::new([Step::IgnoreCancellation], Step::Pend);
    let handle = builder().with_task("stubborn", task.clone()).build().run();
    let mut changes = Changes::watch(&handle);
    settle().await;
    let asked_at = tokio::time::Instant::now();

    handle.restart("stubborn").unwrap();
    advance(GRACE / 2).await;
    assert_eq!(task.liveness.live(), 1, "still within its grace");
    assert_eq!(task.liveness.runs(), 1, "the next run waits for it");

    advance(GRACE).await;
    let dropped = task.liveness.dropped_at();
    assert_eq!(dropped[0] - asked_at, GRACE);
    assert_eq!(task.liveness.runs(), 2);
    assert!(task.liveness.started_at()[1] >= dropped[0]);
    assert_eq!(task.liveness.most(), 1);
    assert_eq!(
        changes.sequence("stubborn"),
        [Starting, Healthy, Starting, Healthy],
        "no status change while the old run had its grace"
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_that_never_asked_for_its_token_is_dropped_at_once() {
    let task = Scripted::always(Step::Pend);
    let handle = builder()
        .with_grace_period(Duration::from_secs(3600))
        .with_task("oblivious", task.clone())
        .with_task("keeper", Scripted::always(Step::Pend))
        .build()
        .run();
    settle().await;
    let asked_at = tokio::time::Instant::now();

    handle.kill_task("oblivious").unwrap();
    settle().await;

    assert_eq!(task.liveness.live(), 0);
    assert_eq!(task.liveness.dropped_at()[0], asked_at);
    assert_eq!(
        handle.get_task_status("oblivious").await.unwrap(),
        Some(Dead)
    );
}

#[tokio::test(start_paused = true)]
async fn kill_during_back_off_is_final() {
    let task = Scripted::always(Step::Fail);
    let handle = builder()
        .with_base_restart_delay(Duration::from_secs(5))
        .with_task("doomed", task.clone())
        .with_task("keeper", Scripted::always(Step::Pend))
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    changes.until("doomed", Failed).await;

    handle.kill_task("doomed").unwrap();
    advance(Duration::from_secs(60)).await;

    assert_eq!(task.liveness.runs(), 1, "the pending back-off did nothing");
    assert_eq!(handle.get_task_status("doomed").await.unwrap(), Some(Dead));
    assert_eq!(changes.sequence("doomed"), [Starting, Failed, Dead]);
}

#[tokio::test(start_paused = true)]
async fn kill_then_restart_waits_for_the_killed_run() {
    let task = Scripted::new([Step::IgnoreCancellation], Step::Pend);
    let handle = builder().with_task("phoenix", task.clone()).build().run();
    let mut changes = Changes::watch(&handle);
    settle().await;

    handle.kill_task("phoenix").unwrap();
    handle.restart("phoenix").unwrap();
    advance(GRACE / 2).await;
    assert_eq!(task.liveness.runs(), 1);

    advance(GRACE).await;
    assert_eq!(task.liveness.runs(), 2);
    assert_eq!(task.liveness.most(), 1);
    assert_eq!(
        changes.sequence("phoenix"),
        [Starting, Healthy, Dead, Starting, Healthy]
    );
}

#[tokio::test(start_paused = true)]
async fn restart_clears_the_attempt_count_and_revives_a_dead_task() {
    let task = Scripted::new([Step::Fail, Step::Fail], Step::Pend);
    let handle = builder()
        .with_max_restart_attempts(1)
        .with_base_restart_delay(Duration::ZERO)
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    handle.add_task("lazarus", task.clone()).unwrap();
    // Keep the supervisor from stopping when its only task dies.
    handle
        .add_task("keeper", Scripted::always(Step::Pend))
        .unwrap();
    changes.until("lazarus", Dead).await;

    handle.restart("lazarus").unwrap();
    changes.until("lazarus", Healthy).await;

    assert_eq!(task.liveness.runs(), 3);
    assert_eq!(
        changes.sequence("lazarus"),
        [Starting, Failed, Starting, Dead, Starting, Healthy]
    );
}

#[tokio::test(start_paused = true)]
async fn restart_brings_a_completed_task_back() {
    let task = Scripted::new([Step::Complete], Step::Pend);
    let handle = builder()
        .with_task("again", task.clone())
        .with_task("keeper", Scripted::always(Step::Pend))
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    changes.until("again", Completed).await;

    handle.restart("again").unwrap();
    changes.until("again", Healthy).await;

    assert_eq!(task.liveness.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn shutting_down_ten_thousand_oblivious_runs_does_not_wait_for_the_grace() {
    let handle = builder()
        .with_grace_period(Duration::from_secs(60))
        .build()
        .run();
    let task = Scripted::always(Step::Pend);
    for index in 0..10_000 {
        handle.add_task(&format!("t{index}"), task.clone()).unwrap();
    }
    eventually("every run started", || task.liveness.live() == 10_000).await;
    let start = tokio::time::Instant::now();

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(task.liveness.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_cooperative_runs_their_grace() {
    let polite = Scripted::always(Step::Cooperate {
        after: Duration::from_millis(500),
    });
    let stubborn = Scripted::always(Step::IgnoreCancellation);
    let handle = builder()
        .with_task("polite", polite.clone())
        .with_task("stubborn", stubborn.clone())
        .build()
        .run();
    settle().await;
    let start = tokio::time::Instant::now();

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    assert_eq!(
        polite.liveness.dropped_at()[0] - start,
        Duration::from_millis(500)
    );
    assert_eq!(stubborn.liveness.dropped_at()[0] - start, GRACE);
    assert_eq!(start.elapsed(), GRACE);
}

async fn at_most_one_live_instance_during_rapid_restarts() {
    let task = Scripted::always(Step::Cooperate {
        after: Duration::ZERO,
    });
    let handle = builder().with_task("churn", task.clone()).build().run();
    let mut changes = Changes::watch(&handle);

    for round in 0..1_000 {
        handle.restart("churn").unwrap();
        if round % 10 == 0 {
            tokio::task::yield_now().await;
        }
        assert!(task.liveness.live() <= 1);
    }
    // However the restarts coalesced, the churn settles on one healthy run.
    eventually("one run is up", || task.liveness.live() == 1).await;
    changes.drain();
    if handle.get_task_status("churn").await.unwrap() != Some(Healthy) {
        changes.until("churn", Healthy).await;
    }
    assert_eq!(task.liveness.most(), 1, "two runs were alive at once");
    changes.assert_valid_edges();
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
    assert_eq!(task.liveness.live(), 0);
}

on_both_runtimes!(
    at_most_one_live_instance_during_a_thousand_rapid_restarts,
    at_most_one_live_instance_during_rapid_restarts()
);

// Regression: a kill while a restart's grace was running cleared the grace deadline, so a run
// ignoring its cancellation lived for ever and shutdown never finished.
#[tokio::test(start_paused = true)]
async fn kill_during_a_grace_period_still_drops_the_run_when_the_grace_ends() {
    let task = Scripted::always(Step::IgnoreCancellation);
    let handle = builder()
        .with_task("stubborn", task.clone())
        .with_task("keeper", Scripted::always(Step::Pend))
        .build()
        .run();
    settle().await;
    let asked_at = tokio::time::Instant::now();

    handle.restart("stubborn").unwrap();
    handle.kill_task("stubborn").unwrap();
    advance(GRACE * 2).await;

    assert_eq!(task.liveness.live(), 0);
    assert_eq!(task.liveness.dropped_at()[0] - asked_at, GRACE);
    assert_eq!(task.liveness.runs(), 1, "the kill cancelled the restart");
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}

// Regression: killing the last live task stopped the supervisor, so the documented way back
// (`restart`) and a following `shutdown` failed.
async fn a_killed_task_keeps_the_supervisor_up_for_a_restart() {
    let task = Scripted::always(Step::Pend);
    let handle = SupervisorBuilder::new()
        .with_task("only", task.clone())
        .build()
        .run();
    eventually("the task runs", || task.liveness.live() == 1).await;

    handle.kill_task("only").unwrap();
    eventually("the run is gone", || task.liveness.live() == 0).await;
    assert!(handle.is_running());
    handle.restart("only").unwrap();
    eventually("it runs again", || task.liveness.live() == 1).await;

    handle.kill_task("only").unwrap();
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}
on_both_runtimes!(
    killed_task_and_restart,
    a_killed_task_keeps_the_supervisor_up_for_a_restart()
);
