//! A small service as a supervision tree: an acceptor and its workers under `RestForOne`,
//! below a root that also runs a reporter, and that stops by itself when its significant task
//! is done. Run it with `cargo run --example tree`; it exits after about five seconds.
//!
//! ```text
//! root (OneForOne, AnySignificant, reverse shutdown)
//! ├── service (a child supervisor: RestForOne, 3 restarts a minute, reverse shutdown)
//! │   ├── acceptor   opens a fresh "socket" every run, fails once after 1.5 s
//! │   ├── worker-1   takes connections from the acceptor's socket
//! │   └── worker-2
//! └── uptime         significant: completes after 5 s, which stops the whole tree
//! ```
//!
//! Workers read from the socket the acceptor's current run opened; when the acceptor fails and
//! opens a new one, workers still holding the old one would read from it forever. `RestForOne`
//! restarts them with it, in order, once every one of them has stopped. The service stops in
//! reverse order (workers first), and the root stops it only once all three have ended.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use task_supervisor::{
    async_trait, bail, AutoShutdown, ChildSupervisor, RestartPolicy, ShutdownOrder, Strategy,
    SupervisedTask, SupervisorBuilder, TaskContext, TaskResult, TaskSpec,
};
use tokio::sync::{mpsc, watch, Mutex};

/// The current run of the acceptor publishes the receiving end of its socket here.
type Socket = watch::Sender<Option<Arc<Mutex<mpsc::Receiver<u32>>>>>;

#[derive(Clone)]
struct Acceptor {
    socket: Arc<Socket>,
    runs: Arc<AtomicU32>,
}

#[async_trait]
impl SupervisedTask for Acceptor {
    async fn run(&mut self) -> TaskResult {
        let run = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        let (connections, incoming) = mpsc::channel(16);
        self.socket
            .send_replace(Some(Arc::new(Mutex::new(incoming))));
        // However this run ends, its socket is gone with it.
        let _closed = Closed(Arc::clone(&self.socket));
        println!("  acceptor: run {run} listening on a fresh socket");
        for connection in 1.. {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if run == 1 && connection == 3 {
                println!("  acceptor: the socket was closed under us; failing");
                bail!("the socket was closed under us");
            }
            // Every worker may be gone, while the tree stops: then the send fails.
            let _ = connections.send(run * 100 + connection).await;
        }
        Ok(())
    }
}

/// Takes the socket of a run of the acceptor away when that run ends.
struct Closed(Arc<Socket>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.send_replace(None);
    }
}

#[derive(Clone)]
struct Worker {
    name: &'static str,
    socket: Arc<Socket>,
}

#[async_trait]
impl SupervisedTask for Worker {
    async fn run(&mut self) -> TaskResult {
        let stop = TaskContext::current()
            .expect("run by a supervisor")
            .cancellation_token();
        // The socket of the acceptor's current run; if it has none open yet, the next one.
        let mut published = self.socket.subscribe();
        let incoming = published.wait_for(Option::is_some).await?.clone();
        let Some(incoming) = incoming else {
            bail!("no socket was published");
        };
        loop {
            let connection = tokio::select! {
                () = stop.cancelled() => {
                    println!("  {}: asked to stop", self.name);
                    return Ok(());
                }
                connection = async { incoming.lock().await.recv().await } => connection,
            };
            match connection {
                Some(connection) => println!("  {}: served connection {connection}", self.name),
                None => {
                    // The acceptor has gone: its group restarts this run with it.
                    println!("  {}: the socket closed", self.name);
                    stop.cancelled().await;
                    return Ok(());
                }
            }
        }
    }
}

/// The child supervisor: a fresh socket slot per build, shared by the acceptor and workers.
fn service() -> ChildSupervisor {
    let acceptor_runs = Arc::new(AtomicU32::new(0));
    ChildSupervisor::new(move || {
        let socket = Arc::new(watch::Sender::new(None));
        let worker = |name| Worker {
            name,
            socket: Arc::clone(&socket),
        };
        SupervisorBuilder::new()
            .with_strategy(Strategy::RestForOne)
            .with_shutdown_order(ShutdownOrder::Reverse)
            .with_restart_intensity(3, Duration::from_secs(60))
            .with_base_restart_delay(Duration::from_millis(200))
            .with_task(
                "acceptor",
                Acceptor {
                    socket: Arc::clone(&socket),
                    runs: Arc::clone(&acceptor_runs),
                },
            )
            .with_task("worker-1", worker("worker-1"))
            .with_task("worker-2", worker("worker-2"))
    })
}

#[derive(Clone)]
struct Uptime;

#[async_trait]
impl SupervisedTask for Uptime {
    async fn run(&mut self) -> TaskResult {
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!("  uptime: five seconds served, the work is done");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = SupervisorBuilder::new()
        .with_auto_shutdown(AutoShutdown::AnySignificant)
        .with_shutdown_order(ShutdownOrder::Reverse)
        .with_task("service", service())
        .with_task_spec(
            "uptime",
            TaskSpec::new(Uptime)
                .with_restart_policy(RestartPolicy::Temporary)
                .significant(),
        )
        .build()
        .run();

    // Draws the tree whenever it looks different.
    let watcher = root.clone();
    let printer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut last = String::new();
        loop {
            tick.tick().await;
            let Ok(tree) = watcher.tree() else { return };
            let drawn = tree.to_string();
            if drawn != last {
                println!("-- the tree now:\n{drawn}");
                last = drawn;
            }
        }
    });

    // The significant task completes after five seconds: the root stops by itself, the
    // uptime task first, then the service, whose tasks stop before it is reported ended.
    root.wait().await?;
    printer.abort();
    println!("The tree has stopped: every run of every level has ended.");
    Ok(())
}
