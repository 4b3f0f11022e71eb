//! Every scenario `taskvisor` 0.9.0 can express, in its own idiom: tasks are closures taking a
//! context, specs carry the restart policy, the controller replaces a running task, and
//! `is_alive` stands for a status.
//!
//! It has no heartbeats and no hang detection (only a per-attempt timeout, which is not the
//! same thing), so the beat and hang scenarios are `None`; nor restart strategies or an ordered
//! shutdown, so the group and reverse scenarios are too. Its default limits (1024 registered
//! tasks, 1024 owned values) are lifted so that it can hold 100k tasks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use taskvisor::{
    BackoffPolicy, ControllerConfig, ControllerSpec, RestartPolicy, Supervisor, SupervisorConfig,
    SupervisorHandle, TaskContext, TaskError, TaskFn, TaskRef, TaskSpec,
};

use crate::common;
use crate::measure::{self, Entered, Live, Restarts};
use crate::{Metrics, Params, Scenario, LONG_SLEEP};

/// See [`crate::run`].
pub async fn run(scenario: Scenario, n: usize, params: &Params) -> Option<Metrics> {
    Some(match scenario {
        Scenario::Start => start(n).await,
        Scenario::Idle => idle(n, params).await,
        Scenario::Beat | Scenario::Hang => return None,
        Scenario::Restart => restart(params, false).await,
        Scenario::Panic => restart(params, true).await,
        Scenario::Status => status(n, params).await,
        Scenario::Shutdown => shutdown(n).await,
        Scenario::Storm => storm(params).await,
        // No restart strategies and no ordered shutdown.
        Scenario::Group | Scenario::Reverse | Scenario::Polls => return None,
    })
}

/// A running supervisor; the `Supervisor` is kept alongside its handle for as long as it runs.
pub struct Running {
    /// The handle every command goes through.
    pub handle: SupervisorHandle,
    _supervisor: Arc<Supervisor>,
}

/// A supervisor with its size limits lifted, and a controller when `controller` is set.
pub fn serve(controller: bool) -> Running {
    let mut builder = Supervisor::builder(SupervisorConfig::default())
        .with_max_registered_tasks(None)
        .with_ownership_capacity(None);
    if controller {
        builder = builder.with_controller(ControllerConfig::default());
    }
    let supervisor = builder.build();
    let handle = supervisor.serve().expect("serve");
    Running {
        handle,
        _supervisor: supervisor,
    }
}

/// Sleeps until cancelled, as taskvisor asks of long-running tasks.
pub fn sleeper(entered: &Arc<Entered>) -> TaskRef {
    let entered = Arc::clone(entered);
    TaskFn::arc(move |ctx: TaskContext| {
        let entered = Arc::clone(&entered);
        async move {
            entered.enter();
            tokio::select! {
                () = ctx.cancelled() => Err(TaskError::Canceled),
                () = tokio::time::sleep(LONG_SLEEP) => Ok(()),
            }
        }
    })
}

/// A supervisor running `names.len()` restartable sleepers, added one by one.
pub async fn sleepers(names: &[String], entered: &Arc<Entered>) -> (Running, common::Started) {
    let running = serve(false);
    let started = common::start(entered, async {
        for name in names {
            running
                .handle
                .add(TaskSpec::restartable(name.as_str(), sleeper(entered)))
                .await
                .expect("add");
        }
    })
    .await;
    (running, started)
}

async fn start(n: usize) -> Metrics {
    let names = crate::names(n);
    let rss0 = measure::rss_bytes();
    let entered = Arc::new(Entered::new(n));
    let (_running, started) = sleepers(&names, &entered).await;
    common::start_metrics(n, &started, rss0).await
}

async fn idle(n: usize, params: &Params) -> Metrics {
    let names = crate::names(n);
    let entered = Arc::new(Entered::new(n));
    let (_running, _) = sleepers(&names, &entered).await;
    let (cpu, rusage) = common::cpu_over(Duration::from_millis(300), params.idle_window).await;
    vec![("cpu_pct", cpu), ("rusage_cpu_pct", rusage)]
}

async fn restart(params: &Params, panic: bool) -> Metrics {
    let state = Arc::new(Restarts::new(params.restart_samples));
    let running = serve(false);
    let task: TaskRef = {
        let state = Arc::clone(&state);
        TaskFn::arc(move |_ctx: TaskContext| {
            let state = Arc::clone(&state);
            async move {
                state.enter();
                state.end();
                if panic {
                    panic!("failing on purpose");
                }
                Err(TaskError::fail("failing on purpose"))
            }
        })
    };
    running
        .handle
        .add(TaskSpec::new(
            "failing",
            task,
            RestartPolicy::OnFailure,
            BackoffPolicy::constant(Duration::ZERO),
            None,
        ))
        .await
        .expect("add");
    common::restart_metrics(&state, params).await
}

async fn status(n: usize, params: &Params) -> Metrics {
    let names = crate::names(n);
    let entered = Arc::new(Entered::new(n));
    let (running, _) = sleepers(&names, &entered).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let handle = &running.handle;
    common::status_metrics(
        n,
        params,
        |index| {
            let name = &names[index];
            async move {
                let alive = handle.is_alive(name).await;
                assert!(alive, "a sleeping task is alive");
            }
        },
        || async { handle.alive_snapshot().await.len() },
    )
    .await
}

async fn shutdown(n: usize) -> Metrics {
    let names = crate::names(n);
    let entered = Arc::new(Entered::new(n));
    let (running, _) = sleepers(&names, &entered).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    running.handle.clone().shutdown().await.expect("shutdown");
    vec![("ms", t0.elapsed().as_secs_f64() * 1e3)]
}

/// Taskvisor has no restart call: a running task is replaced through a controller slot with
/// the `replace` policy, one submission per request, each under a name of its own.
async fn storm(params: &Params) -> Metrics {
    let live = Arc::new(Live::default());
    let running = serve(true);
    let task: TaskRef = {
        let live = Arc::clone(&live);
        TaskFn::arc(move |ctx: TaskContext| {
            let live = Arc::clone(&live);
            async move {
                let _guard = live.enter();
                ctx.cancelled().await;
                Err(TaskError::Canceled)
            }
        })
    };
    let submit = |i: usize| {
        ControllerSpec::replace(TaskSpec::once(format!("stormed-{i}"), Arc::clone(&task)))
            .with_slot("stormed")
    };
    running.handle.submit(submit(0)).await.expect("submit");
    while live.runs() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t0 = Instant::now();
    for i in 1..=params.storm_requests {
        running.handle.submit(submit(i)).await.expect("submit");
    }
    let issued = t0.elapsed();
    common::storm_metrics(&live, t0, issued).await
}
