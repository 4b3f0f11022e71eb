//! A real service, end to end: an HTTP server and a background worker supervised side by
//! side, the health endpoints and live page mounted on the server, systemd's notification
//! protocol on when systemd starts it, and a graceful shutdown on SIGTERM or Ctrl-C. It runs
//! until it is stopped, and its exit code says how it ended.
//!
//! ```sh
//! cargo run --example service               # listens on 127.0.0.1:3000
//! cargo run --example service -- 0.0.0.0:8080
//! curl -i localhost:3000/readyz             # then open http://localhost:3000/ in a browser
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use task_supervisor::integrations::systemd::{Environment, Notifier, Ready};
use task_supervisor::integrations::{http, signal};
use task_supervisor::{
    exit_code, heartbeat, task_fn, ShutdownOrder, SupervisorBuilder, TaskContext,
};

#[tokio::main]
async fn main() -> ExitCode {
    let addr: SocketAddr = match std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:3000")
        .parse()
    {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("usage: service [ADDRESS:PORT] ({error})");
            return ExitCode::from(2);
        }
    };
    let handle = SupervisorBuilder::new()
        // A worker that falls silent for 5 s is hung: stopped and restarted.
        .with_timeout_threshold(Duration::from_secs(5))
        // Flapping: more than 10 restarts in a minute, and the process gives up (exit code 11),
        // for systemd or Kubernetes to restart it.
        .with_restart_intensity(10, Duration::from_secs(60))
        .with_grace_period(Duration::from_secs(10))
        // Stopped last started first: the worker finishes while the server still answers
        // `/readyz` with 503, so the level above stops sending traffic before the port closes.
        .with_shutdown_order(ShutdownOrder::Reverse)
        .build()
        .run();

    let jobs = Arc::new(AtomicU64::new(0));

    // The HTTP server, with the supervisor's routes merged into the application's. Each run
    // binds anew, so a failed bind is retried with back-off; a stop is a graceful shutdown.
    let app: Router = Router::new()
        .route(
            "/jobs",
            get({
                let jobs = Arc::clone(&jobs);
                move || async move { format!("{} jobs done\n", jobs.load(Ordering::Relaxed)) }
            }),
        )
        .merge(http::router(handle.clone()));
    let server = task_fn(move || {
        let app = app.clone();
        async move {
            let token = TaskContext::current()
                .expect("in a run")
                .cancellation_token();
            let listener = tokio::net::TcpListener::bind(addr).await?;
            println!("listening on http://{addr}/ (live page), /livez, /readyz, /tasks, /jobs");
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await?;
            Ok(())
        }
    });
    handle.add_task("http", server).expect("a new name");

    // The background worker: one job a second, a heartbeat after each.
    let worker = {
        let jobs = Arc::clone(&jobs);
        task_fn(move || {
            let jobs = Arc::clone(&jobs);
            async move {
                let token = TaskContext::current()
                    .expect("in a run")
                    .cancellation_token();
                loop {
                    tokio::select! {
                        () = token.cancelled() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    jobs.fetch_add(1, Ordering::Relaxed);
                    heartbeat();
                }
            }
        })
        .with_heartbeats()
    };
    handle.add_task("worker", worker).expect("a new name");

    // Under systemd (Type=notify), READY=1 once both tasks are healthy, and the watchdog.
    match Notifier::from_environment(&Environment::from_process()) {
        Ok(Some(notifier)) => {
            notifier.spawn(&handle, Ready::WhenHealthy);
        }
        Ok(None) => {}
        Err(error) => eprintln!("not notifying systemd: {error}"),
    }
    if let Err(error) = signal::shutdown_on_signals(&handle) {
        eprintln!("no graceful shutdown on signals: {error}");
    }

    let outcome = handle.wait().await;
    match &outcome {
        Ok(()) => println!("stopped as asked"),
        Err(error) => eprintln!("the supervisor gave up: {error}"),
    }
    exit_code(&outcome)
}
