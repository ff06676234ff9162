//! Telling someone outside the process which task processes are running, so that they can be
//! ended if pexen itself is killed with SIGKILL (the state directory's `running` record, see
//! `state::live`). The runner only reports; what is written where is the tracker's business.

use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::Arc;

/// Receives the process groups a [`super::CommandRunner`] starts and ends.
///
/// Called on the worker threads, once per attempt still running at its first tick (25 ms): keep
/// it to one cheap write.
pub trait Tracker: Send + Sync {
    /// The runner's private temp dir. Every task process inherits `PEXEN_RESULTS=DIR/…` in its
    /// environment, which identifies descendants that left their group.
    fn runner_started(&self, temp_dir: &Path);
    /// A task leader (and group, `pgid == pid`) started; `start_time` is field 22 of
    /// `/proc/PID/stat` (clock ticks since boot), which with the pid identifies the process for
    /// as long as it lives: a later process reusing the pid has another start time.
    ///
    /// There is no matching "ended": a leader that exits by itself may leave members in its
    /// group, and the group stays worth recording until the run ends. The tracker forgets
    /// them all when the run ends cleanly.
    fn leader_started(&self, pid: i32, start_time: u64);
}

/// A shared [`Tracker`], comparable by identity, for [`super::CommandConfig`].
#[derive(Clone)]
pub struct TrackerHandle(pub Arc<dyn Tracker>);

impl fmt::Debug for TrackerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tracker")
    }
}

impl PartialEq for TrackerHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TrackerHandle {}

/// What `/proc/PID/stat` says about a process that identifies it and places it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    /// `Z` or `X`: dead, only a pid left to reap.
    pub zombie: bool,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// Clock ticks since boot when the process started.
    pub start_time: u64,
}

/// Reads `/proc/PID/stat`; `None` when the process is gone (or `/proc` is not mounted).
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

fn parse_stat(pid: i32, text: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may itself hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // Fields 3, 4, 5, 6 (state, ppid, pgrp, session), then 22 (starttime): 15 fields further.
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    let start_time = fields.nth(15)?.parse().ok()?;
    Some(ProcStat {
        pid,
        zombie: state == "Z" || state == "X",
        ppid,
        pgrp,
        session,
        start_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_of_a_name_with_parentheses_and_spaces() {
        let text = "42 (a) b (c) S 1 42 41 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 \
                    100 18446744073709551615\n";
        let s = parse_stat(42, text).unwrap();
        assert_eq!(
            (s.ppid, s.pgrp, s.session, s.start_time, s.zombie),
            (1, 42, 41, 987_654, false)
        );
    }

    #[test]
    fn own_stat_is_readable_and_stable() {
        let me = std::process::id() as i32;
        let a = proc_stat(me).unwrap();
        let b = proc_stat(me).unwrap();
        assert_eq!(a.start_time, b.start_time);
        assert!(a.start_time > 0);
        // SAFETY: getsid(2) only reads.
        assert_eq!(a.session, unsafe { libc::getsid(0) });
        assert!(proc_stat(-5).is_none());
    }
}
