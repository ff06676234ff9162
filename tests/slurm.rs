//! `pexen run --slurm` against a real Slurm (SPEC section 10, issue #13): job per attempt.
//!
//! These tests need `munged`, `slurmctld` and `slurmd` running with a node this machine can
//! reach: `.ci/slurm.sh` installs and starts them (one node on loopback). The task trees live in
//! temporary directories of this machine, which the one local node shares.

mod common;
#[path = "common/slurm.rs"]
mod slurm;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;

use common::{RunResult, Tree};
use serde_json::Value;
use slurm::{active, require_slurm, spawn_events};

/// Job ids of the `task-submitted` events.
fn submitted(r: &RunResult) -> BTreeMap<String, Vec<String>> {
    let mut jobs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in r.of_type("task-submitted") {
        jobs.entry(e["task"].as_str().unwrap().to_owned())
            .or_default()
            .push(e["job"].as_str().unwrap().to_owned());
    }
    jobs
}

fn outcomes(r: &RunResult) -> BTreeMap<String, (String, Value)> {
    r.of_type("task-finished")
        .iter()
        .map(|e| {
            (
                e["task"].as_str().unwrap().to_owned(),
                (
                    e["outcome"].as_str().unwrap().to_owned(),
                    e["exit_code"].clone(),
                ),
            )
        })
        .collect()
}

fn results(r: &RunResult) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = r
        .of_type("task-result")
        .iter()
        .map(|e| {
            (
                e["task"].as_str().unwrap().to_owned(),
                e["status"].as_str().unwrap().to_owned(),
                e["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A tree with tokens, exports, results, a lock and slots that map to Slurm resources.
fn dag_tree() -> Tree {
    Tree::new()
        .file(
            "_dir.ron",
            r#"(capacity: {"cpus": 2, "mem_mb": 1024},
                slurm_args: ["--export=ALL,PEXEN_TEST_FROM_DIR=yes"])"#,
        )
        .file(
            "build/lib.ron",
            r#"(run: Shell("echo building; echo LIB=libfoo >> \"$PEXEN_EXPORT\"; echo pass compiled >> \"$PEXEN_RESULTS\""),
                provides: ["lib"], claims: ["disk"], slots: {"cpus": 1, "mem_mb": 64})"#,
        )
        .file(
            "test/uses_lib.ron",
            r#"(run: Shell("test \"$LIB\" = libfoo && echo \"warn dir arg ${PEXEN_TEST_FROM_DIR:-none}\" >> \"$PEXEN_RESULTS\""),
                requires: ["lib"], claims: ["disk"])"#,
        )
        .file(
            "test/fails.ron",
            r#"(run: Shell("echo on stderr >&2; exit 3"), requires: ["lib"])"#,
        )
        .file(
            "test/skipped.ron",
            r#"(run: Shell("exit 77"))"#,
        )
        .file(
            "test/after_fail.ron",
            r#"(run: Shell("true"), requires: ["failing"])"#,
        )
        .file(
            "test/failing_provider.ron",
            r#"(run: Cmd(["./does-not-exist"]), provides: ["failing"])"#,
        )
}

#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn a_tree_runs_on_slurm_with_the_same_outcomes_exports_and_junit_as_locally() {
    let _node = require_slurm();
    let t = dag_tree();
    let junit_local = t.path().join("local.xml");
    let junit_slurm = t.path().join("slurm.xml");
    let local = t.run(&["-j", "2", "--junit", junit_local.to_str().unwrap()]);
    let slurm = t.run(&[
        "-j",
        "4",
        "--slurm",
        "--junit",
        junit_slurm.to_str().unwrap(),
    ]);
    assert_eq!(slurm.code, 1, "{}", slurm.stderr);
    assert_eq!(local.code, slurm.code);

    let (lo, so) = (outcomes(&local), outcomes(&slurm));
    assert_eq!(so["build/lib"], ("pass".into(), Value::from(0)));
    assert_eq!(so["test/fails"], ("fail".into(), Value::from(3)));
    assert_eq!(so["test/skipped"].0, "skip");
    assert_eq!(so["test/failing_provider"].0, "error");
    assert_eq!(so["test/after_fail"].0, "skip");
    // Same outcomes as locally; the exports reached the dependent (it passed).
    let lo_outcomes: BTreeMap<_, _> = lo.iter().map(|(k, v)| (k, &v.0)).collect();
    let so_outcomes: BTreeMap<_, _> = so.iter().map(|(k, v)| (k, &v.0)).collect();
    assert_eq!(lo_outcomes, so_outcomes);
    // The streamed results, except that `_dir.ron`'s slurm_args reached the job only on Slurm.
    let mut expected = results(&local);
    for r in &mut expected {
        if r.2 == "dir arg none" {
            r.2 = "dir arg yes".into();
        }
    }
    assert_eq!(results(&slurm), expected);

    // Every started attempt became a job, and none is left in the queue.
    let jobs = submitted(&slurm);
    let started: Vec<String> = slurm.started();
    assert_eq!(jobs.len(), started.len(), "{jobs:?} vs {started:?}");
    let ids: Vec<String> = jobs.values().flatten().cloned().collect();
    assert!(active(&ids).is_empty());

    // The JUnit reports agree, testcase by testcase (times aside), output included.
    let strip_times = |p: &Path| {
        let xml = std::fs::read_to_string(p).unwrap();
        let mut out = String::new();
        for part in xml.split("time=\"") {
            if out.is_empty() {
                out.push_str(part);
            } else {
                out.push_str(part.split_once('"').map_or(part, |(_, rest)| rest));
            }
        }
        out.replace("dir arg none", "dir arg yes")
            .replace("timestamp", "")
    };
    let (jl, js) = (strip_times(&junit_local), strip_times(&junit_slurm));
    assert!(js.contains("on stderr"), "{js}");
    assert_eq!(
        jl.lines()
            .filter(|l| !l.contains("hostname") && !l.contains("timestamp"))
            .collect::<Vec<_>>(),
        js.lines()
            .filter(|l| !l.contains("hostname") && !l.contains("timestamp"))
            .collect::<Vec<_>>()
    );
}

#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn run_wide_slurm_args_reach_every_job() {
    let _node = require_slurm();
    let t = Tree::new().file(
        "name.ron",
        r#"(run: Shell("echo \"pass $SLURM_JOB_NAME\" >> \"$PEXEN_RESULTS\""))"#,
    );
    let r = t.run(&["--slurm", "--slurm-arg=--job-name=from-the-command-line"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        results(&r),
        [("name".into(), "pass".into(), "from-the-command-line".into())]
    );
}

#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn a_task_over_its_timeout_is_timeout_and_its_job_is_cancelled() {
    let _node = require_slurm();
    let t = Tree::new().file("slow.ron", r#"(run: Shell("sleep 120"), timeout: "1s")"#);
    let r = t.run(&["--slurm", "--grace", "1s"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.outcome("slow"), "timeout");
    let ids: Vec<String> = submitted(&r).into_values().flatten().collect();
    assert_eq!(ids.len(), 1);
    assert!(active(&ids).is_empty(), "job {ids:?} still in the queue");
}

/// Takes events until `n` jobs were submitted; their ids, and every event seen.
fn wait_submitted(rx: &mpsc::Receiver<Value>, n: usize) -> (Vec<String>, Vec<Value>) {
    let mut ids = Vec::new();
    let mut seen = Vec::new();
    while ids.len() < n {
        let e = rx
            .recv()
            .expect("pexen ended before submitting enough jobs");
        if e["type"] == "task-submitted" {
            ids.push(e["job"].as_str().unwrap().to_owned());
        }
        seen.push(e);
    }
    (ids, seen)
}

#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn a_job_cancelled_from_outside_is_an_error_naming_it() {
    let _node = require_slurm();
    let t = Tree::new().file(
        "victim.ron",
        r#"(run: Shell("echo started > started; sleep 120"))"#,
    );
    let junit = t.path().join("report.xml");
    let (child, rx) = spawn_events(&t, &["--slurm", "--junit", junit.to_str().unwrap()]);
    let (ids, _) = wait_submitted(&rx, 1);
    // Cancel it once it runs (a pending job's cancellation is the same verdict, but a running
    // one is the interesting case).
    while !t.path().join("started").exists() {
        std::thread::yield_now();
    }
    let st = Command::new("scancel").arg(&ids[0]).status().unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let r = RunResult::new(std::process::Output {
        stdout: rx.iter().fold(Vec::new(), |mut out, v| {
            out.extend_from_slice(format!("{v}\n").as_bytes());
            out
        }),
        ..out
    });
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.outcome("victim"), "error");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(&format!("Slurm job {} was cancelled outside pexen", ids[0])),
        "{xml}"
    );
}

#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn ctrl_c_cancels_every_job_of_the_run() {
    let _node = require_slurm();
    // Twelve jobs of two CPUs each: the node of .ci/slurm.sh (two cores, each shared by up to
    // four jobs) runs four of them at once, the others wait in the queue.
    let mut t = Tree::new().file("_dir.ron", r#"(capacity: {"cpus": 24})"#);
    for i in 0..12 {
        t = t.file(
            &format!("sleep{i}.ron"),
            r#"(run: Shell("sleep 120"), slots: {"cpus": 2})"#,
        );
    }
    let (mut child, rx) = spawn_events(&t, &["--slurm", "-j", "12"]);
    let (ids, _) = wait_submitted(&rx, 12);
    assert!(!active(&ids).is_empty());
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let left = active(&ids);
    assert!(left.is_empty(), "jobs left in the queue: {left:?}");
    let finished: Vec<Value> = rx.iter().filter(|e| e["type"] == "task-finished").collect();
    assert_eq!(finished.len(), 12);
}

#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn resume_after_kill_9_reattaches_to_jobs_and_runs_nothing_twice() {
    let _node = require_slurm();
    // Jobs of two CPUs: four run at once on the test node, the rest wait in the queue.
    let mut t = Tree::new().file(
        "_dir.ron",
        r#"(capacity: {"cpus": 20}, slots: {"cpus": 2})"#,
    );
    let log = t.path().join("executions.log");
    let n = 10;
    for i in 0..n {
        // Each execution appends its name: the count of lines per name is the number of runs.
        t = t.file(
            &format!("t{i}.ron"),
            &format!(
                r#"(run: Shell("echo t{i} >> '{}'; sleep 2; echo V{i}=x >> \"$PEXEN_EXPORT\""))"#,
                log.display()
            ),
        );
    }
    let (mut child, rx) = spawn_events(&t, &["--slurm", "-j", "8"]);
    let (first_ids, _) = wait_submitted(&rx, 8);
    child.kill().unwrap(); // SIGKILL: the jobs stay in Slurm
    child.wait().unwrap();
    assert!(!active(&first_ids).is_empty(), "the jobs outlive pexen");
    // Let some of them finish while pexen is down.
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count()
        < 3
    {
        std::thread::yield_now();
    }

    let r = t.run(&["--slurm", "-j", "8", "--resume"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for i in 0..n {
        assert_eq!(r.outcome(&format!("t{i}")), "pass");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in text.lines() {
        *counts.entry(line).or_default() += 1;
    }
    assert_eq!(counts.len(), n, "{text}");
    assert!(counts.values().all(|&c| c == 1), "ran twice: {counts:?}");
    // The resumed run followed the jobs it had (same ids), and submitted only the rest.
    let again: Vec<String> = submitted(&r).into_values().flatten().collect();
    for id in &first_ids {
        assert!(again.contains(id), "job {id} not re-attached: {again:?}");
    }
    assert_eq!(again.len(), n);
}

#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn a_job_lost_to_a_node_failure_is_submitted_again_without_counting_an_attempt() {
    let _node = require_slurm();
    let t = Tree::new();
    let first = t.path().join("first");
    let runs = t.path().join("runs");
    let t = t.file(
        "n.ron",
        &format!(
            r#"(run: Shell("echo $SLURM_JOB_ID >> '{runs}'; if [ -e '{first}' ]; then exit 0; fi; touch '{first}'; sleep 120"))"#,
            runs = runs.display(),
            first = first.display()
        ),
    );
    let node = String::from_utf8(
        Command::new("sinfo")
            .args(["--noheader", "--Node", "--format=%N"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .lines()
    .next()
    .expect("a node")
    .trim()
    .to_owned();
    let (child, rx) = spawn_events(&t, &["--slurm"]);
    while !first.exists() {
        std::thread::yield_now();
    }
    // The node fails under the running job (NODE_FAIL), then comes back.
    let scontrol = |state: &str| {
        Command::new("scontrol")
            .args([
                "update",
                &format!("nodename={node}"),
                &format!("state={state}"),
            ])
            .args((state == "down").then_some("reason=pexen-test"))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
    };
    assert!(scontrol("down").success());
    let (ids, _) = wait_submitted(&rx, 2);
    // Slurm may already have returned the node to service itself (ReturnToService=2).
    let _ = scontrol("resume");
    let out = child.wait_with_output().unwrap();
    let events: Vec<Value> = rx.iter().collect();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let finished = events
        .iter()
        .find(|e| e["type"] == "task-finished")
        .expect("task-finished");
    assert_eq!(finished["outcome"], "pass");
    assert_eq!(finished["attempt"], 1);
    assert_ne!(ids[0], ids[1]);
    assert_eq!(
        std::fs::read_to_string(&runs)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        [ids[0].as_str(), ids[1].as_str()]
    );
}

#[test]
fn slurm_arg_without_slurm_is_a_usage_error() {
    let t = Tree::new().file("a.ron", r#"(run: Cmd(["true"]))"#);
    let r = t.run(&["--slurm-arg=--partition=x"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--slurm"), "{}", r.stderr);
}

#[test]
fn slurm_args_are_a_task_field() {
    let t = Tree::new()
        .file("_dir.ron", r#"(slurm_args: ["--partition=a"])"#)
        .file("a.ron", r#"(run: Cmd(["true"]), slurm_arg: ["x"])"#);
    let r = t.cmd("check", &[]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("a.ron:1:") && err.contains("slurm_args"),
        "{err}"
    );
}

#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn one_squeue_call_follows_every_job_of_the_run() {
    let _node = require_slurm();
    let t = Tree::new();
    // A `squeue` first in PATH that runs the real one (outside the tree: an executable there
    // would be a task), then logs when it was started (the kernel's record of the process's
    // start, in clock ticks since boot: when pexen spawned it, not when the shell got going,
    // which on a loaded machine can be tens of milliseconds later), when it ended (seconds
    // since boot) and for which jobs.
    let outside = tempfile::tempdir().unwrap();
    let bin = outside.path().to_path_buf();
    let log = outside.path().join("squeue.log");
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v squeue"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let wrapper = bin.join("squeue");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a; do last=\"$a\"; done\nstart=$(awk '{{print $22}}' /proc/$$/stat)\n{} \"$@\"\nrc=$?\necho \"$start $(cut -d' ' -f1 /proc/uptime) $last\" >> '{}'\nexit $rc\n",
            real.trim(),
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut t = t;
    for i in 0..8 {
        t = t.file(&format!("t{i}.ron"), r#"(run: Shell("sleep 1"))"#);
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = common::pexen()
        .arg("run")
        .arg(t.path())
        .args(["--slurm", "-j", "8", "--message-format", "json", "--state"])
        .arg(t.path().join(".pexen"))
        .env("PATH", path)
        .output()
        .unwrap();
    let r = RunResult::new(out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Per call: when it started and ended (seconds since boot, to a clock tick), and for how
    // many jobs.
    // SAFETY: sysconf reads a constant of the system.
    let tick = 1.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut calls: Vec<(f64, f64, usize)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let mut fields = l.split(' ');
            let mut number = || fields.next().unwrap().parse::<f64>().unwrap();
            let (start, end) = (number() * tick, number());
            (start, end, fields.next().unwrap().split(',').count())
        })
        .collect();
    calls.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(!calls.is_empty());
    // One call asks about many jobs at once ...
    assert!(
        calls.iter().any(|&(_, _, jobs)| jobs >= 4),
        "no call followed several jobs: {calls:?}"
    );
    // ... and calls come from one poller: one at a time, each started after the one before
    // ended (the wrapper logs its end before it exits, the poller waits for that exit), and
    // never closer together than its minimum gap (100 ms, less two clock ticks of rounding
    // and a little for the poller's own spawn).
    for pair in calls.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1 - tick,
            "two calls at once: {calls:?}"
        );
        assert!(
            pair[1].0 - pair[0].0 >= 0.1 - 3.0 * tick,
            "calls too close: {calls:?}"
        );
    }
    let ids: Vec<String> = submitted(&r).into_values().flatten().collect();
    assert_eq!(ids.len(), 8);
}

#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn a_job_suspends_the_run_and_resumes_from_its_checkpoint() {
    let _node = require_slurm();
    // First run: save progress, exit 75 (suspend). Resumed: finds it and passes.
    let t = Tree::new().file(
        "reboot.ron",
        r#"(run: Shell("if [ -e \"$PEXEN_CHECKPOINT/saved\" ]; then echo \"pass found $(cat \"$PEXEN_CHECKPOINT/saved\")\" >> \"$PEXEN_RESULTS\"; exit 0; fi; echo step-1 > \"$PEXEN_CHECKPOINT/saved\"; exit 75"))"#,
    );
    let r = t.run(&["--slurm"]);
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    let r = t.run(&["--slurm", "--resume"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.outcome("reboot"), "pass");
    assert_eq!(
        results(&r),
        [("reboot".into(), "pass".into(), "found step-1".into())]
    );
}
