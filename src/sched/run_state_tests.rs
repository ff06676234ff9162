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
fn admission_counts_each_required_token_once_and_only_those_still_to_come() {
    // A first batch: `d` names `t` twice and needs `u` too; it waits for both providers.
    let mut s = state(vec![
        t("p").provides(["t"]),
        t("q").provides(["u"]),
        t("d").requires(["t", "t", "u"]),
    ]);
    assert_eq!(start(&mut s), Some(("p".into(), 1)));
    assert_eq!(start(&mut s), Some(("q".into(), 1)));
    done(&mut s, "p", 1, Outcome::Pass);
    assert_eq!(start(&mut s), None, "d still waits for `u`");
    done(&mut s, "q", 1, Outcome::Pass);
    assert_eq!(start(&mut s), Some(("d".into(), 1)));
    // Added tasks: `t` is satisfied already, `v` is new and provided in the same batch.
    s.add_tasks(vec![t("e").requires(["t", "v"]), t("f").provides(["v"])])
        .unwrap();
    assert_eq!(
        start(&mut s),
        Some(("f".into(), 1)),
        "e waits for `v` alone"
    );
    assert_eq!(start(&mut s), None);
    done(&mut s, "f", 1, Outcome::Pass);
    assert_eq!(start(&mut s), Some(("e".into(), 1)));
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
    s.begin(b.idx, b.attempt, None);
    assert!(started(&s, "b"));
}

#[test]
fn reservations_respect_waiting_tasks_out_of_definition_order_and_added_later() {
    // Waiting keys out of definition order (b 3, c -5), and one added while they wait (e -10).
    let mut s = state(vec![
        t("a").provides(["x"]),
        t("b").requires(["x"]).priority(3),
        t("c").requires(["x"]).priority(-5),
        t("d"),
    ]);
    assert_eq!(start(&mut s).unwrap().0, "a");
    assert!(
        s.next_start(true).is_none(),
        "c may become ready and beats d"
    );
    s.add_tasks(vec![
        t("e").requires(["x"]).priority(-10),
        t("f").priority(1),
    ])
    .unwrap();
    assert!(
        s.next_start(true).is_none(),
        "e may become ready and beats d"
    );
    done(&mut s, "a", 1, Outcome::Pass);
    let mut order = Vec::new();
    while let Some(st) = s.next_start(true) {
        order.push(s.task(st.idx).name.to_string());
    }
    assert_eq!(order, ["e", "c", "d", "f", "b"]);
}

#[test]
fn a_task_added_while_others_wait_holds_back_reservations_too() {
    let mut s = state(vec![
        t("a").provides(["x"]),
        t("b").requires(["x"]).priority(3),
        t("d"),
    ]);
    assert_eq!(start(&mut s).unwrap().0, "a");
    let d = s.next_start(true).expect("only b waits, and d beats it");
    assert_eq!(s.task(d.idx).name.as_str(), "d");
    s.add_tasks(vec![
        t("e").requires(["x"]).priority(-10),
        t("f").priority(1),
    ])
    .unwrap();
    assert!(
        s.next_start(true).is_none(),
        "e may become ready and beats f"
    );
    done(&mut s, "a", 1, Outcome::Pass);
    let e = s.next_start(true).expect("e is ready and best");
    assert_eq!(s.task(e.idx).name.as_str(), "e");
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

/// Task `name` as an earlier run recorded it: passed at its first attempt.
fn passed_earlier(name: &str) -> HashMap<TaskName, Resumed> {
    HashMap::from([(
        TaskName::new(name),
        Resumed {
            outcome: Outcome::Pass,
            attempt: 1,
            exit_code: Some(0),
            duration: Duration::ZERO,
            message: None,
            results: Vec::new(),
            exports: Shared::new(),
        },
    )])
}

#[test]
fn tasks_to_run_first_go_ahead_of_any_priority_once_their_requires_are_met() {
    let resumed = passed_earlier("p");
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

#[test]
fn a_large_first_batch_admitted_beside_its_validation_keeps_priorities_locks_and_resumes() {
    // Large enough for validation's second thread (and the admission read beside it): the
    // tasks to run first and the resumed one must still win over the rest, and locks hold.
    let resumed = passed_earlier("p");
    let mut tasks = vec![
        t("urgent").priority(-100),
        t("rebooted").requires(["x"]).priority(10),
        t("p").provides(["x"]).priority(50),
        t("l1").claims(["L"]).priority(60),
        t("l2").claims(["L"]).priority(60),
    ];
    let n = 1 << 15;
    tasks.extend((0..n).map(|i| {
        let f = t(&format!("f{i}"))
            .priority(100)
            .provides([format!("k{i}")]);
        if i == 0 {
            f
        } else {
            f.requires([format!("k{}", i - 1)])
        }
    }));
    let first = [TaskName::new("rebooted")];
    let mut s = RunState::new(tasks, BTreeMap::new(), false, resumed, &first)
        .unwrap()
        .0;
    let mut order = Vec::new();
    for _ in 0..2 {
        let (name, attempt) = start(&mut s).unwrap();
        done(&mut s, &name, attempt, Outcome::Pass);
        order.push(name);
    }
    assert_eq!(order, ["rebooted", "urgent"]);
    assert!(finished(&s, "p").unwrap().resumed);
    // `l1` holds the lock: `l2` waits for it, the chain's first task goes meanwhile.
    let (l1, a) = start(&mut s).unwrap();
    assert_eq!(l1, "l1");
    assert_eq!(start(&mut s).map(|(name, _)| name).as_deref(), Some("f0"));
    done(&mut s, "l1", a, Outcome::Pass);
    assert_eq!(start(&mut s).map(|(name, _)| name).as_deref(), Some("l2"));
}

fn planned(tasks: Vec<Task>, plan: Plan) -> RunState {
    RunState::with_plan(tasks, BTreeMap::new(), false, HashMap::new(), plan)
        .expect("valid graph")
        .0
}

fn groups(jobs: usize, declared: &[(&str, Option<usize>)]) -> Plan {
    Plan {
        groups: declared
            .iter()
            .map(|&(name, j)| {
                let mut g = Group::new(name);
                g.jobs = j;
                (name.to_string(), g)
            })
            .collect(),
        jobs,
        ..Plan::default()
    }
}

/// The group and task events, in order, as short strings (`+vm`, `-vm`, `>a`, `<a`).
fn trace(s: &RunState) -> Vec<String> {
    s.events
        .iter()
        .filter_map(|e| match e {
            Event::GroupStarted { group } => Some(format!("+{group}")),
            Event::GroupFinished { group } => Some(format!("-{group}")),
            Event::TaskStarted { task, .. } => Some(format!(">{task}")),
            Event::TaskFinished(f) => Some(format!("<{}", f.task)),
            _ => None,
        })
        .collect()
}

#[test]
fn one_group_at_a_time_switching_only_when_the_running_one_is_idle() {
    let mut s = planned(
        vec![
            t("v1").group("vm"),
            t("s1").group("sys").priority(-1),
            t("v2").group("vm"),
            t("s2").group("sys"),
            t("free"),
        ],
        groups(4, &[("vm", Some(1)), ("sys", Some(2))]),
    );
    // The best ready task is s1 (priority -1): `sys` first, with its 2 jobs.
    assert_eq!(start(&mut s), Some(("s1".into(), 1)));
    assert_eq!(start(&mut s), Some(("s2".into(), 1)));
    assert_eq!(start(&mut s), None, "no other group while sys runs");
    done(&mut s, "s1", 1, Outcome::Pass);
    assert_eq!(start(&mut s), None, "s2 still runs");
    done(&mut s, "s2", 1, Outcome::Pass);
    // Next: the group of the best ready task, v1 (definition order before `free`).
    assert_eq!(start(&mut s), Some(("v1".into(), 1)));
    assert_eq!(start(&mut s), None, "vm runs one at a time");
    done(&mut s, "v1", 1, Outcome::Pass);
    assert_eq!(start(&mut s), Some(("v2".into(), 1)));
    done(&mut s, "v2", 1, Outcome::Pass);
    assert_eq!(start(&mut s), Some(("free".into(), 1)));
    done(&mut s, "free", 1, Outcome::Pass);
    assert_eq!(start(&mut s), None);
    let _ = s.run_finished(Duration::ZERO);
    assert_eq!(
        trace(&s),
        [
            "+sys", ">s1", ">s2", "<s1", "<s2", "-sys", "+vm", ">v1", "<v1", ">v2", "<v2", "-vm",
            "+", ">free", "<free", "-"
        ]
    );
}

#[test]
fn a_group_that_waits_for_another_gets_a_second_turn() {
    // vm/b requires what sys/a provides, and sys/a requires what vm/a provides.
    let mut s = planned(
        vec![
            t("vm/a").group("vm").provides(["booted"]),
            t("sys/a")
                .group("sys")
                .requires(["booted"])
                .provides(["ready"]),
            t("vm/b").group("vm").requires(["ready"]),
        ],
        groups(2, &[("vm", None), ("sys", None)]),
    );
    for name in ["vm/a", "sys/a", "vm/b"] {
        assert_eq!(start(&mut s), Some((name.into(), 1)));
        assert_eq!(start(&mut s), None);
        done(&mut s, name, 1, Outcome::Pass);
    }
    let _ = s.run_finished(Duration::ZERO);
    assert_eq!(
        trace(&s),
        [
            "+vm", ">vm/a", "<vm/a", "-vm", "+sys", ">sys/a", "<sys/a", "-sys", "+vm", ">vm/b",
            "<vm/b", "-vm"
        ]
    );
}

#[test]
fn a_group_does_not_switch_while_its_retry_is_ready() {
    let mut s = planned(
        vec![t("a").group("g").retries(1), t("b").group("h")],
        groups(1, &[("g", None), ("h", None)]),
    );
    assert_eq!(start(&mut s), Some(("a".into(), 1)));
    done(&mut s, "a", 1, Outcome::Fail);
    assert_eq!(
        start(&mut s),
        Some(("a".into(), 2)),
        "the retry keeps the turn"
    );
    done(&mut s, "a", 2, Outcome::Pass);
    assert_eq!(start(&mut s), Some(("b".into(), 1)));
}

#[test]
fn an_undeclared_group_is_an_error() {
    let e = RunState::with_plan(
        vec![t("a").group("nope")],
        BTreeMap::new(),
        false,
        HashMap::new(),
        groups(1, &[("vm", None)]),
    )
    .err()
    .unwrap();
    assert_eq!(
        e.0,
        [GraphError::UnknownGroup {
            task: "a".into(),
            group: "nope".into()
        }]
    );
    // Without any declared group too.
    assert!(RunState::with_plan(
        vec![t("a").group("nope")],
        BTreeMap::new(),
        false,
        HashMap::new(),
        Plan::default()
    )
    .is_err());
}

fn virtual_mta() -> Plan {
    Plan {
        virtuals: vec!["mta".into()],
        ..Plan::default()
    }
}

#[test]
fn a_virtual_token_is_satisfied_by_the_first_provider_that_succeeds() {
    let mut s = planned(
        vec![
            t("exim").provides(["mta"]),
            t("postfix").provides(["mta"]),
            t("mail").requires(["mta"]),
        ],
        virtual_mta(),
    );
    assert_eq!(start(&mut s), Some(("exim".into(), 1)));
    assert_eq!(start(&mut s), Some(("postfix".into(), 1)));
    done(&mut s, "exim", 1, Outcome::Fail);
    assert_eq!(start(&mut s), None, "exim failed: mail waits for postfix");
    done(&mut s, "postfix", 1, Outcome::Pass);
    assert_eq!(start(&mut s), Some(("mail".into(), 1)));
}

#[test]
fn a_virtual_token_does_not_wait_for_the_other_providers() {
    let mut s = planned(
        vec![
            t("exim").provides(["mta"]),
            t("postfix").provides(["mta"]),
            t("mail").requires(["mta"]),
        ],
        virtual_mta(),
    );
    start(&mut s);
    start(&mut s);
    done(&mut s, "postfix", 1, Outcome::Pass);
    assert_eq!(start(&mut s), Some(("mail".into(), 1)));
    // A later failure of the other provider changes nothing for the token.
    done(&mut s, "exim", 1, Outcome::Fail);
    done(&mut s, "mail", 1, Outcome::Pass);
    assert_eq!(finished(&s, "mail").unwrap().outcome, Outcome::Pass);
}

#[test]
fn a_virtual_token_fails_when_every_provider_failed_or_was_skipped() {
    let mut s = planned(
        vec![
            t("exim").provides(["mta"]),
            t("postfix").provides(["mta"]),
            t("mail").requires(["mta"]),
        ],
        Plan {
            virtuals: vec!["mta".into()],
            unmet: vec![(1, "condition: /usr/sbin/postfix does not exist".into())],
            ..Plan::default()
        },
    );
    assert_eq!(
        finished(&s, "postfix").unwrap().cause.as_deref(),
        Some("condition: /usr/sbin/postfix does not exist")
    );
    assert_eq!(start(&mut s), Some(("exim".into(), 1)));
    assert_eq!(start(&mut s), None);
    done(&mut s, "exim", 1, Outcome::Error);
    let mail = finished(&s, "mail").unwrap();
    assert_eq!(mail.outcome, Outcome::Skip);
    assert_eq!(
        mail.cause.as_deref(),
        Some("required token `mta` is not available: no provider succeeded (`postfix` was skipped, `exim` ended error)")
    );
}

#[test]
fn a_virtual_token_nobody_provides_is_an_error() {
    let e = RunState::with_plan(
        vec![t("a").provides(["x"])],
        BTreeMap::new(),
        false,
        HashMap::new(),
        virtual_mta(),
    )
    .err()
    .unwrap();
    assert_eq!(
        e.0,
        [GraphError::VirtualWithoutProvider {
            token: "mta".into()
        }]
    );
}

#[test]
fn an_unmet_condition_skips_with_its_cause_and_does_not_satisfy_tokens() {
    let s = planned(
        vec![t("kvm").provides(["vm"]), t("boot").requires(["vm"])],
        Plan {
            unmet: vec![(0, "condition: /dev/kvm does not exist".into())],
            ..Plan::default()
        },
    );
    let kvm = finished(&s, "kvm").unwrap();
    assert_eq!(
        (kvm.outcome, kvm.cause.as_deref()),
        (Outcome::Skip, Some("condition: /dev/kvm does not exist"))
    );
    assert_eq!(
        finished(&s, "boot").unwrap().cause.as_deref(),
        Some("required token `vm` is not available: `kvm` was skipped")
    );
    assert!(s.all_done());
}

#[test]
fn a_lost_host_puts_the_attempt_back_twice_then_it_is_an_error() {
    let mut s = state(vec![t("a").claims(["L"]).retries(1), t("b").claims(["L"])]);
    s.defer_begin = true;
    let starts = |s: &RunState| {
        s.events
            .iter()
            .filter(|e| matches!(e, Event::TaskStarted { host: Some(h), .. } if &**h == "h1"))
            .count()
    };
    for i in 0..MAX_REQUEUES as usize {
        let a = s.next_start(false).unwrap();
        assert_eq!((s.task(a.idx).name.as_str(), a.attempt), ("a", 1));
        // Deferred: reported when the executor says where it runs.
        assert_eq!(starts(&s), i);
        s.begin(a.idx, a.attempt, Some(Arc::from("h1")));
        assert_eq!(starts(&s), i + 1);
        s.on_done(a.idx, a.attempt, Attempt::lost("the connection closed"));
        // Not an attempt, no retry, and the lock is free again.
        assert!(finished(&s, "a").is_none());
        assert!(!s
            .events
            .iter()
            .any(|e| matches!(e, Event::TaskRetrying { .. })));
    }
    let a = s.next_start(false).unwrap();
    assert_eq!(a.attempt, 1);
    s.begin(a.idx, a.attempt, Some(Arc::from("h2")));
    s.on_done(a.idx, a.attempt, Attempt::lost("the connection closed"));
    // A third loss is the attempt's `error`; retries apply to it as to any error.
    let retry = s.events.iter().find_map(|e| match e {
        Event::TaskRetrying {
            attempt, message, ..
        } => Some((*attempt, message.clone())),
        _ => None,
    });
    assert_eq!(
        retry,
        Some((1, Some("host lost: the connection closed".to_string())))
    );
    let a = s.next_start(false).unwrap();
    assert_eq!(a.attempt, 2);
    s.begin(a.idx, a.attempt, Some(Arc::from("h2")));
    s.on_done(a.idx, a.attempt, Attempt::new(Outcome::Pass));
    let f = finished(&s, "a").unwrap();
    assert_eq!((f.outcome, f.attempt), (Outcome::Pass, 2));
    assert_eq!(f.host.as_deref(), Some("h2"));
    assert_eq!(start(&mut s).map(|(n, _)| n), Some("b".to_string()));
}

#[test]
fn an_attempt_that_never_started_goes_back_uncounted_and_a_cancel_skips_it() {
    let mut s = state(vec![t("a").claims(["L"]), t("b").claims(["L"])]);
    s.defer_begin = true;
    let a = s.next_start(false).unwrap();
    assert_eq!((s.task(a.idx).name.as_str(), a.attempt), ("a", 1));
    // Dropped from a host's queue, or its host lost before it started: back to the queue
    // with its lock free, no event, not an attempt, no requeue counted.
    s.on_done(a.idx, a.attempt, Attempt::not_started());
    assert!(s.events.is_empty(), "{:?}", s.events);
    assert_eq!(s.running(), 0);
    for _ in 0..=MAX_REQUEUES {
        let a = s.next_start(false).unwrap();
        assert_eq!((s.task(a.idx).name.as_str(), a.attempt), ("a", 1));
        s.on_done(a.idx, a.attempt, Attempt::not_started());
    }
    assert!(s.events.is_empty(), "{:?}", s.events);
    // On a cancel, a task that never started is skipped as the run's unstarted tasks are.
    let a = s.next_start(false).unwrap();
    s.cancel();
    s.on_done(a.idx, a.attempt, Attempt::not_started());
    assert!(s.settle_stopped());
    for name in ["a", "b"] {
        let f = finished(&s, name).unwrap();
        assert_eq!(
            (f.outcome, f.cause.as_deref()),
            (Outcome::Skip, Some("not run: the run was interrupted"))
        );
    }
    assert!(!s
        .events
        .iter()
        .any(|e| matches!(e, Event::TaskStarted { .. })));
}

#[test]
fn a_reported_start_that_did_not_happen_is_still_an_error() {
    // Runs without hosts report the start when the attempt is handed out.
    let mut s = state(vec![t("a")]);
    let a = s.next_start(false).unwrap();
    s.on_done(a.idx, a.attempt, Attempt::not_started());
    let f = finished(&s, "a").unwrap();
    assert_eq!(
        (f.outcome, f.message.as_deref()),
        (Outcome::Error, Some("interrupted before it could start"))
    );
}

/// A chain `a -> b -> c` (each provides its name, the next requires it).
fn chain3() -> RunState {
    state(vec![
        t("a").provides(["a"]),
        t("b").requires(["a"]).provides(["b"]),
        t("c").requires(["b"]),
    ])
}

/// Reserves the successor of `prev` ahead of its token, as a worker's batch does.
fn ahead(s: &mut RunState, prev: &str) -> Option<(String, u32)> {
    let prev = idx(s, prev);
    s.reserve_successor(prev, |_| true)
        .map(|st| (s.task(st.idx).name.to_string(), st.attempt))
}

#[test]
fn a_chain_is_reserved_ahead_and_reported_in_order() {
    let mut s = chain3();
    assert_eq!(start(&mut s), Some(("a".into(), 1)));
    assert_eq!(ahead(&mut s, "a"), Some(("b".into(), 1)));
    assert_eq!(ahead(&mut s, "b"), Some(("c".into(), 1)));
    assert_eq!(ahead(&mut s, "c"), None, "c provides nothing");
    done(&mut s, "a", 1, Outcome::Pass);
    assert_eq!(start(&mut s), None, "b is reserved, not queued again");
    done(&mut s, "b", 1, Outcome::Pass);
    done(&mut s, "c", 1, Outcome::Pass);
    assert_eq!(trace(&s), [">a", "<a", ">b", "<b", ">c", "<c"]);
    assert!(s.all_done());
}

#[test]
fn a_chain_is_reserved_ahead_only_along_a_single_path_with_nothing_better_to_do() {
    // Two dependents of one token: both become ready together, nothing is reserved ahead.
    let mut s = state(vec![
        t("a").provides(["a"]),
        t("b").requires(["a"]),
        t("c").requires(["a"]),
    ]);
    start(&mut s);
    assert_eq!(ahead(&mut s, "a"), None);

    // A dependent that waits for another token too.
    let mut s = state(vec![
        t("a").provides(["a"]),
        t("x").provides(["x"]),
        t("b").requires(["a", "x"]),
    ]);
    start(&mut s);
    assert_eq!(ahead(&mut s, "a"), None, "x is ready: run it first");
    start(&mut s);
    assert_eq!(ahead(&mut s, "a"), None, "b waits for x as well");

    // Another provider of the token still to end.
    let mut s = state(vec![
        t("a").provides(["a"]),
        t("a2").provides(["a"]),
        t("b").requires(["a"]),
    ]);
    start(&mut s);
    start(&mut s);
    assert_eq!(ahead(&mut s, "a"), None);

    // A better task waits for something else.
    let mut s = state(vec![
        t("a").provides(["a"]),
        t("y").provides(["y"]),
        t("urgent").requires(["y"]).priority(-1),
        t("b").requires(["a"]),
    ]);
    assert_eq!(start(&mut s), Some(("a".into(), 1)));
    assert_eq!(start(&mut s), Some(("y".into(), 1)));
    assert_eq!(ahead(&mut s, "a"), None, "`urgent` would be preferred");
    done(&mut s, "y", 1, Outcome::Pass);
    assert_eq!(start(&mut s), Some(("urgent".into(), 1)));
    assert_eq!(ahead(&mut s, "a"), Some(("b".into(), 1)));

    // A run with locks: never ahead (a task would hold its locks before it could start).
    let mut s = state(vec![
        t("a").provides(["a"]),
        t("b").requires(["a"]),
        t("other").claims(["db"]),
    ]);
    assert_eq!(start(&mut s), Some(("a".into(), 1)));
    assert_eq!(start(&mut s), Some(("other".into(), 1)));
    assert_eq!(ahead(&mut s, "a"), None);

    // The kind of work decides too.
    let mut s = chain3();
    start(&mut s);
    let a = idx(&s, "a");
    assert!(s.reserve_successor(a, |_| false).is_none());
}

#[test]
fn a_task_reserved_ahead_of_a_failed_provider_is_given_back_and_skipped() {
    let mut s = chain3();
    start(&mut s);
    ahead(&mut s, "a");
    ahead(&mut s, "b");
    done(&mut s, "a", 1, Outcome::Fail);
    // The worker does not run what follows a failure; it gives the rest of its batch back.
    let (b, c) = (idx(&s, "b"), idx(&s, "c"));
    s.give_back(b, 1);
    s.give_back(c, 1);
    assert_eq!(
        cause(&s, "b"),
        "required token `a` is not available: `a` ended fail"
    );
    assert_eq!(
        cause(&s, "c"),
        "required token `b` is not available: `b` was skipped"
    );
    assert_eq!(finished(&s, "b").unwrap().attempt, 0);
    assert!(!started(&s, "b") && !started(&s, "c"));
    assert!(s.all_done());
    assert_eq!(s.running(), 0);
}

#[test]
fn a_task_reserved_ahead_of_a_retried_provider_waits_again() {
    let mut s = state(vec![
        t("a").provides(["a"]).retries(1),
        t("b").requires(["a"]),
    ]);
    start(&mut s);
    ahead(&mut s, "a");
    done(&mut s, "a", 1, Outcome::Fail);
    let b = idx(&s, "b");
    s.give_back(b, 1);
    assert_eq!(
        start(&mut s),
        Some(("a".into(), 2)),
        "b waits for the retry"
    );
    assert_eq!(start(&mut s), None);
    done(&mut s, "a", 2, Outcome::Pass);
    assert_eq!(start(&mut s), Some(("b".into(), 1)));
    done(&mut s, "b", 1, Outcome::Pass);
    assert!(s.all_done());
}

#[test]
fn a_task_reserved_ahead_and_given_back_after_its_provider_passed_is_ready() {
    // The provider passed but exported something: the worker gives the next task back so that
    // it starts with the exports.
    let mut s = chain3();
    start(&mut s);
    ahead(&mut s, "a");
    done(&mut s, "a", 1, Outcome::Pass);
    let b = idx(&s, "b");
    s.give_back(b, 1);
    assert_eq!(start(&mut s), Some(("b".into(), 1)));
}

#[test]
fn results_of_a_task_reserved_ahead_come_after_its_provider_ends() {
    let mut s = chain3();
    start(&mut s);
    ahead(&mut s, "a");
    let b = idx(&s, "b");
    s.on_result(b, 1, Outcome::Fail, "early".into());
    assert!(!started(&s, "b"), "a has not reported its end yet");
    done(&mut s, "a", 1, Outcome::Pass);
    done(&mut s, "b", 1, Outcome::Pass);
    let order: Vec<&str> = s
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TaskStarted { task, .. } => Some(task.as_str()),
            Event::TaskResult { message, .. } => Some(message.as_str()),
            Event::TaskFinished(f) => Some(f.task.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["a", "a", "b", "early", "b", "c"]);
    assert_eq!(finished(&s, "b").unwrap().outcome, Outcome::Fail);
    assert_eq!(
        cause(&s, "c"),
        "required token `b` is not available: `b` ended fail"
    );
}
