//! Pools that run task attempts: closures on threads, closures in worker processes, commands.
//!
//! A worker thread runs a `Job` with the `Executor`: a closure inline (panics caught), a
//! command as a child process. Executing never touches the run state; results stream out
//! through a [`ResultSink`].

pub mod attempt;
pub(crate) mod clock;
pub mod command;
pub(crate) mod limited;
pub mod process;
pub mod slurm;
pub(crate) mod thread;

use std::collections::BTreeMap;
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::context::{Cancellation, Context, ResultSink, Shared};
use crate::pool::attempt::{Attempt, Ran, Recorder};
use crate::state::checkpoint::Checkpoints;
use crate::task::{CommandSpec, Outcome, PoolKind, TaskFn, TaskName, ThinVec, Work};

use self::command::{CommandConfig, CommandJob, CommandRunner};
use self::process::{ProcessConfig, ProcessPool};
use self::slurm::{SlurmConfig, SlurmJob, SlurmRunner};

/// One attempt of one task, sent to a worker thread.
pub(crate) struct Job {
    pub idx: u32,
    pub attempt: u32,
    pub name: TaskName,
    pub work: Work,
    pub timeout: Option<Duration>,
    /// The task's own choice; `None` takes the run's default.
    pub pool: Option<PoolKind>,
    /// Reserved ahead of its token, which the job before it in its batch provides: it runs
    /// only if that one passed cleanly (see `RunState::reserve_successor`).
    pub chained: bool,
    /// The merged exports of its providers (`None`: nothing).
    pub shared: Option<Arc<Shared>>,
    /// The task's `slots` (resources of a Slurm job).
    pub slots: JobSlots,
    /// The task's `host_tags` and `outputs` (runs with hosts).
    pub host_tags: ThinVec<String>,
    pub outputs: ThinVec<String>,
    /// Runs with hosts: the order in which the dispatcher handed the job out (the run's
    /// priority order), so that jobs handed out together are placed in that order.
    pub ticket: Option<u64>,
    /// A clock reading shared by attempts run back to back: when set as the attempt starts,
    /// the instant the previous one ended (its start, without reading the clock again); set by
    /// the attempt to the instant it ended. Only closures on threads use it.
    pub clock: std::cell::Cell<Option<clock::Stamp>>,
}

/// A job's `slots`, read as the task's map: boxed, and absent when empty (as in every job of
/// a run without hosts or Slurm). 8 bytes in the job instead of 24, and nothing to drop: a
/// `Job` fits in 128 bytes, which the compiler moves inline instead of calling `memcpy`, and an
/// empty `BTreeMap`'s drop (two calls into the standard library) was 4 % of a worker's time on
/// a chain of no-op closures (issue 15).
#[derive(Default)]
#[allow(clippy::box_collection)] // the point: 8 bytes in a job, not a map's 24
pub(crate) struct JobSlots(Option<Box<BTreeMap<String, u32>>>);

/// What [`JobSlots`] reads as when absent.
static NO_SLOTS: BTreeMap<String, u32> = BTreeMap::new();

impl JobSlots {
    pub(crate) fn new(slots: &BTreeMap<String, u32>) -> Self {
        Self((!slots.is_empty()).then(|| Box::new(slots.clone())))
    }
}

impl Deref for JobSlots {
    type Target = BTreeMap<String, u32>;

    fn deref(&self) -> &BTreeMap<String, u32> {
        self.0.as_deref().unwrap_or(&NO_SLOTS)
    }
}

/// Shared state of a task whose providers exported nothing.
static NO_SHARED: Shared = Shared::new();

impl Job {
    pub(crate) fn shared(&self) -> &Shared {
        self.shared.as_deref().unwrap_or(&NO_SHARED)
    }
}

/// Runs attempts of any kind; one per run, shared by the worker threads.
pub(crate) struct Executor {
    cancelled: Cancellation,
    command_config: CommandConfig,
    /// Created on the first command task: closure-only runs need no temp dir.
    commands: OnceLock<Result<CommandRunner, String>>,
    /// Spawns nothing until the first closure task that runs in a process.
    processes: ProcessPool,
    /// Where each task's checkpoint directory is, when the run keeps state.
    checkpoints: Option<Checkpoints>,
    /// With `--slurm`: command attempts become Slurm jobs (closures still run here).
    slurm: Option<Result<SlurmRunner, String>>,
    /// Where command attempts run when the run has hosts (SPEC 9).
    hosts: Option<Arc<crate::host::Hosts>>,
}

impl Executor {
    pub(crate) fn new(
        command_config: CommandConfig,
        process_config: ProcessConfig,
        hosts: Option<Arc<crate::host::Hosts>>,
    ) -> Self {
        Self {
            cancelled: Cancellation::new(),
            command_config,
            commands: OnceLock::new(),
            processes: ProcessPool::new(process_config),
            checkpoints: None,
            slurm: None,
            hosts,
        }
    }

    /// Gives every attempt its task's checkpoint directory (SPEC section 12).
    #[must_use]
    pub(crate) fn with_checkpoints(mut self, checkpoints: Option<Checkpoints>) -> Self {
        if let (Some(hosts), Some(cp)) = (&self.hosts, &checkpoints) {
            hosts.set_checkpoints(cp.clone());
        }
        self.checkpoints = checkpoints;
        self
    }

    /// Creates the task's checkpoint directory, if the run has them.
    /// On failure, the attempt's error message.
    fn checkpoint(&self, job: &Job) -> Result<Option<PathBuf>, String> {
        let Some(cp) = &self.checkpoints else {
            return Ok(None);
        };
        cp.prepare(&job.name).map(Some).map_err(|e| {
            format!(
                "cannot create checkpoint directory {}: {e}",
                cp.dir(&job.name).display()
            )
        })
    }

    /// Runs command attempts as Slurm jobs (see [`slurm`]).
    pub(crate) fn with_slurm(mut self, config: Option<SlurmConfig>) -> Self {
        self.slurm = config.map(|c| {
            SlurmRunner::new(c, self.command_config.grace, self.command_config.output_cap)
                .map_err(|e| format!("cannot prepare to run Slurm jobs: {e}"))
        });
        self
    }

    /// Runs `job`; with hosts, a remote place may carry the attempt on itself
    /// ([`Ran::HandedOff`]) and report its end to the run's [`Recorder`].
    pub(crate) fn run(&self, job: &Job, sink: &dyn ResultSink) -> Ran {
        // A job still queued when the run was cancelled must not start anything.
        if self.cancelled.is_cancelled() {
            self.unpromise(job.ticket);
            return Ran::Ended(Attempt::not_started());
        }
        match (&self.hosts, &job.work) {
            (None, _) => Ran::Ended(self.run_here(job, sink, "local")),
            (Some(hosts), Work::Command(_)) => {
                hosts.run(job, sink, |host| self.run_here(job, sink, host))
            }
            // Closures of the process pool go to hosts too (the embedding binary serves them).
            (Some(hosts), Work::Closure(_))
                if job.pool.unwrap_or(self.processes.default_pool()) == PoolKind::Processes =>
            {
                hosts.run(job, sink, |host| self.run_here(job, sink, host))
            }
            (Some(hosts), Work::Closure(_)) => {
                // Closures on threads take no place.
                hosts.unpromise(job.ticket);
                sink.begin(&crate::host::Hosts::local_name());
                Ran::Ended(self.run_here(job, sink, "local"))
            }
        }
    }

    /// Whether `job`'s attempt will be carried on by its place once started there
    /// ([`Ran::HandedOff`]), leaving its worker free at once.
    pub(crate) fn hands_off(&self, job: &Job) -> bool {
        let Some(hosts) = &self.hosts else {
            return false;
        };
        let remote = match &job.work {
            Work::Command(_) => true,
            Work::Closure(_) => {
                job.pool.unwrap_or(self.processes.default_pool()) == PoolKind::Processes
            }
        };
        remote && hosts.may_hand_off(!job.outputs.is_empty())
    }

    /// Where places report the attempts they carry on themselves ([`Ran::HandedOff`]); set
    /// once the run state's owner exists. Without it, every attempt ends on its thread.
    pub(crate) fn set_recorder(&self, recorder: std::sync::Weak<dyn Recorder>) {
        if let Some(hosts) = &self.hosts {
            hosts.set_recorder(recorder);
        }
    }

    /// Whether a job may be handed out now: in runs with hosts, only when some place has room
    /// for it (see [`crate::host::Hosts::promise`]); always otherwise.
    /// `Ok(ticket)` when it may (see [`Job::ticket`]), `Err(())` when it may not now.
    #[inline]
    pub(crate) fn promise(&self) -> Result<Option<u64>, ()> {
        match &self.hosts {
            None => Ok(None),
            Some(h) => h.promise().map(Some).ok_or(()),
        }
    }

    /// A job [`Executor::promise`]d will not be handed out after all.
    pub(crate) fn unpromise(&self, ticket: Option<u64>) {
        if let Some(hosts) = &self.hosts {
            hosts.unpromise(ticket);
        }
    }

    /// The end of an attempt is recorded: the host place it held takes others.
    // This and the other checks for hosts are inlined: the dispatcher calls them for every
    // attempt with the run's lock held, and without hosts each is one test.
    #[inline]
    pub(crate) fn release(&self, idx: u32, attempt: u32) {
        if let Some(hosts) = &self.hosts {
            hosts.release(idx, attempt);
        }
    }

    /// Host events (connected, lost) not yet in the run's event queue.
    #[inline]
    pub(crate) fn take_notices(
        &self,
        events: &mut std::collections::VecDeque<crate::sched::events::Event>,
    ) {
        if let Some(hosts) = &self.hosts {
            hosts.take_notices(events);
        }
    }

    /// Runs an attempt on this machine (`host` is its name for `PEXEN_HOST`).
    fn run_here(&self, job: &Job, sink: &dyn ResultSink, host: &str) -> Attempt {
        let checkpoint = match self.checkpoint(job) {
            Ok(dir) => dir,
            Err(message) => return Attempt::new(Outcome::Error).message(message),
        };
        let checkpoint = checkpoint.as_deref();
        match &job.work {
            Work::Closure(f) => match job.pool.unwrap_or(self.processes.default_pool()) {
                PoolKind::Threads => self.run_closure(f.as_ref(), job, checkpoint, sink),
                PoolKind::Processes => self.processes.run(job, checkpoint, sink),
            },
            Work::Command(spec) if self.slurm.is_some() => {
                self.run_slurm(spec, job, checkpoint, sink)
            }
            Work::Command(spec) => match self.commands() {
                Ok(runner) => {
                    // The runner refuses to start anything once cancelled; one created after
                    // the cancellation (no command had run yet) must be told.
                    if self.is_cancelled() {
                        runner.terminate_all();
                    }
                    // A bug in the runner must not kill the worker thread: the run would wait
                    // for its attempt forever, deaf to Ctrl-C. The attempt's group is killed
                    // when the unwinding drops it.
                    let job = CommandJob {
                        task: &job.name,
                        attempt: job.attempt,
                        spec,
                        shared: job.shared(),
                        timeout: job.timeout,
                        checkpoint,
                        sink,
                        host,
                    };
                    catch_unwind(AssertUnwindSafe(|| runner.run(job))).unwrap_or_else(|panic| {
                        Attempt::new(Outcome::Error).message(format!(
                            "pexen failed running this command (a bug): {}",
                            panic_message(&*panic)
                        ))
                    })
                }
                Err(e) => Attempt::new(Outcome::Error).message(e.clone()),
            },
        }
    }

    fn run_slurm(
        &self,
        spec: &CommandSpec,
        job: &Job,
        checkpoint: Option<&std::path::Path>,
        sink: &dyn ResultSink,
    ) -> Attempt {
        match &self.slurm {
            Some(Ok(slurm)) => slurm.run(&SlurmJob {
                task: &job.name,
                attempt: job.attempt,
                spec,
                shared: job.shared(),
                slots: &job.slots,
                timeout: job.timeout,
                checkpoint,
                sink,
            }),
            Some(Err(e)) => Attempt::new(Outcome::Error).message(e.clone()),
            None => Attempt::new(Outcome::Error).message("Slurm is not configured for this run"),
        }
    }

    fn commands(&self) -> &Result<CommandRunner, String> {
        self.commands.get_or_init(|| {
            CommandRunner::new(self.command_config.clone())
                .map_err(|e| format!("cannot prepare to run commands: {e}"))
        })
    }

    fn run_closure(
        &self,
        f: &TaskFn,
        job: &Job,
        checkpoint: Option<&Path>,
        sink: &dyn ResultSink,
    ) -> Attempt {
        // Attempts run back to back share a clock reading: one read per attempt, not two (the
        // clock is the dearest part of a no-op closure's attempt; see `clock`). A timeout's
        // deadline counts from a reading of the system clock of its own.
        let started = job.clock.take().unwrap_or_else(clock::Stamp::now);
        let deadline = job.timeout.map(|t| Instant::now() + t);
        let ctx = Context::new(
            &job.name,
            job.attempt,
            job.shared(),
            sink,
            &self.cancelled,
            deadline,
        )
        .with_checkpoint(checkpoint);
        let result = catch_unwind(AssertUnwindSafe(|| f(&ctx)));
        let ended = clock::Stamp::now();
        job.clock.set(Some(ended));
        let duration = started.until(ended);
        let mut attempt = match result {
            Ok(Ok(())) => Attempt::passed(ctx.into_exports()),
            Ok(Err(e)) if e.suspend => Attempt::suspended(e.message),
            Ok(Err(e)) => Attempt::new(e.status).message(e.message),
            Err(panic) => Attempt::new(Outcome::Error)
                .message(format!("panicked: {}", panic_message(&*panic))),
        };
        if let Some(limit) = job.timeout {
            attempt = past_deadline(attempt, limit, duration);
        }
        attempt.duration = duration;
        attempt
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.is_cancelled()
    }

    /// Cancellation: closures see `is_cancelled`, commands are terminated (TERM, grace, KILL).
    pub(crate) fn cancel(&self) {
        self.cancelled.cancel();
        if let Some(hosts) = &self.hosts {
            hosts.cancel(false);
        }
        self.processes.cancel();
        if let Some(Ok(runner)) = self.commands.get() {
            runner.terminate_all();
        }
        if let Some(Ok(slurm)) = &self.slurm {
            slurm.cancel_all();
        }
    }

    /// Ctrl-Z: stop running commands and pause their timeouts.
    pub(crate) fn pause(&self) {
        if let Ok(runner) = self.commands() {
            runner.pause_all();
        }
    }

    /// Continue after [`Executor::pause`].
    pub(crate) fn resume(&self) {
        if let Some(Ok(runner)) = self.commands.get() {
            runner.resume_all();
        }
    }

    /// Second interrupt: kill every running command now.
    pub(crate) fn kill(&self) {
        self.cancelled.cancel();
        if let Some(hosts) = &self.hosts {
            hosts.cancel(true);
        }
        self.processes.kill();
        if let Some(Ok(runner)) = self.commands.get() {
            runner.kill_all();
        }
        if let Some(Ok(slurm)) = &self.slurm {
            slurm.kill_all();
        }
    }
}

impl Executor {
    /// The run is over (its worker threads joined): ends and reaps the idle worker processes,
    /// and the processes tasks left behind (zombies of daemons a cancel killed included), so
    /// none outlives the run even while a [`crate::RunHandle`] keeps the executor alive.
    pub(crate) fn finish(&self) {
        if let Some(hosts) = &self.hosts {
            hosts.shutdown();
        }
        self.processes.shutdown();
        if let Some(Ok(runner)) = self.commands.get() {
            runner.sweep();
        }
        if let Some(Ok(slurm)) = &self.slurm {
            slurm.finish();
        }
    }
}

/// The rule of both closure pools for an attempt that ended after its limit: exceeding the limit
/// is `timeout` (SPEC 1), whatever the closure returned. Returning an error once
/// `ctx.is_cancelled()` turns true (or `?` on a call the deadline interrupted) is the idiomatic
/// way out of a long task, and must not turn a timeout into an `error`. What the closure said is
/// kept in the message.
pub(crate) fn past_deadline(attempt: Attempt, limit: Duration, took: Duration) -> Attempt {
    if took < limit || attempt.outcome == Outcome::Timeout {
        return attempt;
    }
    let mut message = format!("timed out after {}", humantime::format_duration(limit));
    if let Some(said) = attempt.message.as_deref().filter(|m| !m.is_empty()) {
        message = format!("{message}; then returned {}: {said}", attempt.outcome);
    }
    Attempt::new(Outcome::Timeout).message(message)
}

/// The text of a panic payload (`&str` or `String`), or a placeholder for other payloads.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_moved_inline() {
        // Jobs are moved several times per attempt (into the batch, out of it); past 128 bytes
        // every move is a call to `memcpy` (issue 15).
        let size = std::mem::size_of::<Job>();
        assert!(size <= 128, "a Job is {size} bytes");
    }

    #[test]
    fn job_slots_read_as_the_tasks_map() {
        let none = JobSlots::new(&BTreeMap::new());
        assert!(none.0.is_none() && none.is_empty());
        let map = BTreeMap::from([("gpu".to_string(), 2)]);
        let some = JobSlots::new(&map);
        assert_eq!(*some, map);
    }
}
