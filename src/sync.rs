//! The atomics and locks that the registry and the run context share across threads: the
//! standard library's, or `loom`'s when the crate is built with `--cfg loom`, so that the model
//! checker in `tests/loom.rs` explores every interleaving of the real code.
//!
//! Built without `--cfg loom`, this module only re-exports `std::sync` types: it changes
//! nothing in the crate's behaviour or cost.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// What the `loom` tests reach of the crate's internals. Not part of the public API.
#[cfg(loom)]
pub mod loom_model {
    pub use crate::context::LoomRun;
    pub use crate::registry::{LoomEntry, LoomRegistry};
}
