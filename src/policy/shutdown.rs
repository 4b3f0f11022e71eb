//! In what order a supervisor stops its tasks when it ends.

/// In what order a supervisor stops its tasks when it ends (by
/// [`shutdown`](crate::SupervisorHandle::shutdown), the drop of its last handle, or its own
/// rules). Set it with
/// [`SupervisorBuilder::with_shutdown_order`](crate::SupervisorBuilder::with_shutdown_order).
///
/// Either way each run is stopped properly (its token cancelled, then its own grace period,
/// then it is dropped), and a bound set with
/// [`with_shutdown_timeout`](crate::SupervisorBuilder::with_shutdown_timeout) drops every run
/// still alive once it has passed. When the supervisor gives up because of its restart
/// intensity it stops its tasks in reverse order whatever this says, as Erlang/OTP does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ShutdownOrder {
    /// Every run is asked to stop at once, and they end in any order (the default): the
    /// fastest way down, and what a supervisor of many independent tasks wants.
    #[default]
    Concurrent,
    /// Tasks are stopped one at a time in reverse start order: each is asked to stop only
    /// once every task started after it has ended, as OTP stops its static children. For
    /// tasks that depend on those started before them (a worker on its database pool).
    Reverse,
}
