//! Back-off arithmetic: how long to wait before a restart. Pure functions, with the randomness
//! injected so that every delay can be checked exactly in tests.

use std::time::Duration;

/// The delay before restart number `attempt` (1 for the first restart), before jitter.
///
/// The first restart waits `base`; each later one doubles it, up to `base * 2^max_exponent`.
/// The arithmetic is exact until the delay itself no longer fits a `Duration`, and saturates at
/// `Duration::MAX` from there.
pub(crate) fn exponential_delay(base: Duration, attempt: u32, max_exponent: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(max_exponent);
    let base = base.as_nanos();
    if base == 0 {
        return Duration::ZERO;
    }
    // `base` needs at most 94 bits, so a shift that keeps it within 128 bits is exact.
    let headroom = base.leading_zeros();
    if exponent >= headroom {
        return Duration::MAX;
    }
    let nanos = base << exponent;
    let seconds = nanos / 1_000_000_000;
    match u64::try_from(seconds) {
        Ok(seconds) => Duration::new(seconds, (nanos % 1_000_000_000) as u32),
        Err(_) => Duration::MAX,
    }
}

/// Spreads `delay` over `[delay, delay * (1 + fraction))` with `unit`, a number in `[0, 1)`.
///
/// Jitter only ever lengthens a delay, so the first restart never comes before the base delay.
/// A zero delay stays zero: an immediate restart is never pushed onto the timer.
pub(crate) fn with_jitter(delay: Duration, fraction: f64, unit: f64) -> Duration {
    if delay.is_zero() || fraction <= 0.0 || !fraction.is_finite() {
        return delay;
    }
    let extra = delay.as_secs_f64() * fraction * unit.clamp(0.0, 1.0);
    match Duration::try_from_secs_f64(extra) {
        Ok(extra) => delay.saturating_add(extra),
        Err(_) => Duration::MAX,
    }
}

/// A small, fast pseudo-random source for jitter (SplitMix64).
///
/// Jitter needs spread, not secrecy, so a dependency on a full random number generator would
/// not earn its place. Seed it with a fixed value to make delays reproducible.
#[derive(Debug, Clone)]
pub(crate) struct JitterSource {
    state: u64,
}

impl JitterSource {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Seeds from the clock and the address of a stack value, which is enough to keep two
    /// supervisors in one process from jittering in lockstep.
    pub(crate) fn from_entropy() -> Self {
        let marker = 0u8;
        let address = &marker as *const u8 as u64;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        Self::new(nanos ^ address.rotate_left(32))
    }

    /// The next number in `[0, 1)`.
    pub(crate) fn next_unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits make an exactly representable f64 in [0, 1).
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn first_restart_waits_the_base_delay() {
        assert_eq!(exponential_delay(SECOND, 1, 5), SECOND);
    }

    #[test]
    fn delay_doubles_until_the_exponent_caps_it() {
        let delays: Vec<u64> = (1..=8)
            .map(|attempt| exponential_delay(SECOND, attempt, 3).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 8, 8, 8, 8]);
    }

    #[test]
    fn attempt_zero_is_treated_as_the_first() {
        assert_eq!(exponential_delay(SECOND, 0, 5), SECOND);
    }

    #[test]
    fn huge_exponents_saturate_only_when_the_delay_overflows() {
        assert_eq!(exponential_delay(SECOND, u32::MAX, u32::MAX), Duration::MAX);
        assert_eq!(
            exponential_delay(SECOND, 41, 40),
            Duration::from_secs(1 << 40),
            "2^40 s still fits"
        );
        assert_eq!(
            exponential_delay(Duration::from_nanos(1), 33, 40),
            Duration::from_nanos(1 << 32),
            "a small base keeps doubling past 2^32"
        );
        assert_eq!(exponential_delay(SECOND, 70, 70), Duration::MAX);
        assert_eq!(
            exponential_delay(Duration::MAX, 2, 1),
            Duration::MAX,
            "doubling the largest duration saturates"
        );
        assert_eq!(exponential_delay(Duration::ZERO, 40, 40), Duration::ZERO);
    }

    #[test]
    fn zero_base_stays_zero_with_jitter() {
        assert_eq!(with_jitter(Duration::ZERO, 0.5, 0.9), Duration::ZERO);
    }

    #[test]
    fn jitter_only_lengthens_within_the_fraction() {
        let delay = Duration::from_millis(1000);
        assert_eq!(with_jitter(delay, 0.1, 0.0), delay);
        assert_eq!(with_jitter(delay, 0.1, 0.5), Duration::from_millis(1050));
        assert_eq!(with_jitter(delay, 0.0, 0.5), delay);
        assert_eq!(with_jitter(delay, f64::NAN, 0.5), delay);
        assert_eq!(with_jitter(Duration::MAX, 1.0, 0.99), Duration::MAX);
    }

    #[test]
    fn jitter_source_stays_in_the_unit_interval_and_spreads() {
        let mut source = JitterSource::new(7);
        let draws: Vec<f64> = (0..10_000).map(|_| source.next_unit()).collect();
        assert!(draws.iter().all(|unit| (0.0..1.0).contains(unit)));
        let below_half = draws.iter().filter(|unit| **unit < 0.5).count();
        assert!(
            (4_500..5_500).contains(&below_half),
            "{below_half} of 10000 below 0.5"
        );
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = JitterSource::new(42);
        let mut b = JitterSource::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_unit().to_bits(), b.next_unit().to_bits());
        }
    }
}
