//! Command-line arguments (clap derive). SPEC section 5 is the contract.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// pexen: run a directory tree of tasks as a dependency-aware parallel DAG.
#[derive(Debug, Parser)]
#[command(name = "pexen", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the tasks of a tree (all, or a selection and what it requires).
    Run(RunArgs),
    /// List the tasks with their metadata.
    List(ListArgs),
    /// Validate the tree only: definitions and graph.
    Check(TreeArg),
    /// Print the DAG in Graphviz DOT.
    Graph(TreeArg),
    /// Rebuild a report of the recorded run from the journal.
    Report(ReportArgs),
    /// Serve a scheduler as a worker (started by pexen itself over ssh).
    Worker(WorkerArgs),
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Speak the worker protocol on stdin and stdout.
    #[arg(long, conflicts_with = "listen")]
    pub stdio: bool,
    /// Serve schedulers over mutual TLS on ADDR (`PORT` alone: on 127.0.0.1).
    #[arg(long, value_name = "ADDR", requires_all = ["tls_cert", "tls_key", "client_ca"])]
    pub listen: Option<String>,
    /// The daemon's certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Only clients with a certificate signed by this CA (PEM) get in.
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Attempts at once per scheduler (default: the number of CPUs).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// Exit 0 if this executable's content has hash HASH, 1 otherwise (the check of an
    /// uploaded binary).
    #[arg(long, value_name = "HASH", hide = true)]
    pub verify: Option<String>,
    /// Keep the process groups of running tasks in FILE (for the script that started the
    /// worker, to kill them if the worker is killed).
    #[arg(long, value_name = "FILE", hide = true)]
    pub groups_file: Option<PathBuf>,
    /// This executable's hash, as the bootstrap script found it (verified at upload).
    #[arg(long, value_name = "HASH", hide = true)]
    pub binary_hash: Option<String>,
}

#[derive(Debug, Args)]
pub struct TreeArg {
    /// The task tree.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MessageFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task tree.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Attempts run at once (default: the number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// Select tasks whose name matches GLOB (repeatable; `*` does not cross `/`, `**` does).
    #[arg(long = "filter", value_name = "GLOB")]
    pub filters: Vec<String>,
    /// Select tasks carrying tag T (repeatable).
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// For a virtual token that the selection requires, pull in TASK as its provider (repeatable).
    #[arg(long = "prefer", value_name = "TASK")]
    pub prefer: Vec<String>,
    /// Write a JUnit XML report to FILE (atomically, also when interrupted).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Where the journal of runs is kept.
    #[arg(long, value_name = "DIR", default_value = ".pexen")]
    pub state: PathBuf,
    /// Do not rerun tasks that passed with an unchanged fingerprint in the journal; keep
    /// checkpoints (a run without it starts from empty ones) and run suspended tasks first.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: say why each task runs again or is taken from the journal.
    #[arg(long)]
    pub explain: bool,
    /// Stop starting tasks after the first failure; the rest are skipped.
    #[arg(long)]
    pub fail_fast: bool,
    /// Extra attempts for every task after fail, error or timeout (overrides the tree).
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Timeout for tasks that do not declare one (`30s`, `5m`).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when a task times out or the run is interrupted.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub grace: Duration,
    /// Capacity of a counted resource for `slots` (repeatable; overrides the tree).
    #[arg(long = "capacity", value_name = "NAME=N", value_parser = parse_capacity)]
    pub capacity: Vec<(String, u32)>,
    /// Output: a human display, or one JSON object per line on stdout.
    #[arg(long, value_enum, default_value = "human")]
    pub message_format: MessageFormat,
    /// Run each command attempt as a Slurm job (sbatch); -j bounds the jobs queued and running.
    #[arg(long)]
    pub slurm: bool,
    /// With --slurm: an extra sbatch argument for every job (repeatable: `--slurm-arg=--partition=gpu`).
    #[arg(
        long = "slurm-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        requires = "slurm"
    )]
    pub slurm_args: Vec<String>,
    /// Run command tasks on this host too (repeatable):
    /// `ssh://[user@]host[:port][?jobs=N&tags=a,b&shared_fs=1]`. `$PEXEN_SSH` is the ssh command.
    #[arg(long = "host", value_name = "SPEC")]
    pub hosts: Vec<String>,
    /// Hosts from a RON file: `[(url: "ssh://build1", jobs: 8, tags: ["gpu"])]`.
    #[arg(long = "hosts", value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,
    /// Run no command task on this machine (needs --host or --hosts).
    #[arg(long)]
    pub no_local: bool,
    /// This run's certificate for `tls://` hosts (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA that signed the `tls://` daemons' certificates (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The task tree.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    #[arg(long, value_enum, default_value = "human")]
    pub format: ListFormat,
    /// Show TASK as the chosen provider of the virtual tokens it provides (as `run --prefer`).
    #[arg(long = "prefer", value_name = "TASK")]
    pub prefer: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Write the JUnit XML report of the last recorded run to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: PathBuf,
    /// Where the journal is kept.
    #[arg(long, value_name = "DIR", default_value = ".pexen")]
    pub state: PathBuf,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like `30s` or `5m`: {e}"))
}

fn parse_capacity(s: &str) -> Result<(String, u32), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=N"))?;
    let n = n
        .parse()
        .map_err(|_| format!("`{n}` in `{s}` is not a whole number"))?;
    if name.is_empty() {
        return Err(format!("`{s}` has an empty name"));
    }
    Ok((name.to_string(), n))
}
