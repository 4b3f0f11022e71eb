//! Every scenario `task-supervisor` 0.5.2 can express, in its own idiom: `run(self, cancel)`,
//! `spawn()`, and handle methods that are `async` round trips through its loop.
//!
//! It has no heartbeats and no hang detection, so the beat and hang scenarios are `None`; nor
//! restart strategies or an ordered shutdown, so the group and reverse scenarios are too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use peer::{CancellationToken, SupervisedTask, SupervisorBuilder, SupervisorHandle, TaskResult};
use tokio::task::JoinSet;

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

/// Sleeps until cancelled: the cheapest cooperative run the crate's README recommends.
#[derive(Clone)]
pub struct Sleeper(pub Arc<Entered>);

impl SupervisedTask for Sleeper {
    async fn run(self, cancel: CancellationToken) -> TaskResult {
        self.0.enter();
        cancel
            .run_until_cancelled(tokio::time::sleep(LONG_SLEEP))
            .await;
        Ok(())
    }
}

/// A supervisor running `names.len()` sleepers, added one by one through the handle.
pub async fn sleepers(
    names: &[String],
    entered: &Arc<Entered>,
) -> (SupervisorHandle, common::Started) {
    let handle = SupervisorBuilder::new().spawn();
    let started = common::start(entered, async {
        for name in names {
            handle
                .add_task(name, Sleeper(Arc::clone(entered)))
                .await
                .expect("add_task");
        }
    })
    .await;
    (handle, started)
}

async fn start(n: usize) -> Metrics {
    let names = crate::names(n);
    let rss0 = measure::rss_bytes();
    let entered = Arc::new(Entered::new(n));
    let (_handle, started) = sleepers(&names, &entered).await;
    common::start_metrics(n, &started, rss0).await
}

async fn idle(n: usize, params: &Params) -> Metrics {
    let names = crate::names(n);
    let entered = Arc::new(Entered::new(n));
    let (_handle, _) = sleepers(&names, &entered).await;
    let (cpu, rusage) = common::cpu_over(Duration::from_millis(300), params.idle_window).await;
    vec![("cpu_pct", cpu), ("rusage_cpu_pct", rusage)]
}

#[derive(Clone)]
struct Failing {
    state: Arc<Restarts>,
    panic: bool,
}

impl SupervisedTask for Failing {
    async fn run(self, _cancel: CancellationToken) -> TaskResult {
        self.state.enter();
        self.state.end();
        if self.panic {
            panic!("failing on purpose");
        }
        Err("failing on purpose".into())
    }
}

async fn restart(params: &Params, panic: bool) -> Metrics {
    let state = Arc::new(Restarts::new(params.restart_samples));
    let _handle = SupervisorBuilder::new()
        .with_unlimited_restarts()
        .with_base_restart_delay(Duration::ZERO)
        .with_restart_jitter(0.0)
        .with_task(
            "failing",
            Failing {
                state: Arc::clone(&state),
                panic,
            },
        )
        .spawn();
    common::restart_metrics(&state, params).await
}

async fn status(n: usize, params: &Params) -> Metrics {
    let names = crate::names(n);
    let entered = Arc::new(Entered::new(n));
    let (handle, _) = sleepers(&names, &entered).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    common::status_metrics(
        n,
        params,
        |index| {
            let handle = &handle;
            let name = &names[index];
            async move {
                let status = handle.task_status(name).await.expect("status");
                std::hint::black_box(status);
            }
        },
        || async { handle.task_statuses().await.expect("statuses").len() },
    )
    .await
}

async fn shutdown(n: usize) -> Metrics {
    let names = crate::names(n);
    let entered = Arc::new(Entered::new(n));
    let (handle, _) = sleepers(&names, &entered).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    handle.shutdown().await.expect("shutdown");
    vec![("ms", t0.elapsed().as_secs_f64() * 1e3)]
}

#[derive(Clone)]
struct Stormed(Arc<Live>);

impl SupervisedTask for Stormed {
    async fn run(self, cancel: CancellationToken) -> TaskResult {
        let _guard = self.0.enter();
        cancel.cancelled().await;
        Ok(())
    }
}

/// The restart requests are made at once, from as many tasks: each `restart_task` call waits
/// for its restart to finish, so awaiting them one by one would make no storm at all.
async fn storm(params: &Params) -> Metrics {
    let live = Arc::new(Live::default());
    let handle = SupervisorBuilder::new()
        .with_task("stormed", Stormed(Arc::clone(&live)))
        .spawn();
    while live.runs() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t0 = Instant::now();
    let mut requests = JoinSet::new();
    for _ in 0..params.storm_requests {
        let handle = handle.clone();
        requests.spawn(async move { handle.restart_task("stormed").await });
    }
    let issued = t0.elapsed();
    while let Some(done) = requests.join_next().await {
        done.expect("request task").expect("restart_task");
    }
    common::storm_metrics(&live, t0, issued).await
}
