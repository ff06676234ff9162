//! The `pexen` command line: parse, load the tree, run, report. The binary only maps what
//! [`main`] returns to the process exit code.

pub mod args;
mod graph;
mod list;
mod report;
mod run;
#[cfg(feature = "serve")]
mod serve;
mod slurm;

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use thiserror::Error;

use crate::engine::EngineError;
use crate::error::{exit_code, GraphErrors};
use crate::factory::{FactoryErrors, TaskTree};
use crate::state::journal::JournalError;

use self::args::{Cli, Command};

/// Why a command could not do its job. Each maps to a documented exit code.
#[derive(Debug, Error)]
pub enum CliError {
    #[error("{0}")]
    Definitions(#[from] FactoryErrors),
    #[error("{0}")]
    Graph(#[from] GraphErrors),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    State(#[from] JournalError),
    #[error("--slurm: {0}")]
    Slurm(#[from] crate::pool::slurm::SlurmError),
    #[error("no recorded run in {}: run `pexen run --state {}` first", .0.display(), .0.display())]
    NoRecordedRun(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[cfg(feature = "serve")]
    #[error("{0}")]
    Serve(#[from] crate::serve::ServeError),
}

impl From<EngineError> for CliError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Definitions(e) => CliError::Definitions(e),
            EngineError::Graph(e) => CliError::Graph(e),
            EngineError::Usage(m) => CliError::Usage(m),
            EngineError::State(e) => CliError::State(e),
            EngineError::Write { path, source } => CliError::Write { path, source },
        }
    }
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Definitions(_)
            | CliError::Graph(_)
            | CliError::Usage(_)
            | CliError::Slurm(_) => exit_code::BAD_INPUT,
            CliError::State(_) | CliError::NoRecordedRun(_) => exit_code::BAD_STATE,
            CliError::Write { .. } => exit_code::TASK_FAILED,
            #[cfg(feature = "serve")]
            CliError::Serve(_) => exit_code::BAD_INPUT,
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
        Command::Run(a) => run::run(&a),
        Command::List(a) => list::list(&a),
        Command::Check(a) => check(&a.dir),
        Command::Graph(a) => graph::graph(&a.dir),
        Command::Report(a) => report::report(&a),
        #[cfg(feature = "serve")]
        Command::Serve(a) => serve::serve(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            e.exit_code()
        }
    }
}

/// Runs the process's command line and returns the exit code.
pub fn main() -> i32 {
    main_with_args(std::env::args_os())
}

/// Loads a tree, printing nothing.
fn load(dir: &std::path::Path) -> Result<TaskTree, CliError> {
    Ok(crate::engine::load(dir)?)
}

/// `pexen check`: definitions and graph, every problem at once.
fn check(dir: &std::path::Path) -> Result<i32, CliError> {
    let mut tree = load(dir)?;
    let (graph, warnings) = crate::graph::Graph::build(&tree.tasks, &tree.capacity)?;
    let tree_warnings = std::mem::take(&mut tree.warnings);
    // Freeing 10^5 tasks and their graph is about a tenth of `check` (benches/factory.rs): do it
    // on a thread of its own, which the process does not wait for when it exits.
    let count = tree.tasks.len();
    drop_in_background((graph, tree));
    let mut err = std::io::stderr().lock();
    for w in tree_warnings.iter().chain(&warnings) {
        let _ = writeln!(err, "warning: {w}");
    }
    let _ = writeln!(
        std::io::stdout(),
        "ok: {} task{} in {}",
        count,
        if count == 1 { "" } else { "s" },
        dir.display()
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
