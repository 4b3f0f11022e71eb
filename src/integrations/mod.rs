//! Supervision from above: what lets the level above the process (Kubernetes, systemd, the
//! shell) watch the supervisor and restart the process when it gave up.
//!
//! Each integration is behind a feature of its own, so that a service pays only for what it
//! uses:
//!
//! | feature | module | what it gives |
//! | --- | --- | --- |
//! | `axum` | [`http`] | `/livez`, `/readyz`, `/tasks` and a live page, as an axum 0.8 router or a small server |
//! | `systemd` | [`systemd`] | `READY=1`, `WATCHDOG=1`, `STATUS=` and `STOPPING=1` over `NOTIFY_SOCKET` (Unix) |
//! | `signal` | [`signal`] | a graceful shutdown on SIGTERM and SIGINT (Ctrl-C), cut short by a second |
//!
//! They all read [`SupervisorHandle::health`](crate::SupervisorHandle::health), and none of
//! them keeps the supervisor up: dropping the last handle still stops it. Exit codes, which
//! need no feature, are [`exit_code`](crate::exit_code).

#[cfg(feature = "axum")]
pub mod http;
#[cfg(feature = "axum")]
mod page;
#[cfg(feature = "signal")]
pub mod signal;
#[cfg(all(feature = "systemd", unix))]
pub mod systemd;

/// What an integration holds of a supervisor: its shared state, which lets it read and
/// command without being a handle, so that it never keeps the supervisor up.
#[cfg(any(feature = "axum", feature = "signal", all(feature = "systemd", unix)))]
#[derive(Clone)]
pub(crate) struct Observer(pub(crate) std::sync::Arc<crate::shared::Shared>);

#[cfg(any(feature = "axum", feature = "signal", all(feature = "systemd", unix)))]
impl Observer {
    pub(crate) fn of(handle: &crate::SupervisorHandle) -> Self {
        Self(handle.shared_state())
    }

    #[cfg(any(feature = "axum", all(feature = "systemd", unix)))]
    pub(crate) fn health(&self) -> crate::Health {
        crate::Health::of(&self.0)
    }
}
