//! `pexen report`: rebuild the JUnit report of the last recorded run from the journal alone.

use std::collections::HashSet;
use std::io::Write;

use super::args::ReportArgs;
use super::CliError;
use crate::error::exit_code;
use crate::report::junit::write_junit;
use crate::report::record::TaskRecord;
use crate::state::journal::{Journal, JournalEntry};
use crate::task::Outcome;

pub(super) fn report(args: &ReportArgs) -> Result<i32, CliError> {
    let loaded = Journal::load(&args.state)?;
    for w in &loaded.warnings {
        let _ = writeln!(std::io::stderr(), "warning: {w}");
    }
    // The last run: everything after the last `run-started`.
    let start = loaded
        .entries
        .iter()
        .rposition(|e| matches!(e, JournalEntry::RunStarted { .. }))
        .ok_or_else(|| CliError::NoRecordedRun(args.state.clone()))?;
    let mut records: Vec<TaskRecord> = Vec::new();
    let mut duration = None;
    let mut planned: &[String] = &[];
    let mut planned_count = 0;
    for e in &loaded.entries[start..] {
        match e {
            JournalEntry::TaskFinished(r) => records.push((**r).clone()),
            JournalEntry::RunFinished(summary) => duration = Some(summary.duration_s),
            JournalEntry::RunStarted { names, tasks, .. } => {
                planned = names;
                planned_count = *tasks;
            }
            JournalEntry::TaskSubmitted { .. } => {}
        }
    }
    let complete = duration.is_some();
    if !complete {
        // A run cut short (kill -9, power loss): not a green report of what happened to be
        // recorded. Every selected task without a record is an error, "not run".
        let recorded: HashSet<&str> = records.iter().map(|r| r.name.as_str()).collect();
        let missing: Vec<TaskRecord> = planned
            .iter()
            .filter(|n| !recorded.contains(n.as_str()))
            .map(|n| {
                let mut r = TaskRecord::new(n.as_str(), Outcome::Error);
                r.attempt = 0;
                r.message = Some(NOT_RUN.to_owned());
                r
            })
            .collect();
        let unrecorded = planned_count.saturating_sub(records.len());
        let _ = writeln!(
            std::io::stderr(),
            "warning: the last run recorded in {} did not finish (pexen was killed?): \
             {unrecorded} of {planned_count} tasks have no record{}",
            args.state.display(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(
                    " and are reported as errors, not run: {}",
                    missing
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        records.extend(missing);
    }
    // A run cut short has no summary: its length is the sum of what was recorded.
    let duration = duration.unwrap_or_else(|| records.iter().map(|r| r.duration_s).sum());
    write_junit(&args.junit, &records, duration).map_err(|source| CliError::Write {
        path: args.junit.clone(),
        source,
    })?;
    Ok(if complete {
        exit_code::OK
    } else {
        exit_code::TASK_FAILED
    })
}

/// The message of a task that a run cut short never finished.
const NOT_RUN: &str = "not run: the run ended before this task finished (pexen was killed?)";
