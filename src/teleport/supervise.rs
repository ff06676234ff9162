//! The teleported run itself: `pexen worker --teleport-run DIR`, started detached by the agent.
//! It is the engine's run of the synced tree with `--resume` (the same library call as
//! `pexen run` and `pexen serve`), journaled in `DIR/state`, every event appended to
//! `DIR/events` as one protocol message per line, and the exit code `pexen run` would have
//! had as the last line. SIGINT and SIGTERM (relayed Ctrl-C) stop it as they stop
//! `pexen run` (the first cancels, the second kills the tasks); SIGHUP is ignored: the run is
//! detached from any session on purpose.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::agent::{EVENTS, JUNIT, REQUEST, SUPERVISOR};
use crate::engine::{EngineError, RunRequest};
use crate::error::{error_chain, exit_code};
use crate::host::tree;
use crate::pool::command::track::proc_stat;
use crate::protocol::teleport::{Ended, FromAgent, Prelude, Record, RunOptions};
use crate::protocol::FromWorker;
use crate::sched::RunHandle;

/// The exit code `pexen run` has for an engine error.
pub(crate) fn engine_exit_code(e: &EngineError) -> i32 {
    match e {
        EngineError::Definitions(_)
        | EngineError::Graph(_)
        | EngineError::Usage(_)
        | EngineError::Tree(_) => exit_code::BAD_INPUT,
        EngineError::State(_) => exit_code::BAD_STATE,
        EngineError::NothingToRun(_) => exit_code::NOTHING_TO_RUN,
        EngineError::Write { .. } => exit_code::TASK_FAILED,
    }
}

struct Log(File);

impl Log {
    fn write(&mut self, record: Record) {
        let msg = FromWorker::Teleport(FromAgent::Record(record));
        if let Ok(mut line) = serde_json::to_vec(&msg) {
            line.push(b'\n');
            // One write per line: the agent only relays whole lines.
            let _ = self.0.write_all(&line);
        }
    }
}

/// Runs the teleported run in `dir` and returns its exit code.
pub fn supervise(dir: &Path) -> i32 {
    // Signals first: a relayed Ctrl-C must never meet the default action.
    let level = Arc::new(AtomicU8::new(0));
    let handle: Arc<Mutex<Option<RunHandle>>> = Arc::new(Mutex::new(None));
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return exit_code::TASK_FAILED;
        };
        let (level, handle) = (level.clone(), handle.clone());
        std::thread::spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    continue;
                }
                let now = level.fetch_add(1, Ordering::SeqCst) + 1;
                if let Some(h) = &*handle.lock().unwrap_or_else(PoisonError::into_inner) {
                    stop(h, now);
                }
            }
        });
    }
    let me = std::process::id() as i32;
    let start = proc_stat(me).map_or(0, |s| s.start_time);
    let log = OpenOptions::new().append(true).open(dir.join(EVENTS));
    let Ok(log) = log else {
        return exit_code::BAD_STATE;
    };
    let mut log = Log(log);
    // Now a Ctrl-C is handled: the agent may relay one.
    if tree::write_file(dir, SUPERVISOR, 0o600, format!("{me} {start}\n").as_bytes()).is_err() {
        return exit_code::BAD_STATE;
    }
    let ended = run(dir, &mut log, &level, &handle);
    let code = ended.code;
    log.write(Record::Ended(ended));
    let _ = log.0.sync_data();
    code
}

fn stop(h: &RunHandle, level: u8) {
    if level >= 2 {
        h.kill();
    } else {
        h.cancel();
    }
}

fn run(dir: &Path, log: &mut Log, level: &AtomicU8, handle: &Mutex<Option<RunHandle>>) -> Ended {
    let failed = |code, error: String| Ended {
        code,
        error: Some(error),
        ..Ended::default()
    };
    let options: RunOptions = match std::fs::read(dir.join(REQUEST))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(o) => o,
        Err(e) => {
            return failed(
                exit_code::BAD_INPUT,
                format!("cannot read the request: {e}"),
            )
        }
    };
    let mut request = RunRequest::new(dir.join("tree"));
    request.state = dir.join("state");
    request.filters = options.filters;
    request.tags = options.tags;
    request.prefer = options.prefer;
    request.jobs = options.jobs;
    request.resume = true;
    request.fail_fast = options.fail_fast;
    request.retries = options.retries;
    request.timeout = options.timeout_ms.map(Duration::from_millis);
    request.grace = Duration::from_millis(options.grace_ms);
    request.capacity = options.capacity;
    request.junit = options.junit.then(|| dir.join(JUNIT));
    let prepared = match request.prepare() {
        Ok(p) => p,
        Err(e) => return failed(engine_exit_code(&e), error_chain(&e)),
    };
    log.write(Record::Prepared(Prelude {
        warnings: prepared.warnings().to_vec(),
        explanations: if options.explain {
            prepared.explanations()
        } else {
            Vec::new()
        },
        resumed: prepared.resumed_count(),
        selection: prepared.selection_counts(),
        attempts: prepared
            .tasks()
            .iter()
            .map(|t| (t.name.clone(), t.meta.more.retries + 1))
            .collect(),
    }));
    let mut run = match prepared.start() {
        Ok(r) => r,
        Err(e) => return failed(engine_exit_code(&e), error_chain(&e)),
    };
    {
        let mut slot = handle.lock().unwrap_or_else(PoisonError::into_inner);
        let h = run.handle();
        // A Ctrl-C that came while the run was being prepared.
        let now = level.load(Ordering::SeqCst);
        if now > 0 {
            stop(&h, now);
        }
        *slot = Some(h);
    }
    for event in &mut run {
        log.write(Record::Event(event));
    }
    // The handle keeps the run's executor (and its record of running tasks) alive: let it go
    // before the run ends, so that a clean end removes that record.
    handle.lock().unwrap_or_else(PoisonError::into_inner).take();
    let suspended_by = run.suspended_by().to_vec();
    let interrupted = level.load(Ordering::SeqCst) > 0;
    match run.finish() {
        Ok(report) => Ended {
            code: if interrupted {
                exit_code::INTERRUPTED
            } else if !suspended_by.is_empty() {
                exit_code::SUSPENDED
            } else if report.outcome.is_success() {
                exit_code::OK
            } else {
                exit_code::TASK_FAILED
            },
            error: None,
            interrupted,
            suspended_by,
        },
        Err(e) => Ended {
            code: engine_exit_code(&e),
            error: Some(error_chain(&e)),
            interrupted,
            suspended_by,
        },
    }
}
