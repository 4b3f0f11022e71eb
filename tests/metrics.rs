//! Metrics (feature `metrics`), seen through `metrics-util`'s debugging recorder: the counters,
//! the gauge and the histogram of the documented table, with their labels.
#![cfg(feature = "metrics")]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Scripted, Step};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use task_supervisor::{task_fn, SupervisorBuilder};

/// Every series of the snapshot: (name, sorted labels) to its value.
type Series = BTreeMap<(String, Vec<(String, String)>), DebugValue>;

fn series(snapshotter: &Snapshotter) -> Series {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    labels.sort();
    labels
}

fn counter(series: &Series, name: &str, pairs: &[(&str, &str)]) -> u64 {
    match series.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Counter(value)) => *value,
        other => panic!("{name} {pairs:?}: {other:?} in {series:#?}"),
    }
}

fn gauge(series: &Series, status: &str) -> f64 {
    match series.get(&(
        "task_supervisor_tasks".to_owned(),
        labels(&[("status", status)]),
    )) {
        Some(DebugValue::Gauge(value)) => value.into_inner(),
        None => 0.0,
        other => panic!("gauge {status}: {other:?}"),
    }
}

/// One test, since the recorder is the process's (the blocked-poll watcher records from a
/// thread of its own, which a thread-local recorder would not see).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_metrics_are_recorded_with_their_labels() {
    std::panic::set_hook(Box::new(|_| {}));
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let blocked = Arc::new(AtomicBool::new(false));
    let returned = Arc::clone(&blocked);
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(Duration::from_millis(5))
        .with_restart_jitter(0.0)
        .with_max_restart_attempts(2)
        .with_timeout_threshold(Duration::from_millis(150))
        .with_heartbeat_interval(Duration::from_millis(20))
        .with_blocked_poll_threshold(Duration::from_millis(20))
        .with_task("fails", Scripted::always(Step::Fail))
        .with_task("panics", Scripted::new([Step::Panic], Step::Pend))
        .with_task("completes", Scripted::always(Step::Complete))
        .with_task(
            "hangs",
            Scripted::new(
                [Step::BeatThenHang {
                    every: Duration::from_millis(5),
                    beats: 1,
                }],
                Step::Pend,
            ),
        )
        .with_task(
            "blocks",
            task_fn(move || {
                let returned = Arc::clone(&returned);
                async move {
                    if !returned.swap(true, Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(250));
                    }
                    std::future::pending().await
                }
            }),
        )
        .build()
        .run();

    tokio::time::sleep(Duration::from_millis(600)).await;
    let during = series(&snapshotter);
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
    let after = series(&snapshotter);
    let _ = std::panic::take_hook();

    let runs = "task_supervisor_runs_total";
    assert_eq!(
        counter(&during, runs, &[("task", "fails"), ("outcome", "failed")]),
        3
    );
    assert_eq!(
        counter(
            &during,
            runs,
            &[("task", "panics"), ("outcome", "panicked")]
        ),
        1
    );
    assert_eq!(
        counter(
            &during,
            runs,
            &[("task", "completes"), ("outcome", "completed")]
        ),
        1
    );
    assert_eq!(
        counter(&during, runs, &[("task", "hangs"), ("outcome", "hung")]),
        1
    );
    assert_eq!(
        counter(
            &during,
            "task_supervisor_restarts_total",
            &[("task", "fails")]
        ),
        2
    );
    assert_eq!(
        counter(
            &during,
            "task_supervisor_panics_total",
            &[("task", "panics")]
        ),
        1
    );
    assert_eq!(
        counter(&during, "task_supervisor_hangs_total", &[("task", "hangs")]),
        1
    );
    assert_eq!(
        counter(
            &during,
            "task_supervisor_blocked_polls_total",
            &[("task", "blocks")]
        ),
        1
    );
    // fails: dead; completes: completed; the three others healthy.
    assert_eq!(gauge(&during, "dead"), 1.0);
    assert_eq!(gauge(&during, "completed"), 1.0);
    assert_eq!(gauge(&during, "healthy"), 3.0);
    assert_eq!(gauge(&during, "starting"), 0.0);
    let durations = during
        .get(&(
            "task_supervisor_run_duration_seconds".to_owned(),
            labels(&[("task", "hangs")]),
        ))
        .expect("a run of hangs ended");
    match durations {
        DebugValue::Histogram(values) => {
            assert_eq!(values.len(), 1, "{values:?}");
            // Its last beat at 0, hung 150 ms later, dropped at once.
            let seconds = values[0].into_inner();
            assert!((0.14..0.5).contains(&seconds), "{seconds}");
        }
        other => panic!("not a histogram: {other:?}"),
    }
    // A snapshot drains what it reads: `after` holds what changed since `during`.
    for status in [
        "created",
        "starting",
        "healthy",
        "failed",
        "completed",
        "dead",
    ] {
        assert_eq!(
            gauge(&during, status) + gauge(&after, status),
            0.0,
            "{status}: the supervisor has stopped, its tasks are gone"
        );
    }
}
