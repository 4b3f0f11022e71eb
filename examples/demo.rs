//! A 15-second tour: tasks that complete, fail, panic, hang and block their thread, with the
//! supervisor's events as they arrive and a status table every second. Run it with
//! `cargo run --example demo`; with `cargo run --example demo -- --serve` it also serves the
//! live page (and the health endpoints), and runs until Ctrl-C.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use task_supervisor::integrations::{http, signal};
use task_supervisor::{
    async_trait, bail, heartbeat, EventKind, SupervisedTask, SupervisorBuilder, TaskContext,
    TaskResult,
};

/// What a demo task does on each run.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Works for a while, then returns `Ok(())`.
    Completes(Duration),
    /// Works for a while, then returns an error.
    Fails(Duration),
    /// Works for a while, then panics.
    Panics(Duration),
    /// Beats for a while, then stops beating without returning.
    Hangs(Duration),
    /// Beats forever and finishes cleanly when cancelled.
    Serves,
    /// Blocks its thread for a moment (a synchronous sleep inside a poll) every few seconds.
    Blocks(Duration),
}

#[derive(Clone)]
struct DemoTask {
    behaviour: Behaviour,
    /// Shared by all runs: how many times the task has been started.
    runs: Arc<AtomicU32>,
}

#[async_trait]
impl SupervisedTask for DemoTask {
    async fn run(&mut self) -> TaskResult {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let context = TaskContext::current().expect("run by the supervisor");
        let beat_every = context.heartbeat_interval();
        match self.behaviour {
            Behaviour::Completes(work) => {
                tokio::time::sleep(work).await;
                Ok(())
            }
            Behaviour::Fails(work) => {
                tokio::time::sleep(work).await;
                bail!("the database went away")
            }
            Behaviour::Panics(work) => {
                tokio::time::sleep(work).await;
                panic!("index out of bounds, as it happens");
            }
            Behaviour::Hangs(work) => {
                let until = tokio::time::Instant::now() + work;
                while tokio::time::Instant::now() < until {
                    heartbeat();
                    tokio::time::sleep(beat_every).await;
                }
                // Stuck: no more beats, never returns.
                std::future::pending().await
            }
            Behaviour::Blocks(every) => loop {
                tokio::time::sleep(every).await;
                // A mistake a service makes: blocking the runtime's thread.
                std::thread::sleep(Duration::from_millis(300));
            },
            Behaviour::Serves => {
                let stop = context.cancellation_token();
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(beat_every) => heartbeat(),
                    }
                }
            }
        }
    }

    fn sends_heartbeats(&self) -> bool {
        matches!(self.behaviour, Behaviour::Hangs(_) | Behaviour::Serves)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `--serve`: serve the live page while the tasks fail, hang and restart, and keep going
    // (restarting without limit) until Ctrl-C.
    let serve = std::env::args().any(|arg| arg == "--serve");
    let second = Duration::from_secs(1);
    let tasks = [
        ("completes", Behaviour::Completes(3 * second)),
        ("fails", Behaviour::Fails(second)),
        ("panics", Behaviour::Panics(2 * second)),
        ("hangs", Behaviour::Hangs(2 * second)),
        ("serves", Behaviour::Serves),
        ("blocks", Behaviour::Blocks(4 * second)),
    ];
    let mut runs = BTreeMap::new();
    let mut builder = SupervisorBuilder::new()
        .with_base_restart_delay(Duration::from_millis(500))
        .with_timeout_threshold(second)
        .with_heartbeat_interval(Duration::from_millis(200))
        .with_health_check_initial_delay(second)
        .with_grace_period(second);
    for (name, behaviour) in tasks {
        let counter = Arc::new(AtomicU32::new(0));
        runs.insert(name, Arc::clone(&counter));
        builder = builder.with_task(
            name,
            DemoTask {
                behaviour,
                runs: counter,
            },
        );
    }
    // Panics are caught and reported by the supervisor; keep the terminal readable.
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic");
        eprintln!("          (a run panicked: {message})");
    }));
    builder = if serve {
        builder
            .with_unlimited_restarts()
            .with_max_backoff_exponent(2)
    } else {
        builder.with_max_restart_attempts(3)
    };
    let handle = builder.build().run();
    if serve {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:8080").await {
            Ok(listener) => listener,
            Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        };
        println!(
            "The live page: http://{}/ (also /livez, /readyz, /tasks); Ctrl-C to stop.\n",
            listener.local_addr()?
        );
        tokio::spawn(http::serve_on(handle.clone(), listener));
        signal::shutdown_on_signals(&handle)?;
    }
    let mut events = handle.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            let task = event.task.as_deref().unwrap_or("(the supervisor)");
            let what = match &event.kind {
                EventKind::Started | EventKind::Healthy => continue, // the table shows them
                EventKind::Failed { reason } => format!("failed: {reason}"),
                EventKind::Panicked { message } => format!("panicked: {message}"),
                EventKind::HeartbeatMissed { timeout } => format!("hung: no beat for {timeout:?}"),
                EventKind::RestartScheduled { delay } => format!("restarts in {}", ms(*delay)),
                EventKind::Completed => "completed".to_owned(),
                EventKind::Killed => "was killed".to_owned(),
                EventKind::Dead { reason } => format!("is dead: {reason}"),
                EventKind::Blocked { blocked_for } => {
                    format!("is blocking its thread ({} so far)", ms(*blocked_for))
                }
                EventKind::Unblocked { blocked_for } => {
                    format!("let go of its thread after {}", ms(*blocked_for))
                }
                EventKind::Stopping => "is stopping".to_owned(),
                other => format!("{other:?}"),
            };
            println!("      event: {task} {what}");
        }
    });

    println!("Six tasks: one completes, one fails, one panics, one hangs, one serves, one blocks.");
    if serve {
        println!("Each failing task is restarted after 0.5 s, 1 s, then every 2 s, for ever.\n");
    } else {
        println!("Each failing task is restarted after 0.5 s, 1 s, 2 s, then it is dead.\n");
    }
    for elapsed in 1..=15u32 {
        tokio::time::sleep(second).await;
        if !handle.is_running() {
            break; // Ctrl-C, with --serve
        }
        match elapsed {
            6 => {
                println!("-- restart `completes`: a completed task runs again");
                handle.restart("completes")?;
            }
            11 => {
                println!("-- kill `serves`: it gets its cancellation and finishes cleanly");
                handle.kill_task("serves")?;
            }
            _ => {}
        }
        let statuses = handle.get_all_task_statuses().await?;
        let row: Vec<String> = runs
            .iter()
            .map(|(name, counter)| {
                let status = statuses
                    .get(*name)
                    .map_or("?".to_owned(), ToString::to_string);
                format!(
                    "{name:>9}: {status:<9} ({} runs)",
                    counter.load(Ordering::Relaxed)
                )
            })
            .collect();
        println!("t={elapsed:>2}s {}", row.join(" "));
    }

    if serve {
        if handle.is_running() {
            println!("\nStill serving the live page; Ctrl-C to stop.");
        }
        let outcome = handle.wait().await;
        println!("Every run has ended.");
        return Ok(outcome?);
    }
    // The supervisor lives until it is told to stop, even once every task has finished.
    println!("\nShutting down.");
    handle.shutdown()?;
    handle.wait().await?;
    println!("Every run has ended.");
    Ok(())
}

/// A duration in whole milliseconds, for the terminal.
fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}
