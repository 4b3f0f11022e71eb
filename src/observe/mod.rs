//! What an operator sees of a supervisor: its lifecycle events and the lazily made streams
//! that carry them, task info, health, metrics and the blocked-poll watcher. Nothing here decides anything; the loop reports, this module publishes.

pub(crate) mod blocked;
pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod info;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
pub(crate) mod stream;
