//! The factory: a directory tree of task definitions -> [`Task`]s (SPEC section 2).
//!
//! [`load`] walks the tree (`walk`), reading `_dir.ron` defaults on the way, then reads and
//! parses the task files in parallel (`ron`) and applies the defaults (`defaults`). Output
//! order is the walk order whatever the parallelism, and every problem of every file is
//! collected into one [`FactoryErrors`].
//!
//! ```no_run
//! let tree = pexen::factory::load("factories/demo".as_ref()).unwrap();
//! for task in &tree.tasks {
//!     println!("{} requires {:?}", task.name, task.meta.requires);
//! }
//! ```

mod defaults;
mod error;
mod fast;
#[cfg(test)]
mod fuzz_tests;
pub mod generator;
mod ron;
mod scan;
#[cfg(test)]
mod tests;
mod walk;

use std::collections::BTreeMap;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub(crate) use self::defaults::normalize as normalize_path;
use self::defaults::{normalize, Layer};
pub use self::error::{FactoryError, FactoryErrors, Location};
use self::ron::{OrderedMap, Source, TaskDef};
use self::scan::split_map;
pub(crate) use self::walk::Ignores;
use self::walk::{Found, Item, Kind};
use crate::sched::Group;
use crate::task::{Run, Task, TaskName};

/// The tasks defined by a directory tree.
#[derive(Debug, Clone)]
pub struct TaskTree {
    /// The tree's root, absolute.
    pub root: PathBuf,
    /// Every task, in walk order (the definition order that breaks priority ties).
    pub tasks: Vec<Task>,
    /// Slot capacities declared by the root `_dir.ron` (`capacity: {"gpu": 2}`).
    pub capacity: BTreeMap<String, u32>,
    /// Exclusivity groups declared by the root `_dir.ron` (`groups: {"vm": (jobs: 2)}`).
    pub groups: BTreeMap<String, Group>,
    /// Virtual tokens declared by the root `_dir.ron` (`virtual: ["mta"]`).
    pub virtuals: Vec<String>,
    /// Problems that stop nothing (a group declared but unused), with their file:line:col.
    pub warnings: Vec<String>,
    /// Where each task is defined (several places for a name defined more than once), so that
    /// graph problems can name a file, line and column.
    pub sources: HashMap<TaskName, Vec<Location>>,
    /// Entries of the tree skipped because a `.gitignore` in the tree excludes them.
    pub ignored: usize,
}

/// Loads the task tree at `root`, or reports every definition problem in it.
pub fn load(root: &Path) -> Result<TaskTree, FactoryErrors> {
    let (tree, errors) = load_partial(root);
    if errors.is_empty() {
        Ok(tree)
    } else {
        Err(FactoryErrors(errors))
    }
}

/// Loads what can be loaded of the tree at `root`: the tasks whose definitions are valid, and
/// every problem found in the others (so that a checker can also validate the graph of the
/// valid ones).
pub fn load_partial(root: &Path) -> (TaskTree, Vec<FactoryError>) {
    let abs = match std::path::absolute(root) {
        Ok(abs) => normalize(&abs),
        Err(source) => {
            let tree = TaskTree {
                root: root.to_path_buf(),
                tasks: Vec::new(),
                capacity: BTreeMap::new(),
                groups: BTreeMap::new(),
                virtuals: Vec::new(),
                warnings: Vec::new(),
                sources: HashMap::new(),
                ignored: 0,
            };
            let io = FactoryError::Io {
                path: root.to_path_buf(),
                source,
            };
            return (tree, vec![io]);
        }
    };
    let mut walk = walk::walk(&abs, root);
    let groups = std::mem::take(&mut walk.groups);
    let loaded: Vec<Vec<Result<(Task, Location), FactoryError>>> = walk
        .items
        .into_par_iter()
        .map(|item| match item {
            Item::Found(found) => load_file(found, &abs, root, &groups),
            Item::Error(e) => vec![Err(e)],
        })
        .collect();
    let mut tasks = Vec::with_capacity(loaded.len());
    let mut sources: HashMap<TaskName, Vec<Location>> = HashMap::with_capacity(loaded.len());
    let mut errors = Vec::new();
    for result in loaded.into_iter().flatten() {
        match result {
            Ok((task, at)) => {
                sources.entry(task.name.clone()).or_default().push(at);
                tasks.push(task);
            }
            Err(e) => errors.push(e),
        }
    }
    let mut warnings = Vec::new();
    if let Some(at) = &walk.groups_at {
        for name in groups.keys().filter(|g| !g.is_empty()) {
            if !tasks
                .iter()
                .any(|t| t.meta.more.group.as_deref() == Some(name.as_str()))
            {
                warnings.push(format!(
                    "{at}: group `{name}` is declared but no task belongs to it"
                ));
            }
        }
    }
    if let Some(at) = &walk.virtuals_at {
        for token in &walk.virtuals {
            if !tasks
                .iter()
                .any(|t| t.meta.provides.iter().any(|p| p == token))
            {
                errors.push(FactoryError::VirtualWithoutProvider {
                    location: at.clone(),
                    token: token.clone(),
                });
            }
        }
    }
    let tree = TaskTree {
        root: abs,
        tasks,
        capacity: walk.capacity,
        groups,
        virtuals: walk.virtuals,
        warnings,
        sources,
        ignored: walk.ignored,
    };
    (tree, errors)
}

/// Loads the task or tasks of one file.
fn load_file(
    mut found: Found,
    root: &Path,
    shown_root: &Path,
    groups: &BTreeMap<String, Group>,
) -> Vec<Result<(Task, Location), FactoryError>> {
    let found = &mut found;
    let path = root.join(&found.rel);
    if let Some(handle) = found.generated.take() {
        let shown = shown_root.join(&found.rel);
        let (text, stderr) = match generator::output(handle, &shown) {
            Ok(out) => out,
            Err(e) => return vec![Err(e)],
        };
        let file = generator::output_name(&shown);
        let src = Source {
            file: &file,
            text: &text,
        };
        let mut loaded = load_map(found, root, &src, groups);
        if loaded.iter().any(Result::is_err) && !stderr.trim().is_empty() {
            loaded.push(Err(FactoryError::Generator {
                path: shown,
                problem: "printed invalid tasks (above)".to_string(),
                stderr,
            }));
        }
        return loaded;
    }
    let shown = shown_root.join(&found.rel);
    if found.kind == Kind::Executable {
        let layer = Layer::clone(&found.defaults);
        let argv = vec![path.to_string_lossy().into_owned()];
        let task = layer.into_task(
            TaskName::new(found.name()),
            Run::Cmd(argv),
            &found.dir,
            root,
        );
        let at = Location {
            file: shown,
            line: 1,
            col: 1,
        };
        return vec![Ok((task, at))];
    }
    let text = match read_text(&path, &shown) {
        Ok(text) => text,
        Err(e) => return vec![Err(e)],
    };
    let src = Source {
        file: &shown,
        text: &text,
    };
    if found.kind == Kind::Ron {
        let all = 0..text.len();
        let name = TaskName::new(found.name());
        let at = src.location(ron::skip_trivia(text.as_bytes(), 0));
        return vec![src
            .parse_task(all.clone())
            .and_then(|def| build(found, root, &src, all, name, def, groups))
            .map(|t| (t, at))];
    }
    load_map(found, root, &src, groups)
}

/// Reads a definition file. `fs::read_to_string` first asks for the file's size (one more system
/// call per file, a tenth of the cost of a 10^5-file tree); definitions are small, so read into a
/// buffer that usually fits them instead.
///
/// Text that is not UTF-8 is an error at the line and column of its first bad byte.
pub(crate) fn read_text(path: &Path, shown: &Path) -> Result<String, FactoryError> {
    use std::io::Read;
    let io = |source| FactoryError::Io {
        path: shown.to_owned(),
        source,
    };
    let mut bytes = Vec::with_capacity(4096);
    fs::File::open(path)
        .and_then(|f| f.take(u64::MAX).read_to_end(&mut bytes))
        .map_err(io)?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.into_bytes();
        // The prefix before `at` is valid UTF-8, so the usual location applies to it.
        let valid = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
        let src = ron::Source {
            file: shown,
            text: valid,
        };
        FactoryError::NotUtf8 {
            location: src.location(at),
            byte: bytes[at],
        }
    })
}

/// Loads a `.tasks.ron` map, its entries in parallel.
fn load_map(
    found: &Found,
    root: &Path,
    src: &Source<'_>,
    groups: &BTreeMap<String, Group>,
) -> Vec<Result<(Task, Location), FactoryError>> {
    let Some(entries) = split_map(src.text) else {
        // Not splittable: let `ron` parse it whole, which names the syntax error precisely.
        return match src.parse::<OrderedMap>(0..src.text.len()) {
            Err(e) => vec![Err(e)],
            Ok(OrderedMap(map)) => {
                let start = ron::skip_trivia(src.text.as_bytes(), 0);
                let mut seen = HashSet::new();
                let checked: Vec<_> = map
                    .iter()
                    .map(|(key, _)| check_key(src, key, start, &mut seen))
                    .collect();
                map.into_iter()
                    .zip(checked)
                    .map(|((key, def), checked)| {
                        checked?;
                        let name = TaskName::new(format!("{}/{key}", found.name()));
                        build(found, root, src, start..src.text.len(), name, def, groups)
                            .map(|t| (t, src.location(start)))
                    })
                    .collect()
            }
        };
    };
    // Where each entry is, in one pass over the text (entries are in file order).
    let at = src.locations(entries.iter().map(|e| e.key_at));
    // Duplicates need the whole map, so keys are checked in order before the parallel part.
    let mut seen = HashSet::with_capacity(entries.len());
    let checked: Vec<_> = entries
        .iter()
        .map(|e| check_key(src, &e.key, e.key_at, &mut seen))
        .collect();
    entries
        .par_iter()
        .zip(checked)
        .zip(at)
        .map(|((entry, checked), at)| {
            checked?;
            let def = src.parse_task(entry.value.clone())?;
            let name = TaskName::new(format!("{}/{}", found.name(), entry.key));
            build(found, root, src, entry.value.clone(), name, def, groups).map(|t| (t, at))
        })
        .collect()
}

/// Checks the key of a `.tasks.ron` entry: a usable name, not seen before in the same file.
fn check_key<'a>(
    src: &Source<'_>,
    key: &'a str,
    key_at: usize,
    seen: &mut HashSet<&'a str>,
) -> Result<(), FactoryError> {
    let reason = if key.is_empty() {
        Some("it is empty")
    } else if key.starts_with('/') || key.ends_with('/') {
        Some("it starts or ends with `/`")
    } else if key.contains("//") {
        Some("it contains `//`")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(FactoryError::BadName {
            location: src.location(key_at),
            name: key.to_owned(),
            reason,
        });
    }
    if !seen.insert(key) {
        return Err(FactoryError::DuplicateKey {
            location: src.location(key_at),
            name: key.to_owned(),
        });
    }
    Ok(())
}

/// A task from its parsed definition (the text `src.text[range]`) and its directory's defaults.
fn build(
    found: &Found,
    root: &Path,
    src: &Source<'_>,
    range: std::ops::Range<usize>,
    name: TaskName,
    mut def: TaskDef,
    groups: &BTreeMap<String, Group>,
) -> Result<Task, FactoryError> {
    walk::check_group(groups, def.group.as_deref(), src, range.clone())?;
    let empty = match &def.run {
        Run::Cmd(argv) => argv.first().is_none_or(|p| p.trim().is_empty()),
        Run::Shell(script) => script.trim().is_empty(),
    };
    if empty {
        return Err(FactoryError::EmptyRun {
            location: src.field_location(range, "run", true),
        });
    }
    let own = Layer::resolve(def.common(), src, range, &found.dir)?;
    Ok(found
        .defaults
        .merged(own)
        .into_task(name, def.run, &found.dir, root))
}
