//! Where the loop runs on a multi-thread runtime: beside a caller that keeps its worker busy.
//!
//! Tokio puts a task spawned or woken from a worker in that worker's LIFO slot, which other
//! workers cannot steal from. A caller that adds tasks and then keeps its worker busy must not
//! hold the loop (and so the start of every task it added) back until it yields.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use task_supervisor::{
    SupervisedTask, SupervisorBuilder, SupervisorHandle, TaskResult, TaskStatus,
};

/// Marks that its run has begun, then waits.
#[derive(Clone)]
struct Marks(Arc<AtomicBool>);

#[async_trait]
impl SupervisedTask for Marks {
    async fn run(&mut self) -> TaskResult {
        self.0.store(true, Ordering::Release);
        std::future::pending().await
    }
}

/// Keeps the current worker busy, never yielding, until `entered` is set. Gives up (and
/// returns `false`) after ten seconds, so that a regression fails instead of hanging.
fn spin_until(entered: &AtomicBool) -> bool {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !entered.load(Ordering::Acquire) {
        if Instant::now() > give_up {
            return false;
        }
        std::hint::spin_loop();
    }
    true
}

/// Adds a task and spins until its run has begun, all on one worker, without yielding.
fn add_and_spin(handle: &SupervisorHandle, name: &str) -> bool {
    let entered = Arc::new(AtomicBool::new(false));
    handle
        .add_task(name, Marks(Arc::clone(&entered)))
        .expect("add_task");
    spin_until(&entered)
}

/// Runs `body` on one of the runtime's workers (a test's own body runs on the runtime's main
/// thread, outside them, where nothing is scheduled in a LIFO slot), then shuts the supervisor
/// it returns down. Returns whether the body saw its tasks start.
async fn on_a_worker(
    body: impl Future<Output = (SupervisorHandle, bool)> + Send + 'static,
) -> bool {
    let (handle, started) = tokio::spawn(body).await.expect("the spawned test body");
    handle.shutdown().expect("shutdown");
    started
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_built_with_a_task_starts_it_while_its_creator_keeps_the_worker_busy() {
    assert!(
        on_a_worker(async {
            let entered = Arc::new(AtomicBool::new(false));
            let handle = SupervisorBuilder::new()
                .with_task("built-in", Marks(Arc::clone(&entered)))
                .build()
                .run();
            let started = spin_until(&entered);
            (handle, started)
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_supervisor_starts_tasks_while_its_creator_keeps_the_worker_busy() {
    assert!(
        on_a_worker(async {
            let handle = SupervisorBuilder::new().build().run();
            let started = add_and_spin(&handle, "first");
            (handle, started)
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_loop_woken_by_an_add_runs_beside_the_caller() {
    assert!(
        on_a_worker(async {
            let handle = SupervisorBuilder::new().build().run();
            // Let the loop go idle, waiting for its next message, before the add wakes it.
            let warm_up = Arc::new(AtomicBool::new(false));
            handle
                .add_task("warm-up", Marks(Arc::clone(&warm_up)))
                .expect("add_task");
            while handle.get_task_status("warm-up").await != Ok(Some(TaskStatus::Healthy)) {
                tokio::task::yield_now().await;
            }
            let started = (0..3).all(|round| add_and_spin(&handle, &format!("task-{round}")));
            (handle, started)
        })
        .await
    );
}
