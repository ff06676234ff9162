//! What a run has running, on disk (`DIR/running`), so that when pexen is killed with SIGKILL
//! (no handler runs, nothing is cleaned up) the next run in the same state directory can end
//! what it left: task processes running past their timeouts, and its private temp dir.
//!
//! # The record
//!
//! A text file, appended to with one `write(2)` per line while the run goes, removed when the
//! run ends cleanly:
//!
//! ```text
//! pexen-running 1
//! owner PID START        the pexen process: pid and start time
//! tmp /tmp/pexen-…       the command runner's temp dir
//! + PID START            one line per task leader (its pid is its process group id)
//! ```
//!
//! START is field 22 of `/proc/PID/stat`, the clock tick since boot at which the process
//! started. A pid alone is not an identity: once a process is gone its pid is handed out again.
//!
//! # Which processes the next run ends
//!
//! Only when the owner is gone (no live process with its pid and start time), and only processes
//! proven to be the dead run's:
//! - a recorded leader: same pid **and** same start time;
//! - a process whose environment holds `PEXEN_RESULTS=<the dead run's temp dir>/`, which every
//!   task descendant inherits (daemons that left their group included) and no other process has;
//! - a member of a recorded leader's group when the group also holds one of the above and the
//!   member started no earlier than the recorded leader (while a group has a member, its id
//!   cannot be handed out again, so such a group is the task's).
//!
//! Each is signalled through a pidfd opened first and checked against the start time seen in
//! the scan, so a process that exits and has its pid reused in between is never hit. A task
//! that scrubbed its environment, left its group and whose leader is gone cannot be told apart
//! from a stranger, and is left alone.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::pool::command::track::{proc_stat, ProcStat};
use crate::pool::command::Tracker;
use crate::state::journal::JournalError;
use crate::state::lock::StateLock;

const HEADER: &str = "pexen-running 1";

/// This run's record: a [`Tracker`] for the command runner. Removed when dropped (the run
/// ended with pexen alive); left behind by `kill -9`, for the next run to act on.
#[derive(Debug)]
pub struct LiveRecord {
    file: File,
    path: PathBuf,
}

impl LiveRecord {
    /// Under `lock`: ends what a dead earlier run of this state directory left running (see the
    /// module docs), then starts this run's record. Returns notices of what was ended.
    pub fn start(lock: &StateLock) -> Result<(Self, Vec<String>), JournalError> {
        let path = lock.dir().join("running");
        let notices = end_leftovers(&path)?;
        let write_error = |source| JournalError::Write {
            path: path.clone(),
            source,
        };
        let me = std::process::id() as i32;
        let start = proc_stat(me).map_or(0, |s| s.start_time);
        let tmp = path.with_file_name(".running.tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(write_error)?;
        file.write_all(format!("{HEADER}\nowner {me} {start}\n").as_bytes())
            .map_err(write_error)?;
        fs::rename(&tmp, &path).map_err(write_error)?;
        // Appends from now on: reopened in append mode, so each line is one write at the end.
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(write_error)?;
        Ok((Self { file, path }, notices))
    }

    fn line(&self, line: &str) {
        // Best effort: a full disk must not fail the task; the record only helps a later run.
        let _ = (&self.file).write_all(line.as_bytes());
    }
}

impl Tracker for LiveRecord {
    fn runner_started(&self, temp_dir: &Path) {
        let mut line = b"tmp ".to_vec();
        line.extend_from_slice(temp_dir.as_os_str().as_bytes());
        line.push(b'\n');
        let _ = (&self.file).write_all(&line);
    }

    fn leader_started(&self, pid: i32, start_time: u64) {
        self.line(&format!("+ {pid} {start_time}\n"));
    }
}

impl Drop for LiveRecord {
    fn drop(&mut self) {
        // Only our own record: an embedder may have let another run take the directory.
        let ours = match (self.file.metadata(), fs::metadata(&self.path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A parsed record. Lines that do not parse (a torn last line) are ignored.
#[derive(Debug, Default, PartialEq, Eq)]
struct Record {
    owner: Option<(i32, u64)>,
    tmp: Option<PathBuf>,
    leaders: HashMap<i32, u64>,
}

fn parse(text: &[u8]) -> Option<Record> {
    let mut lines = text.split(|b| *b == b'\n');
    if lines.next()? != HEADER.as_bytes() {
        return None;
    }
    let mut record = Record::default();
    let pair = |rest: &[u8]| -> Option<(i32, u64)> {
        let text = std::str::from_utf8(rest).ok()?;
        let (pid, start) = text.split_once(' ')?;
        Some((pid.parse().ok()?, start.parse().ok()?))
    };
    for line in lines {
        if let Some(rest) = line.strip_prefix(b"owner ") {
            record.owner = pair(rest);
        } else if let Some(rest) = line.strip_prefix(b"tmp ") {
            record.tmp = Some(PathBuf::from(std::ffi::OsStr::from_bytes(rest)));
        } else if let Some((pid, start)) = line.strip_prefix(b"+ ").and_then(pair) {
            if pid > 1 {
                record.leaders.insert(pid, start);
            }
        }
    }
    Some(record)
}

/// Ends what the run recorded at `path` left, if that run is dead; removes the record.
fn end_leftovers(path: &Path) -> Result<Vec<String>, JournalError> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(JournalError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let Some(record) = parse(&text) else {
        return Ok(vec![format!(
            "{} is not a record of running tasks; ignored",
            path.display()
        )]);
    };
    let Some((owner, owner_start)) = record.owner else {
        return Ok(Vec::new());
    };
    if proc_stat(owner).is_some_and(|s| s.start_time == owner_start && !s.zombie) {
        // Alive, yet without the lock: it finished its run but still has its runner. Not ours
        // to end.
        return Ok(Vec::new());
    }
    let mut notices = Vec::new();
    let ended = end_processes(&record);
    if !ended.is_empty() {
        let pids: Vec<String> = ended.iter().map(ToString::to_string).collect();
        notices.push(format!(
            "ended {} process{} that a killed earlier run (pid {owner}) left running: {}",
            ended.len(),
            if ended.len() == 1 { "" } else { "es" },
            pids.join(" ")
        ));
    }
    if let Some(tmp) = record.tmp.as_deref().filter(|t| is_runner_temp_dir(t)) {
        if fs::remove_dir_all(tmp).is_ok() {
            notices.push(format!(
                "removed the temporary directory {} of a killed earlier run (pid {owner})",
                tmp.display()
            ));
        }
    }
    let _ = fs::remove_file(path);
    Ok(notices)
}

/// A path named in the record is only removed when it looks like what a command runner
/// creates: a real directory `pexen-…` of ours, private. The record could have been edited.
fn is_runner_temp_dir(path: &Path) -> bool {
    let named = path
        .file_name()
        .is_some_and(|n| n.as_bytes().starts_with(b"pexen-"));
    // SAFETY: geteuid cannot fail and touches no memory.
    let uid = unsafe { libc::geteuid() };
    named
        && fs::symlink_metadata(path)
            .is_ok_and(|m| m.file_type().is_dir() && m.uid() == uid && m.mode() & 0o777 == 0o700)
}

/// Kills every process proven to be the dead run's (module docs), generation by generation
/// (killing one reparents its children, which are found in the next round). Returns the pids.
fn end_processes(record: &Record) -> Vec<i32> {
    let marker = record.tmp.as_ref().map(|t| {
        let mut m = b"PEXEN_RESULTS=".to_vec();
        m.extend_from_slice(t.as_os_str().as_bytes());
        m.push(b'/');
        m
    });
    let me = std::process::id() as i32;
    let mut ended = Vec::new();
    // Bounded, against a task that forks faster than it can be killed.
    for _ in 0..100 {
        let procs: Vec<ProcStat> = all_processes()
            .into_iter()
            .filter(|s| s.pid != me && !s.zombie)
            .collect();
        let proven: Vec<&ProcStat> = procs
            .iter()
            .filter(|s| {
                record.leaders.get(&s.pid) == Some(&s.start_time)
                    || marker.as_deref().is_some_and(|m| environ_has(s.pid, m))
            })
            .collect();
        let groups: HashSet<i32> = proven
            .iter()
            .map(|s| s.pgrp)
            .filter(|g| record.leaders.contains_key(g))
            .collect();
        let proven_pids: HashSet<i32> = proven.iter().map(|s| s.pid).collect();
        let mut victims: Vec<ProcStat> = proven.iter().map(|s| **s).collect();
        victims.extend(procs.iter().copied().filter(|s| {
            groups.contains(&s.pgrp)
                && record
                    .leaders
                    .get(&s.pgrp)
                    .is_some_and(|&t| s.start_time >= t)
                && !proven_pids.contains(&s.pid)
        }));
        if victims.is_empty() {
            break;
        }
        for v in victims {
            if kill_exactly(v) {
                ended.push(v.pid);
            }
        }
    }
    ended.sort_unstable();
    ended.dedup();
    ended
}

/// SIGKILL to the process `seen`, and only to it: through a pidfd, opened before the start
/// time is checked again (after that check the pidfd cannot refer to a newer process). Waits
/// for it to exit, so the next round does not find it again.
fn kill_exactly(seen: ProcStat) -> bool {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, seen.pid, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if proc_stat(seen.pid).is_none_or(|now| now.start_time != seen.start_time) {
        return false;
    }
    // SAFETY: pidfd_send_signal takes a pidfd, a signal, a null siginfo and flags.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if sent != 0 {
        return false;
    }
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // A pidfd is readable once its process has exited; SIGKILL gets there unless the process
    // is in an uninterruptible sleep, which a later round retries after a second.
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    unsafe { libc::poll(&raw mut pfd, 1, 1000) };
    true
}

/// Every process `/proc` shows.
pub(crate) fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .collect()
}

fn environ_has(pid: i32, marker: &[u8]) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var.starts_with(marker)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_parses_and_ignores_a_torn_line() {
        let text = b"pexen-running 1\nowner 10 500\ntmp /tmp/pexen-10-a-0\n+ 11 501\n+ 12 50";
        let r = parse(text).unwrap();
        assert_eq!(r.owner, Some((10, 500)));
        assert_eq!(r.tmp.as_deref(), Some(Path::new("/tmp/pexen-10-a-0")));
        // The torn `+ 12 50` parses as a pair with another start time: harmless, it can only
        // match a process that started at tick 50.
        assert_eq!(r.leaders.get(&11), Some(&501));
        assert!(parse(b"something else\n").is_none());
    }

    #[test]
    fn a_live_owner_is_left_alone_and_a_reused_pid_is_never_hit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("running");
        let me = std::process::id() as i32;
        let start = proc_stat(me).unwrap().start_time;
        // Our own process as the owner: alive, so nothing is touched and the file stays.
        fs::write(
            &path,
            format!("{HEADER}\nowner {me} {start}\n+ {me} {start}\n"),
        )
        .unwrap();
        assert!(end_leftovers(&path).unwrap().is_empty());
        assert!(path.exists());

        // A dead owner whose record names a live process (a child of ours) with another start
        // time: the pid was "reused", so the process must survive.
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let real = proc_stat(pid).unwrap().start_time;
        fs::write(
            &path,
            format!("{HEADER}\nowner 999999999 1\n+ {pid} {}\n", real + 1),
        )
        .unwrap();
        assert!(end_leftovers(&path).unwrap().is_empty());
        assert!(!path.exists());
        assert!(child.try_wait().unwrap().is_none(), "a stranger was killed");

        // The same with its true start time: ended.
        fs::write(
            &path,
            format!("{HEADER}\nowner 999999999 1\n+ {pid} {real}\n"),
        )
        .unwrap();
        let notices = end_leftovers(&path).unwrap();
        assert!(notices[0].contains(&pid.to_string()), "{notices:?}");
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    }
}
