//! Task info: what a handle reads of each task without asking the loop.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{Changes, Scripted, Step};
use task_supervisor::{
    RestartPolicy, SupervisedTask, SupervisorBuilder, SupervisorHandleError, TaskContext,
    TaskResult, TaskSpec, TaskStatus,
};
use tokio::time::Instant;
use TaskStatus::*;

const MS: Duration = Duration::from_millis(1);

fn builder() -> SupervisorBuilder {
    SupervisorBuilder::new()
        .with_restart_jitter(0.0)
        .with_base_restart_delay(MS * 100)
        .with_max_backoff_exponent(0)
}

#[tokio::test(start_paused = true)]
async fn the_info_follows_a_task_through_failures_restarts_and_beats() {
    let start = Instant::now();
    let task = Scripted::new(
        [Step::Fail, Step::Fail],
        Step::BeatForever { every: MS * 40 },
    );
    let handle = builder().with_task("svc", task).build().run();
    let mut changes = Changes::watch(&handle);

    // Fails at 0 and 100 ms, then starts for good at 200 ms, and beats every 40 ms.
    changes.until("svc", Failed).await;
    tokio::time::sleep(MS * 50).await;
    let waiting = handle.task_info("svc").unwrap().expect("registered");
    tokio::time::sleep(MS * 170).await; // 220 ms: up since 200, last beat at 200
    let up = handle.task_info("svc").unwrap().expect("registered");

    assert_eq!(waiting.status, Failed);
    assert_eq!(waiting.run_started_at, None, "no run while it waits");
    assert_eq!(waiting.since_last_heartbeat, None);
    let failure = waiting.last_failure.clone().expect("it failed");
    assert_eq!(&*failure.reason, "scripted failure");
    assert_eq!(failure.at, start);

    assert_eq!(up.name.as_ref(), "svc");
    assert_eq!(up.status, Healthy);
    assert_eq!(up.policy, RestartPolicy::Transient);
    assert_eq!(up.attempt, 2);
    assert_eq!(up.restarts, 2);
    assert_eq!(up.run_started_at, Some(start + MS * 200));
    assert_eq!(up.healthy_since, Some(start + MS * 200));
    assert_eq!(up.since_last_heartbeat, Some(MS * 20));
    assert!(up.watched, "it beats");
    assert_eq!(up.blocked_for, None);
    assert_eq!(up.last_failure.unwrap().at, start + MS * 100, "the latest");
}

#[tokio::test(start_paused = true)]
async fn every_tasks_info_comes_in_start_order_with_its_policy() {
    let handle = builder()
        .with_task_spec(
            "zeta",
            TaskSpec::new(Scripted::always(Step::Pend))
                .with_restart_policy(RestartPolicy::Permanent),
        )
        .with_task("alpha", Scripted::always(Step::Pend).declaring_heartbeats())
        .build()
        .run();
    handle
        .add_task_spec(
            "mid",
            TaskSpec::new(Scripted::always(Step::Complete))
                .with_restart_policy(RestartPolicy::Temporary),
        )
        .unwrap();
    tokio::time::sleep(MS).await;

    let infos = handle.task_infos().unwrap();

    let names: Vec<&str> = infos.iter().map(|info| &*info.name).collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
    let policies: Vec<RestartPolicy> = infos.iter().map(|info| info.policy).collect();
    assert_eq!(
        policies,
        [
            RestartPolicy::Permanent,
            RestartPolicy::Transient,
            RestartPolicy::Temporary
        ]
    );
    assert!(
        !infos[0].watched,
        "it never beat and did not declare heartbeats"
    );
    assert!(infos[1].watched, "it declared heartbeats");
    assert_eq!(infos[2].status, Completed);
    assert_eq!(infos[2].run_started_at, None, "its run is over");
    assert_eq!(infos[0].status, Healthy);
}

#[tokio::test(start_paused = true)]
async fn unknown_names_and_a_stopped_supervisor_are_answered() {
    let handle = builder().build().run();
    assert_eq!(handle.task_info("nobody"), Ok(None));

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    assert_eq!(
        handle.task_info("nobody"),
        Err(SupervisorHandleError::SupervisorStopped)
    );
    assert_eq!(
        handle.task_infos(),
        Err(SupervisorHandleError::SupervisorStopped)
    );
}

/// Hands its context to a task that keeps beating after the run has failed, then (next run)
/// waits without beating.
#[derive(Clone)]
struct LeaksItsContext {
    runs: Arc<Mutex<u32>>,
}

#[async_trait]
impl SupervisedTask for LeaksItsContext {
    async fn run(&mut self) -> TaskResult {
        let run = {
            let mut runs = self.runs.lock().unwrap();
            *runs += 1;
            *runs
        };
        if run == 1 {
            let context = TaskContext::current().expect("in a run");
            tokio::spawn(async move {
                loop {
                    context.heartbeat();
                    tokio::time::sleep(MS * 5).await;
                }
            });
            tokio::time::sleep(MS * 20).await;
            task_supervisor::bail!("leaves its context behind");
        }
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_context_kept_after_its_run_does_not_beat_for_the_next_run() {
    let handle = builder()
        .with_timeout_threshold(MS * 500)
        .with_heartbeat_interval(MS * 10)
        .with_task(
            "leaky",
            LeaksItsContext {
                runs: Arc::default(),
            },
        )
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    changes.until("leaky", Failed).await;
    changes.until("leaky", Starting).await;
    tokio::time::sleep(MS * 600).await;

    let info = handle.task_info("leaky").unwrap().expect("registered");

    assert_eq!(info.attempt, 1);
    assert_eq!(
        info.since_last_heartbeat, None,
        "the old run's beats are not its own"
    );
    assert!(!info.watched);
    assert_eq!(info.status, Healthy, "never hung: it was never watched");
}
