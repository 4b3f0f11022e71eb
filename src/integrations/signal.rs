//! A graceful shutdown on SIGTERM and SIGINT (feature `signal`): the first signal starts
//! [`shutdown`](crate::SupervisorHandle::shutdown), a second cuts it short with
//! [`shutdown_now`](crate::SupervisorHandle::shutdown_now). Elsewhere than on Unix, Ctrl-C
//! plays both parts.

use std::io;

use tokio::task::JoinHandle;

use super::Observer;
use crate::message::Message;
use crate::shared::{close, send};
use crate::SupervisorHandle;

/// Listens for SIGTERM and SIGINT (Ctrl-C), from now until the supervisor behind `handle`
/// has stopped: the first signal shuts it down gracefully, each run with its grace period
/// (and the shutdown bound, if one is set); a second drops every run still alive at once.
///
/// The listeners are installed before it returns, so no signal sent after the call is lost.
/// The listener does not keep the supervisor up, and ends by itself once it has stopped. If
/// the program started a shutdown itself, the first signal changes nothing (the shutdown goes
/// on, with its grace periods) and the second still cuts it short. Call it from inside a Tokio
/// runtime.
///
/// Tokio keeps its handlers for these signals installed for the rest of the process, so once
/// the listener has ended, SIGINT and SIGTERM no longer end the process by themselves: a
/// program that goes on after its supervisor stopped handles them itself.
///
/// # Errors
///
/// The error of installing a signal handler.
///
/// # Panics
///
/// When called outside a Tokio runtime.
///
/// # Examples
///
/// ```no_run
/// use std::process::ExitCode;
/// use task_supervisor::{exit_code, integrations::signal, task_fn, SupervisorBuilder};
///
/// #[tokio::main]
/// async fn main() -> ExitCode {
///     let handle = SupervisorBuilder::new()
///         .with_task("worker", task_fn(std::future::pending))
///         .build()
///         .run();
///     signal::shutdown_on_signals(&handle).expect("signal handlers");
///     exit_code(&handle.wait().await) // 0 after a Ctrl-C
/// }
/// ```
pub fn shutdown_on_signals(handle: &SupervisorHandle) -> io::Result<JoinHandle<()>> {
    let mut signals = Signals::new()?;
    let observer = Observer::of(handle);
    Ok(tokio::spawn(async move {
        let shared = &observer.0;
        let stopped = shared.stopped.clone();
        tokio::select! {
            () = stopped.cancelled() => return,
            name = signals.next() => {
                tracing::info!(signal = name, "shutting down the supervisor; a second signal drops every run at once");
                let _ = close(shared);
            }
        }
        tokio::select! {
            () = stopped.cancelled() => {}
            name = signals.next() => {
                tracing::warn!(signal = name, "second signal: dropping every run at once");
                let _ = send(shared, Message::DropEveryRun);
            }
        }
    }))
}

/// The signals listened for, installed at once.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// The next signal, by name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => "SIGTERM",
                _ = self.interrupt.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
