//! Supervision trees: a supervisor as a task of another, failures escalating up, stops going
//! down, and the whole tree in one snapshot (invariant 10).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{advance, settle, Changes, Log, Logged, Plan, Scripted, Step};
use task_supervisor::{
    AutoShutdown, ChildSupervisor, RestartPolicy, Strategy, SupervisedTask, SupervisorBuilder,
    SupervisorHandleError, TaskContext, TaskResult, TaskSpec, TaskStatus,
};
use TaskStatus::*;

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);

/// A child supervisor of two serving tasks, named `<prefix>-1` and `<prefix>-2`, that logs
/// each build.
fn serving_child(prefix: &'static str, log: &Log) -> ChildSupervisor {
    let log = log.clone();
    ChildSupervisor::new(move || {
        log.push(format!("{prefix} built"));
        let first: &'static str = Box::leak(format!("{prefix}-1").into_boxed_str());
        let second: &'static str = Box::leak(format!("{prefix}-2").into_boxed_str());
        SupervisorBuilder::new()
            .with_task(
                first,
                Logged::new(first, Plan::Serve { stop_in: MS * 10 }, &log),
            )
            .with_task(
                second,
                Logged::new(second, Plan::Serve { stop_in: MS * 10 }, &log),
            )
    })
}

fn root() -> SupervisorBuilder {
    SupervisorBuilder::new()
        .with_restart_jitter(0.0)
        .with_base_restart_delay(MS * 100)
}

#[tokio::test(start_paused = true)]
async fn a_childs_tasks_run_and_are_reached_through_the_parent() {
    let log = Log::default();
    let handle = root()
        .with_task("db", Scripted::always(Step::Pend))
        .with_task("web", serving_child("web", &log))
        .build()
        .run();
    settle().await;

    let web = handle.child("web").unwrap().expect("the child runs");
    assert_eq!(web.get_task_status("web-1").await, Ok(Some(Healthy)));
    assert_eq!(
        handle.child("db").map(|child| child.is_some()),
        Ok(false),
        "not a child supervisor"
    );
    assert_eq!(
        handle.child("nobody").map(|child| child.is_some()),
        Err(SupervisorHandleError::TaskNotFound {
            name: "nobody".into()
        })
    );
    let tree = handle.tree().unwrap();
    assert_eq!(
        tree.to_string(),
        "db (healthy)\nweb (healthy)\n  web-1 (healthy)\n  web-2 (healthy)\n"
    );
    assert_eq!(tree.tasks[1].child.as_ref().unwrap().tasks.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn stopping_the_parent_stops_the_child_and_its_tasks_first() {
    let log = Log::default();
    let handle = root()
        .with_task("web", serving_child("web", &log))
        .build()
        .run();
    settle().await;
    let web = handle.child("web").unwrap().unwrap();

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    // Each child task asked, then ended (10 ms), before the parent's wait() returned.
    for task in ["web-1", "web-2"] {
        assert_eq!(log.count(&format!("{task} cancelled")), 1, "{task}");
        assert_eq!(log.count(&format!("{task} ended")), 1, "{task}");
    }
    assert!(!web.is_running(), "the child has stopped");
}

#[tokio::test(start_paused = true)]
async fn a_child_that_gives_up_fails_and_the_parent_restarts_a_fresh_one() {
    let builds = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&builds);
    let child = ChildSupervisor::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        SupervisorBuilder::new()
            .with_restart_intensity(0, SECOND)
            .with_task("flaky", Scripted::always(Step::FailAfter { work: MS * 50 }))
    });
    let handle = root()
        .with_max_restart_attempts(2)
        .with_task("group", child)
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    let (_, failed) = changes.until("group", Failed).await;
    let (_, dead) = changes.until("group", Dead).await;

    assert_eq!(
        failed.reason.as_deref(),
        Some("restart intensity exceeded: a restart would have made 1 within 1s")
    );
    assert_eq!(
        builds.load(Ordering::SeqCst),
        3,
        "a fresh child for every run"
    );
    assert_eq!(
        dead.reason.as_deref(),
        failed.reason.as_deref(),
        "the parent's own limit ends it"
    );
    assert!(handle.is_running());
}

#[tokio::test(start_paused = true)]
async fn a_childs_significant_task_decides_how_its_run_ends() {
    let done = ChildSupervisor::new(|| {
        SupervisorBuilder::new()
            .with_auto_shutdown(AutoShutdown::AnySignificant)
            .with_task_spec(
                "import",
                TaskSpec::new(Scripted::always(Step::Complete)).significant(),
            )
            .with_task("helper", Scripted::always(Step::Pend))
    });
    let broken = ChildSupervisor::new(|| {
        SupervisorBuilder::new()
            .with_max_restart_attempts(0)
            .with_auto_shutdown(AutoShutdown::AnySignificant)
            .with_task_spec(
                "import",
                TaskSpec::new(Scripted::always(Step::Fail)).significant(),
            )
    });
    let handle = root()
        .with_task("done", done)
        .with_task_spec(
            "broken",
            TaskSpec::new(broken).with_restart_policy(RestartPolicy::Temporary),
        )
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    changes.until("done", Completed).await;
    let (_, died) = changes.until("broken", Dead).await;

    assert_eq!(
        died.reason.as_deref(),
        Some("significant task `import` died (scripted failure), so the supervisor stopped")
    );
    advance(SECOND).await;
    assert_eq!(
        handle.get_task_status("done").await,
        Ok(Some(Completed)),
        "its work is done: not restarted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restarted_childs_old_tasks_end_before_the_new_ones_start() {
    let log = Log::default();
    let handle = root()
        .with_task("web", serving_child("web", &log))
        .build()
        .run();
    settle().await;
    let old = handle.child("web").unwrap().unwrap();

    handle.restart("web").unwrap();
    advance(SECOND).await;

    let entries = log.entries();
    let second_build = entries
        .iter()
        .rposition(|entry| entry == "web built")
        .unwrap();
    for task in ["web-1", "web-2"] {
        let ended = log.position(&format!("{task} ended"));
        assert!(
            ended < second_build,
            "{task} outlived its child: {entries:?}"
        );
        assert_eq!(log.count(&format!("{task} started")), 2);
    }
    assert!(!old.is_running(), "the old child stopped");
    let new = handle.child("web").unwrap().unwrap();
    assert!(new.is_running());
    assert_eq!(new.get_task_status("web-1").await, Ok(Some(Healthy)));
}

#[tokio::test(start_paused = true)]
async fn past_the_parents_grace_the_child_drops_its_runs_and_the_run_ends_after_them() {
    let stubborn = Scripted::always(Step::IgnoreCancellation);
    let inner = stubborn.clone();
    let child = ChildSupervisor::new(move || {
        SupervisorBuilder::new()
            .with_grace_period(SECOND * 60)
            .with_task("stubborn", inner.clone())
    });
    let handle = root()
        .with_task_spec("child", TaskSpec::new(child).with_grace_period(MS * 500))
        .build()
        .run();
    settle().await;
    let asked = tokio::time::Instant::now();

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    // The child's own grace would be a minute: the parent's half second bounds the stop.
    assert_eq!(tokio::time::Instant::now() - asked, MS * 500);
    assert_eq!(
        stubborn.liveness.live(),
        0,
        "dropped before the parent's wait returned"
    );
    assert_eq!(stubborn.liveness.dropped_at()[0] - asked, MS * 500);
}

#[tokio::test(start_paused = true)]
async fn the_whole_tree_is_in_one_snapshot() {
    let log = Log::default();
    let middle = {
        let log = log.clone();
        ChildSupervisor::new(move || {
            SupervisorBuilder::new()
                .with_strategy(Strategy::RestForOne)
                .with_task("acceptor", Scripted::always(Step::Pend))
                .with_task("workers", serving_child("worker", &log))
        })
    };
    let handle = root().with_task("service", middle).build().run();
    settle().await;

    assert_eq!(
        handle.tree().unwrap().to_string(),
        "service (healthy)\n  acceptor (healthy)\n  workers (healthy)\n    worker-1 (healthy)\n    worker-2 (healthy)\n"
    );
    let workers = handle
        .child("service")
        .unwrap()
        .unwrap()
        .child("workers")
        .unwrap()
        .unwrap();
    assert_eq!(workers.get_task_status("worker-2").await, Ok(Some(Healthy)));
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
    assert_eq!(log.count("worker-1 ended"), 1);
}

#[tokio::test]
async fn a_child_supervisor_run_outside_a_supervisor_says_so() {
    let mut child = ChildSupervisor::new(SupervisorBuilder::new);

    let result = child.run().await;

    assert_eq!(
        result.unwrap_err().to_string(),
        "a child supervisor runs only as a task of another supervisor"
    );
}

#[tokio::test(start_paused = true)]
async fn a_childs_failure_under_one_for_all_restarts_its_siblings() {
    let log = Log::default();
    let failing = ChildSupervisor::new(|| {
        SupervisorBuilder::new()
            .with_restart_intensity(0, SECOND)
            .with_task("fails", Scripted::always(Step::FailAfter { work: MS * 50 }))
    });
    let handle = root()
        .with_strategy(Strategy::OneForAll)
        .with_max_restart_attempts(1)
        .with_task(
            "sibling",
            Logged::new("sibling", Plan::Serve { stop_in: MS }, &log),
        )
        .with_task("failing", failing)
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    changes.until("failing", Failed).await;
    changes.until("failing", Starting).await;
    settle().await;

    assert_eq!(log.count("sibling started"), 2, "restarted with the child");
    let (_, dead) = changes.until("failing", Dead).await;
    assert!(dead
        .reason
        .is_some_and(|reason| reason.contains("restart intensity")));
    handle.shutdown().unwrap();
    assert_eq!(handle.wait().await, Ok(()));
}

// Time-free, on both runtimes.

async fn after_the_roots_wait_no_run_of_any_level_is_alive() {
    let leaves: Vec<Scripted> = (0..4).map(|_| Scripted::always(Step::Pend)).collect();
    let grandchild = {
        let leaves = leaves.clone();
        ChildSupervisor::new(move || {
            SupervisorBuilder::new()
                .with_task("leaf-0", leaves[0].clone())
                .with_task("leaf-1", leaves[1].clone())
        })
    };
    let child = {
        let leaves = leaves.clone();
        ChildSupervisor::new(move || {
            SupervisorBuilder::new()
                .with_strategy(Strategy::OneForAll)
                .with_task("leaf-2", leaves[2].clone())
                .with_task("grandchild", grandchild.clone())
        })
    };
    let handle = SupervisorBuilder::new()
        .with_task("leaf-3", leaves[3].clone())
        .with_task("child", child)
        .build()
        .run();
    common::eventually("every leaf runs", || {
        leaves.iter().all(|leaf| leaf.liveness.live() == 1)
    })
    .await;

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    for leaf in &leaves {
        assert_eq!(leaf.liveness.live(), 0, "a leaf outlived the root's wait()");
        assert_eq!(leaf.liveness.runs(), 1);
    }
}
on_both_runtimes!(
    clean_tree_after_wait,
    after_the_roots_wait_no_run_of_any_level_is_alive()
);

// A stop that lands while a child is being built (multi-thread).

/// A child supervisor task that logs when each of its runs ends (its future is dropped).
#[derive(Clone)]
struct LoggedChild {
    inner: ChildSupervisor,
    log: Log,
}

struct LogOnDrop(Log, &'static str);

impl Drop for LogOnDrop {
    fn drop(&mut self) {
        self.0.push(self.1.to_owned());
    }
}

#[async_trait]
impl SupervisedTask for LoggedChild {
    async fn run(&mut self) -> TaskResult {
        let _ended = LogOnDrop(self.log.clone(), "the child's run ended");
        self.inner.run().await
    }
}

/// A task of the child that logs when an instance of it is dropped, and never ends.
#[derive(Clone)]
struct Held(Log);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.push("a task of the child dropped".to_owned());
    }
}

#[async_trait]
impl SupervisedTask for Held {
    async fn run(&mut self) -> TaskResult {
        std::future::pending().await
    }
}

/// The root stops the child's run (a shutdown, with `grace`) while the run builds its child:
/// after the run asked for its cancellation token, before the child is linked to the run.
/// The child must still be shut down, and gone, before the run ends (invariant 10).
///
/// With no grace period the root acts at once, while the child is still being built: the run
/// learns of it when it links the child, and has the child drop its runs itself.
async fn a_stop_during_the_childs_build(grace: Duration) {
    let log = Log::default();
    let (building, told) = std::sync::mpsc::channel::<()>();
    let building = std::sync::Mutex::new(building);
    let make_log = log.clone();
    let child = ChildSupervisor::new(move || {
        make_log.push("the child built".to_owned());
        let context = TaskContext::current().expect("made inside the run");
        let _ = building.lock().unwrap().send(());
        // Building takes a while: the stop lands meanwhile, and the root acts on it at once
        // (no grace) or once the grace is over.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !context.is_cancelled() && std::time::Instant::now() < deadline {
            std::thread::sleep(MS);
        }
        if context.is_cancelled() {
            make_log.push("stopped while building".to_owned());
        }
        std::thread::sleep(grace + MS * 200);
        SupervisorBuilder::new().with_task("held", Held(make_log.clone()))
    });
    let handle = SupervisorBuilder::new()
        .with_grace_period(grace)
        .with_task(
            "child",
            LoggedChild {
                inner: child,
                log: log.clone(),
            },
        )
        .build()
        .run();
    tokio::task::spawn_blocking(move || told.recv())
        .await
        .unwrap()
        .expect("the child is being built");

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
    tokio::time::sleep(MS * 100).await; // Real time, for a child left behind to end.

    let entries = log.entries();
    assert_eq!(log.count("stopped while building"), 1, "{entries:?}");
    assert_eq!(
        entries.last().map(String::as_str),
        Some("the child's run ended"),
        "the child outlived its run: {entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_whose_grace_ends_while_being_built_is_gone_before_its_run_ends() {
    a_stop_during_the_childs_build(MS * 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_stopped_without_grace_while_being_built_is_gone_before_its_run_ends() {
    a_stop_during_the_childs_build(Duration::ZERO).await;
}
