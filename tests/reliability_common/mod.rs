//! Helpers shared by the reliability tests (`chaos.rs`, `model.rs`, `bad_input.rs`): a seeded
//! random source, a quiet panic hook for injected panics, and ways to let a paused runtime
//! catch up without moving its clock.
#![allow(dead_code)] // Each test file uses a different part.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Once};
use std::task::{Context, Poll, Wake, Waker};

/// Every panic a reliability test injects on purpose starts with this, so the panic hook can
/// keep them out of the output (thousands of them would drown a real failure).
pub const INJECTED: &str = "[injected]";

/// Installs, once per test binary, a panic hook that stays silent for injected panics and
/// reports every other panic as the default hook does.
pub fn quiet_injected_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            if message.is_some_and(|message| message.starts_with(INJECTED))
                || payload.is::<PanickyPayload>()
                || payload.is::<RecursivePayload>()
            {
                return;
            }
            default_hook(info);
        }));
    });
}

/// A panic payload whose `Drop` panics in turn (unless the thread is already unwinding): for
/// `std::panic::panic_any(PanickyPayload)`.
pub struct PanickyPayload;

/// A panic payload whose `Drop` panics with another `RecursivePayload` (unless the thread is
/// already unwinding): whoever drops one without a guard gets a panic that catching once does
/// not end.
pub struct RecursivePayload;

impl Drop for RecursivePayload {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            std::panic::panic_any(RecursivePayload);
        }
    }
}

impl Drop for PanickyPayload {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("{INJECTED} payload drop");
        }
    }
}

/// SplitMix64: small, fast and good enough to draw test behaviours; seeded, so every draw can
/// be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for one party of a test, independent of the others: `seed` mixed with the
    /// party's coordinates.
    pub fn derive(seed: u64, coordinates: &[u64]) -> Self {
        let mut state = seed ^ 0x5EED_5EED_5EED_5EED;
        for coordinate in coordinates {
            state = mix(state ^ mix(*coordinate));
        }
        Self(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }

    /// One of `choices`, drawn with the weights given.
    pub fn weighted<T: Copy>(&mut self, choices: &[(u64, T)]) -> T {
        let total: u64 = choices.iter().map(|(weight, _)| weight).sum();
        let mut draw = self.below(total);
        for (weight, choice) in choices {
            if draw < *weight {
                return *choice;
            }
            draw -= weight;
        }
        unreachable!("the draw is below the total weight")
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed a seeded test uses: `$VARIABLE` if set (a number), else `default`.
pub fn seed_from_env(variable: &str, default: u64) -> u64 {
    match std::env::var(variable) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{variable}={value:?} is not a number")),
        Err(_) => default,
    }
}

struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

/// Polls `future` once: `Some(output)` if it completed on that first poll.
///
/// Used to check the documented promise that status reads complete on their first poll.
pub fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(NoopWake));
    let mut context = Context::from_waker(&waker);
    match pin!(future).poll(&mut context) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// Lets every task of a current-thread runtime run until it waits again, without moving the
/// (paused) clock: the supervisor's loop, the runs it spawned, the runs' exits.
pub async fn settle() {
    for _ in 0..SETTLE_ROUNDS {
        tokio::task::yield_now().await;
    }
}

/// Scheduler rounds in [`settle`]: a command's longest chain (message, stop, drop, exit, next
/// start, first poll, progress message) takes fewer than ten.
const SETTLE_ROUNDS: usize = 24;

/// Burns the thread for a while without sleeping: a task that blocks its thread briefly.
pub fn block_thread(iterations: u64) -> u64 {
    let mut accumulator = 0u64;
    for step in 0..iterations {
        accumulator = std::hint::black_box(accumulator.wrapping_mul(31).wrapping_add(step));
    }
    accumulator
}
