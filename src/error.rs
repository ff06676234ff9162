//! Typed errors, one enum per operation, and the documented exit codes.
//!
//! Messages are lowercase fragments that name the task, the file or the token at fault.

use std::fmt;

use thiserror::Error;

use crate::task::TaskName;

/// Exit codes of the `pexen` binary (SPEC section 5).
pub mod exit_code {
    /// Every selected task ended `pass`, `warn` or `skip`.
    pub const OK: i32 = 0;
    /// A task ended `fail`, `error` or `timeout`.
    pub const TASK_FAILED: i32 = 1;
    /// Bad definitions or bad usage.
    pub const BAD_INPUT: i32 = 2;
    /// The state directory is unusable (unreadable, damaged, another format version).
    pub const BAD_STATE: i32 = 3;
    /// A task suspended the run (exit status 75, SPEC section 12): continue it with `--resume`.
    pub const SUSPENDED: i32 = 4;
    /// Nothing to run: the tree or the selection is empty (pytest's code for "no tests
    /// collected").
    pub const NOTHING_TO_RUN: i32 = 5;
    /// Interrupted (Ctrl-C).
    pub const INTERRUPTED: i32 = 130;
}

/// An error and its sources, `: `-separated (`cannot open x: permission denied`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// One problem found while validating a task graph.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GraphError {
    #[error("task `{task}` requires token `{token}`, which no task provides")]
    MissingProvider { task: TaskName, token: String },
    #[error("dependency cycle: {}", path.iter().map(TaskName::as_str).collect::<Vec<_>>().join(" -> "))]
    Cycle {
        /// The cycle, its first task repeated at the end (`a -> b -> a`).
        path: Vec<TaskName>,
    },
    #[error("task `{task}` both claims and uses resource `{resource}`")]
    ClaimsAndUses { task: TaskName, resource: String },
    #[error("task `{task}` wants {wanted} of slot `{slot}`, but the run's capacity is {capacity}")]
    SlotsOverCapacity {
        task: TaskName,
        slot: String,
        wanted: u32,
        capacity: u32,
    },
    #[error("task `{task}` provides token `{token}`, which tasks already in the run provide or require; tasks added during a run may only provide new tokens")]
    LateProvider { task: TaskName, token: String },
    #[error("the run has finished: no more tasks can be added")]
    RunFinished,
    #[error("task `{task}` needs a host with tags {}, and no host of the run has them all", tags.join(", "))]
    NoHost { task: TaskName, tags: Vec<String> },
    #[error("task `{task}` needs slots {{{slots}}}, and no host of the run that carries its host_tags has that capacity")]
    NoHostSlots { task: TaskName, slots: String },
    #[error("task name `{task}` is defined more than once")]
    DuplicateName { task: TaskName },
    #[error("task `{task}` belongs to group `{group}`, which is not declared")]
    UnknownGroup { task: TaskName, group: String },
    #[error("token `{token}` is declared virtual, but no task provides it")]
    VirtualWithoutProvider { token: String },
}

/// Every problem found in a graph, reported together.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct GraphErrors(pub Vec<GraphError>);

impl fmt::Display for GraphErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in the task graph",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}
