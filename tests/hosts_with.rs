//! Hosts (SPEC 9) with the rest of the SPEC: checkpoints and suspend (SPEC 12), exclusivity
//! groups (SPEC 13), and a tree sync that leaves out what `.gitignore` excludes, as the factory
//! does.
//!
//! Each scenario runs over the stand-in ssh of `common/net.rs` (bootstrap, upload, protocol and
//! sync are real, only the network is not) and over the real `sshd`s of `.ci/sshd.sh` (ignored
//! without them).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{alive, pexen, wait_for_pid, RunResult, Tree};

#[path = "common/net.rs"]
mod net;
use net::Net;

fn command(net: &Net, tree: &Path, args: &[&str]) -> Command {
    let mut cmd = pexen();
    cmd.arg("run")
        .arg(tree)
        .args(["--message-format", "json", "--state"])
        .arg(tree.join(".pexen"))
        .args(args);
    net.apply(&mut cmd);
    cmd
}

fn run(net: &Net, tree: &Path, args: &[&str]) -> RunResult {
    RunResult::new(command(net, tree, args).output().expect("run pexen"))
}

fn spawn(net: &Net, tree: &Path, args: &[&str]) -> Child {
    command(net, tree, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pexen")
}

fn wait(child: Child) -> RunResult {
    RunResult::new(child.wait_with_output().expect("wait for pexen"))
}

/// A tree whose tasks a remote user (real sshd) can write into.
fn shared_tree() -> Tree {
    let tree = Tree::new();
    std::fs::set_permissions(tree.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    tree
}

fn host_of(r: &RunResult, task: &str) -> String {
    r.finished(task)["host"].as_str().unwrap_or("").to_string()
}

/// The directories under `dir` (recursively) whose name is `name`.
fn find_dirs(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if e.file_name() == name {
                out.push(p.clone());
            }
            find_dirs(&p, name, out);
        }
    }
}

/// The checkpoint copies a host holds (under its cache) for the tasks of one test: those whose
/// file `mark` holds `mark` (the test's `$LOG`; the sshd hosts' caches are shared by every
/// test), with the names of their files.
fn host_checkpoints(net: &Net, host: &str, mark: &Path) -> Vec<(PathBuf, Vec<String>)> {
    let root = net.home(host).join(".cache/pexen/checkpoints");
    let mut dirs = Vec::new();
    for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let ours = std::fs::read_to_string(e.path().join("mark"))
            .is_ok_and(|m| Path::new(m.trim()) == mark);
        if !ours {
            continue;
        }
        let mut files: Vec<String> = std::fs::read_dir(e.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        dirs.push((e.path(), files));
    }
    dirs
}

// ---- checkpoints (SPEC 12) ----

/// Counts to 4, one step per attempt, as in tests/checkpoints.rs: each attempt logs the value
/// it found in its checkpoint (into a log outside the synced tree, `$LOG`, that every host's
/// user may write), saves the next one atomically, writes its pid and waits to be killed; the
/// attempt that reaches 4 passes.
const COUNTER: &str = r#"umask 000
cp="$PEXEN_CHECKPOINT"
[ -d "$cp" ] || exit 9
echo "$LOG" > "$cp/mark"
n=$(cat "$cp/count" 2>/dev/null || echo 0)
echo "$n $PEXEN_HOST" >> "$LOG/found.log"
n=$((n + 1))
echo "$n" > "$cp/.count.tmp" && mv "$cp/.count.tmp" "$cp/count"
if [ "$n" -ge 4 ]; then echo "$n" > "$LOG/result"; exit 0; fi
echo $$ > "$LOG/pid.tmp" && mv "$LOG/pid.tmp" "$LOG/pid"
exec sleep 1000"#;

/// A directory every host's user may write into, outside the synced tree.
fn log_dir(tree: &Tree) -> PathBuf {
    let log = tree.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o777)).unwrap();
    // Not part of the tree the hosts receive.
    std::fs::write(tree.path().join(".gitignore"), "log/\n").unwrap();
    log
}

fn counting_task_resumes_from_its_checkpoint_on_a_host(net: &Net) {
    let tree = shared_tree();
    let log = log_dir(&tree);
    let tree = tree.file(
        "count.ron",
        &format!(
            "(run: Shell({:?}), env: {{\"LOG\": {:?}}})",
            COUNTER,
            log.to_str().unwrap()
        ),
    );
    let checkpoint = tree.path().join(".pexen/checkpoints/count");
    let pid = log.join("pid");
    let saved = || std::fs::read_to_string(checkpoint.join("count")).unwrap();
    let one = ["--no-local", "--host", "ssh://h1"];

    // Ctrl-C while it waits on h1 after saving 1: the checkpoint comes back before the end
    // of the attempt is journaled.
    let child = spawn(net, tree.path(), &one);
    let task = wait_for_pid(&pid);
    // SAFETY: kill(2) touches no memory.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let r = wait(child);
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert_eq!(r.outcome("count"), "error");
    assert!(!alive(task), "the task was stopped");
    assert_eq!(saved(), "1\n");
    let journal = std::fs::read(tree.path().join(".pexen/journal")).unwrap();
    let journal = String::from_utf8_lossy(&journal);
    assert!(
        journal.contains(r#""checkpoint":true"#),
        "journaled: {journal}"
    );

    // On the other host, with timeouts: attempt 1 finds 1, saves 2 and times out; attempt
    // 2 (on either host) finds 2, saves 3, times out; attempt 3 finds 3 and reaches 4.
    std::fs::remove_file(&pid).unwrap();
    let r = run(
        net,
        tree.path(),
        &[
            "--no-local",
            "--host",
            "ssh://h2",
            "--host",
            "ssh://h1",
            "--resume",
            "--explain",
            "--timeout",
            "2s",
            "--retries",
            "3",
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("run count: last outcome was error; resumes from its checkpoint"),
        "{}",
        r.stderr
    );
    let f = r.finished("count");
    assert_eq!((&f["outcome"], &f["attempt"]), (&"pass".into(), &3.into()));
    let found = std::fs::read_to_string(log.join("found.log")).unwrap();
    let values: Vec<&str> = found
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        values,
        ["0", "1", "2", "3"],
        "never from zero again: {found}"
    );
    assert!(found.lines().nth(1).unwrap().ends_with(" h2"), "{found}");
    assert_eq!(std::fs::read_to_string(log.join("result")).unwrap(), "4\n");
    // Passed: removed here and on every host it ran on.
    assert!(!checkpoint.exists(), "removed here once the task passed");
    assert_eq!(host_of(&r, "count"), found.lines().last().unwrap()[2..]);
    let last = host_of(&r, "count");
    assert!(
        host_checkpoints(net, &last, &log).is_empty(),
        "removed on {last}: {:?}",
        host_checkpoints(net, &last, &log)
    );
}

#[test]
fn a_counting_task_on_a_host_resumes_from_its_checkpoint_after_ctrl_c_and_timeouts() {
    counting_task_resumes_from_its_checkpoint_on_a_host(&Net::fake());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_a_counting_task_on_a_host_resumes_from_its_checkpoint_after_ctrl_c_and_timeouts() {
    counting_task_resumes_from_its_checkpoint_on_a_host(&Net::sshd());
}

/// `reboot` saves its checkpoint on a host and exits 75; `--resume` continues it (on the
/// other host: only the files it lacks travel), and it passes when it finds what it saved.
fn suspend_on_a_host_then_resume(net: &Net) {
    let tree = shared_tree();
    let log = log_dir(&tree);
    let body = r#"umask 000
echo "$PEXEN_HOST $(cd "$PEXEN_CHECKPOINT" && find . -type f | LC_ALL=C sort | tr '\n' ' ')" >> "$LOG/runs.log"
echo "$LOG" > "$PEXEN_CHECKPOINT/mark"
if [ -e "$PEXEN_CHECKPOINT/before-boot" ]; then exit 0; fi
echo booting > "$PEXEN_CHECKPOINT/before-boot"
mkdir -p "$PEXEN_CHECKPOINT/.state" && echo 7 > "$PEXEN_CHECKPOINT/.state/n"
exit 75"#;
    let tree = tree
        .file(
            "reboot.ron",
            &format!(
                "(run: Shell({body:?}), env: {{\"LOG\": {:?}}}, provides: [\"up\"], host_tags: [\"first\"])",
                log.to_str().unwrap()
            ),
        )
        .file(
            "check.ron",
            r#"(run: Shell("true"), requires: ["up"])"#,
        );
    let r = run(
        net,
        tree.path(),
        &["--no-local", "--host", "ssh://h1?tags=first"],
    );
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.of_type("task-suspended")[0]["task"], "reboot");
    let checkpoint = tree.path().join(".pexen/checkpoints/reboot");
    assert_eq!(
        std::fs::read_to_string(checkpoint.join("before-boot")).unwrap(),
        "booting\n"
    );
    assert_eq!(
        std::fs::read_to_string(checkpoint.join(".state/n")).unwrap(),
        "7\n"
    );

    // After the "boot", on another host: it finds both files.
    let r = run(
        net,
        tree.path(),
        &["--no-local", "--host", "ssh://h2?tags=first", "--resume"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.started()[0], "reboot");
    assert_eq!(host_of(&r, "reboot"), "h2");
    let runs = std::fs::read_to_string(log.join("runs.log")).unwrap();
    assert_eq!(
        runs.lines().collect::<Vec<_>>(),
        ["h1 ", "h2 ./.state/n ./before-boot ./mark "],
        "{runs}"
    );
    assert!(!checkpoint.exists(), "removed here once it passed");
    assert!(
        host_checkpoints(net, "h2", &log).is_empty(),
        "removed on h2"
    );
}

#[test]
fn a_suspend_on_a_host_then_resume_continues_from_the_checkpoint() {
    suspend_on_a_host_then_resume(&Net::fake());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_a_suspend_on_a_host_then_resume_continues_from_the_checkpoint() {
    suspend_on_a_host_then_resume(&Net::sshd());
}

/// A task that fails twice then passes on the same host: the host keeps its copy between
/// attempts (what it saved is not sent back to it), and both sides drop it once it passes.
fn checkpoint_removed_on_both_sides_after_a_pass(net: &Net) {
    let tree = shared_tree();
    let log = log_dir(&tree);
    let task = |script: &str, more: &str| {
        format!(
            "(run: Shell({:?}), env: {{\"LOG\": {:?}}}{more})",
            format!("echo \"$LOG\" > $PEXEN_CHECKPOINT/mark; {script}"),
            log.to_str().unwrap()
        )
    };
    let tree = tree.file(
        "flaky.ron",
        &task(
            "n=$(cat $PEXEN_CHECKPOINT/n 2>/dev/null || echo 0); echo $((n+1)) > $PEXEN_CHECKPOINT/n; [ $n -ge 2 ]",
            ", retries: 2",
        ),
    );
    let r = run(net, tree.path(), &["--no-local", "--host", "ssh://h1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.finished("flaky")["attempt"], 3);
    assert_eq!(r.of_type("task-retry").len(), 2);
    assert!(!tree.path().join(".pexen/checkpoints/flaky").exists());
    assert!(host_checkpoints(net, "h1", &log).is_empty());

    // A failure keeps it on both sides, with the same content.
    std::fs::remove_file(tree.path().join("flaky.ron")).unwrap();
    let tree = tree.file(
        "fails.ron",
        &task("echo saved > $PEXEN_CHECKPOINT/s; exit 1", ""),
    );
    let r = run(net, tree.path(), &["--no-local", "--host", "ssh://h1"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        std::fs::read_to_string(tree.path().join(".pexen/checkpoints/fails/s")).unwrap(),
        "saved\n"
    );
    let held = host_checkpoints(net, "h1", &log);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].1, ["mark", "s"]);
}

#[test]
fn a_checkpoint_is_removed_on_both_sides_after_a_pass() {
    checkpoint_removed_on_both_sides_after_a_pass(&Net::fake());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_a_checkpoint_is_removed_on_both_sides_after_a_pass() {
    checkpoint_removed_on_both_sides_after_a_pass(&Net::sshd());
}

/// `shared_fs=1`: the host uses the controller's directory as is (same absolute path).
#[test]
fn a_shared_fs_host_uses_the_checkpoint_directory_in_place() {
    let net = Net::fake();
    let tree = shared_tree().file(
        "where.ron",
        r#"(run: Shell("echo $PEXEN_CHECKPOINT > $PEXEN_CHECKPOINT/where; exit 1"))"#,
    );
    let r = run(
        &net,
        tree.path(),
        &["--no-local", "--host", "ssh://h1?shared_fs=1"],
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let dir = tree.path().join(".pexen/checkpoints/where");
    let said = std::fs::read_to_string(dir.join("where")).unwrap();
    assert_eq!(Path::new(said.trim()), dir);
    // No copy of it on the host.
    let copies = net.home("h1").join(".cache/pexen/checkpoints");
    assert_eq!(std::fs::read_dir(&copies).map_or(0, Iterator::count), 0);
}

// ---- exclusivity groups (SPEC 13) ----

/// Checks from the events that groups take turns (brackets), that at most `jobs[group]` of a
/// group and `per_host` on a host run at once; returns the largest number seen at once per
/// group.
fn check_turns(
    r: &RunResult,
    jobs: &HashMap<&str, usize>,
    per_host: usize,
) -> BTreeMap<String, usize> {
    let group_of = |task: &str| match task.split_once('/') {
        Some((g @ ("vm" | "io"), _)) => g.to_string(),
        _ => String::new(),
    };
    let mut most = BTreeMap::new();
    let mut active: Option<String> = None;
    let mut running: HashMap<String, (String, String)> = HashMap::new();
    for e in &r.events {
        let task = e["task"].as_str().unwrap_or("");
        match e["type"].as_str().unwrap() {
            "group-started" => {
                assert!(active.is_none(), "two groups at once: {}", r.stdout);
                assert!(running.is_empty(), "a group starts while tasks run");
                active = Some(e["group"].as_str().unwrap().to_string());
            }
            "group-finished" => {
                assert_eq!(active.as_deref(), e["group"].as_str());
                assert!(running.is_empty(), "a group ends while tasks run");
                active = None;
            }
            "task-started" => {
                let g = group_of(task);
                assert_eq!(active.as_deref(), Some(g.as_str()), "{task} out of turn");
                let host = e["host"].as_str().unwrap().to_string();
                running.insert(task.to_string(), (g.clone(), host.clone()));
                let n = running.values().filter(|(x, _)| *x == g).count();
                assert!(n <= jobs[g.as_str()], "{n} tasks of `{g}` at once");
                let on = running.values().filter(|(_, h)| *h == host).count();
                assert!(on <= per_host, "{on} tasks on {host} at once");
                let m = most.entry(g).or_insert(0);
                *m = (*m).max(n);
            }
            "task-finished" => {
                running.remove(task);
            }
            _ => {}
        }
    }
    assert!(active.is_none(), "the last turn is closed");
    most
}

fn groups_bound_their_attempts_across_hosts(net: &Net) {
    let tree = shared_tree();
    let log = log_dir(&tree);
    // Tasks that wait for each other (a barrier of files outside the tree, given up after
    // 20 s): it passes only if `n` of them really run together.
    let barrier = |set: &str, n: usize| {
        format!(
            r"d={log}/{set}; touch $d-${{PEXEN_TASK##*/}}; i=0; while [ $(ls $d-* | wc -l) -lt {n} ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done; [ $(ls $d-* | wc -l) -ge {n} ]",
            log = log.display()
        )
    };
    let mut tree = tree
        .file(
            "_dir.ron",
            r#"(groups: {"vm": (jobs: 3), "io": (jobs: 1)})"#,
        )
        .file("vm/_dir.ron", r#"(group: "vm")"#)
        .file("io/_dir.ron", r#"(group: "io")"#);
    for i in 0..3 {
        tree = tree
            .file(
                &format!("vm/b{i}.ron"),
                &format!("(run: Shell({:?}))", barrier("vm", 3)),
            )
            .file(&format!("io/t{i}.ron"), r#"(run: Shell("sleep 0.1"))"#);
    }
    for i in 0..2 {
        tree = tree.file(&format!("vm/t{i}.ron"), r#"(run: Shell("true"))"#);
    }
    // Ungrouped tasks may use every slot of the run (4), not the `-j` of this machine.
    for i in 0..4 {
        tree = tree.file(
            &format!("u{i}.ron"),
            &format!("(run: Shell({:?}))", barrier("u", 4)),
        );
    }
    let r = run(
        net,
        tree.path(),
        &[
            "-j",
            "1",
            "--no-local",
            "--host",
            "ssh://h1?jobs=2",
            "--host",
            "ssh://h2?jobs=2",
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let jobs = HashMap::from([("vm", 3), ("io", 1), ("", 4)]);
    let most = check_turns(&r, &jobs, 2);
    // The barriers passed: 3 of `vm` and 4 ungrouped ran at once, over both hosts.
    assert_eq!(most["io"], 1);
    let turns: Vec<&str> = r
        .of_type("group-started")
        .iter()
        .map(|e| e["group"].as_str().unwrap())
        .collect();
    assert_eq!(turns.len(), 3, "one turn each: {turns:?}");
}

#[test]
fn groups_bound_their_attempts_across_hosts_and_hosts_their_own() {
    groups_bound_their_attempts_across_hosts(&Net::fake());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_groups_bound_their_attempts_across_hosts_and_hosts_their_own() {
    groups_bound_their_attempts_across_hosts(&Net::sshd());
}

// ---- the tree sync and .gitignore ----

fn ignored_files_do_not_travel(net: &Net) {
    let tree = shared_tree()
        .file(".gitignore", "target/\n*.big\n")
        .file(
            "a.ron",
            r#"(run: Shell("cat data.txt && test ! -e x.big && test ! -e target/old.bin && mkdir -p target && echo made > target/made.txt"), outputs: ["target/*.txt"])"#,
        )
        .file("data.txt", "one\n");
    let big = vec![7u8; 4 << 20];
    std::fs::create_dir_all(tree.path().join("target")).unwrap();
    std::fs::write(tree.path().join("target/old.bin"), &big).unwrap();
    std::fs::write(tree.path().join("x.big"), &big).unwrap();
    let r = run(net, tree.path(), &["--no-local", "--host", "ssh://h1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    if !net.real {
        // A fresh home: only the two files not ignored travel.
        let c = r.of_type("host-connected")[0];
        assert_eq!(c["files_sent"].as_u64(), Some(2), "{c}");
    }
    // The host's copy of the tree has neither ignored file.
    let mut copies = Vec::new();
    find_dirs(
        &net.home("h1").join(".cache/pexen/trees"),
        "target",
        &mut copies,
    );
    for dir in &copies {
        assert!(!dir.join("old.bin").exists(), "{} was sent", dir.display());
    }
    // Outputs still come back, ignored or not.
    assert_eq!(
        std::fs::read_to_string(tree.path().join("target/made.txt")).unwrap(),
        "made\n"
    );
}

#[test]
fn ignored_files_do_not_travel_to_hosts_and_outputs_still_come_back() {
    ignored_files_do_not_travel(&Net::fake());
}

#[test]
#[ignore = "needs sshd: run .ci/sshd.sh first"]
fn sshd_ignored_files_do_not_travel_to_hosts_and_outputs_still_come_back() {
    ignored_files_do_not_travel(&Net::sshd());
}
