//! Reading JUnit reports in tests: a summary read with quick-xml (Rust only, always available),
//! and the real consumers CI installs (`xmllint` with the Jenkins xUnit schema, Python's
//! `junitparser`), which give the same summary or fail with what to install or set.
//!
//! The summary, as JSON: `{"SUITE": {"tests": N, "failures": N, "errors": N, "skipped": N,
//! "cases": {"CLASSNAME NAME": {"results": [[KIND, type, message]], "flaky": N, "rerun": N}}}}`,
//! KIND being `Failure`, `Error` or `Skipped` (junitparser's class names) and absent attributes
//! `null`.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde_json::{json, Map, Value};

fn attr(e: &BytesStart<'_>, name: &str) -> Value {
    e.attributes()
        .map(|a| a.expect("a well-formed attribute"))
        .find(|a| a.key.as_ref() == name.as_bytes())
        .map_or(Value::Null, |a| {
            Value::String(a.unescape_value().expect("an escaped value").into_owned())
        })
}

fn count(e: &BytesStart<'_>, name: &str) -> Value {
    let text = attr(e, name);
    let text = text.as_str().unwrap_or("0");
    json!(text
        .parse::<u64>()
        .unwrap_or_else(|_| panic!("{name}={text:?} is not a count")))
}

/// The summary of `report`, read with quick-xml.
pub fn summary(report: &Path) -> Value {
    let xml = std::fs::read_to_string(report)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", report.display()));
    let mut reader = Reader::from_str(&xml);
    let mut suites = Map::new();
    let mut suite: Option<(String, Value)> = None;
    let mut case: Option<(String, Value)> = None;
    loop {
        let event = reader.read_event().expect("well-formed XML");
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            Event::End(e) => {
                match e.name().as_ref() {
                    b"testcase" => close_case(&mut suite, &mut case),
                    b"testsuite" => close_suite(&mut suites, &mut suite),
                    _ => {}
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let e = start.expect("a start tag");
        match e.name().as_ref() {
            b"testsuite" => {
                let name = attr(e, "name").as_str().expect("a suite name").to_owned();
                let value = json!({
                    "tests": count(e, "tests"), "failures": count(e, "failures"),
                    "errors": count(e, "errors"), "skipped": count(e, "skipped"),
                    "cases": {},
                });
                suite = Some((name, value));
                if empty {
                    close_suite(&mut suites, &mut suite);
                }
            }
            b"testcase" => {
                let key = format!(
                    "{} {}",
                    attr(e, "classname").as_str().unwrap_or_default(),
                    attr(e, "name").as_str().unwrap_or_default()
                );
                case = Some((key, json!({"results": [], "flaky": 0, "rerun": 0})));
                if empty {
                    close_case(&mut suite, &mut case);
                }
            }
            tag => {
                let Some((_, c)) = case.as_mut() else {
                    continue;
                };
                let kind = match tag {
                    b"failure" => "Failure",
                    b"error" => "Error",
                    b"skipped" => "Skipped",
                    b"flakyFailure" | b"flakyError" => {
                        c["flaky"] = json!(c["flaky"].as_u64().unwrap() + 1);
                        continue;
                    }
                    b"rerunFailure" | b"rerunError" => {
                        c["rerun"] = json!(c["rerun"].as_u64().unwrap() + 1);
                        continue;
                    }
                    _ => continue,
                };
                let result = json!([kind, attr(e, "type"), attr(e, "message")]);
                c["results"].as_array_mut().unwrap().push(result);
            }
        }
    }
    Value::Object(suites)
}

fn close_case(suite: &mut Option<(String, Value)>, case: &mut Option<(String, Value)>) {
    let (key, value) = case.take().expect("an open testcase");
    let (_, s) = suite.as_mut().expect("a testcase inside a testsuite");
    s["cases"].as_object_mut().unwrap().insert(key, value);
}

fn close_suite(suites: &mut Map<String, Value>, suite: &mut Option<(String, Value)>) {
    let (name, value) = suite.take().expect("an open testsuite");
    suites.insert(name, value);
}

/// The schema's path, from `PEXEN_JUNIT_XSD` (CI sets it to `../shared/junit/junit-10.xsd`).
pub fn schema() -> PathBuf {
    let path = PathBuf::from(std::env::var_os("PEXEN_JUNIT_XSD").unwrap_or_else(|| {
        panic!(
            "PEXEN_JUNIT_XSD is not set: point it at the Jenkins xUnit schema junit-10.xsd \
             (CI: PEXEN_JUNIT_XSD=../shared/junit/junit-10.xsd); .ci/junit-consumers.sh installs the tools"
        )
    }));
    assert!(
        path.is_file(),
        "PEXEN_JUNIT_XSD={} is not a file: point it at junit-10.xsd",
        path.display()
    );
    path
}

/// Validates `report` against the schema with `xmllint`.
pub fn xmllint(report: &Path) {
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(schema())
        .arg(report)
        .output()
        .unwrap_or_else(|e| panic!("cannot run xmllint ({e}): run .ci/junit-consumers.sh"));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("validates"),
        "{} does not validate:\n{text}\n{}",
        report.display(),
        std::fs::read_to_string(report).unwrap_or_default()
    );
}

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

/// The summary of `report` as Python's `junitparser` reads it.
pub fn junitparser(report: &Path) -> Value {
    let out = Command::new("python3")
        .args(["-c", SUMMARY])
        .arg(report)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): run .ci/junit-consumers.sh"));
    assert!(
        out.status.success(),
        "junitparser could not read {} (is it installed? run .ci/junit-consumers.sh):\n{}",
        report.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("junitparser's summary as JSON")
}

/// Both consumers accept `report` and read it as [`summary`] does; returns that summary.
pub fn check_with_consumers(report: &Path) -> Value {
    xmllint(report);
    let ours = summary(report);
    assert_eq!(
        junitparser(report),
        ours,
        "junitparser reads {} differently",
        report.display()
    );
    ours
}
