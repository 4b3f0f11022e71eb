//! The health endpoints and the live page (feature `axum`), through a real HTTP client against
//! a server on a loopback port the test binds, and the page as headless Chromium renders it.
//!
//! Real sockets, so real time: each test waits for the state it needs (a status, a stop)
//! rather than for a duration.
#![cfg(feature = "axum")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use task_supervisor::integrations::http;
use task_supervisor::{
    bail, task_fn, ChildSupervisor, SupervisorBuilder, SupervisorHandle, TaskContext, TaskSpec,
    TaskStatus,
};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use common::{child_status_is, status_is};

/// One response: status code, content type, body.
struct Reply {
    status: u16,
    content_type: String,
    cache_control: String,
    body: String,
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}{path}").parse().expect("a valid URI");
    let response = client.get(uri).await.expect("the server answers");
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (status, content_type, cache_control) = (
        response.status().as_u16(),
        header("content-type"),
        header("cache-control"),
    );
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a whole body")
        .to_bytes();
    Reply {
        status,
        content_type,
        cache_control,
        body: String::from_utf8(body.to_vec()).expect("UTF-8"),
    }
}

/// Serves the router of `handle`, merged into an application's own, on a port of its choice.
async fn serve(handle: &SupervisorHandle) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    let app: axum::Router = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello" }))
        .merge(http::router(handle.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A task that runs until asked to stop, then returns at once.
fn service() -> impl task_supervisor::SupervisedTask + Clone {
    task_fn(move || async move {
        let token = TaskContext::current()
            .expect("inside a run")
            .cancellation_token();
        token.cancelled().await;
        Ok(())
    })
}

/// A task that runs until asked to stop, then cleans up until `done` is notified.
fn cleaning_up(done: Arc<Notify>) -> impl task_supervisor::SupervisedTask + Clone {
    task_fn(move || {
        let done = Arc::clone(&done);
        async move {
            let token = TaskContext::current()
                .expect("inside a run")
                .cancellation_token();
            token.cancelled().await;
            done.notified().await;
            Ok(())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_tasks_and_ends_when_shutdown_begins() {
    let cleaned_up = Arc::new(Notify::new());
    let handle = SupervisorBuilder::new()
        .with_task("web", cleaning_up(Arc::clone(&cleaned_up)))
        .with_grace_period(Duration::from_secs(3600))
        .build()
        .run();
    let addr = serve(&handle).await;
    assert_eq!(
        get(addr, "/hello").await.body,
        "hello",
        "the app's own route"
    );

    status_is(&handle, "web", TaskStatus::Healthy).await;
    let ready = get(addr, "/readyz").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "live, ready\n"));
    assert_eq!(ready.content_type, "text/plain; charset=utf-8");
    assert_eq!(ready.cache_control, "no-store");
    assert_eq!(get(addr, "/livez").await.status, 200);

    // A task that does not count for readiness may be down: still ready.
    handle
        .add_task_spec(
            "reindex",
            TaskSpec::new(task_fn(|| async { bail!("disk full") }))
                .with_readiness(false)
                .with_base_restart_delay(Duration::from_secs(600)),
        )
        .unwrap();
    status_is(&handle, "reindex", TaskStatus::Failed).await;
    assert_eq!(get(addr, "/readyz").await.status, 200);

    // A task that counts and is down: still live, not ready, and the body says which.
    handle
        .add_task_spec(
            "db",
            TaskSpec::new(task_fn(|| async { bail!("connection refused") }))
                .with_base_restart_delay(Duration::from_secs(600)),
        )
        .unwrap();
    status_is(&handle, "db", TaskStatus::Failed).await;
    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body, "live, not ready: `db` is failed\n");
    assert_eq!(get(addr, "/livez").await.status, 200);
    handle.kill_task("db").unwrap();
    status_is(&handle, "db", TaskStatus::Dead).await;
    assert_eq!(
        get(addr, "/readyz").await.status,
        503,
        "a killed task is down"
    );

    // From the moment shutdown begins: not ready, still live while the runs stop.
    handle.shutdown().unwrap();
    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(
        ready.body.starts_with("live, not ready: shutting down"),
        "{}",
        ready.body
    );
    assert_eq!(
        get(addr, "/livez").await.status,
        200,
        "web is still cleaning up"
    );

    // Stopped: neither.
    cleaned_up.notify_one();
    handle.wait().await.unwrap();
    let live = get(addr, "/livez").await;
    assert_eq!((live.status, live.body.as_str()), (503, "stopped\n"));
    assert_eq!(get(addr, "/readyz").await.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_significant_task_makes_the_process_not_live() {
    let handle = SupervisorBuilder::new()
        .with_task("web", service())
        .with_task_spec(
            "import",
            TaskSpec::new(task_fn(|| async { bail!("bad input") }))
                .significant()
                .with_max_restart_attempts(0),
        )
        .build()
        .run();
    let addr = serve(&handle).await;
    status_is(&handle, "import", TaskStatus::Dead).await;
    let live = get(addr, "/livez").await;
    assert_eq!(live.status, 503);
    assert!(
        live.body.contains("significant task `import` is dead"),
        "{}",
        live.body
    );
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();

    // A significant task killed on purpose is no failure: still live (not ready: it is down).
    let handle = SupervisorBuilder::new()
        .with_task_spec("cron", TaskSpec::new(service()).significant())
        .build()
        .run();
    let addr = serve(&handle).await;
    status_is(&handle, "cron", TaskStatus::Healthy).await;
    handle.kill_task("cron").unwrap();
    status_is(&handle, "cron", TaskStatus::Dead).await;
    let live = get(addr, "/livez").await;
    assert_eq!(
        (live.status, live.body.as_str()),
        (200, "live, not ready: `cron` is dead\n")
    );
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_lists_every_task_as_json_with_children_nested() {
    let web = ChildSupervisor::new(|| SupervisorBuilder::new().with_task("acceptor", service()));
    let handle = SupervisorBuilder::new()
        .with_task("web", web)
        .with_task_spec(
            "db",
            TaskSpec::new(task_fn(|| async { bail!("connection <refused>") }))
                .with_base_restart_delay(Duration::from_secs(600))
                .significant(),
        )
        .build()
        .run();
    let addr = serve(&handle).await;
    status_is(&handle, "db", TaskStatus::Failed).await;
    child_status_is(&handle, "web", "acceptor", TaskStatus::Healthy).await;

    let reply = get(addr, "/tasks").await;
    assert_eq!(
        (reply.status, reply.content_type.as_str()),
        (200, "application/json")
    );
    let body: Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(body["live"], true);
    assert_eq!(body["ready"], false);
    let tasks = body["tasks"].as_array().expect("a list");
    assert_eq!(tasks.len(), 2);
    let (web, db) = (&tasks[0], &tasks[1]);
    assert_eq!(
        (web["name"].as_str(), web["status"].as_str()),
        (Some("web"), Some("healthy"))
    );
    assert!(web["running_for_seconds"].as_f64().is_some());
    let children = web["children"]
        .as_array()
        .expect("web runs a child supervisor");
    assert_eq!(children.len(), 1);
    assert_eq!(children[0]["name"], "acceptor");
    assert_eq!(children[0]["status"], "healthy");
    assert!(children[0].get("children").is_none());

    assert_eq!(db["status"], "failed");
    assert_eq!(db["policy"], "transient");
    assert_eq!(db["significant"], true);
    assert_eq!(db["counts_for_readiness"], true);
    assert_eq!(db["attempt"], 1);
    assert_eq!(db["last_failure"]["reason"], "connection <refused>");
    assert!(db["last_failure"]["seconds_ago"].as_f64().unwrap() >= 0.0);
    assert_eq!(db["running_for_seconds"], Value::Null);
    assert!(db.get("children").is_none());

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
    let after: Value = serde_json::from_str(&get(addr, "/tasks").await.body).unwrap();
    assert_eq!(after["live"], false);
    assert_eq!(after["tasks"], Value::Array(Vec::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_every_task_and_escapes_names_and_errors() {
    let handle = SupervisorBuilder::new()
        .with_task("<b>web</b>", service())
        .with_task_spec(
            "db",
            TaskSpec::new(task_fn(|| async { bail!("<script>alert('x')</script>") }))
                .with_base_restart_delay(Duration::from_secs(600)),
        )
        .build()
        .run();
    let addr = serve(&handle).await;
    status_is(&handle, "db", TaskStatus::Failed).await;
    status_is(&handle, "<b>web</b>", TaskStatus::Healthy).await;

    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    let html = page.body;
    assert!(
        html.contains("<meta http-equiv=\"refresh\""),
        "it reloads itself"
    );
    assert!(
        !html.contains("<script>"),
        "an error's markup is not markup: {html}"
    );
    assert!(
        !html.contains("<b>web</b>"),
        "a name's markup is not markup"
    );
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("data-task=\"&lt;b&gt;web&lt;/b&gt;\" data-status=\"healthy\""));
    assert!(html.contains("data-task=\"db\" data-status=\"failed\""));
    assert!(html.contains("live, not ready: `db` is failed"));
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_until_the_supervisor_stops() {
    let handle = SupervisorBuilder::new()
        .with_task("web", service())
        .build()
        .run();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(http::serve_on(handle.clone(), listener));
    status_is(&handle, "web", TaskStatus::Healthy).await;
    assert_eq!(get(addr, "/livez").await.status, 200);

    // The server holds no handle: dropping the last one stops the supervisor, and the server
    // with it.
    drop(handle);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server ends with the supervisor")
        .unwrap()
        .expect("no error");
}

/// Where Chromium is, if it is installed.
fn chromium() -> Option<std::path::PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|path| path.exists())
}

/// Runs headless Chromium on `url` with `args`; returns what it printed.
fn run_chromium(binary: &std::path::Path, url: &str, args: &[&str]) -> String {
    let profile =
        std::env::temp_dir().join(format!("task-supervisor-chromium-{}", std::process::id()));
    let output = std::process::Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_renders_in_a_browser_with_every_task_and_its_status() {
    let Some(binary) = chromium() else {
        // `.ci/run` installs Chromium and sets this, so that CI cannot skip the test.
        assert!(
            std::env::var_os("TASK_SUPERVISOR_REQUIRE_BROWSER").is_none(),
            "Chromium is required but not installed"
        );
        eprintln!("skipped: no Chromium here (`bash .ci/run` installs it)");
        return;
    };
    let api = ChildSupervisor::new(|| SupervisorBuilder::new().with_task("acceptor", service()));
    let handle = SupervisorBuilder::new()
        .with_task("api", api)
        .with_task("cache", service())
        .with_task_spec(
            "db",
            TaskSpec::new(task_fn(|| async { bail!("connection refused") }))
                .with_base_restart_delay(Duration::from_secs(600)),
        )
        .with_task("migrate", task_fn(|| async { Ok(()) }))
        .with_task("<i>odd</i>", service())
        .build()
        .run();
    let addr = serve(&handle).await;
    status_is(&handle, "db", TaskStatus::Failed).await;
    status_is(&handle, "migrate", TaskStatus::Completed).await;
    status_is(&handle, "<i>odd</i>", TaskStatus::Healthy).await;
    status_is(&handle, "cache", TaskStatus::Healthy).await;
    child_status_is(&handle, "api", "acceptor", TaskStatus::Healthy).await;

    let url = format!("http://{addr}/");
    let dom = {
        let (binary, url) = (binary.clone(), url.clone());
        tokio::task::spawn_blocking(move || run_chromium(&binary, &url, &["--dump-dom"]))
            .await
            .unwrap()
    };
    // The rendered DOM, not the served text: Chromium serialises the tree it built.
    for (task, status) in [
        ("api", "healthy"),
        ("api/acceptor", "healthy"),
        ("cache", "healthy"),
        ("db", "failed"),
        ("migrate", "completed"),
    ] {
        let row = format!("data-task=\"{task}\" data-status=\"{status}\"");
        assert!(
            dom.contains(&row),
            "{task} is not listed as {status}: {dom}"
        );
    }
    assert!(dom.contains("<tbody>"), "a table was built: {dom}");
    assert!(dom.contains("connection refused"));
    // A name's markup stays text: no element was made of it.
    assert!(dom.contains("&lt;i&gt;odd&lt;/i&gt;"), "{dom}");
    assert!(!dom.contains("<i>odd</i>"), "{dom}");

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let screenshot = target.join("live-page.png");
    let shot_arg = format!("--screenshot={}", screenshot.display());
    tokio::task::spawn_blocking(move || {
        run_chromium(&binary, &url, &[&shot_arg, "--window-size=1100,420"])
    })
    .await
    .unwrap();
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert_eq!(
        &png[..8],
        b"\x89PNG\r\n\x1a\n",
        "a PNG at {}",
        screenshot.display()
    );

    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_nests_under_a_prefix_of_the_application() {
    let handle = SupervisorBuilder::new()
        .with_task("web", service())
        .build()
        .run();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app: axum::Router = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { "the application's own page" }),
        )
        .nest("/supervisor", http::router(handle.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    status_is(&handle, "web", TaskStatus::Healthy).await;

    assert_eq!(get(addr, "/").await.body, "the application's own page");
    assert_eq!(get(addr, "/supervisor/readyz").await.status, 200);
    let page = get(addr, "/supervisor").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<a href=\"/supervisor/tasks\">"),
        "the page links to the JSON beside it: {}",
        page.body
    );
    let tasks: Value = serde_json::from_str(&get(addr, "/supervisor/tasks").await.body).unwrap();
    assert_eq!(tasks["tasks"][0]["name"], "web");
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}
