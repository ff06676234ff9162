//! Teleport (SPEC section 12): move a run to another machine and back.
//!
//! [`Teleport::start`] ships pexen's binary to an ssh host by content hash (the hosts'
//! bootstrap: nothing is uploaded when the host has it), syncs the tree (the hosts'
//! content-addressed sync) and the state (journal and checkpoints, content-addressed too),
//! and continues the run there as `--resume`, detached from the connection. The returned
//! [`Session`] is an iterator over the run's [`Event`]s as they happen there, for the same
//! display as a local run; [`Session::finish`] brings the journal, the checkpoints and the
//! JUnit report back and says how the run ended. [`Teleport::attach`] picks up a run whose
//! connection dropped (the events so far, then live). [`Stop`] relays Ctrl-C.
//!
//! Everything travels in the one worker protocol (`protocol::teleport`) over one ssh
//! connection. The other side is `agent` (inside `pexen worker --stdio`) and the detached
//! run, [`supervise`].
//!
//! ```no_run
//! use pexen::host::HostSpec;
//! use pexen::teleport::{Stop, Teleport};
//!
//! let t = Teleport::new(HostSpec::parse("ssh://build1")?, "tests");
//! let mut session = t.start(&Stop::default())?;
//! for event in &mut session {
//!     println!("{event:?}");
//! }
//! let landing = session.finish()?;
//! std::process::exit(landing.ended.code);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod agent;
pub(crate) mod files;
mod supervise;

use std::collections::HashSet;
use std::io::{self, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

pub use crate::protocol::teleport::{Ended, Prelude, RunOptions};
pub use files::TransferError;
pub use supervise::supervise;

use crate::host::ssh::{self, Binary, ConnectError, Link, TreeToSync, Waited};
use crate::host::{tree, HostKind, HostSpec};
use crate::protocol::teleport::{FromAgent, Record, ToAgent};
use crate::protocol::{self, FileEntry, FromWorker, ToWorker, SILENCE_LIMIT};
use crate::sched::events::Event;
use crate::state::journal::JournalError;
use crate::state::StateLock;

/// How often a waiting session looks at [`Stop`].
const TICK: Duration = Duration::from_millis(50);

/// Why a teleport failed.
#[derive(Debug, Error)]
pub enum TeleportError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    State(#[from] JournalError),
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot reach {host}")]
    Connect {
        host: String,
        #[source]
        source: ConnectError,
    },
    #[error("{host} refused: {message}")]
    Refused { host: String, message: String },
    #[error("the connection to {host} was lost ({reason}); the run goes on there: `{attach}` re-attaches")]
    Lost {
        host: String,
        reason: String,
        attach: String,
    },
    #[error("protocol error with {host}: {message}")]
    Protocol { host: String, message: String },
    #[error("cannot bring the state back from {host}")]
    Transfer {
        host: String,
        #[source]
        source: TransferError,
    },
    #[error("the run on {host} ended without a result (see {log} there)")]
    NoResult { host: String, log: String },
    #[error("interrupted before the run started on {0}")]
    Interrupted(String),
}

/// Ctrl-C for a session, from any thread: the first [`interrupt`](Stop::interrupt) stops the
/// run there as Ctrl-C stops `pexen run` (running tasks get SIGTERM, the grace period, then
/// SIGKILL), the second kills its tasks. Before the run started there, it stops the teleport
/// at its next step.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicU8>);

impl Stop {
    /// One more interrupt; returns how many there were.
    pub fn interrupt(&self) -> u8 {
        self.0.fetch_add(1, Ordering::SeqCst).saturating_add(1)
    }

    fn level(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A run to move to an ssh host.
#[derive(Clone, Debug)]
pub struct Teleport {
    pub host: HostSpec,
    /// The task tree.
    pub dir: PathBuf,
    /// Its state directory here (journal, checkpoints).
    pub state: PathBuf,
    pub options: RunOptions,
    /// Where to write the JUnit report brought back (sets `options.junit` on start).
    pub junit: Option<PathBuf>,
    /// The command that re-attaches, said when the connection is lost.
    pub attach_hint: String,
}

/// What a start sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shipped {
    /// Whether pexen's binary had to be uploaded (false: found in the host's cache).
    pub uploaded: bool,
    /// Files of the tree sent (those the host lacked or had with other content).
    pub tree_files: usize,
    /// Files of the state sent.
    pub state_files: usize,
    /// Bytes written to the connection until the run started, the binary included.
    pub bytes_sent: u64,
}

/// How a teleported run ended, its state back here.
#[derive(Clone, Debug)]
pub struct Landing {
    pub ended: Ended,
    /// Files of the state (and the JUnit report) brought back.
    pub files_back: usize,
}

impl Teleport {
    /// A teleport of `dir` with its default state directory (`dir/.pexen`) and default options.
    pub fn new(host: HostSpec, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            attach_hint: format!("pexen teleport --attach {}", host.name),
            host,
            state: dir.join(".pexen"),
            dir,
            options: RunOptions {
                grace_ms: 5000,
                ..RunOptions::default()
            },
            junit: None,
        }
    }

    /// Ships binary, tree and state and starts the run there.
    pub fn start(&self, stop: &Stop) -> Result<Session, TeleportError> {
        let mut s = self.open(stop)?;
        // Where the report goes, for an `--attach` that does not say it again.
        let note = junit_note(&s.id);
        match &self.junit {
            Some(junit) => {
                let path = std::path::absolute(junit).map_err(|source| TeleportError::Read {
                    path: junit.clone(),
                    source,
                })?;
                let written = note
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(&note, path.as_os_str().as_encoded_bytes()));
                written.map_err(|source| TeleportError::Read {
                    path: note.clone(),
                    source,
                })?;
                s.junit = Some(path);
            }
            None => {
                let _ = std::fs::remove_file(&note);
            }
        }
        let root = std::fs::canonicalize(&self.dir).map_err(|source| TeleportError::Read {
            path: self.dir.clone(),
            source,
        })?;
        let key = blake3::hash(root.as_os_str().as_encoded_bytes()).to_hex();
        let index = crate::host::serve::cache_dir()
            .join("manifests")
            .join(format!("{}.json", &key[..32]));
        let manifest =
            tree::manifest_cached(&root, &index).map_err(|source| TeleportError::Read {
                path: root.clone(),
                source,
            })?;
        let manifest_hash = protocol::manifest_hash(&manifest);
        let state_files =
            files::state_manifest(&self.state).map_err(|source| TeleportError::Read {
                path: self.state.clone(),
                source,
            })?;
        let mut options = self.options.clone();
        options.junit = self.junit.is_some();
        s.send(&ToWorker::Teleport(ToAgent::Start {
            id: s.id.clone(),
            options,
        }))?;
        s.check(stop)?;
        ssh::sync_tree(
            &mut s.link,
            &self.host.name,
            false,
            &TreeToSync {
                root: &root,
                manifest: &manifest,
                manifest_hash: &manifest_hash,
                jobs: 0,
            },
        )
        .map_err(|e| s.connect_error(e))?;
        s.check(stop)?;
        s.send(&ToWorker::Teleport(ToAgent::State {
            files: state_files.clone(),
        }))?;
        let need = match s.expect()? {
            FromAgent::Need { paths } => paths,
            other => return Err(s.protocol(format!("expected Need, got {other:?}"))),
        };
        for path in &need {
            let Some(entry) = state_files.iter().find(|e| &e.path == path) else {
                return Err(s.protocol(format!("asked for `{path}`, which is not in the state")));
            };
            s.send(&ToWorker::Teleport(ToAgent::File {
                path: path.clone(),
                mode: entry.mode,
                size: entry.size,
            }))?;
            let src = self.state.join(path);
            files::send_chunks(&mut s.link.stdin, &src, entry.size).map_err(|source| {
                TeleportError::Transfer {
                    host: s.host.clone(),
                    source,
                }
            })?;
        }
        s.check(stop)?;
        // From here on the run starts there.
        s.send(&ToWorker::Teleport(ToAgent::StateDone))?;
        match s.expect()? {
            FromAgent::Started => {}
            other => return Err(s.protocol(format!("expected Started, got {other:?}"))),
        }
        let bin = Binary::this().map_err(TeleportError::Usage)?;
        s.shipped = Some(Shipped {
            uploaded: s.link.uploaded,
            tree_files: s.link.files_sent,
            state_files: need.len(),
            bytes_sent: s.sent.load(Ordering::SeqCst) + if s.link.uploaded { bin.size } else { 0 },
        });
        s.running = true;
        s.read_prelude()?;
        Ok(s)
    }

    /// Re-attaches to the run teleported from this tree and state directory.
    pub fn attach(&self, stop: &Stop) -> Result<Session, TeleportError> {
        let mut s = self.open(stop)?;
        if s.junit.is_none() {
            // The report the start asked for.
            s.junit = std::fs::read(junit_note(&s.id))
                .ok()
                .map(|p| PathBuf::from(std::ffi::OsString::from_vec(p)));
        }
        s.send(&ToWorker::Teleport(ToAgent::Attach { id: s.id.clone() }))?;
        s.running = true;
        s.read_prelude()?;
        Ok(s)
    }

    /// Locks the state here and connects.
    fn open(&self, stop: &Stop) -> Result<Session, TeleportError> {
        if !matches!(self.host.kind, HostKind::Ssh { .. }) {
            return Err(TeleportError::Usage(format!(
                "teleport needs an ssh:// host, not `{}`",
                self.host.name
            )));
        }
        if !self.dir.is_dir() {
            return Err(TeleportError::Usage(format!(
                "{} is not a directory of tasks",
                self.dir.display()
            )));
        }
        // No local run may write this state while it is away (and while it comes back).
        let lock = StateLock::acquire(&self.state)?;
        let id = run_id(&self.dir, &self.state)?;
        let bin = Binary::this().map_err(TeleportError::Usage)?;
        let host = self.host.name.clone();
        if stop.level() > 0 {
            return Err(TeleportError::Interrupted(host));
        }
        let mut link =
            ssh::connect(&self.host, bin, &[], None).map_err(|source| TeleportError::Connect {
                host: host.clone(),
                source,
            })?;
        let sent = Arc::new(AtomicU64::new(0));
        let inner = std::mem::replace(&mut link.stdin, Box::new(io::sink()));
        link.stdin = Box::new(Counting {
            inner,
            sent: sent.clone(),
        });
        Ok(Session {
            link,
            host,
            id,
            sent,
            stop: stop.clone(),
            relayed: 0,
            running: false,
            last_frame: Instant::now(),
            prelude: Prelude::default(),
            shipped: None,
            ended: None,
            back: None,
            failure: None,
            state: self.state.clone(),
            junit: self.junit.clone(),
            attach_hint: self.attach_hint.clone(),
            _lock: lock,
        })
    }
}

/// Where this machine notes the JUnit report a teleported run `id` was started with (an
/// `--attach` without `--junit` writes it there).
fn junit_note(id: &str) -> PathBuf {
    crate::host::serve::cache_dir()
        .join("teleported")
        .join(format!("{id}.junit"))
}

/// The id of the run teleported from `dir` with state `state` on this machine: the same for
/// a start and an attach, different for another tree, state directory or machine.
fn run_id(dir: &Path, state: &Path) -> Result<String, TeleportError> {
    let canon = |p: &Path| {
        std::fs::canonicalize(p).map_err(|source| TeleportError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut h = blake3::Hasher::new();
    h.update(b"pexen/teleport/v1\0");
    h.update(host.trim().as_bytes());
    h.update(&[0]);
    h.update(canon(dir)?.as_os_str().as_encoded_bytes());
    h.update(&[0]);
    h.update(canon(state)?.as_os_str().as_encoded_bytes());
    Ok(h.finalize().to_hex()[..32].to_string())
}

/// Counts what is written to the connection.
struct Counting {
    inner: Box<dyn Write + Send>,
    sent: Arc<AtomicU64>,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A teleported run, followed from here: an iterator over its events.
pub struct Session {
    link: Link,
    host: String,
    id: String,
    sent: Arc<AtomicU64>,
    stop: Stop,
    /// Interrupts relayed so far.
    relayed: u8,
    /// The run is going there (a lost connection no longer stops it).
    running: bool,
    last_frame: Instant,
    prelude: Prelude,
    shipped: Option<Shipped>,
    ended: Option<Ended>,
    /// The manifest of the state to bring back, once the run is over.
    back: Option<Vec<FileEntry>>,
    failure: Option<TeleportError>,
    state: PathBuf,
    junit: Option<PathBuf>,
    attach_hint: String,
    _lock: StateLock,
}

impl Session {
    /// The host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// What the run said before its first event (warnings, counts for the display).
    pub fn prelude(&self) -> &Prelude {
        &self.prelude
    }

    /// What a start sent (`None` for an attach).
    pub fn shipped(&self) -> Option<&Shipped> {
        self.shipped.as_ref()
    }

    /// Brings the state back (after the last event) and says how the run ended there.
    pub fn finish(mut self) -> Result<Landing, TeleportError> {
        while self.next().is_some() {}
        if let Some(e) = self.failure.take() {
            self.close();
            return Err(e);
        }
        let Some(back) = self.back.take() else {
            return Err(self.protocol("the run's state did not come back".into()));
        };
        let result = self.bring_back(&back);
        self.close();
        let files_back = result?;
        let _ = std::fs::remove_file(junit_note(&self.id));
        let ended = self.ended.take().ok_or_else(|| TeleportError::NoResult {
            host: self.host.clone(),
            log: "~/.cache/pexen/teleport/*/supervisor.log".into(),
        })?;
        Ok(Landing { ended, files_back })
    }

    fn bring_back(&mut self, back: &[FileEntry]) -> Result<usize, TeleportError> {
        let mut need = Vec::new();
        let mut keep = HashSet::new();
        for f in back {
            if f.path == agent::JUNIT {
                if let Some(junit) = &self.junit {
                    let same = junit
                        .parent()
                        .zip(junit.file_name())
                        .and_then(|(d, n)| files::entry(d, n.to_string_lossy().into_owned()).ok())
                        .is_some_and(|e| e.hash == f.hash);
                    if !same {
                        need.push(f.path.clone());
                    }
                }
                continue;
            }
            files::state_path(&self.state, &f.path).map_err(|e| self.protocol(e.to_string()))?;
            keep.insert(f.path.as_str());
        }
        need.extend(files::needed(
            &self.state,
            &back
                .iter()
                .filter(|f| f.path != agent::JUNIT)
                .cloned()
                .collect::<Vec<_>>(),
            files::entry,
        ));
        self.send(&ToWorker::Teleport(ToAgent::Need {
            paths: need.clone(),
        }))?;
        let mut got = 0;
        loop {
            match self.expect()? {
                FromAgent::File { path, mode, size } => {
                    if !need.contains(&path) {
                        return Err(self.protocol(format!("sent `{path}`, which was not asked")));
                    }
                    let dest = if path == agent::JUNIT {
                        self.junit.clone().unwrap_or_default()
                    } else {
                        files::state_path(&self.state, &path)
                            .map_err(|e| self.protocol(e.to_string()))?
                    };
                    files::receive_chunks(&mut self.link.frames, &dest, mode, size, || {
                        Some(Instant::now() + SILENCE_LIMIT)
                    })
                    .map_err(|source| TeleportError::Transfer {
                        host: self.host.clone(),
                        source,
                    })?;
                    got += 1;
                }
                FromAgent::StateDone => break,
                other => return Err(self.protocol(format!("expected the state, got {other:?}"))),
            }
        }
        files::mirror(&self.state, &keep).map_err(|source| TeleportError::Transfer {
            host: self.host.clone(),
            source: TransferError::Write {
                path: self.state.clone(),
                source,
            },
        })?;
        self.send(&ToWorker::Teleport(ToAgent::Collected))?;
        Ok(got)
    }

    /// Ends the connection: the agent sees end of file and exits (the run is over or goes on).
    fn close(&mut self) {
        self.link.stdin = Box::new(io::sink());
        if let Waited::StillRunning = self.link.transport.wait(Duration::from_secs(5)) {
            self.link.transport.kill();
        }
    }

    fn send(&mut self, msg: &ToWorker) -> Result<(), TeleportError> {
        protocol::send(&mut self.link.stdin, msg).map_err(|e| self.lost(e.to_string()))
    }

    /// The next teleport message (beats skipped); a refusal is an error.
    fn expect(&mut self) -> Result<FromAgent, TeleportError> {
        loop {
            match self
                .link
                .frames
                .next::<FromWorker>(Some(Instant::now() + SILENCE_LIMIT))
            {
                Ok(Some(FromWorker::Teleport(m))) => return Ok(m),
                Ok(Some(FromWorker::Beat)) => {}
                Ok(Some(FromWorker::Refused { message })) => {
                    return Err(TeleportError::Refused {
                        host: self.host.clone(),
                        message,
                    })
                }
                Ok(Some(other)) => return Err(self.protocol(format!("unexpected {other:?}"))),
                Ok(None) => return Err(self.lost("no word for 30 s".into())),
                Err(e) => return Err(self.lost(e.to_string())),
            }
        }
    }

    /// Reads up to the run's prelude (or its end, when it could not start).
    fn read_prelude(&mut self) -> Result<(), TeleportError> {
        match self.expect()? {
            FromAgent::Record(Record::Prepared(p)) => self.prelude = p,
            FromAgent::Record(Record::Ended(e)) => self.ended = Some(e),
            FromAgent::State { files } => self.back = Some(files),
            other => return Err(self.protocol(format!("expected the prelude, got {other:?}"))),
        }
        Ok(())
    }

    /// Interrupted before the run started: close, nothing runs there.
    fn check(&mut self, stop: &Stop) -> Result<(), TeleportError> {
        if stop.level() > 0 {
            self.link.transport.kill();
            return Err(TeleportError::Interrupted(self.host.clone()));
        }
        Ok(())
    }

    fn connect_error(&mut self, e: ConnectError) -> TeleportError {
        match e {
            ConnectError::Tree(message) => TeleportError::Refused {
                host: self.host.clone(),
                message,
            },
            source => TeleportError::Connect {
                host: self.host.clone(),
                source,
            },
        }
    }

    fn protocol(&self, message: String) -> TeleportError {
        TeleportError::Protocol {
            host: self.host.clone(),
            message,
        }
    }

    /// The connection is gone: what ssh said last, if anything.
    fn lost(&self, what: String) -> TeleportError {
        let said = self
            .link
            .stderr
            .lock()
            .map(|t| {
                t.lines()
                    .map(str::trim)
                    .rfind(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default();
        let reason = if said.is_empty() {
            what
        } else {
            format!("{what}: {said}")
        };
        if self.running {
            TeleportError::Lost {
                host: self.host.clone(),
                reason,
                attach: self.attach_hint.clone(),
            }
        } else {
            TeleportError::Protocol {
                host: self.host.clone(),
                message: format!("the connection ended before the run started ({reason})"),
            }
        }
    }
}

impl Iterator for Session {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.back.is_some() || self.failure.is_some() {
            return None;
        }
        loop {
            let level = self.stop.level();
            if level > self.relayed {
                self.relayed = level;
                // A failure shows as end of file below.
                let _ =
                    protocol::send(&mut self.link.stdin, &ToWorker::Cancel { kill: level >= 2 });
            }
            match self
                .link
                .frames
                .next::<FromWorker>(Some(Instant::now() + TICK))
            {
                Ok(Some(msg)) => {
                    self.last_frame = Instant::now();
                    match msg {
                        FromWorker::Teleport(FromAgent::Record(Record::Event(e))) => {
                            return Some(e)
                        }
                        FromWorker::Teleport(FromAgent::Record(Record::Ended(e))) => {
                            self.ended = Some(e);
                        }
                        FromWorker::Teleport(FromAgent::Record(Record::Prepared(p))) => {
                            self.prelude = p;
                        }
                        FromWorker::Teleport(FromAgent::State { files }) => {
                            self.back = Some(files);
                            return None;
                        }
                        FromWorker::Beat => {}
                        other => {
                            self.failure = Some(self.protocol(format!("unexpected {other:?}")));
                            return None;
                        }
                    }
                }
                Ok(None) => {
                    if self.last_frame.elapsed() > SILENCE_LIMIT {
                        self.failure = Some(self.lost("no word for 30 s".into()));
                        return None;
                    }
                }
                Err(e) => {
                    // Let ssh say why before asking it.
                    let _ = self.link.transport.wait(Duration::from_millis(200));
                    self.failure = Some(self.lost(e.to_string()));
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_id_is_one_per_tree_and_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, s1, s2) = (
            dir.path().join("t"),
            dir.path().join("s1"),
            dir.path().join("s2"),
        );
        for d in [&tree, &s1, &s2] {
            std::fs::create_dir_all(d).unwrap();
        }
        let id = run_id(&tree, &s1).unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(id, run_id(&tree.join("."), &s1).unwrap());
        assert_ne!(id, run_id(&tree, &s2).unwrap());
        assert!(agent::run_dir(&id).is_ok());
    }
}
