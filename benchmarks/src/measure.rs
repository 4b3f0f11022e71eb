//! What the scenarios measure with: process CPU time, resident memory, percentiles, and the
//! shared counters tasks report to.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// CPU time used so far by every thread of this process (user and system), with nanosecond
/// precision: `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`, which reads the scheduler's own
/// accounting rather than the tick-sampled figures of `getrusage` or `/proc/self/stat`.
pub fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of this process from `getrusage(RUSAGE_SELF)`, user plus system; kept to cross-check
/// [`process_cpu`] (its resolution is the scheduler tick on many kernels).
pub fn rusage_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid and writable.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resident bytes of this process, from the second field of `/proc/self/statm`.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages in /proc/self/statm");
    pages * page_size()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// CPU used over `window`, in percent of one core.
pub fn cpu_percent(cpu: Duration, window: Duration) -> f64 {
    cpu.as_secs_f64() / window.as_secs_f64() * 100.0
}

/// The `p`-quantile (0 to 1) of `samples`, nearest rank; NaN when there is none.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = ((samples.len() - 1) as f64 * p).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// The median of `samples`.
pub fn median(samples: &mut [f64]) -> f64 {
    percentile(samples, 0.5)
}

/// The zero of every timestamp the benchmarks store in atomics.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`], plus one so that zero means "never".
pub fn stamp() -> u64 {
    epoch().elapsed().as_nanos() as u64 + 1
}

/// Counts tasks entering their run, and wakes a waiter when a target is reached.
#[derive(Debug, Default)]
pub struct Entered {
    count: AtomicUsize,
    target: AtomicUsize,
    reached: Notify,
    reached_at: AtomicU64,
}

impl Entered {
    /// A counter that wakes [`wait`](Self::wait) once `target` runs have entered.
    pub fn new(target: usize) -> Self {
        Self {
            count: AtomicUsize::new(0),
            target: AtomicUsize::new(target),
            reached: Notify::new(),
            reached_at: AtomicU64::new(0),
        }
    }

    /// Called first thing by every run.
    pub fn enter(&self) {
        let now = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if now == self.target.load(Ordering::Acquire) {
            self.reached_at.store(stamp(), Ordering::Release);
            self.reached.notify_one();
        }
    }

    /// Stamp ([`stamp`]) of the run that reached the target, `0` before.
    pub fn reached_at(&self) -> u64 {
        self.reached_at.load(Ordering::Acquire)
    }

    /// Returns once `count` runs (fewer than the target) have entered; polls, so it is for
    /// the untimed parts of a scenario.
    pub async fn wait_for(&self, count: usize) {
        while self.count() < count {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// How many runs have entered.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Returns once the target has been reached.
    pub async fn wait(&self) {
        while self.count() < self.target.load(Ordering::Acquire) {
            // `notify_one` stores a permit, so a notification sent before this await is kept.
            let _ = tokio::time::timeout(Duration::from_millis(50), self.reached.notified()).await;
        }
    }
}

/// What a task that restarts over and over reports: how many runs, and the time from the end
/// of one run to the start of the next.
#[derive(Debug)]
pub struct Restarts {
    /// Runs entered.
    pub runs: AtomicU64,
    /// Stamp of the last run's end (its failure, panic or last beat), `0` for none.
    pub last_end: AtomicU64,
    /// Whether gaps are being recorded.
    pub recording: AtomicBool,
    gaps: Vec<AtomicU64>,
    next_gap: AtomicUsize,
    /// Signalled when the gap buffer is full.
    pub full: Notify,
}

impl Restarts {
    /// Room for `capacity` gaps.
    pub fn new(capacity: usize) -> Self {
        Self {
            runs: AtomicU64::new(0),
            last_end: AtomicU64::new(0),
            recording: AtomicBool::new(false),
            gaps: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            next_gap: AtomicUsize::new(0),
            full: Notify::new(),
        }
    }

    /// Called first thing by every run: counts it and records the gap since the last end.
    pub fn enter(&self) {
        let now = stamp();
        self.runs.fetch_add(1, Ordering::Relaxed);
        let last = self.last_end.swap(0, Ordering::AcqRel);
        if last != 0 && self.recording.load(Ordering::Relaxed) {
            let index = self.next_gap.fetch_add(1, Ordering::Relaxed);
            if let Some(slot) = self.gaps.get(index) {
                slot.store(now.saturating_sub(last), Ordering::Relaxed);
                if index + 1 == self.gaps.len() {
                    self.full.notify_one();
                }
            }
        }
    }

    /// Called last thing by a run that ends by itself.
    pub fn end(&self) {
        self.last_end.store(stamp(), Ordering::Release);
    }

    /// The recorded gaps, in nanoseconds.
    pub fn gaps(&self) -> Vec<f64> {
        let recorded = self.next_gap.load(Ordering::Acquire).min(self.gaps.len());
        self.gaps[..recorded]
            .iter()
            .map(|gap| gap.load(Ordering::Relaxed) as f64)
            .collect()
    }

    /// How many gaps have been recorded.
    pub fn recorded(&self) -> usize {
        self.next_gap.load(Ordering::Acquire).min(self.gaps.len())
    }
}

/// Counts live instances of one task and remembers the most seen at once.
#[derive(Debug, Default)]
pub struct Live {
    now: AtomicUsize,
    max: AtomicUsize,
    /// Runs entered.
    pub runs: AtomicU64,
    /// Stamp of the last entry.
    pub last_entry: AtomicU64,
}

impl Live {
    /// Called first thing by a run; the guard it returns must live as long as the run.
    pub fn enter(&self) -> LiveGuard<'_> {
        let now = self.now.fetch_add(1, Ordering::AcqRel) + 1;
        self.max.fetch_max(now, Ordering::AcqRel);
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.last_entry.store(stamp(), Ordering::Release);
        LiveGuard(self)
    }

    /// The most live instances seen at once.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    /// Runs entered so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Acquire)
    }
}

/// Decrements [`Live`] when the run's future is dropped, however it ends.
#[derive(Debug)]
pub struct LiveGuard<'a>(&'a Live);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits until `runs` has not changed for `quiet`, and returns its last value.
pub async fn settle(runs: impl Fn() -> u64, quiet: Duration, limit: Duration) -> u64 {
    let start = Instant::now();
    let mut last = runs();
    let mut still_since = Instant::now();
    loop {
        tokio::time::sleep(quiet / 5).await;
        let now = runs();
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= quiet || start.elapsed() >= limit {
            return now;
        }
    }
}

/// A deterministic permutation-ish walk over `0..n` (a linear congruential step), so reads hit
/// entries in an order the caches cannot predict, identically for every variant.
pub fn scattered(n: usize, count: usize) -> Vec<usize> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) as usize) % n.max(1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(&mut samples), 3.0);
        assert_eq!(percentile(&mut samples, 0.0), 1.0);
        assert_eq!(percentile(&mut samples, 1.0), 5.0);
        assert!(percentile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn cpu_and_memory_can_be_read() {
        let before = process_cpu();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(process_cpu() > before);
        assert!(rss_bytes() > 0);
        let _ = rusage_cpu();
    }
}
