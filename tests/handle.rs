//! The handle: commands answered at once, names checked, clones and drops.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, settle, Changes, Scripted, Step};
use task_supervisor::{SupervisorBuilder, SupervisorHandle, SupervisorHandleError, TaskStatus};
use TaskStatus::*;

#[test]
fn the_handle_is_clone_send_sync_and_debug() {
    fn assert_traits<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}
    assert_traits::<SupervisorHandle>();
}

async fn duplicate_and_unknown_names_are_refused_by_the_call() {
    let handle = SupervisorBuilder::new()
        .with_task("a", Scripted::always(Step::Pend))
        .build()
        .run();

    assert_eq!(
        handle.add_task("a", Scripted::always(Step::Pend)),
        Err(SupervisorHandleError::TaskAlreadyExists { name: "a".into() })
    );
    assert_eq!(
        handle.restart("nobody"),
        Err(SupervisorHandleError::TaskNotFound {
            name: "nobody".into()
        })
    );
    assert_eq!(
        handle.kill_task("nobody"),
        Err(SupervisorHandleError::TaskNotFound {
            name: "nobody".into()
        })
    );
    assert_eq!(handle.get_task_status("nobody").await, Ok(None));
    let message = handle
        .add_task("a", Scripted::always(Step::Pend))
        .unwrap_err()
        .to_string();
    assert_eq!(message, "a task named `a` already exists");
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}
on_both_runtimes!(
    duplicate_and_unknown_names,
    duplicate_and_unknown_names_are_refused_by_the_call()
);

async fn a_name_added_twice_concurrently_is_taken_once() {
    let handle = SupervisorBuilder::new().build().run();
    let task = Scripted::always(Step::Pend);
    let attempts: Vec<_> = (0..16)
        .map(|_| {
            let handle = handle.clone();
            let task = task.clone();
            tokio::spawn(async move { handle.add_task("contested", task) })
        })
        .collect();
    let mut accepted = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => accepted += 1,
            Err(error) => assert_eq!(
                error,
                SupervisorHandleError::TaskAlreadyExists {
                    name: "contested".into()
                }
            ),
        }
    }
    assert_eq!(accepted, 1);
    eventually("the one accepted task runs", || task.liveness.live() == 1).await;
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
    assert_eq!(task.liveness.runs(), 1);
}
on_both_runtimes!(
    concurrent_duplicate_adds,
    a_name_added_twice_concurrently_is_taken_once()
);

#[tokio::test(start_paused = true)]
// Programs written against the old API pass names with `.into()`; they must keep compiling.
#[allow(clippy::useless_conversion)]
async fn the_old_api_style_with_into_still_compiles() {
    let handle = SupervisorBuilder::default().build().run();
    handle
        .add_task("task".into(), Scripted::always(Step::Pend))
        .unwrap();
    settle().await;
    let status = handle.get_task_status("task".into()).await.unwrap();
    assert_eq!(status, Some(Healthy));
    handle.restart("task".into()).unwrap();
    handle.kill_task("task".into()).unwrap();
    let name = String::from("task");
    assert_eq!(
        handle.add_task(&name, Scripted::always(Step::Pend)),
        Err(SupervisorHandleError::TaskAlreadyExists { name })
    );
}

#[tokio::test(start_paused = true)]
async fn tasks_added_at_run_time_start_and_are_listed() {
    let handle = SupervisorBuilder::new()
        .with_task("built", Scripted::always(Step::Pend))
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    handle
        .add_task("added", Scripted::always(Step::Pend))
        .unwrap();
    changes.until("added", Healthy).await;

    let statuses = handle.get_all_task_statuses().await.unwrap();
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses["built"], Healthy);
    assert_eq!(statuses["added"], Healthy);
    assert_eq!(changes.sequence("added"), [Starting, Healthy]);

    // The listing with shared names holds the same snapshot.
    let listed: std::collections::HashMap<String, TaskStatus> = handle
        .task_statuses()
        .unwrap()
        .into_iter()
        .map(|(name, status)| (name.to_string(), status))
        .collect();
    assert_eq!(listed, statuses);
}

async fn commands_after_shutdown_fail_at_once() {
    let handle = SupervisorBuilder::new()
        .with_task("a", Scripted::always(Step::Pend))
        .build()
        .run();

    handle.shutdown().unwrap();

    let stopped = Err(SupervisorHandleError::SupervisorStopped);
    assert_eq!(handle.shutdown(), stopped);
    assert_eq!(handle.add_task("b", Scripted::always(Step::Pend)), stopped);
    assert_eq!(handle.restart("a"), stopped);
    assert_eq!(handle.kill_task("a"), stopped);
    assert!(!handle.is_running());

    handle.wait().await.unwrap();
    assert_eq!(
        handle.get_task_status("a").await,
        Err(SupervisorHandleError::SupervisorStopped)
    );
    assert_eq!(
        handle.get_all_task_statuses().await,
        Err(SupervisorHandleError::SupervisorStopped)
    );
    assert_eq!(
        handle.task_statuses(),
        Err(SupervisorHandleError::SupervisorStopped)
    );
    assert_eq!(handle.add_task("c", Scripted::always(Step::Pend)), stopped);
    assert_eq!(handle.restart("a"), stopped);
}
on_both_runtimes!(after_shutdown, commands_after_shutdown_fail_at_once());

async fn dropping_a_clone_changes_nothing_but_dropping_the_last_shuts_down() {
    let task = Scripted::always(Step::Pend);
    let handle = SupervisorBuilder::new()
        .with_task("a", task.clone())
        .build()
        .run();
    let watcher = handle.clone();
    eventually("the task runs", || task.liveness.live() == 1).await;

    drop(handle.clone());
    settle().await;
    assert!(watcher.is_running());
    assert_eq!(task.liveness.live(), 1);
    assert_eq!(watcher.get_task_status("a").await.unwrap(), Some(Healthy));

    // Keep something that can still see the supervisor: its status stream.
    let mut changes = watcher.status_changes();
    drop(handle);
    drop(watcher);
    // The stream closes once the supervisor has stopped.
    loop {
        match changes.recv().await {
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            Err(error) => panic!("{error}"),
        }
    }
    eventually("the run is gone", || task.liveness.live() == 0).await;
}
on_both_runtimes!(
    clone_drop_versus_last_drop,
    dropping_a_clone_changes_nothing_but_dropping_the_last_shuts_down()
);

async fn many_concurrent_waits_all_return() {
    let handle = SupervisorBuilder::new()
        .with_task("a", Scripted::always(Step::Pend))
        .build()
        .run();
    let waiters: Vec<_> = (0..100)
        .map(|_| {
            let handle = handle.clone();
            tokio::spawn(async move { handle.wait().await })
        })
        .collect();
    settle().await;

    handle.shutdown().unwrap();

    for waiter in waiters {
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }
    // Waiting again answers at once, with the same answer.
    assert_eq!(handle.wait().await, Ok(()));
    assert_eq!(handle.wait().await, Ok(()));
}
on_both_runtimes!(many_concurrent_waits, many_concurrent_waits_all_return());

#[tokio::test(start_paused = true)]
async fn a_wait_dropped_halfway_does_not_strand_the_others() {
    let handle = SupervisorBuilder::new()
        .with_task("a", Scripted::always(Step::Pend))
        .build()
        .run();
    let impatient = tokio::time::timeout(Duration::from_millis(10), handle.wait()).await;
    assert!(impatient.is_err(), "still running");

    handle.shutdown().unwrap();

    assert_eq!(handle.wait().await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn statuses_are_read_without_a_round_trip() {
    let handle = SupervisorBuilder::new().build().run();
    for index in 0..1_000 {
        handle
            .add_task(&format!("t{index}"), Scripted::always(Step::Pend))
            .unwrap();
    }
    // Read before the loop has even seen the additions: the registry answers, as `Created`.
    let status = handle.get_task_status("t999").await.unwrap();
    assert_eq!(status, Some(Created));
    settle().await;
    let all = handle.get_all_task_statuses().await.unwrap();
    assert_eq!(all.len(), 1_000);
    let shared = Arc::new(handle);
    assert!(format!("{shared:?}").contains("tasks: 1000"));
}
