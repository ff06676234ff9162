//! The dispatcher: the one owner of the run state. It lives in the [`Run`] iterator: each
//! `next()` hands out queued events, starts what may start, and otherwise waits for worker
//! messages or control requests (cancel, kill) and feeds them to the pure [`RunState`].

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::run_state::RunState;
use super::SchedulerBuilder;
use crate::error::GraphErrors;
use crate::pool::thread::WorkerThreads;
use crate::pool::{Executor, Job, WorkerMsg};
use crate::sched::events::Event;
use crate::task::Task;

enum Control {
    Cancel,
    Kill,
}

/// A run in progress: an iterator over its events. Dropping it cancels the run, terminates
/// running commands and joins every worker thread.
pub struct Run {
    state: RunState,
    jobs: usize,
    exec: Arc<Executor>,
    workers: WorkerThreads,
    msgs: Receiver<WorkerMsg>,
    control: Receiver<Control>,
    handle: RunHandle,
    started: Instant,
    finished: bool,
}

/// Controls a run from another thread (a signal handler, a watchdog).
#[derive(Clone)]
pub struct RunHandle {
    control: Sender<Control>,
    exec: Arc<Executor>,
}

impl RunHandle {
    /// Stops starting tasks and terminates running ones (SIGTERM, grace period, SIGKILL);
    /// unstarted tasks end as `skip`. The run still reports every task and `RunFinished`.
    pub fn cancel(&self) {
        self.exec.cancel();
        let _ = self.control.send(Control::Cancel);
    }

    /// Like [`RunHandle::cancel`], but kills running commands at once.
    pub fn kill(&self) {
        self.exec.kill();
        let _ = self.control.send(Control::Kill);
    }
}

impl Run {
    pub(super) fn start(config: SchedulerBuilder, tasks: Vec<Task>) -> Result<Run, GraphErrors> {
        let started = Instant::now();
        let (mut state, warnings) =
            RunState::new(tasks, config.capacity, config.fail_fast, config.resumed)?;
        let exec = Arc::new(Executor::new(config.command));
        let (msg_tx, msgs) = crossbeam_channel::unbounded();
        let workers = WorkerThreads::spawn(config.jobs, &exec, &msg_tx)
            .expect("the OS refused to start worker threads");
        let (control_tx, control) = crossbeam_channel::unbounded();
        state.events.push_front(Event::RunStarted {
            tasks: state.len(),
            jobs: config.jobs,
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
        Ok(Run {
            state,
            jobs: config.jobs,
            handle: RunHandle {
                control: control_tx,
                exec: exec.clone(),
            },
            exec,
            workers,
            msgs,
            control,
            started,
            finished: false,
        })
    }

    /// A handle to cancel the run from another thread.
    pub fn handle(&self) -> RunHandle {
        self.handle.clone()
    }

    /// The tasks of the run, in definition order (added tasks last).
    pub fn task_count(&self) -> usize {
        self.state.len()
    }

    /// Adds tasks while the run is going. They are validated as a batch against the tasks
    /// already there; they may require any existing token but provide only new ones.
    pub fn add_tasks(&mut self, tasks: Vec<Task>) -> Result<(), GraphErrors> {
        if self.finished {
            return Err(GraphErrors(Vec::new()));
        }
        let warnings = self.state.add_tasks(tasks)?;
        for message in warnings {
            self.state.events.push_back(Event::Warning {
                task: None,
                message,
            });
        }
        Ok(())
    }

    /// One step of the dispatcher: start what may start, else wait for news.
    fn pump(&mut self) {
        let now = Instant::now();
        while self.state.running() < self.jobs {
            let Some(start) = self.state.next_start(now) else {
                break;
            };
            let task = self.state.task(start.idx);
            self.workers.send(Job {
                idx: start.idx,
                attempt: start.attempt,
                name: task.name.clone(),
                work: task.work.clone(),
                timeout: task.meta.timeout,
                shared: start.shared,
            });
        }
        if !self.state.events.is_empty() {
            return;
        }
        if self.state.all_done() && self.state.running() == 0 {
            let finished = self.state.run_finished(self.started.elapsed());
            self.state.events.push_back(finished);
            self.finished = true;
            self.workers.join();
            return;
        }
        if self.state.settle_stopped() {
            return;
        }
        crossbeam_channel::select! {
            recv(self.msgs) -> msg => {
                if let Ok(msg) = msg {
                    self.handle_msg(msg);
                }
            }
            recv(self.control) -> ctl => match ctl {
                Ok(Control::Cancel) => {
                    self.state.cancel();
                    self.exec.cancel();
                }
                Ok(Control::Kill) => {
                    self.state.cancel();
                    self.exec.kill();
                }
                Err(_) => {}
            },
        }
        // Take whatever else is already there in one go: fewer wake-ups under load.
        while let Ok(msg) = self.msgs.try_recv() {
            self.handle_msg(msg);
        }
    }

    fn handle_msg(&mut self, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Result {
                idx,
                attempt,
                status,
                message,
            } => self.state.on_result(idx, attempt, status, message),
            WorkerMsg::Done {
                idx,
                attempt,
                report,
            } => self.state.on_done(idx, attempt, report),
        }
    }
}

impl Iterator for Run {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.state.events.pop_front() {
                return Some(e);
            }
            if self.finished {
                return None;
            }
            self.pump();
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.finished {
            self.exec.kill();
        }
        self.workers.join();
    }
}
