//! The runs started over HTTP: each one is a [`crate::engine`] run driven on a thread of its own,
//! its events kept in memory as the JSON lines of `--message-format json` so that any client can
//! replay them from any sequence number, live.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::engine::{EngineError, RunReport, RunRequest};
use crate::report::json::event_json;
use crate::report::record::{Collector, TaskRecord};
use crate::sched::events::{Counts, Event};
use crate::sched::RunHandle;
use crate::task::{Outcome, TaskName};

/// Most attempts a run started over HTTP may ask to run at once.
pub(super) const MAX_JOBS: u32 = 1024;

/// The body of `POST /api/v1/runs`. Unknown fields are refused.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunBody {
    #[serde(default)]
    pub(super) filter: Vec<String>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    pub(super) jobs: Option<u32>,
    #[serde(default)]
    pub(super) resume: bool,
    #[serde(default)]
    pub(super) fail_fast: bool,
    pub(super) retries: Option<u32>,
}

/// Where a task of a run stands, as its events said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Waiting,
    Running,
    Finished,
}

/// What a run has produced so far; grows as its events arrive.
pub(super) struct Log {
    /// The events as JSON lines; event `n` (1-based, the SSE id) is `lines[n - 1]`.
    pub(super) lines: Vec<Arc<str>>,
    states: HashMap<TaskName, TaskState>,
    collector: Collector,
    counts: Counts,
    outcome: Option<Outcome>,
    /// Set when the run has ended and its report is written (or failed).
    pub(super) done: bool,
    report: Option<RunReport>,
    error: Option<String>,
    cancel_requested: bool,
    duration_s: Option<f64>,
}

/// One run started over HTTP.
pub(super) struct RunEntry {
    pub(super) id: String,
    body: RunBody,
    started: SystemTime,
    clock: Instant,
    /// The selected tasks, in definition order.
    selection: Vec<TaskName>,
    handle: RunHandle,
    log: Mutex<Log>,
    /// The number of events so far, for the event streams waiting for more.
    notify: watch::Sender<usize>,
}

impl RunEntry {
    pub(super) fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<usize> {
        self.notify.subscribe()
    }

    pub(super) fn cancel(&self) -> bool {
        let mut log = self.log();
        if log.done {
            return false;
        }
        log.cancel_requested = true;
        drop(log);
        self.handle.cancel();
        true
    }

    fn push(&self, event: &Event) {
        let mut log = self.log();
        match event {
            Event::TaskStarted { task, .. } => {
                log.states.insert(task.clone(), TaskState::Running);
            }
            Event::TaskFinished(f) => {
                log.states.insert(f.task.clone(), TaskState::Finished);
                log.counts.add(f.outcome);
            }
            Event::RunFinished {
                outcome, duration, ..
            } => {
                log.outcome = Some(*outcome);
                log.duration_s = Some(duration.as_secs_f64());
            }
            _ => {}
        }
        log.collector.observe(event);
        if let Some(line) = event_json(event) {
            log.lines.push(line.into());
        }
        let n = log.lines.len();
        drop(log);
        self.notify.send_replace(n);
    }

    fn end(&self, result: Result<RunReport, EngineError>) {
        let mut log = self.log();
        match result {
            Ok(report) => {
                log.outcome = Some(report.outcome);
                log.duration_s = Some(report.duration.as_secs_f64());
                log.report = Some(report);
            }
            Err(e) => log.error = Some(crate::error::error_chain(&e)),
        }
        log.done = true;
        let n = log.lines.len();
        drop(log);
        self.notify.send_replace(n);
    }

    /// The summary of `GET /api/v1/runs/ID`: with `selection`, the names of the selected tasks.
    pub(super) fn summary(&self, selection: bool) -> Value {
        let log = self.log();
        let status = if log.error.is_some() {
            "failed"
        } else if log.done {
            "finished"
        } else if log.cancel_requested {
            "cancelling"
        } else {
            "running"
        };
        let duration = log
            .duration_s
            .unwrap_or_else(|| self.clock.elapsed().as_secs_f64());
        json!({
            "id": self.id,
            "status": status,
            "outcome": log.outcome,
            "tasks": self.selection.len(),
            "counts": log.counts,
            "events": log.lines.len(),
            "started": humantime::format_rfc3339_millis(self.started).to_string(),
            "duration_s": (duration * 1000.0).round() / 1000.0,
            "request": self.body,
            "error": log.error,
            "suspended_by": log.report.as_ref().map(|r| &r.suspended_by),
            "selection": selection.then_some(&self.selection),
        })
    }

    /// The record of one task of the run, or `None` when the run did not select it.
    pub(super) fn task(&self, name: &str) -> Option<Value> {
        let log = self.log();
        let state = *log.states.get(&TaskName::new(name))?;
        if state != TaskState::Finished {
            let word = if state == TaskState::Running {
                "running"
            } else {
                "waiting"
            };
            return Some(json!({"name": name, "state": word}));
        }
        let record = log
            .report
            .as_ref()
            .map_or(log.collector.records(), |r| &r.records[..])
            .iter()
            .rev()
            .find(|r| r.name.as_str() == name)?;
        Some(record_json(record))
    }

    /// The JUnit report, once the run has ended: `Err` says why there is none.
    pub(super) fn junit(&self) -> Result<Vec<u8>, String> {
        let log = self.log();
        let Some(report) = &log.report else {
            return Err(match &log.error {
                Some(e) => format!("the run failed: {e}"),
                None => "the run is still going: its report is written when it ends".into(),
            });
        };
        let mut out = Vec::new();
        crate::report::junit::render(&mut out, &report.records, report.duration.as_secs_f64())
            .map_err(|e| e.to_string())?;
        Ok(out)
    }
}

/// A finished task's record as the API shows it: outcome, results, cause, output, attempts.
fn record_json(r: &TaskRecord) -> Value {
    let results = |rs: &[(Outcome, String)]| -> Vec<Value> {
        rs.iter()
            .map(|(s, m)| json!({"status": s, "message": m}))
            .collect()
    };
    let attempts: Vec<Value> = r
        .failed_attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "outcome": a.outcome,
                "message": a.message,
                "duration_s": a.duration_s,
                "results": results(&a.results),
                "stdout": a.output.as_ref().map(|o| &o.stdout),
                "stderr": a.output.as_ref().map(|o| &o.stderr),
            })
        })
        .collect();
    json!({
        "name": r.name,
        "state": "finished",
        "outcome": r.outcome,
        "attempt": r.attempt,
        "exit_code": r.exit_code,
        "duration_s": r.duration_s,
        "resumed": r.resumed,
        "cause": r.cause,
        "message": r.message,
        "results": results(&r.results),
        "stdout": r.output.as_ref().map(|o| &o.stdout),
        "stderr": r.output.as_ref().map(|o| &o.stderr),
        "failed_attempts": attempts,
    })
}

/// Every run of this server, and the one going on.
#[derive(Default)]
pub(super) struct Runs {
    inner: Mutex<RunsInner>,
    starting: Mutex<()>,
}

#[derive(Default)]
struct RunsInner {
    all: Vec<Arc<RunEntry>>,
    /// The thread driving the latest run.
    driver: Option<std::thread::JoinHandle<()>>,
    next_id: u64,
}

/// Why a run could not be started.
pub(super) enum StartError {
    /// A run of this state directory is going.
    Busy(String),
    Engine(EngineError),
    Thread(std::io::Error),
}

impl Runs {
    fn lock(&self) -> MutexGuard<'_, RunsInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(&self, id: &str) -> Option<Arc<RunEntry>> {
        self.lock().all.iter().find(|r| r.id == id).cloned()
    }

    pub(super) fn all(&self) -> Vec<Arc<RunEntry>> {
        self.lock().all.clone()
    }

    fn active(inner: &RunsInner) -> Option<&Arc<RunEntry>> {
        inner.all.last().filter(|r| !r.log().done)
    }

    /// Prepares and starts a run (blocking: it loads the tree and opens the journal), then drives
    /// it on a thread of its own. One run at a time: they share the state directory.
    pub(super) fn start(
        &self,
        request: RunRequest,
        body: RunBody,
    ) -> Result<Arc<RunEntry>, StartError> {
        // Held while a run is prepared, so that two requests cannot both start one; the list
        // itself stays free for readers.
        let _starting = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
        let (id, previous) = {
            let mut inner = self.lock();
            if let Some(r) = Self::active(&inner) {
                return Err(StartError::Busy(r.id.clone()));
            }
            inner.next_id += 1;
            (inner.next_id.to_string(), inner.driver.take())
        };
        if let Some(t) = previous {
            let _ = t.join();
        }
        // The outcome of preparing comes back over a channel; the thread then drives the run.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread_id = id.clone();
        let driver = std::thread::Builder::new()
            .name(format!("pexen-serve-run-{id}"))
            .spawn(move || drive(&thread_id, &request, body, &tx))
            .map_err(StartError::Thread)?;
        match rx.recv() {
            Ok(Ok(entry)) => {
                let mut inner = self.lock();
                inner.all.push(entry.clone());
                inner.driver = Some(driver);
                Ok(entry)
            }
            Ok(Err(e)) => {
                let _ = driver.join();
                Err(StartError::Engine(e))
            }
            Err(_) => {
                let _ = driver.join();
                Err(StartError::Thread(std::io::Error::other(
                    "the run's thread ended before the run started",
                )))
            }
        }
    }

    /// Cancels the run going on, if any, and waits for its thread (server shutdown).
    pub(super) fn shutdown(&self) {
        let driver = {
            let mut inner = self.lock();
            if let Some(r) = Self::active(&inner) {
                r.cancel();
            }
            inner.driver.take()
        };
        if let Some(t) = driver {
            let _ = t.join();
        }
    }
}

type Started = Result<Arc<RunEntry>, EngineError>;

/// The run's thread: prepare, start, report back, then feed every event to the log.
fn drive(id: &str, request: &RunRequest, body: RunBody, tx: &std::sync::mpsc::SyncSender<Started>) {
    let started = request.prepare().and_then(|prepared| {
        let names = prepared.task_names().to_vec();
        Ok((prepared.start()?, names))
    });
    let (mut run, names) = match started {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    let entry = Arc::new(RunEntry {
        id: id.to_string(),
        body,
        started: SystemTime::now(),
        clock: Instant::now(),
        selection: names.clone(),
        handle: run.handle(),
        log: Mutex::new(Log {
            lines: Vec::new(),
            states: names
                .iter()
                .map(|n| (n.clone(), TaskState::Waiting))
                .collect(),
            collector: Collector::new(),
            counts: Counts::default(),
            outcome: None,
            done: false,
            report: None,
            error: None,
            cancel_requested: false,
            duration_s: None,
        }),
        notify: watch::Sender::new(0),
    });
    if tx.send(Ok(entry.clone())).is_err() {
        return;
    }
    for event in &mut run {
        entry.push(&event);
    }
    entry.end(run.finish());
}
