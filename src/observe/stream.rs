//! A broadcast stream that exists only once someone subscribes: a supervisor nobody watches
//! pays one atomic load per thing it could have published.
//!
//! # Invariants
//!
//! 1. Once closed, a stream never opens again, and a subscription made after it closed ends at
//!    once.
//! 2. The publisher's cheap check (`sender`) never misses a subscription made before it: the
//!    flag is set, with release ordering, after the channel exists.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

/// See the [module documentation](self).
#[derive(Debug)]
pub(crate) struct LazyBroadcast<T> {
    channel: Mutex<Channel<T>>,
    /// Whether anyone ever subscribed.
    subscribed: AtomicBool,
    /// How many items a slow subscriber may fall behind before it misses some.
    capacity: usize,
}

#[derive(Debug)]
struct Channel<T> {
    sender: Option<broadcast::Sender<T>>,
    closed: bool,
}

impl<T: Clone> LazyBroadcast<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            channel: Mutex::new(Channel {
                sender: None,
                closed: false,
            }),
            subscribed: AtomicBool::new(false),
            capacity,
        }
    }

    fn channel(&self) -> MutexGuard<'_, Channel<T>> {
        self.channel.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver of everything published from now on; closed at once if the stream is.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<T> {
        let mut channel = self.channel();
        if channel.closed {
            // Its sender is dropped right away, so it reports `Closed` on its first receive.
            return broadcast::channel(1).1;
        }
        let capacity = self.capacity;
        let receiver = channel
            .sender
            .get_or_insert_with(|| broadcast::channel(capacity).0)
            .subscribe();
        self.subscribed.store(true, Ordering::Release);
        receiver
    }

    /// The sender, if anyone has subscribed (and the stream is open).
    pub(crate) fn sender(&self) -> Option<broadcast::Sender<T>> {
        if !self.subscribed.load(Ordering::Acquire) {
            return None;
        }
        self.channel().sender.clone()
    }

    /// Ends the stream for every subscriber, once the publisher holds no sender either.
    pub(crate) fn close(&self) {
        let mut channel = self.channel();
        channel.closed = true;
        channel.sender = None;
    }
}

/// A publisher's cached sender of a [`LazyBroadcast`]: looked up while nobody has subscribed,
/// kept once someone has.
#[derive(Debug)]
pub(crate) struct Publisher<T> {
    sender: Option<broadcast::Sender<T>>,
}

impl<T: Clone> Publisher<T> {
    pub(crate) fn new() -> Self {
        Self { sender: None }
    }

    /// Whether anyone may receive what is published now; `make` is called only then.
    pub(crate) fn publish(&mut self, stream: &LazyBroadcast<T>, make: impl FnOnce() -> T) {
        if self.sender.is_none() {
            self.sender = stream.sender();
        }
        if let Some(sender) = &self.sender {
            // No receiver left is not an error: the stream is best effort for its readers.
            let _ = sender.send(make());
        }
    }

    /// Lets go of the sender, so that the stream can end.
    pub(crate) fn release(&mut self) {
        self.sender = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_made_before_a_subscription() {
        let stream = LazyBroadcast::<u32>::new(4);
        let mut publisher = Publisher::new();
        let mut made = false;
        publisher.publish(&stream, || {
            made = true;
            1
        });
        assert!(!made, "nobody listens: nothing is built");
        let mut receiver = stream.subscribe();
        publisher.publish(&stream, || 2);
        assert_eq!(receiver.try_recv(), Ok(2));
    }

    #[test]
    fn a_closed_stream_ends_every_subscription() {
        let stream = LazyBroadcast::<u32>::new(4);
        let mut early = stream.subscribe();
        let mut publisher = Publisher::new();
        publisher.publish(&stream, || 1);
        publisher.release();
        stream.close();
        assert_eq!(early.try_recv(), Ok(1));
        assert_eq!(
            early.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        );
        let mut late = stream.subscribe();
        assert_eq!(late.try_recv(), Err(broadcast::error::TryRecvError::Closed));
    }

    #[test]
    fn a_slow_subscriber_is_told_how_much_it_missed() {
        let stream = LazyBroadcast::<u32>::new(2);
        let mut receiver = stream.subscribe();
        let mut publisher = Publisher::new();
        for item in 0..5 {
            publisher.publish(&stream, || item);
        }
        assert_eq!(
            receiver.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(3))
        );
        assert_eq!(receiver.try_recv(), Ok(3));
    }
}
