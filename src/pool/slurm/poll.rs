//! One `squeue` per poll interval for the whole run (SPEC section 10), never one per job.
//!
//! Attempts waiting for their jobs register the job ids here; one thread asks `squeue` about all
//! of them at once and publishes what it saw. An attempt whose job wrote its exit record asks for
//! an early poll ([`Poller::kick`]), so that the end of a job is confirmed quickly without each
//! attempt calling `squeue`: early polls are still one call for every job, and at least
//! [`MIN_GAP`] apart.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::verdict::Seen;

/// The shortest time between two polls, early ones included.
pub(crate) const MIN_GAP: Duration = Duration::from_millis(100);

#[derive(Default)]
struct State {
    jobs: HashMap<String, Seen>,
    kick: bool,
    stop: bool,
    /// Consecutive failed polls, and the last error.
    failures: u32,
    error: Option<String>,
}

struct Inner {
    state: Mutex<State>,
    /// Wakes the polling thread (a job registered, a kick, stop).
    wake: Condvar,
    /// Wakes waiting attempts: a poll published.
    changed: Condvar,
    interval: Duration,
    squeue: String,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The run's poller; its thread starts with the first registered job and stops with
/// [`Poller::stop`].
pub(crate) struct Poller {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Poller {
    pub(crate) fn new(squeue: String, interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                changed: Condvar::new(),
                interval: interval.max(MIN_GAP),
                squeue,
            }),
            thread: Mutex::new(None),
        }
    }

    /// Follows `job` from now on; its state is [`Seen::NotYet`] until the next poll.
    pub(crate) fn register(&self, job: &str) {
        self.inner.lock().jobs.insert(job.to_owned(), Seen::NotYet);
        // A poller idle for lack of jobs polls now.
        self.inner.wake.notify_one();
        let mut thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        if thread.is_none() {
            let inner = self.inner.clone();
            *thread = std::thread::Builder::new()
                .name("pexen-squeue".into())
                .spawn(move || poll_loop(&inner))
                .ok();
        }
    }

    pub(crate) fn unregister(&self, job: &str) {
        self.inner.lock().jobs.remove(job);
    }

    /// What the last poll said about `job`.
    pub(crate) fn seen(&self, job: &str) -> Seen {
        self.inner
            .lock()
            .jobs
            .get(job)
            .cloned()
            .unwrap_or(Seen::NotYet)
    }

    /// The job ids followed now.
    pub(crate) fn jobs(&self) -> Vec<String> {
        self.inner.lock().jobs.keys().cloned().collect()
    }

    /// How many polls in a row failed, and the last error.
    pub(crate) fn failing(&self) -> Option<(u32, String)> {
        let s = self.inner.lock();
        s.error.clone().map(|e| (s.failures, e))
    }

    /// Asks for a poll as soon as [`MIN_GAP`] allows.
    pub(crate) fn kick(&self) {
        self.inner.lock().kick = true;
        self.inner.wake.notify_one();
    }

    /// Waits at most `timeout` for the next poll to publish.
    pub(crate) fn wait(&self, timeout: Duration) {
        let state = self.inner.lock();
        let _ = self
            .inner
            .changed
            .wait_timeout(state, timeout)
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// Stops the thread and joins it.
    pub(crate) fn stop(&self) {
        self.inner.lock().stop = true;
        self.inner.wake.notify_one();
        self.inner.changed.notify_all();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn poll_loop(inner: &Inner) {
    let mut last: Option<Instant> = None;
    loop {
        let ids: Vec<String> = {
            let mut s = inner.lock();
            loop {
                if s.stop {
                    return;
                }
                let now = Instant::now();
                let gap = if s.kick { MIN_GAP } else { inner.interval };
                let due = last.map_or(now, |l| l + gap);
                if !s.jobs.is_empty() && now >= due {
                    break;
                }
                let nap = if s.jobs.is_empty() {
                    inner.interval
                } else {
                    due - now
                };
                s = inner
                    .wake
                    .wait_timeout(s, nap)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            s.kick = false;
            s.jobs.keys().cloned().collect()
        };
        last = Some(Instant::now());
        let result = squeue(&inner.squeue, &ids);
        let mut s = inner.lock();
        match result {
            Ok(states) => {
                s.failures = 0;
                s.error = None;
                for id in &ids {
                    // Only jobs registered before this poll started can be declared gone.
                    if let Some(seen) = s.jobs.get_mut(id) {
                        *seen = states
                            .get(id.as_str())
                            .map_or(Seen::Gone, |state| Seen::from_state(state));
                    }
                }
            }
            Err(e) => {
                s.failures += 1;
                s.error = Some(e);
            }
        }
        drop(s);
        inner.changed.notify_all();
    }
}

/// One `squeue` call for `ids`: each listed job's state word.
pub(crate) fn squeue(program: &str, ids: &[String]) -> Result<HashMap<String, String>, String> {
    let out = Command::new(program)
        .args(["--noheader", "--states=all", "--format=%i|%T", "--jobs"])
        .arg(ids.join(","))
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // Asked only about jobs Slurm has forgotten: an answer, not a failure.
        if stderr.contains("Invalid job id") {
            return Ok(HashMap::new());
        }
        return Err(format!(
            "{program} failed ({}): {}",
            out.status,
            stderr.trim()
        ));
    }
    Ok(parse_squeue(&String::from_utf8_lossy(&out.stdout)))
}

/// `ID|STATE` lines (`--format=%i|%T`).
pub(crate) fn parse_squeue(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (id, state) = line.trim().split_once('|')?;
            // `PREEMPTED` can come as `PREEMPTED+` style annotations on some versions.
            let state = state.trim().trim_end_matches('+');
            Some((id.trim().to_owned(), state.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_parse() {
        let states = parse_squeue("12|RUNNING\n13|COMPLETED\n  14|CANCELLED+ \nnoise\n");
        assert_eq!(states.len(), 3);
        assert_eq!(states["12"], "RUNNING");
        assert_eq!(states["14"], "CANCELLED");
    }
}
