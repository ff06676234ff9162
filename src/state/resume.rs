//! The resume decision: which tasks `--resume` takes from the journal and which run again, and
//! why (SPEC section 6).
//!
//! A task is resumed when the latest journal record with its name ended `pass`/`warn`/`skip`
//! and carries the task's current fingerprint. Later records supersede earlier ones, since a
//! resumed run appends its own records (resumed ones included) to the same journal.

use rustc_hash::FxHashMap as HashMap;
use std::fmt;

use crate::report::record::TaskRecord;
use crate::state::fingerprint::Fingerprint;
use crate::state::journal::LoadedJournal;
use crate::task::{Outcome, Task, TaskName};

/// Why a task runs again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The journal has no record of it.
    NotRecorded,
    /// Its last recorded outcome was not a success.
    LastOutcome(Outcome),
    /// It was skipped by the scheduler without running (a provider failed, fail-fast, an
    /// interrupt): a `skip` with a cause records no result of the task itself.
    NotRun(String),
    /// Its record has no fingerprint (written by an embedder that did not compute one).
    NoFingerprint,
    DefinitionChanged,
    ProgramChanged,
    InputsChanged,
    /// A provider of one of its required tokens has a new fingerprint.
    ProviderChanged(TaskName),
    /// The set of its providers changed (a provider added, removed or renamed).
    ProvidersChanged,
    /// It suspended the last run (SPEC section 12): it runs first.
    Suspended,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotRecorded => f.write_str("not recorded"),
            Reason::LastOutcome(o) => write!(f, "last outcome was {o}"),
            Reason::NotRun(cause) => write!(f, "skipped without running last time: {cause}"),
            Reason::NoFingerprint => f.write_str("recorded without a fingerprint"),
            Reason::DefinitionChanged => f.write_str("definition changed"),
            Reason::ProgramChanged => f.write_str("program changed"),
            Reason::InputsChanged => f.write_str("inputs changed"),
            Reason::ProviderChanged(p) => write!(f, "provider {p} changed"),
            Reason::ProvidersChanged => f.write_str("providers changed"),
            Reason::Suspended => f.write_str("it suspended the last run; it runs first"),
        }
    }
}

/// What `--resume` does with one task.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Report this recorded result (with `resumed: true`) and restore its exports.
    Resume(Box<TaskRecord>),
    /// Run the task, for this reason.
    Run(Reason),
}

/// What resuming decided for one task, as data: see [`crate::state::RunJournal::decisions`].
/// Displayed, it is the line `pexen run --explain` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub task: TaskName,
    pub verdict: Verdict,
    /// The task runs and finds something in its checkpoint directory (SPEC section 12).
    pub checkpoint: bool,
}

/// Whether a task is taken from the journal or runs again, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Unchanged since its last record, which ended with this outcome: not run again.
    Resume { last: Outcome },
    /// Runs again, for this reason.
    Run(Reason),
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verdict {
            Verdict::Resume { last } => {
                write!(f, "resume {}: unchanged, last ended {last}", self.task)
            }
            Verdict::Run(reason) => {
                write!(f, "run {}: {reason}", self.task)?;
                if self.checkpoint {
                    f.write_str("; resumes from its checkpoint")?;
                }
                Ok(())
            }
        }
    }
}

/// One decision per task, in the order of `tasks`; `fingerprints[i]` belongs to `tasks[i]`.
pub fn decide(
    tasks: &[Task],
    fingerprints: &[Fingerprint],
    loaded: &LoadedJournal,
) -> Vec<Decision> {
    assert_eq!(tasks.len(), fingerprints.len(), "one fingerprint per task");
    let mut latest: HashMap<&str, &TaskRecord> =
        HashMap::with_capacity_and_hasher(tasks.len(), rustc_hash::FxBuildHasher);
    for r in loaded.records() {
        latest.insert(r.name.as_str(), r);
    }
    // The latest record of each task, found once: the provider check below reuses it.
    let recorded: Vec<Option<&TaskRecord>> = tasks
        .iter()
        .map(|t| latest.get(t.name.as_str()).copied())
        .collect();
    // Computed once for all tasks: the provider check below asks it of many tasks' providers.
    let same: Vec<bool> = recorded
        .iter()
        .zip(fingerprints)
        .map(|(r, fp)| r.and_then(|r| r.fingerprint) == Some(*fp))
        .collect();
    let unchanged = |i: usize| same[i];
    // Built only when a provider component changed: most resumes never need it.
    let mut providers: Option<HashMap<&str, Vec<usize>>> = None;
    let mut out = Vec::with_capacity(tasks.len());
    for (i, (task, fp)) in tasks.iter().zip(fingerprints).enumerate() {
        let Some(rec) = recorded[i] else {
            out.push(Decision::Run(Reason::NotRecorded));
            continue;
        };
        if rec.suspended {
            out.push(Decision::Run(Reason::Suspended));
            continue;
        }
        if !rec.outcome.is_success() {
            out.push(Decision::Run(Reason::LastOutcome(rec.outcome)));
            continue;
        }
        if let Some(cause) = &rec.cause {
            out.push(Decision::Run(Reason::NotRun(cause.clone())));
            continue;
        }
        let Some(old) = rec.fingerprint else {
            out.push(Decision::Run(Reason::NoFingerprint));
            continue;
        };
        let reason = if old.definition != fp.definition {
            Reason::DefinitionChanged
        } else if old.program != fp.program {
            Reason::ProgramChanged
        } else if old.inputs != fp.inputs {
            Reason::InputsChanged
        } else if old.providers != fp.providers {
            let map = providers.get_or_insert_with(|| provider_map(tasks));
            changed_provider(task, map, &unchanged).map_or(Reason::ProvidersChanged, |p| {
                Reason::ProviderChanged(tasks[p].name.clone())
            })
        } else {
            let mut resumed = Box::new(rec.clone());
            resumed.resumed = true;
            out.push(Decision::Resume(resumed));
            continue;
        };
        out.push(Decision::Run(reason));
    }
    out
}

fn provider_map(tasks: &[Task]) -> HashMap<&str, Vec<usize>> {
    let mut map: HashMap<&str, Vec<usize>> = HashMap::default();
    for (i, t) in tasks.iter().enumerate() {
        for token in &t.meta.provides {
            map.entry(token.as_str()).or_default().push(i);
        }
    }
    map
}

/// The first provider of `task` (tokens in the order it requires them, providers in definition
/// order) whose current fingerprint differs from its latest record's, or that has no record.
fn changed_provider(
    task: &Task,
    providers: &HashMap<&str, Vec<usize>>,
    unchanged: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    task.meta
        .requires
        .iter()
        .flat_map(|tok| providers.get(tok.as_str()).into_iter().flatten())
        .copied()
        .find(|&p| !unchanged(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::fingerprint::fingerprints;
    use crate::state::journal::JournalEntry;

    fn journal(records: Vec<TaskRecord>) -> LoadedJournal {
        LoadedJournal {
            entries: records
                .into_iter()
                .map(|r| JournalEntry::TaskFinished(Box::new(r)))
                .collect(),
            ..LoadedJournal::default()
        }
    }

    fn rec(name: &str, outcome: Outcome, fp: Fingerprint) -> TaskRecord {
        let mut r = TaskRecord::new(name, outcome);
        r.fingerprint = Some(fp);
        r
    }

    fn tree(lib_timeout: u64) -> Vec<Task> {
        vec![
            Task::closure("build/lib", |_| Ok(()))
                .provides(["lib"])
                .timeout(std::time::Duration::from_secs(lib_timeout)),
            Task::closure("build/app", |_| Ok(()))
                .requires(["lib"])
                .provides(["app"]),
            Task::closure("test/app", |_| Ok(())).requires(["app"]),
            Task::closure("test/other", |_| Ok(())),
        ]
    }

    #[test]
    fn reasons_name_what_changed() {
        let old_tasks = tree(10);
        let old = fingerprints(&old_tasks);
        let mut recs: Vec<TaskRecord> = old_tasks
            .iter()
            .zip(&old)
            .map(|(t, f)| rec(t.name.as_str(), Outcome::Pass, *f))
            .collect();
        recs[3].outcome = Outcome::Fail;
        let loaded = journal(recs);

        // Nothing changed: everything but the failed task resumes.
        let d = decide(&old_tasks, &old, &loaded);
        assert!(
            matches!(&d[0], Decision::Resume(r) if r.resumed && r.name.as_str() == "build/lib")
        );
        assert!(matches!(d[1], Decision::Resume(_)));
        assert!(matches!(d[2], Decision::Resume(_)));
        assert_eq!(d[3], Decision::Run(Reason::LastOutcome(Outcome::Fail)));

        // The root's definition changed: it and everything downstream rerun, each naming why.
        let new_tasks = tree(20);
        let new = fingerprints(&new_tasks);
        let d = decide(&new_tasks, &new, &loaded);
        let reasons: Vec<String> = d
            .iter()
            .map(|d| match d {
                Decision::Run(r) => r.to_string(),
                Decision::Resume(_) => "resume".into(),
            })
            .collect();
        assert_eq!(
            reasons,
            [
                "definition changed",
                "provider build/lib changed",
                "provider build/app changed",
                "last outcome was fail"
            ]
        );
    }

    #[test]
    fn latest_record_wins_and_unrecorded_tasks_run() {
        let tasks = tree(10);
        let fps = fingerprints(&tasks);
        let loaded = journal(vec![
            rec("build/lib", Outcome::Fail, fps[0]),
            rec("build/lib", Outcome::Pass, fps[0]),
            rec("build/app", Outcome::Pass, fps[1]),
            rec("build/app", Outcome::Timeout, fps[1]),
            TaskRecord::new("test/app", Outcome::Pass),
        ]);
        let d = decide(&tasks, &fps, &loaded);
        assert!(matches!(d[0], Decision::Resume(_)));
        assert_eq!(d[1], Decision::Run(Reason::LastOutcome(Outcome::Timeout)));
        assert_eq!(d[2], Decision::Run(Reason::NoFingerprint));
        assert_eq!(d[3], Decision::Run(Reason::NotRecorded));
    }

    #[test]
    fn a_suspended_task_runs_whatever_its_fingerprint() {
        let tasks = tree(10);
        let fps = fingerprints(&tasks);
        let mut suspended = rec("build/lib", Outcome::Skip, fps[0]);
        suspended.suspended = true;
        suspended.cause = Some("suspended (exit code 75): continue the run with --resume".into());
        let d = decide(&tasks, &fps, &journal(vec![suspended]));
        assert_eq!(d[0], Decision::Run(Reason::Suspended));
        assert_eq!(
            Reason::Suspended.to_string(),
            "it suspended the last run; it runs first"
        );
    }

    #[test]
    fn a_new_provider_is_a_providers_change() {
        let mut tasks = tree(10);
        let fps = fingerprints(&tasks);
        let loaded = journal(
            tasks
                .iter()
                .zip(&fps)
                .map(|(t, f)| rec(t.name.as_str(), Outcome::Pass, *f))
                .collect(),
        );
        tasks.push(Task::closure("build/lib2", |_| Ok(())).provides(["lib"]));
        let fps = fingerprints(&tasks);
        let d = decide(&tasks, &fps, &loaded);
        assert!(matches!(d[0], Decision::Resume(_)));
        assert_eq!(
            d[1],
            Decision::Run(Reason::ProviderChanged("build/lib2".into()))
        );
        assert_eq!(d[4], Decision::Run(Reason::NotRecorded));
    }
}
