//! Checkpoints of attempts that run on hosts (SPEC 12 with SPEC 9).
//!
//! The checkpoint of a task lives in the controller's state directory
//! (`STATE/checkpoints/NAME`, see [`crate::state::checkpoint`]). A host with `shared_fs=1` is
//! given that directory as is. Any other host keeps a copy of its own, private to its user
//! (`~/.cache/pexen/checkpoints/KEY/`, under a directory of mode 0700; `KEY` from this machine's name and the
//! directory's path), brought up to date before each attempt the way the tree is synced: the
//! controller sends the directory's manifest (`ToWorker::Checkpoint`), the worker makes its copy
//! hold exactly those paths and answers with the ones it lacks or has with other content
//! (`FromWorker::CheckpointNeed`), and only those travel (`ToWorker::CheckpointFile`). An empty
//! checkpoint (most tasks save nothing) costs no frame: a `Run` with a checkpoint key and no
//! `Checkpoint` before it empties the copy.
//!
//! When the attempt ends without success (fail, error, timeout, cancel, suspend) the worker
//! sends back, with its `Done`, the paths the copy holds and the content of the files that
//! changed during the attempt; the controller writes them into its directory before the end of
//! the attempt is recorded, so the journal, `--resume` and `--explain` see them. After a
//! success the copy is removed there (and, on the other hosts of the run that kept one, by
//! `ToWorker::ForgetCheckpoint`); the controller's directory goes as in a local run.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

use super::conn::{Conn, Msg, Receiver};
use super::{Hosts, Place};
use crate::host::tree;
use crate::pool::attempt::Attempt;
use crate::pool::Job;
use crate::protocol::{self, ChannelError, FileEntry, ToWorker};
use crate::state::checkpoint::Checkpoints;
use crate::task::{Outcome, TaskName};
use crate::teleport::files;

/// Files with their content.
pub(crate) type Files = Vec<(FileEntry, Vec<u8>)>;

/// What a host's copy holds after an attempt that did not succeed: its paths, and the files
/// that changed during the attempt.
pub(crate) struct Back {
    pub held: Vec<String>,
    pub changed: Files,
}

/// The name of a task's copy on a host: from this machine's name and the path of the task's
/// checkpoint directory here (so two runs or two state directories never share one).
pub(crate) fn key(dir: &Path) -> String {
    let mut h = blake3::Hasher::new();
    h.update(super::ssh::hostname().as_bytes());
    h.update(&[0]);
    h.update(dir.as_os_str().as_encoded_bytes());
    h.finalize().to_hex()[..32].to_string()
}

/// Every regular file of a checkpoint directory (hidden ones too: a task may save
/// `.progress`), sorted by path, with its content hash. A missing directory is empty.
/// `hashes`: what was hashed before (an unchanged file is not read again).
pub(crate) fn manifest(dir: &Path, hashes: &tree::Hashes) -> io::Result<Vec<FileEntry>> {
    let mut rels = Vec::new();
    files::walk(dir, "", &mut rels, 0)?;
    rels.sort();
    rels.into_iter().map(|rel| hashes.entry(dir, rel)).collect()
}

fn check_key(key: &str) -> io::Result<()> {
    if key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad checkpoint key `{key}`"),
        ))
    }
}

/// This host's copies of checkpoints (the worker's side): `~/.cache/pexen/checkpoints/KEY/`,
/// in a directory private to the user (mode 0700). The copy of a task that succeeded is
/// released and recycled as the controller's directories are ([`Checkpoints`]): creating and
/// removing a directory per attempt would cost as much as a no-op command.
#[derive(Default)]
pub(crate) struct HostCopies {
    copies: OnceLock<Result<Checkpoints, String>>,
    /// The hashes of the copies' files, so that a file is read again only once it changed.
    pub(crate) hashes: tree::Hashes,
}

impl HostCopies {
    fn get(&self) -> io::Result<&Checkpoints> {
        self.copies
            .get_or_init(|| {
                let cp = Checkpoints::in_state_dir(&super::serve::cache_dir());
                fs::create_dir_all(cp.root())
                    .and_then(|()| {
                        fs::set_permissions(cp.root(), fs::Permissions::from_mode(0o700))
                    })
                    .map_err(|e| format!("{}: {e}", cp.root().display()))?;
                Ok(cp)
            })
            .as_ref()
            .map_err(|e| io::Error::other(e.clone()))
    }

    /// The copy `key`, created if needed.
    pub(crate) fn dir(&self, key: &str) -> io::Result<PathBuf> {
        self.dir_telling(key).map(|(dir, _)| dir)
    }

    /// [`HostCopies::dir`], telling whether the copy was there already (`false`: it is empty).
    pub(crate) fn dir_telling(&self, key: &str) -> io::Result<(PathBuf, bool)> {
        check_key(key)?;
        self.get()?.prepare_telling(&TaskName::new(key))
    }

    /// The task of copy `key` succeeded: the copy goes (recycled, or removed by
    /// [`HostCopies::flush`]).
    pub(crate) fn release(&self, key: &str) {
        if let (Ok(()), Ok(cp)) = (check_key(key), self.get()) {
            let name = TaskName::new(key);
            self.hashes.forget_under(&cp.dir(&name));
            cp.release(&name);
        }
    }

    /// The task of copy `key` succeeded elsewhere: the copy goes now.
    pub(crate) fn forget(&self, key: &str) {
        if let (Ok(()), Ok(cp)) = (check_key(key), self.get()) {
            let name = TaskName::new(key);
            self.hashes.forget_under(&cp.dir(&name));
            let _ = cp.remove(&name);
        }
    }

    /// The connection ends: released copies not recycled are removed.
    pub(crate) fn flush(&self) {
        if let Some(Ok(cp)) = self.copies.get() {
            let _ = cp.flush();
        }
    }
}

/// Removes the files of `dir` whose paths are not in `keep`, then the directories left empty.
pub(crate) fn mirror<'a>(dir: &Path, keep: impl IntoIterator<Item = &'a str>) -> io::Result<()> {
    let keep: HashSet<&str> = keep.into_iter().collect();
    let mut rels = Vec::new();
    files::walk(dir, "", &mut rels, 0)?;
    for rel in rels {
        if !keep.contains(rel.as_str()) {
            fs::remove_file(dir.join(&rel))?;
        }
    }
    files::remove_empty_dirs(dir, false)?;
    Ok(())
}

/// Worker: makes the copy at `dir` hold the paths of `wanted` (the controller's manifest) and
/// returns the ones it lacks or holds with other content.
pub(crate) fn prepare(
    dir: &Path,
    wanted: &[FileEntry],
    hashes: &tree::Hashes,
) -> io::Result<Vec<String>> {
    mirror(dir, wanted.iter().map(|e| e.path.as_str()))?;
    Ok(files::needed(dir, wanted, |root, rel| {
        hashes.entry(root, rel)
    }))
}

/// Worker, after an attempt that did not succeed: the copy's paths, and the files that differ
/// from `before` (the copy when the attempt started), with their content.
pub(crate) fn changed(dir: &Path, before: &[FileEntry], hashes: &tree::Hashes) -> io::Result<Back> {
    let after = manifest(dir, hashes)?;
    let mut changed = Vec::new();
    for e in &after {
        let same = before
            .binary_search_by(|b| b.path.cmp(&e.path))
            .is_ok_and(|i| before[i].hash == e.hash && before[i].mode == e.mode);
        if !same {
            let bytes = fs::read(dir.join(&e.path))?;
            // The size the frames will carry, whatever happened since the hash.
            changed.push((
                FileEntry {
                    size: bytes.len() as u64,
                    ..e.clone()
                },
                bytes,
            ));
        }
    }
    Ok(Back {
        held: after.into_iter().map(|e| e.path).collect(),
        changed,
    })
}

/// Controller: what an attempt that did not succeed left on its host, written into the task's
/// directory here: the changed files (atomically), and every file the host's copy no longer
/// holds removed.
pub(crate) fn bring_back(dir: &Path, held: &[String], files: Files) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (entry, bytes) in files {
        if !held.contains(&entry.path) {
            return Err(format!(
                "the host sent checkpoint file {} that it does not hold",
                entry.path
            ));
        }
        tree::write_file(dir, &entry.path, entry.mode, &bytes)
            .map_err(|e| format!("cannot write checkpoint file {}: {e}", entry.path))?;
    }
    mirror(dir, held.iter().map(String::as_str))
        .map_err(|e| format!("cannot update {}: {e}", dir.display()))
}

/// The checkpoints of a run with hosts, on the controller: where they are (set when the run
/// keeps state) and which hosts keep a copy of which (to remove them once the task succeeds).
#[derive(Default)]
pub(crate) struct Copies {
    checkpoints: OnceLock<Checkpoints>,
    /// The hashes of the checkpoints' files here, so that a file is read again only once it
    /// changed.
    hashes: tree::Hashes,
    /// Key -> the hosts that kept a copy after an attempt that did not succeed there.
    holders: Mutex<HashMap<String, Vec<Arc<str>>>>,
}

/// How an attempt on a host gets its checkpoint.
#[derive(Clone)]
pub(crate) enum Given {
    /// The run keeps no checkpoints.
    None,
    /// `shared_fs=1`: the directory here, as is.
    Shared(PathBuf),
    /// The host's copy `key` of the directory here, `dir`.
    Copy { dir: PathBuf, key: String },
}

impl Given {
    pub(crate) fn shared(&self) -> Option<&Path> {
        match self {
            Given::Shared(dir) => Some(dir),
            _ => None,
        }
    }

    pub(crate) fn key(&self) -> Option<&str> {
        match self {
            Given::Copy { key, .. } => Some(key),
            _ => None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hosts {
    /// Gives attempts on hosts their tasks' checkpoint directories (SPEC 12).
    pub(crate) fn set_checkpoints(&self, checkpoints: Checkpoints) {
        let _ = self.copies.checkpoints.set(checkpoints);
    }

    /// [`Hosts::checkpoint_before`] when it would neither send nor make anything: `None` when
    /// a copy on the host may have to be brought up to date first, or (`shared_fs`) the
    /// task's directory is still to be made, which is a thread's work. Called under the run's
    /// lock: one `stat`, no write to a file system (a shared one can take milliseconds).
    pub(super) fn checkpoint_at_once(&self, place: &Place, job: &Job) -> Option<Given> {
        let Some(cp) = self.copies.checkpoints.get() else {
            return Some(Given::None);
        };
        let dir = cp.dir(&job.name);
        match (place.spec.shared_fs, dir.is_dir()) {
            (true, true) => Some(Given::Shared(dir)),
            (false, false) => {
                let key = key(&dir);
                Some(Given::Copy { dir, key })
            }
            (true, false) | (false, true) => None,
        }
    }

    /// Before attempt `id` of `job` on `place`: the task's directory here, and on a host
    /// without `shared_fs` its copy there brought up to date (only the files it lacks
    /// travel). On failure, the attempt's end.
    pub(super) fn checkpoint_before(
        &self,
        place: &Place,
        conn: &Conn,
        job: &Job,
        id: u64,
        rx: &Receiver,
    ) -> Result<Given, Box<Attempt>> {
        let Some(cp) = self.copies.checkpoints.get() else {
            return Ok(Given::None);
        };
        let error = |m: String| Box::new(Attempt::new(Outcome::Error).message(m));
        if place.spec.shared_fs {
            let dir = cp.prepare(&job.name).map_err(|e| {
                error(format!(
                    "cannot create checkpoint directory {}: {e}",
                    cp.dir(&job.name).display()
                ))
            })?;
            return Ok(Given::Shared(dir));
        }
        // The directory here is created only when files come back into it: most tasks save
        // nothing, and their attempts cost one `stat` here rather than a directory made,
        // read and removed.
        let dir = cp.dir(&job.name);
        let files = if dir.is_dir() {
            manifest(&dir, &self.copies.hashes)
                .map_err(|e| error(format!("cannot read checkpoint {}: {e}", dir.display())))?
        } else {
            Vec::new()
        };
        let key = key(&dir);
        // An empty checkpoint (most tasks save nothing) costs nothing more: the `Run` with a
        // key and no `Checkpoint` before it tells the host to empty its copy.
        if files.is_empty() {
            return Ok(Given::Copy { dir, key });
        }
        let sent = conn.send_with(|w| {
            protocol::send(
                w,
                &ToWorker::Checkpoint {
                    id,
                    key: key.clone(),
                    files: files.clone(),
                },
            )
        });
        // Any other error is a broken connection: the reader tells this attempt.
        if let Err(e @ (ChannelError::TooLarge { .. } | ChannelError::Encode(_))) = &sent {
            return Err(error(format!(
                "cannot send the checkpoint: {}",
                crate::error::error_chain(e)
            )));
        }
        let need = loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Msg::Need(paths)) => break paths,
                Ok(Msg::Lost(reason)) => return Err(Box::new(Attempt::lost(reason))),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Box::new(Attempt::lost("the connection closed")))
                }
            }
        };
        for rel in need {
            let Ok(i) = files.binary_search_by(|e| e.path.as_str().cmp(rel.as_str())) else {
                return Err(error(format!(
                    "the host asked for `{rel}`, which is not in the checkpoint"
                )));
            };
            let entry = &files[i];
            // Read whole before the header goes: a read that fails half-way must not leave
            // the stream short of the announced bytes.
            let bytes = fs::read(dir.join(&rel))
                .map_err(|e| error(format!("cannot read checkpoint file {rel}: {e}")))?;
            // A broken connection is the reader's to report, as above.
            let _ = conn.send_with(|w| {
                protocol::send(
                    w,
                    &ToWorker::CheckpointFile {
                        key: key.clone(),
                        path: rel.clone(),
                        mode: entry.mode,
                        size: bytes.len() as u64,
                    },
                )?;
                protocol::send_file(w, &bytes)
            });
        }
        Ok(Given::Copy { dir, key })
    }

    /// After an attempt on `place` that ended with `back` (see `conn::Done`): what the
    /// host's copy holds is written here; a copy removed there (the task succeeded) is
    /// removed from the other hosts too.
    pub(super) fn checkpoint_after(
        &self,
        place: &Place,
        given: &Given,
        back: Option<Back>,
    ) -> Result<(), String> {
        let Given::Copy { dir, key } = given else {
            return Ok(());
        };
        let Some(back) = back else {
            // Removed there: the task succeeded.
            self.copies.hashes.forget_under(dir);
            self.forget_elsewhere(key, Some(&place.name));
            return Ok(());
        };
        bring_back(dir, &back.held, back.changed)?;
        let mut holders = lock(&self.copies.holders);
        let on = holders.entry(key.clone()).or_default();
        if !on.contains(&place.name) {
            on.push(place.name.clone());
        }
        Ok(())
    }

    /// An attempt of `job` succeeded on this machine: the hosts that kept a copy drop it.
    pub(super) fn checkpoint_passed_here(&self, job: &Job) {
        if lock(&self.copies.holders).is_empty() {
            return;
        }
        if let Some(cp) = self.copies.checkpoints.get() {
            self.forget_elsewhere(&key(&cp.dir(&job.name)), None);
        }
    }

    fn forget_elsewhere(&self, key: &str, except: Option<&Arc<str>>) {
        let Some(on) = lock(&self.copies.holders).remove(key) else {
            return;
        };
        for name in on.iter().filter(|n| Some(*n) != except) {
            let Some(place) = self.places.iter().find(|p| p.name == *name) else {
                continue;
            };
            let conn = lock(&place.conn).clone();
            if let Some(conn) = conn.filter(|c| c.is_alive()) {
                // Best effort: a copy left behind is never trusted (mirrored before use).
                let _ = conn.send_with(|w| {
                    protocol::send(
                        w,
                        &ToWorker::ForgetCheckpoint {
                            key: key.to_string(),
                        },
                    )
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_mirrored_and_only_changes_come_back() {
        let tmp = tempfile::tempdir().unwrap();
        let here = tmp.path().join("here");
        let there = tmp.path().join("there");
        fs::create_dir_all(here.join(".sub")).unwrap();
        fs::write(here.join("a"), "1").unwrap();
        fs::write(here.join(".sub/b"), "2").unwrap();
        fs::create_dir_all(there.join("old")).unwrap();
        fs::write(there.join("old/stale"), "x").unwrap();
        fs::write(there.join("a"), "1").unwrap();
        let hashes = tree::Hashes::default();
        let wanted = manifest(&here, &hashes).unwrap();
        let paths: Vec<_> = wanted.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, [".sub/b", "a"]);
        // The stale file goes, `a` is there already: only `.sub/b` is needed.
        assert_eq!(prepare(&there, &wanted, &hashes).unwrap(), [".sub/b"]);
        assert!(!there.join("old").exists());
        tree::write_file(&there, ".sub/b", 0o644, b"2").unwrap();
        let before = manifest(&there, &hashes).unwrap();
        assert_eq!(before, wanted);
        // The attempt changes `a`, removes `.sub/b`, adds `c`.
        fs::write(there.join("a"), "2").unwrap();
        fs::remove_file(there.join(".sub/b")).unwrap();
        fs::write(there.join("c"), "3").unwrap();
        let back = changed(&there, &before, &hashes).unwrap();
        assert_eq!(back.held, ["a", "c"]);
        let sent: Vec<_> = back.changed.iter().map(|(e, _)| e.path.as_str()).collect();
        assert_eq!(sent, ["a", "c"]);
        bring_back(&here, &back.held, back.changed).unwrap();
        assert_eq!(
            manifest(&here, &hashes).unwrap(),
            manifest(&there, &hashes).unwrap()
        );
        assert!(!here.join(".sub").exists());
    }

    #[test]
    fn keys_are_hex_and_nothing_else_names_a_copy() {
        let k = key(Path::new("/state/checkpoints/a"));
        assert_eq!(k.len(), 32);
        assert_ne!(k, key(Path::new("/state/checkpoints/b")));
        for bad in ["../x", "", "zz", &"g".repeat(32)] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        assert!(check_key(&k).is_ok());
    }

    #[test]
    fn a_file_the_host_does_not_hold_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let entry = FileEntry {
            path: "x".into(),
            hash: String::new(),
            mode: 0o644,
            size: 1,
        };
        let err = bring_back(tmp.path(), &[], vec![(entry, b"1".to_vec())]).unwrap_err();
        assert!(err.contains("does not hold"), "{err}");
    }
}
