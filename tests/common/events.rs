//! Reading a run's recorded events: who started when, how each task ended. Shared by the engine
//! tests and the process-pool tests (included there by path).

#![allow(dead_code, unreachable_pub)]

use pexen::{Event, Finished, Outcome};

pub fn started(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::TaskStarted { task, .. } => Some(task.to_string()),
            _ => None,
        })
        .collect()
}

pub fn finished<'a>(events: &'a [Event], name: &str) -> &'a Finished {
    let all: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::TaskFinished(f) if f.task.as_str() == name => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(all.len(), 1, "exactly one TaskFinished for {name}");
    all[0]
}

pub fn outcome(events: &[Event], name: &str) -> Outcome {
    finished(events, name).outcome
}

pub fn message<'a>(events: &'a [Event], name: &str) -> &'a str {
    finished(events, name).message.as_deref().unwrap_or("")
}

pub fn run_outcome(events: &[Event]) -> Outcome {
    match events.last() {
        Some(Event::RunFinished { outcome, .. }) => *outcome,
        other => panic!("last event is not RunFinished: {other:?}"),
    }
}

pub fn start_of(events: &[Event], name: &str) -> usize {
    events
        .iter()
        .position(|e| matches!(e, Event::TaskStarted { task, .. } if task.as_str() == name))
        .expect("started")
}

pub fn end_of(events: &[Event], name: &str) -> usize {
    events
        .iter()
        .position(|e| matches!(e, Event::TaskFinished(f) if f.task.as_str() == name))
        .expect("finished")
}

/// The results a task reported, in order.
pub fn results(events: &[Event], name: &str) -> Vec<(Outcome, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::TaskResult {
                task,
                status,
                message,
                ..
            } if task.as_str() == name => Some((*status, message.clone())),
            _ => None,
        })
        .collect()
}
