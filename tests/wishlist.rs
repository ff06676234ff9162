//! SPEC 13 end to end on the CLI: exclusivity groups, alternatives (virtual tokens), conditions
//! and generators, on real trees in temporary directories. Concurrency is read from the
//! recorded JSON events (they are in the order of the scheduler's transitions).

mod common;

use std::collections::HashMap;

use common::{factory, pexen, RunResult, Tree};
use serde_json::Value;

/// For a run's events: checks that every task starts during a turn of its own group, that at
/// most `jobs[group]` of them run at once, and returns the turns in order.
fn group_turns(
    r: &RunResult,
    group_of: impl Fn(&str) -> String,
    jobs: &HashMap<&str, usize>,
) -> Vec<String> {
    let mut turns = Vec::new();
    let mut active: Option<String> = None;
    let mut running: HashMap<String, String> = HashMap::new();
    for e in &r.events {
        let task = e["task"].as_str().unwrap_or("");
        match e["type"].as_str().unwrap() {
            "group-started" => {
                assert!(active.is_none(), "two groups at once: {}", r.stdout);
                assert!(running.is_empty(), "a group starts while tasks run");
                let g = e["group"].as_str().unwrap().to_string();
                turns.push(g.clone());
                active = Some(g);
            }
            "group-finished" => {
                assert_eq!(active.as_deref(), e["group"].as_str());
                assert!(running.is_empty(), "a group ends while tasks run");
                active = None;
            }
            "task-started" => {
                let g = group_of(task);
                assert_eq!(
                    active.as_deref(),
                    Some(g.as_str()),
                    "{task} outside its turn"
                );
                running.insert(task.to_string(), g.clone());
                let n = running.values().filter(|x| **x == g).count();
                assert!(n <= jobs[g.as_str()], "{n} tasks of `{g}` at once");
            }
            "task-finished" => {
                running.remove(task);
            }
            _ => {}
        }
    }
    assert!(active.is_none(), "the last turn is closed");
    turns
}

fn group_of(task: &str) -> String {
    match task.split_once('/') {
        Some((g @ ("vm" | "sys"), _)) => g.to_string(),
        _ => String::new(),
    }
}

#[test]
fn groups_take_turns_each_with_its_own_jobs() {
    // `sys` allows 3 at once while -j is 2: its first three tasks wait for each other (a
    // barrier of files, given up after 20 s), which only passes if three really run together.
    let barrier = r"touch b-${PEXEN_TASK##*/}; i=0; while [ $(ls b-* | wc -l) -lt 3 ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done; [ $(ls b-* | wc -l) -ge 3 ]";
    let sys = r#"{"1": (run: Shell("BARRIER")), "2": (run: Shell("BARRIER")), "3": (run: Shell("BARRIER")),
                  "4": (run: Shell("true")), "late": (run: Shell("true"), requires: ["booted"])}"#
        .replace("BARRIER", barrier);
    let tree = Tree::new()
        .file("_dir.ron", r#"(groups: {"vm": (jobs: 1), "sys": (jobs: 3)})"#)
        .file("vm/_dir.ron", r#"(group: "vm")"#)
        .file(
            "vm/boot.tasks.ron",
            r#"{"a": (run: Shell("true"), provides: ["booted"]), "b": (run: Shell("true")), "c": (run: Shell("true"))}"#,
        )
        .file("sys/_dir.ron", r#"(group: "sys")"#)
        .file("sys/t.tasks.ron", &sys)
        .file("free.ron", r#"(run: Shell("true"), priority: 5)"#);
    let r = tree.run(&["-j", "2"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let jobs = HashMap::from([("vm", 1), ("sys", 3), ("", 2)]);
    let turns = group_turns(&r, group_of, &jobs);
    // The best ready task first (definition order: sys/... before vm/...), a group runs until
    // it has nothing ready, `sys/late` waits for vm: `sys` has a second turn; `free`
    // (priority 5) last.
    assert_eq!(turns, ["sys", "vm", "sys", ""], "{}", r.stdout);
    assert_eq!(r.of_type("task-finished").len(), 9);
}

#[test]
fn group_mistakes_are_reported_with_their_position() {
    let tree = Tree::new()
        .file("_dir.ron", r#"(groups: {"vm": (jobs: 1), "unused": ()})"#)
        .file("a.ron", "(\n  run: Shell(\"true\"),\n  group: \"vn\",\n)")
        .file("b.ron", r#"(run: Shell("true"), group: "vm")"#)
        .file("sub/_dir.ron", r#"(groups: {"x": ()})"#)
        .file("sub/c.ron", r#"(run: Shell("true"))"#);
    let out = tree.cmd("check", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("a.ron:3:10: unknown group `vn`, expected one of the groups declared in the root `_dir.ron`: `unused`, `vm`"), "{err}");
    assert!(err.contains("sub/_dir.ron:1:2: `groups` may only be declared in the `_dir.ron` at the root of the tree"), "{err}");

    // Declared but unused: a warning, with the position of the declaration.
    let tree = Tree::new()
        .file("_dir.ron", r#"(groups: {"vm": (jobs: 1), "unused": ()})"#)
        .file("b.ron", r#"(run: Shell("true"), group: "vm")"#);
    let out = tree.cmd("check", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("_dir.ron:1:2: group `unused` is declared but no task belongs to it"),
        "{err}"
    );
    // With --message-format json the same warning is also a `warning` object, after run-started.
    let r = tree.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.events[0]["type"], "run-started", "{:?}", r.events);
    assert_eq!(r.events[1]["type"], "warning", "{:?}", r.events);
    assert_eq!(r.events[1]["task"], Value::Null);
    assert!(
        r.events[1]["message"]
            .as_str()
            .unwrap()
            .ends_with("_dir.ron:1:2: group `unused` is declared but no task belongs to it"),
        "{:?}",
        r.events[1]
    );
}

fn mail_tree(exim: &str) -> Tree {
    Tree::new()
        .file("_dir.ron", r#"(virtual: ["mta"])"#)
        .file(
            "exim.ron",
            &format!(r#"(run: Shell("{exim}"), provides: ["mta"])"#),
        )
        .file(
            "postfix.ron",
            r#"(run: Shell("true"), provides: ["mta"], priority: 1)"#,
        )
        .file("send.ron", r#"(run: Shell("true"), requires: ["mta"])"#)
        .file("other.ron", r#"(run: Shell("true"))"#)
}

#[test]
fn a_virtual_token_is_satisfied_by_the_provider_that_succeeds() {
    let r = mail_tree("exit 1").run(&[]);
    assert_eq!(r.code, 1, "exim failed: {}", r.stderr);
    assert_eq!(r.outcome("exim"), "fail");
    assert_eq!(r.outcome("postfix"), "pass");
    assert_eq!(r.outcome("send"), "pass");
    assert!(r.index("task-finished", "postfix") < r.index("task-started", "send"));

    // Every provider failed or was skipped: the cause names each.
    let tree = Tree::new()
        .file("_dir.ron", r#"(virtual: ["mta"])"#)
        .file("a.ron", r#"(run: Shell("exit 2"), provides: ["mta"])"#)
        .file(
            "b.ron",
            r#"(run: Shell("true"), provides: ["mta"], when: (exists: ["nope"]))"#,
        )
        .file("send.ron", r#"(run: Shell("true"), requires: ["mta"])"#);
    let r = tree.run(&[]);
    assert_eq!(r.outcome("send"), "skip");
    assert_eq!(
        r.finished("send")["cause"],
        "required token `mta` is not available: no provider succeeded (`b` was skipped, `a` ended fail)"
    );
}

#[test]
fn a_selection_pulls_in_one_provider_of_a_virtual_token() {
    let tree = mail_tree("true");
    // The best by priority then definition order: exim (0) over postfix (1).
    let r = tree.run(&["--filter", "send"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.of_type("task-finished").len(), 2);
    assert_eq!(r.outcome("exim"), "pass");
    // --prefer names another.
    let r = tree.run(&["--filter", "send", "--prefer", "postfix"]);
    assert_eq!(r.of_type("task-finished").len(), 2);
    assert_eq!(r.outcome("postfix"), "pass");
    // One already selected wins over both.
    let r = tree.run(&[
        "--filter", "send", "--filter", "postfix", "--prefer", "exim",
    ]);
    let names: Vec<_> = r
        .of_type("task-finished")
        .iter()
        .map(|e| e["task"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"postfix".to_string()));
    // A --prefer that names no provider of a virtual token is bad usage.
    let r = tree.run(&["--filter", "send", "--prefer", "other"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--prefer other: the task provides no virtual token (the root `_dir.ron` declares `mta`)"), "{}", r.stderr);
    // A virtual token nobody provides.
    let bad = Tree::new()
        .file("_dir.ron", "(\n  virtual: [\"mta\", \"x\"],\n)")
        .file("a.ron", r#"(run: Shell("true"), provides: ["mta"])"#);
    let out = bad.cmd("check", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("_dir.ron:2:3: token `x` is declared virtual, but no task provides it"));
}

#[test]
fn list_and_graph_show_the_chosen_provider() {
    let tree = mail_tree("true");
    let out = tree.cmd("list", &["--format", "json"]);
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let chosen: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["chosen_for"] != Value::Array(vec![]))
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(chosen, ["exim"]);
    let out = tree.cmd("list", &["--prefer", "postfix"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("postfix  [provides: mta; priority: 1; chosen provider of: mta]"),
        "{text}"
    );
    let out = tree.cmd("graph", &[]);
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(dot.contains(r#"label = "mta (chosen)""#), "{dot}");
    assert!(
        dot.contains(r#"label = "mta (alternative)", style = dashed"#),
        "{dot}"
    );
    // graph --prefer draws the chosen edge from the preferred provider.
    let out = tree.cmd("graph", &["--prefer", "postfix"]);
    let dot = String::from_utf8_lossy(&out.stdout);
    let chosen_from = |dot: &str| -> String {
        let edge = dot
            .lines()
            .find(|l| l.contains("(chosen)"))
            .unwrap_or_else(|| panic!("no chosen edge: {dot}"));
        let from = edge.trim().split(" -> ").next().unwrap().to_string();
        let node = dot
            .lines()
            .find(|l| l.trim().starts_with(&format!("{from} [")))
            .unwrap();
        node.split('"').nth(1).unwrap().to_string()
    };
    assert_eq!(chosen_from(&dot), "postfix", "{dot}");
    let dot = String::from_utf8_lossy(&tree.cmd("graph", &[]).stdout).into_owned();
    assert_eq!(chosen_from(&dot), "exim", "{dot}");
}

#[test]
fn conditions_true_and_false_on_this_machine() {
    let os = std::env::consts::OS;
    let other = if os == "linux" { "macos" } else { "linux" };
    let tree = Tree::new()
        .file("_dir.ron", &format!(r#"(when: (os: ["{os}"]))"#))
        .file("here.ron", r#"(run: Shell("true"), when: (arch: ["x86_64", "aarch64", "riscv64", "x86", "arm", "powerpc64", "s390x"]))"#)
        .file("elsewhere.ron", &format!(r#"(run: Shell("true"), provides: ["t"], when: (os: ["{other}"]))"#))
        .file("after.ron", r#"(run: Shell("true"), requires: ["t"])"#)
        .file("exists.ron", r#"(run: Shell("true"), when: (exists: ["data/present"]))"#)
        .file("data/present", "")
        .file("missing.ron", r#"(run: Shell("true"), when: (exists: ["data/absent"]))"#)
        .file("env.ron", r#"(run: Shell("true"), when: (env: {"PEXEN_T_COND": "yes"}))"#)
        .file("env-wrong.ron", r#"(run: Shell("true"), when: (env: {"PEXEN_T_COND": "no"}))"#)
        .file("cmd.ron", r#"(run: Shell("true"), when: (command: ["sh", "-c", "test -f data/present"]))"#)
        .file("cmd-false.ron", r#"(run: Shell("true"), when: (command: ["sh", "-c", "exit 3"]))"#)
        .file("sub/_dir.ron", r#"(when: (exists: ["nothing-here"]))"#)
        .file("sub/inherits.ron", r#"(run: Shell("true"))"#);
    let out = pexen()
        .arg("run")
        .arg(tree.path())
        .args(["--message-format", "json", "--state"])
        .arg(tree.path().join(".pexen"))
        .env("PEXEN_T_COND", "yes")
        .output()
        .unwrap();
    let r = RunResult::new(out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for t in ["here", "exists", "env", "cmd"] {
        assert_eq!(r.outcome(t), "pass", "{t}");
    }
    let cause = |t: &str| r.finished(t)["cause"].as_str().unwrap().to_string();
    assert_eq!(
        cause("elsewhere"),
        format!("condition: os is {os}, not {other}")
    );
    assert_eq!(
        cause("after"),
        "required token `t` is not available: `elsewhere` was skipped"
    );
    assert_eq!(cause("missing"), "condition: data/absent does not exist");
    assert_eq!(
        cause("env-wrong"),
        "condition: $PEXEN_T_COND is `yes`, not `no`"
    );
    assert_eq!(
        cause("cmd-false"),
        "condition: `sh -c exit 3` exited with code 3"
    );
    assert_eq!(
        cause("sub/inherits"),
        "condition: nothing-here does not exist"
    );
    // Skipped tasks never started.
    assert!(!r.started().contains(&"elsewhere".to_string()));

    let out = tree.cmd("list", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "cmd-false  [when: os={os} and command=sh -c exit 3]"
        )),
        "{text}"
    );
}

#[test]
fn bad_conditions_are_errors_with_positions_and_check_runs_no_command() {
    let tree = Tree::new()
        .file(
            "a.ron",
            "(\n  run: Shell(\"true\"),\n  when: (os: [\"linux\"], kernel: \"6\"),\n)",
        )
        .file("b.ron", "(run: Shell(\"true\"), when: (os: \"linux\"))")
        .file("c.ron", "(run: Shell(\"true\"), when: (os: [\"linx\"]))")
        .file(
            "d.ron",
            "(run: Shell(\"true\"), when: (command: [\"sh\", \"-c\", \"touch ran\"]))",
        );
    let out = tree.cmd("check", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("3 problems"), "{err}");
    assert!(err.contains("a.ron:3:25: unknown field `kernel`, expected one of `os`, `arch`, `env`, `exists`, `command`"), "{err}");
    assert!(err.contains("b.ron:1:33: expected opening `[`"), "{err}");
    assert!(
        err.contains("c.ron:1:28: invalid condition: unknown os `linx`, expected one of linux"),
        "{err}"
    );
    assert!(
        !tree.path().join("ran").exists(),
        "check evaluates no condition"
    );
}

#[test]
fn generators_good_failing_hanging_and_lying() {
    let good = Tree::new()
        .file("_dir.ron", r#"(tags: ["gen"])"#)
        .script(
            "suite.gen",
            r#"[ "$PEXEN_GENERATOR" = 1 ] || exit 9
echo 'generated in' "$(pwd)" >&2
cat <<'EOF'
// written by suite.gen
{
    "a": (run: Shell("test -f suite.gen"), provides: ["x"]),
    "deep/b": (run: Cmd(["./.hidden/helper"]), requires: ["x"]),
}
EOF"#,
        )
        .script(".hidden/helper", "echo helped");
    let out = good.cmd("list", &["--format", "json"]);
    let all: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"suite/a") && names.contains(&"suite/deep/b"),
        "{names:?}"
    );
    assert_eq!(
        all[0]["tags"],
        serde_json::json!(["gen"]),
        "_dir.ron defaults apply"
    );
    let r = good.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.outcome("suite/a"),
        "pass",
        "runs in the generator's directory"
    );
    assert_eq!(r.outcome("suite/deep/b"), "pass");

    // Failing, hanging and lying, all reported together with the tree's other errors.
    let bad = Tree::new()
        .script("fails.gen", "echo 'cannot find the test binary' >&2; exit 3")
        .script("hangs.gen", "echo 'waiting forever' >&2; exec sleep 1000")
        .script("lies.gen", "echo 'looks fine' >&2; printf '{\\n  \"a\": (run: Shell(\"x\"), colour: \"red\"),\\n}\\n'")
        .file("broken.ron", "(run: Shell(\"x\"), priorty: 1)");
    let out = pexen()
        .arg("check")
        .arg(bad.path())
        .env("PEXEN_GENERATOR_TIMEOUT", "1s")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("5 problems"), "{err}");
    assert!(err.contains("fails.gen: generator exited with code 3, expected exit code 0 and its tasks on stdout; its stderr:\n      cannot find the test binary"), "{err}");
    assert!(err.contains("hangs.gen: generator did not finish within 1s (killed), expected it to print its tasks and exit; its stderr:\n      waiting forever"), "{err}");
    assert!(
        err.contains("lies.gen (output):2:26: unknown field `colour`"),
        "{err}"
    );
    assert!(
        err.contains(
            "lies.gen: generator printed invalid tasks (above); its stderr:\n      looks fine"
        ),
        "{err}"
    );
    assert!(
        err.contains("broken.ron:1:19: unknown field `priorty`"),
        "{err}"
    );
}

/// `BIN`'s own verdict per test, from libtest's output (`test NAME ... ok|FAILED|ignored`).
fn libtest_verdicts(bin: &str, env: &[(&str, &str)]) -> HashMap<String, String> {
    let mut cmd = std::process::Command::new(bin);
    cmd.current_dir(factory("libtest/.sample"))
        .args(["--test-threads", "1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("test "))
        .filter_map(|l| l.rsplit_once(" ... "))
        .map(|(name, verdict)| {
            let outcome = match verdict {
                "ok" => "pass",
                "FAILED" => "fail",
                v if v.starts_with("ignored") => "skip",
                v => panic!("unknown verdict {v}"),
            };
            (format!("unit/{name}"), outcome.to_string())
        })
        .collect()
}

#[test]
fn the_libtest_generator_runs_each_test_as_a_task_with_the_same_outcomes() {
    // The sample crate is built into this test's own target directory.
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("libtest-sample");
    let state = tempfile::tempdir().unwrap();
    let junit = state.path().join("junit.xml");
    let out = pexen()
        .arg("run")
        .arg(factory("libtest"))
        .args(["--message-format", "json", "--state"])
        .arg(state.path())
        .arg("--junit")
        .arg(&junit)
        .env("CARGO_TARGET_DIR", &target)
        .env("SAMPLE_FAIL", "1")
        .output()
        .unwrap();
    let r = RunResult::new(out);
    assert_eq!(r.code, 1, "one test fails on purpose: {}", r.stderr);
    let ours: HashMap<String, String> = r
        .of_type("task-finished")
        .iter()
        .map(|e| {
            (
                e["task"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The same binary run whole by libtest: the same tests, the same outcomes.
    let cmd = r.of_type("task-started");
    assert!(!cmd.is_empty());
    let bin = std::fs::read_dir(target.join("debug/deps"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libtest_sample-")
                && p.extension().is_none()
        })
        .expect("the sample's test binary");
    let theirs = libtest_verdicts(bin.to_str().unwrap(), &[("SAMPLE_FAIL", "1")]);
    assert_eq!(ours, theirs);
    assert_eq!(ours["unit/tests::deliberately_fails_when_asked"], "fail");
    assert_eq!(ours["unit/tests::slow_soak"], "skip");
    assert_eq!(ours.len(), 7);
    // JUnit: one testcase per test.
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 7, "{xml}");
    assert!(
        xml.contains(r#"name="tests::deliberately_fails_when_asked""#),
        "{xml}"
    );
}

#[test]
#[ignore = "needs python3: run .ci/python3.sh first"]
fn the_python_generator_selects_tasks_by_what_it_finds() {
    let out = pexen()
        .args(["list", "--format", "json"])
        .arg(factory("machine"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "needs python3 on PATH (run .ci/python3.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"probe/os/uname"), "{names:?}");
    assert_eq!(
        names.contains(&"probe/linux/cpus"),
        std::path::Path::new("/proc/cpuinfo").exists() && cfg!(target_os = "linux")
    );
    let state = tempfile::tempdir().unwrap();
    let r = RunResult::new(
        pexen()
            .arg("run")
            .arg(factory("machine"))
            .args(["--message-format", "json", "--state"])
            .arg(state.path())
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.of_type("task-finished").len(), names.len());
}

#[test]
fn the_wishlist_example_tree_runs() {
    let state = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        RunResult::new(
            pexen()
                .arg("run")
                .arg(factory("wishlist"))
                .args(["--message-format", "json", "--state"])
                .arg(state.path())
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let r = run(&["-j", "2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let jobs = HashMap::from([("vm", 1), ("syscalls", 4), ("", 2)]);
    let turns = group_turns(
        &r,
        |t| match t.split_once('/') {
            Some((g @ ("vm" | "syscalls"), _)) => g.to_string(),
            _ => String::new(),
        },
        &jobs,
    );
    // `syscalls/posix/after-boot` waits for `vm/boot/debian`: syscalls gets a second turn.
    assert_eq!(
        turns.iter().filter(|g| *g == "syscalls").count(),
        2,
        "{turns:?}"
    );
    assert_eq!(r.outcome("mail/send"), "pass");
    let exim = r.finished("mail/exim");
    if !std::path::Path::new("/usr/sbin/exim4").exists() {
        assert_eq!(exim["cause"], "condition: /usr/sbin/exim4 does not exist");
    }
    // A selection of the mail sender pulls in postfix only (priority -1).
    let r = run(&["--filter", "mail/send"]);
    let names: Vec<_> = r
        .of_type("task-finished")
        .iter()
        .map(|e| e["task"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["mail/postfix", "mail/send"]);
}
