//! Every scenario with this crate, as its documentation says to write it: each task a
//! `#[async_trait]` type (variant `ours`, the boxed path), or the same body as a closure task
//! made with `task_fn` (variant `inline`, the inline path).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use task_supervisor::{
    async_trait, heartbeat, task_fn, ShutdownOrder, Strategy, SupervisedTask, SupervisorBuilder,
    SupervisorHandle, TaskContext, TaskResult,
};

use crate::common::{self, FailOnce, Probe};
use crate::measure::{self, Entered, Live, Restarts};
use crate::{Metrics, Params, Scenario, LONG_SLEEP};

/// Whether this process runs the `inline` variant (set once, before the scenario starts).
static INLINE: AtomicBool = AtomicBool::new(false);

fn inline() -> bool {
    INLINE.load(Ordering::Relaxed)
}

/// Registers the boxed form of a task or its closure form, as the variant says.
macro_rules! add {
    ($handle:expr, $name:expr, $boxed:expr, $inline:expr) => {
        if inline() {
            $handle.add_task($name, $inline)
        } else {
            $handle.add_task($name, $boxed)
        }
    };
}

/// As [`add!`], on a builder.
macro_rules! with {
    ($builder:expr, $name:expr, $boxed:expr, $inline:expr) => {
        if inline() {
            $builder.with_task($name, $inline)
        } else {
            $builder.with_task($name, $boxed)
        }
    };
}

/// See [`crate::run`]: the `inline` variant, every task a closure task.
pub async fn run_inline(scenario: Scenario, n: usize, params: &Params) -> Option<Metrics> {
    INLINE.store(true, Ordering::Relaxed);
    run(scenario, n, params).await
}

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

/// A task that sleeps for the length of the benchmark.
#[derive(Clone)]
pub struct Sleeper(pub Arc<Entered>);

#[async_trait]
impl SupervisedTask for Sleeper {
    async fn run(&mut self) -> TaskResult {
        self.0.enter();
        tokio::time::sleep(LONG_SLEEP).await;
        Ok(())
    }
}

/// [`Sleeper`] as a closure task.
fn sleeper_fn(entered: &Arc<Entered>) -> impl SupervisedTask + Clone {
    let entered = Arc::clone(entered);
    task_fn(move || {
        entered.enter();
        async {
            tokio::time::sleep(LONG_SLEEP).await;
            Ok(())
        }
    })
}

/// A supervisor running `n` sleepers, added one by one through the handle.
pub async fn sleepers(
    names: &[String],
    entered: &Arc<Entered>,
) -> (SupervisorHandle, common::Started) {
    sleepers_under(SupervisorBuilder::new(), names, entered).await
}

/// As [`sleepers`], under a supervisor built from `builder`.
pub async fn sleepers_under(
    builder: SupervisorBuilder,
    names: &[String],
    entered: &Arc<Entered>,
) -> (SupervisorHandle, common::Started) {
    let handle = builder.build().run();
    let started = common::start(entered, async {
        for name in names {
            add!(
                handle,
                name,
                Sleeper(Arc::clone(entered)),
                sleeper_fn(entered)
            )
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
    let (handle, started) = sleepers(&names, &entered).await;
    let metrics = common::start_metrics(n, &started, rss0).await;
    drop(handle);
    metrics
}

async fn idle(n: usize, params: &Params) -> Metrics {
    let names = crate::names(n);
    let entered = Arc::new(Entered::new(n));
    // `BENCH_POLL_DETECTION=off`: the same, without the blocked-poll watcher's thread.
    let builder = if std::env::var("BENCH_POLL_DETECTION").as_deref() == Ok("off") {
        SupervisorBuilder::new().without_blocked_poll_detection()
    } else {
        SupervisorBuilder::new()
    };
    let (_handle, _) = sleepers_under(builder, &names, &entered).await;
    let (cpu, rusage) = common::cpu_over(Duration::from_millis(300), params.idle_window).await;
    vec![("cpu_pct", cpu), ("rusage_cpu_pct", rusage)]
}

#[derive(Clone)]
struct Beater {
    entered: Arc<Entered>,
    index: usize,
    n: usize,
    base: tokio::time::Instant,
    period: Duration,
    /// Diagnostic (`BENCH_BEAT_PLAIN=1`): store into a plain atomic instead of beating, so the
    /// supervisor watches nothing; what is left is the cost of running under it.
    plain: Option<Arc<std::sync::atomic::AtomicU64>>,
}

#[async_trait]
impl SupervisedTask for Beater {
    async fn run(&mut self) -> TaskResult {
        self.entered.enter();
        loop {
            match &self.plain {
                None => {
                    heartbeat();
                }
                Some(slot) => crate::raw::beat_into(slot),
            }
            let now = tokio::time::Instant::now();
            let next = common::next_beat(self.base, self.index, self.n, self.period, now);
            tokio::time::sleep_until(next).await;
        }
    }

    fn sends_heartbeats(&self) -> bool {
        self.plain.is_none()
    }
}

impl Beater {
    /// This task as a closure task. Each run's future holds its own copy of the schedule, as
    /// the raw baseline's future does (and the boxed task's instance).
    fn into_fn(self) -> impl SupervisedTask + Clone {
        let declares = self.plain.is_none();
        let task = task_fn(move || {
            let Beater {
                entered,
                index,
                n,
                base,
                period,
                plain,
            } = self.clone();
            async move {
                entered.enter();
                loop {
                    match &plain {
                        None => heartbeat(),
                        Some(slot) => crate::raw::beat_into(slot),
                    }
                    let now = tokio::time::Instant::now();
                    let next = common::next_beat(base, index, n, period, now);
                    tokio::time::sleep_until(next).await;
                }
            }
        });
        if declares {
            task.with_heartbeats()
        } else {
            task
        }
    }
}

/// Times back-to-back calls of `heartbeat()` inside a supervised run.
#[derive(Clone)]
struct BeatProbe {
    calls: u32,
    result: Probe,
    done: Arc<Entered>,
}

#[async_trait]
impl SupervisedTask for BeatProbe {
    async fn run(&mut self) -> TaskResult {
        let t0 = Instant::now();
        for _ in 0..self.calls {
            heartbeat();
        }
        self.result
            .store(t0.elapsed().as_nanos() as u64, Ordering::Release);
        self.done.enter();
        std::future::pending().await
    }
}

async fn beat(n: usize, params: &Params) -> Metrics {
    let names = crate::names(n);
    let entered = Arc::new(Entered::new(n));
    let plain = std::env::var_os("BENCH_BEAT_PLAIN").is_some();
    let handle = SupervisorBuilder::new()
        .with_timeout_threshold(params.beat_timeout)
        .with_heartbeat_interval(params.beat_period)
        // Shorter than the default 3 s, so the steady state is reached within the warm-up.
        .with_health_check_initial_delay(params.beat_period)
        .build()
        .run();
    let base = common::beat_base();
    common::start(&entered, async {
        for (index, name) in names.iter().enumerate() {
            let beater = Beater {
                entered: Arc::clone(&entered),
                index,
                n,
                base,
                period: params.beat_period,
                plain: plain.then(|| Arc::new(std::sync::atomic::AtomicU64::new(0))),
            };
            add!(handle, name, beater.clone(), beater.into_fn()).expect("add_task");
        }
    })
    .await;
    let (cpu, rusage) = common::cpu_over(params.beat_warmup, params.beat_window).await;
    let restarts = handle
        .get_all_task_statuses()
        .await
        .expect("statuses")
        .values()
        .filter(|status| !status.is_healthy())
        .count();

    let probe = Probe::default();
    let done = Arc::new(Entered::new(1));
    let (calls, result, finished) = (params.beat_calls, Arc::clone(&probe), Arc::clone(&done));
    let probe_fn = task_fn(move || {
        let (result, finished) = (Arc::clone(&result), Arc::clone(&finished));
        async move {
            let t0 = Instant::now();
            for _ in 0..calls {
                heartbeat();
            }
            result.store(t0.elapsed().as_nanos() as u64, Ordering::Release);
            finished.enter();
            std::future::pending().await
        }
    });
    let boxed = BeatProbe {
        calls: params.beat_calls,
        result: Arc::clone(&probe),
        done: Arc::clone(&done),
    };
    add!(handle, "beat-probe", boxed, probe_fn).expect("add_task");
    done.wait().await;
    let call_ns = probe.load(Ordering::Acquire) as f64 / f64::from(params.beat_calls);
    vec![
        ("cpu_pct", cpu),
        ("rusage_cpu_pct", rusage),
        ("call_ns", call_ns),
        ("not_healthy", restarts as f64),
    ]
}

#[derive(Clone)]
struct Failing {
    state: Arc<Restarts>,
    panic: bool,
}

#[async_trait]
impl SupervisedTask for Failing {
    async fn run(&mut self) -> TaskResult {
        self.state.enter();
        self.state.end();
        if self.panic {
            panic!("failing on purpose");
        }
        Err(task_supervisor::anyhow!("failing on purpose"))
    }
}

async fn restart(params: &Params, panic: bool) -> Metrics {
    let state = Arc::new(Restarts::new(params.restart_samples));
    let builder = SupervisorBuilder::new()
        .with_unlimited_restarts()
        .with_base_restart_delay(Duration::ZERO)
        .with_restart_jitter(0.0);
    let boxed = Failing {
        state: Arc::clone(&state),
        panic,
    };
    let shared = Arc::clone(&state);
    let closure = task_fn(move || {
        shared.enter();
        shared.end();
        if panic {
            panic!("failing on purpose");
        }
        std::future::ready(Err(task_supervisor::anyhow!("failing on purpose")))
    });
    let _handle = with!(builder, "failing", boxed, closure).build().run();
    common::restart_metrics(&state, params).await
}

/// Beats five times, 10 ms apart, then hangs without asking for its cancellation token.
#[derive(Clone)]
struct Hanger(Arc<Restarts>);

#[async_trait]
impl SupervisedTask for Hanger {
    async fn run(&mut self) -> TaskResult {
        self.0.enter();
        for _ in 0..5 {
            heartbeat();
            self.0.end();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        std::future::pending().await
    }

    fn sends_heartbeats(&self) -> bool {
        true
    }
}

fn hanging_supervisor(
    state: &Arc<Restarts>,
    params: &Params,
    initial_delay: Option<Duration>,
) -> SupervisorHandle {
    let mut builder = SupervisorBuilder::new()
        .with_unlimited_restarts()
        .with_base_restart_delay(Duration::ZERO)
        .with_restart_jitter(0.0)
        .with_timeout_threshold(params.hang_timeout)
        .with_heartbeat_interval(Duration::from_millis(10));
    if let Some(delay) = initial_delay {
        builder = builder.with_health_check_initial_delay(delay);
    }
    let shared = Arc::clone(state);
    let closure = task_fn(move || {
        let state = Arc::clone(&shared);
        async move {
            state.enter();
            for _ in 0..5 {
                heartbeat();
                state.end();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            std::future::pending().await
        }
    })
    .with_heartbeats();
    with!(builder, "hanging", Hanger(Arc::clone(state)), closure)
        .build()
        .run()
}

/// Hangs 50 ms into each run. The main figures use no start-up grace, so that a cycle lasts
/// about one timeout; `first_hang_ms` is one hang under the default grace (3 s), which shows
/// how long a run that hangs early really goes unnoticed.
async fn hang(params: &Params) -> Metrics {
    let state = Arc::new(Restarts::new(params.hang_cycles));
    state.recording.store(true, Ordering::Release);
    let handle = hanging_supervisor(&state, params, Some(Duration::ZERO));
    let mut metrics = common::hang_metrics(&state, params.hang_cycles, params.hang_timeout).await;
    drop(handle);

    let first = Arc::new(Restarts::new(1));
    first.recording.store(true, Ordering::Release);
    let _handle = hanging_supervisor(&first, params, None);
    let once = common::hang_metrics(&first, 1, params.hang_timeout).await;
    let detect = once
        .iter()
        .find(|(key, _)| *key == "detect_p50_ms")
        .map_or(f64::NAN, |(_, value)| *value);
    metrics.push(("first_hang_ms", detect));
    metrics
}

async fn status(n: usize, params: &Params) -> Metrics {
    let names = crate::names(n);
    let entered = Arc::new(Entered::new(n));
    let (handle, _) = sleepers(&names, &entered).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut metrics = common::status_metrics(
        n,
        params,
        |index| {
            let handle = &handle;
            let name = &names[index];
            async move {
                let status = handle.get_task_status(name).await.expect("status");
                std::hint::black_box(status);
            }
        },
        || async {
            handle
                .get_all_task_statuses()
                .await
                .expect("statuses")
                .len()
        },
    )
    .await;
    // The listing with shared names, as its own row.
    let mut shared = Vec::with_capacity(params.status_all_reads);
    for _ in 0..params.status_all_reads {
        let t0 = Instant::now();
        let len = handle.task_statuses().expect("statuses").len();
        shared.push(t0.elapsed().as_secs_f64() * 1e3);
        assert!(len >= n, "a full listing missed tasks: {len} < {n}");
    }
    metrics.push(("all_shared_ms", crate::measure::median(&mut shared)));
    let mut infos = Vec::with_capacity(params.status_all_reads);
    for _ in 0..params.status_all_reads {
        let t0 = Instant::now();
        let len = handle.task_infos().expect("infos").len();
        infos.push(t0.elapsed().as_secs_f64() * 1e3);
        assert!(len >= n, "a full listing missed tasks: {len} < {n}");
    }
    metrics.push(("all_info_ms", crate::measure::median(&mut infos)));
    metrics
}

/// Yields `polls` times in a row inside a run, and sends how long that took.
#[derive(Clone)]
struct Yields(u32, tokio::sync::mpsc::UnboundedSender<Duration>);

#[async_trait]
impl SupervisedTask for Yields {
    async fn run(&mut self) -> TaskResult {
        let t0 = Instant::now();
        for _ in 0..self.0 {
            tokio::task::yield_now().await;
        }
        let _ = self.1.send(t0.elapsed());
        std::future::pending().await
    }
}

async fn polls(params: &Params) -> Metrics {
    let mut metrics = Vec::new();
    for (key, builder) in [
        ("poll_ns", SupervisorBuilder::new()),
        (
            "poll_off_ns",
            SupervisorBuilder::new().without_blocked_poll_detection(),
        ),
    ] {
        // `BENCH_POLL_DETECTION=on` (or `off`) measures one of the two alone: for counting
        // instructions under callgrind, one process per mode.
        let only = std::env::var("BENCH_POLL_DETECTION").unwrap_or_default();
        if (only == "on" && key != "poll_ns") || (only == "off" && key != "poll_off_ns") {
            continue;
        }
        let (sender, mut took) = tokio::sync::mpsc::unbounded_channel();
        let handle = builder.build().run();
        let (polls, reports) = (params.polls, sender.clone());
        let closure = task_fn(move || {
            let reports = reports.clone();
            async move {
                let t0 = Instant::now();
                for _ in 0..polls {
                    tokio::task::yield_now().await;
                }
                let _ = reports.send(t0.elapsed());
                std::future::pending().await
            }
        });
        add!(handle, "yields", Yields(params.polls, sender), closure).expect("add");
        let took = took.recv().await.expect("the run reports");
        metrics.push((key, took.as_nanos() as f64 / f64::from(params.polls)));
        handle.shutdown().expect("shutdown");
        handle.wait().await.expect("wait");
    }
    metrics
}

async fn shutdown(n: usize) -> Metrics {
    let names = crate::names(n);
    let entered = Arc::new(Entered::new(n));
    let (handle, _) = sleepers(&names, &entered).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    handle.shutdown().expect("shutdown");
    handle.wait().await.expect("wait");
    vec![("ms", t0.elapsed().as_secs_f64() * 1e3)]
}

/// Waits for cancellation through its token, then returns: a run that finishes cleanly.
#[derive(Clone)]
struct Stormed(Arc<Live>);

#[async_trait]
impl SupervisedTask for Stormed {
    async fn run(&mut self) -> TaskResult {
        let _guard = self.0.enter();
        let token = TaskContext::current()
            .expect("inside a run")
            .cancellation_token();
        token.cancelled().await;
        Ok(())
    }
}

async fn storm(params: &Params) -> Metrics {
    let live = Arc::new(Live::default());
    let shared = Arc::clone(&live);
    let closure = task_fn(move || {
        let live = Arc::clone(&shared);
        async move {
            let _guard = live.enter();
            let token = TaskContext::current()
                .expect("inside a run")
                .cancellation_token();
            token.cancelled().await;
            Ok(())
        }
    });
    let handle = with!(
        SupervisorBuilder::new(),
        "stormed",
        Stormed(Arc::clone(&live)),
        closure
    )
    .build()
    .run();
    while live.runs() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t0 = Instant::now();
    for _ in 0..params.storm_requests {
        handle.restart("stormed").expect("restart");
    }
    let issued = t0.elapsed();
    common::storm_metrics(&live, t0, issued).await
}

/// The failing member of the group: fails once on command, sleeps in every later run. Like
/// the sleepers it never asks for its token.
#[derive(Clone)]
struct FailsOnce {
    entered: Arc<Entered>,
    fail: Arc<FailOnce>,
}

#[async_trait]
impl SupervisedTask for FailsOnce {
    async fn run(&mut self) -> TaskResult {
        self.entered.enter();
        if self.fail.wait_for_the_command().await {
            return Err(task_supervisor::anyhow!("failing on command"));
        }
        tokio::time::sleep(LONG_SLEEP).await;
        Ok(())
    }
}

/// One-for-all, zero back-off: `n` sleepers, then the member that fails once, all added
/// through the handle (so the failing one is the last in start order).
async fn group(n: usize) -> Metrics {
    let names = crate::names(n);
    let entered = Arc::new(Entered::new(2 * (n + 1)));
    let fail = Arc::new(FailOnce::default());
    let builder = SupervisorBuilder::new()
        .with_strategy(Strategy::OneForAll)
        .with_base_restart_delay(Duration::ZERO)
        .with_restart_jitter(0.0);
    // Not `sleepers_under`: it would wait for all the runs `entered` counts, both rounds.
    let handle = builder.build().run();
    for name in &names {
        add!(
            handle,
            name,
            Sleeper(Arc::clone(&entered)),
            sleeper_fn(&entered)
        )
        .expect("add_task");
    }
    let boxed = FailsOnce {
        entered: Arc::clone(&entered),
        fail: Arc::clone(&fail),
    };
    let (counted, command) = (Arc::clone(&entered), Arc::clone(&fail));
    let closure = task_fn(move || {
        let (entered, fail) = (Arc::clone(&counted), Arc::clone(&command));
        async move {
            entered.enter();
            if fail.wait_for_the_command().await {
                return Err(task_supervisor::anyhow!("failing on command"));
            }
            tokio::time::sleep(LONG_SLEEP).await;
            Ok(())
        }
    });
    add!(handle, "fails-once", boxed, closure).expect("add_task");
    let metrics = common::group_metrics(&entered, &fail, n).await;
    drop(handle);
    metrics
}

/// As [`shutdown`], stopping the runs one at a time, the last started first.
async fn reverse(n: usize) -> Metrics {
    let names = crate::names(n);
    let entered = Arc::new(Entered::new(n));
    let builder = SupervisorBuilder::new().with_shutdown_order(ShutdownOrder::Reverse);
    let (handle, _) = sleepers_under(builder, &names, &entered).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    handle.shutdown().expect("shutdown");
    handle.wait().await.expect("wait");
    vec![("reverse_ms", t0.elapsed().as_secs_f64() * 1e3)]
}
