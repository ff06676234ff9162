//! The scheduler: configuration ([`SchedulerBuilder`]) and the run ([`Run`]), whose iterator
//! is the dispatcher that owns the run state.

mod dispatcher;
pub mod events;
pub mod groups;
pub(crate) mod locks;
pub(crate) mod queue;
pub mod run_state;
mod waiting;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use dispatcher::{Run, RunHandle};
pub use groups::Group;
pub use run_state::Resumed;

use crate::error::GraphErrors;
use crate::pool::command::CommandConfig;
use crate::pool::process::ProcessConfig;
use crate::pool::slurm::SlurmConfig;
use crate::sched::events::Event;
use crate::state::checkpoint::Checkpoints;
use crate::task::{PoolKind, Task, TaskName};

/// A function that sees every event synchronously, in order, before the run goes on: see
/// [`SchedulerBuilder::observer`].
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use pexen::{Event, Observer, Scheduler, Task};
///
/// let finished = Arc::new(Mutex::new(Vec::new()));
/// let seen = finished.clone();
/// let observer = Observer::new(move |event| {
///     if let Event::TaskFinished(f) = event {
///         seen.lock().unwrap().push(f.task.to_string());
///     }
/// });
/// let run = Scheduler::builder().observer(observer).build();
/// run.run(vec![Task::closure("a", |_| Ok(()))]).unwrap().for_each(drop);
/// assert_eq!(*finished.lock().unwrap(), ["a"]);
/// ```
#[derive(Clone)]
pub struct Observer(pub(crate) Arc<Mutex<ObserverFn>>);

type ObserverFn = dyn FnMut(&Event) + Send;

impl Observer {
    /// Wraps `f`; it is called under the scheduler's lock, so it must not call back into the
    /// run (no [`RunHandle`] methods).
    pub fn new(f: impl FnMut(&Event) + Send + 'static) -> Self {
        Self(Arc::new(Mutex::new(f)))
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Observer")
    }
}

/// Settings of a run. Build one with [`Scheduler::builder`].
///
/// ```
/// use std::time::Duration;
/// use pexen::Scheduler;
///
/// let scheduler = Scheduler::builder()
///     .jobs(4)
///     .capacity("gpu", 2)
///     .fail_fast(true)
///     .grace(Duration::from_secs(2))
///     .build();
/// assert_eq!(scheduler.jobs(), 4);
/// ```
#[derive(Debug, Clone)]
pub struct SchedulerBuilder {
    jobs: usize,
    capacity: BTreeMap<String, u32>,
    fail_fast: bool,
    command: CommandConfig,
    process: ProcessConfig,
    resumed: HashMap<TaskName, Resumed>,
    observers: Vec<Observer>,
    keep_open: bool,
    run_first: Vec<TaskName>,
    checkpoints: Option<Checkpoints>,
    groups: BTreeMap<String, Group>,
    virtuals: Vec<String>,
    slurm: Option<SlurmConfig>,
    hosts: Option<crate::host::HostsConfig>,
}

impl Default for SchedulerBuilder {
    fn default() -> Self {
        Self {
            jobs: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            capacity: BTreeMap::new(),
            fail_fast: false,
            command: CommandConfig::default(),
            process: ProcessConfig::default(),
            resumed: HashMap::new(),
            observers: Vec::new(),
            keep_open: false,
            run_first: Vec::new(),
            checkpoints: None,
            groups: BTreeMap::new(),
            virtuals: Vec::new(),
            slurm: None,
            hosts: None,
        }
    }
}

impl SchedulerBuilder {
    /// How many attempts run at once (default: the number of CPUs). At least 1.
    #[must_use]
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Declares `count` units of the counted resource `name` for `slots`.
    #[must_use]
    pub fn capacity(mut self, name: impl Into<String>, count: u32) -> Self {
        self.capacity.insert(name.into(), count);
        self
    }

    /// Replaces every declared capacity.
    #[must_use]
    pub fn capacities(mut self, capacity: BTreeMap<String, u32>) -> Self {
        self.capacity = capacity;
        self
    }

    /// Stop starting tasks after the first `fail`, `error` or `timeout`; the rest are skipped.
    #[must_use]
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// Time between SIGTERM and SIGKILL when a command times out or the run is cancelled.
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.command.grace = grace;
        self
    }

    /// Bytes of stdout and of stderr kept per attempt (head and tail).
    #[must_use]
    pub fn output_cap(mut self, bytes: usize) -> Self {
        self.command.output_cap = bytes;
        self
    }

    /// Tells `tracker` about every command task's process group as it starts (see
    /// [`crate::state::LiveRecord`], which [`Self::journal`] installs).
    #[must_use]
    pub fn command_tracker(mut self, tracker: crate::pool::command::TrackerHandle) -> Self {
        self.command.tracker = Some(tracker);
        self
    }

    /// The pool of closure tasks that did not choose one with [`Task::pool`] (default:
    /// [`PoolKind::Threads`]). [`PoolKind::Processes`] needs the binary's `main` to call
    /// [`crate::worker::serve_if_worker`] first.
    #[must_use]
    pub fn default_pool(mut self, pool: PoolKind) -> Self {
        self.process.default_pool = pool;
        self
    }

    /// Arguments given to re-executed worker processes (default: none), so that a binary with
    /// several task sets can tell its `serve_if_worker` build function which one to rebuild.
    #[must_use]
    pub fn worker_args<I: IntoIterator<Item = S>, S: Into<std::ffi::OsString>>(
        mut self,
        args: I,
    ) -> Self {
        self.process.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Tasks that an earlier run already completed: reported as resumed, not run.
    #[must_use]
    pub fn resume(mut self, resumed: HashMap<TaskName, Resumed>) -> Self {
        self.resumed = resumed;
        self
    }

    /// Tasks that go ahead of every other once their requires are satisfied, whatever their
    /// priority: `--resume` runs the tasks that suspended the run first (SPEC section 12).
    #[must_use]
    pub fn run_first<I: IntoIterator<Item = T>, T: Into<TaskName>>(mut self, tasks: I) -> Self {
        self.run_first = tasks.into_iter().map(Into::into).collect();
        self
    }

    /// Gives each attempt a checkpoint directory that persists until its task succeeds
    /// (`PEXEN_CHECKPOINT` for commands, [`crate::Context::checkpoint`] for closures). Set by
    /// [`SchedulerBuilder::journal`], which also removes it when the task ends `pass`, `warn` or
    /// `skip`; without a journal, removing is the embedder's business.
    #[must_use]
    pub fn checkpoints(mut self, checkpoints: Checkpoints) -> Self {
        self.checkpoints = Some(checkpoints);
        self
    }

    /// Adds `observer`: it is called with every event, in order, on the thread that produced
    /// it, before the run goes on: a finished task's event is observed before its worker or its
    /// slot starts anything else. This is what a journal needs (SPEC 6: after `kill -9`, only
    /// the tasks that were running are lost); the [`Run`] iterator, which may lag behind, is not
    /// enough. Keep it quick: the scheduler waits for it.
    ///
    /// Any number of observers may be added (the journal of [`SchedulerBuilder::journal`] is
    /// one of them); each event is shown to all of them in the order they were added, before
    /// the next event is shown to any.
    #[must_use]
    pub fn observer(mut self, observer: Observer) -> Self {
        self.observers.push(observer);
        self
    }

    /// Keeps the run open when its tasks are done: it waits for more, added with
    /// [`RunHandle::add_tasks`], until [`RunHandle::close`] (or a cancel); only then does it
    /// finish with `RunFinished`. Without it (the default), a run finishes as soon as every
    /// task it has is done, and tasks added later are refused. This is the form for a run fed
    /// by the embedder as work turns up (tokio's `JoinSet::spawn`, HyperQueue's open jobs).
    ///
    /// ```
    /// use pexen::{Event, Outcome, Scheduler, Task};
    ///
    /// let run = Scheduler::builder().keep_open(true).build().run(Vec::new()).unwrap();
    /// let handle = run.handle();
    /// handle.add_tasks(vec![Task::closure("first", |_| Ok(()))]).unwrap();
    /// let mut finished = Vec::new();
    /// for event in run {
    ///     if let Event::TaskFinished(f) = &event {
    ///         finished.push(f.task.to_string());
    ///         if f.task.as_str() == "first" {
    ///             // Work turned up: feed it to the same run, then say that was all.
    ///             handle.add_tasks(vec![Task::closure("second", |_| Ok(()))]).unwrap();
    ///             handle.close();
    ///         }
    ///     }
    ///     if let Event::RunFinished { outcome, .. } = event {
    ///         assert_eq!(outcome, Outcome::Pass);
    ///     }
    /// }
    /// assert_eq!(finished, ["first", "second"]);
    /// ```
    #[must_use]
    pub fn keep_open(mut self, keep_open: bool) -> Self {
        self.keep_open = keep_open;
        self
    }

    /// Declares an exclusivity group (SPEC 13). A run with groups runs one group at a time,
    /// each with its own `jobs`; tasks without a group form the group `""` (declare
    /// `Group::new("")` to set its jobs). The run has as many worker threads as the largest
    /// `jobs` of the run and its groups.
    #[must_use]
    pub fn group(mut self, group: Group) -> Self {
        self.groups.insert(group.name.clone(), group);
        self
    }

    /// Declares virtual tokens (SPEC 13): each is satisfied by the first of its providers that
    /// succeeds, and fails only when all of them failed or were skipped.
    #[must_use]
    pub fn virtual_tokens<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tokens: I) -> Self {
        self.virtuals.extend(tokens.into_iter().map(Into::into));
        self
    }

    /// Runs command attempts as Slurm jobs, one `sbatch` job per attempt (SPEC section 10);
    /// closures still run in this process. `jobs` then bounds the jobs queued plus running.
    #[must_use]
    pub fn slurm(mut self, config: SlurmConfig) -> Self {
        self.slurm = Some(config);
        self
    }

    /// Runs command tasks, and closures of the process pool, on these hosts too (SPEC 9). The
    /// run's own `jobs` are those of `local`, which takes attempts unless
    /// [`crate::host::HostsConfig::no_local`] is set. Closures on threads run on this machine.
    ///
    /// This executable is what ssh hosts run (uploaded once, found by hash afterwards), started
    /// as `PEXEN_WORKER=host BIN worker --stdio ...`: `main` must call
    /// [`crate::worker::serve_if_worker`] first, which serves there the closures its `build`
    /// function returns (by name) and the commands of the synced tree.
    #[must_use]
    pub fn hosts(mut self, hosts: crate::host::HostsConfig) -> Self {
        self.hosts = Some(hosts);
        self
    }

    pub fn build(self) -> Scheduler {
        Scheduler { config: self }
    }
}

/// Runs task graphs. See [`SchedulerBuilder`] for the settings.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerBuilder,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl Scheduler {
    pub fn builder() -> SchedulerBuilder {
        SchedulerBuilder::default()
    }

    pub fn jobs(&self) -> usize {
        self.config.jobs
    }

    /// Validates `tasks` (every problem at once) and starts running them. Iterate over the
    /// returned [`Run`] to drive it and receive its events; dropping it cancels the run.
    pub fn run(self, tasks: Vec<Task>) -> Result<Run, GraphErrors> {
        Run::start(self.config, tasks)
    }
}
