//! The one protocol between a scheduler and its workers: local worker processes of the
//! process pool and `pexen worker` on other hosts (over ssh or any byte stream) speak it.
//! Transports only move bytes; everything about frames, messages, handshake and limits is here.
//!
//! A conversation:
//!
//! 1. The worker sends `Hello`: protocol version, pexen version, binary hash (remote
//!    workers), OS, architecture, CPUs. A scheduler refuses another protocol version, or
//!    another binary hash, by name.
//! 2. Remote workers only: the scheduler sends `ToWorker::Tree` (the tree's manifest and its
//!    hash); the worker answers `FromWorker::Need` with the paths it lacks or has with other
//!    content; the scheduler sends each as `ToWorker::File` followed by a raw frame, then
//!    `ToWorker::TreeDone`; the worker loads the tree and answers `FromWorker::Ready` (or
//!    `FromWorker::Refused`, saying why).
//! 3. `ToWorker::Run` asks for one attempt of a task **by name** (no code travels); the
//!    worker streams `FromWorker::Result`s as the task reports them and ends the attempt
//!    with `FromWorker::Done` (outcome, exports, output, and the task's `outputs` files as
//!    raw frames after it). Attempts carry an id so that a remote worker runs several at once:
//!    a scheduler keeps more attempts in flight than the host's `jobs` (given in `Tree`); the
//!    worker queues them, runs at most `jobs` at once, and says `FromWorker::Started` when one
//!    really starts (after the `Done` of the attempt whose place it takes).
//! 4. `ToWorker::Cancel` terminates (TERM, grace, KILL) or kills every running attempt and
//!    drops the queued ones (`FromWorker::Dropped`: never started); `ToWorker::Unqueue` takes
//!    one queued attempt back (`Dropped`, unless it already started) when another place has
//!    room for it;
//!    `FromWorker::Beat` every few seconds tells the scheduler a quiet worker is alive.
//!    End of file on either side ends the conversation; a remote worker then kills what it runs.

mod frame;
pub mod teleport;

use serde::{Deserialize, Serialize};

pub use frame::ChannelError;
pub use frame::MAX_FRAME;
pub(crate) use frame::{encode, send, send_file, send_raw, send_unflushed, FrameReader};

use crate::context::Shared;
use crate::sched::events::Output;
use crate::task::{Outcome, TaskName};

/// Version of the protocol; bumped on any change of the messages below.
pub const PROTOCOL: u32 = 7;

/// How often a remote worker says it is alive while the connection is otherwise quiet.
pub(crate) const BEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a scheduler waits without any frame from a remote worker before it declares the
/// host lost (several missed beats).
pub(crate) const SILENCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The first frame of every worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub protocol: u32,
    /// pexen's version (`CARGO_PKG_VERSION`).
    pub version: String,
    pub pid: u32,
    /// The blake3 hash of the worker's executable (remote workers; `None` in the process pool,
    /// whose workers are this very binary).
    pub binary: Option<String>,
    pub os: String,
    pub arch: String,
    pub cpus: usize,
    /// A daemon's own `--tag`s and `--capacity`s, merged with the controller's spec for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub capacity: std::collections::BTreeMap<String, u32>,
}

impl Hello {
    pub(crate) fn new(binary: Option<String>) -> Self {
        Self {
            protocol: PROTOCOL,
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            binary,
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            tags: Vec::new(),
            capacity: std::collections::BTreeMap::new(),
        }
    }
}

/// One file of a tree: its path relative to the root (`/`-separated), content hash and mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    pub path: String,
    /// blake3 of the content, hex.
    pub hash: String,
    /// Permission bits (the executable bit matters).
    pub mode: u32,
    pub size: u64,
}

/// Scheduler to worker: run one attempt. Serialized from borrows, so that the shared state is
/// not cloned per attempt; [`RunOwned`] is what the worker reads.
#[derive(Serialize)]
pub(crate) struct RunRef<'a> {
    pub id: u64,
    pub task: &'a TaskName,
    pub attempt: u32,
    pub shared: &'a Shared,
    pub timeout_ms: Option<u64>,
    /// Time between TERM and KILL (remote command attempts).
    pub grace_ms: u64,
    /// The task's `outputs` globs, sent back after a success.
    pub outputs: &'a [String],
    /// The task's checkpoint directory (SPEC section 12): process workers and `shared_fs`
    /// hosts use it as is.
    pub checkpoint: Option<&'a std::path::Path>,
    /// Other hosts: the key of the host's copy of the checkpoint, brought up to date by a
    /// `ToWorker::Checkpoint` sent before (see `host::checkpoint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_key: Option<&'a str>,
}

/// What the worker reads for a [`RunRef`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RunOwned {
    #[serde(default)]
    pub id: u64,
    pub task: TaskName,
    pub attempt: u32,
    pub shared: Shared,
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub grace_ms: u64,
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub checkpoint: Option<std::path::PathBuf>,
    #[serde(default)]
    pub checkpoint_key: Option<String>,
}

/// Scheduler to worker, as sent (borrowing).
#[derive(Serialize)]
pub(crate) enum ToWorkerRef<'a> {
    Run(RunRef<'a>),
}

/// Scheduler to worker, as read (and sent, for everything but `Run`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// The tree to run from: where the scheduler has it, its manifest and the manifest's hash.
    Tree {
        /// The host's name, given to tasks as `PEXEN_HOST`.
        host: String,
        /// A directory name for this tree under the worker's cache (remote trees).
        key: String,
        /// The tree is at this path on the worker too (`shared_fs=1`): nothing is synced.
        shared_root: Option<String>,
        manifest: Vec<FileEntry>,
        manifest_hash: String,
        /// The manifest is left out: a worker whose copy has `manifest_hash` answers `Need`
        /// with nothing at once (one round trip, no manifest sent); otherwise it asks for it
        /// with `FromWorker::SendManifest`.
        #[serde(default)]
        deferred: bool,
        /// How many attempts the worker runs at once (the host's `jobs`; 0: its CPUs). More
        /// may be sent: they wait in the worker's queue, in the order they came.
        #[serde(default)]
        jobs: usize,
    },
    /// The manifest of a deferred `Tree`, when the worker asked for it.
    Manifest {
        manifest: Vec<FileEntry>,
    },
    /// One file's content follows as a raw frame.
    File {
        path: String,
        mode: u32,
        size: u64,
    },
    /// Every needed file was sent: load the tree.
    TreeDone,
    Run(RunOwned),
    /// Terminate (TERM, grace, KILL) or, with `kill`, kill every running attempt; queued
    /// attempts (and any that come after) are dropped, each answered with `Dropped`.
    Cancel {
        kill: bool,
    },
    /// Take back queued attempt `id` if it has not started: the worker answers `Dropped`
    /// (it will never start there), or nothing if it already started (its `Started` went or
    /// goes out). The scheduler moves it to a place that has a free slot.
    Unqueue {
        id: u64,
    },
    /// A teleported run (SPEC section 12; see [`teleport`]).
    Teleport(teleport::ToAgent),
    /// Before `Run` `id` on a host without `shared_fs`, when the task's checkpoint directory
    /// holds files: its manifest. The host makes its copy `key` hold exactly these paths and
    /// answers `FromWorker::CheckpointNeed`. (A `Run` with a `checkpoint_key` and no
    /// `Checkpoint` before it: the directory is empty.)
    Checkpoint {
        id: u64,
        key: String,
        files: Vec<FileEntry>,
    },
    /// One file of checkpoint `key`; its content follows as raw frames.
    CheckpointFile {
        key: String,
        path: String,
        mode: u32,
        size: u64,
    },
    /// The task succeeded elsewhere: remove the copy `key`.
    ForgetCheckpoint {
        key: String,
    },
}

/// Worker to scheduler.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    Hello(Hello),
    /// A queued attempt really starts now (its duration and timeout count from here). Sent
    /// after the `Done` of the attempt whose place it takes, before any frame of its own.
    Started {
        id: u64,
    },
    /// A queued attempt that will never start (the run was cancelled, or the scheduler took it
    /// back with `Unqueue`): no `Done` follows.
    Dropped {
        id: u64,
    },
    /// One result reported while the task runs (`ctx.report`, a `PEXEN_RESULTS` line).
    Result {
        #[serde(default)]
        id: u64,
        status: Outcome,
        message: String,
    },
    /// The attempt ended. `files` (the task's outputs) follow as raw frames, in order.
    Done {
        #[serde(default)]
        id: u64,
        outcome: Outcome,
        message: Option<String>,
        exports: Shared,
        /// The task asked to suspend the run (exit status 75, `TaskError::suspend`).
        #[serde(default)]
        suspend: bool,
        #[serde(default)]
        exit_code: Option<i32>,
        #[serde(default)]
        output: Option<Output>,
        #[serde(default)]
        duration_ms: u64,
        #[serde(default)]
        files: Vec<FileEntry>,
        /// After an attempt that did not succeed, on a host that keeps its own copy of the
        /// checkpoint: the paths the copy holds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<Vec<String>>,
        /// The checkpoint files that changed during the attempt: their raw frames follow
        /// those of `files`, in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        checkpoint_files: Vec<FileEntry>,
    },
    /// The paths of a `ToWorker::Checkpoint` the host's copy lacks or holds with other content.
    CheckpointNeed {
        id: u64,
        paths: Vec<String>,
    },
    /// The worker's copy of a deferred `Tree` differs: send the manifest.
    SendManifest,
    /// The paths of the manifest the worker lacks or has with other content.
    Need {
        paths: Vec<String>,
    },
    /// The tree is in place and loaded: `tasks` tasks at `root`.
    Ready {
        root: String,
        tasks: usize,
    },
    /// The worker cannot serve this tree (it does not load, a file cannot be written).
    Refused {
        message: String,
    },
    /// Alive.
    Beat,
    /// A teleported run (SPEC section 12; see [`teleport`]).
    Teleport(teleport::FromAgent),
}

/// The manifest's hash: what a worker and a scheduler compare to know they see the same tree.
pub(crate) fn manifest_hash(manifest: &[FileEntry]) -> String {
    let mut h = blake3::Hasher::new();
    for e in manifest {
        h.update(e.path.as_bytes());
        h.update(&[0]);
        h.update(e.hash.as_bytes());
        h.update(&e.mode.to_le_bytes());
    }
    h.finalize().to_hex().to_string()
}
