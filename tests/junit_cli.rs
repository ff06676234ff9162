//! JUnit reports of real runs (SPEC section 7, issue #5): `pexen run --junit` on the demo tree,
//! `pexen report` rebuilding the same report from the journal alone, and the report an
//! interrupted run leaves. Each is checked with `xmllint` against the Jenkins xUnit schema and
//! read with Python's `junitparser`, as `tests/junit_consumers.rs` does for the writer alone.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{factory, pexen, RunResult, Tree};
use serde_json::Value;

/// `../shared/junit/junit-10.xsd`, beside the repository (CI clones it next to `shared/`).
fn schema() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/junit/junit-10.xsd");
    assert!(
        path.exists(),
        "the JUnit schema is missing: expected {} (the `shared/` directory beside the repository)",
        path.display()
    );
    path
}

fn xmllint(report: &Path) {
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(schema())
        .arg(report)
        .output()
        .unwrap_or_else(|e| panic!("cannot run xmllint ({e}); apt-get install -y libxml2-utils"));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("validates"),
        "{} does not validate:\n{text}\n{}",
        report.display(),
        std::fs::read_to_string(report).unwrap_or_default()
    );
}

/// Every suite and case as junitparser sees them, as JSON:
/// `{"SUITE": {"tests": N, ..., "cases": {"CLASSNAME NAME": {"results": [[KIND, type, message]],
/// "flaky": N, "rerun": N}}}}`.
const SUMMARY: &str = r#"
import json, sys
from junitparser import JUnitXml
xml = JUnitXml.fromfile(sys.argv[1])
out = {}
for suite in xml:
    cases = {}
    for case in suite:
        cases[case.classname + " " + case.name] = {
            "results": [[type(r).__name__, r.type, r.message] for r in case.result],
            "flaky": len(case._elem.findall("flakyFailure")) + len(case._elem.findall("flakyError")),
            "rerun": len(case._elem.findall("rerunFailure")) + len(case._elem.findall("rerunError")),
        }
    out[suite.name] = {
        "tests": suite.tests, "failures": suite.failures, "errors": suite.errors,
        "skipped": suite.skipped, "cases": cases,
    }
print(json.dumps(out))
"#;

fn junitparser(report: &Path) -> Value {
    let install = "python3 -m pip install junitparser";
    let out = Command::new("python3")
        .args(["-c", SUMMARY])
        .arg(report)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {install}"));
    assert!(
        out.status.success(),
        "junitparser could not read {} (is it installed? {install}):\n{}",
        report.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

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

#[test]
fn demo_run_writes_a_valid_report_and_pexen_report_rebuilds_it() {
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
    xmllint(&junit);
    let run = junitparser(&junit);

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
    xmllint(&rebuilt);
    assert_eq!(junitparser(&rebuilt), run);
}

#[test]
fn an_interrupted_run_leaves_a_valid_report() {
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

    xmllint(&junit);
    let report = junitparser(&junit);
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
