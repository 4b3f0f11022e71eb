//! Benchmarks of `task-supervisor` side by side with raw Tokio and its two strongest peers,
//! `task-supervisor` 0.5.2 (imported as `peer`) and `taskvisor` 0.9.0.
//!
//! Every scenario of the suite is written once per variant, in that variant's own idiom, in
//! [`raw`], [`ours`], [`peer`](mod@crate::peer_variant) and [`taskvisor`](mod@crate::taskvisor_variant).
//! A variant that cannot express a scenario returns `None` from it, and the table says so.
//! The `compare` binary runs each (scenario, variant) in a fresh child process of its own, so that
//! memory and CPU measurements of one cannot contaminate another.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub mod measure;
pub mod ours;
pub mod peer_variant;
pub mod raw;
pub mod taskvisor_variant;

/// How long a "sleeping" task sleeps: for the length of any benchmark.
pub const LONG_SLEEP: Duration = Duration::from_secs(3600);

/// A named measurement: `(metric, value)`.
pub type Metrics = Vec<(&'static str, f64)>;

/// What is being compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// Plain Tokio: `tokio::spawn`, a `JoinSet`, a respawn loop, a map behind a lock.
    Raw,
    /// This crate, every task a `#[async_trait]` type (the boxed path).
    Ours,
    /// This crate, every task the same body as a closure task, `task_fn` (the inline path).
    Inline,
    /// `task-supervisor` 0.5.2.
    Peer,
    /// `taskvisor` 0.9.0.
    Taskvisor,
}

impl Variant {
    /// Every variant, in table order.
    pub const ALL: [Variant; 5] = [
        Self::Raw,
        Self::Ours,
        Self::Inline,
        Self::Peer,
        Self::Taskvisor,
    ];
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Raw => "raw",
            Self::Ours => "ours",
            Self::Inline => "inline",
            Self::Peer => "peer",
            Self::Taskvisor => "taskvisor",
        })
    }
}

impl FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|variant| variant.to_string() == s)
            .ok_or_else(|| format!("unknown variant {s:?}"))
    }
}

/// The scenarios of issue 3, numbered as there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// 1 and 2: start N sleeping tasks (add-call time, time until the last entered `run`),
    /// and the resident bytes they cost.
    Start,
    /// 3: process CPU while N tasks sleep, default settings, no heartbeats.
    Idle,
    /// 4: process CPU while N tasks beat every 250 ms under a 1 s timeout; one beat's cost.
    Beat,
    /// 5: one task failing on every run with zero back-off.
    Restart,
    /// 6b: one task panicking on every run with zero back-off.
    Panic,
    /// 6a: a task that stops beating: time from its last beat to its next run.
    Hang,
    /// 7: one status and all statuses at N tasks.
    Status,
    /// 8: shutdown of N running tasks.
    Shutdown,
    /// 9: restart requests in a burst to one task: the most live instances seen at once.
    Storm,
    /// 10: a one-for-all group restart of N sleeping tasks and one that fails once: time from
    /// the failure until all N + 1 have entered their next run.
    Group,
    /// 11: a reverse-order shutdown of N running tasks, one at a time, the last started first.
    Reverse,
    /// 12: one run that yields many times in a row: the cost of one poll through the
    /// supervisor's wrapper, with blocked-poll detection on and off.
    Polls,
}

impl Scenario {
    /// Every scenario, in table order.
    pub const ALL: [Scenario; 12] = [
        Self::Start,
        Self::Idle,
        Self::Beat,
        Self::Restart,
        Self::Hang,
        Self::Panic,
        Self::Status,
        Self::Shutdown,
        Self::Storm,
        Self::Group,
        Self::Reverse,
        Self::Polls,
    ];
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Start => "start",
            Self::Idle => "idle",
            Self::Beat => "beat",
            Self::Restart => "restart",
            Self::Panic => "panic",
            Self::Hang => "hang",
            Self::Status => "status",
            Self::Shutdown => "shutdown",
            Self::Storm => "storm",
            Self::Group => "group",
            Self::Reverse => "reverse",
            Self::Polls => "polls",
        })
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|scenario| scenario.to_string() == s)
            .ok_or_else(|| format!("unknown scenario {s:?}"))
    }
}

/// Durations and counts of one suite run; [`Params::full`] for the real figures,
/// [`Params::smoke`] for a run that only proves every scenario works.
#[derive(Debug, Clone)]
pub struct Params {
    /// Idle CPU is measured over this window.
    pub idle_window: Duration,
    /// Beating tasks run this long before their CPU is measured...
    pub beat_warmup: Duration,
    /// ...over this window.
    pub beat_window: Duration,
    /// Every beating task beats this often.
    pub beat_period: Duration,
    /// ...under this timeout.
    pub beat_timeout: Duration,
    /// Beats timed back to back to measure one beat.
    pub beat_calls: u32,
    /// A restarting task runs this long before counting starts...
    pub restart_warmup: Duration,
    /// ...and is counted over this window.
    pub restart_window: Duration,
    /// Room for this many restart gaps.
    pub restart_samples: usize,
    /// Hangs to detect.
    pub hang_cycles: usize,
    /// The heartbeat timeout of the hang scenario.
    pub hang_timeout: Duration,
    /// Single status reads timed.
    pub status_reads: usize,
    /// Full status listings timed.
    pub status_all_reads: usize,
    /// Restart requests in the storm.
    pub storm_requests: usize,
    /// Polls timed in a row.
    pub polls: u32,
}

impl Params {
    /// The figures `BENCHMARKS.md` reports.
    pub fn full() -> Self {
        Self {
            idle_window: Duration::from_secs(5),
            beat_warmup: Duration::from_secs(2),
            beat_window: Duration::from_secs(5),
            beat_period: Duration::from_millis(250),
            beat_timeout: Duration::from_secs(1),
            beat_calls: 1_000_000,
            restart_warmup: Duration::from_millis(100),
            restart_window: Duration::from_secs(1),
            restart_samples: 4_000_000,
            hang_cycles: 20,
            hang_timeout: Duration::from_millis(100),
            status_reads: 100_000,
            status_all_reads: 10,
            storm_requests: 10_000,
            polls: 4_000_000,
        }
    }

    /// Every scenario once, tiny: proves the suite works, measures nothing worth keeping.
    pub fn smoke() -> Self {
        Self {
            idle_window: Duration::from_millis(100),
            beat_warmup: Duration::from_millis(100),
            beat_window: Duration::from_millis(100),
            beat_period: Duration::from_millis(20),
            beat_timeout: Duration::from_millis(100),
            beat_calls: 10_000,
            restart_warmup: Duration::from_millis(10),
            restart_window: Duration::from_millis(50),
            restart_samples: 200_000,
            hang_cycles: 2,
            hang_timeout: Duration::from_millis(30),
            status_reads: 1_000,
            status_all_reads: 2,
            storm_requests: 100,
            polls: 10_000,
        }
    }
}

/// Runs one scenario for one variant at size `n`, inside a Tokio runtime. `None` when the
/// variant cannot express the scenario.
pub async fn run(
    scenario: Scenario,
    variant: Variant,
    n: usize,
    params: &Params,
) -> Option<Metrics> {
    match variant {
        Variant::Raw => raw::run(scenario, n, params).await,
        Variant::Ours => ours::run(scenario, n, params).await,
        Variant::Inline => ours::run_inline(scenario, n, params).await,
        Variant::Peer => peer_variant::run(scenario, n, params).await,
        Variant::Taskvisor => taskvisor_variant::run(scenario, n, params).await,
    }
}

/// The names tasks are registered under, made before anything is timed or weighed.
pub fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("task-{i}")).collect()
}

/// Shared steps of the scenarios, written once so every variant is measured the same way.
pub mod common {
    use std::future::Future;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::measure::{self, Entered, Restarts};
    use crate::{Metrics, Params};

    /// Start-up figures: the add calls, the time until every run entered, and memory.
    pub struct Started {
        /// Total time spent in add calls.
        pub add: Duration,
        /// From the first add call until the last run entered.
        pub total: Duration,
    }

    /// Times `add` (which registers `n` tasks that report to `entered`), then waits until all
    /// have entered their run.
    pub async fn start<F: Future<Output = ()>>(entered: &Entered, add: F) -> Started {
        let t0 = Instant::now();
        add.await;
        let add = t0.elapsed();
        entered.wait().await;
        Started {
            add,
            total: t0.elapsed(),
        }
    }

    /// Metrics of the start scenario; `rss0` was read before the supervisor existed.
    pub async fn start_metrics(n: usize, started: &Started, rss0: u64) -> Metrics {
        // Let the supervisor settle (statuses published, messages drained) before weighing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss1 = measure::rss_bytes();
        vec![
            ("add_ns_per_task", started.add.as_nanos() as f64 / n as f64),
            ("start_ms", started.total.as_secs_f64() * 1e3),
            (
                "bytes_per_task",
                rss1.saturating_sub(rss0) as f64 / n as f64,
            ),
        ]
    }

    /// Process CPU over `window`, in percent of a core, after a short settling time.
    pub async fn cpu_over(settle: Duration, window: Duration) -> (f64, f64) {
        tokio::time::sleep(settle).await;
        let cpu0 = measure::process_cpu();
        let ru0 = measure::rusage_cpu();
        let t0 = Instant::now();
        tokio::time::sleep(window).await;
        let elapsed = t0.elapsed();
        (
            measure::cpu_percent(measure::process_cpu() - cpu0, elapsed),
            measure::cpu_percent(measure::rusage_cpu() - ru0, elapsed),
        )
    }

    /// Counts runs and gaps of a task that ends every run at once, over the window.
    pub async fn restart_metrics(state: &Restarts, params: &Params) -> Metrics {
        tokio::time::sleep(params.restart_warmup).await;
        let r0 = state.runs.load(Ordering::Acquire);
        state.recording.store(true, Ordering::Release);
        let t0 = Instant::now();
        tokio::time::sleep(params.restart_window).await;
        let elapsed = t0.elapsed();
        state.recording.store(false, Ordering::Release);
        let runs = state.runs.load(Ordering::Acquire) - r0;
        let mut gaps = state.gaps();
        vec![
            ("runs_per_s", runs as f64 / elapsed.as_secs_f64()),
            ("gap_p50_us", measure::percentile(&mut gaps, 0.5) / 1e3),
            ("gap_p99_us", measure::percentile(&mut gaps, 0.99) / 1e3),
        ]
    }

    /// Waits for `cycles` hang detections and reports them against `timeout`.
    pub async fn hang_metrics(state: &Restarts, cycles: usize, timeout: Duration) -> Metrics {
        let limit = Instant::now() + timeout * (cycles as u32 + 5) * 4 + Duration::from_secs(5);
        while state.recorded() < cycles && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let timeout_ns = timeout.as_nanos() as f64;
        let mut gaps = state.gaps();
        let mut excess: Vec<f64> = gaps.iter().map(|gap| (gap - timeout_ns) / 1e6).collect();
        vec![
            ("detect_p50_ms", measure::median(&mut gaps) / 1e6),
            ("late_p50_ms", measure::median(&mut excess)),
            ("late_max_ms", measure::percentile(&mut excess, 1.0)),
            ("hangs", gaps.len() as f64),
        ]
    }

    /// Times `read` once per index in a scattered order, and `all` a few times.
    pub async fn status_metrics<R, RF, A, AF>(
        n: usize,
        params: &Params,
        mut read: R,
        mut all: A,
    ) -> Metrics
    where
        R: FnMut(usize) -> RF,
        RF: Future<Output = ()>,
        A: FnMut() -> AF,
        AF: Future<Output = usize>,
    {
        let order = measure::scattered(n, params.status_reads);
        let mut one = Vec::with_capacity(order.len());
        for &index in &order {
            let t0 = Instant::now();
            read(index).await;
            one.push(t0.elapsed().as_nanos() as f64);
        }
        let mut every = Vec::with_capacity(params.status_all_reads);
        for _ in 0..params.status_all_reads {
            let t0 = Instant::now();
            let len = all().await;
            every.push(t0.elapsed().as_secs_f64() * 1e3);
            assert!(len >= n, "a full listing missed tasks: {len} < {n}");
        }
        vec![
            ("one_p50_ns", measure::percentile(&mut one, 0.5)),
            ("one_p99_ns", measure::percentile(&mut one, 0.99)),
            ("all_ms", measure::median(&mut every)),
        ]
    }

    /// Times one clock read, as the status timings include two of them.
    pub fn clock_pair_ns() -> f64 {
        let mut samples: Vec<f64> = (0..10_000)
            .map(|_| {
                let t0 = Instant::now();
                std::hint::black_box(());
                t0.elapsed().as_nanos() as f64
            })
            .collect();
        measure::median(&mut samples)
    }

    /// Storm figures once the requests are made: waits until runs stop starting.
    pub async fn storm_metrics(live: &measure::Live, t0: Instant, issued: Duration) -> Metrics {
        let runs = measure::settle(
            || live.runs(),
            Duration::from_millis(300),
            Duration::from_secs(60),
        )
        .await;
        let t0_stamp = t0.duration_since(measure::epoch()).as_nanos() as u64 + 1;
        let last = live.last_entry.load(Ordering::Acquire);
        vec![
            ("max_live", live.max() as f64),
            ("runs", runs as f64),
            ("issue_ms", issued.as_secs_f64() * 1e3),
            ("settled_ms", last.saturating_sub(t0_stamp) as f64 / 1e6),
        ]
    }

    /// The next beat of task `index` of `n` after `now`: beats are spread evenly over the
    /// period from `base` on, the same way for every variant, so that the timer wheel sees the
    /// same schedule whatever the order and speed in which the tasks started.
    pub fn next_beat(
        base: tokio::time::Instant,
        index: usize,
        n: usize,
        period: Duration,
        now: tokio::time::Instant,
    ) -> tokio::time::Instant {
        let first = base + period.mul_f64(index as f64 / n.max(1) as f64);
        if now < first {
            return first;
        }
        let periods = (now - first).as_nanos() / period.as_nanos().max(1) + 1;
        first + period * u32::try_from(periods).unwrap_or(u32::MAX)
    }

    /// When beating tasks start their schedule: after every variant has started 100k tasks.
    pub fn beat_base() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(1)
    }

    /// A shared slot for one figure measured inside a run.
    pub type Probe = Arc<std::sync::atomic::AtomicU64>;

    /// The member of the group scenario that fails once, on command: its first run waits for
    /// [`fail`](Self::fail), stamps the moment and fails; its later runs sleep.
    #[derive(Debug, Default)]
    pub struct FailOnce {
        command: tokio::sync::Notify,
        failed: std::sync::atomic::AtomicBool,
        /// Stamp ([`measure::stamp`]) of the failure, `0` before it.
        pub failed_at: std::sync::atomic::AtomicU64,
    }

    impl FailOnce {
        /// Asks the first run to fail.
        pub fn fail(&self) {
            // `notify_one` stores a permit: a run not yet waiting still gets the command.
            self.command.notify_one();
        }

        /// Called by every run after entering: `true` once, for the run that is to fail (it
        /// returns as soon as the command came, the failure stamped), `false` for the others.
        pub async fn wait_for_the_command(&self) -> bool {
            if self.failed.load(Ordering::Acquire) {
                return false;
            }
            self.command.notified().await;
            self.failed.store(true, Ordering::Release);
            self.failed_at.store(measure::stamp(), Ordering::Release);
            true
        }
    }

    /// The group scenario once its `n + 1` tasks are registered (reporting to `entered`, made
    /// with a target of `2 * (n + 1)`): waits until each has entered its first run, lets the
    /// supervisor settle, has the failing member fail, and times the failure until the last
    /// of the `n + 1` next runs entered. Checks that each task ran exactly once more.
    pub async fn group_metrics(entered: &Entered, fail: &FailOnce, n: usize) -> Metrics {
        let tasks = n + 1;
        entered.wait_for(tasks).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(entered.count(), tasks, "a run started before the failure");
        fail.fail();
        entered.wait().await;
        let failed_at = fail.failed_at.load(Ordering::Acquire);
        let reached_at = entered.reached_at();
        // Nothing else may start: one run per task after the failure, not more.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            entered.count(),
            2 * tasks,
            "a group restart ran some task more than once"
        );
        vec![(
            "group_ms",
            reached_at.saturating_sub(failed_at) as f64 / 1e6,
        )]
    }
}
