//! systemd's notification protocol (feature `systemd`, Unix): tells the service manager when
//! the service is ready, feeds its watchdog while the supervisor is healthy, and says when it
//! is stopping.
//!
//! A [`Notifier`] sends datagrams to the socket systemd names in `NOTIFY_SOCKET` (a path, or an
//! abstract name written `@name`), on std's Unix datagram socket. [`Notifier::spawn`] runs it
//! for a supervisor:
//!
//! - `READY=1` once every task that counts for readiness is healthy ([`Health::is_ready`]), or
//!   when the program calls [`Notifier::ready`] itself ([`Ready::Manually`]);
//! - `WATCHDOG=1` every half of `WATCHDOG_USEC`, but only while the supervisor is live
//!   ([`Health::is_live`]). It is sent from a task on the supervisor's runtime, so a wedged
//!   runtime stops feeding the watchdog too, and systemd restarts the process;
//! - `STATUS=` with the count of tasks in each status (at most once a second);
//! - `STOPPING=1` when the shutdown begins.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) there is no notifier and nothing is sent. A
//! `WATCHDOG_PID` that names another process turns the watchdog off for this one, as
//! `sd_watchdog_enabled` does.
//!
//! # A unit for it
//!
//! ```ini
//! [Service]
//! # Started once READY=1 arrives.
//! Type=notify
//! # Restarted if no WATCHDOG=1 comes for 10 s.
//! WatchdogSec=10s
//! # Restarted when the supervisor gave up (a non-zero exit code).
//! Restart=on-failure
//! ExecStart=/usr/local/bin/my-service
//! ```
//!
//! [`Health::is_ready`]: crate::Health::is_ready
//! [`Health::is_live`]: crate::Health::is_live

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::Observer;
use crate::observe::health::Health;
use crate::{EventKind, SupervisorHandle};

/// How often `STATUS=` may be sent at most.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// How long after a status change the readiness is checked (one check for a burst of
/// changes, however many tasks start at once).
const READY_CHECK_AFTER: Duration = Duration::from_millis(20);

/// How often readiness is checked while the supervisor is not ready, events or not (a child
/// supervisor's tasks come up without an event of this one); also how soon a `READY=1` or
/// `STOPPING=1` that could not be sent is tried again.
const READY_RECHECK: Duration = Duration::from_millis(250);

/// The systemd variables a notifier is made from. Read them from the process with
/// [`Environment::from_process`], or set them by hand (in tests, say), so that nothing global
/// is read or changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// `NOTIFY_SOCKET`: where to send notifications.
    pub notify_socket: Option<OsString>,
    /// `WATCHDOG_USEC`: the watchdog's timeout, in microseconds.
    pub watchdog_usec: Option<OsString>,
    /// `WATCHDOG_PID`: the process the watchdog is for.
    pub watchdog_pid: Option<OsString>,
}

impl Environment {
    /// The variables as this process has them.
    pub fn from_process() -> Self {
        Self {
            notify_socket: std::env::var_os("NOTIFY_SOCKET"),
            watchdog_usec: std::env::var_os("WATCHDOG_USEC"),
            watchdog_pid: std::env::var_os("WATCHDOG_PID"),
        }
    }
}

/// When [`Notifier::spawn`] sends `READY=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ready {
    /// Once every task that counts for readiness is healthy
    /// ([`Health::is_ready`](crate::Health::is_ready)); the default.
    #[default]
    WhenHealthy,
    /// Never by itself: the program calls [`Notifier::ready`] when it is ready.
    Manually,
}

/// Sends notifications to systemd; clones share one socket.
///
/// # Examples
///
/// ```no_run
/// use task_supervisor::integrations::systemd::{Environment, Notifier, Ready};
/// use task_supervisor::{task_fn, SupervisorBuilder};
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// let handle = SupervisorBuilder::new()
///     .with_task("worker", task_fn(std::future::pending))
///     .build()
///     .run();
/// // `None` outside systemd: then there is nothing to do.
/// if let Some(notifier) = Notifier::from_environment(&Environment::from_process())? {
///     notifier.spawn(&handle, Ready::WhenHealthy);
/// }
/// handle.wait().await.ok();
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    socket: UnixDatagram,
    address: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier for `environment`, or `None` if it names no socket (the process does not
    /// run under systemd, or not as `Type=notify`).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when `NOTIFY_SOCKET` is neither an absolute path nor
    /// an `@` name, or `WATCHDOG_USEC` or `WATCHDOG_PID` is not a number;
    /// [`io::ErrorKind::Unsupported`] for an `@` name off Linux; the error of making the
    /// socket.
    pub fn from_environment(environment: &Environment) -> io::Result<Option<Self>> {
        let Some(socket) = environment.notify_socket.as_deref() else {
            return Ok(None);
        };
        if socket.is_empty() {
            return Ok(None);
        }
        let address = address_of(socket)?;
        let watchdog = watchdog_of(environment)?;
        let socket = UnixDatagram::unbound()?;
        // A full socket buffer must never block the runtime: a notification that does not
        // fit is dropped (each says the whole state again, so the next one makes up for it).
        socket.set_nonblocking(true)?;
        Ok(Some(Self {
            inner: Arc::new(Inner {
                socket,
                address,
                watchdog,
            }),
        }))
    }

    /// Sends `state` as it is (newline-separated `KEY=value` assignments).
    ///
    /// # Errors
    ///
    /// The error of sending the datagram (nobody listens on the socket, say).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.inner
            .socket
            .send_to_addr(state.as_bytes(), &self.inner.address)
            .map(drop)
    }

    /// Sends `READY=1`.
    ///
    /// # Errors
    ///
    /// As [`notify`](Self::notify).
    pub fn ready(&self) -> io::Result<()> {
        self.notify("READY=1")
    }

    /// Sends `STOPPING=1`.
    ///
    /// # Errors
    ///
    /// As [`notify`](Self::notify).
    pub fn stopping(&self) -> io::Result<()> {
        self.notify("STOPPING=1")
    }

    /// Sends `WATCHDOG=1`.
    ///
    /// # Errors
    ///
    /// As [`notify`](Self::notify).
    pub fn watchdog(&self) -> io::Result<()> {
        self.notify("WATCHDOG=1")
    }

    /// Sends `STATUS=` with `status` (its line breaks replaced by spaces).
    ///
    /// # Errors
    ///
    /// As [`notify`](Self::notify).
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.notify(&format!("STATUS={}", status.replace(['\n', '\r'], " ")))
    }

    /// How often [`spawn`](Self::spawn) feeds the watchdog: half of `WATCHDOG_USEC`, as
    /// systemd advises; `None` when the watchdog is off for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.inner.watchdog.map(|timeout| timeout / 2)
    }

    /// Runs the protocol for the supervisor behind `handle` (see the [module](self)), until it
    /// has stopped. The task does not keep the supervisor up.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn spawn(self, handle: &SupervisorHandle, ready: Ready) -> JoinHandle<()> {
        let observer = Observer::of(handle);
        tokio::spawn(self.drive(observer, ready))
    }

    async fn drive(self, observer: Observer, ready: Ready) {
        let shared = &observer.0;
        let stopped = shared.stopped.clone();
        let mut events = shared.events.subscribe();
        let far = || Instant::now() + Duration::from_secs(86_400 * 365);
        let mut ready_sent = ready == Ready::Manually;
        let mut stopping_sent = false;
        // Readiness is checked at once, after a burst of events, and every `READY_RECHECK`
        // while not ready: a child supervisor's tasks come up without an event of this one.
        let mut ready_check = if ready_sent { far() } else { Instant::now() };
        let mut status_due: Option<Instant> = Some(Instant::now());
        let mut last_status: Option<Instant> = None;
        let mut next_watchdog = self.watchdog_interval().map(|every| Instant::now() + every);
        let mut stopping_retry = far();
        loop {
            let watchdog_at = next_watchdog.unwrap_or_else(far);
            let status_at = status_due.unwrap_or_else(far);
            tokio::select! {
                () = stopped.cancelled() => break,
                event = events.recv() => match event {
                    Ok(event) => {
                        if !ready_sent && ready_check > Instant::now() + READY_CHECK_AFTER {
                            ready_check = Instant::now() + READY_CHECK_AFTER;
                        }
                        if matches!(event.kind, EventKind::Stopping) {
                            stopping_retry = Instant::now();
                        }
                        status_due.get_or_insert_with(|| status_after(last_status));
                    }
                    Err(RecvError::Lagged(_)) => {
                        if !ready_sent {
                            ready_check = Instant::now();
                        }
                        status_due.get_or_insert_with(|| status_after(last_status));
                    }
                    // The supervisor stopped: the token says so too.
                    Err(RecvError::Closed) => {
                        stopped.cancelled().await;
                        break;
                    }
                },
                () = sleep_until(ready_check), if !ready_sent => {
                    ready_check = Instant::now() + READY_RECHECK;
                    let health = observer.health();
                    if health.is_ready() {
                        // A READY=1 that could not be sent is tried again at the next check.
                        ready_sent = self.send(&format!("READY=1\nSTATUS={}", status_line(shared, &health)));
                        if ready_sent {
                            last_status = Some(Instant::now());
                            status_due = None;
                        }
                    }
                }
                () = sleep_until(status_at), if status_due.is_some() => {
                    status_due = None;
                    last_status = Some(Instant::now());
                    let health = observer.health();
                    self.send(&format!("STATUS={}", status_line(shared, &health)));
                }
                () = sleep_until(watchdog_at), if next_watchdog.is_some() => {
                    next_watchdog = self.watchdog_interval().map(|every| Instant::now() + every);
                    let health = observer.health();
                    if health.is_live() {
                        self.send("WATCHDOG=1");
                    } else {
                        tracing::warn!(%health, "not feeding systemd's watchdog: the supervisor is not live");
                    }
                }
                () = sleep_until(stopping_retry), if !stopping_sent => {
                    stopping_retry = far();
                }
            }
            if !stopping_sent && !shared.registry.is_running() {
                stopping_sent = self.send("STOPPING=1");
                if !stopping_sent {
                    stopping_retry = Instant::now() + READY_RECHECK;
                }
            }
        }
    }

    /// Sends `state`, logging a failure (there is no one else to tell); whether it went.
    fn send(&self, state: &str) -> bool {
        match self.notify(state) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, state, "could not notify systemd");
                false
            }
        }
    }
}

/// When the next `STATUS=` may go, the last having gone at `last`.
fn status_after(last: Option<Instant>) -> Instant {
    let now = Instant::now();
    last.map_or(now, |last| (last + STATUS_EVERY).max(now))
}

/// The `STATUS=` line: the health (of the whole tree), then the count of this supervisor's
/// own tasks in each status, on one line whatever the task names hold.
fn status_line(shared: &crate::shared::Shared, health: &Health) -> String {
    let counts: Vec<String> = Health::counts(shared)
        .into_iter()
        .map(|(status, count)| format!("{count} {status}"))
        .collect();
    let line = if counts.is_empty() {
        format!("{health}; no tasks")
    } else {
        format!("{health}; {}", counts.join(", "))
    };
    // A task's name may hold a newline: it must not start an assignment of its own.
    line.replace(['\n', '\r'], " ")
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The address `NOTIFY_SOCKET` names: an absolute path, or an abstract name after `@`.
fn address_of(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(socket),
        Some(b'@') => abstract_address(&bytes[1..]),
        _ => Err(invalid(format!(
            "NOTIFY_SOCKET must be an absolute path or an @ name, not {socket:?}"
        ))),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names (NOTIFY_SOCKET=@...) exist on Linux only",
    ))
}

/// The watchdog's timeout for this process, from `WATCHDOG_USEC` and `WATCHDOG_PID`.
fn watchdog_of(environment: &Environment) -> io::Result<Option<Duration>> {
    let number = |name: &str, value: &OsStr| -> io::Result<u64> {
        value
            .to_str()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| invalid(format!("{name} must be a number, not {value:?}")))
    };
    let Some(usec) = environment.watchdog_usec.as_deref() else {
        return Ok(None);
    };
    let usec = number("WATCHDOG_USEC", usec)?;
    if let Some(pid) = environment.watchdog_pid.as_deref() {
        if number("WATCHDOG_PID", pid)? != u64::from(std::process::id()) {
            return Ok(None);
        }
    }
    Ok((usec > 0).then(|| Duration::from_micros(usec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(socket: &str, usec: Option<&str>, pid: Option<&str>) -> Environment {
        Environment {
            notify_socket: Some(socket.into()),
            watchdog_usec: usec.map(Into::into),
            watchdog_pid: pid.map(Into::into),
        }
    }

    #[test]
    fn no_socket_means_no_notifier() {
        assert!(Notifier::from_environment(&Environment::default())
            .unwrap()
            .is_none());
        assert!(Notifier::from_environment(&environment("", None, None))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_relative_socket_or_a_bad_number_is_refused() {
        for bad in [
            environment("run/notify", None, None),
            environment("/run/notify", Some("ten"), None),
            environment("/run/notify", Some("1000"), Some("me")),
        ] {
            let error = Notifier::from_environment(&bad).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn the_watchdog_is_fed_at_half_its_timeout_and_only_for_this_process() {
        let me = std::process::id().to_string();
        let notifier =
            Notifier::from_environment(&environment("/run/n", Some("10000000"), Some(&me)))
                .unwrap()
                .unwrap();
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(5)));
        let other = (std::process::id() + 1).to_string();
        let notifier =
            Notifier::from_environment(&environment("/run/n", Some("10000000"), Some(&other)))
                .unwrap()
                .unwrap();
        assert_eq!(notifier.watchdog_interval(), None);
        let notifier = Notifier::from_environment(&environment("/run/n", None, None))
            .unwrap()
            .unwrap();
        assert_eq!(notifier.watchdog_interval(), None);
    }
}
