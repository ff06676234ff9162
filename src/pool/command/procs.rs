//! Process plumbing for command tasks: process-group signals, waiting on a child without reaping
//! it, signal names, and the sweep that finds and kills the orphans of tasks.
//!
//! # Which processes are ours to kill and reap
//!
//! [`become_subreaper`] makes this process a child subreaper, so a task's descendants whose parent
//! dies (double-forking daemons, `setsid` children, background jobs of a finished task) are
//! reparented to us instead of to init. We must not reap or signal children that other code in
//! this process spawned (the process pool's workers, an embedder's own `Command`s): their owners
//! would then get `ECHILD`. So the sweep only touches a child of ours when it is identified as a
//! task's orphan, by either of:
//! - its initial environment holds `PEXEN_RESULTS=<this runner's temp dir>/`: every task
//!   descendant inherits it unless it scrubs its environment (the only way out of the net), and
//!   no process spawned by other code has it;
//! - it is in the process group of one of this runner's tasks without leading that group (a task
//!   leader is reaped by its `run()` call; a child spawned elsewhere with its own group leads it).
//!   This is what identifies zombies, whose environment can no longer be read;
//! - it is an orphan that an earlier sweep identified and signalled (a cancel), recorded by pid
//!   and start time: a `setsid` daemon leads its own group, so once the signal killed it, neither
//!   rule above recognises its zombie.

use std::collections::HashSet;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Once;
use std::time::Duration;

/// Makes this process a child subreaper, once; best effort (a kernel without it lets orphans go
/// to init, where no sweep can find them).
pub(super) fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer argument and touches no memory.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    });
}

/// Sends `signal` to the whole process group `pgid`.
///
/// Callers make sure the group id is pinned (a member is an unreaped child of ours), so the
/// number cannot have been reused by an unrelated group.
pub(crate) fn signal_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) touches no memory; a vanished group only yields ESRCH.
        unsafe { libc::kill(-pgid, signal) };
    }
}

fn signal_pid(pid: i32, signal: i32) {
    if pid > 1 {
        // SAFETY: as above.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Reaps every child of ours left in the group `pgid` (after it was sent SIGKILL), blocking
/// until there is none. Its leader must already be reaped (by `std`, which owns it).
pub(crate) fn drain_group(pgid: i32) {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let r = unsafe { libc::waitpid(-pgid, &raw mut status, 0) };
        if r <= 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
}

/// True when the child `pid` has exited; does not reap it, so its pid and group stay pinned.
pub(super) fn has_exited(pid: i32) -> bool {
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out-pointer; WNOWAIT leaves the child unreaped.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &raw mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: waitid filled `info` (or left it zeroed, which reads as pid 0).
    r == 0 && unsafe { info.si_pid() } == pid
}

/// A pidfd: lets a worker sleep until its child exits or a tick passes, with no signal handler
/// and no reaping.
pub(super) struct PidFd(OwnedFd);

impl PidFd {
    /// `None` when the kernel has no pidfd (before 5.3); callers then poll [`has_exited`].
    pub(super) fn open(pid: i32) -> Option<Self> {
        // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is a fresh descriptor (close-on-exec by definition) that nothing else owns.
        Some(Self(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Blocks until the process exits (true) or `timeout` passes (false).
    pub(super) fn wait_exit(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Rounded up, so that a sub-millisecond rest does not turn into a busy loop.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        n > 0
    }
}

/// The name of a signal (`SIGSEGV`), or its number when it has none here.
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        other => return other.to_string(),
    };
    name.to_owned()
}

/// What `/proc/PID/stat` says about one process.
#[derive(Debug, Clone, Copy)]
struct Stat {
    pid: i32,
    zombie: bool,
    ppid: i32,
    pgrp: i32,
    /// Clock ticks after boot: with the pid, names one process even across pid reuse.
    start: u64,
}

impl Stat {
    fn id(&self) -> (i32, u64) {
        (self.pid, self.start)
    }
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    // Field 22 of proc(5); `fields` is at field 6 now.
    let start = fields.nth(16)?.parse().ok()?;
    Some(Stat {
        pid,
        zombie: state == "Z" || state == "X",
        ppid,
        pgrp,
        start,
    })
}

/// Our direct children (including reparented orphans). `/proc/PID/task/*/children` would be
/// cheaper but needs `CONFIG_PROC_CHILDREN`, which common kernels lack; a sweep is rare.
fn children() -> Vec<Stat> {
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .filter(|s| s.ppid == me)
        .collect()
}

fn environ_has(pid: i32, marker: &[u8]) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var.starts_with(marker)))
}

/// Whom a sweep is after.
pub(super) struct Orphans<'a> {
    /// `PEXEN_RESULTS=<temp dir>/`: inherited by every task descendant.
    pub(super) marker: &'a [u8],
    /// The groups of every task this runner started.
    pub(super) groups: &'a HashSet<i32>,
    /// Task leaders still owned by a `run()` call: never touched here.
    pub(super) running: &'a HashSet<i32>,
    /// Orphans identified by an earlier sweep, as `(pid, start time)`.
    pub(super) known: &'a HashSet<(i32, u64)>,
}

impl Orphans<'_> {
    fn find(&self) -> Vec<Stat> {
        children()
            .into_iter()
            .filter(|s| !self.running.contains(&s.pid))
            .filter(|s| {
                (self.groups.contains(&s.pgrp) && s.pgrp != s.pid)
                    || self.known.contains(&s.id())
                    || (!s.zombie && environ_has(s.pid, self.marker))
            })
            .collect()
    }

    /// Signals every orphan and its group (pinned: the orphan is an unreaped child of ours).
    /// Never reaps: a `run()` may be spawning concurrently, and its child must stay std's.
    /// Returns who was signalled, as `(pid, start time)`, for a later sweep to recognise.
    pub(super) fn signal(&self, signal: i32) -> Vec<(i32, u64)> {
        let found = self.find();
        signal_each(&found, signal);
        found.iter().map(Stat::id).collect()
    }

    /// Kills and reaps orphans until none is left: killing one reparents its own children to
    /// us, so this goes one generation deeper per round (bounded, against a fork bomb).
    /// Returns who was reaped, as `(pid, start time)`.
    pub(super) fn kill_and_reap(&self) -> Vec<(i32, u64)> {
        let mut reaped = Vec::new();
        for _ in 0..100 {
            let found = self.find();
            if found.is_empty() {
                break;
            }
            signal_each(&found, libc::SIGKILL);
            for orphan in found {
                let mut status = 0;
                // SAFETY: `status` is a valid out-pointer; the pid is an identified orphan.
                unsafe { libc::waitpid(orphan.pid, &raw mut status, 0) };
                reaped.push(orphan.id());
            }
        }
        reaped
    }
}

fn signal_each(orphans: &[Stat], signal: i32) {
    // SAFETY: getpgrp cannot fail and touches no memory.
    let own_group = unsafe { libc::getpgrp() };
    for orphan in orphans {
        if !orphan.zombie {
            signal_pid(orphan.pid, signal);
            if orphan.pgrp != own_group {
                signal_group(orphan.pgrp, signal);
            }
        }
    }
}
