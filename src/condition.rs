//! Conditions (`when`, SPEC 13): whether a task applies to this machine, decided once when the
//! run starts. A task whose condition does not hold ends `skip` with the part that failed as
//! its cause, and does not satisfy its tokens.
//!
//! Every part that is given must hold: `os` and `arch` (one of the listed values, as Rust names
//! them: `linux`, `macos`, `x86_64`, `aarch64`, ...), `env` (each variable set to exactly that
//! value), `exists` (each path exists, relative to the condition's directory), `command` (exits
//! 0 within 10 s). Identical conditions (a `_dir.ron` condition shared by a whole directory) are
//! evaluated once, and their commands run in parallel.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::pool::limited::{self, Ended};
use crate::task::Task;

/// How long a `command` condition may run before it counts as false.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(10);

/// Operating systems a condition may name (the values of `std::env::consts::OS`).
pub const KNOWN_OS: &[&str] = &[
    "linux",
    "macos",
    "ios",
    "freebsd",
    "dragonfly",
    "netbsd",
    "openbsd",
    "solaris",
    "illumos",
    "android",
    "windows",
];

/// Architectures a condition may name (the values of `std::env::consts::ARCH`).
pub const KNOWN_ARCH: &[&str] = &[
    "x86",
    "x86_64",
    "arm",
    "aarch64",
    "loongarch64",
    "m68k",
    "csky",
    "mips",
    "mips64",
    "powerpc",
    "powerpc64",
    "riscv64",
    "s390x",
    "sparc64",
];

/// One `when` condition. Build one with the methods, or write it in a task file:
/// `when: (os: ["linux"], exists: ["/dev/kvm"])`.
///
/// ```
/// use pexen::Condition;
/// let c = Condition::default().os(["linux", "macos"]).env("CI", "true");
/// assert_eq!(c.os, ["linux", "macos"]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Condition {
    /// The machine's OS is one of these (empty: any).
    pub os: Vec<String>,
    /// The machine's architecture is one of these (empty: any).
    pub arch: Vec<String>,
    /// Each variable is set to exactly this value.
    pub env: BTreeMap<String, String>,
    /// Each path exists (relative ones from `dir`).
    pub exists: Vec<String>,
    /// A program and its arguments that must exit 0 within [`COMMAND_LIMIT`] (empty: none).
    pub command: Vec<String>,
    /// Where relative `exists` paths and the `command` start from: the directory of the file
    /// that declares the condition (`None`: the current directory).
    pub dir: Option<PathBuf>,
}

impl Condition {
    #[must_use]
    pub fn os<I: IntoIterator<Item = S>, S: Into<String>>(mut self, os: I) -> Self {
        self.os.extend(os.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn arch<I: IntoIterator<Item = S>, S: Into<String>>(mut self, arch: I) -> Self {
        self.arch.extend(arch.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    #[must_use]
    pub fn exists(mut self, path: impl Into<String>) -> Self {
        self.exists.push(path.into());
        self
    }

    #[must_use]
    pub fn command<I: IntoIterator<Item = S>, S: Into<String>>(mut self, argv: I) -> Self {
        self.command = argv.into_iter().map(Into::into).collect();
        self
    }

    /// A short description for listings: `os=linux; exists=/dev/kvm; command=test -w /tmp`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.os.is_empty() {
            parts.push(format!("os={}", self.os.join("|")));
        }
        if !self.arch.is_empty() {
            parts.push(format!("arch={}", self.arch.join("|")));
        }
        for (k, v) in &self.env {
            parts.push(format!("env {k}={v}"));
        }
        for p in &self.exists {
            parts.push(format!("exists={p}"));
        }
        if !self.command.is_empty() {
            parts.push(format!("command={}", self.command.join(" ")));
        }
        parts.join("; ")
    }

    /// The parts that need no process, in the order written: why the first one fails.
    fn check_static(&self) -> Option<String> {
        let os = std::env::consts::OS;
        if !self.os.is_empty() && !self.os.iter().any(|o| o == os) {
            return Some(format!("os is {os}, not {}", self.os.join(" or ")));
        }
        let arch = std::env::consts::ARCH;
        if !self.arch.is_empty() && !self.arch.iter().any(|a| a == arch) {
            return Some(format!("arch is {arch}, not {}", self.arch.join(" or ")));
        }
        for (k, want) in &self.env {
            match std::env::var_os(k) {
                None => return Some(format!("${k} is not set (expected `{want}`)")),
                Some(v) if v.to_string_lossy() != want.as_str() => {
                    return Some(format!("${k} is `{}`, not `{want}`", v.to_string_lossy()))
                }
                Some(_) => {}
            }
        }
        for p in &self.exists {
            if !self.path(p).exists() {
                return Some(format!("{p} does not exist"));
            }
        }
        None
    }

    fn path(&self, p: &str) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.join(p),
            None => PathBuf::from(p),
        }
    }

    /// Runs the `command` part: why it fails, if it does.
    fn check_command(&self) -> Option<String> {
        let (program, args) = self.command.split_first()?;
        let shown = self.command.join(" ");
        let mut cmd = Command::new(program);
        cmd.args(args).env("PEXEN_CONDITION", "1");
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        match limited::run(&mut cmd, COMMAND_LIMIT, false) {
            Err(e) => Some(format!("`{shown}` could not start: {e}")),
            Ok(Ended::TimedOut { .. }) => Some(format!(
                "`{shown}` did not finish within {}s",
                COMMAND_LIMIT.as_secs()
            )),
            Ok(Ended::Exited { status, .. }) if status.success() => None,
            Ok(Ended::Exited { status, .. }) => {
                Some(format!("`{shown}` {}", limited::describe(status)))
            }
        }
    }

    /// Problems visible without running anything: an OS or architecture Rust does not know
    /// (a typo would silently skip the task everywhere), an empty program.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for os in &self.os {
            if !KNOWN_OS.contains(&os.as_str()) {
                out.push(format!(
                    "unknown os `{os}`, expected one of {}",
                    KNOWN_OS.join(", ")
                ));
            }
        }
        for arch in &self.arch {
            if !KNOWN_ARCH.contains(&arch.as_str()) {
                out.push(format!(
                    "unknown arch `{arch}`, expected one of {}",
                    KNOWN_ARCH.join(", ")
                ));
            }
        }
        if self.command.first().is_some_and(|p| p.trim().is_empty()) {
            out.push("empty `command`, expected a program and its arguments".to_string());
        }
        out
    }
}

/// Evaluates the conditions of `tasks`: for each task whose conditions do not all hold, its
/// index and the cause (`condition: /dev/kvm does not exist`). Each distinct condition is
/// evaluated once; the commands of those that need one run in parallel.
pub(crate) fn evaluate(tasks: &[Task]) -> Vec<(u32, String)> {
    // Most runs have no condition at all: one pass over the tasks, no allocation.
    if tasks.iter().all(|t| t.meta.more.when.is_empty()) {
        return Vec::new();
    }
    let mut verdicts: HashMap<&Condition, Option<String>> = HashMap::new();
    for t in tasks {
        for c in &t.meta.more.when {
            verdicts.entry(c).or_insert_with(|| c.check_static());
        }
    }
    let commands: Vec<&Condition> = verdicts
        .iter()
        .filter(|(c, v)| v.is_none() && !c.command.is_empty())
        .map(|(c, _)| *c)
        .collect();
    // One thread per command, a bounded number at a time: they mostly wait.
    for chunk in commands.chunks(64) {
        let results: Vec<Option<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|c| s.spawn(|| c.check_command()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Some("the check panicked".into()))
                })
                .collect()
        });
        for (c, r) in chunk.iter().zip(results) {
            verdicts.insert(c, r);
        }
    }
    tasks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            t.meta
                .more
                .when
                .iter()
                .find_map(|c| verdicts[c].as_ref())
                .map(|why| (i as u32, format!("condition: {why}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(c: Condition) -> Option<String> {
        let tasks = vec![Task::closure("t", |_| Ok(())).when(c)];
        evaluate(&tasks).pop().map(|(_, cause)| cause)
    }

    #[test]
    fn each_part_holds_or_names_itself() {
        let here = std::env::consts::OS;
        assert_eq!(cause(Condition::default().os([here])), None);
        let other = if here == "linux" { "macos" } else { "linux" };
        assert_eq!(
            cause(Condition::default().os([other])),
            Some(format!("condition: os is {here}, not {other}"))
        );
        assert_eq!(
            cause(Condition::default().arch([std::env::consts::ARCH])),
            None
        );
        assert_eq!(
            cause(Condition::default().exists("/definitely/not/here")),
            Some("condition: /definitely/not/here does not exist".into())
        );
        assert_eq!(cause(Condition::default().exists("/")), None);
        assert_eq!(
            cause(Condition::default().env("PEXEN_TEST_SURELY_UNSET", "1")),
            Some("condition: $PEXEN_TEST_SURELY_UNSET is not set (expected `1`)".into())
        );
        assert_eq!(cause(Condition::default().command(["true"])), None);
        assert_eq!(
            cause(Condition::default().command(["sh", "-c", "exit 4"])),
            Some("condition: `sh -c exit 4` exited with code 4".into())
        );
        assert!(cause(Condition::default().command(["/no/such/program"]))
            .unwrap()
            .starts_with("condition: `/no/such/program` could not start: "));
    }

    #[test]
    fn every_condition_must_hold_the_first_failing_one_is_the_cause() {
        let tasks = vec![Task::closure("t", |_| Ok(()))
            .when(Condition::default().exists("/"))
            .when(Condition::default().exists("/nope-a"))
            .when(Condition::default().exists("/nope-b"))];
        assert_eq!(
            evaluate(&tasks),
            [(0, "condition: /nope-a does not exist".to_string())]
        );
    }

    #[test]
    fn typos_are_problems_before_anything_runs() {
        let c = Condition::default()
            .os(["linx"])
            .arch(["x86_64"])
            .command([" "]);
        let p = c.problems();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("unknown os `linx`, expected one of linux"));
    }
}
