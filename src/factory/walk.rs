//! The walk: which files of a tree are tasks, in a deterministic order, with their defaults.
//!
//! Entries of each directory are visited in byte-wise order of their names, depth first, so that
//! the same tree always yields the same task order (the tie-break for priorities). `_dir.ron`
//! files are read here, during the walk, because every task below needs its merged defaults;
//! task files are only listed, to be read and parsed in parallel afterwards.
//!
//! What a `.gitignore` inside the tree excludes is skipped, as git, ripgrep and fd do (the
//! `ignore` crate's matcher, a stack of one per directory that has the file): an executable
//! under an ignored `target/` is a build product, not a task. The walk counts what it skipped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::defaults::Layer;
use super::error::{FactoryError, Location};
use super::ron::{DirDef, Source};
use crate::pool::limited::Ended;
use crate::sched::Group;

/// The name of the defaults file of a directory.
pub(crate) const DIR_FILE: &str = "_dir.ron";

/// What a task file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `NAME.ron`: one task.
    Ron,
    /// `NAME.tasks.ron`: a map of tasks.
    TasksRon,
    /// Any other executable file: a task running it.
    Executable,
    /// An executable `NAME.gen`: a generator, whose output is a `.tasks.ron` map.
    Generator,
}

/// A task file found by the walk, with everything needed to load it independently. Kept small
/// (no per-file paths): the walk is sequential, so per-file work is left to the parallel part.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) kind: Kind,
    /// The file's path relative to the root (`net/tcp/connect.ron`).
    pub(crate) rel: String,
    /// Absolute path of the directory holding the file.
    pub(crate) dir: Arc<Path>,
    /// The merged `_dir.ron` defaults that apply to the file's tasks.
    pub(crate) defaults: Arc<Layer>,
    /// A generator, started as soon as the walk found it: what it printed.
    pub(crate) generated: Option<std::thread::JoinHandle<io::Result<(Ended, std::time::Duration)>>>,
}

impl Found {
    /// The task's name (`net/tcp/connect`), or the prefix of the names in a `.tasks.ron`.
    pub(crate) fn name(&self) -> &str {
        match self.kind {
            Kind::Ron => &self.rel[..self.rel.len() - ".ron".len()],
            Kind::TasksRon => &self.rel[..self.rel.len() - ".tasks.ron".len()],
            Kind::Generator => &self.rel[..self.rel.len() - ".gen".len()],
            Kind::Executable => &self.rel,
        }
    }
}

/// One step of the walk: a task file or a problem, in walk order.
#[derive(Debug)]
pub(crate) enum Item {
    Found(Found),
    Error(FactoryError),
}

/// Everything the walk found.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub(crate) items: Vec<Item>,
    pub(crate) capacity: BTreeMap<String, u32>,
    /// Groups declared by the root `_dir.ron`, and where.
    pub(crate) groups: BTreeMap<String, Group>,
    pub(crate) groups_at: Option<Location>,
    /// Virtual tokens declared by the root `_dir.ron`, and where.
    pub(crate) virtuals: Vec<String>,
    pub(crate) virtuals_at: Option<Location>,
    /// Entries skipped because a `.gitignore` excludes them.
    pub(crate) ignored: usize,
}

/// Walks the tree at `root` (absolute); errors name files under `shown_root`.
pub(crate) fn walk(root: &Path, shown_root: &Path) -> Walk {
    let mut walker = Walker {
        shown_root,
        out: Walk::default(),
        ancestors: Vec::new(),
        gitignores: Ignores::default(),
    };
    match fs::metadata(root) {
        Ok(meta) => walker.dir(root, "", &Arc::new(Layer::default()), &meta),
        Err(source) => walker.io(shown_root.to_path_buf(), source),
    }
    walker.out
}

struct Walker<'a> {
    shown_root: &'a Path,
    out: Walk,
    /// `(device, inode)` of the directories being walked, to catch a link back to one of them.
    ancestors: Vec<(u64, u64)>,
    /// The `.gitignore` matchers of the directories being walked.
    gitignores: Ignores,
}

/// The `.gitignore` files of the directories being walked, outermost first: what the factory
/// skips, and what the tree sync to hosts leaves out (`host::tree`).
#[derive(Default)]
pub(crate) struct Ignores(Vec<Gitignore>);

impl Ignores {
    /// Reads `dir/.gitignore` onto the stack; false when it cannot be used (then it is not).
    pub(crate) fn push(&mut self, dir: &Path) -> bool {
        let mut builder = GitignoreBuilder::new(dir);
        // A bad line makes `add` report it, but the other lines still apply, as with git.
        let _ = builder.add(dir.join(".gitignore"));
        match builder.build() {
            Ok(gi) => {
                self.0.push(gi);
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn pop(&mut self) {
        self.0.pop();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the innermost `.gitignore` that says anything about `path` excludes it.
    pub(crate) fn is_ignored(&self, path: &Path, is_dir: bool) -> bool {
        for gi in self.0.iter().rev() {
            let m = gi.matched(path, is_dir);
            if m.is_ignore() {
                return true;
            }
            if m.is_whitelist() {
                return false;
            }
        }
        false
    }
}

impl Walker<'_> {
    fn error(&mut self, e: FactoryError) {
        self.out.items.push(Item::Error(e));
    }

    fn io(&mut self, path: PathBuf, source: io::Error) {
        self.error(FactoryError::Io { path, source });
    }

    /// Walks directory `dir`, named `rel` relative to the root (empty at the root).
    fn dir(&mut self, dir: &Path, rel: &str, parent: &Arc<Layer>, meta: &fs::Metadata) {
        let shown = if rel.is_empty() {
            self.shown_root.to_path_buf()
        } else {
            self.shown_root.join(rel)
        };
        let id = (meta.dev(), meta.ino());
        if self.ancestors.contains(&id) {
            self.error(FactoryError::SymlinkLoop { path: shown });
            return;
        }
        let mut has_gitignore = false;
        let entries: Vec<(OsString, fs::FileType)> = match fs::read_dir(dir) {
            Ok(rd) => {
                let mut entries = Vec::new();
                for entry in rd {
                    match entry.and_then(|e| Ok((e.file_name(), e.file_type()?))) {
                        Ok(e) if e.0.as_bytes().starts_with(b".") => {
                            has_gitignore |= e.0 == ".gitignore";
                        }
                        Ok(e) => entries.push(e),
                        Err(source) => self.io(shown.clone(), source),
                    }
                }
                entries
            }
            Err(source) => return self.io(shown, source),
        };
        // Byte-wise, a directory's name followed by `/`, as whole paths sort: `a.ron` < `a/`
        // (`.` < `/`), so a task comes before the tasks named below it.
        let is_dir = |(name, t): &(OsString, fs::FileType)| {
            t.is_dir() || (t.is_symlink() && fs::metadata(dir.join(name)).is_ok_and(|m| m.is_dir()))
        };
        let mut keyed: Vec<(bool, (OsString, fs::FileType))> =
            entries.into_iter().map(|e| (is_dir(&e), e)).collect();
        keyed.sort_unstable_by(|(a_dir, a), (b_dir, b)| {
            let a = a.0.as_bytes().iter().chain(a_dir.then_some(&b'/'));
            let b = b.0.as_bytes().iter().chain(b_dir.then_some(&b'/'));
            a.cmp(b)
        });
        let pushed = has_gitignore && self.gitignores.push(dir);
        if !self.gitignores.is_empty() {
            let before = keyed.len();
            keyed.retain(|(is_dir, (name, _))| {
                !self.gitignores.is_ignored(&dir.join(name), *is_dir)
            });
            self.out.ignored += before - keyed.len();
        }
        let mut entries: Vec<(OsString, fs::FileType)> =
            keyed.into_iter().map(|(_, e)| e).collect();

        let defaults = match entries.iter().position(|e| e.0 == DIR_FILE) {
            Some(i) => {
                entries.remove(i);
                self.defaults(
                    &dir.join(DIR_FILE),
                    &shown.join(DIR_FILE),
                    dir,
                    rel.is_empty(),
                )
                .map_or_else(|| parent.clone(), |layer| Arc::new(parent.merged(layer)))
            }
            None => parent.clone(),
        };

        let dir_arc: Arc<Path> = Arc::from(dir);
        self.ancestors.push(id);
        for (name, file_type) in entries {
            let path = dir.join(&name);
            let Some(name) = name.to_str() else {
                self.error(FactoryError::NonUtf8Name {
                    path: shown.join(&name),
                });
                continue;
            };
            let child_rel = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            self.entry(&path, name, child_rel, file_type, &dir_arc, &defaults);
        }
        self.ancestors.pop();
        if pushed {
            self.gitignores.pop();
        }
    }

    fn entry(
        &mut self,
        path: &Path,
        name: &str,
        rel: String,
        file_type: fs::FileType,
        dir: &Arc<Path>,
        defaults: &Arc<Layer>,
    ) {
        // Case matters, as everywhere in task names: `X.RON` is data, not a definition.
        let is_ron = Path::new(name).extension().is_some_and(|e| e == "ron");
        // Only links, directories and possible executables need a `stat`: `.ron` files are
        // known by name, which keeps a walk of 10^5 task files cheap.
        let meta = if file_type.is_symlink() || file_type.is_dir() || !is_ron {
            match fs::metadata(path) {
                Ok(meta) => Some(meta),
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return self.error(FactoryError::SymlinkLoop {
                        path: self.shown_root.join(&rel),
                    });
                }
                // A dangling link is data unless its name says it is a definition.
                Err(_) if file_type.is_symlink() && !is_ron => return,
                Err(source) => return self.io(self.shown_root.join(&rel), source),
            }
        } else {
            None
        };
        if meta.as_ref().is_some_and(fs::Metadata::is_dir) {
            return self.dir(path, &rel, defaults, meta.as_ref().unwrap());
        }
        if meta.as_ref().is_some_and(|m| !m.is_file()) {
            return; // sockets, fifos, devices: never tasks
        }
        let kind = if rel.ends_with(".tasks.ron") {
            Kind::TasksRon
        } else if is_ron {
            Kind::Ron
        } else if meta.is_some_and(|m| m.permissions().mode() & 0o111 != 0) {
            // Case matters, as for `.ron`: `X.GEN` is an ordinary executable task.
            #[allow(clippy::case_sensitive_file_extension_comparisons)]
            let generator = name.len() > ".gen".len() && name.ends_with(".gen");
            if generator {
                Kind::Generator
            } else {
                Kind::Executable
            }
        } else {
            return; // task data
        };
        // A generator runs while the walk goes on.
        let generated = (kind == Kind::Generator)
            .then(|| super::generator::start(path.to_path_buf(), dir.to_path_buf()));
        self.out.items.push(Item::Found(Found {
            kind,
            rel,
            dir: dir.clone(),
            defaults: defaults.clone(),
            generated,
        }));
    }

    /// Reads a `_dir.ron`; `None` (with the problem recorded) when it is broken.
    fn defaults(&mut self, path: &Path, shown: &Path, dir: &Path, at_root: bool) -> Option<Layer> {
        let text = match super::read_text(path, shown) {
            Ok(text) => text,
            Err(e) => {
                self.error(e);
                return None;
            }
        };
        let src = Source {
            file: shown,
            text: &text,
        };
        let all = 0..text.len();
        let mut def: DirDef = match src.parse(all.clone()) {
            Ok(def) => def,
            Err(e) => {
                self.error(e);
                return None;
            }
        };
        if let Some(capacity) = def.capacity.take() {
            if at_root {
                self.out.capacity = capacity;
            } else {
                self.error(FactoryError::CapacityOutsideRoot {
                    location: src.field_location(all.clone(), "capacity", false),
                });
            }
        }
        if let Some(groups) = def.groups.take() {
            let location = src.field_location(all.clone(), "groups", false);
            if at_root {
                self.out.groups = groups
                    .into_iter()
                    .map(|(name, g)| {
                        let mut group = Group::new(name.clone());
                        group.jobs = g.jobs.map(|j| (j as usize).max(1));
                        (name, group)
                    })
                    .collect();
                self.out.groups_at = Some(location);
            } else {
                self.error(FactoryError::RootOnly {
                    location,
                    field: "groups",
                });
            }
        }
        if let Some(virtuals) = def.virtual_tokens.take() {
            let location = src.field_location(all.clone(), "virtual", false);
            if at_root {
                self.out.virtuals = virtuals;
                self.out.virtuals_at = Some(location);
            } else {
                self.error(FactoryError::RootOnly {
                    location,
                    field: "virtual",
                });
            }
        }
        if let Err(e) = check_group(&self.out.groups, def.group.as_deref(), &src, all.clone()) {
            self.error(e);
            return None;
        }
        match Layer::resolve(def.common(), &src, all, dir) {
            Ok(layer) => Some(layer),
            Err(e) => {
                self.error(e);
                None
            }
        }
    }
}

/// A `group` field names a declared group (or `""`, no group).
pub(crate) fn check_group(
    declared: &BTreeMap<String, Group>,
    group: Option<&str>,
    src: &Source<'_>,
    range: std::ops::Range<usize>,
) -> Result<(), FactoryError> {
    match group {
        Some(g) if !g.is_empty() && !declared.contains_key(g) => Err(FactoryError::UnknownGroup {
            location: src.field_location(range, "group", true),
            group: g.to_string(),
            declared: declared.keys().filter(|k| !k.is_empty()).cloned().collect(),
        }),
        _ => Ok(()),
    }
}
