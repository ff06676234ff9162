//! Generators (SPEC 13): an executable `NAME.gen` in the tree is run when the tree is loaded,
//! in its directory with `PEXEN_GENERATOR=1`, and what it prints on stdout is read as a
//! `.tasks.ron` map of tasks named `NAME/KEY`.
//!
//! The walk starts each generator the moment it finds it, on a thread of its own, so that
//! generators run while the rest of the tree is walked and parsed. A generator that cannot
//! start, exits non-zero, runs past [`LIMIT`] or prints something that is not UTF-8 is a
//! [`FactoryError::Generator`] naming it, with its stderr; problems in its output are reported
//! like those of a file named `NAME.gen (output)`, with lines and columns in that output.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

use super::error::FactoryError;
use crate::pool::limited::{self, Ended};

/// How long a generator may run, unless `PEXEN_GENERATOR_TIMEOUT` says otherwise.
pub const LIMIT: Duration = Duration::from_secs(60);

/// The limit in force: [`LIMIT`], or the duration in `PEXEN_GENERATOR_TIMEOUT` (`"5m"`).
fn limit() -> io::Result<Duration> {
    match std::env::var("PEXEN_GENERATOR_TIMEOUT") {
        Err(_) => Ok(LIMIT),
        Ok(v) => humantime::parse_duration(&v).map_err(|e| {
            io::Error::other(format!(
                "PEXEN_GENERATOR_TIMEOUT=`{v}` is not a duration like `60s` or `5m` ({e})"
            ))
        }),
    }
}

/// Starts the generator `path` in `dir`; join the handle for what it printed.
pub(crate) fn start(path: PathBuf, dir: PathBuf) -> JoinHandle<io::Result<(Ended, Duration)>> {
    std::thread::spawn(move || {
        let limit = limit()?;
        let mut cmd = Command::new(&path);
        cmd.current_dir(&dir).env("PEXEN_GENERATOR", "1");
        limited::run(&mut cmd, limit, true).map(|ended| (ended, limit))
    })
}

/// The output of a generator whose run ended, or why it is unusable. `shown` names it in errors.
pub(crate) fn output(
    handle: JoinHandle<io::Result<(Ended, Duration)>>,
    shown: &Path,
) -> Result<(String, String), FactoryError> {
    let fail = |problem: String, stderr: &[u8]| FactoryError::Generator {
        path: shown.to_path_buf(),
        problem,
        stderr: String::from_utf8_lossy(stderr).into_owned(),
    };
    let ended = handle
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the thread running it panicked")));
    match ended {
        Err(e) => Err(fail(format!("could not start: {e}"), b"")),
        Ok((Ended::TimedOut { stderr }, limit)) => Err(fail(
            format!(
                "did not finish within {} (killed), expected it to print its tasks and exit",
                humantime::format_duration(limit)
            ),
            &stderr,
        )),
        Ok((Ended::Exited { status, stderr, .. }, _)) if !status.success() => Err(fail(
            format!(
                "{}, expected exit code 0 and its tasks on stdout",
                limited::describe(status)
            ),
            &stderr,
        )),
        Ok((Ended::Exited { stdout, stderr, .. }, _)) => match String::from_utf8(stdout) {
            Ok(text) => Ok((text, String::from_utf8_lossy(&stderr).into_owned())),
            Err(e) => Err(fail(
                format!(
                    "printed bytes that are not UTF-8 (at byte {}), expected tasks in the `.tasks.ron` syntax",
                    e.utf8_error().valid_up_to()
                ),
                &stderr,
            )),
        },
    }
}

/// The name under which problems in a generator's output are reported.
pub(crate) fn output_name(shown: &Path) -> PathBuf {
    let mut name = shown.as_os_str().to_owned();
    name.push(" (output)");
    PathBuf::from(name)
}
