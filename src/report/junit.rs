//! The JUnit XML report (SPEC section 7), valid against the Jenkins xUnit `junit-10.xsd`.
//!
//! Mapping:
//! - one `<testsuite>` per directory of the task names, `name` = the directory path
//!   (`net/tcp`); tasks at the root go to a suite named `.`. Suites are sorted by name and
//!   cases by task name, so that two runs of one tree give comparable files;
//! - one `<testcase name="BASENAME" classname="dir.path">` per task (`classname="."` at the
//!   root);
//! - `fail` -> `<failure>`, `error` -> `<error type="error">`, `timeout` -> `<error type="timeout">`,
//!   `skip` -> `<skipped message="cause">`; `pass` and `warn` have no such child;
//! - earlier failed attempts: `<flakyFailure>`/`<flakyError>` when the task finally succeeded,
//!   `<rerunFailure>`/`<rerunError>` when it did not (the Surefire convention);
//! - the schema allows `<properties>` only on `<testsuite>`, so each suite starts with one
//!   holding, per task, `BASENAME.result.N` = `STATUS message` for its extra results, and
//!   `BASENAME.outcome` = `warn` / `BASENAME.resumed` = `true` where that applies, and
//!   `BASENAME.host` = where it ran in runs with hosts (SPEC 9 asks for a testcase property
//!   `host`; the schema has none on testcases);
//! - the schema allows no `skipped` total on `<testsuites>`: it carries `tests`, `failures`,
//!   `errors` and `time`; each `<testsuite>` also carries `skipped`.
//!
//! Text and attributes lose the characters XML 1.0 forbids (most C0 controls, U+FFFE, U+FFFF).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use quick_xml::events::{BytesDecl, BytesText, Event as Xml};
use quick_xml::Writer;

use crate::report::record::{AttemptRecord, TaskRecord};
use crate::sched::events::Output;
use crate::task::Outcome;

type XmlResult = Result<(), quick_xml::Error>;

/// Removes characters that XML 1.0 does not allow anywhere in a document.
pub fn xml_clean(s: &str) -> String {
    s.chars()
        .filter(|&c| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..))
        .collect()
}

/// Seconds with at most three decimals, as the schema's `SUREFIRE_TIME` pattern requires.
fn time(seconds: f64) -> String {
    format!("{:.3}", seconds.max(0.0))
}

#[derive(Default)]
struct Totals {
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
    time: f64,
}

impl Totals {
    fn add(&mut self, r: &TaskRecord) {
        self.tests += 1;
        self.time += r.duration_s;
        match r.outcome {
            Outcome::Fail => self.failures += 1,
            Outcome::Error | Outcome::Timeout => self.errors += 1,
            Outcome::Skip => self.skipped += 1,
            Outcome::Pass | Outcome::Warn => {}
        }
    }
}

/// Writes the report to `path` atomically: a temporary file in the same directory, renamed over
/// `path` once complete, so that a reader (or an interrupt) never sees half a file.
pub fn write_junit(path: &Path, records: &[TaskRecord], run_duration_s: f64) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "junit.xml".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut out = BufWriter::new(File::create(&tmp)?);
        render(&mut out, records, run_duration_s).map_err(into_io)?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn into_io(e: quick_xml::Error) -> io::Error {
    match e {
        quick_xml::Error::Io(e) => io::Error::new(e.kind(), e.to_string()),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

/// Writes the whole document to `out`.
pub fn render<W: Write>(out: W, records: &[TaskRecord], run_duration_s: f64) -> XmlResult {
    let mut suites: BTreeMap<&str, Vec<&TaskRecord>> = BTreeMap::new();
    let mut totals = Totals::default();
    for r in records {
        suites.entry(r.name.dir()).or_default().push(r);
        totals.add(r);
    }
    let mut w = Writer::new_with_indent(out, b' ', 2);
    w.write_event(Xml::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("testsuites")
        .with_attributes([
            ("name", "pexen"),
            ("tests", &totals.tests.to_string()),
            ("failures", &totals.failures.to_string()),
            ("errors", &totals.errors.to_string()),
            ("time", &time(run_duration_s)),
        ])
        .write_inner_content(|w| {
            for (dir, mut cases) in suites {
                cases.sort_by(|a, b| a.name.cmp(&b.name));
                suite(w, dir, &cases)?;
            }
            Ok::<(), quick_xml::Error>(())
        })?;
    w.into_inner()
        .flush()
        .map_err(|e| quick_xml::Error::Io(e.into()))
}

fn suite<W: Write>(w: &mut Writer<W>, dir: &str, cases: &[&TaskRecord]) -> XmlResult {
    let mut t = Totals::default();
    for r in cases {
        t.add(r);
    }
    let name = if dir.is_empty() { "." } else { dir };
    let properties = properties(cases);
    w.create_element("testsuite")
        .with_attributes([
            ("name", xml_clean(name).as_str()),
            ("tests", &t.tests.to_string()),
            ("failures", &t.failures.to_string()),
            ("errors", &t.errors.to_string()),
            ("skipped", &t.skipped.to_string()),
            ("time", &time(t.time)),
        ])
        .write_inner_content(|w| {
            if !properties.is_empty() {
                w.create_element("properties").write_inner_content(|w| {
                    for (k, v) in &properties {
                        w.create_element("property")
                            .with_attributes([
                                ("name", xml_clean(k).as_str()),
                                ("value", &xml_clean(v)),
                            ])
                            .write_empty()?;
                    }
                    Ok::<(), quick_xml::Error>(())
                })?;
            }
            for r in cases {
                case(w, r)?;
            }
            Ok::<(), quick_xml::Error>(())
        })?;
    Ok(())
}

fn properties(cases: &[&TaskRecord]) -> Vec<(String, String)> {
    let mut props = Vec::new();
    for r in cases {
        let base = r.name.base();
        if r.outcome == Outcome::Warn {
            props.push((format!("{base}.outcome"), "warn".to_owned()));
        }
        if r.resumed {
            props.push((format!("{base}.resumed"), "true".to_owned()));
        }
        if let Some(host) = &r.host {
            props.push((format!("{base}.host"), host.clone()));
        }
        for (i, (status, message)) in r.results.iter().enumerate() {
            props.push((
                format!("{base}.result.{}", i + 1),
                format!("{status} {message}"),
            ));
        }
    }
    props
}

fn case<W: Write>(w: &mut Writer<W>, r: &TaskRecord) -> XmlResult {
    let dir = r.name.dir();
    let classname = if dir.is_empty() {
        ".".to_owned()
    } else {
        dir.replace('/', ".")
    };
    let message = r.message.as_deref().unwrap_or("");
    w.create_element("testcase")
        .with_attributes([
            ("name", xml_clean(r.name.base()).as_str()),
            ("classname", &xml_clean(&classname)),
            ("time", &time(r.duration_s)),
        ])
        .write_inner_content(|w| {
            let success = r.outcome.is_success();
            for a in &r.failed_attempts {
                attempt(w, a, success)?;
            }
            match r.outcome {
                Outcome::Fail => detail(w, "failure", "fail", message, &result_lines(r))?,
                Outcome::Error => detail(w, "error", "error", message, &result_lines(r))?,
                Outcome::Timeout => detail(w, "error", "timeout", message, &result_lines(r))?,
                Outcome::Skip => {
                    let why = r
                        .cause
                        .as_deref()
                        .or(r.message.as_deref())
                        .unwrap_or("skipped");
                    w.create_element("skipped")
                        .with_attribute(("message", xml_clean(why).as_str()))
                        .write_empty()?;
                }
                Outcome::Pass | Outcome::Warn => {}
            }
            output(w, r.output.as_ref())
        })?;
    Ok(())
}

/// The failing results of a task, one per line: the body of its `<failure>` / `<error>`.
fn result_lines(r: &TaskRecord) -> String {
    let mut lines: Vec<String> = r.results.iter().map(|(s, m)| format!("{s} {m}")).collect();
    if let Some(code) = r.exit_code {
        lines.push(format!("exit code {code}"));
    }
    lines.join("\n")
}

fn detail<W: Write>(
    w: &mut Writer<W>,
    element: &str,
    kind: &str,
    message: &str,
    body: &str,
) -> XmlResult {
    w.create_element(element)
        .with_attributes([("type", kind), ("message", &xml_clean(message))])
        .write_text_content(BytesText::new(&xml_clean(body)))?;
    Ok(())
}

fn attempt<W: Write>(w: &mut Writer<W>, a: &AttemptRecord, finally_succeeded: bool) -> XmlResult {
    let is_error = matches!(a.outcome, Outcome::Error | Outcome::Timeout);
    let element = match (finally_succeeded, is_error) {
        (true, false) => "flakyFailure",
        (true, true) => "flakyError",
        (false, false) => "rerunFailure",
        (false, true) => "rerunError",
    };
    let message = format!(
        "attempt {}: {}",
        a.attempt,
        a.message.as_deref().unwrap_or(a.outcome.as_str())
    );
    w.create_element(element)
        .with_attributes([
            ("type", a.outcome.as_str()),
            ("message", &xml_clean(&message)),
        ])
        .write_inner_content(|w| output(w, a.output.as_ref()))?;
    Ok(())
}

fn output<W: Write>(w: &mut Writer<W>, out: Option<&Output>) -> XmlResult {
    let Some(out) = out else { return Ok(()) };
    for (element, text) in [("system-out", &out.stdout), ("system-err", &out.stderr)] {
        if !text.is_empty() {
            w.create_element(element)
                .write_text_content(BytesText::new(&xml_clean(text)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_str(records: &[TaskRecord]) -> String {
        let mut out = Vec::new();
        render(&mut out, records, 1.5).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn forbidden_characters_are_removed() {
        assert_eq!(
            xml_clean("a\u{0}b\u{1b}[31mc\u{fffe}d\u{ffff}\te\n"),
            "ab[31mcd\te\n"
        );
        assert_eq!(xml_clean("é😀\u{e000}"), "é😀\u{e000}");
    }

    #[test]
    fn suites_follow_directories_and_outcomes_map_to_elements() {
        let mut fail = TaskRecord::new("net/tcp/connect", Outcome::Fail);
        fail.message = Some("exit code 1 <&>".into());
        fail.output = Some(Output {
            stdout: "out\u{0}put".into(),
            stderr: "err".into(),
        });
        let mut skip = TaskRecord::new("top", Outcome::Skip);
        skip.cause = Some("token `db` (provider db/up failed)".into());
        let mut timeout = TaskRecord::new("net/tcp/slow", Outcome::Timeout);
        timeout.duration_s = 30.0004;
        let xml = render_str(&[fail, skip, timeout]);
        assert!(
            xml.contains(
                r#"<testsuites name="pexen" tests="3" failures="1" errors="1" time="1.500">"#
            ),
            "{xml}"
        );
        assert!(xml.contains(r#"<testsuite name="net/tcp" tests="2" failures="1" errors="1" skipped="0" time="30.000">"#), "{xml}");
        assert!(
            xml.contains(r#"<testcase name="connect" classname="net.tcp" time="0.000">"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<failure type="fail" message="exit code 1 &lt;&amp;&gt;"#),
            "{xml}"
        );
        assert!(xml.contains("<system-out>output</system-out>"), "{xml}");
        assert!(xml.contains(r#"<error type="timeout" message="""#), "{xml}");
        assert!(
            xml.contains(r#"<testsuite name="." tests="1" failures="0" errors="0" skipped="1""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testcase name="top" classname="."#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<skipped message="token `db` (provider db/up failed)"/>"#),
            "{xml}"
        );
    }

    #[test]
    fn results_become_suite_properties_and_retries_rerun_elements() {
        let retry = AttemptRecord {
            attempt: 1,
            outcome: Outcome::Fail,
            message: Some("exit code 1".into()),
            output: Some(Output {
                stdout: "first".into(),
                stderr: String::new(),
            }),
            duration_s: 0.1,
            results: Vec::new(),
        };
        let mut flaky = TaskRecord::new("a/flaky", Outcome::Warn);
        flaky.results = vec![(Outcome::Warn, "disk almost full".into())];
        flaky.failed_attempts = vec![retry.clone()];
        let mut broken = TaskRecord::new("a/broken", Outcome::Error);
        broken.failed_attempts = vec![retry];
        let xml = render_str(&[flaky, broken]);
        assert!(
            xml.contains(r#"<property name="flaky.outcome" value="warn"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<property name="flaky.result.1" value="warn disk almost full"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<flakyFailure type="fail" message="attempt 1: exit code 1">"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<rerunFailure type="fail" message="attempt 1: exit code 1">"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<error type="error""#), "{xml}");
    }
}
