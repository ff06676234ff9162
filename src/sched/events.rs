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

/// Captured standard output and error of a command attempt (head and tail kept past the cap).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty()
    }
}

/// How one attempt ended, as reported by a pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// The outcome of the attempt itself (exit status, panic, timeout), before results are merged.
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    /// Why it ended so, for anything but a plain pass (`exit code 3`, `killed by SIGSEGV`, ...).
    pub message: Option<String>,
    pub exports: Shared,
    pub output: Option<Output>,
    pub duration: Duration,
    /// The task asked to stop the run here and continue it later (exit status 75,
    /// `TaskError::suspend`): SPEC section 12.
    pub suspend: bool,
}

impl Attempt {
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            exit_code: None,
            message: None,
            exports: Shared::new(),
            output: None,
            duration: Duration::ZERO,
            suspend: false,
        }
    }

    /// An attempt that suspends the run (see [`Attempt::suspend`]).
    pub fn suspended(message: impl Into<String>) -> Self {
        Self {
            suspend: true,
            ..Self::new(Outcome::Skip).message(message)
        }
    }

    #[must_use]
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

/// The final word on one task: exactly one per task of the run.
#[derive(Clone, Debug, PartialEq)]
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
}

/// One event of a run, in the order things happened.
#[derive(Clone, Debug, PartialEq)]
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
    TaskStarted { task: TaskName, attempt: u32 },
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
            | Event::GroupFinished { .. } => None,
        }
    }
}
