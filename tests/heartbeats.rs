//! Heartbeats: a run that beats and then falls silent is hung, stopped and restarted; a run
//! that never beats is never stopped for silence.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{advance, every_task_final, finish, settle, Changes, Scripted, Step};
use task_supervisor::{bail, SupervisorBuilder, TaskStatus};
use TaskStatus::*;

const MS: Duration = Duration::from_millis(1);
const TIMEOUT: Duration = Duration::from_millis(500);

fn builder() -> SupervisorBuilder {
    SupervisorBuilder::new()
        .with_timeout_threshold(TIMEOUT)
        .with_heartbeat_interval(Duration::from_millis(100))
        .with_health_check_initial_delay(Duration::from_secs(1))
        .with_base_restart_delay(Duration::from_secs(1))
        .with_restart_jitter(0.0)
}

#[tokio::test(start_paused = true)]
async fn hung_task_is_restarted_after_timeout() {
    let every = Duration::from_millis(100);
    let task = Scripted::new([Step::BeatThenHang { every, beats: 3 }], Step::Pend);
    let handle = builder().build().run();
    let mut changes = Changes::watch(&handle);
    let start = tokio::time::Instant::now();

    handle.add_task("hangs", task.clone()).unwrap();
    let (failed_at, failed) = changes.until("hangs", Failed).await;
    let (restarted_at, _) = changes.until("hangs", Starting).await;

    // Beats at 0, 100 and 200 ms; silent from then on.
    let last_beat = start + 2 * every;
    assert!(
        failed_at >= last_beat + TIMEOUT,
        "hung too early: {:?}",
        failed_at - start
    );
    assert!(
        failed_at <= last_beat + TIMEOUT + MS,
        "hung too late: {:?}",
        failed_at - start
    );
    assert!(failed.reason.unwrap().contains("hung"));
    assert_eq!(
        restarted_at - failed_at,
        Duration::from_secs(1),
        "the usual back-off"
    );
    assert_eq!(
        task.liveness.dropped_at()[0],
        failed_at,
        "the hung run was dropped at once"
    );
    assert_eq!(
        changes.sequence("hangs"),
        [Starting, Healthy, Failed, Starting, Healthy]
    );
    assert_eq!(task.liveness.most(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_task_without_heartbeats_is_never_killed_for_silence() {
    // A program written before heartbeats existed: it sets a timeout, its task never beats.
    let task = Scripted::always(Step::Pend);
    let handle = builder()
        .with_timeout_threshold(Duration::from_millis(10))
        .with_heartbeat_interval(Duration::from_millis(1))
        .with_task("quiet", task.clone())
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    advance(Duration::from_secs(600)).await;

    assert_eq!(task.liveness.runs(), 1);
    assert_eq!(
        handle.get_task_status("quiet").await.unwrap(),
        Some(Healthy)
    );
    assert_eq!(changes.sequence("quiet"), [Starting, Healthy]);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_keeps_beating_stays_healthy() {
    let task = Scripted::always(Step::BeatForever {
        every: Duration::from_millis(400),
    });
    let handle = builder().with_task("steady", task.clone()).build().run();
    let mut changes = Changes::watch(&handle);

    advance(Duration::from_secs(120)).await;

    assert_eq!(task.liveness.runs(), 1);
    assert_eq!(changes.sequence("steady"), [Starting, Healthy]);
}

#[tokio::test(start_paused = true)]
async fn a_declared_task_is_starting_until_its_first_beat() {
    let task = Scripted::new(
        [Step::BeatThenHang {
            every: Duration::ZERO,
            beats: 0,
        }],
        Step::BeatForever {
            every: Duration::from_millis(100),
        },
    )
    .declaring_heartbeats();
    let handle = builder().with_task("declared", task.clone()).build().run();
    settle().await;

    // Polled, but no beat yet: not proven alive.
    assert_eq!(task.liveness.runs(), 1);
    assert_eq!(
        handle.get_task_status("declared").await.unwrap(),
        Some(Starting)
    );
}

#[tokio::test(start_paused = true)]
async fn a_declared_task_that_never_beats_is_hung_after_the_start_up_grace() {
    let task = Scripted::new(
        [Step::Pend],
        Step::BeatForever {
            every: Duration::from_millis(100),
        },
    )
    .declaring_heartbeats();
    let handle = builder().build().run();
    let mut changes = Changes::watch(&handle);
    let start = tokio::time::Instant::now();

    handle.add_task("mute", task.clone()).unwrap();
    let (failed_at, _) = changes.until("mute", Failed).await;
    changes.until("mute", Healthy).await;

    // Initial delay (1 s) plus timeout (500 ms).
    assert_eq!(failed_at - start, Duration::from_millis(1500));
    assert_eq!(
        changes.sequence("mute"),
        [Starting, Failed, Starting, Healthy]
    );
}

#[tokio::test(start_paused = true)]
async fn a_declared_task_that_beats_late_but_within_the_grace_is_fine() {
    let task = Scripted::always(Step::BeatForever {
        every: Duration::from_millis(100),
    })
    .declaring_heartbeats();
    let late_start = Scripted::new(
        [Step::FailAfter {
            work: Duration::from_millis(1200),
        }],
        Step::Pend,
    );
    let handle = builder()
        .with_task("beats", task.clone())
        .with_task("control", late_start)
        .build()
        .run();

    advance(Duration::from_secs(10)).await;

    assert_eq!(task.liveness.runs(), 1);
    assert_eq!(
        handle.get_task_status("beats").await.unwrap(),
        Some(Healthy)
    );
}

#[tokio::test(start_paused = true)]
async fn detection_is_rounded_up_to_the_health_check_interval() {
    let every = Duration::from_millis(100);
    let task = Scripted::new([Step::BeatThenHang { every, beats: 1 }], Step::Pend);
    let handle = builder()
        .with_health_check_interval(Duration::from_millis(300))
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    let start = tokio::time::Instant::now();

    handle.add_task("coarse", task).unwrap();
    let (failed_at, _) = changes.until("coarse", Failed).await;

    // Silent from 0 ms, timeout 500 ms, checked on the 300 ms grid: caught at 600 ms.
    assert_eq!(failed_at - start, Duration::from_millis(600));
}

#[tokio::test(start_paused = true)]
async fn a_hung_task_uses_up_its_attempts_like_any_failure() {
    let task = Scripted::always(Step::BeatThenHang {
        every: Duration::from_millis(10),
        beats: 1,
    });
    let handle = builder()
        .with_max_restart_attempts(1)
        .with_task("always-hangs", task.clone())
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    finish(&handle).await;

    assert_eq!(task.liveness.runs(), 2);
    assert_eq!(task.liveness.live(), 0);
    assert_eq!(
        changes.sequence("always-hangs"),
        [Starting, Healthy, Failed, Starting, Healthy, Dead]
    );
}

#[tokio::test(start_paused = true)]
async fn heartbeats_from_a_context_moved_to_another_task_count() {
    use async_trait::async_trait;
    use task_supervisor::{SupervisedTask, TaskContext, TaskResult};

    #[derive(Clone)]
    struct Delegates;

    #[async_trait]
    impl SupervisedTask for Delegates {
        async fn run(&mut self) -> TaskResult {
            let context = TaskContext::current().unwrap();
            let beater = tokio::spawn(async move {
                loop {
                    context.heartbeat();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            beater.await?;
            Ok(())
        }

        fn sends_heartbeats(&self) -> bool {
            true
        }
    }

    let handle = builder().with_task("delegates", Delegates).build().run();
    let mut changes = Changes::watch(&handle);

    advance(Duration::from_secs(30)).await;

    assert_eq!(
        handle.get_task_status("delegates").await.unwrap(),
        Some(Healthy)
    );
    assert_eq!(changes.sequence("delegates"), [Starting, Healthy]);
}

// Regression: a task that declared heartbeats kept its start-up deadline after its first beat,
// so a hang right after that beat was caught up to the initial delay late.
#[tokio::test(start_paused = true)]
async fn a_declared_task_is_watched_from_its_first_beat() {
    let task = Scripted::new(
        [Step::BeatThenHang {
            every: Duration::from_millis(10),
            beats: 1,
        }],
        Step::Pend,
    )
    .declaring_heartbeats();
    let handle = builder()
        .with_health_check_initial_delay(Duration::from_secs(30))
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    let start = tokio::time::Instant::now();

    handle.add_task("beats-once", task).unwrap();
    let (failed_at, _) = changes.until("beats-once", Failed).await;

    assert_eq!(failed_at - start, TIMEOUT, "silent since its beat at 0 ms");
}

// Regression: deadlines were rounded up twice (by the supervisor, then by Tokio's timer), so
// a beat off the millisecond grid was caught up to 2 ms late.
#[tokio::test(start_paused = true)]
async fn a_hang_is_caught_within_a_millisecond_of_the_timeout() {
    use async_trait::async_trait;
    use task_supervisor::{heartbeat, SupervisedTask, TaskResult};

    #[derive(Clone)]
    struct OffGrid(Arc<Mutex<Option<tokio::time::Instant>>>);

    #[async_trait]
    impl SupervisedTask for OffGrid {
        async fn run(&mut self) -> TaskResult {
            heartbeat();
            *self.0.lock().unwrap() = Some(tokio::time::Instant::now());
            std::future::pending().await
        }
    }

    // The supervisor's clock starts off Tokio's millisecond grid, and the beat comes off both.
    tokio::time::advance(Duration::from_micros(300)).await;
    let handle = builder().build().run();
    let mut changes = Changes::watch(&handle);
    tokio::time::advance(Duration::from_micros(500)).await;
    let beat_at = Arc::new(Mutex::new(None));

    handle
        .add_task("off-grid", OffGrid(Arc::clone(&beat_at)))
        .unwrap();
    let (failed_at, _) = changes.until("off-grid", Failed).await;

    let beat_at = beat_at.lock().unwrap().expect("it beat");
    let silent_for = failed_at - beat_at;
    assert!(silent_for >= TIMEOUT, "{silent_for:?}");
    assert!(
        silent_for <= TIMEOUT + MS,
        "caught {:?} late",
        silent_for - TIMEOUT
    );
}

// Regression: an initial delay too long for the clock was treated as zero.
#[tokio::test(start_paused = true)]
async fn an_endless_start_up_grace_never_runs_out() {
    let task = Scripted::always(Step::Pend).declaring_heartbeats();
    let handle = builder()
        .with_health_check_initial_delay(Duration::MAX)
        .with_task("slow-start", task.clone())
        .build()
        .run();

    advance(Duration::from_secs(3600)).await;

    assert_eq!(task.liveness.runs(), 1);
    assert_eq!(
        handle.get_task_status("slow-start").await.unwrap(),
        Some(Starting)
    );
}

// Regression: the silence before a hang was detected counted as healthy time, so with a short
// stability period a task that always hangs got its attempts back and never died.
#[tokio::test(start_paused = true)]
async fn silence_does_not_count_as_stable_time() {
    let task = Scripted::always(Step::BeatThenHang {
        every: Duration::from_millis(10),
        beats: 1,
    });
    let handle = builder()
        .with_timeout_threshold(Duration::from_secs(2))
        .with_task_being_stable_after(Duration::from_secs(1))
        .with_max_restart_attempts(1)
        .with_task("hangs", task.clone())
        .build()
        .run();

    // Panics unless the task dies within 60 s.
    every_task_final(&handle).await;

    assert_eq!(
        handle.get_task_status("hangs").await,
        Ok(Some(Dead)),
        "the task used up its attempts"
    );
    assert_eq!(task.liveness.runs(), 2);
}

// A restart reuses the last run's shared state when nothing else holds it: the next run must
// start with no beat of the last one, or its own first beat would go unnoticed.
#[tokio::test(start_paused = true)]
async fn a_restarted_run_does_not_inherit_the_last_runs_beats() {
    let every = Duration::from_millis(10);
    let task = Scripted::new(
        [Step::BeatThenHang { every, beats: 3 }],
        Step::BeatForever { every },
    )
    .declaring_heartbeats();
    let handle = builder()
        .with_base_restart_delay(Duration::from_millis(10))
        .build()
        .run();
    let mut changes = Changes::watch(&handle);

    handle.add_task("fresh", task.clone()).unwrap();
    changes.until("fresh", Failed).await;
    let (restarted_at, _) = changes.until("fresh", Starting).await;
    let (healthy_at, _) = changes.until("fresh", Healthy).await;

    assert_eq!(
        healthy_at, restarted_at,
        "its first beat proved it alive at once"
    );
    assert_eq!(
        changes.sequence("fresh"),
        [Starting, Healthy, Failed, Starting, Healthy]
    );
}

// A context kept after its run ended belongs to that run: beating through it does nothing to
// the next run.
#[tokio::test(start_paused = true)]
async fn a_context_kept_from_an_ended_run_does_not_reach_the_next() {
    use async_trait::async_trait;
    use task_supervisor::{SupervisedTask, TaskContext, TaskResult};

    #[derive(Clone)]
    struct Leaks(Arc<Mutex<Option<TaskContext>>>);

    #[async_trait]
    impl SupervisedTask for Leaks {
        async fn run(&mut self) -> TaskResult {
            let first = {
                let mut kept = self.0.lock().unwrap();
                let first = kept.is_none();
                if first {
                    *kept = TaskContext::current();
                }
                first
            };
            if first {
                bail!("first run");
            }
            std::future::pending().await
        }
    }

    let kept = Arc::new(Mutex::new(None));
    let handle = builder()
        .with_base_restart_delay(Duration::from_millis(10))
        .with_task("leaks", Leaks(Arc::clone(&kept)))
        .build()
        .run();
    let mut changes = Changes::watch(&handle);
    changes.until("leaks", Healthy).await;

    let old = kept
        .lock()
        .unwrap()
        .clone()
        .expect("the first run kept its context");
    old.heartbeat();
    advance(Duration::from_secs(60)).await;

    // Had the beat reached the second run, it would be watched, and hung by now.
    assert_eq!(
        handle.get_task_status("leaks").await.unwrap(),
        Some(Healthy)
    );
}

// A millisecond before a silent run's deadline the loop starts a precise wait (a blocking sleep
// off Tokio's millisecond timer). Shutting down while it is in flight must neither hang nor
// act on the run after the stop; and with the clock paused the deadline is still kept exactly.
#[tokio::test(start_paused = true)]
async fn a_shutdown_while_a_hang_is_being_timed_precisely_ends_cleanly() {
    let task = Scripted::always(Step::BeatThenHang {
        every: MS,
        beats: 1,
    });
    let handle = builder().build().run();
    let mut changes = Changes::watch(&handle);
    handle.add_task("silent", task.clone()).unwrap();
    let (healthy_at, _) = changes.until("silent", Healthy).await;

    // Into the last two milliseconds before the deadline: the early look has fired.
    tokio::time::sleep_until(healthy_at + TIMEOUT - MS / 2 - MS).await;
    settle().await;
    assert_eq!(handle.get_task_status("silent").await, Ok(Some(Healthy)));

    handle.shutdown().unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(60), handle.wait()).await;
    assert_eq!(stopped, Ok(Ok(())));
    assert_eq!(task.liveness.live(), 0);
    assert_eq!(
        changes.sequence("silent"),
        [Starting, Healthy],
        "no verdict after the stop"
    );
}

// With the clock paused, the precise wait cannot see time pass; the deadline's own tick still
// catches the hang on time (the fallback), so the early look changes nothing a test can see.
#[tokio::test(start_paused = true)]
async fn a_hang_timed_precisely_is_still_caught_at_its_deadline_on_a_paused_clock() {
    let task = Scripted::new(
        [Step::BeatThenHang {
            every: MS,
            beats: 1,
        }],
        Step::Pend,
    );
    let handle = builder().build().run();
    let mut changes = Changes::watch(&handle);
    handle.add_task("silent", task.clone()).unwrap();
    changes.until("silent", Healthy).await;
    let beat_at = task.liveness.started_at()[0];

    let (failed_at, _) = changes.until("silent", Failed).await;

    let late = failed_at - beat_at - TIMEOUT;
    assert!(late <= MS, "caught {late:?} after the timeout");
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}
