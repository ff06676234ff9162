//! Checkpoints and suspend on real trees (SPEC section 12, issue #14): a counting task killed by
//! Ctrl-C, `kill -9` of pexen and timeouts never restarts from zero; a suite whose middle task
//! "reboots" (exit 75, then a fresh pexen with `--resume`) runs every task once and the
//! suspended one twice; running tasks finish while nothing new starts.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;

use common::{alive, wait_for_pid, RunResult, Tree};

/// Lines of `runs.log` per task name (each task appends its name once per run of it).
fn run_counts(log: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *counts.entry(line.to_string()).or_default() += 1;
    }
    counts
}

fn wait(child: Child) -> RunResult {
    RunResult::new(child.wait_with_output().expect("wait for pexen"))
}

/// Counts to 4, one step per attempt. Each attempt logs the value it found in its checkpoint,
/// saves the next one (atomically: a kill never leaves half a file), writes its pid to `pid`
/// and waits to be killed; the attempt that reaches 4 passes.
const COUNTER: &str = r#"cp="$PEXEN_CHECKPOINT"
[ -d "$cp" ] || exit 9
n=$(cat "$cp/count" 2>/dev/null || echo 0)
echo "$n" >> found.log
n=$((n + 1))
echo "$n" > "$cp/count.tmp" && mv "$cp/count.tmp" "$cp/count"
if [ "$n" -ge 4 ]; then echo "$n" > result; exit 0; fi
echo $$ > pid.tmp && mv pid.tmp pid
exec sleep 1000"#;

#[test]
fn a_counting_task_survives_ctrl_c_kill_9_and_timeouts_without_restarting_from_zero() {
    let t = Tree::new().script("count.sh", COUNTER);
    let checkpoint = t.path().join(".pexen/checkpoints/count.sh");
    let pid = t.path().join("pid");
    let saved = || std::fs::read_to_string(checkpoint.join("count")).unwrap();

    // Ctrl-C while it waits after saving 1: interrupted, the checkpoint stays.
    let child = t.spawn(&[]);
    let task = wait_for_pid(&pid);
    assert_eq!(saved(), "1\n");
    // SAFETY: kill(2) touches no memory.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let r = wait(child);
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert_eq!(r.outcome("count.sh"), "error");
    assert!(!alive(task), "the task was stopped");
    assert_eq!(saved(), "1\n");
    let journal = std::fs::read(t.path().join(".pexen/journal")).unwrap();
    let journal = String::from_utf8_lossy(&journal);
    assert!(
        journal.contains(r#""checkpoint":true"#),
        "journaled: {journal}"
    );

    // `kill -9` of pexen while it waits after saving 2: the task is orphaned; end it as the
    // machine's reboot would.
    std::fs::remove_file(&pid).unwrap();
    let mut child = t.spawn(&["--resume", "--explain"]);
    let task = wait_for_pid(&pid);
    assert_eq!(saved(), "2\n");
    child.kill().unwrap();
    let r = wait(child);
    assert!(
        r.stderr
            .contains("run count.sh: last outcome was error; resumes from its checkpoint"),
        "{}",
        r.stderr
    );
    // SAFETY: as above; the task leads its own process group.
    unsafe { libc::kill(-task, libc::SIGKILL) };

    // Timeouts: attempt 1 saves 3 and is killed by its timeout, attempt 2 reaches 4.
    let r = t.run(&["--resume", "--timeout", "1s", "--retries", "3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let f = r.finished("count.sh");
    assert_eq!((&f["outcome"], &f["attempt"]), (&"pass".into(), &2.into()));
    assert_eq!(r.of_type("task-retry")[0]["outcome"], "timeout");

    let found = std::fs::read_to_string(t.path().join("found.log")).unwrap();
    assert_eq!(found.lines().collect::<Vec<_>>(), ["0", "1", "2", "3"]);
    assert_eq!(
        std::fs::read_to_string(t.path().join("result")).unwrap(),
        "4\n"
    );
    assert!(!checkpoint.exists(), "removed once the task passed");
}

#[test]
fn a_plain_run_starts_from_empty_checkpoints() {
    let t = Tree::new().script(
        "save.sh",
        r#"ls "$PEXEN_CHECKPOINT" >> found.log; touch "$PEXEN_CHECKPOINT/mark"; exit 1"#,
    );
    assert_eq!(t.run(&[]).code, 1);
    assert_eq!(t.run(&["--resume"]).code, 1);
    assert_eq!(t.run(&[]).code, 1);
    let found = std::fs::read_to_string(t.path().join("found.log")).unwrap();
    // Nothing, then the mark kept by --resume, then nothing again.
    assert_eq!(found.lines().collect::<Vec<_>>(), ["mark"]);
    assert!(t.path().join(".pexen/checkpoints/save.sh/mark").exists());
}

/// `setup` -> `reboot` -> `check`, and `flaky` (best priority) failing once. `reboot` exits 75
/// the first time, after saving its checkpoint, and passes when it finds it (as a test that
/// reboots the machine would).
fn reboot_suite() -> Tree {
    Tree::new()
        .file(
            "setup.ron",
            r#"(run: Shell("echo setup >> runs.log"), provides: ["setup"])"#,
        )
        .file(
            "reboot.body",
            r#"echo reboot >> runs.log
if [ -e "$PEXEN_CHECKPOINT/before-boot" ]; then exit 0; fi
touch "$PEXEN_CHECKPOINT/before-boot"
exit 75
"#,
        )
        .file(
            "reboot.ron",
            r#"(run: Shell("sh ./reboot.body"), requires: ["setup"], provides: ["rebooted"])"#,
        )
        .file(
            "check.ron",
            r#"(run: Shell("echo check >> runs.log"), requires: ["rebooted"])"#,
        )
        .file(
            "flaky.ron",
            r#"(run: Shell("echo flaky >> runs.log; [ -e flaked ] || { touch flaked; exit 1; }"), priority: -10)"#,
        )
}

#[test]
fn a_suite_that_reboots_in_the_middle_runs_every_task_once_and_the_rebooting_one_twice() {
    let t = reboot_suite();
    let junit = t.path().join("junit.xml");
    let r = t.run(&["-j", "1", "--junit", &junit.to_string_lossy()]);
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(
            r#"<skipped message="suspended (exit code 75): continue the run with --resume"/>"#
        ),
        "{xml}"
    );
    let suspended = r.of_type("task-suspended");
    assert_eq!(suspended.len(), 1);
    assert_eq!(suspended[0]["task"], "reboot");
    assert_eq!(suspended[0]["message"], "exit code 75");
    let f = r.finished("reboot");
    assert_eq!(
        (&f["outcome"], &f["exit_code"]),
        (&"skip".into(), &75.into())
    );
    assert!(f["cause"]
        .as_str()
        .unwrap()
        .starts_with("suspended (exit code 75)"));
    assert_eq!(
        r.finished("check")["cause"],
        "required token `rebooted` is not available: `reboot` was suspended"
    );
    assert_eq!(r.outcome("flaky"), "fail");
    // What to run next, last.
    let next = r.events.last().unwrap();
    assert_eq!(next["type"], "run-suspended");
    assert_eq!(next["tasks"], serde_json::json!(["reboot"]));
    let resume = next["resume"].as_str().unwrap();
    assert!(
        resume.starts_with("pexen run ") && resume.ends_with(" --resume"),
        "{resume}"
    );
    // The tests' state, TREE/.pexen, is the default one (in the tree): no `--state` needed.
    assert!(!resume.contains("--state"), "{resume}");

    // After the "boot": a fresh pexen continues, the suspended task first, whatever priorities.
    let r = t.run(&["-j", "1", "--resume", "--explain"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.started(), ["reboot", "flaky", "check"]);
    assert_eq!(r.finished("setup")["resumed"], true);
    assert!(
        r.stderr.contains(
            "run reboot: it suspended the last run; it runs first; resumes from its checkpoint"
        ),
        "{}",
        r.stderr
    );
    let counts = run_counts(&t.path().join("runs.log"));
    let expected: BTreeMap<String, usize> =
        [("setup", 1), ("reboot", 2), ("check", 1), ("flaky", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    assert_eq!(counts, expected);
    assert!(!t.path().join(".pexen/checkpoints/reboot").exists());
}

#[test]
fn running_tasks_finish_after_a_suspend_and_nothing_new_starts() {
    // `slow` ends only once the journal holds the suspended record: pexen has taken the
    // suspension into account while `slow` still runs. `later` must then never start.
    let t = Tree::new()
        .script("a-suspend.sh", "exit 75")
        .script(
            "b-slow.sh",
            r#"until grep -q '"suspended":true' .pexen/journal; do sleep 0.01; done"#,
        )
        .file("later.ron", r#"(run: Shell("true"), priority: 10)"#);
    let r = t.run(&["-j", "2"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_eq!(r.outcome("b-slow.sh"), "pass");
    assert_eq!(r.started(), ["a-suspend.sh", "b-slow.sh"]);
    assert_eq!(
        r.finished("later")["cause"],
        "not run: the run was suspended by `a-suspend.sh`"
    );
    assert!(r.index("task-finished", "b-slow.sh") > r.index("task-suspended", "a-suspend.sh"));
}

#[test]
fn the_human_display_says_the_run_was_suspended_and_what_to_run_next() {
    let t = Tree::new().script("boot.sh", "exit 75");
    let out = t.cmd("run", &["--state", &t.path().join("st").to_string_lossy()]);
    assert_eq!(out.status.code(), Some(4));
    // The human report is on stderr (doc/display.md).
    let stdout = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("SUSPEND"), "{stdout}");
    assert!(
        stdout.contains("The run was suspended by `boot.sh`"),
        "{stdout}"
    );
    let hint = format!(
        "pexen run {} --state {} --resume",
        t.path().display(),
        t.path().join("st").display()
    );
    assert!(stdout.contains(&hint), "{stdout}");
}

// --- closures, through the library ------------------------------------------------------------

mod closures {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use pexen::state::RunJournal;
    use pexen::{Event, Outcome, Scheduler, Task, TaskError};

    /// A closure counting to 3 in its checkpoint, one step per attempt: it fails, then
    /// suspends the run, then passes. `calls` counts its attempts.
    fn counter(calls: Arc<AtomicU32>) -> Task {
        Task::closure("count", move |ctx| {
            calls.fetch_add(1, Ordering::SeqCst);
            let dir = ctx.checkpoint().expect("a journaled run has checkpoints");
            let file = dir.join("n");
            let n: u32 = std::fs::read_to_string(&file).map_or(0, |s| s.parse().unwrap());
            std::fs::write(&file, (n + 1).to_string())?;
            match n + 1 {
                1 => Err(TaskError::fail("step 1 fails")),
                2 => Err(TaskError::suspend("rebooting after step 2")),
                _ => Ok(()),
            }
        })
        .retries(5)
    }

    fn run(state: &std::path::Path, resume: bool, calls: &Arc<AtomicU32>) -> Vec<Event> {
        let tasks = vec![
            counter(calls.clone()),
            Task::closure("other", |_| Ok(())).priority(5),
        ];
        let mut journal = RunJournal::open(state, &tasks, resume).unwrap();
        let events: Vec<Event> = Scheduler::builder()
            .jobs(1)
            .journal(&mut journal)
            .build()
            .run(tasks)
            .unwrap()
            .collect();
        journal.finish().unwrap();
        events
    }

    #[test]
    fn a_closure_keeps_its_checkpoint_across_retries_and_a_suspend() {
        let state = tempfile::tempdir().unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let events = run(state.path(), false, &calls);
        // Attempt 1 failed and was retried; attempt 2 suspended the run: no third attempt.
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(events.iter().any(|e| matches!(
            e,
            Event::TaskSuspended { task, attempt: 2, message: Some(m) }
                if task.as_str() == "count" && m == "rebooting after step 2"
        )));
        let other = events.iter().find_map(|e| match e {
            Event::TaskFinished(f) if f.task.as_str() == "other" => Some(f.clone()),
            _ => None,
        });
        assert_eq!(other.unwrap().outcome, Outcome::Skip);

        let events = run(state.path(), true, &calls);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "one more attempt, from step 2"
        );
        let finished: Vec<(String, Outcome)> = events
            .iter()
            .filter_map(|e| match e {
                Event::TaskFinished(f) => Some((f.task.to_string(), f.outcome)),
                _ => None,
            })
            .collect();
        assert_eq!(
            finished,
            [
                ("count".into(), Outcome::Pass),
                ("other".into(), Outcome::Pass)
            ]
        );
        assert!(!state.path().join("checkpoints/count").exists());
    }
}

#[test]
fn the_journal_says_which_tasks_hold_a_checkpoint() {
    // `x` (first by priority) logs what its checkpoint holds, saves and fails; `boot` suspends
    // the first two runs. On the first resume `x` is skipped without running: its record still
    // says it holds its checkpoint, which the next resume finds.
    let t = Tree::new()
        .file(
            "x.ron",
            r#"(run: Shell("ls \"$PEXEN_CHECKPOINT\" >> found.log; touch \"$PEXEN_CHECKPOINT/mark\"; exit 1"), priority: -1)"#,
        )
        .file(
            "boot.ron",
            r#"(run: Shell("echo >> boots; [ $(wc -l < boots) -gt 2 ] || exit 75"))"#,
        );
    let latest = |name: &str| {
        let loaded = pexen::state::Journal::load(&t.path().join(".pexen")).unwrap();
        let r = loaded
            .records()
            .filter(|r| r.name.as_str() == name)
            .last()
            .cloned();
        r.unwrap()
    };
    let r = t.run(&["-j", "1"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_eq!(r.started(), ["x", "boot"]);
    assert!(latest("boot").suspended && !latest("boot").checkpoint);
    assert!(latest("x").checkpoint && latest("x").attempt == 1);

    let r = t.run(&["-j", "1", "--resume"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_eq!(r.started(), ["boot"]);
    let x = latest("x");
    assert!(x.checkpoint && x.attempt == 0 && x.cause.is_some(), "{x:?}");

    let r = t.run(&["-j", "1", "--resume"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.started(), ["boot", "x"]);
    assert!(!latest("boot").suspended);
    let found = std::fs::read_to_string(t.path().join("found.log")).unwrap();
    assert_eq!(found.lines().collect::<Vec<_>>(), ["mark"]);
}

#[test]
fn passed_tasks_leave_no_directory_and_a_resume_removes_stale_ones() {
    let mut t = Tree::new();
    for i in 0..20 {
        t = t.file(&format!("t{i:02}.ron"), r#"(run: Shell("true"))"#);
    }
    let t = t.file(
        "saver.ron",
        r#"(run: Shell("touch \"$PEXEN_CHECKPOINT/x\""))"#,
    );
    assert_eq!(t.run(&["-j", "2"]).code, 0);
    let root = t.path().join(".pexen/checkpoints");
    let left = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert!(left().is_empty(), "{:?}", left());
    // As if pexen had been killed between journaling `t03`'s pass and removing its directory.
    std::fs::create_dir_all(root.join("t03")).unwrap();
    std::fs::write(root.join("t03/stale"), "").unwrap();
    let r = t.run(&["--resume", "--explain"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.finished("t03")["resumed"], true);
    assert!(r.stderr.contains("resume t03: unchanged"), "{}", r.stderr);
    assert!(left().is_empty(), "{:?}", left());
}

#[test]
fn the_long_factory_suspends_then_resumes() {
    let state = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = common::pexen()
            .arg("run")
            .arg(common::factory("long"))
            .args(["--message-format", "json", "--state"])
            .arg(state.path())
            .args(extra)
            .output()
            .unwrap();
        RunResult::new(out)
    };
    let r = run(&[]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_eq!(r.of_type("task-suspended")[0]["task"], "reboot");
    let r = run(&["--resume"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for task in ["setup", "reboot", "after-boot", "soak"] {
        assert_eq!(r.outcome(task), "pass", "{task}");
    }
    assert_eq!(r.finished("reboot")["resumed"], false);
}
