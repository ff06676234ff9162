//! One run per state directory: an exclusive advisory lock (`flock`) on `DIR/lock`, as cargo
//! locks its build directory. Two runs on one journal would interleave or replace each other's
//! records; the second is refused at once (exit 3) with a message naming the holder, rather than
//! waiting, so that a script never hangs silently behind a forgotten run.
//!
//! The lock belongs to the open file description: the kernel releases it when the holder exits,
//! however it exits (`kill -9` included), and the descriptor is close-on-exec, so no task
//! inherits it and keeps the directory locked after pexen is gone.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::state::journal::JournalError;

/// Holds the state directory's lock until dropped.
#[derive(Debug)]
pub struct StateLock {
    /// Keeps the lock: closing the last descriptor of it releases it.
    _file: File,
    dir: PathBuf,
}

impl StateLock {
    /// Takes the lock of `dir` (created if missing), or fails with [`JournalError::Locked`]
    /// naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join("lock");
        let lock_error = |source| JournalError::Lock {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(lock_error)?;
        // SAFETY: flock takes a descriptor we own and an integer; it touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(JournalError::Locked {
                    dir: dir.to_owned(),
                    holder: holder(&mut file),
                });
            }
            return Err(lock_error(e));
        }
        // Who holds it, for the message of a run refused meanwhile. Best effort: the lock is
        // what counts, and a reader that sees an empty file says so.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(Self {
            _file: file,
            dir: dir.to_owned(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `pid 1234 (pexen run tree --state s)`, from the lock file and `/proc`.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let Ok(pid) = text.trim().parse::<u32>() else {
        return "another process (it has not written its pid yet)".to_owned();
    };
    let command = fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|c| {
            c.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty());
    match command {
        Some(c) => format!("pid {pid} (`{c}`)"),
        None => format!("pid {pid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_then_free_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateLock::acquire(&state).unwrap();
        let err = StateLock::acquire(&state).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, JournalError::Locked { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        // A child that another test thread forked meanwhile holds a copy of the descriptor
        // until it execs (then close-on-exec drops it): free once that has happened.
        loop {
            match StateLock::acquire(&state) {
                Ok(_) => break,
                Err(JournalError::Locked { .. }) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
    }
}
