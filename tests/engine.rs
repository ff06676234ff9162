//! SPEC section 1 semantics on the thread pool, checked from recorded events. These re-express
//! the Python pexen suite's scenarios.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pexen::{Event, GraphError, OnFailure, Outcome, Scheduler, Task, TaskError};

#[path = "common/events.rs"]
mod events;
use events::{end_of, finished, outcome, run_outcome, start_of, started};

/// Runs `tasks` on `jobs` threads and returns every event.
fn run(jobs: usize, tasks: Vec<Task>) -> Vec<Event> {
    Scheduler::builder()
        .jobs(jobs)
        .build()
        .run(tasks)
        .expect("valid graph")
        .collect()
}

fn ok(name: &str) -> Task {
    Task::closure(name, |_| Ok(()))
}

#[test]
fn lowest_priority_value_starts_first_ties_in_definition_order() {
    let events = run(
        1,
        vec![
            ok("a").priority(5),
            ok("b").priority(-3),
            ok("c"),
            ok("d").priority(-3),
            ok("e").priority(10),
        ],
    );
    assert_eq!(started(&events), ["b", "d", "c", "a", "e"]);
    assert_eq!(run_outcome(&events), Outcome::Pass);
}

#[test]
fn dependencies_beat_priority() {
    let events = run(
        1,
        vec![
            ok("late-provider").priority(100).provides(["x"]),
            ok("eager").priority(-100).requires(["x"]),
            ok("middle"),
        ],
    );
    assert_eq!(started(&events), ["middle", "late-provider", "eager"]);
}

#[test]
fn chain_runs_in_order_with_four_workers() {
    let tasks = (0..20)
        .map(|i| {
            let t = ok(&format!("t{i:02}")).provides([format!("k{i}")]);
            if i > 0 {
                t.requires([format!("k{}", i - 1)])
            } else {
                t
            }
        })
        .collect();
    let events = run(4, tasks);
    let expected: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    assert_eq!(started(&events), expected);
    for i in 1..20 {
        assert!(
            end_of(&events, &format!("t{:02}", i - 1)) < start_of(&events, &format!("t{i:02}"))
        );
    }
}

/// Closure that records how many tasks hold a section at once.
fn tracked(name: &str, live: &Arc<AtomicUsize>, peak: &Arc<AtomicUsize>) -> Task {
    let (live, peak) = (live.clone(), peak.clone());
    Task::closure(name, move |_| {
        let now = live.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        std::thread::yield_now();
        live.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    })
}

#[test]
fn claims_serialize() {
    let (live, peak) = (Arc::default(), Arc::default());
    let tasks = (0..16)
        .map(|i| tracked(&format!("t{i}"), &live, &peak).claims(["port-8080"]))
        .collect();
    let events = run(4, tasks);
    assert_eq!(peak.load(Ordering::SeqCst), 1);
    // From events: every start follows the previous holder's end.
    let order = started(&events);
    for pair in order.windows(2) {
        assert!(end_of(&events, &pair[0]) < start_of(&events, &pair[1]));
    }
}

/// A task that waits until `n` tasks of its group are inside at once (proof that they overlap),
/// failing if that never happens (the guard timeout only matters when the scheduler is wrong).
fn rendezvous(name: &str, count: &Arc<(Mutex<usize>, std::sync::Condvar)>, n: usize) -> Task {
    let count = count.clone();
    Task::closure(name, move |_| {
        let (lock, cv) = &*count;
        let mut inside = lock.lock().unwrap();
        *inside += 1;
        cv.notify_all();
        let (inside, res) = cv
            .wait_timeout_while(inside, Duration::from_secs(30), |c| *c < n)
            .unwrap();
        drop(inside);
        if res.timed_out() {
            return Err(TaskError::fail("the other sharers never ran alongside"));
        }
        Ok(())
    })
}

#[test]
fn uses_overlap() {
    let count = Arc::default();
    let tasks = (0..3)
        .map(|i| rendezvous(&format!("u{i}"), &count, 3).uses(["db"]))
        .collect();
    let events = run(3, tasks);
    assert_eq!(run_outcome(&events), Outcome::Pass);
}

#[test]
fn claims_exclude_uses() {
    let (live, peak) = (Arc::default(), Arc::default());
    let mut tasks = vec![tracked("writer", &live, &peak).claims(["db"])];
    tasks.extend((0..6).map(|i| tracked(&format!("reader{i}"), &live, &peak).uses(["db"])));
    tasks.push(tracked("writer2", &live, &peak).claims(["db"]));
    let events = run(4, tasks);
    for w in ["writer", "writer2"] {
        let (s, e) = (start_of(&events, w), end_of(&events, w));
        for r in 0..6 {
            let (rs, re) = (
                start_of(&events, &format!("reader{r}")),
                end_of(&events, &format!("reader{r}")),
            );
            assert!(re < s || rs > e, "reader{r} overlapped {w}");
        }
    }
}

#[test]
fn failed_lock_holder_releases() {
    let events = run(
        2,
        vec![
            Task::closure("holder", |_| Err(TaskError::fail("boom"))).claims(["L"]),
            Task::closure("panicker", |_| panic!("kaboom")).claims(["L"]),
            ok("next").claims(["L"]),
        ],
    );
    assert_eq!(outcome(&events, "holder"), Outcome::Fail);
    assert_eq!(outcome(&events, "panicker"), Outcome::Error);
    assert!(finished(&events, "panicker")
        .message
        .as_deref()
        .unwrap()
        .contains("kaboom"));
    assert_eq!(outcome(&events, "next"), Outcome::Pass);
}

#[test]
fn failed_provider_skips_dependents_with_cause_transitively() {
    let events = run(
        2,
        vec![
            Task::closure("db", |_| Err(TaskError::fail("no disk"))).provides(["db-ready"]),
            ok("app").requires(["db-ready"]).provides(["app-ready"]),
            ok("e2e").requires(["app-ready"]),
            ok("unrelated"),
        ],
    );
    assert_eq!(outcome(&events, "db"), Outcome::Fail);
    let app = finished(&events, "app");
    assert_eq!(app.outcome, Outcome::Skip);
    assert_eq!(
        app.cause.as_deref(),
        Some("required token `db-ready` is not available: `db` ended fail")
    );
    let e2e = finished(&events, "e2e");
    assert_eq!(
        e2e.cause.as_deref(),
        Some("required token `app-ready` is not available: `app` was skipped")
    );
    assert_eq!(outcome(&events, "unrelated"), Outcome::Pass);
    assert_eq!(run_outcome(&events), Outcome::Fail);
    assert!(!started(&events).contains(&"app".to_string()));
}

#[test]
fn token_needs_every_provider() {
    let events = run(
        2,
        vec![
            ok("p1").provides(["t"]),
            Task::closure("p2", |_| Err(TaskError::fail("x"))).provides(["t"]),
            ok("dep").requires(["t"]),
        ],
    );
    assert_eq!(outcome(&events, "dep"), Outcome::Skip);
}

#[test]
fn skipping_provider_satisfies_but_a_skipped_one_does_not_run() {
    let events = run(
        1,
        vec![
            Task::closure("skipper", |_| Err(TaskError::skip("not here"))).provides(["t"]),
            ok("dep").requires(["t"]),
        ],
    );
    assert_eq!(outcome(&events, "skipper"), Outcome::Skip);
    assert_eq!(outcome(&events, "dep"), Outcome::Pass);
}

#[test]
fn run_dependents_lets_dependents_run_after_failure() {
    let events = run(
        1,
        vec![
            Task::closure("flaky-setup", |_| Err(TaskError::fail("meh")))
                .provides(["t"])
                .on_failure(OnFailure::RunDependents),
            ok("dep").requires(["t"]),
        ],
    );
    assert_eq!(outcome(&events, "dep"), Outcome::Pass);
    assert_eq!(run_outcome(&events), Outcome::Fail);
}

#[test]
fn controlled_failure_and_extra_results() {
    let events = run(
        1,
        vec![
            Task::closure("checks", |ctx| {
                ctx.report(Outcome::Pass, "sub-test 1");
                ctx.report(Outcome::Warn, "disk almost full");
                Ok(())
            }),
            Task::closure("asserts", |_| Err(TaskError::fail("expected 3, got 4"))),
        ],
    );
    let results: Vec<(Outcome, String)> = events
        .iter()
        .filter_map(|e| match e {
            Event::TaskResult {
                task,
                status,
                message,
                ..
            } if task.as_str() == "checks" => Some((*status, message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        results,
        [
            (Outcome::Pass, "sub-test 1".into()),
            (Outcome::Warn, "disk almost full".into())
        ]
    );
    assert_eq!(outcome(&events, "checks"), Outcome::Warn);
    let a = finished(&events, "asserts");
    assert_eq!(
        (a.outcome, a.message.as_deref()),
        (Outcome::Fail, Some("expected 3, got 4"))
    );
}

#[test]
fn shared_state_merges_in_definition_order_later_wins() {
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let seen2 = seen.clone();
    let events = run(
        2,
        vec![
            Task::closure("p1", |ctx| {
                ctx.export("host", "alpha")?;
                ctx.export("p1-only", &1)
            })
            .provides(["a"]),
            Task::closure("p2", |ctx| ctx.export("host", "beta")).provides(["b"]),
            Task::closure("user", move |ctx| {
                *seen2.lock().unwrap() = ctx.shared().clone();
                Ok(())
            })
            .requires(["b", "a"]),
        ],
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen["host"], "beta");
    assert_eq!(seen["p1-only"], 1);
    let warning = events
        .iter()
        .find_map(|e| match e {
            Event::Warning {
                task: Some(t),
                message,
            } if t.as_str() == "user" => Some(message.clone()),
            _ => None,
        })
        .expect("a conflict warning");
    assert!(
        warning.contains("`host`") && warning.contains("`p2`"),
        "{warning}"
    );
}

#[test]
fn exports_of_a_failed_provider_are_not_shared() {
    let seen = Arc::new(AtomicBool::new(true));
    let seen2 = seen.clone();
    run(
        1,
        vec![
            Task::closure("p", |ctx| {
                ctx.export("k", "v")?;
                Err(TaskError::fail("no"))
            })
            .provides(["t"])
            .on_failure(OnFailure::RunDependents),
            Task::closure("d", move |ctx| {
                seen2.store(ctx.shared().contains_key("k"), Ordering::SeqCst);
                Ok(())
            })
            .requires(["t"]),
        ],
    );
    assert!(!seen.load(Ordering::SeqCst));
}

#[test]
fn invalid_graphs_report_every_problem_before_running() {
    let ran = Arc::new(AtomicBool::new(false));
    let ran2 = ran.clone();
    let err = Scheduler::builder()
        .build()
        .run(vec![
            Task::closure("x", move |_| {
                ran2.store(true, Ordering::SeqCst);
                Ok(())
            }),
            ok("missing").requires(["nobody"]),
            ok("self").requires(["me"]).provides(["me"]),
            ok("a").requires(["b"]).provides(["a"]),
            ok("b").requires(["a"]).provides(["b"]),
            ok("both").claims(["r"]).uses(["r"]),
            ok("gpu").slot("gpu", 1),
        ])
        .err()
        .expect("invalid");
    assert!(!ran.load(Ordering::SeqCst));
    let msgs: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 5, "{msgs:#?}");
    assert!(err.0.contains(&GraphError::MissingProvider {
        task: "missing".into(),
        token: "nobody".into()
    }));
    assert!(msgs.contains(&"dependency cycle: self -> self".to_string()));
    assert!(msgs.contains(&"dependency cycle: a -> b -> a".to_string()));
    assert!(msgs
        .iter()
        .any(|m| m.contains("both claims and uses resource `r`")));
    assert!(msgs.iter().any(|m| m.contains("slot `gpu`")));
}

#[test]
fn slots_never_exceed_capacity() {
    let (live, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks = (0..12)
        .map(|i| {
            tracked(&format!("g{i}"), &live, &peak).slot("gpu", if i % 3 == 0 { 2 } else { 1 })
        })
        .collect();
    let events: Vec<Event> = Scheduler::builder()
        .jobs(4)
        .capacity("gpu", 2)
        .build()
        .run(tasks)
        .unwrap()
        .collect();
    assert!(peak.load(Ordering::SeqCst) <= 2);
    assert_eq!(run_outcome(&events), Outcome::Pass);
}

#[test]
fn retries_rerun_failed_attempts() {
    let events = run(
        1,
        vec![Task::closure("flaky", |ctx| {
            if ctx.attempt() < 3 {
                Err(TaskError::fail(format!("attempt {}", ctx.attempt())))
            } else {
                Ok(())
            }
        })
        .retries(2)],
    );
    let retries: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::TaskRetrying {
                attempt,
                outcome: Outcome::Fail,
                ..
            } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [1, 2]);
    let f = finished(&events, "flaky");
    assert_eq!((f.outcome, f.attempt), (Outcome::Pass, 3));
}

#[test]
fn fail_fast_skips_what_did_not_start() {
    let events: Vec<Event> = Scheduler::builder()
        .jobs(1)
        .fail_fast(true)
        .build()
        .run(vec![
            Task::closure("bad", |_| Err(TaskError::fail("x"))),
            ok("later1"),
            ok("later2"),
        ])
        .unwrap()
        .collect();
    assert_eq!(started(&events), ["bad"]);
    let l = finished(&events, "later1");
    assert_eq!(l.outcome, Outcome::Skip);
    assert!(l.cause.as_deref().unwrap().contains("fail-fast"));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::TaskFinished(_)))
            .count(),
        3
    );
}

#[test]
fn closure_timeout_is_cooperative() {
    let events = run(
        1,
        vec![Task::closure("spin", |ctx| {
            while !ctx.is_cancelled() {
                std::thread::yield_now();
            }
            Ok(())
        })
        .timeout(Duration::from_millis(20))],
    );
    assert_eq!(outcome(&events, "spin"), Outcome::Timeout);
}

#[test]
fn unserializable_export_is_an_error() {
    struct Bad;
    impl serde::Serialize for Bad {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("sockets do not serialize"))
        }
    }
    let events = run(1, vec![Task::closure("x", |ctx| ctx.export("sock", &Bad))]);
    let f = finished(&events, "x");
    assert_eq!(f.outcome, Outcome::Error);
    assert!(f
        .message
        .as_deref()
        .unwrap()
        .contains("sockets do not serialize"));
}

#[test]
fn tasks_added_by_a_running_task() {
    let events = run(
        2,
        vec![Task::closure("gen", |ctx| {
            ctx.export("n", &3)?;
            let children = (0..3)
                .map(|i| {
                    Task::closure(format!("gen/child{i}"), |ctx| {
                        let n: u32 = ctx.get("n")?.unwrap_or(0);
                        if n == 3 {
                            Ok(())
                        } else {
                            Err(TaskError::fail("no shared state"))
                        }
                    })
                    .requires(["gen"])
                })
                .collect();
            ctx.add_tasks(children)?;
            // A batch that would change an existing token is refused, and changes nothing.
            if ctx
                .add_tasks(vec![ok("intruder").provides(["gen"])])
                .is_ok()
            {
                return Err(TaskError::fail("late provider accepted"));
            }
            Ok(())
        })
        .provides(["gen"])],
    );
    assert_eq!(outcome(&events, "gen"), Outcome::Pass);
    for i in 0..3 {
        assert_eq!(outcome(&events, &format!("gen/child{i}")), Outcome::Pass);
        assert!(end_of(&events, "gen") < start_of(&events, &format!("gen/child{i}")));
    }
    assert!(matches!(events[0], Event::RunStarted { tasks: 1, .. }));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::TaskFinished(_)))
            .count(),
        4
    );
}

#[test]
fn tasks_added_by_the_consumer_while_a_task_runs() {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let mut run = Scheduler::builder()
        .jobs(2)
        .build()
        .run(vec![Task::closure("blocker", move |_| {
            release_rx
                .lock()
                .unwrap()
                .recv()
                .map_err(|_| TaskError::fail("no release"))
        })
        .provides(["base"])])
        .unwrap();
    let mut events = Vec::new();
    while let Some(e) = run.next() {
        if matches!(&e, Event::TaskStarted { task, .. } if task.as_str() == "blocker") {
            run.add_tasks(vec![ok("added").requires(["base"])]).unwrap();
            release_tx.send(()).unwrap();
        }
        events.push(e);
    }
    assert_eq!(outcome(&events, "added"), Outcome::Pass);
    assert!(end_of(&events, "blocker") < start_of(&events, "added"));
}

#[test]
fn dropping_the_run_cancels_and_joins() {
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let saw = saw_cancel.clone();
    let (inside_tx, inside_rx) = std::sync::mpsc::channel();
    let inside_tx = Mutex::new(inside_tx);
    let mut run = Scheduler::builder()
        .jobs(2)
        .build()
        .run(vec![Task::closure("forever", move |ctx| {
            inside_tx.lock().unwrap().send(()).unwrap();
            while !ctx.is_cancelled() {
                std::thread::sleep(Duration::from_millis(1));
            }
            saw.store(true, Ordering::SeqCst);
            Ok(())
        })])
        .unwrap();
    assert!(matches!(run.next(), Some(Event::RunStarted { .. })));
    assert!(matches!(run.next(), Some(Event::TaskStarted { .. })));
    inside_rx.recv().unwrap();
    drop(run);
    // Drop returned, so the worker thread was joined, and it saw the cancellation.
    assert!(saw_cancel.load(Ordering::SeqCst));
}

#[test]
fn cancel_reports_every_task_and_marks_the_run_interrupted() {
    let run = Scheduler::builder()
        .jobs(1)
        .build()
        .run(vec![
            Task::closure("long", |ctx| {
                while !ctx.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TaskError::error("interrupted"))
            }),
            ok("never"),
        ])
        .unwrap();
    let handle = run.handle();
    let mut events = Vec::new();
    for e in run {
        if matches!(e, Event::TaskStarted { .. }) {
            handle.cancel();
        }
        events.push(e);
    }
    assert_eq!(outcome(&events, "long"), Outcome::Error);
    assert_eq!(outcome(&events, "never"), Outcome::Skip);
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            interrupted: true,
            ..
        })
    ));
}

#[test]
fn every_task_gets_exactly_one_finished_event() {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut t = if i % 7 == 0 {
            Task::closure(format!("t{i}"), |_| Err(TaskError::fail("x")))
        } else {
            ok(&format!("t{i}"))
        };
        t = t.provides([format!("k{i}")]);
        if i >= 5 {
            t = t.requires([format!("k{}", i - 5)]);
        }
        tasks.push(t.claims([format!("r{}", i % 3)]));
    }
    let events = run(3, tasks);
    for i in 0..50 {
        finished(&events, &format!("t{i}"));
    }
    if let Some(Event::RunFinished { counts, .. }) = events.last() {
        assert_eq!(counts.total(), 50);
    }
}

#[test]
fn embedders_journal_and_resume_through_the_builder() {
    use pexen::state::RunJournal;

    let dir = tempfile::tempdir().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let tasks = |fail: bool| {
        let ran = ran.clone();
        vec![
            Task::closure("setup", move |ctx| {
                ran.fetch_add(1, Ordering::SeqCst);
                ctx.export("url", "db://x")
            })
            .provides(["db"]),
            Task::closure("test", move |ctx| {
                let url: String = ctx.get("url")?.unwrap_or_default();
                if fail || url != "db://x" {
                    Err(TaskError::fail("not yet"))
                } else {
                    Ok(())
                }
            })
            .requires(["db"]),
        ]
    };
    for (round, fail) in [(1, true), (2, false)] {
        let tasks = tasks(fail);
        let mut journal = RunJournal::open(dir.path(), &tasks, round > 1).unwrap();
        let events: Vec<Event> = Scheduler::builder()
            .jobs(2)
            .journal(&mut journal)
            .build()
            .run(tasks)
            .unwrap()
            .collect();
        let records = journal.finish().unwrap();
        assert_eq!(records.len(), 2);
        if round == 2 {
            assert!(finished(&events, "setup").resumed);
            assert_eq!(outcome(&events, "test"), Outcome::Pass);
        }
    }
    // The provider ran once: the second run took it, and its export, from the journal.
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn short_tasks_run_in_batches_without_bending_priority_or_jobs() {
    // Fifty short tasks first, so that workers batch; then a provider whose dependent has a
    // better priority than the independent tasks ready beside it: the dependent must still
    // start right after its provider, before them.
    let mut tasks: Vec<Task> = (0..50)
        .map(|i| ok(&format!("warm{i:02}")).priority(-10))
        .collect();
    tasks.push(ok("a").provides(["x"]));
    tasks.push(ok("b").requires(["x"]).priority(-5));
    tasks.extend((0..20).map(|i| ok(&format!("c{i:02}"))));
    for jobs in [1, 2] {
        let events = run(jobs, tasks.clone());
        // The first task started after `a` finished is `b`, the best of what is then runnable.
        let after_a = end_of(&events, "a");
        let next = events[after_a..].iter().find_map(|e| match e {
            Event::TaskStarted { task, .. } => Some(task.to_string()),
            _ => None,
        });
        assert_eq!(next.as_deref(), Some("b"), "jobs={jobs}");
        // Never more than `jobs` tasks between a start and its finish, as the events tell it.
        let mut running = 0usize;
        for e in &events {
            match e {
                Event::TaskStarted { .. } => running += 1,
                Event::TaskFinished(_) => running -= 1,
                _ => {}
            }
            assert!(running <= jobs);
        }
    }
}

/// A chain of `n` short closures `k0 -> k1 -> ...` (each provides its name, the next requires
/// it), each counting its runs in `runs` and doing `what` (given its index).
fn counted_chain(
    n: usize,
    runs: &Arc<Vec<AtomicUsize>>,
    what: impl Fn(usize, &pexen::Context) -> Result<(), TaskError> + Send + Sync + Clone + 'static,
) -> Vec<Task> {
    (0..n)
        .map(|i| {
            let (runs, what) = (runs.clone(), what.clone());
            let t = Task::closure(format!("k{i:03}"), move |ctx| {
                runs[i].fetch_add(1, Ordering::SeqCst);
                what(i, ctx)
            })
            .provides([format!("k{i:03}")]);
            if i == 0 {
                t
            } else {
                t.requires([format!("k{:03}", i - 1)])
            }
        })
        .collect()
}

/// A run counter per task of a chain of `n`.
fn counters(n: usize) -> Arc<Vec<AtomicUsize>> {
    Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect())
}

/// Tasks `k000..=k{last}` of the chain ran once each, the others never.
fn assert_ran_through(runs: &[AtomicUsize], last: usize, jobs: usize) {
    for (i, r) in runs.iter().enumerate() {
        let expected = usize::from(i <= last);
        assert_eq!(r.load(Ordering::SeqCst), expected, "k{i:03}, jobs={jobs}");
    }
}

/// Every task of the chain starts after its provider finished, and at most `jobs` run at once,
/// as the events tell it.
fn assert_chain_order(events: &[Event], n: usize, jobs: usize) {
    let started = started(events);
    for i in 1..n {
        let name = format!("k{i:03}");
        if started.contains(&name) {
            assert!(end_of(events, &format!("k{:03}", i - 1)) < start_of(events, &name));
        }
    }
    let mut running = 0usize;
    for e in events {
        match e {
            Event::TaskStarted { .. } => running += 1,
            Event::TaskFinished(f) if !f.resumed && f.cause.is_none() => running -= 1,
            _ => {}
        }
        assert!(running <= jobs);
    }
}

#[test]
fn a_chain_run_ahead_stops_at_a_failure_a_reported_failure_and_an_export() {
    const N: usize = 300;
    for jobs in [1, 2] {
        // A failure: nothing after it runs, the rest is skipped, each with its cause.
        let runs = counters(N);
        let events = run(
            jobs,
            counted_chain(N, &runs, |i, _| {
                if i == 150 {
                    Err(TaskError::fail("broken"))
                } else {
                    Ok(())
                }
            }),
        );
        assert_chain_order(&events, N, jobs);
        assert_ran_through(&runs, 150, jobs);
        assert_eq!(outcome(&events, "k150"), Outcome::Fail);
        assert_eq!(
            finished(&events, "k151").cause.as_deref(),
            Some("required token `k150` is not available: `k150` ended fail")
        );
        assert_eq!(outcome(&events, "k299"), Outcome::Skip);

        // A failure reported on the way by a closure that then returns Ok.
        let runs = counters(N);
        let events = run(
            jobs,
            counted_chain(N, &runs, |i, ctx| {
                if i == 200 {
                    ctx.report(Outcome::Fail, "a reported failure");
                }
                Ok(())
            }),
        );
        assert_chain_order(&events, N, jobs);
        assert_eq!(outcome(&events, "k200"), Outcome::Fail);
        assert_eq!(runs[200].load(Ordering::SeqCst), 1);
        assert_eq!(runs[201].load(Ordering::SeqCst), 0, "jobs={jobs}");
        assert_eq!(outcome(&events, "k201"), Outcome::Skip);
        let result = events
            .iter()
            .position(|e| matches!(e, Event::TaskResult { task, .. } if task.as_str() == "k200"))
            .expect("the reported result");
        assert!(start_of(&events, "k200") < result);
        assert!(end_of(&events, "k199") < result);

        // An export: the next task sees it.
        let runs = counters(N);
        let events = run(
            jobs,
            counted_chain(N, &runs, |i, ctx| {
                if i == 100 {
                    ctx.export("seen", &100)?;
                }
                if i == 101 && ctx.get::<u32>("seen")? != Some(100) {
                    return Err(TaskError::fail("the export did not arrive"));
                }
                Ok(())
            }),
        );
        assert_chain_order(&events, N, jobs);
        assert_eq!(run_outcome(&events), Outcome::Pass, "jobs={jobs}");
        assert!(runs.iter().all(|r| r.load(Ordering::SeqCst) == 1));
    }
}

#[test]
fn a_cancel_in_the_middle_of_a_chain_run_ahead_starts_nothing_after_it() {
    const N: usize = 300;
    for jobs in [1, 2] {
        let runs = counters(N);
        let handle: Arc<std::sync::OnceLock<pexen::RunHandle>> = Arc::default();
        let cancel = handle.clone();
        let tasks = counted_chain(N, &runs, move |i, _| {
            if i == 120 {
                // The handle is set once the run has started (`OnceLock::wait` is newer than
                // the crate's minimum Rust).
                loop {
                    if let Some(handle) = cancel.get() {
                        handle.cancel();
                        break;
                    }
                    std::thread::yield_now();
                }
            }
            Ok(())
        });
        let run = Scheduler::builder().jobs(jobs).build().run(tasks).unwrap();
        handle.set(run.handle()).ok().expect("set once");
        let events: Vec<Event> = run.collect();
        assert_chain_order(&events, N, jobs);
        assert_ran_through(&runs, 120, jobs);
        assert_eq!(outcome(&events, "k120"), Outcome::Pass);
        assert_eq!(
            finished(&events, "k121").cause.as_deref(),
            Some("not run: the run was interrupted")
        );
        assert!(matches!(
            events.last(),
            Some(Event::RunFinished {
                interrupted: true,
                ..
            })
        ));
    }
}
