//! The baseline: what each scenario costs with plain Tokio and no supervisor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::common::{self, FailOnce, Probe};
use crate::measure::{self, Entered, Live, Restarts};
use crate::{Metrics, Params, Scenario, LONG_SLEEP};

/// The error a failing run returns, the same type a supervised run returns.
type RunResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// See [`crate::run`].
pub async fn run(scenario: Scenario, n: usize, params: &Params) -> Option<Metrics> {
    Some(match scenario {
        Scenario::Start => start(n).await,
        Scenario::Idle => idle(n, params).await,
        Scenario::Beat => beat(n, params).await,
        Scenario::Restart => restart(params, false).await,
        Scenario::Panic => restart(params, true).await,
        Scenario::Hang => hang(params).await,
        Scenario::Status => status(n, params).await,
        Scenario::Shutdown => shutdown(n).await,
        Scenario::Storm => storm(params).await,
        Scenario::Group => group(n).await,
        Scenario::Reverse => reverse(n).await,
        Scenario::Polls => polls(params).await,
    })
}

async fn sleeper(entered: Arc<Entered>) {
    entered.enter();
    tokio::time::sleep(LONG_SLEEP).await;
}

/// `n` bare tasks, handles dropped: the least plain Tokio can do.
async fn spawn_sleepers(n: usize, entered: &Arc<Entered>) {
    for _ in 0..n {
        tokio::spawn(sleeper(Arc::clone(entered)));
    }
}

async fn start(n: usize) -> Metrics {
    let rss0 = measure::rss_bytes();
    let entered = Arc::new(Entered::new(n));
    let started = common::start(&entered, spawn_sleepers(n, &entered)).await;
    common::start_metrics(n, &started, rss0).await
}

async fn idle(n: usize, params: &Params) -> Metrics {
    let entered = Arc::new(Entered::new(n));
    common::start(&entered, spawn_sleepers(n, &entered)).await;
    let (cpu, rusage) = common::cpu_over(Duration::from_millis(300), params.idle_window).await;
    vec![("cpu_pct", cpu), ("rusage_cpu_pct", rusage)]
}

/// A beat as a hand-written service would do it: read the clock, store into an atomic.
#[inline]
pub fn beat_into(slot: &AtomicU64) {
    slot.store(measure::stamp(), Ordering::Relaxed);
}

async fn beat(n: usize, params: &Params) -> Metrics {
    let entered = Arc::new(Entered::new(n));
    let slots: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let period = params.beat_period;
    let base = common::beat_base();
    let spawn_all = async {
        for i in 0..n {
            let entered = Arc::clone(&entered);
            let slots = Arc::clone(&slots);
            tokio::spawn(async move {
                entered.enter();
                loop {
                    beat_into(&slots[i]);
                    let next = common::next_beat(base, i, n, period, tokio::time::Instant::now());
                    tokio::time::sleep_until(next).await;
                }
            });
        }
    };
    common::start(&entered, spawn_all).await;
    let (cpu, rusage) = common::cpu_over(params.beat_warmup, params.beat_window).await;

    let probe: Probe = Probe::default();
    let calls = params.beat_calls;
    let slot = Arc::new(AtomicU64::new(0));
    let result = Arc::clone(&probe);
    tokio::spawn(async move {
        let t0 = Instant::now();
        for _ in 0..calls {
            beat_into(std::hint::black_box(&slot));
        }
        result.store(t0.elapsed().as_nanos() as u64, Ordering::Release);
    })
    .await
    .expect("probe");
    let call_ns = probe.load(Ordering::Acquire) as f64 / f64::from(calls);
    vec![
        ("cpu_pct", cpu),
        ("rusage_cpu_pct", rusage),
        ("call_ns", call_ns),
    ]
}

async fn failing_run(state: Arc<Restarts>, panic: bool) -> RunResult {
    state.enter();
    state.end();
    if panic {
        panic!("failing on purpose");
    }
    Err("failing on purpose".into())
}

/// The bare respawn loop, inside a spawned task: spawn a run, await its end, spawn the next.
async fn restart(params: &Params, panic: bool) -> Metrics {
    let state = Arc::new(Restarts::new(params.restart_samples));
    let looping = Arc::clone(&state);
    tokio::spawn(async move {
        loop {
            let ended = tokio::spawn(failing_run(Arc::clone(&looping), panic)).await;
            std::hint::black_box(ended.is_err());
        }
    });
    common::restart_metrics(&state, params).await
}

/// A hand-written watchdog: a run that beats into an atomic, and a loop that sleeps until the
/// last beat plus the timeout, aborts a silent run, waits for it to end, and spawns the next.
async fn hang(params: &Params) -> Metrics {
    let state = Arc::new(Restarts::new(params.hang_cycles));
    state.recording.store(true, Ordering::Release);
    let timeout = params.hang_timeout;
    let every = Duration::from_millis(10);
    let watched = Arc::clone(&state);
    tokio::spawn(async move {
        loop {
            let beat = Arc::new(AtomicU64::new(0));
            let run = {
                let beat = Arc::clone(&beat);
                let state = Arc::clone(&watched);
                tokio::spawn(async move {
                    state.enter();
                    for _ in 0..5 {
                        beat_into(&beat);
                        state.end();
                        tokio::time::sleep(every).await;
                    }
                    std::future::pending::<()>().await;
                })
            };
            let mut since = Instant::now();
            loop {
                tokio::time::sleep_until((since + timeout).into()).await;
                let last = beat.load(Ordering::Acquire);
                let last_at = measure::epoch() + Duration::from_nanos(last.saturating_sub(1));
                if last != 0 && last_at + timeout > Instant::now() {
                    since = last_at;
                    continue;
                }
                run.abort();
                let _ = run.await;
                break;
            }
        }
    });
    common::hang_metrics(&state, params.hang_cycles, timeout).await
}

/// A map from names to statuses behind a `RwLock`: what a shared registry costs to read.
async fn status(n: usize, params: &Params) -> Metrics {
    let names = crate::names(n);
    let map: RwLock<HashMap<String, u8>> =
        RwLock::new(names.iter().map(|name| (name.clone(), 2u8)).collect());
    let mut metrics = common::status_metrics(
        n,
        params,
        |index| {
            let status = map.read().expect("lock").get(&names[index]).copied();
            std::hint::black_box(status);
            std::future::ready(())
        },
        || {
            let all: HashMap<String, u8> = map
                .read()
                .expect("lock")
                .iter()
                .map(|(name, status)| (name.clone(), *status))
                .collect();
            std::future::ready(all.len())
        },
    )
    .await;
    metrics.push(("clock_pair_ns", common::clock_pair_ns()));
    metrics
}

/// A `JoinSet` of sleeping tasks, shut down: every task aborted and awaited.
async fn shutdown(n: usize) -> Metrics {
    let entered = Arc::new(Entered::new(n));
    let mut set = JoinSet::new();
    for _ in 0..n {
        set.spawn(sleeper(Arc::clone(&entered)));
    }
    entered.wait().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    set.shutdown().await;
    vec![("ms", t0.elapsed().as_secs_f64() * 1e3)]
}

/// Restart done right by hand: abort the run, await its end, spawn the next.
async fn storm(params: &Params) -> Metrics {
    let live = Arc::new(Live::default());
    let spawn = |live: &Arc<Live>| {
        let live = Arc::clone(live);
        tokio::spawn(async move {
            let _guard = live.enter();
            tokio::time::sleep(LONG_SLEEP).await;
        })
    };
    let mut current = spawn(&live);
    while live.runs() == 0 {
        tokio::task::yield_now().await;
    }
    let t0 = Instant::now();
    for _ in 0..params.storm_requests {
        current.abort();
        let _ = current.await;
        current = spawn(&live);
    }
    let issued = t0.elapsed();
    common::storm_metrics(&live, t0, issued).await
}

/// A one-for-all restart by hand: a `JoinSet` of `n` sleepers and the member that fails once;
/// when a task of the set fails, every other is aborted and awaited (`JoinSet::shutdown`),
/// then all `n + 1` are spawned again, in the same order.
async fn group(n: usize) -> Metrics {
    let entered = Arc::new(Entered::new(2 * (n + 1)));
    let fail = Arc::new(FailOnce::default());
    let spawn_all = {
        let entered = Arc::clone(&entered);
        let fail = Arc::clone(&fail);
        move |set: &mut JoinSet<RunResult>| {
            for _ in 0..n {
                let entered = Arc::clone(&entered);
                set.spawn(async move {
                    sleeper(entered).await;
                    Ok(())
                });
            }
            let entered = Arc::clone(&entered);
            let fail = Arc::clone(&fail);
            set.spawn(async move {
                entered.enter();
                if fail.wait_for_the_command().await {
                    return Err("failing on command".into());
                }
                tokio::time::sleep(LONG_SLEEP).await;
                Ok(())
            });
        }
    };
    tokio::spawn(async move {
        let mut set = JoinSet::new();
        spawn_all(&mut set);
        while let Some(ended) = set.join_next().await {
            if !matches!(ended, Ok(Ok(()))) {
                set.shutdown().await;
                spawn_all(&mut set);
            }
        }
    });
    common::group_metrics(&entered, &fail, n).await
}

/// Abort and await each of `n` sleepers one at a time, the last spawned first.
async fn reverse(n: usize) -> Metrics {
    let entered = Arc::new(Entered::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| tokio::spawn(sleeper(Arc::clone(&entered))))
        .collect();
    entered.wait().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    for handle in handles.into_iter().rev() {
        handle.abort();
        let _ = handle.await;
    }
    vec![("reverse_ms", t0.elapsed().as_secs_f64() * 1e3)]
}

/// A spawned task that yields `polls` times in a row: one poll by Tokio alone.
async fn polls(params: &Params) -> Metrics {
    let count = params.polls;
    let took = tokio::spawn(async move {
        let t0 = Instant::now();
        for _ in 0..count {
            tokio::task::yield_now().await;
        }
        t0.elapsed()
    })
    .await
    .expect("the task");
    vec![("poll_ns", took.as_nanos() as f64 / f64::from(count))]
}
