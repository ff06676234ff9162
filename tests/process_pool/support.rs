//! What every scenario uses: the run on the chosen pool, and helpers over recorded events.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pexen::{Event, PoolKind, Scheduler, SchedulerBuilder, Task};

/// One scenario on one pool, with a scratch directory of its own.
pub(crate) struct Env {
    pub(crate) name: &'static str,
    pub(crate) pool: PoolKind,
    pub(crate) dir: PathBuf,
}

impl Env {
    /// A scheduler on this pool whose workers rebuild this scenario's tasks.
    pub(crate) fn builder(&self, jobs: usize) -> SchedulerBuilder {
        Scheduler::builder()
            .jobs(jobs)
            .default_pool(self.pool)
            .worker_args([self.name, self.dir.to_str().expect("utf-8 temp dir")])
    }

    /// The scenario's tasks, built by the same function the workers use.
    pub(crate) fn tasks(&self) -> Vec<Task> {
        crate::scenarios::build(self.name, &self.dir)
    }

    pub(crate) fn run(&self, jobs: usize) -> Vec<Event> {
        self.run_tasks(jobs, self.tasks())
    }

    pub(crate) fn run_tasks(&self, jobs: usize, tasks: Vec<Task>) -> Vec<Event> {
        self.builder(jobs)
            .build()
            .run(tasks)
            .expect("valid graph")
            .collect()
    }

    pub(crate) fn is_processes(&self) -> bool {
        self.pool == PoolKind::Processes
    }
}

/// Waits until `path` exists; the guard only fires when the code under test is wrong.
pub(crate) fn wait_for(path: &Path) {
    let limit = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < limit, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Our child processes (zombies included), from /proc: `(pid, command name)`.
pub(crate) fn children() -> Vec<(i32, String)> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        let pid: i32 = name.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let close = stat.rfind(')')?;
        let ppid = stat[close + 1..].split_ascii_whitespace().nth(1)?;
        (ppid == me).then(|| (pid, stat[..close].to_string()))
    })
    .collect()
}

#[path = "../common/events.rs"]
mod events;
pub(crate) use events::{
    end_of, finished, message, outcome, results, run_outcome, start_of, started,
};
