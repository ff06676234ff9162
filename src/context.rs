//! What a running closure task sees: its shared state, a way to export, to report extra results,
//! and to notice cancellation.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::task::{Outcome, Task, TaskName};

/// Shared state: key/value pairs exported by providers, merged for their dependents.
pub type Shared = BTreeMap<String, serde_json::Value>;

/// Receives what a running task reports: extra results, and tasks it adds to the run.
pub trait ResultSink: Send + Sync {
    fn result(&self, status: Outcome, message: String);

    /// Adds tasks to the run (see [`Context::add_tasks`]). Pools that cannot do so refuse.
    fn add_tasks(&self, tasks: Vec<Task>) -> Result<(), TaskError> {
        let _ = tasks;
        Err(TaskError::error("this pool cannot add tasks to the run"))
    }
}

/// The context handed to a closure task.
pub struct Context<'a> {
    name: &'a TaskName,
    attempt: u32,
    shared: &'a Shared,
    exports: Mutex<Shared>,
    sink: &'a dyn ResultSink,
    cancelled: &'a AtomicBool,
    deadline: Option<Instant>,
}

impl<'a> Context<'a> {
    /// Used by the pools (and by tests of task bodies) to build a context.
    pub fn new(
        name: &'a TaskName,
        attempt: u32,
        shared: &'a Shared,
        sink: &'a dyn ResultSink,
        cancelled: &'a AtomicBool,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            name,
            attempt,
            shared,
            exports: Mutex::new(Shared::new()),
            sink,
            cancelled,
            deadline,
        }
    }

    pub fn name(&self) -> &TaskName {
        self.name
    }

    /// 1-based attempt number.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The merged exports of the providers of this task's required tokens.
    pub fn shared(&self) -> &Shared {
        self.shared
    }

    /// One shared value, deserialized. `None` when absent.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, TaskError> {
        match self.shared.get(key) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                TaskError::error(format!("shared value `{key}` has an unexpected type: {e}"))
            }),
        }
    }

    /// Exports a value to every task that requires one of this task's tokens, once it succeeds.
    ///
    /// The value is serialized now: a value that cannot be serialized is an error here, which
    /// `?` turns into this task's `error`.
    pub fn export<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), TaskError> {
        let value = serde_json::to_value(value).map_err(|e| {
            TaskError::error(format!(
                "cannot export `{key}`: value is not serializable: {e}"
            ))
        })?;
        self.exports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_owned(), value);
        Ok(())
    }

    /// Reports one extra result (a sub-test, a warning) while the task runs.
    pub fn report(&self, status: Outcome, message: impl Into<String>) {
        self.sink.result(status, message.into());
    }

    /// Adds tasks to the running graph: validated as a batch against it, they may require
    /// any token (this task's own too) but provide only new ones. Because this task has not
    /// finished, the run cannot end before they are in.
    pub fn add_tasks(&self, tasks: Vec<Task>) -> Result<(), TaskError> {
        self.sink.add_tasks(tasks)
    }

    /// True once the run is cancelled or this attempt timed out: a long task should return.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Consumes the context and returns what was exported.
    pub fn into_exports(self) -> Shared {
        self.exports
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why a closure task did not pass. `?` converts any error into an `error` outcome; use
/// [`TaskError::fail`] for an assertion-style failure.
pub struct TaskError {
    pub status: Outcome,
    pub message: String,
}

impl TaskError {
    pub fn new(status: Outcome, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The task ran and found a problem (JUnit `failure`).
    pub fn fail(message: impl Into<String>) -> Self {
        Self::new(Outcome::Fail, message)
    }

    /// The task could not do its work (JUnit `error`).
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Outcome::Error, message)
    }

    /// The task does not apply here.
    pub fn skip(message: impl Into<String>) -> Self {
        Self::new(Outcome::Skip, message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(e: E) -> Self {
        Self::error(crate::error::error_chain(&e))
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A cancellation flag shared between the scheduler and a running attempt.
pub type CancelFlag = Arc<AtomicBool>;
