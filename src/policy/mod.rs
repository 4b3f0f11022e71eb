//! The supervisor's decisions, as pure functions and small types: no channel, no Tokio task,
//! no clock read. The loop asks them what to do and does it, so each rule lives in one place
//! and is unit-tested on its own (as tower's `retry` policies are).

pub(crate) mod auto_shutdown;
pub(crate) mod backoff;
pub(crate) mod dead_tasks;
pub(crate) mod restart;
pub(crate) mod shutdown;
pub(crate) mod strategy;
pub(crate) mod window;
