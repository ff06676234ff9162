//! Exclusivity groups (SPEC 13): when a run has groups, every task belongs to one (ungrouped
//! tasks to the group `""`) and one group runs at a time, with its own number of jobs.
//!
//! The run state keeps the ready tasks of the running group in its ready queue, as a run
//! without groups does, and parks the ready tasks of the other groups in one queue per group.
//! The turn passes only when the running group has nothing running and nothing ready; the next
//! group is that of the best parked task (priority, then definition order). A run without
//! groups has no `Groups` at all: its hot path does not change.

use std::collections::{BTreeMap, HashMap};

use crate::error::GraphError;
use crate::sched::queue::{Key, TaskQueue};
use crate::task::{PoolKind, Task};

/// An exclusivity group: its name, how many of its tasks run at once, and the pool of its
/// closure tasks.
///
/// ```
/// use pexen::{Event, Group, PoolKind, Scheduler, Task};
///
/// let scheduler = Scheduler::builder()
///     .jobs(4)
///     .group(Group::new("vm").jobs(1).pool(PoolKind::Threads))
///     .group(Group::new("syscalls").jobs(100))
///     .build();
/// let tasks = vec![
///     Task::closure("boot", |_| Ok(())).group("vm"),
///     Task::closure("open", |_| Ok(())).group("syscalls"),
/// ];
/// let turns: Vec<String> = scheduler
///     .run(tasks)
///     .unwrap()
///     .filter_map(|e| match e {
///         Event::GroupStarted { group } => Some(group),
///         _ => None,
///     })
///     .collect();
/// assert_eq!(turns, ["vm", "syscalls"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// Attempts of this group run at once (`None`: the run's `jobs`).
    pub jobs: Option<usize>,
    /// The pool of its closure tasks that did not choose one (`None`: the run's default).
    pub pool: Option<PoolKind>,
}

impl Group {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            jobs: None,
            pool: None,
        }
    }

    /// How many of its attempts run at once. At least 1.
    #[must_use]
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = Some(jobs.max(1));
        self
    }

    #[must_use]
    pub fn pool(mut self, pool: PoolKind) -> Self {
        self.pool = Some(pool);
        self
    }
}

/// The groups of a run, as the run state sees them.
#[derive(Debug)]
pub(crate) struct Groups {
    /// Group names by id; id 0 is `""` (ungrouped tasks).
    names: Vec<String>,
    ids: HashMap<String, u32>,
    pub(crate) jobs: Vec<usize>,
    pub(crate) pools: Vec<Option<PoolKind>>,
    /// Per task: its group id.
    pub(crate) of: Vec<u32>,
    /// Per group: its ready tasks while it does not run.
    pub(crate) parked: Vec<TaskQueue>,
    /// The group whose turn it is.
    pub(crate) active: Option<u32>,
}

impl Groups {
    /// `None` when no group is declared: the run has no groups.
    pub(crate) fn new(declared: &BTreeMap<String, Group>, run_jobs: usize) -> Option<Box<Self>> {
        if declared.is_empty() {
            return None;
        }
        let mut g = Groups {
            names: vec![String::new()],
            ids: HashMap::from([(String::new(), 0)]),
            jobs: vec![run_jobs],
            pools: vec![None],
            of: Vec::new(),
            parked: vec![TaskQueue::default()],
            active: None,
        };
        for (name, group) in declared {
            if name.is_empty() {
                // The ungrouped tasks' own settings.
                g.jobs[0] = group.jobs.unwrap_or(run_jobs);
                g.pools[0] = group.pool;
                continue;
            }
            g.ids.insert(name.clone(), g.names.len() as u32);
            g.names.push(name.clone());
            g.jobs.push(group.jobs.unwrap_or(run_jobs));
            g.pools.push(group.pool);
            g.parked.push(TaskQueue::default());
        }
        Some(Box::new(g))
    }

    /// Assigns `tasks` (appended to the run) to their groups; an undeclared group is an error.
    pub(crate) fn assign(&mut self, tasks: &[Task], errors: &mut Vec<GraphError>) {
        for t in tasks {
            let id = match t.meta.more.group.as_deref() {
                None => 0,
                Some(name) => self.ids.get(name).copied().unwrap_or_else(|| {
                    errors.push(GraphError::UnknownGroup {
                        task: t.name.clone(),
                        group: name.to_string(),
                    });
                    0
                }),
            };
            self.of.push(id);
        }
    }

    pub(crate) fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    /// The group with the best parked task, if any task is parked.
    pub(crate) fn best_parked(&self) -> Option<u32> {
        self.parked
            .iter()
            .enumerate()
            .filter_map(|(i, q)| q.peek().map(|k| (k, i as u32)))
            .max_by_key(|&(k, _)| k)
            .map(|(_, i)| i)
    }

    /// Parks `key` unless its group is running: true when parked.
    pub(crate) fn park(&mut self, key: Key) -> bool {
        let g = self.of[key.0 .1 as usize];
        if self.active == Some(g) {
            return false;
        }
        self.parked[g as usize].push(key);
        true
    }
}

/// The largest number of jobs any group of the run may use: the number of worker threads.
pub(crate) fn max_jobs(declared: &BTreeMap<String, Group>, run_jobs: usize) -> usize {
    declared
        .values()
        .filter_map(|g| g.jobs)
        .fold(run_jobs, usize::max)
}

/// An undeclared group used by a task, without a run: for `pexen check` and embedders.
pub fn check_groups(tasks: &[Task], declared: &BTreeMap<String, Group>) -> Vec<GraphError> {
    let mut errors = Vec::new();
    if let Some(mut g) = Groups::new(declared, 1) {
        g.assign(tasks, &mut errors);
    } else {
        for t in tasks {
            if let Some(group) = t.meta.more.group.as_ref().filter(|g| !g.is_empty()) {
                errors.push(GraphError::UnknownGroup {
                    task: t.name.clone(),
                    group: group.to_string(),
                });
            }
        }
    }
    errors
}
