//! The run state driven by hand, without threads or processes: every decision is a transition.

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::task::{Task, TaskName};

fn t(name: &str) -> Task {
    Task::closure(name, |_| Ok(()))
}

fn state(tasks: Vec<Task>) -> RunState {
    RunState::new(tasks, BTreeMap::new(), false, HashMap::new(), &[])
        .expect("valid graph")
        .0
}

/// Starts the next task and returns its name and attempt.
fn start(s: &mut RunState) -> Option<(String, u32)> {
    s.next_start(false)
        .map(|st| (s.task(st.idx).name.to_string(), st.attempt))
}

fn idx(s: &RunState, name: &str) -> u32 {
    (0..s.len() as u32)
        .find(|&i| s.task(i).name.as_str() == name)
        .unwrap()
}

fn done(s: &mut RunState, name: &str, attempt: u32, outcome: Outcome) {
    let i = idx(s, name);
    s.on_done(i, attempt, Attempt::new(outcome));
}

fn finished(s: &RunState, name: &str) -> Option<Finished> {
    s.events.iter().find_map(|e| match e {
        Event::TaskFinished(f) if f.task.as_str() == name => Some(f.clone()),
        _ => None,
    })
}

fn started(s: &RunState, name: &str) -> bool {
    s.events
        .iter()
        .any(|e| matches!(e, Event::TaskStarted { task, .. } if task.as_str() == name))
}

#[test]
fn lowest_priority_first_then_definition_order() {
    let mut s = state(vec![
        t("a").priority(5),
        t("b").priority(-3),
        t("c"),
        t("d").priority(-3),
    ]);
    let order: Vec<String> = std::iter::from_fn(|| start(&mut s).map(|(n, _)| n)).collect();
    assert_eq!(order, ["b", "d", "c", "a"]);
}

#[test]
fn a_token_waits_for_every_provider_and_a_failure_skips_with_cause() {
    let mut s = state(vec![
        t("p1").provides(["t"]),
        t("p2").provides(["t"]),
        t("d").requires(["t"]).provides(["u"]),
        t("e").requires(["u"]),
    ]);
    assert_eq!(start(&mut s), Some(("p1".into(), 1)));
    assert_eq!(start(&mut s), Some(("p2".into(), 1)));
    done(&mut s, "p1", 1, Outcome::Pass);
    assert_eq!(start(&mut s), None, "d still waits for p2");
    done(&mut s, "p2", 1, Outcome::Fail);
    let d = finished(&s, "d").unwrap();
    assert_eq!(d.outcome, Outcome::Skip);
    assert_eq!(
        d.cause.as_deref(),
        Some("required token `t` is not available: `p2` ended fail")
    );
    let e = finished(&s, "e").unwrap();
    assert_eq!(
        e.cause.as_deref(),
        Some("required token `u` is not available: `d` was skipped")
    );
    assert!(s.all_done());
}

#[test]
fn a_lock_waiter_starts_when_the_holder_ends() {
    let mut s = state(vec![t("a").claims(["L"]), t("b").claims(["L"]), t("c")]);
    assert_eq!(start(&mut s).unwrap().0, "a");
    // b is parked on the lock; c, behind it in order, may start.
    assert_eq!(start(&mut s).unwrap().0, "c");
    assert_eq!(start(&mut s), None);
    done(&mut s, "a", 1, Outcome::Error);
    assert_eq!(start(&mut s).unwrap().0, "b");
}

#[test]
fn retries_requeue_until_attempts_are_spent() {
    let mut s = state(vec![t("f").retries(1)]);
    assert_eq!(start(&mut s), Some(("f".into(), 1)));
    done(&mut s, "f", 1, Outcome::Fail);
    assert!(s
        .events
        .iter()
        .any(|e| matches!(e, Event::TaskRetrying { attempt: 1, .. })));
    assert!(finished(&s, "f").is_none());
    assert_eq!(start(&mut s), Some(("f".into(), 2)));
    done(&mut s, "f", 2, Outcome::Fail);
    let f = finished(&s, "f").unwrap();
    assert_eq!((f.outcome, f.attempt), (Outcome::Fail, 2));
}

#[test]
fn a_reservation_never_jumps_ahead_of_a_better_waiting_task() {
    let mut s = state(vec![
        t("a").provides(["x"]),
        t("b").requires(["x"]).priority(-5),
        t("c"),
    ]);
    assert_eq!(start(&mut s).unwrap().0, "a");
    // c is ready, but b (better) may become ready when a ends: no reservation of c.
    assert!(s.next_start(true).is_none());
    done(&mut s, "a", 1, Outcome::Pass);
    let b = s.next_start(true).expect("b is ready and best");
    assert_eq!(s.task(b.idx).name.as_str(), "b");
    // Reserved: not reported as started until it begins.
    assert!(!started(&s, "b"));
    s.begin(b.idx, b.attempt);
    assert!(started(&s, "b"));
}

#[test]
fn a_reserved_task_given_back_runs_later_as_its_first_attempt() {
    let mut s = state(vec![t("a").claims(["L"]), t("b").claims(["L"])]);
    let a = s.next_start(true).unwrap();
    assert!(s.next_start(false).is_none(), "a holds L while reserved");
    s.give_back(a.idx, a.attempt);
    assert!(!started(&s, "a"));
    assert_eq!(start(&mut s), Some(("a".into(), 1)));
}

#[test]
fn cancel_lets_running_tasks_end_then_skips_the_rest() {
    let mut s = state(vec![t("a"), t("b")]);
    assert_eq!(start(&mut s).unwrap().0, "a");
    s.cancel();
    assert_eq!(start(&mut s), None);
    assert!(!s.settle_stopped(), "a is still running");
    done(&mut s, "a", 1, Outcome::Error);
    assert!(s.settle_stopped());
    let b = finished(&s, "b").unwrap();
    assert_eq!(b.outcome, Outcome::Skip);
    assert_eq!(b.cause.as_deref(), Some("not run: the run was interrupted"));
    assert!(s.all_done());
    assert!(matches!(
        s.run_finished(Duration::ZERO),
        Event::RunFinished {
            outcome: Outcome::Error,
            interrupted: true,
            ..
        }
    ));
}

#[test]
fn resumed_tasks_finish_without_running_and_satisfy_their_tokens() {
    let resumed = HashMap::from([(
        TaskName::from("p"),
        Resumed {
            outcome: Outcome::Pass,
            attempt: 1,
            exit_code: Some(0),
            duration: Duration::ZERO,
            message: None,
            results: vec![(Outcome::Pass, "sub".into())],
            exports: Shared::from([("k".to_string(), serde_json::json!("v"))]),
        },
    )]);
    let mut s = RunState::new(
        vec![t("p").provides(["x"]), t("d").requires(["x"])],
        BTreeMap::new(),
        false,
        resumed,
        &[],
    )
    .unwrap()
    .0;
    let next = s.next_start(false).unwrap();
    assert_eq!(s.task(next.idx).name.as_str(), "d");
    assert!(finished(&s, "p").unwrap().resumed);
    assert!(!started(&s, "p"));
    assert_eq!(next.shared.unwrap()["k"], "v");
}

fn suspend(s: &mut RunState, name: &str, attempt: u32) {
    let i = idx(s, name);
    let mut a = Attempt::suspended("exit code 75");
    a.exit_code = Some(75);
    s.on_done(i, attempt, a);
}

fn cause(s: &RunState, name: &str) -> String {
    finished(s, name).unwrap().cause.unwrap_or_default()
}

#[test]
fn a_suspend_starts_nothing_more_lets_running_tasks_finish_and_skips_the_rest() {
    let mut s = state(vec![
        t("boot").provides(["booted"]).retries(3),
        t("busy"),
        t("after").requires(["booted"]),
        t("later"),
    ]);
    assert_eq!(start(&mut s), Some(("boot".into(), 1)));
    assert_eq!(start(&mut s), Some(("busy".into(), 1)));
    suspend(&mut s, "boot", 1);

    // Reported as suspended, then finished at once (journaled now): a skip saying why, no retry.
    let kinds: Vec<&str> = s
        .events
        .iter()
        .filter(|e| e.task().is_some_and(|t| t.as_str() == "boot"))
        .map(|e| match e {
            Event::TaskStarted { .. } => "started",
            Event::TaskSuspended { .. } => "suspended",
            Event::TaskFinished(_) => "finished",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["started", "suspended", "finished"]);
    let f = finished(&s, "boot").unwrap();
    assert_eq!(
        (f.outcome, f.exit_code, f.attempt),
        (Outcome::Skip, Some(75), 1)
    );
    assert_eq!(
        f.cause.as_deref(),
        Some("suspended (exit code 75): continue the run with --resume")
    );
    // Its dependent cannot run in this run: skipped now, naming it.
    assert_eq!(
        cause(&s, "after"),
        "required token `booted` is not available: `boot` was suspended"
    );

    // Nothing new starts, but the running task goes on and ends as it ends.
    assert_eq!(start(&mut s), None);
    assert!(!s.settle_stopped(), "a task still runs");
    done(&mut s, "busy", 1, Outcome::Pass);
    assert_eq!(finished(&s, "busy").unwrap().outcome, Outcome::Pass);
    assert!(s.settle_stopped());
    assert!(!started(&s, "later"));
    assert_eq!(
        cause(&s, "later"),
        "not run: the run was suspended by `boot`"
    );
    assert!(s.all_done());
    assert!(matches!(
        s.run_finished(Duration::ZERO),
        Event::RunFinished {
            interrupted: false,
            ..
        }
    ));
}

#[test]
fn a_failure_while_suspended_is_not_retried_and_an_interrupt_still_wins() {
    let mut s = state(vec![t("a"), t("b").retries(2), t("c")]);
    start(&mut s);
    start(&mut s);
    suspend(&mut s, "a", 1);
    done(&mut s, "b", 1, Outcome::Fail);
    assert_eq!(finished(&s, "b").unwrap().outcome, Outcome::Fail);
    assert!(!s
        .events
        .iter()
        .any(|e| matches!(e, Event::TaskRetrying { .. })));

    // Interrupted, then a task suspends: the run ends as interrupted.
    let mut s = state(vec![t("a"), t("b")]);
    start(&mut s);
    s.cancel();
    suspend(&mut s, "a", 1);
    assert!(s.settle_stopped());
    assert_eq!(cause(&s, "b"), "not run: the run was interrupted");
    assert!(s.is_cancelled());
}

#[test]
fn tasks_to_run_first_go_ahead_of_any_priority_once_their_requires_are_met() {
    let resumed = HashMap::from([(
        TaskName::new("p"),
        Resumed {
            outcome: Outcome::Pass,
            attempt: 1,
            exit_code: Some(0),
            duration: Duration::ZERO,
            message: None,
            results: Vec::new(),
            exports: Shared::new(),
        },
    )]);
    let tasks = vec![
        t("urgent").priority(-100),
        t("other"),
        t("waits").requires(["w"]).priority(-50),
        t("rebooted").requires(["x"]).priority(10),
        t("gives-w").provides(["w"]).priority(20),
        t("p").provides(["x"]).priority(50),
    ];
    let first = [TaskName::new("rebooted"), TaskName::new("waits")];
    let mut s = RunState::new(tasks, BTreeMap::new(), false, resumed, &first)
        .unwrap()
        .0;
    let order: Vec<String> = std::iter::from_fn(|| {
        let (name, attempt) = start(&mut s)?;
        done(&mut s, &name, attempt, Outcome::Pass);
        Some(name)
    })
    .collect();
    // `rebooted` needs `p`, which is resumed at once; `waits` needs `gives-w` to run first.
    assert_eq!(order, ["rebooted", "urgent", "other", "gives-w", "waits"]);
    assert!(finished(&s, "p").unwrap().resumed);
}
