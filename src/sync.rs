//! The atomics and locks that the registry and the run context share across threads: the
//! standard library's, or `loom`'s when the crate is built with `--cfg loom`, so that the model
//! checker in `tests/loom.rs` explores every interleaving of the real code.
//!
//! Built without `--cfg loom`, this module only re-exports `std::sync` types: it changes
//! nothing in the crate's behaviour or cost.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
#[cfg(loom)]
pub(crate) use once_lock::OnceLock;

/// What the `loom` tests reach of the crate's internals. Not part of the public API.
#[cfg(loom)]
pub mod loom_model {
    pub use crate::context::LoomRun;
    pub use crate::registry::{LoomEntry, LoomRegistry};
}

/// `loom` has no `OnceLock`; this one has the standard library's memory semantics (the value
/// is written once, published by a release store, and read after an acquire load), built from
/// primitives `loom` can see.
#[cfg(loom)]
mod once_lock {
    use std::fmt;
    use std::sync::PoisonError;

    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::Mutex;

    pub(crate) struct OnceLock<T> {
        ready: AtomicBool,
        initializing: Mutex<()>,
        value: UnsafeCell<Option<T>>,
    }

    // SAFETY: as for `std::sync::OnceLock`: the value is written once, under the mutex and
    // before `ready` is released, and only read after `ready` was acquired.
    unsafe impl<T: Send + Sync> Sync for OnceLock<T> {}
    unsafe impl<T: Send> Send for OnceLock<T> {}

    impl<T> OnceLock<T> {
        pub(crate) fn new() -> Self {
            Self {
                ready: AtomicBool::new(false),
                initializing: Mutex::new(()),
                value: UnsafeCell::new(None),
            }
        }

        pub(crate) fn get(&self) -> Option<&T> {
            if !self.ready.load(Ordering::Acquire) {
                return None;
            }
            // SAFETY: `ready` is set only after the value was written, and it is never
            // written again.
            self.value.with(|value| unsafe { (*value).as_ref() })
        }

        pub(crate) fn get_or_init(&self, make: impl FnOnce() -> T) -> &T {
            if let Some(value) = self.get() {
                return value;
            }
            let guard = self
                .initializing
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !self.ready.load(Ordering::Acquire) {
                let value = make();
                // SAFETY: under the mutex and before `ready` is set, nobody else reads or
                // writes the value.
                self.value.with_mut(|slot| unsafe { *slot = Some(value) });
                self.ready.store(true, Ordering::Release);
            }
            drop(guard);
            match self.get() {
                Some(value) => value,
                None => unreachable!("the value was set above, under the mutex"),
            }
        }
    }

    impl<T: fmt::Debug> fmt::Debug for OnceLock<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_tuple("OnceLock")
                .field(&self.get() as &dyn fmt::Debug)
                .finish()
        }
    }
}
