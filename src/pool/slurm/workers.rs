//! The Slurm side of pilot workers (`pexen run --slurm --slurm-workers N`, SPEC section 10):
//! submitting the jobs that run `pexen worker --connect`, journaling their ids, following them
//! with the run's one poller, and ending them with the run.
//!
//! The worker journal is `STATE/slurm/workers.jobs`: one line `JOBID NAME` per submitted job,
//! appended (and synced) before pexen waits for the job. A run that ends in order cancels what
//! is left of its jobs, waits until Slurm reports them over and removes the file; so a file
//! found at the start of a run is the list of an earlier run that was killed, and its jobs are
//! cancelled ([`cancel_leftover_workers`]) before anything runs: they belong to a controller
//! that is gone, and their credentials were made for it alone.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::poll::{squeue, Poller};
use super::script::quote;
use super::verdict::Seen;
use super::{cancel_jobs, sbatch, SlurmConfig, SlurmError};

/// The worker journal, under the Slurm directory of the state directory.
const JOURNAL: &str = "workers.jobs";
/// How long the end of a run waits for its worker jobs to leave Slurm's queue.
const END_WAIT: Duration = Duration::from_secs(60);
/// How long connected workers get to end by themselves (their connection closed) before they
/// are cancelled.
const OWN_END: Duration = Duration::from_secs(5);

/// Where a worker job is, as far as this run knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobState {
    /// Submitted; its worker has not connected.
    Waiting,
    /// Its worker connected back: it ends by itself when its connection closes.
    Connected,
    /// Over, or cancelled by pexen.
    Done,
}

/// The worker jobs of one run.
pub(crate) struct WorkerJobs {
    config: SlurmConfig,
    /// `STATE/slurm/workers`: credentials, batch output (`ID.out`).
    dir: PathBuf,
    journal: PathBuf,
    jobs: Mutex<HashMap<String, JobState>>,
    poller: Poller,
    next_script: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Cancels the worker jobs an earlier run journaled in `slurm_dir` and did not end (pexen was
/// killed), waits until Slurm reports them over (at most a minute), and removes the journal.
/// Returns their ids.
pub(crate) fn cancel_leftover_workers(
    slurm_dir: &Path,
    config: &SlurmConfig,
) -> Result<Vec<String>, SlurmError> {
    let path = slurm_dir.join(JOURNAL);
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let ids: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    cancel_jobs(&config.scancel, &ids)?;
    wait_over(&config.squeue, &ids, END_WAIT);
    let _ = fs::remove_file(&path);
    Ok(ids)
}

/// Polls `squeue` (one call for all of `ids`, every 200 ms) until none is queued or running,
/// or `limit` passed. Returns those still active.
fn wait_over(squeue_cmd: &str, ids: &[String], limit: Duration) -> Vec<String> {
    let until = Instant::now() + limit;
    let mut left: Vec<String> = ids.to_vec();
    while !left.is_empty() {
        if let Ok(states) = squeue(squeue_cmd, &left) {
            left.retain(|id| {
                states
                    .get(id.as_str())
                    .is_some_and(|s| !Seen::from_state(s).is_over())
            });
        }
        if left.is_empty() || Instant::now() >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    left
}

impl WorkerJobs {
    /// Prepares `dir` (created fresh, mode 0700: it holds the workers' keys) and the journal.
    pub(crate) fn new(config: SlurmConfig, dir: &Path) -> Result<Self, SlurmError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SlurmError::Dir { path, source }
        };
        fs::create_dir_all(&config.dir).map_err(dir_err(&config.dir))?;
        // What an earlier run left (credentials, batch output) is of no use to this one.
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(dir_err(dir))?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(dir_err(dir))?;
        // Slurm's nodes need absolute paths.
        let dir = fs::canonicalize(dir).map_err(dir_err(dir))?;
        Ok(Self {
            journal: config.dir.join(JOURNAL),
            poller: Poller::new(config.squeue.clone(), config.poll_interval),
            config,
            dir,
            jobs: Mutex::new(HashMap::new()),
            next_script: Mutex::new(0),
        })
    }

    /// Where credentials and batch output go.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Submits a job named `pexen-worker:NAME` that runs `command` (a worker asking for
    /// `cpus` CPUs, in `cwd`), journals its id and starts following it.
    pub(crate) fn submit(
        &self,
        name: &str,
        command: &[String],
        cpus: usize,
        cwd: &Path,
    ) -> Result<String, SlurmError> {
        let mut script = String::from("#!/bin/sh\n");
        let _ = write!(script, "# pexen: pilot worker {name}\nexec");
        for word in command {
            script.push(' ');
            script.push_str(&quote(word));
        }
        script.push('\n');
        let n = {
            let mut next = lock(&self.next_script);
            *next += 1;
            *next
        };
        let path = self.dir.join(format!(".submit-{n}.sh"));
        fs::write(&path, script).map_err(|source| SlurmError::Dir {
            path: path.clone(),
            source,
        })?;
        let mut args = vec![
            "--parsable".to_owned(),
            format!("--job-name=pexen-worker:{name}"),
            // pexen replaces a lost worker itself.
            "--no-requeue".to_owned(),
            format!("--chdir={}", cwd.display()),
            format!("--output={}", self.dir.join("%j.out").display()),
            format!("--cpus-per-task={cpus}"),
        ];
        args.extend(self.config.args.iter().cloned());
        let id = sbatch(&self.config.sbatch, &args, &path);
        let _ = fs::remove_file(&path);
        let id = id?;
        lock(&self.jobs).insert(id.clone(), JobState::Waiting);
        self.poller.register(&id);
        // Journaled before anything waits for it: after a kill -9, the next run cancels it.
        let journaled = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.journal)
            .and_then(|mut f| {
                f.write_all(format!("{id} {name}\n").as_bytes())?;
                f.sync_data()
            });
        if let Err(source) = journaled {
            self.cancel(&id);
            return Err(SlurmError::Dir {
                path: self.journal.clone(),
                source,
            });
        }
        Ok(id)
    }

    /// What the last poll said about job `id`.
    pub(crate) fn seen(&self, id: &str) -> Seen {
        self.poller.seen(id)
    }

    /// The job's worker connected: it is no longer polled (its connection tells).
    pub(crate) fn connected(&self, id: &str) {
        self.poller.unregister(id);
        lock(&self.jobs).insert(id.to_owned(), JobState::Connected);
    }

    /// Cancels job `id` (its worker will not be used).
    pub(crate) fn cancel(&self, id: &str) {
        self.poller.unregister(id);
        lock(&self.jobs).insert(id.to_owned(), JobState::Done);
        let _ = cancel_jobs(&self.config.scancel, &[id.to_owned()]);
    }

    /// Job `id` is over: no longer polled.
    pub(crate) fn over(&self, id: &str) {
        self.poller.unregister(id);
        lock(&self.jobs).insert(id.to_owned(), JobState::Done);
    }

    /// The last lines of what job `id`'s batch script printed (`ID.out`), for an error.
    pub(crate) fn output_tail(&self, id: &str) -> String {
        let text = fs::read_to_string(self.dir.join(format!("{id}.out"))).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        lines[lines.len().saturating_sub(3)..].join("; ")
    }

    /// The run is over: cancels the jobs whose worker never connected at once, gives the
    /// connected ones a moment to end by themselves (their connections are closed), cancels
    /// what is left, waits until Slurm reports every job of the run over (at most a minute),
    /// and removes the journal and the credentials. Idempotent.
    pub(crate) fn finish(&self) {
        self.poller.stop();
        let jobs = std::mem::take(&mut *lock(&self.jobs));
        let waiting: Vec<String> = jobs
            .iter()
            .filter(|(_, s)| **s == JobState::Waiting)
            .map(|(id, _)| id.clone())
            .collect();
        let _ = cancel_jobs(&self.config.scancel, &waiting);
        let all: Vec<String> = jobs.keys().cloned().collect();
        let left = wait_over(&self.config.squeue, &all, OWN_END);
        let _ = cancel_jobs(&self.config.scancel, &left);
        let left = wait_over(&self.config.squeue, &left, END_WAIT);
        if left.is_empty() {
            let _ = fs::remove_file(&self.journal);
        }
        // Keys and certificates are of no use past the run; batch output stays for reading.
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().and_then(|x| x.to_str()) != Some("out") {
                    let _ = fs::remove_file(&p);
                }
            }
        }
    }
}

impl Drop for WorkerJobs {
    fn drop(&mut self) {
        self.poller.stop();
    }
}
