//! How one attempt ended, as a pool reports it: the types at the seam between the scheduler
//! and the places where attempts run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::context::Shared;
use crate::task::Outcome;

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
    /// Boxed: most attempts (every closure's) have none, and an `Attempt` under 128 bytes is
    /// moved inline instead of through `memcpy` (twice per task on the way to the run state).
    pub output: Option<Box<Output>>,
    pub duration: Duration,
    /// The task asked to stop the run here and continue it later (exit status 75,
    /// `TaskError::suspend`): SPEC section 12.
    pub suspend: bool,
    /// Set when the host running the attempt was lost before it ended: the attempt is put back
    /// in the queue (not counted), with this reason.
    pub host_lost: Option<String>,
    /// The signal that ended the task when pexen did not end it (a timeout or a cancel is said
    /// by `message`): the one that killed its process, or N when it exited with 128 + N as a
    /// shell whose command was killed does. Someone else ended it, perhaps the whole machine.
    pub signal: Option<i32>,
    /// Set when the attempt never started (the run was cancelled first, or its host dropped
    /// it from its queue or was lost before it started): the run state gives a task whose
    /// start was not reported back to the queue (then skipped on a cancel), uncounted.
    pub not_started: bool,
}

impl Attempt {
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            ..Self::passed(Shared::new())
        }
    }

    /// A pass, with what the task exported (built with them: replacing an empty map drops it,
    /// a few percent of a no-op closure's attempt).
    pub fn passed(exports: Shared) -> Self {
        Self {
            outcome: Outcome::Pass,
            exit_code: None,
            message: None,
            exports,
            output: None,
            duration: Duration::ZERO,
            suspend: false,
            host_lost: None,
            signal: None,
            not_started: false,
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

impl Attempt {
    /// An attempt that did not end because its host was lost: put back in the queue.
    pub fn lost(reason: impl Into<String>) -> Self {
        let mut a = Attempt::new(Outcome::Error);
        a.host_lost = Some(reason.into());
        a
    }

    /// An attempt that never started (see [`Attempt::not_started`]). A task already reported
    /// started (runs without hosts report a start when the attempt is handed out) ends
    /// `error` with this message.
    pub fn not_started() -> Self {
        let mut a = Attempt::new(Outcome::Error).message("interrupted before it could start");
        a.not_started = true;
        a
    }
}

/// How a place's `run` came back: with the attempt's end, or having handed the attempt to
/// the place, which reports its start and end to the run itself (see [`Recorder`]).
pub(crate) enum Ran {
    Ended(Attempt),
    /// The place carries the attempt on (an attempt sent to a host's connection, whose reader
    /// hears its end): the thread that started it is free for the next one.
    HandedOff,
}

/// What a place reports of the attempts it carries on after [`Ran::HandedOff`].
pub(crate) enum News {
    Began {
        idx: u32,
        attempt: u32,
        host: std::sync::Arc<str>,
    },
    Result {
        idx: u32,
        attempt: u32,
        status: Outcome,
        message: String,
    },
    Ended {
        idx: u32,
        attempt: u32,
        end: Attempt,
    },
}

/// The run's side of [`Ran::HandedOff`]: records what a place reports (the dispatcher, under
/// the run state's one lock, as it does for attempts run on its threads).
pub(crate) trait Recorder: Send + Sync {
    /// Applies `news` in order (drained), then hands ready tasks out: first to `carrier`,
    /// the place that reports, as long as it takes them, then to idle workers.
    fn record(&self, news: &mut Vec<News>, carrier: Option<&mut dyn Carrier>);
}

/// A place that reports ends (a host connection's reader) and may start the attempts that
/// take their room itself, with no worker thread woken for them (see `host::driven`). The run
/// offers it the jobs, in the order it hands them out, as it would hand them to a worker.
pub(crate) trait Carrier {
    /// Starts `job`'s attempt now and carries it on ([`Ran::HandedOff`]) if that cannot
    /// block; false leaves the job to a worker thread, untouched.
    fn carry(&mut self, job: &crate::pool::Job) -> bool;
}

#[cfg(test)]
mod tests {
    use super::Attempt;

    #[test]
    fn an_attempt_is_moved_inline() {
        // Each closure's attempt is moved into the worker's list of ended attempts and out of
        // it into the run state; past 128 bytes every move is a call to `memcpy` (issue 15).
        let size = std::mem::size_of::<Attempt>();
        assert!(size <= 128, "an Attempt is {size} bytes");
    }
}
