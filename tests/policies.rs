//! Per-task specs: restart policies (permanent, transient, temporary) and the supervisor's
//! settings a task overrides for itself.

mod common;

use std::time::Duration;

use common::{advance, settle, Changes, Scripted, Step};
use task_supervisor::{
    BuilderError, RestartPolicy, SupervisorBuilder, SupervisorHandleError, TaskContext, TaskSpec,
    TaskStatus,
};
use TaskStatus::*;

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn builder() -> SupervisorBuilder {
    SupervisorBuilder::new()
        .with_restart_jitter(0.0)
        .with_base_restart_delay(SECOND)
}

#[tokio::test(start_paused = true)]
async fn a_permanent_task_is_restarted_after_it_completes() {
    let task = Scripted::always(Step::Complete);
    let handle = builder()
        .with_max_restart_attempts(1)
        .with_task_spec(
            "sweeper",
            TaskSpec::new(task.clone()).with_restart_policy(RestartPolicy::Permanent),
        )
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    advance(SECOND * 3 + MS * 500).await;

    // One start at 0 and one after each base delay: never doubled, never out of attempts,
    // since each run did its work.
    assert_eq!(task.liveness.runs(), 4);
    let starts = task.liveness.started_at();
    let gaps: Vec<Duration> = starts.windows(2).map(|pair| pair[1] - pair[0]).collect();
    assert_eq!(gaps, [SECOND, SECOND, SECOND]);
    assert_eq!(
        changes.sequence("sweeper")[..4],
        [Starting, Completed, Starting, Completed]
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_task_that_fails_backs_off_as_any_other() {
    let task = Scripted::new([Step::Fail, Step::Fail], Step::Pend);
    let handle = builder()
        .with_task_spec(
            "service",
            TaskSpec::new(task.clone()).with_restart_policy(RestartPolicy::Permanent),
        )
        .build()
        .run();

    advance(SECOND * 4).await;

    let starts = task.liveness.started_at();
    assert_eq!(starts.len(), 3);
    assert_eq!(starts[1] - starts[0], SECOND);
    assert_eq!(
        starts[2] - starts[1],
        SECOND * 2,
        "doubled after the second failure"
    );
    assert_eq!(handle.get_task_status("service").await, Ok(Some(Healthy)));
}

#[tokio::test(start_paused = true)]
async fn a_temporary_task_that_fails_is_dead_at_once() {
    let task = Scripted::always(Step::Fail);
    let handle = builder()
        .with_task_spec(
            "once",
            TaskSpec::new(task.clone()).with_restart_policy(RestartPolicy::Temporary),
        )
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    let (_, dead) = changes.until("once", Dead).await;
    advance(SECOND * 60).await;

    assert_eq!(dead.reason.as_deref(), Some("scripted failure"));
    assert_eq!(task.liveness.runs(), 1, "never restarted");
    assert_eq!(
        handle.last_failure("once").unwrap().as_deref(),
        Some("scripted failure")
    );
    assert!(handle.is_running());
}

#[tokio::test(start_paused = true)]
async fn a_temporary_task_that_completes_stays_completed_until_restarted() {
    let task = Scripted::always(Step::Complete);
    let handle = builder().build().run();
    let mut changes = Changes::watch(&handle);
    handle
        .add_task_spec(
            "job",
            TaskSpec::new(task.clone()).with_restart_policy(RestartPolicy::Temporary),
        )
        .unwrap();
    changes.until("job", Completed).await;
    advance(SECOND * 60).await;
    assert_eq!(task.liveness.runs(), 1);

    handle.restart("job").unwrap();
    changes.until("job", Completed).await;

    assert_eq!(task.liveness.runs(), 2, "a restart always runs it again");
    assert_eq!(
        changes.sequence("job"),
        [Starting, Completed, Starting, Completed]
    );
}

#[tokio::test(start_paused = true)]
async fn each_task_backs_off_by_its_own_settings() {
    let quick = Scripted::new([Step::Fail; 3], Step::Pend);
    let slow = Scripted::new([Step::Fail; 3], Step::Pend);
    let handle = builder()
        .with_task_spec(
            "quick",
            TaskSpec::new(quick.clone())
                .with_base_restart_delay(MS * 10)
                .with_max_backoff_exponent(1),
        )
        .with_task("slow", slow.clone())
        .build()
        .run();

    advance(SECOND * 10).await;

    let gaps = |task: &Scripted| -> Vec<Duration> {
        let starts = task.liveness.started_at();
        starts.windows(2).map(|pair| pair[1] - pair[0]).collect()
    };
    assert_eq!(
        gaps(&quick),
        [MS * 10, MS * 20, MS * 20],
        "capped at one doubling"
    );
    assert_eq!(gaps(&slow), [SECOND, SECOND * 2, SECOND * 4]);
    assert_eq!(handle.get_task_status("quick").await, Ok(Some(Healthy)));
}

#[tokio::test(start_paused = true)]
async fn each_task_runs_out_of_its_own_attempts() {
    let fragile = Scripted::always(Step::Fail);
    let stubborn = Scripted::new([Step::Fail; 4], Step::Pend);
    let handle = builder()
        .with_max_restart_attempts(1)
        .with_base_restart_delay(MS)
        .with_task("fragile", fragile.clone())
        .with_task_spec(
            "stubborn",
            TaskSpec::new(stubborn.clone()).with_max_restart_attempts(10),
        )
        .build()
        .run();

    advance(SECOND).await;

    assert_eq!(handle.get_task_status("fragile").await, Ok(Some(Dead)));
    assert_eq!(fragile.liveness.runs(), 2);
    assert_eq!(handle.get_task_status("stubborn").await, Ok(Some(Healthy)));
    assert_eq!(stubborn.liveness.runs(), 5);
}

#[tokio::test(start_paused = true)]
async fn unlimited_restarts_for_one_task_override_the_supervisors_limit() {
    let task = Scripted::always(Step::Fail);
    let handle = builder()
        .with_max_restart_attempts(0)
        .with_base_restart_delay(MS)
        .with_max_backoff_exponent(0)
        .with_task_spec(
            "forever",
            TaskSpec::new(task.clone()).with_unlimited_restarts(),
        )
        .build()
        .run();

    advance(MS * 100).await;

    assert!(task.liveness.runs() > 50, "{} runs", task.liveness.runs());
    assert_eq!(handle.get_task_status("forever").await, Ok(Some(Failed)));
}

#[tokio::test(start_paused = true)]
async fn a_tasks_own_heartbeat_timeout_decides_when_it_is_hung() {
    let every = MS * 10;
    let tight = Scripted::new([Step::BeatThenHang { every, beats: 1 }], Step::Pend);
    let loose = Scripted::new([Step::BeatThenHang { every, beats: 1 }], Step::Pend);
    let handle = builder()
        .with_timeout_threshold(SECOND * 2)
        .with_task_spec(
            "tight",
            TaskSpec::new(tight.clone()).with_timeout_threshold(MS * 300),
        )
        .with_task("loose", loose.clone())
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    let start = tokio::time::Instant::now();

    let (tight_hung, _) = changes.until("tight", Failed).await;
    let (loose_hung, _) = changes.until("loose", Failed).await;

    assert_eq!(tight_hung - start, MS * 300);
    assert_eq!(loose_hung - start, SECOND * 2);
}

#[tokio::test(start_paused = true)]
async fn a_tasks_own_grace_period_bounds_its_stop() {
    let stubborn = Scripted::new([Step::IgnoreCancellation], Step::Pend);
    let patient = Scripted::new([Step::IgnoreCancellation], Step::Pend);
    let handle = builder()
        .with_grace_period(SECOND * 5)
        .with_task_spec(
            "stubborn",
            TaskSpec::new(stubborn.clone()).with_grace_period(MS * 100),
        )
        .with_task("patient", patient.clone())
        .build()
        .run();
    settle().await;
    let asked = tokio::time::Instant::now();

    handle.restart("stubborn").unwrap();
    handle.restart("patient").unwrap();
    advance(SECOND * 6).await;

    assert_eq!(stubborn.liveness.dropped_at()[0] - asked, MS * 100);
    assert_eq!(patient.liveness.dropped_at()[0] - asked, SECOND * 5);
    assert_eq!(stubborn.liveness.runs(), 2);
    assert_eq!(patient.liveness.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_tasks_own_stability_time_forgives_its_failures() {
    let task = Scripted::always(Step::FailAfter { work: SECOND * 2 });
    let handle = builder()
        .with_max_restart_attempts(1)
        .with_base_restart_delay(MS)
        .with_task_being_stable_after(SECOND * 60)
        .with_task_spec(
            "steady",
            TaskSpec::new(task.clone()).with_task_being_stable_after(SECOND),
        )
        .build()
        .run();

    advance(SECOND * 20).await;

    // Healthy 2 s each time, longer than its own 1 s: every failure is forgiven.
    assert!(task.liveness.runs() >= 9, "{} runs", task.liveness.runs());
    assert_ne!(handle.get_task_status("steady").await, Ok(Some(Dead)));
}

#[tokio::test(start_paused = true)]
async fn a_spec_that_cannot_work_is_refused_by_the_call_and_nothing_is_stored() {
    let handle = builder().build().run();
    let refusals = [
        (
            TaskSpec::new(Scripted::always(Step::Pend)).with_restart_jitter(1.5),
            BuilderError::InvalidRestartJitter { value: 1.5 },
        ),
        (
            TaskSpec::new(Scripted::always(Step::Pend)).with_timeout_threshold(Duration::ZERO),
            BuilderError::ZeroTimeoutThreshold,
        ),
        (
            TaskSpec::new(Scripted::always(Step::Pend)).with_timeout_threshold(MS * 50),
            BuilderError::HeartbeatIntervalNotBelowTimeout {
                interval: MS * 100,
                timeout: MS * 50,
            },
        ),
        (
            TaskSpec::new(Scripted::always(Step::Pend)).with_restart_limit(3, Duration::ZERO),
            BuilderError::ZeroRestartWindow,
        ),
    ];
    for (spec, reason) in refusals {
        let refused = handle.add_task_spec("bad", spec);

        assert_eq!(
            refused,
            Err(SupervisorHandleError::InvalidTaskSpec {
                name: "bad".into(),
                reason: reason.clone(),
            })
        );
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("`bad`"), "{message}");
        assert!(message.contains(&reason.to_string()), "{message}");
        assert_eq!(handle.get_task_status("bad").await, Ok(None));
    }
    // The name is still free.
    handle
        .add_task_spec("bad", TaskSpec::new(Scripted::always(Step::Pend)))
        .unwrap();
}

#[test]
fn try_build_names_the_task_whose_spec_cannot_work() {
    let refused = SupervisorBuilder::new()
        .with_task("fine", Scripted::always(Step::Pend))
        .with_task_spec(
            "jittery",
            TaskSpec::new(Scripted::always(Step::Pend)).with_restart_jitter(-1.0),
        )
        .try_build()
        .map(drop);

    assert_eq!(
        refused,
        Err(BuilderError::InvalidTaskSpec {
            name: "jittery".into(),
            reason: Box::new(BuilderError::InvalidRestartJitter { value: -1.0 }),
        })
    );
}

#[tokio::test(start_paused = true)]
async fn build_lowers_the_heartbeat_interval_below_the_shortest_task_timeout() {
    #[derive(Clone)]
    struct ReadsInterval(std::sync::Arc<std::sync::Mutex<Option<Duration>>>);
    #[async_trait::async_trait]
    impl task_supervisor::SupervisedTask for ReadsInterval {
        async fn run(&mut self) -> task_supervisor::TaskResult {
            let interval = TaskContext::current()
                .expect("in a run")
                .heartbeat_interval();
            *self.0.lock().unwrap() = Some(interval);
            std::future::pending().await
        }
    }
    let seen = ReadsInterval(Default::default());
    let handle = SupervisorBuilder::new()
        .with_heartbeat_interval(MS * 100)
        .with_task_spec(
            "tight",
            TaskSpec::new(seen.clone()).with_timeout_threshold(MS * 60),
        )
        .build()
        .run();
    settle().await;

    assert_eq!(
        *seen.0.lock().unwrap(),
        Some(MS * 30),
        "half the shortest timeout"
    );
    handle.shutdown().unwrap();
}

// Time-free: zero back-off, on both runtimes.

async fn a_permanent_task_without_back_off_runs_until_its_restart_limit() {
    let task = Scripted::always(Step::Complete);
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(Duration::ZERO)
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    handle
        .add_task_spec(
            "ticker",
            TaskSpec::new(task.clone())
                .with_restart_policy(RestartPolicy::Permanent)
                .with_restart_limit(10, Duration::from_secs(3600)),
        )
        .unwrap();
    changes.until("ticker", Dead).await;

    assert_eq!(task.liveness.runs(), 11, "the first run and ten restarts");
    assert_eq!(task.liveness.most(), 1);
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}
on_both_runtimes!(
    permanent_without_back_off,
    a_permanent_task_without_back_off_runs_until_its_restart_limit()
);
