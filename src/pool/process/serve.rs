//! The worker side of the process pool, re-exported as [`crate::worker`].
//!
//! A worker is the embedding binary re-executed with `PEXEN_WORKER` set in its environment. Its
//! `main` calls [`serve_if_worker`] first, which rebuilds the task set with the same function
//! the scheduler side used and serves attempts addressed by task name: no code travels.
//!
//! ```no_run
//! use pexen::{PoolKind, Scheduler, Task};
//!
//! fn tasks() -> Vec<Task> {
//!     vec![Task::closure("risky", |_ctx| Ok(())).pool(PoolKind::Processes)]
//! }
//!
//! fn main() {
//!     // Returns at once in the scheduler; never returns in a worker.
//!     pexen::worker::serve_if_worker(tasks);
//!     for event in Scheduler::builder().build().run(tasks()).unwrap() {
//!         println!("{event:?}");
//!     }
//! }
//! ```

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use signal_hook::iterator::Signals;
use thiserror::Error;

use crate::context::{Cancellation, Context, ResultSink};
use crate::pool::panic_message;
use crate::protocol::{
    self as channel, ChannelError, FrameReader, FromWorker, Hello, RunOwned, ToWorker, PROTOCOL,
};
use crate::task::{Outcome, Task, TaskFn, TaskName, Work};

/// The environment variable that makes a process a worker; its value is the protocol version
/// the scheduler speaks.
pub const WORKER_ENV: &str = "PEXEN_WORKER";

/// Why a worker stopped serving.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot set up the worker's descriptors")]
    Setup(#[source] io::Error),
    #[error("the scheduler asked for protocol {asked}, this worker speaks {PROTOCOL}")]
    Protocol { asked: String },
    #[error("the channel to the scheduler failed: {0}")]
    Channel(String),
}

impl From<ChannelError> for ServeError {
    fn from(e: ChannelError) -> Self {
        let mut message = e.to_string();
        if let Some(source) = std::error::Error::source(&e) {
            message = format!("{message}: {source}");
        }
        ServeError::Channel(message)
    }
}

/// Serves as a worker process when this process was started as one, else returns at once.
///
/// Call it first thing in `main`, before any thread is started or anything is printed. In a
/// worker it builds the task set with `build`, serves attempts until the scheduler closes the
/// channel, and exits the process (code 0, or 101 with a message on stderr when the channel
/// broke); it never returns there. Tasks are found by name, so `build` must return every task
/// that may run in a process (it may return more; their metadata is ignored here).
///
/// A binary with several task sets passes [`crate::SchedulerBuilder::worker_args`] and uses
/// [`serve_if_worker_with_args`], whose `build` receives them.
pub fn serve_if_worker<F: FnOnce() -> Vec<Task>>(build: F) {
    serve_if_worker_with_args(|_| build());
}

/// [`serve_if_worker`], with `build` given the arguments the scheduler started the worker
/// with ([`crate::SchedulerBuilder::worker_args`], without the program name), so that it
/// rebuilds the task set they name without parsing `std::env::args` itself.
///
/// ```no_run
/// use std::ffi::OsString;
/// use pexen::{PoolKind, Scheduler, Task};
///
/// fn suite(name: &str) -> Vec<Task> {
///     let task = Task::closure(format!("{name}/risky"), |_ctx| Ok(()));
///     vec![task.pool(PoolKind::Processes)]
/// }
///
/// fn main() {
///     pexen::worker::serve_if_worker_with_args(|args: &[OsString]| {
///         suite(&args[0].to_string_lossy())
///     });
///     let scheduler = Scheduler::builder().worker_args(["smoke"]).build();
///     for event in scheduler.run(suite("smoke")).unwrap() {
///         println!("{event:?}");
///     }
/// }
/// ```
pub fn serve_if_worker_with_args<F: FnOnce(&[OsString]) -> Vec<Task>>(build: F) {
    let Some(asked) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    if asked == crate::host::serve::HOST_WORKER {
        // Started on a host (over ssh, or as a TLS daemon): `BIN worker ... [-- ARGS]`.
        std::env::remove_var(WORKER_ENV);
        let all: Vec<OsString> = std::env::args_os().collect();
        let split = all.iter().position(|a| a == "--");
        let (line, args) = match split {
            Some(i) => (all[..i].to_vec(), all[i + 1..].to_vec()),
            None => (all, Vec::new()),
        };
        std::process::exit(crate::host::serve::serve_embedded(line, build(&args)));
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let build = move || build(&args);
    // Not inherited by what the tasks spawn: a nested scheduler must not think it is a worker.
    std::env::remove_var(WORKER_ENV);
    let code = match serve(&asked.to_string_lossy(), build) {
        Ok(()) => 0,
        Err(e) => {
            // Not `eprintln!`: a closed stderr must not turn this exit into a panic.
            let _ = writeln!(io::stderr(), "pexen worker {}: {e}", std::process::id());
            101
        }
    };
    std::process::exit(code);
}

fn serve<F: FnOnce() -> Vec<Task>>(asked: &str, build: F) -> Result<(), ServeError> {
    let (input, output) = take_channel_fds().map_err(ServeError::Setup)?;
    // SAFETY: PR_SET_PDEATHSIG takes an integer; it makes a worker die with its scheduler
    // (whose threads block on this worker) instead of running on as an orphan.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let cancelled = Arc::new(Cancellation::new());
    // The scheduler's cooperative cancellation is SIGUSR1. A thread turns it into the
    // cancellation `is_cancelled` reads, and wakes the tasks blocked in `wait_cancelled` (a
    // signal handler can do neither safely).
    let mut signals = Signals::new([libc::SIGUSR1]).map_err(ServeError::Setup)?;
    let raise = cancelled.clone();
    std::thread::Builder::new()
        .name("pexen-cancel".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                raise.cancel();
            }
        })
        .map_err(ServeError::Setup)?;

    let out = Mutex::new(BufWriter::new(output));
    channel::send(&mut *lock(&out), &FromWorker::Hello(Hello::new(None)))?;
    if asked != PROTOCOL.to_string() {
        return Err(ServeError::Protocol {
            asked: asked.to_owned(),
        });
    }

    let tasks: HashMap<TaskName, Arc<TaskFn>> = build()
        .into_iter()
        .filter_map(|t| match t.work {
            Work::Closure(f) => Some((t.name, f)),
            Work::Command(_) => None,
        })
        .collect();
    let mut input = FrameReader::new(input);
    loop {
        let run: RunOwned = match input.next(None) {
            Ok(Some(ToWorker::Run(run))) => run,
            // Cancellation reaches process workers as SIGUSR1; end of frames: read on.
            Ok(Some(ToWorker::Cancel { .. }) | None) => continue,
            Ok(Some(other)) => {
                return Err(ServeError::Channel(format!(
                    "unexpected message for a process worker: {other:?}"
                )))
            }
            // The scheduler closed the channel: the run is over.
            Err(ChannelError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let reply = match tasks.get(&run.task) {
            Some(f) => run_one(f.as_ref(), &run, &out, &cancelled),
            None => done(
                Outcome::Error,
                Some(format!(
                    "task `{}` is not in the worker's task set: the function given to \
                     `serve_if_worker` must build it",
                    run.task
                )),
                crate::context::Shared::new(),
            ),
        };
        let mut out = lock(&out);
        match channel::send(&mut *out, &reply) {
            // Exports over the frame limit: the task's error, not the worker's end.
            Err(ChannelError::TooLarge { len }) => channel::send(
                &mut *out,
                &done(
                    Outcome::Error,
                    Some(format!(
                        "the attempt's exports take {len} bytes, over the channel's limit of \
                         {} bytes",
                        channel::MAX_FRAME
                    )),
                    crate::context::Shared::new(),
                ),
            )?,
            other => other?,
        }
    }
}

fn run_one(
    f: &TaskFn,
    run: &RunOwned,
    out: &Mutex<BufWriter<File>>,
    cancelled: &Cancellation,
) -> FromWorker {
    let deadline = run
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let sink = FrameSink { out };
    let ctx = Context::new(
        &run.task,
        run.attempt,
        &run.shared,
        &sink,
        cancelled,
        deadline,
    )
    .with_checkpoint(run.checkpoint.as_deref());
    match catch_unwind(AssertUnwindSafe(|| f(&ctx))) {
        Ok(Ok(())) => done(Outcome::Pass, None, ctx.into_exports()),
        Ok(Err(e)) => {
            let mut reply = done(e.status, Some(e.message), crate::context::Shared::new());
            if let FromWorker::Done { suspend, .. } = &mut reply {
                *suspend = e.suspend;
            }
            reply
        }
        Err(panic) => done(
            Outcome::Error,
            Some(format!("panicked: {}", panic_message(&*panic))),
            crate::context::Shared::new(),
        ),
    }
}

/// The end of a closure attempt (no output, files or exit code: those are for commands).
fn done(outcome: Outcome, message: Option<String>, exports: crate::context::Shared) -> FromWorker {
    FromWorker::Done {
        id: 0,
        outcome,
        message,
        exports,
        suspend: false,
        exit_code: None,
        output: None,
        duration_ms: 0,
        files: Vec::new(),
        checkpoint: None,
        checkpoint_files: Vec::new(),
    }
}

/// Streams `ctx.report` results to the scheduler as frames, as they happen.
struct FrameSink<'a> {
    out: &'a Mutex<BufWriter<File>>,
}

impl ResultSink for FrameSink<'_> {
    fn result(&self, status: Outcome, message: String) {
        // A broken channel ends the worker at its next frame; nothing to do for a result.
        let _ = channel::send(
            &mut *lock(self.out),
            &FromWorker::Result {
                id: 0,
                status,
                message,
            },
        );
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Moves the channel off fds 0 and 1: a task that reads stdin gets end of file, and what it
/// prints to stdout goes to stderr instead of corrupting the frames. The channel descriptors
/// are close-on-exec, so commands a task runs do not hold the channel open.
pub(crate) fn take_channel_fds() -> io::Result<(File, File)> {
    let input = dup_cloexec(0)?;
    let output = dup_cloexec(1)?;
    // SAFETY: dup2 and open take plain integers and a NUL-terminated path.
    unsafe {
        if libc::dup2(2, 1) < 0 {
            return Err(io::Error::last_os_error());
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null < 0 || libc::dup2(null, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::close(null);
        // SAFETY: `input` and `output` are fresh descriptors that nothing else owns.
        Ok((File::from_raw_fd(input), File::from_raw_fd(output)))
    }
}

fn dup_cloexec(fd: RawFd) -> io::Result<RawFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes integers and returns a new descriptor or -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(new)
    }
}
