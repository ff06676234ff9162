//! What a person sees: the human display on a terminal (a pseudo-terminal through util-linux
//! `script`, part of every Debian system) and in a pipe, colour, `SLOW` notices, flaky,
//! resumed and not-run tasks, the selection, and the JSON `message`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{pexen, RunResult, Tree};

/// `pexen ARGS...` on a pseudo-terminal of 120x50, its output (both streams, as a terminal
/// shows them) collected while it runs.
struct Pty {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Pty {
    /// Runs `pexen ARGS` (with shell redirections `redirect` appended) on a pseudo-terminal.
    fn start(args: &[&str], redirect: &str, env: &[(&str, &str)]) -> Self {
        let mut line = quote(env!("CARGO_BIN_EXE_pexen"));
        for a in args {
            line.push(' ');
            line.push_str(&quote(a));
        }
        let script = format!("stty cols 120 rows 50; {line} {redirect}; echo \"[exit $?]\"");
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &script, "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .env_remove("NO_COLOR")
            .env("TERM", "xterm-256color");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .expect("util-linux `script` runs pexen on a pseudo-terminal");
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            out,
            reader: Some(reader),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Waits until the output satisfies `cond` (the test hangs, and fails by the harness's
    /// timeout, if it never does).
    fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        loop {
            let text = self.text();
            if cond(&text) {
                return text;
            }
            if self
                .reader
                .as_ref()
                .is_some_and(std::thread::JoinHandle::is_finished)
            {
                let text = self.text();
                assert!(cond(&text), "ended without {what}:\n{text}");
                return text;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Waits for the end and returns everything the terminal received.
    fn finish(mut self) -> String {
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.text()
    }
}

/// A task that starts, then waits until the file `go` exists in the tree.
fn waiter(t: Tree, name: &str) -> Tree {
    let go = t.path().join("go");
    t.file(
        &format!("{name}.ron"),
        &format!(
            r#"(run: Shell("while [ ! -e {} ]; do sleep 0.01; done"))"#,
            go.display()
        ),
    )
}

fn release(tree: &Path) {
    std::fs::write(tree.join("go"), "").unwrap();
}

/// The exit code that the pty script printed.
fn exit_of(text: &str) -> i32 {
    let at = text.rfind("[exit ").expect("the exit line");
    text[at + 6..]
        .split(']')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn running_counts_are_exact_and_a_cut_list_says_how_many_more() {
    let mut t = Tree::new();
    for i in 0..13 {
        t = waiter(t, &format!("w{i:02}"));
    }
    let state = t.path().join(".p");
    let pty = Pty::start(
        &[
            "run",
            t.path().to_str().unwrap(),
            "-j",
            "13",
            "--color",
            "never",
            "--state",
            state.to_str().unwrap(),
        ],
        "",
        &[],
    );
    // Every one of the 13 tasks runs: the bar says 13 (not jobs-1), 8 have a line, 5 do not.
    let text = pty.wait_for("13 running and 5 more", |t| {
        t.contains("13 running") && t.contains("... and 5 more")
    });
    let last_frame = &text[text.rfind("13 running").unwrap()..];
    let shown = (0..13)
        .filter(|i| last_frame.contains(&format!(" w{i:02}")))
        .count();
    assert_eq!(shown, 8, "{last_frame}");
    release(t.path());
    let text = pty.finish();
    assert_eq!(exit_of(&text), 0, "{text}");
    for i in 0..13 {
        assert!(text.contains(&format!("] w{i:02}\r\n")), "w{i:02}: {text}");
    }
    assert!(
        text.contains("Summary") && text.contains("13 tasks: 13 pass"),
        "{text}"
    );
}

#[test]
fn the_report_is_on_stderr_on_a_terminal_and_in_a_pipe() {
    let t = Tree::new()
        .file("ok.ron", r#"(run: Shell("true"))"#)
        .file("bad.ron", r#"(run: Shell("echo boom; exit 4"))"#);
    let state = t.path().join(".p");
    let args = [
        "run",
        t.path().to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];
    // A terminal, stdout thrown away: everything is still there.
    let text = Pty::start(&args, ">/dev/null", &[]).finish();
    for needle in [
        "Starting",
        "PASS",
        "] ok",
        "FAIL",
        "--- STDOUT: bad ---",
        "Summary",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    // A terminal, stderr thrown away: nothing is left.
    let text = Pty::start(&args, "2>/dev/null", &[]).finish();
    assert!(
        !text.contains("PASS") && !text.contains("Summary"),
        "{text}"
    );
    // Pipes: stdout is empty, stderr has the whole report as plain lines.
    let out = pexen().args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("    PASS [") && err.contains("] ok"), "{err}");
    assert!(
        err.contains("    FAIL [") && err.contains("] bad (exit code 4)"),
        "{err}"
    );
    assert!(err.contains("--- STDOUT: bad ---\nboom\n"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no colour nor bar in a pipe: {err:?}"
    );
}

#[test]
fn colour_follows_the_terminal_no_color_and_the_flag() {
    let t = Tree::new().file("bad.ron", r#"(run: Shell("exit 1"))"#);
    let state = t.path().join(".p");
    let base = [
        "run",
        t.path().to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];
    let red_fail = "\u{1b}[31m";
    let text = Pty::start(&base, "", &[]).finish();
    assert!(text.contains(red_fail), "a terminal is coloured: {text:?}");
    let text = Pty::start(&base, "", &[("NO_COLOR", "1")]).finish();
    assert!(!text.contains(red_fail), "NO_COLOR: {text:?}");
    let mut never = base.to_vec();
    never.extend(["--color", "never"]);
    let text = Pty::start(&never, "", &[]).finish();
    assert!(!text.contains(red_fail), "--color never: {text:?}");
    let mut always = base.to_vec();
    always.extend(["--color", "always"]);
    let text = Pty::start(&always, "", &[("NO_COLOR", "1")]).finish();
    assert!(
        text.contains(red_fail),
        "--color always wins over NO_COLOR: {text:?}"
    );
    let out = pexen().args(&always).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(red_fail));
    let out = pexen().args(base).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\u{1b}'));
}

#[test]
fn warnings_go_through_the_display() {
    let t = Tree::new()
        .file(
            "p1.ron",
            r#"(run: Shell("echo K=one >> $PEXEN_EXPORT"), provides: ["t"])"#,
        )
        .file(
            "p2.ron",
            r#"(run: Shell("echo K=two >> $PEXEN_EXPORT"), provides: ["t"])"#,
        )
        .file("use.ron", r#"(run: Shell("true"), requires: ["t"])"#);
    let state = t.path().join(".p");
    let text = Pty::start(
        &[
            "run",
            t.path().to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--color",
            "never",
        ],
        "",
        &[],
    )
    .finish();
    let warning = text
        .lines()
        .find(|l| l.contains("warning:") && l.contains("`K`"))
        .unwrap_or_else(|| panic!("the export conflict: {text}"));
    // Printed as a line of its own, ended by a newline: not a bar frame that the next redraw
    // erases.
    assert!(text.contains(&format!("{warning}\r\n")), "{text:?}");
}

#[test]
fn slow_notices_repeat_each_period_while_a_task_runs() {
    let t = waiter(Tree::new(), "hang");
    let mut child = pexen()
        .arg("run")
        .arg(t.path())
        .args(["--slow-timeout", "50ms", "--state"])
        .arg(t.path().join(".p"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut slow = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("SLOW") {
            slow.push(line);
            if slow.len() == 2 {
                break;
            }
        }
    }
    release(t.path());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(slow[0], "    SLOW [>  0.050s] hang", "{slow:?}");
    assert_eq!(slow[1], "    SLOW [>  0.100s] hang", "{slow:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("PASS") && l.ends_with("] hang")),
        "{rest:?}"
    );
}

#[test]
fn flaky_resumed_not_run_and_selection_are_counted() {
    let t = Tree::new()
        .file(
            "flaky.ron",
            r#"(run: Shell("[ $PEXEN_ATTEMPT -ge 3 ]"), retries: 3)"#,
        )
        .file("setup.ron", r#"(run: Shell("true"), provides: ["db"])"#)
        .file("app.ron", r#"(run: Shell("true"), requires: ["db"])"#);
    let state = t.path().join(".p");
    let run = |extra: &[&str]| {
        let out = pexen()
            .arg("run")
            .arg(t.path())
            .arg("--state")
            .arg(&state)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("\nFLAKY 3/4 [  "), "{err}");
    assert!(err.contains("] flaky\n"), "{err}");
    let summary = err.lines().find(|l| l.contains("Summary")).unwrap();
    assert!(summary.ends_with("3 tasks: 3 pass (1 flaky)"), "{summary}");
    assert!(
        err.lines().last().unwrap().contains("FLAKY 3/4 flaky"),
        "{err}"
    );

    let (code, err) = run(&["--resume"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("Starting 3 tasks with"), "{err}");
    assert!(err.contains("(3 resumed, 0 to run)"), "{err}");
    assert!(
        !err.contains("PASS"),
        "resumed tasks get no line each: {err}"
    );
    let summary = err.lines().find(|l| l.contains("Summary")).unwrap();
    assert!(
        summary.ends_with("3 tasks: 3 pass (3 resumed, 0 run)"),
        "{summary}"
    );

    let (_, err) = run(&["--filter", "app"]);
    assert!(err.contains("(1 selected, 1 required by them)"), "{err}");
}

#[test]
fn tasks_not_run_are_one_count_not_a_line_each() {
    let mut t = Tree::new().file("a-fail.ron", r#"(run: Shell("exit 1"))"#);
    for i in 0..5 {
        t = t.file(&format!("b{i}.ron"), r#"(run: Shell("true"))"#);
    }
    let out = pexen()
        .arg("run")
        .arg(t.path())
        .args(["-j", "1", "--fail-fast", "--state"])
        .arg(t.path().join(".p"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("SKIP"), "{err}");
    let summary = err.lines().find(|l| l.contains("Summary")).unwrap();
    assert!(summary.ends_with("6 tasks: 1 fail, 5 not run"), "{summary}");
    assert!(
        err.contains("NOT RUN 5 tasks: --fail-fast stopped the run after `a-fail` ended fail"),
        "{err}"
    );
    assert!(
        err.lines()
            .last()
            .unwrap()
            .contains("FAIL a-fail: exit code 1"),
        "{err}"
    );
}

#[test]
fn json_task_finished_has_the_message_and_on_request_the_output() {
    let t = Tree::new()
        .file(
            "bad.ron",
            r#"(run: Shell("echo out; echo err >&2; exit 3"))"#,
        )
        .file("ok.ron", r#"(run: Shell("echo fine"))"#);
    let r = t.run(&[]);
    let bad = r.finished("bad");
    assert_eq!(bad["message"], "exit code 3");
    assert!(bad.get("output").is_none());
    assert!(r.finished("ok")["message"].is_null());
    let r = t.run(&["--json-output"]);
    assert_eq!(r.finished("bad")["output"]["stdout"], "out\n");
    assert_eq!(r.finished("bad")["output"]["stderr"], "err\n");
    assert!(
        r.finished("ok")["output"].is_null(),
        "output of failed attempts only"
    );
}

#[test]
fn nothing_to_run_is_exit_5() {
    let empty = Tree::new().file("data.txt", "not a task");
    let out = empty.cmd("run", &[]);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no task in"), "{err}");
    let t = Tree::new().file("a.ron", r#"(run: Shell("true"))"#);
    let r = t.run(&["--filter", "zzz"]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(
        r.stderr.contains("--filter zzz") && r.stderr.contains("matches none"),
        "{}",
        r.stderr
    );
    assert!(r.events.is_empty());
}

#[test]
fn filters_match_anywhere_and_list_and_graph_preview_a_selection() {
    let t = Tree::new()
        .file(
            "net/port-a.ron",
            r#"(run: Shell("true"), requires: ["db"])"#,
        )
        .file("net/port-b.ron", r#"(run: Shell("true"), tags: ["slow"])"#)
        .file(
            "db.ron",
            r#"(run: Shell("true"), provides: ["db"], slots: {"gpu": 2})"#,
        );
    let names = |args: &[&str]| {
        let out = t.cmd("list", args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&["--filter", "port-a"]), ["db", "net/port-a"]);
    assert_eq!(
        names(&["--filter", "port-*"]),
        ["db", "net/port-a", "net/port-b"]
    );
    assert_eq!(
        names(&["--filter", "port-*", "--tag", "slow"]),
        ["net/port-b"]
    );
    assert_eq!(
        names(&["--filter", "port-a", "--filter", "port-b"]).len(),
        3
    );
    let r = t.run(&["--filter", "port-a", "--capacity", "gpu=2"]);
    assert_eq!(r.started().len(), 2);
    let out = t.cmd("graph", &["--filter", "port-b", "--capacity", "gpu=2"]);
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(
        dot.contains("net/port-b") && !dot.contains("port-a"),
        "{dot}"
    );
    // No capacity declared: slots over capacity, unless --capacity gives it.
    assert_eq!(t.cmd("check", &[]).status.code(), Some(2));
    assert_eq!(
        t.cmd("check", &["--capacity", "gpu=2"]).status.code(),
        Some(0)
    );
}

#[test]
fn the_default_state_is_kept_in_each_tree() {
    let one = Tree::new().file("a.ron", r#"(run: Shell("true"))"#);
    let two = Tree::new().file("b.ron", r#"(run: Shell("true"))"#);
    let cwd = tempfile::tempdir().unwrap();
    let run = |tree: &Tree, extra: &[&str]| {
        let out = pexen()
            .arg("run")
            .arg(tree.path())
            .args(["--message-format", "json"])
            .args(extra)
            .current_dir(cwd.path())
            .output()
            .unwrap();
        RunResult::new(out)
    };
    run(&one, &[]);
    run(&two, &[]);
    assert!(one.path().join(".pexen/journal").is_file());
    assert!(two.path().join(".pexen/journal").is_file());
    assert!(!cwd.path().join(".pexen").exists());
    // Running the second tree did not wipe the first one's journal.
    let r = run(&one, &["--resume"]);
    assert_eq!(r.finished("a")["resumed"], true, "{}", r.stderr);
    // `pexen report DIR` reads the tree's journal.
    let junit = cwd.path().join("j.xml");
    let out = pexen()
        .arg("report")
        .arg(two.path())
        .arg("--junit")
        .arg(&junit)
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read_to_string(&junit)
        .unwrap()
        .contains("name=\"b\""));
}
