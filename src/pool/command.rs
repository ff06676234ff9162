//! Command tasks: a child process per attempt (minimal version; replaced by the full runner).

use std::time::{Duration, Instant};

use crate::context::{ResultSink, Shared};
use crate::sched::events::Attempt;
use crate::task::{CommandSpec, Outcome, TaskName};

#[derive(Clone, Debug)]
pub struct CommandConfig {
    pub grace: Duration,
    pub output_cap: usize,
}

impl Default for CommandConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(5),
            output_cap: 1 << 20,
        }
    }
}

pub struct CommandJob<'a> {
    pub task: &'a TaskName,
    pub attempt: u32,
    pub spec: &'a CommandSpec,
    pub shared: &'a Shared,
    pub timeout: Option<Duration>,
    pub sink: &'a dyn ResultSink,
}

pub struct CommandRunner {
    _config: CommandConfig,
}

impl CommandRunner {
    pub fn new(config: CommandConfig) -> std::io::Result<Self> {
        Ok(Self { _config: config })
    }

    pub fn run(&self, job: CommandJob<'_>) -> Attempt {
        let started = Instant::now();
        let argv = job.spec.argv();
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).envs(&job.spec.env);
        if let Some(cwd) = &job.spec.cwd {
            cmd.current_dir(cwd);
        }
        let mut a = match cmd.status() {
            Ok(s) if s.success() => Attempt::new(Outcome::Pass),
            Ok(s) if s.code() == Some(77) => Attempt::new(Outcome::Skip),
            Ok(s) => Attempt::new(Outcome::Fail).message(format!("{s}")),
            Err(e) => {
                Attempt::new(Outcome::Error).message(format!("cannot start {}: {e}", argv[0]))
            }
        };
        a.duration = started.elapsed();
        a
    }

    pub fn terminate_all(&self) {}

    pub fn kill_all(&self) {}
}
