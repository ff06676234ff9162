//! Hostile requests: each is refused with the documented status, and no task runs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use crate::common::Tree;
use crate::{call, Served};

/// A tree whose every task leaves a mark, and the server on it.
fn target() -> (Tree, PathBuf, Served) {
    let t = Tree::new();
    let mark = t.path().join(".ran");
    let t = t
        .file(
            "a.ron",
            &format!(r#"(run: Shell("touch '{}'"))"#, mark.display()),
        )
        .file(
            "etc/passwd.ron",
            &format!(r#"(run: Shell("touch '{}'"))"#, mark.display()),
        );
    let s = Served::start(t.path(), &[]);
    (t, mark, s)
}

fn nothing_ran(s: &Served, mark: &std::path::Path) {
    let (status, runs) = s.get_json("/runs");
    assert_eq!(status, 200);
    assert_eq!(runs, serde_json::json!([]), "no run was started");
    assert!(!mark.exists(), "a task ran");
}

fn post_raw(s: &Served, auth: Option<&str>, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut req = ureq::post(&format!("{}/api/v1/runs", s.base)).set("Content-Type", content_type);
    if let Some(a) = auth {
        req = req.set("Authorization", a);
    }
    match req.send_bytes(body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("request failed: {e}"),
    }
}

/// POSTs `body` to `/api/v1/runs` over a plain socket, writing it on another thread while the
/// answer is read here, and returns the status of the answer.
fn post_big(s: &Served, auth: &str, body: &[u8]) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let addr = s.base.trim_start_matches("http://").to_string();
    let stream = std::net::TcpStream::connect(&addr).expect("connect");
    let mut writer = stream.try_clone().unwrap();
    let head = format!(
        "POST /api/v1/runs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let body = body.to_vec();
    let write = std::thread::spawn(move || {
        writer.write_all(head.as_bytes())?;
        writer.write_all(&body)
    });
    let mut status = String::new();
    BufReader::new(stream)
        .read_line(&mut status)
        .expect("an answer");
    let _ = write.join().unwrap();
    status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status:?}"))
}

#[test]
fn requests_without_the_right_token_are_refused() {
    let (_t, mark, s) = target();
    let url = format!("{}/api/v1/runs", s.base);
    // No token.
    let (status, body) = post_raw(&s, None, "application/json", b"{}");
    assert_eq!(status, 401, "{body}");
    // A wrong one, of the same length and of another.
    let wrong = format!("Bearer {}", "0".repeat(s.token.len()));
    assert_eq!(post_raw(&s, Some(&wrong), "application/json", b"{}").0, 401);
    assert_eq!(
        post_raw(&s, Some("Bearer x"), "application/json", b"{}").0,
        401
    );
    assert_eq!(
        post_raw(&s, Some(&s.token.clone()), "application/json", b"{}").0,
        401,
        "the token without `Bearer`"
    );
    // The token in the query string only.
    let (status, _) = call(
        ureq::post(&format!("{url}?token={}", s.token)).set("Content-Type", "application/json"),
        Some("{}"),
    );
    assert_eq!(status, 401);
    let (status, _) = call(
        ureq::get(&format!("{}/api/v1/tasks?access_token={}", s.base, s.token)),
        None,
    );
    assert_eq!(status, 401);
    // Every API path, known or not.
    for path in [
        "/tasks",
        "/graph",
        "/runs",
        "/runs/1",
        "/runs/1/events",
        "/nope",
    ] {
        let (status, _) = call(ureq::get(&format!("{}/api/v1{path}", s.base)), None);
        assert_eq!(status, 401, "{path}");
    }
    nothing_ran(&s, &mark);
}

#[test]
fn bad_bodies_are_refused_with_a_message() {
    let (_t, mark, s) = target();
    let auth = s.bearer();
    // A pickle.
    let pickle =
        b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94.";
    let (status, body) = post_raw(&s, Some(&auth), "application/python-pickle", pickle);
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("error"), "{body}");
    // No content type at all.
    let (status, _) = call(
        ureq::post(&format!("{}/api/v1/runs", s.base)).set("Authorization", &auth),
        Some("{}"),
    );
    assert_eq!(status, 415);
    // Bad JSON.
    let (status, body) = post_raw(&s, Some(&auth), "application/json", b"{\"filter\": [");
    assert_eq!(status, 400, "{body}");
    // An unknown field, and a field of the wrong type.
    let (status, body) = post_raw(
        &s,
        Some(&auth),
        "application/json",
        br#"{"command":"rm -rf /"}"#,
    );
    assert!(status == 400 || status == 422, "{status} {body}");
    assert!(
        body.contains("command"),
        "the message names the field: {body}"
    );
    let (status, _) = post_raw(&s, Some(&auth), "application/json", br#"{"jobs":"many"}"#);
    assert!(status == 400 || status == 422);
    let (status, body) = post_raw(&s, Some(&auth), "application/json", br#"{"jobs":0}"#);
    assert_eq!(status, 422, "{body}");
    // 2 MiB. The server answers as soon as it has the headers and may close the connection
    // before the client has written the body, so the body is written beside the reading of the
    // answer and a write that fails because of that close is not the client's failure.
    let big = format!(r#"{{"filter":["{}"]}}"#, "a".repeat(2 << 20));
    assert_eq!(post_big(&s, &auth, big.as_bytes()), 413);
    nothing_ran(&s, &mark);
}

#[test]
fn task_names_are_only_matched_against_the_tree() {
    let (_t, mark, s) = target();
    // An unknown task, and a path for a name: nothing matches, nothing runs.
    for filter in ["nope", "../../etc/passwd", "/etc/passwd", "../**"] {
        let (status, body) = s.post("/runs", &format!(r#"{{"filter":["{filter}"]}}"#));
        assert_eq!(status, 422, "{filter}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("matches none of the"),
            "{body}"
        );
    }
    let (status, _) = s.post("/runs", r#"{"tags":["no-such-tag"]}"#);
    assert_eq!(status, 422);
    for path in [
        "/runs/1/tasks/../../etc/passwd",
        "/runs/1/tasks/%2e%2e/%2e%2e/etc/passwd",
        "/runs/../../etc/passwd",
        "/runs/1/tasks/a",
    ] {
        let (status, _) = s.get(path);
        assert_eq!(status, 404, "{path}");
    }
    nothing_ran(&s, &mark);
    // A real run: still only names of the run are answered.
    // `[a]`: the task `a` alone (a plain "a" is a substring filter, and matches etc/passwd).
    let id = s.start_run(r#"{"filter":["[a]"]}"#);
    s.events(&id, None);
    assert_eq!(s.get(&format!("/runs/{id}/tasks/a")).0, 200);
    assert_eq!(s.get(&format!("/runs/{id}/tasks/etc/passwd")).0, 404);
    assert_eq!(
        s.get(&format!("/runs/{id}/tasks/%2e%2e/%2e%2e/etc/passwd"))
            .0,
        404
    );
}

#[test]
fn a_foreign_host_is_refused() {
    let (_t, mark, s) = target();
    for host in [
        format!("evil.example:{}", s.port),
        "evil.example".to_string(),
        format!("127.0.0.1.nip.io:{}", s.port),
    ] {
        for path in ["/", "/api/v1/tasks"] {
            let (status, body) = call(
                ureq::get(&format!("{}{path}", s.base))
                    .set("Host", &host)
                    .set("Authorization", &s.bearer()),
                None,
            );
            assert_eq!(status, 403, "{host}{path}: {body}");
        }
        let (status, _) = call(
            ureq::post(&format!("{}/api/v1/runs", s.base))
                .set("Host", &host)
                .set("Authorization", &s.bearer())
                .set("Content-Type", "application/json"),
            Some("{}"),
        );
        assert_eq!(status, 403);
    }
    for host in [
        format!("localhost:{}", s.port),
        format!("127.0.0.1:{}", s.port),
    ] {
        let (status, _) = call(ureq::get(&format!("{}/", s.base)).set("Host", &host), None);
        assert_eq!(status, 200, "{host}");
    }
    nothing_ran(&s, &mark);
}

/// Until the server closes the connection, sends a header line a byte at a time. Returns how many
/// bytes it sent; panics if the server is still reading after `max` bytes.
fn trickle(stream: &mut TcpStream, max: usize) -> usize {
    stream
        .write_all(b"POST /api/v1/runs HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let line = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    for sent in 0..max {
        if stream.write_all(&[line[sent % line.len()]]).is_err() {
            return sent;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("the server still reads a request whose headers took {max} quarter-seconds");
}

#[test]
fn slow_and_idle_clients_do_not_stop_the_server() {
    let (_t, mark, s) = target();
    let addr = format!("127.0.0.1:{}", s.port);
    // 200 idle connections (under the cap), and a slowloris client.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let mut slow = TcpStream::connect(&addr).unwrap();
    let slow_thread = std::thread::spawn(move || trickle(&mut slow, 400));
    // A real client is still answered.
    let (status, tasks) = s.get_json("/tasks");
    assert_eq!(status, 200);
    assert_eq!(tasks.as_array().unwrap().len(), 2);
    // The slowloris client is dropped (after a few seconds: how many is not this test's business).
    let sent = slow_thread.join().unwrap();
    assert!(sent > 0);
    // And so is every idle connection: each read ends (EOF or reset) without a byte of answer.
    for mut c in idle {
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "an idle connection got an answer");
    }
    assert_eq!(s.get("/tasks").0, 200);
    nothing_ran(&s, &mark);
}
