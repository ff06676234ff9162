//! Checks that need the file system but run nothing, done by `check` and before `run`:
//! `inputs` patterns that match no file (a typo there hides changes from `--resume`), and a
//! program or `cwd` that does not exist for a task that no other task runs before (nothing
//! can create it first, so the task would end as `error`). Each is a warning: the tree is
//! valid, but probably not what was meant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::state::fingerprint::input_glob_options;
use crate::task::{Run, Task, Work};

/// The warnings for `tasks`, in task order.
pub(super) fn warnings(tasks: &[Task]) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs: HashMap<PathBuf, bool> = HashMap::new();
    for t in tasks {
        let Work::Command(spec) = &t.work else {
            continue;
        };
        let cwd = spec.cwd.clone().unwrap_or_else(|| PathBuf::from("."));
        let cwd_ok = *dirs.entry(cwd.clone()).or_insert_with(|| cwd.is_dir());
        let first = t.meta.requires.is_empty();
        if !cwd_ok && first {
            out.push(format!(
                "task `{}`: working directory {} does not exist, and no task runs before it",
                t.name,
                cwd.display()
            ));
            continue;
        }
        if let Run::Cmd(argv) = &spec.run {
            let program = argv.first().map(String::as_str).unwrap_or_default();
            if first && spec.program.is_none() && program.contains('/') {
                let path = cwd.join(program);
                if !path.exists() {
                    out.push(format!(
                        "task `{}`: program {program} does not exist in {}, and no task runs \
                         before it",
                        t.name,
                        cwd.display()
                    ));
                }
            }
        }
        for pattern in &t.meta.more.inputs {
            if !matches_a_file(&cwd, pattern) {
                out.push(format!(
                    "task `{}`: `inputs` pattern `{pattern}` matches no file in {}",
                    t.name,
                    cwd.display()
                ));
            }
        }
    }
    out
}

fn matches_a_file(base: &Path, pattern: &str) -> bool {
    let full = base.join(pattern);
    match glob::glob_with(&full.to_string_lossy(), input_glob_options()) {
        Ok(mut paths) => paths.any(|p| p.is_ok()),
        // Not a valid glob: then it names a file literally.
        Err(_) => full.exists(),
    }
}
