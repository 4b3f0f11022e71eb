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

// A closure task runs on the inline path: its future lives in the driver, not in a box. What
// follows checks that it behaves as every task does there, down to the context during drops.

/// Counts the live futures of a closure's runs, and whether each saw its run's context when
/// it was dropped.
#[derive(Default)]
struct Drops {
    live: AtomicU32,
    dropped: AtomicU32,
    dropped_in_context: AtomicU32,
}

struct Guard(Arc<Drops>);

impl Guard {
    fn new(drops: &Arc<Drops>) -> Self {
        drops.live.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(drops))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if TaskContext::current().is_some() {
            self.0.dropped_in_context.fetch_add(1, Ordering::SeqCst);
        }
        self.0.live.fetch_sub(1, Ordering::SeqCst);
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_closure_or_its_future_is_the_runs_panic() {
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(MS)
        .with_max_restart_attempts(0)
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    let before = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));

    handle
        .add_task(
            "in the closure",
            task_fn(|| -> std::future::Ready<task_supervisor::TaskResult> {
                panic!("before any future")
            }),
        )
        .unwrap();
    handle
        .add_task(
            "in the future",
            task_fn(|| async { panic!("on the first poll") }),
        )
        .unwrap();
    changes.until("in the closure", Dead).await;
    changes.until("in the future", Dead).await;
    std::panic::set_hook(before);

    // As the boxed path words them: the closure is called inside the run.
    assert_eq!(
        handle.last_failure("in the closure").unwrap().as_deref(),
        Some("panicked: before any future")
    );
    assert_eq!(
        handle.last_failure("in the future").unwrap().as_deref(),
        Some("panicked: on the first poll")
    );
    assert_eq!(changes.sequence("in the closure"), [Starting, Dead]);
}

#[tokio::test(start_paused = true)]
async fn the_closure_body_beats_for_its_run() {
    let handle = SupervisorBuilder::new()
        .with_timeout_threshold(MS * 200)
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    let contexts = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&contexts);

    handle
        .add_task(
            "beats once",
            task_fn(move || {
                // Before the future exists: the context is the run's already.
                if TaskContext::current().is_some() {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                heartbeat();
                std::future::pending()
            }),
        )
        .unwrap();
    changes.until("beats once", Healthy).await;
    // The one beat opted the run into hang detection: silent after it, it is hung.
    changes.until("beats once", Failed).await;

    assert!(contexts.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        handle.last_failure("beats once").unwrap().as_deref(),
        Some("hung: no heartbeat for 200ms")
    );
}

#[tokio::test(start_paused = true)]
async fn a_stopped_closure_run_is_dropped_in_its_context_before_the_next_starts() {
    let handle = SupervisorBuilder::new().build().run();
    let mut changes = Changes::watch(&handle);
    let drops = Arc::new(Drops::default());
    let counter = Arc::clone(&drops);
    let most_live = Arc::new(AtomicU32::new(0));
    let most = Arc::clone(&most_live);

    handle
        .add_task(
            "held",
            task_fn(move || {
                let guard = Guard::new(&counter);
                most.fetch_max(counter.live.load(Ordering::SeqCst), Ordering::SeqCst);
                async move {
                    let _guard = guard;
                    std::future::pending::<task_supervisor::TaskResult>().await
                }
            }),
        )
        .unwrap();
    changes.until("held", Healthy).await;
    for _ in 0..3 {
        handle.restart("held").unwrap();
        changes.until("held", Healthy).await;
    }
    handle.kill_task("held").unwrap();
    changes.until("held", Dead).await;
    common::eventually("the last run is dropped", || {
        drops.live.load(Ordering::SeqCst) == 0
    })
    .await;

    assert_eq!(drops.dropped.load(Ordering::SeqCst), 4);
    assert_eq!(
        drops.dropped_in_context.load(Ordering::SeqCst),
        4,
        "a run's drop finds its context, as on the boxed path"
    );
    assert_eq!(
        most_live.load(Ordering::SeqCst),
        1,
        "never two runs at once"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_crashing_closure_restarts_in_place_in_one_tokio_task() {
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(Duration::ZERO)
        .with_restart_jitter(0.0)
        .with_max_restart_attempts(1000)
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    let tasks = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let seen = Arc::clone(&tasks);

    handle
        .add_task(
            "crash",
            task_fn(move || {
                seen.lock().unwrap().insert(tokio::task::id());
                async { bail!("crash") }
            }),
        )
        .unwrap();
    changes.until("crash", Dead).await;

    assert_eq!(handle.task_info("crash").unwrap().unwrap().restarts, 1000);
    assert_eq!(
        tasks.lock().unwrap().len(),
        1,
        "every run in the one driver: restarted in place, never spawned"
    );
    changes.assert_valid_edges();
}
