//! Health endpoints and a live page, for [axum](https://docs.rs/axum/0.8) 0.8 (feature `axum`).
//!
//! [`router`] is a `Router` to merge into an application's own; [`serve`] runs it alone, for a
//! service that has no HTTP server of its own. The routes:
//!
//! | route | answers |
//! | --- | --- |
//! | `GET /livez` | `200` while the supervisor runs and is not wedged ([`Health::is_live`]); `503` otherwise |
//! | `GET /readyz` | `200` once every task that counts for readiness is healthy ([`Health::is_ready`]); `503` while starting, while one is down, and from the moment shutdown begins |
//! | `GET /tasks` | the [`TaskInfo`] of every task as JSON, each child supervisor's tasks nested under `children` |
//! | `GET /` | a page that refreshes itself every 2 seconds: every task, its status, restarts, last failure, last beat and blocked poll |
//!
//! Machines read only the status codes of `/livez` and `/readyz`; their body is one line for a
//! person ([`Health`]'s `Display`). Nothing is cached (`Cache-Control: no-store`).
//!
//! # `/tasks`
//!
//! ```json
//! {
//!   "live": true,
//!   "ready": false,
//!   "health": "live, not ready: `db` is failed",
//!   "tasks": [
//!     {
//!       "name": "db", "status": "failed", "policy": "transient",
//!       "attempt": 1, "restarts": 1,
//!       "last_failure": { "reason": "connection refused", "seconds_ago": 0.4 },
//!       "seconds_since_heartbeat": null, "running_for_seconds": null,
//!       "healthy_for_seconds": null, "watched": false, "blocked_for_seconds": null,
//!       "significant": false, "counts_for_readiness": true
//!     }
//!   ]
//! }
//! ```
//!
//! Durations are in seconds (floating point); a task that runs a child supervisor also has
//! `"children": [...]`, in the same form.

use std::net::SocketAddr;

use axum::extract::{OriginalUri, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::Observer;
use crate::observe::info::TaskInfo;
use crate::shared::Shared;
use crate::spec::RestartPolicy;
use crate::{Health, SupervisorHandle};

/// The health routes and the live page for the supervisor behind `handle`, to merge into an
/// application's router (any state `S`).
///
/// The router does not keep the supervisor up: it holds no handle, and once the supervisor
/// has stopped `/livez` and `/readyz` answer `503` and `/tasks` lists nothing.
///
/// Merge it into an application that has none of its four routes (axum refuses a route
/// defined twice), or nest it under a prefix of its own:
/// `Router::new().nest("/supervisor", http::router(handle))` serves the page at
/// `/supervisor` and the probes at `/supervisor/livez` and `/supervisor/readyz`.
///
/// # Examples
///
/// ```
/// use axum::routing::get;
/// use axum::Router;
/// use task_supervisor::{integrations::http, task_fn, SupervisorBuilder};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let handle = SupervisorBuilder::new()
///     .with_task("worker", task_fn(std::future::pending))
///     .build()
///     .run();
/// let app: Router = Router::new()
///     .route("/hello", get(|| async { "hello" }))
///     .merge(http::router(handle.clone()));
/// # drop(app);
/// # }
/// ```
pub fn router<S>(handle: SupervisorHandle) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/tasks", get(tasks))
        .route("/", get(page))
        .with_state(Observer::of(&handle))
}

/// Serves [`router`] alone on `addr` until the supervisor has stopped, for a service that has
/// no HTTP server of its own. Requests in flight when it stops are answered first.
///
/// # Errors
///
/// The error of binding `addr`, or of accepting on it.
///
/// # Examples
///
/// ```no_run
/// use task_supervisor::{integrations::http, task_fn, SupervisorBuilder};
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// let handle = SupervisorBuilder::new()
///     .with_task("worker", task_fn(std::future::pending))
///     .build()
///     .run();
/// tokio::spawn(http::serve(handle.clone(), "127.0.0.1:8080".parse().unwrap()));
/// handle.wait().await.ok();
/// # Ok(())
/// # }
/// ```
pub async fn serve(handle: SupervisorHandle, addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_on(handle, listener).await
}

/// As [`serve`], on a listener bound already (bind `127.0.0.1:0` to let the system pick a
/// port, and read it from the listener first).
///
/// # Errors
///
/// The error of accepting on `listener`.
pub async fn serve_on(handle: SupervisorHandle, listener: TcpListener) -> std::io::Result<()> {
    let stopped = handle.shared_state().stopped.clone();
    let app: Router = router(handle);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving the supervisor's health endpoints and live page");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopped.cancelled().await })
        .await
}

fn no_store(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn probe(ok: bool, health: &Health) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    no_store(status, "text/plain; charset=utf-8", format!("{health}\n"))
}

async fn livez(State(observer): State<Observer>) -> Response {
    let health = observer.health();
    probe(health.is_live(), &health)
}

async fn readyz(State(observer): State<Observer>) -> Response {
    let health = observer.health();
    probe(health.is_ready(), &health)
}

async fn tasks(State(observer): State<Observer>) -> Response {
    let health = observer.health();
    let now = Instant::now();
    let tasks: Vec<Value> = Node::tree(&observer.0)
        .iter()
        .map(|node| node.to_json(now))
        .collect();
    let body = json!({
        "live": health.is_live(),
        "ready": health.is_ready(),
        "health": health.to_string(),
        "tasks": tasks,
    });
    no_store(StatusCode::OK, "application/json", body.to_string())
}

async fn page(State(observer): State<Observer>, OriginalUri(uri): OriginalUri) -> Response {
    let health = observer.health();
    // The JSON beside the page, wherever the router is nested: `/tasks`, `/prefix/tasks`.
    let tasks = format!("{}/tasks", uri.path().trim_end_matches('/'));
    let html = super::page::render(&health, &Node::tree(&observer.0), &tasks, Instant::now());
    no_store(StatusCode::OK, "text/html; charset=utf-8", html)
}

/// One task, with the tasks of the child supervisor it runs, if it runs one.
pub(super) struct Node {
    pub(super) info: TaskInfo,
    pub(super) children: Option<Vec<Node>>,
}

impl Node {
    /// The tasks of the supervisor behind `shared`, in start order, down the tree.
    pub(super) fn tree(shared: &Shared) -> Vec<Node> {
        let blocked = shared.blocked_now();
        let children = shared.children();
        let mut nodes = Vec::with_capacity(shared.registry.len());
        let listed = shared.registry.for_each_task_info(
            shared.epoch,
            |id| blocked.of(id),
            |id, _, info| {
                let children = children.get(&id).map(|child| Node::tree(&child.shared));
                nodes.push(Node { info, children });
            },
        );
        if listed.is_err() {
            nodes.clear();
        }
        nodes
    }

    fn to_json(&self, now: Instant) -> Value {
        let info = &self.info;
        let ago = |at: Instant| now.saturating_duration_since(at).as_secs_f64();
        let mut value = json!({
            "name": &*info.name,
            "status": info.status.to_string(),
            "policy": policy_name(info.policy),
            "attempt": info.attempt,
            "restarts": info.restarts,
            "last_failure": info.last_failure.as_ref().map(|failure| json!({
                "reason": &*failure.reason,
                "seconds_ago": ago(failure.at),
            })),
            "seconds_since_heartbeat": info.since_last_heartbeat.map(|d| d.as_secs_f64()),
            "running_for_seconds": info.run_started_at.map(ago),
            "healthy_for_seconds": info.healthy_since.map(ago),
            "watched": info.watched,
            "blocked_for_seconds": info.blocked_for.map(|d| d.as_secs_f64()),
            "significant": info.significant,
            "counts_for_readiness": info.counts_for_readiness,
        });
        if let (Some(children), Value::Object(fields)) = (&self.children, &mut value) {
            let children = children.iter().map(|child| child.to_json(now)).collect();
            fields.insert("children".to_owned(), Value::Array(children));
        }
        value
    }
}

pub(super) fn policy_name(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Permanent => "permanent",
        RestartPolicy::Transient => "transient",
        RestartPolicy::Temporary => "temporary",
    }
}
