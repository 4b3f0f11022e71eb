//! Closures as tasks: `task_fn`, each run a new call of the closure.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Changes;
use task_supervisor::{
    bail, heartbeat, task_fn, SupervisorBuilder, TaskContext, TaskSpec, TaskStatus,
};
use TaskStatus::*;

const MS: Duration = Duration::from_millis(1);

/// Shared by a test and the closure it supervises: what each run saw.
#[derive(Default)]
struct Seen {
    calls: AtomicU32,
    with_context: AtomicU32,
}

#[tokio::test(start_paused = true)]
async fn each_run_calls_the_closure_again_with_the_runs_context() {
    let seen = Arc::new(Seen::default());
    let counter = Arc::clone(&seen);
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(MS)
        .with_max_restart_attempts(5)
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    handle
        .add_task(
            "flaky",
            task_fn(move || {
                let call = counter.calls.fetch_add(1, Ordering::SeqCst) + 1;
                let counter = Arc::clone(&counter);
                async move {
                    if TaskContext::current().is_some() {
                        counter.with_context.fetch_add(1, Ordering::SeqCst);
                    }
                    if call < 3 {
                        bail!("call {call} fails");
                    }
                    Ok(())
                }
            }),
        )
        .unwrap();
    changes.until("flaky", Completed).await;

    assert_eq!(seen.calls.load(Ordering::SeqCst), 3);
    assert_eq!(seen.with_context.load(Ordering::SeqCst), 3);
    assert_eq!(
        changes.sequence("flaky"),
        [Starting, Failed, Starting, Failed, Starting, Completed]
    );
    assert_eq!(
        handle.last_failure("flaky").unwrap().as_deref(),
        Some("call 2 fails")
    );
}

#[tokio::test(start_paused = true)]
async fn what_the_closure_captures_needs_no_clone() {
    // Neither the closure nor what it holds is Clone.
    struct Budget(AtomicU32);
    let budget = Budget(AtomicU32::new(2));
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(MS)
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    handle
        .add_task(
            "spends",
            task_fn(move || {
                let left = budget.0.fetch_sub(1, Ordering::SeqCst);
                async move {
                    if left > 0 {
                        bail!("{left} left");
                    }
                    Ok(())
                }
            }),
        )
        .unwrap();
    changes.until("spends", Completed).await;

    assert_eq!(
        changes.sequence("spends"),
        [Starting, Failed, Starting, Failed, Starting, Completed]
    );
}

#[tokio::test(start_paused = true)]
async fn a_closure_that_declares_heartbeats_is_watched_from_its_start() {
    let handle = SupervisorBuilder::new()
        .with_timeout_threshold(MS * 200)
        .with_heartbeat_interval(MS * 50)
        .with_health_check_initial_delay(MS * 100)
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    let start = tokio::time::Instant::now();

    handle
        .add_task("silent", task_fn(std::future::pending).with_heartbeats())
        .unwrap();
    handle
        .add_task(
            "beats",
            task_fn(|| async {
                loop {
                    heartbeat();
                    tokio::time::sleep(MS * 50).await;
                }
            }),
        )
        .unwrap();
    let (hung_at, _) = changes.until("silent", Failed).await;
    changes.until("beats", Healthy).await;

    assert_eq!(
        hung_at - start,
        MS * 300,
        "no beat by the initial delay plus the timeout"
    );
    assert_eq!(handle.get_task_status("beats").await, Ok(Some(Healthy)));
}

#[tokio::test(start_paused = true)]
async fn a_closure_takes_a_spec_like_any_task() {
    let handle = SupervisorBuilder::new().build().run();
    let mut changes = Changes::watch(&handle);
    let runs = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&runs);

    handle
        .add_task_spec(
            "once",
            TaskSpec::new(task_fn(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { bail!("no second chance") }
            }))
            .with_restart_policy(task_supervisor::RestartPolicy::Temporary),
        )
        .unwrap();
    changes.until("once", Dead).await;
    tokio::time::sleep(Duration::from_secs(60)).await;

    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
