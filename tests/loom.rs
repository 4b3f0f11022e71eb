//! Model checks, with `loom`, of the state that handles, runs and the loop share: the
//! registry (`src/registry.rs`) and a run's context (`src/context.rs`). `loom` runs each test
//! body under every interleaving (and every weak-memory outcome) of its threads' atomic and lock
//! operations, on the real code: built with `--cfg loom`, those files take their atomics and
//! locks from `loom` (see `src/sync.rs`).
//!
//! Opt-in, since the whole crate must be built with the flag:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --test loom
//! ```
//!
//! The threads stand for the parties the crate has: the loop (the test's main thread), a run
//! (or a task the run handed its context to), and handles on other threads. A message to the
//! loop is modelled by a push onto a `loom` mutex-protected queue, under the same registry
//! lock as the real send.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use task_supervisor::loom_model::{LoomEntry, LoomRegistry, LoomRun};
use task_supervisor::{SupervisorHandleError, TaskStatus};

/// What the loop's channel carries, as far as these checks care.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Add { name: String, id: u32 },
    Restart { id: u32 },
    Shutdown,
}

type Queue = Arc<Mutex<Vec<Sent>>>;

fn queue() -> Queue {
    Arc::new(Mutex::new(Vec::new()))
}

fn add(registry: &LoomRegistry, queue: &Queue, name: &str) -> Result<(), SupervisorHandleError> {
    registry.add(name, |name, entry| {
        queue.lock().unwrap().push(Sent::Add {
            name: name.to_string(),
            id: entry.id(),
        });
        Ok(())
    })
}

fn sent(queue: &Queue) -> Vec<Sent> {
    queue.lock().unwrap().clone()
}

/// Where a status lies on the path a fresh task's statuses take.
fn rank(status: TaskStatus) -> u8 {
    match status {
        TaskStatus::Created => 0,
        TaskStatus::Starting => 1,
        TaskStatus::Healthy => 2,
        other => panic!("{other} was never published"),
    }
}

// ----- heartbeats -----

/// The loop checks a run's heartbeat (its timeout fell due) while the run beats. The check may
/// see the beat or not, but a beat the loop was told about (the progress message, modelled by a
/// release store the loop acquires) is always visible to the check that follows, and the
/// stamps the loop reads never go backwards.
#[test]
fn a_heartbeat_racing_the_timeout_check_is_never_half_seen() {
    loom::model(|| {
        let run = Arc::new(LoomRun::new());
        let announced = Arc::new(AtomicBool::new(false));
        let beater = {
            let run = Arc::clone(&run);
            let announced = Arc::clone(&announced);
            thread::spawn(move || {
                run.beat();
                announced.store(true, Ordering::Release);
                run.beat();
            })
        };

        // The loop: a timeout check, then whatever it learns.
        let checked = run.last_beat();
        let told = announced.load(Ordering::Acquire);
        let rechecked = run.last_beat();
        if told {
            assert!(
                rechecked.is_some(),
                "an announced beat is visible to the loop"
            );
        }
        assert!(
            rechecked >= checked,
            "stamps went backwards: {checked:?} then {rechecked:?}"
        );

        beater.join().unwrap();
        let last = run
            .last_beat()
            .expect("both beats happened before the join");
        assert!(Some(last) >= rechecked);
        assert_eq!(
            run.progress_messages(),
            1,
            "the first beat is announced exactly once"
        );
    });
}

/// Two parties of one run (the run and a task it handed its context to) send their first beat
/// at the same time: the loop hears of a first beat exactly once.
#[test]
fn racing_first_beats_are_announced_once() {
    loom::model(|| {
        let run = Arc::new(LoomRun::new());
        let helper = {
            let run = Arc::clone(&run);
            thread::spawn(move || run.beat())
        };
        run.beat();
        helper.join().unwrap();
        assert!(run.last_beat().is_some());
        assert_eq!(run.progress_messages(), 1);
    });
}

/// Table invariant 2: a context kept after its run ended beats while the loop starts the next
/// run of the same task over the same place in the task table. The old beats never count for
/// the new run: it has no beat until it beats itself, and its first beat is announced once.
#[test]
fn a_context_of_an_ended_run_never_beats_for_the_next_run() {
    loom::model(|| {
        let old = Arc::new(LoomRun::new());
        let stale = {
            let old = Arc::clone(&old);
            thread::spawn(move || {
                old.beat();
                old.beat();
            })
        };

        let new = old.next_run();
        let before_its_own = new.last_beat();
        stale.join().unwrap();

        assert_eq!(before_its_own, None, "an old beat counted for the new run");
        assert_eq!(new.last_beat(), None, "an old beat counted for the new run");
        assert_eq!(new.progress_messages(), 0);
        new.beat();
        assert!(new.last_beat().is_some());
        assert_eq!(new.progress_messages(), 1);
        assert_eq!(old.last_beat(), None, "the place belongs to the new run");
    });
}

/// The new run beats for the first time while the old run's context still beats: its first
/// beat is announced exactly once, and its beat is its own.
#[test]
fn a_new_runs_first_beat_racing_an_old_contexts_beat_is_announced_once() {
    loom::model(|| {
        let old = Arc::new(LoomRun::new());
        old.beat();
        let new = Arc::new(old.next_run());
        let stale = {
            let old = Arc::clone(&old);
            thread::spawn(move || old.beat())
        };
        let fresh = {
            let new = Arc::clone(&new);
            thread::spawn(move || new.beat())
        };
        stale.join().unwrap();
        fresh.join().unwrap();

        assert!(new.last_beat().is_some());
        assert_eq!(new.progress_messages(), 1);
        assert_eq!(
            old.progress_messages(),
            1,
            "only its own first beat, before"
        );
    });
}

/// The loop's heartbeat check reads the beat from the dense table, by the generation its slot
/// holds, while the run beats: it sees a beat or none, a beat it was told about is always
/// visible, and the stamps it reads never go backwards.
#[test]
fn the_loops_dense_beat_read_racing_a_beat_is_never_half_seen() {
    loom::model(|| {
        let run = Arc::new(LoomRun::new());
        let generation = run.generation();
        let announced = Arc::new(AtomicBool::new(false));
        let beater = {
            let run = Arc::clone(&run);
            let announced = Arc::clone(&announced);
            thread::spawn(move || {
                run.beat();
                announced.store(true, Ordering::Release);
                run.beat();
            })
        };

        let checked = run.loop_beat(generation);
        let told = announced.load(Ordering::Acquire);
        let rechecked = run.loop_beat(generation);
        if told {
            assert!(
                rechecked.is_some(),
                "an announced beat is visible to the loop"
            );
        }
        assert!(
            rechecked >= checked,
            "stamps went backwards: {checked:?} then {rechecked:?}"
        );
        beater.join().unwrap();
        assert_eq!(run.loop_beat(generation), run.last_beat());
    });
}

/// The loop's hang check, by the generation its slot holds (run 1, which never beat), races
/// the driver renewing the state for run 2 in place, which beats at once. The check never
/// takes run 2's beat for run 1's, and its stop reaches run 1 or misses: run 2 is never
/// stopped for run 1's silence.
#[test]
fn a_hang_check_racing_a_renewal_never_reads_the_next_runs_beat_as_its_own() {
    loom::model(|| {
        let run = Arc::new(LoomRun::new());
        let first = run.generation();
        let driver = {
            let run = Arc::clone(&run);
            thread::spawn(move || {
                let renewed = run.renew(first);
                if renewed {
                    run.beat();
                }
                renewed
            })
        };

        assert_eq!(run.loop_beat(first), None, "run 1 never beat");
        let stopped = run.request_stop_of(first);
        let renewed = driver.join().unwrap();
        assert_ne!(stopped.is_some(), renewed, "exactly one of them wins");
        assert_eq!(run.loop_beat(first), None);
        if renewed {
            assert!(
                run.loop_beat(first.wrapping_add(1)).is_some(),
                "run 2's own beat"
            );
            assert!(!run.is_stop_requested(), "run 2 was not asked to stop");
        }
    });
}

/// A slot reused by a new run while a context of the old run still holds its place in the
/// table and beats: the loop, reading by the new run's generation, never sees the old beats.
#[test]
fn a_reused_slot_never_shows_the_loop_an_old_contexts_beat() {
    loom::model(|| {
        let old = Arc::new(LoomRun::new());
        let stale = {
            let old = Arc::clone(&old);
            thread::spawn(move || {
                old.beat();
                old.beat();
            })
        };
        let new = old.next_run();
        let generation = new.generation();
        let seen = new.loop_beat(generation);
        stale.join().unwrap();

        assert_eq!(seen, None, "an old beat shown for the new run");
        assert_eq!(new.loop_beat(generation), None);
        new.beat();
        assert!(new.loop_beat(generation).is_some());
        assert_eq!(
            new.loop_beat(old.generation()),
            None,
            "the place is the new run's"
        );
    });
}

/// The driver of run 1, which never beat, renews in place while a context run 1 handed to a
/// task of its own beats: either the beat lands first (run 1 proved alive after all, and is not
/// renewed) or it misses. The loop is never told of a first beat of a run the driver then
/// reports as never alive.
#[test]
fn a_renewal_racing_a_beat_of_the_run_it_replaces_never_hides_that_beat() {
    loom::model(|| {
        let run = Arc::new(LoomRun::new());
        let first = run.generation();
        let context = run.context();
        let helper = thread::spawn(move || {
            context.beat();
            context
        });
        let renewed = run.last_beat().is_none() && run.renew(first);
        let context = helper.join().unwrap();
        let announced = context.progress_messages();
        assert!(
            !(renewed && announced > 0),
            "run 1's beat was announced, and the run renewed as if it never beat"
        );
        if renewed {
            assert_eq!(run.last_beat(), None, "run 2 has not beaten");
        }
    });
}

/// A slot reused by a new run while a context of the old run still holds its place and asks
/// for its token and checks for cancellation: the old context gets a token that is cancelled
/// (it was the old run's, cancelled when the slot moved on, or one made cancelled for a run
/// that is over), and nothing it does marks the new run cooperative or reaches its token.
#[test]
fn an_old_contexts_token_request_racing_the_slots_reuse_never_reaches_the_new_run() {
    loom::model(|| {
        let old = Arc::new(LoomRun::new());
        let stale = {
            let old = Arc::clone(&old);
            thread::spawn(move || {
                let token = old.token();
                let _ = old.is_stop_requested();
                token
            })
        };
        let new = old.next_run();
        let cooperative = new.request_stop();
        let old_token = stale.join().unwrap();

        assert!(!cooperative, "the old context made the new run cooperative");
        assert!(old_token.is_cancelled(), "the old run is over");
        assert!(old.token().is_cancelled());
        assert!(old.is_stop_requested(), "the old run is over");
        assert!(new.token().is_cancelled(), "the new run's own stop");
        assert_eq!(new.current_generation(), new.generation());
    });
}

/// The new run asks for its token while a context of the old run asks for its own: each gets
/// its own, the new run's is cancelled only by the new run's stop, the old one's is cancelled.
#[test]
fn the_new_runs_token_is_its_own_while_an_old_context_asks_for_one() {
    loom::model(|| {
        let old = Arc::new(LoomRun::new());
        let new = Arc::new(old.next_run());
        let stale = {
            let old = Arc::clone(&old);
            thread::spawn(move || old.token())
        };
        let fresh = {
            let new = Arc::clone(&new);
            thread::spawn(move || new.token())
        };
        let old_token = stale.join().unwrap();
        let new_token = fresh.join().unwrap();

        assert!(old_token.is_cancelled(), "the old run is over");
        assert!(
            !new_token.is_cancelled(),
            "the old context cancelled the new token"
        );
        assert!(new.request_stop(), "the new run asked for its token first");
        assert!(new_token.is_cancelled());
    });
}

// ----- the stop handshake -----

/// Context invariant 3: once the loop has asked a run to stop, the run's token is cancelled,
/// whether the run asked for its token before or after. The loop treats the run as
/// cooperative (grace period) exactly when the run asked first.
#[test]
fn a_stop_racing_a_token_request_always_cancels_the_token() {
    loom::model(|| {
        let run = Arc::new(LoomRun::new());
        let asker = {
            let run = Arc::clone(&run);
            thread::spawn(move || run.token())
        };
        let cooperative = run.request_stop();
        let token = asker.join().unwrap();
        assert!(
            token.is_cancelled(),
            "a stopped run's token is cancelled (cooperative: {cooperative})"
        );
        assert!(run.token().is_cancelled());
        assert!(run.is_stop_requested());
    });
}

/// `is_cancelled` racing a stop: exactly one side sees the other's flag, so either the run
/// learns of the stop, or the loop learns that the run is cooperative (and gives it the grace
/// period, during which the run's next check sees the stop).
#[test]
fn a_stop_racing_a_cancellation_check_is_seen_by_exactly_one_side() {
    loom::model(|| {
        let run = Arc::new(LoomRun::new());
        let checker = {
            let run = Arc::clone(&run);
            thread::spawn(move || run.is_stop_requested())
        };
        let cooperative = run.request_stop();
        let saw_stop = checker.join().unwrap();
        assert_ne!(saw_stop, cooperative, "exactly one side comes second");
        assert!(run.is_stop_requested(), "a later check sees the stop");
        assert!(run.token().is_cancelled(), "a later token is cancelled");
    });
}

/// Two parties of one run ask for the token while the loop stops the run: both get the same,
/// cancelled token.
#[test]
fn a_stop_racing_two_token_requests_cancels_the_one_token() {
    loom::model(|| {
        let run = Arc::new(LoomRun::new());
        let first = {
            let run = Arc::clone(&run);
            thread::spawn(move || run.token())
        };
        let second = {
            let run = Arc::clone(&run);
            thread::spawn(move || run.token())
        };
        run.request_stop();
        let (first, second) = (first.join().unwrap(), second.join().unwrap());
        assert!(first.is_cancelled() && second.is_cancelled());
    });
}

/// Context invariant 4: the loop's hang check stops run 1 while its driver hands the state on
/// to run 2 in place. Exactly one wins: either the stop reaches run 1 (and the driver, seeing
/// the stop, does not renew), or run 1 is gone and the stop misses, leaving run 2 untouched.
/// A stop is never lost and never lands on the wrong run.
#[test]
fn a_hang_stop_racing_a_renewal_reaches_exactly_the_run_it_meant() {
    loom::model(|| {
        let run = Arc::new(LoomRun::new());
        let first = run.generation();
        let driver = {
            let run = Arc::clone(&run);
            thread::spawn(move || run.renew(first))
        };
        let stopped = run.request_stop_of(first);
        let renewed = driver.join().unwrap();
        assert_ne!(stopped.is_some(), renewed, "exactly one of them wins");
        if renewed {
            assert_eq!(run.generation(), first.wrapping_add(1));
            assert!(
                !run.is_stop_requested(),
                "the new run was not asked to stop"
            );
        } else {
            assert_eq!(run.generation(), first);
            assert!(run.is_stop_requested(), "the old run sees its stop");
        }
    });
}

/// A kill (a stop of whichever run is current) racing a renewal is never lost: it reaches run 1
/// before the renewal (which then fails) or run 2 after it.
#[test]
fn a_kill_racing_a_renewal_is_never_lost() {
    loom::model(|| {
        let run = Arc::new(LoomRun::new());
        let first = run.generation();
        let driver = {
            let run = Arc::clone(&run);
            thread::spawn(move || run.renew(first))
        };
        run.request_stop();
        driver.join().unwrap();
        assert!(run.is_stop_requested(), "the current run sees the stop");
        assert!(
            !run.renew(run.generation()),
            "a stopped run is never renewed"
        );
    });
}

// ----- the registry -----

/// Two handles add the same name at once (and a third adds another name): exactly one add of
/// the name wins, the other gets `TaskAlreadyExists`, exactly one `Add` per name reaches the
/// loop, and ids reach the loop in the order they were given.
#[test]
fn a_duplicate_add_racing_another_add_registers_the_name_once() {
    loom::model(|| {
        let registry = Arc::new(LoomRegistry::new());
        let queue = queue();
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let registry = Arc::clone(&registry);
                let queue = Arc::clone(&queue);
                thread::spawn(move || add(&registry, &queue, "same"))
            })
            .collect();
        let other = add(&registry, &queue, "other");
        let results: Vec<_> = racers
            .into_iter()
            .map(|racer| racer.join().unwrap())
            .collect();

        assert_eq!(other, Ok(()));
        assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 1);
        assert!(
            results.contains(&Err(SupervisorHandleError::TaskAlreadyExists {
                name: "same".into()
            }))
        );
        let sent = sent(&queue);
        assert_eq!(sent.len(), 2, "{sent:?}");
        let ids: Vec<u32> = sent
            .iter()
            .map(|message| match message {
                Sent::Add { id, .. } => *id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(ids, [0, 1], "ids arrive in the order they were given");
        assert_eq!(registry.status("same"), Ok(Some(TaskStatus::Created)));
        assert_eq!(registry.statuses().unwrap().len(), 2);
    });
}

/// An add racing a shutdown: either the add wins and its `Add` reaches the loop before the
/// `Shutdown`, or it fails with `SupervisorStopped` and nothing of it reaches the loop.
#[test]
fn an_add_racing_a_shutdown_is_either_delivered_first_or_refused() {
    loom::model(|| {
        let registry = Arc::new(LoomRegistry::new());
        let queue = queue();
        let adder = {
            let registry = Arc::clone(&registry);
            let queue = Arc::clone(&queue);
            thread::spawn(move || add(&registry, &queue, "late"))
        };
        let closed = registry.close(|| {
            queue.lock().unwrap().push(Sent::Shutdown);
            Ok(())
        });
        let added = adder.join().unwrap();

        assert_eq!(closed, Ok(()));
        let sent = sent(&queue);
        match added {
            Ok(()) => assert_eq!(
                sent,
                [
                    Sent::Add {
                        name: "late".into(),
                        id: 0
                    },
                    Sent::Shutdown
                ]
            ),
            Err(error) => {
                assert_eq!(error, SupervisorHandleError::SupervisorStopped);
                assert_eq!(sent, [Sent::Shutdown]);
                assert_eq!(
                    registry.status("late"),
                    Ok(None),
                    "a refused add leaves nothing"
                );
            }
        }
    });
}

/// A status read racing the loop's publishing (a task starting, then proving healthy) and a
/// restart command: the reader sees published statuses only, in the order they were published,
/// and the restart reaches the loop unless the shutdown came first.
#[test]
fn a_status_read_racing_a_publish_and_a_restart_sees_only_published_statuses_in_order() {
    loom::model(|| {
        let registry = Arc::new(LoomRegistry::new());
        let queue = queue();
        let mut entry: Option<LoomEntry> = None;
        add(&registry, &queue, "task").unwrap();
        registry
            .add("watched", |_, added| {
                entry = Some(added);
                Ok(())
            })
            .unwrap();
        let entry = entry.expect("the add hands over the entry");

        let reader = {
            let registry = Arc::clone(&registry);
            let queue = Arc::clone(&queue);
            thread::spawn(move || {
                let first = registry.status("watched").unwrap().unwrap();
                let restarted = registry.command("watched", |id| {
                    queue.lock().unwrap().push(Sent::Restart { id });
                    Ok(())
                });
                let second = registry.status("watched").unwrap().unwrap();
                (first, restarted, second)
            })
        };
        // The loop publishes a start, then the run proves alive, then it is shut down.
        entry.publish(TaskStatus::Starting);
        entry.publish(TaskStatus::Healthy);
        registry
            .close(|| {
                queue.lock().unwrap().push(Sent::Shutdown);
                Ok(())
            })
            .unwrap();
        let (first, restarted, second) = reader.join().unwrap();

        assert!(rank(first) <= rank(second), "read {first} then {second}");
        assert_eq!(entry.status(), TaskStatus::Healthy);
        let sent = sent(&queue);
        let restart = Sent::Restart { id: entry.id() };
        match restarted {
            Ok(()) => {
                let at = sent.iter().position(|message| *message == restart);
                let shutdown = sent.iter().position(|message| *message == Sent::Shutdown);
                assert!(
                    at < shutdown,
                    "the restart reaches the loop before the shutdown: {sent:?}"
                );
            }
            Err(error) => {
                assert_eq!(error, SupervisorHandleError::SupervisorStopped);
                assert!(!sent.contains(&restart));
            }
        }
        // Statuses can still be read while shutting down, and not once stopped.
        assert_eq!(registry.status("watched"), Ok(Some(TaskStatus::Healthy)));
        registry.mark_stopped();
        assert_eq!(
            registry.status("watched"),
            Err(SupervisorHandleError::SupervisorStopped)
        );
    });
}
