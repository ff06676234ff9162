//! The tree as files: a content-addressed manifest (path, blake3, mode) of every file of a
//! tree, safe relative paths, atomic writes, and the files a task's `outputs` globs match.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;

use crate::factory::Ignores;
use crate::protocol::FileEntry;

/// Every regular file under `root` (symbolic links followed; hidden entries and what a
/// `.gitignore` of the tree excludes skipped, as the factory skips them), sorted by path, with
/// its content hash: what [`manifest_cached`] must give.
#[cfg(test)]
pub(crate) fn manifest(root: &Path) -> io::Result<Vec<FileEntry>> {
    let mut files = list(root)?;
    files.sort();
    files.into_par_iter().map(|rel| entry(root, rel)).collect()
}

/// What a manifest index remembers of a file: its identity and, for it, the content hash.
#[derive(serde::Serialize, serde::Deserialize)]
struct Seen {
    size: u64,
    mtime_ns: i128,
    ino: u64,
    hash: String,
}

impl Seen {
    fn new(meta: &fs::Metadata, hash: String) -> Self {
        use std::os::unix::fs::MetadataExt;
        Seen {
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
            ino: meta.ino(),
            hash,
        }
    }

    /// The remembered hash is still the file's: same size, inode and modification time, and
    /// that time is more than two seconds before `now_ns` (a file modified since in the same
    /// tick of a coarse clock would show the same time).
    fn holds_for(&self, meta: &fs::Metadata, now_ns: i128) -> bool {
        use std::os::unix::fs::MetadataExt;
        let mtime_ns = mtime_ns(meta);
        now_ns - mtime_ns > 2_000_000_000
            && self.size == meta.len()
            && self.ino == meta.ino()
            && self.mtime_ns == mtime_ns
    }
}

fn mtime_ns(meta: &fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Content hashes of files remembered by path, with each file's identity (size, inode,
/// modification time): a file that has not changed since it was hashed is not read again (the
/// check `make`, `rsync` and the tree's index make too: a rewrite that keeps all three, say a
/// restore that sets the old time back on the same inode, goes unseen). For checkpoints,
/// which are hashed on both sides before and after each attempt on a host.
#[derive(Default)]
pub(crate) struct Hashes(std::sync::Mutex<std::collections::HashMap<PathBuf, Seen>>);

impl Hashes {
    /// [`entry`], reusing the hash remembered for an unchanged file.
    pub(crate) fn entry(&self, root: &Path, rel: String) -> io::Result<FileEntry> {
        let path = root.join(&rel);
        let meta = fs::metadata(&path)?;
        let known = self
            .lock()
            .get(&path)
            .filter(|seen| seen.holds_for(&meta, now_ns()))
            .map(|seen| seen.hash.clone());
        let hash = if let Some(hash) = known {
            hash
        } else {
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(fs::File::open(&path)?)?;
            let hash = hasher.finalize().to_hex().to_string();
            self.lock().insert(path, Seen::new(&meta, hash.clone()));
            hash
        };
        Ok(FileEntry {
            hash,
            mode: meta.permissions().mode() & 0o777,
            size: meta.len(),
            path: rel,
        })
    }

    /// Forgets the files under `dir` (a checkpoint that went).
    pub(crate) fn forget_under(&self, dir: &Path) {
        self.lock().retain(|path, _| !path.starts_with(dir));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<PathBuf, Seen>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// [`manifest`], reusing the hashes of files whose size, inode and modification time have not
/// changed since the index at `index` was written (files modified in the last two seconds are
/// always hashed: their time may not have ticked yet). The index is rewritten, best effort.
pub(crate) fn manifest_cached(root: &Path, index: &Path) -> io::Result<Vec<FileEntry>> {
    use std::collections::HashMap;
    let old: HashMap<String, Seen> = fs::read(index)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let now_ns = now_ns();
    let mut files = list(root)?;
    files.sort();
    let entries: Vec<(FileEntry, Seen, bool)> = files
        .into_par_iter()
        .map(|rel| {
            let meta = fs::metadata(root.join(&rel))?;
            let (hash, reused) = match old.get(&rel) {
                Some(s) if s.holds_for(&meta, now_ns) => (s.hash.clone(), true),
                _ => (
                    blake3::hash(&fs::read(root.join(&rel))?)
                        .to_hex()
                        .to_string(),
                    false,
                ),
            };
            let seen = Seen::new(&meta, hash.clone());
            Ok((
                FileEntry {
                    path: rel,
                    hash,
                    mode: meta.permissions().mode() & 0o777,
                    size: meta.len(),
                },
                seen,
                reused,
            ))
        })
        .collect::<io::Result<_>>()?;
    // Unchanged (every hash reused, no file gone): the index on disk is still right.
    let unchanged = entries.len() == old.len() && entries.iter().all(|(_, _, reused)| *reused);
    let mut new = HashMap::with_capacity(entries.len());
    let mut manifest = Vec::with_capacity(entries.len());
    for (e, s, _) in entries {
        new.insert(e.path.clone(), s);
        manifest.push(e);
    }
    if unchanged {
        return Ok(manifest);
    }
    if let (Some(dir), Ok(bytes)) = (index.parent(), serde_json::to_vec(&new)) {
        if fs::create_dir_all(dir).is_ok() {
            let name = index.file_name().unwrap_or_default().to_string_lossy();
            let _ = write_file(dir, &name, 0o600, &bytes);
        }
    }
    Ok(manifest)
}

/// Every regular file under `root` (as [`manifest`] sees them), unsorted, without hashing.
pub(crate) fn list(root: &Path) -> io::Result<Vec<String>> {
    let mut files = Vec::new();
    walk(root, "", &mut files, &mut Ignores::default(), 0)?;
    Ok(files)
}

/// Lists the files under `dir` into `out`, skipping hidden entries and what the `.gitignore`
/// files on the way (`ignores`, outermost first) exclude, as the factory's walk does.
fn walk(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<String>,
    ignores: &mut Ignores,
    depth: usize,
) -> io::Result<()> {
    // A link loop would recurse forever; trees are never this deep.
    if depth > 64 {
        return Err(io::Error::other(format!(
            "{} is nested more than 64 levels deep (a symbolic link loop?)",
            dir.display()
        )));
    }
    let items = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    let pushed = items.iter().any(|i| i.file_name() == ".gitignore") && ignores.push(dir);
    let result = walk_items(items, prefix, out, ignores, depth);
    if pushed {
        ignores.pop();
    }
    result
}

fn walk_items(
    items: Vec<fs::DirEntry>,
    prefix: &str,
    out: &mut Vec<String>,
    ignores: &mut Ignores,
    depth: usize,
) -> io::Result<()> {
    for item in items {
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        // The entry's type comes with the directory listing: only links need a stat.
        let Ok(mut kind) = item.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            let Ok(meta) = fs::metadata(item.path()) else {
                continue;
            };
            kind = meta.file_type();
        }
        if !ignores.is_empty() && ignores.is_ignored(&item.path(), kind.is_dir()) {
            continue;
        }
        if kind.is_dir() {
            walk(&item.path(), &rel, out, ignores, depth + 1)?;
        } else if kind.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

/// The manifest entry of `root/rel`, hashed as it is read (no whole-file buffer: a file may be
/// bigger than memory allows).
pub(crate) fn entry(root: &Path, rel: String) -> io::Result<FileEntry> {
    let path = root.join(&rel);
    let meta = fs::metadata(&path)?;
    let mut hash = blake3::Hasher::new();
    hash.update_reader(fs::File::open(&path)?)?;
    Ok(FileEntry {
        hash: hash.finalize().to_hex().to_string(),
        mode: meta.permissions().mode() & 0o777,
        size: meta.len(),
        path: rel,
    })
}

/// Where a file is written before it is renamed to `path` (an atomic write): a hidden name
/// beside it, unique to this process, that walks of the tree and of the state skip.
pub(crate) fn temp_beside(path: &Path) -> PathBuf {
    path.with_file_name(format!(
        ".{}.pexen-tmp-{}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ))
}

/// `rel` as a path under `root`, refusing anything that could leave it (absolute paths, `..`).
pub(crate) fn under(root: &Path, rel: &str) -> io::Result<PathBuf> {
    let p = Path::new(rel);
    let safe = !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if safe {
        Ok(root.join(p))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing path `{rel}`: not a plain relative path inside the tree"),
        ))
    }
}

/// Writes `bytes` to `root/rel` atomically (a temporary file renamed over it), with `mode`.
pub(crate) fn write_file(root: &Path, rel: &str, mode: u32, bytes: &[u8]) -> io::Result<()> {
    let path = under(root, rel)?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp = temp_beside(&path);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode & 0o777)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode & 0o777))?;
        drop(f);
        fs::rename(&tmp, &path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The files matched by `globs` (relative to `cwd`), as paths relative to `root`; files
/// outside the tree are refused with an error naming them.
pub(crate) fn outputs(root: &Path, cwd: &Path, globs: &[String]) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for g in globs {
        let pattern = cwd.join(g);
        let paths = glob::glob(&pattern.to_string_lossy())
            .map_err(|e| format!("bad outputs glob `{g}`: {e}"))?;
        for p in paths.flatten() {
            if !p.is_file() {
                continue;
            }
            let normal = crate::factory::normalize_path(&p);
            let Ok(rel) = normal.strip_prefix(root) else {
                return Err(format!(
                    "output {} is outside the tree {}",
                    normal.display(),
                    root.display()
                ));
            };
            let rel = rel.to_string_lossy().into_owned();
            if !found.contains(&rel) {
                found.push(rel);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_skip_hidden_entries_and_see_changes() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/.hidden")).unwrap();
        fs::write(dir.path().join("a/x"), "1").unwrap();
        fs::write(dir.path().join("a/.hidden/y"), "1").unwrap();
        fs::write(dir.path().join("b"), "2").unwrap();
        let m1 = manifest(dir.path()).unwrap();
        let paths: Vec<_> = m1.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a/x", "b"]);
        fs::write(dir.path().join("b"), "3").unwrap();
        let m2 = manifest(dir.path()).unwrap();
        assert_eq!(m1[0], m2[0]);
        assert_ne!(m1[1].hash, m2[1].hash);
    }

    #[test]
    fn manifests_leave_out_what_a_gitignore_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("target/debug")).unwrap();
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join(".gitignore"), "target/\n*.big\n").unwrap();
        fs::write(root.join("sub/.gitignore"), "!keep.big\nlocal.txt\n").unwrap();
        fs::write(root.join("target/debug/app"), "x").unwrap();
        fs::write(root.join("data.big"), "x").unwrap();
        fs::write(root.join("sub/keep.big"), "x").unwrap();
        fs::write(root.join("sub/other.big"), "x").unwrap();
        fs::write(root.join("sub/local.txt"), "x").unwrap();
        fs::write(root.join("task.ron"), "x").unwrap();
        fs::write(root.join("local.txt"), "x").unwrap();
        let paths: Vec<_> = manifest(root)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, ["local.txt", "sub/keep.big", "task.ron"]);
    }

    #[test]
    fn a_cached_manifest_is_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        fs::create_dir_all(root.join("a")).unwrap();
        fs::write(root.join("a/x"), "1").unwrap();
        let index = dir.path().join("index.json");
        assert_eq!(
            manifest_cached(&root, &index).unwrap(),
            manifest(&root).unwrap()
        );
        assert!(index.is_file());
        // A change is seen (recent files are always hashed).
        fs::write(root.join("a/x"), "2").unwrap();
        assert_eq!(
            manifest_cached(&root, &index).unwrap(),
            manifest(&root).unwrap()
        );
    }

    #[test]
    fn a_remembered_hash_serves_only_while_the_file_is_unchanged() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let long_ago = SystemTime::now() - Duration::from_secs(60);
        // Rewrites the file in place (same inode), then sets its modification time.
        let rewrite = |content: &str, mtime: SystemTime| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .create(true)
                .open(&path)
                .unwrap();
            f.write_all(content.as_bytes()).unwrap();
            f.set_modified(mtime).unwrap();
        };
        let hash_of = |content: &str| blake3::hash(content.as_bytes()).to_hex().to_string();
        let hashes = Hashes::default();
        let hash = |h: &Hashes| h.entry(dir.path(), "f".into()).unwrap().hash;

        rewrite("aaaa", long_ago);
        assert_eq!(hash(&hashes), hash_of("aaaa"));
        // Same size, inode and time: the remembered hash is taken, the file is not read (which
        // is how one can tell that it was remembered at all).
        rewrite("bbbb", long_ago);
        assert_eq!(hash(&hashes), hash_of("aaaa"));
        assert_eq!(hash(&Hashes::default()), hash_of("bbbb"));
        // Another time, another size, or a time too recent to tell: read again.
        rewrite("bbbb", long_ago + Duration::from_secs(1));
        assert_eq!(hash(&hashes), hash_of("bbbb"));
        rewrite("ccccc", long_ago + Duration::from_secs(1));
        assert_eq!(hash(&hashes), hash_of("ccccc"));
        let now = SystemTime::now();
        rewrite("ddddd", now);
        assert_eq!(hash(&hashes), hash_of("ddddd"));
        rewrite("eeeee", now);
        assert_eq!(hash(&hashes), hash_of("eeeee"));
        // Forgotten with its directory.
        rewrite("fffff", long_ago);
        assert_eq!(hash(&hashes), hash_of("fffff"));
        rewrite("ggggg", long_ago);
        hashes.forget_under(dir.path());
        assert_eq!(hash(&hashes), hash_of("ggggg"));
    }

    #[test]
    fn paths_that_leave_the_tree_are_refused() {
        let root = Path::new("/t");
        assert!(under(root, "a/b").is_ok());
        for bad in ["../x", "/etc/passwd", "a/../../x", "", "./a"] {
            assert!(under(root, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_are_atomic_and_keep_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), "d/run.sh", 0o755, b"#!/bin/sh\n").unwrap();
        let meta = fs::metadata(dir.path().join("d/run.sh")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(fs::read_dir(dir.path().join("d")).unwrap().count(), 1);
    }
}
