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
    Check(CheckArgs),
    /// Print the DAG in Graphviz DOT (all, or a selection and what it requires).
    Graph(GraphArgs),
    /// Rebuild a report of the recorded run from the journal.
    Report(ReportArgs),
    /// Serve the tree over HTTP: describe it, start, watch and cancel runs, and a live page.
    #[cfg(feature = "serve")]
    Serve(ServeArgs),
    /// Serve a scheduler as a worker (started by pexen itself over ssh).
    Worker(WorkerArgs),
    /// Move a run to an ssh host: continue it there with --resume, show it here, bring its
    /// state back.
    Teleport(TeleportArgs),
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
    /// Connect to a scheduler at ADDR and serve it (a Slurm pilot worker, started by
    /// `pexen run --slurm-workers`), with mutual TLS.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["stdio", "listen"], requires_all = ["tls_cert", "tls_key", "ca"])]
    pub connect: Option<String>,
    /// With --connect: the CA that signed the scheduler's certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Attempts at once per scheduler (default: the number of CPUs).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// A tag this daemon carries, added to those of its host spec (repeatable; --listen).
    #[arg(long = "tag", value_name = "T", requires = "listen")]
    pub tags: Vec<String>,
    /// A capacity for `slots` on this daemon, used unless the host spec gives NAME
    /// (repeatable; --listen).
    #[arg(long = "capacity", value_name = "NAME=N", value_parser = parse_capacity, requires = "listen")]
    pub capacity: Vec<(String, u32)>,
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
    /// Run the teleported run kept in DIR (started detached by a teleport agent).
    #[arg(long, value_name = "DIR", hide = true)]
    pub teleport_run: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The task tree.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Capacity of a counted resource for `slots` (repeatable; overrides the tree).
    #[arg(long = "capacity", value_name = "NAME=N", value_parser = parse_capacity)]
    pub capacity: Vec<(String, u32)>,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub check: CheckArgs,
    /// Draw TASK as the chosen provider of the virtual tokens it provides (as `run --prefer`).
    #[arg(long = "prefer", value_name = "TASK")]
    pub prefer: Vec<String>,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `--filter` and `--tag`, for `list` and `graph` to preview what `run` would select.
#[derive(Debug, Args)]
pub struct SelectArgs {
    #[arg(long = "filter", value_name = "PATTERN", help = FILTER_HELP, long_help = FILTER_LONG_HELP)]
    pub filters: Vec<String>,
    #[arg(long = "tag", value_name = "T", help = TAG_HELP)]
    pub tags: Vec<String>,
}

const FILTER_HELP: &str = "Select tasks by name: a substring, or a glob (repeatable; see --help)";
const FILTER_LONG_HELP: &str = "Select tasks whose name contains PATTERN; a PATTERN with \
    `*`, `?` or `[` is a glob that must match whole /-separated components of the name \
    (`port-*` selects `net/port-a`, `tcp/c*` selects `net/tcp/connect`; `*` stays within a \
    component, `**` crosses them).\n\nRepeated --filter: a task matching any is selected. \
    Repeated --tag: a task carrying any is selected. --filter and --tag together: a task must \
    match both. The providers of what selected tasks require run too.";
const TAG_HELP: &str = "Select tasks carrying tag T (repeatable; see --help)";

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
    #[arg(long = "filter", value_name = "PATTERN", help = FILTER_HELP, long_help = FILTER_LONG_HELP)]
    pub filters: Vec<String>,
    #[arg(long = "tag", value_name = "T", help = TAG_HELP)]
    pub tags: Vec<String>,
    /// For a virtual token that the selection requires, pull in TASK as its provider (repeatable).
    #[arg(long = "prefer", value_name = "TASK")]
    pub prefer: Vec<String>,
    /// Write a JUnit XML report to FILE (atomically, also when interrupted; missing directories
    /// are made).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Where the journal of runs is kept (`DIR/.pexen`: inside the tree)
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE)]
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
    #[arg(long, value_name = "DUR", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when a task times out or the run is interrupted.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub grace: Duration,
    /// Capacity of a counted resource for `slots` (repeatable; overrides the tree).
    #[arg(long = "capacity", value_name = "NAME=N", value_parser = parse_capacity)]
    pub capacity: Vec<(String, u32)>,
    /// Output: a human display on stderr, or one JSON object per line on stdout.
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
    /// With --slurm: N pilot workers (jobs running `pexen worker`) connect back and take the
    /// attempts; -j is the attempts at once on each (default 1).
    #[arg(long, value_name = "N", requires = "slurm", conflicts_with_all = ["hosts", "hosts_file", "no_local"], value_parser = clap::value_parser!(u32).range(1..))]
    pub slurm_workers: Option<u32>,
    /// With --slurm-workers: where to listen for them, `HOST[:PORT]` (default 127.0.0.1;
    /// `0.0.0.0`: every interface, workers connect to this machine's name).
    #[arg(long, value_name = "ADDR", requires = "slurm_workers")]
    pub slurm_listen: Option<String>,
    /// With --slurm-workers: a worker with nothing to run for this long, while no task waits
    /// for one, is released (its job ends; another is submitted if work comes). `0s`: kept
    /// until the run ends.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5m", requires = "slurm_workers")]
    pub slurm_worker_idle: Duration,
    /// With --slurm-workers: a tag of every worker, for tasks' `host_tags` (repeatable), e.g.
    /// `gpu` with `--slurm-arg=--gres=gpu:1`.
    #[arg(long, value_name = "T", requires = "slurm_workers")]
    pub slurm_worker_tag: Vec<String>,
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
    /// With `--message-format json`: add the captured output of failed attempts to
    /// `task-finished` and `task-retry` lines.
    #[arg(long)]
    pub json_output: bool,
    /// Coloring of the human display: auto (a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    pub color: Color,
    /// Print `SLOW [> DUR] name` each time a task has run for another DUR (`0s`: never).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "60s")]
    pub slow_timeout: Duration,
}

/// `--color`, as cargo has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
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
    #[command(flatten)]
    pub select: SelectArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Write the JUnit XML report of the last recorded run to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: PathBuf,
    /// Where the journal is kept (`DIR/.pexen`: inside the tree)
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE)]
    pub state: PathBuf,
    /// The task tree whose recorded run to report.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

/// `--state`'s default, which stands for `.pexen` in the tree given as `DIR`.
const DEFAULT_STATE: &str = "DIR/.pexen";

/// The state directory: by default `.pexen` inside the tree, so that two trees run from one
/// directory keep two journals.
pub(crate) fn state_dir(state: &std::path::Path, tree: &std::path::Path) -> PathBuf {
    if state == std::path::Path::new(DEFAULT_STATE) {
        tree.join(".pexen")
    } else {
        state.to_path_buf()
    }
}

#[cfg(feature = "serve")]
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The task tree.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Address to listen on; beyond loopback it needs --tls-cert and --tls-key. Port 0 picks one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub listen: std::net::SocketAddr,
    /// Read the access token from FILE (default: a random one, printed in the URL).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM).
    #[arg(long, value_name = "C", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "K", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where runs are journaled (`DIR/.pexen`: inside the tree, as for `run`)
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE)]
    pub state: PathBuf,
    /// Attempts run at once, for runs that do not say (default: the number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// Time between SIGTERM and SIGKILL when a run is cancelled.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub grace: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like `30s` or `5m`: {e}"))?;
    if d > crate::task::MAX_TIMEOUT {
        return Err(format!("`{s}` is too long: at most 100 years"));
    }
    Ok(d)
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!(
            "`{s}` would end every attempt at once; give a positive duration like `30s`"
        )),
        d => Ok(d),
    }
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

/// `pexen teleport`: the run options of `pexen run` that make sense on another machine.
#[derive(Debug, Args)]
pub struct TeleportArgs {
    /// The host: `ssh://[user@]host[:port]` (`$PEXEN_SSH` is the ssh command).
    #[arg(value_name = "URL")]
    pub host: String,
    /// The task tree.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Re-attach to the run teleported from this tree and state (after a disconnect): its
    /// events so far, then live; bring its state back at the end.
    #[arg(long)]
    pub attach: bool,
    /// Where the journal of runs is kept here (`DIR/.pexen`: inside the tree)
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE)]
    pub state: PathBuf,
    /// Attempts run at once there (default: its number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "attach")]
    pub jobs: Option<u32>,
    #[arg(long = "filter", value_name = "PATTERN", help = FILTER_HELP, long_help = FILTER_LONG_HELP, conflicts_with = "attach")]
    pub filters: Vec<String>,
    #[arg(long = "tag", value_name = "T", help = TAG_HELP, conflicts_with = "attach")]
    pub tags: Vec<String>,
    /// For a virtual token that the selection requires, pull in TASK as its provider (repeatable).
    #[arg(long = "prefer", value_name = "TASK", conflicts_with = "attach")]
    pub prefer: Vec<String>,
    /// Write the JUnit XML report of the run to FILE here when it ends.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Say why each task runs again or is taken from the journal.
    #[arg(long, conflicts_with = "attach")]
    pub explain: bool,
    /// Stop starting tasks after the first failure; the rest are skipped.
    #[arg(long, conflicts_with = "attach")]
    pub fail_fast: bool,
    /// Extra attempts for every task after fail, error or timeout (overrides the tree).
    #[arg(long, value_name = "N", conflicts_with = "attach")]
    pub retries: Option<u32>,
    /// Timeout for tasks that do not declare one (`30s`, `5m`).
    #[arg(long, value_name = "DUR", value_parser = parse_timeout, conflicts_with = "attach")]
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when a task times out or the run is interrupted.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub grace: Duration,
    /// Capacity of a counted resource for `slots` (repeatable; overrides the tree).
    #[arg(long = "capacity", value_name = "NAME=N", value_parser = parse_capacity, conflicts_with = "attach")]
    pub capacity: Vec<(String, u32)>,
    /// Output: a human display on stderr, or one JSON object per line on stdout.
    #[arg(long, value_enum, default_value = "human")]
    pub message_format: MessageFormat,
    /// With `--message-format json`: add the captured output of failed attempts.
    #[arg(long)]
    pub json_output: bool,
    /// Coloring of the human display: auto, always, never.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    pub color: Color,
    /// Print `SLOW [> DUR] name` each time a task has run for another DUR (`0s`: never).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "60s")]
    pub slow_timeout: Duration,
}
