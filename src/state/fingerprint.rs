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

use crate::task::{Task, Work};

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
fn definition(task: &Task, buf: &mut Vec<u8>) -> Digest {
    buf.clear();
    // Tag each form so that a closure and a command can never hash alike.
    let written = match &task.work {
        Work::Command(spec) => {
            buf.extend_from_slice(b"pexen/definition/command/v1\0");
            let timeout = task.meta.timeout.map(|d| d.as_nanos());
            serde_json::to_writer(&mut *buf, &(spec.argv(), &spec.env, &spec.cwd, timeout))
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

fn inputs(task: &Task, files: &mut FileHashes) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(b"pexen/inputs/v1\0");
    if task.meta.inputs.is_empty() {
        return Digest::of(&h);
    }
    let base = cwd(task);
    let mut found = BTreeSet::new();
    let mut patterns: Vec<&String> = task.meta.inputs.iter().collect();
    patterns.sort();
    patterns.dedup();
    for pattern in patterns {
        let full = base.join(pattern);
        let matches: Vec<PathBuf> = match glob::glob(&full.to_string_lossy()) {
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
                &tasks[i], &providers, tasks, &combined, &mut files, &mut buf,
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
) -> Fingerprint {
    let mut h = blake3::Hasher::new();
    h.update(b"pexen/providers/v1\0");
    let mut tokens: Vec<&String> = task.meta.requires.iter().collect();
    tokens.sort();
    tokens.dedup();
    for token in tokens {
        h.update(token.as_bytes());
        h.update(b"\0");
        for &p in providers.get(token.as_str()).into_iter().flatten() {
            h.update(tasks[p].name.as_str().as_bytes());
            h.update(b"\0");
            // A provider still unfinished here is on a cycle; its digest is still the default.
            h.update(&combined[p].0);
        }
    }
    Fingerprint {
        definition: definition(task, buf),
        program: program(task, files),
        inputs: inputs(task, files),
        providers: Digest::of(&h),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use super::*;
    use crate::task::{CommandSpec, Run};

    /// A command task in `dir` running `./run.sh`, reading `*.txt`, requiring `lib`.
    fn tree(dir: &Path) -> Vec<Task> {
        let mut spec = CommandSpec::new(Run::Cmd(vec!["./run.sh".into()]));
        spec.cwd = Some(dir.to_path_buf());
        spec.program = Some("run.sh".into());
        let mut app = Task::command("app", spec).requires(["lib"]);
        app.meta.inputs = vec!["*.txt".into(), "config.toml".into()];
        vec![
            Task::closure("lib", |_| Ok(())).provides(["lib"]),
            app,
            Task::closure("unrelated", |_| Ok(())),
        ]
    }

    fn setup() -> (tempfile::TempDir, Vec<Fingerprint>) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("run.sh"), "#!/bin/sh\necho 1\n").unwrap();
        fs::write(dir.path().join("a.txt"), "a").unwrap();
        let fps = fingerprints(&tree(dir.path()));
        (dir, fps)
    }

    #[test]
    fn stable_when_nothing_changes() {
        let (dir, fps) = setup();
        assert_eq!(fingerprints(&tree(dir.path())), fps);
        // Metadata that does not change what a command computes does not count.
        let mut tasks = tree(dir.path());
        tasks[1].meta.priority = 5;
        tasks[1].meta.tags.push("slow".into());
        assert_eq!(fingerprints(&tasks), fps);
    }

    #[test]
    fn program_content_changes_only_the_program_component() {
        let (dir, fps) = setup();
        fs::write(dir.path().join("run.sh"), "#!/bin/sh\necho 2\n").unwrap();
        let new = fingerprints(&tree(dir.path()));
        assert_ne!(new[1].program, fps[1].program);
        assert_eq!(
            (new[1].definition, new[1].inputs),
            (fps[1].definition, fps[1].inputs)
        );
        assert_eq!((new[0], new[2]), (fps[0], fps[2]));
    }

    #[test]
    fn inputs_change_with_content_new_files_and_missing_files() {
        let (dir, fps) = setup();
        fs::write(dir.path().join("a.txt"), "A").unwrap();
        let changed = fingerprints(&tree(dir.path()));
        assert_ne!(changed[1].inputs, fps[1].inputs);
        assert_eq!(changed[1].program, fps[1].program);
        fs::write(dir.path().join("b.txt"), "b").unwrap();
        let added = fingerprints(&tree(dir.path()));
        assert_ne!(added[1].inputs, changed[1].inputs);
        fs::write(dir.path().join("config.toml"), "").unwrap();
        let appeared = fingerprints(&tree(dir.path()));
        assert_ne!(appeared[1].inputs, added[1].inputs);
    }

    #[test]
    fn provider_changes_propagate_to_dependents_only() {
        let (dir, fps) = setup();
        let mut tasks = tree(dir.path());
        tasks[0].meta.timeout = Some(Duration::from_secs(3));
        let new = fingerprints(&tasks);
        assert_ne!(new[0].definition, fps[0].definition);
        assert_ne!(new[1].providers, fps[1].providers);
        assert_eq!(new[1].definition, fps[1].definition);
        assert_eq!(new[2], fps[2]);
    }

    #[test]
    fn definition_covers_argv_env_cwd_and_timeout() {
        let (dir, fps) = setup();
        let edits: [fn(&mut CommandSpec, &mut Task); 4] = [
            |s, _| s.run = Run::Cmd(vec!["./run.sh".into(), "-v".into()]),
            |s, _| {
                s.env.insert("X".into(), "1".into());
            },
            |s, _| s.cwd = Some(s.cwd.as_ref().unwrap().join(".")),
            |_, t| t.meta.timeout = Some(Duration::from_secs(1)),
        ];
        for edit in edits {
            let mut tasks = tree(dir.path());
            let Work::Command(spec) = &tasks[1].work else {
                unreachable!()
            };
            let mut spec = (**spec).clone();
            edit(&mut spec, &mut tasks[1]);
            tasks[1].work = Work::Command(std::sync::Arc::new(spec));
            assert_ne!(fingerprints(&tasks)[1].definition, fps[1].definition);
        }
    }

    #[test]
    fn long_chains_do_not_overflow_the_stack() {
        let n = 20_000;
        let tasks: Vec<Task> = (0..n)
            .map(|i| {
                Task::closure(format!("t{i}"), |_| Ok(()))
                    .provides([format!("k{i}")])
                    .requires(if i == 0 {
                        vec![]
                    } else {
                        vec![format!("k{}", i - 1)]
                    })
            })
            .collect();
        // Reverse order so that the first task visited has the whole chain below it.
        let tasks: Vec<Task> = tasks.into_iter().rev().collect();
        let fps = fingerprints(&tasks);
        assert_eq!(fps.len(), n);
        assert_ne!(fps[0].providers, fps[1].providers);
    }

    #[test]
    fn digests_round_trip_as_hex() {
        let (_, fps) = setup();
        let text = serde_json::to_string(&fps[1]).unwrap();
        assert!(text.contains(&fps[1].program.to_string()));
        assert_eq!(serde_json::from_str::<Fingerprint>(&text).unwrap(), fps[1]);
        assert!(serde_json::from_str::<Digest>("\"zz\"").is_err());
    }
}
