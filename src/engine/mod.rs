//! One run of a task tree on disk: the library call behind both front ends, `pexen run` (the
//! CLI) and a run started over HTTP (`pexen serve`).
//!
//! [`RunRequest::prepare`] loads the tree, selects tasks (`--filter`, `--tag` and the providers
//! they need), applies the run's overrides (retries, timeout, capacity), validates the graph and
//! opens the journal (deciding what `--resume` takes from it). [`PreparedRun::start`] starts the
//! scheduler; the returned [`TreeRun`] is an iterator over the run's [`Event`]s, journaled before
//! they are seen. [`TreeRun::finish`] ends the journal and writes the JUnit report.
//!
//! ```no_run
//! use pexen::engine::RunRequest;
//!
//! let mut request = RunRequest::new("tests/tree");
//! request.filters.push("net/**".into());
//! request.junit = Some("report.xml".into());
//! let mut run = request.prepare()?.start()?;
//! for event in &mut run {
//!     if let Some(line) = pexen::report::event_json(&event) {
//!         println!("{line}");
//!     }
//! }
//! let report = run.finish()?;
//! assert!(report.outcome.is_success());
//! # Ok::<(), pexen::engine::EngineError>(())
//! ```

pub mod problems;
pub mod select;

use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::error::GraphErrors;
use crate::factory::FactoryErrors;
use crate::report::junit::write_junit;
use crate::report::record::TaskRecord;
use crate::sched::events::{Counts, Event};
use crate::sched::{Run, RunHandle, Scheduler};
use crate::state::journal::JournalError;
use crate::state::RunJournal;
use crate::task::{Outcome, Task, TaskName};

/// Why a run of a tree could not start or could not be recorded.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("{0}")]
    Definitions(#[from] FactoryErrors),
    #[error("{0}")]
    Graph(#[from] GraphErrors),
    /// A request that cannot be carried out as given (not a directory, an empty selection, a
    /// bad glob, a report directory that does not exist).
    #[error("{0}")]
    Usage(String),
    /// Definition and graph problems, located in the tree's files.
    #[error(transparent)]
    Tree(#[from] problems::TreeProblems),
    /// Nothing to run: a tree without a task, a selection that matches none (exit 5).
    #[error("{0}")]
    NothingToRun(String),
    #[error("{0}")]
    State(#[from] JournalError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to run and how: the settings of `pexen run` (SPEC 5), also given by `POST /api/v1/runs`.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The task tree.
    pub dir: PathBuf,
    /// Where the journal is kept.
    pub state: PathBuf,
    /// Globs on task names (`*` stays within a path component, `**` crosses them).
    pub filters: Vec<String>,
    pub tags: Vec<String>,
    /// Default providers chosen for virtual tokens (`--prefer`).
    pub prefer: Vec<String>,
    /// Attempts at once (`None`: the number of CPUs).
    pub jobs: Option<usize>,
    pub resume: bool,
    pub fail_fast: bool,
    /// Overrides every task's `retries`.
    pub retries: Option<u32>,
    /// The timeout of tasks that declare none.
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Capacities that override the tree's.
    pub capacity: Vec<(String, u32)>,
    /// Where to write the JUnit report when the run ends.
    pub junit: Option<PathBuf>,
    /// Other machines to run on (SPEC 9); the tree to sync is filled in from `dir`.
    pub hosts: Option<crate::host::HostsConfig>,
}

impl RunRequest {
    /// A run of every task of `dir`, journaled in `dir/.pexen`, with the CLI's defaults.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            state: dir.join(".pexen"),
            dir,
            filters: Vec::new(),
            tags: Vec::new(),
            prefer: Vec::new(),
            jobs: None,
            resume: false,
            fail_fast: false,
            retries: None,
            timeout: None,
            grace: Duration::from_secs(5),
            capacity: Vec::new(),
            junit: None,
            hosts: None,
        }
    }

    /// Loads, selects and validates the tasks and opens the journal. Nothing runs yet; a report
    /// that could not be written stops the run here, before it starts, not after.
    pub fn prepare(&self) -> Result<PreparedRun, EngineError> {
        // A report that cannot be written should stop the run before it starts, not after.
        if let Some(junit) = &self.junit {
            check_writable(junit)?;
        }
        let tree = load(&self.dir)?;
        let mut warnings = tree.warnings.clone();
        let tree_warnings = warnings.len();
        let selection = select::select(
            tree.tasks,
            &self.filters,
            &self.tags,
            &tree.virtuals,
            &self.prefer,
        )?;
        let mut tasks = selection.tasks;
        for t in &mut tasks {
            if let Some(r) = self.retries {
                t.meta.more.retries = r;
            }
            // Written only when there is something to write: an untouched `more` takes no
            // heap block.
            if t.meta.more.timeout.is_none() && self.timeout.is_some() {
                t.meta.more.timeout = self.timeout;
            }
        }
        let mut capacity = tree.capacity;
        capacity.extend(self.capacity.iter().cloned());
        // Validate before touching the state directory: bad definitions are bad input whatever
        // the state directory holds.
        // With hosts, capacities may be per host (a daemon announces its own): the exact check
        // is made once they answered.
        let checked = match &self.hosts {
            Some(h) => crate::host::placement::loose_capacity(
                &capacity,
                &h.hosts,
                tasks.iter().flat_map(|t| t.meta.more.slots.keys().cloned()),
            ),
            None => capacity.clone(),
        };
        crate::graph::Graph::build(&tasks, &checked).map_err(|e| problems::TreeProblems {
            definitions: Vec::new(),
            graph: problems::locate(e, &tree.sources),
        })?;
        let mut journal =
            RunJournal::open_in_tree(&self.state, &tasks, self.resume, Some(&tree.root))?;
        warnings.extend(journal.warnings().iter().cloned());
        let names = tasks.iter().map(|t| t.name.clone()).collect();
        // Before the scheduler takes the resume set.
        let resumed = journal.resumed_count();
        let mut b = Scheduler::builder()
            .capacities(capacity)
            .fail_fast(self.fail_fast)
            .grace(self.grace)
            .virtual_tokens(tree.virtuals)
            .journal(&mut journal);
        for group in tree.groups.into_values() {
            b = b.group(group);
        }
        if let Some(j) = self.jobs {
            b = b.jobs(j);
        }
        if let Some(hosts) = &self.hosts {
            b = b.hosts(crate::host::HostsConfig {
                tree: Some(tree.root.clone()),
                ..hosts.clone()
            });
        }
        Ok(PreparedRun {
            tasks,
            names,
            selection: selection.counts,
            tree_warnings,
            resumed,
            journal,
            warnings,
            scheduler: b,
            junit: self.junit.clone(),
        })
    }
}

/// The document of `pexen list --format json` for `tree`, with `prefer` choosing default
/// providers of virtual tokens.
pub fn describe(
    tree: &crate::factory::TaskTree,
    prefer: &[String],
) -> Result<serde_json::Value, EngineError> {
    select::check_prefer(&tree.tasks, &tree.virtuals, prefer)?;
    let mut chosen: std::collections::HashMap<usize, Vec<String>> =
        std::collections::HashMap::new();
    for (token, idx) in select::default_choices(&tree.tasks, &tree.virtuals, prefer) {
        chosen.entry(idx).or_default().push(token);
    }
    for tokens in chosen.values_mut() {
        tokens.sort();
    }
    Ok(serde_json::Value::Array(
        tree.tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                crate::report::json::task_json(t, chosen.get(&i).map_or(&[][..], Vec::as_slice))
            })
            .collect(),
    ))
}

/// Loads the tree in `dir`: every definition problem at once, located; a tree without a task
/// is nothing to run (exit 5).
pub fn load(dir: &Path) -> Result<crate::factory::TaskTree, EngineError> {
    if !dir.is_dir() {
        return Err(EngineError::Usage(format!(
            "{} is not a directory of tasks",
            dir.display()
        )));
    }
    let (tree, definitions) = crate::factory::load_partial(dir);
    if !definitions.is_empty() {
        // The graph of the tasks that did load may have problems too: report them now rather
        // than after the definitions are fixed.
        let graph = match crate::graph::Graph::build(&tree.tasks, &tree.capacity) {
            Ok(_) => Vec::new(),
            Err(e) => problems::locate(e, &tree.sources),
        };
        return Err(problems::TreeProblems { definitions, graph }.into());
    }
    if tree.tasks.is_empty() {
        return Err(EngineError::NothingToRun(format!(
            "no task in {}{}: a task is a `NAME.ron` file or an executable file \
             (doc/task-format.md)",
            dir.display(),
            ignored_note(tree.ignored)
        )));
    }
    Ok(tree)
}

/// ` (3 entries excluded by .gitignore)`, or nothing.
pub fn ignored_note(ignored: usize) -> String {
    match ignored {
        0 => String::new(),
        1 => " (1 entry excluded by .gitignore)".to_string(),
        n => format!(" ({n} entries excluded by .gitignore)"),
    }
}

/// `--junit FILE` must name a file that can be created next to where it goes: its missing
/// directories are made (as pytest's `--junitxml` does), then a file is created (and removed)
/// there, so a run is not spent on a report that cannot be written.
fn check_writable(junit: &Path) -> Result<(), EngineError> {
    let usage = |why: String| EngineError::Usage(format!("--junit {}: {why}", junit.display()));
    if junit.is_dir() {
        return Err(usage("is a directory; expected a file name".into()));
    }
    let dir = junit
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Err(usage(format!("cannot create {}: {e}", dir.display())));
    }
    let probe = dir.join(format!(".pexen-junit-probe.{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(usage(format!("cannot write in {}: {e}", dir.display()))),
    }
}

/// A validated selection with its journal open, ready to start.
pub struct PreparedRun {
    tasks: Vec<Task>,
    names: Vec<TaskName>,
    journal: RunJournal,
    /// The tree's warnings, then the journal's.
    warnings: Vec<String>,
    scheduler: crate::sched::SchedulerBuilder,
    junit: Option<PathBuf>,
    /// With a selection: how many tasks matched it and how many providers it pulled in.
    selection: Option<(usize, usize)>,
    /// How many of `warnings` come from the tree (the rest from the journal).
    tree_warnings: usize,
    /// With `resume`: how many tasks are taken from the journal.
    resumed: usize,
}

impl PreparedRun {
    /// The selected tasks, in definition order.
    pub fn task_names(&self) -> &[TaskName] {
        &self.names
    }

    /// How many of [`warnings`](Self::warnings) come from loading the tree; the journal's follow.
    pub fn tree_warnings(&self) -> usize {
        self.tree_warnings
    }

    /// The selected tasks, with the run's overrides applied.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// With `--filter`/`--tag`: how many tasks matched and how many providers were pulled in.
    pub fn selection_counts(&self) -> Option<(usize, usize)> {
        self.selection
    }

    /// With `resume`: how many tasks are taken from the journal.
    pub fn resumed_count(&self) -> usize {
        self.resumed
    }

    /// Notices from loading the tree, then from loading the journal (a torn last record that
    /// was dropped).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Lets a front end set what only it knows (the CLI's `--slurm` settings) on the scheduler,
    /// which already carries the journal.
    pub fn configure<E>(
        mut self,
        f: impl FnOnce(
            crate::sched::SchedulerBuilder,
            &RunJournal,
        ) -> Result<crate::sched::SchedulerBuilder, E>,
    ) -> Result<Self, E> {
        self.scheduler = f(self.scheduler, &self.journal)?;
        Ok(self)
    }

    /// With `resume`: one line per task saying whether it is taken from the journal or why it
    /// runs again.
    pub fn explanations(&self) -> Vec<String> {
        self.journal.explanations()
    }

    /// With `resume`: the decision for each task, as data.
    pub fn decisions(&self) -> &[crate::state::resume::Explanation] {
        self.journal.decisions()
    }

    /// Starts the run. Iterate over the result to drive it.
    pub fn start(self) -> Result<TreeRun, EngineError> {
        // The scheduler already carries the journal (attached in `prepare`).
        let run = self.scheduler.build().run(self.tasks)?;
        Ok(TreeRun {
            handle: run.handle(),
            run,
            journal: self.journal,
            junit: self.junit,
            stopping: false,
            held: None,
            suspended_by: Vec::new(),
            finished: None,
        })
    }
}

/// A run of a tree in progress: an iterator over its events, each already journaled. Dropping it
/// cancels the run.
pub struct TreeRun {
    run: Run,
    handle: RunHandle,
    journal: RunJournal,
    junit: Option<PathBuf>,
    /// Set once a journal error has cancelled the run.
    stopping: bool,
    /// An event held back while a warning goes first.
    held: Option<Event>,
    /// Tasks that suspended the run (SPEC 12), in order.
    suspended_by: Vec<TaskName>,
    finished: Option<(Outcome, Counts, Duration, bool)>,
}

impl TreeRun {
    /// Cancels or kills the run from another thread.
    pub fn handle(&self) -> RunHandle {
        self.handle.clone()
    }

    /// Ends the run (cancelling it if it was not driven to its end), closes the journal and
    /// writes the JUnit report. Returns how the run ended and its records.
    pub fn finish(mut self) -> Result<RunReport, EngineError> {
        if self.finished.is_none() {
            self.handle.cancel();
            while self.next().is_some() {}
        }
        let (outcome, counts, duration, interrupted) =
            self.finished
                .unwrap_or((Outcome::Skip, Counts::default(), Duration::ZERO, true));
        let records = self.journal.finish()?;
        if let Some(path) = &self.junit {
            write_junit(path, &records, duration.as_secs_f64()).map_err(|source| {
                EngineError::Write {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        Ok(RunReport {
            outcome,
            counts,
            duration,
            interrupted,
            suspended_by: self.suspended_by,
            records,
        })
    }
}

impl Iterator for TreeRun {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if let Some(e) = self.held.take() {
            self.note(&e);
            return Some(e);
        }
        let event = self.run.next()?;
        if !self.stopping {
            // A result must be on disk before it is reported: once the journal fails, stop
            // (`finish` returns the error), and say why first.
            if let Some(e) = self.journal.error() {
                self.stopping = true;
                self.handle.cancel();
                self.held = Some(event);
                return Some(Event::Warning {
                    task: None,
                    message: format!("{e}; stopping the run"),
                });
            }
        }
        self.note(&event);
        Some(event)
    }
}

impl TreeRun {
    /// The tasks that suspended the run so far (SPEC 12): `--resume` continues it.
    pub fn suspended_by(&self) -> &[TaskName] {
        &self.suspended_by
    }

    fn note(&mut self, event: &Event) {
        if let Event::TaskSuspended { task, .. } = event {
            self.suspended_by.push(task.clone());
        }
        if let Event::RunFinished {
            outcome,
            counts,
            duration,
            interrupted,
        } = event
        {
            self.finished = Some((*outcome, *counts, *duration, *interrupted));
        }
    }
}

/// How a run of a tree ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: Outcome,
    pub counts: Counts,
    pub duration: Duration,
    /// The run was cancelled before every task could run.
    pub interrupted: bool,
    /// Tasks that suspended the run (SPEC 12): `resume` continues it.
    pub suspended_by: Vec<TaskName>,
    /// One record per finished task, in finish order (what the JUnit report shows).
    pub records: Vec<TaskRecord>,
}
