//! systemd's notification protocol (feature `systemd`), against datagram sockets the test
//! binds, by path and by abstract name, with the environment passed in explicitly.
//!
//! On the paused clock: the runtime polls the sockets before it moves the clock, so the
//! instants at which datagrams arrive are the instants the notifier sent them.
#![cfg(all(feature = "systemd", unix))]

mod common;

use std::time::Duration;

use task_supervisor::integrations::systemd::{Environment, Notifier, Ready};
use task_supervisor::{bail, task_fn, SupervisorBuilder, TaskContext, TaskSpec, TaskStatus};
use tokio::net::UnixDatagram;
use tokio::time::Instant;

use common::status_is;

/// A socket systemd would listen on, at a fresh path.
fn bind_path() -> (UnixDatagram, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "task-supervisor-notify-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    (UnixDatagram::bind(&path).expect("bind"), path)
}

fn environment(socket: impl Into<std::ffi::OsString>, watchdog: Option<Duration>) -> Environment {
    Environment {
        notify_socket: Some(socket.into()),
        watchdog_usec: watchdog.map(|timeout| timeout.as_micros().to_string().into()),
        watchdog_pid: Some(std::process::id().to_string().into()),
    }
}

/// The next datagram, and when it came.
async fn next(socket: &UnixDatagram) -> (String, Instant) {
    let mut buffer = vec![0; 4096];
    let length = tokio::time::timeout(Duration::from_secs(60), socket.recv(&mut buffer))
        .await
        .expect("a notification within a minute")
        .expect("recv");
    (
        String::from_utf8(buffer[..length].to_vec()).unwrap(),
        Instant::now(),
    )
}

/// Datagrams until one that `done` accepts; returns all of them.
async fn until(
    socket: &UnixDatagram,
    mut done: impl FnMut(&str) -> bool,
) -> Vec<(String, Instant)> {
    let mut seen = Vec::new();
    loop {
        let (message, at) = next(socket).await;
        let last = done(&message);
        seen.push((message, at));
        if last {
            return seen;
        }
    }
}

fn web() -> impl task_supervisor::SupervisedTask + Clone {
    task_fn(|| async {
        tokio::time::sleep(Duration::from_millis(50)).await; // takes a moment to start
        task_supervisor::heartbeat();
        let token = TaskContext::current().unwrap().cancellation_token();
        token.cancelled().await;
        Ok(())
    })
    .with_heartbeats()
}

#[tokio::test(start_paused = true)]
async fn ready_once_healthy_then_the_watchdog_while_live_then_stopping() {
    let (socket, path) = bind_path();
    let started = Instant::now();
    let handle = SupervisorBuilder::new()
        .with_timeout_threshold(Duration::from_secs(3600))
        .with_task("web", web())
        .build()
        .run();
    let notifier =
        Notifier::from_environment(&environment(&path, Some(Duration::from_millis(200))))
            .unwrap()
            .expect("a socket is named");
    assert_eq!(
        notifier.watchdog_interval(),
        Some(Duration::from_millis(100))
    );
    let driver = notifier.spawn(&handle, Ready::WhenHealthy);

    // READY=1 once web is healthy (after its 50 ms start), with the counts.
    let before = until(&socket, |m| m.starts_with("READY=1")).await;
    let (ready, ready_at) = before.last().unwrap().clone();
    assert_eq!(ready, "READY=1\nSTATUS=live, ready; 1 healthy");
    assert!(
        ready_at >= started + Duration::from_millis(50),
        "not before web was up"
    );

    // WATCHDOG=1 every 100 ms (half of WATCHDOG_USEC), on the dot.
    let beats: Vec<Instant> = until(&socket, {
        let mut count = 0;
        move |m| {
            count += usize::from(m == "WATCHDOG=1");
            count == 3
        }
    })
    .await
    .into_iter()
    .filter(|(m, _)| m == "WATCHDOG=1")
    .map(|(_, at)| at)
    .collect();
    let first = beats[0] - started;
    assert!(
        first >= Duration::from_millis(100) && first <= Duration::from_millis(101),
        "{first:?}"
    );
    assert_eq!(beats[1] - beats[0], Duration::from_millis(100));
    assert_eq!(beats[2] - beats[1], Duration::from_millis(100));

    // A significant task dies: not live any more, so the watchdog goes hungry (and the
    // counts, sent at most once a second, say so).
    handle
        .add_task_spec(
            "import",
            TaskSpec::new(task_fn(|| async { bail!("bad input") }))
                .significant()
                .with_max_restart_attempts(0),
        )
        .unwrap();
    status_is(&handle, "import", TaskStatus::Dead).await;
    let died_at = Instant::now();
    let mut status_seen = None;
    while Instant::now() < died_at + Duration::from_millis(1500) {
        let left = died_at + Duration::from_millis(1500) - Instant::now();
        let Ok((message, at)) = tokio::time::timeout(left, next(&socket)).await else {
            break;
        };
        // The watchdog timer of the 100 ms in flight may still have fired before the death.
        assert!(
            message != "WATCHDOG=1" || at <= died_at + Duration::from_millis(1),
            "fed the watchdog while not live, at {:?}",
            at - died_at
        );
        if message.starts_with("STATUS=") {
            status_seen = Some(message);
        }
    }
    assert_eq!(
        status_seen.as_deref(),
        Some("STATUS=not live, not ready: significant task `import` is dead, `import` is dead; 1 healthy, 1 dead")
    );

    // Shutdown: STOPPING=1, and the notifier ends with the supervisor.
    handle.shutdown().unwrap();
    until(&socket, |m| m == "STOPPING=1").await;
    handle.wait().await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), driver)
        .await
        .expect("the notifier ends with the supervisor")
        .unwrap();
}

#[cfg(target_os = "linux")]
#[tokio::test(start_paused = true)]
async fn an_abstract_socket_name_and_a_ready_sent_by_hand() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("task-supervisor-test-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let std_socket = std::os::unix::net::UnixDatagram::bind_addr(&address).expect("bind");
    std_socket.set_nonblocking(true).unwrap();
    let socket = UnixDatagram::from_std(std_socket).unwrap();

    let handle = SupervisorBuilder::new()
        .with_task("web", web())
        .build()
        .run();
    let notifier = Notifier::from_environment(&environment(format!("@{name}"), None))
        .unwrap()
        .unwrap();
    assert_eq!(
        notifier.watchdog_interval(),
        None,
        "no WATCHDOG_USEC, no watchdog"
    );
    let driver = notifier.clone().spawn(&handle, Ready::Manually);
    status_is(&handle, "web", TaskStatus::Healthy).await;
    // Ready::Manually: the counts come, READY=1 does not, until the program says so.
    let (first, _) = next(&socket).await;
    assert!(first.starts_with("STATUS="), "{first}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    notifier.ready().unwrap();
    let seen = until(&socket, |m| m == "READY=1").await;
    assert!(
        seen.iter()
            .all(|(m, _)| m.starts_with("STATUS=") || m == "READY=1"),
        "nothing but counts before the READY=1 sent by hand: {seen:?}"
    );

    // The notifier holds no handle: dropping the last one stops the supervisor.
    drop(handle);
    until(&socket, |m| m == "STOPPING=1").await;
    tokio::time::timeout(Duration::from_secs(60), driver)
        .await
        .expect("the notifier ends with the supervisor")
        .unwrap();
}

#[tokio::test]
async fn outside_systemd_there_is_no_notifier() {
    assert!(Notifier::from_environment(&Environment::default())
        .unwrap()
        .is_none());
    let other = Environment {
        watchdog_pid: Some("1".into()),
        ..environment("/run/systemd/notify", Some(Duration::from_secs(10)))
    };
    let notifier = Notifier::from_environment(&other).unwrap().unwrap();
    assert_eq!(
        notifier.watchdog_interval(),
        None,
        "the watchdog is for process 1"
    );
}

#[tokio::test(start_paused = true)]
async fn ready_waits_for_the_tasks_of_a_child_supervisor() {
    let (socket, path) = bind_path();
    let started = Instant::now();
    // The child's task takes 2 s to beat for the first time; its parent's task (the child
    // supervisor itself) is healthy at once, and the parent sees no event when the child's
    // task comes up.
    let slow = task_fn(|| async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        task_supervisor::heartbeat();
        std::future::pending().await
    })
    .with_heartbeats();
    let child = task_supervisor::ChildSupervisor::new(move || {
        SupervisorBuilder::new()
            .with_timeout_threshold(Duration::from_secs(3600))
            .with_health_check_initial_delay(Duration::from_secs(3600))
            .with_task("slow", slow.clone())
    });
    let handle = SupervisorBuilder::new()
        .with_task("api", child)
        .build()
        .run();
    Notifier::from_environment(&environment(&path, None))
        .unwrap()
        .unwrap()
        .spawn(&handle, Ready::WhenHealthy);
    let seen = until(&socket, |m| m.starts_with("READY=1")).await;
    let (ready, at) = seen.last().unwrap();
    assert_eq!(ready, "READY=1\nSTATUS=live, ready; 1 healthy");
    let after = *at - started;
    assert!(
        after >= Duration::from_secs(2) && after <= Duration::from_millis(2300),
        "READY=1 came {after:?} after the start, the child's task was up after 2 s"
    );
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_task_name_cannot_add_an_assignment_of_its_own() {
    let (socket, path) = bind_path();
    let handle = SupervisorBuilder::new()
        .with_task_spec(
            "evil\nREADY=1",
            TaskSpec::new(task_fn(|| async { bail!("no") }))
                .with_base_restart_delay(Duration::from_secs(600)),
        )
        .build()
        .run();
    Notifier::from_environment(&environment(&path, None))
        .unwrap()
        .unwrap()
        .spawn(&handle, Ready::WhenHealthy);
    status_is(&handle, "evil\nREADY=1", TaskStatus::Failed).await;
    // Two seconds of counts: each one line, and never a READY (the task is down).
    let until_at = Instant::now() + Duration::from_secs(2);
    while let Ok((message, _)) =
        tokio::time::timeout(until_at - Instant::now(), next(&socket)).await
    {
        assert!(message.starts_with("STATUS="), "{message:?}");
        assert!(!message.contains('\n'), "{message:?}");
    }
    handle.shutdown().unwrap();
    handle.wait().await.unwrap();
}
