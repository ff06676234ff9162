//! Task fingerprints: what a task's result depends on, hashed so that `--resume` reruns exactly
//! the tasks whose dependencies changed (SPEC section 6).
//!
//! A [`Fingerprint`] keeps four components apart, so that a resume can say *why* a task reruns:
//! the definition after defaults, the program it runs, its declared inputs, and the fingerprints
//! of the tasks that provide its required tokens (which makes changes propagate downstream).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::task::{Task, Token, Work};

/// A 128-bit content hash (a truncated blake3): ample against accidental collisions and half
/// the size of a full digest in a journal of 10^5 records. Serialized as 32 hex digits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 16]);

impl Digest {
    fn of(hasher: &blake3::Hasher) -> Self {
        let mut out = [0u8; 16];
        out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        Self(out)
    }

    fn parse_hex(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Digest, E> {
                Digest::parse_hex(s).ok_or_else(|| E::custom(format!("bad digest `{s}`")))
            }
        }
        d.deserialize_str(V)
    }
}

/// A task's fingerprint, by component.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The definition after defaults: argv, env, cwd and timeout of a command; name and
    /// metadata of a closure.
    pub definition: Digest,
    /// The content of `CommandSpec::program` (a fixed marker when unset or missing).
    pub program: Digest,
    /// The paths and contents of the task's `inputs`.
    pub inputs: Digest,
    /// The required tokens with the names and combined fingerprints of their providers.
    pub providers: Digest,
}

impl Fingerprint {
    /// All four components in one digest: what a dependent hashes.
    pub fn combined(&self) -> Digest {
        let mut h = blake3::Hasher::new();
        for d in [self.definition, self.program, self.inputs, self.providers] {
            h.update(&d.0);
        }
        Digest::of(&h)
    }
}

/// Hashes of file contents, shared between tasks (many tasks run one program or read one input).
#[derive(Default)]
struct FileHashes(HashMap<PathBuf, Option<Digest>>);

impl FileHashes {
    /// The content digest of a regular file; `None` when it is missing or unreadable, which is
    /// hashed as "missing" by the caller (a file appearing later then changes the fingerprint).
    fn get(&mut self, path: &Path) -> Option<Digest> {
        *self.0.entry(path.to_path_buf()).or_insert_with(|| {
            let mut h = blake3::Hasher::new();
            h.update_reader(File::open(path).ok()?).ok()?;
            Some(Digest::of(&h))
        })
    }
}

/// `buf` is reused between tasks: serializing into it and hashing once is several times faster
/// than many small hasher updates.
fn definition(task: &Task, buf: &mut Vec<u8>, root: Option<&Path>) -> Digest {
    buf.clear();
    // Tag each form so that a closure and a command can never hash alike.
    let written = match &task.work {
        Work::Command(spec) => {
            buf.extend_from_slice(b"pexen/definition/command/v1\0");
            let timeout = task.meta.more.timeout.map(|d| d.as_nanos());
            let written = match root {
                // Paths inside the tree relative to it: the same tree elsewhere (another
                // checkout, a teleported run) has the same fingerprints.
                Some(root) => {
                    let inside = |p: &Path| {
                        p.strip_prefix(root)
                            .ok()
                            .map(|rel| format!("<tree>/{}", rel.display()))
                    };
                    let mut argv = spec.argv();
                    if let Some(rel) = argv.first().and_then(|a| inside(Path::new(a))) {
                        argv[0] = rel;
                    }
                    let cwd = spec
                        .cwd
                        .as_ref()
                        .map(|c| inside(c).unwrap_or_else(|| c.to_string_lossy().into_owned()));
                    serde_json::to_writer(&mut *buf, &(argv, &spec.env, cwd, timeout))
                }
                None => {
                    serde_json::to_writer(&mut *buf, &(spec.argv(), &spec.env, &spec.cwd, timeout))
                }
            };
            // Only when set, so that fingerprints recorded before versions existed still match.
            if let Some(version) = &task.meta.more.version {
                buf.extend_from_slice(b"\0version\0");
                buf.extend_from_slice(version.as_bytes());
            }
            written
        }
        Work::Closure(_) => {
            buf.extend_from_slice(b"pexen/definition/closure/v1\0");
            serde_json::to_writer(&mut *buf, &(&task.name, &task.meta))
        }
    };
    // Serializing strings, maps and paths cannot fail (a non-UTF-8 path is the only error
    // serde_json knows here); hash the failure so the digest stays deterministic.
    if let Err(e) = written {
        buf.extend_from_slice(e.to_string().as_bytes());
    }
    let mut h = blake3::Hasher::new();
    h.update(buf);
    Digest::of(&h)
}

fn cwd(task: &Task) -> PathBuf {
    match &task.work {
        Work::Command(spec) => spec.cwd.clone().unwrap_or_else(|| PathBuf::from(".")),
        Work::Closure(_) => PathBuf::from("."),
    }
}

fn program(task: &Task, files: &mut FileHashes) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(b"pexen/program/v1\0");
    if let Work::Command(spec) = &task.work {
        if let Some(p) = &spec.program {
            // Relative program paths are resolved like inputs: against the task's cwd.
            match files.get(&cwd(task).join(p)) {
                Some(d) => h.update(&d.0),
                None => h.update(b"missing"),
            };
        }
    }
    Digest::of(&h)
}

/// Glob options for `inputs`: hidden files match only when named, as in a shell (so `**/*`
/// never takes in the `.pexen` state directory kept in the tree).
pub(crate) fn input_glob_options() -> glob::MatchOptions {
    glob::MatchOptions {
        require_literal_leading_dot: true,
        ..glob::MatchOptions::default()
    }
}

fn inputs(task: &Task, files: &mut FileHashes) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(b"pexen/inputs/v1\0");
    if task.meta.more.inputs.is_empty() {
        return Digest::of(&h);
    }
    let base = cwd(task);
    let mut found = BTreeSet::new();
    let mut patterns: Vec<&String> = task.meta.more.inputs.iter().collect();
    patterns.sort();
    patterns.dedup();
    for pattern in patterns {
        let full = base.join(pattern);
        let matches: Vec<PathBuf> =
            match glob::glob_with(&full.to_string_lossy(), input_glob_options()) {
                Ok(paths) => paths.filter_map(Result::ok).collect(),
                Err(_) => Vec::new(),
            };
        if matches.is_empty() {
            // Neither an existing file nor a glob that matches one: "missing", so that creating
            // the file later reruns the task.
            h.update(b"missing\0");
            h.update(pattern.as_bytes());
            h.update(b"\0");
        }
        found.extend(matches);
    }
    for path in found {
        // Paths relative to the cwd, so that moving the whole tree keeps fingerprints.
        let shown = path.strip_prefix(&base).unwrap_or(&path);
        h.update(shown.to_string_lossy().as_bytes());
        h.update(b"\0");
        if path.is_dir() {
            h.update(b"dir");
        } else {
            match files.get(&path) {
                Some(d) => h.update(&d.0),
                None => h.update(b"missing"),
            };
        }
        h.update(b"\0");
    }
    Digest::of(&h)
}

/// Fingerprints of `tasks`, in the same order.
///
/// The graph must be acyclic (validated before this is called); a cycle cannot hang this
/// function, but the fingerprints on it are then unspecified. Providers are found from the
/// `provides` of `tasks` themselves; each fingerprint is computed once (memoized, iteratively,
/// so a chain of 10^5 tasks does not overflow the stack).
pub fn fingerprints(tasks: &[Task]) -> Vec<Fingerprint> {
    fingerprints_in(tasks, None)
}

/// [`fingerprints`] of the tasks of the tree at `root`: the paths of a command inside the tree
/// (its program, its working directory) count relative to the root, so that the same tree at
/// another path (another checkout, a run teleported to another machine) keeps its
/// fingerprints, as its `inputs` already do.
pub fn fingerprints_in(tasks: &[Task], tree_root: Option<&Path>) -> Vec<Fingerprint> {
    let mut providers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, t) in tasks.iter().enumerate() {
        for token in &t.meta.provides {
            providers.entry(token.as_str()).or_default().push(i);
        }
    }
    let mut files = FileHashes::default();
    let mut buf = Vec::new();
    let mut done: Vec<Option<Fingerprint>> = vec![None; tasks.len()];
    // Each task's combined digest, computed once: dependents hash it, one per edge.
    let mut combined = vec![Digest::default(); tasks.len()];
    let mut visiting = vec![false; tasks.len()];
    let mut stack: Vec<usize> = Vec::new();
    for root in 0..tasks.len() {
        stack.push(root);
        while let Some(&i) = stack.last() {
            if done[i].is_some() {
                stack.pop();
                continue;
            }
            let deps = tasks[i]
                .meta
                .requires
                .iter()
                .flat_map(|tok| providers.get(tok.as_str()).into_iter().flatten());
            if !visiting[i] {
                visiting[i] = true;
                let before = stack.len();
                stack.extend(
                    deps.filter(|&&p| done[p].is_none() && !visiting[p])
                        .copied(),
                );
                if stack.len() > before {
                    continue;
                }
            }
            stack.pop();
            let fp = compute(
                &tasks[i], &providers, tasks, &combined, &mut files, &mut buf, tree_root,
            );
            combined[i] = fp.combined();
            done[i] = Some(fp);
        }
    }
    done.into_iter().map(Option::unwrap_or_default).collect()
}

fn compute(
    task: &Task,
    providers: &HashMap<&str, Vec<usize>>,
    tasks: &[Task],
    combined: &[Digest],
    files: &mut FileHashes,
    buf: &mut Vec<u8>,
    root: Option<&Path>,
) -> Fingerprint {
    let mut h = blake3::Hasher::new();
    h.update(b"pexen/providers/v1\0");
    let mut tokens: Vec<&str> = task.meta.requires.iter().map(Token::as_str).collect();
    tokens.sort_unstable();
    tokens.dedup();
    for token in tokens {
        h.update(token.as_bytes());
        h.update(b"\0");
        for &p in providers.get(token).into_iter().flatten() {
            h.update(tasks[p].name.as_str().as_bytes());
            h.update(b"\0");
            // A provider still unfinished here is on a cycle; its digest is still the default.
            h.update(&combined[p].0);
        }
    }
    Fingerprint {
        definition: definition(task, buf, root),
        program: program(task, files),
        inputs: inputs(task, files),
        providers: Digest::of(&h),
    }
}

#[cfg(test)]
#[path = "fingerprint_tests.rs"]
mod tests;
