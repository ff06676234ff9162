//! How a finished Slurm job becomes an attempt's outcome (SPEC section 10), without I/O.
//!
//! The job's own exit record on the shared filesystem is the truth about the task; Slurm's state
//! is the complement: a time limit, an out-of-memory kill, a node failure or a preemption
//! overrides an exit 0, and a state pexen does not know is never a pass.

use crate::pool::command::procs::signal_name;
use crate::task::Outcome;

/// Where a job is, as far as `squeue` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not polled since the job was registered.
    NotYet,
    /// Queued, running or finishing (`PENDING`, `RUNNING`, `COMPLETING`, ...).
    Active(String),
    /// A final state (`COMPLETED`, `FAILED`, `TIMEOUT`, `OUT_OF_MEMORY`, ...).
    Ended(String),
    /// No longer listed: its record aged out (`MinJobAge`), or it never reached this cluster.
    Gone,
}

/// The states of a job that has not ended yet.
const ACTIVE: [&str; 13] = [
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "RESV_DEL_HOLD",
];

impl Seen {
    /// From a `%T` state word of `squeue`.
    pub(crate) fn from_state(state: &str) -> Seen {
        if ACTIVE.contains(&state) {
            Seen::Active(state.to_owned())
        } else {
            Seen::Ended(state.to_owned())
        }
    }

    pub(crate) fn is_over(&self) -> bool {
        matches!(self, Seen::Ended(_) | Seen::Gone)
    }
}

/// Why pexen itself cancelled a job, if it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CancelledBy {
    Nobody,
    /// pexen's watchdog: the task's `timeout` passed.
    Timeout,
    /// The run was cancelled (Ctrl-C).
    Interrupt,
}

/// What to do with a job that is over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The attempt ended: its outcome and, for anything but a pass, why.
    Done(Outcome, Option<String>),
    /// The job was lost through no fault of the task (node failure, preemption): submit it
    /// again, without counting an attempt.
    Requeue(String),
    /// The task exited 75: it suspends the run (SPEC section 12).
    Suspend,
}

/// The exit record a job wrote, when it wrote one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExitRecord {
    pub code: i32,
    /// The last line of the task's stderr when the command could not be started (`env: ...`).
    pub start_error: Option<String>,
}

/// The outcome of a job that is over (`seen.is_over()`), from its state, its exit record and
/// whether pexen cancelled it.
pub(crate) fn verdict(
    job: &str,
    seen: &Seen,
    exit: Option<&ExitRecord>,
    cancelled: CancelledBy,
) -> Verdict {
    let state = match seen {
        Seen::Ended(s) => Some(s.as_str()),
        _ => None,
    };
    match cancelled {
        CancelledBy::Timeout => return Verdict::Done(Outcome::Timeout, None),
        CancelledBy::Interrupt => {
            return Verdict::Done(
                Outcome::Error,
                Some(crate::pool::command::INTERRUPTED.to_owned()),
            )
        }
        CancelledBy::Nobody => {}
    }
    match state {
        Some("TIMEOUT") => Verdict::Done(
            Outcome::Timeout,
            Some(format!("Slurm ended job {job} at its time limit")),
        ),
        Some("OUT_OF_MEMORY") => Verdict::Done(
            Outcome::Error,
            Some(format!("out of memory (Slurm job {job})")),
        ),
        Some(s @ ("NODE_FAIL" | "BOOT_FAIL" | "PREEMPTED")) => {
            Verdict::Requeue(format!("Slurm job {job} ended {s}"))
        }
        Some("CANCELLED") => Verdict::Done(
            Outcome::Error,
            Some(format!("Slurm job {job} was cancelled outside pexen")),
        ),
        // The batch script exits 0 once it wrote the exit record; FAILED with a record means the
        // script was disturbed after that, and the record still tells what the task did.
        Some("COMPLETED" | "FAILED") | None => match exit {
            Some(record) => exit_verdict(record),
            None => Verdict::Done(
                Outcome::Error,
                Some(match state {
                    Some(s) => format!("Slurm job {job} ended {s} without writing its exit status"),
                    None => {
                        format!("Slurm job {job} left the queue without writing its exit status")
                    }
                }),
            ),
        },
        Some(other) => Verdict::Done(
            Outcome::Error,
            Some(format!("Slurm job {job} ended in state {other}")),
        ),
    }
}

/// The outcome of an exit status, as for a local command (SPEC section 3). The shell reports a
/// command killed by signal N as 128 + N.
fn exit_verdict(record: &ExitRecord) -> Verdict {
    if let Some(why) = &record.start_error {
        return Verdict::Done(Outcome::Error, Some(start_error(why)));
    }
    match record.code {
        0 => Verdict::Done(Outcome::Pass, None),
        77 => Verdict::Done(Outcome::Skip, Some("exit code 77".into())),
        crate::pool::command::SUSPEND_EXIT => Verdict::Suspend,
        code @ 129..=159 => Verdict::Done(
            Outcome::Error,
            Some(format!("killed by signal {}", signal_name(code - 128))),
        ),
        code => Verdict::Done(Outcome::Fail, Some(format!("exit code {code}"))),
    }
}

/// `env: ‘./x’: No such file or directory` -> `cannot start ./x: No such file or directory`, as
/// a local start error reads.
fn start_error(line: &str) -> String {
    let rest = line.strip_prefix("env: ").unwrap_or(line);
    for (open, close) in [('‘', '’'), ('\'', '\'')] {
        if let Some(quoted) = rest.strip_prefix(open) {
            if let Some((program, reason)) = quoted.split_once(close) {
                if let Some(reason) = reason.strip_prefix(": ") {
                    return format!("cannot start {program}: {reason}");
                }
            }
        }
    }
    format!("cannot start: {rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitRecord {
        ExitRecord {
            code,
            start_error: None,
        }
    }

    fn ended(s: &str) -> Seen {
        Seen::from_state(s)
    }

    #[test]
    fn the_exit_record_decides_a_completed_job() {
        let v = |code| {
            verdict(
                "7",
                &ended("COMPLETED"),
                Some(&exit(code)),
                CancelledBy::Nobody,
            )
        };
        assert_eq!(v(0), Verdict::Done(Outcome::Pass, None));
        assert_eq!(
            v(3),
            Verdict::Done(Outcome::Fail, Some("exit code 3".into()))
        );
        assert_eq!(
            v(77),
            Verdict::Done(Outcome::Skip, Some("exit code 77".into()))
        );
        assert_eq!(v(75), Verdict::Suspend);
        assert_eq!(
            v(137),
            Verdict::Done(Outcome::Error, Some("killed by signal SIGKILL".into()))
        );
        // A record read after the job aged out of squeue is just as good.
        assert_eq!(
            verdict("7", &Seen::Gone, Some(&exit(0)), CancelledBy::Nobody),
            Verdict::Done(Outcome::Pass, None)
        );
    }

    #[test]
    fn slurm_failures_override_an_exit_0() {
        let v = |s: &str| verdict("7", &ended(s), Some(&exit(0)), CancelledBy::Nobody);
        assert!(matches!(v("TIMEOUT"), Verdict::Done(Outcome::Timeout, _)));
        assert_eq!(
            v("OUT_OF_MEMORY"),
            Verdict::Done(Outcome::Error, Some("out of memory (Slurm job 7)".into()))
        );
        for s in ["NODE_FAIL", "BOOT_FAIL", "PREEMPTED"] {
            assert_eq!(v(s), Verdict::Requeue(format!("Slurm job 7 ended {s}")));
        }
        assert_eq!(
            v("CANCELLED"),
            Verdict::Done(
                Outcome::Error,
                Some("Slurm job 7 was cancelled outside pexen".into())
            )
        );
        // A state pexen does not know is never a pass.
        assert_eq!(
            v("DEADLINE"),
            Verdict::Done(
                Outcome::Error,
                Some("Slurm job 7 ended in state DEADLINE".into())
            )
        );
    }

    #[test]
    fn pexen_s_own_cancellations_name_the_reason() {
        let v = |by| verdict("7", &ended("CANCELLED"), None, by);
        assert_eq!(
            v(CancelledBy::Timeout),
            Verdict::Done(Outcome::Timeout, None)
        );
        assert_eq!(
            v(CancelledBy::Interrupt),
            Verdict::Done(Outcome::Error, Some("interrupted".into()))
        );
    }

    #[test]
    fn no_exit_record_is_an_error() {
        assert!(matches!(
            verdict("7", &ended("COMPLETED"), None, CancelledBy::Nobody),
            Verdict::Done(Outcome::Error, Some(m)) if m.contains("without writing its exit status")
        ));
        assert!(matches!(
            verdict("7", &Seen::Gone, None, CancelledBy::Nobody),
            Verdict::Done(Outcome::Error, Some(m)) if m.contains("left the queue")
        ));
        let start = ExitRecord {
            code: 127,
            start_error: Some("env: ‘./nope’: No such file or directory".into()),
        };
        assert!(matches!(
            verdict("7", &ended("COMPLETED"), Some(&start), CancelledBy::Nobody),
            Verdict::Done(Outcome::Error, Some(m)) if m == "cannot start ./nope: No such file or directory"
        ));
    }

    #[test]
    fn active_states_are_not_over() {
        for s in ["PENDING", "RUNNING", "COMPLETING", "CONFIGURING"] {
            assert!(!Seen::from_state(s).is_over(), "{s}");
        }
        assert!(Seen::from_state("COMPLETED").is_over());
        assert!(!Seen::NotYet.is_over());
    }
}
