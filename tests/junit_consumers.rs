//! The JUnit report against real consumers: `xmllint` with the Jenkins xUnit schema, and Python's
//! `junitparser`. Both must be installed (`.ci/run` does it); a missing tool fails the test with
//! the command that installs it, rather than passing silently.

use std::path::{Path, PathBuf};
use std::process::Command;

use pexen::report::{write_junit, AttemptRecord, TaskRecord};
use pexen::sched::events::Output;
use pexen::Outcome;

fn schema() -> PathBuf {
    // The worktree sits next to `shared/`; CI may point elsewhere with PEXEN_JUNIT_XSD.
    if let Ok(p) = std::env::var("PEXEN_JUNIT_XSD") {
        return p.into();
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        here.join("../shared/junit/junit-10.xsd"),
        here.join("doc/junit-10.xsd"),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| panic!("junit-10.xsd not found in {candidates:?}; set PEXEN_JUNIT_XSD"))
}

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

fn run(cmd: &mut Command, install: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}); install it with: {install}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn report() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junit.xml");
    write_junit(&path, &records(), 31.5).unwrap();
    (dir, path)
}

#[test]
fn xmllint_validates_against_the_xunit_schema() {
    let (_dir, path) = report();
    let text = run(
        Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(schema())
            .arg(&path),
        "apt-get install -y libxml2-utils",
    );
    assert!(text.contains("validates"), "{text}");
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
fn junitparser_reads_every_case() {
    let (_dir, path) = report();
    let install = "python3 -m pip install junitparser";
    let probe = Command::new("python3")
        .args(["-c", "import junitparser"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => panic!("python3 with junitparser is required; install it with: {install}"),
    }
    let text = run(
        Command::new("python3")
            .args(["-c", JUNITPARSER_CHECK])
            .arg(&path),
        install,
    );
    assert!(text.contains("junitparser ok"), "{text}");
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
