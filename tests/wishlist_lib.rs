//! SPEC 13 in the library: groups, virtual tokens and conditions on closure tasks, checked
//! from recorded events. (A group's `pool` is checked in `tests/process_pool`, whose binary can
//! serve worker processes.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pexen::{Condition, Event, Group, Outcome, Scheduler, Task};

#[path = "common/events.rs"]
mod events;
use events::{finished, outcome};

/// A closure that records the most tasks of its group seen running at once.
fn counted(name: &str, group: &str, now: &Arc<AtomicUsize>, peak: &Arc<AtomicUsize>) -> Task {
    let (now, peak) = (now.clone(), peak.clone());
    Task::closure(name, move |_| {
        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(n, Ordering::SeqCst);
        std::thread::yield_now();
        now.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    })
    .group(group)
}

#[test]
fn groups_run_one_at_a_time_within_their_jobs() {
    let (now_a, peak_a) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (now_b, peak_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for i in 0..50 {
        tasks.push(counted(&format!("a{i}"), "a", &now_a, &peak_a));
        tasks.push(counted(&format!("b{i}"), "b", &now_b, &peak_b));
    }
    let events: Vec<Event> = Scheduler::builder()
        .jobs(4)
        .group(Group::new("a").jobs(1))
        .group(Group::new("b").jobs(3))
        .build()
        .run(tasks)
        .unwrap()
        .collect();
    assert!(peak_a.load(Ordering::SeqCst) <= 1);
    assert!(peak_b.load(Ordering::SeqCst) <= 3);
    // From the events: a's turn, then b's (a0 is the best ready task), each bracketed, and
    // every task started inside its own group's turn.
    let mut turns = Vec::new();
    let mut active = None;
    let mut running = 0usize;
    for e in &events {
        match e {
            Event::GroupStarted { group } => {
                assert_eq!(running, 0);
                turns.push(group.clone());
                active = Some(group.clone());
            }
            Event::GroupFinished { group } => {
                assert_eq!(active.take().as_ref(), Some(group));
                assert_eq!(running, 0);
            }
            Event::TaskStarted { task, .. } => {
                running += 1;
                assert_eq!(active.as_deref(), Some(&task.as_str()[..1]));
                let jobs = if task.as_str().starts_with('a') { 1 } else { 3 };
                assert!(running <= jobs, "{running} running in {active:?}");
            }
            Event::TaskFinished(_) => running -= 1,
            _ => {}
        }
    }
    assert_eq!(turns, ["a", "b"]);
}

#[test]
fn a_virtual_token_and_a_condition_in_the_library() {
    let events: Vec<Event> = Scheduler::builder()
        .jobs(2)
        .virtual_tokens(["mta"])
        .build()
        .run(vec![
            Task::closure("exim", |_| Ok(()))
                .provides(["mta"])
                .when(Condition::default().exists("/definitely/not/here")),
            Task::closure("postfix", |_| Ok(())).provides(["mta"]),
            Task::closure("send", |_| Ok(())).requires(["mta"]),
            Task::closure("here", |_| Ok(())).when(Condition::default().os([std::env::consts::OS])),
        ])
        .unwrap()
        .collect();
    assert_eq!(
        finished(&events, "exim").cause.as_deref(),
        Some("condition: /definitely/not/here does not exist")
    );
    assert_eq!(outcome(&events, "send"), Outcome::Pass);
    assert_eq!(outcome(&events, "here"), Outcome::Pass);
    // No group declared: no group events.
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::GroupStarted { .. })));
}

#[test]
fn an_undeclared_group_is_refused_before_anything_runs() {
    let err = Scheduler::builder()
        .build()
        .run(vec![Task::closure("a", |_| Ok(())).group("vm")])
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "1 problem in the task graph\n  - task `a` belongs to group `vm`, which is not declared"
    );
}

#[test]
fn a_run_refused_for_its_graph_runs_no_condition_command() {
    let dir = std::env::temp_dir().join(format!("pexen-cond-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ran = dir.join("ran");
    let touch = format!("touch '{}'", ran.display());
    let err = Scheduler::builder()
        .build()
        .run(vec![
            Task::closure("probe", |_| Ok(())).when(Condition::default().command([
                "sh",
                "-c",
                touch.as_str(),
            ])),
            Task::closure("orphan", |_| Ok(())).requires(["nobody-provides-this"]),
        ])
        .err()
        .expect("a token nobody provides refuses the run");
    assert!(err.to_string().contains("nobody-provides-this"), "{err}");
    let evaluated = ran.exists();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        !evaluated,
        "a condition's command ran for a run that was refused"
    );
}
