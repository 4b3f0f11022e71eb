//! Chaos soak: thousands of tasks that misbehave in every way the crate promises to survive,
//! driven by concurrent handles sending random commands, with the invariants of
//! `src/event_loop.rs` checked all the way through.
//!
//! Every draw comes from one seed, printed when a test fails; rerun with `CHAOS_SEED=<seed>`.
//! On the current-thread runtime (paused clock) a seed replays exactly. Tokio can pause its
//! clock only on a current-thread runtime, so the multi-thread soak keeps away from time: its
//! back-off is zero, its grace period zero and its heartbeat timeout out of reach, and its
//! handles are driven from eight OS threads instead.
//!
//! What is checked while the soak runs:
//! - at most one live run per task, and at most one instance besides the registered one
//!   (counted by the tasks themselves, with atomics, when a run starts and when one is made);
//! - every status change published (`status_changes`) is an edge of the state machine
//!   (`TaskStatus::can_change_to`), continues from the task's previous change, and carries a
//!   reason exactly when it goes to `Failed` or `Dead`; the stream never lags;
//! - every command returns `Ok` or the documented error for its case, status reads complete on
//!   their first poll, and `SupervisorStopped` only comes once the supervisor stopped taking
//!   commands;
//!
//! and once it is over: `wait()` returns in bounded (paused) time, no run is alive, no task
//! instance is left, the runtime's count of alive tasks is back to where it was, and no task
//! started again from `Healthy`, `Completed` or `Dead` more often than it was restarted by a
//! command (invariant 4: a back-off pending when a task was killed does nothing).
//!
//! `memory_per_task_does_not_grow_with_restarts` checks invariant 7 with a counting allocator;
//! `flapping_tasks_do_not_starve_commands` checks that a storm of instant failures cannot keep a
//! shutdown from taking effect.

mod reliability_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use reliability_common::INJECTED;
use reliability_common::{block_thread, poll_once, quiet_injected_panics, seed_from_env, Rng};
use task_supervisor::{
    anyhow, StatusChange, SupervisedTask, SupervisorBuilder, SupervisorHandle,
    SupervisorHandleError, TaskContext, TaskResult, TaskStatus,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

// ----- a counting allocator, for the memory checks -----

/// Bytes allocated and not yet freed, by the whole test binary.
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

struct CountingAllocator;

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc(layout);
        if !pointer.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc_zeroed(layout);
        if !pointer.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        System.dealloc(pointer, layout);
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = System.realloc(pointer, layout, new_size);
        if !moved.is_null() {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn live_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// The soaks measure memory for the whole binary, so they run one at a time.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

// ----- what the tasks do -----

/// How one run behaves; drawn afresh, from the seed, for every run of every task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Works a while, then returns `Ok(())`.
    Complete,
    /// Works a while, then returns an error.
    Fail,
    /// Works a while, then panics.
    Panic,
    /// Opts into heartbeats (beats a few times), then hangs without beating or looking at its
    /// token: the loop must find it hung and drop it.
    HangWhileOptedIn,
    /// Beats forever and returns `Ok(())` when cancelled.
    BeatForever,
    /// Asks for its token, then keeps running (and beating) past the grace period: the loop
    /// must drop it.
    IgnoreCancellation,
    /// Blocks its thread for a while (no await), then behaves as one of the simple behaviours.
    BlockThread,
    /// Holds a value whose `Drop` panics, then behaves as one of the simple behaviours: the
    /// panic comes when the run ends, or when the loop drops it.
    PanicInDrop,
}

impl Behaviour {
    const ALL: [Behaviour; 8] = [
        Self::Complete,
        Self::Fail,
        Self::Panic,
        Self::HangWhileOptedIn,
        Self::BeatForever,
        Self::IgnoreCancellation,
        Self::BlockThread,
        Self::PanicInDrop,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|b| *b == self).unwrap_or(0)
    }

    fn draw(rng: &mut Rng) -> Self {
        rng.weighted(&[
            (3, Self::Complete),
            (3, Self::Fail),
            (2, Self::Panic),
            (2, Self::HangWhileOptedIn),
            (2, Self::BeatForever),
            (1, Self::IgnoreCancellation),
            (1, Self::BlockThread),
            (2, Self::PanicInDrop),
        ])
    }

    /// What a run blocking its thread, or holding a drop bomb, does next.
    fn draw_simple(rng: &mut Rng) -> Self {
        rng.weighted(&[
            (2, Self::Complete),
            (2, Self::Fail),
            (2, Self::BeatForever),
            (1, Self::HangWhileOptedIn),
        ])
    }
}

/// The commands the handles send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Add,
    DuplicateAdd,
    Restart,
    Kill,
    Status,
    AllStatuses,
    RestartUnknown,
    KillUnknown,
    StatusUnknown,
}

impl Command {
    const ALL: [Command; 9] = [
        Self::Add,
        Self::DuplicateAdd,
        Self::Restart,
        Self::Kill,
        Self::Status,
        Self::AllStatuses,
        Self::RestartUnknown,
        Self::KillUnknown,
        Self::StatusUnknown,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    fn draw(rng: &mut Rng) -> Self {
        rng.weighted(&[
            (4, Self::Add),
            (8, Self::DuplicateAdd),
            (24, Self::Restart),
            (14, Self::Kill),
            (24, Self::Status),
            (1, Self::AllStatuses),
            (8, Self::RestartUnknown),
            (8, Self::KillUnknown),
            (9, Self::StatusUnknown),
        ])
    }
}

/// How a command came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    AlreadyExists,
    NotFound,
    Stopped,
    /// A status read answered `Ok(None)`.
    NoSuchTask,
}

impl Answer {
    const ALL: [Answer; 5] = [
        Self::Ok,
        Self::AlreadyExists,
        Self::NotFound,
        Self::Stopped,
        Self::NoSuchTask,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|a| *a == self).unwrap_or(0)
    }
}

/// Whether the soak runs on the paused clock (every behaviour, in full) or without time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    Paused,
    /// Multi-thread: nothing waits on the clock; "work" is yielding.
    None,
}

/// Everything the soak's parties share: the seed, the tallies and the violations found.
struct World {
    seed: u64,
    clock: Clock,
    heartbeat_interval: Duration,
    behaviours: [AtomicU64; 8],
    commands: [[AtomicU64; 5]; 9],
    runs: AtomicU64,
    violations: AtomicU64,
    first_violations: Mutex<Vec<String>>,
}

impl World {
    fn new(seed: u64, clock: Clock, heartbeat_interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            seed,
            clock,
            heartbeat_interval,
            behaviours: Default::default(),
            commands: Default::default(),
            runs: AtomicU64::new(0),
            violations: AtomicU64::new(0),
            first_violations: Mutex::new(Vec::new()),
        })
    }

    fn violation(&self, what: String) {
        self.violations.fetch_add(1, Ordering::SeqCst);
        let mut first = self
            .first_violations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if first.len() < 20 {
            first.push(what);
        }
    }

    fn assert_no_violation(&self) {
        let count = self.violations.load(Ordering::SeqCst);
        let first = self
            .first_violations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        assert_eq!(
            count, 0,
            "{count} invariant violations, the first ones:\n{first:#?}"
        );
    }

    fn tally(&self, command: Command, answer: Answer) {
        self.commands[command.index()][answer.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn behaviour_counts(&self) -> Vec<(Behaviour, u64)> {
        Behaviour::ALL
            .iter()
            .map(|b| (*b, self.behaviours[b.index()].load(Ordering::Relaxed)))
            .collect()
    }

    fn command_count(&self, command: Command) -> u64 {
        self.commands[command.index()]
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }
}

/// What one task counts about itself.
#[derive(Default)]
struct Probe {
    /// Runs being polled now.
    live: AtomicU32,
    /// Instances of the task: the registered one, plus the one its current run was made from.
    instances: AtomicU32,
}

/// A task that misbehaves at random.
struct ChaosTask {
    id: u64,
    declares_heartbeats: bool,
    probe: Arc<Probe>,
    world: Arc<World>,
    /// Runs made from this instance's line of clones.
    runs: Arc<AtomicU64>,
}

impl ChaosTask {
    fn new(id: u64, world: &Arc<World>) -> (Self, Arc<Probe>) {
        let probe = Arc::new(Probe::default());
        probe.instances.fetch_add(1, Ordering::SeqCst);
        let declares_heartbeats = Rng::derive(world.seed, &[id, u64::MAX]).chance(1, 3);
        let task = Self {
            id,
            declares_heartbeats,
            probe: Arc::clone(&probe),
            world: Arc::clone(world),
            runs: Arc::new(AtomicU64::new(0)),
        };
        (task, probe)
    }
}

impl Clone for ChaosTask {
    fn clone(&self) -> Self {
        // The supervisor clones the registered instance to make each run; the instance of the
        // previous run must be gone by then (invariant 1).
        let before = self.probe.instances.fetch_add(1, Ordering::SeqCst);
        if before >= 2 {
            self.world.violation(format!(
                "task {}: a run's instance was made while {before} instances were alive",
                self.id
            ));
        }
        Self {
            id: self.id,
            declares_heartbeats: self.declares_heartbeats,
            probe: Arc::clone(&self.probe),
            world: Arc::clone(&self.world),
            runs: Arc::clone(&self.runs),
        }
    }
}

impl Drop for ChaosTask {
    fn drop(&mut self) {
        self.probe.instances.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Held by a run from its first poll until its future is dropped.
struct LiveRun(Arc<Probe>);

impl LiveRun {
    fn enter(task: &ChaosTask) -> Self {
        let before = task.probe.live.fetch_add(1, Ordering::SeqCst);
        if before != 0 {
            task.world.violation(format!(
                "task {}: a run started while {before} other run(s) were alive",
                task.id
            ));
        }
        Self(Arc::clone(&task.probe))
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Panics when dropped, unless the thread is already unwinding (which would abort the
/// process, whoever drops it).
struct DropBomb;

impl Drop for DropBomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("{INJECTED} a drop that panics");
        }
    }
}

#[async_trait]
impl SupervisedTask for ChaosTask {
    async fn run(&mut self) -> TaskResult {
        let _live = LiveRun::enter(self);
        let run = self.runs.fetch_add(1, Ordering::SeqCst);
        self.world.runs.fetch_add(1, Ordering::Relaxed);
        let mut rng = Rng::derive(self.world.seed, &[self.id, run]);
        let behaviour = Behaviour::draw(&mut rng);
        self.world.behaviours[behaviour.index()].fetch_add(1, Ordering::Relaxed);
        match behaviour {
            Behaviour::BlockThread => {
                block_thread(rng.between(2_000, 40_000));
                let next = Behaviour::draw_simple(&mut rng);
                self.simple(next, &mut rng).await
            }
            Behaviour::PanicInDrop => {
                let _bomb = DropBomb;
                let next = Behaviour::draw_simple(&mut rng);
                self.simple(next, &mut rng).await
            }
            simple => self.simple(simple, &mut rng).await,
        }
    }

    fn sends_heartbeats(&self) -> bool {
        self.declares_heartbeats
    }
}

impl ChaosTask {
    async fn simple(&self, behaviour: Behaviour, rng: &mut Rng) -> TaskResult {
        let context = TaskContext::current().expect("runs inside a supervised run");
        match behaviour {
            Behaviour::Complete => {
                self.work(&context, rng).await;
                Ok(())
            }
            Behaviour::Fail => {
                self.work(&context, rng).await;
                Err(anyhow!("{INJECTED} failure"))
            }
            Behaviour::Panic => {
                self.work(&context, rng).await;
                panic!("{INJECTED} panic");
            }
            Behaviour::HangWhileOptedIn => {
                for _ in 0..rng.between(1, 3) {
                    context.heartbeat();
                    self.pause(rng.between(1, 40)).await;
                }
                std::future::pending().await
            }
            Behaviour::BeatForever => {
                let stop = context.cancellation_token();
                loop {
                    context.heartbeat();
                    tokio::select! {
                        () = stop.cancelled() => return Ok(()),
                        () = self.pause(self.world.heartbeat_interval.as_millis() as u64) => {}
                    }
                }
            }
            Behaviour::IgnoreCancellation => {
                let _stop = context.cancellation_token();
                loop {
                    context.heartbeat();
                    self.pause(self.world.heartbeat_interval.as_millis() as u64)
                        .await;
                }
            }
            Behaviour::BlockThread | Behaviour::PanicInDrop => {
                unreachable!("not a simple behaviour")
            }
        }
    }

    /// Works for a random while, beating now and then if the task declared heartbeats.
    async fn work(&self, context: &TaskContext, rng: &mut Rng) {
        let steps = rng.between(0, 6);
        for _ in 0..steps {
            if self.declares_heartbeats {
                context.heartbeat();
            }
            self.pause(rng.between(0, 60)).await;
        }
    }

    /// Waits `millis` of paused time, or yields as many times (up to 8) without a clock.
    async fn pause(&self, millis: u64) {
        match self.world.clock {
            Clock::Paused => tokio::time::sleep(Duration::from_millis(millis)).await,
            Clock::None => {
                for _ in 0..millis.min(8) {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// A task offered under a name that is taken: it must never run.
#[derive(Clone)]
struct Duplicate(Arc<World>);

#[async_trait]
impl SupervisedTask for Duplicate {
    async fn run(&mut self) -> TaskResult {
        self.0
            .violation("a task added under a taken name was run".to_owned());
        Ok(())
    }
}

// ----- the commanders -----

/// The names registered so far (a name is pushed once its add returned `Ok`).
#[derive(Default)]
struct Names(Mutex<Vec<Arc<str>>>);

impl Names {
    fn push(&self, name: Arc<str>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(name);
    }

    fn pick(&self, rng: &mut Rng) -> Arc<str> {
        let names = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&names[rng.below(names.len() as u64) as usize])
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// What every commander shares.
struct Commanders {
    world: Arc<World>,
    names: Names,
    /// Restart commands answered `Ok`, per task.
    restarts: Mutex<HashMap<Arc<str>, u64>>,
    probes: Mutex<HashMap<u64, Arc<Probe>>>,
    next_id: AtomicU64,
}

impl Commanders {
    fn register(&self, handle: &SupervisorHandle, name: &str) -> Result<(), SupervisorHandleError> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (task, probe) = ChaosTask::new(id, &self.world);
        self.probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, probe);
        let added = handle.add_task(name, task);
        if added.is_ok() {
            self.names.push(Arc::from(name));
        }
        added
    }

    /// Sends one random command and checks its answer against the documentation.
    fn command(&self, handle: &SupervisorHandle, rng: &mut Rng, commander: usize, serial: u64) {
        let world = &self.world;
        let command = Command::draw(rng);
        let unknown = format!("unknown-{commander}-{serial}");
        // `SupervisorStopped` is documented once the supervisor stopped taking commands; it
        // never takes them again, so it must still be so after the answer.
        let stopped = |what: &str| {
            if handle.is_running() {
                world.violation(format!(
                    "{what}: SupervisorStopped from a running supervisor"
                ));
            }
            Answer::Stopped
        };
        let answer = match command {
            Command::Add => {
                let name = format!("added-{commander}-{serial}");
                match self.register(handle, &name) {
                    Ok(()) => Answer::Ok,
                    Err(SupervisorHandleError::SupervisorStopped) => stopped("add"),
                    Err(other) => {
                        world.violation(format!("add of a fresh name {name}: {other}"));
                        Answer::Stopped
                    }
                }
            }
            Command::DuplicateAdd => {
                let name = self.names.pick(rng);
                match handle.add_task(&name, Duplicate(Arc::clone(world))) {
                    Err(SupervisorHandleError::TaskAlreadyExists { name: said }) => {
                        if *said != *name {
                            world.violation(format!("duplicate add of {name} named {said}"));
                        }
                        Answer::AlreadyExists
                    }
                    Err(SupervisorHandleError::SupervisorStopped) => stopped("duplicate add"),
                    other => {
                        world.violation(format!("duplicate add of {name}: {other:?}"));
                        Answer::Ok
                    }
                }
            }
            Command::Restart | Command::Kill => {
                let name = self.names.pick(rng);
                let result = if command == Command::Restart {
                    handle.restart(&name)
                } else {
                    handle.kill_task(&name)
                };
                match result {
                    Ok(()) => {
                        if command == Command::Restart {
                            *self
                                .restarts
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .entry(name)
                                .or_default() += 1;
                        }
                        Answer::Ok
                    }
                    Err(SupervisorHandleError::SupervisorStopped) => stopped("restart or kill"),
                    Err(other) => {
                        world.violation(format!("{command:?} of registered {name}: {other}"));
                        Answer::NotFound
                    }
                }
            }
            Command::RestartUnknown | Command::KillUnknown => {
                let result = if command == Command::RestartUnknown {
                    handle.restart(&unknown)
                } else {
                    handle.kill_task(&unknown)
                };
                match result {
                    Err(SupervisorHandleError::TaskNotFound { name }) if name == unknown => {
                        Answer::NotFound
                    }
                    Err(SupervisorHandleError::SupervisorStopped) => stopped("unknown name"),
                    other => {
                        world.violation(format!("{command:?} of {unknown}: {other:?}"));
                        Answer::Ok
                    }
                }
            }
            Command::Status | Command::StatusUnknown => {
                let name: Arc<str> = if command == Command::Status {
                    self.names.pick(rng)
                } else {
                    Arc::from(unknown.as_str())
                };
                let expect_some = command == Command::Status;
                match poll_once(handle.get_task_status(&name)) {
                    None => {
                        world.violation(format!("status of {name} did not complete at once"));
                        Answer::Stopped
                    }
                    Some(Ok(Some(_))) if expect_some => Answer::Ok,
                    Some(Ok(None)) if !expect_some => Answer::NoSuchTask,
                    Some(Err(SupervisorHandleError::SupervisorStopped)) => stopped("status"),
                    Some(other) => {
                        world.violation(format!("status of {name}: {other:?}"));
                        Answer::Ok
                    }
                }
            }
            Command::AllStatuses => {
                let known = self.names.len();
                let sample = self.names.pick(rng);
                match poll_once(handle.get_all_task_statuses()) {
                    None => {
                        world.violation("all statuses did not complete at once".to_owned());
                        Answer::Stopped
                    }
                    Some(Ok(statuses)) => {
                        if statuses.len() < known || !statuses.contains_key(&*sample) {
                            world.violation(format!(
                                "all statuses: {} entries, {known} names known, {sample} in: {}",
                                statuses.len(),
                                statuses.contains_key(&*sample)
                            ));
                        }
                        Answer::Ok
                    }
                    Some(Err(SupervisorHandleError::SupervisorStopped)) => stopped("all statuses"),
                    Some(Err(other)) => {
                        world.violation(format!("all statuses: {other}"));
                        Answer::Ok
                    }
                }
            }
        };
        world.tally(command, answer);
    }
}

// ----- the status change checker -----

/// What the checker saw on the status change stream.
#[derive(Default, Debug)]
struct ChangeTally {
    changes: u64,
    edges: BTreeMap<(String, String), u64>,
    /// Changes to `Failed` or `Dead`, by the kind of reason given.
    reasons: BTreeMap<&'static str, u64>,
    /// Per task, the changes to `Starting` that only a `restart` command may cause: from
    /// `Healthy`, `Completed` or `Dead` (a back-off restarts from `Failed`).
    manual_starts: HashMap<Arc<str>, u64>,
    final_statuses: BTreeMap<String, u64>,
}

/// Reads every status change until the stream closes and checks each one.
async fn check_changes(
    mut changes: tokio::sync::broadcast::Receiver<StatusChange>,
    world: Arc<World>,
) -> ChangeTally {
    let mut last: HashMap<Arc<str>, TaskStatus> = HashMap::new();
    let mut tally = ChangeTally::default();
    loop {
        match changes.recv().await {
            Ok(change) => {
                tally.changes += 1;
                let previous = last
                    .get(&change.task)
                    .copied()
                    .unwrap_or(TaskStatus::Created);
                if change.from != previous {
                    world.violation(format!(
                        "{}: change {} -> {} does not continue from {previous}",
                        change.task, change.from, change.to
                    ));
                }
                if change.from == change.to || !change.from.can_change_to(change.to) {
                    world.violation(format!(
                        "{}: {} -> {} is not an edge of the state machine",
                        change.task, change.from, change.to
                    ));
                }
                let wants_reason = matches!(change.to, TaskStatus::Failed | TaskStatus::Dead);
                if change.reason.is_some() != wants_reason {
                    world.violation(format!(
                        "{}: {} -> {} with reason {:?}",
                        change.task, change.from, change.to, change.reason
                    ));
                }
                *tally
                    .edges
                    .entry((change.from.to_string(), change.to.to_string()))
                    .or_default() += 1;
                if let Some(reason) = change.reason.as_deref() {
                    let kind = if reason == "killed" {
                        "killed"
                    } else if reason.starts_with("hung") {
                        "hung"
                    } else if reason.contains("panicked") {
                        "panicked"
                    } else if reason == "dropped" {
                        "dropped"
                    } else {
                        "returned an error"
                    };
                    *tally.reasons.entry(kind).or_default() += 1;
                }
                if change.to == TaskStatus::Starting
                    && matches!(
                        change.from,
                        TaskStatus::Healthy | TaskStatus::Completed | TaskStatus::Dead
                    )
                {
                    *tally
                        .manual_starts
                        .entry(Arc::clone(&change.task))
                        .or_default() += 1;
                }
                last.insert(change.task, change.to);
            }
            Err(RecvError::Lagged(missed)) => {
                world.violation(format!("the checker lagged and missed {missed} changes"));
            }
            Err(RecvError::Closed) => break,
        }
    }
    for status in last.values() {
        *tally.final_statuses.entry(status.to_string()).or_default() += 1;
    }
    tally
}

// ----- the soaks -----

/// How big a soak is.
struct Plan {
    tasks: u64,
    commanders: usize,
    /// Paused time the commanders run for (paused clock).
    span: Duration,
    /// Commands per commander (no clock).
    commands_per_commander: u64,
}

/// Prints the seed if the test fails, so that it can be replayed.
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "chaos soak failed with seed {0}; replay with CHAOS_SEED={0}",
                self.0
            );
        }
    }
}

/// Ends the process if a soak runs far past its budget: a hang is then reported with its seed
/// instead of stalling the test run.
struct Watchdog(Option<std::sync::mpsc::Sender<()>>);

impl Watchdog {
    fn start(seed: u64, what: &'static str) -> Self {
        let (done, finished) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(Duration::from_secs(300))
            {
                eprintln!("{what} hung (seed {seed}); replay with CHAOS_SEED={seed}");
                std::process::exit(3);
            }
        });
        Self(Some(done))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.0.take());
    }
}

const DEFAULT_SEED: u64 = 0xC4A0_5EED;

fn print_figures(title: &str, world: &World, changes: &ChangeTally, tasks: usize) {
    eprintln!("== {title} (seed {}) ==", world.seed);
    eprintln!(
        "tasks registered: {tasks}; runs: {}",
        world.runs.load(Ordering::Relaxed)
    );
    for (behaviour, count) in world.behaviour_counts() {
        eprintln!("behaviour {behaviour:?}: {count}");
    }
    for command in Command::ALL {
        let answers: Vec<String> = Answer::ALL
            .iter()
            .filter_map(|answer| {
                let count = world.commands[command.index()][answer.index()].load(Ordering::Relaxed);
                (count > 0).then(|| format!("{answer:?} {count}"))
            })
            .collect();
        eprintln!(
            "command {command:?}: {} ({})",
            world.command_count(command),
            answers.join(", ")
        );
    }
    eprintln!("status changes checked: {}", changes.changes);
    for ((from, to), count) in &changes.edges {
        eprintln!("edge {from} -> {to}: {count}");
    }
    eprintln!("reasons for Failed or Dead: {:?}", changes.reasons);
    eprintln!("final statuses: {:?}", changes.final_statuses);
    eprintln!("violations: {}", world.violations.load(Ordering::SeqCst));
}

/// The soak on the paused clock, on a current-thread runtime: every behaviour, commanders as
/// Tokio tasks, replayable from its seed.
#[test]
fn chaos_soak_on_the_paused_clock() {
    let _serial = one_at_a_time();
    quiet_injected_panics();
    let seed = seed_from_env("CHAOS_SEED", DEFAULT_SEED);
    let _seed = SeedOnFailure(seed);
    let _watchdog = Watchdog::start(seed, "the paused-clock chaos soak");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let plan = Plan {
        tasks: 2_000,
        commanders: 8,
        span: Duration::from_secs(20),
        commands_per_commander: 0,
    };
    runtime.block_on(paused_soak(seed, &plan));
}

async fn paused_soak(seed: u64, plan: &Plan) {
    let heartbeat_interval = Duration::from_millis(50);
    let grace = Duration::from_millis(100);
    let world = World::new(seed, Clock::Paused, heartbeat_interval);
    let metrics = tokio::runtime::Handle::current().metrics();
    let alive_before = metrics.num_alive_tasks();

    let handle = SupervisorBuilder::new()
        .with_heartbeat_interval(heartbeat_interval)
        .with_timeout_threshold(Duration::from_millis(200))
        .with_health_check_initial_delay(Duration::from_millis(100))
        .with_max_restart_attempts(3)
        .with_base_restart_delay(Duration::from_millis(10))
        .with_max_backoff_exponent(3)
        .with_restart_jitter(0.2)
        .with_jitter_seed(seed)
        .with_task_being_stable_after(Duration::from_millis(500))
        .with_grace_period(grace)
        .try_build()
        .expect("valid settings")
        .run();
    // Subscribed before the first task exists, so every change of every task is seen.
    let checker = tokio::spawn(tokio::task::unconstrained(check_changes(
        handle.status_changes(),
        Arc::clone(&world),
    )));
    let commanders = Arc::new(Commanders {
        world: Arc::clone(&world),
        names: Names::default(),
        restarts: Mutex::new(HashMap::new()),
        probes: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
    });
    for index in 0..plan.tasks {
        commanders
            .register(&handle, &format!("task-{index:04}"))
            .expect("a fresh name on a running supervisor");
    }

    let end = Instant::now() + plan.span;
    let mut crew = Vec::new();
    for commander in 0..plan.commanders {
        let handle = handle.clone();
        let commanders = Arc::clone(&commanders);
        crew.push(tokio::spawn(async move {
            let mut rng = Rng::derive(seed, &[0xC0, commander as u64]);
            let mut serial = 0;
            while Instant::now() < end {
                commanders.command(&handle, &mut rng, commander, serial);
                serial += 1;
                match rng.below(6) {
                    0 => tokio::task::yield_now().await,
                    millis => tokio::time::sleep(Duration::from_millis(millis)).await,
                }
            }
        }));
    }
    for commander in crew {
        commander.await.expect("a commander never panics");
    }

    match handle.shutdown() {
        Ok(()) => {}
        Err(SupervisorHandleError::SupervisorStopped) => assert!(!handle.is_running()),
        Err(other) => panic!("shutdown: {other}"),
    }
    // Every run is cooperative or dropped at once, except those ignoring cancellation: the
    // grace period bounds the shutdown.
    let waited = tokio::time::timeout(grace + Duration::from_millis(10), handle.wait()).await;
    assert_eq!(
        waited,
        Ok(Ok(())),
        "wait() within the grace period of a shutdown"
    );
    let changes = checker.await.expect("the checker never panics");

    finish(&world, &commanders, &handle, &changes, alive_before).await;
    print_figures(
        "paused-clock soak",
        &world,
        &changes,
        commanders.names.len(),
    );
}

/// The checks once a soak is over.
async fn finish(
    world: &World,
    commanders: &Commanders,
    handle: &SupervisorHandle,
    changes: &ChangeTally,
    alive_before: usize,
) {
    world.assert_no_violation();
    // Invariant 4, over the whole history: a killed (or completed) task starts again only when
    // asked to, never because a back-off that was pending fired anyway.
    let restarts: HashMap<Arc<str>, u64> = commanders
        .restarts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for (task, starts) in &changes.manual_starts {
        let asked = restarts.get(task).copied().unwrap_or(0);
        assert!(
            *starts <= asked,
            "{task} started {starts} times from healthy, completed or dead, restarted {asked} times"
        );
    }
    let probes: Vec<(u64, Arc<Probe>)> = commanders
        .probes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(id, probe)| (*id, Arc::clone(probe)))
        .collect();
    for (id, probe) in &probes {
        assert_eq!(
            probe.live.load(Ordering::SeqCst),
            0,
            "task {id}: a run outlived wait()"
        );
        assert_eq!(
            probe.instances.load(Ordering::SeqCst),
            0,
            "task {id}: an instance outlived wait()"
        );
    }
    // On a multi-thread runtime, a task's join can be seen a moment before the worker that ran
    // it takes it off the runtime's list: give the workers a bounded number of turns.
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut turns = 0;
    while metrics.num_alive_tasks() != alive_before && turns < 100_000 {
        tokio::task::yield_now().await;
        std::thread::yield_now();
        turns += 1;
    }
    if turns > 0 {
        eprintln!("alive tasks back to the baseline after {turns} turns");
    }
    assert_eq!(
        metrics.num_alive_tasks(),
        alive_before,
        "tasks left behind by the supervisor"
    );
    assert!(changes.changes > 0);
    assert!(!handle.is_running());
    assert_eq!(
        poll_once(handle.get_task_status("task-0000")),
        Some(Err(SupervisorHandleError::SupervisorStopped))
    );
}

/// The soak on a multi-thread runtime (two workers), with eight OS threads sending commands at
/// the same time as the loop and the runs work. Nothing waits on the clock (see the module
/// documentation), so its runs hang, beat and ignore cancellation without timeouts.
#[test]
fn chaos_soak_on_a_multi_thread_runtime() {
    let _serial = one_at_a_time();
    quiet_injected_panics();
    let seed = seed_from_env("CHAOS_SEED", DEFAULT_SEED);
    let _seed = SeedOnFailure(seed);
    let _watchdog = Watchdog::start(seed, "the multi-thread chaos soak");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let plan = Plan {
        tasks: 2_000,
        commanders: 8,
        span: Duration::ZERO,
        commands_per_commander: 3_000,
    };
    let world = World::new(seed, Clock::None, Duration::from_millis(100));
    let out_of_reach = Duration::from_secs(24 * 60 * 60);
    let alive_before = runtime.block_on(async {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    });
    let (handle, checker) = runtime.block_on(async {
        let handle = SupervisorBuilder::new()
            .with_timeout_threshold(out_of_reach)
            .with_health_check_initial_delay(out_of_reach)
            .with_max_restart_attempts(3)
            .with_base_restart_delay(Duration::ZERO)
            .with_grace_period(Duration::ZERO)
            .try_build()
            .expect("valid settings")
            .run();
        let checker = tokio::spawn(tokio::task::unconstrained(check_changes(
            handle.status_changes(),
            Arc::clone(&world),
        )));
        (handle, checker)
    });
    let commanders = Arc::new(Commanders {
        world: Arc::clone(&world),
        names: Names::default(),
        restarts: Mutex::new(HashMap::new()),
        probes: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
    });
    for index in 0..plan.tasks {
        commanders
            .register(&handle, &format!("task-{index:04}"))
            .expect("a fresh name on a running supervisor");
    }
    std::thread::scope(|scope| {
        for commander in 0..plan.commanders {
            let handle = handle.clone();
            let commanders = Arc::clone(&commanders);
            scope.spawn(move || {
                let mut rng = Rng::derive(seed, &[0xC1, commander as u64]);
                for serial in 0..plan.commands_per_commander {
                    commanders.command(&handle, &mut rng, commander, serial);
                    if rng.chance(1, 4) {
                        std::thread::yield_now();
                    }
                }
            });
        }
    });
    runtime.block_on(async {
        match handle.shutdown() {
            Ok(()) => {}
            Err(SupervisorHandleError::SupervisorStopped) => assert!(!handle.is_running()),
            Err(other) => panic!("shutdown: {other}"),
        }
        assert_eq!(handle.wait().await, Ok(()));
        let changes = checker.await.expect("the checker never panics");
        finish(&world, &commanders, &handle, &changes, alive_before).await;
        print_figures(
            "multi-thread soak",
            &world,
            &changes,
            commanders.names.len(),
        );
    });
}

// ----- liveness under flapping -----

/// Fails at once, every run, until `calm_after` runs of all flappers together have started:
/// then it hangs, so that a supervisor starved by the flapping still ends the test.
#[derive(Clone)]
struct InstantFailure {
    runs: Arc<AtomicU64>,
    calm_after: u64,
}

#[async_trait]
impl SupervisedTask for InstantFailure {
    async fn run(&mut self) -> TaskResult {
        if self.runs.fetch_add(1, Ordering::SeqCst) >= self.calm_after {
            std::future::pending::<()>().await;
        }
        Err(anyhow!("{INJECTED} failure"))
    }
}

/// Hundreds of tasks failing at once with a zero back-off keep run exits always ready; the
/// loop must still take commands (invariant 8): a shutdown stops the restarts at once, not
/// after the flapping dies down by itself.
#[tokio::test(start_paused = true)]
async fn flapping_tasks_do_not_starve_commands() {
    const TASKS: u64 = 1_000;
    let runs = Arc::new(AtomicU64::new(0));
    let mut builder = SupervisorBuilder::new()
        .with_unlimited_restarts()
        .with_base_restart_delay(Duration::ZERO);
    for index in 0..TASKS {
        let task = InstantFailure {
            runs: Arc::clone(&runs),
            calm_after: TASKS * 200,
        };
        builder = builder.with_task(&format!("flapper-{index}"), task);
    }
    let handle = builder.build().run();
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    let before = runs.load(Ordering::SeqCst);
    assert!(before >= TASKS, "every task has run at least once");
    handle.shutdown().expect("running");
    let at_shutdown = runs.load(Ordering::SeqCst);
    assert_eq!(handle.wait().await, Ok(()));
    let after = runs.load(Ordering::SeqCst) - at_shutdown;
    assert!(
        after <= TASKS,
        "{after} runs started after shutdown (and {at_shutdown} before): the shutdown waited \
         for the flapping to stop by itself"
    );
}

// ----- memory -----

/// A task that fails the same way, after the same time, on every run.
#[derive(Clone)]
struct Flapper {
    way: u64,
    work: Duration,
}

#[async_trait]
impl SupervisedTask for Flapper {
    async fn run(&mut self) -> TaskResult {
        let context = TaskContext::current().expect("runs inside a supervised run");
        match self.way {
            0 => {
                tokio::time::sleep(self.work).await;
                Err(anyhow!("{INJECTED} failure"))
            }
            1 => {
                tokio::time::sleep(self.work).await;
                panic!("{INJECTED} panic");
            }
            2 => {
                // Opts in, then goes silent: found hung after the timeout, and dropped.
                context.heartbeat();
                std::future::pending().await
            }
            _ => {
                // Opts in and holds a drop bomb: found hung, dropped, and the drop panics.
                let _bomb = DropBomb;
                context.heartbeat();
                std::future::pending().await
            }
        }
    }
}

/// Invariant 7: a slot's memory does not grow with its restarts. Tasks fail in lockstep (same
/// work time, constant back-off, no jitter), so at the same point of every cycle the
/// supervisor holds the same things; the bytes allocated and not freed, measured there by the
/// counting allocator after a warm-up and again after ten times as many restarts, must not
/// grow.
#[test]
fn memory_per_task_does_not_grow_with_restarts() {
    let _serial = one_at_a_time();
    quiet_injected_panics();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        const TASKS: u64 = 200;
        let cycle = Duration::from_millis(10);
        let work = Duration::from_millis(5);
        let before_supervisor = live_bytes();
        let mut builder = SupervisorBuilder::new()
            .with_unlimited_restarts()
            .with_heartbeat_interval(Duration::from_millis(1))
            .with_timeout_threshold(work)
            .with_base_restart_delay(cycle - work)
            .with_max_backoff_exponent(0)
            .with_restart_jitter(0.0);
        for index in 0..TASKS {
            builder = builder.with_task(
                &format!("flapper-{index}"),
                Flapper {
                    way: index % 4,
                    work,
                },
            );
        }
        let started = Instant::now();
        let handle = builder.try_build().expect("valid settings").run();
        // A subscriber that keeps up, so the status stream is part of what is measured.
        let drain = tokio::spawn(tokio::task::unconstrained({
            let mut changes = handle.status_changes();
            async move {
                let mut seen = 0u64;
                while let Ok(_) | Err(RecvError::Lagged(_)) = changes.recv().await {
                    seen += 1;
                }
                seen
            }
        }));

        // Mid back-off of cycle `n`: every run has failed and been dropped, none restarted.
        let measure_at = |n: u32| started + cycle * n + work + Duration::from_millis(2);
        let warm_up = 50;
        let measured = 500;
        tokio::time::sleep_until(measure_at(warm_up)).await;
        let statuses = handle.get_all_task_statuses().await.expect("running");
        assert!(
            statuses
                .values()
                .all(|status| *status == TaskStatus::Failed),
            "lockstep"
        );
        drop(statuses);
        let after_warm_up = live_bytes();
        tokio::time::sleep_until(measure_at(warm_up + measured)).await;
        let after_many = live_bytes();
        let statuses = handle.get_all_task_statuses().await.expect("running");
        assert!(
            statuses
                .values()
                .all(|status| *status == TaskStatus::Failed),
            "lockstep"
        );
        drop(statuses);

        handle.shutdown().expect("running");
        handle.wait().await.expect("clean shutdown");
        let changes = drain.await.expect("the drain never panics");
        drop(handle);
        let retained = live_bytes() - before_supervisor;
        let restarts = TASKS * u64::from(measured);
        let growth = after_many - after_warm_up;
        eprintln!(
            "memory: {TASKS} tasks, {restarts} restarts measured, {changes} status changes; \
             live bytes {after_warm_up} after {warm_up} cycles, {after_many} after {} cycles: \
             growth {growth} bytes ({:.4} bytes per restart, {:.1} bytes per task); \
             {retained} bytes still allocated once the supervisor is gone",
            warm_up + measured,
            growth as f64 / restarts as f64,
            growth as f64 / TASKS as f64,
        );
        // One byte per restart would be 100 KB here; allow a few allocator-rounding KiB.
        assert!(
            growth < 8 * 1024,
            "memory grew by {growth} bytes over {restarts} restarts"
        );
        // Once the supervisor is gone, what stays allocated is the runtime's: its run queue
        // keeps the capacity it grew to when every task woke at once (8 bytes a task; a bare
        // `JoinSet` of as many tasks keeps the same).
        assert!(
            retained <= 16 * TASKS as i64,
            "{retained} bytes still allocated after the supervisor ended"
        );
    });
}
