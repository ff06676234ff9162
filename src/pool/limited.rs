//! A short helper process with a time limit, its output read whole: generators (run when a tree
//! is loaded) and `command` conditions (run when a run starts). Not an attempt: nothing here is
//! journaled or streamed, and the caller decides what a failure means.
//!
//! The child leads its own process group. When it exits, or when the limit passes, the whole
//! group is killed before the leader is reaped (so the group id cannot have been reused), which
//! also ends any grandchild that would hold the output pipes open.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Bytes of stdout kept at most (a generator's output of 10^5 tasks is a few MiB).
const STDOUT_CAP: u64 = 256 << 20;
/// Bytes of stderr kept at most: what an error message shows.
const STDERR_CAP: u64 = 64 << 10;

/// How a helper process ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It exited (or was killed by a signal) within the limit.
    Exited {
        status: ExitStatus,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    /// The limit passed: it was killed, with what it wrote so far.
    TimedOut { stderr: Vec<u8> },
}

/// Runs `cmd` (stdin from `/dev/null`), keeping its stdout when `capture`, and its stderr;
/// kills it and its group after `limit`.
pub(crate) fn run(cmd: &mut Command, limit: Duration, capture: bool) -> std::io::Result<Ended> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + limit;
    let stdout = child.stdout.take().map(|out| reader(out, STDOUT_CAP));
    let stderr = child.stderr.take().map(|err| reader(err, STDERR_CAP));
    let pid = child.id() as libc::pid_t;
    let mut pause = Duration::from_millis(1);
    let timed_out = loop {
        if exited(pid) {
            break false;
        }
        let now = Instant::now();
        if now >= deadline {
            break true;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    // The leader is a zombie or still running: its group id is still ours to kill.
    // SAFETY: signalling a process group we created; no memory is involved.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let status = child.wait()?;
    let stdout = stdout.map(Reader::finish).unwrap_or_default();
    let stderr = stderr.map(Reader::finish).unwrap_or_default();
    Ok(if timed_out {
        Ended::TimedOut { stderr }
    } else {
        Ended::Exited {
            status,
            stdout,
            stderr,
        }
    })
}

/// True once `pid` has exited, without reaping it (`WNOWAIT`).
fn exited(pid: libc::pid_t) -> bool {
    // SAFETY: `info` is a plain struct that waitid fills in; zeroed is a valid value for it.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &raw mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r == 0 && info.si_pid() != 0
    }
}

/// Reads `from` to its end on a thread, keeping `cap` bytes, draining the rest (so that the
/// writer never blocks on a full pipe).
fn reader<R: Read + Send + 'static>(mut from: R, cap: u64) -> Reader {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut from).take(cap).read_to_end(&mut buf);
        let _ = std::io::copy(&mut from, &mut std::io::sink());
        let _ = tx.send(buf);
    });
    Reader(rx)
}

struct Reader(std::sync::mpsc::Receiver<Vec<u8>>);

/// How long the output may stay open after the process group was killed: only a process that
/// left the group (`setsid`) can still hold it, and it does not get to hang the caller.
const DRAIN: Duration = Duration::from_secs(2);

impl Reader {
    /// What was read, once the output closed (or nothing, if it is still open after `DRAIN`).
    fn finish(self) -> Vec<u8> {
        self.0.recv_timeout(DRAIN).unwrap_or_default()
    }
}

/// `exited with code 3` / `was killed by signal 9`.
pub(crate) fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "ended".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_status_and_limit() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let Ended::Exited {
            status,
            stdout,
            stderr,
        } = run(&mut cmd, Duration::from_secs(60), true).unwrap()
        else {
            panic!("ended in time")
        };
        assert_eq!(describe(status), "exited with code 3");
        assert_eq!(
            (stdout.as_slice(), stderr.as_slice()),
            (&b"out\n"[..], &b"err\n"[..])
        );

        // A helper that outlives the limit, with a grandchild holding the pipes: both killed.
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo started >&2; sleep 100 & sleep 100"]);
        let ended = run(&mut cmd, Duration::from_millis(500), true).unwrap();
        // What it wrote before the limit is kept (nothing, on a machine too busy to start it).
        assert!(
            matches!(&ended, Ended::TimedOut { stderr } if b"started\n".starts_with(stderr)),
            "{ended:?}"
        );
    }
}
