//! Catching what user code throws: a task's `Drop`, a panic payload's `Drop`, and reading a
//! panic's message. The supervisor and its callers never unwind because of a task.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Reads a panic's message and drops its payload, where a panicking `Drop` of the payload
/// is caught too.
pub(crate) fn describe_panic(payload: Box<dyn Any + Send>) -> String {
    let message = catch_unwind(AssertUnwindSafe(|| panic_message(payload.as_ref())))
        .unwrap_or_else(|_| "panic with a payload that could not be read".to_owned());
    dispose(payload);
    message
}

/// Drops `value` (a task, a message holding one) where a panicking `Drop` is caught: the
/// supervisor and its callers never unwind because of a task's `Drop`.
pub(crate) fn drop_guarded<T>(value: T) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
        dispose(payload);
    }
}

/// Drops a panic payload; one whose `Drop` panics as well is leaked instead, as the standard
/// library does with a panic during a panic.
pub(crate) fn dispose(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// The message of a panic payload: panics with a formatted message carry a `String`, panics
/// with a literal carry a `&'static str`.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic with a payload that is not a string".to_owned()
    }
}
