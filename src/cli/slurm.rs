//! `pexen run --slurm`: the Slurm settings of a run, from the arguments and the journal.

use super::args::RunArgs;
use super::CliError;
use crate::pool::slurm::{cancel_jobs, check_shared, SlurmConfig};
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
