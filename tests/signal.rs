//! A graceful shutdown on SIGTERM and SIGINT (feature `signal`): the test sends the signals to
//! its own process, so this file holds one test, and no other test shares its process.
#![cfg(all(feature = "signal", unix))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use task_supervisor::integrations::signal::shutdown_on_signals;
use task_supervisor::{exit_code, task_fn, SupervisorBuilder, TaskContext};

fn send_signal(name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(std::process::id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits until `condition` holds, polling every millisecond; panics after 30 s.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never happened: {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_signal_shuts_down_gracefully_and_a_second_drops_every_run() {
    // A task whose clean-up would take an hour, under an hour and a half of grace.
    let cleaned_up = Arc::new(AtomicBool::new(false));
    let slow = {
        let cleaned_up = Arc::clone(&cleaned_up);
        task_fn(move || {
            let cleaned_up = Arc::clone(&cleaned_up);
            async move {
                let token = TaskContext::current().unwrap().cancellation_token();
                token.cancelled().await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                cleaned_up.store(true, Ordering::SeqCst);
                Ok(())
            }
        })
    };
    let handle = SupervisorBuilder::new()
        .with_grace_period(Duration::from_secs(5400))
        .with_task("slow", slow)
        .build()
        .run();
    let listener = shutdown_on_signals(&handle).expect("signal handlers");
    eventually("slow is healthy", || {
        handle
            .task_info("slow")
            .unwrap()
            .unwrap()
            .status
            .is_healthy()
    })
    .await;

    send_signal("TERM");
    eventually("the shutdown began", || !handle.is_running()).await;
    assert!(
        !handle.has_stopped(),
        "slow is cleaning up, within its grace"
    );

    send_signal("INT");
    let outcome = tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .expect("the second signal dropped the run");
    assert_eq!(outcome, Ok(()));
    assert_eq!(exit_code(&outcome), std::process::ExitCode::SUCCESS);
    assert!(
        !cleaned_up.load(Ordering::SeqCst),
        "the run was dropped, not finished"
    );
    tokio::time::timeout(Duration::from_secs(30), listener)
        .await
        .expect("the listener ends with the supervisor")
        .unwrap();

    // The listener holds no handle: dropping the last one still stops a supervisor.
    let handle = SupervisorBuilder::new()
        .with_task("idle", task_fn(std::future::pending))
        .build()
        .run();
    let listener = shutdown_on_signals(&handle).unwrap();
    drop(handle);
    tokio::time::timeout(Duration::from_secs(30), listener)
        .await
        .expect("the listener ends once the supervisor stopped")
        .unwrap();
}
