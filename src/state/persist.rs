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
use crate::state::checkpoint::Checkpoints;
use crate::state::fingerprint::fingerprints_in;
use crate::state::journal::{Journal, JournalError, SubmittedJob};
use crate::state::live::LiveRecord;
use crate::state::lock::StateLock;
use crate::state::resume::{decide, Decision, Explanation, Reason, Verdict};
use crate::task::{Task, TaskName};

/// The journal of one run, written through the scheduler's observer: a finished task is on
/// disk before its event reaches anyone, and before its worker starts anything else, so after
/// `kill -9` only the tasks that were running are missing.
///
/// It also keeps the tasks' checkpoint directories (`STATE/checkpoints/`, SPEC section 12): a
/// run without `resume` starts with none; a task that ends `pass`, `warn` or `skip` after running
/// loses its own; any other end keeps it, and the journal record says whether it holds one.
pub struct RunJournal {
    recorder: Arc<Mutex<Recorder>>,
    /// This run's record of running tasks, for the command runner; removed when the run ends.
    live: Arc<LiveRecord>,
    resumed: HashMap<TaskName, Resumed>,
    /// Tasks that suspended the last run: they run first.
    run_first: Vec<TaskName>,
    checkpoints: Checkpoints,
    decisions: Vec<Explanation>,
    warnings: Vec<String>,
    /// With `resume`: outside jobs (Slurm) of the earlier run that may still be queued or
    /// running, or have finished unseen, for tasks that run again with an unchanged fingerprint.
    reattach: Vec<SubmittedJob>,
    /// With `resume`: such jobs of tasks that changed, were removed, or are taken from the
    /// journal: nobody will collect them.
    stale: Vec<SubmittedJob>,
    /// Dropped last (fields drop in order): the directory stays ours until everything is done.
    _lock: StateLock,
}

/// The journal and the collector, fed by the observer.
struct Recorder {
    journal: Journal,
    collector: Collector,
    checkpoints: Checkpoints,
    /// The checkpoints there were when the run started: a task that does not run in this run
    /// can only hold one of those (a cascade of 10^5 skips costs no file-system call then).
    held: Held,
    /// The first journal error; the run should stop, and the command fail (exit 3).
    error: Option<JournalError>,
}

impl RunJournal {
    /// Starts journaling a run of `tasks` in `dir`. Without `resume` the journal starts afresh,
    /// and so do the checkpoints; with it, the journal there is continued, every task whose last
    /// record passed with an unchanged fingerprint is taken from it instead of running, tasks
    /// that suspended the last run run first, and checkpoints are kept.
    ///
    /// First takes the directory's lock ([`StateLock`]: another run there is
    /// [`JournalError::Locked`]) and ends what a killed earlier run left running
    /// ([`LiveRecord`]), with a notice in [`Self::warnings`].
    pub fn open(dir: &Path, tasks: &[Task], resume: bool) -> Result<Self, JournalError> {
        Self::open_in_tree(dir, tasks, resume, None)
    }

    /// [`RunJournal::open`] for the tasks of the tree at `root`: fingerprints do not depend on
    /// where the tree is ([`crate::state::fingerprint::fingerprints_in`]).
    pub fn open_in_tree(
        dir: &Path,
        tasks: &[Task],
        resume: bool,
        root: Option<&Path>,
    ) -> Result<Self, JournalError> {
        let lock = StateLock::acquire(dir)?;
        let (live, notices) = LiveRecord::start(&lock)?;
        let fps = fingerprints_in(tasks, root);
        let checkpoints = Checkpoints::in_state_dir(dir);
        let checkpoint_error =
            |path: std::path::PathBuf| move |source| JournalError::Checkpoint { path, source };
        let mut warnings = notices;
        let mut decisions = Vec::new();
        let mut resumed = HashMap::new();
        let mut run_first = Vec::new();
        let mut held = Held(None);
        let mut reattach = Vec::new();
        let mut stale = Vec::new();
        let mut journal = if resume {
            let (journal, loaded) = Journal::open_append(dir)?;
            let unfinished = loaded.unfinished_jobs();
            // Only runs that used Slurm have any: no map of every task otherwise.
            let current: HashMap<&TaskName, _> = if unfinished.is_empty() {
                HashMap::new()
            } else {
                tasks.iter().map(|t| &t.name).zip(fps.iter()).collect()
            };
            for job in unfinished {
                match current.get(&job.task) {
                    Some(fp) if job.fingerprint.as_ref() == Some(*fp) => reattach.push(job),
                    _ => stale.push(job),
                }
            }
            warnings.extend(loaded.warnings.iter().cloned());
            held = Held::list(&checkpoints);
            for (task, decision) in tasks.iter().zip(decide(tasks, &fps, &loaded)) {
                let mut checkpoint = false;
                let verdict = match decision {
                    Decision::Resume(r) => {
                        let last = r.outcome;
                        resumed.insert(task.name.clone(), resumed_from(*r));
                        // Left by a run killed between journaling its success and removing it.
                        if held.contains(&checkpoints, &task.name) {
                            checkpoints
                                .remove(&task.name)
                                .map_err(checkpoint_error(checkpoints.dir(&task.name)))?;
                        }
                        Verdict::Resume { last }
                    }
                    Decision::Run(reason) => {
                        checkpoint = held.holds(&checkpoints, &task.name);
                        if reason == Reason::Suspended {
                            run_first.push(task.name.clone());
                        }
                        Verdict::Run(reason)
                    }
                };
                decisions.push(Explanation {
                    task: task.name.clone(),
                    verdict,
                    checkpoint,
                });
            }
            // A task taken from the journal needs no job: a later record settled it.
            let (keep, resumed_jobs): (Vec<_>, Vec<_>) = reattach
                .into_iter()
                .partition(|j: &SubmittedJob| !resumed.contains_key(&j.task));
            reattach = keep;
            stale.extend(resumed_jobs);
            journal
        } else {
            let journal = Journal::create(dir)?;
            checkpoints
                .clear()
                .map_err(checkpoint_error(checkpoints.root().to_path_buf()))?;
            journal
        };
        journal.run_started_names(tasks.iter().map(|t| t.name.as_str().to_owned()).collect())?;
        let mut collector = Collector::new();
        collector.set_fingerprints(tasks.iter().map(|t| t.name.clone()).zip(fps));
        Ok(Self {
            recorder: Arc::new(Mutex::new(Recorder {
                journal,
                collector,
                checkpoints: checkpoints.clone(),
                held,
                error: None,
            })),
            live: Arc::new(live),
            _lock: lock,
            resumed,
            run_first,
            checkpoints,
            decisions,
            warnings,
            reattach,
            stale,
        })
    }

    /// With `resume`: the outside jobs (Slurm) of an earlier run to re-attach to, one per task
    /// that runs again unchanged: its attempt is collected from the job, not run again.
    pub fn jobs_to_reattach(&self) -> &[SubmittedJob] {
        &self.reattach
    }

    /// With `resume`: outside jobs of an earlier run that nobody will collect (their task
    /// changed or is gone): the caller should cancel them.
    pub fn stale_jobs(&self) -> &[SubmittedJob] {
        &self.stale
    }

    /// Notices from loading the journal (a torn last record that was dropped).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// With `resume`: one line per task saying whether it is taken from the journal or why it
    /// runs again (`run build/app: inputs changed`), and whether it finds a checkpoint (`run
    /// soak: last outcome was timeout; resumes from its checkpoint`). The same as data:
    /// [`RunJournal::decisions`].
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

    /// How many tasks `--resume` takes from the journal instead of running them (until the
    /// journal is given to a scheduler).
    pub fn resumed_count(&self) -> usize {
        self.resumed.len()
    }

    /// The first error writing the journal during the run, if any: the caller should cancel.
    pub fn error(&self) -> Option<String> {
        self.lock()
            .error
            .as_ref()
            .map(|e| crate::error::error_chain(e))
    }

    /// Ends journaling: the records of the run (for reports), or the error that stopped it.
    pub fn finish(self) -> Result<Vec<TaskRecord>, JournalError> {
        let flushed = self.checkpoints.flush();
        let mut r = self.lock();
        if let Err(source) = flushed {
            r.error.get_or_insert(JournalError::Checkpoint {
                path: self.checkpoints.root().to_path_buf(),
                source,
            });
        }
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
        let tracker: Arc<dyn crate::pool::command::Tracker> = journal.live.clone();
        self.resume(std::mem::take(&mut journal.resumed))
            .run_first(std::mem::take(&mut journal.run_first))
            .checkpoints(journal.checkpoints.clone())
            .observer(observer)
            .command_tracker(crate::pool::command::TrackerHandle(tracker))
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

    /// Appends a finished task's record, and the end of the run. A task that ran and ended
    /// `pass`, `warn` or `skip` releases its checkpoint once its record is written (recycled or
    /// removed off this lock, see `state::checkpoint`; a crash in between leaves a stale
    /// checkpoint of a task `--resume` does not rerun and removes, never a lost one); any other
    /// record says whether the task holds one.
    /// A submitted job (Slurm) is recorded with the task's fingerprint.
    fn record(&mut self, event: &Event) -> Result<(), JournalError> {
        if let Event::TaskSubmitted { task, attempt, job } = event {
            let fingerprint = self.collector.fingerprint(task).copied();
            return self
                .journal
                .submitted(task, *attempt, job, fingerprint.as_ref());
        }
        let finished = self.collector.observe(event).is_some();
        if let Some(record) = finished.then(|| self.collector.last_mut()).flatten() {
            let done = !record.resumed && record.cause.is_none() && record.outcome.is_success();
            if !done && !record.resumed {
                record.checkpoint = if record.attempt > 0 {
                    self.checkpoints.holds(&record.name)
                } else {
                    self.held.holds(&self.checkpoints, &record.name)
                };
            }
            self.journal.append(record)?;
            if done {
                self.checkpoints.release(&record.name);
            }
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

/// The checkpoint directories present when a run resumes, listed once: most resumes have none,
/// and asking the file system about each of 10^5 tasks would cost more than the decision.
struct Held(Option<std::collections::HashSet<std::ffi::OsString>>);

impl Held {
    fn list(checkpoints: &Checkpoints) -> Self {
        let names: std::collections::HashSet<_> = std::fs::read_dir(checkpoints.root())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        Self((!names.is_empty()).then_some(names))
    }

    /// Whether `task` had a directory when the run started.
    fn contains(&self, checkpoints: &Checkpoints, task: &TaskName) -> bool {
        self.0.as_ref().is_some_and(|names| {
            let dir = checkpoints.dir(task);
            dir.file_name().is_some_and(|n| names.contains(n))
        })
    }

    /// Whether `task` had a directory when the run started, and it holds something.
    fn holds(&self, checkpoints: &Checkpoints, task: &TaskName) -> bool {
        self.contains(checkpoints, task) && checkpoints.holds(task)
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
