//! A run's persistent state in one piece, for the CLI and for embedders: open (or continue) the
//! journal, decide what `--resume` takes from it, journal every finished task as the run goes,
//! and hand back the records for reports.
//!
//! The journal is an observer of the run; other observers may come before or after it.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use pexen::state::{RunJournal, Verdict};
//! use pexen::{Event, Observer, Scheduler, Task};
//!
//! fn tasks(opt: &'static str) -> Vec<Task> {
//!     vec![
//!         Task::closure("build", move |_ctx| {
//!             println!("cc {opt} -c src/*.c");
//!             Ok(())
//!         })
//!         .version(opt) // a captured value the fingerprint cannot see
//!         .provides(["bin"]),
//!         Task::closure("test", |_ctx| Ok(())).requires(["bin"]),
//!     ]
//! }
//! let state = tempfile::tempdir()?;
//! let run_once = |opt, resume| -> Result<Vec<String>, Box<dyn std::error::Error>> {
//!     let mut journal = RunJournal::open(state.path(), &tasks(opt), resume)?;
//!     let ran = Arc::new(Mutex::new(Vec::new()));
//!     let seen = ran.clone();
//!     let log = Observer::new(move |event| match event {
//!         Event::TaskFinished(f) if !f.resumed => seen.lock().unwrap().push(f.task.to_string()),
//!         _ => {}
//!     });
//!     let run = Scheduler::builder()
//!         .journal(&mut journal) // on disk before anyone sees the event
//!         .observer(log) // then this one
//!         .build()
//!         .run(tasks(opt))?;
//!     for _event in run {}
//!     let records = journal.finish()?; // for pexen::report::junit::write_junit
//!     assert_eq!(records.len(), 2);
//!     let ran = ran.lock().unwrap().clone();
//!     Ok(ran)
//! };
//! assert_eq!(run_once("-O2", false)?, ["build", "test"]);
//! assert!(run_once("-O2", true)?.is_empty()); // nothing changed: both resumed
//! assert_eq!(run_once("-O3", true)?, ["build", "test"]); // a new version reruns both
//!
//! let journal = RunJournal::open(state.path(), &tasks("-O3"), true)?;
//! assert!(matches!(journal.decisions()[0].verdict, Verdict::Resume { .. }));
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
use crate::state::resume::{decide, Decision, Explanation, Verdict};
use crate::task::{Task, TaskName};

/// The journal of one run, written through the scheduler's observer: a finished task is on
/// disk before its event reaches anyone, and before its worker starts anything else, so after
/// `kill -9` only the tasks that were running are missing.
pub struct RunJournal {
    recorder: Arc<Mutex<Recorder>>,
    resumed: HashMap<TaskName, Resumed>,
    decisions: Vec<Explanation>,
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
        let mut decisions = Vec::new();
        let mut resumed = HashMap::new();
        let mut journal = if resume {
            let (journal, loaded) = Journal::open_append(dir)?;
            warnings.extend(loaded.warnings.iter().cloned());
            for (task, decision) in tasks.iter().zip(decide(tasks, &fps, &loaded)) {
                let verdict = match decision {
                    Decision::Resume(r) => {
                        let last = r.outcome;
                        resumed.insert(task.name.clone(), resumed_from(*r));
                        Verdict::Resume { last }
                    }
                    Decision::Run(reason) => Verdict::Run(reason),
                };
                decisions.push(Explanation {
                    task: task.name.clone(),
                    verdict,
                });
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
            decisions,
            warnings,
        })
    }

    /// Notices from loading the journal (a torn last record that was dropped).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// With `resume`: one line per task saying whether it is taken from the journal or why it
    /// runs again (`run build/app: inputs changed`). The same as data: [`RunJournal::decisions`].
    pub fn explanations(&self) -> Vec<String> {
        self.decisions.iter().map(ToString::to_string).collect()
    }

    /// With `resume`: for each task, in the order given to [`RunJournal::open`], whether it is
    /// taken from the journal or why it runs again. Empty without `resume`.
    ///
    /// ```
    /// use pexen::state::{Reason, RunJournal, Verdict};
    /// use pexen::{Scheduler, Task};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let tasks = |opt: &str| vec![Task::closure("build", |_| Ok(())).version(opt)];
    /// let mut journal = RunJournal::open(dir.path(), &tasks("-O2"), false)?;
    /// let run = Scheduler::builder().journal(&mut journal).build().run(tasks("-O2"))?;
    /// run.for_each(drop);
    /// journal.finish()?;
    ///
    /// let journal = RunJournal::open(dir.path(), &tasks("-O3"), true)?;
    /// let d = &journal.decisions()[0];
    /// assert_eq!(d.task.as_str(), "build");
    /// assert_eq!(d.verdict, Verdict::Run(Reason::DefinitionChanged));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decisions(&self) -> &[Explanation] {
        &self.decisions
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
