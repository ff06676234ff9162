//! Metadata layers: `_dir.ron` defaults merged down the tree, then a task's own fields on top.
//!
//! Merge rule, the same at every level: lists are appended (the parent's items first), maps are
//! merged (the deeper level wins a key), scalars are overridden by the deeper level.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::FactoryError;
use super::ron::{Common, Source};
use crate::condition::Condition;
use crate::task::{CommandSpec, Meta, MoreMeta, OnFailure, Run, Task, TaskName, Token};

/// The metadata a level of the tree contributes, with durations parsed and `cwd` absolute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Layer {
    pub(crate) requires: Vec<String>,
    pub(crate) provides: Vec<String>,
    pub(crate) claims: Vec<String>,
    pub(crate) uses: Vec<String>,
    pub(crate) slots: BTreeMap<String, u32>,
    pub(crate) priority: Option<i32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: Option<u32>,
    pub(crate) on_failure: Option<OnFailure>,
    pub(crate) tags: Vec<String>,
    pub(crate) inputs: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) group: Option<String>,
    /// Conditions of every level (all must hold), each with its file's directory.
    pub(crate) when: Vec<Condition>,
    pub(crate) slurm_args: Vec<String>,
    pub(crate) outputs: Vec<String>,
    pub(crate) host_tags: Vec<String>,
}

impl Layer {
    /// Checks and converts the fields of the definition in `src.text[range]`; a relative `cwd`
    /// is taken from `dir`, the directory of the file.
    pub(crate) fn resolve(
        common: Common,
        src: &Source<'_>,
        range: Range<usize>,
        dir: &Path,
    ) -> Result<Layer, FactoryError> {
        let when = match common.when {
            None => Vec::new(),
            Some(w) => {
                let c = Condition {
                    os: w.os,
                    arch: w.arch,
                    env: w.env,
                    exists: w.exists,
                    command: w.command,
                    dir: Some(dir.to_path_buf()),
                };
                if let Some(problem) = c.problems().into_iter().next() {
                    return Err(FactoryError::BadCondition {
                        location: src.field_location(range, "when", true),
                        problem,
                    });
                }
                vec![c]
            }
        };
        let timeout = match common.timeout {
            None => None,
            Some(value) => match humantime::parse_duration(&value) {
                Ok(d) if d.is_zero() => {
                    return Err(FactoryError::ZeroTimeout {
                        location: src.field_location(range, "timeout", true),
                        value,
                    })
                }
                Ok(d) if d > crate::task::MAX_TIMEOUT => {
                    return Err(FactoryError::TimeoutTooLong {
                        location: src.field_location(range, "timeout", true),
                        value,
                    })
                }
                Ok(d) => Some(d),
                Err(source) => {
                    return Err(FactoryError::BadDuration {
                        location: src.field_location(range, "timeout", true),
                        value,
                        source,
                    })
                }
            },
        };
        Ok(Layer {
            requires: common.requires,
            provides: common.provides,
            claims: common.claims,
            uses: common.uses,
            slots: common.slots,
            priority: common.priority,
            timeout,
            retries: common.retries,
            on_failure: common.on_failure,
            tags: common.tags,
            inputs: common.inputs,
            env: common.env,
            cwd: common.cwd.map(|c| dir.join(c)),
            group: common.group,
            when,
            slurm_args: common.slurm_args,
            outputs: common.outputs,
            host_tags: common.host_tags,
        })
    }

    /// `self` (the parent) with `child` merged on top.
    pub(crate) fn merged(&self, child: Layer) -> Layer {
        fn append<T: Clone>(parent: &[T], child: Vec<T>) -> Vec<T> {
            if parent.is_empty() {
                return child;
            }
            let mut all = parent.to_vec();
            all.extend(child);
            all
        }
        fn merge<V: Clone>(
            parent: &BTreeMap<String, V>,
            child: BTreeMap<String, V>,
        ) -> BTreeMap<String, V> {
            if parent.is_empty() {
                return child;
            }
            let mut all = parent.clone();
            all.extend(child);
            all
        }
        Layer {
            requires: append(&self.requires, child.requires),
            provides: append(&self.provides, child.provides),
            claims: append(&self.claims, child.claims),
            uses: append(&self.uses, child.uses),
            slots: merge(&self.slots, child.slots),
            priority: child.priority.or(self.priority),
            timeout: child.timeout.or(self.timeout),
            retries: child.retries.or(self.retries),
            on_failure: child.on_failure.or(self.on_failure),
            tags: append(&self.tags, child.tags),
            inputs: append(&self.inputs, child.inputs),
            env: merge(&self.env, child.env),
            cwd: child.cwd.or_else(|| self.cwd.clone()),
            group: child.group.or_else(|| self.group.clone()),
            when: append(&self.when, child.when),
            slurm_args: append(&self.slurm_args, child.slurm_args),
            outputs: append(&self.outputs, child.outputs),
            host_tags: append(&self.host_tags, child.host_tags),
        }
    }

    /// A command task from this (fully merged) layer. `dir` is the directory of the file that
    /// defines the task: the working directory unless `cwd` says otherwise.
    pub(crate) fn into_task(self, name: TaskName, mut run: Run, dir: &Path, root: &Path) -> Task {
        let cwd = self.cwd.unwrap_or_else(|| dir.to_path_buf());
        let program = match &mut run {
            Run::Cmd(argv) => {
                let program = tree_program(&argv[0], &cwd, root);
                // Absolute, so that it runs whether the spawner resolves a relative program
                // against the parent's or the child's working directory (std leaves it open).
                if let Some(path) = &program {
                    argv[0] = path.to_string_lossy().into_owned();
                }
                program
            }
            Run::Shell(_) => None,
        };
        let more = MoreMeta {
            slots: self.slots,
            timeout: self.timeout,
            retries: self.retries.unwrap_or(0),
            on_failure: self.on_failure.unwrap_or_default(),
            tags: self.tags.into(),
            inputs: self.inputs.into(),
            pool: None,
            version: None,
            group: self.group.map(String::into_boxed_str),
            when: self.when.into(),
            outputs: self.outputs.into(),
            host_tags: self.host_tags.into(),
        };
        let meta = Meta {
            requires: self.requires.into_iter().map(Token::from).collect(),
            provides: self.provides.into_iter().map(Token::from).collect(),
            claims: self.claims.into_iter().map(Token::from).collect(),
            uses: self.uses.into_iter().map(Token::from).collect(),
            priority: self.priority.unwrap_or(0),
            more: more.into(),
        };
        let spec = CommandSpec {
            run,
            env: self.env,
            cwd: Some(cwd),
            program,
            slurm_args: self.slurm_args,
        };
        Task {
            name,
            meta,
            work: crate::task::Work::Command(Arc::new(spec)),
        }
    }
}

/// The file a `Cmd` program names when it is a path (`./x`, `sub/x`) to a file inside the tree:
/// recorded so that its content is part of the task's fingerprint. Bare names (`make`) are
/// looked up in `PATH` at run time and are not part of the tree.
fn tree_program(program: &str, cwd: &Path, root: &Path) -> Option<PathBuf> {
    // Most programs are bare names or absolute paths outside the tree: decide those without
    // allocating, as this runs once per task.
    if !program.contains('/') || (program.starts_with('/') && !Path::new(program).starts_with(root))
    {
        return None;
    }
    let path = normalize(&cwd.join(program));
    (path.starts_with(root) && path.is_file()).then_some(path)
}

/// Removes `.` and `..` components without touching the file system (links stay as written,
/// like the task names do).
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
