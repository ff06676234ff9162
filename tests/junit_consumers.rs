//! The JUnit writer's report against real consumers: `xmllint` with the Jenkins xUnit schema, and
//! Python's `junitparser`. Those tests are ignored on a machine with only a Rust toolchain: run
//! `.ci/junit-consumers.sh` (it installs both) and set `PEXEN_JUNIT_XSD`, then
//! `cargo test --test junit_consumers -- --include-ignored`; a missing tool or schema fails with
//! what to run or set. What needs no tool (the structure read with quick-xml, atomic replacement)
//! always runs.

#[path = "common/junit.rs"]
mod junit;

use std::path::PathBuf;
use std::process::Command;

use pexen::report::{write_junit, AttemptRecord, TaskRecord};
use pexen::sched::events::Output;
use pexen::Outcome;

fn output(stdout: &str, stderr: &str) -> Output {
    Output {
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

/// Every case the writer knows: each outcome, results, retries, hostile characters, the root.
fn records() -> Vec<TaskRecord> {
    let failed_attempt = |outcome| AttemptRecord {
        attempt: 1,
        outcome,
        message: Some("exit code 1".into()),
        output: Some(output("attempt one\n", "boom\u{1b}[0m\n")),
        duration_s: 0.5,
        results: vec![(Outcome::Fail, "sub".into())],
    };
    let mut pass = TaskRecord::new("net/tcp/connect", Outcome::Pass);
    pass.duration_s = 0.21;
    pass.output = Some(output("ok\n", ""));
    let mut warn = TaskRecord::new("net/tcp/warned", Outcome::Warn);
    warn.results = vec![
        (Outcome::Warn, "slow handshake".into()),
        (Outcome::Pass, "sub-test 2".into()),
    ];
    let mut fail = TaskRecord::new("net/udp/send", Outcome::Fail);
    fail.exit_code = Some(1);
    fail.message = Some("exit code 1".into());
    fail.output = Some(output(
        "nul\u{0}here \u{fffe} & <tags> ]]>\n",
        "esc \u{1b}[31mred\u{1b}[0m\n",
    ));
    fail.results = vec![(Outcome::Fail, "checksum mismatch \"quoted\"".into())];
    let mut error = TaskRecord::new("net/udp/crash", Outcome::Error);
    error.message = Some("killed by SIGSEGV".into());
    let mut timeout = TaskRecord::new("slow/forever", Outcome::Timeout);
    timeout.message = Some("timed out after 30s".into());
    timeout.duration_s = 30.0;
    let mut skip = TaskRecord::new("net/udp/after", Outcome::Skip);
    skip.attempt = 0;
    skip.cause = Some("token `udp` (provider net/udp/send failed)".into());
    let mut flaky = TaskRecord::new("flaky/eventually", Outcome::Pass);
    flaky.attempt = 2;
    flaky.failed_attempts = vec![failed_attempt(Outcome::Fail)];
    let mut rerun = TaskRecord::new("flaky/never", Outcome::Fail);
    rerun.attempt = 3;
    rerun.failed_attempts = vec![
        failed_attempt(Outcome::Fail),
        failed_attempt(Outcome::Timeout),
    ];
    let mut resumed = TaskRecord::new("top", Outcome::Pass);
    resumed.resumed = true;
    vec![
        pass, warn, fail, error, timeout, skip, flaky, rerun, resumed,
    ]
}

fn report() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junit.xml");
    write_junit(&path, &records(), 31.5).unwrap();
    (dir, path)
}

#[test]
fn every_case_is_written_with_its_outcome() {
    let (_dir, path) = report();
    let run = junit::summary(&path);
    let suites: Vec<&String> = run.as_object().unwrap().keys().collect();
    assert_eq!(
        suites,
        [".", "flaky", "net/tcp", "net/udp", "slow"],
        "{run:#}"
    );
    let kinds = |suite: &str, case: &str| run[suite]["cases"][case]["results"].clone();
    assert_eq!(kinds("net/tcp", "net.tcp connect"), serde_json::json!([]));
    assert_eq!(kinds("net/udp", "net.udp send")[0][0], "Failure");
    assert_eq!(kinds("net/udp", "net.udp crash")[0][0], "Error");
    assert_eq!(kinds("slow", "slow forever")[0][0], "Error");
    assert_eq!(kinds("slow", "slow forever")[0][1], "timeout");
    assert_eq!(kinds("net/udp", "net.udp after")[0][0], "Skipped");
    let udp = &run["net/udp"];
    assert_eq!(
        (&udp["failures"], &udp["errors"], &udp["skipped"]),
        (&1.into(), &1.into(), &1.into())
    );
    let cases: usize = run
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["cases"].as_object().unwrap().len())
        .sum();
    assert_eq!(cases, 9, "{run:#}");
}

#[test]
#[ignore = "needs xmllint and PEXEN_JUNIT_XSD: run .ci/junit-consumers.sh first"]
fn xmllint_validates_against_the_xunit_schema() {
    let (_dir, path) = report();
    junit::xmllint(&path);
}

const JUNITPARSER_CHECK: &str = r#"
import sys
from junitparser import JUnitXml, Failure, Error, Skipped
xml = JUnitXml.fromfile(sys.argv[1])
cases = {}
suites = {}
for suite in xml:
    suites[suite.name] = suite
    for case in suite:
        cases[(case.classname, case.name)] = case
assert sorted(suites) == [".", "flaky", "net/tcp", "net/udp", "slow"], sorted(suites)
assert len(cases) == 9, len(cases)
def kinds(key):
    return [type(r).__name__ for r in cases[key].result]
assert kinds(("net.tcp", "connect")) == [], kinds(("net.tcp", "connect"))
assert kinds(("net.udp", "send")) == ["Failure"]
assert kinds(("net.udp", "crash")) == ["Error"]
assert kinds(("slow", "forever")) == ["Error"]
assert cases[("slow", "forever")].result[0].type == "timeout"
assert kinds(("net.udp", "after")) == ["Skipped"]
assert cases[("net.udp", "after")].result[0].message.startswith("token `udp`")
send = cases[("net.udp", "send")]
assert "nulhere" in send.system_out, repr(send.system_out)
assert "[31mred" in send.system_err, repr(send.system_err)
assert cases[("net.tcp", "connect")].time == 0.21
props = {p.name: p.value for p in suites["net/tcp"].properties()}
assert props["warned.result.1"] == "warn slow handshake", props
assert props["warned.outcome"] == "warn", props
assert suites["net/udp"].failures == 1 and suites["net/udp"].errors == 1 and suites["net/udp"].skipped == 1
print("junitparser ok")
"#;

#[test]
#[ignore = "needs Python's junitparser: run .ci/junit-consumers.sh first"]
fn junitparser_reads_every_case() {
    let (_dir, path) = report();
    let out = Command::new("python3")
        .args(["-c", JUNITPARSER_CHECK])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): run .ci/junit-consumers.sh"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("junitparser ok"),
        "junitparser's check failed (is it installed? run .ci/junit-consumers.sh):\n{text}"
    );
    // And it reads the report as the quick-xml summary does.
    assert_eq!(junit::junitparser(&path), junit::summary(&path));
}

#[test]
fn the_report_replaces_an_older_one_atomically() {
    let (dir, path) = report();
    write_junit(&path, &records()[..1], 0.2).unwrap();
    let xml = std::fs::read_to_string(&path).unwrap();
    assert!(xml.contains(r#"tests="1""#), "{xml}");
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["junit.xml"]);
}
