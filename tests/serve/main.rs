//! `pexen serve` over real HTTP on loopback: the real binary on port 0, its URL parsed from its
//! first line of output, requests made with a plain HTTP client (and, for the page, a real
//! headless Chromium over WebDriver).

#![cfg(feature = "serve")]
#![allow(dead_code, unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;

mod api;
mod hostile;
mod page;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use serde_json::Value;

/// A running `pexen serve`, stopped (SIGTERM, then waited for) when dropped.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub token: String,
    pub port: u16,
    /// The whole URL printed, token included.
    pub url: String,
}

impl Served {
    /// `pexen serve TREE --listen 127.0.0.1:0 --state TREE/.pexen ARGS...`
    pub fn start(tree: &Path, args: &[&str]) -> Self {
        let mut child = common::pexen()
            .arg("serve")
            .arg(tree)
            .args(["--listen", "127.0.0.1:0", "--state"])
            .arg(tree.join(".pexen"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pexen serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().to_string();
        let (base, token) = url
            .split_once("/#token=")
            .unwrap_or_else(|| panic!("serve printed no URL with a token: {line:?}"));
        let port = base.rsplit_once(':').unwrap().1.parse().unwrap();
        Self {
            child,
            base: base.to_string(),
            token: token.to_string(),
            port,
            url,
        }
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// An authorized GET of `/api/v1{path}`: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        call(
            ureq::get(&format!("{}/api/v1{path}", self.base)).set("Authorization", &self.bearer()),
            None,
        )
    }

    /// An authorized GET of `/api/v1{path}` whose body is JSON.
    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// An authorized POST of a JSON body to `/api/v1{path}`.
    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let (status, text) = call(
            ureq::post(&format!("{}/api/v1{path}", self.base))
                .set("Authorization", &self.bearer())
                .set("Content-Type", "application/json"),
            Some(body),
        );
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Starts a run and returns its id.
    pub fn start_run(&self, body: &str) -> String {
        let (status, v) = self.post("/runs", body);
        assert_eq!(status, 201, "start a run: {v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Every event of run `id` after `last` (the SSE ids and the JSON objects), read until the
    /// stream ends with the run.
    pub fn events(&self, id: &str, last: Option<u64>) -> Vec<(u64, Value)> {
        let mut req = ureq::get(&format!("{}/api/v1/runs/{id}/events", self.base))
            .set("Authorization", &self.bearer());
        if let Some(n) = last {
            req = req.set("Last-Event-ID", &n.to_string());
        }
        let response = req.call().expect("event stream");
        assert_eq!(
            response.header("content-type"),
            Some("text/event-stream"),
            "content type of the event stream"
        );
        read_sse(BufReader::new(response.into_reader()), usize::MAX)
    }
}

/// Reads server-sent events (id and data) until the stream ends or `max` are read.
pub fn read_sse(reader: impl BufRead, max: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    let (mut id, mut data) = (None, String::new());
    for line in reader.lines() {
        let line = line.expect("read the event stream");
        if line.is_empty() {
            if !data.is_empty() {
                let value = serde_json::from_str(&data).expect("event data is JSON");
                out.push((id.expect("every event has an id"), value));
                if out.len() >= max {
                    break;
                }
            }
            (id, data) = (None, String::new());
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().parse().expect("numeric event id"));
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    out
}

/// Sends a request and returns status and body, for error statuses too.
pub fn call(req: ureq::Request, body: Option<&str>) -> (u16, String) {
    let result = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match result {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("request failed: {e}"),
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
