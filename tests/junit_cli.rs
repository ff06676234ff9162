//! JUnit reports of real runs (SPEC section 7, issue #5): `pexen run --junit` on the demo tree,
//! `pexen report` rebuilding the same report from the journal alone, and the report an
//! interrupted run leaves. Each is read with quick-xml; the `_in_real_consumers` twins (ignored
//! without the tools: run `.ci/junit-consumers.sh` and set `PEXEN_JUNIT_XSD`) also validate it
//! with `xmllint` against the Jenkins xUnit schema and read it with Python's `junitparser`.

mod common;
#[path = "common/junit.rs"]
mod junit;

use std::io::{BufRead, BufReader};
use std::path::Path;

use common::{factory, pexen, RunResult, Tree};
use serde_json::Value;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap(); // keeps the permissions
        }
    }
}

/// Reads a report with quick-xml or, with `consumers`, also with the real consumers.
fn read(report: &Path, consumers: bool) -> Value {
    if consumers {
        junit::check_with_consumers(report)
    } else {
        junit::summary(report)
    }
}

#[test]
fn demo_run_writes_a_valid_report_and_pexen_report_rebuilds_it() {
    demo_run(false);
}

#[test]
#[ignore = "needs xmllint, junitparser and PEXEN_JUNIT_XSD: run .ci/junit-consumers.sh first"]
fn demo_run_report_and_its_rebuild_in_real_consumers() {
    demo_run(true);
}

fn demo_run(consumers: bool) {
    let dir = tempfile::tempdir().unwrap();
    // The demo tree, with its slow test made to exceed its timeout.
    let tree = dir.path().join("demo");
    copy_tree(&factory("demo"), &tree);
    std::fs::write(
        tree.join("slow.ron"),
        r#"(run: Shell("sleep 30"), timeout: "300ms", tags: ["slow"])"#,
    )
    .unwrap();
    let state = dir.path().join("state");
    let junit = dir.path().join("run.xml");
    let out = pexen()
        .args(["run", "-j", "4", "--message-format", "json", "--junit"])
        .arg(&junit)
        .arg("--state")
        .arg(&state)
        .arg(&tree)
        .output()
        .unwrap();
    let r = RunResult::new(out);
    assert_eq!(r.code, 1, "the slow task times out: {}", r.stderr);
    let run = read(&junit, consumers);

    let suites: Vec<&String> = run.as_object().unwrap().keys().collect();
    assert_eq!(suites, [".", "api", "net", "setup", "smoke"], "{run:#}");
    let case = |suite: &str, key: &str| run[suite]["cases"][key].clone();
    let slow = case(".", ". slow");
    assert_eq!(slow["results"][0][0], "Error", "{slow}");
    assert_eq!(slow["results"][0][1], "timeout", "{slow}");
    let skipped = case(".", ". skipped");
    assert_eq!(skipped["results"][0][0], "Skipped", "{skipped}");
    assert!(
        skipped["results"][0][2].is_string(),
        "a skip message: {skipped}"
    );
    let flaky = case(".", ". flaky");
    assert_eq!(flaky["results"], serde_json::json!([]), "{flaky}");
    assert_eq!(flaky["flaky"], 1, "{flaky}");
    assert_eq!(
        case("smoke", "smoke boot.sh")["results"],
        serde_json::json!([])
    );
    assert!(run["api"]["cases"]["api users"].is_object(), "{run:#}");
    assert_eq!(run["."]["errors"], 1);
    assert_eq!(run["."]["skipped"], 1);
    let total: u64 = run
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["tests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, r.of_type("task-finished").len() as u64);

    // From the journal alone: the same suites, cases and outcomes.
    let rebuilt = dir.path().join("rebuilt.xml");
    let out = pexen()
        .arg("report")
        .arg("--junit")
        .arg(&rebuilt)
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&rebuilt, consumers), run);
}

#[test]
fn an_interrupted_run_leaves_a_valid_report() {
    interrupted_run(false);
}

#[test]
#[ignore = "needs xmllint, junitparser and PEXEN_JUNIT_XSD: run .ci/junit-consumers.sh first"]
fn an_interrupted_run_leaves_a_report_real_consumers_accept() {
    interrupted_run(true);
}

fn interrupted_run(consumers: bool) {
    let t = Tree::new()
        .file("ok.ron", r#"(run: Shell("echo fine"), priority: -2)"#)
        .file(
            "bad.ron",
            r#"(run: Shell("echo broken >&2; exit 1"), priority: -1)"#,
        )
        .file(
            "long.ron",
            r#"(run: Shell("echo 'pass started' >> $PEXEN_RESULTS; sleep 300 & wait"))"#,
        )
        .file("later.ron", r#"(run: Shell("true"), requires: ["never"])"#)
        .file(
            "never.ron",
            r#"(run: Shell("sleep 300"), provides: ["never"], priority: 1)"#,
        );
    let junit = t.path().join("report.xml");
    let mut child = t.spawn(&["-j", "1", "--junit", junit.to_str().unwrap()]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The long task's shell is running once its first result is streamed.
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains(r#""type":"task-result""#) && line.contains(r#""task":"long""#) {
            break;
        }
    }
    // SAFETY: sending SIGINT to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(rest.last().unwrap().contains("run-finished"), "{rest:#?}");

    let report = read(&junit, consumers);
    let cases = &report["."]["cases"];
    assert_eq!(cases.as_object().unwrap().len(), 5, "{report:#}");
    assert_eq!(cases[". ok"]["results"], serde_json::json!([]));
    assert_eq!(cases[". bad"]["results"][0][0], "Failure");
    assert_eq!(cases[". later"]["results"][0][0], "Skipped");
    assert_eq!(
        cases[". never"]["results"][0][0], "Skipped",
        "{report:#} {rest:#?}"
    );
    // The interrupted task was killed: not a pass.
    assert_ne!(
        cases[". long"]["results"],
        serde_json::json!([]),
        "{report:#}"
    );
}
