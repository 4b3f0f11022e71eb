//! Lifecycle events: every kind, in order, with the task, the attempt and the time.

mod common;

use std::time::Duration;

use common::{Scripted, Step};
use task_supervisor::{
    Event, EventKind, Strategy, SupervisorBuilder, SupervisorError, SupervisorHandle,
};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

fn builder() -> SupervisorBuilder {
    SupervisorBuilder::new()
        .with_restart_jitter(0.0)
        .with_base_restart_delay(MS * 100)
        .with_max_restart_attempts(1)
}

/// Receives events until `last` (inclusive), keeping those of `task` (and the supervisor's).
async fn until(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    task: &str,
    last: impl Fn(&EventKind) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let wait = async {
        loop {
            let event = events.recv().await.expect("the stream is open");
            let ours = event.task.as_deref().map_or(true, |name| name == task);
            let done = ours && last(&event.kind);
            if ours {
                seen.push(event);
            }
            if done {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("the last event came");
    seen
}

fn kinds(events: &[Event]) -> Vec<EventKind> {
    events.iter().map(|event| event.kind.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_failing_task_starts_fails_is_rescheduled_and_dies() {
    let handle = builder().build().run();
    let mut events = handle.events();
    let start = Instant::now();

    handle
        .add_task("flaky", Scripted::always(Step::Fail))
        .unwrap();
    let seen = until(&mut events, "flaky", |kind| {
        matches!(kind, EventKind::Dead { .. })
    })
    .await;

    let reason: std::sync::Arc<str> = "scripted failure".into();
    assert_eq!(
        kinds(&seen),
        [
            EventKind::Started,
            EventKind::Failed {
                reason: reason.clone()
            },
            EventKind::RestartScheduled { delay: MS * 100 },
            EventKind::Started,
            EventKind::Failed {
                reason: reason.clone()
            },
            EventKind::Dead { reason },
        ]
    );
    let attempts: Vec<u32> = seen.iter().map(|event| event.attempt).collect();
    assert_eq!(attempts, [0, 0, 1, 1, 1, 1]);
    let at: Vec<Duration> = seen.iter().map(|event| event.at - start).collect();
    let zero = Duration::ZERO;
    assert_eq!(at, [zero, zero, zero, MS * 100, MS * 100, MS * 100]);
    assert!(seen
        .iter()
        .all(|event| event.task.as_deref() == Some("flaky")));
}

#[tokio::test(start_paused = true)]
async fn a_panic_and_a_hang_have_events_of_their_own() {
    std::panic::set_hook(Box::new(|_| {}));
    let handle = builder()
        .with_timeout_threshold(MS * 300)
        .with_heartbeat_interval(MS * 50)
        .build()
        .run();
    let mut events = handle.events();

    handle
        .add_task("panics", Scripted::new([Step::Panic], Step::Pend))
        .unwrap();
    let panicked = until(&mut events, "panics", |kind| {
        matches!(kind, EventKind::Panicked { .. })
    })
    .await;
    handle
        .add_task(
            "hangs",
            Scripted::new(
                [Step::BeatThenHang {
                    every: MS * 10,
                    beats: 1,
                }],
                Step::Pend,
            ),
        )
        .unwrap();
    let hung = until(&mut events, "hangs", |kind| {
        matches!(kind, EventKind::RestartScheduled { .. })
    })
    .await;
    let _ = std::panic::take_hook();

    assert_eq!(
        panicked.last().unwrap().kind,
        EventKind::Panicked {
            message: "scripted panic".into()
        }
    );
    assert_eq!(
        kinds(&hung),
        [
            EventKind::Started,
            EventKind::Healthy,
            EventKind::HeartbeatMissed { timeout: MS * 300 },
            EventKind::RestartScheduled { delay: MS * 100 },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn kills_completions_and_the_supervisors_end_are_reported() {
    let handle = builder().build().run();
    let mut events = handle.events();
    handle
        .add_task("once", Scripted::always(Step::Complete))
        .unwrap();
    handle
        .add_task("killed", Scripted::always(Step::Pend))
        .unwrap();
    until(&mut events, "killed", |kind| *kind == EventKind::Healthy).await;

    handle.kill_task("killed").unwrap();
    handle.shutdown().unwrap();
    let mut rest = Vec::new();
    while let Ok(event) = events.recv().await {
        rest.push(event);
    }

    assert_eq!(
        kinds(&rest),
        [
            EventKind::Killed,
            EventKind::Stopping,
            EventKind::Stopped { outcome: Ok(()) }
        ]
    );
    assert_eq!(rest[1].task, None, "the supervisor's own");
    assert_eq!(
        events.recv().await,
        Err(RecvError::Closed),
        "Stopped is the last"
    );
}

#[tokio::test(start_paused = true)]
async fn a_group_restart_and_an_exceeded_intensity_are_reported() {
    let handle = builder()
        .with_strategy(Strategy::OneForAll)
        .with_unlimited_restarts()
        .with_restart_intensity(1, MS * 1000)
        .with_task("steady", Scripted::always(Step::Pend))
        .with_task("flaky", Scripted::always(Step::FailAfter { work: MS * 10 }))
        .build()
        .run();
    let mut events = handle.events();

    let seen = until(&mut events, "flaky", |kind| {
        matches!(kind, EventKind::Stopped { .. })
    })
    .await;

    let kinds = kinds(&seen);
    assert!(kinds.contains(&EventKind::GroupRestart {
        strategy: Strategy::OneForAll,
        tasks: 2
    }));
    let exceeded = EventKind::IntensityExceeded {
        restarts: 2,
        within: MS * 1000,
    };
    let at = kinds
        .iter()
        .position(|kind| *kind == exceeded)
        .expect("reported");
    assert_eq!(
        kinds[at + 1..],
        [
            EventKind::Stopping,
            EventKind::Stopped {
                outcome: Err(SupervisorError::RestartIntensityExceeded {
                    restarts: 2,
                    within: MS * 1000
                })
            }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_subscriber_is_told_what_it_missed_and_slows_nothing() {
    let task = Scripted::always(Step::Fail);
    let handle: SupervisorHandle = SupervisorBuilder::new()
        .with_base_restart_delay(Duration::ZERO)
        .with_unlimited_restarts()
        .build()
        .run();
    let mut slow = handle.events();

    handle.add_task("crash-loop", task.clone()).unwrap();
    while task.liveness.runs() < 5_000 {
        tokio::task::yield_now().await;
    }

    // Three events a run (started, failed, rescheduled): far more than the stream holds.
    match slow.try_recv() {
        Err(TryRecvError::Lagged(missed)) => assert!(missed > 4_000, "missed {missed}"),
        other => panic!("expected to have lagged, got {other:?}"),
    }
    let next = slow.try_recv().expect("the newest events are kept");
    assert_eq!(next.task.as_deref(), Some("crash-loop"));
}

#[tokio::test(start_paused = true)]
async fn subscribing_after_the_end_gets_a_closed_stream() {
    let handle = builder().build().run();
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    let mut late = handle.events();

    assert_eq!(late.recv().await, Err(RecvError::Closed));
}
