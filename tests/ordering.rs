//! Ordered start and shutdown: tasks start in registration order; a shutdown stops them all at
//! once or in reverse order, within a bound.

mod common;

use std::time::Duration;

use common::{settle, Log, Logged, Plan, Scripted, Step};
use task_supervisor::{ShutdownOrder, SupervisorBuilder, SupervisorError, TaskSpec};

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);

fn serving(name: &'static str, stop_in: Duration, log: &Log) -> Logged {
    Logged::new(name, Plan::Serve { stop_in }, log)
}

fn three(order: ShutdownOrder, log: &Log) -> SupervisorBuilder {
    SupervisorBuilder::new()
        .with_shutdown_order(order)
        .with_task("a", serving("a", MS * 100, log))
        .with_task("b", serving("b", MS * 100, log))
        .with_task("c", serving("c", MS * 100, log))
}

#[tokio::test(start_paused = true)]
async fn initial_tasks_start_in_registration_order() {
    let log = Log::default();
    let names = ["zeta", "alpha", "mid", "beta", "omega"];
    let mut builder = SupervisorBuilder::new();
    for name in names {
        builder = builder.with_task(name, serving(name, MS, &log));
    }
    let handle = builder.build().run();
    settle().await;

    let started: Vec<String> = names.iter().map(|name| format!("{name} started")).collect();
    assert_eq!(log.entries(), started);
    handle.shutdown().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_concurrent_shutdown_asks_every_run_at_once() {
    let log = Log::default();
    let handle = three(ShutdownOrder::Concurrent, &log).build().run();
    settle().await;
    let asked = tokio::time::Instant::now();

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    assert_eq!(
        tokio::time::Instant::now() - asked,
        MS * 100,
        "all stopped together"
    );
    let entries = log.entries();
    let cancelled = entries
        .iter()
        .position(|entry| entry == "c cancelled")
        .unwrap();
    let first_end = entries
        .iter()
        .position(|entry| entry.ends_with("ended"))
        .unwrap();
    assert!(
        cancelled < first_end,
        "every run was asked before any ended: {entries:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reverse_shutdown_stops_each_task_after_every_later_one_ended() {
    let log = Log::default();
    let handle = three(ShutdownOrder::Reverse, &log).build().run();
    settle().await;
    let asked = tokio::time::Instant::now();

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    assert_eq!(
        tokio::time::Instant::now() - asked,
        MS * 300,
        "one after another"
    );
    assert_eq!(
        log.entries()[3..],
        [
            "c cancelled",
            "c ended",
            "b cancelled",
            "b ended",
            "a cancelled",
            "a ended"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_reverse_shutdown_gives_each_task_its_own_grace_period() {
    let log = Log::default();
    let stubborn = Scripted::always(Step::IgnoreCancellation);
    let handle = SupervisorBuilder::new()
        .with_shutdown_order(ShutdownOrder::Reverse)
        .with_grace_period(SECOND * 5)
        .with_task("first", serving("first", MS * 10, &log))
        .with_task_spec(
            "stubborn",
            TaskSpec::new(stubborn.clone()).with_grace_period(MS * 200),
        )
        .with_task("idle", Scripted::always(Step::Pend))
        .with_task("last", serving("last", MS * 10, &log))
        .build()
        .run();
    settle().await;
    let asked = tokio::time::Instant::now();

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    // last: 10 ms; idle: dropped at once (it never asked for its token); stubborn: its own
    // 200 ms grace; first: 10 ms.
    assert_eq!(tokio::time::Instant::now() - asked, MS * 220);
    assert_eq!(stubborn.liveness.dropped_at()[0] - asked, MS * 210);
    assert_eq!(
        log.position("first cancelled"),
        log.position("last ended") + 1
    );
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_bound_drops_every_run_still_alive() {
    let stubborn = Scripted::always(Step::IgnoreCancellation);
    let handle = SupervisorBuilder::new()
        .with_grace_period(SECOND * 60)
        .with_shutdown_timeout(SECOND)
        .with_task("stubborn", stubborn.clone())
        .build()
        .run();
    settle().await;
    let asked = tokio::time::Instant::now();

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    assert_eq!(tokio::time::Instant::now() - asked, SECOND);
    assert_eq!(stubborn.liveness.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_bound_covers_a_whole_reverse_shutdown() {
    let log = Log::default();
    let handle = SupervisorBuilder::new()
        .with_shutdown_order(ShutdownOrder::Reverse)
        .with_shutdown_timeout(MS * 250)
        .with_task("a", serving("a", MS * 100, &log))
        .with_task("b", serving("b", MS * 100, &log))
        .with_task("c", serving("c", MS * 100, &log))
        .build()
        .run();
    settle().await;
    let asked = tokio::time::Instant::now();

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    // c and b stop in turn (200 ms); 50 ms into a's stop the bound drops it.
    assert_eq!(tokio::time::Instant::now() - asked, MS * 250);
    assert!(log.entries().contains(&"a cancelled".to_owned()));
    assert_eq!(log.count("a ended"), 1);
}

#[tokio::test(start_paused = true)]
async fn over_its_restart_intensity_a_supervisor_stops_its_tasks_in_reverse_order() {
    let log = Log::default();
    let handle = SupervisorBuilder::new()
        .with_restart_intensity(0, SECOND)
        .with_task("a", serving("a", MS * 10, &log))
        .with_task("b", serving("b", MS * 10, &log))
        .with_task(
            "fails",
            Logged::new("fails", Plan::FailOnceAfter { after: MS }, &log),
        )
        .with_task("c", serving("c", MS * 10, &log))
        .build()
        .run();

    let result = handle.wait().await;

    assert!(
        matches!(
            result,
            Err(SupervisorError::RestartIntensityExceeded { .. })
        ),
        "{result:?}"
    );
    let ends: Vec<String> = log
        .entries()
        .into_iter()
        .filter(|entry| entry.ends_with("ended"))
        .collect();
    assert_eq!(ends, ["fails ended", "c ended", "b ended", "a ended"]);
}

/// A run already stopping (here for a restart) when the supervisor ends keeps its grace
/// deadline: it is dropped when it passes, and the shutdown completes. (The chaos soak found
/// a shutdown that cleared it and waited forever.)
#[tokio::test(start_paused = true)]
async fn a_run_stopping_when_the_shutdown_begins_is_still_dropped_after_its_grace() {
    for order in [ShutdownOrder::Concurrent, ShutdownOrder::Reverse] {
        let stubborn = Scripted::always(Step::IgnoreCancellation);
        let handle = SupervisorBuilder::new()
            .with_shutdown_order(order)
            .with_grace_period(MS * 300)
            .with_task("stubborn", stubborn.clone())
            .build()
            .run();
        settle().await;
        let asked = tokio::time::Instant::now();

        handle.restart("stubborn").unwrap();
        tokio::time::sleep(MS * 100).await;
        handle.shutdown().unwrap();
        let waited = tokio::time::timeout(SECOND * 60, handle.wait()).await;

        assert_eq!(waited, Ok(Ok(())), "{order:?}");
        assert_eq!(tokio::time::Instant::now() - asked, MS * 300, "{order:?}");
        assert_eq!(stubborn.liveness.live(), 0);
        assert_eq!(
            stubborn.liveness.runs(),
            1,
            "the restart never started a run"
        );
    }
}
