//! Checkpoint directories (SPEC section 12): one per task under `STATE/checkpoints/`, handed to
//! each attempt (`PEXEN_CHECKPOINT`, `Context::checkpoint`) and kept across attempts, timeouts,
//! interruptions, `kill -9` and `--resume` until the task ends `pass`, `warn` or `skip`.
//!
//! A task's directory is its name, percent-encoded into one path component (`net/tcp` ->
//! `net%2Ftcp`), so that `net`'s directory never contains `net/tcp`'s. Names longer than
//! [`MAX_COMPONENT`] bytes once encoded keep a readable prefix and end with a hash of the name.
//!
//! **Recycling.** Most tasks save nothing, yet each attempt must find its directory. Creating
//! and removing a directory allocates and frees a block: on the 2-CPU VM of the benchmarks (ext4
//! mounted with `discard`) a `mkdir` + `rmdir` pair cost 0.25-3 ms, as much as spawning
//! `/bin/true`, and the removal ran under the scheduler's lock. So a task that succeeded is only
//! [released](Checkpoints::release) there (a name pushed on a list); the next attempt that needs
//! a directory, on its worker thread, takes a released one: empty, it is renamed to the new
//! task's name (one `rename`); not empty, it is removed and the next one is tried. What is still
//! released when the run ends is removed by [`Checkpoints::flush`] (the journal's `finish`). A
//! run killed in between leaves directories of tasks that passed: `--resume` removes those of
//! the tasks it resumes (a passed task has no checkpoint), a plain run removes everything.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::task::TaskName;

/// The checkpoint root's name inside the state directory.
pub const DIR_NAME: &str = "checkpoints";
/// Longest encoded name used as is (file systems allow 255 bytes per component).
pub const MAX_COMPONENT: usize = 200;

/// Everything but these is percent-encoded: `/` and `%` above all, and nothing a shell or a
/// file manager would trip on.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'+')
    .remove(b'@')
    .remove(b'=')
    .remove(b',');

/// The checkpoint directories of one state directory. Clones share their released list.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    root: PathBuf,
    /// Directories of tasks that succeeded, to be recycled or removed.
    released: Arc<Mutex<Vec<PathBuf>>>,
}

impl Checkpoints {
    /// The checkpoints of the state directory `state`: `STATE/checkpoints/`.
    pub fn in_state_dir(state: &Path) -> Self {
        Self {
            root: state.join(DIR_NAME),
            released: Arc::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `task` (which may not exist).
    pub fn dir(&self, task: &TaskName) -> PathBuf {
        self.root.join(component(task.as_str()))
    }

    /// Creates `task`'s directory if needed, recycling a released one when it can, and returns
    /// it: called before each attempt, on the worker thread.
    pub fn prepare(&self, task: &TaskName) -> io::Result<PathBuf> {
        self.prepare_telling(task).map(|(dir, _)| dir)
    }

    /// [`Checkpoints::prepare`], telling whether the directory was there already (`false`:
    /// it was made or recycled empty).
    pub(crate) fn prepare_telling(&self, task: &TaskName) -> io::Result<(PathBuf, bool)> {
        let dir = self.dir(task);
        if dir.is_dir() {
            return Ok((dir, true));
        }
        loop {
            let old = self.lock().pop();
            let Some(old) = old else { break };
            let empty = match fs::read_dir(&old) {
                Ok(mut entries) => entries.next().is_none(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => false,
            };
            if empty && fs::rename(&old, &dir).is_ok() {
                return Ok((dir, false));
            }
            remove_all(&old)?;
        }
        match fs::create_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(&dir)?,
            // Made by another thread in between: it may hold files by now.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok((dir, true)),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        Ok((dir, false))
    }

    /// `task` succeeded: its directory goes (recycled by a later [`Checkpoints::prepare`], or
    /// removed by [`Checkpoints::flush`]). No file-system call: this runs under the scheduler's
    /// lock.
    pub fn release(&self, task: &TaskName) {
        let dir = self.dir(task);
        self.lock().push(dir);
    }

    /// Removes the released directories not recycled yet (at the end of a run).
    pub fn flush(&self) -> io::Result<()> {
        let released = std::mem::take(&mut *self.lock());
        released.iter().try_for_each(|d| remove_all(d))
    }

    /// True when `task` saved something: its directory exists and is not empty.
    pub fn holds(&self, task: &TaskName) -> bool {
        fs::read_dir(self.dir(task)).is_ok_and(|mut d| d.next().is_some())
    }

    /// Removes `task`'s directory and what it holds (nothing when there is none).
    pub fn remove(&self, task: &TaskName) -> io::Result<()> {
        remove_all(&self.dir(task))
    }

    /// Removes every checkpoint: a run without `--resume` starts from empty checkpoints.
    pub fn clear(&self) -> io::Result<()> {
        self.lock().clear();
        remove_all(&self.root)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.released.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `remove_dir_all`, with a missing directory as success.
fn remove_all(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `name` as one path component: percent-encoded, a leading `.` too (no hidden or `..`
/// entries), the empty name as `%`, and a long name shortened with a hash of the whole.
fn component(name: &str) -> String {
    let mut out: String = utf8_percent_encode(name, KEEP).collect();
    if out.starts_with('.') {
        out.replace_range(..1, "%2E");
    }
    if out.is_empty() {
        out.push('%');
    }
    if out.len() > MAX_COMPONENT {
        let hash = blake3::hash(name.as_bytes()).to_hex();
        // Percent-encoded text is ASCII: any byte offset is a character boundary.
        out.truncate(MAX_COMPONENT - 33);
        out.push('~');
        out.push_str(&hash[..32]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_one_distinct_component() {
        let names = ["net", "net/tcp", "net%2Ftcp", ".hidden", "..", "", "a b/é"];
        let comps: Vec<String> = names.iter().map(|n| component(n)).collect();
        assert_eq!(
            comps,
            [
                "net",
                "net%2Ftcp",
                "net%252Ftcp",
                "%2Ehidden",
                "%2E.",
                "%",
                "a%20b%2F%C3%A9"
            ]
        );
        for c in &comps {
            assert!(!c.contains('/') && c != "." && c != "..", "{c}");
        }
    }

    #[test]
    fn long_names_are_shortened_and_stay_distinct() {
        let a = "x/".repeat(300);
        let b = format!("{a}y");
        let (ca, cb) = (component(&a), component(&b));
        assert_eq!(ca.len(), MAX_COMPONENT);
        assert_ne!(ca, cb);
    }

    #[test]
    fn prepare_holds_remove_clear() {
        let state = tempfile::tempdir().unwrap();
        let cp = Checkpoints::in_state_dir(state.path());
        let (a, b) = (TaskName::new("a"), TaskName::new("a/b"));
        let da = cp.prepare(&a).unwrap();
        assert!(da.is_dir() && !cp.holds(&a));
        std::fs::write(da.join("count"), "3").unwrap();
        assert!(cp.holds(&a));
        cp.prepare(&a).unwrap();
        assert_eq!(std::fs::read_to_string(da.join("count")).unwrap(), "3");
        cp.prepare(&b).unwrap();
        cp.remove(&a).unwrap();
        assert!(!da.exists() && cp.dir(&b).is_dir());
        cp.remove(&a).unwrap();
        cp.clear().unwrap();
        assert!(!cp.root().exists());
        cp.clear().unwrap();
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn released_directories_are_recycled_when_empty_and_removed_otherwise() {
        let state = tempfile::tempdir().unwrap();
        let cp = Checkpoints::in_state_dir(state.path());
        let [ta, tb, tc, td, te] = ["a", "b", "c", "d", "e"].map(TaskName::new);
        cp.prepare(&ta).unwrap();
        cp.prepare(&tb).unwrap();
        std::fs::write(cp.dir(&tb).join("saved"), "x").unwrap();
        cp.release(&ta);
        cp.release(&tb);
        // Released, still there until recycled.
        assert_eq!(entries(cp.root()), ["a", "b"]);
        // `c` takes `b`'s (the last released): not empty, so removed; then `a`'s, empty: renamed.
        let dc = cp.prepare(&tc).unwrap();
        assert_eq!(entries(cp.root()), ["c"]);
        assert!(entries(&dc).is_empty());
        // Nothing released: a new directory.
        cp.prepare(&td).unwrap();
        assert_eq!(entries(cp.root()), ["c", "d"]);
        // A task with a directory keeps it, whatever was released.
        std::fs::write(dc.join("n"), "1").unwrap();
        cp.release(&td);
        assert_eq!(cp.prepare(&tc).unwrap(), dc);
        assert_eq!(entries(&dc), ["n"]);
        // The end of the run removes what was not recycled.
        cp.release(&tc);
        cp.prepare(&te).unwrap();
        cp.flush().unwrap();
        assert_eq!(entries(cp.root()), ["e"]);
    }
}
