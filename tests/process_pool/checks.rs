//! The checks of the SPEC 1 scenarios (tasks in `scenarios.rs`), run on both pools.

use std::sync::Mutex;

use pexen::{Event, GraphError, Outcome, PoolKind, Task, TaskError};

use crate::support::{
    end_of, finished, message, outcome, results, run_outcome, start_of, started, wait_for, Env,
};

type Check = fn(&Env);

pub(crate) const ALL: &[(&str, Check)] = &[
    ("priority", priority),
    ("deps-beat-priority", deps_beat_priority),
    ("chain", chain),
    ("claims-serialize", claims_serialize),
    ("uses-overlap", uses_overlap),
    ("claims-exclude-uses", claims_exclude_uses),
    ("failed-lock-holder-releases", failed_lock_holder_releases),
    ("skip-with-cause", skip_with_cause),
    ("token-needs-every-provider", token_needs_every_provider),
    ("skipping-provider-satisfies", skipping_provider_satisfies),
    ("run-dependents", run_dependents),
    ("extra-results", extra_results),
    ("shared-state-merge", shared_state_merge),
    ("failed-exports-not-shared", failed_exports_not_shared),
    ("invalid-graphs", invalid_graphs),
    ("slots", slots),
    ("retries", retries),
    ("fail-fast", fail_fast),
    ("checkpoint-suspend", checkpoint_suspend),
    ("cooperative-timeout", cooperative_timeout),
    ("late-error", late_error),
    ("blocking-cancel-wait", blocking_cancel_wait),
    ("unserializable-export", unserializable_export),
    ("added-by-task", added_by_task),
    ("added-by-consumer", added_by_consumer),
    ("drop-cancels", drop_cancels),
    ("cancel", cancel),
    ("one-finished-each", one_finished_each),
];

fn priority(env: &Env) {
    let events = env.run(1);
    assert_eq!(started(&events), ["b", "d", "c", "a", "e"]);
    assert_eq!(run_outcome(&events), Outcome::Pass);
}

fn deps_beat_priority(env: &Env) {
    let events = env.run(1);
    assert_eq!(started(&events), ["middle", "late-provider", "eager"]);
}

fn chain(env: &Env) {
    let events = env.run(4);
    let expected: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    assert_eq!(started(&events), expected);
    for i in 1..20 {
        let (prev, next) = (format!("t{:02}", i - 1), format!("t{i:02}"));
        assert!(end_of(&events, &prev) < start_of(&events, &next));
    }
}

fn claims_serialize(env: &Env) {
    let events = env.run(4);
    let order = started(&events);
    for pair in order.windows(2) {
        assert!(end_of(&events, &pair[0]) < start_of(&events, &pair[1]));
    }
}

fn uses_overlap(env: &Env) {
    assert_eq!(run_outcome(&env.run(3)), Outcome::Pass);
}

fn claims_exclude_uses(env: &Env) {
    let events = env.run(4);
    for w in ["writer", "writer2"] {
        let (s, e) = (start_of(&events, w), end_of(&events, w));
        for r in 0..6 {
            let reader = format!("reader{r}");
            let (rs, re) = (start_of(&events, &reader), end_of(&events, &reader));
            assert!(re < s || rs > e, "{reader} overlapped {w}");
        }
    }
}

fn failed_lock_holder_releases(env: &Env) {
    let events = env.run(2);
    assert_eq!(outcome(&events, "holder"), Outcome::Fail);
    assert_eq!(outcome(&events, "panicker"), Outcome::Error);
    assert!(message(&events, "panicker").contains("kaboom"));
    assert_eq!(outcome(&events, "next"), Outcome::Pass);
}

fn skip_with_cause(env: &Env) {
    let events = env.run(2);
    assert_eq!(outcome(&events, "db"), Outcome::Fail);
    let app = finished(&events, "app");
    assert_eq!(app.outcome, Outcome::Skip);
    assert_eq!(
        app.cause.as_deref(),
        Some("required token `db-ready` is not available: `db` ended fail")
    );
    assert_eq!(
        finished(&events, "e2e").cause.as_deref(),
        Some("required token `app-ready` is not available: `app` was skipped")
    );
    assert_eq!(outcome(&events, "unrelated"), Outcome::Pass);
    assert_eq!(run_outcome(&events), Outcome::Fail);
    assert!(!started(&events).contains(&"app".to_string()));
}

fn token_needs_every_provider(env: &Env) {
    assert_eq!(outcome(&env.run(2), "dep"), Outcome::Skip);
}

fn skipping_provider_satisfies(env: &Env) {
    let events = env.run(1);
    assert_eq!(outcome(&events, "skipper"), Outcome::Skip);
    assert_eq!(outcome(&events, "dep"), Outcome::Pass);
}

fn run_dependents(env: &Env) {
    let events = env.run(1);
    assert_eq!(outcome(&events, "dep"), Outcome::Pass);
    assert_eq!(run_outcome(&events), Outcome::Fail);
}

fn extra_results(env: &Env) {
    let events = env.run(1);
    assert_eq!(
        results(&events, "checks"),
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

fn shared_state_merge(env: &Env) {
    let events = env.run(2);
    let seen = &results(&events, "user")[0].1;
    let seen: serde_json::Value = serde_json::from_str(seen).unwrap();
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
    assert!(warning.contains("`host`") && warning.contains("`p2`"));
}

fn failed_exports_not_shared(env: &Env) {
    assert_eq!(outcome(&env.run(1), "d"), Outcome::Pass);
}

fn invalid_graphs(env: &Env) {
    let ok = |name: &str| Task::closure(name, |_| Ok(()));
    let err = env
        .builder(2)
        .build()
        .run(vec![
            Task::closure("x", |_| Err(TaskError::error("ran"))),
            ok("missing").requires(["nobody"]),
            ok("self").requires(["me"]).provides(["me"]),
            ok("a").requires(["b"]).provides(["a"]),
            ok("b").requires(["a"]).provides(["b"]),
            ok("both").claims(["r"]).uses(["r"]),
            ok("gpu").slot("gpu", 1),
        ])
        .err()
        .expect("invalid");
    assert_eq!(err.0.len(), 5, "{err}");
    assert!(err.0.contains(&GraphError::MissingProvider {
        task: "missing".into(),
        token: "nobody".into()
    }));
    let msgs: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    assert!(msgs.contains(&"dependency cycle: a -> b -> a".to_string()));
}

/// Slot holders from events: a task holds its slots from its start to its finish event.
fn slots(env: &Env) {
    let events: Vec<Event> = env
        .builder(4)
        .capacity("gpu", 2)
        .build()
        .run(env.tasks())
        .unwrap()
        .collect();
    let (mut held, mut peak) = (0, 0);
    for e in &events {
        let want = |t: &str| {
            if t[1..].parse::<u32>().unwrap() % 3 == 0 {
                2
            } else {
                1
            }
        };
        match e {
            Event::TaskStarted { task, .. } => held += want(task.as_str()),
            Event::TaskFinished(f) => held -= want(f.task.as_str()),
            _ => {}
        }
        peak = peak.max(held);
    }
    assert!(peak <= 2, "{peak} gpus held at once");
    assert_eq!(run_outcome(&events), Outcome::Pass);
}

fn retries(env: &Env) {
    let events = env.run(1);
    let retried: Vec<u32> = events
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
    assert_eq!(retried, [1, 2]);
    let f = finished(&events, "flaky");
    assert_eq!((f.outcome, f.attempt), (Outcome::Pass, 3));
}

/// SPEC 12 on both pools: the checkpoint directory reaches the closure and persists across a
/// retry and a suspend; the suspend stops the run; the next run takes the task first.
fn checkpoint_suspend(env: &Env) {
    let checkpoints = pexen::state::Checkpoints::in_state_dir(&env.dir.join("state"));
    let run = |first: &[&str]| -> Vec<Event> {
        env.builder(1)
            .checkpoints(checkpoints.clone())
            .run_first(first.iter().copied())
            .build()
            .run(env.tasks())
            .expect("valid graph")
            .collect()
    };
    // `other` has the better priority, so it runs before `count` here.
    let events = run(&[]);
    assert_eq!(started(&events), ["other", "count", "count"]);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::TaskSuspended { attempt: 2, message: Some(m), .. } if m == "step 2: rebooting"
    )));
    let f = finished(&events, "count");
    assert_eq!((f.outcome, f.attempt), (Outcome::Skip, 2));
    // Taken first, it finds step 2 and passes.
    let events = run(&["count"]);
    assert_eq!(started(&events), ["count", "other"]);
    assert_eq!(outcome(&events, "count"), Outcome::Pass);
    let n = std::fs::read_to_string(checkpoints.dir(&"count".into()).join("n")).unwrap();
    assert_eq!(n, "3");
}

fn fail_fast(env: &Env) {
    let events: Vec<Event> = env
        .builder(1)
        .fail_fast(true)
        .build()
        .run(env.tasks())
        .unwrap()
        .collect();
    assert_eq!(started(&events), ["bad"]);
    let l = finished(&events, "later1");
    assert_eq!(l.outcome, Outcome::Skip);
    assert!(l.cause.as_deref().unwrap().contains("fail-fast"));
}

fn cooperative_timeout(env: &Env) {
    assert_eq!(outcome(&env.run(1), "spin"), Outcome::Timeout);
}

fn late_error(env: &Env) {
    let events = env.run(2);
    for task in ["bail", "bail-panic"] {
        assert_eq!(outcome(&events, task), Outcome::Timeout, "{task}");
    }
    // What the closure said is kept when it was the one to return (on processes, the scheduler
    // may end the worker at the deadline before the closure returns).
    if !env.is_processes() {
        assert!(message(&events, "bail").contains("interrupted call"));
    }
}

fn blocking_cancel_wait(env: &Env) {
    let run = env.builder(3).build().run(env.tasks()).unwrap();
    let handle = run.handle();
    let mut events = Vec::new();
    let mut ended = 0;
    for e in run {
        // Once the two that end by themselves have ended, only a cancel can end the waiter.
        if matches!(&e, Event::TaskFinished(f) if f.task.as_str() != "waiter") {
            ended += 1;
            if ended == 2 {
                wait_for(&env.dir.join("inside"));
                handle.cancel();
            }
        }
        events.push(e);
    }
    assert_eq!(outcome(&events, "short"), Outcome::Pass);
    assert_eq!(outcome(&events, "deadline"), Outcome::Timeout);
    assert_eq!(outcome(&events, "waiter"), Outcome::Error);
    assert!(env.dir.join("saw-cancel").exists());
}

fn unserializable_export(env: &Env) {
    let events = env.run(1);
    assert_eq!(outcome(&events, "x"), Outcome::Error);
    assert!(message(&events, "x").contains("sockets do not serialize"));
}

fn added_by_task(env: &Env) {
    let events = env.run(2);
    assert_eq!(outcome(&events, "gen"), Outcome::Pass);
    for i in 0..3 {
        let child = format!("gen/child{i}");
        assert_eq!(outcome(&events, &child), Outcome::Pass);
        assert!(end_of(&events, "gen") < start_of(&events, &child));
    }
    assert!(matches!(events[0], Event::RunStarted { tasks: 1, .. }));
}

fn added_by_consumer(env: &Env) {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let blocker = Task::closure("blocker", move |_| {
        release_rx
            .lock()
            .unwrap()
            .recv()
            .map_err(|_| TaskError::fail("no release"))
    })
    .provides(["base"])
    // It waits on a channel of this process.
    .pool(PoolKind::Threads);
    let mut run = env.builder(2).build().run(vec![blocker]).unwrap();
    let mut events = Vec::new();
    while let Some(e) = run.next() {
        if matches!(&e, Event::TaskStarted { task, .. } if task.as_str() == "blocker") {
            run.add_tasks(crate::scenarios::extra(env.name)).unwrap();
            release_tx.send(()).unwrap();
        }
        events.push(e);
    }
    assert_eq!(outcome(&events, "added"), Outcome::Pass);
    assert!(end_of(&events, "blocker") < start_of(&events, "added"));
}

fn drop_cancels(env: &Env) {
    let mut run = env.builder(2).build().run(env.tasks()).unwrap();
    assert!(matches!(run.next(), Some(Event::RunStarted { .. })));
    wait_for(&env.dir.join("inside"));
    drop(run);
    // Drop returned: threads were joined (they saw the cancellation), worker processes killed
    // and reaped (main checks that no child is left).
    if !env.is_processes() {
        assert!(env.dir.join("saw-cancel").exists());
    }
}

fn cancel(env: &Env) {
    let run = env.builder(1).build().run(env.tasks()).unwrap();
    let handle = run.handle();
    let mut events = Vec::new();
    for e in run {
        if matches!(e, Event::TaskStarted { .. }) {
            wait_for(&env.dir.join("inside"));
            handle.cancel();
        }
        events.push(e);
    }
    // Cooperative on both pools: the task saw the cancellation and returned its error.
    assert_eq!(outcome(&events, "forever"), Outcome::Error);
    assert!(env.dir.join("saw-cancel").exists());
    assert_eq!(outcome(&events, "never"), Outcome::Skip);
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            interrupted: true,
            ..
        })
    ));
}

fn one_finished_each(env: &Env) {
    let events = env.run(3);
    for i in 0..50 {
        finished(&events, &format!("t{i}"));
    }
    match events.last() {
        Some(Event::RunFinished { counts, .. }) => assert_eq!(counts.total(), 50),
        other => panic!("{other:?}"),
    }
}
