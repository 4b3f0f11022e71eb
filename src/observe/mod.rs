//! What an operator sees of a supervisor: its lifecycle events, and the lazily made streams
//! that carry them. Nothing here decides anything; the loop reports, this module publishes.

pub(crate) mod events;
pub(crate) mod info;
pub(crate) mod stream;
