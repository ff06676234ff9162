//! The state as files, both ways: its manifest (every regular file of `journal` and
//! `checkpoints/`, hidden ones included: a task may save `.progress.tmp`), content-addressed
//! transfer in raw chunks (a checkpoint may be larger than a frame), atomic writes, and the
//! mirror that removes what the other side no longer has (the checkpoint of a task that
//! passed there).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::host::tree;
use crate::protocol::teleport::CHUNK;
use crate::protocol::{self, ChannelError, FileEntry, FrameReader};

/// The parts of a state directory that travel (the lock and the record of running tasks are
/// this machine's own).
const JOURNAL: &str = "journal";
const CHECKPOINTS: &str = "checkpoints";

/// Every file of `state` that travels, sorted by path, with its content hash.
pub(crate) fn state_manifest(state: &Path) -> io::Result<Vec<FileEntry>> {
    let mut rels = Vec::new();
    if fs::symlink_metadata(state.join(JOURNAL)).is_ok_and(|m| m.is_file()) {
        rels.push(JOURNAL.to_string());
    }
    walk(&state.join(CHECKPOINTS), CHECKPOINTS, &mut rels, 0)?;
    rels.sort();
    rels.into_iter().map(|rel| entry(state, rel)).collect()
}

/// Regular files only: a symbolic link in a checkpoint is not followed (it may point anywhere).
/// Paths are `prefix/...` (just the names below `dir` with an empty `prefix`).
pub(crate) fn walk(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<String>,
    depth: usize,
) -> io::Result<()> {
    if depth > 64 {
        return Err(io::Error::other(format!(
            "{} is nested more than 64 levels deep",
            dir.display()
        )));
    }
    let items = match fs::read_dir(dir) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for item in items {
        let item = item?;
        let Some(name) = item.file_name().to_str().map(String::from) else {
            continue;
        };
        if name.contains(".pexen-tmp-") {
            continue;
        }
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = item.file_type()?;
        if kind.is_dir() {
            walk(&item.path(), &rel, out, depth + 1)?;
        } else if kind.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

pub(crate) use crate::host::tree::entry;

/// `rel` as a path of the state under `root`: the journal or a file under `checkpoints/`,
/// nothing else (a path from the other side is never trusted further).
pub(crate) fn state_path(root: &Path, rel: &str) -> io::Result<PathBuf> {
    let path = tree::under(root, rel)?;
    if rel == JOURNAL || rel.starts_with("checkpoints/") {
        Ok(path)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing `{rel}`: not a file of the journal or the checkpoints"),
        ))
    }
}

/// The paths of `files` that `root` lacks or holds with other content, as `entry` (a file's
/// manifest entry) sees them.
pub(crate) fn needed(
    root: &Path,
    files: &[FileEntry],
    entry: impl Fn(&Path, String) -> io::Result<FileEntry>,
) -> Vec<String> {
    files
        .iter()
        .filter(|want| {
            entry(root, want.path.clone()).map_or(true, |have| {
                have.hash != want.hash || have.mode != want.mode
            })
        })
        .map(|e| e.path.clone())
        .collect()
}

/// Sends the content of `path` (exactly `size` bytes) as raw chunks, after its header.
pub(crate) fn send_chunks<W: Write + ?Sized>(
    out: &mut W,
    path: &Path,
    size: u64,
) -> Result<(), TransferError> {
    let mut file = File::open(path).map_err(|source| TransferError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut left = size;
    let mut buf = vec![0; CHUNK.min(size as usize)];
    while left > 0 {
        let want = (left as usize).min(CHUNK);
        file.read_exact(&mut buf[..want])
            .map_err(|source| TransferError::Read {
                path: path.to_owned(),
                source,
            })?;
        protocol::send_raw(out, &buf[..want])?;
        left -= want as u64;
    }
    Ok(())
}

/// Receives `size` bytes of raw chunks into `dest`, written atomically with `mode` (a
/// temporary file, synced, then renamed over it).
pub(crate) fn receive_chunks(
    frames: &mut FrameReader,
    dest: &Path,
    mode: u32,
    size: u64,
    wait: impl Fn() -> Option<Instant>,
) -> Result<(), TransferError> {
    let io_err = |source| TransferError::Write {
        path: dest.to_owned(),
        source,
    };
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io_err)?;
    }
    let tmp = tree::temp_beside(dest);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode & 0o777)
            .open(&tmp)
            .map_err(io_err)?;
        let mut got = 0u64;
        while got < size {
            let chunk = frames.next_raw(wait())?.ok_or(TransferError::Silent)?;
            got += chunk.len() as u64;
            if chunk.is_empty() || got > size {
                return Err(TransferError::Size {
                    path: dest.to_owned(),
                });
            }
            f.write_all(&chunk).map_err(io_err)?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode & 0o777))
            .map_err(io_err)?;
        f.sync_data().map_err(io_err)?;
        drop(f);
        fs::rename(&tmp, dest).map_err(io_err)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes the files of the state under `root` that are not in `keep`, then the checkpoint
/// directories left empty.
pub(crate) fn mirror(root: &Path, keep: &HashSet<&str>) -> io::Result<()> {
    for entry in state_manifest(root)? {
        if !keep.contains(entry.path.as_str()) {
            fs::remove_file(root.join(&entry.path))?;
        }
    }
    remove_empty_dirs(&root.join(CHECKPOINTS), false)?;
    Ok(())
}

/// Removes the empty directories below `dir` (and `dir` itself with `this`).
pub(crate) fn remove_empty_dirs(dir: &Path, this: bool) -> io::Result<bool> {
    let items = match fs::read_dir(dir) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    let mut empty = true;
    for item in items {
        let item = item?;
        if item.file_type()?.is_dir() {
            empty &= remove_empty_dirs(&item.path(), true)?;
        } else {
            empty = false;
        }
    }
    if empty && this {
        fs::remove_dir(dir)?;
    }
    Ok(empty)
}

/// Why moving a file failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: the content does not have the announced size", path.display())]
    Size { path: PathBuf },
    #[error("the other side went silent")]
    Silent,
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_has_the_journal_and_every_checkpoint_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        fs::write(s.join("journal"), "j").unwrap();
        fs::write(s.join("lock"), "1").unwrap();
        fs::write(s.join("running"), "x").unwrap();
        fs::create_dir_all(s.join("checkpoints/a%2Fb")).unwrap();
        fs::write(s.join("checkpoints/a%2Fb/.progress"), "3").unwrap();
        fs::create_dir_all(s.join("checkpoints/empty")).unwrap();
        let m = state_manifest(s).unwrap();
        let paths: Vec<_> = m.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["checkpoints/a%2Fb/.progress", "journal"]);
        assert!(needed(s, &m, entry).is_empty());
        let mut other = m.clone();
        other[0].hash = "0".repeat(64);
        assert_eq!(needed(s, &other, entry), ["checkpoints/a%2Fb/.progress"]);
    }

    #[test]
    fn only_state_paths_are_accepted() {
        let root = Path::new("/s");
        assert!(state_path(root, "journal").is_ok());
        assert!(state_path(root, "checkpoints/x/y").is_ok());
        for bad in [
            "lock",
            "running",
            "../journal",
            "checkpoints/../../x",
            "/etc/passwd",
        ] {
            assert!(state_path(root, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_mirror_removes_what_the_other_side_has_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        fs::write(s.join("journal"), "j").unwrap();
        fs::write(s.join("lock"), "1").unwrap();
        fs::create_dir_all(s.join("checkpoints/a")).unwrap();
        fs::create_dir_all(s.join("checkpoints/b")).unwrap();
        fs::write(s.join("checkpoints/a/p"), "1").unwrap();
        fs::write(s.join("checkpoints/b/p"), "2").unwrap();
        mirror(s, &["journal", "checkpoints/b/p"].into_iter().collect()).unwrap();
        assert!(s.join("lock").is_file());
        assert!(!s.join("checkpoints/a").exists());
        assert!(s.join("checkpoints/b/p").is_file());
    }

    #[test]
    fn chunks_round_trip_over_the_limit_of_one_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("big");
        let data: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &data).unwrap();
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both descriptors are fresh and owned by nothing else.
        let (r, mut w) = unsafe {
            use std::os::fd::FromRawFd;
            (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
        };
        let size = data.len() as u64;
        let sender = std::thread::spawn(move || send_chunks(&mut w, &src, size).unwrap());
        let mut frames = FrameReader::new(r);
        let dest = dir.path().join("out/copy");
        receive_chunks(&mut frames, &dest, 0o640, size, || None).unwrap();
        sender.join().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), data);
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }
}
