//! The run state and its transitions, without I/O: no threads, no processes, no clock reads
//! beyond the instants handed in. The dispatcher feeds it what workers report and asks it what to
//! start; every decision of SPEC section 1 is made here and tested here.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::context::Shared;
use crate::error::{GraphError, GraphErrors};
use crate::graph::Graph;
use crate::sched::events::{Attempt, Counts, Event, Finished};
use crate::sched::groups::{Group, Groups};
use crate::sched::locks::Resources;
use crate::sched::queue::{Key, TaskQueue};
use crate::sched::waiting::WaitingKeys;
use crate::task::{OnFailure, Outcome, PoolKind, Task};

/// What an earlier run recorded for a task that `--resume` does not rerun.
#[derive(Clone, Debug, PartialEq)]
pub struct Resumed {
    pub outcome: Outcome,
    pub attempt: u32,
    pub exit_code: Option<i32>,
    pub duration: Duration,
    pub message: Option<String>,
    pub results: Vec<(Outcome, String)>,
    pub exports: Shared,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for required tokens.
    Waiting,
    /// In the ready queue or parked on a resource.
    Ready,
    /// Handed to a worker, resources held, not reported as started yet (see `next_start`).
    Reserved,
    Running,
    Done,
}

#[derive(Debug)]
struct TaskState {
    phase: Phase,
    /// The task's priority, here so that queueing a dependent does not read its definition
    /// (a cache miss per edge on a large graph).
    priority: i32,
    /// Required tokens not yet satisfied.
    unsatisfied: u32,
    attempt: u32,
    /// Worst result streamed during the current attempt.
    worst_result: Option<Outcome>,
    /// What starting the task needs to know of its definition, copied here when it is admitted
    /// (reading the definition again at each start was a cache miss per task at 10^6).
    kind: Kind,
}

/// What admitting tasks reads of their definitions, in one pass over them (at 10^6 tasks, a
/// cache miss per task and pass): each one's state, waiting, with its priority and kind, and its
/// needs of locks and slots. How many of its required tokens are still to come is the graph's
/// to tell, later ([`RunState::admit`]).
struct Admission {
    states: Vec<TaskState>,
    resources: Resources,
    /// Zeros, one per token at most: the table of providers still to finish (`pending`),
    /// written here (see `Spare` in the graph: in a large run, beside the token pass).
    pending: Vec<u32>,
}

impl Admission {
    /// For a run's first batch, `tasks`.
    fn of(tasks: &[Task], capacity: &BTreeMap<String, u32>) -> Self {
        let mut admission = Self {
            states: Vec::with_capacity(tasks.len()),
            resources: Resources::new(capacity),
            pending: Vec::new(),
        };
        let provided = Self::read(tasks, &mut admission.states, &mut admission.resources);
        // A valid graph has no more tokens than provided occurrences.
        admission.pending = crate::graph::written_zeros(provided);
        admission
    }

    /// Appends the states of `tasks` to `states`, and registers their needs in `resources`.
    /// Returns how many tokens they provide, occurrences counted.
    fn read(tasks: &[Task], states: &mut Vec<TaskState>, resources: &mut Resources) -> usize {
        let mut provided = 0;
        for task in tasks {
            provided += task.meta.provides.len();
            resources.register(&task.meta);
            states.push(TaskState {
                phase: Phase::Waiting,
                priority: task.meta.priority,
                unsatisfied: 0,
                attempt: 0,
                worst_result: None,
                kind: Kind::of(task),
            });
        }
        provided
    }
}

/// The kind of work of a task and the pool it chose, in one byte (the task state stays 16
/// bytes): see [`RunState::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kind(u8);

impl Kind {
    const CLOSURE: u8 = 1;
    const TIMEOUT: u8 = 2;
    const THREADS: u8 = 4;
    const PROCESSES: u8 = 8;

    fn of(task: &Task) -> Self {
        let mut bits = 0;
        if matches!(task.work, crate::task::Work::Closure(_)) {
            bits |= Self::CLOSURE;
        }
        if task.meta.more.timeout.is_some() {
            bits |= Self::TIMEOUT;
        }
        bits |= match task.meta.more.pool {
            None => 0,
            Some(PoolKind::Threads) => Self::THREADS,
            Some(PoolKind::Processes) => Self::PROCESSES,
        };
        Kind(bits)
    }

    /// A closure (not a command).
    pub(crate) fn closure(self) -> bool {
        self.0 & Self::CLOSURE != 0
    }

    /// Whether the task has a timeout.
    pub(crate) fn timeout(self) -> bool {
        self.0 & Self::TIMEOUT != 0
    }

    /// The pool the task chose (`Task::pool`), if any.
    pub(crate) fn pool(self) -> Option<PoolKind> {
        if self.0 & Self::THREADS != 0 {
            Some(PoolKind::Threads)
        } else if self.0 & Self::PROCESSES != 0 {
            Some(PoolKind::Processes)
        } else {
            None
        }
    }
}

/// A virtual token (SPEC 13): satisfied by the first provider that succeeds.
#[derive(Debug, Default)]
struct VirtualToken {
    satisfied: bool,
    /// How each provider that did not satisfy it ended (`` `exim` ended fail ``).
    misses: Vec<String>,
}

/// Decides the conditions of a run's tasks: the unmet ones, with the cause.
pub(crate) type Conditions = fn(&[Task]) -> Vec<(u32, String)>;

/// What a run adds to its tasks beyond the graph: exclusivity groups, virtual tokens, and the
/// tasks whose conditions do not hold (decided outside the run state, before the run).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Declared groups by name; none means the run has no groups.
    pub groups: BTreeMap<String, Group>,
    /// The run's jobs: those of the group `""` and of groups that set none.
    pub jobs: usize,
    pub virtuals: Vec<String>,
    /// Tasks to skip at once, with the cause (`condition: /dev/kvm does not exist`).
    pub unmet: Vec<(u32, String)>,
    /// How to decide the tasks' conditions (`condition::evaluate`, which runs their commands):
    /// called once the graph is valid, and only when some task has a condition (the graph's
    /// first pass notes it: at 10^6 tasks a pass of its own cost 20 ns per task). Its unmet
    /// tasks are added to `unmet`.
    pub conditions: Option<Conditions>,
    /// Tasks that go ahead of every other once their requires are satisfied (tasks a suspended
    /// run left to continue).
    pub first: Vec<crate::task::TaskName>,
}

/// A task the dispatcher should start now.
#[derive(Debug)]
pub(crate) struct Start {
    pub idx: u32,
    pub attempt: u32,
    pub shared: Option<Arc<Shared>>,
}

/// Why the run stops starting tasks.
#[derive(Debug, Clone)]
enum Stop {
    FailFast(String),
    /// A task asked to stop the run here (SPEC section 12): the cause of the tasks not run.
    Suspended(String),
    Cancelled,
}

pub(crate) struct RunState {
    graph: Graph,
    capacity: BTreeMap<String, u32>,
    resources: Resources,
    states: Vec<TaskState>,
    /// Per token: providers that have not finished yet.
    pending: Vec<u32>,
    /// Tokens that can no longer be satisfied, with why (few: a table per token of 10^6 was
    /// 16 bytes each, mostly empty).
    broken: rustc_hash::FxHashMap<u32, Box<str>>,
    /// What tasks that succeeded exported, by task (most export nothing). Until some task
    /// exported something, no task's providers are looked at.
    exports: rustc_hash::FxHashMap<u32, Arc<Shared>>,
    resumed: rustc_hash::FxHashMap<u32, Resumed>,
    /// Message of the worst failing result of running attempts (only those that report one).
    worst_messages: rustc_hash::FxHashMap<u32, String>,
    /// Results streamed by attempts reserved ahead of their token before that token's
    /// provider reported its end: queued once the attempt begins (see `reserve_successor`).
    early_results: rustc_hash::FxHashMap<u32, Vec<(Outcome, String)>>,
    ready: TaskQueue,
    /// Keys of the tasks admitted while waiting for tokens: the best key that may still become
    /// ready, so that a reservation never jumps ahead of it (a heap of 10^6 keys cost a cache
    /// miss per level on every purge).
    waiting_keys: WaitingKeys,
    woken: Vec<Key>,
    running: usize,
    done: usize,
    counts: Counts,
    worst: Option<Outcome>,
    fail_fast: bool,
    stop: Option<Stop>,
    /// Tasks that suspended the run, in the order they did.
    suspended: Vec<u32>,
    /// Exclusivity groups; `None` for a run without (its hot path then never looks).
    groups: Option<Box<Groups>>,
    /// Virtual tokens by token id; empty for most runs.
    virtuals: rustc_hash::FxHashMap<u32, VirtualToken>,
    /// Tasks to skip when admitted (conditions that do not hold).
    unmet: rustc_hash::FxHashMap<u32, String>,
    /// Runs with hosts: `TaskStarted` waits for the executor to say where (see `begin`).
    pub(crate) defer_begin: bool,
    /// Where running attempts run (runs with hosts only).
    hosts: rustc_hash::FxHashMap<u32, Arc<str>>,
    /// How many times each task went back to the queue because its host was lost.
    requeued: rustc_hash::FxHashMap<u32, u32>,
    pub(crate) events: VecDeque<Event>,
    /// Last, so dropped last: the tables above are a few large blocks; freeing them after the
    /// millions of small blocks of the tasks made the allocator consolidate all of those first.
    tasks: Vec<Task>,
}

/// How many times a task goes back to the queue after losing its host before it ends `error`.
pub(crate) const MAX_REQUEUES: u32 = 2;

impl RunState {
    /// Validates `tasks` and prepares the run. `resumed` maps task names to what an earlier
    /// run recorded for tasks that need not run again; `first` names tasks that go ahead of
    /// every other once their requires are satisfied (tasks a suspended run left to continue).
    #[cfg(test)]
    pub(crate) fn new(
        tasks: Vec<Task>,
        capacity: BTreeMap<String, u32>,
        fail_fast: bool,
        resumed: HashMap<crate::task::TaskName, Resumed>,
        first: &[crate::task::TaskName],
    ) -> Result<(Self, Vec<String>), GraphErrors> {
        let plan = Plan {
            first: first.to_vec(),
            ..Plan::default()
        };
        Self::with_plan(tasks, capacity, fail_fast, resumed, plan)
    }

    /// [`RunState::new`] with groups, virtual tokens, unmet conditions and tasks to run first.
    pub(crate) fn with_plan(
        tasks: Vec<Task>,
        capacity: BTreeMap<String, u32>,
        fail_fast: bool,
        resumed: HashMap<crate::task::TaskName, Resumed>,
        plan: Plan,
    ) -> Result<(Self, Vec<String>), GraphErrors> {
        let Plan {
            groups: declared,
            jobs,
            virtuals: virtual_tokens,
            mut unmet,
            first,
            conditions,
        } = plan;
        let mut graph = Graph::default();
        let mut seen = crate::graph::Seen::default();
        // What admitting the tasks reads of their definitions: in a large run, read while
        // another thread hashes the tokens; otherwise once the graph is validated.
        let mut admission = None;
        let built = graph.extend_seeing(&tasks, 0, &capacity, &mut seen, &mut || {
            admission = Some(Admission::of(&tasks, &capacity));
        });
        let mut groups = Groups::new(&declared, jobs.max(1));
        let mut errors = Vec::new();
        if let Some(g) = &mut groups {
            g.assign(&tasks, &mut errors);
        } else if seen.any_group {
            errors.extend(crate::sched::groups::check_groups(&tasks, &declared));
        }
        let warnings = match built {
            Ok(warnings) if errors.is_empty() => warnings,
            Ok(_) => return Err(GraphErrors(errors)),
            Err(GraphErrors(mut e)) => {
                e.extend(errors);
                return Err(GraphErrors(e));
            }
        };
        let mut virtuals = rustc_hash::FxHashMap::default();
        if !virtual_tokens.is_empty() {
            // Lookups by name: the table of token ids (see `Graph::index_tokens`).
            graph.index_tokens();
        }
        for token in &virtual_tokens {
            match graph.token_id(token) {
                Some(id) if !graph.providers(id).is_empty() => {
                    virtuals.insert(id, VirtualToken::default());
                }
                _ => errors.push(GraphError::VirtualWithoutProvider {
                    token: token.clone(),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(GraphErrors(errors));
        }
        if let Some(evaluate) = conditions.filter(|_| seen.any_when) {
            unmet.extend(evaluate(&tasks));
        }
        let Admission {
            states,
            resources,
            pending,
        } = admission.unwrap_or_else(|| Admission::of(&tasks, &capacity));
        let mut state = RunState {
            tasks: Vec::new(),
            graph,
            capacity,
            resources,
            states,
            pending,
            broken: rustc_hash::FxHashMap::default(),
            exports: rustc_hash::FxHashMap::default(),
            resumed: rustc_hash::FxHashMap::default(),
            worst_messages: rustc_hash::FxHashMap::default(),
            early_results: rustc_hash::FxHashMap::default(),
            ready: TaskQueue::default(),
            waiting_keys: WaitingKeys::default(),
            woken: Vec::new(),
            running: 0,
            done: 0,
            counts: Counts::default(),
            worst: None,
            fail_fast,
            stop: None,
            suspended: Vec::new(),
            groups,
            virtuals,
            unmet: unmet.into_iter().collect(),
            defer_begin: false,
            hosts: rustc_hash::FxHashMap::default(),
            requeued: rustc_hash::FxHashMap::default(),
            events: VecDeque::new(),
        };
        state.tasks = tasks;
        if !resumed.is_empty() || !first.is_empty() {
            state.graph.index_all_names(&state.tasks);
        }
        // Resumed tasks cost nothing and may unblock the tasks to run first: they go first too.
        for (name, r) in resumed {
            if let Some(idx) = state.graph.index_of(&state.tasks, &name) {
                state.go_first(idx);
                state.resumed.insert(idx, r);
            }
        }
        for name in &first {
            if let Some(idx) = state.graph.index_of(&state.tasks, name) {
                state.go_first(idx);
            }
        }
        // No lookup by name until tasks are added (which builds the table again).
        state.graph.forget_names();
        state.admit(0);
        Ok((state, warnings))
    }

    /// Adds tasks to the running graph (validated as a batch against what is there).
    pub(crate) fn add_tasks(&mut self, tasks: Vec<Task>) -> Result<Vec<String>, GraphErrors> {
        let start = self.tasks.len();
        if let Some(g) = &mut self.groups {
            let mut errors = Vec::new();
            g.assign(&tasks, &mut errors);
            if !errors.is_empty() {
                g.of.truncate(start);
                return Err(GraphErrors(errors));
            }
        } else {
            let errors = crate::sched::groups::check_groups(&tasks, &BTreeMap::new());
            if !errors.is_empty() {
                return Err(GraphErrors(errors));
            }
        }
        self.tasks.extend(tasks);
        match self.graph.extend(&self.tasks, start, &self.capacity) {
            Ok(warnings) => {
                self.admit(start);
                Ok(warnings)
            }
            Err(e) => {
                self.tasks.truncate(start);
                if let Some(g) = &mut self.groups {
                    g.of.truncate(start);
                }
                Err(e)
            }
        }
    }

    /// Task `idx` goes ahead of every other once its requires are satisfied (before it is
    /// admitted).
    fn go_first(&mut self, idx: u32) {
        self.tasks[idx as usize].meta.priority = i32::MIN;
        if let Some(st) = self.states.get_mut(idx as usize) {
            st.priority = i32::MIN;
        }
    }

    /// Sets up the state of tasks `start..` and queues those already runnable.
    fn admit(&mut self, start: usize) {
        if self.states.len() < self.tasks.len() {
            // Added tasks: a run's first batch comes with its states (see `with_plan`).
            Admission::read(&self.tasks[start..], &mut self.states, &mut self.resources);
        }
        // Only the batch's new tokens have providers in it (see `Graph::extend`), none of
        // which has finished: read from the graph's rows of providers, in token order.
        // (A first batch's table comes from `Admission`, zeros, maybe longer than needed.)
        let old_tokens = if start == 0 { 0 } else { self.pending.len() };
        self.pending.resize(self.graph.token_count(), 0);
        for (tok, pending) in self.pending.iter_mut().enumerate().skip(old_tokens) {
            *pending = self.graph.providers(tok as u32).len() as u32;
        }
        // Nothing to skip at admission (most runs): each task queued or waiting in the same pass.
        let queue_now = self.unmet.is_empty() && self.broken.is_empty();
        // A run's first batch: every token it requires has a provider still to run (or it is
        // refused), so each task waits for all of its tokens (at 10^6 tasks, no lookup of each).
        let all_pending = start == 0 && self.broken.is_empty();
        let mut broken_at_admission = Vec::new();
        for idx in start..self.tasks.len() {
            if all_pending {
                self.states[idx].unsatisfied = self.graph.requires[idx].len() as u32;
                if queue_now {
                    self.queue_admitted(idx as u32);
                }
                continue;
            }
            let mut unsatisfied = 0;
            for &tok in &self.graph.requires[idx] {
                if let Some(cause) = self.broken_cause(tok) {
                    broken_at_admission.push((idx as u32, cause.to_string()));
                } else if self.pending[tok as usize] > 0
                    && !self.virtuals.get(&tok).is_some_and(|v| v.satisfied)
                {
                    unsatisfied += 1;
                }
            }
            self.states[idx].unsatisfied = unsatisfied;
            if queue_now {
                self.queue_admitted(idx as u32);
            }
        }
        if queue_now {
            self.waiting_keys.admitted();
            return;
        }
        if !self.unmet.is_empty() {
            for idx in start as u32..self.tasks.len() as u32 {
                if let Some(cause) = self.unmet.remove(&idx) {
                    if self.states[idx as usize].phase == Phase::Waiting {
                        self.skip(idx, cause);
                    }
                }
            }
        }
        for (idx, cause) in broken_at_admission {
            if self.states[idx as usize].phase == Phase::Waiting {
                self.skip(idx, cause);
            }
        }
        for idx in start as u32..self.tasks.len() as u32 {
            self.queue_admitted(idx);
        }
        self.waiting_keys.admitted();
    }

    /// Task `idx`, just admitted, is ready or waits for tokens (unless skipped already).
    fn queue_admitted(&mut self, idx: u32) {
        let st = &self.states[idx as usize];
        if st.phase == Phase::Waiting {
            if st.unsatisfied == 0 {
                self.make_ready(idx);
            } else {
                let (priority, states) = (st.priority, &self.states);
                self.waiting_keys
                    .push(priority, idx, |i| still_waiting(states, i));
            }
        }
    }

    pub(crate) fn task(&self, idx: u32) -> &Task {
        &self.tasks[idx as usize]
    }

    /// Task `idx`'s kind of work and pool, without reading its definition.
    pub(crate) fn kind(&self, idx: u32) -> Kind {
        self.states[idx as usize].kind
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    pub(crate) fn running(&self) -> usize {
        self.running
    }

    /// True once every task has its `TaskFinished`.
    pub(crate) fn all_done(&self) -> bool {
        self.done == self.tasks.len()
    }

    fn key(&self, idx: u32) -> Key {
        Reverse((self.states[idx as usize].priority, idx))
    }

    // Measured: with a second caller (`wait_again`), `#[inline]` alone left it out of line in
    // `admit`, 62 instructions per task of a run of independent tasks.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn make_ready(&mut self, idx: u32) {
        self.states[idx as usize].phase = Phase::Ready;
        self.push_ready(self.key(idx));
    }

    /// Queues a ready task: in the ready queue, or parked if its group is not running.
    #[inline]
    fn push_ready(&mut self, key: Key) {
        if let Some(g) = &mut self.groups {
            if g.park(key) {
                return;
            }
        }
        self.ready.push(key);
    }

    /// Whether a task of the running group may start now, passing the turn to the next group
    /// when the running one has nothing running and nothing ready (SPEC 13).
    fn group_turn(&mut self) -> bool {
        let Some(g) = self.groups.as_mut() else {
            return true;
        };
        if let Some(active) = g.active {
            if self.ready.peek().is_some() {
                return self.running < g.jobs[active as usize];
            }
            if self.running > 0 {
                return false;
            }
            g.active = None;
            self.events.push_back(Event::GroupFinished {
                group: g.name(active).to_string(),
            });
        }
        let Some(next) = g.best_parked() else {
            return false;
        };
        g.active = Some(next);
        std::mem::swap(&mut self.ready, &mut g.parked[next as usize]);
        self.events.push_back(Event::GroupStarted {
            group: g.name(next).to_string(),
        });
        self.running < g.jobs[next as usize]
    }

    /// The pool of closure task `idx` when it chose none: its group's, if set.
    pub(crate) fn group_pool(&self, idx: u32) -> Option<PoolKind> {
        let g = self.groups.as_ref()?;
        g.pools[g.of[idx as usize] as usize]
    }

    /// Closes the turn of the running group (the run is over).
    fn close_group(&mut self) {
        if let Some(g) = self.groups.as_mut() {
            if let Some(active) = g.active.take() {
                self.events.push_back(Event::GroupFinished {
                    group: g.name(active).to_string(),
                });
            }
        }
    }

    /// The next task to start, if any may start now. Resumed tasks are finished on the way
    /// without being returned.
    ///
    /// With `reserve`, the task is only reserved: its resources are taken but `TaskStarted` waits
    /// for [`RunState::begin`] (a worker running a batch of short tasks reports them together).
    /// A reservation is only made when no task that may still become ready would be preferred
    /// over it, so that reserving ahead never bends priorities.
    pub(crate) fn next_start(&mut self, reserve: bool) -> Option<Start> {
        if self.stop.is_some() {
            return None;
        }
        loop {
            if self.groups.is_some() && !self.group_turn() {
                return None;
            }
            if reserve && !self.ahead_is_safe() {
                return None;
            }
            let key = self.ready.pop()?;
            let idx = key.0 .1;
            // Most runs resume nothing: no lookup per task then.
            let resumed = if self.resumed.is_empty() {
                None
            } else {
                self.resumed.remove(&idx)
            };
            if let Some(r) = resumed {
                self.finish_resumed(idx, r);
                continue;
            }
            if let Err(blocker) = self.resources.try_acquire(idx) {
                self.resources.wait(blocker, key);
                continue;
            }
            let attempt = self.reserve_attempt(idx);
            if !reserve && !self.defer_begin {
                self.begin(idx, attempt, None);
            }
            let shared = self.shared_for(idx);
            return Some(Start {
                idx,
                attempt,
                shared,
            });
        }
    }

    /// Reserves the task that `prev`'s success alone would make ready, when nothing else is
    /// ready: the worker that runs `prev` then runs it right after, without reporting `prev`
    /// first, so that a chain of short tasks takes one lock round trip per batch instead of one
    /// per task. It must be the only dependent of `prev`'s only token, waiting for that token
    /// alone, with no better task waiting; `runs_here` says whether its kind of work may run in
    /// a batch. The worker runs it only if `prev` passed cleanly; otherwise it is given back and
    /// waits again ([`RunState::give_back`]). Runs with groups, virtual tokens, resumed tasks,
    /// locks or slots never reserve ahead so.
    pub(crate) fn reserve_successor(
        &mut self,
        prev: u32,
        runs_here: impl Fn(Kind) -> bool,
    ) -> Option<Start> {
        if self.stop.is_some()
            || self.ready.peek().is_some()
            || self.groups.is_some()
            || !self.virtuals.is_empty()
            || !self.resumed.is_empty()
            || self.resources.any_needs()
        {
            return None;
        }
        let &[tok] = &self.graph.provides[prev as usize] else {
            return None;
        };
        // `prev`, reserved or running, is the token's last provider still to finish.
        if self.pending[tok as usize] != 1 || self.broken_cause(tok).is_some() {
            return None;
        }
        let next = {
            let mut dependents = self.graph.dependents(tok);
            let (Some(next), None) = (dependents.next(), dependents.next()) else {
                return None;
            };
            next
        };
        let st = &self.states[next as usize];
        if st.phase != Phase::Waiting || st.unsatisfied != 1 || !runs_here(st.kind) {
            return None;
        }
        let key = Reverse((st.priority, next));
        let states = &self.states;
        if self
            .waiting_keys
            .best(|i| still_waiting(states, i))
            .is_some_and(|top| top > key)
        {
            return None;
        }
        // Reserved with its token still unsatisfied (`unsatisfied` stays 1 until it begins):
        // `prev`'s end, reported first, leaves it alone.
        let attempt = self.reserve_attempt(next);
        let shared = self.shared_for(next);
        Some(Start {
            idx: next,
            attempt,
            shared,
        })
    }

    /// Task `idx`'s next attempt is handed to a worker: returns its number.
    #[inline]
    fn reserve_attempt(&mut self, idx: u32) -> u32 {
        let st = &mut self.states[idx as usize];
        st.phase = Phase::Reserved;
        st.attempt += 1;
        st.worst_result = None;
        self.running += 1;
        st.attempt
    }

    /// The task the next `next_start` would consider, if any.
    pub(crate) fn peek_ready(&self) -> Option<u32> {
        self.ready.peek().map(|key| key.0 .1)
    }

    /// True when no task still waiting for tokens has a better key than the best ready one.
    fn ahead_is_safe(&mut self) -> bool {
        let Some(best) = self.ready.peek() else {
            return false;
        };
        let states = &self.states;
        self.waiting_keys
            .best(|idx| still_waiting(states, idx))
            .is_none_or(|top| best >= top)
    }

    /// A reserved attempt really starts (on `host`, in runs with hosts): reported now.
    pub(crate) fn begin(&mut self, idx: u32, attempt: u32, host: Option<Arc<str>>) {
        let st = &mut self.states[idx as usize];
        if st.phase != Phase::Reserved || st.attempt != attempt {
            return;
        }
        st.phase = Phase::Running;
        // Reserved ahead of its token (`reserve_successor`), whose provider has ended since.
        st.unsatisfied = 0;
        if let Some(h) = &host {
            self.hosts.insert(idx, h.clone());
        }
        self.events.push_back(Event::TaskStarted {
            task: self.tasks[idx as usize].name.clone(),
            attempt,
            host,
        });
        if !self.early_results.is_empty() {
            self.report_early_results(idx, attempt);
        }
    }

    /// Queues the results task `idx` streamed while reserved ahead of its token (see
    /// `on_result`), now that it began.
    #[cold]
    fn report_early_results(&mut self, idx: u32, attempt: u32) {
        for (status, message) in self.early_results.remove(&idx).unwrap_or_default() {
            self.on_result(idx, attempt, status, message);
        }
    }

    /// A reserved attempt that will not run (the run was cancelled, or the task before it in
    /// its batch did not pass): back to ready, or, if it was reserved ahead of its token, back to
    /// waiting for it (or skipped if the token can no longer be satisfied).
    pub(crate) fn give_back(&mut self, idx: u32, attempt: u32) {
        let st = &mut self.states[idx as usize];
        if st.phase != Phase::Reserved || st.attempt != attempt {
            return;
        }
        st.attempt -= 1;
        let ahead = st.unsatisfied > 0;
        if ahead && !self.early_results.is_empty() {
            self.early_results.remove(&idx);
        }
        self.running -= 1;
        self.resources.release(idx, &mut self.woken);
        self.requeue_woken();
        if ahead {
            self.wait_again(idx);
        } else {
            self.states[idx as usize].phase = Phase::Ready;
            self.push_ready(self.key(idx));
        }
    }

    /// A task reserved ahead of its tokens that will not run now: its tokens counted again, it
    /// waits for those still pending, is ready if none is, or is skipped if one is broken.
    #[cold]
    fn wait_again(&mut self, idx: u32) {
        let mut unsatisfied = 0;
        let mut broken = None;
        for &tok in &self.graph.requires[idx as usize] {
            if let Some(cause) = self.broken_cause(tok) {
                broken = Some(cause.to_string());
                break;
            }
            if self.pending[tok as usize] > 0 {
                unsatisfied += 1;
            }
        }
        let st = &mut self.states[idx as usize];
        st.phase = Phase::Waiting;
        st.unsatisfied = unsatisfied;
        let priority = st.priority;
        if let Some(cause) = broken {
            self.skip(idx, cause);
        } else if unsatisfied == 0 {
            self.make_ready(idx);
        } else {
            self.waiting_keys.wait_again(priority, idx);
        }
    }

    /// Queues the lock waiters a release woke.
    #[inline]
    fn requeue_woken(&mut self) {
        if !self.woken.is_empty() {
            self.queue_woken();
        }
    }

    /// [`RunState::requeue_woken`] once a release woke some: out of line, so that the check
    /// above costs no call (most releases wake nobody; most tasks hold no lock).
    #[inline(never)]
    fn queue_woken(&mut self) {
        if self.groups.is_none() {
            self.ready.extend(self.woken.drain(..));
        } else {
            let woken = std::mem::take(&mut self.woken);
            for &key in &woken {
                self.push_ready(key);
            }
            self.woken = woken;
            self.woken.clear();
        }
    }

    /// Merges the exports of the providers of `idx`'s requires: definition order, later wins.
    #[inline]
    fn shared_for(&mut self, idx: u32) -> Option<Arc<Shared>> {
        // Fast path, no allocation: most providers export nothing, most runs nothing at all.
        if self.exports.is_empty() {
            return None;
        }
        self.merged_exports(idx)
    }

    /// [`RunState::shared_for`] once some task exported something.
    fn merged_exports(&mut self, idx: u32) -> Option<Arc<Shared>> {
        let any = self.graph.requires[idx as usize].iter().any(|&t| {
            self.graph
                .providers(t)
                .iter()
                .any(|&p| self.exports.contains_key(&p))
        });
        if !any {
            return None;
        }
        let providers = self.graph.providers_of(idx);
        let with_exports: Vec<u32> = providers
            .into_iter()
            .filter(|&p| self.exports.contains_key(&p))
            .collect();
        match with_exports.as_slice() {
            [] => None,
            [one] => self.exports.get(one).cloned(),
            many => {
                let mut merged = Shared::new();
                let mut from: HashMap<String, u32> = HashMap::new();
                for &p in many {
                    for (k, v) in self.exports.get(&p).map(|e| &**e).into_iter().flatten() {
                        if let Some(old) = merged.insert(k.clone(), v.clone()) {
                            if &old != v {
                                let prev = from[k];
                                self.events.push_back(Event::Warning {
                                    task: Some(self.tasks[idx as usize].name.clone()),
                                    message: format!(
                                        "shared key `{k}` is exported by both `{}` and `{}`; the value of `{}` wins",
                                        self.tasks[prev as usize].name,
                                        self.tasks[p as usize].name,
                                        self.tasks[p as usize].name
                                    ),
                                });
                            }
                        }
                        from.insert(k.clone(), p);
                    }
                }
                Some(Arc::new(merged))
            }
        }
    }

    /// A result streamed by a running attempt.
    pub(crate) fn on_result(&mut self, idx: u32, attempt: u32, status: Outcome, message: String) {
        let st = &self.states[idx as usize];
        if st.phase == Phase::Reserved && st.attempt == attempt && st.unsatisfied > 0 {
            // Reserved ahead of its token, whose provider's end is not reported yet: the
            // attempt starts, and its results come, after that end (see `begin`).
            self.early_results
                .entry(idx)
                .or_default()
                .push((status, message));
            return;
        }
        self.begin(idx, attempt, None);
        let st = &mut self.states[idx as usize];
        if st.phase != Phase::Running || st.attempt != attempt {
            return;
        }
        let worse = st
            .worst_result
            .is_none_or(|w| status.severity() > w.severity());
        st.worst_result = Some(st.worst_result.map_or(status, |w| w.worst(status)));
        if worse && !status.is_success() {
            self.worst_messages.insert(idx, message.clone());
        }
        self.events.push_back(Event::TaskResult {
            task: self.tasks[idx as usize].name.clone(),
            attempt,
            status,
            message,
        });
    }

    /// An attempt ended. Releases its resources, then retries or finishes the task.
    pub(crate) fn on_done(&mut self, idx: u32, attempt: u32, mut report: Attempt) {
        let st = &self.states[idx as usize];
        if report.not_started && st.phase == Phase::Reserved && st.attempt == attempt {
            // Never started nor reported: back to the queue, uncounted (skipped on a cancel).
            self.give_back(idx, attempt);
            return;
        }
        self.begin(idx, attempt, None);
        let st = &mut self.states[idx as usize];
        if st.phase != Phase::Running || st.attempt != attempt {
            return;
        }
        let outcome = st
            .worst_result
            .map_or(report.outcome, |w| report.outcome.worst(w));
        // A failure that came from a reported result, not the exit status: say which.
        let worst_message = if self.worst_messages.is_empty() {
            None
        } else {
            self.worst_messages.remove(&idx)
        };
        if let Some(m) = worst_message {
            if outcome != report.outcome && report.message.is_none() {
                report.message = Some(format!("reported {outcome}: {m}"));
            }
        }
        self.running -= 1;
        self.resources.release(idx, &mut self.woken);
        self.requeue_woken();
        let host = if self.hosts.is_empty() {
            None
        } else {
            self.hosts.remove(&idx)
        };
        if report.suspend {
            self.suspend(idx, attempt, report, host);
            return;
        }
        if let Some(reason) = &report.host_lost {
            let n = self.requeued.entry(idx).or_insert(0);
            *n += 1;
            if *n <= MAX_REQUEUES && self.stop.is_none() {
                // Not an attempt: the same attempt number runs again, on another host or on
                // this one once it is back.
                let st = &mut self.states[idx as usize];
                st.phase = Phase::Ready;
                st.attempt -= 1;
                self.ready.push(self.key(idx));
                return;
            }
            report.message = Some(format!("host lost: {reason}"));
        }
        let outcome = if report.host_lost.is_some() {
            Outcome::Error
        } else {
            outcome
        };
        if !outcome.is_success()
            && attempt <= self.tasks[idx as usize].meta.more.retries
            && self.stop.is_none()
        {
            self.states[idx as usize].phase = Phase::Ready;
            self.push_ready(self.key(idx));
            self.events.push_back(Event::TaskRetrying {
                task: self.tasks[idx as usize].name.clone(),
                attempt,
                outcome,
                message: report.message,
                output: report.output.map(Arc::from),
                duration: report.duration,
            });
            return;
        }
        let exports = if report.exports.is_empty() {
            // Not dropped: its drop (two calls into the standard library) was a few percent
            // of a no-op closure's attempt (issue 15), and an empty map owns no memory here:
            // exports are only ever inserted (`Context::export`) or deserialized, never
            // removed, so an empty one never had a node.
            std::mem::forget(report.exports);
            None
        } else {
            outcome.is_success().then(|| Arc::new(report.exports))
        };
        let finished = Finished {
            task: self.tasks[idx as usize].name.clone(),
            outcome,
            attempt,
            exit_code: report.exit_code,
            duration: report.duration,
            resumed: false,
            cause: None,
            message: report.message,
            exports: exports.clone(),
            output: report.output.map(Arc::from),
            host,
        };
        self.finish(idx, finished);
        if self.fail_fast && !outcome.is_success() && self.stop.is_none() {
            self.stop = Some(Stop::FailFast(format!(
                "not run: --fail-fast stopped the run after `{}` ended {outcome}",
                self.tasks[idx as usize].name
            )));
        }
    }

    /// The attempt asked to stop the run and continue later: nothing new starts (retries
    /// neither), running tasks finish, the rest are skipped once nothing runs. The task ends
    /// `skip`, with a cause saying it was suspended; its dependents are skipped at once.
    fn suspend(&mut self, idx: u32, attempt: u32, report: Attempt, host: Option<Arc<str>>) {
        let name = self.tasks[idx as usize].name.clone();
        self.suspended.push(idx);
        if matches!(self.stop, None | Some(Stop::FailFast(_))) {
            self.stop = Some(Stop::Suspended(format!(
                "not run: the run was suspended by `{name}`"
            )));
        }
        let why = report.message.as_deref().unwrap_or("by the task");
        let cause = format!("suspended ({why}): continue the run with --resume");
        self.events.push_back(Event::TaskSuspended {
            task: name.clone(),
            attempt,
            message: report.message.clone(),
        });
        self.finish(
            idx,
            Finished {
                task: name,
                outcome: Outcome::Skip,
                attempt,
                exit_code: report.exit_code,
                duration: report.duration,
                resumed: false,
                cause: Some(cause),
                message: report.message,
                exports: None,
                output: report.output.map(Arc::from),
                host,
            },
        );
    }

    fn finish_resumed(&mut self, idx: u32, r: Resumed) {
        let name = self.tasks[idx as usize].name.clone();
        for (status, message) in r.results {
            self.events.push_back(Event::TaskResult {
                task: name.clone(),
                attempt: r.attempt,
                status,
                message,
            });
        }
        let exports = (!r.exports.is_empty()).then(|| Arc::new(r.exports));
        self.finish(
            idx,
            Finished {
                task: name,
                outcome: r.outcome,
                attempt: r.attempt,
                exit_code: r.exit_code,
                duration: r.duration,
                resumed: true,
                cause: None,
                message: r.message,
                exports,
                output: None,
                host: None,
            },
        );
    }

    /// Records the final outcome, reports it, and settles the tokens the task provides;
    /// dependents that can no longer run are skipped in turn (iteratively: a failed root of a
    /// chain of 10^6 tasks must not overflow the stack).
    fn finish(&mut self, idx: u32, finished: Finished) {
        let mut to_skip = Vec::new();
        self.finish_one(idx, finished, &mut to_skip);
        while let Some((d, cause)) = to_skip.pop() {
            if self.states[d as usize].phase == Phase::Waiting {
                let skipped = self.skipped(d, cause);
                self.finish_one(d, skipped, &mut to_skip);
            }
        }
    }

    fn finish_one(&mut self, idx: u32, finished: Finished, to_skip: &mut Vec<(u32, String)>) {
        let outcome = finished.outcome;
        let ran = finished.cause.is_none();
        let satisfies = ran
            && (outcome.is_success()
                || self.tasks[idx as usize].meta.more.on_failure == OnFailure::RunDependents);
        if let Some(exports) = finished.exports.as_ref().filter(|_| satisfies) {
            self.exports.insert(idx, exports.clone());
        }
        self.states[idx as usize].phase = Phase::Done;
        self.done += 1;
        self.counts.add(outcome);
        self.worst = Some(self.worst.map_or(outcome, |w| w.worst(outcome)));
        self.events.push_back(Event::TaskFinished(finished));

        for i in 0..self.graph.provides[idx as usize].len() {
            let tok = self.graph.provides[idx as usize][i] as usize;
            self.pending[tok] -= 1;
            if !self.virtuals.is_empty() && self.virtuals.contains_key(&(tok as u32)) {
                self.settle_virtual(idx, tok as u32, satisfies, ran, outcome, to_skip);
                continue;
            }
            if satisfies {
                if self.pending[tok] > 0 || self.broken_cause(tok as u32).is_some() {
                    continue;
                }
                self.wake_dependents(tok as u32);
            } else if self.broken_cause(tok as u32).is_none() {
                let how = how_ended(ran, self.suspended.contains(&idx), outcome);
                let cause = format!(
                    "required token `{}` is not available: `{}` {how}",
                    self.graph.token_name(tok as u32),
                    self.tasks[idx as usize].name
                );
                self.broken
                    .insert(tok as u32, cause.clone().into_boxed_str());
                for d in self.graph.dependents(tok as u32) {
                    if self.states[d as usize].phase == Phase::Waiting {
                        to_skip.push((d, cause.clone()));
                    }
                }
            }
        }
    }

    /// Why token `tok` can no longer be satisfied, if it cannot.
    fn broken_cause(&self, tok: u32) -> Option<&str> {
        if self.broken.is_empty() {
            return None;
        }
        self.broken.get(&tok).map(|c| &**c)
    }

    /// A satisfied token: its waiting dependents need one token less.
    fn wake_dependents(&mut self, tok: u32) {
        for d in self.graph.dependents(tok) {
            let st = &mut self.states[d as usize];
            if st.phase == Phase::Waiting {
                st.unsatisfied -= 1;
                if st.unsatisfied == 0 {
                    st.phase = Phase::Ready;
                    let key = Reverse((st.priority, d));
                    // `push_ready`, spelled out: `self.graph` is borrowed by the loop.
                    if self.groups.as_mut().is_some_and(|g| g.park(key)) {
                        continue;
                    }
                    self.ready.push(key);
                }
            }
        }
    }

    /// A provider of virtual token `tok` finished: the first that satisfies it satisfies it;
    /// once every provider finished without, its dependents are skipped, the cause naming each.
    fn settle_virtual(
        &mut self,
        idx: u32,
        tok: u32,
        satisfies: bool,
        ran: bool,
        outcome: Outcome,
        to_skip: &mut Vec<(u32, String)>,
    ) {
        let v = self.virtuals.get_mut(&tok).expect("a virtual token");
        if v.satisfied {
            return;
        }
        if satisfies {
            v.satisfied = true;
            v.misses = Vec::new();
            self.wake_dependents(tok);
            return;
        }
        let how = how_ended(ran, self.suspended.contains(&idx), outcome);
        let v = self.virtuals.get_mut(&tok).expect("a virtual token");
        v.misses
            .push(format!("`{}` {how}", self.tasks[idx as usize].name));
        if self.pending[tok as usize] > 0 {
            return;
        }
        let cause = format!(
            "required token `{}` is not available: no provider succeeded ({})",
            self.graph.token_name(tok),
            v.misses.join(", ")
        );
        self.broken.insert(tok, cause.clone().into_boxed_str());
        for d in self.graph.dependents(tok) {
            if self.states[d as usize].phase == Phase::Waiting {
                to_skip.push((d, cause.clone()));
            }
        }
    }

    /// The `TaskFinished` of a task that will not run, with the reason.
    fn skipped(&self, idx: u32, cause: String) -> Finished {
        Finished {
            task: self.tasks[idx as usize].name.clone(),
            outcome: Outcome::Skip,
            attempt: self.states[idx as usize].attempt,
            exit_code: None,
            duration: Duration::ZERO,
            resumed: false,
            cause: Some(cause),
            message: None,
            exports: None,
            output: None,
            host: None,
        }
    }

    fn skip(&mut self, idx: u32, cause: String) {
        let finished = self.skipped(idx, cause);
        self.finish(idx, finished);
    }

    /// Stops starting tasks: running ones finish, the rest are skipped once nothing runs.
    pub(crate) fn cancel(&mut self) {
        if !matches!(self.stop, Some(Stop::Cancelled)) {
            self.stop = Some(Stop::Cancelled);
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        matches!(self.stop, Some(Stop::Cancelled))
    }

    /// Once stopped and idle, skips every task that did not run. Returns true when it did.
    pub(crate) fn settle_stopped(&mut self) -> bool {
        let Some(stop) = self.stop.clone() else {
            return false;
        };
        if self.running > 0 || self.all_done() {
            return false;
        }
        let cause = match stop {
            Stop::FailFast(cause) | Stop::Suspended(cause) => cause,
            Stop::Cancelled => "not run: the run was interrupted".to_string(),
        };
        for idx in 0..self.tasks.len() as u32 {
            if self.states[idx as usize].phase != Phase::Done {
                self.skip(idx, cause.clone());
            }
        }
        true
    }

    /// The final event: the worst outcome (`pass` for an empty run) and the counts. The
    /// running group's turn ends first.
    pub(crate) fn run_finished(&mut self, duration: Duration) -> Event {
        self.close_group();
        Event::RunFinished {
            outcome: self.worst.unwrap_or(Outcome::Pass),
            counts: self.counts,
            duration,
            interrupted: self.is_cancelled(),
        }
    }
}

#[cfg(test)]
#[path = "run_state_tests.rs"]
mod tests;

/// The priority of task `idx` if it still waits for tokens.
fn still_waiting(states: &[TaskState], idx: u32) -> Option<i32> {
    let st = &states[idx as usize];
    (st.phase == Phase::Waiting).then_some(st.priority)
}

/// How a provider ended, for the cause of a dependent it leaves unsatisfied.
fn how_ended(ran: bool, suspended: bool, outcome: Outcome) -> String {
    if ran {
        format!("ended {outcome}")
    } else if suspended {
        "was suspended".to_string()
    } else {
        "was skipped".to_string()
    }
}
