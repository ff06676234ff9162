//! `pexen run --slurm --slurm-workers N` against a real Slurm (SPEC section 10, issue #13):
//! pilot workers, Slurm jobs running `pexen worker --connect` that connect back to the run over
//! mutual TLS and take its attempts as hosts `pilot-1` ... `pilot-N`.
//!
//! These tests need `munged`, `slurmctld` and `slurmd` running with a node this machine can
//! reach: `.ci/slurm.sh` installs and starts them (one node on loopback).

mod common;
#[path = "common/slurm.rs"]
mod slurm;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Tree;
use serde_json::Value;
use slurm::{active, require_slurm, spawn_events};

/// The worker jobs of the run in `state`: their batch output files are named after them.
fn worker_jobs(state: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(state.join("slurm/workers"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".out").map(str::to_owned)
        })
        .collect();
    ids.sort();
    ids
}

/// `ID NAME` lines of the worker journal, while the run goes.
fn journal(state: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(state.join("slurm/workers.jobs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (id, name) = l.split_once(' ')?;
            Some((id.to_owned(), name.to_owned()))
        })
        .collect()
}

/// Waits until `path` has at least `n` lines; returns them.
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn counts(lines: &[String]) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for l in lines {
        *c.entry(l.clone()).or_default() += 1;
    }
    c
}

/// The most attempts running at once, in the order of the events, in all and per host.
fn concurrency(events: &[Value]) -> (usize, BTreeMap<String, usize>) {
    let mut running: BTreeMap<String, String> = BTreeMap::new();
    let mut max = 0;
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for e in events {
        let task = e["task"].as_str().unwrap_or_default().to_owned();
        match e["type"].as_str() {
            Some("task-started") => {
                let host = e["host"].as_str().unwrap().to_owned();
                running.insert(task, host.clone());
                max = max.max(running.len());
                let on = running.values().filter(|h| **h == host).count();
                let m = per_host.entry(host).or_default();
                *m = (*m).max(on);
            }
            Some("task-finished" | "task-retry") => {
                running.remove(&task);
            }
            _ => {}
        }
    }
    (max, per_host)
}

/// A small tree with a dependency, a lock, a failure, a skip and four parallel tasks, two of
/// which meet: each waits until the other started, so they run at once, on both workers.
fn dag_tree() -> Tree {
    let t = Tree::new();
    let meet = t.path().join("meet").to_string_lossy().into_owned();
    let meets = format!(
        r#"(run: Shell("echo $PEXEN_HOST >> {meet}; until [ $(wc -l < {meet}) -ge 2 ]; do sleep 0.02; done"),
            timeout: "120s")"#
    );
    t.file("par/p1.ron", &meets)
        .file("par/p2.ron", &meets)
        .file(
            "build/lib.ron",
            r#"(run: Shell("echo LIB=libfoo >> \"$PEXEN_EXPORT\"; echo \"pass built on $PEXEN_HOST\" >> \"$PEXEN_RESULTS\""),
                provides: ["lib"], claims: ["disk"])"#,
        )
        .file(
            "test/uses_lib.ron",
            r#"(run: Shell("test \"$LIB\" = libfoo"), requires: ["lib"], claims: ["disk"])"#,
        )
        .file("test/fails.ron", r#"(run: Shell("echo on stderr >&2; exit 3"), requires: ["lib"])"#)
        .file("test/skipped.ron", r#"(run: Shell("exit 77"))"#)
        .file("par/p3.ron", r#"(run: Shell("sleep 0.2"))"#)
        .file("par/p4.ron", r#"(run: Shell("sleep 0.2"))"#)
}

#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn a_tree_runs_on_pilot_workers_with_the_host_in_events_and_junit() {
    let _node = require_slurm();
    let t = dag_tree();
    let junit = t.path().join("report.xml");
    let local = t.run(&["-j", "2"]);
    std::fs::remove_file(t.path().join("meet")).unwrap();
    let r = t.run(&[
        "--slurm",
        "--slurm-workers",
        "2",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    for task in [
        "build/lib",
        "test/uses_lib",
        "test/fails",
        "test/skipped",
        "par/p1",
    ] {
        assert_eq!(r.outcome(task), local.outcome(task), "{task}");
    }
    assert_eq!(r.finished("test/fails")["exit_code"], 3);
    // Both workers connected, and every attempt ran on one of them.
    let connected: Vec<&str> = r
        .of_type("host-connected")
        .iter()
        .map(|e| e["host"].as_str().unwrap())
        .collect();
    assert_eq!(connected.len(), 2, "{connected:?}");
    assert!(connected.contains(&"pilot-1") && connected.contains(&"pilot-2"));
    // The two tasks that met ran at once, one on each worker.
    let mut met: Vec<String> = std::fs::read_to_string(t.path().join("meet"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    met.sort();
    assert_eq!(met, ["pilot-1", "pilot-2"]);
    for e in r.of_type("task-started") {
        let host = e["host"].as_str().unwrap();
        assert!(host == "pilot-1" || host == "pilot-2", "{e}");
    }
    // PEXEN_HOST is the worker's name; JUnit carries the host.
    let built = r.of_type("task-result");
    assert!(
        built.iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .starts_with("built on pilot-")),
        "{built:?}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(".host\" value=\"pilot-"), "{xml}");
    assert!(xml.contains("on stderr"), "{xml}");
    // Two attempts at once (one per worker, -j 1 each), never more; both hosts at once.
    let (max, per_host) = concurrency(&r.events);
    assert_eq!(max, 2, "{per_host:?}");
    // The workers are gone with the run, and their credentials with them.
    let ids = worker_jobs(&t.path().join(".pexen"));
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(active(&ids).is_empty(), "worker jobs left: {ids:?}");
    let workers = t.path().join(".pexen/slurm/workers");
    for e in std::fs::read_dir(&workers).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(p.extension().unwrap(), "out", "{} left", p.display());
    }
    assert!(!t.path().join(".pexen/slurm/workers.jobs").exists());
}

#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn a_cancelled_worker_job_is_a_lost_host_replaced_and_no_task_completes_twice() {
    let _node = require_slurm();
    let log = tempfile::NamedTempFile::new().unwrap();
    let log = log.path().to_path_buf();
    let mut tasks = String::from("{\n");
    for i in 0..10 {
        let _ = writeln!(
            tasks,
            "  \"s{i}\": (run: Shell(\"echo s{i} start $PEXEN_HOST >> '{log}'; sleep 1 && echo s{i} done >> '{log}'\")),",
            log = log.display()
        );
    }
    tasks.push('}');
    // `&&`: `scancel` signals every process of the job at once, so the `sleep` of the attempt
    // it interrupts may die before its shell does; a task completes only when its sleep did.
    let t = Tree::new().file("s.tasks.ron", &tasks);
    let state = t.path().join(".pexen");
    let (child, rx) = spawn_events(&t, &["--slurm", "--slurm-workers", "2"]);
    // Once the first task runs, cancel the job of the worker that runs it.
    let first = wait_lines(&log, 1);
    let host = first[0].rsplit(' ').next().unwrap().to_owned();
    let victim = journal(&state)
        .into_iter()
        .find(|(_, name)| *name == host)
        .expect("the worker journal names the job")
        .0;
    assert!(Command::new("scancel")
        .arg(&victim)
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let events: Vec<Value> = rx.iter().collect();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{events:#?}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The loss names the job; the seat came back with a replacement job.
    let lost: Vec<&Value> = events.iter().filter(|e| e["type"] == "host-lost").collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0]["host"], host.as_str());
    assert!(
        lost[0]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("Slurm job {victim}")),
        "{lost:?}"
    );
    let lost_at = events
        .iter()
        .position(|e| e["type"] == "host-lost")
        .unwrap();
    assert!(
        events[lost_at..]
            .iter()
            .any(|e| e["type"] == "host-connected" && e["host"] == host.as_str()),
        "no replacement for {host}"
    );
    let ids = worker_jobs(&state);
    assert_eq!(ids.len(), 3, "two workers and one replacement: {ids:?}");
    assert!(active(&ids).is_empty(), "worker jobs left: {ids:?}");
    // Every task passed at its first attempt (a lost attempt is not counted), and each
    // completed exactly once; the one the cancelled worker ran was started again.
    let finished: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "task-finished")
        .collect();
    assert_eq!(finished.len(), 10);
    for f in &finished {
        assert_eq!(f["outcome"], "pass", "{f}");
        assert_eq!(f["attempt"], 1, "{f}");
    }
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    let c = counts(&lines);
    for i in 0..10 {
        assert_eq!(c.get(&format!("s{i} done")), Some(&1), "{c:?}");
    }
    assert!(
        c.iter().any(|(l, n)| l.ends_with("start") && *n == 2),
        "no task was requeued: {c:?}"
    );
}

#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn ctrl_c_ends_every_worker_job_and_leaves_no_process() {
    let _node = require_slurm();
    let pids = tempfile::tempdir().unwrap();
    let t = Tree::new().file(
        "sleepers.tasks.ron",
        &format!(
            r#"{{ "a": (run: Shell("echo $$ $PPID > '{d}/a'; sleep 120")),
                 "b": (run: Shell("echo $$ $PPID > '{d}/b'; sleep 120")),
                 "c": (run: Shell("sleep 120")) }}"#,
            d = pids.path().display()
        ),
    );
    let state = t.path().join(".pexen");
    let (mut child, rx) = spawn_events(&t, &["--slurm", "--slurm-workers", "2"]);
    let a = wait_lines(&pids.path().join("a"), 1);
    let b = wait_lines(&pids.path().join("b"), 1);
    let ids: Vec<String> = journal(&state).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2);
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let events: Vec<Value> = rx.iter().collect();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "task-finished")
            .count(),
        3
    );
    assert!(active(&ids).is_empty(), "worker jobs left: {ids:?}");
    // The tasks and the workers that ran them are gone.
    for line in a.iter().chain(&b) {
        for pid in line.split_whitespace() {
            let pid: i32 = pid.parse().unwrap();
            assert!(!common::alive(pid), "process {pid} is still there");
        }
    }
}

#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn resume_after_kill_9_cancels_the_old_workers_and_reruns_only_unrecorded_tasks() {
    let _node = require_slurm();
    let log = tempfile::NamedTempFile::new().unwrap();
    let log: PathBuf = log.path().to_path_buf();
    let mut tasks = String::from("{\n");
    for i in 0..8 {
        let _ = writeln!(
            tasks,
            "  \"k{i}\": (run: Shell(\"echo k{i} start >> '{log}'; sleep 1; echo k{i} done >> '{log}'\")),",
            log = log.display()
        );
    }
    tasks.push('}');
    let t = Tree::new().file("k.tasks.ron", &tasks);
    let state = t.path().join(".pexen");
    let (mut child, rx) = spawn_events(&t, &["--slurm", "--slurm-workers", "2"]);
    // Kill pexen once a task is reported finished (so journaled) while others run.
    let recorded = loop {
        let e = rx.recv().expect("pexen ended before a task finished");
        if e["type"] == "task-finished" {
            break e["task"].as_str().unwrap().to_owned();
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let old: Vec<String> = journal(&state).into_iter().map(|(id, _)| id).collect();
    assert_eq!(old.len(), 2, "the worker journal outlives pexen");

    let r = t.run(&["--slurm", "--slurm-workers", "2", "--resume"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("cancelled 2 pilot worker job(s)"),
        "{}",
        r.stderr
    );
    assert!(active(&old).is_empty(), "old worker jobs left: {old:?}");
    // What the first run recorded is taken from the journal, not run again; every task
    // completed. (A task that completed on a worker but was not reported before the kill runs
    // again, as it would locally.)
    assert_eq!(r.finished(&recorded)["resumed"], true);
    let c = counts(
        &std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>(),
    );
    let name = recorded.rsplit('/').next().unwrap();
    assert_eq!(c.get(&format!("{name} done")), Some(&1), "{c:?}");
    assert_eq!(c.get(&format!("{name} start")), Some(&1), "{c:?}");
    for i in 0..8 {
        assert_eq!(r.outcome(&format!("k/k{i}")), "pass");
        assert!(
            c.get(&format!("k{i} done")).is_some_and(|&n| n >= 1),
            "{c:?}"
        );
    }
}

#[test]
fn pilot_options_need_their_parents() {
    let t = Tree::new().file("a.ron", r#"(run: Cmd(["true"]))"#);
    let r = t.run(&["--slurm-workers", "2"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--slurm"), "{}", r.stderr);
    let r = t.run(&["--slurm", "--slurm-listen", "0.0.0.0"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--slurm-workers"), "{}", r.stderr);
    let r = t.run(&["--slurm", "--slurm-workers", "2", "--host", "ssh://h1"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = t.run(&["--slurm", "--slurm-worker-tag", "gpu"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--slurm-workers"), "{}", r.stderr);
}

/// Tasks' `host_tags` find the workers' `--slurm-worker-tag`s; without them the run is refused
/// before any job is submitted.
#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn worker_tags_place_tagged_tasks() {
    let _node = require_slurm();
    let t = Tree::new().file(
        "g.ron",
        r#"(run: Shell("echo \"pass on $PEXEN_HOST\" >> \"$PEXEN_RESULTS\""), host_tags: ["gpu"])"#,
    );
    let r = t.run(&["--slurm", "--slurm-workers", "1"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("task `g` needs a host with tags gpu"),
        "{}",
        r.stderr
    );
    let state = t.path().join(".pexen");
    assert!(worker_jobs(&state).is_empty() && journal(&state).is_empty());
    let r = t.run(&[
        "--slurm",
        "--slurm-workers",
        "1",
        "--slurm-worker-tag",
        "gpu",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.finished("g")["host"], "pilot-1");
}

/// A worker with nothing to run past `--slurm-worker-idle` is released while the run goes on:
/// its job ends; when work comes that needs it, a new worker job takes its seat.
#[test]
#[ignore = "needs Slurm: run .ci/slurm.sh first"]
fn an_idle_worker_is_released_and_a_new_one_comes_when_work_needs_it() {
    let _node = require_slurm();
    let t = Tree::new();
    let dir = t.path().to_string_lossy().into_owned();
    let meet = t.path().join("meet").to_string_lossy().into_owned();
    let meets = format!(
        r#"(run: Shell("echo $PEXEN_HOST >> {meet}; until [ $(wc -l < {meet}) -ge 2 ]; do sleep 0.02; done"),
            requires: ["long"], timeout: "120s")"#
    );
    let t = t
        .file(
            "long.ron",
            &format!(
                r#"(run: Shell("until [ -e {dir}/go ]; do sleep 0.02; done"), provides: ["long"])"#
            ),
        )
        .file("m1.ron", &meets)
        .file("m2.ron", &meets);
    let state = t.path().join(".pexen");
    let (mut child, rx) = spawn_events(
        &t,
        &[
            "--slurm",
            "--slurm-workers",
            "2",
            "--slurm-worker-idle",
            "1s",
        ],
    );
    let mut events = Vec::new();
    // One worker runs `long`; the other has nothing to do and is let go.
    let released = loop {
        let e = rx.recv().expect("pexen ended before releasing a worker");
        events.push(e.clone());
        if e["type"] == "host-released" {
            break e["host"].as_str().unwrap().to_owned();
        }
    };
    let job = journal(&state)
        .into_iter()
        .find(|(_, name)| *name == released)
        .map(|(id, _)| id)
        .expect("the released worker's job in the journal");
    // Its job ends while the run goes on.
    while !active(std::slice::from_ref(&job)).is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The two tasks after `long` must run at once: the seat gets a new worker.
    std::fs::write(t.path().join("go"), "").unwrap();
    events.extend(rx.iter());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{events:?}");
    for task in ["long", "m1", "m2"] {
        let finished = events
            .iter()
            .find(|e| e["type"] == "task-finished" && e["task"] == task)
            .unwrap_or_else(|| panic!("{task} did not finish: {events:?}"));
        assert_eq!(finished["outcome"], "pass", "{finished}");
    }
    let released_events = events
        .iter()
        .filter(|e| e["type"] == "host-released")
        .count();
    assert_eq!(released_events, 1, "{events:?}");
    let connected: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "host-connected")
        .map(|e| e["host"].as_str().unwrap())
        .collect();
    assert_eq!(
        connected.iter().filter(|h| **h == released).count(),
        2,
        "{connected:?}"
    );
    // Three worker jobs in all, none left.
    let ids = worker_jobs(&state);
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(active(&ids).is_empty(), "worker jobs left: {ids:?}");
}
