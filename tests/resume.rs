//! Journal and `--resume` on real trees (SPEC section 6, issue #5): `kill -9` at arbitrary
//! moments, exports restored from the journal, fingerprints as an incremental build, and damaged
//! or unusable state directories.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

use common::{factory, pexen, RunResult, Tree};
use serde_json::Value;

/// Lines of `runs.log` per task name (each task appends its name once per run).
fn run_counts(log: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *counts.entry(line.to_string()).or_default() += 1;
    }
    counts
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The tasks that were taken from the journal (`resumed: true`), sorted.
fn resumed(r: &RunResult) -> Vec<String> {
    sorted(
        r.of_type("task-finished")
            .iter()
            .filter(|e| e["resumed"] == true)
            .map(|e| e["task"].as_str().unwrap().to_string())
            .collect(),
    )
}

/// A deterministic pseudo-random sequence (SplitMix64): the test picks the same moments on
/// every machine.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// 48 short tasks: four chains of six (`c0s0` -> `c0s1` -> ...) and 24 independent ones. Each
/// appends its name to `runs.log` (O_APPEND: lines never tear).
fn kill_tree() -> (Tree, Vec<String>) {
    let t = Tree::new();
    let log = t.path().join("runs.log");
    let run = format!(r#"run: Shell("echo $PEXEN_TASK >> {}")"#, log.display());
    let mut ron = String::from("{\n");
    let mut names = Vec::new();
    for c in 0..4 {
        for s in 0..6 {
            let requires = if s == 0 {
                String::new()
            } else {
                format!(r#", requires: ["c{c}s{}"]"#, s - 1)
            };
            let _ = writeln!(
                ron,
                "    \"c{c}s{s}\": ({run}, provides: [\"c{c}s{s}\"]{requires}),"
            );
            names.push(format!("k/c{c}s{s}"));
        }
    }
    for i in 0..24 {
        let _ = writeln!(ron, "    \"i{i:02}\": ({run}),");
        names.push(format!("k/i{i:02}"));
    }
    ron += "}\n";
    // The last chain steps provide tokens nobody requires: warnings, not errors.
    let t = t.file("k.tasks.ron", &ron);
    (t, sorted(names))
}

/// Starts `pexen run` (JSON, `-j 2`) with the write end of a pipe as fd 3. Nothing in pexen
/// closes inherited descriptors, so every task process holds it too: the read end reaches EOF
/// only once pexen and every task it started (orphans of a `kill -9` included) have exited.
fn spawn_with_barrier(t: &Tree, extra: &[&str]) -> (std::process::Child, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors; both are owned below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let w = write.as_raw_fd();
    let mut cmd = pexen();
    cmd.arg("run")
        .arg(t.path())
        .args(["-j", "2", "--message-format", "json", "--state"])
        .arg(t.path().join(".pexen"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: dup2 is async-signal-safe; the copy on fd 3 is not close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(w, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(write);
    (child, File::from(read))
}

#[test]
fn kill_9_at_random_moments_then_resume_reruns_at_most_the_running_tasks() {
    let mut rng = SplitMix(0x5eed_0005);
    for iteration in 0..3 {
        let (tree, names) = kill_tree();
        let log = tree.path().join("runs.log");
        // Kill after K finished tasks, 1 <= K < 47.
        let k = 1 + rng.below(names.len() as u64 - 2) as usize;
        let (mut child, mut barrier) = spawn_with_barrier(&tree, &[]);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        let mut finished = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            finished += usize::from(line.contains(r#""type":"task-finished""#));
            seen.push(line);
            if finished == k {
                break;
            }
        }
        assert_eq!(finished, k, "iteration {iteration}: the run ended early");
        child.kill().unwrap(); // SIGKILL
                               // What pexen printed before it died (the last line may be cut).
        seen.extend(lines.map_while(Result::ok));
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        // Every orphaned task has exited (EOF on the inherited pipe): runs.log is final.
        let mut rest = Vec::new();
        barrier.read_to_end(&mut rest).unwrap();
        let printed: Vec<Value> = seen
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let reported: BTreeSet<String> = printed
            .iter()
            .filter(|e| e["type"] == "task-finished")
            .map(|e| e["task"].as_str().unwrap().to_string())
            .collect();
        assert!(reported.len() >= k);
        let first = run_counts(&log);

        let r = tree.run(&["--resume", "-j", "2"]);
        assert_eq!(r.code, 0, "iteration {iteration} (K={k}): {}", r.stderr);
        assert!(
            r.stderr.is_empty() || !r.stderr.contains("torn"),
            "{}",
            r.stderr
        );
        let counts = run_counts(&log);
        let mut twice = Vec::new();
        for name in &names {
            let f = r.finished(name);
            assert_eq!(f["outcome"], "pass", "{name}: {f}");
            let n = counts.get(name).copied().unwrap_or(0);
            assert!((1..=2).contains(&n), "{name} ran {n} times");
            if reported.contains(name) {
                // Printed, so journaled: taken from the journal, never rerun.
                assert_eq!(f["resumed"], true, "iteration {iteration}: {name}");
                assert_eq!(n, 1, "{name}");
            }
            if f["resumed"] == true {
                assert_eq!(n, 1, "a resumed task ran again: {name}");
            } else {
                assert_eq!(
                    n,
                    first.get(name).copied().unwrap_or(0) + 1,
                    "{name} ran in the resumed run"
                );
            }
            if n == 2 {
                twice.push(name.clone());
            }
        }
        // Only tasks started but not journaled at the kill run twice: at most -j of them.
        assert!(
            twice.len() <= 2,
            "iteration {iteration} (K={k}): ran twice: {twice:?}"
        );
        // The journal now holds the whole run: another resume runs nothing.
        let again = tree.run(&["--resume", "-j", "2"]);
        assert_eq!(again.code, 0);
        assert!(again.started().is_empty(), "{:?}", again.started());
        assert_eq!(resumed(&again), names);
    }
}

#[test]
fn resume_restores_exports_without_rerunning_the_provider() {
    let t = Tree::new()
        .file(
            "provider.ron",
            r#"(run: Shell("echo run >> provider.count; echo KEY=from-provider >> $PEXEN_EXPORT"), provides: ["db"])"#,
        )
        .file(
            "dependent.ron",
            r#"(run: Shell("test ! -e fail.marker && test \"$KEY\" = from-provider"), requires: ["db"])"#,
        )
        .file("fail.marker", "");
    let r = t.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.outcome("provider"), "pass");
    assert_eq!(r.outcome("dependent"), "fail");

    std::fs::remove_file(t.path().join("fail.marker")).unwrap();
    let r = t.run(&["--resume"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.finished("provider")["resumed"], true);
    assert_eq!(r.finished("provider")["outcome"], "pass");
    assert_eq!(r.started(), ["dependent"]);
    assert_eq!(r.outcome("dependent"), "pass", "KEY was not restored");
    assert_eq!(r.finished("dependent")["resumed"], false);
    let count = std::fs::read_to_string(t.path().join("provider.count")).unwrap();
    assert_eq!(count.lines().count(), 1, "the provider ran again");

    // The resumed run journaled the provider again, exports included: a third run still works.
    let r = t.run(&["--resume", "--filter", "provider"]);
    assert_eq!(r.code, 0);
    std::fs::write(
        t.path().join("dependent.ron"),
        r#"(run: Shell("test \"$KEY\" = from-provider && echo changed"), requires: ["db"])"#,
    )
    .unwrap();
    let r = t.run(&["--resume"]);
    assert_eq!(r.started(), ["dependent"]);
    assert_eq!(r.outcome("dependent"), "pass", "{}", r.stderr);
}

/// A tree whose tasks log their runs: a script task (`gen/make.sh`, providing `gen` through its
/// `_dir.ron`) with two levels of dependents, a command running a hidden helper, a task with
/// `inputs` and its dependent, and an unrelated task.
fn fingerprint_tree() -> Tree {
    let t = Tree::new();
    let log = t.path().join("runs.log");
    let echo = r#"Shell("echo $PEXEN_TASK >> $LOG")"#;
    t.file(
        "_dir.ron",
        &format!(r#"(env: {{"LOG": "{}"}})"#, log.display()),
    )
    .file("gen/_dir.ron", r#"(provides: ["gen"])"#)
    .script("gen/make.sh", "echo $PEXEN_TASK >> $LOG")
    .file(
        "use-gen.ron",
        &format!(r#"(run: {echo}, requires: ["gen"], provides: ["mid"])"#),
    )
    .file("final.ron", &format!(r#"(run: {echo}, requires: ["mid"])"#))
    .script(".tools/tool.sh", "echo $PEXEN_TASK >> $LOG")
    .file("tool.ron", r#"(run: Cmd(["./.tools/tool.sh"]))"#)
    .file("data/x.txt", "x1\n")
    .file(
        "data.ron",
        &format!(r#"(run: {echo}, inputs: ["data/*.txt"], provides: ["data"])"#),
    )
    .file(
        "report.ron",
        &format!(r#"(run: {echo}, requires: ["data"])"#),
    )
    .file("other.ron", &format!("(run: {echo})"))
}

const ALL: [&str; 7] = [
    "data",
    "final",
    "gen/make.sh",
    "other",
    "report",
    "tool",
    "use-gen",
];

/// `--resume --explain`: what ran (sorted) and the explanation on stderr.
fn resume_explain(t: &Tree) -> (Vec<String>, String) {
    let r = t.run(&["--resume", "--explain"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for name in ALL {
        assert_eq!(r.outcome(name), "pass", "{name}");
    }
    (sorted(r.started()), r.stderr)
}

#[test]
fn fingerprints_rerun_what_changed_and_what_depends_on_it() {
    let t = fingerprint_tree();
    let r = t.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sorted(r.started()), ALL);

    // Unchanged tree: everything resumed, nothing ran.
    let (ran, err) = resume_explain(&t);
    assert!(ran.is_empty(), "{ran:?}");
    assert!(
        err.contains("resume other: unchanged, last ended pass"),
        "{err}"
    );

    // The script's content.
    std::fs::write(
        t.path().join("gen/make.sh"),
        "#!/bin/sh\n# edited\necho $PEXEN_TASK >> $LOG\n",
    )
    .unwrap();
    let (ran, err) = resume_explain(&t);
    assert_eq!(ran, ["final", "gen/make.sh", "use-gen"]);
    assert!(err.contains("run gen/make.sh: program changed"), "{err}");
    assert!(
        err.contains("run use-gen: provider gen/make.sh changed"),
        "{err}"
    );
    assert!(err.contains("run final: provider use-gen changed"), "{err}");

    // A helper program the task runs (in a hidden directory, so not a task itself).
    std::fs::write(
        t.path().join(".tools/tool.sh"),
        "#!/bin/sh\necho $PEXEN_TASK >> $LOG # edited\n",
    )
    .unwrap();
    let (ran, err) = resume_explain(&t);
    assert_eq!(ran, ["tool"]);
    assert!(err.contains("run tool: program changed"), "{err}");

    // An input's content, then a new file matching the input glob.
    std::fs::write(t.path().join("data/x.txt"), "x2\n").unwrap();
    let (ran, err) = resume_explain(&t);
    assert_eq!(ran, ["data", "report"]);
    assert!(err.contains("run data: inputs changed"), "{err}");
    assert!(err.contains("run report: provider data changed"), "{err}");
    std::fs::write(t.path().join("data/y.txt"), "y\n").unwrap();
    let (ran, _) = resume_explain(&t);
    assert_eq!(ran, ["data", "report"]);

    // The definition itself.
    std::fs::write(
        t.path().join("other.ron"),
        r#"(run: Shell("echo $PEXEN_TASK >> $LOG; true"))"#,
    )
    .unwrap();
    let (ran, err) = resume_explain(&t);
    assert_eq!(ran, ["other"]);
    assert!(err.contains("run other: definition changed"), "{err}");

    let counts = run_counts(&t.path().join("runs.log"));
    let expected: BTreeMap<String, usize> = [
        ("data", 3),
        ("final", 2),
        ("gen/make.sh", 2),
        ("other", 2),
        ("report", 3),
        ("tool", 2),
        ("use-gen", 2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(counts, expected);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "out" {
            continue; // build products of a run in place
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap(); // keeps the permissions
        }
    }
}

#[test]
fn the_build_factory_rebuilds_incrementally() {
    let t = Tree::new();
    copy_tree(&factory("build"), t.path());
    let r = t.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let all = ["compile/a", "compile/b", "compile/main", "link", "test"];
    assert_eq!(sorted(r.started()), all);

    let r = t.run(&["--resume"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.started().is_empty(), "{:?}", r.started());
    assert_eq!(resumed(&r), all);

    std::fs::write(t.path().join("src/b.src"), "b: ok\nb: now with more\n").unwrap();
    let r = t.run(&["--resume", "--explain"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sorted(r.started()), ["compile/b", "link", "test"]);
    assert_eq!(resumed(&r), ["compile/a", "compile/main"]);
    assert!(
        r.stderr.contains("run compile/b: inputs changed"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("run test: provider link changed"),
        "{}",
        r.stderr
    );
    let app = std::fs::read_to_string(t.path().join("out/app")).unwrap();
    assert!(app.contains("b: now with more"), "{app}");
}

#[test]
fn resume_without_a_journal_runs_everything() {
    let t = Tree::new()
        .file("a.ron", r#"(run: Shell("true"), provides: ["a"])"#)
        .file("b.ron", r#"(run: Shell("true"), requires: ["a"])"#);
    let r = t.run(&["--resume"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.started(), ["a", "b"]);
    assert!(resumed(&r).is_empty());
    assert!(t.path().join(".pexen/journal").exists());
    let r = t.run(&["--resume"]);
    assert_eq!(resumed(&r), ["a", "b"]);
}

// --- damage -------------------------------------------------------------------------------

/// Frames of a journal: (offset, payload length, payload as JSON).
fn frames(bytes: &[u8]) -> Vec<(usize, usize, Value)> {
    let mut out = Vec::new();
    let mut at = 12;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let payload = &bytes[at + 8..at + 8 + len];
        out.push((at, len, serde_json::from_slice(payload).unwrap()));
        at += 8 + len;
    }
    out
}

/// A tree of four independent passing tasks, run once.
fn journaled_tree() -> (Tree, std::path::PathBuf) {
    let t = Tree::new();
    let log = t.path().join("runs.log");
    let mut t = t;
    for name in ["a", "b", "c", "d"] {
        t = t.file(
            &format!("{name}.ron"),
            &format!(r#"(run: Shell("echo {name} >> {}"))"#, log.display()),
        );
    }
    let r = t.run(&["-j", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let journal = t.path().join(".pexen/journal");
    (t, journal)
}

#[test]
fn a_torn_last_record_is_dropped_with_a_notice() {
    let (t, journal) = journaled_tree();
    let bytes = std::fs::read(&journal).unwrap();
    let f = frames(&bytes);
    // Cut the file in the middle of its last task record (a kill -9 cannot do this with one
    // write(2) per record, a power failure can): the run-finished record goes too.
    let (at, len, last) = f
        .iter()
        .rev()
        .find(|(_, _, v)| v.get("task-finished").is_some())
        .unwrap();
    let torn = last["task-finished"]["name"].as_str().unwrap().to_string();
    std::fs::write(&journal, &bytes[..at + 8 + len / 2]).unwrap();

    let r = t.run(&["--resume"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("dropped a torn last record") && r.stderr.contains("journal"),
        "{}",
        r.stderr
    );
    assert_eq!(r.started(), std::slice::from_ref(&torn));
    assert_eq!(resumed(&r).len(), 3);
    let counts = run_counts(&t.path().join("runs.log"));
    assert_eq!(counts[&torn], 2);

    // The damage was cut off before appending: the journal loads cleanly again.
    let r = t.run(&["--resume"]);
    assert_eq!(r.code, 0);
    assert!(!r.stderr.contains("torn"), "{}", r.stderr);
    assert_eq!(resumed(&r), ["a", "b", "c", "d"]);
}

/// Runs `--resume` and `report` on a state that must be refused: exit 3, a message naming
/// `needle`, no event on stdout, and the journal left as it was.
fn assert_refused(t: &Tree, state: &Path, needle: &str) {
    let before = std::fs::read(state.join("journal")).ok();
    let r = RunResult::new(
        pexen()
            .arg("run")
            .arg(t.path())
            .args(["--message-format", "json", "--resume", "--state"])
            .arg(state)
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(needle),
        "missing {needle:?} in: {}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(r.events.is_empty(), "{}", r.stdout);
    assert_eq!(std::fs::read(state.join("journal")).ok(), before);
    let out = pexen()
        .arg("report")
        .arg("--junit")
        .arg(t.path().join("r.xml"))
        .arg("--state")
        .arg(state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(!t.path().join("r.xml").exists());
}

#[test]
fn damage_in_the_middle_is_exit_3_and_leaves_the_journal_alone() {
    let (t, journal) = journaled_tree();
    let mut bytes = std::fs::read(&journal).unwrap();
    let f = frames(&bytes);
    let (at, len, _) = f
        .iter()
        .find(|(_, _, v)| v.get("task-finished").is_some())
        .unwrap();
    bytes[at + 8 + len / 2] ^= 0x20;
    std::fs::write(&journal, &bytes).unwrap();
    let state = t.path().join(".pexen");
    assert_refused(
        &t,
        &state,
        &format!("journal {} is damaged at byte {at}", journal.display()),
    );
    assert_eq!(
        run_counts(&t.path().join("runs.log"))
            .values()
            .sum::<usize>(),
        4
    );
}

#[test]
fn another_format_version_is_exit_3() {
    let (t, journal) = journaled_tree();
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&journal, &bytes).unwrap();
    assert_refused(&t, &t.path().join(".pexen"), "has format version 99");
}

#[test]
fn a_state_path_that_is_a_file_is_exit_3() {
    let t = Tree::new()
        .file("a.ron", r#"(run: Shell("true"))"#)
        .file("state-file", "not a directory\n");
    let state = t.path().join("state-file");
    for resume in [false, true] {
        let mut cmd = pexen();
        cmd.arg("run")
            .arg(t.path())
            .args(["--message-format", "json", "--state"])
            .arg(&state);
        if resume {
            cmd.arg("--resume");
        }
        let r = RunResult::new(cmd.output().unwrap());
        assert_eq!(r.code, 3, "resume={resume}: {}", r.stderr);
        assert!(r.stderr.contains("state-file"), "{}", r.stderr);
        assert!(r.events.is_empty(), "nothing ran: {}", r.stdout);
    }
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "not a directory\n"
    );
}

#[test]
fn a_skip_decided_by_the_scheduler_runs_again_on_resume() {
    let t = Tree::new()
        .file(
            "provider.ron",
            r#"(run: Shell("test ! -e fail.marker"), provides: ["db"])"#,
        )
        .file("dependent.ron", r#"(run: Shell("true"), requires: ["db"])"#)
        .file(
            "own-skip.ron",
            r#"(run: Shell("echo run >> own-skip.count; exit 77"))"#,
        )
        .file("fail.marker", "");
    let r = t.run(&[]);
    assert_eq!(r.code, 1);
    assert_eq!(r.outcome("dependent"), "skip");
    assert_eq!(r.outcome("own-skip"), "skip");

    std::fs::remove_file(t.path().join("fail.marker")).unwrap();
    let r = t.run(&["--resume", "--explain"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Skipped because its provider failed: it never ran, so it runs now that the provider passes.
    assert_eq!(
        sorted(r.started()),
        ["dependent", "provider"],
        "{}",
        r.stderr
    );
    assert_eq!(r.outcome("dependent"), "pass");
    // Skipped by its own decision (exit 77): a result like any other, taken from the journal.
    assert_eq!(resumed(&r), ["own-skip"]);
    assert!(
        r.stderr
            .contains("run dependent: skipped without running last time"),
        "{}",
        r.stderr
    );
    let count = std::fs::read_to_string(t.path().join("own-skip.count")).unwrap();
    assert_eq!(count.lines().count(), 1);
}
