//! The `pexen` command line: parse, load the tree, run, report. The binary only maps what
//! [`main`] returns to the process exit code.

pub mod args;
mod graph;
mod list;
mod preflight;
mod report;
mod run;
#[cfg(feature = "serve")]
mod serve;
mod signals;
mod slurm;
mod teleport;

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use thiserror::Error;

use crate::engine::{ignored_note, problems, EngineError};
use crate::error::{exit_code, GraphErrors};
use crate::factory::{FactoryErrors, TaskTree};
use crate::state::journal::JournalError;

use self::args::{Cli, Command};

/// Why a command could not do its job. Each maps to a documented exit code.
#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Definitions(#[from] FactoryErrors),
    #[error(transparent)]
    Graph(#[from] GraphErrors),
    #[error(transparent)]
    Tree(#[from] problems::TreeProblems),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NothingToRun(String),
    #[error(transparent)]
    State(#[from] JournalError),
    #[error("--slurm: {0}")]
    Slurm(#[from] crate::pool::slurm::SlurmError),
    #[error("no recorded run in {}: run `pexen run --state {}` first", .0.display(), .0.display())]
    NoRecordedRun(PathBuf),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[cfg(feature = "serve")]
    #[error("{0}")]
    Serve(#[from] crate::serve::ServeError),
    #[error(transparent)]
    Teleport(#[from] crate::teleport::TeleportError),
}

impl From<EngineError> for CliError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Definitions(e) => CliError::Definitions(e),
            EngineError::Graph(e) => CliError::Graph(e),
            EngineError::Usage(m) => CliError::Usage(m),
            EngineError::State(e) => CliError::State(e),
            EngineError::Write { path, source } => CliError::Write { path, source },
            EngineError::Tree(e) => CliError::Tree(e),
            EngineError::NothingToRun(m) => CliError::NothingToRun(m),
        }
    }
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Definitions(_)
            | CliError::Graph(_)
            | CliError::Tree(_)
            | CliError::Usage(_)
            | CliError::Slurm(_) => exit_code::BAD_INPUT,
            CliError::State(_) | CliError::NoRecordedRun(_) => exit_code::BAD_STATE,
            CliError::NothingToRun(_) => exit_code::NOTHING_TO_RUN,
            CliError::Write { .. } => exit_code::TASK_FAILED,
            #[cfg(feature = "serve")]
            CliError::Serve(_) => exit_code::BAD_INPUT,
            CliError::Teleport(e) => teleport::exit_code(e),
        }
    }
}

/// Runs the command line `args` and returns the exit code.
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with success; usage errors to stderr with 2.
            let _ = e.print();
            return if e.use_stderr() {
                exit_code::BAD_INPUT
            } else {
                exit_code::OK
            };
        }
    };
    let result = match cli.command {
        Command::Run(mut a) => {
            a.state = args::state_dir(&a.state, &a.dir);
            run::run(&a)
        }
        Command::Report(mut a) => {
            a.state = args::state_dir(&a.state, &a.dir);
            report::report(&a)
        }
        Command::List(a) => list::list(&a),
        Command::Check(a) => check(&a),
        Command::Graph(a) => graph::graph(&a),
        #[cfg(feature = "serve")]
        Command::Serve(mut a) => {
            a.state = args::state_dir(&a.state, &a.dir);
            serve::serve(a)
        }
        Command::Worker(a) => worker(&a),
        Command::Teleport(mut a) => {
            a.state = args::state_dir(&a.state, &a.dir);
            teleport::teleport(&a)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // With its causes: `cannot create state directory x: File exists (os error 17)`.
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                crate::error::error_chain(&e)
            );
            e.exit_code()
        }
    }
}

/// `pexen worker`: serve a scheduler over stdin/stdout, or check an uploaded binary.
fn worker(args: &args::WorkerArgs) -> Result<i32, CliError> {
    // Set by the bootstrap script for embedding binaries; not for the tasks run here.
    std::env::remove_var(crate::worker::WORKER_ENV);
    if let Some(hash) = &args.verify {
        return Ok(i32::from(!crate::host::serve::verify(hash)));
    }
    if let Some(dir) = &args.teleport_run {
        return Ok(crate::teleport::supervise(dir));
    }
    if let Err(e) = crate::host::serve::exit_on_signals() {
        let _ = writeln!(
            std::io::stderr(),
            "pexen worker: cannot catch signals ({e}); a signal will leave its tasks running"
        );
    }
    if let Some(addr) = &args.listen {
        let files = tls_files(
            args.tls_cert.as_ref(),
            args.tls_key.as_ref(),
            args.client_ca.as_ref(),
        )
        .ok_or_else(|| usage("--listen needs --tls-cert, --tls-key and --client-ca"))?;
        // Loopback unless an address is given.
        let addr = if addr.contains(':') {
            addr.clone()
        } else {
            format!("127.0.0.1:{addr}")
        };
        let offer = crate::host::serve::Offer {
            jobs: args.jobs.map(|j| j as usize),
            tags: args.tags.clone(),
            capacity: args.capacity.iter().cloned().collect(),
        };
        let result = crate::host::tls::listen(&addr, &files, &offer, |a| {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "pexen worker listening on {a}");
            let _ = out.flush();
        });
        return match result {
            Ok(()) => Ok(exit_code::OK),
            Err(e) => Err(CliError::Usage(crate::error::error_chain(&e))),
        };
    }
    if let Some(addr) = &args.connect {
        let files = tls_files(
            args.tls_cert.as_ref(),
            args.tls_key.as_ref(),
            args.ca.as_ref(),
        )
        .ok_or_else(|| usage("--connect needs --tls-cert, --tls-key and --ca"))?;
        let jobs = args.jobs.map(|j| j as usize);
        return Ok(served(crate::host::pilot::connect_back(addr, &files, jobs)));
    }
    if !args.stdio {
        return Err(CliError::Usage(
            "pexen worker needs --stdio (started by pexen over ssh), --listen ADDR or --connect ADDR".into(),
        ));
    }
    Ok(served(crate::host::serve::serve_stdio(
        args.groups_file.clone(),
        args.binary_hash.clone(),
    )))
}

/// The exit code of a worker that served until its scheduler went away, or why it could not
/// (said on stderr: the one who started it reads it there).
fn served<E: std::error::Error>(result: Result<(), E>) -> i32 {
    match result {
        Ok(()) => exit_code::OK,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "pexen worker: {}",
                crate::error::error_chain(&e)
            );
            exit_code::TASK_FAILED
        }
    }
}

/// Runs the process's command line and returns the exit code.
pub fn main() -> i32 {
    main_with_args(std::env::args_os())
}

/// Loads a tree, printing nothing. A tree without a task is exit 5 (SPEC 5).
fn load(dir: &std::path::Path) -> Result<TaskTree, CliError> {
    Ok(crate::engine::load(dir)?)
}

/// Graph problems of `tree`'s tasks, with where the tasks are defined.
fn located(e: GraphErrors, tree: &TaskTree) -> CliError {
    problems::TreeProblems {
        definitions: Vec::new(),
        graph: problems::locate(e, &tree.sources),
    }
    .into()
}

/// The tree's capacities, overridden by `--capacity`.
fn capacities(
    tree: &std::collections::BTreeMap<String, u32>,
    extra: &[(String, u32)],
) -> std::collections::BTreeMap<String, u32> {
    let mut capacity = tree.clone();
    capacity.extend(extra.iter().cloned());
    capacity
}

/// `pexen check`: definitions and graph, every problem at once.
fn check(args: &args::CheckArgs) -> Result<i32, CliError> {
    let dir = &args.dir;
    let mut tree = load(dir)?;
    let capacity = capacities(&tree.capacity, &args.capacity);
    let (graph, warnings) =
        crate::graph::Graph::build(&tree.tasks, &capacity).map_err(|e| located(e, &tree))?;
    let tree_warnings = std::mem::take(&mut tree.warnings);
    // Freeing 10^5 tasks and their graph is about a tenth of `check` (benches/factory.rs): do it
    // on a thread of its own, which the process does not wait for when it exits.
    let preflight = preflight::warnings(&tree.tasks);
    let count = tree.tasks.len();
    let ignored = tree.ignored;
    drop_in_background((graph, tree));
    let mut err = std::io::stderr().lock();
    for w in tree_warnings.iter().chain(&warnings).chain(&preflight) {
        let _ = writeln!(err, "warning: {w}");
    }
    let _ = writeln!(
        std::io::stdout(),
        "ok: {} task{} in {}{}",
        count,
        if count == 1 { "" } else { "s" },
        dir.display(),
        ignored_note(ignored)
    );
    Ok(exit_code::OK)
}

/// Drops `value` on a detached thread. If no thread can be started, the closure, and `value` with
/// it, is dropped here instead.
fn drop_in_background<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("pexen-drop".into())
        .spawn(move || drop(value));
}

/// A TLS identity given as three options (certificate, its key, a CA), if all three are.
pub(super) fn tls_files(
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
    ca: Option<&PathBuf>,
) -> Option<crate::host::tls::TlsFiles> {
    Some(crate::host::tls::TlsFiles {
        cert: cert?.clone(),
        key: key?.clone(),
        ca: ca?.clone(),
    })
}

fn usage(message: &str) -> CliError {
    CliError::Usage(message.to_string())
}
