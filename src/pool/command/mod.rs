//! Running command tasks (SPEC section 3): one child process per attempt, in its own process
//! group, with its output captured to files, its streamed results and exports read from files,
//! a timeout enforced by the TERM-grace-KILL ladder, and no process left behind.
//!
//! # Design
//!
//! - **No helper threads.** The worker thread that calls [`CommandRunner::run`] waits on a pidfd
//!   with `poll`, waking at once when the child exits and every `TICK` otherwise to stream new
//!   result lines to the sink, check the deadline and see cancellation. The sink is only ever
//!   called from the `run()` thread, so it can stay a plain borrow.
//! - **Cheap spawns.** No `pre_exec` (it would force `fork` over `posix_spawn`); the group comes
//!   from `process_group(0)`. stdout and stderr go to memfds (no reader thread, no `unlink`, no
//!   disk: see `files::capture_file` for the measurement); the results and export files are
//!   only named, never created by us.
//! - **Pinned groups.** The leader is not reaped before its group is signalled for the last
//!   time, so the group id cannot have been reused by then; `terminate_all` / `kill_all` only
//!   signal groups of registered leaders, and a `run()` unregisters its leader before reaping it.
//! - **Orphans.** The process becomes a child subreaper; orphans of tasks are found and killed by
//!   the sweep in `procs` (see there for how they are told apart from other children).

pub(crate) mod files;
pub(crate) mod procs;
#[cfg(test)]
mod tests;
pub mod track;

use std::collections::HashSet;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use files::ExportError;
pub use track::{Tracker, TrackerHandle};

use crate::context::{ResultSink, Shared};
use crate::pool::attempt::{Attempt, Output};
use crate::task::{CommandSpec, Outcome, TaskName};

use procs::{Orphans, PidFd};

/// How often a waiting worker streams new results and checks its deadline and cancellation.
const TICK: Duration = Duration::from_millis(25);

/// The message of an attempt ended by [`CommandRunner::terminate_all`] or
/// [`CommandRunner::kill_all`] (outcome `error`).
pub const INTERRUPTED: &str = "interrupted";

/// Exit status that suspends the run (`EX_TEMPFAIL`): SPEC section 12.
pub const SUSPEND_EXIT: i32 = 75;

/// Settings of a [`CommandRunner`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandConfig {
    /// Time between SIGTERM and SIGKILL on timeout or cancellation.
    pub grace: Duration,
    /// Bytes kept per captured stream: the first and the last half. Also what a stream holds
    /// in memory while the task runs, plus what it writes in one tick (the middle is freed).
    pub output_cap: usize,
    /// A file to which the process group of each attempt is appended when it starts (`PGID`)
    /// and when it ends (`-PGID`), so that whoever started a remote worker can kill the groups
    /// still running if the worker itself is killed.
    pub group_file: Option<PathBuf>,
    /// Told about every task process group, so that a run killed with SIGKILL can be cleaned
    /// up by the next one (`state::live`).
    pub tracker: Option<TrackerHandle>,
}

impl Default for CommandConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(5),
            output_cap: 1 << 20,
            group_file: None,
            tracker: None,
        }
    }
}

/// One attempt of a command task.
#[derive(Clone, Copy)]
pub struct CommandJob<'a> {
    pub task: &'a TaskName,
    /// 1-based.
    pub attempt: u32,
    pub spec: &'a CommandSpec,
    /// The merged exports of the task's providers, given to it as environment variables.
    pub shared: &'a Shared,
    pub timeout: Option<Duration>,
    /// The task's checkpoint directory, given to it as `PEXEN_CHECKPOINT` (SPEC section 12).
    pub checkpoint: Option<&'a Path>,
    /// Receives the lines of `PEXEN_RESULTS`, on the calling thread, while the task runs.
    pub sink: &'a dyn ResultSink,
    /// The name of the host it runs on, given to it as `PEXEN_HOST` (`local` on this machine).
    pub host: &'a str,
}

const RUNNING: u8 = 0;
const TERMINATING: u8 = 1;
const KILLING: u8 = 2;

/// Runs command attempts for one run; shared by the worker threads.
pub struct CommandRunner {
    config: CommandConfig,
    /// Private temp dir: results and export files (and capture files where memfd is missing).
    /// Its path, in every task's environment, marks the task's descendants.
    dir: PathBuf,
    next_id: AtomicU64,
    /// RUNNING, TERMINATING or KILLING; only rises.
    cancel: AtomicU8,
    groups: Mutex<Groups>,
    /// Ctrl-Z: task groups are stopped and their timers paused (see [`CommandRunner::pause_all`]).
    pause: PauseClock,
    /// `config.group_file`, opened once for appending (two lines per attempt).
    group_file: Option<fs::File>,
}

/// Time spent stopped, so that timeouts count only the time tasks could run.
#[derive(Default)]
struct PauseClock {
    stopped: std::sync::atomic::AtomicBool,
    /// Nanoseconds spent stopped since the runner started, over every pause that ended.
    total_ns: AtomicU64,
    since: Mutex<Option<Instant>>,
}

impl PauseClock {
    fn total(&self) -> Duration {
        Duration::from_nanos(self.total_ns.load(Ordering::SeqCst))
    }
}

#[derive(Default)]
struct Groups {
    /// Leaders owned by an in-flight `run()`: their group ids are pinned.
    running: HashSet<i32>,
    /// Every group this runner started, to recognise orphans left in them.
    started: HashSet<i32>,
    /// Orphans a cancel signalled, `(pid, start time)`: once dead, only this names them.
    signalled: HashSet<(i32, u64)>,
}

impl CommandRunner {
    /// Creates the runner's temp dir (under `$TMPDIR`) and makes this process a child subreaper.
    pub fn new(config: CommandConfig) -> io::Result<Self> {
        let dir = create_temp_dir()?;
        procs::become_subreaper();
        if let Some(t) = &config.tracker {
            t.0.runner_started(&dir);
        }
        // Best effort: without the file, a killed worker's tasks are left to the kernel.
        let group_file = config.group_file.as_ref().and_then(|path| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        });
        Ok(Self {
            config,
            group_file,
            dir,
            next_id: AtomicU64::new(0),
            cancel: AtomicU8::new(RUNNING),
            groups: Mutex::new(Groups::default()),
            pause: PauseClock::default(),
        })
    }

    pub fn config(&self) -> &CommandConfig {
        &self.config
    }

    /// Runs one attempt to its end. Never fails: what went wrong is the attempt's outcome.
    pub fn run(&self, job: CommandJob<'_>) -> Attempt {
        let start = Instant::now();
        let mut attempt = self.attempt(&job, start);
        attempt.duration = start.elapsed();
        attempt
    }

    /// Cancellation: SIGTERM to every running group and every task orphan; each in-flight `run()`
    /// sends SIGKILL after the grace period and returns with an `error` outcome whose message
    /// is [`INTERRUPTED`]. Later `run()` calls return that at once. Does not block.
    pub fn terminate_all(&self) {
        self.cancel_with(TERMINATING, libc::SIGTERM);
    }

    /// Second Ctrl-C: SIGKILL to every running group and task orphan now.
    pub fn kill_all(&self) {
        self.cancel_with(KILLING, libc::SIGKILL);
    }

    fn cancel_with(&self, level: u8, signal: i32) {
        let mut groups = self.lock();
        // Raised under the lock: a `run()` that registers after this sees it and signals its own
        // group, one that registered before is signalled here; never both, never neither.
        self.cancel.fetch_max(level, Ordering::SeqCst);
        for &pgid in &groups.running {
            procs::signal_group(pgid, signal);
        }
        let marker = self.marker();
        let signalled = Orphans {
            marker: &marker,
            groups: &groups.started,
            running: &groups.running,
            known: &groups.signalled,
        }
        .signal(signal);
        groups.signalled.extend(signalled);
    }

    /// Kills and reaps every task orphan still around (background jobs and daemons of tasks,
    /// and their zombies). Only when no `run()` is in flight: the run is over.
    pub(crate) fn sweep(&self) {
        let mut groups = self.lock();
        let marker = self.marker();
        let reaped = Orphans {
            marker: &marker,
            groups: &groups.started,
            running: &groups.running,
            known: &groups.signalled,
        }
        .kill_and_reap();
        for id in reaped {
            groups.signalled.remove(&id);
        }
    }

    /// Appends a group's start or end to the group file, if any (one `write` in append mode:
    /// no rewrite per attempt). Called under the groups lock, so lines stay in order.
    fn note_group(&self, pgid: i32, started: bool) {
        let Some(file) = &self.group_file else {
            return;
        };
        let line = if started {
            format!("{pgid}\n")
        } else {
            format!("-{pgid}\n")
        };
        // One `write` to a file opened for appending: the line lands whole, whatever other
        // threads write.
        let _ = std::io::Write::write_all(&mut &*file, line.as_bytes());
    }

    /// Ctrl-Z: SIGSTOP to every running group (and to tasks started until [`Self::resume_all`]);
    /// their timeouts stop counting. Does not block.
    pub fn pause_all(&self) {
        let groups = self.lock();
        {
            let mut since = self
                .pause
                .since
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            since.get_or_insert_with(Instant::now);
        }
        // Under the groups lock, as in `cancel_with`: `register` sees the flag or is signalled.
        self.pause.stopped.store(true, Ordering::SeqCst);
        for &pgid in &groups.running {
            procs::signal_group(pgid, libc::SIGSTOP);
        }
    }

    /// The end of a pause: timeouts count again from where they stopped, groups get SIGCONT.
    pub fn resume_all(&self) {
        let groups = self.lock();
        let since = self
            .pause
            .since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(since) = since {
            let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.pause.total_ns.fetch_add(ns, Ordering::SeqCst);
        }
        self.pause.stopped.store(false, Ordering::SeqCst);
        for &pgid in &groups.running {
            procs::signal_group(pgid, libc::SIGCONT);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn marker(&self) -> Vec<u8> {
        let mut marker = b"PEXEN_RESULTS=".to_vec();
        marker.extend_from_slice(self.dir.as_os_str().as_bytes());
        marker.push(b'/');
        marker
    }

    fn attempt(&self, job: &CommandJob<'_>, start: Instant) -> Attempt {
        if self.cancel.load(Ordering::SeqCst) != RUNNING {
            return Attempt::new(Outcome::Error).message(INTERRUPTED);
        }
        let argv = job.spec.argv();
        let Some(program) = argv.first() else {
            return Attempt::new(Outcome::Error).message("cannot start an empty command");
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let capture = |stream: &str| {
            files::capture_file(&self.dir, &format!("{id}.{stream}")).map_err(|e| {
                format!(
                    "cannot create a capture file in {}: {e}",
                    self.dir.display()
                )
            })
        };
        let (stdout, stderr) = match (capture("out"), capture("err")) {
            (Ok(out), Ok(err)) => (out, err),
            (Err(e), _) | (_, Err(e)) => return Attempt::new(Outcome::Error).message(e),
        };
        let results_path = self.dir.join(format!("{id}.results"));
        let export_path = self.dir.join(format!("{id}.export"));

        let child = {
            let mut cmd = Command::new(program);
            cmd.args(&argv[1..]).process_group(0).stdin(Stdio::null());
            match (stdout.try_clone(), stderr.try_clone()) {
                (Ok(out), Ok(err)) => cmd.stdout(out).stderr(err),
                (Err(e), _) | (_, Err(e)) => {
                    return Attempt::new(Outcome::Error)
                        .message(format!("cannot capture output: {e}"))
                }
            };
            cmd.env("PEXEN_TASK", job.task.as_str())
                .env("PEXEN_ATTEMPT", job.attempt.to_string())
                .env("PEXEN_RESULTS", &results_path)
                .env("PEXEN_EXPORT", &export_path)
                .env("PEXEN_HOST", job.host);
            if let Some(dir) = job.checkpoint {
                cmd.env("PEXEN_CHECKPOINT", dir);
            }
            for (key, value) in job.shared {
                match value {
                    serde_json::Value::String(s) => cmd.env(key, s),
                    other => cmd.env(key, other.to_string()),
                };
            }
            cmd.envs(&job.spec.env);
            if let Some(cwd) = &job.spec.cwd {
                cmd.current_dir(cwd);
            }
            // `cmd` drops at the end of this block, closing our copies of the capture descriptors.
            cmd.spawn()
        };
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                return Attempt::new(Outcome::Error).message(start_error(
                    program,
                    job.spec.cwd.as_deref(),
                    &e,
                ))
            }
        };

        let mut running = self.register(child);
        let mut results = files::ResultsReader::new(results_path);
        let captures = [&stdout, &stderr];
        let ended = self.wait(&mut running, job, start, &mut results, &captures);
        let status = running.reap(ended != Ended::Exited);
        results.finish(job.sink);

        let mut attempt = match ended {
            Ended::Exited => exit_attempt(&status),
            Ended::TimedOut => Attempt::new(Outcome::Timeout).message(format!(
                "timed out after {}",
                humantime::format_duration(job.timeout.unwrap_or_default())
            )),
            Ended::Interrupted => Attempt::new(Outcome::Error).message(INTERRUPTED),
        };
        attempt.exit_code = status.as_ref().ok().and_then(ExitStatus::code);
        match files::read_exports(&export_path) {
            Ok(exports) => attempt.exports = exports,
            Err(e) => {
                let message = match attempt.message.take() {
                    Some(before) => format!("{before}; {e}"),
                    None => e.to_string(),
                };
                attempt = Attempt {
                    outcome: attempt.outcome.worst(Outcome::Error),
                    message: Some(message),
                    ..attempt
                };
            }
        }
        let cap = self.config.output_cap;
        let output = Output {
            stdout: files::read_capped(&stdout, cap)
                .unwrap_or_else(|e| format!("[cannot read stdout: {e}]")),
            stderr: files::read_capped(&stderr, cap)
                .unwrap_or_else(|e| format!("[cannot read stderr: {e}]")),
        };
        attempt.output = (!output.is_empty()).then(|| Box::new(output));
        attempt
    }

    fn register(&self, child: Child) -> Running<'_> {
        let pgid = child.id() as i32;
        let mut groups = self.lock();
        groups.running.insert(pgid);
        groups.started.insert(pgid);
        self.note_group(pgid, true);
        // See `cancel_with`: a cancellation raised before we registered did not reach us.
        match self.cancel.load(Ordering::SeqCst) {
            TERMINATING => procs::signal_group(pgid, libc::SIGTERM),
            KILLING => procs::signal_group(pgid, libc::SIGKILL),
            _ => {}
        }
        if self.pause.stopped.load(Ordering::SeqCst) {
            procs::signal_group(pgid, libc::SIGSTOP);
        }
        drop(groups);
        Running {
            runner: self,
            pgid,
            child: Some(child),
        }
    }

    /// Tells the tracker about a leader, at its first tick: reading `/proc/PID/stat` of a
    /// process that is still in `exec` waits for the exec to finish (measured 0.7 ms at load
    /// 40, 15 % of a spawn), and a task that ends within a tick needs no record. One killed
    /// within its first tick is still found by its environment marker.
    fn track(&self, pgid: i32) {
        // The leader is an unreaped child of ours: its pid, and so its stat, are still its own.
        if let Some(tracker) = &self.config.tracker {
            if let Some(stat) = track::proc_stat(pgid) {
                tracker.0.leader_started(pgid, stat.start_time);
            }
        }
    }

    /// Waits for the leader to exit (without reaping it), streaming results, enforcing the
    /// deadline and following cancellation.
    fn wait(
        &self,
        running: &mut Running<'_>,
        job: &CommandJob<'_>,
        start: Instant,
        results: &mut files::ResultsReader,
        captures: &[&fs::File],
    ) -> Ended {
        let pgid = running.pgid;
        let pidfd = PidFd::open(pgid);
        // A timeout too long to represent is no timeout at all (it would never come).
        let timeout_at = job.timeout.and_then(|t| start.checked_add(t));
        let paused_before = self.pause.total();
        let mut trimmed = [0_u64; 2];
        let mut tracked = false;
        let mut ended = Ended::Exited;
        let mut kill_at: Option<Instant> = None;
        // Without a pidfd: sleep-poll, starting short so that quick tasks stay quick.
        let mut nap = Duration::from_micros(50);
        // Time spent stopped (Ctrl-Z) does not count; while stopped, no deadline passes. Read
        // afresh after each wait: pexen itself may have been stopped in the middle of one.
        let deadline = || {
            if self.pause.stopped.load(Ordering::SeqCst) {
                None
            } else {
                let paused = self.pause.total().saturating_sub(paused_before);
                timeout_at.and_then(|d| d.checked_add(paused))
            }
        };
        loop {
            let now = Instant::now();
            let mut wake = now + TICK;
            if ended == Ended::Exited {
                if let Some(d) = deadline() {
                    wake = wake.min(d);
                }
            }
            if let Some(k) = kill_at {
                wake = wake.min(k);
            }
            let rest = wake.saturating_duration_since(now);
            let exited = if let Some(fd) = &pidfd {
                fd.wait_exit(rest)
            } else {
                std::thread::sleep(nap.min(rest));
                nap = (nap * 2).min(TICK);
                procs::has_exited(pgid)
            };
            if exited {
                // A cancelled task usually dies of the signal before a tick notices the
                // cancellation: its exit status then says nothing about the task itself.
                if ended == Ended::Exited && self.cancel.load(Ordering::SeqCst) != RUNNING {
                    return Ended::Interrupted;
                }
                return ended;
            }
            results.poll(job.sink);
            if !tracked {
                tracked = true;
                self.track(pgid);
            }
            for (file, trimmed) in captures.iter().zip(&mut trimmed) {
                files::free_middle(file, self.config.output_cap, trimmed);
            }

            let now = Instant::now();
            match self.cancel.load(Ordering::SeqCst) {
                // terminate_all (or `register`) already sent SIGTERM.
                TERMINATING if ended != Ended::Interrupted => {
                    ended = Ended::Interrupted;
                    kill_at = Some(
                        kill_at.map_or(now + self.config.grace, |k| k.min(now + self.config.grace)),
                    );
                }
                KILLING => {
                    ended = Ended::Interrupted;
                    procs::signal_group(pgid, libc::SIGKILL);
                    kill_at = None;
                }
                _ => {}
            }
            if ended == Ended::Exited && deadline().is_some_and(|d| now >= d) {
                ended = Ended::TimedOut;
                procs::signal_group(pgid, libc::SIGTERM);
                kill_at = Some(now + self.config.grace);
            }
            if kill_at.is_some_and(|k| now >= k) {
                procs::signal_group(pgid, libc::SIGKILL);
                kill_at = None;
            }
        }
    }
}

impl Drop for CommandRunner {
    /// Kills and reaps every task orphan still around (no `run()` can be in flight: they borrow
    /// the runner), then removes the temp dir.
    fn drop(&mut self) {
        self.sweep();
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(path) = &self.config.group_file {
            let _ = fs::remove_file(path);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    Exited,
    TimedOut,
    Interrupted,
}

/// A registered leader. Dropping it without [`Running::reap`] (a panicking sink) kills its group
/// and reaps it, so that not even a panic leaves a process behind.
struct Running<'r> {
    runner: &'r CommandRunner,
    pgid: i32,
    child: Option<Child>,
}

impl Running<'_> {
    /// Reaps the leader, after a last SIGKILL to its group when pexen ended it (the leader is
    /// still a zombie then, so the group id is pinned); then reaps what that SIGKILL killed.
    fn reap(&mut self, kill_group: bool) -> io::Result<ExitStatus> {
        if kill_group {
            procs::signal_group(self.pgid, libc::SIGKILL);
        }
        {
            let mut groups = self.runner.lock();
            groups.running.remove(&self.pgid);
            self.runner.note_group(self.pgid, false);
        }
        let status = self
            .child
            .take()
            .map_or_else(|| Err(io::ErrorKind::NotFound.into()), |mut c| c.wait());
        if kill_group {
            procs::drain_group(self.pgid);
        }
        status
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.reap(true);
        }
    }
}

/// The outcome of a leader that exited by itself.
fn exit_attempt(status: &io::Result<ExitStatus>) -> Attempt {
    match status {
        Err(e) => Attempt::new(Outcome::Error).message(format!("cannot wait for the process: {e}")),
        Ok(status) => match (status.code(), status.signal()) {
            (Some(0), _) => Attempt::new(Outcome::Pass),
            (Some(77), _) => Attempt::new(Outcome::Skip).message("exit code 77"),
            (Some(SUSPEND_EXIT), _) => Attempt::suspended(format!("exit code {SUSPEND_EXIT}")),
            (Some(code), _) => Attempt {
                // Past 128: a shell's way of saying that a signal ended its command.
                signal: code.checked_sub(128).filter(|s| (1..32).contains(s)),
                ..Attempt::new(Outcome::Fail).message(format!("exit code {code}"))
            },
            (None, Some(signal)) => Attempt {
                signal: Some(signal),
                ..Attempt::new(Outcome::Error)
                    .message(format!("killed by signal {}", procs::signal_name(signal)))
            },
            (None, None) => {
                Attempt::new(Outcome::Error).message(format!("ended abnormally: {status}"))
            }
        },
    }
}

/// `cannot start ./nope: No such file or directory`, naming the working directory when it is
/// the likely culprit.
fn start_error(program: &str, cwd: Option<&Path>, error: &io::Error) -> String {
    let text = error.to_string();
    // Drop std's " (os error 2)": the reason reads better alone.
    let reason = text
        .rsplit_once(" (os error")
        .map_or(text.as_str(), |(reason, _)| reason);
    match cwd {
        Some(cwd) if !cwd.is_dir() => {
            format!(
                "cannot start {program} in {}: {reason} (no such directory)",
                cwd.display()
            )
        }
        _ => match bad_interpreter(program, cwd, error) {
            Some(why) => format!("cannot start {program}: {why}"),
            None => format!("cannot start {program}: {reason}"),
        },
    }
}

/// `ENOENT` for a program that exists means that its `#!` interpreter does not (the kernel
/// says "No such file or directory" either way): name the interpreter, and Windows line
/// endings when they are the reason (`#!/bin/sh\r`).
fn bad_interpreter(program: &str, cwd: Option<&Path>, error: &io::Error) -> Option<String> {
    use std::io::Read;
    if error.kind() != io::ErrorKind::NotFound || !program.contains('/') {
        return None;
    }
    let path = match cwd {
        Some(cwd) => cwd.join(program),
        None => PathBuf::from(program),
    };
    let mut head = [0u8; 256];
    let n = std::fs::File::open(&path).ok()?.read(&mut head).ok()?;
    let first = head[..n].split(|&b| b == b'\n').next()?;
    let line = String::from_utf8_lossy(first.strip_prefix(b"#!")?);
    let interpreter = line.trim_start().split([' ', '\t']).next()?;
    if let Some(bare) = interpreter.strip_suffix('\r') {
        return Some(format!(
            "bad interpreter `{bare}\\r`: the script has Windows line endings (CRLF)"
        ));
    }
    (!Path::new(interpreter).exists())
        .then(|| format!("bad interpreter `{interpreter}`: no such file"))
}

/// A fresh private directory `pexen-PID-N` under the system temp dir.
fn create_temp_dir() -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("pexen-{}-{nanos:x}-{n}", std::process::id()));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
}
