//! What a running closure task sees: its shared state, a way to export, to report extra results,
//! and to notice cancellation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::task::{Outcome, Task, TaskName};

/// Shared state: key/value pairs exported by providers, merged for their dependents.
pub type Shared = BTreeMap<String, serde_json::Value>;

/// Receives what a running task reports: extra results, and tasks it adds to the run.
pub trait ResultSink: Send + Sync {
    fn result(&self, status: Outcome, message: String);

    /// The attempt became job `job` of an outside scheduler (Slurm): queued as a
    /// `TaskSubmitted` event, which the journal records. Pools that run attempts themselves
    /// never call it.
    fn submitted(&self, job: &str) {
        let _ = job;
    }

    /// The attempt starts now, on `host` (runs with hosts: the place chosen for it). Runs
    /// without hosts report the start when the task is taken, and never call this.
    fn begin(&self, host: &std::sync::Arc<str>) {
        let _ = host;
    }

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
    cancelled: CancelSource<'a>,
    deadline: Option<Instant>,
    checkpoint: Option<&'a Path>,
}

impl<'a> Context<'a> {
    /// Used by the pools (and by tests of task bodies) to build a context. `cancelled` is the
    /// run's [`Cancellation`] (or a bare `&AtomicBool`, whose waits poll it every millisecond),
    /// `deadline` the end of this attempt's `timeout`.
    ///
    /// ```
    /// use pexen::context::{Cancellation, Context, ResultSink};
    /// use pexen::{Outcome, Shared, TaskName};
    ///
    /// struct Ignore;
    /// impl ResultSink for Ignore {
    ///     fn result(&self, _: Outcome, _: String) {}
    /// }
    /// let (name, shared, cancel) = (TaskName::new("t"), Shared::new(), Cancellation::new());
    /// let ctx = Context::new(&name, 1, &shared, &Ignore, &cancel, None);
    /// cancel.cancel();
    /// assert!(ctx.is_cancelled());
    /// ```
    pub fn new(
        name: &'a TaskName,
        attempt: u32,
        shared: &'a Shared,
        sink: &'a dyn ResultSink,
        cancelled: impl Into<CancelSource<'a>>,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            name,
            attempt,
            shared,
            exports: Mutex::new(Shared::new()),
            sink,
            cancelled: cancelled.into(),
            deadline,
            checkpoint: None,
        }
    }

    /// Gives the task its checkpoint directory (see [`Context::checkpoint`]).
    #[must_use]
    pub fn with_checkpoint(mut self, dir: Option<&'a Path>) -> Self {
        self.checkpoint = dir;
        self
    }

    /// The task's checkpoint directory, when the run keeps state (SPEC section 12): private to
    /// the task, it exists when the attempt starts and keeps what the task saved there across
    /// attempts, timeouts, interruptions and `--resume`, until the task ends `pass`, `warn` or
    /// `skip`. `None` when the run has no state directory.
    pub fn checkpoint(&self) -> Option<&Path> {
        self.checkpoint
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
        self.cancelled.is_cancelled() || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Blocks until the run is cancelled or this attempt's deadline passes (true), or until
    /// `timeout` has passed (false): a task that waits for something (a service, a retry
    /// interval) needs no sleep-and-poll loop, and one that waits for nothing but the end of
    /// the run can wait with [`Duration::MAX`]. Returns at once when already cancelled.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pexen::{Event, Outcome, Scheduler, Task, TaskError};
    ///
    /// let watch = Task::closure("watch", |ctx| {
    ///     // Checks something every second until the run stops it, or its timeout passes.
    ///     while !ctx.wait_cancelled(Duration::from_secs(1)) {}
    ///     Err(TaskError::error("stopped"))
    /// })
    /// .timeout(Duration::from_millis(50));
    /// let run = Scheduler::builder().build().run(vec![watch]).unwrap();
    /// let outcome = run.filter_map(|e| match e {
    ///     Event::TaskFinished(f) => Some(f.outcome),
    ///     _ => None,
    /// });
    /// assert_eq!(outcome.collect::<Vec<_>>(), [Outcome::Timeout]);
    /// ```
    pub fn wait_cancelled(&self, timeout: Duration) -> bool {
        let until = Instant::now().checked_add(timeout);
        let until = match (until, self.deadline) {
            (Some(u), Some(d)) => Some(u.min(d)),
            (u, d) => u.or(d),
        };
        self.cancelled.wait(until) || self.is_cancelled()
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
    /// Stop the run here and continue it later (see [`TaskError::suspend`]).
    pub suspend: bool,
}

impl TaskError {
    pub fn new(status: Outcome, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            suspend: false,
        }
    }

    /// Stops the run here, to be continued later with `--resume` (a command task's exit status
    /// 75): nothing new starts, running tasks finish, and `--resume` runs this task first, with
    /// its checkpoint. Save progress in [`Context::checkpoint`] before returning this.
    pub fn suspend(message: impl Into<String>) -> Self {
        Self {
            suspend: true,
            ..Self::new(Outcome::Skip, message)
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

/// Where a [`Context`] reads cancellation from: `&Cancellation` (what the pools give), or a
/// bare `&AtomicBool` for a context built by hand.
#[derive(Clone, Copy, Debug)]
pub enum CancelSource<'a> {
    Cancellation(&'a Cancellation),
    Flag(&'a AtomicBool),
}

impl<'a> From<&'a Cancellation> for CancelSource<'a> {
    fn from(c: &'a Cancellation) -> Self {
        Self::Cancellation(c)
    }
}

impl<'a> From<&'a AtomicBool> for CancelSource<'a> {
    fn from(flag: &'a AtomicBool) -> Self {
        Self::Flag(flag)
    }
}

impl CancelSource<'_> {
    fn is_cancelled(&self) -> bool {
        match self {
            Self::Cancellation(c) => c.is_cancelled(),
            Self::Flag(flag) => flag.load(Ordering::Relaxed),
        }
    }

    fn wait(&self, until: Option<Instant>) -> bool {
        match self {
            Self::Cancellation(c) => c.wait(until),
            // A bare flag has nothing to sleep on.
            Self::Flag(flag) => loop {
                if flag.load(Ordering::Relaxed) {
                    return true;
                }
                let now = Instant::now();
                if until.is_some_and(|u| now >= u) {
                    return false;
                }
                let nap = until.map_or(Duration::from_millis(1), |u| {
                    (u - now).min(Duration::from_millis(1))
                });
                std::thread::sleep(nap);
            },
        }
    }
}

/// A run's cancellation as its closures see it: a flag that only rises, and a way to sleep
/// until it does ([`Context::wait_cancelled`]).
#[derive(Debug, Default)]
pub struct Cancellation {
    raised: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Cancellation {
    pub const fn new() -> Self {
        Self {
            raised: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Raises the flag and wakes every waiter.
    pub fn cancel(&self) {
        // Under the lock: a waiter between its check and its sleep cannot miss the wake-up.
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.raised.store(true, Ordering::SeqCst);
        self.wake.notify_all();
    }

    pub fn is_cancelled(&self) -> bool {
        self.raised.load(Ordering::Relaxed)
    }

    /// Blocks until the flag rises (true) or `until` passes (false); `None` waits for the flag
    /// alone.
    pub fn wait(&self, until: Option<Instant>) -> bool {
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.raised.load(Ordering::SeqCst) {
                return true;
            }
            guard = match until {
                None => self
                    .wake
                    .wait(guard)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(until) => {
                    let now = Instant::now();
                    if now >= until {
                        return false;
                    }
                    self.wake
                        .wait_timeout(guard, until - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ignore;
    impl ResultSink for Ignore {
        fn result(&self, _: Outcome, _: String) {}
    }

    /// `wait_cancelled(MAX)` in a thread returns true once the flag rises in another one.
    fn wakes_on_cancel(ctx: &Context<'_>, raise: &(dyn Fn() + Sync)) {
        assert!(!ctx.wait_cancelled(Duration::ZERO), "not cancelled yet");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| ctx.wait_cancelled(Duration::MAX));
            raise();
            assert!(waiter.join().unwrap());
        });
        assert!(ctx.is_cancelled());
    }

    #[test]
    fn a_wait_ends_when_the_run_is_cancelled() {
        let (name, shared) = (TaskName::new("t"), Shared::new());
        let c = Cancellation::new();
        let ctx = Context::new(&name, 1, &shared, &Ignore, &c, None);
        wakes_on_cancel(&ctx, &|| c.cancel());
        // A bare flag, as contexts built by hand before `Cancellation` had.
        let flag = AtomicBool::new(false);
        let ctx = Context::new(&name, 1, &shared, &Ignore, &flag, None);
        wakes_on_cancel(&ctx, &|| flag.store(true, Ordering::Relaxed));
    }

    #[test]
    fn a_wait_ends_at_the_deadline_as_a_cancellation() {
        let (name, shared, c) = (TaskName::new("t"), Shared::new(), Cancellation::new());
        let past = Instant::now();
        let ctx = Context::new(&name, 1, &shared, &Ignore, &c, Some(past));
        assert!(ctx.wait_cancelled(Duration::MAX));
        assert!(
            !c.is_cancelled(),
            "the deadline is the attempt's, not the run's"
        );
    }
}
