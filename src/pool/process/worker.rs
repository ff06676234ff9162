//! One worker process seen from the scheduler: spawn and handshake, one attempt at a time over
//! the channel, and the end (SIGKILL to its group, then reaping).

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::{serve::WORKER_ENV, CANCEL_GRACE, KILLING, RUNNING, TERMINATING, TICK};
use crate::context::ResultSink;
use crate::error::error_chain as chain;
use crate::pool::attempt::Attempt;
use crate::pool::command::procs;
use crate::pool::Job;
use crate::protocol::{
    self as channel, ChannelError, FrameReader, FromWorker, RunRef, ToWorkerRef, PROTOCOL,
};
use crate::task::Outcome;

/// A guard against a binary that never answers the handshake (its `main` does not call
/// `serve_if_worker` and waits for something); a working worker answers in milliseconds.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(60);

/// Why no worker could be started.
#[derive(Debug, Error)]
pub(super) enum SpawnError {
    #[error("cannot find this program's executable")]
    Exe(#[source] io::Error),
    #[error("cannot spawn {}", exe.display())]
    Spawn {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the worker did not complete the handshake (does `main` call `pexen::worker::serve_if_worker` first?)")]
    Handshake(#[source] ChannelError),
    #[error(
        "the worker said nothing for {} (does `main` call `pexen::worker::serve_if_worker` first?)",
        humantime::format_duration(HANDSHAKE_LIMIT)
    )]
    Silent,
    #[error("the worker speaks protocol {0}, this scheduler speaks {PROTOCOL}")]
    Protocol(u32),
    #[error("interrupted")]
    Interrupted,
}

/// How one attempt in a worker ended.
pub(super) enum Ended {
    /// The closure returned (or panicked) and the worker is healthy.
    Done(Attempt),
    TimedOut,
    Interrupted,
    /// The worker died or broke the protocol; the message says how.
    Crashed(String),
}

/// A live worker process, leader of its own process group.
pub(super) struct WorkerProc {
    child: Child,
    stdin: ChildStdin,
    frames: FrameReader,
    pid: i32,
    /// Set once the leader is reaped.
    status: Option<io::Result<ExitStatus>>,
}

impl WorkerProc {
    pub(super) fn spawn(args: &[OsString], level: &AtomicU8) -> Result<Self, SpawnError> {
        let exe = std::env::current_exe().map_err(SpawnError::Exe)?;
        let mut child = Command::new(&exe)
            .args(args)
            .env(WORKER_ENV, PROTOCOL.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(|source| SpawnError::Spawn { exe, source })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut worker = WorkerProc {
            pid: child.id() as i32,
            child,
            stdin,
            frames: FrameReader::new(File::from(OwnedFd::from(stdout))),
            status: None,
        };
        // On error `worker` drops here: killed and reaped.
        worker.handshake(level)?;
        Ok(worker)
    }

    fn handshake(&mut self, level: &AtomicU8) -> Result<(), SpawnError> {
        let limit = Instant::now() + HANDSHAKE_LIMIT;
        loop {
            let wake = (Instant::now() + TICK).min(limit);
            match self.frames.next::<FromWorker>(Some(wake)) {
                Ok(Some(FromWorker::Hello(hello))) if hello.protocol == PROTOCOL => return Ok(()),
                Ok(Some(FromWorker::Hello(hello))) => {
                    return Err(SpawnError::Protocol(hello.protocol))
                }
                Ok(Some(other)) => {
                    return Err(SpawnError::Handshake(ChannelError::Io(io::Error::other(
                        format!("expected a hello, got {other:?}"),
                    ))))
                }
                Ok(None) if level.load(Ordering::SeqCst) != RUNNING => {
                    return Err(SpawnError::Interrupted)
                }
                Ok(None) if Instant::now() >= limit => return Err(SpawnError::Silent),
                Ok(None) => {}
                Err(e) => return Err(SpawnError::Handshake(e)),
            }
        }
    }

    /// Runs one attempt: sends the request, streams results to `sink`, enforces `deadline`
    /// and follows the run's cancellation `level`.
    pub(super) fn run(
        &mut self,
        job: &Job,
        checkpoint: Option<&std::path::Path>,
        sink: &dyn ResultSink,
        deadline: Option<Instant>,
        level: &AtomicU8,
    ) -> Ended {
        let request = ToWorkerRef::Run(RunRef {
            id: 0,
            task: &job.name,
            attempt: job.attempt,
            shared: job.shared(),
            timeout_ms: job.timeout.map(|t| t.as_millis() as u64),
            grace_ms: 0,
            outputs: &[],
            checkpoint,
            checkpoint_key: None,
        });
        match channel::send(&mut self.stdin, &request) {
            Ok(()) => {}
            // Nothing was sent: the worker is still clean, the attempt is an error.
            Err(e @ (ChannelError::TooLarge { .. } | ChannelError::Encode(_))) => {
                return Ended::Done(
                    Attempt::new(Outcome::Error)
                        .message(format!("cannot send the shared state: {}", chain(&e))),
                )
            }
            Err(_) => return Ended::Crashed(self.crash_message()),
        }
        let mut kill_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let wake = [Some(now + TICK), deadline, kill_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now);
            match self.frames.next::<FromWorker>(Some(wake)) {
                Ok(Some(FromWorker::Result {
                    status, message, ..
                })) => sink.result(status, message),
                Ok(Some(FromWorker::Done {
                    outcome,
                    message,
                    exports,
                    suspend,
                    ..
                })) => {
                    let mut attempt = Attempt::new(outcome);
                    attempt.message = message;
                    attempt.exports = exports;
                    attempt.suspend = suspend;
                    return Ended::Done(attempt);
                }
                Ok(Some(FromWorker::Beat) | None) => {}
                Ok(Some(other)) => {
                    return Ended::Crashed(format!("worker protocol error: unexpected {other:?}"))
                }
                Err(ChannelError::Closed) if kill_at.is_some() => return Ended::Interrupted,
                Err(ChannelError::Closed) => return Ended::Crashed(self.crash_message()),
                Err(e) => return Ended::Crashed(format!("worker protocol error: {}", chain(&e))),
            }
            let now = Instant::now();
            match level.load(Ordering::SeqCst) {
                TERMINATING if kill_at.is_none() => {
                    // SAFETY: kill(2) touches no memory; the worker is our unreaped child.
                    unsafe { libc::kill(self.pid, libc::SIGUSR1) };
                    kill_at = Some(now + CANCEL_GRACE);
                }
                KILLING => return Ended::Interrupted,
                _ => {}
            }
            if deadline.is_some_and(|d| now >= d) {
                return Ended::TimedOut;
            }
            if kill_at.is_some_and(|k| now >= k) {
                return Ended::Interrupted;
            }
        }
    }

    /// After the channel closed mid-attempt: reaps the worker and says how it died.
    fn crash_message(&mut self) -> String {
        match self.reap() {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => format!("the worker process exited with code {code}"),
                (None, Some(signal)) => format!(
                    "the worker process was killed by signal {}",
                    procs::signal_name(signal)
                ),
                (None, None) => format!("the worker process ended abnormally: {status}"),
            },
            Err(e) => format!("the worker process vanished: {e}"),
        }
    }

    /// SIGKILL to the whole group (the leader is not reaped yet, so the group id is pinned),
    /// then reaps the leader and whatever of the group is ours to reap. Idempotent.
    fn reap(&mut self) -> io::Result<ExitStatus> {
        if self.status.is_none() {
            procs::signal_group(self.pid, libc::SIGKILL);
            self.status = Some(self.child.wait());
            procs::drain_group(self.pid);
        }
        match self.status.as_ref().expect("reaped above") {
            Ok(status) => Ok(*status),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// Ends the worker and reaps it (see [`Drop`]).
    pub(super) fn end(self) {
        drop(self);
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.reap();
    }
}

pub(super) fn spawn_error_message(e: &SpawnError) -> String {
    chain(e)
}
