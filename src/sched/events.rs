//! The events of a run: the only streaming API. Progress display, JSON output, journal and JUnit
//! writer all consume this one stream.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::context::Shared;
use crate::task::{Outcome, TaskName};

/// Counts of final outcomes, one per task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub error: usize,
    pub timeout: usize,
    pub skip: usize,
}

impl Counts {
    pub fn add(&mut self, outcome: Outcome) {
        *self.get_mut(outcome) += 1;
    }

    pub fn get(&self, outcome: Outcome) -> usize {
        match outcome {
            Outcome::Pass => self.pass,
            Outcome::Warn => self.warn,
            Outcome::Fail => self.fail,
            Outcome::Error => self.error,
            Outcome::Timeout => self.timeout,
            Outcome::Skip => self.skip,
        }
    }

    fn get_mut(&mut self, outcome: Outcome) -> &mut usize {
        match outcome {
            Outcome::Pass => &mut self.pass,
            Outcome::Warn => &mut self.warn,
            Outcome::Fail => &mut self.fail,
            Outcome::Error => &mut self.error,
            Outcome::Timeout => &mut self.timeout,
            Outcome::Skip => &mut self.skip,
        }
    }

    pub fn total(&self) -> usize {
        Outcome::ALL.iter().map(|o| self.get(*o)).sum()
    }
}

pub use crate::pool::attempt::{Attempt, Output};

/// The final word on one task: exactly one per task of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub task: TaskName,
    pub outcome: Outcome,
    /// The attempt that decided the outcome (0 for a task that never started).
    pub attempt: u32,
    pub exit_code: Option<i32>,
    pub duration: Duration,
    /// True when taken from the journal of an earlier run instead of running.
    pub resumed: bool,
    /// For a skip decided by the scheduler: the token and provider that caused it.
    pub cause: Option<String>,
    /// Why the last attempt ended so (`exit code 3`, `killed by SIGSEGV`, a closure's error).
    pub message: Option<String>,
    /// What the task exported (`None` when nothing, or when it did not succeed).
    pub exports: Option<Arc<Shared>>,
    pub output: Option<Arc<Output>>,
    /// Where the last attempt ran (runs with hosts only).
    pub host: Option<Arc<str>>,
}

/// One event of a run, in the order things happened. Serializable: a teleported run's
/// events travel in the worker protocol (`protocol::teleport`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The run starts: how many tasks it has and how many attempts run at once. Always first.
    RunStarted { tasks: usize, jobs: usize },
    /// Something worth telling that changes no outcome (an unrequired token, a shared-state
    /// conflict, a torn journal record).
    Warning {
        task: Option<TaskName>,
        message: String,
    },
    /// An attempt of a task starts (`attempt` counts from 1).
    TaskStarted {
        task: TaskName,
        attempt: u32,
        /// Where it runs (runs with hosts only: `local` or a host's name).
        host: Option<Arc<str>>,
    },
    /// An attempt was handed to an outside scheduler (a Slurm job) under the id `job`: the
    /// journal records it so that `--resume` can re-attach to the job after pexen was killed.
    TaskSubmitted {
        task: TaskName,
        attempt: u32,
        job: String,
    },
    /// One extra result streamed while the task runs (or restored on resume).
    TaskResult {
        task: TaskName,
        attempt: u32,
        status: Outcome,
        message: String,
    },
    /// An attempt failed and another one follows.
    TaskRetrying {
        task: TaskName,
        attempt: u32,
        outcome: Outcome,
        message: Option<String>,
        output: Option<Arc<Output>>,
        duration: Duration,
    },
    /// The attempt asked to stop the run here and continue it later (SPEC section 12): nothing
    /// new starts, running tasks finish. The task's `TaskFinished` (a `skip` whose cause says
    /// so) follows at once; `--resume` runs it first, with its checkpoint.
    TaskSuspended {
        task: TaskName,
        attempt: u32,
        /// How it asked (`exit code 75`, a closure's message).
        message: Option<String>,
    },
    /// The final word on a task, exactly once per task (resumed and skipped ones included).
    TaskFinished(Finished),
    /// An exclusivity group's turn begins (SPEC 13): its tasks may start, no other group's.
    GroupStarted { group: String },
    /// The group's turn ends: none of its tasks runs or is ready. A group may have several turns.
    GroupFinished { group: String },
    /// A host of the run is connected, its tree synced: it takes attempts from now on.
    HostConnected {
        host: Arc<str>,
        /// Whether pexen's binary had to be uploaded (false: found in the host's cache).
        uploaded: bool,
        /// Files of the tree sent (those the host lacked or had with other content).
        files_sent: usize,
    },
    /// A host was lost (connection dropped, worker killed) or could not be reached; its running
    /// attempts go back to the queue.
    HostLost { host: Arc<str>, reason: String },
    /// A Slurm pilot worker idle past its limit was let go (its job ends); a new one is
    /// submitted if work comes for it.
    HostReleased { host: Arc<str>, reason: String },
    /// The run is over: the worst outcome, the counts, and whether it was cancelled. Always
    /// last.
    RunFinished {
        outcome: Outcome,
        counts: Counts,
        duration: Duration,
        /// True when the run was cancelled before every task could run.
        interrupted: bool,
    },
}

impl Event {
    /// The task this event is about, if any.
    pub fn task(&self) -> Option<&TaskName> {
        match self {
            Event::TaskStarted { task, .. }
            | Event::TaskSubmitted { task, .. }
            | Event::TaskResult { task, .. }
            | Event::TaskRetrying { task, .. }
            | Event::TaskSuspended { task, .. } => Some(task),
            Event::TaskFinished(f) => Some(&f.task),
            Event::Warning { task, .. } => task.as_ref(),
            Event::RunStarted { .. }
            | Event::RunFinished { .. }
            | Event::GroupStarted { .. }
            | Event::GroupFinished { .. }
            | Event::HostConnected { .. }
            | Event::HostLost { .. }
            | Event::HostReleased { .. } => None,
        }
    }
}
