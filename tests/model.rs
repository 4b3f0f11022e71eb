//! Model-based property test: random sequences of commands and run outcomes, applied both to a
//! supervisor (on the paused clock) and to a small reference model of the documented semantics
//! (`src/lib.rs`, `src/status.rs`, the README, the builder's and the handle's docs: among them,
//! a killed task keeps the supervisor up, and a hung run's silence is not healthy time; and the
//! supervision rules: `RestartPolicy`, `TaskSpec::with_restart_limit`, the builder's
//! `with_restart_intensity` and `with_strategy`, the rules of a group restart on `Strategy`).
//! After every step the two must agree on every task's status, on the status changes published
//! since the last step, on which tasks have a live run, on every command's answer, and on
//! whether the supervisor still takes commands; at the end, on what `wait()` returns.
//! `proptest` shrinks a failing sequence to a minimal one.
//!
//! The tasks are puppets: each run waits for orders from the test (beat, complete, fail,
//! panic), so the test decides how every run ends. Time moves one millisecond at a time, and
//! the supervisor settles between steps, so the model knows the exact instant of every
//! deadline. Each sequence runs under settings of its own: a strategy and, or not, a restart
//! intensity; each task added has a restart policy and, or not, a restart limit.
//!
//! Within one instant the model follows the order the docs give: the deadlines due (hangs,
//! back-offs, a group's back-off) are decided first, then what the runs report; a run started
//! in an instant is first polled after the decisions that started it, so a run stopped by a
//! decision of the same instant never proved alive, and is dropped at once. The docs do not
//! order deadlines due at the same instant, so when several are, the model tries each order and
//! keeps those the supervisor's observable state agrees with (usually one).
//!
//! Cases: 512 by default; set `PROPTEST_CASES` for more. The seed is fixed for a reproducible
//! suite; set `MODEL_SEED` to explore others.

mod reliability_common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use reliability_common::{poll_once, quiet_injected_panics, seed_from_env, settle, INJECTED};
use task_supervisor::{
    bail, RestartPolicy, StatusChange, Strategy as Restarts, SupervisedTask, SupervisorBuilder,
    SupervisorError, SupervisorHandle, SupervisorHandleError, TaskContext, TaskResult, TaskSpec,
    TaskStatus,
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

/// The longest a supervisor takes to end once it has begun: every task stopped one after the
/// other (a reverse stop), each with its whole grace period.
const LONGEST_END: u64 = TASKS as u64 * (GRACE + 1) + 1;

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

/// At most `.0` restarts within any `.1` milliseconds.
type Limit = (u32, u64);

/// The supervisor-wide settings of one sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    strategy: Restarts,
    /// The restart intensity, if any.
    intensity: Option<Limit>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            strategy: Restarts::OneForOne,
            intensity: None,
        }
    }
}

fn builder_for(settings: Settings) -> SupervisorBuilder {
    let builder = builder().with_strategy(settings.strategy);
    match settings.intensity {
        Some((max_restarts, within)) => {
            builder.with_restart_intensity(max_restarts, Duration::from_millis(within))
        }
        None => builder,
    }
}

fn settings() -> impl Strategy<Value = Settings> {
    let strategy = prop_oneof![
        Just(Restarts::OneForOne),
        Just(Restarts::OneForAll),
        Just(Restarts::RestForOne),
    ];
    let intensity = prop::option::weighted(0.4, (0..=3u32, 2..=24u64));
    (strategy, intensity).prop_map(|(strategy, intensity)| Settings {
        strategy,
        intensity,
    })
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
        /// A transient task without a limit is added with `add_task`, any other with
        /// `add_task_spec`.
        policy: RestartPolicy,
        limit: Option<Limit>,
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
    let policy = prop_oneof![
        2 => Just(RestartPolicy::Transient),
        2 => Just(RestartPolicy::Permanent),
        1 => Just(RestartPolicy::Temporary),
    ];
    let limit = prop::option::weighted(0.3, (0..=3u32, 2..=20u64));
    (0..TASKS, any::<bool>(), cooperation, policy, limit).prop_map(
        |(task, declares_heartbeats, cooperation, policy, limit)| Step::Add {
            task,
            declares_heartbeats,
            cooperation,
            policy,
            limit,
        },
    )
}

/// A transient task with no limit: what `add_task` registers.
fn plain(task: usize, declares_heartbeats: bool, cooperation: Cooperation) -> Step {
    Step::Add {
        task,
        declares_heartbeats,
        cooperation,
        policy: RestartPolicy::Transient,
        limit: None,
    }
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
    /// Stopped for a group restart: the group decides.
    Group,
    /// `kill_task`, the supervisor's end, or hung with no restart to make.
    Nothing,
}

#[derive(Debug, Clone, PartialEq)]
struct ModelRun {
    started: u64,
    last_beat: Option<u64>,
    /// Watched for silence: from the start if the task declared heartbeats, else from the
    /// run's first beat.
    watched: bool,
    /// Polled at least once: it proved alive (if it did not declare heartbeats) and asked for
    /// its token (if it cooperates). A run stopped before its first poll is dropped at once.
    polled: bool,
    stopping: bool,
    then: Then,
    /// When a run that ignores its token is dropped.
    dropped_at: Option<u64>,
    /// The run has ended (returned or been dropped), and the supervisor is yet to hear of it.
    ended: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct ModelTask {
    declares_heartbeats: bool,
    cooperation: Cooperation,
    policy: RestartPolicy,
    limit: Option<Limit>,
    /// The restarts counted against `limit`, by instant.
    restarts: Vec<u64>,
    status: TaskStatus,
    attempts: u32,
    healthy_since: Option<u64>,
    run: Option<ModelRun>,
    restart_at: Option<u64>,
    /// A member of the pending group restart.
    in_group: bool,
}

/// The pending group restart.
#[derive(Debug, Clone, Default, PartialEq)]
struct ModelGroup {
    members: Vec<usize>,
    /// Members whose run has not ended yet.
    stopping: usize,
    /// The end of the latest back-off of the tasks whose failure made the group.
    not_before: u64,
    /// Failed members still being stopped (they hung), with their back-off: it counts from
    /// the end of the run, as under one-for-one.
    backoffs_after_stop: Vec<(usize, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Running,
    ShuttingDown,
    Stopped,
}

/// Whether a restart a task's policy wants may be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Yes,
    /// One more than the task's own restart limit: the task is dead.
    OverTaskLimit,
    /// One more than the supervisor's restart intensity: the supervisor ends.
    OverIntensity,
}

/// What the model did, for the figures of `RELIABILITY.md`. Not part of the state: two models
/// that did the same by different paths are the same.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    /// Group restarts made by a failure (or a permanent task's completion), and failures that
    /// widened a pending one.
    groups: u64,
    widened: u64,
    /// Groups that started, and the members they started.
    group_starts: u64,
    members_started: u64,
    /// Runs stopped before their first poll.
    unpolled_stops: u64,
    /// Permanent tasks restarted after `Ok(())`.
    permanent_restarts: u64,
    /// Tasks dead of their own restart limit.
    limit_deaths: u64,
    /// Runs stopped one by one in reverse start order.
    reverse_stops: u64,
}

impl PartialEq for Stats {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Model {
    settings: Settings,
    now: u64,
    life: Life,
    /// What `wait()` returns once the supervisor has stopped.
    outcome: Result<(), SupervisorError>,
    tasks: [Option<ModelTask>; TASKS],
    /// The tasks in start order (the order they were added in).
    order: Vec<usize>,
    group: Option<ModelGroup>,
    /// The restarts counted against the restart intensity, by instant.
    restarts: Vec<u64>,
    /// In a reverse stop, how many tasks from the start of `order` are still to be stopped.
    reverse_left: Option<usize>,
    /// Runs that have ended, in the order the supervisor hears of it.
    ended: VecDeque<(usize, Option<Ending>)>,
    /// Status changes made since the last check, by task.
    changes: BTreeMap<usize, Vec<(TaskStatus, TaskStatus)>>,
    stats: Stats,
}

/// A deadline that may fall due at the same instant as another, whose order matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Hang(usize),
    BackOff(usize),
    Group,
}

/// Counts a restart at `now` against `limit` if it is within it (the restarts `at` earlier
/// with `now - at < within`), and says whether it was.
fn admit(restarts: &mut Vec<u64>, (max_restarts, within): Limit, now: u64) -> bool {
    restarts.retain(|&at| now - at < within);
    if restarts.len() >= max_restarts as usize {
        return false;
    }
    restarts.push(now);
    true
}

/// Every order of `items`.
fn orders<T: Copy>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for (at, &first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(at);
        for mut order in orders(&rest) {
            order.insert(0, first);
            all.push(order);
        }
    }
    all
}

impl Model {
    fn new() -> Self {
        Self::with(Settings::default())
    }

    fn with(settings: Settings) -> Self {
        Self {
            settings,
            now: 0,
            life: Life::Running,
            outcome: Ok(()),
            tasks: Default::default(),
            order: Vec::new(),
            group: None,
            restarts: Vec::new(),
            reverse_left: None,
            ended: VecDeque::new(),
            changes: BTreeMap::new(),
            stats: Stats::default(),
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

    // --- the steps: each is done, then the supervisor hears what runs report ---

    fn add(
        &mut self,
        index: usize,
        declares_heartbeats: bool,
        cooperation: Cooperation,
    ) -> Result<(), SupervisorHandleError> {
        self.add_with(
            index,
            declares_heartbeats,
            cooperation,
            RestartPolicy::Transient,
            None,
        )
    }

    fn add_with(
        &mut self,
        index: usize,
        declares_heartbeats: bool,
        cooperation: Cooperation,
        policy: RestartPolicy,
        limit: Option<Limit>,
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
            policy,
            limit,
            restarts: Vec::new(),
            status: TaskStatus::Created,
            attempts: 0,
            healthy_since: None,
            run: None,
            restart_at: None,
            in_group: false,
        });
        self.order.push(index);
        self.start(index);
        self.drain();
        Ok(())
    }

    fn restart(&mut self, index: usize) -> Result<(), SupervisorHandleError> {
        self.precheck(index)?;
        let waited_for = self.leave_group(index);
        let task = self.task(index);
        if let Some(run) = task.run.as_mut() {
            run.then = Then::Start;
            self.stop(index);
            if waited_for {
                self.start_group_when_ready();
            }
        } else {
            task.restart_at = None;
            task.attempts = 0;
            self.start(index);
        }
        self.drain();
        Ok(())
    }

    fn kill(&mut self, index: usize) -> Result<(), SupervisorHandleError> {
        self.precheck(index)?;
        let waited_for = self.leave_group(index);
        self.set(index, TaskStatus::Dead);
        let task = self.task(index);
        task.restart_at = None;
        if let Some(run) = task.run.as_mut() {
            run.then = Then::Nothing;
            self.stop(index);
        }
        if waited_for {
            self.start_group_when_ready();
        }
        self.drain();
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), SupervisorHandleError> {
        if self.life != Life::Running {
            return Err(SupervisorHandleError::SupervisorStopped);
        }
        self.end_supervision(Ok(()));
        for index in 0..TASKS {
            let Some(task) = self.tasks[index].as_mut() else {
                continue;
            };
            if let Some(run) = task.run.as_mut() {
                run.then = Then::Nothing;
                self.stop(index);
            }
        }
        self.drain();
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
        self.ended_by_itself(index, Some(ending));
        self.drain();
    }

    // --- time ---

    /// Moves time on by one millisecond and decides what falls due: one model per order of
    /// the deadlines due at once whose order matters.
    fn tick(&self) -> Vec<Model> {
        let mut next = self.clone();
        next.now += 1;
        let now = next.now;
        let mut due = Vec::new();
        for index in 0..TASKS {
            let Some(task) = next.tasks[index].as_ref() else {
                continue;
            };
            let dropped = task
                .run
                .as_ref()
                .is_some_and(|run| !run.ended && run.dropped_at.is_some_and(|at| at <= now));
            let backoff_over = task.run.is_none() && task.restart_at.is_some_and(|at| at <= now);
            if dropped {
                // The grace period is over: the run is dropped. Whatever else falls due now
                // is decided before the supervisor hears of it, so its order does not matter.
                next.ended_by_itself(index, None);
            } else if next.is_hung(index) {
                due.push(Due::Hang(index));
            } else if backoff_over {
                due.push(Due::BackOff(index));
            }
        }
        if next.group_is_ready() {
            due.push(Due::Group);
        }
        let mut models: Vec<Model> = Vec::new();
        for order in orders(&due) {
            let mut model = next.clone();
            for due in order {
                model.fire(due);
            }
            model.drain();
            if !models.contains(&model) {
                models.push(model);
            }
        }
        models
    }

    fn is_hung(&self, index: usize) -> bool {
        let now = self.now;
        self.tasks[index]
            .as_ref()
            .and_then(|task| task.run.as_ref())
            .is_some_and(|run| {
                !run.stopping
                    && !run.ended
                    && run.watched
                    && run.last_beat.unwrap_or(run.started) + TIMEOUT <= now
            })
    }

    fn group_is_ready(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|group| group.stopping == 0 && group.not_before <= self.now)
    }

    /// Decides a deadline that fell due, if a decision made before it at this instant has not
    /// made it moot.
    fn fire(&mut self, due: Due) {
        match due {
            Due::Hang(index) => {
                if self.is_hung(index) {
                    self.hang(index);
                }
            }
            Due::BackOff(index) => {
                let now = self.now;
                let task = self.task(index);
                if task.run.is_none() && task.restart_at.is_some_and(|at| at <= now) {
                    self.start(index);
                }
            }
            Due::Group => self.start_group_when_ready(),
        }
    }

    /// The run of `index` was silent for the timeout: it is stopped, and it is a failure (the
    /// silence was not healthy time).
    fn hang(&mut self, index: usize) {
        let run = self.task(index).run.as_mut().expect("a live run");
        let silent_since = run.last_beat.unwrap_or(run.started);
        run.then = Then::Nothing;
        self.stop(index);
        if self.fail(index, silent_since) {
            self.restart_later(index);
        }
    }

    /// The supervisor stops once it has ended and every run has ended; never because its
    /// tasks have finished (as the released crate, and OTP, behave).
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

    // --- runs ---

    fn start(&mut self, index: usize) {
        let running = self.life == Life::Running;
        let now = self.now;
        let task = self.task(index);
        task.restart_at = None;
        if !running {
            return;
        }
        let declares = task.declares_heartbeats;
        task.run = Some(ModelRun {
            started: now,
            last_beat: None,
            watched: declares,
            polled: false,
            stopping: false,
            then: Then::Decide,
            dropped_at: None,
            ended: false,
        });
        task.healthy_since = None;
        self.set(index, TaskStatus::Starting);
    }

    /// Asks the run of `index` to stop: one that asked for its token is cancelled and has the
    /// grace period, any other (one never polled among them) is dropped at once.
    fn stop(&mut self, index: usize) {
        let now = self.now;
        let task = self.task(index);
        let cooperation = task.cooperation;
        let run = task.run.as_mut().expect("a live run");
        if run.stopping {
            return;
        }
        run.stopping = true;
        if run.ended {
            return;
        }
        if !run.polled {
            self.stats.unpolled_stops += 1;
            self.ended_by_itself(index, None);
            return;
        }
        match cooperation {
            Cooperation::Never => self.ended_by_itself(index, None),
            Cooperation::Returns => self.ended_by_itself(index, Some(Ending::Complete)),
            Cooperation::Ignores => run.dropped_at = Some(now + GRACE),
        }
    }

    /// The run of `index` ends, with `ending` if it returned or panicked (`None` if it was
    /// dropped); the supervisor hears of it after the decisions of the moment.
    fn ended_by_itself(&mut self, index: usize, ending: Option<Ending>) {
        let run = self.task(index).run.as_mut().expect("a live run");
        run.ended = true;
        self.ended.push_back((index, ending));
    }

    /// The supervisor hears what runs report, a round at a time, until they have nothing more
    /// to say: the runs started since the last round are polled (and prove alive, if they did
    /// not declare heartbeats), then the runs that ended are decided.
    fn drain(&mut self) {
        loop {
            for index in 0..TASKS {
                let Some(task) = self.tasks[index].as_mut() else {
                    continue;
                };
                let Some(run) = task.run.as_mut() else {
                    continue;
                };
                if run.polled || run.ended {
                    continue;
                }
                run.polled = true;
                let started = run.started;
                if !task.declares_heartbeats && task.status == TaskStatus::Starting {
                    task.healthy_since = Some(started);
                    self.set(index, TaskStatus::Healthy);
                }
            }
            if self.ended.is_empty() {
                return;
            }
            let round: Vec<_> = self.ended.drain(..).collect();
            for (index, ending) in round {
                self.exit(index, ending);
            }
        }
    }

    /// The supervisor hears that the run of `index` has ended.
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
            Then::Group => {
                let now = self.now;
                if let Some(group) = self.group.as_mut() {
                    group.stopping -= 1;
                    if let Some(at) = group
                        .backoffs_after_stop
                        .iter()
                        .position(|&(member, _)| member == index)
                    {
                        let (_, delay) = group.backoffs_after_stop.remove(at);
                        group.not_before = group.not_before.max(now + delay);
                    }
                }
                self.start_group_when_ready();
            }
            Then::Nothing => self.stop_next_in_reverse(),
            Then::Decide => match ending {
                Some(Ending::Complete) => self.complete(index),
                Some(Ending::Fail | Ending::Panic) | None => {
                    let now = self.now;
                    if self.fail(index, now) {
                        self.restart_later(index);
                    }
                }
            },
        }
    }

    // --- the decisions ---

    /// A run of `index` returned `Ok(())`: `Completed`, and if the task is permanent, restarted
    /// after the base delay with its attempts cleared, the restart counted.
    fn complete(&mut self, index: usize) {
        self.set(index, TaskStatus::Completed);
        let task = self.task(index);
        task.healthy_since = None;
        if task.policy != RestartPolicy::Permanent {
            return;
        }
        task.attempts = 0;
        match self.count_restart(index) {
            Counted::Yes => {
                self.stats.permanent_restarts += 1;
                self.restart_later(index);
            }
            Counted::OverTaskLimit => {
                self.stats.limit_deaths += 1;
                self.set(index, TaskStatus::Dead);
            }
            Counted::OverIntensity => {}
        }
    }

    /// Counts a failure of a run that was healthy until `healthy_until`: `Failed` with one more
    /// attempt used, or `Dead` when its policy restarts nothing, no attempt is left, or its
    /// restart limit is reached. A run healthy for `STABLE_AFTER` first earns the task its
    /// attempts back. Returns whether the task is to be restarted: not when the restart would
    /// exceed the restart intensity either (it stays `Failed`, and the supervisor ends).
    fn fail(&mut self, index: usize, healthy_until: u64) -> bool {
        let task = self.task(index);
        if let Some(since) = task.healthy_since.take() {
            if healthy_until.saturating_sub(since) >= STABLE_AFTER {
                task.attempts = 0;
            }
        }
        if task.policy == RestartPolicy::Temporary || task.attempts >= MAX_ATTEMPTS {
            self.set(index, TaskStatus::Dead);
            return false;
        }
        let counted = self.count_restart(index);
        if counted == Counted::OverTaskLimit {
            self.stats.limit_deaths += 1;
            self.set(index, TaskStatus::Dead);
            return false;
        }
        self.task(index).attempts += 1;
        self.set(index, TaskStatus::Failed);
        counted == Counted::Yes
    }

    /// Counts a restart of `index` at this instant against its own limit, then against the
    /// restart intensity; over the intensity, the supervisor ends.
    fn count_restart(&mut self, index: usize) -> Counted {
        let now = self.now;
        let task = self.task(index);
        if let Some(limit) = task.limit {
            if !admit(&mut task.restarts, limit, now) {
                return Counted::OverTaskLimit;
            }
        }
        if let Some(intensity) = self.settings.intensity {
            if !admit(&mut self.restarts, intensity, now) {
                self.give_up(intensity);
                return Counted::OverIntensity;
            }
        }
        Counted::Yes
    }

    /// Restarts `index`, whose restart was counted: after its back-off alone, or with the
    /// tasks its failure affects. Nothing is restarted once the supervisor has ended.
    fn restart_later(&mut self, index: usize) {
        if self.life != Life::Running {
            return;
        }
        if self.settings.strategy == Restarts::OneForOne {
            match self.task(index).run.as_mut() {
                // Hung, and being stopped: the back-off starts once it has ended.
                Some(run) => run.then = Then::BackOff,
                None => self.schedule_restart(index),
            }
        } else {
            self.join_group(index);
        }
    }

    fn backoff(&mut self, index: usize) -> u64 {
        let exponent = self
            .task(index)
            .attempts
            .saturating_sub(1)
            .min(MAX_EXPONENT);
        BASE_DELAY << exponent
    }

    fn schedule_restart(&mut self, index: usize) {
        let at = self.now + self.backoff(index);
        self.task(index).restart_at = Some(at);
    }

    // --- group restarts, as `Strategy` documents them ---

    /// Makes (or widens) the pending group with `failed` and every task its failure affects,
    /// but temporary and dead ones: running members are asked to stop, the pending restarts
    /// of the others are cancelled, and each keeps its status until it starts again.
    fn join_group(&mut self, failed: usize) {
        let delay = self.backoff(failed);
        let hung = self.task(failed).run.is_some();
        let position = self
            .order
            .iter()
            .position(|&index| index == failed)
            .expect("registered");
        let affected = match self.settings.strategy {
            Restarts::OneForAll => 0..self.order.len(),
            _ => position..self.order.len(),
        };
        let mut group = match self.group.take() {
            Some(group) => {
                self.stats.widened += 1;
                group
            }
            None => {
                self.stats.groups += 1;
                ModelGroup::default()
            }
        };
        if hung {
            group.backoffs_after_stop.push((failed, delay));
        } else {
            group.not_before = group.not_before.max(self.now + delay);
        }
        for position in affected {
            let index = self.order[position];
            let task = self.task(index);
            let joins = index == failed
                || (task.policy != RestartPolicy::Temporary && task.status != TaskStatus::Dead);
            if task.in_group || !joins {
                continue;
            }
            task.in_group = true;
            group.members.push(index);
            match task.run.as_mut() {
                Some(run) => {
                    run.then = Then::Group;
                    group.stopping += 1;
                    self.stop(index);
                }
                None => task.restart_at = None,
            }
        }
        self.group = Some(group);
        self.start_group_when_ready();
    }

    /// Takes `index` out of the pending group (a command about it alone); returns whether the
    /// group was waiting for its run to end.
    fn leave_group(&mut self, index: usize) -> bool {
        let task = self.task(index);
        if !std::mem::replace(&mut task.in_group, false) {
            return false;
        }
        let waited_for = task.run.as_ref().is_some_and(|run| run.then == Then::Group);
        if let Some(group) = self.group.as_mut() {
            if waited_for {
                group.stopping -= 1;
            }
            group
                .backoffs_after_stop
                .retain(|&(member, _)| member != index);
        }
        waited_for
    }

    /// Starts the pending group, in start order, once every member's run has ended and the
    /// back-off is over.
    fn start_group_when_ready(&mut self) {
        if !self.group_is_ready() {
            return;
        }
        let group = self.group.take().expect("a pending group");
        self.stats.group_starts += 1;
        for index in self.order.clone() {
            let task = self.task(index);
            if group.members.contains(&index) && std::mem::replace(&mut task.in_group, false) {
                self.stats.members_started += 1;
                self.start(index);
            }
        }
    }

    // --- the supervisor's end ---

    /// The supervisor ends with `outcome`: it takes no more commands, starts no more runs, and
    /// forgets its pending group.
    fn end_supervision(&mut self, outcome: Result<(), SupervisorError>) {
        self.life = Life::ShuttingDown;
        self.outcome = outcome;
        self.group = None;
        for task in self.tasks.iter_mut().flatten() {
            task.in_group = false;
            task.restart_at = None;
        }
    }

    /// Over the restart intensity: the supervisor ends with `RestartIntensityExceeded`, and
    /// stops its tasks in reverse start order, each once every later one has ended.
    fn give_up(&mut self, (max_restarts, within): Limit) {
        if self.life != Life::Running {
            return;
        }
        self.end_supervision(Err(SupervisorError::RestartIntensityExceeded {
            restarts: max_restarts + 1,
            within: Duration::from_millis(within),
        }));
        self.reverse_left = Some(self.order.len());
        self.stop_next_in_reverse();
    }

    /// In a reverse stop, stops the last started task that still has a run.
    fn stop_next_in_reverse(&mut self) {
        while let Some(left) = self.reverse_left {
            let Some(position) = left.checked_sub(1) else {
                self.reverse_left = None;
                return;
            };
            let index = self.order[position];
            if let Some(run) = self.task(index).run.as_mut() {
                run.then = Then::Nothing;
                if !run.stopping {
                    self.stats.reverse_stops += 1;
                }
                self.stop(index);
                return; // Until it has ended.
            }
            self.reverse_left = Some(position);
        }
    }
}

// ----- running a sequence -----

/// What the property checked, over all its cases, for `RELIABILITY.md`.
struct Tally {
    sequences: u64,
    steps: [u64; 7],
    /// Steps that order a run about (beat, end) when the task has no run: nothing to do.
    idle_steps: u64,
    milliseconds: u64,
    comparisons: u64,
    changes: u64,
    edges: BTreeMap<(String, String), u64>,
    /// Named figures: the settings and specs drawn, and what the model did.
    counts: BTreeMap<&'static str, u64>,
}

impl Tally {
    const fn new() -> Self {
        Self {
            sequences: 0,
            steps: [0; 7],
            idle_steps: 0,
            milliseconds: 0,
            comparisons: 0,
            changes: 0,
            edges: BTreeMap::new(),
            counts: BTreeMap::new(),
        }
    }

    fn count(&mut self, name: &'static str, by: u64) {
        *self.counts.entry(name).or_default() += by;
    }

    fn count_settings(&mut self, settings: Settings) {
        self.sequences += 1;
        self.count(
            match settings.strategy {
                Restarts::OneForOne => "settings: one for one",
                Restarts::OneForAll => "settings: one for all",
                Restarts::RestForOne => "settings: rest for one",
            },
            1,
        );
        if settings.intensity.is_some() {
            self.count("settings: with a restart intensity", 1);
        }
    }

    fn count_step(&mut self, step: &Step) {
        let kind = match step {
            Step::Add { policy, limit, .. } => {
                self.count(
                    match policy {
                        RestartPolicy::Permanent => "add: permanent",
                        RestartPolicy::Transient => "add: transient",
                        RestartPolicy::Temporary => "add: temporary",
                    },
                    1,
                );
                if limit.is_some() {
                    self.count("add: with a restart limit", 1);
                }
                0
            }
            Step::Restart(_) => 1,
            Step::Kill(_) => 2,
            Step::Beat(_) => 3,
            Step::End(..) => 4,
            Step::Advance(_) => 5,
            Step::Shutdown => 6,
        };
        self.steps[kind] += 1;
    }

    /// What the model that agreed with the supervisor to the end did.
    fn count_model(&mut self, model: &Model) {
        let stats = model.stats;
        self.count("did: groups restarted", stats.groups);
        self.count("did: pending groups widened", stats.widened);
        self.count("did: groups started", stats.group_starts);
        self.count("did: members started by a group", stats.members_started);
        self.count(
            "did: runs stopped before their first poll",
            stats.unpolled_stops,
        );
        self.count(
            "did: permanent tasks restarted after Ok",
            stats.permanent_restarts,
        );
        self.count("did: tasks dead of their restart limit", stats.limit_deaths);
        self.count("did: runs stopped in reverse order", stats.reverse_stops);
        if model.outcome.is_err() {
            self.count("did: supervisors ended over their intensity", 1);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.sequences += other.sequences;
        for (mine, theirs) in self.steps.iter_mut().zip(other.steps) {
            *mine += theirs;
        }
        self.idle_steps += other.idle_steps;
        self.milliseconds += other.milliseconds;
        self.comparisons += other.comparisons;
        self.changes += other.changes;
        for (edge, count) in other.edges {
            *self.edges.entry(edge).or_default() += count;
        }
        for (name, count) in other.counts {
            self.count(name, count);
        }
    }
}

static TALLY: Mutex<Tally> = Mutex::new(Tally::new());

/// Runs `steps` against a fresh supervisor and the model, with the default settings;
/// `counted` adds them to [`TALLY`].
fn check(steps: &[Step], counted: bool) -> Result<(), TestCaseError> {
    check_with(Settings::default(), steps, counted)
}

fn check_with(settings: Settings, steps: &[Step], counted: bool) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let mut tally = Tally::new();
    let result = runtime.block_on(run_sequence(settings, steps, &mut tally));
    if counted {
        TALLY
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .merge(tally);
    }
    result
}

async fn run_sequence(
    settings: Settings,
    steps: &[Step],
    tally: &mut Tally,
) -> Result<(), TestCaseError> {
    let strings: Vec<Arc<Strings>> = (0..TASKS).map(|_| Arc::default()).collect();
    let handle = builder_for(settings)
        .try_build()
        .expect("valid settings")
        .run();
    let mut changes = handle.status_changes();
    // The models that agree with the supervisor so far: one, but for deadlines due at once.
    let mut models = vec![Model::with(settings)];

    tally.count_settings(settings);
    for (number, step) in steps.iter().enumerate() {
        let context = format!("step {number}: {step:?}");
        tally.count_step(step);
        match *step {
            Step::Add {
                task,
                declares_heartbeats,
                cooperation,
                policy,
                limit,
            } => {
                let puppet = Puppet {
                    strings: Arc::clone(&strings[task]),
                    declares_heartbeats,
                    cooperation,
                };
                let answer = if policy == RestartPolicy::Transient && limit.is_none() {
                    handle.add_task(NAMES[task], puppet)
                } else {
                    let mut spec = TaskSpec::new(puppet).with_restart_policy(policy);
                    if let Some((max_restarts, within)) = limit {
                        spec = spec.with_restart_limit(max_restarts, Duration::from_millis(within));
                    }
                    handle.add_task_spec(NAMES[task], spec)
                };
                answered(&mut models, &answer, &context, |model| {
                    model.add_with(task, declares_heartbeats, cooperation, policy, limit)
                })?;
            }
            Step::Restart(task) => {
                let answer = handle.restart(NAMES[task]);
                answered(&mut models, &answer, &context, |model| model.restart(task))?;
            }
            Step::Kill(task) => {
                let answer = handle.kill_task(NAMES[task]);
                answered(&mut models, &answer, &context, |model| model.kill(task))?;
            }
            Step::Beat(task) => {
                // The models agree on which tasks have a run: the supervisor's live runs decide.
                if !models[0].has_run(task) {
                    tally.idle_steps += 1;
                    continue;
                }
                strings[task].give(Order::Beat);
                models.iter_mut().for_each(|model| model.beat(task));
            }
            Step::End(task, ending) => {
                if !models[0].has_run(task) {
                    tally.idle_steps += 1;
                    continue;
                }
                strings[task].give(Order::End(ending));
                models.iter_mut().for_each(|model| model.end(task, ending));
            }
            Step::Advance(millis) => {
                for _ in 0..millis {
                    tally.milliseconds += 1;
                    tokio::time::advance(Duration::from_millis(1)).await;
                    tick(&mut models, tally);
                    settle().await;
                    agree(
                        &handle,
                        &mut changes,
                        &mut models,
                        &strings,
                        &context,
                        tally,
                    )?;
                }
                continue;
            }
            Step::Shutdown => {
                let answer = handle.shutdown();
                answered(&mut models, &answer, &context, Model::shutdown)?;
            }
        }
        settle().await;
        agree(
            &handle,
            &mut changes,
            &mut models,
            &strings,
            &context,
            tally,
        )?;
    }

    // The end: shut down if still running, let the grace periods pass, and wait.
    if models[0].life == Life::Running {
        let answer = handle.shutdown();
        answered(&mut models, &answer, "the end", Model::shutdown)?;
    }
    for _ in 0..=LONGEST_END {
        settle().await;
        agree(
            &handle,
            &mut changes,
            &mut models,
            &strings,
            "the end",
            tally,
        )?;
        if models[0].life == Life::Stopped {
            break;
        }
        tokio::time::advance(Duration::from_millis(1)).await;
        tick(&mut models, tally);
    }
    let model = &models[0];
    prop_assert_eq!(model.life, Life::Stopped);
    prop_assert_eq!(poll_once(handle.wait()), Some(model.outcome.clone()));
    for strings in &strings {
        prop_assert_eq!(strings.live.load(Ordering::SeqCst), 0);
    }
    tally.count_model(model);
    Ok(())
}

/// Applies a command to every model, and keeps those whose answer is the supervisor's.
fn answered(
    models: &mut Vec<Model>,
    answer: &Result<(), SupervisorHandleError>,
    context: &str,
    mut apply: impl FnMut(&mut Model) -> Result<(), SupervisorHandleError>,
) -> Result<(), TestCaseError> {
    let mut expected = None;
    models.retain_mut(|model| {
        let answers = apply(model);
        let agrees = &answers == answer;
        expected.get_or_insert(answers);
        agrees
    });
    if models.is_empty() {
        prop_assert_eq!(answer, &expected.expect("a model"), "{}", context);
    }
    Ok(())
}

/// Moves every model on by a millisecond.
fn tick(models: &mut Vec<Model>, tally: &mut Tally) {
    let mut next: Vec<Model> = Vec::with_capacity(models.len());
    for model in models.iter() {
        for ticked in model.tick() {
            if !next.contains(&ticked) {
                next.push(ticked);
            }
        }
    }
    if next.len() > models.len() {
        tally.count(
            "did: instants whose deadlines due at once were tried in orders",
            1,
        );
    }
    *models = next;
}

/// What the supervisor shows, read once per check.
struct Observed {
    running: bool,
    statuses: Vec<Option<Result<Option<TaskStatus>, SupervisorHandleError>>>,
    all: Option<Result<HashMap<String, TaskStatus>, SupervisorHandleError>>,
    changes: BTreeMap<usize, Vec<(TaskStatus, TaskStatus)>>,
    live: Vec<u32>,
}

/// Reads what the supervisor shows, and checks what needs no model: every change published is
/// an edge of the state machine, none was missed, no two runs of a task were ever live at once.
fn observe(
    handle: &SupervisorHandle,
    changes: &mut tokio::sync::broadcast::Receiver<StatusChange>,
    strings: &[Arc<Strings>],
    at: &str,
) -> Result<Observed, TestCaseError> {
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
    for strings in strings {
        prop_assert_eq!(strings.overlaps.load(Ordering::SeqCst), 0, "{}", at);
    }
    Ok(Observed {
        running: handle.is_running(),
        statuses: NAMES
            .iter()
            .map(|name| poll_once(handle.get_task_status(name)))
            .collect(),
        all: poll_once(handle.get_all_task_statuses()),
        changes: seen,
        live: strings
            .iter()
            .map(|strings| strings.live.load(Ordering::SeqCst))
            .collect(),
    })
}

/// Checks that what the supervisor shows is what `model` says.
fn compare(observed: &Observed, model: &Model, at: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        observed.running,
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
        let read = &observed.statuses[index];
        if stopped {
            prop_assert_eq!(
                read,
                &Some(Err(SupervisorHandleError::SupervisorStopped)),
                "{}",
                at
            );
        } else {
            prop_assert_eq!(read, &Some(Ok(expected)), "status of {}: {}", name, at);
        }
    }
    if stopped {
        prop_assert_eq!(
            &observed.all,
            &Some(Err(SupervisorHandleError::SupervisorStopped)),
            "{}",
            at
        );
    } else {
        prop_assert_eq!(&observed.all, &Some(Ok(expected_all)), "{}", at);
    }

    // The changes published since the last check, task by task.
    prop_assert_eq!(&observed.changes, &model.changes, "status changes: {}", at);

    // Live runs, as counted by the runs themselves.
    for (index, live) in observed.live.iter().enumerate() {
        prop_assert_eq!(
            *live,
            u32::from(model.has_run(index)),
            "live runs of {}: {}",
            NAMES[index],
            at
        );
    }
    Ok(())
}

/// Checks that the supervisor agrees with one of the models, after a step, and keeps those
/// that agree.
fn agree(
    handle: &SupervisorHandle,
    changes: &mut tokio::sync::broadcast::Receiver<StatusChange>,
    models: &mut Vec<Model>,
    strings: &[Arc<Strings>],
    context: &str,
    tally: &mut Tally,
) -> Result<(), TestCaseError> {
    models.iter_mut().for_each(Model::settle);
    let at = format!("{context} (at {} ms)", models[0].now);
    let observed = observe(handle, changes, strings, &at)?;
    let mut first_disagreement = None;
    let tried = models.len();
    models.retain(|model| match compare(&observed, model, &at) {
        Ok(()) => true,
        Err(disagreement) => {
            first_disagreement.get_or_insert(disagreement);
            false
        }
    });
    if models.is_empty() {
        let disagreement = first_disagreement.expect("a model");
        return Err(if tried == 1 {
            disagreement
        } else {
            TestCaseError::fail(format!(
                "none of {tried} orders of the deadlines due at once agrees; the first: \
                 {disagreement}"
            ))
        });
    }
    let mut kept: Vec<Model> = Vec::with_capacity(models.len());
    for mut model in models.drain(..) {
        model.changes.clear();
        if !kept.contains(&model) {
            kept.push(model);
        }
    }
    *models = kept;

    tally.comparisons += 1;
    for (from, to) in observed.changes.values().flatten() {
        tally.changes += 1;
        *tally
            .edges
            .entry((from.to_string(), to.to_string()))
            .or_default() += 1;
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
        settings(),
        prop::collection::vec(add(), 1..=TASKS),
        prop::collection::vec(step(), 1..48),
    )
        .prop_map(|(settings, mut adds, steps)| {
            adds.extend(steps);
            (settings, adds)
        });
    let result = runner.run(&sequence, |(settings, steps)| {
        check_with(settings, &steps, true)
    });
    if let Err(failure) = result {
        panic!("the supervisor and the model disagree: {failure}");
    }
    let tally = TALLY.lock().unwrap_or_else(PoisonError::into_inner);
    let names = [
        "add", "restart", "kill", "beat", "end", "advance", "shutdown",
    ];
    eprintln!(
        "model: {} sequences; steps: {}; {} beat/end steps with no run to order; {} ms of \
         paused time; {} comparisons of every status, every change, every live-run count; \
         {} status changes matched",
        tally.sequences,
        names
            .iter()
            .zip(&tally.steps)
            .map(|(name, count)| format!("{name} {count}"))
            .collect::<Vec<_>>()
            .join(", "),
        tally.idle_steps,
        tally.milliseconds,
        tally.comparisons,
        tally.changes,
    );
    for (name, count) in &tally.counts {
        eprintln!("model {name}: {count}");
    }
    for ((from, to), count) in &tally.edges {
        eprintln!("model edge {from} -> {to}: {count}");
    }
}

/// The model itself, on a hand-written sequence: a task fails twice and is restarted after 4 ms
/// then 8 ms, a third failure kills it (two attempts), and a restart brings it back.
#[test]
fn the_model_follows_a_known_sequence() {
    quiet_injected_panics();
    let steps = [
        plain(0, false, Cooperation::Never),
        Step::End(0, Ending::Fail),
        Step::Advance(4),
        Step::End(0, Ending::Panic),
        Step::Advance(8),
        Step::End(0, Ending::Fail),
        plain(1, true, Cooperation::Ignores),
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

/// The model alone, with `steps` applied under `settings` (deadlines due at once in the first
/// order tried), for the known sequences to look into.
fn played(settings: Settings, steps: &[Step]) -> Model {
    let mut model = Model::with(settings);
    for step in steps {
        match *step {
            Step::Add {
                task,
                declares_heartbeats,
                cooperation,
                policy,
                limit,
            } => drop(model.add_with(task, declares_heartbeats, cooperation, policy, limit)),
            Step::Restart(task) => drop(model.restart(task)),
            Step::Kill(task) => drop(model.kill(task)),
            Step::Beat(task) if model.has_run(task) => model.beat(task),
            Step::End(task, ending) if model.has_run(task) => model.end(task, ending),
            Step::Beat(_) | Step::End(..) => {}
            Step::Advance(millis) => {
                for _ in 0..millis {
                    model = model.tick().swap_remove(0);
                }
            }
            Step::Shutdown => drop(model.shutdown()),
        }
        model.settle();
    }
    model
}

fn spec(
    task: usize,
    cooperation: Cooperation,
    policy: RestartPolicy,
    limit: Option<Limit>,
) -> Step {
    Step::Add {
        task,
        declares_heartbeats: false,
        cooperation,
        policy,
        limit,
    }
}

fn status(model: &Model, task: usize) -> TaskStatus {
    model.tasks[task].as_ref().expect("registered").status
}

/// Permanent: after `Ok(())` the task is `Completed`, then restarted after the base delay with
/// its attempts cleared, however many failures came before; never doubled.
#[test]
fn a_known_sequence_of_a_permanent_task() {
    quiet_injected_panics();
    let steps = [
        spec(0, Cooperation::Never, RestartPolicy::Permanent, None),
        Step::End(0, Ending::Fail),
        Step::Advance(BASE_DELAY),
        Step::End(0, Ending::Fail),
        Step::Advance(2 * BASE_DELAY),
        Step::End(0, Ending::Complete),
        Step::Advance(BASE_DELAY),
        Step::End(0, Ending::Complete),
        Step::Advance(BASE_DELAY),
    ];
    let settings = Settings::default();
    let model = played(settings, &steps[..6]);
    assert_eq!(status(&model, 0), TaskStatus::Completed);
    let task = model.tasks[0].as_ref().expect("registered");
    assert_eq!(task.attempts, 0, "cleared: the run did its work");
    assert_eq!(
        task.restart_at,
        Some(3 * BASE_DELAY + BASE_DELAY),
        "the base delay"
    );
    let model = played(settings, &steps);
    assert_eq!(status(&model, 0), TaskStatus::Healthy);
    assert_eq!(model.stats.permanent_restarts, 2);
    check_with(settings, &steps, false).expect("the supervisor follows the model");
}

/// Temporary: a failure leaves the task `Dead` at once, `Ok(())` leaves it `Completed`; the
/// supervisor never restarts it, a `restart` does.
#[test]
fn a_known_sequence_of_temporary_tasks() {
    quiet_injected_panics();
    let steps = [
        spec(0, Cooperation::Never, RestartPolicy::Temporary, None),
        spec(1, Cooperation::Returns, RestartPolicy::Temporary, None),
        Step::End(0, Ending::Fail),
        Step::End(1, Ending::Complete),
        Step::Advance(4 * BASE_DELAY),
        Step::Restart(0),
        Step::Advance(1),
    ];
    let settings = Settings::default();
    let model = played(settings, &steps[..5]);
    assert_eq!(status(&model, 0), TaskStatus::Dead);
    assert_eq!(status(&model, 1), TaskStatus::Completed);
    assert!(!model.has_run(0) && !model.has_run(1), "never restarted");
    assert!(played(settings, &steps).has_run(0));
    check_with(settings, &steps, false).expect("the supervisor follows the model");
}

/// A restart limit of one restart within 10 ms: the failure at 0 is restarted (counted at 0),
/// the one at 4 ms would be a second within 10 ms, so the task is dead with an attempt left; a
/// `restart` is not counted, and at 10 ms the restart at 0 has left the window.
#[test]
fn a_known_sequence_of_a_task_with_a_restart_limit() {
    quiet_injected_panics();
    let steps = [
        spec(
            0,
            Cooperation::Never,
            RestartPolicy::Transient,
            Some((1, 10)),
        ),
        Step::End(0, Ending::Fail),
        Step::Advance(BASE_DELAY),
        Step::End(0, Ending::Fail),
        Step::Restart(0),
        Step::Advance(10 - BASE_DELAY),
        Step::End(0, Ending::Fail),
        Step::Advance(BASE_DELAY),
    ];
    let settings = Settings::default();
    let model = played(settings, &steps[..4]);
    assert_eq!(status(&model, 0), TaskStatus::Dead);
    assert_eq!(model.tasks[0].as_ref().expect("registered").attempts, 1);
    let model = played(settings, &steps[..7]);
    assert_eq!(
        status(&model, 0),
        TaskStatus::Failed,
        "the window has moved on"
    );
    assert_eq!(model.stats.limit_deaths, 1);
    check_with(settings, &steps, false).expect("the supervisor follows the model");
}

/// A restart intensity of one restart within 10 ms: `restart`s are not counted, the failure at
/// 0 is, and the one at 4 ms is one too many. The supervisor ends with
/// `RestartIntensityExceeded`: the task that failed stays `Failed` with its attempt counted,
/// commands are refused, and the tasks are stopped in reverse start order, "a" only once "b"
/// (which ignores its token) is dropped after its grace period.
#[test]
fn a_known_sequence_over_the_restart_intensity() {
    quiet_injected_panics();
    let steps = [
        plain(0, false, Cooperation::Never),
        plain(1, false, Cooperation::Ignores),
        plain(2, false, Cooperation::Never),
        Step::Restart(0),
        Step::Restart(2),
        Step::End(2, Ending::Fail),
        Step::Advance(BASE_DELAY),
        Step::End(2, Ending::Panic),
        Step::Advance(GRACE - 1),
        Step::Restart(0),
        Step::Advance(1),
    ];
    let settings = Settings {
        strategy: Restarts::OneForOne,
        intensity: Some((1, 10)),
    };
    let model = played(settings, &steps[..8]);
    assert_eq!(model.life, Life::ShuttingDown);
    assert_eq!(
        model.outcome,
        Err(SupervisorError::RestartIntensityExceeded {
            restarts: 2,
            within: Duration::from_millis(10),
        })
    );
    assert_eq!(status(&model, 2), TaskStatus::Failed);
    assert_eq!(model.tasks[2].as_ref().expect("registered").attempts, 2);
    assert!(model.has_run(0), "waits for the task started after it");
    let model = played(settings, &steps[..9]);
    assert!(model.has_run(0) && model.has_run(1));
    let model = played(settings, &steps);
    assert_eq!(model.life, Life::Stopped);
    check_with(settings, &steps, false).expect("the supervisor follows the model");
}

/// One for all: "b" fails; "a" (which ignores its token) and "d" (which returns when
/// cancelled) are stopped and keep their status, temporary "c" is left running; the group
/// starts, in start order, once "a" is dropped after its grace period, later than the back-off.
#[test]
fn a_known_sequence_of_a_group_restart_of_all() {
    quiet_injected_panics();
    let steps = [
        plain(0, false, Cooperation::Ignores),
        plain(1, false, Cooperation::Never),
        spec(2, Cooperation::Never, RestartPolicy::Temporary, None),
        plain(3, false, Cooperation::Returns),
        Step::End(1, Ending::Fail),
        Step::Advance(GRACE - 1),
        Step::Advance(1),
    ];
    let settings = Settings {
        strategy: Restarts::OneForAll,
        intensity: None,
    };
    let model = played(settings, &steps[..5]);
    let group = model.group.as_ref().expect("a pending group");
    assert_eq!(group.members, [0, 1, 3]);
    assert_eq!((group.stopping, group.not_before), (1, BASE_DELAY));
    assert_eq!(status(&model, 0), TaskStatus::Healthy);
    assert_eq!(status(&model, 3), TaskStatus::Healthy);
    assert!(model.has_run(0) && model.has_run(2) && !model.has_run(3));
    let model = played(settings, &steps[..6]);
    assert!(model.group.is_some(), "waits for a");
    let model = played(settings, &steps);
    assert!(model.group.is_none());
    assert!((0..TASKS).all(|task| model.has_run(task)));
    check_with(settings, &steps, false).expect("the supervisor follows the model");
}

/// Rest for one: "c" fails, and "d" is stopped with it; "a" fails while that group is pending
/// and widens it to every task, with its own later back-off; "d" is killed and "b" restarted,
/// which takes them out of the group; the group starts "a" and "c" when a's back-off is over.
#[test]
fn a_known_sequence_of_a_group_restart_of_the_rest() {
    quiet_injected_panics();
    let steps = [
        plain(0, false, Cooperation::Never),
        plain(1, false, Cooperation::Never),
        plain(2, false, Cooperation::Never),
        plain(3, false, Cooperation::Never),
        Step::End(2, Ending::Fail),
        Step::Advance(2),
        Step::End(0, Ending::Fail),
        Step::Kill(3),
        Step::Restart(1),
        Step::Advance(BASE_DELAY - 1),
        Step::Advance(1),
    ];
    let settings = Settings {
        strategy: Restarts::RestForOne,
        intensity: None,
    };
    let model = played(settings, &steps[..5]);
    assert_eq!(model.group.as_ref().expect("pending").members, [2, 3]);
    assert!(model.has_run(0) && model.has_run(1));
    let model = played(settings, &steps[..7]);
    let group = model.group.as_ref().expect("pending");
    assert_eq!(group.members, [2, 3, 0, 1]);
    assert_eq!(group.not_before, 2 + BASE_DELAY, "the later back-off");
    let model = played(settings, &steps[..9]);
    assert!(model.has_run(1), "restarted on its own");
    assert_eq!(status(&model, 3), TaskStatus::Dead);
    let model = played(settings, &steps[..10]);
    assert!(!model.has_run(0) && !model.has_run(2));
    let model = played(settings, &steps);
    assert!(model.has_run(0) && model.has_run(2) && !model.has_run(3));
    assert_eq!(model.stats.widened, 1);
    check_with(settings, &steps, false).expect("the supervisor follows the model");
}

/// Deadlines due at once: at 10 ms the group of "b" (which failed at 6 ms) is due to start,
/// and "a", which declared heartbeats and never beat, is hung; under rest for one, a's failure
/// takes "b" into a group of its own. The docs do not order the two, so the model tries both:
/// the group first (b starts, and is stopped before its first poll: it never proves alive), or
/// the hang first (b's pending start joins a's group, which starts after a's back-off).
#[test]
fn a_known_sequence_of_deadlines_due_at_once() {
    quiet_injected_panics();
    let steps = [
        plain(0, true, Cooperation::Never),
        plain(1, false, Cooperation::Ignores),
        Step::Advance(TIMEOUT - BASE_DELAY),
        Step::End(1, Ending::Fail),
        Step::Advance(BASE_DELAY - 1),
        Step::Advance(1),
        Step::Advance(BASE_DELAY),
    ];
    let settings = Settings {
        strategy: Restarts::RestForOne,
        intensity: None,
    };
    let model = played(settings, &steps[..5]);
    let orders = model.tick();
    assert_eq!(orders.len(), 2, "{orders:#?}");
    let (hang_first, group_first) = (&orders[0], &orders[1]);
    assert_eq!(status(hang_first, 1), TaskStatus::Failed, "not started");
    assert_eq!(status(group_first, 1), TaskStatus::Starting, "never polled");
    assert!(
        !group_first.has_run(1),
        "dropped at once, though it ignores its token"
    );
    assert_eq!(group_first.stats.unpolled_stops, 1);
    check_with(settings, &steps, false).expect("the supervisor follows one of the orders");
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
