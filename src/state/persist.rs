//! A run's persistent state in one piece, for the CLI and for embedders: open (or continue) the
//! journal, decide what `--resume` takes from it, journal every finished task as the run goes,
//! and hand back the records for reports.
//!
//! ```no_run
//! use pexen::state::RunJournal;
//! use pexen::{Scheduler, Task};
//!
//! let tasks = vec![Task::closure("build", |_| Ok(()))];
//! let mut journal = RunJournal::open(".pexen".as_ref(), &tasks, true)?;
//! let run = Scheduler::builder().journal(&mut journal).build().run(tasks)?;
//! for _event in run {}
//! let records = journal.finish()?; // for pexen::report::junit::write_junit
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::report::record::{Collector, TaskRecord};
use crate::sched::events::Event;
use crate::sched::{Observer, Resumed, SchedulerBuilder};
use crate::state::fingerprint::fingerprints;
use crate::state::journal::{Journal, JournalError};
use crate::state::resume::{decide, Decision};
use crate::task::{Task, TaskName};

/// The journal of one run, written through the scheduler's observer: a finished task is on
/// disk before its event reaches anyone, and before its worker starts anything else, so after
/// `kill -9` only the tasks that were running are missing.
pub struct RunJournal {
    recorder: Arc<Mutex<Recorder>>,
    resumed: HashMap<TaskName, Resumed>,
    explanations: Vec<String>,
    warnings: Vec<String>,
}

/// The journal and the collector, fed by the observer.
struct Recorder {
    journal: Journal,
    collector: Collector,
    /// The first journal error; the run should stop, and the command fail (exit 3).
    error: Option<JournalError>,
}

impl RunJournal {
    /// Starts journaling a run of `tasks` in `dir`. Without `resume` the journal starts afresh;
    /// with it, the journal there is continued and every task whose last record passed with an
    /// unchanged fingerprint is taken from it instead of running.
    pub fn open(dir: &Path, tasks: &[Task], resume: bool) -> Result<Self, JournalError> {
        let fps = fingerprints(tasks);
        let mut warnings = Vec::new();
        let mut explanations = Vec::new();
        let mut resumed = HashMap::new();
        let mut journal = if resume {
            let (journal, loaded) = Journal::open_append(dir)?;
            warnings.extend(loaded.warnings.iter().cloned());
            for (task, decision) in tasks.iter().zip(decide(tasks, &fps, &loaded)) {
                match decision {
                    Decision::Resume(r) => {
                        explanations.push(format!(
                            "resume {}: unchanged, last ended {}",
                            task.name, r.outcome
                        ));
                        resumed.insert(task.name.clone(), resumed_from(*r));
                    }
                    Decision::Run(reason) => {
                        explanations.push(format!("run {}: {reason}", task.name));
                    }
                }
            }
            journal
        } else {
            Journal::create(dir)?
        };
        journal.run_started(tasks.len())?;
        let mut collector = Collector::new();
        collector.set_fingerprints(tasks.iter().map(|t| t.name.clone()).zip(fps));
        Ok(Self {
            recorder: Arc::new(Mutex::new(Recorder {
                journal,
                collector,
                error: None,
            })),
            resumed,
            explanations,
            warnings,
        })
    }

    /// Notices from loading the journal (a torn last record that was dropped).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// With `resume`: one line per task saying whether it is taken from the journal or why it
    /// runs again (`run build/app: inputs changed`).
    pub fn explanations(&self) -> &[String] {
        &self.explanations
    }

    /// The first error writing the journal during the run, if any: the caller should cancel.
    pub fn error(&self) -> Option<String> {
        self.lock().error.as_ref().map(ToString::to_string)
    }

    /// Ends journaling: the records of the run (for reports), or the error that stopped it.
    pub fn finish(self) -> Result<Vec<TaskRecord>, JournalError> {
        let mut r = self.lock();
        if let Some(e) = r.error.take() {
            return Err(e);
        }
        Ok(std::mem::take(&mut r.collector).into_records())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.recorder.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn observer(&self) -> Observer {
        let recorder = self.recorder.clone();
        Observer::new(move |event| {
            recorder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .observe(event);
        })
    }
}

impl SchedulerBuilder {
    /// Journals the run in `journal` and skips what it says `--resume` may take from an earlier
    /// run (see [`RunJournal`]).
    #[must_use]
    pub fn journal(self, journal: &mut RunJournal) -> Self {
        let observer = journal.observer();
        self.resume(std::mem::take(&mut journal.resumed))
            .observer(observer)
    }
}

impl Recorder {
    fn observe(&mut self, event: &Event) {
        if self.error.is_some() {
            self.collector.observe(event);
            return;
        }
        if let Err(e) = self.record(event) {
            self.error = Some(e);
        }
    }

    /// Appends a finished task's record, and the end of the run.
    fn record(&mut self, event: &Event) -> Result<(), JournalError> {
        if let Some(record) = self.collector.observe(event) {
            self.journal.append(record)?;
        }
        if matches!(event, Event::RunFinished { .. }) {
            if let Some(summary) = self.collector.run() {
                self.journal.run_finished(summary)?;
            }
            self.journal.sync()?;
        }
        Ok(())
    }
}

fn resumed_from(r: TaskRecord) -> Resumed {
    Resumed {
        outcome: r.outcome,
        attempt: r.attempt,
        exit_code: r.exit_code,
        duration: Duration::from_secs_f64(r.duration_s.max(0.0)),
        message: r.message,
        results: r.results,
        exports: r.exports,
    }
}
