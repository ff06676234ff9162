//! The dispatcher: the one owner of the run state.
//!
//! The state ([`RunState`], pure transitions) lives behind one lock in [`Core`]. Dispatching is
//! a role, not a thread: a worker that finishes an attempt takes the lock, applies the
//! transition, takes its next task itself and hands further ready tasks to idle workers. So a
//! chain of short tasks never waits for a thread hand-off, and a fan-out wakes exactly as many
//! workers as it has tasks for. A host connection's reader plays the same role for the attempts
//! handed to it (see [`Recorder`]), and starts those that take their room ([`Carrier`]).
//! Events are queued in order under the same lock; the [`Run`] iterator takes them in
//! batches. Control (cancel, kill, tasks added) goes through the same lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::run_state::{Plan, RunState};
use super::SchedulerBuilder;
use crate::context::ResultSink;
use crate::error::{GraphError, GraphErrors};
use crate::pool::attempt::{Carrier, News, Ran, Recorder};
use crate::pool::thread::WorkerThreads;
use crate::pool::{Executor, Job};
use crate::sched::events::{Attempt, Event};
use crate::task::{Outcome, Task};

/// The run state and the bookkeeping of who works on what.
struct Core {
    state: RunState,
    /// Hands jobs to idle workers; dropped when the run ends so that they exit.
    jobs: Option<Sender<Job>>,
    /// Workers blocked waiting for a job.
    idle: usize,
    /// Runs with hosts: jobs handed to idle workers, which wait for them on
    /// `Shared::job_ready` (see [`Shared::park`]) instead of the channel `jobs`.
    handed: VecDeque<Job>,
    /// Of `handed`, those whose worker is not woken yet (see [`Shared::wake_workers`]).
    to_wake: usize,
    /// Set once `RunFinished` is queued.
    finished: bool,
    /// Kept open for tasks the embedder adds, until closed or cancelled
    /// (`SchedulerBuilder::keep_open`).
    open: bool,
    /// The consumer sleeps on the condition variable: wake it when events are queued.
    consumer_waiting: bool,
    started: Instant,
    /// See every event before the run goes on (the journal among them), in the order they
    /// were added: see `SchedulerBuilder::observer`.
    observers: Vec<super::Observer>,
    /// Whether a worker may reserve a batch of short tasks (see [`Core::reserve`]).
    batching: bool,
    /// Moving average of closure attempt durations, in nanoseconds.
    avg_attempt_ns: u64,
    /// The pool of closures that did not choose one.
    default_pool: crate::task::PoolKind,
    /// How many of `state.events` the observer has seen.
    observed: usize,
    /// Whether attempts may run elsewhere (hosts, Slurm): only then do jobs carry the task's
    /// `slots`, `host_tags` and `outputs` (copying them cost more than a no-op closure's run).
    placed: bool,
    /// Runs with hosts: asked before each job is handed out, so that a task leaves the run
    /// state's queue only when some place has room for it (see `next_job`).
    gate: Option<Arc<Executor>>,
}

/// Closure attempts shorter than this on average are batched (see `Core::reserve`).
const SHORT_ATTEMPT_NS: u64 = 20_000;
/// Tasks a worker runs per lock acquisition at most.
const BATCH_TASKS: usize = 16;
/// Queue length at which the consumer is woken at once. Each wake-up takes the lock from a
/// worker in turn: at 512, a chain of 10^6 no-op closures made some 2 200 context switches, at
/// 4096 some 430 (its run phase 8-12 % shorter; events wait at most `POLL` either way).
const BATCH: usize = 4096;
/// How long the consumer sleeps at most before it looks for queued events itself: the latency
/// of the display and of JSON lines, at most.
const POLL: std::time::Duration = std::time::Duration::from_millis(10);

struct Shared {
    core: Mutex<Core>,
    events_ready: Condvar,
    /// Runs with hosts: a job was handed to an idle worker, or the run ended.
    job_ready: Condvar,
    /// Whether idle workers wait on `job_ready` (runs with hosts) rather than on the channel.
    /// A channel's receiver spins and yields before it sleeps: with hosts, the reader of a
    /// connection hands out a job per attempt that ends there, and the spinning of the idle
    /// workers took the cores that the host's commands and ssh need (a yield and an
    /// involuntary context switch per attempt, and more).
    parks: bool,
    exec: Arc<Executor>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // The state's transitions do not panic midway; a poisoned lock means a worker thread
        // died elsewhere, and the state is still consistent.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the consumer if it waits and a wake-up is worth it: a full batch, a worker going
    /// idle (nothing else will happen soon), or the end of the run. Otherwise the consumer finds
    /// the events itself within `POLL`: a wake-up per event (a system call and a context switch
    /// on a core the workers need) costs more than a short task.
    fn notify(&self, core: &mut Core, idle: bool) {
        if self.wants_consumer(core, idle) {
            self.events_ready.notify_one();
        }
        self.wake_workers(Self::workers_to_wake(core));
    }

    /// How many idle workers to wake for the jobs handed to them since the last call
    /// (`usize::MAX`: all, the run is over); to be woken with [`Shared::wake_workers`], once
    /// the lock is released where that is easy.
    fn workers_to_wake(core: &mut Core) -> usize {
        let n = std::mem::take(&mut core.to_wake);
        if core.jobs.is_none() {
            usize::MAX
        } else {
            n
        }
    }

    fn wake_workers(&self, n: usize) {
        match n {
            0 => {}
            usize::MAX => self.job_ready.notify_all(),
            n => {
                for _ in 0..n {
                    self.job_ready.notify_one();
                }
            }
        }
    }

    /// An idle worker's wait for a job in a run with hosts (see [`Shared::parks`]); `None`
    /// once the run is over.
    fn park(&self) -> Option<Job> {
        let mut core = self.lock();
        loop {
            if let Some(job) = core.handed.pop_front() {
                return Some(job);
            }
            core.jobs.as_ref()?;
            core = self
                .job_ready
                .wait(core)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// [`Shared::notify`]'s decision alone: whether to wake the consumer, which is then to be
    /// woken once the lock is released (a worker's wake-up is a system call, and every worker
    /// waits for the lock meanwhile).
    fn wants_consumer(&self, core: &mut Core, idle: bool) -> bool {
        self.exec.take_notices(&mut core.state.events);
        core.observe();
        let queued = core.state.events.len();
        let urgent = idle || core.finished || queued >= BATCH;
        if core.consumer_waiting && urgent && (queued > 0 || core.finished) {
            // The consumer waits on the condition variable (it set the flag under the lock
            // and released it only by waiting), so a wake-up after the lock is released is
            // not lost; clearing the flag here keeps it to one.
            core.consumer_waiting = false;
            return true;
        }
        false
    }
}

impl Core {
    /// Shows the observers the events queued since they last looked, in order: each event to
    /// every observer, in the order they were added, before the next event.
    fn observe(&mut self) {
        if self.observers.is_empty() || self.observed >= self.state.events.len() {
            return;
        }
        for e in self.state.events.range(self.observed..) {
            // One at a time: the same observer may have been added twice.
            for observer in &self.observers {
                (observer.0.lock().unwrap_or_else(PoisonError::into_inner))(e);
            }
        }
        self.observed = self.state.events.len();
    }

    fn job(&self, start: super::run_state::Start) -> Job {
        let task = self.state.task(start.idx);
        let kind = self.state.kind(start.idx);
        Job {
            idx: start.idx,
            attempt: start.attempt,
            name: task.name.clone(),
            work: task.work.clone(),
            timeout: if kind.timeout() {
                task.meta.more.timeout
            } else {
                None
            },
            pool: kind.pool().or_else(|| self.state.group_pool(start.idx)),
            chained: false,
            shared: start.shared,
            slots: if self.placed {
                crate::pool::JobSlots::new(&task.meta.more.slots)
            } else {
                crate::pool::JobSlots::default()
            },
            host_tags: if self.placed {
                task.meta.more.host_tags.clone()
            } else {
                crate::task::ThinVec::new()
            },
            outputs: if self.placed {
                task.meta.more.outputs.clone()
            } else {
                crate::task::ThinVec::new()
            },
            clock: std::cell::Cell::new(None),
            ticket: None,
        }
    }

    fn add_tasks(&mut self, tasks: Vec<Task>) -> Result<(), GraphErrors> {
        if self.finished {
            return Err(GraphErrors(vec![GraphError::RunFinished]));
        }
        let warnings = self.state.add_tasks(tasks)?;
        for message in warnings {
            self.state.events.push_back(Event::Warning {
                task: None,
                message,
            });
        }
        self.dispatch(None);
        Ok(())
    }

    /// Reserves more tasks, up to `BATCH_TASKS` in all, for a worker that already has one, when
    /// that costs nothing in fairness or safety: batching is on (no fail-fast, no observer: a
    /// journaled task must be on disk before its worker starts anything else), no worker is
    /// idle, attempts are short (a lock round trip per task then costs more than the task),
    /// and the tasks are closures on threads. A reserved task's `TaskStarted` is queued when its
    /// batch reports back (or at its first streamed result), right before its `TaskFinished`,
    /// so at most `jobs` tasks are ever seen running; `next_start` only reserves when no task
    /// still waiting could be preferred.
    ///
    /// When nothing is ready, the batch goes on along a chain instead: the task that the last
    /// one's success alone would make ready, and so on ([`RunState::reserve_successor`]). Idle
    /// workers lose nothing then: they would have nothing to take before the batch reports.
    fn reserve(&mut self, batch: &mut Vec<Job>) {
        if !self.batching || self.avg_attempt_ns >= SHORT_ATTEMPT_NS {
            return;
        }
        while self.idle == 0 && batch.len() < BATCH_TASKS {
            let Some(idx) = self.state.peek_ready() else {
                break;
            };
            if !self.on_threads(self.state.kind(idx), idx) {
                break;
            }
            let Some(start) = self.state.next_start(true) else {
                break;
            };
            batch.push(self.job(start));
        }
        if self.state.peek_ready().is_none() {
            self.reserve_chain(batch);
        }
    }

    /// [`Core::reserve`] along a chain, once nothing is ready.
    // Not inlined: most batches never get here, and the worker's loop stays as small as it was.
    #[inline(never)]
    fn reserve_chain(&mut self, batch: &mut Vec<Job>) {
        let Some(last) = batch.last() else {
            return;
        };
        if !self.on_threads(self.state.kind(last.idx), last.idx) {
            return;
        }
        let mut prev = last.idx;
        let default_pool = self.default_pool;
        // Runs with groups never chain, so a task's own pool is the whole question.
        let runs_here = |kind: super::run_state::Kind| {
            kind.closure() && kind.pool().unwrap_or(default_pool) == crate::task::PoolKind::Threads
        };
        while batch.len() < BATCH_TASKS {
            let Some(start) = self.state.reserve_successor(prev, runs_here) else {
                break;
            };
            prev = start.idx;
            let mut job = self.job(start);
            job.chained = true;
            batch.push(job);
        }
    }

    /// Whether task `idx`, of `kind`, is a closure that runs on this worker's threads.
    fn on_threads(&self, kind: super::run_state::Kind, idx: u32) -> bool {
        let pool = kind.pool().or_else(|| self.state.group_pool(idx));
        kind.closure() && pool.unwrap_or(self.default_pool) == crate::task::PoolKind::Threads
    }

    /// The next job to hand out: a task the run state starts now, if (runs with hosts) some
    /// place has room for it. Hosts hold more attempts than they run (queued ahead on remote
    /// workers) and have threads for all of them; without the gate, a thread would take a
    /// task out of the queue (its priority, its locks) only to wait for a place.
    fn next_job(&mut self) -> Option<Job> {
        let ticket = match &self.gate {
            Some(g) => g.promise().ok()?,
            None => None,
        };
        let Some(start) = self.state.next_start(false) else {
            if let Some(g) = &self.gate {
                g.unpromise(ticket);
            }
            return None;
        };
        let mut job = self.job(start);
        job.ticket = ticket;
        Some(job)
    }

    /// Whether `job`'s place will carry its attempt on without its worker (runs with hosts).
    fn chains(&self, job: &Job) -> bool {
        self.gate.as_ref().is_some_and(|exec| exec.hands_off(job))
    }

    /// Hands ready tasks to idle workers; with `mine` (the calling worker's empty batch), first
    /// pushes one onto it. Then checks whether the run is over. Returns whether it took one.
    fn dispatch(&mut self, mine: Option<&mut Vec<Job>>) -> bool {
        self.dispatch_to(mine, false, None)
    }

    /// [`Core::dispatch`]; with `chain`, no idle worker is woken once a worker (the caller or
    /// one woken) has a job that its place will carry on ([`Executor::hands_off`]): that
    /// worker takes the next job itself once it handed the attempt over, and so on. Several
    /// woken at once for such jobs only fought over the locks of the run and of the place
    /// (and over the order of their `Run`s). A job that keeps its worker does not stop it.
    /// With `carrier` (the place whose reader reports), such jobs go to it first, as long as
    /// it takes them: it starts them itself, and no worker is woken for them.
    fn dispatch_to(
        &mut self,
        mine: Option<&mut Vec<Job>>,
        chain: bool,
        mut carrier: Option<&mut dyn Carrier>,
    ) -> bool {
        let mut own = false;
        let mut chained = false;
        if let Some(batch) = mine {
            if let Some(job) = self.next_job() {
                chained = chain && self.chains(&job);
                batch.push(job);
                own = true;
            }
        }
        while self.idle > 0 && !chained {
            let Some(job) = self.next_job() else {
                break;
            };
            chained = chain && self.chains(&job);
            if chained && carrier.as_deref_mut().is_some_and(|c| c.carry(&job)) {
                // Sent by the place: the run state counts it running, its end comes as news.
                chained = false;
                continue;
            }
            if self.gate.is_some() {
                self.handed.push_back(job);
                self.to_wake += 1;
            } else if let Some(tx) = &self.jobs {
                // Idle workers hold the receiver until `jobs` is dropped, so this succeeds.
                let _ = tx.send(job);
            }
            self.idle -= 1;
        }
        if !own && self.state.running() == 0 {
            self.state.settle_stopped();
            let open = self.open && !self.state.is_cancelled();
            if self.state.all_done() && !self.finished && !open {
                let finished = self.state.run_finished(self.started.elapsed());
                self.state.events.push_back(finished);
                self.finished = true;
                self.jobs = None;
            }
        }
        own
    }
}

/// A worker thread: run a job, then, under the lock, report it and take the next one.
fn work(shared: &Shared, jobs: &Receiver<Job>) {
    // The job handed to this worker, then the batch reserved with it, if any: run where they
    // are (a `Job` is some 150 bytes; moving each through an `Option` and an iterator chain was
    // a quarter of a worker's time on a chain of no-op closures).
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH_TASKS);
    let mut done: Vec<(u32, u32, Attempt)> = Vec::with_capacity(BATCH_TASKS);
    let mut declined: Vec<(u32, u32)> = Vec::new();
    loop {
        if batch.is_empty() {
            let job = if shared.parks {
                shared.park()
            } else {
                jobs.recv().ok()
            };
            match job {
                Some(job) => batch.push(job),
                None => return,
            }
        }
        // After a cancel, or an attempt that suspends the run, nothing more of the batch
        // starts. The attempts of a batch run back to back: each starts when the one before
        // ended (one clock reading between them).
        let mut clock = None;
        // Whether the job before passed cleanly: a chained job runs only then.
        let mut clean = false;
        // Whether an attempt of the batch was handed to its place, which will report its end.
        let mut handed_off = false;
        for (i, job) in batch.iter().enumerate() {
            let stopping = done
                .last()
                .is_some_and(|(_, _, a): &(u32, u32, Attempt)| a.suspend);
            // The first job always runs, so a declined one follows a job in `done`.
            if !done.is_empty()
                && (stopping || (job.chained && !clean) || shared.exec.is_cancelled())
            {
                declined.push((job.idx, job.attempt));
                clean = false;
                continue;
            }
            let sink = CoreSink {
                shared,
                idx: job.idx,
                attempt: job.attempt,
                streamed: AtomicBool::new(false),
            };
            job.clock.set(clock);
            let report = match shared.exec.run(job, &sink) {
                Ran::Ended(report) => report,
                Ran::HandedOff => {
                    // Its place reports its end (`Recorder`); a chained job after it waits.
                    clean = false;
                    handed_off = true;
                    continue;
                }
            };
            clock = job.clock.get();
            // What the run state will make of it is not known here: results streamed on the
            // way may turn a pass into a failure, exports go to the dependent.
            clean = batch.get(i + 1).is_some_and(|next| next.chained)
                && report.outcome == Outcome::Pass
                && report.exports.is_empty()
                && !report.suspend
                && !report.not_started
                && report.host_lost.is_none()
                && !sink.streamed.load(Ordering::Relaxed);
            done.push((job.idx, job.attempt, report));
        }
        batch.clear();
        let mut core = shared.lock();
        for (idx, attempt, report) in done.drain(..) {
            let took = report.duration.as_nanos().min(u128::from(u64::MAX)) as u64;
            core.avg_attempt_ns = core.avg_attempt_ns - core.avg_attempt_ns / 8 + took / 8;
            core.state.on_done(idx, attempt, report);
            shared.exec.release(idx, attempt);
            // Before anything else starts: what the observer (the journal) records of this
            // task must be written while the task still holds its slot.
            core.observe();
        }
        for (idx, attempt) in declined.drain(..) {
            core.state.give_back(idx, attempt);
        }
        // After a hand-off, this worker goes on with the next job itself (see `dispatch_to`).
        let mine = core.dispatch_to(Some(&mut batch), handed_off, None);
        if mine {
            core.reserve(&mut batch);
        } else {
            core.idle += 1;
        }
        // With a batch reserved, the other workers are busy and each will wait for the lock:
        // the consumer's wake-up (a system call) is then made once the lock is released. Without
        // (a chain: one task at a time), it is made under the lock, so that the consumer,
        // awake, does not take the lock from the worker's next round trip (a chain's run phase
        // was 10 % slower that way).
        // A worker that goes idle with nothing in flight wakes the consumer (nothing else may
        // happen soon); one that handed its attempt to a place does not: the place's report
        // follows.
        let wake = shared.wants_consumer(&mut core, !mine && !handed_off);
        if wake && batch.len() <= 1 {
            shared.events_ready.notify_one();
        }
        let workers = Shared::workers_to_wake(&mut core);
        drop(core);
        if wake && batch.len() > 1 {
            shared.events_ready.notify_one();
        }
        shared.wake_workers(workers);
    }
}

/// Attempts a place carries on by itself (a host's connection reader) report here: the same
/// transitions as a worker's round trip, under the same lock, in the order the place heard
/// them.
impl Recorder for Shared {
    fn record(&self, news: &mut Vec<News>, carrier: Option<&mut dyn Carrier>) {
        let mut core = self.lock();
        // A host that connected (or was lost) on the way is reported before what follows.
        self.exec.take_notices(&mut core.state.events);
        let mut urgent = false;
        let mut ended = false;
        for n in news.drain(..) {
            match n {
                News::Began { idx, attempt, host } => core.state.begin(idx, attempt, Some(host)),
                News::Result {
                    idx,
                    attempt,
                    status,
                    message,
                } => {
                    core.state.on_result(idx, attempt, status, message);
                    urgent = true;
                }
                News::Ended { idx, attempt, end } => {
                    core.state.on_done(idx, attempt, end);
                    self.exec.release(idx, attempt);
                    // Before anything else starts (see `work`).
                    core.observe();
                    ended = true;
                }
            }
        }
        if ended {
            core.dispatch_to(None, true, carrier);
        }
        let wake = self.wants_consumer(&mut core, urgent);
        let workers = Self::workers_to_wake(&mut core);
        drop(core);
        if wake {
            self.events_ready.notify_one();
        }
        self.wake_workers(workers);
    }
}

/// Streams a running attempt's results into the run state.
struct CoreSink<'a> {
    shared: &'a Shared,
    idx: u32,
    attempt: u32,
    /// Set once the attempt streams a result.
    streamed: AtomicBool,
}

impl ResultSink for CoreSink<'_> {
    fn begin(&self, host: &Arc<str>) {
        let mut core = self.shared.lock();
        // A host that connected on the way to this start is reported before it.
        self.shared.exec.take_notices(&mut core.state.events);
        core.state.begin(self.idx, self.attempt, Some(host.clone()));
        // Not urgent: the consumer sees it with the next batch or within `POLL`. A wake per
        // start was a context switch per attempt on hosts (issue 10).
        self.shared.notify(&mut core, false);
    }

    fn result(&self, status: Outcome, message: String) {
        self.streamed.store(true, Ordering::Relaxed);
        let mut core = self.shared.lock();
        core.state
            .on_result(self.idx, self.attempt, status, message);
        self.shared.notify(&mut core, true);
    }

    fn submitted(&self, job: &str) {
        let mut core = self.shared.lock();
        let task = core.state.task(self.idx).name.clone();
        core.state.events.push_back(Event::TaskSubmitted {
            task,
            attempt: self.attempt,
            job: job.to_owned(),
        });
        // Observed (journaled) before the caller goes on to wait for the job.
        self.shared.notify(&mut core, false);
    }

    fn add_tasks(&self, tasks: Vec<Task>) -> Result<(), crate::context::TaskError> {
        let mut core = self.shared.lock();
        let result = core.add_tasks(tasks);
        self.shared.notify(&mut core, true);
        result.map_err(|e| crate::context::TaskError::error(e.to_string()))
    }
}

/// A run in progress: an iterator over its events, in the order things happened. Dropping it
/// cancels the run, kills running commands and joins every worker thread.
pub struct Run {
    /// Events taken from the core, handed out one by one. First, so dropped first: a large
    /// block freed after the run state's millions of small ones made the allocator consolidate
    /// all of those (see `RunState::tasks`).
    batch: VecDeque<Event>,
    shared: Arc<Shared>,
    workers: WorkerThreads,
    done: bool,
}

/// Controls a run from another thread (a signal handler, a watchdog).
#[derive(Clone)]
pub struct RunHandle {
    shared: Arc<Shared>,
}

impl RunHandle {
    /// Stops starting tasks and terminates running ones (SIGTERM, grace period, SIGKILL);
    /// unstarted tasks end as `skip`. The run still reports every task and `RunFinished`.
    pub fn cancel(&self) {
        // The run state first: a worker whose attempt the executor ends must not take an
        // unstarted task as its next job in between (it would end as `error`, not `skip`).
        self.stop();
        self.shared.exec.cancel();
    }

    /// Like [`RunHandle::cancel`], but kills running commands at once.
    pub fn kill(&self) {
        self.stop();
        self.shared.exec.kill();
    }

    /// Adds tasks while the run is going, from any thread: see [`Run::add_tasks`].
    pub fn add_tasks(&self, tasks: Vec<Task>) -> Result<(), GraphErrors> {
        add_tasks(&self.shared, tasks)
    }

    /// Lets a run started with [`crate::SchedulerBuilder::keep_open`] finish once the tasks it
    /// has are done. Tasks may still be added until it has finished. No effect on other runs.
    pub fn close(&self) {
        let mut core = self.shared.lock();
        core.open = false;
        core.dispatch(None);
        self.shared.notify(&mut core, true);
    }

    /// Ctrl-Z: stops every running command's process group (SIGSTOP) and pauses their
    /// timeouts, until [`RunHandle::resume`]. Tasks started meanwhile are stopped too.
    pub fn pause(&self) {
        self.shared.exec.pause();
    }

    /// Continues what [`RunHandle::pause`] stopped (SIGCONT); timeouts count on from where
    /// they stopped.
    pub fn resume(&self) {
        self.shared.exec.resume();
    }

    fn stop(&self) {
        let mut core = self.shared.lock();
        core.state.cancel();
        core.dispatch(None);
        self.shared.notify(&mut core, true);
    }
}

impl Run {
    pub(super) fn start(config: SchedulerBuilder, tasks: Vec<Task>) -> Result<Run, GraphErrors> {
        let started = Instant::now();
        let hosts = crate::host::Hosts::start(
            config.hosts.as_ref(),
            config.jobs,
            config.command.grace,
            &tasks,
            &config.process,
        )?;
        // With hosts, one worker thread per attempt the hosts may hold at once (those queued
        // ahead on remote workers included).
        let threads = hosts.as_ref().map_or_else(
            || super::groups::max_jobs(&config.groups, config.jobs),
            |h| h.threads(),
        );
        let plan = Plan {
            groups: config.groups,
            // With hosts, a group without its own `jobs` may use every job slot of the run;
            // each host's own `jobs` still bound it where its attempts are placed.
            jobs: if hosts.is_some() {
                threads
            } else {
                config.jobs
            },
            virtuals: config.virtuals,
            // Conditions are decided once the graph is valid, before anything runs (their
            // commands in parallel).
            unmet: Vec::new(),
            conditions: Some(crate::condition::evaluate),
            first: config.run_first,
        };
        // Capacities per host are enforced where attempts are placed; the run's, across hosts.
        let capacity = match &hosts {
            Some(h) => h.run_capacity(&config.capacity),
            None => config.capacity,
        };
        let (mut state, warnings) =
            RunState::with_plan(tasks, capacity, config.fail_fast, config.resumed, plan)?;
        // With hosts the executor says where each attempt starts, and only then is it reported.
        state.defer_begin = hosts.is_some();
        if hosts
            .as_ref()
            .is_some_and(|h| h.cancelled_while_connecting())
        {
            state.cancel();
        }
        let jobs = hosts.as_ref().map_or(config.jobs, |h| h.jobs());
        state.events.push_front(Event::RunStarted {
            tasks: state.len(),
            jobs,
        });
        // Warnings right after RunStarted, before the skips `admit` may already have queued.
        for (i, message) in warnings.into_iter().enumerate() {
            state.events.insert(
                1 + i,
                Event::Warning {
                    task: None,
                    message,
                },
            );
        }
        let placed = hosts.is_some() || config.slurm.is_some();
        let gated = hosts.is_some();
        let default_pool = config.process.default_pool;
        let exec = Arc::new(
            Executor::new(config.command, config.process, hosts)
                .with_checkpoints(config.checkpoints)
                .with_slurm(config.slurm),
        );
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                state,
                jobs: Some(jobs_tx),
                idle: threads,
                handed: VecDeque::new(),
                to_wake: 0,
                finished: false,
                open: config.keep_open,
                consumer_waiting: false,
                started,
                batching: !config.fail_fast && config.observers.is_empty() && !gated,
                avg_attempt_ns: SHORT_ATTEMPT_NS,
                default_pool,
                observers: config.observers,
                observed: 0,
                placed,
                gate: gated.then(|| exec.clone()),
            }),
            events_ready: Condvar::new(),
            job_ready: Condvar::new(),
            parks: gated,
            exec,
        });
        // Weak: the executor (and its hosts) belongs to `shared`.
        let recorder: std::sync::Weak<Shared> = Arc::downgrade(&shared);
        shared.exec.set_recorder(recorder);
        {
            let mut core = shared.lock();
            // Hosts connect (in parallel) before anything runs: their events come first.
            shared.exec.take_notices(&mut core.state.events);
            core.dispatch(None);
            // The workers, not started yet, take what was handed out without a wake-up.
            core.to_wake = 0;
        }
        let worker_shared = shared.clone();
        let workers = WorkerThreads::spawn(threads, move |_| work(&worker_shared, &jobs_rx))
            .expect("the OS refused to start worker threads");
        Ok(Run {
            shared,
            workers,
            batch: VecDeque::new(),
            done: false,
        })
    }

    /// A handle to cancel the run, add tasks to it or close it, from any thread (or from
    /// inside a `for event in run` loop, which moves the run).
    pub fn handle(&self) -> RunHandle {
        RunHandle {
            shared: self.shared.clone(),
        }
    }

    /// How many tasks the run has (added tasks included).
    pub fn task_count(&self) -> usize {
        self.shared.lock().state.len()
    }

    /// Adds tasks while the run is going. They are validated as a batch against the tasks
    /// already there; they may require any existing token but provide only new ones. Workers
    /// do not wait for the consumer, so the run may have finished already (an error then),
    /// unless it was started with [`crate::SchedulerBuilder::keep_open`]; a task that
    /// discovers more work should use [`crate::Context::add_tasks`] instead.
    pub fn add_tasks(&self, tasks: Vec<Task>) -> Result<(), GraphErrors> {
        add_tasks(&self.shared, tasks)
    }
}

fn add_tasks(shared: &Shared, tasks: Vec<Task>) -> Result<(), GraphErrors> {
    let mut core = shared.lock();
    let result = core.add_tasks(tasks);
    shared.notify(&mut core, true);
    result
}

impl Iterator for Run {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.batch.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            let mut core = self.shared.lock();
            loop {
                self.shared.exec.take_notices(&mut core.state.events);
                if !core.state.events.is_empty() {
                    core.observe();
                    core.observed = 0;
                    std::mem::swap(&mut self.batch, &mut core.state.events);
                    break;
                }
                if core.finished {
                    self.done = true;
                    break;
                }
                core.consumer_waiting = true;
                core = self
                    .shared
                    .events_ready
                    .wait_timeout(core, POLL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            drop(core);
            if self.done {
                self.workers.join();
                // Idle worker processes are not needed any more: end and reap them now.
                self.shared.exec.finish();
            }
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.done {
            self.shared.exec.kill();
            let mut core = self.shared.lock();
            core.state.cancel();
            core.dispatch(None);
            // Idle workers exit when the job channel closes; busy ones after their attempt.
            core.jobs = None;
            drop(core);
            self.shared.job_ready.notify_all();
        }
        self.workers.join();
        self.shared.exec.finish();
    }
}
