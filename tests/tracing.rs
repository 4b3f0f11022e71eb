//! tracing: each run in a span with its task and attempt, and the supervisor's events at their
//! levels with their fields, seen through a capturing layer.

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{Scripted, Step};
use task_supervisor::{bail, SupervisedTask, SupervisorBuilder, TaskResult};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const MS: Duration = Duration::from_millis(1);

/// One event as the layer saw it: its level, message, fields, and the fields of the spans it
/// was in (innermost last).
#[derive(Debug, Clone)]
struct Seen {
    level: Level,
    message: String,
    fields: BTreeMap<String, String>,
    spans: BTreeMap<String, String>,
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

impl Capture {
    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    fn find(&self, message: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|seen| seen.message == message)
            .collect()
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        let mut fields = Fields::default();
        attributes.record(&mut fields);
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, context: Context<'_, S>) {
        if let Some(span) = context.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, context: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut spans = BTreeMap::new();
        if let Some(scope) = context.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<Fields>() {
                    spans.extend(span_fields.0.clone());
                }
            }
        }
        let message = fields.0.remove("message").unwrap_or_default();
        self.0.lock().unwrap().push(Seen {
            level: *event.metadata().level(),
            message,
            fields: fields.0,
            spans,
        });
    }
}

/// One test at a time: tracing caches whether a callsite is of interest for every thread at
/// once, and a test thread without a subscriber that reaches a callsite while another test's
/// thread-local subscriber is being set can leave it cached as of no interest.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A capturing subscriber for this thread (every test here runs on a current-thread runtime,
/// so the supervisor's loop and runs log on it), and the lock that keeps tests apart.
async fn capture() -> (
    Capture,
    tracing::subscriber::DefaultGuard,
    tokio::sync::MutexGuard<'static, ()>,
) {
    let alone = ONE_AT_A_TIME.lock().await;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    (capture, guard, alone)
}

/// Logs from inside its run, and fails its first run.
#[derive(Clone)]
struct Chatty(Arc<Mutex<u32>>);

#[async_trait]
impl SupervisedTask for Chatty {
    async fn run(&mut self) -> TaskResult {
        let run = {
            let mut runs = self.0.lock().unwrap();
            *runs += 1;
            *runs
        };
        tracing::info!(run, "inside the run");
        if run == 1 {
            bail!("first run fails");
        }
        std::future::pending().await
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn what_a_run_logs_carries_its_task_and_attempt() {
    let (capture, _guard, _alone) = capture().await;
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(MS * 10)
        .with_restart_jitter(0.0)
        .with_task("chatty", Chatty(Arc::default()))
        .build()
        .run();

    tokio::time::sleep(MS * 50).await;

    let inside = capture.find("inside the run");
    assert_eq!(inside.len(), 2, "{:?}", capture.seen());
    for (seen, attempt) in inside.iter().zip(["0", "1"]) {
        assert_eq!(seen.spans.get("task").map(String::as_str), Some("chatty"));
        assert_eq!(seen.spans.get("attempt").map(String::as_str), Some(attempt));
    }
    handle.shutdown().unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn zero_back_off_restarts_in_place_record_their_attempt() {
    let (capture, _guard, _alone) = capture().await;
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(Duration::ZERO)
        .with_task("chatty", Chatty(Arc::default()))
        .build()
        .run();

    tokio::time::sleep(MS).await;

    let attempts: Vec<String> = capture
        .find("inside the run")
        .iter()
        .filter_map(|seen| seen.spans.get("attempt").cloned())
        .collect();
    assert_eq!(attempts, ["0", "1"]);
    handle.shutdown().unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_supervisors_events_are_logged_at_their_levels_with_their_fields() {
    std::panic::set_hook(Box::new(|_| {}));
    let (capture, _guard, _alone) = capture().await;
    let handle = SupervisorBuilder::new()
        .with_base_restart_delay(MS * 10)
        .with_restart_jitter(0.0)
        .with_max_restart_attempts(1)
        .with_timeout_threshold(MS * 300)
        .with_heartbeat_interval(MS * 50)
        .with_task("fails", Scripted::always(Step::Fail))
        .with_task("panics", Scripted::new([Step::Panic], Step::Pend))
        .with_task(
            "hangs",
            Scripted::new(
                [Step::BeatThenHang {
                    every: MS,
                    beats: 1,
                }],
                Step::Pend,
            ),
        )
        .build()
        .run();

    tokio::time::sleep(MS * 500).await;
    let _ = std::panic::take_hook();

    let one = |message: &str, task: &str| -> Seen {
        capture
            .find(message)
            .into_iter()
            .find(|seen| seen.fields.get("task").map(String::as_str) == Some(task))
            .unwrap_or_else(|| panic!("no {message:?} for {task}: {:?}", capture.seen()))
    };
    let started = one("run started", "fails");
    assert_eq!(started.level, Level::DEBUG);
    assert_eq!(started.fields["attempt"], "0");
    let failed = one("run failed", "fails");
    assert_eq!(failed.level, Level::WARN);
    assert_eq!(failed.fields["reason"], "scripted failure");
    let scheduled = one("restart scheduled", "fails");
    assert_eq!(scheduled.level, Level::INFO);
    assert_eq!(scheduled.fields["delay"], "10ms");
    assert_eq!(scheduled.fields["attempt"], "1");
    let dead = one("task is dead", "fails");
    assert_eq!(dead.level, Level::ERROR);
    assert_eq!(dead.fields["reason"], "scripted failure");
    let panicked = one("run panicked", "panics");
    assert_eq!(panicked.level, Level::ERROR);
    assert_eq!(panicked.fields["panic"], "scripted panic");
    let hung = one("run missed its heartbeat: hung", "hangs");
    assert_eq!(hung.level, Level::WARN);
    assert_eq!(hung.fields["timeout"], "300ms");
    handle.shutdown().unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_library_installs_no_subscriber() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let handle = SupervisorBuilder::new()
        .with_task("fails", Scripted::always(Step::Fail))
        .build()
        .run();
    tokio::time::sleep(MS * 10).await;
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    // Outside every test's own subscriber, the default is still no subscriber at all.
    let none = tracing::dispatcher::get_default(|dispatch| {
        dispatch.is::<tracing::subscriber::NoSubscriber>()
    });
    assert!(none, "the library set a subscriber");
}
