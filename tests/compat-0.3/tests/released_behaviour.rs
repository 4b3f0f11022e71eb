//! What task-supervisor 0.3.x documented, checked against this crate with programs written the
//! way 0.3.x users wrote them (see the crate's `src/lib.rs` for the tasks).

use std::collections::HashMap;
use std::time::Duration;

use compat_0_3::{Ending, Job};
use task_supervisor::{SupervisorBuilder, SupervisorError, SupervisorHandle, TaskName, TaskStatus};

/// Lets `by` pass on the paused clock.
async fn after(by: Duration) {
    tokio::time::sleep(by).await;
}

async fn status(handle: &SupervisorHandle, name: &str) -> Option<TaskStatus> {
    handle
        .get_task_status(name)
        .await
        .expect("the supervisor is up")
}

/// Errors built the `anyhow` way inside `run` fail the run, and the supervisor keeps each one's
/// text, its whole cause chain included; a panic's message is kept as it was.
#[tokio::test(start_paused = true)]
async fn errors_built_the_anyhow_way_fail_the_run_and_keep_their_text() {
    let endings = [
        ("bail", Ending::Bail, "bailed out in run 1"),
        ("msg", Ending::Msg, "built with TaskError::msg"),
        ("macro", Ending::AnyhowMacro, "built with anyhow! in run 1"),
        (
            "context",
            Ending::Context,
            "loading the config: parsing the port: invalid digit found in string",
        ),
        (
            "question mark",
            Ending::QuestionMark,
            "invalid digit found in string",
        ),
        ("panic", Ending::Panic, "panicked: a plain panic in run 1"),
    ];
    std::panic::set_hook(Box::new(|_| {})); // the panic is on purpose
    let mut builder = SupervisorBuilder::default().with_max_restart_attempts(0);
    for (name, ending, _) in endings {
        builder = builder.with_task(name, Job::new(ending));
    }
    let handle = builder.build().run();

    after(Duration::from_millis(10)).await;

    for (name, _, reason) in endings {
        assert_eq!(
            status(&handle, name).await,
            Some(TaskStatus::Dead),
            "{name}"
        );
        assert_eq!(
            handle.last_failure(name).unwrap().as_deref(),
            Some(reason),
            "{name}"
        );
    }
    let _ = std::panic::take_hook();
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}

/// A failed run is restarted after the back-off, as 0.3 did, and `bail!` keeps failing it until
/// the attempts run out.
#[tokio::test(start_paused = true)]
async fn a_task_that_bails_is_restarted_until_its_attempts_run_out() {
    let job = Job::new(Ending::Bail);
    let handle = SupervisorBuilder::new()
        .with_max_restart_attempts(2)
        .with_base_restart_delay(Duration::from_millis(100))
        .with_task("bails", job.clone())
        .build()
        .run();

    after(Duration::from_millis(50)).await;
    assert_eq!(job.runs(), 1);
    assert_eq!(status(&handle, "bails").await, Some(TaskStatus::Failed));
    after(Duration::from_secs(1)).await;

    assert_eq!(job.runs(), 3, "the first run and two restarts");
    assert_eq!(status(&handle, "bails").await, Some(TaskStatus::Dead));
    assert_eq!(
        handle.last_failure("bails").unwrap().as_deref(),
        Some("bailed out in run 3")
    );
}

/// The supervisor lives until it is told to stop: once its only task has completed it still
/// answers, takes new tasks, restarts old ones, and `wait()` keeps waiting.
#[tokio::test(start_paused = true)]
async fn statuses_and_new_tasks_work_after_every_task_completed() {
    let once = Job::new(Ending::Complete {
        work: Duration::from_millis(100),
    });
    let handle = SupervisorBuilder::default()
        .with_task("once", once.clone())
        .build()
        .run();
    after(Duration::from_secs(1)).await;
    assert_eq!(status(&handle, "once").await, Some(TaskStatus::Completed));

    let waited = tokio::time::timeout(Duration::from_secs(3600), handle.wait()).await;
    assert!(waited.is_err(), "wait() returned on its own: {waited:?}");

    let statuses: HashMap<TaskName, TaskStatus> = handle.get_all_task_statuses().await.unwrap();
    assert_eq!(
        statuses,
        HashMap::from([("once".into(), TaskStatus::Completed)])
    );
    let later = Job::new(Ending::Pend);
    handle.add_task("later", later.clone()).unwrap();
    handle.restart("once").unwrap();
    after(Duration::from_millis(10)).await;
    assert_eq!(status(&handle, "later").await, Some(TaskStatus::Healthy));
    assert_eq!(later.runs(), 1);
    assert_eq!(status(&handle, "once").await, Some(TaskStatus::Healthy));
    assert_eq!(once.runs(), 2, "restarted after it had completed");
    after(Duration::from_secs(1)).await;
    assert_eq!(status(&handle, "once").await, Some(TaskStatus::Completed));

    handle.kill_task("later").unwrap();
    handle.shutdown().unwrap();
    assert!(handle.wait().await.is_ok());
}

/// A supervisor whose tasks all died of failures stays up too (with no threshold set).
#[tokio::test(start_paused = true)]
async fn a_supervisor_whose_tasks_all_died_stays_up() {
    let job = Job::new(Ending::Msg);
    let handle = SupervisorBuilder::new()
        .with_max_restart_attempts(0)
        .with_task("dies", job.clone())
        .build()
        .run();
    after(Duration::from_secs(60)).await;

    assert_eq!(status(&handle, "dies").await, Some(TaskStatus::Dead));
    assert!(handle.is_running());
    handle.restart("dies").unwrap();
    after(Duration::from_millis(1)).await;
    assert_eq!(job.runs(), 2, "brought back by the restart, and dead again");
    assert_eq!(status(&handle, "dies").await, Some(TaskStatus::Dead));
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}

/// `TooManyDeadTasks` is matched by the released fields, fractions in 0..=1.
#[tokio::test(start_paused = true)]
async fn too_many_dead_tasks_is_matched_by_its_released_fields() {
    let handle = SupervisorBuilder::new()
        .with_health_check_interval(Duration::from_millis(10))
        .with_max_restart_attempts(1)
        .with_base_restart_delay(Duration::from_millis(10))
        .with_dead_tasks_threshold(Some(0.40))
        .build()
        .run();
    handle
        .add_task("healthy_task", Job::new(Ending::Pend))
        .unwrap();
    handle
        .add_task("failing_task", Job::new(Ending::Bail))
        .unwrap();

    match handle.wait().await {
        Err(SupervisorError::TooManyDeadTasks {
            current_percentage,
            threshold,
        }) => {
            assert_eq!(current_percentage, 0.5, "one of two tasks is dead");
            assert_eq!(threshold, 0.4);
        }
        other => panic!("expected TooManyDeadTasks, got {other:?}"),
    }
}

/// The supervisor gives up when the share of dead tasks is greater than the threshold, not when
/// it is equal to it.
#[tokio::test(start_paused = true)]
async fn a_share_of_dead_tasks_at_the_threshold_is_tolerated() {
    let handle = SupervisorBuilder::new()
        .with_max_restart_attempts(0)
        .with_dead_tasks_threshold(Some(0.5))
        .with_task("healthy_task", Job::new(Ending::Pend))
        .with_task("failing_task", Job::new(Ending::AnyhowMacro))
        .build()
        .run();
    after(Duration::from_secs(10)).await;

    assert_eq!(
        status(&handle, "failing_task").await,
        Some(TaskStatus::Dead)
    );
    assert_eq!(
        status(&handle, "healthy_task").await,
        Some(TaskStatus::Healthy)
    );
    assert!(
        handle.is_running(),
        "one dead task of two is 0.5, not above it"
    );

    handle.shutdown().unwrap();
    assert!(handle.wait().await.is_ok());
}

/// The flow of 0.3's own example: add a task at run time, read its status, restart it, list
/// every status, kill it, shut down; each call answers as it did.
#[tokio::test(start_paused = true)]
async fn the_released_examples_flow_answers_as_it_did() {
    let job = Job::new(Ending::Complete {
        work: Duration::from_secs(15),
    });
    let handle = SupervisorBuilder::default().build().run();
    let remote = handle.clone();
    let script = tokio::spawn(async move {
        after(Duration::from_secs(5)).await;
        remote.add_task("task1", job.clone()).expect("add");
        after(Duration::from_secs(2)).await;
        let first = remote.get_task_status("task1").await.expect("status");
        after(Duration::from_secs(5)).await;
        remote.restart("task1").expect("restart");
        after(Duration::from_secs(2)).await;
        let all = remote.get_all_task_statuses().await.expect("statuses");
        after(Duration::from_secs(5)).await;
        remote.kill_task("task1").expect("kill");
        after(Duration::from_secs(2)).await;
        let killed = remote.get_task_status("task1").await.expect("status");
        after(Duration::from_secs(5)).await;
        remote.shutdown().expect("shutdown");
        (first, all, killed, job.runs())
    });

    handle.wait().await.expect("shut down cleanly");
    let (first, all, killed, runs) = script.await.unwrap();

    assert_eq!(first, Some(TaskStatus::Healthy));
    assert_eq!(all.get("task1"), Some(&TaskStatus::Healthy));
    assert_eq!(killed, Some(TaskStatus::Dead));
    assert_eq!(runs, 2, "the first run and the restart");
}
