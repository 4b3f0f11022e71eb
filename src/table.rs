//! The task table: what the loop publishes of each task, and each run's heartbeat, in dense
//! arrays that handles read without asking the loop.
//!
//! The table is a list of chunks of [`CHUNK`] tasks; task `id` is place `id % CHUNK` of chunk
//! `id / CHUNK`. Within a chunk each field is an array of its own (a struct of arrays): a
//! listing reads one field of many tasks from a few cache lines, and the loop's heartbeat check
//! reads one beat from a line of eight.
//!
//! # Invariants
//!
//! 1. Only the loop writes a task's published fields (status, attempt, restarts, times,
//!    flags). The beat is written by the run (through its context) and reset by whoever starts
//!    a run of the task (the loop, or the driver restarting in place); nobody else writes it.
//! 2. A beat carries the generation of the run it belongs to (its low 16 bits). A run writes
//!    its beat only by a compare-and-swap from a value of its own generation, so a context
//!    kept after its run ended can never write into a later run's beat, and a reset for a new
//!    run is never overwritten by the run before it.
//! 3. Chunks are never moved or freed while the registry or a run holds them, so a place found
//!    once stays valid.
//! 4. Each task's run state (stop word, token, unreported restarts in place) follows the rules
//!    of [`crate::context`] (its invariant 4): it serves the current run, by generation, and
//!    is moved to a new run only by the loop or by the driver restarting in place.
//!
//! # Why sharing is safe
//!
//! Every field is an atomic. Published fields have one writer (the loop) and are read with no
//! ordering promise across fields: a reader may see a status from one instant and an attempt
//! from the next, which a snapshot of a running supervisor cannot avoid anyway. Statuses are
//! published with release and read with acquire, as they were before the table grew.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::context::RunSettings;
use crate::status::TaskStatus;
use crate::sync::{AtomicU32, AtomicU64, AtomicU8, Mutex, Ordering};

/// How many tasks one chunk of the table holds (a few under `loom`, whose atomics are heavy).
pub(crate) const CHUNK: usize = if cfg!(loom) { 4 } else { 256 };

// A task's place in its chunk fits a byte.
const _: () = assert!(CHUNK <= 256);

/// Bits of a beat that hold its stamp; the 16 above hold the run's generation.
const STAMP_BITS: u32 = 48;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;

/// Flag: the task declared heartbeats (every run is watched from its start).
pub(crate) const DECLARES_HEARTBEATS: u8 = 1;
/// The task's restart policy, in the two bits above (see [`policy_bits`]).
const POLICY_SHIFT: u32 = 1;
/// Flag: the task is significant (see [`TaskSpec::significant`](crate::TaskSpec::significant)).
pub(crate) const SIGNIFICANT: u8 = 1 << 3;
/// Flag: the task does not count for readiness (see
/// [`TaskSpec::with_readiness`](crate::TaskSpec::with_readiness)).
pub(crate) const NOT_FOR_READINESS: u8 = 1 << 4;
/// Flag: the task is dead of failures (out of attempts, over its limit), not killed.
pub(crate) const DIED_OF_FAILURE: u8 = 1 << 5;

/// One chunk of the table. Zeroed, every task reads `Created`, with nothing published.
#[derive(Debug)]
pub(crate) struct TaskChunk {
    /// The settings every run of the supervisor shares: a run reaches them through its chunk.
    settings: Arc<RunSettings>,
    status: [AtomicU8; CHUNK],
    flags: [AtomicU8; CHUNK],
    attempt: [AtomicU32; CHUNK],
    restarts: [AtomicU32; CHUNK],
    /// The current run's last heartbeat: its generation and stamp (see [`beat_value`]).
    beat: [AtomicU64; CHUNK],
    /// Stamps (microseconds since the supervisor's epoch, plus one; zero: none).
    started: [AtomicU64; CHUNK],
    healthy: [AtomicU64; CHUNK],
    failed: [AtomicU64; CHUNK],
    /// Each task's run state (see [`crate::context::RunCells`]): the stop word (the current
    /// run's generation and flags), the run's token once it asked for one, and the restarts
    /// in place its driver reported that the loop has not handled.
    run_state: [AtomicU64; CHUNK],
    tokens: Mutex<Tokens>,
    unreported: [AtomicU32; CHUNK],
}

impl TaskChunk {
    /// A chunk of the supervisor whose runs share `settings`.
    pub(crate) fn new(settings: &Arc<RunSettings>) -> Arc<Self> {
        const _: () = assert!(TaskStatus::Created.as_u8() == 0);
        Arc::new(Self {
            settings: Arc::clone(settings),
            status: std::array::from_fn(|_| AtomicU8::new(0)),
            flags: std::array::from_fn(|_| AtomicU8::new(0)),
            attempt: std::array::from_fn(|_| AtomicU32::new(0)),
            restarts: std::array::from_fn(|_| AtomicU32::new(0)),
            beat: std::array::from_fn(|_| AtomicU64::new(0)),
            started: std::array::from_fn(|_| AtomicU64::new(0)),
            healthy: std::array::from_fn(|_| AtomicU64::new(0)),
            failed: std::array::from_fn(|_| AtomicU64::new(0)),
            run_state: std::array::from_fn(|_| AtomicU64::new(0)),
            tokens: Mutex::new(Tokens(None)),
            unreported: std::array::from_fn(|_| AtomicU32::new(0)),
        })
    }

    /// The settings the runs of these tasks share.
    pub(crate) fn settings(&self) -> &RunSettings {
        &self.settings
    }

    /// The stop word of the task at `place`.
    pub(crate) fn run_state(&self, place: usize) -> &AtomicU64 {
        &self.run_state[place]
    }

    /// The tokens of the current runs of this chunk's tasks that asked for one.
    pub(crate) fn tokens(&self) -> &Mutex<Tokens> {
        &self.tokens
    }

    /// The unhandled restarts in place of the task at `place`.
    pub(crate) fn unreported(&self, place: usize) -> &AtomicU32 {
        &self.unreported[place]
    }

    pub(crate) fn status(&self, place: usize) -> TaskStatus {
        TaskStatus::from_u8(self.status[place].load(Ordering::Acquire))
    }

    /// Everything published of the task at `place`, as one (not atomic) snapshot.
    pub(crate) fn read(&self, place: usize) -> Published {
        Published {
            status: self.status(place),
            flags: self.flags[place].load(Ordering::Relaxed),
            attempt: self.attempt[place].load(Ordering::Relaxed),
            restarts: self.restarts[place].load(Ordering::Relaxed),
            beat: self.beat[place].load(Ordering::Relaxed),
            started: self.started[place].load(Ordering::Relaxed),
            healthy: self.healthy[place].load(Ordering::Relaxed),
            failed: self.failed[place].load(Ordering::Relaxed),
        }
    }

    /// The beat of the task at `place`, for its runs and the loop.
    pub(crate) fn beat_cell(&self, place: usize) -> &AtomicU64 {
        &self.beat[place]
    }
}

/// The cancellation tokens of a chunk's current runs, by place: made for the chunk when its
/// first run asks for a token (most never do, and then the chunk pays a pointer for them all).
#[derive(Debug)]
pub(crate) struct Tokens(Option<Box<[Option<CancellationToken>; CHUNK]>>);

impl Tokens {
    /// The token at `place`, made if there is none.
    pub(crate) fn get_or_make(&mut self, place: usize) -> CancellationToken {
        let tokens = self
            .0
            .get_or_insert_with(|| Box::new(std::array::from_fn(|_| None)));
        tokens[place]
            .get_or_insert_with(CancellationToken::new)
            .clone()
    }

    /// The token at `place`, if there is one.
    pub(crate) fn get(&self, place: usize) -> Option<CancellationToken> {
        self.0.as_ref()?[place].clone()
    }

    /// Takes the token at `place` out, if there is one.
    pub(crate) fn take(&mut self, place: usize) -> Option<CancellationToken> {
        self.0.as_mut()?[place].take()
    }
}

/// What a reader saw of one task in the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Published {
    pub(crate) status: TaskStatus,
    pub(crate) flags: u8,
    pub(crate) attempt: u32,
    pub(crate) restarts: u32,
    pub(crate) beat: u64,
    pub(crate) started: u64,
    pub(crate) healthy: u64,
    pub(crate) failed: u64,
}

/// A task's place in the table, as the loop keeps it in the task's slot: the chunk, and the
/// place in it. Only the loop writes through it (invariant 1).
#[derive(Debug)]
pub(crate) struct TaskCells {
    chunk: Arc<TaskChunk>,
    place: u8,
}

impl TaskCells {
    pub(crate) fn new(chunk: Arc<TaskChunk>, id: u32) -> Self {
        // In range: `CHUNK <= 256`.
        let place = (id as usize % CHUNK) as u8;
        Self { chunk, place }
    }

    fn place(&self) -> usize {
        usize::from(self.place)
    }

    pub(crate) fn chunk(&self) -> &Arc<TaskChunk> {
        &self.chunk
    }

    /// The task's run state, as the loop acts on it.
    pub(crate) fn run(&self) -> crate::context::RunCells<'_> {
        crate::context::RunCells::new(&self.chunk, self.place())
    }

    /// The stamp of the last beat of the run of `generation`, `None` if that run has not beaten
    /// (or the task's beat has moved on to a later run). What the loop's heartbeat check
    /// reads: a line of eight tasks' beats in this chunk, not the run's own state.
    pub(crate) fn beat_of(&self, generation: u32) -> Option<u64> {
        beat_of(
            self.chunk.beat[self.place()].load(Ordering::Relaxed),
            generation,
        )
    }

    /// The stamp of the current run's start, as published (zero: no run).
    #[cfg(feature = "metrics")]
    pub(crate) fn started(&self) -> u64 {
        self.chunk.started[self.place()].load(Ordering::Relaxed)
    }

    pub(crate) fn publish_status(&self, status: TaskStatus) {
        self.chunk.status[self.place()].store(status.as_u8(), Ordering::Release);
    }

    pub(crate) fn publish_attempt(&self, attempt: u32) {
        self.chunk.attempt[self.place()].store(attempt, Ordering::Relaxed);
    }

    /// Counts one more restart made by the supervisor (saturating).
    pub(crate) fn count_restart(&self) {
        let restarts = &self.chunk.restarts[self.place()];
        let counted = restarts.load(Ordering::Relaxed).saturating_add(1);
        restarts.store(counted, Ordering::Relaxed);
    }

    /// A run started at `stamp` (see [`TaskChunk::started`]); it has not proved healthy yet.
    pub(crate) fn publish_started(&self, stamp: u64) {
        self.chunk.started[self.place()].store(stamp, Ordering::Relaxed);
        self.chunk.healthy[self.place()].store(0, Ordering::Relaxed);
    }

    /// The run is healthy since `stamp`, or (0) no longer.
    pub(crate) fn publish_healthy(&self, stamp: u64) {
        self.chunk.healthy[self.place()].store(stamp, Ordering::Relaxed);
    }

    /// No run is alive any more.
    pub(crate) fn publish_ended(&self) {
        self.chunk.started[self.place()].store(0, Ordering::Relaxed);
        self.chunk.healthy[self.place()].store(0, Ordering::Relaxed);
    }

    pub(crate) fn publish_failed(&self, stamp: u64) {
        self.chunk.failed[self.place()].store(stamp, Ordering::Relaxed);
    }

    pub(crate) fn publish_flags(&self, flags: u8) {
        self.chunk.flags[self.place()].store(flags, Ordering::Relaxed);
    }

    /// Sets or clears the flag bits `flag` (the loop is the only writer, so a load and a
    /// store suffice).
    pub(crate) fn publish_flag(&self, flag: u8, on: bool) {
        let cell = &self.chunk.flags[self.place()];
        let flags = cell.load(Ordering::Relaxed);
        let flags = if on { flags | flag } else { flags & !flag };
        cell.store(flags, Ordering::Relaxed);
    }
}

/// The flag bits of a restart policy.
pub(crate) fn policy_bits(policy: crate::spec::RestartPolicy) -> u8 {
    use crate::spec::RestartPolicy;
    let bits = match policy {
        RestartPolicy::Transient => 0,
        RestartPolicy::Permanent => 1,
        RestartPolicy::Temporary => 2,
    };
    bits << POLICY_SHIFT
}

/// The restart policy the flags say.
pub(crate) fn policy_of(flags: u8) -> crate::spec::RestartPolicy {
    use crate::spec::RestartPolicy;
    match (flags >> POLICY_SHIFT) & 3 {
        1 => RestartPolicy::Permanent,
        2 => RestartPolicy::Temporary,
        _ => RestartPolicy::Transient,
    }
}

/// A beat of the run of `generation` at `stamp` (zero: that run has not beaten yet).
pub(crate) fn beat_value(generation: u32, stamp: u64) -> u64 {
    (u64::from(generation as u16) << STAMP_BITS) | (stamp & STAMP_MASK)
}

/// The stamp of `beat` if it is a beat of the run of `generation`, `None` if that run has not
/// beaten (or the beat is another run's).
pub(crate) fn beat_of(beat: u64, generation: u32) -> Option<u64> {
    let stamp = beat & STAMP_MASK;
    (beat >> STAMP_BITS == u64::from(generation as u16) && stamp != 0).then_some(stamp)
}

/// Writes a beat of the run of `generation` at `stamp` into `cell`, unless the cell belongs to
/// another run (invariant 2). Returns whether it was the run's first beat.
pub(crate) fn beat(cell: &AtomicU64, generation: u32, stamp: u64) -> bool {
    let mine = beat_value(generation, 0);
    let new = beat_value(generation, stamp.max(1));
    let mut current = cell.load(Ordering::Relaxed);
    loop {
        if current & !STAMP_MASK != mine {
            return false; // Another run's: this context outlived its run.
        }
        match cell.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(before) => return before & STAMP_MASK == 0,
            Err(actual) => current = actual,
        }
    }
}

/// The largest stamp a beat can hold.
pub(crate) const MAX_STAMP: u64 = STAMP_MASK;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::spec::RestartPolicy;

    #[test]
    fn a_beat_belongs_to_the_run_of_its_generation() {
        let chunk = TaskChunk::new(&RunSettings::detached());
        let cell = chunk.beat_cell(3);
        cell.store(beat_value(7, 0), Ordering::Relaxed);
        assert_eq!(beat_of(cell.load(Ordering::Relaxed), 7), None, "not yet");
        assert!(beat(cell, 7, 100), "the first beat");
        assert!(!beat(cell, 7, 200), "not the first any more");
        assert_eq!(beat_of(cell.load(Ordering::Relaxed), 7), Some(200));
        assert_eq!(
            beat_of(cell.load(Ordering::Relaxed), 8),
            None,
            "another run's"
        );
    }

    #[test]
    fn a_context_of_an_earlier_run_cannot_beat_for_the_next() {
        let chunk = TaskChunk::new(&RunSettings::detached());
        let cell = chunk.beat_cell(0);
        cell.store(beat_value(1, 0), Ordering::Relaxed);
        assert!(beat(cell, 1, 50));
        cell.store(beat_value(2, 0), Ordering::Relaxed);
        assert!(!beat(cell, 1, 60), "run 1 is over");
        assert_eq!(beat_of(cell.load(Ordering::Relaxed), 2), None);
        assert!(beat(cell, 2, 70));
        assert_eq!(beat_of(cell.load(Ordering::Relaxed), 2), Some(70));
    }

    #[test]
    fn generations_wrap_at_sixteen_bits() {
        let value = beat_value(u32::from(u16::MAX) + 5, 9);
        assert_eq!(beat_of(value, 4), Some(9));
        assert_eq!(beat_of(beat_value(3, MAX_STAMP + 2), 3), Some(1), "masked");
    }

    #[test]
    fn policies_round_trip_through_the_flags() {
        for policy in [
            RestartPolicy::Permanent,
            RestartPolicy::Transient,
            RestartPolicy::Temporary,
        ] {
            let flags = policy_bits(policy) | DECLARES_HEARTBEATS;
            assert_eq!(policy_of(flags), policy);
        }
    }

    #[test]
    fn published_fields_are_read_back() {
        let chunk = TaskChunk::new(&RunSettings::detached());
        let cells = TaskCells::new(Arc::clone(&chunk), CHUNK as u32 + 5);
        cells.publish_status(TaskStatus::Healthy);
        cells.publish_attempt(3);
        cells.count_restart();
        cells.count_restart();
        cells.publish_started(11);
        cells.publish_healthy(12);
        cells.publish_failed(13);
        let read = chunk.read(5);
        assert_eq!(read.status, TaskStatus::Healthy);
        assert_eq!(
            (
                read.attempt,
                read.restarts,
                read.started,
                read.healthy,
                read.failed
            ),
            (3, 2, 11, 12, 13)
        );
        cells.publish_ended();
        assert_eq!((chunk.read(5).started, chunk.read(5).healthy), (0, 0));
    }
}
