//! The `pexen` command line: parse, load the tree, run, report. The binary only maps what
//! [`main`] returns to the process exit code.

pub mod args;
mod graph;
mod list;
mod report;
mod run;
mod select;
mod slurm;

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use thiserror::Error;

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
        Command::Worker(a) => worker(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            e.exit_code()
        }
    }
}

/// `pexen worker`: serve a scheduler over stdin/stdout, or check an uploaded binary.
fn worker(args: &args::WorkerArgs) -> Result<i32, CliError> {
    if let Some(hash) = &args.verify {
        return Ok(i32::from(!crate::host::serve::verify(hash)));
    }
    if let Some(addr) = &args.listen {
        let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.client_ca)
        else {
            return Err(CliError::Usage(
                "--listen needs --tls-cert, --tls-key and --client-ca".into(),
            ));
        };
        let files = crate::host::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        };
        // Loopback unless an address is given.
        let addr = if addr.contains(':') {
            addr.clone()
        } else {
            format!("127.0.0.1:{addr}")
        };
        let result = crate::host::tls::listen(&addr, &files, args.jobs.map(|j| j as usize), |a| {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "pexen worker listening on {a}");
            let _ = out.flush();
        });
        return match result {
            Ok(()) => Ok(exit_code::OK),
            Err(e) => Err(CliError::Usage(crate::error::error_chain(&e))),
        };
    }
    if !args.stdio {
        return Err(CliError::Usage(
            "pexen worker needs --stdio (started by pexen over ssh) or --listen ADDR".into(),
        ));
    }
    match crate::host::serve::serve_stdio(args.groups_file.clone(), args.binary_hash.clone()) {
        Ok(()) => Ok(exit_code::OK),
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "pexen worker: {}",
                crate::error::error_chain(&e)
            );
            Ok(exit_code::TASK_FAILED)
        }
    }
}

/// Runs the process's command line and returns the exit code.
pub fn main() -> i32 {
    main_with_args(std::env::args_os())
}

/// Loads a tree, printing nothing.
fn load(dir: &std::path::Path) -> Result<TaskTree, CliError> {
    if !dir.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is not a directory of tasks",
            dir.display()
        )));
    }
    Ok(crate::factory::load(dir)?)
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
