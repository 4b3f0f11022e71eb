//! Blocked-poll detection: a poll that holds its thread is reported while it blocks, by a
//! watcher on an OS thread, on both runtime flavours.
//!
//! A blocked thread is blocked in real time, so these tests block for real: each poll blocks
//! ten times longer than the threshold, so that the watcher (which samples every quarter of
//! it) sees it with a wide margin.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use task_supervisor::{task_fn, Event, EventKind, SupervisorBuilder, SupervisorHandle};
use tokio::sync::broadcast;

const THRESHOLD: Duration = Duration::from_millis(40);
const BLOCK: Duration = Duration::from_millis(400);

/// Receives events on an OS thread (the runtime's may be the one blocked) until `until`.
fn watch_on_a_thread(
    mut events: broadcast::Receiver<Event>,
    until: impl Fn(&EventKind) -> bool + Send + 'static,
    returned: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Event, bool)>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            match events.try_recv() {
                Ok(event) => {
                    let done = until(&event.kind);
                    seen.push((event, returned.load(Ordering::SeqCst)));
                    if done {
                        break;
                    }
                }
                Err(broadcast::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => break,
            }
        }
        seen
    })
}

/// A task whose first poll sleeps `BLOCK` on its thread, then says it returned.
fn blocker(returned: &Arc<AtomicBool>) -> impl task_supervisor::SupervisedTask + Clone {
    let returned = Arc::clone(returned);
    task_fn(move || {
        let returned = Arc::clone(&returned);
        async move {
            std::thread::sleep(BLOCK);
            returned.store(true, Ordering::SeqCst);
            std::future::pending().await
        }
    })
}

async fn a_blocked_poll_is_reported_while_it_blocks_then_unblocked() {
    let handle: SupervisorHandle = SupervisorBuilder::new()
        .with_blocked_poll_threshold(THRESHOLD)
        .build()
        .run();
    let returned = Arc::new(AtomicBool::new(false));
    let watcher = watch_on_a_thread(
        handle.events(),
        |kind| matches!(kind, EventKind::Unblocked { .. }),
        Arc::clone(&returned),
    );
    let flag_seen = {
        let handle = handle.clone();
        let returned = Arc::clone(&returned);
        std::thread::spawn(move || {
            // The task's info says so while it blocks.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline && !returned.load(Ordering::SeqCst) {
                if let Ok(Some(info)) = handle.task_info("blocker") {
                    if info.blocked_for.is_some() {
                        return Some(returned.load(Ordering::SeqCst));
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        })
    };

    handle.add_task("blocker", blocker(&returned)).unwrap();
    let seen = tokio::task::spawn_blocking(move || watcher.join().unwrap())
        .await
        .unwrap();

    let blocked = seen
        .iter()
        .find(|(event, _)| matches!(event.kind, EventKind::Blocked { .. }))
        .expect("the blocked poll was reported");
    assert_eq!(blocked.0.task.as_deref(), Some("blocker"));
    assert!(!blocked.1, "reported before the poll returned");
    let EventKind::Blocked { blocked_for } = blocked.0.kind else {
        unreachable!()
    };
    assert!(blocked_for >= THRESHOLD, "{blocked_for:?}");
    let (unblocked, after_return) = seen.last().expect("an unblock");
    let EventKind::Unblocked { blocked_for } = unblocked.kind else {
        panic!("expected the unblock last, got {:?}", unblocked.kind);
    };
    assert!(*after_return, "unblocked only once the poll returned");
    assert!(blocked_for >= BLOCK / 2, "{blocked_for:?} in all");
    assert_eq!(
        tokio::task::spawn_blocking(move || flag_seen.join().unwrap())
            .await
            .unwrap(),
        Some(false),
        "the info's flag was up before the poll returned"
    );
    // The flag clears once the poll has returned.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let info = handle.task_info("blocker").unwrap().unwrap();
        if info.blocked_for.is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flag never cleared"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn on_a_current_thread_runtime() {
    a_blocked_poll_is_reported_while_it_blocks_then_unblocked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_multi_thread_runtime() {
    a_blocked_poll_is_reported_while_it_blocks_then_unblocked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_work_that_yields_often_is_never_reported() {
    let handle = SupervisorBuilder::new()
        .with_blocked_poll_threshold(THRESHOLD)
        .build()
        .run();
    let mut events = handle.events();
    let done = Arc::new(AtomicBool::new(false));
    let finished = Arc::clone(&done);
    handle
        .add_task(
            "busy",
            task_fn(move || {
                let finished = Arc::clone(&finished);
                async move {
                    // 400 ms of work in polls of 5 ms: never one long poll.
                    for _ in 0..80 {
                        std::thread::sleep(Duration::from_millis(5));
                        tokio::task::yield_now().await;
                    }
                    finished.store(true, Ordering::SeqCst);
                    Ok(())
                }
            }),
        )
        .unwrap();
    while !done.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(THRESHOLD).await;

    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event.kind,
                EventKind::Blocked { .. } | EventKind::Unblocked { .. }
            ),
            "{event:?}"
        );
    }
    handle.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_supervisor_hears_of_its_own_blocked_polls_only() {
    let quiet = SupervisorBuilder::new()
        .with_blocked_poll_threshold(THRESHOLD)
        .with_task("idle", task_fn(std::future::pending))
        .build()
        .run();
    let loud = SupervisorBuilder::new()
        .with_blocked_poll_threshold(THRESHOLD)
        .build()
        .run();
    let mut quiet_events = quiet.events();
    let returned = Arc::new(AtomicBool::new(false));
    let watcher = watch_on_a_thread(
        loud.events(),
        |kind| matches!(kind, EventKind::Unblocked { .. }),
        Arc::clone(&returned),
    );

    loud.add_task("blocker", blocker(&returned)).unwrap();
    let seen = tokio::task::spawn_blocking(move || watcher.join().unwrap())
        .await
        .unwrap();

    assert!(seen
        .iter()
        .any(|(event, _)| matches!(event.kind, EventKind::Blocked { .. })));
    while let Ok(event) = quiet_events.try_recv() {
        assert!(
            !matches!(event.kind, EventKind::Blocked { .. }),
            "the other supervisor's block: {event:?}"
        );
    }
    quiet.shutdown().unwrap();
    loud.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_can_be_turned_off() {
    let handle = SupervisorBuilder::new()
        .without_blocked_poll_detection()
        .build()
        .run();
    let mut events = handle.events();
    let returned = Arc::new(AtomicBool::new(false));

    handle.add_task("blocker", blocker(&returned)).unwrap();
    while !returned.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(THRESHOLD).await;

    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event.kind, EventKind::Blocked { .. }),
            "{event:?}"
        );
    }
    handle.shutdown().unwrap();
}
