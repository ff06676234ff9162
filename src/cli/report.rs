//! `pexen report`: rebuild the JUnit report of the last recorded run from the journal alone.

use super::args::ReportArgs;
use super::CliError;
use crate::error::exit_code;
use crate::report::junit::write_junit;
use crate::report::record::TaskRecord;
use crate::state::journal::{Journal, JournalEntry};

pub(super) fn report(args: &ReportArgs) -> Result<i32, CliError> {
    let loaded = Journal::load(&args.state)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    // The last run: everything after the last `run-started`.
    let start = loaded
        .entries
        .iter()
        .rposition(|e| matches!(e, JournalEntry::RunStarted { .. }))
        .ok_or_else(|| CliError::NoRecordedRun(args.state.clone()))?;
    let mut records: Vec<TaskRecord> = Vec::new();
    let mut duration = None;
    for e in &loaded.entries[start..] {
        match e {
            JournalEntry::TaskFinished(r) => records.push((**r).clone()),
            JournalEntry::RunFinished(summary) => duration = Some(summary.duration_s),
            JournalEntry::RunStarted { .. } | JournalEntry::TaskSubmitted { .. } => {}
        }
    }
    // A run cut short (kill -9) has no summary: its length is the sum of what was recorded.
    let duration = duration.unwrap_or_else(|| records.iter().map(|r| r.duration_s).sum());
    write_junit(&args.junit, &records, duration).map_err(|source| CliError::Write {
        path: args.junit.clone(),
        source,
    })?;
    Ok(exit_code::OK)
}
