//! Command attempts as Slurm jobs (`pexen run --slurm`, SPEC section 10): one `sbatch` job per
//! attempt, submitted when the scheduler starts the attempt, followed until it ends.
//!
//! # Design
//!
//! - **Behind the executor seam.** A worker thread that would spawn a command calls
//!   `SlurmRunner::run` instead and waits there for the job, so `-j` bounds the jobs queued
//!   plus running, and locks, slots, priorities and retries work unchanged.
//! - **Files, not accounting.** The batch script (`script.rs`) writes the task's results,
//!   exports, stdout, stderr and exit status to `STATE/slurm/jobs/ID.*` (the state directory is
//!   on a filesystem shared with the nodes). Results lines are streamed by tailing `ID.results`;
//!   the exit status comes from `ID.exit`; Slurm's own state complements it (`verdict.rs`).
//! - **One poller.** One thread calls `squeue` once per interval for every job of the run
//!   (`poll.rs`).
//! - **pexen's watchdog.** `--time` is set from `timeout` (whole minutes, grace included), but
//!   pexen cancels a job itself when the task's `timeout` passes: Slurm's limit is coarse and late.
//! - **Lost jobs.** `NODE_FAIL`, `BOOT_FAIL` and `PREEMPTED` submit the attempt again (not an
//!   attempt of the task; at most twice).
//! - **Resume.** Each job id goes to the journal (a `TaskSubmitted` event) before pexen waits for
//!   it; `--resume` hands the ids of unfinished jobs back ([`SlurmConfig::reattach`]), and the
//!   attempt follows the job it already has instead of submitting one.

pub(crate) mod poll;
mod script;
pub(crate) mod verdict;
pub(crate) mod workers;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::context::{ResultSink, Shared};
use crate::pool::command::files::{read_capped, read_exports, ResultsReader};
use crate::pool::command::INTERRUPTED;
use crate::sched::events::{Attempt, Output};
use crate::task::{CommandSpec, Outcome, TaskName};

use poll::Poller;
use script::{batch_script, sbatch_args, ScriptJob, SUFFIXES};
use verdict::{verdict, CancelledBy, ExitRecord, Seen, Verdict};

/// How often an attempt whose job runs tails its results file and looks for its exit record.
const TICK: Duration = Duration::from_millis(25);
/// The same for a job still queued (or not polled yet): it cannot have results before it runs,
/// and a run of hundreds of queued jobs must not cost the machine thousands of wake-ups a second.
const QUEUED_TICK: Duration = Duration::from_millis(250);
/// How many times an attempt is submitted again after its job was lost (node failure,
/// preemption) before it ends as `error`.
const MAX_REQUEUES: usize = 2;
/// How long to wait for an exit record that Slurm says exists (a shared filesystem may show a
/// file some time after it was written on a node).
const EXIT_RECORD_WAIT: Duration = Duration::from_secs(10);
/// Failed `squeue` polls in a row after which waiting attempts give up.
const MAX_POLL_FAILURES: u32 = 30;

/// Settings of a run on Slurm. See [`crate::SchedulerBuilder::slurm`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlurmConfig {
    /// Where job files go (`STATE/slurm`); must be on a filesystem the nodes share.
    pub dir: PathBuf,
    /// Extra `sbatch` arguments for every job (`--slurm-arg`), before each task's `slurm_args`.
    pub args: Vec<String>,
    /// Time between two `squeue` calls (default 1 s).
    pub poll_interval: Duration,
    /// Jobs of an earlier run to follow instead of submitting (task -> job id).
    pub reattach: HashMap<TaskName, String>,
    /// The Slurm commands (default `sbatch`, `squeue`, `scancel`, found in `PATH`).
    pub sbatch: String,
    pub squeue: String,
    pub scancel: String,
}

impl SlurmConfig {
    /// Job files under `dir` (normally `STATE/slurm`), no extra arguments.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            args: Vec::new(),
            poll_interval: Duration::from_secs(1),
            reattach: HashMap::new(),
            sbatch: "sbatch".into(),
            squeue: "squeue".into(),
            scancel: "scancel".into(),
        }
    }

    /// Adds `sbatch` arguments for every job (`--partition=debug`, `--account=me`).
    #[must_use]
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Follows these jobs of an earlier run (task name -> job id) instead of submitting new
    /// ones for those tasks: see [`crate::state::RunJournal::jobs_to_reattach`].
    #[must_use]
    pub fn reattach(mut self, jobs: impl IntoIterator<Item = (TaskName, String)>) -> Self {
        self.reattach.extend(jobs);
        self
    }
}

/// Why pexen cannot use Slurm for this run.
#[derive(Debug, Error)]
pub enum SlurmError {
    #[error("cannot run {program} (is Slurm installed and in PATH?)")]
    Missing {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed: {message}")]
    Failed { program: String, message: String },
    #[error(
        "{} is on a local {fs} filesystem of this machine, but Slurm runs jobs on other \
         machines ({nodes}): the task tree and the state directory must be on a filesystem \
         shared with the nodes (NFS, Lustre, GPFS, ...) at the same path",
        path.display()
    )]
    NotShared {
        path: PathBuf,
        fs: &'static str,
        nodes: String,
    },
    #[error("cannot create the Slurm job directory {}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Checks that every path in `paths` can be seen by Slurm's nodes: a path on a local filesystem
/// (ext4, xfs, btrfs, tmpfs, overlay, ...) is refused unless the only node is this machine.
pub fn check_shared(paths: &[&Path], sinfo: &str) -> Result<(), SlurmError> {
    let locals: Vec<(&Path, &'static str)> = paths
        .iter()
        .filter_map(|p| local_fs(p).map(|fs| (*p, fs)))
        .collect();
    let Some(&(path, fs)) = locals.first() else {
        return Ok(());
    };
    let others = other_nodes(sinfo)?;
    if others.is_empty() {
        return Ok(());
    }
    let mut shown: Vec<&str> = others.iter().take(5).map(String::as_str).collect();
    if others.len() > 5 {
        shown.push("...");
    }
    Err(SlurmError::NotShared {
        path: path.to_path_buf(),
        fs,
        nodes: shown.join(", "),
    })
}

/// Slurm's nodes other than this machine (`sinfo --Node`), sorted, each once.
pub fn other_nodes(sinfo: &str) -> Result<Vec<String>, SlurmError> {
    let out = Command::new(sinfo)
        .args(["--noheader", "--Node", "--format=%N"])
        .output()
        .map_err(|source| SlurmError::Missing {
            program: sinfo.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(SlurmError::Failed {
            program: sinfo.to_owned(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let me = hostname();
    let mut nodes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty() && !is_this_host(l, &me))
        .collect();
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

fn is_this_host(node: &str, me: &str) -> bool {
    let short = me.split('.').next().unwrap_or(me);
    node == me || node == short || node == "localhost"
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The name of the filesystem under `path` when it is one that only this machine sees.
fn local_fs(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libc targets
    let magic = st.f_type as i64;
    Some(match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlay",
        0xF2F5_2010 => "f2fs",
        _ => return None,
    })
}

/// Cancels jobs (`scancel`, one call): the jobs an earlier run left that nobody will collect.
pub fn cancel_jobs(scancel: &str, jobs: &[String]) -> Result<(), SlurmError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let out = Command::new(scancel)
        .args(jobs)
        .output()
        .map_err(|source| SlurmError::Missing {
            program: scancel.to_owned(),
            source,
        })?;
    // Jobs that are already gone are fine.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !stderr.contains("Invalid job id") {
        return Err(SlurmError::Failed {
            program: scancel.to_owned(),
            message: stderr.trim().to_owned(),
        });
    }
    Ok(())
}

/// Submits the batch script at `script` with `args` (which must include `--parsable`); the
/// job id.
pub(crate) fn sbatch(program: &str, args: &[String], script: &Path) -> Result<String, SlurmError> {
    let out = Command::new(program)
        .args(args)
        .arg(script)
        .output()
        .map_err(|source| SlurmError::Missing {
            program: program.to_owned(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // `--parsable` prints `ID` or `ID;CLUSTER`.
    let id = stdout.trim().split(';').next().unwrap_or("").to_owned();
    if !out.status.success() || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SlurmError::Failed {
            program: program.to_owned(),
            message: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                if stdout.trim().is_empty() {
                    String::new()
                } else {
                    format!(" (printed {:?})", stdout.trim())
                }
            ),
        });
    }
    Ok(id)
}

/// One attempt of a command task, to run as a job.
#[derive(Clone, Copy)]
pub(crate) struct SlurmJob<'a> {
    pub task: &'a TaskName,
    pub attempt: u32,
    pub spec: &'a CommandSpec,
    pub shared: &'a Shared,
    pub slots: &'a BTreeMap<String, u32>,
    pub timeout: Option<Duration>,
    /// The task's checkpoint directory (SPEC section 12), on the shared state directory.
    pub checkpoint: Option<&'a Path>,
    pub sink: &'a dyn ResultSink,
}

const RUNNING: u8 = 0;
const CANCELLING: u8 = 1;
const KILLING: u8 = 2;

/// Runs command attempts as Slurm jobs for one run; shared by the worker threads.
pub(crate) struct SlurmRunner {
    config: SlurmConfig,
    grace: Duration,
    output_cap: usize,
    jobs_dir: PathBuf,
    poller: Poller,
    reattach: Mutex<HashMap<TaskName, String>>,
    cancel: AtomicU8,
    next_script: AtomicU64,
}

impl SlurmRunner {
    /// Creates `DIR/jobs`. `grace` goes into `--time`; `output_cap` bounds captured output.
    pub(crate) fn new(
        config: SlurmConfig,
        grace: Duration,
        output_cap: usize,
    ) -> Result<Self, SlurmError> {
        let jobs_dir = config.dir.join("jobs");
        fs::create_dir_all(&jobs_dir).map_err(|source| SlurmError::Dir {
            path: jobs_dir.clone(),
            source,
        })?;
        // Slurm's nodes need the absolute path.
        let jobs_dir = fs::canonicalize(&jobs_dir).map_err(|source| SlurmError::Dir {
            path: jobs_dir.clone(),
            source,
        })?;
        Ok(Self {
            poller: Poller::new(config.squeue.clone(), config.poll_interval),
            reattach: Mutex::new(config.reattach.clone()),
            config,
            grace,
            output_cap,
            jobs_dir,
            cancel: AtomicU8::new(RUNNING),
            next_script: AtomicU64::new(0),
        })
    }

    /// Runs one attempt as a job, to its end. Never fails: what went wrong is the outcome.
    pub(crate) fn run(&self, job: &SlurmJob<'_>) -> Attempt {
        let start = Instant::now();
        let mut attempt = self.attempt(job, start);
        attempt.duration = start.elapsed();
        attempt
    }

    fn attempt(&self, job: &SlurmJob<'_>, start: Instant) -> Attempt {
        if self.cancel.load(Ordering::SeqCst) != RUNNING {
            return Attempt::new(Outcome::Error).message(INTERRUPTED);
        }
        let mut reattach = self
            .reattach
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(job.task);
        let mut lost: Vec<String> = Vec::new();
        loop {
            // A lost job is not resubmitted once the run is cancelled.
            if self.cancel.load(Ordering::SeqCst) != RUNNING {
                return Attempt::new(Outcome::Error).message(INTERRUPTED);
            }
            let reattached = reattach.is_some();
            let id = match reattach.take() {
                Some(id) => id,
                None => match self.submit(job) {
                    Ok(id) => id,
                    Err(e) => return Attempt::new(Outcome::Error).message(e.to_string()),
                },
            };
            job.sink.submitted(&id);
            let followed = self.follow(&id, job, start);
            if reattached && followed.seen == Seen::Gone && followed.exit.is_none() {
                // The job of the earlier run ended unseen without a record (cancelled while
                // pexen was down, or collected just before pexen was killed): run it now.
                self.remove_files(&id);
                continue;
            }
            let v = verdict(
                &id,
                &followed.seen,
                followed.exit.as_ref(),
                followed.cancelled,
            );
            match v {
                Verdict::Requeue(why) if lost.len() < MAX_REQUEUES => {
                    self.remove_files(&id);
                    lost.push(why);
                }
                Verdict::Requeue(why) => {
                    self.remove_files(&id);
                    lost.push(why);
                    return Attempt::new(Outcome::Error).message(format!(
                        "lost {} times: {}",
                        lost.len(),
                        lost.join("; ")
                    ));
                }
                Verdict::Done(outcome, message) => {
                    let attempt = self.collect(&id, outcome, message, followed.exit.as_ref(), job);
                    self.remove_files(&id);
                    return attempt;
                }
                Verdict::Suspend => {
                    let message = format!("exit code {}", crate::pool::command::SUSPEND_EXIT);
                    let exit = followed.exit.as_ref();
                    let mut attempt = self.collect(&id, Outcome::Skip, Some(message), exit, job);
                    attempt.suspend = true;
                    self.remove_files(&id);
                    return attempt;
                }
            }
        }
    }

    /// Writes the batch script and submits it; the job id.
    fn submit(&self, job: &SlurmJob<'_>) -> Result<String, SlurmError> {
        // A command without a `cwd` runs where pexen runs, as locally.
        let here = std::env::current_dir().ok();
        // Absolute: the script changes directory first.
        let checkpoint = job
            .checkpoint
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
        let script = batch_script(&ScriptJob {
            task: job.task,
            attempt: job.attempt,
            spec: job.spec,
            shared: job.shared,
            jobs_dir: &self.jobs_dir,
            cwd: job.spec.cwd.as_deref().or(here.as_deref()),
            checkpoint: checkpoint.as_deref(),
        });
        let n = self.next_script.fetch_add(1, Ordering::Relaxed);
        let path = self
            .jobs_dir
            .join(format!(".submit-{}-{n}.sh", std::process::id()));
        fs::write(&path, script).map_err(|source| SlurmError::Dir {
            path: path.clone(),
            source,
        })?;
        let args = sbatch_args(
            job.task,
            job.slots,
            job.timeout,
            self.grace,
            &self.jobs_dir,
            &self.config.args,
            &job.spec.slurm_args,
        );
        let id = sbatch(&self.config.sbatch, &args, &path);
        // sbatch keeps its own copy of the script.
        let _ = fs::remove_file(&path);
        id
    }

    /// Follows job `id` until it is over: streams results, enforces the deadline, follows
    /// cancellation.
    fn follow(&self, id: &str, job: &SlurmJob<'_>, start: Instant) -> Followed {
        self.poller.register(id);
        let mut results = ResultsReader::new(self.file(id, "results"));
        let deadline = job.timeout.map(|t| start + t);
        let mut cancelled = CancelledBy::Nobody;
        let mut cancelled_at: Option<Instant> = None;
        let mut exit: Option<ExitRecord> = None;
        let mut over_since: Option<Instant> = None;
        let seen = loop {
            results.poll(job.sink);
            if exit.is_none() {
                exit = self.exit_record(id);
            }
            let seen = self.poller.seen(id);
            if seen.is_over() {
                // Slurm says the job ended, the record may still be on its way (a shared
                // filesystem's attribute cache), unless the state already decides.
                let record_decides = match &seen {
                    Seen::Gone => true,
                    Seen::Ended(s) => s == "COMPLETED" || s == "FAILED",
                    _ => false,
                };
                let needs_record =
                    exit.is_none() && cancelled == CancelledBy::Nobody && record_decides;
                let since = *over_since.get_or_insert_with(Instant::now);
                if !needs_record || since.elapsed() >= EXIT_RECORD_WAIT {
                    break seen;
                }
            } else if exit.is_some() && cancelled == CancelledBy::Nobody {
                // Done by its own account: confirm with Slurm soon, not at the next interval.
                self.poller.kick();
            }
            let now = Instant::now();
            match self.cancel.load(Ordering::SeqCst) {
                RUNNING => {}
                level => {
                    if cancelled != CancelledBy::Interrupt {
                        // `cancel_all` may have listed the jobs before this one registered.
                        let _ = cancel_jobs(&self.config.scancel, &[id.to_owned()]);
                        cancelled = CancelledBy::Interrupt;
                        cancelled_at = Some(now);
                    }
                    if level == KILLING {
                        break seen;
                    }
                }
            }
            if cancelled == CancelledBy::Nobody && deadline.is_some_and(|d| now >= d) {
                let _ = cancel_jobs(&self.config.scancel, &[id.to_owned()]);
                cancelled = CancelledBy::Timeout;
                cancelled_at = Some(now);
            }
            // Slurm's KillWait and a slow controller, bounded: cancelled is cancelled.
            if cancelled_at.is_some_and(|t| t.elapsed() > self.grace + Duration::from_secs(60)) {
                break seen;
            }
            if let Some((failures, _)) = self.poller.failing() {
                if failures >= MAX_POLL_FAILURES && cancelled == CancelledBy::Nobody {
                    break seen;
                }
            }
            let mut nap = match &seen {
                Seen::NotYet => QUEUED_TICK,
                Seen::Active(state) if state == "PENDING" => QUEUED_TICK,
                _ => TICK,
            };
            if cancelled == CancelledBy::Nobody {
                if let Some(d) = deadline {
                    nap = nap.min(d.saturating_duration_since(now));
                }
            }
            self.poller.wait(nap.max(Duration::from_millis(1)));
        };
        self.poller.unregister(id);
        results.finish(job.sink);
        if exit.is_none() {
            exit = self.exit_record(id);
        }
        let seen = match (&seen, self.poller.failing()) {
            (s, Some((failures, _))) if !s.is_over() && failures >= MAX_POLL_FAILURES => Seen::Gone,
            _ => seen,
        };
        Followed {
            seen,
            exit,
            cancelled,
        }
    }

    /// The attempt of a job that is over.
    fn collect(
        &self,
        id: &str,
        outcome: Outcome,
        mut message: Option<String>,
        exit: Option<&ExitRecord>,
        job: &SlurmJob<'_>,
    ) -> Attempt {
        let mut outcome = outcome;
        if let (Outcome::Timeout, None) = (outcome, &message) {
            message = Some(format!(
                "timed out after {} (Slurm job {id} cancelled)",
                humantime::format_duration(job.timeout.unwrap_or_default())
            ));
        }
        if outcome == Outcome::Error && message.is_none() {
            message = Some(format!("Slurm job {id} failed"));
        }
        if let Some((failures, error)) = self.poller.failing() {
            if failures >= MAX_POLL_FAILURES && exit.is_none() {
                outcome = Outcome::Error;
                message = Some(format!("cannot follow Slurm job {id}: {error}"));
            }
        }
        let mut attempt = Attempt::new(outcome);
        attempt.message = message;
        let start_error = exit.is_some_and(|e| e.start_error.is_some());
        // A command that could not start has no exit code, as locally; `env`'s message is
        // the attempt's message, not task output.
        attempt.exit_code = exit.filter(|_| !start_error).map(|e| e.code);
        if start_error {
            return attempt;
        }
        match read_exports(&self.file(id, "export")) {
            Ok(exports) => attempt.exports = exports,
            Err(e) => {
                attempt.message = Some(match attempt.message.take() {
                    Some(before) => format!("{before}; {e}"),
                    None => e.to_string(),
                });
                attempt.outcome = attempt.outcome.worst(Outcome::Error);
            }
        }
        let read = |suffix: &str| match fs::File::open(self.file(id, suffix)) {
            Ok(f) => read_capped(&f, self.output_cap)
                .unwrap_or_else(|e| format!("[cannot read {suffix}: {e}]")),
            Err(_) => String::new(),
        };
        let mut stderr = read("stderr");
        // Slurm's own messages about the job (its script's output), when there are any.
        let slurm = read("out");
        if !slurm.is_empty() {
            stderr.push_str(&slurm);
        }
        let output = Output {
            stdout: read("stdout"),
            stderr,
        };
        attempt.output = (!output.is_empty()).then(|| Box::new(output));
        attempt
    }

    fn file(&self, id: &str, suffix: &str) -> PathBuf {
        self.jobs_dir.join(format!("{id}.{suffix}"))
    }

    /// `ID.exit`, when the job wrote it.
    fn exit_record(&self, id: &str) -> Option<ExitRecord> {
        let text = fs::read_to_string(self.file(id, "exit")).ok()?;
        let code: i32 = text.trim().parse().ok()?;
        let start_error = if code == 126 || code == 127 {
            fs::read_to_string(self.file(id, "stderr"))
                .ok()
                .and_then(|e| e.lines().last().map(str::to_owned))
                .filter(|line| line.starts_with("env: "))
        } else {
            None
        };
        Some(ExitRecord { code, start_error })
    }

    fn remove_files(&self, id: &str) {
        for suffix in SUFFIXES {
            let _ = fs::remove_file(self.file(id, suffix));
        }
    }

    /// Ctrl-C: cancels every job of the run (one `scancel`); waiting attempts end as
    /// `error` "interrupted" once Slurm reports their jobs over. Later attempts submit nothing.
    pub(crate) fn cancel_all(&self) {
        self.cancel_with(CANCELLING);
    }

    /// Second Ctrl-C: as [`SlurmRunner::cancel_all`], without waiting for Slurm's word.
    pub(crate) fn kill_all(&self) {
        self.cancel_with(KILLING);
    }

    fn cancel_with(&self, level: u8) {
        self.cancel.fetch_max(level, Ordering::SeqCst);
        let _ = cancel_jobs(&self.config.scancel, &self.poller.jobs());
        self.poller.kick();
    }

    /// The run is over: stops the poller, and cancels the jobs of an earlier run that were to
    /// be re-attached but whose tasks did not run (a fail-fast or cancelled run): nobody will
    /// collect them.
    pub(crate) fn finish(&self) {
        self.poller.stop();
        let left: Vec<String> =
            std::mem::take(&mut *self.reattach.lock().unwrap_or_else(PoisonError::into_inner))
                .into_values()
                .collect();
        let _ = cancel_jobs(&self.config.scancel, &left);
    }
}

impl Drop for SlurmRunner {
    fn drop(&mut self) {
        self.poller.stop();
    }
}

/// How following a job ended.
struct Followed {
    seen: Seen,
    exit: Option<ExitRecord>,
    cancelled: CancelledBy,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in `sinfo` that lists `nodes`.
    fn fake_sinfo(dir: &Path, nodes: &str) -> String {
        let path = dir.join("sinfo");
        fs::write(&path, format!("#!/bin/sh\nprintf '{nodes}'\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn a_local_filesystem_is_refused_when_other_machines_run_the_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let Some(fs_name) = local_fs(dir.path()) else {
            // Temp dirs on a network filesystem: nothing to refuse here.
            return;
        };
        let sinfo = fake_sinfo(dir.path(), "node1\\nnode2\\nnode1\\n");
        let err = check_shared(&[dir.path()], &sinfo).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SlurmError::NotShared { .. }), "{text}");
        assert!(
            text.contains(fs_name) && text.contains("node1, node2"),
            "{text}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");

        // This machine as the only node: a local filesystem is shared with it.
        let sinfo = fake_sinfo(dir.path(), &format!("{}\\n", hostname()));
        check_shared(&[dir.path()], &sinfo).unwrap();
    }

    #[test]
    fn a_missing_sinfo_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        if local_fs(dir.path()).is_none() {
            return;
        }
        let err = check_shared(&[dir.path()], "/nonexistent/sinfo").unwrap_err();
        assert!(
            err.to_string().starts_with("cannot run /nonexistent/sinfo"),
            "{err}"
        );
    }

    #[test]
    fn host_names_match_short_and_long() {
        assert!(is_this_host("vm", "vm.example.org"));
        assert!(is_this_host("vm.example.org", "vm.example.org"));
        assert!(!is_this_host("vm2", "vm.example.org"));
    }
}
