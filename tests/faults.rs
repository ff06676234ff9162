//! pexen under faults (issue 9), through the real binary: signals from a closed terminal, kill -9
//! of pexen itself, closed output streams, two runs on one state directory, a runaway writer,
//! Ctrl-Z. Processes are checked through `/proc`; waits are for events, files or process states,
//! never for a time that happens to be long enough.

mod common;

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Stdio};

use common::{pexen, wait_for_pid, RunResult, Tree};

/// Field 3 (state) and 22 (start time) of `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some((fields[0].chars().next()?, fields[19].parse().ok()?))
}

/// The process that was `pid` when `start` was read is gone (or only a zombie is left).
fn gone(pid: i32, start: u64) -> bool {
    match stat(pid) {
        None => true,
        Some((state, now)) => now != start || state == 'Z' || state == 'X',
    }
}

/// Waits until `pid` is in `state` (`T`: stopped) or has left it.
fn wait_state(pid: i32, stopped: bool) {
    while stat(pid).is_some_and(|(s, _)| (s == 'T') != stopped) {
        std::thread::yield_now();
    }
}

/// `pexen run TREE --message-format json --state TREE/.pexen ARGS` with its temp dir in `tmp`.
fn spawn(tree: &Tree, tmp: &Path, args: &[&str], stderr: Stdio) -> Child {
    pexen()
        .arg("run")
        .arg(tree.path())
        .args(["--message-format", "json", "--state"])
        .arg(tree.path().join(".pexen"))
        .args(args)
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start pexen")
}

/// Reads JSON lines until a `task-started` of `task`.
fn until_started(lines: &mut Lines<BufReader<ChildStdout>>, task: &str) {
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("\"task-started\"") && line.contains(&format!("\"task\":\"{task}\"")) {
            return;
        }
    }
    panic!("pexen ended before {task} started");
}

/// Waits until pexen has registered a task leader (it records it in the state directory then):
/// a task may run, and write its pid, before the thread that spawned it gets there.
fn wait_recorded(tree: &Tree) {
    let record = tree.path().join(".pexen/running");
    while !std::fs::read_to_string(&record).is_ok_and(|r| r.contains("\n+ ")) {
        std::thread::yield_now();
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: a signal to a child of this test.
    unsafe { libc::kill(pid as i32, sig) };
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// A task that starts a grandchild and records both pids with their start times.
const SLEEPER: &str =
    r#"(run: Shell("echo $$ > leader.pid; sleep 3000 & echo $! > child.pid; wait"))"#;

#[test]
fn sighup_and_sigquit_stop_the_run_as_sigterm_does() {
    for sig in [libc::SIGHUP, libc::SIGQUIT] {
        let t = Tree::new().file("slow.ron", SLEEPER);
        let tmp = tempfile::tempdir().unwrap();
        let junit = t.path().join("report.xml");
        let mut child = spawn(
            &t,
            tmp.path(),
            &["--junit", junit.to_str().unwrap()],
            Stdio::null(),
        );
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        until_started(&mut lines, "slow");
        let pid = wait_for_pid(&t.path().join("child.pid"));
        let start = stat(pid).unwrap().1;
        signal(child.id(), sig);
        let rest: Vec<String> = lines.map(Result::unwrap).collect();
        let code = child.wait().unwrap().code();
        assert_eq!(code, Some(130), "signal {sig}");
        assert!(
            rest.iter().any(|l| l.contains("\"run-finished\"")),
            "{rest:#?}"
        );
        assert!(gone(pid, start), "the task's child outlived pexen");
        assert!(junit.is_file(), "no JUnit report after signal {sig}");
        assert!(entries(tmp.path()).is_empty(), "temp dir left behind");
    }
}

#[test]
fn after_kill_9_the_next_run_ends_what_was_left_and_its_temp_dir() {
    // The leader, a child in its group, a child that left the group (setsid) and a child with a
    // scrubbed environment in the group: four ways for a task's processes to outlive pexen.
    let t = Tree::new().file(
        "left.ron",
        r#"(run: Shell("test -e second && exit 0; sleep 3000 & echo $! > child.pid; setsid sleep 3000 & echo $! > daemon.pid; env -i sleep 3000 & echo $! > scrubbed.pid; echo $$ > leader.pid; wait"))"#,
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut child = spawn(&t, tmp.path(), &[], Stdio::null());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    until_started(&mut lines, "left");
    let pids: Vec<(i32, u64)> = ["child", "daemon", "scrubbed", "leader"]
        .iter()
        .map(|n| {
            let pid = wait_for_pid(&t.path().join(format!("{n}.pid")));
            (pid, stat(pid).unwrap().1)
        })
        .collect();
    wait_recorded(&t);
    signal(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    assert!(
        pids.iter().all(|&(p, s)| !gone(p, s)),
        "the test expects the tasks to outlive a kill -9"
    );
    assert_eq!(entries(tmp.path()).len(), 1, "the killed run's temp dir");

    std::fs::write(t.path().join("second"), "").unwrap();
    let out = pexen()
        .arg("run")
        .arg(t.path())
        .args(["--message-format", "json", "--state"])
        .arg(t.path().join(".pexen"))
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let r = RunResult::new(out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for (name, &(pid, start)) in ["child", "daemon", "scrubbed", "leader"].iter().zip(&pids) {
        assert!(gone(pid, start), "{name} {pid} still runs: {}", r.stderr);
    }
    assert!(
        r.stderr.contains("that a killed earlier run (pid"),
        "{}",
        r.stderr
    );
    assert!(entries(tmp.path()).is_empty(), "temp dirs left behind");
}

#[test]
fn a_closed_stderr_stops_neither_the_interrupt_nor_the_cleanup() {
    // Human output with stdout and stderr both pipes whose readers are gone: every line pexen
    // writes fails with EPIPE, the interrupt's message included.
    let t = Tree::new().file("slow.ron", SLEEPER);
    let junit = t.path().join("r.xml");
    let mut child = pexen()
        .arg("run")
        .arg(t.path())
        .arg("--state")
        .arg(t.path().join(".pexen"))
        .arg("--junit")
        .arg(&junit)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let pid = wait_for_pid(&t.path().join("child.pid"));
    let start = stat(pid).unwrap().1;
    signal(child.id(), libc::SIGINT);
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(gone(pid, start), "the task's child outlived pexen");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("name=\"slow\""), "{xml}");
}

#[test]
fn a_second_run_on_a_busy_state_directory_is_refused_naming_the_first() {
    let t = Tree::new()
        .file(
            "gate.ron",
            r#"(run: Shell("while [ ! -e go ]; do sleep 0.01; done"))"#,
        )
        .file("quick.ron", r#"(run: Shell("true"))"#);
    let tmp = tempfile::tempdir().unwrap();
    let mut first = spawn(&t, tmp.path(), &["-j", "2"], Stdio::null());
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    until_started(&mut lines, "gate");

    let second = t.run(&[]);
    assert_eq!(second.code, 3, "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains(&format!("is in use by pid {}", first.id())),
        "{}",
        second.stderr
    );
    assert!(second.events.is_empty(), "the refused run ran something");

    std::fs::write(t.path().join("go"), "").unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(first.wait().unwrap().code(), Some(0), "{rest:#?}");
    // Both of the first run's records survived: a resume takes both from the journal.
    let again = t.run(&["--resume"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    for task in ["gate", "quick"] {
        assert_eq!(again.finished(task)["resumed"], true, "{task}");
    }
}

#[test]
fn a_task_writing_a_gibibyte_is_held_to_the_cap_while_it_runs() {
    // The task samples how much memory its captured stdout holds after each MiB it writes,
    // and how much pexen's resident set peaked at, and leaves both in files.
    let t = Tree::new().file(
        "loud.ron",
        r#"(run: Shell("i=0; max=0; while [ $i -lt 1024 ]; do head -c 1048576 /dev/zero; b=$(stat -L -c %b /proc/$$/fd/1); [ $b -gt $max ] && max=$b; i=$((i+1)); done; echo $max > ../max_blocks; grep VmHWM /proc/$PPID/status > ../hwm; echo the-end"), cwd: "work")"#,
    ).file("work/.keep", "");
    let junit = t.path().join("r.xml");
    let r = t.run(&["--junit", junit.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let blocks: u64 = std::fs::read_to_string(t.path().join("max_blocks"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The cap is 1 MiB; what the task writes between two of pexen's 25 ms ticks comes on top.
    // Without the bound, the capture held the whole GiB.
    assert!(
        blocks * 512 < 256 << 20,
        "captured stdout held {} MiB",
        (blocks * 512) >> 20
    );
    let hwm = std::fs::read_to_string(t.path().join("hwm")).unwrap();
    let kib: u64 = hwm
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{hwm}"));
    assert!(kib < 256 << 10, "pexen peaked at {kib} KiB");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let omitted = (1_u64 << 30) + "the-end\n".len() as u64 - (1 << 20);
    assert!(
        xml.contains(&format!("[... {omitted} bytes omitted ...]")),
        "no head-and-tail marker"
    );
    assert!(xml.contains("the-end"), "the tail was lost");
}

#[test]
fn ctrl_z_stops_the_tasks_and_their_timers_and_fg_continues_them() {
    // The task waits without a child: a loop of `sleep`s could be caught between dash's vfork
    // and exec, where the stopped child leaves its parent in `D`, never `T`.
    let t = Tree::new().file(
        "waits.ron",
        r#"(run: Shell("echo $$ > leader.pid; read go < go.fifo"), timeout: "2s")"#,
    );
    let fifo =
        std::ffi::CString::new(t.path().join("go.fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let tmp = tempfile::tempdir().unwrap();
    let mut child = spawn(&t, tmp.path(), &[], Stdio::null());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    until_started(&mut lines, "waits");
    let leader = wait_for_pid(&t.path().join("leader.pid"));
    wait_recorded(&t);

    signal(child.id(), libc::SIGTSTP);
    wait_state(child.id() as i32, true);
    wait_state(leader, true);
    // Stopped for longer than the task's timeout: the timer must not count it.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(stat(leader).unwrap().0, 'T', "the task was continued early");

    signal(child.id(), libc::SIGCONT);
    wait_state(leader, false);
    std::fs::write(t.path().join("go.fifo"), "go\n").unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{rest:#?}");
    let finished = rest
        .iter()
        .find(|l| l.contains("\"task-finished\""))
        .unwrap();
    assert!(finished.contains("\"outcome\":\"pass\""), "{finished}");
}

#[test]
fn junit_to_a_directory_is_refused_before_anything_runs() {
    let t = Tree::new().file("touch.ron", r#"(run: Shell("touch ran"))"#);
    let r = t.run(&["--junit", t.path().to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("is a directory"), "{}", r.stderr);
    assert!(!t.path().join("ran").exists(), "a task ran");
}

#[test]
fn junit_in_a_directory_not_made_yet_is_written_there() {
    let t = Tree::new().file("ok.ron", r#"(run: Shell("true"))"#);
    let report = t.path().join("reports/ci/junit.xml");
    let r = t.run(&["--junit", report.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let xml = std::fs::read_to_string(&report).unwrap();
    assert!(
        xml.contains("<testcase") && xml.contains("name=\"ok\""),
        "{xml}"
    );
}

#[test]
fn junit_under_a_file_is_refused_before_anything_runs() {
    let t = Tree::new()
        .file("touch.ron", r#"(run: Shell("touch ran"))"#)
        .file("notes", "not a directory");
    let report = t.path().join("notes/junit.xml");
    let r = t.run(&["--junit", report.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("cannot create"), "{}", r.stderr);
    assert!(!t.path().join("ran").exists(), "a task ran");
}

/// `pexen check` on a tree with one file: the exit code and stderr.
fn check(file: &str, content: &[u8]) -> (i32, String) {
    let t = Tree::new();
    std::fs::write(t.path().join(file), content).unwrap();
    let out = t.cmd("check", &[]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hostile_definitions_are_errors_with_a_position_never_a_panic() {
    let cases: &[(&str, &[u8], &str)] = &[
        // A backslash or a slash before a multibyte character: ron reports a byte inside it.
        ("a.ron", "(run: Shell(\"\\é\"))".as_bytes(), "a.ron:1:"),
        ("a.ron", "(run: Shell(\"x\"), /é)".as_bytes(), "a.ron:1:"),
        ("_dir.ron", "(tags: [\"\\é\"])".as_bytes(), "_dir.ron:1:"),
        ("_dir.ron", "(/é)".as_bytes(), "_dir.ron:1:"),
        // Invalid UTF-8: the line and column of the bad byte.
        ("a.ron", b"(\n  run: Shell(\"ok\xff\"),\n)", "a.ron:2:17: invalid UTF-8 (byte 0xff)"),
        // A timeout no clock can hold.
        (
            "a.ron",
            b"(run: Shell(\"x\"), timeout: \"500000000000 years\")",
            "a.ron:1:28: timeout `500000000000 years` is too long",
        ),
        // Raw-string keys: errors point into the entry, not at the map's `{`.
        (
            "m.tasks.ron",
            b"{\n r\"a\": (run: Shell(\"x\")),\n r\"a\": (run: Shell(\"y\")),\n}",
            "m.tasks.ron:3:2: task `a` is defined twice",
        ),
        (
            "m.tasks.ron",
            b"{\n r\"ok\": (run: Shell(\"x\")),\n r\"b\": (run: Shell(\"\")),\n}",
            "m.tasks.ron:3:",
        ),
        (
            "m.tasks.ron",
            b"{\n r\"ok\": (run: Shell(\"x\")),\n r\"c\": (run: Shell(\"x\"), timeout: \"soon\"),\n}",
            "m.tasks.ron:3:",
        ),
    ];
    for (file, content, expected) in cases {
        let (code, err) = check(file, content);
        assert_eq!(
            code,
            2,
            "{file} {:?}: {err}",
            String::from_utf8_lossy(content)
        );
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
    }
    let t = Tree::new().file("a.ron", r#"(run: Shell("true"))"#);
    let out = t.cmd("run", &["--timeout", "500000000000years"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_task_file_comes_before_the_tasks_of_its_directory() {
    let t = Tree::new()
        .file("a.ron", r#"(run: Shell("true"))"#)
        .file("a/b.ron", r#"(run: Shell("true"))"#)
        .file("a-b.ron", r#"(run: Shell("true"))"#);
    let out = t.cmd("list", &["--format", "json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = ["\"a\"", "\"a-b\"", "\"a/b\""]
        .into_iter()
        .filter(|n| text.contains(n))
        .collect();
    assert_eq!(names.len(), 3, "{text}");
    let at = |n: &str| {
        text.find(&format!("\"name\":{n}"))
            .unwrap_or_else(|| panic!("{n}: {text}"))
    };
    // As whole paths sort: `a-b.ron` < `a.ron` < `a/` (`-` < `.` < `/`).
    assert!(
        at("\"a-b\"") < at("\"a\"") && at("\"a\"") < at("\"a/b\""),
        "{text}"
    );
}

#[test]
fn a_report_of_a_killed_run_says_it_is_incomplete_and_lists_what_did_not_run() {
    let t = Tree::new()
        .file("a.ron", r#"(run: Shell("true"), priority: -1)"#)
        .file(
            "b.ron",
            r#"(run: Shell("test -e again && exit 0; echo $$ > b.pid; sleep 3000"), provides: ["b"])"#,
        )
        .file("c.ron", r#"(run: Shell("true"), requires: ["b"])"#);
    let tmp = tempfile::tempdir().unwrap();
    let mut child = spawn(&t, tmp.path(), &["-j", "1"], Stdio::null());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    until_started(&mut lines, "b");
    let b = wait_for_pid(&t.path().join("b.pid"));
    signal(child.id(), libc::SIGKILL);
    child.wait().unwrap();

    let xml = t.path().join("r.xml");
    let out = pexen()
        .args(["report", "--junit"])
        .arg(&xml)
        .arg("--state")
        .arg(t.path().join(".pexen"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("did not finish"), "{err}");
    assert!(err.contains("not run: b, c"), "{err}");
    let xml = std::fs::read_to_string(&xml).unwrap();
    assert!(xml.contains("tests=\"3\""), "{xml}");
    assert_eq!(xml.matches("not run: the run ended").count(), 2, "{xml}");
    // The next run ends the sleeper the killed one left.
    let start = stat(b).map(|s| s.1);
    std::fs::write(t.path().join("again"), "").unwrap();
    assert_eq!(t.run(&[]).code, 0);
    assert!(start.is_none_or(|s| gone(b, s)));
}

/// Every live process whose environment mentions `needle` (a test's private TMPDIR: every task
/// process of pexen runs using it inherits `PEXEN_RESULTS=<it>/…`).
fn processes_with_env(needle: &[u8]) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(s, _)| s != 'Z' && s != 'X'))
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

#[test]
#[ignore = "soak test (kill -9 twenty times); .ci/run runs it (--include-ignored)"]
fn soak_kill_9_at_twenty_moments_of_a_run_with_exports_then_resume() {
    // 60 tasks in a binary tree of requires; each exports a value that its dependents check
    // (a missing or wrong export fails them) and logs that it ran to completion.
    let mut t = Tree::new();
    for i in 0..60 {
        let check = if i == 0 {
            String::new()
        } else {
            let p = (i - 1) / 2;
            format!("[ \\\"$K{p}\\\" = v{p} ] || exit 1; ")
        };
        let requires = if i == 0 {
            String::new()
        } else {
            format!("requires: [\"t{}\"], ", (i - 1) / 2)
        };
        let body = format!(
            "(run: Shell(\"{check}sleep 0.0{}; echo K{i}=v{i} >> $PEXEN_EXPORT; echo t{i} >> ../done.log\"), {requires}provides: [\"t{i}\"], cwd: \"work\")",
            i % 10
        );
        t = t.file(&format!("t{i:02}.ron"), &body);
    }
    let t = t.file("work/.keep", "");
    let tmp = tempfile::tempdir().unwrap();
    let needle = tmp.path().as_os_str().as_encoded_bytes().to_vec();
    let mut rng = fastrand::Rng::with_seed(9);
    let mut finished_before = std::collections::HashSet::<String>::new();
    let mut kills = 0;
    let mut resume: &[&str] = &[];
    loop {
        let mut args = vec!["-j", "4"];
        args.extend_from_slice(resume);
        let err_path = tmp.path().join(format!("stderr-{kills}"));
        let err_file = std::fs::File::create(&err_path).unwrap();
        let mut child = spawn(&t, tmp.path(), &args, Stdio::from(err_file));
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill at a random moment: after a random number of events of this run.
        let kill_after = if kills < 20 {
            rng.usize(1..40)
        } else {
            usize::MAX
        };
        let mut started = std::collections::HashSet::new();
        let mut finished = std::collections::HashSet::new();
        let mut killed = false;
        for (n, line) in lines.enumerate() {
            let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            let task = e["task"].as_str().unwrap_or_default().to_owned();
            match e["type"].as_str() {
                Some("task-started") => {
                    assert!(
                        !finished_before.contains(&task),
                        "{task} ran again although an earlier run reported it finished"
                    );
                    started.insert(task);
                }
                Some("task-finished") => {
                    assert_eq!(e["outcome"], "pass", "{e}");
                    if finished_before.contains(&task) {
                        assert_eq!(e["resumed"], true, "{e}");
                    }
                    finished.insert(task);
                }
                _ => {}
            }
            if n + 1 == kill_after {
                signal(child.id(), libc::SIGKILL);
                killed = true;
                break;
            }
        }
        let status = child.wait().unwrap();
        finished_before.extend(finished);
        if !killed {
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            assert_eq!(status.code(), Some(0), "after {kills} kills: {stderr}");
            break;
        }
        kills += 1;
        resume = &["--resume"];
    }
    assert!(kills >= 20, "only {kills} kills");
    assert_eq!(finished_before.len(), 60);
    // Every task ran to completion; a task that completed but was killed before pexen recorded
    // it may have run twice, and only such a task: never more than the jobs in flight per kill.
    let log = std::fs::read_to_string(t.path().join("done.log")).unwrap();
    let mut counts = std::collections::HashMap::new();
    for name in log.lines() {
        *counts.entry(name).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 60);
    let extra: usize = counts.values().map(|c| c - 1).sum();
    assert!(extra <= 4 * kills, "{extra} reruns");
    assert!(
        processes_with_env(&needle).is_empty(),
        "task processes left running"
    );
}

#[test]
fn closing_the_terminal_ends_the_run_and_its_tasks() {
    // pexen as the session leader of a pty, with the progress display on it; closing the
    // master side is a hangup: SIGHUP to pexen (not to its tasks, which are in groups of their
    // own), and every later write to the terminal fails.
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;

    let t = Tree::new().file("slow.ron", SLEEPER);
    let junit = t.path().join("r.xml");
    // Both ends close-on-exec from the start: tests run in parallel threads, and a master
    // inherited by any other child would keep the terminal from hanging up.
    // SAFETY: plain calls on descriptors created and owned here; `ptsname_r` writes at most
    // `name.len()` bytes.
    let (master, slave) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        let master = OwnedFd::from_raw_fd(master);
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0
        );
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(
            slave >= 0,
            "open the pty: {}",
            std::io::Error::last_os_error()
        );
        (master, OwnedFd::from_raw_fd(slave))
    };
    let mut cmd = pexen();
    cmd.arg("run")
        .arg(t.path())
        .arg("--state")
        .arg(t.path().join(".pexen"))
        .arg("--junit")
        .arg(&junit)
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    drop(slave);
    let pid = wait_for_pid(&t.path().join("child.pid"));
    let start = stat(pid).unwrap().1;
    drop(master);
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(gone(pid, start), "the task's child outlived the terminal");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("name=\"slow\""), "{xml}");
}
