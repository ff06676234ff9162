//! The journal: an append-only, versioned, checksummed file of what a run finished (SPEC 6).
//!
//! Layout of `DIR/journal` (all integers little-endian):
//!
//! ```text
//! header  : b"PEXENJNL" (8 bytes) | format version: u32
//! record* : payload length: u32 | crc32 of the payload: u32 | payload (JSON of a JournalEntry)
//! ```
//!
//! Each record is one `write(2)`, issued before the task's result is reported: it survives
//! `kill -9` (the page cache outlives the process). `fsync` happens at most once a second or
//! every [`SYNC_EVERY`] records, and at [`Journal::sync`] (run end), which bounds what a power
//! failure can lose. On load, damage at the tail with nothing valid after it is a torn last write
//! and is dropped with a notice; any other damage is a [`JournalError`] naming the byte offset.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::report::record::{RunSummary, TaskRecord};
use crate::state::fingerprint::Fingerprint;
use crate::task::TaskName;

#[path = "journal_read.rs"]
mod read;

/// The first eight bytes of every journal.
pub const MAGIC: &[u8; 8] = b"PEXENJNL";
/// The format version this build writes. Bump it when [`JournalEntry`] changes shape.
///
/// Version 2 added `task-submitted` records (Slurm job ids); a version 1 journal is a version 2
/// journal without them, so both load. Continuing a version 1 journal marks it version 2 before
/// anything is appended, so an older pexen refuses it with a clear message instead of failing on
/// a record it cannot read.
pub const VERSION: u32 = 2;
/// The oldest format version this build reads.
pub const OLDEST_READABLE: u32 = 1;
/// The journal's file name inside the state directory.
pub const FILE_NAME: &str = "journal";
/// Records appended between two `fsync`s at most.
pub const SYNC_EVERY: u32 = 1000;
const HEADER_LEN: usize = 12;
const FRAME_LEN: usize = 8;
/// No real record is this large; a longer length field is damage, not a record to allocate for.
const MAX_RECORD: usize = 256 << 20;

/// Why the state directory cannot be used. The CLI maps every variant to exit code 3.
#[derive(Debug, Error)]
pub enum JournalError {
    #[error("cannot create state directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read journal {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write journal {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "state directory {} is in use by {holder}: wait for that run to end, or use another \
         --state directory",
        dir.display()
    )]
    Locked { dir: PathBuf, holder: String },
    #[error("cannot lock {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is not a pexen journal (bad magic bytes); run without --resume to start afresh, \
         or remove {}",
        path.display(),
        path.parent().unwrap_or(path).display()
    )]
    NotAJournal { path: PathBuf },
    #[error(
        "journal {} has format version {found}, but this pexen reads version {expected}; \
         remove it or use another --state directory",
        path.display()
    )]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "journal {} is damaged at byte {offset}: {what}; run without --resume to start afresh, \
         or remove {}",
        path.display(),
        path.parent().unwrap_or(path).display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("cannot use checkpoint directory {}", path.display())]
    Checkpoint {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode a record for journal {}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// One record of the journal, serialized as `{"task-finished":{...}}`.
///
/// Externally tagged on purpose: serde decodes that form in one streaming pass, while an
/// internally tagged enum buffers every record into an intermediate tree first (twice the cost on
/// a journal of 10^5 records).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JournalEntry {
    RunStarted {
        /// Seconds since the Unix epoch.
        time: u64,
        pexen_version: String,
        tasks: usize,
        /// The selected tasks, in definition order, so that a report of a run cut short can
        /// name what never finished. Absent in journals written before it was added.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        names: Vec<String>,
    },
    TaskFinished(Box<TaskRecord>),
    RunFinished(RunSummary),
    /// An attempt became an outside scheduler's job (Slurm): written when it is submitted, so
    /// that `--resume` after pexen was killed re-attaches to it instead of running it again.
    /// A later `task-finished` of the same task settles it.
    TaskSubmitted {
        task: TaskName,
        attempt: u32,
        job: String,
        /// The task's fingerprint at submission: a job of a since-changed task is not re-attached.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<Fingerprint>,
    },
}

/// What [`Journal::load`] found.
#[derive(Debug, Default)]
pub struct LoadedJournal {
    pub path: PathBuf,
    /// Every valid record, in file order.
    pub entries: Vec<JournalEntry>,
    /// Notices for the user (a dropped torn record).
    pub warnings: Vec<String>,
    /// Bytes of the file up to the end of the last valid record (0 when there was no file).
    pub valid_len: u64,
    /// The format version in the file's header (0 when there was no file).
    pub version: u32,
}

impl LoadedJournal {
    /// The task records, in file order (later ones supersede earlier ones of the same name).
    pub fn records(&self) -> impl Iterator<Item = &TaskRecord> {
        self.entries.iter().filter_map(|e| match e {
            JournalEntry::TaskFinished(r) => Some(&**r),
            _ => None,
        })
    }

    /// Jobs submitted for tasks that have no `task-finished` record after the submission: those
    /// that were queued or running when the recording run stopped. One per task (the last),
    /// in file order.
    pub fn unfinished_jobs(&self) -> Vec<SubmittedJob> {
        let mut open: Vec<SubmittedJob> = Vec::new();
        let mut at: std::collections::HashMap<&TaskName, usize> = std::collections::HashMap::new();
        for e in &self.entries {
            // Most journals have no submissions at all: finished records need no lookup then.
            if at.is_empty() && !matches!(e, JournalEntry::TaskSubmitted { .. }) {
                continue;
            }
            match e {
                JournalEntry::TaskSubmitted {
                    task,
                    attempt,
                    job,
                    fingerprint,
                } => {
                    let submitted = SubmittedJob {
                        task: task.clone(),
                        attempt: *attempt,
                        job: job.clone(),
                        fingerprint: *fingerprint,
                    };
                    if let Some(&i) = at.get(task) {
                        open[i] = submitted;
                    } else {
                        at.insert(task, open.len());
                        open.push(submitted);
                    }
                }
                JournalEntry::TaskFinished(r) => {
                    if let Some(i) = at.remove(&r.name) {
                        open[i].job.clear();
                    }
                }
                _ => {}
            }
        }
        open.retain(|j| !j.job.is_empty());
        open
    }
}

/// A job recorded by a `task-submitted` record (see [`LoadedJournal::unfinished_jobs`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SubmittedJob {
    pub task: TaskName,
    pub attempt: u32,
    pub job: String,
    pub fingerprint: Option<Fingerprint>,
}

/// An open journal, appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    unsynced: u32,
    last_sync: Instant,
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

impl Journal {
    /// Starts a fresh journal in `dir` (created if needed), replacing any earlier one atomically:
    /// the header is written to a temporary file that is then renamed over `DIR/journal`.
    pub fn create(dir: &Path) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = journal_path(dir);
        let tmp = dir.join(format!(".{FILE_NAME}.tmp.{}", std::process::id()));
        let write_err = |source| JournalError::Write {
            path: tmp.clone(),
            source,
        };
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        let mut f = File::create(&tmp).map_err(write_err)?;
        f.write_all(&header).map_err(write_err)?;
        f.sync_all().map_err(write_err)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|source| JournalError::Write {
            path: path.clone(),
            source,
        })?;
        // Make the rename itself durable; not every platform can open a directory, so best-effort.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Self::open(path)
    }

    /// Continues the journal in `dir` (for `--resume`), or starts one when there is none.
    ///
    /// Returns what was recorded so far. A torn last record is cut off the file before anything
    /// is appended, so that new records never follow damage.
    pub fn open_append(dir: &Path) -> Result<(Self, LoadedJournal), JournalError> {
        let loaded = Self::load(dir)?;
        if loaded.valid_len == 0 {
            return Ok((Self::create(dir)?, loaded));
        }
        let journal = Self::open(loaded.path.clone())?;
        let write_err = |source| JournalError::Write {
            path: loaded.path.clone(),
            source,
        };
        journal.file.set_len(loaded.valid_len).map_err(write_err)?;
        if loaded.version < VERSION {
            // Records of this version may follow: say so in the header first.
            use std::os::unix::fs::FileExt;
            let header = OpenOptions::new()
                .write(true)
                .open(&loaded.path)
                .map_err(write_err)?;
            header
                .write_all_at(&VERSION.to_le_bytes(), MAGIC.len() as u64)
                .map_err(write_err)?;
        }
        Ok((journal, loaded))
    }

    fn open(path: PathBuf) -> Result<Self, JournalError> {
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| JournalError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            path,
            file,
            buf: Vec::with_capacity(4096),
            unsynced: 0,
            last_sync: Instant::now(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that a run started with `tasks` tasks.
    pub fn run_started(&mut self, tasks: usize) -> Result<(), JournalError> {
        self.run_started_with(tasks, Vec::new())
    }

    /// Records that a run of the tasks `names` started.
    pub fn run_started_names(&mut self, names: Vec<String>) -> Result<(), JournalError> {
        self.run_started_with(names.len(), names)
    }

    fn run_started_with(&mut self, tasks: usize, names: Vec<String>) -> Result<(), JournalError> {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.append_entry(&JournalEntry::RunStarted {
            time,
            pexen_version: env!("CARGO_PKG_VERSION").to_owned(),
            tasks,
            names,
        })
    }

    /// Records a finished task. Call it before the result is reported anywhere else.
    pub fn append(&mut self, record: &TaskRecord) -> Result<(), JournalError> {
        // Serialize straight into the frame: no clone of the record for the enum wrapper.
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        enum Borrowed<'a> {
            TaskFinished(&'a TaskRecord),
        }
        self.write_frame(|buf| serde_json::to_writer(buf, &Borrowed::TaskFinished(record)))
    }

    /// Records that `task`'s attempt became the outside scheduler's job `job`.
    pub fn submitted(
        &mut self,
        task: &TaskName,
        attempt: u32,
        job: &str,
        fingerprint: Option<&Fingerprint>,
    ) -> Result<(), JournalError> {
        self.append_entry(&JournalEntry::TaskSubmitted {
            task: task.clone(),
            attempt,
            job: job.to_owned(),
            fingerprint: fingerprint.copied(),
        })
    }

    /// Records how the run ended, and syncs.
    pub fn run_finished(&mut self, summary: RunSummary) -> Result<(), JournalError> {
        self.append_entry(&JournalEntry::RunFinished(summary))?;
        self.sync()
    }

    pub fn append_entry(&mut self, entry: &JournalEntry) -> Result<(), JournalError> {
        self.write_frame(|buf| serde_json::to_writer(buf, entry))
    }

    fn write_frame(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
    ) -> Result<(), JournalError> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; FRAME_LEN]);
        encode(&mut self.buf).map_err(|source| JournalError::Encode {
            path: self.path.clone(),
            source,
        })?;
        let payload = &self.buf[FRAME_LEN..];
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(payload);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        // One write_all of the whole frame: with O_APPEND a regular file takes it in one write(2).
        self.file
            .write_all(&self.buf)
            .map_err(|source| JournalError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.unsynced += 1;
        if self.unsynced >= SYNC_EVERY || self.last_sync.elapsed().as_secs() >= 1 {
            self.sync()?;
        }
        Ok(())
    }

    /// Makes every appended record durable (fsync). Called at run end; a scheduler may also call
    /// it on a timer tick to bound the loss window in time when tasks finish rarely.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        if self.unsynced > 0 {
            self.file
                .sync_data()
                .map_err(|source| JournalError::Write {
                    path: self.path.clone(),
                    source,
                })?;
            self.unsynced = 0;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Reads the journal in `dir`. A missing directory or journal is an empty result.
    pub fn load(dir: &Path) -> Result<LoadedJournal, JournalError> {
        let path = journal_path(dir);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(LoadedJournal {
                    path,
                    ..LoadedJournal::default()
                })
            }
            Err(source) => return Err(JournalError::Read { path, source }),
        };
        read::parse(path, &bytes)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Best effort: an error here has nowhere to go, and the records are already written.
        let _ = self.sync();
    }
}

#[cfg(test)]
#[path = "journal_fuzz_tests.rs"]
mod fuzz_tests;
#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
