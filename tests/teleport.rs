//! Teleport (SPEC 12): a run moved to an ssh host, shown here, its state brought back.
//!
//! Each scenario runs twice: over a stand-in ssh (`PEXEN_SSH` pointing at a script that runs
//! the remote command with `sh` under a per-host `HOME`: bootstrap, upload, protocol, sync and
//! the detached run are all real, only the network is not), and over the real `sshd`s of
//! `.ci/sshd.sh` (ignored without them).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{pexen, running, wait_for_pid, RunResult, Tree};

#[path = "common/net.rs"]
mod net;
use net::Net;

impl Net {
    /// `pexen teleport ARGS...` with JSON lines.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = pexen();
        cmd.arg("teleport")
            .args(args)
            .args(["--message-format", "json"]);
        self.apply(&mut cmd);
        cmd
    }

    fn run(&self, args: &[&str]) -> RunResult {
        RunResult::new(self.command(args).output().expect("run pexen"))
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pexen")
    }

    /// The teleported runs' directories on host `h` (`h1`).
    fn runs_on(&self, host: &str) -> PathBuf {
        self.home(host).join(".cache/pexen/teleport")
    }
}

/// A tree whose tasks a remote user can write into (their records of what ran).
fn shared_tree() -> Tree {
    let tree = Tree::new();
    std::fs::set_permissions(tree.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // Written by local runs and by the host's user alike.
    let runs = tree.path().join("runs");
    std::fs::write(&runs, "").unwrap();
    std::fs::set_permissions(&runs, std::fs::Permissions::from_mode(0o666)).unwrap();
    tree
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn tree_arg(tree: &Tree) -> String {
    tree.path().to_string_lossy().into_owned()
}

/// The detached runs kept for teleports on `host` that still run: pid and start time, as
/// each recorded itself (a pid reused since by another process does not count).
fn live_supervisors(net: &Net, host: &str) -> Vec<i32> {
    let Ok(dirs) = std::fs::read_dir(net.runs_on(host)) else {
        return Vec::new();
    };
    dirs.flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("supervisor")).ok())
        .filter_map(|t| {
            let mut w = t.split_whitespace();
            let pid: i32 = w.next()?.parse().ok()?;
            let start: u64 = w.next()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(") ")?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // Field 22 (starttime) is the 20th after the command name.
            let now: u64 = fields.get(19)?.parse().ok()?;
            (now == start && running(pid)).then_some(pid)
        })
        .collect()
}

/// A -> B -> C: B fails until its checkpoint says it ran once before.
fn counting_tree() -> Tree {
    let tree = shared_tree();
    let dir = tree.path().to_string_lossy().into_owned();
    tree.file(
        "a.ron",
        &format!(r#"(run: Shell("echo a >> {dir}/runs"), provides: ["a"])"#),
    )
    .file(
        "b.ron",
        &format!(
            r#"(run: Shell("n=$(cat $PEXEN_CHECKPOINT/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > $PEXEN_CHECKPOINT/n; echo b$n >> {dir}/runs; [ $n -ge 2 ]"), requires: ["a"], provides: ["b"])"#
        ),
    )
    .file(
        "c.ron",
        &format!(
            r#"(run: Shell("echo c >> {dir}/runs; echo 'warn from c' >> $PEXEN_RESULTS"), requires: ["b"])"#
        ),
    )
}

fn events_state_and_junit_come_back(net: &Net) {
    let tree = counting_tree();
    // Here first: A passes, B fails, C is skipped.
    let r = tree.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let junit = tree.path().join("report.xml");
    let t = tree_arg(&tree);
    let junit_arg = junit.to_string_lossy().into_owned();
    let r = net.run(&["ssh://h1", &t, "--junit", &junit_arg]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let first = &r.events[0];
    assert_eq!(first["type"], "teleported", "{}", r.stdout);
    assert_eq!(first["host"], "h1");
    // The events there, here, as a local run has them: A from the journal (its fingerprint
    // does not depend on where the tree is), B from its checkpoint, C's result streamed.
    assert_eq!(r.events[1]["type"], "run-started");
    assert_eq!(r.finished("a")["resumed"], true);
    assert_eq!(r.outcome("b"), "pass");
    assert_eq!(r.outcome("c"), "warn");
    assert!(r
        .of_type("task-result")
        .iter()
        .any(|e| e["task"] == "c" && e["message"] == "from c"));
    assert_eq!(r.of_type("run-finished").len(), 1);
    assert_eq!(lines(&tree.path().join("runs")), ["a", "b1", "b2", "c"]);
    // The state came back: B's checkpoint is gone as it is after a pass, the JUnit report is
    // here, and the journal says everything passed: a local resume runs nothing.
    assert!(!tree.path().join(".pexen/checkpoints/b").exists());
    let xml = std::fs::read_to_string(&junit).expect("the JUnit report came back");
    assert!(xml.contains(r#"<testcase name="c""#), "{xml}");
    let r = tree.run(&["--resume"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for task in ["a", "b", "c"] {
        assert_eq!(r.finished(task)["resumed"], true, "{task}: {}", r.stdout);
    }
    assert_eq!(lines(&tree.path().join("runs")).len(), 4);
}

fn second_teleport_uploads_nothing(net: &Net) {
    let tree = Tree::new().file("t.ron", r#"(run: Shell("true"))"#);
    let t = tree_arg(&tree);
    let r1 = net.run(&["ssh://h2", &t]);
    assert_eq!(r1.code, 0, "{}", r1.stderr);
    if !net.real {
        // A fresh host: the binary goes there once.
        assert_eq!(r1.events[0]["uploaded"], true, "{}", r1.stdout);
        assert_eq!(r1.events[0]["files_sent"], 1);
    }
    let r2 = net.run(&["ssh://h2", &t]);
    assert_eq!(r2.code, 0, "{}", r2.stderr);
    let shipped = &r2.events[0];
    assert_eq!(shipped["type"], "teleported");
    assert_eq!(shipped["uploaded"], false, "{}", r2.stdout);
    assert_eq!(shipped["files_sent"], 0);
    // The state there is the one that came back: nothing of it travels either.
    assert_eq!(shipped["state_files_sent"], 0);
    let bytes = shipped["bytes_sent"].as_u64().unwrap();
    assert!(bytes < 16 * 1024, "{bytes} bytes for nothing new");
    assert_eq!(r2.finished("t")["resumed"], true);
}

fn suspend_there_is_exit_4_and_continues(net: &Net) {
    let tree = shared_tree();
    let dir = tree.path().to_string_lossy().into_owned();
    let tree = tree
        .file(
            "reboot.ron",
            &format!(
                r#"(run: Shell("echo reboot >> {dir}/runs; if [ -f $PEXEN_CHECKPOINT/booted ]; then exit 0; fi; touch $PEXEN_CHECKPOINT/booted; exit 75"), provides: ["up"])"#
            ),
        )
        .file(
            "after.ron",
            &format!(r#"(run: Shell("echo after >> {dir}/runs"), requires: ["up"])"#),
        );
    let t = tree_arg(&tree);
    let r = net.run(&["ssh://h1", &t]);
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    let suspended = r.of_type("run-suspended");
    assert_eq!(suspended.len(), 1, "{}", r.stdout);
    assert!(
        suspended[0]["resume"]
            .as_str()
            .unwrap()
            .starts_with("pexen teleport ssh://h1"),
        "{}",
        r.stdout
    );
    assert!(tree
        .path()
        .join(".pexen/checkpoints/reboot/booted")
        .is_file());
    // The human display, as `pexen run` shows a resumed run.
    let mut cmd = pexen();
    cmd.args(["teleport", "ssh://h1", &t, "--color", "never"]);
    net.apply(&mut cmd);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("Starting 2 tasks"), "{stderr}");
    assert!(stderr.contains("PASS"), "{stderr}");
    assert!(stderr.contains("Summary"), "{stderr}");
    assert!(stderr.contains("Brought back from h1"), "{stderr}");
    assert_eq!(
        lines(&tree.path().join("runs")),
        ["reboot", "reboot", "after"]
    );
}

/// The local ssh client of `pexen` (its child named `ssh`).
fn ssh_child(parent: u32) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())?;
        if ppid == parent && head.ends_with("(ssh") {
            return Some(pid);
        }
    }
    None
}

/// Creates its file when told, or at the latest when dropped.
struct Go(PathBuf);

impl Go {
    fn now(&self) {
        std::fs::write(&self.0, "").unwrap();
    }
}

impl Drop for Go {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

fn a_dropped_connection_then_attach(net: &Net) {
    let tree = shared_tree();
    let dir = tree.path().to_string_lossy().into_owned();
    let tree = tree
        .file(
            "first.ron",
            &format!(r#"(run: Shell("echo first >> {dir}/runs"), provides: ["f"])"#),
        )
        .file(
            "wait.ron",
            &format!(
                r#"(run: Shell("echo wait >> {dir}/runs; echo $$ > {dir}/wait.pid; while [ ! -f {dir}/go ]; do sleep 0.05; done"), requires: ["f"], provides: ["w"])"#
            ),
        )
        .file(
            "last.ron",
            &format!(r#"(run: Shell("echo last >> {dir}/runs"), requires: ["w"])"#),
        );
    let t = tree_arg(&tree);
    // Whatever happens below, the run there can end (a failed assertion must not leave it
    // waiting forever on the host).
    let go = Go(tree.path().join("go"));
    let junit = tree.path().join("report.xml");
    let junit_arg = junit.to_string_lossy().into_owned();
    let child = net.spawn(&["ssh://h1", &t, "--junit", &junit_arg]);
    let pid = child.id();
    wait_for_pid(&tree.path().join("wait.pid"));
    if net.real {
        // The connection drops: this side's ssh client dies.
        let ssh = loop {
            if let Some(p) = ssh_child(pid) {
                break p;
            }
            std::thread::yield_now();
        };
        // SAFETY: kill(2) with a pid and a signal.
        unsafe { libc::kill(ssh, libc::SIGKILL) };
        let r = RunResult::new(child.wait_with_output().unwrap());
        assert_eq!(r.code, 1, "{}", r.stderr);
        let detached = r.of_type("teleport-detached");
        assert_eq!(detached.len(), 1, "{}", r.stdout);
        assert!(
            detached[0]["attach"]
                .as_str()
                .unwrap()
                .starts_with("pexen teleport --attach ssh://h1"),
            "{}",
            r.stdout
        );
        assert!(r.stderr.contains("the run goes on there"), "{}", r.stderr);
    } else {
        // This side dies with its connection.
        // SAFETY: kill(2) with a pid and a signal.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let _ = child.wait_with_output().unwrap();
    }
    // The run went on there without us.
    go.now();
    let r = net.run(&["--attach", "ssh://h1", &t]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.events[0]["type"], "teleport-attached", "{}", r.stdout);
    assert_eq!(r.events[1]["type"], "run-started", "{}", r.stdout);
    for task in ["first", "wait", "last"] {
        assert_eq!(r.outcome(task), "pass", "{}", r.stdout);
    }
    assert_eq!(lines(&tree.path().join("runs")), ["first", "wait", "last"]);
    // The report the start asked for, though the attach did not say `--junit` again.
    let xml = std::fs::read_to_string(&junit).expect("the JUnit report came back");
    for task in ["first", "wait", "last"] {
        assert!(xml.contains(&format!("name=\"{task}\"")), "{xml}");
    }
    // The state is back: nothing runs again here, and nothing is left to attach to there.
    let r = tree.run(&["--resume"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.finished("last")["resumed"], true);
    let r = net.run(&["--attach", "ssh://h1", &t]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already brought back"), "{}", r.stderr);
}

fn ctrl_c_cancels_there(net: &Net) {
    let tree = shared_tree();
    let dir = tree.path().to_string_lossy().into_owned();
    let tree = tree.file(
        "sleepy.ron",
        &format!(r#"(run: Shell("sleep 300 & echo $! > {dir}/sleep.pid; wait"))"#),
    );
    let t = tree_arg(&tree);
    let child = net.spawn(&["ssh://h3", &t]);
    let sleeper = wait_for_pid(&tree.path().join("sleep.pid"));
    let sups = live_supervisors(net, "h3");
    assert!(!sups.is_empty(), "no run going there");
    // SAFETY: kill(2) with a pid and a signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let r = RunResult::new(child.wait_with_output().unwrap());
    assert_eq!(r.code, 130, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.of_type("run-finished").len(), 1, "{}", r.stdout);
    assert!(
        !running(sleeper),
        "the task's process {sleeper} was left running"
    );
    for s in sups {
        assert!(!running(s), "the run there ({s}) was left running");
    }
    // The interrupted run's journal came back.
    assert!(tree.path().join(".pexen/journal").is_file());
    if !net.real {
        // No process of the stand-in host is left (its binary lives under its home).
        let homes = net.homes.to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd);
                if cmd.contains(&homes) {
                    let pid: i32 = entry.file_name().to_string_lossy().parse().unwrap_or(0);
                    assert!(!running(pid), "left running: {cmd}");
                }
            }
        }
    }
}

#[test]
fn events_are_shown_here_and_journal_checkpoints_and_junit_come_back() {
    events_state_and_junit_come_back(&Net::fake());
}

#[test]
fn a_second_teleport_of_the_same_binary_uploads_nothing() {
    second_teleport_uploads_nothing(&Net::fake());
}

#[test]
fn a_suspended_run_there_exits_4_and_the_next_teleport_continues_it() {
    suspend_there_is_exit_4_and_continues(&Net::fake());
}

#[test]
fn after_a_dropped_connection_attach_finishes_the_run_with_every_task_run_once() {
    a_dropped_connection_then_attach(&Net::fake());
}

#[test]
fn ctrl_c_here_cancels_the_run_there_and_leaves_no_process() {
    ctrl_c_cancels_there(&Net::fake());
}

#[test]
fn bad_hosts_and_nothing_to_attach_are_clear_errors() {
    let tree = Tree::new().file("t.ron", r#"(run: Shell("true"))"#);
    let t = tree_arg(&tree);
    let net = Net::fake();
    let r = net.run(&["tls://h1:7000", &t]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("teleport needs an ssh:// host"),
        "{}",
        r.stderr
    );
    let r = net.run(&["--attach", "ssh://h1", &t]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no run was teleported to this host"),
        "{}",
        r.stderr
    );
    // Definitions and the graph are checked here, with the exit code and the messages of a
    // local run, before anything is shipped.
    let net = Net::fake();
    let bad = Tree::new().file("t.ron", r#"(run: Shell("true"), bogus: 1)"#);
    let r = net.run(&["ssh://h1", &tree_arg(&bad)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("t.ron:1:") && r.stderr.contains("bogus"),
        "{}",
        r.stderr
    );
    let cycle = common::cycle_tree();
    let r = net.run(&["ssh://h1", &tree_arg(&cycle)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("cycle"), "{}", r.stderr);
    assert!(
        !net.home("h1").join(".cache/pexen").exists(),
        "something was shipped for a tree with errors"
    );
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_events_are_shown_here_and_journal_checkpoints_and_junit_come_back() {
    events_state_and_junit_come_back(&Net::sshd());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_a_second_teleport_of_the_same_binary_uploads_nothing() {
    second_teleport_uploads_nothing(&Net::sshd());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_a_suspended_run_there_exits_4_and_the_next_teleport_continues_it() {
    suspend_there_is_exit_4_and_continues(&Net::sshd());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_after_a_dropped_connection_attach_finishes_the_run_with_every_task_run_once() {
    a_dropped_connection_then_attach(&Net::sshd());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_ctrl_c_here_cancels_the_run_there_and_leaves_no_process() {
    ctrl_c_cancels_there(&Net::sshd());
}
