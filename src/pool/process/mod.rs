//! The process pool: closure tasks run in re-executed worker processes of the same binary,
//! so that a task that panics, aborts, segfaults, exits or hangs ends as that task's `error` or
//! `timeout` and the run goes on.
//!
//! # Design
//!
//! - **Workers are reused.** A scheduler worker thread takes an idle worker process (or spawns
//!   one, lazily) for one attempt and gives it back after a clean `Done`; at most `-j` attempts
//!   run at once, so at most `-j` workers exist. A worker that crashed, timed out or was
//!   interrupted is reaped and not given back: the next attempt spawns a fresh one.
//! - **No helper threads.** The thread that runs the attempt reads the worker's frames with
//!   `poll`, waking every `TICK` to check the deadline and the run's cancellation; results
//!   reach the sink from that thread, so the dispatcher stays the single owner of run state.
//! - **Own process group.** Each worker leads its group; a timeout or a kill signals the whole
//!   group, so processes a task started go too. The leader is reaped only after the last signal
//!   (its group id stays pinned until then).
//!
//! The protocol is in [`crate::protocol`], the worker side in [`serve`].

pub mod serve;
mod worker;

use std::ffi::OsString;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::context::ResultSink;
use crate::pool::attempt::Attempt;
use crate::pool::Job;
use crate::task::{Outcome, PoolKind};

pub use serve::{serve_if_worker, serve_if_worker_with_args, ServeError, WORKER_ENV};

use worker::{spawn_error_message, Ended, WorkerProc};

/// How often a waiting thread checks its deadline and the run's cancellation.
const TICK: Duration = Duration::from_millis(25);

/// Grace between the cooperative cancellation (SIGUSR1) and SIGKILL.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

const RUNNING: u8 = 0;
const TERMINATING: u8 = 1;
const KILLING: u8 = 2;

/// Settings of the process pool (set through [`crate::SchedulerBuilder`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessConfig {
    /// The pool of closure tasks that did not choose one.
    pub default_pool: PoolKind,
    /// Arguments given to the re-executed binary.
    pub args: Vec<OsString>,
}

/// The worker processes of one run.
pub(crate) struct ProcessPool {
    config: ProcessConfig,
    idle: Mutex<Vec<WorkerProc>>,
    /// RUNNING, TERMINATING or KILLING; only rises.
    level: AtomicU8,
}

impl ProcessPool {
    pub(crate) fn new(config: ProcessConfig) -> Self {
        Self {
            config,
            idle: Mutex::new(Vec::new()),
            level: AtomicU8::new(RUNNING),
        }
    }

    pub(crate) fn default_pool(&self) -> PoolKind {
        self.config.default_pool
    }

    /// Runs one attempt in a worker process. Never fails: what went wrong is the outcome.
    pub(crate) fn run(
        &self,
        job: &Job,
        checkpoint: Option<&std::path::Path>,
        sink: &dyn ResultSink,
    ) -> Attempt {
        let started = Instant::now();
        let mut attempt = self.attempt(job, checkpoint, sink, started);
        attempt.duration = started.elapsed();
        attempt
    }

    fn attempt(
        &self,
        job: &Job,
        checkpoint: Option<&std::path::Path>,
        sink: &dyn ResultSink,
        started: Instant,
    ) -> Attempt {
        if self.level.load(Ordering::SeqCst) != RUNNING {
            return Attempt::new(Outcome::Error).message("interrupted before it could start");
        }
        let taken = self.lock().pop();
        let mut worker = match taken {
            Some(w) => w,
            None => match WorkerProc::spawn(&self.config.args, &self.level) {
                Ok(w) => w,
                Err(e) => {
                    return Attempt::new(Outcome::Error).message(format!(
                        "cannot start a worker process: {}",
                        spawn_error_message(&e)
                    ))
                }
            },
        };
        let deadline = job.timeout.map(|t| started + t);
        let ended = worker.run(job, checkpoint, sink, deadline, &self.level);
        let attempt = match ended {
            Ended::Done(mut attempt) => {
                if let Some(limit) = job.timeout {
                    // As on threads: a cooperative task that returned late still timed out.
                    attempt = super::past_deadline(attempt, limit, started.elapsed());
                }
                if self.level.load(Ordering::SeqCst) == RUNNING {
                    self.lock().push(worker);
                    return attempt;
                }
                attempt
            }
            Ended::TimedOut => timed_out(job.timeout.unwrap_or_default()),
            Ended::Interrupted => Attempt::new(Outcome::Error).message("interrupted"),
            Ended::Crashed(message) => Attempt::new(Outcome::Error).message(message),
        };
        // Whatever happened, this worker is not reused: end it and reap it (and its group).
        worker.end();
        attempt
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WorkerProc>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cooperative cancellation: running tasks see `is_cancelled` (SIGUSR1), and are killed
    /// after a grace period. Later attempts do not start. Does not block.
    pub(crate) fn cancel(&self) {
        self.level.fetch_max(TERMINATING, Ordering::SeqCst);
        self.shutdown();
    }

    /// Kills every busy worker at its next tick. Does not block.
    pub(crate) fn kill(&self) {
        self.level.fetch_max(KILLING, Ordering::SeqCst);
        self.shutdown();
    }

    /// Ends and reaps every idle worker. Busy ones are owned by the threads that run them.
    pub(crate) fn shutdown(&self) {
        let idle = std::mem::take(&mut *self.lock());
        for worker in idle {
            worker.end();
        }
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn timed_out(limit: Duration) -> Attempt {
    Attempt::new(Outcome::Timeout).message(format!(
        "timed out after {}",
        humantime::format_duration(limit)
    ))
}
