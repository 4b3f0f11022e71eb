//! Model-based property test: random sequences of commands and run outcomes, applied both to a
//! supervisor (on the paused clock) and to a small reference model of the documented semantics
//! (`src/lib.rs`, `src/status.rs`, the README, the builder's and the handle's docs: among them,
//! a killed task keeps the supervisor up, and a hung run's silence is not healthy time). After
//! every step the two must agree on every task's status, on the status changes published since
//! the last step, on which tasks have a live run, on every command's answer, and on whether the
//! supervisor still takes commands. `proptest` shrinks a failing sequence to a minimal one.
//!
//! The tasks are puppets: each run waits for orders from the test (beat, complete, fail,
//! panic), so the test decides how every run ends. Time moves one millisecond at a time, and
//! the supervisor settles between steps, so the model knows the exact instant of every
//! deadline.
//!
//! Cases: 512 by default; set `PROPTEST_CASES` for more. The seed is fixed for a reproducible
//! suite; set `MODEL_SEED` to explore others.

mod reliability_common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use reliability_common::{poll_once, quiet_injected_panics, seed_from_env, settle, INJECTED};
use task_supervisor::{
    bail, StatusChange, SupervisedTask, SupervisorBuilder, SupervisorHandle, SupervisorHandleError,
    TaskContext, TaskResult, TaskStatus,
};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::Notify;
use tokio::time::Instant;

// ----- the settings the supervisor runs with, in milliseconds -----

const TIMEOUT: u64 = 10;
const GRACE: u64 = 7;
const BASE_DELAY: u64 = 4;
const MAX_EXPONENT: u32 = 2;
const MAX_ATTEMPTS: u32 = 2;
const STABLE_AFTER: u64 = 15;

/// The names the test uses; the last one is never added.
const NAMES: [&str; 5] = ["a", "b", "c", "d", "ghost"];
const TASKS: usize = 4;

fn builder() -> SupervisorBuilder {
    SupervisorBuilder::new()
        .with_timeout_threshold(Duration::from_millis(TIMEOUT))
        .with_heartbeat_interval(Duration::from_millis(1))
        .with_health_check_initial_delay(Duration::ZERO)
        .with_grace_period(Duration::from_millis(GRACE))
        .with_base_restart_delay(Duration::from_millis(BASE_DELAY))
        .with_max_backoff_exponent(MAX_EXPONENT)
        .with_max_restart_attempts(MAX_ATTEMPTS)
        .with_task_being_stable_after(Duration::from_millis(STABLE_AFTER))
        .with_restart_jitter(0.0)
}

// ----- the steps -----

/// How a run treats its cancellation token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cooperation {
    /// Never asks for it: dropped at once when stopped.
    Never,
    /// Returns `Ok(())` as soon as it is cancelled.
    Returns,
    /// Asks for it and ignores it: dropped when the grace period ends.
    Ignores,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Complete,
    Fail,
    Panic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Add {
        task: usize,
        declares_heartbeats: bool,
        cooperation: Cooperation,
    },
    Restart(usize),
    Kill(usize),
    /// The live run of the task sends a heartbeat.
    Beat(usize),
    /// The live run of the task ends so.
    End(usize, Ending),
    /// Paused time moves on by this many milliseconds, one at a time.
    Advance(u64),
    Shutdown,
}

fn add() -> impl Strategy<Value = Step> {
    let cooperation = prop_oneof![
        Just(Cooperation::Never),
        Just(Cooperation::Returns),
        Just(Cooperation::Ignores),
    ];
    (0..TASKS, any::<bool>(), cooperation).prop_map(|(task, declares_heartbeats, cooperation)| {
        Step::Add {
            task,
            declares_heartbeats,
            cooperation,
        }
    })
}

fn step() -> impl Strategy<Value = Step> {
    let ending = prop_oneof![
        2 => Just(Ending::Complete),
        3 => Just(Ending::Fail),
        1 => Just(Ending::Panic),
    ];
    prop_oneof![
        8 => add(),
        8 => (0..NAMES.len()).prop_map(Step::Restart),
        7 => (0..NAMES.len()).prop_map(Step::Kill),
        12 => (0..TASKS).prop_map(Step::Beat),
        8 => (0..TASKS, ending).prop_map(|(task, ending)| Step::End(task, ending)),
        16 => (1..=20u64).prop_map(Step::Advance),
        1 => Just(Step::Shutdown),
    ]
}

// ----- the puppets -----

#[derive(Debug, Clone, Copy)]
enum Order {
    Beat,
    End(Ending),
}

/// How the test reaches the runs of one task.
#[derive(Default)]
struct Strings {
    orders: Mutex<VecDeque<Order>>,
    wake: Notify,
    /// Runs being polled now.
    live: AtomicU32,
    /// Times a run started while another was live.
    overlaps: AtomicU32,
}

impl Strings {
    fn give(&self, order: Order) {
        self.orders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(order);
        self.wake.notify_one();
    }

    fn take(&self) -> Option<Order> {
        self.orders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    async fn next(&self) -> Order {
        loop {
            if let Some(order) = self.take() {
                return order;
            }
            self.wake.notified().await;
        }
    }
}

#[derive(Clone)]
struct Puppet {
    strings: Arc<Strings>,
    declares_heartbeats: bool,
    cooperation: Cooperation,
}

struct Live(Arc<Strings>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl SupervisedTask for Puppet {
    async fn run(&mut self) -> TaskResult {
        if self.strings.live.fetch_add(1, Ordering::SeqCst) != 0 {
            self.strings.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        let _live = Live(Arc::clone(&self.strings));
        let context = TaskContext::current().expect("inside a run");
        let token = match self.cooperation {
            Cooperation::Never => None,
            Cooperation::Returns | Cooperation::Ignores => Some(context.cancellation_token()),
        };
        loop {
            let order = match (&token, self.cooperation) {
                (Some(token), Cooperation::Returns) => tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    order = self.strings.next() => order,
                },
                _ => self.strings.next().await,
            };
            match order {
                Order::Beat => context.heartbeat(),
                Order::End(Ending::Complete) => return Ok(()),
                Order::End(Ending::Fail) => bail!("{INJECTED} failure"),
                Order::End(Ending::Panic) => panic!("{INJECTED} panic"),
            }
        }
    }

    fn sends_heartbeats(&self) -> bool {
        self.declares_heartbeats
    }
}

// ----- the reference model -----

/// What to do when a stopping run has ended (mirrors the documented reasons to stop a run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// The run ends by itself: its outcome decides.
    Decide,
    /// It was hung and the task is `Failed`: restart after the back-off.
    BackOff,
    /// `restart`: start a fresh run at once.
    Start,
    /// `kill_task`, shutdown, or hung with no attempt left.
    Nothing,
}

#[derive(Debug, Clone)]
struct ModelRun {
    started: u64,
    last_beat: Option<u64>,
    /// Watched for silence: from the start if the task declared heartbeats, else from the
    /// run's first beat.
    watched: bool,
    stopping: bool,
    then: Then,
    /// When a run that ignores its token is dropped.
    dropped_at: Option<u64>,
}

#[derive(Debug, Clone)]
struct ModelTask {
    declares_heartbeats: bool,
    cooperation: Cooperation,
    status: TaskStatus,
    attempts: u32,
    healthy_since: Option<u64>,
    run: Option<ModelRun>,
    restart_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Running,
    ShuttingDown,
    Stopped,
}

#[derive(Debug)]
struct Model {
    now: u64,
    life: Life,
    tasks: [Option<ModelTask>; TASKS],
    /// Status changes made since the last check, by task.
    changes: BTreeMap<usize, Vec<(TaskStatus, TaskStatus)>>,
}

impl Model {
    fn new() -> Self {
        Self {
            now: 0,
            life: Life::Running,
            tasks: Default::default(),
            changes: BTreeMap::new(),
        }
    }

    fn task(&mut self, index: usize) -> &mut ModelTask {
        self.tasks[index].as_mut().expect("a registered task")
    }

    fn set(&mut self, index: usize, to: TaskStatus) {
        let task = self.task(index);
        let from = task.status;
        if from == to {
            return;
        }
        task.status = to;
        self.changes.entry(index).or_default().push((from, to));
    }

    /// The answer to a command that needs the supervisor running and the task registered.
    fn precheck(&self, index: usize) -> Result<(), SupervisorHandleError> {
        if self.life != Life::Running {
            Err(SupervisorHandleError::SupervisorStopped)
        } else if index >= TASKS || self.tasks[index].is_none() {
            Err(SupervisorHandleError::TaskNotFound {
                name: NAMES[index].to_owned(),
            })
        } else {
            Ok(())
        }
    }

    fn add(
        &mut self,
        index: usize,
        declares_heartbeats: bool,
        cooperation: Cooperation,
    ) -> Result<(), SupervisorHandleError> {
        if self.life != Life::Running {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        if self.tasks[index].is_some() {
            return Err(SupervisorHandleError::TaskAlreadyExists {
                name: NAMES[index].to_owned(),
            });
        }
        self.tasks[index] = Some(ModelTask {
            declares_heartbeats,
            cooperation,
            status: TaskStatus::Created,
            attempts: 0,
            healthy_since: None,
            run: None,
            restart_at: None,
        });
        self.start(index);
        Ok(())
    }

    fn restart(&mut self, index: usize) -> Result<(), SupervisorHandleError> {
        self.precheck(index)?;
        let task = self.task(index);
        if let Some(run) = task.run.as_mut() {
            run.then = Then::Start;
            self.stop(index);
        } else {
            task.restart_at = None;
            task.attempts = 0;
            self.start(index);
        }
        Ok(())
    }

    fn kill(&mut self, index: usize) -> Result<(), SupervisorHandleError> {
        self.precheck(index)?;
        self.set(index, TaskStatus::Dead);
        let task = self.task(index);
        task.restart_at = None;
        if let Some(run) = task.run.as_mut() {
            run.then = Then::Nothing;
            self.stop(index);
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), SupervisorHandleError> {
        if self.life != Life::Running {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        self.life = Life::ShuttingDown;
        for index in 0..TASKS {
            let Some(task) = self.tasks[index].as_mut() else {
                continue;
            };
            task.restart_at = None;
            if let Some(run) = task.run.as_mut() {
                run.then = Then::Nothing;
                self.stop(index);
            }
        }
        Ok(())
    }

    fn beat(&mut self, index: usize) {
        let now = self.now;
        let task = self.task(index);
        let declares = task.declares_heartbeats;
        let status = task.status;
        let Some(run) = task.run.as_mut() else {
            return;
        };
        run.last_beat = Some(now);
        if run.stopping {
            return;
        }
        run.watched = true;
        if declares && status == TaskStatus::Starting {
            task.healthy_since = Some(now);
            self.set(index, TaskStatus::Healthy);
        }
    }

    fn end(&mut self, index: usize, ending: Ending) {
        self.exit(index, Some(ending));
    }

    fn start(&mut self, index: usize) {
        if self.life != Life::Running {
            return;
        }
        let now = self.now;
        let task = self.task(index);
        let declares = task.declares_heartbeats;
        task.run = Some(ModelRun {
            started: now,
            last_beat: None,
            watched: declares,
            stopping: false,
            then: Then::Decide,
            dropped_at: None,
        });
        task.restart_at = None;
        task.healthy_since = None;
        self.set(index, TaskStatus::Starting);
        if !declares {
            // Proves alive on its first poll.
            self.task(index).healthy_since = Some(now);
            self.set(index, TaskStatus::Healthy);
        }
    }

    fn stop(&mut self, index: usize) {
        let now = self.now;
        let task = self.task(index);
        let cooperation = task.cooperation;
        let run = task.run.as_mut().expect("a live run");
        if run.stopping {
            return;
        }
        run.stopping = true;
        match cooperation {
            Cooperation::Never => self.exit(index, None),
            Cooperation::Returns => self.exit(index, Some(Ending::Complete)),
            Cooperation::Ignores => run.dropped_at = Some(now + GRACE),
        }
    }

    /// The run of `index` has ended, with `ending` if it returned or panicked (`None` if it was
    /// dropped).
    fn exit(&mut self, index: usize, ending: Option<Ending>) {
        let task = self.task(index);
        let run = task.run.take().expect("a live run");
        task.restart_at = None;
        match run.then {
            Then::Start => {
                task.attempts = 0;
                self.start(index);
            }
            Then::BackOff => self.schedule_restart(index),
            Then::Nothing => {}
            Then::Decide => match ending {
                Some(Ending::Complete) => self.set(index, TaskStatus::Completed),
                Some(Ending::Fail | Ending::Panic) | None => {
                    let now = self.now;
                    if self.fail(index, now) {
                        self.schedule_restart(index);
                    }
                }
            },
        }
    }

    /// Counts a failure of a run that was healthy until `healthy_until`: `Failed` with one more
    /// attempt used, or `Dead` when none is left. A run healthy for `STABLE_AFTER` first earns
    /// the task its attempts back.
    fn fail(&mut self, index: usize, healthy_until: u64) -> bool {
        let task = self.task(index);
        if let Some(since) = task.healthy_since.take() {
            if healthy_until.saturating_sub(since) >= STABLE_AFTER {
                task.attempts = 0;
            }
        }
        if task.attempts < MAX_ATTEMPTS {
            task.attempts += 1;
            self.set(index, TaskStatus::Failed);
            true
        } else {
            self.set(index, TaskStatus::Dead);
            false
        }
    }

    fn schedule_restart(&mut self, index: usize) {
        let now = self.now;
        let task = self.task(index);
        let exponent = task.attempts.saturating_sub(1).min(MAX_EXPONENT);
        task.restart_at = Some(now + (BASE_DELAY << exponent));
    }

    /// Moves time on by one millisecond and fires what falls due.
    fn tick(&mut self) {
        self.now += 1;
        let now = self.now;
        for index in 0..TASKS {
            let Some(task) = self.tasks[index].as_ref() else {
                continue;
            };
            match task.run.as_ref() {
                Some(run) if run.dropped_at.is_some_and(|at| at <= now) => {
                    // The grace period is over: the run is dropped.
                    self.exit(index, None);
                }
                Some(run)
                    if !run.stopping
                        && run.watched
                        && run.last_beat.unwrap_or(run.started) + TIMEOUT <= now =>
                {
                    // Hung: a failure (the silence was not healthy time), and the run is
                    // stopped.
                    let silent_since = run.last_beat.unwrap_or(run.started);
                    let restart = self.fail(index, silent_since);
                    let run = self.task(index).run.as_mut().expect("still live");
                    run.then = if restart {
                        Then::BackOff
                    } else {
                        Then::Nothing
                    };
                    self.stop(index);
                }
                Some(_) => {}
                None if task.restart_at.is_some_and(|at| at <= now) => self.start(index),
                None => {}
            }
        }
    }

    /// The supervisor stops once shut down and every run has ended; never because its tasks
    /// have finished (as the released crate, and OTP, behave).
    fn settle(&mut self) {
        let no_run = self.tasks.iter().flatten().all(|task| task.run.is_none());
        if self.life == Life::ShuttingDown && no_run {
            self.life = Life::Stopped;
        }
    }

    fn has_run(&self, index: usize) -> bool {
        self.tasks[index]
            .as_ref()
            .is_some_and(|task| task.run.is_some())
    }
}

// ----- running a sequence -----

/// What the property checked, over all its cases, for `RELIABILITY.md`.
struct Tally {
    sequences: AtomicU64,
    steps: [AtomicU64; 7],
    /// Steps that order a run about (beat, end) when the task has no run: nothing to do.
    idle_steps: AtomicU64,
    milliseconds: AtomicU64,
    comparisons: AtomicU64,
    changes: AtomicU64,
    edges: Mutex<BTreeMap<(String, String), u64>>,
}

static TALLY: Tally = Tally {
    sequences: AtomicU64::new(0),
    steps: [
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    ],
    idle_steps: AtomicU64::new(0),
    milliseconds: AtomicU64::new(0),
    comparisons: AtomicU64::new(0),
    changes: AtomicU64::new(0),
    edges: Mutex::new(BTreeMap::new()),
};

fn count_step(step: &Step) {
    let kind = match step {
        Step::Add { .. } => 0,
        Step::Restart(_) => 1,
        Step::Kill(_) => 2,
        Step::Beat(_) => 3,
        Step::End(..) => 4,
        Step::Advance(_) => 5,
        Step::Shutdown => 6,
    };
    TALLY.steps[kind].fetch_add(1, Ordering::Relaxed);
}

/// Runs `steps` against a fresh supervisor and the model; `counted` adds them to [`TALLY`].
fn check(steps: &[Step], counted: bool) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(run_sequence(steps, counted))
}

async fn run_sequence(steps: &[Step], counted: bool) -> Result<(), TestCaseError> {
    let strings: Vec<Arc<Strings>> = (0..TASKS).map(|_| Arc::default()).collect();
    let handle = builder().try_build().expect("valid settings").run();
    let mut changes = handle.status_changes();
    let mut model = Model::new();

    let tally = |counter: &AtomicU64| {
        if counted {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    };
    tally(&TALLY.sequences);
    for (number, step) in steps.iter().enumerate() {
        let context = format!("step {number}: {step:?}");
        if counted {
            count_step(step);
        }
        match *step {
            Step::Add {
                task,
                declares_heartbeats,
                cooperation,
            } => {
                let puppet = Puppet {
                    strings: Arc::clone(&strings[task]),
                    declares_heartbeats,
                    cooperation,
                };
                let answer = handle.add_task(NAMES[task], puppet);
                let expected = model.add(task, declares_heartbeats, cooperation);
                prop_assert_eq!(answer, expected, "{}", context);
            }
            Step::Restart(task) => {
                let answer = handle.restart(NAMES[task]);
                prop_assert_eq!(answer, model.restart(task), "{}", context);
            }
            Step::Kill(task) => {
                let answer = handle.kill_task(NAMES[task]);
                prop_assert_eq!(answer, model.kill(task), "{}", context);
            }
            Step::Beat(task) => {
                if !model.has_run(task) {
                    tally(&TALLY.idle_steps);
                    continue;
                }
                strings[task].give(Order::Beat);
                model.beat(task);
            }
            Step::End(task, ending) => {
                if !model.has_run(task) {
                    tally(&TALLY.idle_steps);
                    continue;
                }
                strings[task].give(Order::End(ending));
                model.end(task, ending);
            }
            Step::Advance(millis) => {
                for _ in 0..millis {
                    tally(&TALLY.milliseconds);
                    tokio::time::advance(Duration::from_millis(1)).await;
                    model.tick();
                    settle().await;
                    model.settle();
                    agree(
                        &handle,
                        &mut changes,
                        &mut model,
                        &strings,
                        &context,
                        counted,
                    )?;
                }
                continue;
            }
            Step::Shutdown => {
                let answer = handle.shutdown();
                prop_assert_eq!(answer, model.shutdown(), "{}", context);
            }
        }
        settle().await;
        model.settle();
        agree(
            &handle,
            &mut changes,
            &mut model,
            &strings,
            &context,
            counted,
        )?;
    }

    // The end: shut down if still running, let the grace periods pass, and wait.
    if model.life == Life::Running {
        prop_assert_eq!(handle.shutdown(), model.shutdown());
    }
    for _ in 0..=GRACE {
        settle().await;
        model.settle();
        agree(
            &handle,
            &mut changes,
            &mut model,
            &strings,
            "the end",
            counted,
        )?;
        if model.life == Life::Stopped {
            break;
        }
        tokio::time::advance(Duration::from_millis(1)).await;
        model.tick();
    }
    prop_assert_eq!(model.life, Life::Stopped);
    prop_assert_eq!(poll_once(handle.wait()), Some(Ok(())));
    for strings in &strings {
        prop_assert_eq!(strings.live.load(Ordering::SeqCst), 0);
    }
    Ok(())
}

/// Checks that the supervisor and the model agree, after a step.
fn agree(
    handle: &SupervisorHandle,
    changes: &mut tokio::sync::broadcast::Receiver<StatusChange>,
    model: &mut Model,
    strings: &[Arc<Strings>],
    context: &str,
    counted: bool,
) -> Result<(), TestCaseError> {
    let at = format!("{context} (at {} ms)", model.now);
    prop_assert_eq!(
        handle.is_running(),
        model.life == Life::Running,
        "running? {}",
        at
    );

    // Every status, one by one and all at once.
    let stopped = model.life == Life::Stopped;
    let mut expected_all = HashMap::new();
    for (index, name) in NAMES.iter().enumerate() {
        let expected = model
            .tasks
            .get(index)
            .and_then(|task| task.as_ref().map(|task| task.status));
        if let Some(status) = expected {
            expected_all.insert(name.to_string(), status);
        }
        let read = poll_once(handle.get_task_status(name));
        if stopped {
            prop_assert_eq!(
                read,
                Some(Err(SupervisorHandleError::SupervisorStopped)),
                "{}",
                at
            );
        } else {
            prop_assert_eq!(read, Some(Ok(expected)), "status of {}: {}", name, at);
        }
    }
    let all = poll_once(handle.get_all_task_statuses());
    if stopped {
        prop_assert_eq!(
            all,
            Some(Err(SupervisorHandleError::SupervisorStopped)),
            "{}",
            at
        );
    } else {
        prop_assert_eq!(all, Some(Ok(expected_all)), "{}", at);
    }

    // The changes published since the last check, task by task.
    let mut seen: BTreeMap<usize, Vec<(TaskStatus, TaskStatus)>> = BTreeMap::new();
    loop {
        match changes.try_recv() {
            Ok(change) => {
                let index = NAMES
                    .iter()
                    .position(|name| *name == &*change.task)
                    .expect("a known name");
                prop_assert!(change.from.can_change_to(change.to), "{:?}: {}", change, at);
                seen.entry(index)
                    .or_default()
                    .push((change.from, change.to));
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            Err(TryRecvError::Lagged(missed)) => {
                prop_assert!(false, "missed {} changes: {}", missed, at);
            }
        }
    }
    let expected_changes = std::mem::take(&mut model.changes);
    prop_assert_eq!(&seen, &expected_changes, "status changes: {}", at);
    if counted {
        TALLY.comparisons.fetch_add(1, Ordering::Relaxed);
        let mut edges = TALLY.edges.lock().unwrap_or_else(PoisonError::into_inner);
        for (from, to) in seen.values().flatten() {
            TALLY.changes.fetch_add(1, Ordering::Relaxed);
            *edges.entry((from.to_string(), to.to_string())).or_default() += 1;
        }
    }

    // Live runs, as counted by the runs themselves.
    for (index, strings) in strings.iter().enumerate() {
        let live = strings.live.load(Ordering::SeqCst);
        prop_assert_eq!(
            live,
            u32::from(model.has_run(index)),
            "live runs of {}: {}",
            NAMES[index],
            at
        );
        prop_assert_eq!(strings.overlaps.load(Ordering::SeqCst), 0, "{}", at);
    }
    Ok(())
}

// ----- the properties -----

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed_from_env("MODEL_SEED", 0x00D0_0DE1)),
        max_shrink_iters: 4_096,
        ..Config::default()
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(512)
}

/// The supervisor agrees with the model after every step of every sequence.
#[test]
fn the_supervisor_agrees_with_the_model() {
    quiet_injected_panics();
    let mut runner = TestRunner::new(config(cases()));
    // A few tasks first, so that most sequences have something to supervise.
    let sequence = (
        prop::collection::vec(add(), 1..=TASKS),
        prop::collection::vec(step(), 1..48),
    )
        .prop_map(|(mut adds, steps)| {
            adds.extend(steps);
            adds
        });
    let result = runner.run(&sequence, |steps| check(&steps, true));
    if let Err(failure) = result {
        panic!("the supervisor and the model disagree: {failure}");
    }
    let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let names = [
        "add", "restart", "kill", "beat", "end", "advance", "shutdown",
    ];
    eprintln!(
        "model: {} sequences; steps: {}; {} beat/end steps with no run to order; {} ms of \
         paused time; {} comparisons of every status, every change, every live-run count; \
         {} status changes matched",
        count(&TALLY.sequences),
        names
            .iter()
            .zip(&TALLY.steps)
            .map(|(name, counter)| format!("{name} {}", count(counter)))
            .collect::<Vec<_>>()
            .join(", "),
        count(&TALLY.idle_steps),
        count(&TALLY.milliseconds),
        count(&TALLY.comparisons),
        count(&TALLY.changes),
    );
    let edges = TALLY.edges.lock().unwrap_or_else(PoisonError::into_inner);
    for ((from, to), count) in edges.iter() {
        eprintln!("model edge {from} -> {to}: {count}");
    }
}

/// The model itself, on a hand-written sequence: a task fails twice and is restarted after 4 ms
/// then 8 ms, a third failure kills it (two attempts), and a restart brings it back.
#[test]
fn the_model_follows_a_known_sequence() {
    quiet_injected_panics();
    let steps = [
        Step::Add {
            task: 0,
            declares_heartbeats: false,
            cooperation: Cooperation::Never,
        },
        Step::End(0, Ending::Fail),
        Step::Advance(4),
        Step::End(0, Ending::Panic),
        Step::Advance(8),
        Step::End(0, Ending::Fail),
        Step::Add {
            task: 1,
            declares_heartbeats: true,
            cooperation: Cooperation::Ignores,
        },
        Step::Beat(1),
        Step::Restart(1),
        Step::Advance(GRACE),
        Step::Restart(0),
        Step::Shutdown,
    ];
    let mut model = Model::new();
    model.add(0, false, Cooperation::Never).expect("fresh");
    assert_eq!(model.task(0).status, TaskStatus::Healthy);
    model.end(0, Ending::Fail);
    assert_eq!(model.task(0).restart_at, Some(BASE_DELAY));
    check(&steps, false).expect("the supervisor follows the model");
}

// ----- regressions found by the model and the soak -----

/// Puppet-free helpers for the regressions.
#[derive(Clone)]
struct IgnoresCancellation(Arc<AtomicU32>);

#[async_trait]
impl SupervisedTask for IgnoresCancellation {
    async fn run(&mut self) -> TaskResult {
        self.0.fetch_add(1, Ordering::SeqCst);
        let _token = TaskContext::current()
            .expect("in a run")
            .cancellation_token();
        std::future::pending().await
    }
}

/// `kill_task` on a run already asked to stop (by a restart, an earlier kill or a hang) and
/// waiting out its grace period must leave the grace timer alone: the run is dropped when the
/// grace ends, a later restart takes effect, and shutdown completes.
#[tokio::test(start_paused = true)]
async fn killing_a_run_during_its_grace_period_still_drops_it() {
    let runs = Arc::new(AtomicU32::new(0));
    let handle = builder()
        .with_task("stubborn", IgnoresCancellation(Arc::clone(&runs)))
        .with_task("anchor", IgnoresCancellation(Arc::new(AtomicU32::new(0))))
        .try_build()
        .expect("valid")
        .run();
    settle().await;
    handle.restart("stubborn").expect("running"); // Stopping: grace until +GRACE.
    settle().await;
    handle.kill_task("stubborn").expect("running"); // Must not cancel the grace timer.
    tokio::time::sleep(Duration::from_millis(GRACE + 1)).await;
    handle.restart("stubborn").expect("running");
    settle().await;
    assert_eq!(
        handle.get_task_status("stubborn").await,
        Ok(Some(TaskStatus::Healthy)),
        "the killed run was dropped after its grace period and the restart took effect"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    handle.shutdown().expect("running");
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(60), handle.wait()).await,
        Ok(Ok(())),
        "shutdown completes"
    );
}

/// A run that declared heartbeats, beat once at its start, then fell silent, is documented to
/// be hung once it has not beaten for `timeout_threshold` ("then at least once per
/// timeout_threshold"), and hang detection is meant to fire within a millisecond of the
/// timeout. The loop only rearms the watch set at the start (start + initial delay + timeout),
/// so the hang is found an initial delay late.
#[tokio::test(start_paused = true)]
async fn a_declared_run_that_falls_silent_is_caught_one_timeout_after_its_last_beat() {
    #[derive(Clone)]
    struct BeatsOnceThenHangs;
    #[async_trait]
    impl SupervisedTask for BeatsOnceThenHangs {
        async fn run(&mut self) -> TaskResult {
            TaskContext::current().expect("in a run").heartbeat();
            std::future::pending().await
        }
        fn sends_heartbeats(&self) -> bool {
            true
        }
    }
    let handle = SupervisorBuilder::new()
        .with_timeout_threshold(Duration::from_secs(2))
        .with_health_check_initial_delay(Duration::from_secs(3))
        .with_base_restart_delay(Duration::from_secs(60))
        .with_task("job", BeatsOnceThenHangs)
        .try_build()
        .expect("valid")
        .run();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(2_001)).await;
    assert_eq!(
        handle.get_task_status("job").await,
        Ok(Some(TaskStatus::Failed)),
        "silent since {:?} ago, for longer than the 2 s timeout",
        started.elapsed()
    );
    handle.shutdown().expect("running");
    assert_eq!(handle.wait().await, Ok(()));
}
