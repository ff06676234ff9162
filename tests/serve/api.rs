//! The API does what `pexen run` and `pexen list` do, over HTTP.

use serde_json::Value;

use crate::common::{pexen, RunResult, Tree};
use crate::Served;

fn tree() -> Tree {
    Tree::new()
        .script("build/a.sh", "echo built a")
        .file(
            "build/b.ron",
            r#"(run: Shell("echo b; echo 'warn slow disk' >> $PEXEN_RESULTS"), requires: ["a"], provides: ["b"])"#,
        )
        .file("build/_dir.ron", r#"(tags: ["build"])"#)
        .file("build/a.ron", r#"(run: Shell("echo a"), provides: ["a"])"#)
        .script("fails.sh", "echo to stdout; echo broken >&2; exit 3")
        .file(
            "after.ron",
            r#"(run: Shell("echo after"), requires: ["b"])"#,
        )
}

/// Events without their timings, which differ from run to run.
fn untimed(events: impl IntoIterator<Item = Value>) -> Vec<Value> {
    events
        .into_iter()
        .map(|mut e| {
            if let Some(o) = e.as_object_mut() {
                o.remove("duration_s");
            }
            e
        })
        .collect()
}

#[test]
fn describe_is_the_list_of_the_cli() {
    let t = tree();
    let s = Served::start(t.path(), &[]);
    let (status, described) = s.get_json("/tasks");
    assert_eq!(status, 200);
    let out = t.cmd("list", &["--format", "json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(described, listed);
    assert_eq!(described.as_array().unwrap().len(), 5);
    // "as the tree is now on disk"
    let _t = t.file("late.ron", r#"(run: Shell("true"))"#);
    let (_, described) = s.get_json("/tasks");
    assert_eq!(described.as_array().unwrap().len(), 6);
}

#[test]
fn a_run_over_http_has_the_events_of_the_cli() {
    let t = tree();
    let cli = t.run(&["-j", "1"]);
    assert_eq!(cli.code, 1, "{}", cli.stderr);
    let s = Served::start(t.path(), &["-j", "1"]);
    let id = s.start_run("{}");
    let events = s.events(&id, None);
    let ids: Vec<u64> = events.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        untimed(events.into_iter().map(|(_, e)| e)),
        untimed(cli.events.clone())
    );

    let (status, summary) = s.get_json(&format!("/runs/{id}"));
    assert_eq!(status, 200);
    assert_eq!(summary["status"], "finished");
    assert_eq!(summary["outcome"], "fail");
    assert_eq!(summary["counts"]["pass"], 3);
    assert_eq!(summary["counts"]["warn"], 1);
    assert_eq!(summary["counts"]["fail"], 1);
    assert_eq!(summary["tasks"], 5);
    let (_, runs) = s.get_json("/runs");
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["id"], id.as_str());

    // The record of a task: outcome, output, results.
    let (status, rec) = s.get_json(&format!("/runs/{id}/tasks/fails.sh"));
    assert_eq!(status, 200, "{rec}");
    assert_eq!(rec["outcome"], "fail");
    assert_eq!(rec["exit_code"], 3);
    assert_eq!(rec["stdout"], "to stdout\n");
    assert_eq!(rec["stderr"], "broken\n");
    let (_, rec) = s.get_json(&format!("/runs/{id}/tasks/build/b"));
    assert_eq!(rec["outcome"], "warn");
    assert_eq!(rec["results"][0]["message"], "slow disk");
    let (status, _) = s.get(&format!("/runs/{id}/tasks/build/nope"));
    assert_eq!(status, 404);

    // The journal is the CLI's: `pexen report` rebuilds the report of the run made over HTTP,
    // and it is the one the server gives.
    let (status, xml) = s.get(&format!("/runs/{id}/junit"));
    assert_eq!(status, 200);
    assert!(xml.contains("<testsuites"), "{xml}");
    assert!(xml.contains(r#"<testcase name="fails.sh""#), "{xml}");
    assert!(xml.contains("<failure"), "{xml}");
    let report = t.path().join("report.xml");
    let out = pexen()
        .args(["report", "--junit"])
        .arg(&report)
        .arg("--state")
        .arg(t.path().join(".pexen"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let rebuilt = std::fs::read_to_string(&report).unwrap();
    assert_eq!(
        rebuilt.matches("<testcase").count(),
        xml.matches("<testcase").count()
    );
}

#[test]
fn selection_resume_and_replay_from_any_event() {
    let t = tree();
    let s = Served::start(t.path(), &[]);
    let first = s.start_run(r#"{"filter":["after"]}"#);
    let events = s.events(&first, None);
    let finished: Vec<&str> = events
        .iter()
        .filter(|(_, e)| e["type"] == "task-finished")
        .map(|(_, e)| e["task"].as_str().unwrap())
        .collect();
    // The selection and the providers it requires, not `fails.sh`.
    assert_eq!(finished.len(), 3, "{finished:?}");
    assert!(!finished.contains(&"fails.sh"));

    // Replay from every event number: exactly the rest, no gap, no duplicate.
    for k in 0..=events.len() {
        let rest = s.events(&first, Some(k as u64));
        assert_eq!(rest, events[k..].to_vec(), "after event {k}");
    }
    let (status, _) = s.get(&format!("/runs/{first}/events"));
    assert_eq!(status, 200);
    let bad = crate::call(
        ureq::get(&format!("{}/api/v1/runs/{first}/events", s.base))
            .set("Authorization", &s.bearer())
            .set("Last-Event-ID", "99999"),
        None,
    );
    assert_eq!(bad.0, 400, "{}", bad.1);

    // Resume takes the passed tasks from the journal.
    let second = s.start_run(r#"{"filter":["after"],"resume":true}"#);
    let events = s.events(&second, None);
    let resumed = events
        .iter()
        .filter(|(_, e)| e["type"] == "task-finished" && e["resumed"] == true)
        .count();
    assert_eq!(resumed, 3);
    // Tags select too.
    let third = s.start_run(r#"{"tags":["build"],"jobs":1,"retries":0,"fail_fast":true}"#);
    let events = s.events(&third, None);
    assert_eq!(events[0].1["jobs"], 1);
    assert_eq!(events[0].1["tasks"], 3);
}

#[test]
fn live_replay_then_conflict_then_cancel() {
    // `wait` holds the run until the test creates `.gate` (hidden: not a task).
    let t = Tree::new();
    let gate = t.path().join(".gate");
    let t = t
        .script("first.sh", "echo first")
        .file(
            "wait.ron",
            &format!(
                r#"(run: Shell("while [ ! -e '{}' ]; do sleep 0.02; done"), provides: ["w"])"#,
                gate.display()
            ),
        )
        .file("then.ron", r#"(run: Shell("echo then"), requires: ["w"])"#);
    let s = Served::start(t.path(), &["-j", "2"]);
    let id = s.start_run("{}");
    // Read the stream live until `wait` has started, then drop the connection.
    let response = ureq::get(&format!("{}/api/v1/runs/{id}/events", s.base))
        .set("Authorization", &s.bearer())
        .call()
        .unwrap();
    let mut head = Vec::new();
    let mut reader = std::io::BufReader::new(response.into_reader());
    // Until `wait` runs and `first.sh` has finished (so that the cancel cannot catch it).
    let seen = |head: &[(u64, Value)], ty: &str, task: &str| {
        head.iter()
            .any(|(_, e)| e["type"] == ty && e["task"] == task)
    };
    while !(seen(&head, "task-started", "wait") && seen(&head, "task-finished", "first.sh")) {
        head.extend(crate::read_sse(&mut reader, 1));
    }
    drop(reader);

    // A second run of this state directory while the first is going: 409, nothing started.
    let (status, body) = s.post("/runs", "{}");
    assert_eq!(status, 409, "{body}");
    let (_, runs) = s.get_json("/runs");
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["status"], "running");

    // The report is not there before the end.
    let (status, _) = s.get(&format!("/runs/{id}/junit"));
    assert_eq!(status, 409);

    // Cancel as Ctrl-C: the waiting task is stopped, its dependent skipped.
    let (status, body) = s.post(&format!("/runs/{id}/cancel"), "");
    assert_eq!(status, 202, "{body}");
    let last = head.last().unwrap().0;
    let tail = s.events(&id, Some(last));
    // Head and tail together are the whole run: no gap, no duplicate.
    let whole: Vec<_> = head.iter().chain(&tail).cloned().collect();
    assert_eq!(whole, s.events(&id, None));
    let run_finished = &whole.last().unwrap().1;
    assert_eq!(run_finished["type"], "run-finished");
    let outcome = |task: &str| {
        whole
            .iter()
            .find(|(_, e)| e["type"] == "task-finished" && e["task"] == task)
            .map(|(_, e)| e["outcome"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(outcome("first.sh"), "pass");
    assert_ne!(outcome("wait"), "pass");
    assert_eq!(outcome("then"), "skip");
    let (status, _) = s.post(&format!("/runs/{id}/cancel"), "");
    assert_eq!(status, 409, "cancelling an ended run");
    // Interrupted runs have their report too.
    let (status, xml) = s.get(&format!("/runs/{id}/junit"));
    assert_eq!(status, 200);
    assert!(xml.contains("<skipped"), "{xml}");
    // And a new run may start.
    std::fs::write(&gate, "").unwrap();
    let again = s.start_run("{}");
    let events = s.events(&again, None);
    assert_eq!(events.last().unwrap().1["outcome"], "pass");
}

#[test]
fn the_page_and_its_headers() {
    let t = tree();
    let s = Served::start(t.path(), &[]);
    for path in ["/", "/app.js", "/app.css"] {
        let r = ureq::get(&format!("{}{path}", s.base)).call().unwrap();
        assert_eq!(r.status(), 200);
        let csp = r.header("content-security-policy").unwrap().to_string();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        let body = r.into_string().unwrap();
        // Served from the binary: nothing fetched from elsewhere.
        for outside in [
            "src=\"http",
            "href=\"http",
            "url(http",
            "fetch(\"http",
            "//cdn",
        ] {
            assert!(!body.contains(outside), "{path} loads {outside}");
        }
    }
    let (status, graph) = s.get_json("/graph");
    assert_eq!(status, 200);
    assert_eq!(graph["nodes"].as_array().unwrap().len(), 5);
    for e in graph["edges"].as_array().unwrap() {
        let (p, d) = (
            e[0].as_u64().unwrap() as usize,
            e[1].as_u64().unwrap() as usize,
        );
        assert!(graph["nodes"][p]["layer"].as_u64() < graph["nodes"][d]["layer"].as_u64());
    }
    assert_eq!(graph["layers"], 3);
}

#[test]
fn serving_beyond_loopback_needs_tls() {
    let t = tree();
    let out = pexen()
        .arg("serve")
        .arg(t.path())
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    let r = RunResult::new(out);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--tls-cert"), "{}", r.stderr);
    let token = t.path().join(".token");
    std::fs::write(&token, "short").unwrap();
    let out = pexen()
        .arg("serve")
        .arg(t.path())
        .args(["--listen", "127.0.0.1:0", "--token-file"])
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
}

#[test]
fn a_token_file_gives_the_token() {
    let t = tree();
    let token = t.path().join(".token");
    std::fs::write(&token, "a-token-from-a-file-0123456789\n").unwrap();
    let s = Served::start(t.path(), &["--token-file", token.to_str().unwrap()]);
    assert_eq!(s.token, "a-token-from-a-file-0123456789");
    assert_eq!(s.get("/tasks").0, 200);
}

#[test]
fn https_with_a_certificate() {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use tokio_rustls::rustls;

    let t = tree();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (t.path().join(".cert.pem"), t.path().join(".key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).unwrap();
    let s = Served::start(
        t.path(),
        &[
            "--tls-cert",
            cert_pem.to_str().unwrap(),
            "--tls-key",
            key_pem.to_str().unwrap(),
        ],
    );
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);

    // A client that trusts that certificate only.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let request = |auth: &str| {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config.clone()), name).unwrap();
        let tcp = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        write!(
            tls,
            "GET /api/v1/tasks HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = tls.read_to_string(&mut answer);
        answer
    };
    let answer = request(&format!("Authorization: Bearer {}\r\n", s.token));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"build/a\""), "{answer}");
    assert!(request("").starts_with("HTTP/1.1 401"));
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
