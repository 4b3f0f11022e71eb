//! Chaos soak: thousands of tasks that misbehave in every way the crate promises to survive,
//! in a two-level supervision tree, driven by concurrent handles sending random commands, with
//! the invariants of `src/event_loop.rs` and `src/tree.rs` checked all the way through.
//!
//! Every draw comes from one seed, printed when a test fails; rerun with `CHAOS_SEED=<seed>`.
//! On the current-thread runtime (paused clock) a seed replays its commands and every run's
//! behaviour exactly; the hang detector's precise wait sleeps on Tokio's blocking pool in real
//! time, so a few status changes may differ from one replay to the next. Tokio can pause its
//! clock only on a current-thread runtime, so the multi-thread soak keeps away from time: its
//! back-off is zero, its grace period zero and its heartbeat timeout out of reach, and its
//! handles are driven from eight OS threads instead.
//!
//! The root has, besides its own tasks, six child supervisors (`ChildSupervisor`): a busy and
//! a quiet one per strategy, five chaotic tasks each, each with a rule to give up by (restart
//! intensity, or a dead tasks threshold), and registered in the root as permanent tasks with
//! unlimited restarts, so that a child that gives up fails its run and is built again.
//! Commanders reach the children through `root.child(name)` (adding, restarting and killing
//! the tasks of busy ones, reading and shutting down any), restart and kill the children in
//! the root, and take snapshots of the whole tree.
//!
//! What is checked while the soak runs:
//! - at most one live run per task, across the whole tree: the tasks of a child are the same
//!   tasks in every build, so a run of a new build starting while one of an old build is
//!   alive is caught; and at most one instance besides the registered one (counted by the
//!   tasks themselves, with atomics, when a run starts and when one is made);
//! - invariant 9, in the quiet children with a group strategy: no run that a group restart
//!   starts overlaps one it stopped (see `check_group_start`);
//! - invariant 10: when a child supervisor task's run ends (its future is dropped, before the
//!   root can report it), no run of its child is alive and the child holds none of its tasks;
//!   a child's task starts only while the run that built the child is alive; a child is built
//!   only once everything of its previous build is gone;
//! - every status change published (`status_changes`) by every supervisor of the tree (the
//!   root's from before its first task, each child's from its build until it stops) is an
//!   edge of the state machine (`TaskStatus::can_change_to`), continues from the task's
//!   previous change, and carries a reason exactly when it goes to `Failed` or `Dead`; no
//!   stream lags; nothing in a quiet child starts again but by a group restart;
//! - every command returns `Ok` or the documented error for its case, status reads complete on
//!   their first poll, and `SupervisorStopped` only comes once the supervisor stopped taking
//!   commands; `root.tree()` shows the root's names as registered, in start order, a child
//!   only below a child supervisor task, with the child's names as registered;
//!
//! and once it is over: `wait()` returns in bounded (paused) time, no run of any level is
//! alive, no task instance is left, the runtime's count of alive tasks is back to where it
//! was, and no root task started again from `Healthy`, `Completed` or `Dead` more often than
//! it was restarted by a command (invariant 4: a back-off pending when a task was killed does
//! nothing).
//!
//! `memory_per_task_does_not_grow_with_restarts` checks invariant 7 with a counting allocator;
//! `flapping_tasks_do_not_starve_commands` checks that a storm of instant failures cannot keep a
//! shutdown from taking effect.

mod reliability_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::poll_fn;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use reliability_common::INJECTED;
use reliability_common::{block_thread, poll_once, quiet_injected_panics, seed_from_env, Rng};
use task_supervisor::{
    anyhow, ChildSupervisor, RestartPolicy, ShutdownOrder, StatusChange, Strategy, SupervisedTask,
    SupervisorBuilder, SupervisorHandle, SupervisorHandleError, SupervisorTree, TaskContext,
    TaskResult, TaskSpec, TaskStatus,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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

/// The commands the handles send: to the root (the first nine), to a child supervisor
/// through `root.child(name)` (`Child*`), and to the root about its child supervisors or its
/// whole tree (`Tree*`).
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
    ChildAdd,
    ChildRestart,
    ChildKill,
    ChildStatus,
    ChildStatusUnknown,
    ChildAllStatuses,
    ChildShutdown,
    TreeRestart,
    TreeKill,
    TreeSnapshot,
}

impl Command {
    const ALL: [Command; 19] = [
        Self::Add,
        Self::DuplicateAdd,
        Self::Restart,
        Self::Kill,
        Self::Status,
        Self::AllStatuses,
        Self::RestartUnknown,
        Self::KillUnknown,
        Self::StatusUnknown,
        Self::ChildAdd,
        Self::ChildRestart,
        Self::ChildKill,
        Self::ChildStatus,
        Self::ChildStatusUnknown,
        Self::ChildAllStatuses,
        Self::ChildShutdown,
        Self::TreeRestart,
        Self::TreeKill,
        Self::TreeSnapshot,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// About 4 % of the commands go to the tree (`tree` = 1), the rest to the root's own
    /// tasks: each of the few children still gets many more commands per task than a root
    /// task does. The root restarts or kills a child rarely, so that children mostly end by
    /// giving up. A larger `tree` weighs the commands to the children up (not the root's
    /// restarts and kills of them: each one stops a child).
    fn draw(rng: &mut Rng, tree: u64) -> Self {
        rng.weighted(&[
            (160, Self::Add),
            (320, Self::DuplicateAdd),
            (960, Self::Restart),
            (560, Self::Kill),
            (960, Self::Status),
            (40, Self::AllStatuses),
            (320, Self::RestartUnknown),
            (320, Self::KillUnknown),
            (360, Self::StatusUnknown),
            (24 * tree, Self::ChildAdd),
            (40 * tree, Self::ChildRestart),
            (20 * tree, Self::ChildKill),
            (48 * tree, Self::ChildStatus),
            (12 * tree, Self::ChildStatusUnknown),
            (12 * tree, Self::ChildAllStatuses),
            (2 * tree, Self::ChildShutdown),
            (6, Self::TreeRestart),
            (1, Self::TreeKill),
            (4 * tree, Self::TreeSnapshot),
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
    /// `root.child(name)` answered `Ok(None)`: the child supervisor's run is not up.
    NoChild,
}

impl Answer {
    const ALL: [Answer; 6] = [
        Self::Ok,
        Self::AlreadyExists,
        Self::NotFound,
        Self::Stopped,
        Self::NoSuchTask,
        Self::NoChild,
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
    commands: [[AtomicU64; Answer::ALL.len()]; Command::ALL.len()],
    runs: AtomicU64,
    violations: AtomicU64,
    first_violations: Mutex<Vec<String>>,
    /// Orders the starts and ends of the runs of the children's tasks (see
    /// [`check_group_start`]).
    seq: AtomicU64,
    /// The root, for the runs of its child supervisors to reach their child; taken when the
    /// soak ends.
    root: Mutex<Option<SupervisorHandle>>,
    /// The checkers of the children's status change streams, one per child build.
    child_checkers: Mutex<Vec<JoinHandle<()>>>,
    /// What those checkers saw, merged as each stream ends.
    child_changes: Mutex<ChangeTally>,
    /// Tree snapshots checked, and child supervisors shown in them.
    snapshots: AtomicU64,
    children_shown: AtomicU64,
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
            seq: AtomicU64::new(0),
            root: Mutex::new(None),
            child_checkers: Mutex::new(Vec::new()),
            child_changes: Mutex::new(ChangeTally::default()),
            snapshots: AtomicU64::new(0),
            children_shown: AtomicU64::new(0),
        })
    }

    fn root(&self) -> Option<SupervisorHandle> {
        lock(&self.root).clone()
    }

    /// The next number in the order of starts and ends.
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
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
    /// The child supervisor it is a task of, if it is not the root's.
    in_child: Option<InChild>,
}

/// Where a task of a child supervisor sits in it.
#[derive(Clone)]
struct InChild {
    child: Arc<ChildProbe>,
    /// Its position among the child's builder tasks; `None` for a task added at run time.
    member: Option<usize>,
}

impl InChild {
    /// Whether its runs take part in the check of invariant 9 ([`check_group_start`]).
    fn checks_group(&self, world: &World) -> bool {
        self.member.is_some()
            && self.child.quiet
            && self.child.strategy != Strategy::OneForOne
            && world.clock == Clock::Paused
    }
}

impl ChaosTask {
    fn new(id: u64, world: &Arc<World>, in_child: Option<InChild>) -> (Self, Arc<Probe>) {
        let probe = Arc::new(Probe::default());
        let runs = Arc::new(AtomicU64::new(0));
        let task = Self::with_probe(id, world, &probe, &runs, in_child);
        (task, probe)
    }

    /// A fresh registered instance of the task whose runs `probe` counts: one per build of a
    /// child supervisor, for its builder tasks, so that every build's runs are counted as
    /// runs of the same task.
    fn with_probe(
        id: u64,
        world: &Arc<World>,
        probe: &Arc<Probe>,
        runs: &Arc<AtomicU64>,
        in_child: Option<InChild>,
    ) -> Self {
        probe.instances.fetch_add(1, Ordering::SeqCst);
        if let Some(in_child) = &in_child {
            in_child.child.held.fetch_add(1, Ordering::SeqCst);
        }
        let declares_heartbeats = Rng::derive(world.seed, &[id, u64::MAX]).chance(1, 3);
        Self {
            id,
            declares_heartbeats,
            probe: Arc::clone(probe),
            world: Arc::clone(world),
            runs: Arc::clone(runs),
            in_child,
        }
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
        if let Some(in_child) = &self.in_child {
            in_child.child.held.fetch_add(1, Ordering::SeqCst);
        }
        Self {
            id: self.id,
            declares_heartbeats: self.declares_heartbeats,
            probe: Arc::clone(&self.probe),
            world: Arc::clone(&self.world),
            runs: Arc::clone(&self.runs),
            in_child: self.in_child.clone(),
        }
    }
}

impl Drop for ChaosTask {
    fn drop(&mut self) {
        if let Some(in_child) = &self.in_child {
            in_child.child.held.fetch_sub(1, Ordering::SeqCst);
        }
        self.probe.instances.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Held by a run from its first poll until its future is dropped.
struct LiveRun {
    probe: Arc<Probe>,
    in_child: Option<InChild>,
    world: Arc<World>,
}

impl LiveRun {
    fn enter(task: &ChaosTask) -> Self {
        let before = task.probe.live.fetch_add(1, Ordering::SeqCst);
        if before != 0 {
            task.world.violation(format!(
                "task {}: a run started while {before} other run(s) were alive",
                task.id
            ));
        }
        if let Some(in_child) = &task.in_child {
            in_child.child.live.fetch_add(1, Ordering::SeqCst);
            if let (Some(member), true) = (in_child.member, in_child.checks_group(&task.world)) {
                check_group_start(&in_child.child, member, &task.world);
            }
        }
        Self {
            probe: Arc::clone(&task.probe),
            in_child: task.in_child.clone(),
            world: Arc::clone(&task.world),
        }
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        if let Some(in_child) = &self.in_child {
            if let (Some(member), true) = (in_child.member, in_child.checks_group(&self.world)) {
                let member = &in_child.child.members[member];
                member.live_start.store(0, Ordering::SeqCst);
                member
                    .last_end
                    .store(self.world.next_seq(), Ordering::SeqCst);
            }
            in_child.child.live.fetch_sub(1, Ordering::SeqCst);
        }
        self.probe.live.fetch_sub(1, Ordering::SeqCst);
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
        if self
            .in_child
            .as_ref()
            .is_some_and(|in_child| in_child.checks_group(&self.world))
        {
            // Nothing of a run ends it before the paused clock moves: every run a group
            // starts has its first poll before any of them can end (see `check_group_start`).
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
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

// ----- the tree -----

/// The names of the root's child supervisor tasks start with this.
const TREE_PREFIX: &str = "tree-";

/// The soak's child supervisors: one busy and one quiet child per strategy. Commanders add,
/// restart and kill the tasks of busy children; the tasks of quiet children get no command
/// that changes them (the children themselves do, from the root), so that every start in
/// them is the supervisor's own decision and invariant 9 can be checked exactly.
const CHILDREN: [(&str, Strategy, bool); 6] = [
    ("tree-one-for-one-busy", Strategy::OneForOne, false),
    ("tree-one-for-one-quiet", Strategy::OneForOne, true),
    ("tree-one-for-all-busy", Strategy::OneForAll, false),
    ("tree-one-for-all-quiet", Strategy::OneForAll, true),
    ("tree-rest-for-one-busy", Strategy::RestForOne, false),
    ("tree-rest-for-one-quiet", Strategy::RestForOne, true),
];

/// One child supervisor of the root, across all its builds, as the soak knows it.
struct ChildProbe {
    index: u64,
    name: Arc<str>,
    strategy: Strategy,
    quiet: bool,
    /// Runs of this child's tasks (of any build) being polled now.
    live: AtomicU32,
    /// Instances of this child's tasks (registered, and made for runs) not dropped yet.
    held: AtomicU32,
    /// Instances a commander has made for an `add_task` to this child that has not returned
    /// yet: held by the commander, not the child (refused by a child that is stopping, it is
    /// dropped only as the call returns, which may be after the child's run has ended).
    registering: AtomicU32,
    /// Runs of the root task that runs this child being polled now.
    runs_live: AtomicU32,
    builds: AtomicU64,
    /// The builder's tasks, the same in every build.
    members: Vec<Member>,
    /// The names added at run time to the current build, in order.
    added: Mutex<Vec<Arc<str>>>,
    /// Every name ever offered to this child, in any build.
    reserved: Mutex<HashSet<Arc<str>>>,
}

/// A builder task of a child: a fresh instance in every build, one task for the checks.
struct Member {
    name: Arc<str>,
    id: u64,
    probe: Arc<Probe>,
    runs: Arc<AtomicU64>,
    temporary: bool,
    /// When (in `World::seq`) the member's live run started; 0 when it has none.
    live_start: AtomicU64,
    /// When its last run ended.
    last_end: AtomicU64,
}

impl ChildProbe {
    fn static_names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.members.iter().map(|member| &member.name)
    }

    /// A name to command: a builder task's mostly, else one added to the current build.
    /// Returns whether it is an added one.
    fn pick_name(&self, rng: &mut Rng) -> (Arc<str>, bool) {
        let added = lock(&self.added);
        if added.is_empty() || rng.chance(3, 4) {
            let member = &self.members[rng.below(self.members.len() as u64) as usize];
            (Arc::clone(&member.name), false)
        } else {
            (
                Arc::clone(&added[rng.below(added.len() as u64) as usize]),
                true,
            )
        }
    }
}

/// Invariant 9, for a builder task (`member`) of a quiet child with a group strategy, on the
/// paused clock, at the first poll of one of its runs: no run its group stopped is alive.
///
/// A run that a group restart starts may overlap only runs that group started too (in a quiet
/// child every task that runs joins the group, see `Strategy`; none is temporary). Every run
/// of such a child sleeps on its first poll, so all the runs a group starts are polled before
/// any of them can end; the last end among the group's members is then one of a run the group
/// stopped, and every member's live run must have started after it. The members are every
/// task under one-for-all, and for rest-for-one those from `member` on (a group that restarts
/// `member` restarts every later task), of which the later ones are checked.
fn check_group_start(child: &ChildProbe, member: usize, world: &World) {
    let count = child.members.len();
    let (ends, siblings) = match child.strategy {
        Strategy::OneForAll => (0..count, 0..count),
        Strategy::RestForOne => (member..count, member + 1..count),
        Strategy::OneForOne => return,
    };
    let last_end = ends
        .map(|other| child.members[other].last_end.load(Ordering::SeqCst))
        .max()
        .unwrap_or(0);
    for other in siblings.filter(|other| *other != member) {
        let started = child.members[other].live_start.load(Ordering::SeqCst);
        if started != 0 && started < last_end {
            world.violation(format!(
                "{}: {} started while {} still ran a run from before the last group restart \
                 (invariant 9)",
                child.name, child.members[member].name, child.members[other].name
            ));
        }
    }
    child.members[member]
        .live_start
        .store(world.next_seq(), Ordering::SeqCst);
}

/// The settings of every build of `child`: the root's, but a longer grace period (the root's
/// grace for the child's run bounds it), and a rule to give up by, so that the child's
/// failure escalates to the root.
fn child_settings(world: &World, child: &ChildProbe, build: u64) -> SupervisorBuilder {
    let builder = SupervisorBuilder::new()
        .with_strategy(child.strategy)
        .with_heartbeat_interval(world.heartbeat_interval)
        .with_max_restart_attempts(3)
        .with_restart_jitter(0.2)
        .with_jitter_seed(Rng::derive(world.seed, &[0x7EE, child.index, build]).next_u64());
    let builder = match world.clock {
        Clock::Paused => builder
            .with_timeout_threshold(Duration::from_millis(200))
            .with_health_check_initial_delay(Duration::from_millis(100))
            .with_base_restart_delay(Duration::from_millis(10))
            .with_max_backoff_exponent(3)
            .with_task_being_stable_after(Duration::from_millis(500))
            .with_grace_period(Duration::from_millis(300)),
        Clock::None => {
            let out_of_reach = Duration::from_secs(24 * 60 * 60);
            builder
                .with_timeout_threshold(out_of_reach)
                .with_health_check_initial_delay(out_of_reach)
                .with_base_restart_delay(Duration::ZERO)
                .with_grace_period(Duration::ZERO)
        }
    };
    let second = Duration::from_secs(1);
    match child.index {
        // No intensity and no back-off: runs restart in place, tasks die after one
        // restart, and the child gives up when more than 40 % of its tasks are dead.
        0 => builder
            .with_base_restart_delay(Duration::ZERO)
            .with_max_restart_attempts(1)
            .with_dead_tasks_threshold(Some(0.4)),
        1 => builder
            .with_restart_intensity(4, second)
            .with_shutdown_order(ShutdownOrder::Reverse),
        4 if world.clock == Clock::Paused => builder
            .with_restart_intensity(6, second)
            .with_shutdown_timeout(Duration::from_millis(150)),
        2 | 4 => builder.with_restart_intensity(6, second),
        _ => builder.with_restart_intensity(3, second),
    }
}

/// The instances of `child`'s tasks that the child holds, as far as can be told: every one
/// not dropped, unless a commander's `add_task` to the child was under way meanwhile (its
/// instance, refused by a child that is stopping, is dropped only as the call returns, which
/// may be after the child's run ended). A commander's whole call would have to fit between
/// the two reads of `registering` to be counted.
fn held_by_the_child(child: &ChildProbe) -> u32 {
    let before = child.registering.load(Ordering::SeqCst);
    let held = child.held.load(Ordering::SeqCst);
    let after = child.registering.load(Ordering::SeqCst);
    if before == 0 && after == 0 {
        held
    } else {
        0
    }
}

/// The task of the root that runs `child`: every run builds it afresh.
fn child_supervisor(world: &Arc<World>, child: &Arc<ChildProbe>) -> ChildSupervisor {
    let world = Arc::clone(world);
    let child = Arc::clone(child);
    ChildSupervisor::new(move || {
        let build = child.builds.fetch_add(1, Ordering::SeqCst);
        let (live, held) = (child.live.load(Ordering::SeqCst), held_by_the_child(&child));
        if live != 0 || held != 0 {
            world.violation(format!(
                "{}: build {build} made while an earlier build had {live} runs alive and held \
                 {held} task instances",
                child.name
            ));
        }
        lock(&child.added).clear();
        // Making a child takes a while (as reading its configuration would): the parent's
        // stop may land meanwhile, once the run has asked for its cancellation token.
        block_thread(Rng::derive(world.seed, &[0xB1D, child.index, build]).between(2_000, 40_000));
        let mut builder = child_settings(&world, &child, build);
        for (position, member) in child.members.iter().enumerate() {
            let in_child = InChild {
                child: Arc::clone(&child),
                member: Some(position),
            };
            let task = ChaosTask::with_probe(
                member.id,
                &world,
                &member.probe,
                &member.runs,
                Some(in_child),
            );
            let mut spec = TaskSpec::new(task);
            if member.temporary {
                spec = spec.with_restart_policy(RestartPolicy::Temporary);
            }
            builder = builder.with_task_spec(&member.name, spec);
        }
        builder
    })
}

/// A child supervisor task of the root, with the checks around each of its runs.
#[derive(Clone)]
struct TreeChild {
    inner: ChildSupervisor,
    child: Arc<ChildProbe>,
    world: Arc<World>,
}

#[async_trait]
impl SupervisedTask for TreeChild {
    async fn run(&mut self) -> TaskResult {
        let Self {
            inner,
            child,
            world,
        } = self;
        let _run = ChildRun::enter(child, world);
        let mut run = inner.run();
        // The first poll builds the child and starts it; its loop has not run yet on a
        // current-thread runtime, so a subscription now sees every change it makes.
        if let Poll::Ready(result) =
            poll_fn(|cx| Poll::Ready(std::future::Future::poll(run.as_mut(), cx))).await
        {
            return result;
        }
        watch_child(world, child);
        run.await
    }
}

/// Held by a run of a child supervisor task from its first poll until its future is dropped.
struct ChildRun {
    child: Arc<ChildProbe>,
    world: Arc<World>,
}

impl ChildRun {
    fn enter(child: &Arc<ChildProbe>, world: &Arc<World>) -> Self {
        let before = child.runs_live.fetch_add(1, Ordering::SeqCst);
        if before != 0 {
            world.violation(format!(
                "{}: a run started while {before} other run(s) were alive",
                child.name
            ));
        }
        Self {
            child: Arc::clone(child),
            world: Arc::clone(world),
        }
    }
}

impl Drop for ChildRun {
    fn drop(&mut self) {
        // Invariant 10: the root reports the run ended only after this, when its future is
        // gone; by then no run of the child may be alive, and the child, which drops its
        // tasks as it ends, must hold none of them.
        let (live, held) = (
            self.child.live.load(Ordering::SeqCst),
            held_by_the_child(&self.child),
        );
        if live != 0 || held != 0 {
            self.world.violation(format!(
                "{}: its run ended while {live} run(s) of its child were alive and the child \
                 held {held} task instances (invariant 10)",
                self.child.name
            ));
        }
        self.child.runs_live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Subscribes to the status changes of the child that a run of `child` has just built, and
/// checks them until the child stops.
fn watch_child(world: &Arc<World>, child: &Arc<ChildProbe>) {
    let Some(root) = world.root() else {
        return;
    };
    match root.child(&child.name) {
        Ok(Some(handle)) => {
            let changes = handle.status_changes();
            drop(handle);
            let scope = Scope {
                label: format!(
                    "{} (build {})",
                    child.name,
                    child.builds.load(Ordering::SeqCst)
                ),
                group: child.strategy != Strategy::OneForOne,
                quiet: child.quiet,
                late: world.clock == Clock::None,
            };
            let world_for_checker = Arc::clone(world);
            let checker = tokio::spawn(tokio::task::unconstrained(async move {
                let tally = check_changes(changes, Arc::clone(&world_for_checker), scope).await;
                lock(&world_for_checker.child_changes).merge(tally);
            }));
            let mut checkers = lock(&world.child_checkers);
            checkers.retain(|checker| !checker.is_finished());
            checkers.push(checker);
        }
        Ok(None) => world.violation(format!(
            "{}: its run is up, but the root shows no child for it",
            child.name
        )),
        Err(_) => {} // The root has stopped.
    }
}

/// The children of the soak's root, with `members` builder tasks each; ids from `next_id`.
fn make_children(
    members: usize,
    next_id: &AtomicU64,
    probes: &mut HashMap<u64, Arc<Probe>>,
) -> Vec<Arc<ChildProbe>> {
    CHILDREN
        .iter()
        .enumerate()
        .map(|(index, (name, strategy, quiet))| {
            let members = (0..members)
                .map(|position| {
                    let id = next_id.fetch_add(1, Ordering::SeqCst);
                    let probe = Arc::new(Probe::default());
                    probes.insert(id, Arc::clone(&probe));
                    Member {
                        name: Arc::from(format!("worker-{position}")),
                        id,
                        probe,
                        runs: Arc::new(AtomicU64::new(0)),
                        // One temporary task in each busy group child: a group leaves it be.
                        temporary: !quiet
                            && *strategy != Strategy::OneForOne
                            && position + 1 == members,
                        live_start: AtomicU64::new(0),
                        last_end: AtomicU64::new(0),
                    }
                })
                .collect();
            Arc::new(ChildProbe {
                index: index as u64,
                name: Arc::from(*name),
                strategy: *strategy,
                quiet: *quiet,
                live: AtomicU32::new(0),
                held: AtomicU32::new(0),
                registering: AtomicU32::new(0),
                runs_live: AtomicU32::new(0),
                builds: AtomicU64::new(0),
                members,
                added: Mutex::new(Vec::new()),
                reserved: Mutex::new(HashSet::new()),
            })
        })
        .collect()
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

    fn snapshot(&self) -> Vec<Arc<str>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What every commander shares.
struct Commanders {
    world: Arc<World>,
    names: Names,
    /// Every name ever offered to the root (taken before its add is sent).
    reserved: Mutex<HashSet<Arc<str>>>,
    /// Restart commands answered `Ok`, per task.
    restarts: Mutex<HashMap<Arc<str>, u64>>,
    probes: Mutex<HashMap<u64, Arc<Probe>>>,
    next_id: AtomicU64,
    children: Vec<Arc<ChildProbe>>,
    /// How much the tree's commands weigh (see [`Command::draw`]).
    tree_weight: u64,
}

impl Commanders {
    /// Commanders for a root whose children have `members` builder tasks each.
    fn new(world: &Arc<World>, members: usize, tree_weight: u64) -> Arc<Self> {
        let next_id = AtomicU64::new(0);
        let mut probes = HashMap::new();
        let children = make_children(members, &next_id, &mut probes);
        Arc::new(Self {
            world: Arc::clone(world),
            names: Names::default(),
            reserved: Mutex::new(HashSet::new()),
            restarts: Mutex::new(HashMap::new()),
            probes: Mutex::new(probes),
            next_id,
            children,
            tree_weight,
        })
    }

    /// Registers every child supervisor task in the root: permanent and with unlimited
    /// restarts, so that a child that gives up is always built again.
    fn register_children(&self, root: &SupervisorHandle) {
        for child in &self.children {
            let task = TreeChild {
                inner: child_supervisor(&self.world, child),
                child: Arc::clone(child),
                world: Arc::clone(&self.world),
            };
            let spec = TaskSpec::new(task)
                .with_restart_policy(RestartPolicy::Permanent)
                .with_unlimited_restarts();
            lock(&self.reserved).insert(Arc::clone(&child.name));
            root.add_task_spec(&child.name, spec)
                .expect("a fresh name on a running supervisor");
            self.names.push(Arc::clone(&child.name));
        }
    }

    /// Adds a fresh chaotic task named `name` to `handle`: the root's, or `in_child`'s.
    fn register(
        &self,
        handle: &SupervisorHandle,
        name: &str,
        in_child: Option<&Arc<ChildProbe>>,
    ) -> Result<(), SupervisorHandleError> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let name: Arc<str> = Arc::from(name);
        let membership = in_child.map(|child| InChild {
            child: Arc::clone(child),
            member: None,
        });
        if let Some(child) = in_child {
            child.registering.fetch_add(1, Ordering::SeqCst);
        }
        let (task, probe) = ChaosTask::new(id, &self.world, membership);
        lock(&self.probes).insert(id, probe);
        match in_child {
            Some(child) => lock(&child.reserved).insert(Arc::clone(&name)),
            None => lock(&self.reserved).insert(Arc::clone(&name)),
        };
        let added = handle.add_task(&name, task);
        if let Some(child) = in_child {
            child.registering.fetch_sub(1, Ordering::SeqCst);
        }
        if added.is_ok() {
            match in_child {
                Some(child) => lock(&child.added).push(name),
                None => self.names.push(name),
            }
        }
        added
    }

    /// `SupervisorStopped` is documented once the supervisor stopped taking commands; it never
    /// takes them again, so it must still be so after the answer.
    fn stopped(&self, handle: &SupervisorHandle, what: &str) -> Answer {
        if handle.is_running() {
            self.world.violation(format!(
                "{what}: SupervisorStopped from a running supervisor"
            ));
        }
        Answer::Stopped
    }

    /// Sends one random command and checks its answer against the documentation.
    fn command(&self, handle: &SupervisorHandle, rng: &mut Rng, commander: usize, serial: u64) {
        let world = &self.world;
        let command = Command::draw(rng, self.tree_weight);
        let unknown = format!("unknown-{commander}-{serial}");
        let stopped = |what: &str| self.stopped(handle, what);
        let answer = match command {
            Command::Add => {
                let name = format!("added-{commander}-{serial}");
                match self.register(handle, &name, None) {
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
            Command::Restart | Command::Kill | Command::TreeRestart | Command::TreeKill => {
                let name = if matches!(command, Command::Restart | Command::Kill) {
                    self.names.pick(rng)
                } else {
                    let child = &self.children[rng.below(self.children.len() as u64) as usize];
                    Arc::clone(&child.name)
                };
                let restart = matches!(command, Command::Restart | Command::TreeRestart);
                let result = if restart {
                    handle.restart(&name)
                } else {
                    handle.kill_task(&name)
                };
                match result {
                    Ok(()) => {
                        if restart {
                            *lock(&self.restarts).entry(name).or_default() += 1;
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
            Command::TreeSnapshot => {
                let known = self.names.snapshot();
                match handle.tree() {
                    Ok(tree) => {
                        self.check_tree(&tree, &known);
                        Answer::Ok
                    }
                    Err(SupervisorHandleError::SupervisorStopped) => stopped("tree"),
                    Err(other) => {
                        world.violation(format!("tree: {other}"));
                        Answer::Ok
                    }
                }
            }
            Command::ChildAdd
            | Command::ChildRestart
            | Command::ChildKill
            | Command::ChildStatus
            | Command::ChildStatusUnknown
            | Command::ChildAllStatuses
            | Command::ChildShutdown => self.child_command(handle, rng, command, &unknown),
        };
        world.tally(command, answer);
    }

    /// A command to a child supervisor, through the handle `root.child(name)` gives.
    fn child_command(
        &self,
        root: &SupervisorHandle,
        rng: &mut Rng,
        command: Command,
        unknown: &str,
    ) -> Answer {
        let world = &self.world;
        // Only busy children's tasks are changed by commands.
        let changes_tasks = matches!(
            command,
            Command::ChildAdd | Command::ChildRestart | Command::ChildKill
        );
        let candidates: Vec<&Arc<ChildProbe>> = self
            .children
            .iter()
            .filter(|child| !changes_tasks || !child.quiet)
            .collect();
        let child = candidates[rng.below(candidates.len() as u64) as usize];
        let handle = match root.child(&child.name) {
            Ok(Some(handle)) => handle,
            Ok(None) => return Answer::NoChild,
            Err(SupervisorHandleError::SupervisorStopped) => return self.stopped(root, "child"),
            Err(other) => {
                world.violation(format!("child {}: {other}", child.name));
                return Answer::NotFound;
            }
        };
        let what = |action: &str| format!("{action} in {}", child.name);
        // In the multi-thread soak, a name added to one build can be recorded after the next
        // build began: asked of that one, it is unknown.
        let late_names = world.clock == Clock::None;
        match command {
            Command::ChildAdd => {
                let name = format!("{}/{}", child.name, unknown.replace("unknown", "added"));
                match self.register(&handle, &name, Some(child)) {
                    Ok(()) => Answer::Ok,
                    Err(SupervisorHandleError::SupervisorStopped) => {
                        self.stopped(&handle, &what("add"))
                    }
                    Err(other) => {
                        world.violation(format!("{}: {other}", what("add")));
                        Answer::Stopped
                    }
                }
            }
            Command::ChildRestart | Command::ChildKill => {
                let (name, added) = child.pick_name(rng);
                let restart = command == Command::ChildRestart;
                let result = if restart {
                    handle.restart(&name)
                } else {
                    handle.kill_task(&name)
                };
                match result {
                    Ok(()) => Answer::Ok,
                    Err(SupervisorHandleError::SupervisorStopped) => {
                        self.stopped(&handle, &what("restart or kill"))
                    }
                    Err(SupervisorHandleError::TaskNotFound { .. }) if added && late_names => {
                        Answer::NotFound
                    }
                    Err(other) => {
                        world.violation(format!("{} of {name}: {other}", what("restart or kill")));
                        Answer::NotFound
                    }
                }
            }
            Command::ChildStatus | Command::ChildStatusUnknown => {
                let (name, added) = if command == Command::ChildStatus {
                    child.pick_name(rng)
                } else {
                    (Arc::from(unknown), false)
                };
                let expect_some = command == Command::ChildStatus;
                match poll_once(handle.get_task_status(&name)) {
                    None => {
                        world.violation(format!("{} of {name}: not at once", what("status")));
                        Answer::Stopped
                    }
                    Some(Ok(Some(_))) if expect_some => Answer::Ok,
                    Some(Ok(None)) if !expect_some => Answer::NoSuchTask,
                    Some(Ok(None)) if added && late_names => Answer::NoSuchTask,
                    Some(Err(SupervisorHandleError::SupervisorStopped)) => {
                        self.stopped(&handle, &what("status"))
                    }
                    Some(other) => {
                        world.violation(format!("{} of {name}: {other:?}", what("status")));
                        Answer::Ok
                    }
                }
            }
            Command::ChildAllStatuses => match handle.task_statuses() {
                Ok(statuses) => {
                    let names: Vec<Arc<str>> = statuses.into_iter().map(|(name, _)| name).collect();
                    self.check_child_names(child, &names, false, "statuses");
                    Answer::Ok
                }
                Err(SupervisorHandleError::SupervisorStopped) => {
                    self.stopped(&handle, &what("statuses"))
                }
                Err(other) => {
                    world.violation(format!("{}: {other}", what("statuses")));
                    Answer::Ok
                }
            },
            Command::ChildShutdown => match handle.shutdown() {
                Ok(()) => Answer::Ok,
                Err(SupervisorHandleError::SupervisorStopped) => {
                    self.stopped(&handle, &what("shutdown"))
                }
                Err(other) => {
                    world.violation(format!("{}: {other}", what("shutdown")));
                    Answer::Ok
                }
            },
            _ => unreachable!("not a command to a child"),
        }
    }

    /// Checks the names a child shows (its statuses, or its part of a tree snapshot, `ordered`
    /// then): each once, every builder task's, and otherwise only names added to it; on the
    /// current-thread runtime exactly the names added to its current build (in start order,
    /// after the builder's tasks, when `ordered`).
    fn check_child_names(&self, child: &ChildProbe, names: &[Arc<str>], ordered: bool, what: &str) {
        let world = &self.world;
        let statics: Vec<&Arc<str>> = child.static_names().collect();
        let seen: HashSet<&Arc<str>> = names.iter().collect();
        if seen.len() != names.len() {
            world.violation(format!("{} {what}: a name twice: {names:?}", child.name));
        }
        if ordered && names.iter().take(statics.len()).ne(statics.iter().copied()) {
            world.violation(format!(
                "{} {what}: not its builder's tasks first: {names:?}",
                child.name
            ));
        }
        if statics.iter().any(|name| !seen.contains(name)) {
            world.violation(format!(
                "{} {what}: a builder task is missing: {names:?}",
                child.name
            ));
        }
        if world.clock == Clock::Paused {
            let added = lock(&child.added).clone();
            let rest: Vec<&Arc<str>> = names
                .iter()
                .filter(|name| !statics.contains(name))
                .collect();
            let matches = if ordered {
                rest.iter().copied().eq(added.iter())
            } else {
                rest.len() == added.len() && added.iter().all(|name| seen.contains(name))
            };
            if !matches {
                world.violation(format!(
                    "{} {what}: added tasks {rest:?}, but {added:?} were added",
                    child.name
                ));
            }
        } else {
            let reserved = lock(&child.reserved);
            if let Some(stray) = names
                .iter()
                .find(|name| !statics.contains(name) && !reserved.contains(*name))
            {
                world.violation(format!("{} {what}: {stray} was never added", child.name));
            }
        }
    }

    /// Checks a snapshot of the whole tree: the root's names as registered, in start order;
    /// a child only below a child supervisor task, with its own names as registered; nothing
    /// below a child's tasks. `known` are the root's names known before it was made.
    fn check_tree(&self, tree: &SupervisorTree, known: &[Arc<str>]) {
        let world = &self.world;
        world.snapshots.fetch_add(1, Ordering::Relaxed);
        let names: Vec<&Arc<str>> = tree.tasks.iter().map(|task| &task.name).collect();
        match world.clock {
            // Nothing registers between the read of the names and the snapshot.
            Clock::Paused => {
                if names.iter().copied().ne(known.iter()) {
                    world.violation(format!(
                        "tree: {} root tasks, not the {} registered in start order",
                        names.len(),
                        known.len()
                    ));
                }
            }
            Clock::None => {
                let seen: HashSet<&Arc<str>> = names.iter().copied().collect();
                let reserved = lock(&self.reserved);
                if seen.len() != names.len()
                    || known.iter().any(|name| !seen.contains(name))
                    || names.iter().any(|name| !reserved.contains(*name))
                {
                    world.violation(format!(
                        "tree: {} root tasks, {} unique, {} names known before",
                        names.len(),
                        seen.len(),
                        known.len()
                    ));
                }
            }
        }
        for task in &tree.tasks {
            let Some(subtree) = &task.child else {
                continue;
            };
            let Some(child) = self.children.iter().find(|child| child.name == task.name) else {
                world.violation(format!("tree: {} is no child supervisor", task.name));
                continue;
            };
            world.children_shown.fetch_add(1, Ordering::Relaxed);
            let names: Vec<Arc<str>> = subtree
                .tasks
                .iter()
                .map(|task| Arc::clone(&task.name))
                .collect();
            self.check_child_names(child, &names, true, "in the tree");
            if let Some(below) = subtree.tasks.iter().find(|task| task.child.is_some()) {
                world.violation(format!(
                    "tree: {}/{} shows a child of its own",
                    child.name, below.name
                ));
            }
        }
    }
}

// ----- the status change checker -----

/// What the checker saw on the status change stream (of the root, or merged over every
/// build of every child).
#[derive(Default, Debug)]
struct ChangeTally {
    changes: u64,
    edges: BTreeMap<(String, String), u64>,
    /// Changes to `Failed` or `Dead`, by the kind of reason given.
    reasons: BTreeMap<&'static str, u64>,
    /// Per task, the changes to `Starting` that only a `restart` command may cause: from
    /// `Healthy`, `Completed` or `Dead` (a back-off restarts from `Failed`, and a permanent
    /// child supervisor task from `Completed` too).
    manual_starts: HashMap<Arc<str>, u64>,
    final_statuses: BTreeMap<String, u64>,
    /// Streams checked to their end.
    streams: u64,
    /// Group restarts seen in children with a group strategy: bursts of `Starting` changes
    /// (not from `Created`), in quiet children (all of them group restarts) and busy ones
    /// (where a restart command's start may stand alone or join a burst).
    group_starts_quiet: u64,
    group_starts_busy: u64,
    /// Runs those bursts started.
    group_members_started: u64,
    /// Runs of child supervisor tasks that failed because their child gave up, by its rule.
    escalations: BTreeMap<&'static str, u64>,
    /// First changes of a task not from `Created`, on a stream subscribed late (multi-thread).
    late_first_changes: u64,
}

impl ChangeTally {
    fn merge(&mut self, other: ChangeTally) {
        self.changes += other.changes;
        for (edge, count) in other.edges {
            *self.edges.entry(edge).or_default() += count;
        }
        for (kind, count) in other.reasons {
            *self.reasons.entry(kind).or_default() += count;
        }
        for (kind, count) in other.escalations {
            *self.escalations.entry(kind).or_default() += count;
        }
        self.streams += other.streams;
        self.group_starts_quiet += other.group_starts_quiet;
        self.group_starts_busy += other.group_starts_busy;
        self.group_members_started += other.group_members_started;
        self.late_first_changes += other.late_first_changes;
    }
}

/// Which supervisor a stream is of, and what its checker may expect of it.
struct Scope {
    label: String,
    /// A child with a group strategy: bursts of starts are group restarts.
    group: bool,
    /// A child whose tasks get no command: nothing but its own rules starts them.
    quiet: bool,
    /// Subscribed once the supervisor was running (a child, on the multi-thread runtime): a
    /// task's first change seen may not be its first.
    late: bool,
}

impl Scope {
    fn root() -> Self {
        Self {
            label: "root".to_owned(),
            group: false,
            quiet: false,
            late: false,
        }
    }
}

/// Reads every status change until the stream closes and checks each one.
async fn check_changes(
    mut changes: tokio::sync::broadcast::Receiver<StatusChange>,
    world: Arc<World>,
    scope: Scope,
) -> ChangeTally {
    let mut last: HashMap<Arc<str>, TaskStatus> = HashMap::new();
    let mut tally = ChangeTally::default();
    let mut in_burst = false;
    let label = &scope.label;
    loop {
        match changes.recv().await {
            Ok(change) => {
                tally.changes += 1;
                let previous = last.get(&change.task).copied();
                if change.from != previous.unwrap_or(TaskStatus::Created) {
                    if scope.late && previous.is_none() {
                        tally.late_first_changes += 1;
                    } else {
                        world.violation(format!(
                            "{label}: {}: change {} -> {} does not continue from {}",
                            change.task,
                            change.from,
                            change.to,
                            previous.unwrap_or(TaskStatus::Created)
                        ));
                    }
                }
                if change.from == change.to || !change.from.can_change_to(change.to) {
                    world.violation(format!(
                        "{label}: {}: {} -> {} is not an edge of the state machine",
                        change.task, change.from, change.to
                    ));
                }
                let wants_reason = matches!(change.to, TaskStatus::Failed | TaskStatus::Dead);
                if change.reason.is_some() != wants_reason {
                    world.violation(format!(
                        "{label}: {}: {} -> {} with reason {:?}",
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
                    if change.task.starts_with(TREE_PREFIX) && change.to == TaskStatus::Failed {
                        let rule = if reason.starts_with("restart intensity exceeded") {
                            Some("restart intensity")
                        } else if reason.starts_with("too many dead tasks") {
                            Some("dead tasks threshold")
                        } else {
                            None
                        };
                        if let Some(rule) = rule {
                            *tally.escalations.entry(rule).or_default() += 1;
                        }
                    }
                }
                let restarted = change.to == TaskStatus::Starting
                    && change.from != TaskStatus::Created
                    && change.from != TaskStatus::Failed;
                let permanent = change.task.starts_with(TREE_PREFIX);
                if restarted && !(permanent && change.from == TaskStatus::Completed) {
                    *tally
                        .manual_starts
                        .entry(Arc::clone(&change.task))
                        .or_default() += 1;
                    // Nothing asks the tasks of a quiet child to restart: only a group may,
                    // and never a dead task (invariant 4).
                    if scope.quiet && (!scope.group || change.from == TaskStatus::Dead) {
                        world.violation(format!(
                            "{label}: {} started from {} with no restart asked",
                            change.task, change.from
                        ));
                    }
                }
                if scope.group {
                    if change.to == TaskStatus::Starting && change.from != TaskStatus::Created {
                        if !in_burst {
                            if scope.quiet {
                                tally.group_starts_quiet += 1;
                            } else {
                                tally.group_starts_busy += 1;
                            }
                        }
                        in_burst = true;
                        tally.group_members_started += 1;
                    } else {
                        in_burst = false;
                    }
                }
                last.insert(change.task, change.to);
            }
            Err(RecvError::Lagged(missed)) => {
                world.violation(format!(
                    "{label}: the checker lagged and missed {missed} changes"
                ));
            }
            Err(RecvError::Closed) => break,
        }
    }
    for status in last.values() {
        *tally.final_statuses.entry(status.to_string()).or_default() += 1;
    }
    tally.streams = 1;
    tally
}

// ----- the soaks -----

/// How big a soak is.
struct Plan {
    tasks: u64,
    /// Builder tasks of each child supervisor.
    members: usize,
    /// How much the tree's commands weigh (see [`Command::draw`]).
    tree_weight: u64,
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

fn print_figures(title: &str, world: &World, commanders: &Commanders, changes: &ChangeTally) {
    eprintln!("== {title} (seed {}) ==", world.seed);
    eprintln!(
        "tasks registered in the root: {}; runs (of every level): {}",
        commanders.names.len(),
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
    eprintln!("status changes checked (root): {}", changes.changes);
    for ((from, to), count) in &changes.edges {
        eprintln!("edge {from} -> {to}: {count}");
    }
    eprintln!("reasons for Failed or Dead: {:?}", changes.reasons);
    eprintln!("final statuses: {:?}", changes.final_statuses);
    let tree = lock(&world.child_changes);
    let builds: Vec<String> = commanders
        .children
        .iter()
        .map(|child| format!("{} {}", child.name, child.builds.load(Ordering::Relaxed)))
        .collect();
    eprintln!("tree: child builds: {}", builds.join(", "));
    eprintln!(
        "tree: escalations (child runs failed because the child gave up): {:?}",
        changes.escalations
    );
    eprintln!(
        "tree: group restarts seen: {} in quiet children, {} bursts in busy ones; {} runs \
         started by them",
        tree.group_starts_quiet, tree.group_starts_busy, tree.group_members_started
    );
    eprintln!(
        "tree: child status changes checked: {} on {} streams ({} first changes seen late)",
        tree.changes, tree.streams, tree.late_first_changes
    );
    for ((from, to), count) in &tree.edges {
        eprintln!("tree: edge {from} -> {to}: {count}");
    }
    eprintln!("tree: reasons for Failed or Dead: {:?}", tree.reasons);
    eprintln!(
        "tree: snapshots checked: {}, children shown in them: {}",
        world.snapshots.load(Ordering::Relaxed),
        world.children_shown.load(Ordering::Relaxed)
    );
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
        members: 5,
        tree_weight: 1,
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
    *lock(&world.root) = Some(handle.clone());
    // Subscribed before the first task exists, so every change of every task is seen.
    let checker = tokio::spawn(tokio::task::unconstrained(check_changes(
        handle.status_changes(),
        Arc::clone(&world),
        Scope::root(),
    )));
    let commanders = Commanders::new(&world, plan.members, plan.tree_weight);
    for index in 0..plan.tasks {
        commanders
            .register(&handle, &format!("task-{index:04}"), None)
            .expect("a fresh name on a running supervisor");
    }
    commanders.register_children(&handle);

    let end = Instant::now() + plan.span;
    let mut crew = Vec::new();
    for commander in 0..plan.commanders {
        let handle = handle.clone();
        let commanders = Arc::clone(&commanders);
        crew.push(tokio::spawn(async move {
            let mut rng = Rng::derive(seed, &[0xC0, commander as u64]);
            let mut serial = 0;
            while Instant::now() < end {
                // Each command draws from its own generator: one that takes another path
                // (a child that is not up) draws differently without shifting the others.
                let mut command_rng = Rng::derive(seed, &[0xC2, commander as u64, serial]);
                commanders.command(&handle, &mut command_rng, commander, serial);
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
    // grace period bounds the shutdown. A child supervisor's run gets the same grace period
    // from the root; when it is over, the child drops every run of its own at once and the
    // run ends then (invariant 10), whatever the child's own grace periods: the bound is the
    // same for the whole tree.
    let waited = tokio::time::timeout(grace + Duration::from_millis(10), handle.wait()).await;
    assert_eq!(
        waited,
        Ok(Ok(())),
        "wait() within the grace period of a shutdown"
    );
    let changes = checker.await.expect("the checker never panics");

    finish(&world, &commanders, &handle, &changes, alive_before).await;
    print_figures("paused-clock soak", &world, &commanders, &changes);
}

/// The checks once a soak is over.
async fn finish(
    world: &World,
    commanders: &Commanders,
    handle: &SupervisorHandle,
    changes: &ChangeTally,
    alive_before: usize,
) {
    drop(lock(&world.root).take());
    // Every child has stopped before the root's wait() returned, so every child's stream has
    // closed: its checker ends.
    loop {
        let checkers = std::mem::take(&mut *lock(&world.child_checkers));
        if checkers.is_empty() {
            break;
        }
        for checker in checkers {
            checker.await.expect("a child's checker never panics");
        }
    }
    world.assert_no_violation();
    // Invariant 4, over the whole history: a killed (or completed) task starts again only when
    // asked to, never because a back-off that was pending fired anyway.
    let restarts: HashMap<Arc<str>, u64> = lock(&commanders.restarts).clone();
    for (task, starts) in &changes.manual_starts {
        let asked = restarts.get(task).copied().unwrap_or(0);
        assert!(
            *starts <= asked,
            "{task} started {starts} times from healthy, completed or dead, restarted {asked} times"
        );
    }
    let probes: Vec<(u64, Arc<Probe>)> = lock(&commanders.probes)
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
    for child in &commanders.children {
        assert_eq!(
            child.live.load(Ordering::SeqCst),
            0,
            "{}: a run of the child outlived the root's wait()",
            child.name
        );
        assert_eq!(
            child.runs_live.load(Ordering::SeqCst),
            0,
            "{}: its run outlived the root's wait()",
            child.name
        );
    }
    // A child can go unbuilt for a whole multi-thread soak when kills and restarts keep
    // landing before its run's first poll; not all of them.
    assert!(commanders
        .children
        .iter()
        .any(|child| child.builds.load(Ordering::SeqCst) > 0));
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
        members: 5,
        // Its commands are over in a second or two: a quarter of them go to the tree.
        tree_weight: 8,
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
        *lock(&world.root) = Some(handle.clone());
        let checker = tokio::spawn(tokio::task::unconstrained(check_changes(
            handle.status_changes(),
            Arc::clone(&world),
            Scope::root(),
        )));
        (handle, checker)
    });
    let commanders = Commanders::new(&world, plan.members, plan.tree_weight);
    for index in 0..plan.tasks {
        commanders
            .register(&handle, &format!("task-{index:04}"), None)
            .expect("a fresh name on a running supervisor");
    }
    runtime.block_on(async { commanders.register_children(&handle) });
    std::thread::scope(|scope| {
        for commander in 0..plan.commanders {
            let handle = handle.clone();
            let commanders = Arc::clone(&commanders);
            scope.spawn(move || {
                let mut rng = Rng::derive(seed, &[0xC1, commander as u64]);
                for serial in 0..plan.commands_per_commander {
                    let mut command_rng = Rng::derive(seed, &[0xC3, commander as u64, serial]);
                    commanders.command(&handle, &mut command_rng, commander, serial);
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
        print_figures("multi-thread soak", &world, &commanders, &changes);
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
