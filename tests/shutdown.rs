//! How a supervisor ends: by shutdown, by the drop of its last handle, or with its runtime; and
//! that it does not end because its tasks did.

mod common;

use std::time::Duration;

use common::{eventually, every_task_final, settle, Scripted, Step};
use task_supervisor::{SupervisorBuilder, SupervisorError, SupervisorHandleError, TaskStatus};

async fn after_wait_no_run_and_nothing_spawned_is_left() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let tasks = [
        Scripted::always(Step::Pend),
        Scripted::always(Step::Cooperate {
            after: Duration::from_millis(5),
        }),
        Scripted::always(Step::BeatForever {
            every: Duration::from_millis(5),
        }),
    ];
    let handle = SupervisorBuilder::new()
        .with_grace_period(Duration::from_millis(50))
        .build()
        .run();
    for (index, task) in tasks.iter().enumerate() {
        handle.add_task(&format!("t{index}"), task.clone()).unwrap();
    }
    eventually("every task runs", || {
        tasks.iter().all(|task| task.liveness.live() == 1)
    })
    .await;

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    for task in &tasks {
        assert_eq!(task.liveness.live(), 0, "every run's future was dropped");
    }
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        assert_eq!(metrics.num_alive_tasks(), before);
    } else {
        // On worker threads, Tokio wakes a finished task's joiner a moment before it removes
        // the task from its own count; the count must still come back.
        eventually("Tokio's task count is back", || {
            metrics.num_alive_tasks() == before
        })
        .await;
    }
}
on_both_runtimes!(
    clean_after_wait,
    after_wait_no_run_and_nothing_spawned_is_left()
);

#[tokio::test(start_paused = true)]
async fn the_supervisor_outlives_its_tasks_until_told_to_stop() {
    let handle = SupervisorBuilder::new()
        .with_max_restart_attempts(0)
        .with_task("completes", Scripted::always(Step::Complete))
        .with_task("dies", Scripted::always(Step::Fail))
        .build()
        .run();
    every_task_final(&handle).await;

    // Long after every task finished, it still answers and still waits.
    let still_waiting = tokio::time::timeout(Duration::from_secs(3600), handle.wait()).await;
    assert!(still_waiting.is_err(), "wait() returned: {still_waiting:?}");
    assert!(handle.is_running());
    assert_eq!(
        handle.get_task_status("completes").await,
        Ok(Some(TaskStatus::Completed))
    );
    let statuses = handle.get_all_task_statuses().await.unwrap();
    assert_eq!(statuses["dies"], TaskStatus::Dead);
    let late = Scripted::always(Step::Pend);
    handle.add_task("late", late.clone()).unwrap();
    handle.restart("completes").unwrap();
    eventually("the late task runs", || late.liveness.live() == 1).await;

    handle.shutdown().unwrap();
    assert_eq!(handle.wait().await, Ok(()));
    assert!(!handle.is_running());
}

#[tokio::test(start_paused = true)]
async fn an_empty_supervisor_runs_until_shut_down() {
    let handle = SupervisorBuilder::new().build().run();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(handle.is_running());

    handle
        .add_task("late", Scripted::always(Step::Complete))
        .unwrap();
    every_task_final(&handle).await;
    assert!(handle.is_running(), "a completed task does not stop it");

    handle.shutdown().unwrap();
    assert_eq!(handle.wait().await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_task_added_while_the_last_one_finishes_is_not_lost() {
    let handle = SupervisorBuilder::new()
        .with_task("first", Scripted::always(Step::Complete))
        .build()
        .run();
    let second = Scripted::always(Step::Pend);

    // Added before the loop has seen `first` complete.
    let added = handle.add_task("second", second.clone());

    match added {
        Ok(()) => {
            settle().await;
            assert!(handle.is_running());
            assert_eq!(second.liveness.live(), 1);
            handle.shutdown().unwrap();
        }
        Err(error) => assert_eq!(error, SupervisorHandleError::SupervisorStopped),
    }
    handle.wait().await.unwrap();
}

#[test]
fn a_handle_outliving_its_runtime_fails_cleanly() {
    let task = Scripted::always(Step::Pend);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.block_on(async {
        let handle = SupervisorBuilder::new()
            .with_task("a", task.clone())
            .build()
            .run();
        settle().await;
        handle
    });
    assert_eq!(task.liveness.live(), 1);

    drop(runtime);

    assert_eq!(task.liveness.live(), 0, "the runtime dropped the run");
    assert_eq!(
        handle.add_task("b", Scripted::always(Step::Pend)),
        Err(SupervisorHandleError::SupervisorStopped)
    );
    assert_eq!(
        handle.restart("a"),
        Err(SupervisorHandleError::SupervisorStopped)
    );
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    other.block_on(async {
        assert_eq!(handle.wait().await, Err(SupervisorError::LoopEnded));
        assert_eq!(
            handle.get_task_status("a").await,
            Err(SupervisorHandleError::SupervisorStopped)
        );
    });
}

#[tokio::test(start_paused = true)]
async fn statuses_stay_readable_while_shutting_down() {
    let handle = SupervisorBuilder::new()
        .with_grace_period(Duration::from_secs(1))
        .with_task("slow", Scripted::always(Step::IgnoreCancellation))
        .build()
        .run();
    settle().await;

    handle.shutdown().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(
        handle.get_task_status("slow").await,
        Ok(Some(TaskStatus::Healthy))
    );
    handle.wait().await.unwrap();
}
