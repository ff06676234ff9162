//! The run model that the reporters and the journal share: one [`TaskRecord`] per finished task.
//!
//! A [`Collector`] folds the event stream into records. It keeps only what a report needs (the
//! results and failed attempts of tasks that are still running), so it stays small on long runs.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::context::Shared;
use crate::sched::events::{Counts, Event, Output};
use crate::state::fingerprint::Fingerprint;
use crate::task::{Outcome, TaskName};

/// An earlier attempt of a task that failed before a retry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub attempt: u32,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    pub duration_s: f64,
    /// The extra results this attempt reported before it failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<(Outcome, String)>,
}

/// Everything known about one finished task: what the reports show and the journal keeps.
///
/// Empty optional fields are left out of the serialized form to keep journals of 10^5 records
/// small (and fast to load).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub name: TaskName,
    pub outcome: Outcome,
    /// The attempt that decided the outcome (0 for a task that never started).
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_s: f64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    /// For a skip decided by the scheduler: the token and provider that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Why the deciding attempt ended so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The extra results of the deciding attempt, in the order they were reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<(Outcome, String)>,
    #[serde(default, skip_serializing_if = "Shared::is_empty")]
    pub exports: Shared,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// Earlier attempts that failed before a retry, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_attempts: Vec<AttemptRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// The task stopped the run to continue it later (SPEC section 12): `--resume` runs it
    /// first. Its outcome is `skip`, with a cause saying so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
    /// The task ended without success and left something in its checkpoint directory, which
    /// its next attempt (with `--resume`) finds there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checkpoint: bool,
    /// Where the deciding attempt ran (runs with hosts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl TaskRecord {
    /// A record with an outcome and nothing else (handy for tests and synthetic records).
    pub fn new(name: impl Into<TaskName>, outcome: Outcome) -> Self {
        Self {
            name: name.into(),
            outcome,
            attempt: 1,
            exit_code: None,
            duration_s: 0.0,
            resumed: false,
            cause: None,
            message: None,
            results: Vec::new(),
            exports: Shared::new(),
            output: None,
            failed_attempts: Vec::new(),
            fingerprint: None,
            suspended: false,
            checkpoint: false,
            host: None,
        }
    }
}

/// How the run as a whole ended.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub outcome: Outcome,
    pub counts: Counts,
    pub duration_s: f64,
    pub interrupted: bool,
}

/// What the collector remembers about a task between its first event and `TaskFinished`.
#[derive(Default)]
struct Pending {
    results: Vec<(Outcome, String)>,
    failed_attempts: Vec<AttemptRecord>,
    suspended: bool,
}

/// Folds events into [`TaskRecord`]s, in finish order.
///
/// ```
/// use pexen::report::Collector;
/// use pexen::{Event, Outcome, TaskName};
///
/// let mut c = Collector::new();
/// let task = TaskName::new("a");
/// c.observe(&Event::TaskStarted { task: task.clone(), attempt: 1, host: None });
/// c.observe(&Event::TaskResult { task, attempt: 1, status: Outcome::Warn, message: "slow".into() });
/// assert!(c.records().is_empty());
/// ```
#[derive(Default)]
pub struct Collector {
    pending: HashMap<TaskName, Pending>,
    fingerprints: HashMap<TaskName, Fingerprint>,
    records: Vec<TaskRecord>,
    run: Option<RunSummary>,
}

impl Collector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fingerprints to attach to the records of these tasks (computed before the run).
    pub fn set_fingerprints(
        &mut self,
        fingerprints: impl IntoIterator<Item = (TaskName, Fingerprint)>,
    ) {
        self.fingerprints.extend(fingerprints);
    }

    /// The fingerprint given for `task` by [`Collector::set_fingerprints`].
    pub fn fingerprint(&self, task: &TaskName) -> Option<&Fingerprint> {
        self.fingerprints.get(task)
    }

    /// Consumes one event; returns the new record when the event finished a task, so that the
    /// caller can journal it before reporting it.
    pub fn observe(&mut self, event: &Event) -> Option<&TaskRecord> {
        match event {
            Event::TaskStarted { task, .. } => {
                self.pending.entry(task.clone()).or_default();
                None
            }
            Event::TaskResult {
                task,
                status,
                message,
                ..
            } => {
                let p = self.pending.entry(task.clone()).or_default();
                p.results.push((*status, message.clone()));
                None
            }
            Event::TaskRetrying {
                task,
                attempt,
                outcome,
                message,
                output,
                duration,
            } => {
                let p = self.pending.entry(task.clone()).or_default();
                // The results so far belong to the failed attempt, not to the next one.
                let results = std::mem::take(&mut p.results);
                p.failed_attempts.push(AttemptRecord {
                    attempt: *attempt,
                    outcome: *outcome,
                    message: message.clone(),
                    output: output.as_deref().cloned(),
                    duration_s: duration.as_secs_f64(),
                    results,
                });
                None
            }
            Event::TaskSuspended { task, .. } => {
                self.pending.entry(task.clone()).or_default().suspended = true;
                None
            }
            Event::TaskFinished(f) => {
                let p = self.pending.remove(&f.task).unwrap_or_default();
                self.records.push(TaskRecord {
                    name: f.task.clone(),
                    outcome: f.outcome,
                    attempt: f.attempt,
                    exit_code: f.exit_code,
                    duration_s: f.duration.as_secs_f64(),
                    resumed: f.resumed,
                    cause: f.cause.clone(),
                    message: f.message.clone(),
                    results: p.results,
                    exports: f.exports.as_deref().cloned().unwrap_or_default(),
                    output: f.output.as_deref().cloned(),
                    failed_attempts: p.failed_attempts,
                    fingerprint: self.fingerprints.get(&f.task).copied(),
                    suspended: p.suspended,
                    checkpoint: false,
                    host: f.host.as_deref().map(String::from),
                });
                self.records.last()
            }
            Event::RunFinished {
                outcome,
                counts,
                duration,
                interrupted,
            } => {
                self.run = Some(RunSummary {
                    outcome: *outcome,
                    counts: *counts,
                    duration_s: duration.as_secs_f64(),
                    interrupted: *interrupted,
                });
                None
            }
            Event::RunStarted { .. }
            | Event::Warning { .. }
            | Event::GroupStarted { .. }
            | Event::GroupFinished { .. }
            | Event::TaskSubmitted { .. }
            | Event::HostConnected { .. }
            | Event::HostLost { .. }
            | Event::HostReleased { .. } => None,
        }
    }

    /// The record of the task that finished last: the journal marks it before writing it.
    pub(crate) fn last_mut(&mut self) -> Option<&mut TaskRecord> {
        self.records.last_mut()
    }

    /// The records so far, in finish order.
    pub fn records(&self) -> &[TaskRecord] {
        &self.records
    }

    pub fn into_records(self) -> Vec<TaskRecord> {
        self.records
    }

    /// How the run ended, once `RunFinished` was observed.
    pub fn run(&self) -> Option<RunSummary> {
        self.run
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::sched::events::Finished;

    fn finished(task: &str, outcome: Outcome, attempt: u32) -> Event {
        Event::TaskFinished(Finished {
            task: task.into(),
            outcome,
            attempt,
            exit_code: Some(0),
            duration: Duration::from_millis(250),
            resumed: false,
            cause: None,
            message: None,
            exports: Some(Arc::new(Shared::from([(
                "k".to_owned(),
                serde_json::json!(1),
            )]))),
            output: Some(Arc::new(Output {
                stdout: "out".into(),
                stderr: String::new(),
            })),
            host: None,
        })
    }

    #[test]
    fn folds_results_and_retries_into_one_record() {
        let mut c = Collector::new();
        let t = TaskName::new("net/tcp");
        let fp = Fingerprint::default();
        c.set_fingerprints([(t.clone(), fp)]);
        c.observe(&Event::TaskStarted {
            task: t.clone(),
            attempt: 1,
            host: None,
        });
        c.observe(&Event::TaskResult {
            task: t.clone(),
            attempt: 1,
            status: Outcome::Fail,
            message: "sub 1".into(),
        });
        c.observe(&Event::TaskRetrying {
            task: t.clone(),
            attempt: 1,
            outcome: Outcome::Fail,
            message: Some("exit code 1".into()),
            output: None,
            duration: Duration::from_secs(1),
        });
        c.observe(&Event::TaskResult {
            task: t.clone(),
            attempt: 2,
            status: Outcome::Warn,
            message: "slow".into(),
        });
        let rec = c
            .observe(&finished("net/tcp", Outcome::Warn, 2))
            .cloned()
            .unwrap();
        assert_eq!(rec.results, [(Outcome::Warn, "slow".to_owned())]);
        assert_eq!(rec.failed_attempts.len(), 1);
        assert_eq!(
            rec.failed_attempts[0].results,
            [(Outcome::Fail, "sub 1".to_owned())]
        );
        assert_eq!(rec.fingerprint, Some(fp));
        assert_eq!(rec.exports["k"], serde_json::json!(1));
        assert!(c.run().is_none());
        c.observe(&Event::RunFinished {
            outcome: Outcome::Warn,
            counts: Counts::default(),
            duration: Duration::from_secs(2),
            interrupted: false,
        });
        assert!((c.run().unwrap().duration_s - 2.0).abs() < 1e-9);
        assert_eq!(c.into_records().len(), 1);
    }

    #[test]
    fn records_round_trip_through_json_and_omit_empty_fields() {
        let mut rec = TaskRecord::new("a/b", Outcome::Skip);
        rec.cause = Some("token `x` (provider a/x failed)".into());
        let text = serde_json::to_string(&rec).unwrap();
        assert!(!text.contains("exports"), "{text}");
        let back: TaskRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rec);
    }
}
