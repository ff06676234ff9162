//! The worker side of a host: `pexen worker --stdio`, started by a scheduler over ssh.
//!
//! It says hello, receives the tree (only the files it lacks), loads it with the factory, and
//! runs command attempts **by task name** with the same `CommandRunner` as local runs
//! (process groups, capture, streamed results, exports, TERM/grace/KILL): at most the host's
//! `jobs` at once, on as many threads, the others queued in the order they came (each says
//! `Started` when it really starts). A `Beat` every few seconds tells the scheduler it is alive. When the
//! scheduler goes away (end of file on stdin: the run ended, the connection dropped, the
//! scheduler was killed), every running task's group is killed before the worker exits.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use thiserror::Error;

use super::{checkpoint, tree};
use crate::context::{ResultSink, Shared};
use crate::pool::command::{CommandConfig, CommandJob, CommandRunner};
use crate::protocol::{
    self, ChannelError, FileEntry, FrameReader, FromWorker, Hello, RunOwned, ToWorker,
};
use crate::task::{CommandSpec, Outcome, TaskFn, TaskName, Work};

/// Why a worker stopped serving.
#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("cannot set up the worker's descriptors")]
    Setup(#[source] io::Error),
    #[error("cannot hash this program's executable")]
    Hash(#[source] io::Error),
    #[error("the connection to the scheduler failed")]
    Channel(#[source] ChannelError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("cannot prepare the tree at {}", path.display())]
    Tree {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<ChannelError> for WorkerError {
    fn from(e: ChannelError) -> Self {
        WorkerError::Channel(e)
    }
}

/// `$XDG_CACHE_HOME/pexen` or `~/.cache/pexen`: binaries by hash and synced trees.
pub(crate) fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("pexen")
}

/// This program's executable as a path that stays this program's while it runs: on Linux
/// `/proc/self/exe`, which opens the running file even after `cargo build` or a package
/// upgrade has replaced (or removed) the file at its path; elsewhere the path it was started
/// from.
pub(crate) fn running_exe() -> io::Result<PathBuf> {
    let proc = PathBuf::from("/proc/self/exe");
    if std::fs::metadata(&proc).is_ok() {
        return Ok(proc);
    }
    std::env::current_exe()
}

/// The blake3 hash of this program's executable, computed once.
pub(crate) fn self_hash() -> io::Result<String> {
    static HASH: OnceLock<Result<String, String>> = OnceLock::new();
    HASH.get_or_init(|| {
        let exe = running_exe().map_err(|e| e.to_string())?;
        let bytes = std::fs::read(&exe).map_err(|e| format!("{}: {e}", exe.display()))?;
        Ok(blake3::hash(&bytes).to_hex().to_string())
    })
    .clone()
    .map_err(io::Error::other)
}

/// The blake3 hash of this program's executable, remembered across runs in the cache under
/// the file's identity (device, inode, size, modification time), so that a controller does
/// not read its whole executable at every run.
pub(crate) fn self_hash_cached() -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(running_exe()?)?;
    let key = format!(
        "{}-{}-{}-{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    );
    let file = cache_dir().join("self").join(key);
    if let Ok(h) = std::fs::read_to_string(&file) {
        if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(h);
        }
    }
    let h = self_hash()?;
    // Best effort: without the cache, the next run hashes again.
    if let Some(dir) = file.parent() {
        if std::fs::create_dir_all(dir).is_ok() {
            let _ = tree::write_file(
                dir,
                &file.file_name().unwrap_or_default().to_string_lossy(),
                0o600,
                h.as_bytes(),
            );
        }
    }
    Ok(h)
}

/// `pexen worker --verify HASH`: whether this executable's content has that hash (the check
/// of an uploaded binary before it is moved into place).
pub fn verify(hash: &str) -> bool {
    self_hash().is_ok_and(|h| h == hash)
}

pub(crate) type Out = Arc<Mutex<BufWriter<File>>>;

/// The value of [`crate::worker::WORKER_ENV`] that makes an embedding binary a host worker:
/// `serve_if_worker` then runs `BIN worker ...` as `pexen worker ...` does, serving the
/// closures its `build` function returns besides the commands of the synced tree.
pub const HOST_WORKER: &str = "host";

/// Closure tasks this process serves as a host worker (set by `serve_if_worker`).
static CLOSURES: OnceLock<HashMap<TaskName, Arc<TaskFn>>> = OnceLock::new();

/// Serves `tasks`' closures as a host worker: `args` is the command line (`BIN worker
/// --stdio ...` or `BIN worker --listen ...`), handled as `pexen worker` handles it. Returns
/// the exit code.
pub(crate) fn serve_embedded(args: Vec<std::ffi::OsString>, tasks: Vec<crate::Task>) -> i32 {
    let closures = tasks
        .into_iter()
        .filter_map(|t| match t.work {
            Work::Closure(f) => Some((t.name, f)),
            Work::Command(_) => None,
        })
        .collect();
    let _ = CLOSURES.set(closures);
    // Only the `worker` command: an embedding binary is no `pexen`.
    let is_worker = args.get(1).is_some_and(|a| a == "worker");
    if !is_worker {
        let _ = writeln!(
            io::stderr(),
            "{}={HOST_WORKER}: expected `worker --stdio`, `worker --listen ADDR ...` or `worker --verify HASH`",
            crate::worker::WORKER_ENV
        );
        return 2;
    }
    crate::cli::main_with_args(args)
}

/// Signals that end processes, sent by whoever ends a whole worker (see [`exit_on_signals`]).
const ENDING_SIGNALS: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGKILL];

/// How long an attempt ended by one of [`ENDING_SIGNALS`] that pexen did not send (or exiting
/// with 128 + one of them, as a shell whose child was killed does) waits to be reported, in case
/// the worker itself is being ended by the same hand.
const EXTERNAL_KILL_GRACE: Duration = Duration::from_secs(1);

/// Every connection this process serves, so that a signal can end the tasks of each.
static SERVED: Mutex<Vec<Weak<State>>> = Mutex::new(Vec::new());

/// Makes SIGTERM, SIGINT and SIGHUP (Slurm's `scancel`, a Ctrl-C, the ssh session or terminal
/// going away) end this worker process only after the process group of every task it runs was
/// killed: tasks run in groups of their own, so the default action would leave them running,
/// and the scheduler would start their attempts again elsewhere. What the connections already
/// carry (the end of an attempt that finished just before) still reaches the scheduler: each
/// connection is closed in order, and the process exits once they are all served out (at most
/// `DRAIN_LIMIT`, 3 s), with 128 + the signal.
pub fn exit_on_signals() -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("pexen-worker-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let served: Vec<Arc<State>> =
                    lock(&SERVED).iter().filter_map(Weak::upgrade).collect();
                let _ = writeln!(
                    io::stderr(),
                    "pexen worker: {}: ending {} connection(s) and their tasks",
                    crate::pool::command::procs::signal_name(signal),
                    served.len()
                );
                for state in &served {
                    state.end();
                }
                drop(served);
                let until = std::time::Instant::now() + DRAIN_LIMIT;
                while lock(&SERVED).iter().any(|s| s.strong_count() > 0)
                    && std::time::Instant::now() < until
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

/// How long a worker ending on a signal waits for its connections to carry what they hold.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves one scheduler over stdin/stdout until it closes the connection.
///
/// `group_file`: where to keep the process groups of running tasks (see
/// [`CommandConfig::group_file`]).
///
/// `binary`: this executable's hash when the one who started it knows it (the bootstrap
/// script found it under that hash, verified when it was uploaded); otherwise it is computed.
pub fn serve_stdio(group_file: Option<PathBuf>, binary: Option<String>) -> Result<(), WorkerError> {
    let (input, output) =
        crate::pool::process::serve::take_channel_fds().map_err(WorkerError::Setup)?;
    let started_by_script = group_file.is_some();
    let served = serve(input, output, group_file, None, binary);
    if started_by_script {
        sweep_session();
    }
    served
}

/// Kills every other process group of this worker's session, when that session is the one its
/// own group leads (the bootstrap script's, under sshd): the groups of its tasks and any group
/// a task made itself. The script's `z` does the same when the worker is killed; a worker that
/// ends by itself does it here, which is quicker than `awk` over `/proc`, and exits 0 only
/// after it (the script then skips its own sweep).
fn sweep_session() {
    // SAFETY: getsid(2) and getpgrp(2) only read.
    let (session, own) = unsafe { (libc::getsid(0), libc::getpgrp()) };
    if session != own {
        return;
    }
    let groups: std::collections::BTreeSet<i32> = crate::state::live::all_processes()
        .into_iter()
        .filter(|p| p.session == session && p.pgrp > 0 && p.pgrp != own)
        .map(|p| p.pgrp)
        .collect();
    for group in groups {
        // SAFETY: kill(2) with a negative process group id and a signal.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

/// What a daemon announces of itself in its hello (`--jobs`, `--tag`, `--capacity`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Offer {
    /// Replaces the CPU count (the `jobs` of a host whose spec gives none).
    pub jobs: Option<usize>,
    pub tags: Vec<String>,
    pub capacity: std::collections::BTreeMap<String, u32>,
}

/// Serves one scheduler over `input` and `output` (stdin and stdout, or the pipes of a TLS
/// connection) until it closes the connection. `jobs` replaces the CPU count in the hello
/// (a daemon's `--jobs`).
pub(crate) fn serve(
    input: File,
    output: File,
    group_file: Option<PathBuf>,
    jobs: Option<usize>,
    binary: Option<String>,
) -> Result<(), WorkerError> {
    let offer = Offer {
        jobs,
        ..Offer::default()
    };
    serve_offer(input, output, group_file, &offer, binary)
}

/// [`serve`], announcing `offer` in the hello.
pub(crate) fn serve_offer(
    input: File,
    output: File,
    group_file: Option<PathBuf>,
    offer: &Offer,
    binary: Option<String>,
) -> Result<(), WorkerError> {
    let hash = match binary {
        Some(h) => h,
        None => self_hash_cached().map_err(WorkerError::Hash)?,
    };
    let out: Out = Arc::new(Mutex::new(BufWriter::new(output)));
    let mut hello = Hello::new(Some(hash));
    if let Some(jobs) = offer.jobs {
        hello.cpus = jobs;
    }
    hello.tags.clone_from(&offer.tags);
    hello.capacity.clone_from(&offer.capacity);
    protocol::send(&mut *lock(&out), &FromWorker::Hello(hello))?;
    let mut input = FrameReader::new(input);

    let first = input.next(None)?;
    // A teleported run (SPEC 12) instead of attempts: same bootstrap, same hello.
    if let Some(ToWorker::Teleport(request)) = first {
        return crate::teleport::agent::serve(input, &out, request);
    }
    let Some(ToWorker::Tree {
        host,
        key,
        shared_root,
        mut manifest,
        manifest_hash,
        deferred,
        jobs,
    }) = first
    else {
        return Err(WorkerError::Protocol("expected the tree first".into()));
    };
    let root = if let Some(r) = &shared_root {
        PathBuf::from(r)
    } else {
        let safe = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric());
        if !safe {
            return Err(WorkerError::Protocol(format!("bad tree key `{key}`")));
        }
        cache_dir().join("trees").join(&key)
    };
    if shared_root.is_none() {
        let synced = receive_tree(
            &mut input,
            &out,
            &root,
            &mut manifest,
            &manifest_hash,
            deferred,
        );
        if let Err(e) = synced {
            let message = match &e {
                WorkerError::Tree { path, source } => {
                    format!("cannot write the tree at {}: {source}", path.display())
                }
                other => other.to_string(),
            };
            protocol::send(&mut *lock(&out), &FromWorker::Refused { message })?;
            return Err(e);
        }
    }
    let no_tree = shared_root.is_none() && manifest.is_empty();
    let loaded = if no_tree {
        // An embedder's run without a tree: closures only.
        Ok(Vec::new())
    } else {
        crate::factory::load(&root).map(|t| t.tasks)
    };
    let tasks: HashMap<TaskName, Arc<CommandSpec>> = match loaded {
        Ok(tasks) => tasks
            .into_iter()
            .filter_map(|t| match t.work {
                Work::Command(spec) => Some((t.name, spec)),
                Work::Closure(_) => None,
            })
            .collect(),
        Err(e) => {
            let message = format!(
                "the tree at {} does not load on this host: {e}",
                root.display()
            );
            protocol::send(&mut *lock(&out), &FromWorker::Refused { message })?;
            return Ok(());
        }
    };
    protocol::send(
        &mut *lock(&out),
        &FromWorker::Ready {
            root: root.to_string_lossy().into_owned(),
            tasks: tasks.len() + CLOSURES.get().map_or(0, HashMap::len),
        },
    )?;

    let state = Arc::new(State {
        out: out.clone(),
        host,
        root,
        tasks,
        runner: OnceLock::new(),
        closed: AtomicBool::new(false),
        group_file,
        cancelled: crate::context::Cancellation::new(),
        synced: Mutex::new(HashMap::new()),
        copies: checkpoint::HostCopies::default(),
        held: Held::default(),
    });
    {
        let mut served = lock(&SERVED);
        served.retain(|s| s.strong_count() > 0);
        served.push(Arc::downgrade(&state));
    }
    // `Held::stop` ends the beat thread at once (not at its next beat): the worker exits, and
    // the scheduler's run ends, as soon as the connection is served out.
    let beat = {
        let state = state.clone();
        std::thread::spawn(move || beat(&state))
    };
    let jobs = if jobs == 0 { offer_cpus(offer) } else { jobs };
    let queue = Arc::new(Queue {
        hold_while: jobs + 1,
        ..Queue::default()
    });
    let mut runners: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let result = loop {
        match input.next::<ToWorker>(None) {
            Ok(Some(ToWorker::Run(run))) => {
                let mut q = lock(&queue.state);
                if q.cancelled {
                    // Sent after the cancel crossed it: never started.
                    drop(q);
                    let dropped = FromWorker::Dropped { id: run.id };
                    if let Err(e) = protocol::send(&mut *lock(&out), &dropped) {
                        break Err(e.into());
                    }
                    continue;
                }
                q.queued.push_back(run);
                if q.queued.len() > q.idle && runners.len() < jobs {
                    let (state, queue) = (state.clone(), queue.clone());
                    runners.push(std::thread::spawn(move || queue.serve(&state)));
                } else {
                    queue.ready.notify_one();
                }
            }
            Ok(Some(ToWorker::Cancel { kill })) => {
                let dropped: Vec<u64> = {
                    let mut q = lock(&queue.state);
                    q.cancelled = true;
                    q.queued.drain(..).map(|r| r.id).collect()
                };
                state.cancelled.cancel();
                if let Some(Ok(runner)) = state.runner.get() {
                    if kill {
                        runner.kill_all();
                    } else {
                        runner.terminate_all();
                    }
                }
                let mut o = lock(&out);
                let sent = dropped
                    .into_iter()
                    .try_for_each(|id| protocol::send(&mut *o, &FromWorker::Dropped { id }));
                if let Err(e) = sent {
                    break Err(e.into());
                }
            }
            Ok(Some(ToWorker::Unqueue { id })) => {
                // Under the queue's lock: a runner either took it (and says it started) or
                // never will.
                let mut q = lock(&queue.state);
                let Some(at) = q.queued.iter().position(|r| r.id == id) else {
                    continue;
                };
                q.queued.remove(at);
                drop(q);
                if let Err(e) = protocol::send(&mut *lock(&out), &FromWorker::Dropped { id }) {
                    break Err(e.into());
                }
            }
            Ok(Some(ToWorker::File { path, mode, size })) => {
                // An output of another host's task, for a dependent that runs here.
                let bytes = input.next_file(None, size)?.unwrap_or_default();
                if bytes.len() as u64 != size {
                    break Err(WorkerError::Protocol(format!("{path}: size mismatch")));
                }
                if let Err(source) = tree::write_file(&state.root, &path, mode, &bytes) {
                    break Err(WorkerError::Tree {
                        path: state.root.join(&path),
                        source,
                    });
                }
            }
            Ok(Some(ToWorker::Checkpoint { id, key, files })) => {
                // Comparing a large copy takes a second per gigabyte it has not hashed yet: not
                // on this thread, which reads the frames of every attempt. The scheduler sends
                // this copy's files only once it has the answer.
                let state = state.clone();
                std::thread::spawn(move || {
                    let need = FromWorker::CheckpointNeed {
                        id,
                        paths: state.checkpoint_arrives(&key, &files),
                    };
                    // A broken connection ends the serving loop, which notices it itself.
                    let _ = protocol::send(&mut *lock(&state.out), &need);
                });
            }
            Ok(Some(ToWorker::CheckpointFile {
                key,
                path,
                mode,
                size,
            })) => {
                let bytes = input.next_file(None, size)?.unwrap_or_default();
                if bytes.len() as u64 != size {
                    break Err(WorkerError::Protocol(format!("{path}: size mismatch")));
                }
                state.checkpoint_file(&key, &path, mode, &bytes);
            }
            Ok(Some(ToWorker::ForgetCheckpoint { key })) => state.copies.forget(&key),
            Ok(Some(other)) => break Err(WorkerError::Protocol(format!("unexpected {other:?}"))),
            Ok(None) => {}
            // The scheduler is gone: the run is over, or the connection dropped.
            Err(ChannelError::Closed) => break Ok(()),
            Err(e) => break Err(e.into()),
        }
    };
    state.closed.store(true, Ordering::SeqCst);
    state.held.stop();
    {
        // Queued attempts never start; idle runners exit.
        let mut q = lock(&queue.state);
        q.closed = true;
        q.queued.clear();
        queue.ready.notify_all();
    }
    // Nothing may outlive the connection: kill every running task's group.
    if let Some(Ok(runner)) = state.runner.get() {
        runner.kill_all();
    }
    for h in runners {
        let _ = h.join();
    }
    state.copies.flush();
    let _ = beat.join();
    result
}

/// The CPUs a worker announces (`--jobs` of a daemon, else this machine's).
fn offer_cpus(offer: &Offer) -> usize {
    offer
        .jobs
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
        .max(1)
}

/// The attempts a scheduler sent: at most `jobs` run at once, each on one of as many runner
/// threads (started as needed); the rest wait here in the order they came. A scheduler keeps
/// a few more in flight than `jobs`, so that a slot that frees starts the next attempt at once
/// instead of after a round trip to the scheduler.
#[derive(Default)]
struct Queue {
    state: Mutex<Waiting>,
    ready: std::sync::Condvar,
    /// While at least this many attempts wait here, the end of an attempt is held back (see
    /// [`Queue::serve`]).
    hold_while: usize,
}

#[derive(Default)]
struct Waiting {
    queued: std::collections::VecDeque<RunOwned>,
    /// Runner threads waiting for an attempt.
    idle: usize,
    /// A cancel came: queued attempts were dropped, and any that come after are.
    cancelled: bool,
    /// The connection ended: runners exit.
    closed: bool,
}

impl Queue {
    /// A runner thread: takes the oldest queued attempt, says it starts, runs it, and so on
    /// until the connection ends. The end of an attempt and the start of the next one queued
    /// go out in one write (one packet through ssh or TLS instead of two). While more than
    /// `jobs` attempts still wait here (the scheduler queues ahead on a host of short
    /// attempts), that write is held back for the ends that follow, [`HOLD_LIMIT`] at most:
    /// ends travel several to a packet, the scheduler's `Run`s for them too, and the queue
    /// still holds work for the round trip.
    fn serve(&self, state: &State) {
        let mut next = None;
        loop {
            let run = if let Some(run) = next.take() {
                run
            } else {
                let mut q = lock(&self.state);
                loop {
                    if q.closed {
                        return;
                    }
                    if !q.queued.is_empty() {
                        break;
                    }
                    q.idle += 1;
                    q = self.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
                    q.idle -= 1;
                }
                let run = q.queued.pop_front().expect("checked above");
                // Under the queue's lock: a cancel either dropped this attempt or comes
                // after its start (and then ends it as it ends every running attempt).
                let mut out = lock(&state.out);
                if started(&mut out, run.id)
                    .and_then(|()| flush(&mut out))
                    .is_err()
                {
                    return;
                }
                run
            };
            let (done, blobs) = state.attempt(&run);
            let mut q = lock(&self.state);
            next = if q.closed { None } else { q.queued.pop_front() };
            let mut out = lock(&state.out);
            // Closed: the connection ended, or a signal ends this worker and killed the task,
            // whose attempt the scheduler puts back in its queue; it must not read this end as
            // an outcome.
            if state.closed.load(Ordering::SeqCst) {
                return;
            }
            let sent = protocol::send_unflushed(&mut *out, &done)
                .and_then(|()| {
                    blobs
                        .iter()
                        .try_for_each(|blob| protocol::send_file(&mut *out, blob))
                })
                .and_then(|()| next.as_ref().map_or(Ok(()), |n| started(&mut out, n.id)))
                .and_then(|()| {
                    if q.queued.len() >= self.hold_while {
                        state.held.hold();
                        Ok(())
                    } else {
                        state.held.flushed();
                        flush(&mut out)
                    }
                });
            drop(q);
            // A broken connection ends the worker's main loop, which ends the runners.
            if sent.is_err() {
                return;
            }
        }
    }
}

/// How long the end of an attempt may be held back for others to join its write (see
/// [`Queue::serve`]). Ends are held only while more attempts wait here than run, so the
/// worker has work for the time; a scheduler queues deep enough for this on a host of short
/// attempts (see `host::DEEP_PER_SLOT`). 3 000 `/bin/true` on a loopback ssh host: 2 ms and
/// three queued per slot sent about three ends to a packet, 4 ms and eight about ten; the
/// scheduler's reader woke as many times less, and ssh and sshd worked less.
const HOLD_LIMIT: Duration = Duration::from_millis(4);

/// Writes `Started` for attempt `id` (not flushed).
fn started(out: &mut BufWriter<File>, id: u64) -> Result<(), ChannelError> {
    protocol::send_unflushed(out, &FromWorker::Started { id })
}

fn flush(out: &mut BufWriter<File>) -> Result<(), ChannelError> {
    out.flush().map_err(ChannelError::Io)
}

/// Receives the tree of a `ToWorker::Tree` into `root`: the manifest if it was deferred and this
/// copy differs (`manifest` is then the tree's), then the files this copy lacks.
pub(crate) fn receive_tree(
    input: &mut FrameReader,
    out: &Out,
    root: &Path,
    manifest: &mut Vec<FileEntry>,
    manifest_hash: &str,
    deferred: bool,
) -> Result<(), WorkerError> {
    let have = receive_manifest(input, out, root, manifest, manifest_hash, deferred)?;
    if protocol::manifest_hash(manifest) != manifest_hash {
        return Err(WorkerError::Protocol(
            "the manifest does not match its hash".into(),
        ));
    }
    sync(input, out, root, manifest, have)
}

/// This host's copy of the tree at `root`: its manifest (hashes reused by size, inode and
/// modification time from the index beside it).
fn own_manifest(root: &Path) -> Result<Vec<FileEntry>, WorkerError> {
    let tree_err = |source| WorkerError::Tree {
        path: root.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(root).map_err(tree_err)?;
    tree::manifest_cached(root, &root.with_extension("index.json")).map_err(tree_err)
}

/// For a deferred tree: compares this host's copy with the manifest's hash and asks for the
/// manifest only when they differ. Returns the copy's manifest, if it was read.
fn receive_manifest(
    input: &mut FrameReader,
    out: &Out,
    root: &Path,
    manifest: &mut Vec<FileEntry>,
    manifest_hash: &str,
    deferred: bool,
) -> Result<Option<Vec<FileEntry>>, WorkerError> {
    if !deferred {
        return Ok(None);
    }
    let mine = own_manifest(root)?;
    if protocol::manifest_hash(&mine) == manifest_hash {
        // Up to date: nothing is needed, nothing is removed.
        manifest.clone_from(&mine);
        return Ok(Some(mine));
    }
    protocol::send(&mut *lock(out), &FromWorker::SendManifest)?;
    loop {
        match input.next::<ToWorker>(None)? {
            Some(ToWorker::Manifest { manifest: m }) => {
                *manifest = m;
                return Ok(Some(mine));
            }
            Some(other) => {
                return Err(WorkerError::Protocol(format!(
                    "expected the manifest, got {other:?}"
                )))
            }
            None => {}
        }
    }
}

/// Receives the files of the manifest this host lacks; removes files that are not in it.
/// `have`: this host's copy's manifest, when already read.
fn sync(
    input: &mut FrameReader,
    out: &Out,
    root: &Path,
    manifest: &[FileEntry],
    have: Option<Vec<FileEntry>>,
) -> Result<(), WorkerError> {
    let have = match have {
        Some(h) => h,
        None => own_manifest(root)?,
    };
    let have: HashMap<String, FileEntry> = have.into_iter().map(|e| (e.path.clone(), e)).collect();
    let need: Vec<String> = manifest
        .par_iter()
        .filter(|want| {
            have.get(&want.path)
                .is_none_or(|h| h.hash != want.hash || h.mode != want.mode)
        })
        .map(|e| e.path.clone())
        .collect();
    protocol::send(&mut *lock(out), &FromWorker::Need { paths: need })?;
    loop {
        match input.next::<ToWorker>(None)? {
            Some(ToWorker::File { path, mode, size }) => {
                let bytes = input.next_file(None, size)?.unwrap_or_default();
                if bytes.len() as u64 != size {
                    return Err(WorkerError::Protocol(format!("{path}: size mismatch")));
                }
                tree::write_file(root, &path, mode, &bytes).map_err(|source| {
                    WorkerError::Tree {
                        path: root.join(&path),
                        source,
                    }
                })?;
            }
            Some(ToWorker::TreeDone) => break,
            Some(other) => {
                return Err(WorkerError::Protocol(format!(
                    "unexpected {other:?} during the tree sync"
                )))
            }
            None => {}
        }
    }
    // Mirror: a file removed from the tree must not linger as a task here.
    let wanted: HashSet<&str> = manifest.iter().map(|e| e.path.as_str()).collect();
    for rel in have.keys() {
        if !wanted.contains(rel.as_str()) {
            let _ = std::fs::remove_file(root.join(rel));
        }
    }
    Ok(())
}

/// The beat thread: flushes the ends runners held back, at the latest [`HOLD_LIMIT`] after
/// the first, and sends a `Beat` every [`protocol::BEAT`], until the connection ends.
fn beat(state: &State) {
    let mut next_beat = Instant::now() + protocol::BEAT;
    let mut h = lock(&state.held.state);
    loop {
        if h.stopped || state.closed.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let due = h.flush_at.is_some_and(|at| at <= now);
        if due || now >= next_beat {
            h.flush_at = None;
            drop(h);
            let mut out = lock(&state.out);
            let sent = if now >= next_beat {
                next_beat = now + protocol::BEAT;
                protocol::send(&mut *out, &FromWorker::Beat)
            } else {
                flush(&mut out)
            };
            drop(out);
            // A broken connection ends the serving loop, which stops this thread.
            if sent.is_err() {
                return;
            }
            h = lock(&state.held.state);
            continue;
        }
        let until = h.flush_at.map_or(next_beat, |at| at.min(next_beat));
        h = state
            .held
            .changed
            .wait_timeout(h, until - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

struct State {
    out: Out,
    host: String,
    root: PathBuf,
    tasks: HashMap<TaskName, Arc<CommandSpec>>,
    runner: OnceLock<Result<CommandRunner, String>>,
    closed: AtomicBool,
    group_file: Option<PathBuf>,
    /// Cooperative cancellation of the closures running here.
    cancelled: crate::context::Cancellation,
    /// Checkpoint copies brought up to date for the next attempt of their task (a
    /// `ToWorker::Checkpoint` came): key -> done, or why not (the attempt's error).
    synced: Mutex<HashMap<String, Result<(), String>>>,
    /// This host's copies of the checkpoints.
    copies: checkpoint::HostCopies,
    /// Ends written and not yet flushed (see [`Queue::serve`]); the beat thread flushes them.
    held: Held,
}

/// Ends of attempts held back so that several travel in one write, and the beat thread's
/// wake-up: it flushes them `HOLD_LIMIT` after the first, sends a `Beat` every
/// `protocol::BEAT`, and stops when told.
#[derive(Default)]
struct Held {
    state: Mutex<HeldState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct HeldState {
    /// When the ends held back must be flushed at the latest.
    flush_at: Option<Instant>,
    stopped: bool,
}

impl Held {
    /// Something was written and not flushed: flushed within [`HOLD_LIMIT`] at the latest.
    fn hold(&self) {
        let mut h = lock(&self.state);
        if h.flush_at.is_none() {
            h.flush_at = Some(Instant::now() + HOLD_LIMIT);
            drop(h);
            self.changed.notify_one();
        }
    }

    /// What was held is flushed (by a runner).
    fn flushed(&self) {
        lock(&self.state).flush_at = None;
    }

    fn stop(&self) {
        lock(&self.state).stopped = true;
        self.changed.notify_one();
    }
}

impl State {
    /// Ends this connection for a signal: no attempt's end is sent from now on (the scheduler
    /// puts the attempts back in its queue), every task's group is killed, and the connection
    /// is closed after what was already written to it, so that the serving loop ends.
    fn end(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.cancelled.cancel();
        if let Some(Ok(runner)) = self.runner.get() {
            runner.kill_all();
        }
        let mut out = lock(&self.out);
        let _ = out.flush();
        // Closes the connection's write end where the serving loop and the threads still hold
        // it: the descriptor now names /dev/null, so that later writes go nowhere.
        if let Ok(null) = File::options().write(true).open("/dev/null") {
            use std::os::fd::AsRawFd;
            // SAFETY: dup2(2) onto a descriptor this process owns (the writer's), from one it
            // just opened; the writer's descriptor stays valid, naming /dev/null.
            unsafe { libc::dup2(null.as_raw_fd(), out.get_ref().as_raw_fd()) };
        }
    }

    /// Runs an attempt; returns its `Done` and the raw frames that follow it.
    fn attempt(&self, run: &RunOwned) -> (FromWorker, Vec<Vec<u8>>) {
        let sink = FrameSink {
            out: &self.out,
            id: run.id,
            worst: Mutex::new(None),
        };
        let done = self.prepare_checkpoint(run).and_then(|given| {
            let dir = given.as_ref().map(|(dir, _)| dir.as_path());
            let mut ended = self.run_one(run, dir, &sink)?;
            if let Some((dir, Some((key, before)))) = given {
                let worst = *lock(&sink.worst);
                if checkpoint_end(
                    &dir,
                    &before,
                    &self.copies.hashes,
                    worst,
                    &mut ended.done,
                    &mut ended.blobs,
                ) {
                    self.copies.release(&key);
                }
            }
            Ok(ended)
        });
        match done {
            Ok(Ended {
                done,
                blobs,
                signal,
            }) => {
                if signal.is_some_and(|s| ENDING_SIGNALS.contains(&s)) {
                    // Killed from outside with a signal that ends processes: Slurm's `scancel`
                    // or a shutdown signals every process of the worker at once, and this task
                    // may have died before this worker got its own signal. Its attempt is then
                    // the scheduler's to put back in the queue, not a failure: give the worker
                    // the time to learn that it is ending before reporting.
                    self.cancelled
                        .wait(Some(std::time::Instant::now() + EXTERNAL_KILL_GRACE));
                }
                (done, blobs)
            }
            Err(message) => (
                FromWorker::Done {
                    id: run.id,
                    outcome: Outcome::Error,
                    message: Some(message),
                    exports: Shared::new(),
                    suspend: false,
                    exit_code: None,
                    output: None,
                    duration_ms: 0,
                    files: Vec::new(),
                    checkpoint: None,
                    checkpoint_files: Vec::new(),
                },
                Vec::new(),
            ),
        }
    }

    /// The checkpoint directory of attempt `run`: the controller's (`shared_fs`), or this
    /// host's copy, with its manifest as the attempt starts.
    fn prepare_checkpoint(&self, run: &RunOwned) -> Result<Option<Prepared>, String> {
        if let Some(dir) = &run.checkpoint {
            return Ok(Some((dir.clone(), None)));
        }
        let Some(key) = &run.checkpoint_key else {
            return Ok(None);
        };
        let synced = lock(&self.synced).remove(key);
        let (dir, existed) = self
            .copies
            .dir_telling(key)
            .map_err(|e| format!("cannot create the checkpoint directory here: {e}"))?;
        let before = match synced {
            Some(Err(why)) => return Err(why),
            Some(Ok(())) => checkpoint::manifest(&dir, &self.copies.hashes)
                .map_err(|e| format!("cannot read checkpoint {}: {e}", dir.display()))?,
            // No `Checkpoint` came first: the controller's directory is empty, and so is the
            // copy once emptied (made or recycled empty: nothing to do).
            None => {
                if existed {
                    checkpoint::mirror(&dir, [])
                        .map_err(|e| format!("cannot empty checkpoint {}: {e}", dir.display()))?;
                }
                Vec::new()
            }
        };
        Ok(Some((dir, Some((key.clone(), before)))))
    }

    /// `ToWorker::Checkpoint`: brings copy `key` to hold `files`' paths; the paths it lacks.
    fn checkpoint_arrives(&self, key: &str, files: &[FileEntry]) -> Vec<String> {
        let need = self
            .copies
            .dir(key)
            .and_then(|dir| checkpoint::prepare(&dir, files, &self.copies.hashes));
        let (need, synced) = match need {
            Ok(need) => (need, Ok(())),
            // Nothing more is written; the attempt ends with the error.
            Err(e) => (
                Vec::new(),
                Err(format!("cannot prepare the checkpoint here: {e}")),
            ),
        };
        lock(&self.synced).insert(key.to_string(), synced);
        need
    }

    /// `ToWorker::CheckpointFile`: one file of copy `key`.
    fn checkpoint_file(&self, key: &str, path: &str, mode: u32, bytes: &[u8]) {
        let written = self
            .copies
            .dir(key)
            .and_then(|dir| tree::write_file(&dir, path, mode, bytes));
        if let Err(e) = written {
            let mut synced = lock(&self.synced);
            let entry = synced.entry(key.to_string()).or_insert(Ok(()));
            if entry.is_ok() {
                *entry = Err(format!("cannot write checkpoint file {path} here: {e}"));
            }
        }
    }

    /// A closure attempt, on this thread; a panic is the attempt's error.
    fn run_closure(
        &self,
        f: &TaskFn,
        run: &RunOwned,
        checkpoint: Option<&Path>,
        sink: &FrameSink<'_>,
    ) -> FromWorker {
        let started = std::time::Instant::now();
        let limit = run.timeout_ms.map(Duration::from_millis);
        let ctx = crate::context::Context::new(
            &run.task,
            run.attempt,
            &run.shared,
            sink,
            &self.cancelled,
            limit.map(|l| started + l),
        )
        .with_checkpoint(checkpoint);
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&ctx)));
        let mut attempt = match ended {
            Ok(Ok(())) => {
                let mut a = crate::pool::attempt::Attempt::new(Outcome::Pass);
                a.exports = ctx.into_exports();
                a
            }
            Ok(Err(e)) => {
                let mut a = crate::pool::attempt::Attempt::new(e.status).message(e.message);
                a.suspend = e.suspend;
                a
            }
            Err(panic) => crate::pool::attempt::Attempt::new(Outcome::Error)
                .message(format!("panicked: {}", crate::pool::panic_message(&*panic))),
        };
        let took = started.elapsed();
        if let Some(limit) = limit {
            // As on threads: a cooperative task that returned late still timed out.
            attempt = crate::pool::past_deadline(attempt, limit, took);
        }
        FromWorker::Done {
            id: run.id,
            outcome: attempt.outcome,
            message: attempt.message,
            exports: attempt.exports,
            suspend: attempt.suspend,
            exit_code: None,
            output: None,
            duration_ms: took.as_millis() as u64,
            files: Vec::new(),
            checkpoint: None,
            checkpoint_files: Vec::new(),
        }
    }

    fn run_one(
        &self,
        run: &RunOwned,
        checkpoint: Option<&Path>,
        sink: &FrameSink<'_>,
    ) -> Result<Ended, String> {
        if !self.tasks.contains_key(&run.task) {
            if let Some(f) = CLOSURES.get().and_then(|c| c.get(&run.task)) {
                return Ok(Ended {
                    done: self.run_closure(f.as_ref(), run, checkpoint, sink),
                    blobs: Vec::new(),
                    signal: None,
                });
            }
        }
        let spec = self.tasks.get(&run.task).ok_or_else(|| {
            format!(
                "task `{}` is not in the tree on host {} ({})",
                run.task,
                self.host,
                self.root.display()
            )
        })?;
        let runner = self
            .runner
            .get_or_init(|| {
                CommandRunner::new(CommandConfig {
                    grace: Duration::from_millis(run.grace_ms),
                    group_file: self.group_file.clone(),
                    ..CommandConfig::default()
                })
                .map_err(|e| format!("cannot prepare to run commands: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        let attempt = runner.run(CommandJob {
            task: &run.task,
            attempt: run.attempt,
            spec,
            shared: &run.shared,
            timeout: run.timeout_ms.map(Duration::from_millis),
            checkpoint,
            sink,
            host: &self.host,
        });
        let mut files = Vec::new();
        let mut blobs = Vec::new();
        let mut outcome = attempt.outcome;
        let mut message = attempt.message;
        if attempt.outcome.is_success() && !run.outputs.is_empty() {
            let cwd = spec.cwd.clone().unwrap_or_else(|| self.root.clone());
            let collected = tree::outputs(&self.root, &cwd, &run.outputs).and_then(|paths| {
                for rel in paths {
                    let entry = tree::entry(&self.root, rel.clone())
                        .map_err(|e| format!("cannot read output {rel}: {e}"))?;
                    let bytes = std::fs::read(self.root.join(&rel))
                        .map_err(|e| format!("cannot read output {rel}: {e}"))?;
                    // The size the frames will carry, whatever happened since the hash.
                    files.push(FileEntry {
                        size: bytes.len() as u64,
                        ..entry
                    });
                    blobs.push(bytes);
                }
                Ok(())
            });
            if let Err(e) = collected {
                outcome = Outcome::Error;
                message = Some(e);
                files.clear();
                blobs.clear();
            }
        }
        Ok(Ended {
            done: FromWorker::Done {
                id: run.id,
                outcome,
                message,
                exports: attempt.exports,
                suspend: attempt.suspend,
                exit_code: attempt.exit_code,
                output: attempt.output.map(|o| *o),
                duration_ms: attempt.duration.as_millis() as u64,
                files,
                checkpoint: None,
                checkpoint_files: Vec::new(),
            },
            blobs,
            signal: attempt.signal,
        })
    }
}

/// How an attempt ended on this worker.
struct Ended {
    done: FromWorker,
    /// The files of its outputs, sent after `done`.
    blobs: Vec<Vec<u8>>,
    /// The signal that ended it if pexen did not (see [`crate::pool::Attempt::signal`]).
    signal: Option<i32>,
}

/// The end of an attempt that used this host's copy of its checkpoint (`before`: the copy
/// when it started): true after a success (worst of the attempt and its streamed results, no
/// suspend), when the copy goes; otherwise what it holds goes back with `done`, the changed
/// files' content after the outputs' in `blobs`.
fn checkpoint_end(
    dir: &Path,
    before: &[FileEntry],
    hashes: &tree::Hashes,
    worst: Option<Outcome>,
    done: &mut FromWorker,
    blobs: &mut Vec<Vec<u8>>,
) -> bool {
    let FromWorker::Done {
        outcome,
        message,
        suspend,
        checkpoint: held,
        checkpoint_files,
        ..
    } = done
    else {
        return false;
    };
    let ended = worst.map_or(*outcome, |w| outcome.worst(w));
    if ended.is_success() && !*suspend {
        return true;
    }
    match checkpoint::changed(dir, before, hashes) {
        Ok(back) => {
            *held = Some(back.held);
            for (entry, bytes) in back.changed {
                checkpoint_files.push(entry);
                blobs.push(bytes);
            }
        }
        Err(e) => {
            // Nothing comes back: the controller keeps what the attempt started with.
            *outcome = Outcome::Error;
            *message = Some(format!("cannot read checkpoint {}: {e}", dir.display()));
        }
    }
    false
}

/// An attempt's checkpoint directory and, for this host's own copy, its manifest when the
/// attempt starts.
type Prepared = (PathBuf, Option<(String, Vec<FileEntry>)>);

/// Streams a running attempt's `PEXEN_RESULTS` lines to the scheduler as they are written.
struct FrameSink<'a> {
    out: &'a Out,
    id: u64,
    /// The worst result streamed so far.
    worst: Mutex<Option<Outcome>>,
}

impl ResultSink for FrameSink<'_> {
    fn result(&self, status: Outcome, message: String) {
        {
            let mut worst = lock(&self.worst);
            *worst = Some(worst.map_or(status, |w| w.worst(status)));
        }
        let _ = protocol::send(
            &mut *lock(self.out),
            &FromWorker::Result {
                id: self.id,
                status,
                message,
            },
        );
    }
}
