//! Stopping once work is done, on request: significant tasks and the auto-shutdown setting.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{advance, settle, Changes, Scripted, Step};
use task_supervisor::{
    AutoShutdown, RestartPolicy, SupervisorBuilder, SupervisorError, TaskSpec, TaskStatus,
};
use TaskStatus::*;

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);

fn builder(setting: AutoShutdown) -> SupervisorBuilder {
    SupervisorBuilder::new()
        .with_restart_jitter(0.0)
        .with_base_restart_delay(MS * 10)
        .with_max_restart_attempts(2)
        .with_auto_shutdown(setting)
}

fn significant(task: &Scripted) -> TaskSpec {
    TaskSpec::new(task.clone()).significant()
}

#[tokio::test(start_paused = true)]
async fn without_auto_shutdown_a_significant_tasks_end_changes_nothing() {
    let handle = builder(AutoShutdown::Never)
        .with_task_spec("import", significant(&Scripted::always(Step::Complete)))
        .build()
        .run();

    advance(SECOND).await;

    assert!(handle.is_running());
    assert_eq!(handle.get_task_status("import").await, Ok(Some(Completed)));
}

#[tokio::test(start_paused = true)]
async fn any_significant_stops_when_one_completes_and_stops_the_others() {
    let server = Scripted::always(Step::Pend);
    let handle = builder(AutoShutdown::AnySignificant)
        .with_task("server", server.clone())
        .with_task_spec(
            "import",
            significant(&Scripted::always(Step::FailAfter { work: MS }))
                .with_max_restart_attempts(0),
        )
        .with_task_spec(
            "job",
            significant(&Scripted::always(Step::Complete))
                .with_restart_policy(RestartPolicy::Temporary),
        )
        .build()
        .run();

    // "job" completes at once, before "import" fails.
    assert_eq!(handle.wait().await, Ok(()));
    assert_eq!(server.liveness.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn any_significant_stops_with_an_error_when_one_dies() {
    let handle = builder(AutoShutdown::AnySignificant)
        .with_task("server", Scripted::always(Step::Pend))
        .with_task_spec("import", significant(&Scripted::always(Step::Fail)))
        .build()
        .run();

    assert_eq!(
        handle.wait().await,
        Err(SupervisorError::SignificantTaskDied {
            task: "import".into(),
            reason: "scripted failure".into(),
        })
    );
}

#[tokio::test(start_paused = true)]
async fn the_end_of_a_task_that_is_not_significant_changes_nothing() {
    let handle = builder(AutoShutdown::AnySignificant)
        .with_task("once", Scripted::always(Step::Complete))
        .with_task("doomed", Scripted::always(Step::Fail))
        .with_task_spec("server", significant(&Scripted::always(Step::Pend)))
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    changes.until("doomed", Dead).await;
    advance(SECOND).await;

    assert!(handle.is_running());
}

#[tokio::test(start_paused = true)]
async fn all_significant_stops_when_the_last_one_ends() {
    let other = Scripted::always(Step::Pend);
    let handle = builder(AutoShutdown::AllSignificant)
        .with_task_spec(
            "first",
            significant(&Scripted::always(Step::Complete))
                .with_restart_policy(RestartPolicy::Temporary),
        )
        .with_task_spec(
            "last",
            significant(&Scripted::new([Step::Fail], Step::Complete)),
        )
        .with_task("other", other.clone())
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    // "first" completes at 0; "last" fails at 0 and completes on its restart, 10 ms later.
    let (first_done, _) = changes.until("first", Completed).await;
    assert!(handle.is_running(), "one significant task is still active");
    let result = handle.wait().await;

    assert_eq!(result, Ok(()));
    assert_eq!(tokio::time::Instant::now() - first_done, MS * 10);
    assert_eq!(
        other.liveness.live(),
        0,
        "the task that is not significant was stopped"
    );
}

#[tokio::test(start_paused = true)]
async fn all_significant_reports_a_death_among_them() {
    let handle = builder(AutoShutdown::AllSignificant)
        .with_task_spec(
            "dies",
            significant(&Scripted::always(Step::Fail)).with_max_restart_attempts(0),
        )
        .with_task_spec(
            "completes",
            significant(&Scripted::always(Step::FailAfter { work: SECOND }))
                .with_restart_policy(RestartPolicy::Temporary),
        )
        .build()
        .run();

    let result = handle.wait().await;

    assert_eq!(
        result,
        Err(SupervisorError::SignificantTaskDied {
            task: "dies".into(),
            reason: "scripted failure".into(),
        }),
        "the last one died too, but the first death is reported"
    );
}

#[tokio::test(start_paused = true)]
async fn a_killed_significant_task_does_not_stop_the_supervisor_and_is_no_longer_waited_for() {
    let handle = builder(AutoShutdown::AllSignificant)
        .with_task_spec("killed", significant(&Scripted::always(Step::Pend)))
        .with_task_spec(
            "slow",
            significant(&Scripted::always(Step::FailAfter { work: SECOND }))
                .with_restart_policy(RestartPolicy::Temporary),
        )
        .build()
        .run();
    settle().await;

    handle.kill_task("killed").unwrap();
    advance(MS * 500).await;
    assert!(handle.is_running(), "a kill is not an end of its own");

    // "slow" dies at 1 s: the last active significant task.
    assert_eq!(
        handle.wait().await,
        Err(SupervisorError::SignificantTaskDied {
            task: "slow".into(),
            reason: "failed after working".into(),
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_significant_task_ends_only_by_dying() {
    let ticker = Scripted::new([Step::Complete, Step::Complete], Step::Fail);
    let handle = builder(AutoShutdown::AnySignificant)
        .with_task_spec(
            "ticker",
            significant(&ticker).with_restart_policy(RestartPolicy::Permanent),
        )
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    changes.until("ticker", Completed).await;
    settle().await;
    assert!(handle.is_running(), "restarted after completing");
    let result = handle.wait().await;

    // Two completions, then failures until the two attempts are used up.
    assert_eq!(ticker.liveness.runs(), 5);
    assert!(
        matches!(&result, Err(SupervisorError::SignificantTaskDied { task, .. }) if task == "ticker"),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_significant_task_restarted_after_it_died_counts_as_running_again() {
    let handle = builder(AutoShutdown::AllSignificant)
        .with_task_spec(
            "flaky",
            significant(&Scripted::new([Step::Fail], Step::Pend)).with_max_restart_attempts(0),
        )
        .with_task_spec(
            "slow",
            significant(&Scripted::always(Step::FailAfter { work: SECOND }))
                .with_restart_policy(RestartPolicy::Temporary),
        )
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    changes.until("flaky", Dead).await;

    handle.restart("flaky").unwrap();
    advance(SECOND * 2).await;

    // "slow" died, but "flaky" runs again: not every significant task has ended.
    assert!(handle.is_running());
    assert_eq!(handle.get_task_status("flaky").await, Ok(Some(Healthy)));
}

// Time-free, on both runtimes.

async fn a_significant_task_that_completes_stops_the_supervisor_and_every_run() {
    let others: Vec<Scripted> = (0..3).map(|_| Scripted::always(Step::Pend)).collect();
    let mut builder = SupervisorBuilder::new().with_auto_shutdown(AutoShutdown::AnySignificant);
    for (index, task) in others.iter().enumerate() {
        builder = builder.with_task(&format!("other-{index}"), task.clone());
    }
    let gate = Arc::new(tokio::sync::Notify::new());
    let opened = Arc::clone(&gate);
    let handle = builder
        .with_task_spec(
            "job",
            TaskSpec::new(task_supervisor::task_fn(move || {
                let opened = Arc::clone(&opened);
                async move {
                    opened.notified().await;
                    Ok(())
                }
            }))
            .significant(),
        )
        .build()
        .run();
    common::eventually("every task runs", || {
        others.iter().all(|task| task.liveness.live() == 1)
    })
    .await;

    gate.notify_one();

    assert_eq!(handle.wait().await, Ok(()));
    for task in &others {
        assert_eq!(task.liveness.live(), 0);
    }
}
on_both_runtimes!(
    significant_completion,
    a_significant_task_that_completes_stops_the_supervisor_and_every_run()
);
