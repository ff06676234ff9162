//! The `pexen` binary on real trees: outcomes, JSON events, exit codes, selections, the other
//! subcommands, and processes (none left after timeouts and interrupts).

mod common;

use std::io::{BufRead, BufReader};

use common::{alive, factory, pexen, wait_for_pid, RunResult, Tree};

#[test]
fn demo_tree_runs_every_feature() {
    let state = tempfile::tempdir().unwrap();
    let out = pexen()
        .args(["run", "-j", "2", "--message-format", "json", "--state"])
        .arg(state.path())
        .arg(factory("demo"))
        .output()
        .unwrap();
    let r = RunResult::new(out);
    assert_eq!(r.code, 0, "the demo is green: {}", r.stderr);
    assert_eq!(r.events[0]["type"], "run-started");
    assert_eq!(r.events[0]["jobs"], 2);
    let total = r.events[0]["tasks"].as_u64().unwrap() as usize;
    assert_eq!(r.of_type("task-finished").len(), total);
    assert_eq!(r.outcome("slow"), "pass");
    assert_eq!(r.outcome("skipped"), "skip");
    assert_eq!(r.outcome("suite"), "warn");
    assert_eq!(r.outcome("smoke/boot.sh"), "pass");
    let flaky = r.finished("flaky");
    assert_eq!(
        (flaky["outcome"].as_str(), flaky["attempt"].as_u64()),
        (Some("pass"), Some(2))
    );
    assert_eq!(r.of_type("task-retry").len(), 1);
    // Results streamed before the task finished.
    let results: Vec<_> = r
        .of_type("task-result")
        .into_iter()
        .filter(|e| e["task"] == "suite")
        .map(|e| {
            format!(
                "{} {}",
                e["status"].as_str().unwrap(),
                e["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(results, ["pass parse", "warn slow handshake", "pass close"]);
    assert!(r.index("task-result", "suite") < r.index("task-finished", "suite"));
    // The provider ran before everything that requires its token.
    assert!(r.index("task-finished", "setup/db") < r.index("task-started", "suite"));
    let last = r.events.last().unwrap();
    assert_eq!(last["type"], "run-finished");
    assert_eq!(last["outcome"], "warn");
    assert_eq!(last["counts"]["warn"], 1);
    assert_eq!(last["counts"]["skip"], 1);
}

#[test]
fn exit_codes_follow_the_worst_outcome() {
    let pass = Tree::new().file("a.ron", r#"(run: Shell("true"))"#);
    assert_eq!(pass.run(&[]).code, 0);
    let warn_skip = Tree::new()
        .file(
            "w.ron",
            r#"(run: Shell("echo 'warn meh' >> $PEXEN_RESULTS"))"#,
        )
        .file("s.ron", r#"(run: Shell("exit 77"))"#);
    assert_eq!(warn_skip.run(&[]).code, 0);
    let fail = Tree::new().file("f.ron", r#"(run: Shell("exit 3"))"#);
    let r = fail.run(&[]);
    assert_eq!(r.code, 1);
    assert_eq!(r.finished("f")["exit_code"], 3);
    let error = Tree::new().file("e.ron", r#"(run: Cmd(["./does-not-exist"]))"#);
    let r = error.run(&[]);
    assert_eq!((r.code, r.outcome("e").as_str()), (1, "error"));
}

#[test]
fn signal_death_is_an_error_naming_the_signal() {
    let t = Tree::new().file("seg.ron", r#"(run: Shell("kill -SEGV $$"))"#);
    let r = t.run(&[]);
    assert_eq!(r.outcome("seg"), "error");
    let out = t.cmd("run", &["--state", t.path().join(".p").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIGSEGV"));
}

#[test]
fn json_mode_prints_only_json_on_stdout() {
    let t = Tree::new()
        .file(
            "a.ron",
            r#"(run: Shell("echo hello from a; echo oops >&2; exit 1"))"#,
        )
        .file("b.ron", r#"(run: Shell("echo hi"))"#);
    let r = t.run(&[]);
    // RunResult::new already parsed every line as JSON.
    assert!(r.events.len() >= 6);
    assert!(!r.stdout.contains("hello from a"));
}

#[test]
fn broken_definitions_are_all_reported_with_positions() {
    let out = pexen().arg("run").arg(factory("broken")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "bad-duration.ron:3:14",
        "syntax.ron:3:5",
        "unknown-field.ron:4:5: unknown field `priorty`",
        "many.tasks.ron:3:5",
    ] {
        assert!(err.contains(needle), "missing {needle} in:\n{err}");
    }
}

#[test]
fn graph_errors_are_exit_2_with_every_problem() {
    let t = common::cycle_tree()
        .file("c.ron", r#"(run: Shell("true"), requires: ["nobody"])"#)
        .file(
            "d.ron",
            r#"(run: Shell("true"), claims: ["x"], uses: ["x"])"#,
        );
    for sub in ["run", "check"] {
        let out = t.cmd(
            sub,
            &["--state", t.path().join(".p").to_str().unwrap()][..if sub == "run" { 2 } else { 0 }],
        );
        assert_eq!(out.status.code(), Some(2), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("dependency cycle: a -> b -> a"), "{err}");
        assert!(err.contains("task `c` requires token `nobody`"), "{err}");
        assert!(
            err.contains("task `d` both claims and uses resource `x`"),
            "{err}"
        );
    }
}

#[test]
fn selection_pulls_in_required_providers() {
    let t = Tree::new()
        .file("setup.ron", r#"(run: Shell("true"), provides: ["db"])"#)
        .file(
            "net/a.ron",
            r#"(run: Shell("true"), requires: ["db"], tags: ["fast"])"#,
        )
        .file("net/b.ron", r#"(run: Shell("true"))"#)
        .file("other.ron", r#"(run: Shell("true"), tags: ["fast"])"#);
    let r = t.run(&["--filter", "net/a"]);
    let mut ran = r.started();
    ran.sort();
    assert_eq!(ran, ["net/a", "setup"]);
    let r = t.run(&["--tag", "fast"]);
    let mut ran = r.started();
    ran.sort();
    assert_eq!(ran, ["net/a", "other", "setup"]);
    let r = t.run(&["--filter", "net/*"]);
    assert_eq!(r.of_type("task-finished").len(), 3);
    let out = t.cmd("run", &["--filter", "nothing*"]);
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn priorities_and_locks_from_the_cli() {
    let t = Tree::new()
        .file("_dir.ron", r#"(capacity: {"gpu": 1})"#)
        .file("low.ron", r#"(run: Shell("true"), priority: 5)"#)
        .file("high.ron", r#"(run: Shell("true"), priority: -5)"#)
        .file(
            "g1.ron",
            r#"(run: Shell("true"), slots: {"gpu": 1}, priority: 1)"#,
        )
        .file(
            "g2.ron",
            r#"(run: Shell("true"), slots: {"gpu": 1}, priority: 1)"#,
        );
    let r = t.run(&["-j", "1"]);
    assert_eq!(r.started(), ["high", "g1", "g2", "low"]);
    let r = t.run(&["-j", "4"]);
    assert!(r.index("task-finished", "g1") < r.index("task-started", "g2"));
    // --capacity overrides the tree; a slot over capacity is a definition error.
    let out = t.cmd(
        "run",
        &[
            "--capacity",
            "gpu=0",
            "--state",
            t.path().join(".p").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn exports_reach_dependents_as_environment() {
    let t = Tree::new()
        .file("p.ron", r#"(run: Shell("echo URL=http://db:5432 >> $PEXEN_EXPORT"), provides: ["db"])"#)
        .file("d.ron", r#"(run: Shell("test \"$URL\" = http://db:5432 && test \"$PEXEN_TASK\" = d"), requires: ["db"])"#);
    let r = t.run(&[]);
    assert_eq!(r.outcome("d"), "pass", "{}", r.stderr);
}

#[test]
fn retries_and_timeout_flags() {
    let t = Tree::new()
        .file("flaky.ron", r#"(run: Shell("test $PEXEN_ATTEMPT -ge 3"))"#)
        .file("slow.ron", r#"(run: Shell("sleep 20"))"#);
    let r = t.run(&["--retries", "2", "--timeout", "200ms", "--filter", "flaky"]);
    assert_eq!(r.finished("flaky")["attempt"], 3);
    let r = t.run(&["--timeout", "200ms", "--filter", "slow"]);
    assert_eq!(r.outcome("slow"), "timeout");
}

#[test]
fn timeout_leaves_no_process_behind() {
    let t = Tree::new().file(
        "t.ron",
        r#"(run: Shell("trap '' TERM; sleep 300 & echo $! > child.pid; (setsid sleep 300 & echo $! > daemon.pid); wait"), timeout: "300ms")"#,
    );
    let r = t.run(&[]);
    assert_eq!(r.outcome("t"), "timeout");
    for f in ["child.pid", "daemon.pid"] {
        let pid: i32 = std::fs::read_to_string(t.path().join(f))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!alive(pid), "{f} {pid} survived the run");
    }
}

#[test]
fn grace_flag_is_validated_and_a_task_ignoring_sigterm_still_dies() {
    // The task ignores SIGTERM, so only the SIGKILL after the grace ends it. (How long the grace
    // lasts is not checked here: that would be a wall-clock assertion.)
    let t = Tree::new().file(
        "stubborn.ron",
        r#"(run: Shell("trap '' TERM; sleep 300 & echo $! > child.pid; wait"), timeout: "100ms")"#,
    );
    let r = t.run(&["--grace", "0s"]);
    assert_eq!(r.outcome("stubborn"), "timeout");
    let pid: i32 = std::fs::read_to_string(t.path().join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid));
    let out = t.cmd("run", &["--grace", "soon"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn fail_fast_skips_the_rest() {
    let t = Tree::new()
        .file("a.ron", r#"(run: Shell("exit 1"), priority: -1)"#)
        .file("b.ron", r#"(run: Shell("true"))"#)
        .file("c.ron", r#"(run: Shell("true"))"#);
    let r = t.run(&["--fail-fast", "-j", "1"]);
    assert_eq!(r.started(), ["a"]);
    assert_eq!(r.outcome("b"), "skip");
    assert!(r.finished("c")["cause"]
        .as_str()
        .unwrap()
        .contains("fail-fast"));
}

#[test]
fn interrupt_stops_cleanly_with_valid_report_and_no_process() {
    let t = Tree::new()
        .file(
            "long.ron",
            r#"(run: Shell("sleep 300 & echo $! > long.pid; wait"))"#,
        )
        .file("later.ron", r#"(run: Shell("true"), requires: ["never"])"#)
        .file(
            "never.ron",
            r#"(run: Shell("sleep 300"), provides: ["never"], priority: 1)"#,
        );
    let junit = t.path().join("report.xml");
    let mut child = t.spawn(&["-j", "1", "--junit", junit.to_str().unwrap()]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.contains("task-started");
        seen.push(line);
        if started {
            break;
        }
    }
    // The task has started; wait until its shell wrote the pid, then interrupt.
    let pid = wait_for_pid(&t.path().join("long.pid"));
    // SAFETY: sending SIGINT to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    seen.extend(lines.map(Result::unwrap));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let finished = seen
        .iter()
        .filter(|l| l.contains("\"task-finished\""))
        .count();
    assert_eq!(finished, 3, "every task reported: {seen:#?}");
    assert!(seen.last().unwrap().contains("run-finished"));
    assert!(!alive(pid), "sleep {pid} survived the interrupt");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testsuites") && xml.trim_end().ends_with("</testsuites>"));
}

#[test]
fn list_check_and_graph() {
    let out = pexen()
        .arg("list")
        .arg(factory("demo"))
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"setup/db") && names.contains(&"smoke/boot.sh"));
    let suite = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "suite")
        .unwrap();
    assert_eq!(suite["tags"], serde_json::json!(["demo"]));
    let out = pexen().arg("check").arg(factory("demo")).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
    let out = pexen().arg("graph").arg(factory("build")).output().unwrap();
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(dot.starts_with("digraph {"), "{dot}");
    assert!(dot.contains("label = \"bin\""), "{dot}");
}

#[test]
fn usage_errors_are_exit_2() {
    let out = pexen().args(["run", "--jobs", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = pexen().args(["run", "/nonexistent/tree"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = pexen().args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A report that could not be written is refused before anything runs.
    let t = Tree::new().file("a.ron", r#"(run: Shell("touch ran"))"#);
    // (Under a file: no directory can be made there, not even by root.)
    let under_a_file = t.path().join("a.ron/dir/r.xml");
    let out = t.cmd("run", &["--junit", under_a_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!t.path().join("ran").exists());
    // Nothing recorded yet: the state directory cannot give a report (exit 3).
    let empty = tempfile::tempdir().unwrap();
    let out = pexen()
        .args(["report", "--junit"])
        .arg(empty.path().join("r.xml"))
        .arg("--state")
        .arg(empty.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn a_second_interrupt_kills_what_ignores_the_first() {
    // The task ignores SIGTERM and the grace period is an hour: only the second interrupt's
    // SIGKILL can end it. (If that were broken, the test would hang rather than pass.)
    let t = Tree::new().file(
        "stubborn.ron",
        r#"(run: Shell("trap '' TERM; sleep 3000 & echo $! > child.pid; wait; wait"))"#,
    );
    let mut child = t.spawn(&["--grace", "1h"]);
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in out.by_ref() {
        if line.unwrap().contains("task-started") {
            break;
        }
    }
    let pid = wait_for_pid(&t.path().join("child.pid"));
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    // SAFETY: signals to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    for line in err.by_ref() {
        if line.unwrap().starts_with("interrupted:") {
            break;
        }
    }
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = out.map(Result::unwrap).collect();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(
        rest.iter().any(|l| l.contains("\"task-finished\"")),
        "{rest:#?}"
    );
    assert!(!alive(pid), "the sleep survived");
}

#[test]
fn human_output_has_a_line_per_task_the_failed_output_and_a_summary() {
    let t = Tree::new()
        .file("ok.ron", r#"(run: Shell("echo quiet"))"#)
        .file(
            "bad.ron",
            r#"(run: Shell("echo boom-out; echo boom-err >&2; exit 4"))"#,
        );
    let out = t.cmd("run", &["--state", t.path().join(".p").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    // The whole human report is on stderr (stdout is for --message-format json).
    assert!(out.stdout.is_empty());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("PASS") && text.contains(" ok"), "{text}");
    assert!(
        text.contains("FAIL") && text.contains("bad (exit code 4)"),
        "{text}"
    );
    // The output of the failed task, not of the passing one.
    assert!(text.contains("--- STDOUT: bad ---\nboom-out"), "{text}");
    assert!(text.contains("--- STDERR: bad ---\nboom-err"), "{text}");
    assert!(!text.contains("quiet"), "{text}");
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains("Summary"))
        .expect("a summary");
    assert!(summary.contains("2 tasks: 1 pass, 1 fail"), "{summary}");
}

#[test]
fn defaults_tree_in_the_current_directory_jobs_from_the_cpus_state_in_dot_pexen() {
    let t = Tree::new().file("a.ron", r#"(run: Shell("true"))"#);
    let out = pexen()
        .args(["run", "--message-format", "json"])
        .current_dir(t.path())
        .output()
        .unwrap();
    let r = RunResult::new(out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(r.events[0]["jobs"], cpus);
    assert_eq!(r.outcome("a"), "pass");
    assert!(t.path().join(".pexen/journal").is_file());
}

#[test]
fn an_unrequired_token_is_a_warning_not_an_error() {
    let t = Tree::new().file(
        "lonely.ron",
        r#"(run: Shell("true"), provides: ["nobody-needs-me"])"#,
    );
    let out = t.cmd("check", &[]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "warning: token `nobody-needs-me` is provided by `lonely` but required by no task"
        ),
        "{err}"
    );
    let r = t.run(&[]);
    assert_eq!(r.code, 0);
    assert!(r
        .of_type("warning")
        .iter()
        .any(|w| w["message"].as_str().unwrap().contains("nobody-needs-me")));
}
