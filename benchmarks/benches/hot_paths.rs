//! Micro-benchmarks of the hot paths: one heartbeat, one status read among many tasks, one
//! command send; each next to what plain Tokio (and, for reads, each peer) pays for the same.
//!
//! `cargo bench -p benchmarks --bench hot_paths`; `BENCH_TASKS` sets how many tasks the status
//! reads run among (100000 by default).

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use benchmarks::measure::{scattered, Entered};
use benchmarks::{ours, peer_variant, raw, taskvisor_variant};
use criterion::{criterion_group, criterion_main, Criterion};
use task_supervisor::anyhow::Context as _;
use task_supervisor::{
    async_trait, heartbeat, SupervisedTask, SupervisorBuilder, TaskContext, TaskResult,
};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn tasks() -> usize {
    std::env::var("BENCH_TASKS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000)
}

/// Polls a future that completes on its first poll, without a runtime.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("expected to complete on the first poll"),
    }
}

/// Requests to the beat loop: how many beats, and whether through a `TaskContext`.
type BeatRequests = Arc<Mutex<Option<mpsc::UnboundedReceiver<(u64, bool)>>>>;

/// A supervised run that times `iters` beats on request; heartbeats only count from inside a run.
#[derive(Clone)]
struct BeatLoop {
    requests: BeatRequests,
    replies: std::sync::mpsc::SyncSender<Duration>,
}

#[async_trait]
impl SupervisedTask for BeatLoop {
    async fn run(&mut self) -> TaskResult {
        let mut requests = self
            .requests
            .lock()
            .expect("lock")
            .take()
            .context("only one run")?;
        let context = TaskContext::current().context("inside a run")?;
        while let Some((iters, through_context)) = requests.recv().await {
            let t0 = Instant::now();
            if through_context {
                for _ in 0..iters {
                    black_box(&context).heartbeat();
                }
            } else {
                for _ in 0..iters {
                    heartbeat();
                }
            }
            self.replies.send(t0.elapsed())?;
        }
        Ok(())
    }
}

fn heartbeats(c: &mut Criterion) {
    let rt = runtime();
    let (request, requests) = mpsc::unbounded_channel();
    let (replies, reply) = std::sync::mpsc::sync_channel(1);
    let handle = rt.block_on(async {
        SupervisorBuilder::new()
            .with_task(
                "beat-loop",
                BeatLoop {
                    requests: Arc::new(Mutex::new(Some(requests))),
                    replies,
                },
            )
            .build()
            .run()
    });
    let mut group = c.benchmark_group("heartbeat");
    for (name, through_context) in [
        ("ours: heartbeat()", false),
        ("ours: TaskContext::heartbeat", true),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                request
                    .send((iters, through_context))
                    .expect("beat loop alive");
                reply.recv().expect("beat loop reply")
            });
        });
    }
    let slot = AtomicU64::new(0);
    group.bench_function("raw: clock read + atomic store", |b| {
        b.iter(|| raw::beat_into(black_box(&slot)));
    });
    group.finish();
    drop(handle);
}

fn status_reads(c: &mut Criterion) {
    let n = tasks();
    let rt = runtime();
    let names = Arc::new(benchmarks::names(n));
    let order = scattered(n, 1 << 16);
    let mut group = c.benchmark_group(format!("status read among {n}"));

    {
        let entered = Arc::new(Entered::new(n));
        let (handle, _) = rt.block_on(ours::sleepers(&names, &entered));
        let mut i = 0;
        group.bench_function("ours: get_task_status", |b| {
            b.iter(|| {
                i = (i + 1) & 0xffff;
                now(handle.get_task_status(&names[order[i]])).expect("status")
            });
        });
        rt.block_on(async {
            handle.shutdown().expect("shutdown");
            handle.wait().await.expect("wait");
        });
    }

    {
        let map: RwLock<HashMap<String, u8>> =
            RwLock::new(names.iter().map(|name| (name.clone(), 2)).collect());
        let mut i = 0;
        group.bench_function("raw: RwLock<HashMap> read", |b| {
            b.iter(|| {
                i = (i + 1) & 0xffff;
                map.read().expect("lock").get(&names[order[i]]).copied()
            });
        });
    }

    {
        let entered = Arc::new(Entered::new(n));
        let (handle, _) = rt.block_on(peer_variant::sleepers(&names, &entered));
        group.bench_function("peer: task_status round trip", |b| {
            b.iter_custom(|iters| {
                let (handle, names) = (handle.clone(), Arc::clone(&names));
                let order = order.clone();
                rt.block_on(rt.spawn(async move {
                    let t0 = Instant::now();
                    for i in 0..iters as usize {
                        black_box(handle.task_status(&names[order[i & 0xffff]]).await.ok());
                    }
                    t0.elapsed()
                }))
                .expect("reader")
            });
        });
        rt.block_on(async { handle.shutdown().await.expect("shutdown") });
    }

    {
        let entered = Arc::new(Entered::new(n));
        let (running, _) = rt.block_on(taskvisor_variant::sleepers(&names, &entered));
        let handle = running.handle.clone();
        group.bench_function("taskvisor: is_alive", |b| {
            b.iter_custom(|iters| {
                let (handle, names) = (handle.clone(), Arc::clone(&names));
                let order = order.clone();
                rt.block_on(rt.spawn(async move {
                    let t0 = Instant::now();
                    for i in 0..iters as usize {
                        black_box(handle.is_alive(&names[order[i & 0xffff]]).await);
                    }
                    t0.elapsed()
                }))
                .expect("reader")
            });
        });
        rt.block_on(async { running.handle.clone().shutdown().await.expect("shutdown") });
    }
    group.finish();
}

fn command_sends(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("command send");
    let entered = Arc::new(Entered::new(1));
    let (handle, _) = rt.block_on(ours::sleepers(&["target".to_owned()], &entered));
    group.bench_function("ours: restart (accepted, sent to the loop)", |b| {
        b.iter(|| handle.restart(black_box("target")).expect("restart"));
    });
    group.bench_function(
        "ours: kill_task of an unknown name (answered at once)",
        |b| {
            b.iter(|| handle.kill_task(black_box("missing")).is_err());
        },
    );
    let (sender, mut receiver) = mpsc::unbounded_channel::<u32>();
    rt.spawn(async move { while receiver.recv().await.is_some() {} });
    group.bench_function("raw: unbounded mpsc send", |b| {
        b.iter(|| sender.send(black_box(7)).expect("send"));
    });
    group.finish();
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = heartbeats, status_reads, command_sends
}
criterion_main!(hot_paths);
