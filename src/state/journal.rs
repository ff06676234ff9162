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

/// The first eight bytes of every journal.
pub const MAGIC: &[u8; 8] = b"PEXENJNL";
/// The format version this build writes and reads. Bump it when [`JournalEntry`] changes shape.
pub const VERSION: u32 = 1;
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
    #[error("{} is not a pexen journal (bad magic bytes)", path.display())]
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
    #[error("journal {} is damaged at byte {offset}: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
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
    },
    TaskFinished(Box<TaskRecord>),
    RunFinished(RunSummary),
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
}

impl LoadedJournal {
    /// The task records, in file order (later ones supersede earlier ones of the same name).
    pub fn records(&self) -> impl Iterator<Item = &TaskRecord> {
        self.entries.iter().filter_map(|e| match e {
            JournalEntry::TaskFinished(r) => Some(&**r),
            _ => None,
        })
    }
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
        journal
            .file
            .set_len(loaded.valid_len)
            .map_err(|source| JournalError::Write {
                path: loaded.path.clone(),
                source,
            })?;
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
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.append_entry(&JournalEntry::RunStarted {
            time,
            pexen_version: env!("CARGO_PKG_VERSION").to_owned(),
            tasks,
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
        parse(path, &bytes)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Best effort: an error here has nowhere to go, and the records are already written.
        let _ = self.sync();
    }
}

/// A frame at `at`: its payload and end offset, when its length fits and its checksum matches.
fn frame(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let head = bytes.get(at..at + FRAME_LEN)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let end = at + FRAME_LEN + len;
    let payload = bytes.get(at + FRAME_LEN..end)?;
    (crc32fast::hash(payload) == crc).then_some((payload, end))
}

/// Whether a valid record starts anywhere after `from`: the test that tells damage in the middle
/// of the file (records follow) from a torn last write (nothing valid follows).
fn valid_record_after(bytes: &[u8], from: usize) -> bool {
    (from + 1..bytes.len().saturating_sub(FRAME_LEN - 1)).any(|at| {
        frame(bytes, at).is_some_and(|(payload, _)| {
            // An empty or non-JSON payload can match its checksum by chance; a real record cannot.
            payload.first() == Some(&b'{')
                && serde_json::from_slice::<JournalEntry>(payload).is_ok()
        })
    })
}

fn parse(path: PathBuf, bytes: &[u8]) -> Result<LoadedJournal, JournalError> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        // A short file that starts like a journal was still cut in its header (create() renames
        // only complete headers, so this is damage, not a torn write).
        if bytes.len() < HEADER_LEN && MAGIC.starts_with(&bytes[..bytes.len().min(8)]) {
            return Err(JournalError::Corrupt {
                path,
                offset: 0,
                what: format!("header is {} bytes, expected {HEADER_LEN}", bytes.len()),
            });
        }
        return Err(JournalError::NotAJournal { path });
    }
    let found = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if found != VERSION {
        return Err(JournalError::Version {
            path,
            found,
            expected: VERSION,
        });
    }
    // First the frames (sequential: each one's length says where the next starts), then the
    // payloads, in parallel when there are many: JSON decoding is most of the cost of a load.
    let mut frames: Vec<(usize, &[u8])> = Vec::new();
    let mut warnings = Vec::new();
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let Some((payload, end)) = frame(bytes, at) else {
            if valid_record_after(bytes, at) {
                return Err(JournalError::Corrupt {
                    path,
                    offset: at as u64,
                    what: "bad length or checksum, with valid records after it".into(),
                });
            }
            warnings.push(format!(
                "journal {}: dropped a torn last record at byte {at} ({} bytes); \
                 the task it recorded runs again",
                path.display(),
                bytes.len() - at
            ));
            break;
        };
        frames.push((at, payload));
        at = end;
    }
    let entries = decode(&frames).map_err(|(offset, e)| JournalError::Corrupt {
        path: path.clone(),
        offset: offset as u64,
        // The checksum matched, so the writer wrote this: not a torn write but a record this
        // build cannot read. Never guess.
        what: format!("unreadable record: {e}"),
    })?;
    Ok(LoadedJournal {
        path,
        entries,
        warnings,
        valid_len: at as u64,
    })
}

type DecodeError = (usize, serde_json::Error);

/// Decodes checksummed payloads; on failure, the offset of the first unreadable one.
fn decode(frames: &[(usize, &[u8])]) -> Result<Vec<JournalEntry>, DecodeError> {
    fn chunk(frames: &[(usize, &[u8])]) -> Result<Vec<JournalEntry>, DecodeError> {
        frames
            .iter()
            .map(|&(at, payload)| serde_json::from_slice(payload).map_err(|e| (at, e)))
            .collect()
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(4);
    if threads < 2 || frames.len() < 8192 {
        return chunk(frames);
    }
    let per = frames.len().div_ceil(threads);
    let parts: Vec<Result<Vec<JournalEntry>, DecodeError>> = std::thread::scope(|s| {
        let handles: Vec<_> = frames
            .chunks(per)
            .map(|c| s.spawn(move || chunk(c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut entries = Vec::with_capacity(frames.len());
    for part in parts {
        entries.extend(part?);
    }
    Ok(entries)
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
