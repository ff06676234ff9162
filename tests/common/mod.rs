//! A small fluent harness for integration tests: build a task tree in a temporary directory,
//! run the real `pexen` binary on it, and look at exit code, JSON events and files.

#![allow(dead_code, unreachable_pub)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Two tasks that require each other (`a` and `b`): a cycle, refused wherever a tree is
/// checked.
pub fn cycle_tree() -> Tree {
    Tree::new()
        .file(
            "a.ron",
            r#"(run: Shell("true"), requires: ["b"], provides: ["a"])"#,
        )
        .file(
            "b.ron",
            r#"(run: Shell("true"), requires: ["a"], provides: ["b"])"#,
        )
}

pub fn pexen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pexen"))
}

/// The repository's `factories/NAME` tree.
pub fn factory(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("factories")
        .join(name)
}

pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `path` (relative to the tree) with `content`, creating directories.
    pub fn file(self, path: &str, content: &str) -> Self {
        let p = self.dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        self
    }

    /// Writes an executable `sh` script.
    pub fn script(self, path: &str, body: &str) -> Self {
        let tree = self.file(path, &format!("#!/bin/sh\n{body}\n"));
        let p = tree.dir.path().join(path);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        tree
    }

    /// `pexen run TREE --message-format json --state TREE/.pexen ARGS...`
    pub fn run(&self, args: &[&str]) -> RunResult {
        let state = self.dir.path().join(".pexen");
        let out = pexen()
            .arg("run")
            .arg(self.dir.path())
            .args(["--message-format", "json", "--state"])
            .arg(&state)
            .args(args)
            .output()
            .expect("run pexen");
        RunResult::new(out)
    }

    /// Starts `pexen run TREE --message-format json --state TREE/.pexen ARGS...` with piped
    /// stdout and stderr, for tests that act while it runs (interrupts, kills).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        pexen()
            .arg("run")
            .arg(self.dir.path())
            .args(["--message-format", "json", "--state"])
            .arg(self.dir.path().join(".pexen"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start pexen")
    }

    /// `pexen SUBCOMMAND TREE ARGS...` (human output).
    pub fn cmd(&self, sub: &str, args: &[&str]) -> Output {
        pexen()
            .arg(sub)
            .arg(self.dir.path())
            .args(args)
            .output()
            .expect("run pexen")
    }
}

pub struct RunResult {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub events: Vec<Value>,
}

impl RunResult {
    pub fn new(out: Output) -> Self {
        let Output {
            status,
            stdout,
            stderr,
        } = out;
        let stdout = String::from_utf8_lossy(&stdout).into_owned();
        let events = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        Self {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            events,
        }
    }

    pub fn of_type(&self, ty: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == ty).collect()
    }

    /// The one `task-finished` event of `task`.
    pub fn finished(&self, task: &str) -> &Value {
        let all: Vec<_> = self
            .events
            .iter()
            .filter(|e| e["type"] == "task-finished" && e["task"] == task)
            .collect();
        assert_eq!(
            all.len(),
            1,
            "one task-finished for {task}: {}",
            self.stderr
        );
        all[0]
    }

    pub fn outcome(&self, task: &str) -> String {
        self.finished(task)["outcome"].as_str().unwrap().to_string()
    }

    /// Index of the first event of `ty` for `task`.
    pub fn index(&self, ty: &str, task: &str) -> usize {
        self.events
            .iter()
            .position(|e| e["type"] == ty && e["task"] == task)
            .unwrap_or_else(|| panic!("no {ty} for {task}"))
    }

    pub fn started(&self) -> Vec<String> {
        self.of_type("task-started")
            .iter()
            .map(|e| e["task"].as_str().unwrap().to_string())
            .collect()
    }
}

/// True while process `pid` exists (zombies included).
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// True while process `pid` runs: a zombie (ended, not yet reaped by a parent that is not this
/// test) does not run.
pub fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until a task has written a pid (a whole line) to `path`, and returns it.
pub fn wait_for_pid(path: &Path) -> i32 {
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Some(line) = text.strip_suffix('\n') {
                return line.trim().parse().expect("a pid");
            }
        }
        std::thread::yield_now();
    }
}
