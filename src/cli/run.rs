//! `pexen run`: the library's run of a tree ([`crate::engine`]: load, select, decide what to
//! resume, run, journal, JUnit), shown on the terminal (human or JSON) and stopped by signals.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::args::{MessageFormat, RunArgs};
use super::CliError;
use crate::engine::RunRequest;
use crate::error::exit_code;
use crate::report::human::HumanReporter;
use crate::report::json::event_json;
use crate::sched::RunHandle;

/// The library call that `pexen serve` makes too, with the command line's settings.
fn request(args: &RunArgs) -> RunRequest {
    RunRequest {
        dir: args.dir.clone(),
        state: args.state.clone(),
        filters: args.filters.clone(),
        tags: args.tags.clone(),
        prefer: args.prefer.clone(),
        jobs: args.jobs.map(|j| j as usize),
        resume: args.resume,
        fail_fast: args.fail_fast,
        retries: args.retries,
        timeout: args.timeout,
        grace: args.grace,
        capacity: args.capacity.clone(),
        junit: args.junit.clone(),
    }
}

pub(super) fn run(args: &RunArgs) -> Result<i32, CliError> {
    let prepared = request(args).prepare()?;
    for w in prepared.warnings() {
        eprintln!("warning: {w}");
    }
    if args.explain {
        let mut err = std::io::stderr().lock();
        for line in prepared.explanations() {
            let _ = writeln!(err, "{line}");
        }
    }

    let prepared = prepared.configure(|b, journal| super::slurm::configure(b, args, journal))?;
    let mut run = prepared.start()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let signals = SignalWatch::start(run.handle(), interrupted.clone());

    let json = args.message_format == MessageFormat::Json;
    let mut human = (!json).then(|| {
        HumanReporter::new(std::io::stderr().is_terminal()).resume_hint(resume_hint(args))
    });
    let mut stdout = std::io::stdout().lock();
    for event in &mut run {
        // Already journaled by the observer: what is reported has been recorded.
        if let Some(h) = &mut human {
            h.event(&event);
        } else if let Some(line) = event_json(&event) {
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
    }
    drop(signals);
    let interrupted = interrupted.load(Ordering::SeqCst);
    let suspended_by = run.suspended_by().to_vec();
    if json && !suspended_by.is_empty() && !interrupted {
        // What to run next, for scripts: the run is not over (exit code 4).
        #[derive(serde::Serialize)]
        struct RunSuspended<'a> {
            r#type: &'static str,
            tasks: &'a [crate::task::TaskName],
            resume: String,
        }
        let line = RunSuspended {
            r#type: "run-suspended",
            tasks: &suspended_by,
            resume: resume_hint(args),
        };
        if let Ok(line) = serde_json::to_string(&line) {
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
    }
    let report = run.finish()?;
    Ok(if interrupted {
        exit_code::INTERRUPTED
    } else if !suspended_by.is_empty() {
        exit_code::SUSPENDED
    } else if report.outcome.is_success() {
        exit_code::OK
    } else {
        exit_code::TASK_FAILED
    })
}

/// The command that continues a suspended run: the same tree, state and selection, with
/// `--resume`.
fn resume_hint(args: &RunArgs) -> String {
    let mut words = vec!["pexen".to_string(), "run".to_string()];
    if args.dir != std::path::Path::new(".") {
        words.push(shell_word(&args.dir.to_string_lossy()));
    }
    if args.state != std::path::Path::new(".pexen") {
        words.push("--state".into());
        words.push(shell_word(&args.state.to_string_lossy()));
    }
    for f in &args.filters {
        words.extend(["--filter".into(), shell_word(f)]);
    }
    for t in &args.tags {
        words.extend(["--tag".into(), shell_word(t)]);
    }
    words.push("--resume".into());
    words.join(" ")
}

/// `word` quoted for a POSIX shell when it needs to be.
fn shell_word(word: &str) -> String {
    // Only a NUL byte cannot be quoted, and no argument can hold one.
    shlex::try_quote(word).map_or_else(|_| word.to_string(), std::borrow::Cow::into_owned)
}

/// SIGINT/SIGTERM handling: the first stops the run cleanly (running commands get SIGTERM,
/// a grace period, then SIGKILL), the second kills them at once.
struct SignalWatch {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalWatch {
    fn start(run: RunHandle, interrupted: Arc<AtomicBool>) -> Option<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).ok()?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("pexen-signals".into())
            .spawn(move || {
                for _ in signals.forever() {
                    if interrupted.swap(true, Ordering::SeqCst) {
                        eprintln!("interrupted again: killing running tasks");
                        run.kill();
                    } else {
                        eprintln!(
                            "interrupted: stopping running tasks (interrupt again to kill them)"
                        );
                        run.cancel();
                    }
                }
            })
            .ok()?;
        Some(Self {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
