//! Teleport messages (SPEC section 12): a run moved to another machine, continued there as
//! `--resume` detached from the connection, its events streamed back, its state brought back.
//!
//! They travel inside the one protocol (`ToWorker::Teleport`,
//! `FromWorker::Teleport`) over the same bootstrapped `pexen worker --stdio` as a
//! host's worker: the first message after the hello says whether the worker serves attempts
//! (`Tree`) or a teleported run (`Teleport(Start | Attach)`). A start then syncs the tree with
//! the hosts' own messages (`Tree`, `Need`, `File`, `TreeDone`, `Ready`), then the state:
//!
//! 1. `State { files }`: the manifest of the state (journal, checkpoints); the agent answers
//!    `Need { paths }`; each needed file travels as `File` and its content in raw chunks of
//!    at most `CHUNK` (1 MiB) bytes (so checkpoints over the frame limit travel too); `StateDone`.
//! 2. The agent starts the run detached and answers `Started`; then `Record`s: the lines of
//!    the run's event log as it grows (`Prepared`, then every `Event`, then `Ended`). `Cancel`
//!    from the scheduler reaches the run as Ctrl-C would.
//! 3. When the run is over the agent sends the state back the same way in the other direction
//!    (`State`, `Need`, `File`s, `StateDone`) and the scheduler confirms with `Collected`.
//!
//! `Attach { id }` skips the tree and the state: the log from its first line, then live.

use serde::{Deserialize, Serialize};

use super::FileEntry;
use crate::sched::events::Event;
use crate::task::TaskName;

/// The largest raw chunk of a state file.
pub(crate) const CHUNK: usize = 1 << 20;

/// The settings of the run continued there (those of `pexen run` that make sense remotely).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    pub filters: Vec<String>,
    pub tags: Vec<String>,
    pub prefer: Vec<String>,
    pub jobs: Option<usize>,
    pub fail_fast: bool,
    pub retries: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub grace_ms: u64,
    pub capacity: Vec<(String, u32)>,
    /// Write a JUnit report there, brought back with the state.
    pub junit: bool,
    /// Say why each task runs again or is taken from the journal.
    pub explain: bool,
}

/// Scheduler to teleport agent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToAgent {
    /// Continue a run here: the tree follows, then the state.
    Start { id: String, options: RunOptions },
    /// Stream the run `id` teleported earlier, from its first event, and bring its state back.
    Attach { id: String },
    /// The manifest of the state sent (paths relative to the state directory).
    State { files: Vec<FileEntry> },
    /// One file; its content follows in raw chunks.
    File { path: String, mode: u32, size: u64 },
    /// Every needed file was sent.
    StateDone,
    /// The paths of the returned state the scheduler lacks.
    Need { paths: Vec<String> },
    /// The state is written back here: the agent may forget the run.
    Collected,
}

/// Teleport agent to scheduler.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromAgent {
    /// The paths of the state the agent lacks.
    Need { paths: Vec<String> },
    /// The run is going, detached.
    Started,
    /// One line of the run's log.
    Record(Record),
    /// The run is over: the manifest of its state (and `junit.xml`, if written).
    State { files: Vec<FileEntry> },
    /// One file; its content follows in raw chunks.
    File { path: String, mode: u32, size: u64 },
    /// Every needed file was sent.
    StateDone,
}

/// One line of a teleported run's log, in order: `Prepared`, the events, `Ended`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    Prepared(Prelude),
    Event(Event),
    Ended(Ended),
}

/// What the display needs before the first event (what `pexen run` knows once prepared).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prelude {
    /// The tree's and the journal's warnings.
    pub warnings: Vec<String>,
    /// With `explain`: one line per task.
    pub explanations: Vec<String>,
    /// Tasks taken from the journal.
    pub resumed: usize,
    /// With a selection: tasks selected and providers pulled in.
    pub selection: Option<(usize, usize)>,
    /// The attempts each task may make (retries + 1).
    pub attempts: Vec<(TaskName, u32)>,
}

/// How the run there ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// The exit code `pexen run` would have had there.
    pub code: i32,
    /// Why it could not run or be recorded (the message `pexen run` would print).
    pub error: Option<String>,
    /// It was interrupted (Ctrl-C here, or a signal there).
    pub interrupted: bool,
    /// Tasks that suspended the run.
    pub suspended_by: Vec<TaskName>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::protocol::FromWorker;
    use crate::sched::events::{Counts, Finished, Output};
    use crate::task::Outcome;

    /// A log line is one protocol message: what the agent relays as a frame, unchanged.
    #[test]
    fn records_round_trip_through_a_log_line() {
        let mut exports = crate::context::Shared::new();
        exports.insert("k".into(), serde_json::json!({"a": [1, 2]}));
        let records = vec![
            Record::Prepared(Prelude {
                warnings: vec!["w".into()],
                explanations: vec!["run b: not recorded".into()],
                resumed: 1,
                selection: Some((2, 1)),
                attempts: vec![(TaskName::from("b"), 3)],
            }),
            Record::Event(Event::TaskStarted {
                task: TaskName::from("b"),
                attempt: 2,
                host: Some(Arc::from("local")),
            }),
            Record::Event(Event::TaskFinished(Finished {
                task: TaskName::from("b"),
                outcome: Outcome::Fail,
                attempt: 2,
                exit_code: Some(3),
                duration: Duration::from_millis(1500),
                resumed: false,
                cause: None,
                message: Some("exit code 3\nwith a newline".into()),
                exports: Some(Arc::new(exports)),
                output: Some(Arc::new(Output {
                    stdout: "out\n".into(),
                    stderr: "err\u{7}\n".into(),
                })),
                host: None,
            })),
            Record::Event(Event::RunFinished {
                outcome: Outcome::Fail,
                counts: Counts::default(),
                duration: Duration::from_secs(2),
                interrupted: true,
            }),
            Record::Ended(Ended {
                code: 130,
                error: None,
                interrupted: true,
                suspended_by: vec![TaskName::from("r")],
            }),
        ];
        for record in records {
            let line = serde_json::to_vec(&FromWorker::Teleport(FromAgent::Record(record.clone())))
                .unwrap();
            assert!(!line.contains(&b'\n'), "one line per record");
            match serde_json::from_slice(&line).unwrap() {
                FromWorker::Teleport(FromAgent::Record(back)) => assert_eq!(back, record),
                other => panic!("{other:?}"),
            }
        }
    }
}
