//! `pexen run`: load, select, decide what to resume, run, and feed every event to the journal,
//! the display (human or JSON) and the JUnit collector, in that order: a result is journaled
//! before it is reported.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::args::{MessageFormat, RunArgs};
use super::{load, select, CliError};
use crate::error::exit_code;
use crate::report::human::HumanReporter;
use crate::report::json::event_json;
use crate::report::junit::write_junit;
use crate::report::record::Collector;
use crate::sched::events::Event;
use crate::sched::{Observer, Resumed, RunHandle, Scheduler};
use crate::state::fingerprint::fingerprints;
use crate::state::journal::Journal;
use crate::state::resume::{decide, Decision};
use crate::task::{Outcome, Task, TaskName};

pub(super) fn run(args: &RunArgs) -> Result<i32, CliError> {
    let tree = load(&args.dir)?;
    let mut tasks = select::select(tree.tasks, &args.filters, &args.tags)?;
    for t in &mut tasks {
        if let Some(r) = args.retries {
            t.meta.retries = r;
        }
        if t.meta.timeout.is_none() {
            t.meta.timeout = args.timeout;
        }
    }
    let mut capacity = tree.capacity;
    capacity.extend(args.capacity.iter().cloned());
    // Validate before touching the state directory: bad definitions are exit 2 whatever it holds.
    crate::graph::Graph::build(&tasks, &capacity)?;

    let fps = fingerprints(&tasks);
    let (mut journal, resumed) = if args.resume {
        let (journal, loaded) = Journal::open_append(&args.state)?;
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        let decisions = decide(&tasks, &fps, &loaded);
        (journal, resumed_map(&tasks, decisions, args.explain))
    } else {
        (Journal::create(&args.state)?, HashMap::new())
    };
    journal.run_started(tasks.len())?;
    let mut collector = Collector::new();
    collector.set_fingerprints(tasks.iter().map(|t| t.name.clone()).zip(fps));
    // The journal is written by the scheduler's observer, on the worker that finished the task
    // and before that worker or the task's slot starts anything else: after `kill -9`, only the
    // tasks that were running are missing from it. Journaling from this thread's loop instead
    // lagged behind the workers, so tasks long finished could be lost and run again (SPEC 6).
    let recorder = Arc::new(Mutex::new(Recorder {
        journal,
        collector,
        error: None,
    }));
    let observer = {
        let recorder = recorder.clone();
        Observer::new(move |event| {
            let mut r = recorder.lock().unwrap_or_else(PoisonError::into_inner);
            r.observe(event);
        })
    };

    let mut builder = Scheduler::builder()
        .capacities(capacity)
        .fail_fast(args.fail_fast)
        .resume(resumed)
        .observer(observer);
    if let Some(j) = args.jobs {
        builder = builder.jobs(j as usize);
    }
    let run = builder.build().run(tasks)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let signals = SignalWatch::start(run.handle(), interrupted.clone());

    let json = args.message_format == MessageFormat::Json;
    let mut human = (!json).then(|| HumanReporter::new(std::io::stderr().is_terminal()));
    let mut stdout = std::io::stdout().lock();
    let mut outcome = Outcome::Pass;
    let mut duration = Duration::ZERO;
    let mut stopping = false;
    let handle = run.handle();
    for event in run {
        // Already journaled by the observer: what is reported has been recorded.
        if !stopping {
            // Not under the recorder's lock: cancelling takes the scheduler's, which the
            // observer holds while it waits for the recorder's.
            let failed = recorder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .error
                .as_ref()
                .map(ToString::to_string);
            if let Some(e) = failed {
                eprintln!("error: {e}; stopping the run");
                stopping = true;
                handle.cancel();
            }
        }
        if let Event::RunFinished {
            outcome: o,
            duration: d,
            ..
        } = &event
        {
            outcome = *o;
            duration = *d;
        }
        if let Some(h) = &mut human {
            h.event(&event);
        } else if let Some(line) = event_json(&event) {
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
    }
    drop(signals);
    let mut recorder = recorder.lock().unwrap_or_else(PoisonError::into_inner);
    let Recorder {
        collector, error, ..
    } = &mut *recorder;
    let state_error = error.take();

    if let Some(path) = &args.junit {
        write_junit(path, collector.records(), duration.as_secs_f64()).map_err(|source| {
            CliError::Write {
                path: path.clone(),
                source,
            }
        })?;
    }
    if let Some(e) = state_error {
        return Err(e.into());
    }
    Ok(if interrupted.load(Ordering::SeqCst) {
        exit_code::INTERRUPTED
    } else if outcome.is_success() {
        exit_code::OK
    } else {
        exit_code::TASK_FAILED
    })
}

/// The journal and the collector, fed by the scheduler's observer.
struct Recorder {
    journal: Journal,
    collector: Collector,
    /// The first journal error: the run is stopped, and the command fails with exit 3.
    error: Option<crate::state::journal::JournalError>,
}

impl Recorder {
    fn observe(&mut self, event: &Event) {
        if self.error.is_none() {
            if let Err(e) = journal_event(&mut self.journal, &mut self.collector, event) {
                self.error = Some(e);
            }
        } else {
            self.collector.observe(event);
        }
    }
}

/// Records finished tasks and the end of the run.
fn journal_event(
    journal: &mut Journal,
    collector: &mut Collector,
    event: &Event,
) -> Result<(), crate::state::journal::JournalError> {
    if let Some(record) = collector.observe(event) {
        journal.append(record)?;
    }
    if matches!(event, Event::RunFinished { .. }) {
        if let Some(summary) = collector.run() {
            journal.run_finished(summary)?;
        }
        journal.sync()?;
    }
    Ok(())
}

/// The tasks `--resume` takes from the journal; with `explain`, says why each other one runs.
fn resumed_map(
    tasks: &[Task],
    decisions: Vec<Decision>,
    explain: bool,
) -> HashMap<TaskName, Resumed> {
    let mut map = HashMap::new();
    let mut err = std::io::stderr().lock();
    for (task, decision) in tasks.iter().zip(decisions) {
        match decision {
            Decision::Resume(r) => {
                if explain {
                    let _ = writeln!(
                        err,
                        "resume {}: unchanged, last ended {}",
                        task.name, r.outcome
                    );
                }
                map.insert(
                    task.name.clone(),
                    Resumed {
                        outcome: r.outcome,
                        attempt: r.attempt,
                        exit_code: r.exit_code,
                        duration: Duration::from_secs_f64(r.duration_s.max(0.0)),
                        message: r.message,
                        results: r.results,
                        exports: r.exports,
                    },
                );
            }
            Decision::Run(reason) => {
                if explain {
                    let _ = writeln!(err, "run {}: {reason}", task.name);
                }
            }
        }
    }
    map
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
