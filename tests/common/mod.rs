//! Test tasks and helpers shared by the integration tests.
#![allow(dead_code)] // Each test file uses a different part.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use task_supervisor::{
    bail, heartbeat, StatusChange, SupervisedTask, SupervisorHandle, TaskContext, TaskError,
    TaskResult, TaskStatus,
};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// How one run of a [`Scripted`] task behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Returns `Ok(())` at once.
    Complete,
    /// Returns an error at once.
    Fail,
    /// Panics at once with the message `"scripted panic"`.
    Panic,
    /// Never returns, never beats, never looks at its token.
    Pend,
    /// Beats every `every`, `beats` times, then stays silent forever.
    BeatThenHang { every: Duration, beats: u32 },
    /// Beats every `every` forever.
    BeatForever { every: Duration },
    /// Asks for its token and returns `Ok` `after` it is cancelled.
    Cooperate { after: Duration },
    /// Asks for its token and never returns, even when cancelled.
    IgnoreCancellation,
    /// Works for `work`, then fails.
    FailAfter { work: Duration },
}

/// Counts the live instances of a task's runs, and the most ever live at once.
#[derive(Debug, Default)]
pub struct Liveness {
    pub live: AtomicUsize,
    pub most: AtomicUsize,
    pub runs: AtomicUsize,
    /// When each run's state was dropped, in order.
    pub dropped_at: Mutex<Vec<Instant>>,
    /// When each run started, in order.
    pub started_at: Mutex<Vec<Instant>>,
}

impl Liveness {
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
    pub fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
    pub fn started_at(&self) -> Vec<Instant> {
        self.started_at.lock().unwrap().clone()
    }
    pub fn dropped_at(&self) -> Vec<Instant> {
        self.dropped_at.lock().unwrap().clone()
    }
}

/// Held by a run for as long as it is alive.
struct LiveGuard(Arc<Liveness>);

impl LiveGuard {
    fn enter(liveness: &Arc<Liveness>) -> Self {
        let now_live = liveness.live.fetch_add(1, Ordering::SeqCst) + 1;
        liveness.most.fetch_max(now_live, Ordering::SeqCst);
        liveness.runs.fetch_add(1, Ordering::SeqCst);
        liveness.started_at.lock().unwrap().push(Instant::now());
        LiveGuard(Arc::clone(liveness))
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.dropped_at.lock().unwrap().push(Instant::now());
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A task whose runs follow a script, one step per run; once the script is used up, every
/// further run does `then`.
#[derive(Clone)]
pub struct Scripted {
    script: Arc<Mutex<VecDeque<Step>>>,
    then: Step,
    pub liveness: Arc<Liveness>,
    declares_heartbeats: bool,
}

impl Scripted {
    pub fn new(script: impl IntoIterator<Item = Step>, then: Step) -> Self {
        Self {
            script: Arc::new(Mutex::new(script.into_iter().collect())),
            then,
            liveness: Arc::default(),
            declares_heartbeats: false,
        }
    }

    /// Every run does `step`.
    pub fn always(step: Step) -> Self {
        Self::new([], step)
    }

    pub fn declaring_heartbeats(mut self) -> Self {
        self.declares_heartbeats = true;
        self
    }
}

#[async_trait]
impl SupervisedTask for Scripted {
    async fn run(&mut self) -> TaskResult {
        let _alive = LiveGuard::enter(&self.liveness);
        let step = self.script.lock().unwrap().pop_front().unwrap_or(self.then);
        match step {
            Step::Complete => Ok(()),
            Step::Fail => bail!("scripted failure"),
            Step::Panic => panic!("scripted panic"),
            Step::Pend => std::future::pending().await,
            Step::BeatThenHang { every, beats } => {
                for _ in 0..beats {
                    assert!(TaskContext::current().is_some(), "inside a supervised run");
                    heartbeat();
                    tokio::time::sleep(every).await;
                }
                std::future::pending().await
            }
            Step::BeatForever { every } => loop {
                heartbeat();
                tokio::time::sleep(every).await;
            },
            Step::Cooperate { after } => {
                let context = TaskContext::current().expect("inside a supervised run");
                context.cancellation_token().cancelled().await;
                tokio::time::sleep(after).await;
                Ok(())
            }
            Step::IgnoreCancellation => {
                let context = TaskContext::current().expect("inside a supervised run");
                let _token = context.cancellation_token();
                std::future::pending().await
            }
            Step::FailAfter { work } => {
                tokio::time::sleep(work).await;
                Err(TaskError::msg("failed after working"))
            }
        }
    }

    fn sends_heartbeats(&self) -> bool {
        self.declares_heartbeats
    }
}

/// What happened to which task, in the order it happened, shared by the tasks of one test.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, entry: String) {
        self.0.lock().unwrap().push(entry);
    }

    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn position(&self, entry: &str) -> usize {
        self.entries()
            .iter()
            .position(|seen| seen == entry)
            .unwrap_or_else(|| panic!("{entry} never happened: {:?}", self.entries()))
    }

    pub fn count(&self, entry: &str) -> usize {
        self.entries().iter().filter(|seen| *seen == entry).count()
    }
}

/// How each run of a [`Logged`] task goes.
#[derive(Clone, Copy, Debug)]
pub enum Plan {
    /// Runs until stopped; asks for its token and returns `stop_in` after it is cancelled.
    Serve { stop_in: Duration },
    /// Fails `after` its start, on its first run only; then serves as above.
    FailOnceAfter { after: Duration },
    /// Fails at once, every run.
    AlwaysFail,
    /// Returns `Ok(())` at once.
    Complete,
}

/// Logs `<name> started` when a run starts, `<name> cancelled` when a serving run is asked to
/// stop, and `<name> ended` when the run's state is dropped.
#[derive(Clone)]
pub struct Logged {
    name: &'static str,
    plan: Plan,
    log: Log,
    runs: Arc<Mutex<u32>>,
}

struct Ended(&'static str, Log);

impl Drop for Ended {
    fn drop(&mut self) {
        self.1.push(format!("{} ended", self.0));
    }
}

impl Logged {
    pub fn new(name: &'static str, plan: Plan, log: &Log) -> Self {
        Self {
            name,
            plan,
            log: log.clone(),
            runs: Arc::default(),
        }
    }
}

#[async_trait]
impl SupervisedTask for Logged {
    async fn run(&mut self) -> TaskResult {
        let run = {
            let mut runs = self.runs.lock().unwrap();
            *runs += 1;
            *runs
        };
        self.log.push(format!("{} started", self.name));
        let _ended = Ended(self.name, self.log.clone());
        let (name, log) = (self.name, self.log.clone());
        let serve = |stop_in: Duration| async move {
            let token = TaskContext::current()
                .expect("in a run")
                .cancellation_token();
            token.cancelled().await;
            log.push(format!("{name} cancelled"));
            tokio::time::sleep(stop_in).await;
            Ok(())
        };
        match self.plan {
            Plan::Serve { stop_in } => serve(stop_in).await,
            Plan::FailOnceAfter { after } if run == 1 => {
                tokio::time::sleep(after).await;
                bail!("{} failed", self.name)
            }
            Plan::FailOnceAfter { .. } => serve(Duration::ZERO).await,
            Plan::AlwaysFail => bail!("{} failed", self.name),
            Plan::Complete => Ok(()),
        }
    }
}

/// Collects the status changes of one supervisor as they happen.
pub struct Changes {
    receiver: broadcast::Receiver<StatusChange>,
    pub seen: Vec<(Instant, StatusChange)>,
    /// Per task, how far `until` has looked through `seen`.
    looked: std::collections::HashMap<String, usize>,
}

impl Changes {
    pub fn watch(handle: &SupervisorHandle) -> Self {
        Self {
            receiver: handle.status_changes(),
            seen: Vec::new(),
            looked: Default::default(),
        }
    }

    /// Takes every change published so far without waiting.
    pub fn drain(&mut self) -> &[(Instant, StatusChange)] {
        loop {
            match self.receiver.try_recv() {
                Ok(change) => self.seen.push((Instant::now(), change)),
                Err(broadcast::error::TryRecvError::Empty)
                | Err(broadcast::error::TryRecvError::Closed) => break,
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    panic!("the test fell {missed} status changes behind")
                }
            }
        }
        &self.seen
    }

    /// Waits for the next change of `task` to `to` after the one the previous `until` for
    /// `task` returned, and returns it with the time it was seen. Changes of other tasks seen
    /// on the way are kept for them. Panics if the stream ends or 60 s pass first.
    pub async fn until(&mut self, task: &str, to: TaskStatus) -> (Instant, StatusChange) {
        let wait = async {
            let mut from = self.looked.get(task).copied().unwrap_or(0);
            loop {
                let found = self.seen[from..]
                    .iter()
                    .position(|(_, change)| &*change.task == task && change.to == to);
                if let Some(offset) = found {
                    self.looked.insert(task.to_owned(), from + offset + 1);
                    return self.seen[from + offset].clone();
                }
                from = self.seen.len();
                match self.receiver.recv().await {
                    Ok(change) => self.seen.push((Instant::now(), change)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        panic!("the test fell {missed} status changes behind")
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        panic!("the supervisor stopped before {task} became {to}")
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("{task} did not become {to}"))
    }

    /// The statuses `task` went through, in order, among the changes seen so far.
    pub fn sequence(&mut self, task: &str) -> Vec<TaskStatus> {
        self.drain();
        self.seen
            .iter()
            .filter(|(_, change)| &*change.task == task)
            .map(|(_, change)| change.to)
            .collect()
    }

    /// The changes of `task` seen so far.
    pub fn of(&mut self, task: &str) -> Vec<(Instant, StatusChange)> {
        self.drain();
        self.seen
            .iter()
            .filter(|(_, change)| &*change.task == task)
            .cloned()
            .collect()
    }

    /// Checks that every change seen is an edge of the state machine and starts where the
    /// previous change of the same task ended. (The first change seen of a task may follow
    /// changes made before the subscription.)
    pub fn assert_valid_edges(&mut self) {
        self.drain();
        let mut last: std::collections::HashMap<Arc<str>, TaskStatus> = Default::default();
        for (_, change) in &self.seen {
            if let Some(&from) = last.get(&change.task) {
                assert_eq!(change.from, from, "{change:?} does not follow {from}");
            }
            assert!(
                change.from.can_change_to(change.to),
                "{} -> {} is not an edge: {change:?}",
                change.from,
                change.to
            );
            last.insert(Arc::clone(&change.task), change.to);
        }
    }
}

/// Lets every task that is ready run, without moving the paused clock.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Lets `by` pass on the paused clock. The clock jumps from one timer to the next while every
/// task waits, so each deadline on the way fires in order, at its own instant.
pub async fn advance(by: Duration) {
    tokio::time::sleep(by).await;
    settle().await;
}

/// Waits until `condition` holds, checking after every millisecond (of paused or real time);
/// panics after 60 s.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let wait = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("never happened: {what}"));
}

/// Waits until the task `task` of `handle` has `status` (see [`eventually`]).
pub async fn status_is(handle: &SupervisorHandle, task: &str, status: TaskStatus) {
    eventually(&format!("{task} is {status}"), || {
        handle
            .task_info(task)
            .ok()
            .flatten()
            .map(|info| info.status)
            == Some(status)
    })
    .await;
}

/// Waits until the task `task` of the child supervisor that `handle`'s task `child` runs has
/// `status`.
pub async fn child_status_is(
    handle: &SupervisorHandle,
    child: &str,
    task: &str,
    status: TaskStatus,
) {
    eventually(&format!("{child}/{task} is {status}"), || {
        handle
            .child(child)
            .ok()
            .flatten()
            .and_then(|child| child.task_info(task).ok().flatten())
            .is_some_and(|info| info.status == status)
    })
    .await;
}

/// Waits until every task of `handle` has finished by itself (`Completed` or `Dead`); panics if
/// 60 s (of paused or real time) pass first.
///
/// This is what `wait()` once did in tests, while a supervisor stopped by itself when its work
/// was done. It lives until told to stop now, as the released crate does, so a test that
/// waits for its tasks to settle says so, and then shuts the supervisor down if it needs to.
pub async fn every_task_final(handle: &SupervisorHandle) {
    every_task_final_within(handle, Duration::from_secs(60)).await;
}

/// [`every_task_final`], for tasks that take longer than a minute to settle: panics if `limit`
/// passes first.
pub async fn every_task_final_within(handle: &SupervisorHandle, limit: Duration) {
    let mut changes = handle.status_changes();
    let settled = async {
        loop {
            let statuses = handle.task_statuses().expect("the supervisor is running");
            if statuses.iter().all(|(_, status)| status.is_final()) {
                return;
            }
            // A change after the subscription wakes the look again; a missed one does too.
            match changes.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    panic!("the supervisor stopped before every task was final")
                }
            }
        }
    };
    tokio::time::timeout(limit, settled)
        .await
        .unwrap_or_else(|_| panic!("some task never became completed or dead"));
}

/// Waits until every task of `handle` is final (see [`every_task_final`]), then shuts the
/// supervisor down and waits for it to stop.
pub async fn finish(handle: &SupervisorHandle) {
    every_task_final(handle).await;
    handle.shutdown().expect("the supervisor is running");
    handle.wait().await.expect("a shutdown ends well");
}

/// Runs the same test body on a paused current-thread runtime and on a two-worker
/// multi-thread runtime. Only for tests that do not depend on time passing.
#[macro_export]
macro_rules! on_both_runtimes {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "current_thread", start_paused = true)]
            async fn current_thread() {
                $body.await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn multi_thread() {
                $body.await
            }
        }
    };
}
