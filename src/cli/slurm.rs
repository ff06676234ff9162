//! `pexen run --slurm`: the Slurm settings of a run, from the arguments and the journal.

use super::args::RunArgs;
use super::CliError;
use crate::pool::slurm::workers::cancel_leftover_workers;
use crate::pool::slurm::{cancel_jobs, check_shared, other_nodes, SlurmConfig};
use crate::sched::SchedulerBuilder;
use crate::state::RunJournal;

/// Adds the Slurm executor to `builder` with `--slurm`: checks that the tree and the state
/// directory are shared with the nodes, cancels jobs of an earlier run that nobody will collect,
/// and hands over those to re-attach to. Without `--slurm`, warns about jobs an interrupted
/// Slurm run left behind.
pub(super) fn configure(
    builder: SchedulerBuilder,
    args: &RunArgs,
    journal: &RunJournal,
) -> Result<SchedulerBuilder, CliError> {
    let pending = journal.jobs_to_reattach();
    // Pilot workers of an earlier run that pexen could not end (it was killed): they serve a
    // controller that is gone. Cancelled whatever this run does.
    let slurm_dir = args.state.join("slurm");
    let leftover = cancel_leftover_workers(&slurm_dir, &SlurmConfig::new(&slurm_dir))?;
    if !leftover.is_empty() {
        eprintln!(
            "note: cancelled {} pilot worker job(s) of the earlier run: {}",
            leftover.len(),
            leftover.join(" ")
        );
    }
    if !args.slurm {
        if !pending.is_empty() {
            eprintln!(
                "warning: {} Slurm job(s) of the interrupted run may still be running \
                 (job {}); resume with --slurm to collect them instead of running their tasks again",
                pending.len(),
                pending[0].job
            );
        }
        return Ok(builder);
    }
    std::fs::create_dir_all(&args.state).map_err(|source| CliError::Write {
        path: args.state.clone(),
        source,
    })?;
    if let Some(workers) = args.slurm_workers {
        return pilots(builder, args, journal, workers as usize);
    }
    check_shared(&[args.dir.as_path(), args.state.as_path()], "sinfo")?;
    let config = SlurmConfig::new(args.state.join("slurm"))
        .args(args.slurm_args.iter().cloned())
        .reattach(pending.iter().map(|j| (j.task.clone(), j.job.clone())));
    let stale: Vec<String> = journal.stale_jobs().iter().map(|j| j.job.clone()).collect();
    if !stale.is_empty() {
        eprintln!(
            "note: cancelling {} Slurm job(s) of the earlier run whose tasks changed or are not \
             run again: {}",
            stale.len(),
            stale.join(" ")
        );
        cancel_jobs(&config.scancel, &stale)?;
    }
    Ok(builder.slurm(config))
}

/// `--slurm-workers N`: command attempts go to N pilot workers, hosts of the run that are
/// Slurm jobs connected back to it (see `host::pilot`). Jobs of an earlier job-per-attempt run
/// that were to be re-attached are cancelled: their tasks run on the workers instead.
fn pilots(
    builder: SchedulerBuilder,
    args: &RunArgs,
    journal: &RunJournal,
    workers: usize,
) -> Result<SchedulerBuilder, CliError> {
    use crate::host::pilot::{is_loopback, PilotConfig, Pilots};
    let exe = std::env::current_exe().map_err(|source| CliError::Write {
        path: "the pexen executable".into(),
        source,
    })?;
    let exe_dir = exe.parent().unwrap_or(&exe).to_path_buf();
    // The workers run this very executable, from the shared filesystem.
    check_shared(
        &[args.dir.as_path(), args.state.as_path(), exe_dir.as_path()],
        "sinfo",
    )?;
    let listen = args
        .slurm_listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    if is_loopback(&listen) {
        let others = other_nodes("sinfo")?;
        if !others.is_empty() {
            return Err(CliError::Usage(format!(
                "pilot workers run on other machines ({}) and cannot reach {listen}: give \
                 --slurm-listen with an address of this machine that the nodes reach \
                 (`--slurm-listen 0.0.0.0`: every interface, workers connect to this \
                 machine's name)",
                others.join(", ")
            )));
        }
    }
    let slurm = SlurmConfig::new(args.state.join("slurm")).args(args.slurm_args.iter().cloned());
    let earlier: Vec<String> = journal
        .jobs_to_reattach()
        .iter()
        .chain(journal.stale_jobs())
        .map(|j| j.job.clone())
        .collect();
    if !earlier.is_empty() {
        eprintln!(
            "note: cancelling {} Slurm job(s) of the earlier run; their tasks run on the pilot \
             workers: {}",
            earlier.len(),
            earlier.join(" ")
        );
        cancel_jobs(&slurm.scancel, &earlier)?;
    }
    let tree = std::fs::canonicalize(&args.dir)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.dir.display())))?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| tree.clone());
    let pilots = Pilots::start(PilotConfig {
        workers,
        jobs: args.jobs.map_or(1, |j| j as usize),
        listen,
        slurm,
        cwd,
        exe: Some(exe),
        idle: Some(args.slurm_worker_idle).filter(|d| !d.is_zero()),
        tags: args.slurm_worker_tag.clone(),
    })
    .map_err(|e| {
        CliError::Usage(format!(
            "--slurm-workers: {}",
            crate::error::error_chain(&e)
        ))
    })?;
    Ok(builder.hosts(crate::host::HostsConfig {
        hosts: Vec::new(),
        no_local: true,
        tree: Some(tree),
        tls: None,
        pilots: Some(pilots),
        connecting: crate::host::Connecting::default(),
    }))
}
