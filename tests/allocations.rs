//! What a run allocates: a closure task's future lives in its driver (the inline path), while
//! a `#[async_trait]` task's future is a box of its own (the boxed path). Counted with a global
//! allocator that counts, on a current-thread runtime, so the counts are exact.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use task_supervisor::{task_fn, SupervisedTask, SupervisorBuilder, TaskResult, TaskStatus};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const TASKS: usize = 1000;

/// Not zero-sized, as a real task is not: its registered instance and each run's clone take an
/// allocation each, as a closure task's template does.
#[derive(Clone)]
struct Sleeper {
    _id: u64,
}

#[async_trait]
impl SupervisedTask for Sleeper {
    async fn run(&mut self) -> TaskResult {
        std::future::pending().await
    }
}

/// Allocations made from the first `add_task` until all `TASKS` tasks are `Healthy`, with the
/// names made beforehand.
async fn allocations_to_start<T: SupervisedTask + Clone>(task: T) -> usize {
    let handle = SupervisorBuilder::new()
        .without_blocked_poll_detection()
        .build()
        .run();
    let names: Vec<String> = (0..TASKS).map(|i| format!("task-{i}")).collect();
    tokio::task::yield_now().await;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for name in &names {
        handle.add_task(name, task.clone()).unwrap();
    }
    while handle
        .task_statuses()
        .unwrap()
        .iter()
        .filter(|(_, status)| *status == TaskStatus::Healthy)
        .count()
        < TASKS
    {
        tokio::task::yield_now().await;
    }
    let made = ALLOCATIONS.load(Ordering::Relaxed) - before;
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
    made
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_closure_run_allocates_no_box_for_its_future() {
    let boxed = allocations_to_start(Sleeper { _id: 7 }).await;
    let inline = allocations_to_start(task_fn(std::future::pending)).await;

    assert!(
        inline + TASKS <= boxed,
        "{TASKS} closure tasks made {inline} allocations to start, {TASKS} boxed ones {boxed}: \
         the inline path should save at least the one box per run"
    );
    // And no more than the box and the instance's clone: everything else is the same.
    assert!(
        boxed <= inline + 2 * TASKS + TASKS / 10,
        "{inline} against {boxed}"
    );
}
