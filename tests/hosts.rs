//! Hosts (SPEC 9): the same tree run over other machines with `--host`/`--no-local`.
//!
//! Each scenario runs twice: over a stand-in ssh (`PEXEN_SSH` pointing at a script that runs
//! the remote command with `sh` under a per-host `HOME`: the bootstrap, the upload, the
//! protocol and the sync are all real, only the network is not), and over real `sshd`s from
//! `.ci/sshd.sh` (three users on three loopback ports; ignored without them).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{pexen, running, wait_for_pid, RunResult, Tree};
use serde_json::Value;

#[path = "common/net.rs"]
mod net;
use net::Net;

impl Net {
    fn command(&self, tree: &Path, args: &[&str]) -> Command {
        let mut cmd = pexen();
        cmd.arg("run")
            .arg(tree)
            .args(["--message-format", "json", "--state"])
            .arg(tree.join(".pexen"))
            .args(args);
        self.apply(&mut cmd);
        cmd
    }

    fn run(&self, tree: &Path, args: &[&str]) -> RunResult {
        RunResult::new(self.command(tree, args).output().expect("run pexen"))
    }

    fn spawn(&self, tree: &Path, args: &[&str]) -> Child {
        self.command(tree, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pexen")
    }
}

/// A tree whose tasks a remote user can write into (its pid files).
fn shared_tree() -> Tree {
    let tree = Tree::new();
    std::fs::set_permissions(tree.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    tree
}

fn host_of(r: &RunResult, task: &str) -> String {
    r.finished(task)["host"].as_str().unwrap_or("").to_string()
}

fn outcomes(r: &RunResult) -> BTreeMap<String, (String, Value)> {
    r.of_type("task-finished")
        .iter()
        .map(|e| {
            (
                e["task"].as_str().unwrap().to_string(),
                (
                    e["outcome"].as_str().unwrap().to_string(),
                    e["exit_code"].clone(),
                ),
            )
        })
        .collect()
}

/// The JUnit file without what differs between two runs: times, the host properties, and
/// the host named in a result.
fn junit_shape(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains(".host\"") {
            continue;
        }
        let mut l = line.to_string();
        while let Some(i) = l.find("time=\"") {
            let end = l[i + 6..].find('"').unwrap() + i + 7;
            l.replace_range(i..end, "");
        }
        for host in ["local", "h1", "h2"] {
            l = l.replace(&format!("host {host}\""), "host HOST\"");
        }
        lines.push(l);
    }
    lines
        .join("\n")
        .replace("<properties>\n</properties>\n", "")
}

fn mixed_tree() -> Tree {
    shared_tree()
        .file(
            "setup.ron",
            r#"(run: Shell("echo PORT=8080 >> $PEXEN_EXPORT"), provides: ["db"])"#,
        )
        .file(
            "net/use.ron",
            r#"(run: Shell("test \"$PORT\" = 8080 && echo \"warn host $PEXEN_HOST\" >> $PEXEN_RESULTS"), requires: ["db"])"#,
        )
        .file("net/bad.ron", r#"(run: Shell("echo oops >&2; exit 3"))"#)
        .file("net/skipped.ron", r#"(run: Shell("exit 77"))"#)
        .file("slow.ron", r#"(run: Shell("sleep 30"), timeout: "1s")"#)
        .script("smoke/boot.sh", "test -n \"$PEXEN_HOST\"")
}

fn same_as_local(net: &Net) {
    let tree = mixed_tree();
    let local = tree.path().join("local.xml");
    let remote = tree.path().join("remote.xml");
    let l = net.run(tree.path(), &["--junit", local.to_str().unwrap()]);
    assert_eq!(l.code, 1, "{}", l.stderr);
    let r = net.run(
        tree.path(),
        &[
            "--no-local",
            "--host",
            "ssh://h1?jobs=2",
            "--host",
            "ssh://h2?jobs=2",
            "--junit",
            remote.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(outcomes(&l), outcomes(&r));
    assert_eq!(r.outcome("net/use"), "warn");
    assert_eq!(r.outcome("slow"), "timeout");
    let connected: Vec<_> = r
        .of_type("host-connected")
        .iter()
        .map(|e| e["host"].clone())
        .collect();
    assert_eq!(connected.len(), 2, "{connected:?}");
    for e in r.of_type("task-started") {
        assert!(e["host"] == "h1" || e["host"] == "h2", "{e}");
    }
    // PEXEN_HOST is the host's name; the exports of `setup` reached `net/use` wherever it ran.
    let result = r.of_type("task-result")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(result, format!("host {}", host_of(&r, "net/use")));
    assert!(r.finished("net/bad")["host"].is_string());
    assert_eq!(junit_shape(&local), junit_shape(&remote));
    let xml = std::fs::read_to_string(&remote).unwrap();
    assert!(xml.contains(&format!(
        "<property name=\"bad.host\" value=\"{}\"/>",
        host_of(&r, "net/bad")
    )));
}

fn sync_is_by_content(net: &Net) {
    let tree = shared_tree()
        .file("a.ron", r#"(run: Shell("cat data.txt"))"#)
        .file("data.txt", "one\n")
        .file("sub/more.txt", "x\n");
    let args = ["--no-local", "--host", "ssh://h1"];
    let first = net.run(tree.path(), &args);
    assert_eq!(first.code, 0, "{}", first.stderr);
    if !net.real {
        // A fresh home: the binary and every file of the tree travel.
        let c = first.of_type("host-connected")[0];
        assert_eq!(
            (c["uploaded"].as_bool(), c["files_sent"].as_u64()),
            (Some(true), Some(3))
        );
    }
    let second = net.run(tree.path(), &args);
    let c = second.of_type("host-connected")[0];
    assert_eq!(
        (c["uploaded"].as_bool(), c["files_sent"].as_u64()),
        (Some(false), Some(0))
    );
    std::fs::write(tree.path().join("data.txt"), "two\n").unwrap();
    let third = net.run(tree.path(), &args);
    let c = third.of_type("host-connected")[0];
    assert_eq!(
        (c["uploaded"].as_bool(), c["files_sent"].as_u64()),
        (Some(false), Some(1))
    );
    assert_eq!(third.code, 0);
}

fn outputs_reach_dependents_elsewhere(net: &Net) {
    let tree = shared_tree()
        .file(
            "gen.ron",
            r#"(run: Shell("mkdir -p out && echo \"made on $PEXEN_HOST\" > out/gen.txt"), provides: ["gen"], outputs: ["out/*.txt"], host_tags: ["one"])"#,
        )
        .file(
            "use.ron",
            r#"(run: Shell("grep -q 'made on h1' out/gen.txt"), requires: ["gen"], host_tags: ["two"])"#,
        );
    let r = net.run(
        tree.path(),
        &[
            "--no-local",
            "--host",
            "ssh://h1?tags=one",
            "--host",
            "ssh://h2?tags=two",
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        (host_of(&r, "gen"), host_of(&r, "use")),
        ("h1".into(), "h2".into())
    );
    let back = std::fs::read_to_string(tree.path().join("out/gen.txt")).unwrap();
    assert_eq!(back, "made on h1\n");
}

fn claims_hold_across_hosts(net: &Net) {
    let mut tree = shared_tree();
    for i in 0..6 {
        tree = tree.file(
            &format!("t{i}.ron"),
            r#"(run: Shell("sleep 0.2"), claims: ["db"])"#,
        );
    }
    let r = net.run(
        tree.path(),
        &[
            "--no-local",
            "--host",
            "ssh://h1?jobs=3",
            "--host",
            "ssh://h2?jobs=3",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut holder: Option<String> = None;
    let mut hosts = std::collections::BTreeSet::new();
    for e in &r.events {
        match e["type"].as_str() {
            Some("task-started") => {
                assert!(
                    holder.is_none(),
                    "{} started while {holder:?} held the claim",
                    e["task"]
                );
                holder = Some(e["task"].as_str().unwrap().to_string());
                hosts.insert(e["host"].as_str().unwrap().to_string());
            }
            Some("task-finished") => holder = None,
            _ => {}
        }
    }
    assert_eq!(r.of_type("task-finished").len(), 6);
    assert!(!hosts.is_empty());
}

/// Also: no process of the killed worker's tasks is left, even in a process group the groups
/// file does not name (here one a task made itself, as a group the worker had no time to write
/// down would be): over real sshd the ssh session is swept. The stand-in ssh shares the test's
/// session, which the sweep leaves alone: there the test ends that process itself.
fn a_killed_worker_requeues_its_attempt(net: &Net) {
    let tree = shared_tree();
    let dir = tree.path().to_string_lossy().into_owned();
    let tree = tree.file(
        "slow.ron",
        &format!(
            r#"(run: Shell("if [ -f {dir}/again ]; then exit 0; fi; touch {dir}/again; perl -e 'setpgrp(0, 0); open(my $f, q(>), q({dir}/own.tmp)); print $f qq($$\n); close $f; rename(q({dir}/own.tmp), q({dir}/own.pid)); sleep 300' & sleep 300 & echo $! > {dir}/sleep.pid; echo $PPID > {dir}/worker.pid; wait"))"#
        ),
    );
    let child = net.spawn(tree.path(), &["--no-local", "--host", "ssh://h1"]);
    let worker = wait_for_pid(&tree.path().join("worker.pid"));
    let sleeper = wait_for_pid(&tree.path().join("sleep.pid"));
    let own = wait_for_pid(&tree.path().join("own.pid"));
    // SAFETY: kill(2) with a pid and a signal.
    assert_eq!(unsafe { libc::kill(worker, libc::SIGKILL) }, 0);
    let r = RunResult::new(child.wait_with_output().unwrap());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let lost = r.of_type("host-lost");
    assert_eq!(lost.len(), 1, "{}", r.stdout);
    assert_eq!(lost[0]["host"], "h1");
    // Put back in the queue, not counted as an attempt.
    let starts: Vec<_> = r
        .of_type("task-started")
        .iter()
        .map(|e| e["attempt"].clone())
        .collect();
    assert_eq!(starts, [1, 1]);
    assert_eq!(r.finished("slow")["attempt"], 1);
    assert!(
        !running(sleeper),
        "the lost attempt's process {sleeper} was left running"
    );
    if net.real {
        assert!(
            !running(own),
            "the process {own} in a group of its own outlived the killed worker"
        );
    } else {
        // SAFETY: kill(2) with a pid and a signal.
        unsafe { libc::kill(own, libc::SIGKILL) };
    }
}

fn interrupt_leaves_nothing_on_any_host(net: &Net) {
    let tree = shared_tree();
    let dir = tree.path().to_string_lossy().into_owned();
    let tree = tree
        .file(
            "a.ron",
            &format!(
                r#"(run: Shell("sleep 300 & echo $! > {dir}/a.pid; wait"), host_tags: ["one"])"#
            ),
        )
        .file(
            "b.ron",
            &format!(
                r#"(run: Shell("sleep 300 & echo $! > {dir}/b.pid; wait"), host_tags: ["two"])"#
            ),
        );
    let child = net.spawn(
        tree.path(),
        &[
            "--no-local",
            "--host",
            "ssh://h1?tags=one",
            "--host",
            "ssh://h2?tags=two",
        ],
    );
    let a = wait_for_pid(&tree.path().join("a.pid"));
    let b = wait_for_pid(&tree.path().join("b.pid"));
    // SAFETY: kill(2) with a pid and a signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let r = RunResult::new(child.wait_with_output().unwrap());
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert!(!running(a) && !running(b), "left running: {a} {b}");
}

/// Per-host `slots`: at no time does a host hold more of a resource than its capacity, a
/// host that declares none of it never gets a task needing it, and the run's own capacity
/// still bounds the total across hosts. Checked from the recorded events.
fn slots_are_per_host(net: &Net) {
    let mut tree = shared_tree();
    let mut wanted = BTreeMap::new();
    for i in 0..6 {
        tree = tree.file(
            &format!("one{i}.ron"),
            r#"(run: Shell("sleep 0.2"), slots: {"gpu": 1})"#,
        );
        wanted.insert(format!("one{i}"), 1);
    }
    tree = tree.file("two.ron", r#"(run: Shell("sleep 0.2"), slots: {"gpu": 2})"#);
    wanted.insert("two".into(), 2);
    for i in 0..4 {
        tree = tree.file(&format!("plain{i}.ron"), r#"(run: Shell("sleep 0.1"))"#);
        wanted.insert(format!("plain{i}"), 0);
    }
    let check = |r: &RunResult, caps: &BTreeMap<&str, u32>, total: u32| {
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        let mut used: BTreeMap<String, u32> = BTreeMap::new();
        let mut on: BTreeMap<String, String> = BTreeMap::new();
        for e in &r.events {
            let task = e["task"].as_str().unwrap_or("").to_string();
            match e["type"].as_str() {
                Some("task-started") => {
                    let host = e["host"].as_str().unwrap().to_string();
                    let n = wanted[&task];
                    let u = {
                        let u = used.entry(host.clone()).or_default();
                        *u += n;
                        *u
                    };
                    assert!(
                        u <= caps.get(host.as_str()).copied().unwrap_or(0) || n == 0,
                        "{task} started on {host} with {u} gpu in use there"
                    );
                    let sum: u32 = used.values().sum();
                    assert!(sum <= total, "{task}: {sum} gpu in use over the run");
                    on.insert(task, host);
                }
                Some("task-finished") => {
                    let host = on.remove(&task).unwrap();
                    *used.get_mut(&host).unwrap() -= wanted[&task];
                }
                _ => {}
            }
        }
        assert_eq!(r.of_type("task-finished").len(), wanted.len());
        assert_eq!(host_of(r, "two"), "h2", "only h2 has 2 gpu");
    };
    let caps = BTreeMap::from([("h1", 1), ("h2", 2)]);
    let r = net.run(
        tree.path(),
        &[
            "-j",
            "2",
            "--host",
            "ssh://h1?jobs=3&capacity=gpu:1",
            "--host",
            "ssh://h2?jobs=3&capacity=gpu:2",
        ],
    );
    check(&r, &caps, 3);
    for (task, n) in &wanted {
        if *n > 0 {
            assert_ne!(host_of(&r, task), "local", "local declares no gpu");
        }
    }
    // The run's own capacity still bounds the total across hosts.
    let r = net.run(
        tree.path(),
        &[
            "--no-local",
            "--capacity",
            "gpu=2",
            "--host",
            "ssh://h1?jobs=3&capacity=gpu:1",
            "--host",
            "ssh://h2?jobs=3&capacity=gpu:2",
        ],
    );
    check(&r, &caps, 2);
    // A task that fits no host is a validation error naming it.
    let r = net.run(
        tree.path(),
        &["--no-local", "--host", "ssh://h1?capacity=gpu:1"],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("task `two` needs slots {gpu: 2}"),
        "{}",
        r.stderr
    );
}

/// A host queues attempts ahead once one of its attempts was short: a first task that is.
fn warmed(tree: Tree) -> Tree {
    tree.file("warm.ron", r#"(run: Shell("true"), priority: -20)"#)
}

/// How many attempts each host ran at once at most, from the recorded events.
fn most_at_once(r: &RunResult) -> BTreeMap<String, usize> {
    let mut now: BTreeMap<String, usize> = BTreeMap::new();
    let mut most: BTreeMap<String, usize> = BTreeMap::new();
    let mut on: BTreeMap<String, String> = BTreeMap::new();
    for e in &r.events {
        let task = e["task"].as_str().unwrap_or("").to_string();
        match e["type"].as_str() {
            Some("task-started") => {
                let host = e["host"].as_str().unwrap().to_string();
                let n = now.entry(host.clone()).or_default();
                *n += 1;
                let m = most.entry(host.clone()).or_default();
                *m = (*m).max(*n);
                on.insert(task, host);
            }
            Some("task-finished" | "task-retry") => {
                if let Some(host) = on.remove(&task) {
                    *now.get_mut(&host).unwrap() -= 1;
                }
            }
            // Its attempts went back to the queue (no event of their own).
            Some("host-lost") => {
                let host = e["host"].as_str().unwrap();
                on.retain(|_, h| h != host);
                now.insert(host.to_string(), 0);
            }
            _ => {}
        }
    }
    most
}

/// Attempts queued ahead on a host (more in flight than its `jobs`) never run more than
/// `jobs` at once: neither in the recorded events nor on the host itself (each task counts
/// the tasks running beside it there), and each task starts once. With `outputs`, every third
/// task also writes an output, which comes back: its attempt is seen to its end by a thread of
/// its own, the others' by the connection's reader, and the two kinds keep the same order.
fn a_host_runs_at_most_its_jobs_with_attempts_queued(net: &Net, outputs: bool) {
    let mut tree = shared_tree();
    let dir = tree.path().to_string_lossy().into_owned();
    std::fs::create_dir(tree.path().join("running")).unwrap();
    std::fs::set_permissions(
        tree.path().join("running"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    for i in 0..40 {
        let count = format!(
            "touch {dir}/running/t{i}; ls {dir}/running | wc -l >> {dir}/counts; rm {dir}/running/t{i}"
        );
        let task = if outputs && i % 3 == 0 {
            format!(
                r#"(run: Shell("{count}; mkdir -p out && echo {i} > out/t{i}.txt"), outputs: ["out/t{i}.txt"])"#
            )
        } else {
            format!(r#"(run: Shell("{count}"))"#)
        };
        tree = tree.file(&format!("t{i}.ron"), &task);
    }
    let r = net.run(tree.path(), &["--no-local", "--host", "ssh://h1?jobs=2"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.of_type("task-started").len(), 40, "{}", r.stdout);
    assert_eq!(most_at_once(&r)["h1"], 2, "{}", r.stdout);
    let counts = std::fs::read_to_string(tree.path().join("counts")).unwrap();
    let counts: Vec<usize> = counts.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(counts.len(), 40);
    assert!(
        counts.iter().all(|&n| (1..=2).contains(&n)),
        "more than 2 tasks ran at once on h1: {counts:?}"
    );
    for i in (0..40).filter(|i| outputs && i % 3 == 0) {
        let back = std::fs::read_to_string(tree.path().join(format!("out/t{i}.txt"))).unwrap();
        assert_eq!(back, format!("{i}\n"));
    }
}

/// Many short attempts on one host, with priorities against the order of their names: the
/// connection's reader sends most of them itself as the ends it reads free their room, and the
/// run's events still show the host running at most its `jobs` and the tasks starting in the
/// order of their priorities, each once.
fn attempts_the_reader_sends_keep_the_hosts_jobs_and_priorities(net: &Net) {
    let mut tree = shared_tree();
    let n = 150;
    for i in 0..n {
        tree = tree.file(
            &format!("t{i:03}.ron"),
            &format!(r#"(run: Shell("true"), priority: {})"#, n - i),
        );
    }
    let r = net.run(tree.path(), &["--no-local", "--host", "ssh://h1?jobs=2"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let expected: Vec<String> = (0..n).rev().map(|i| format!("t{i:03}")).collect();
    assert_eq!(r.started(), expected, "{}", r.stdout);
    assert_eq!(most_at_once(&r)["h1"], 2, "{}", r.stdout);
}

/// A host lost with an attempt running and others queued there: the running one goes back to
/// the queue (not counted), the queued ones too (they never started: no second
/// `task-started`), and every task runs to its end once.
fn a_lost_host_requeues_queued_and_running_attempts(net: &Net) {
    let mut tree = warmed(shared_tree());
    let dir = tree.path().to_string_lossy().into_owned();
    tree = tree.file(
        "slow.ron",
        &format!(
            r#"(run: Shell("if [ -f {dir}/again ]; then echo slow >> {dir}/ran; exit 0; fi; touch {dir}/again; sleep 300 & echo $! > {dir}/sleep.pid; echo $PPID > {dir}/worker.pid; wait"), priority: -10)"#
        ),
    );
    for i in 0..4 {
        tree = tree.file(
            &format!("q{i}.ron"),
            &format!(r#"(run: Shell("echo q{i} >> {dir}/ran"))"#),
        );
    }
    let child = net.spawn(tree.path(), &["--no-local", "--host", "ssh://h1?jobs=1"]);
    let worker = wait_for_pid(&tree.path().join("worker.pid"));
    let sleeper = wait_for_pid(&tree.path().join("sleep.pid"));
    // SAFETY: kill(2) with a pid and a signal.
    assert_eq!(unsafe { libc::kill(worker, libc::SIGKILL) }, 0);
    let r = RunResult::new(child.wait_with_output().unwrap());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.of_type("host-lost").len(), 1, "{}", r.stdout);
    let starts = |task: &str| {
        r.of_type("task-started")
            .iter()
            .filter(|e| e["task"] == task)
            .map(|e| e["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(starts("slow"), [1, 1], "{}", r.stdout);
    for i in 0..4 {
        assert_eq!(starts(&format!("q{i}")), [1], "{}", r.stdout);
        assert_eq!(r.finished(&format!("q{i}"))["attempt"], 1);
    }
    let mut ran: Vec<String> = std::fs::read_to_string(tree.path().join("ran"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    ran.sort();
    assert_eq!(ran, ["q0", "q1", "q2", "q3", "slow"]);
    assert_eq!(most_at_once(&r)["h1"], 1, "{}", r.stdout);
    assert!(
        !running(sleeper),
        "the lost attempt's process was left running"
    );
}

/// A cancel with attempts queued on a host: the running one is ended, the queued ones never
/// start and end `skip` like every task the run did not start; nothing is left running.
fn a_cancel_ends_queued_attempts_as_not_run(net: &Net) {
    let mut tree = warmed(shared_tree());
    let dir = tree.path().to_string_lossy().into_owned();
    tree = tree.file(
        "first.ron",
        &format!(r#"(run: Shell("sleep 300 & echo $! > {dir}/first.pid; wait"), priority: -10)"#),
    );
    for i in 0..3 {
        tree = tree.file(
            &format!("later{i}.ron"),
            &format!(r#"(run: Shell("touch {dir}/later{i}.ran"))"#),
        );
    }
    let child = net.spawn(tree.path(), &["--no-local", "--host", "ssh://h1?jobs=1"]);
    let first = wait_for_pid(&tree.path().join("first.pid"));
    // SAFETY: kill(2) with a pid and a signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let r = RunResult::new(child.wait_with_output().unwrap());
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert_eq!(r.started(), ["warm", "first"], "{}", r.stdout);
    for i in 0..3 {
        let task = format!("later{i}");
        assert_eq!(r.outcome(&task), "skip", "{}", r.stdout);
        assert!(!tree.path().join(format!("{task}.ran")).exists());
    }
    assert!(!running(first), "left running: {first}");
}

/// A task's timeout counts from its real start on the host, not from when it was queued there
/// behind a longer task.
fn timeouts_count_from_the_real_start(net: &Net) {
    let tree = warmed(shared_tree())
        .file("long.ron", r#"(run: Shell("sleep 4"), priority: -10)"#)
        .file("short.ron", r#"(run: Shell("true"), timeout: "3s")"#);
    let r = net.run(tree.path(), &["--no-local", "--host", "ssh://h1?jobs=1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.outcome("short"), "pass", "{}", r.stdout);
    assert_eq!(r.started(), ["warm", "long", "short"]);
    assert!(r.finished("short")["duration_s"].as_f64().unwrap() < 3.0);
}

/// On a host of short attempts, the worker holds the end of an attempt back for a moment while
/// others wait in its queue (so that several ends travel in one write); the end still reaches
/// the scheduler while the next attempt runs. Here each long task waits until the journal
/// records the short task that ran just before it, so a held-back end that waited for the next
/// end would make the long ones time out.
fn a_held_back_end_arrives_while_the_next_attempt_runs(net: &Net) {
    let mut tree = shared_tree();
    let state = tree.path().join(".pexen");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let journal = state.join("journal");
    // Enough short attempts for the host's average to deepen its queue ahead.
    for i in 0..40 {
        tree = tree.file(
            &format!("warm{i}.ron"),
            r#"(run: Shell("true"), priority: -20)"#,
        );
    }
    tree = tree.file("short.ron", r#"(run: Shell("true"), priority: -10)"#);
    for i in 0..3 {
        tree = tree.file(
            &format!("long{i}.ron"),
            &format!(
                r#"(run: Shell("until grep -q '\"name\":\"short\"' {}; do sleep 0.02; done"), timeout: "60s")"#,
                journal.display()
            ),
        );
    }
    let r = net.run(tree.path(), &["--no-local", "--host", "ssh://h1?jobs=1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for i in 0..3 {
        assert_eq!(r.outcome(&format!("long{i}")), "pass", "{}", r.stdout);
    }
}

#[test]
fn a_held_back_end_reaches_the_scheduler_while_the_next_attempt_runs() {
    a_held_back_end_arrives_while_the_next_attempt_runs(&Net::fake());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_a_held_back_end_reaches_the_scheduler_while_the_next_attempt_runs() {
    a_held_back_end_arrives_while_the_next_attempt_runs(&Net::sshd());
}

#[test]
fn a_host_never_runs_more_than_its_jobs_with_attempts_queued_ahead() {
    a_host_runs_at_most_its_jobs_with_attempts_queued(&Net::fake(), false);
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_a_host_never_runs_more_than_its_jobs_with_attempts_queued_ahead() {
    a_host_runs_at_most_its_jobs_with_attempts_queued(&Net::sshd(), false);
}

#[test]
fn attempts_with_outputs_and_without_keep_a_hosts_jobs_and_order() {
    a_host_runs_at_most_its_jobs_with_attempts_queued(&Net::fake(), true);
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_attempts_with_outputs_and_without_keep_a_hosts_jobs_and_order() {
    a_host_runs_at_most_its_jobs_with_attempts_queued(&Net::sshd(), true);
}

#[test]
fn attempts_sent_by_the_reader_keep_a_hosts_jobs_and_priorities() {
    attempts_the_reader_sends_keep_the_hosts_jobs_and_priorities(&Net::fake());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_attempts_sent_by_the_reader_keep_a_hosts_jobs_and_priorities() {
    attempts_the_reader_sends_keep_the_hosts_jobs_and_priorities(&Net::sshd());
}

#[test]
fn a_lost_host_puts_back_its_queued_and_running_attempts() {
    a_lost_host_requeues_queued_and_running_attempts(&Net::fake());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_a_lost_host_puts_back_its_queued_and_running_attempts() {
    a_lost_host_requeues_queued_and_running_attempts(&Net::sshd());
}

#[test]
fn a_cancel_ends_attempts_queued_on_a_host_as_skip() {
    a_cancel_ends_queued_attempts_as_not_run(&Net::fake());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_a_cancel_ends_attempts_queued_on_a_host_as_skip() {
    a_cancel_ends_queued_attempts_as_not_run(&Net::sshd());
}

#[test]
fn a_timeout_counts_from_the_real_start_on_the_host() {
    timeouts_count_from_the_real_start(&Net::fake());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_a_timeout_counts_from_the_real_start_on_the_host() {
    timeouts_count_from_the_real_start(&Net::sshd());
}

#[test]
fn slots_capacities_are_per_host() {
    slots_are_per_host(&Net::fake());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_slots_capacities_are_per_host() {
    slots_are_per_host(&Net::sshd());
}

/// A file over the 64 MiB frame limit syncs to a host and comes back as an output (chunks).
#[test]
fn files_over_the_frame_limit_travel_in_chunks() {
    let tree = shared_tree().file(
        "copy.ron",
        r#"(run: Shell("test $(wc -c < big.bin) = 68157441 && mkdir -p out && cp big.bin out/copy.bin"), outputs: ["out/*.bin"])"#,
    );
    let big: Vec<u8> = (0..68_157_441u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(tree.path().join("big.bin"), &big).unwrap();
    let r = Net::fake().run(tree.path(), &["--no-local", "--host", "ssh://h1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(host_of(&r, "copy"), "h1");
    let back = std::fs::read(tree.path().join("out/copy.bin")).unwrap();
    assert!(
        back == big,
        "the output came back with {} bytes",
        back.len()
    );
}

/// A file a task left in the host's copy of the tree (not an output) makes that copy differ:
/// the next run asks for the manifest and removes it (the copy mirrors the tree).
#[test]
fn a_file_left_on_the_host_is_removed_at_the_next_sync() {
    let tree = shared_tree().file(
        "leave.ron",
        r#"(run: Shell("test ! -e junk.txt && echo x > junk.txt"))"#,
    );
    let args = ["--no-local", "--host", "ssh://h1"];
    let net = Net::fake();
    for round in 0..2 {
        let r = net.run(tree.path(), &args);
        assert_eq!(r.code, 0, "round {round}: {}\n{}", r.stdout, r.stderr);
    }
    assert!(
        !tree.path().join("junk.txt").exists(),
        "nothing but outputs comes back"
    );
}

#[test]
fn same_outcomes_exports_and_junit_as_a_local_run() {
    same_as_local(&Net::fake());
}

#[test]
fn a_second_run_uploads_nothing_and_a_changed_file_is_all_that_syncs() {
    sync_is_by_content(&Net::fake());
}

#[test]
fn outputs_come_back_and_reach_a_dependent_on_another_host() {
    outputs_reach_dependents_elsewhere(&Net::fake());
}

#[test]
fn a_claim_holds_across_hosts() {
    claims_hold_across_hosts(&Net::fake());
}

#[test]
fn killing_the_remote_worker_requeues_the_attempt_and_the_run_passes() {
    a_killed_worker_requeues_its_attempt(&Net::fake());
}

#[test]
fn ctrl_c_leaves_no_task_process_on_any_host() {
    interrupt_leaves_nothing_on_any_host(&Net::fake());
}

/// A host that stalls during its setup (here: an ssh that never answers) does not hold the end
/// of an interrupted run: the connection is ended at once, and named as such.
#[test]
fn ctrl_c_while_a_host_is_connecting_ends_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ssh.pid");
    let script = dir.path().join("stalled-ssh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > '{}'\nexec sleep 1000\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tree = Tree::new().file("a.ron", r#"(run: Shell("true"))"#);
    let child = pexen()
        .arg("run")
        .arg(tree.path())
        .args([
            "--message-format",
            "json",
            "--no-local",
            "--host",
            "ssh://h1",
        ])
        .env("PEXEN_SSH", &script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ssh = wait_for_pid(&marker);
    // SAFETY: sending SIGINT to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let r = RunResult::new(child.wait_with_output().unwrap());
    assert_eq!(r.code, 130, "{}", r.stderr);
    let lost = r.of_type("host-lost");
    assert_eq!(lost.len(), 1, "{:?}", r.events);
    let why = lost[0]["reason"].as_str().unwrap();
    assert!(why.contains("cancelled while connecting"), "{why}");
    assert!(!running(ssh), "the stalled ssh client was left running");
    // Not run: `skip`, also when a worker had already taken its attempt to wait for a host.
    assert_eq!(r.outcome("a"), "skip", "{:?}", r.events);
    assert_eq!(r.of_type("task-finished").len(), 1);
}

#[test]
fn a_task_no_host_can_take_is_a_validation_error() {
    let tree = Tree::new().file("gpu.ron", r#"(run: Shell("true"), host_tags: ["gpu"])"#);
    let r = Net::fake().run(tree.path(), &["--host", "ssh://h1?tags=cpu"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("task `gpu` needs a host with tags gpu"),
        "{}",
        r.stderr
    );
    let r = Net::fake().run(tree.path(), &["--no-local"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--no-local needs hosts"), "{}", r.stderr);
    let r = Net::fake().run(tree.path(), &["--host", "h1"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("bad host `h1`: expected `local` or `ssh://"),
        "{}",
        r.stderr
    );
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_same_outcomes_exports_and_junit_as_a_local_run() {
    same_as_local(&Net::sshd());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_a_second_run_uploads_nothing_and_a_changed_file_is_all_that_syncs() {
    sync_is_by_content(&Net::sshd());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_outputs_come_back_and_reach_a_dependent_on_another_host() {
    outputs_reach_dependents_elsewhere(&Net::sshd());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_a_claim_holds_across_hosts() {
    claims_hold_across_hosts(&Net::sshd());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_killing_the_remote_worker_requeues_the_attempt_and_the_run_passes() {
    a_killed_worker_requeues_its_attempt(&Net::sshd());
}

/// A run that ends by itself leaves nothing either: a process a task put in a process group of
/// its own, without pexen's marker in its environment (`env -i`), is found by the worker's
/// sweep of its ssh session when the worker exits.
#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_a_process_a_task_left_in_a_group_of_its_own_ends_with_the_run() {
    let net = Net::sshd();
    let tree = shared_tree();
    let dir = tree.path().to_string_lossy().into_owned();
    let tree = tree.file(
        "leaves.ron",
        &format!(
            r#"(run: Shell("env -i perl -e 'setpgrp(0, 0); open(my $f, q(>), q({dir}/own.tmp)); print $f qq($$\n); close $f; rename(q({dir}/own.tmp), q({dir}/own.pid)); sleep 300' & while [ ! -f {dir}/own.pid ]; do sleep 0.01; done"))"#
        ),
    );
    let r = net.run(tree.path(), &["--no-local", "--host", "ssh://h1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.finished("leaves")["outcome"], "pass");
    let own = wait_for_pid(&tree.path().join("own.pid"));
    assert!(
        !running(own),
        "the process {own} a task left in a group of its own outlived the run"
    );
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_ctrl_c_leaves_no_task_process_on_any_host() {
    interrupt_leaves_nothing_on_any_host(&Net::sshd());
}

/// A wrong key, a closed port and an unusable cache directory each say what failed.
#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_connection_failures_name_their_cause() {
    let net = Net::sshd();
    let tree = Tree::new().file("a.ron", r#"(run: Shell("true"))"#);

    let wrong = tree.path().join("wrong_config");
    let config = std::fs::read_to_string(net.homes.join("ssh_config")).unwrap();
    std::fs::write(&wrong, config.replace("id_ed25519", "id_wrong")).unwrap();
    let r = RunResult::new(
        net.command(tree.path(), &["--no-local", "--host", "ssh://h1"])
            .env("PEXEN_SSH", format!("ssh -F {}", wrong.display()))
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 1);
    assert_eq!(r.outcome("a"), "error");
    let lost = r.of_type("host-lost");
    let why = lost[0]["reason"].as_str().unwrap();
    assert!(
        why.contains("authentication refused") && why.contains("Permission denied"),
        "{why}"
    );

    let r = net.run(tree.path(), &["--no-local", "--host", "ssh://h1:1"]);
    let lost = r.of_type("host-lost");
    assert!(
        lost[0]["reason"].as_str().unwrap().contains("unreachable")
            && lost[0]["reason"]
                .as_str()
                .unwrap()
                .contains("Connection refused"),
        "{lost:?}"
    );
    assert_eq!(r.outcome("a"), "error");

    // h3's binary cache is not usable: not searchable, not writable.
    let bin = net.home("h3").join(".cache/pexen/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let owner = Command::new("chown")
        .args(["-R", "pexen-h3"])
        .arg(net.home("h3").join(".cache"))
        .status()
        .unwrap();
    assert!(owner.success());
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = net.run(tree.path(), &["--no-local", "--host", "ssh://h3"]);
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lost = r.of_type("host-lost");
    assert!(
        lost[0]["reason"]
            .as_str()
            .unwrap()
            .contains("unusable binary cache"),
        "{lost:?}"
    );
}
