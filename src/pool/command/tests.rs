//! Tests with real processes (`/bin/sh` scripts) in temp dirs. No wall-clock assertions: waits
//! are bounded polls for files that the scripts or the sinks create.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::task::Run;

/// Records results; creates `marker` when a result with message `step1` arrives.
#[derive(Default)]
struct Sink {
    results: Mutex<Vec<(Outcome, String)>>,
    marker: Option<PathBuf>,
}

impl ResultSink for Sink {
    fn result(&self, status: Outcome, message: String) {
        if let (Some(marker), "step1") = (&self.marker, message.as_str()) {
            fs::write(marker, b"").unwrap();
        }
        self.results.lock().unwrap().push((status, message));
    }
}

impl Sink {
    fn taken(&self) -> Vec<(Outcome, String)> {
        std::mem::take(&mut *self.results.lock().unwrap())
    }
}

fn runner() -> CommandRunner {
    CommandRunner::new(CommandConfig::default()).unwrap()
}

fn shell(script: &str, cwd: &Path) -> CommandSpec {
    let mut spec = CommandSpec::new(Run::Shell(script.to_owned()));
    spec.cwd = Some(cwd.to_owned());
    spec
}

fn run_with(
    runner: &CommandRunner,
    spec: &CommandSpec,
    timeout: Option<Duration>,
    sink: &Sink,
) -> Attempt {
    runner.run(CommandJob {
        task: &TaskName::new("t/one"),
        attempt: 1,
        spec,
        shared: &Shared::new(),
        timeout,
        checkpoint: None,
        sink,
        host: "local",
    })
}

fn run_sh(script: &str) -> Attempt {
    let dir = tempfile::tempdir().unwrap();
    run_with(
        &runner(),
        &shell(script, dir.path()),
        None,
        &Sink::default(),
    )
}

/// Waits (bounded) for a file a script writes, and returns its trimmed content.
fn wait_for(path: &Path) -> String {
    for _ in 0..2000 {
        if let Ok(text) = fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text.trim().to_owned();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never appeared", path.display());
}

fn pid_in(path: &Path) -> i32 {
    wait_for(path).parse().unwrap()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn runner_is_shared_by_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CommandRunner>();
}

#[test]
fn exit_statuses_map_to_outcomes() {
    let a = run_sh("exit 0");
    assert_eq!(
        (a.outcome, a.exit_code, a.message, a.output),
        (Outcome::Pass, Some(0), None, None)
    );
    let a = run_sh("exit 77");
    assert_eq!((a.outcome, a.exit_code), (Outcome::Skip, Some(77)));
    assert!(!a.suspend);
    let a = run_sh("exit 75");
    assert_eq!(
        (a.outcome, a.exit_code, a.suspend),
        (Outcome::Skip, Some(75), true)
    );
    assert_eq!(a.message.as_deref(), Some("exit code 75"));
    let a = run_sh("exit 3");
    assert_eq!((a.outcome, a.exit_code), (Outcome::Fail, Some(3)));
    assert_eq!(a.message.as_deref(), Some("exit code 3"));
    let a = run_sh("kill -SEGV $$");
    assert_eq!((a.outcome, a.exit_code), (Outcome::Error, None));
    assert_eq!(a.message.as_deref(), Some("killed by signal SIGSEGV"));
    assert!(a.duration > Duration::ZERO);
}

#[test]
fn start_failures_name_program_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::default();
    let mut spec = CommandSpec::new(Run::Cmd(vec!["./nope".into()]));
    spec.cwd = Some(dir.path().to_owned());
    let a = run_with(&runner(), &spec, None, &sink);
    assert_eq!(a.outcome, Outcome::Error);
    assert_eq!(
        a.message.as_deref(),
        Some("cannot start ./nope: No such file or directory")
    );

    for (script, why) in [
        (
            "#!/no/such/sh\ntrue\n",
            "bad interpreter `/no/such/sh`: no such file",
        ),
        (
            "#!/bin/sh\r\ntrue\r\n",
            "bad interpreter `/bin/sh\\r`: the script has Windows line endings (CRLF)",
        ),
    ] {
        let path = dir.path().join("script");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        spec.run = Run::Cmd(vec!["./script".into()]);
        let a = run_with(&runner(), &spec, None, &sink);
        assert_eq!(a.outcome, Outcome::Error);
        assert_eq!(
            a.message.as_deref(),
            Some(format!("cannot start ./script: {why}").as_str())
        );
    }

    spec.run = Run::Cmd(vec!["/bin/true".into()]);
    spec.cwd = Some(dir.path().join("missing"));
    let a = run_with(&runner(), &spec, None, &sink);
    assert_eq!(a.outcome, Outcome::Error);
    let message = a.message.unwrap();
    assert!(
        message.starts_with("cannot start /bin/true in "),
        "{message}"
    );

    spec.run = Run::Cmd(Vec::new());
    assert_eq!(
        run_with(&runner(), &spec, None, &sink).outcome,
        Outcome::Error
    );
}

#[test]
fn environment_has_pexen_vars_shared_pairs_then_own_env() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = shell(
        r#"[ -n "$PEXEN_RESULTS" ] && [ ! -e "$PEXEN_RESULTS" ] && [ -n "$PEXEN_EXPORT" ] || exit 9
printf '%s|' "$PEXEN_TASK" "$PEXEN_ATTEMPT" "$S" "$N" "$O" "$(pwd -P)" "$PEXEN_CHECKPOINT""#,
        dir.path(),
    );
    spec.env = BTreeMap::from([("O".into(), "own".into())]);
    let shared = Shared::from([
        ("S".into(), "text".into()),
        ("N".into(), serde_json::json!(42)),
        ("O".into(), "shared".into()),
    ]);
    let a = runner().run(CommandJob {
        task: &TaskName::new("net/tcp"),
        attempt: 3,
        spec: &spec,
        shared: &shared,
        timeout: None,
        checkpoint: Some(Path::new("/state/checkpoints/net%2Ftcp")),
        sink: &Sink::default(),
        host: "local",
    });
    assert_eq!(a.outcome, Outcome::Pass, "{a:?}");
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(
        a.output.unwrap().stdout,
        format!(
            "net/tcp|3|text|42|own|{}|/state/checkpoints/net%2Ftcp|",
            cwd.display()
        )
    );
}

#[test]
fn results_stream_while_the_task_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("seen");
    // The task passes only if the sink saw its first result before it exits.
    let script = r#"echo "pass step1" >> "$PEXEN_RESULTS"
i=0
while [ ! -e seen ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
[ -e seen ]"#;
    let sink = Sink {
        marker: Some(marker),
        ..Sink::default()
    };
    let a = run_with(&runner(), &shell(script, dir.path()), None, &sink);
    assert_eq!(a.outcome, Outcome::Pass, "{a:?}");
    assert_eq!(sink.taken(), [(Outcome::Pass, "step1".to_owned())]);
}

#[test]
fn several_results_and_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"printf 'pass a\n\nwarn disk almost full\nbogus line\nskip\nfail last' >> "$PEXEN_RESULTS""#;
    let sink = Sink::default();
    let a = run_with(&runner(), &shell(script, dir.path()), None, &sink);
    assert_eq!(a.outcome, Outcome::Pass);
    let got = sink.taken();
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[0], (Outcome::Pass, "a".into()));
    assert_eq!(got[1], (Outcome::Warn, "disk almost full".into()));
    assert_eq!(got[2].0, Outcome::Error);
    assert!(
        got[2].1.starts_with("malformed result line `bogus line`"),
        "{}",
        got[2].1
    );
    assert_eq!(got[3], (Outcome::Skip, String::new()));
    assert_eq!(got[4], (Outcome::Fail, "last".into()));
}

#[test]
fn exports_are_read_after_exit() {
    let a = run_sh(r#"printf 'PORT=8080\nURL=http://x/?a=b\n' >> "$PEXEN_EXPORT""#);
    assert_eq!(a.outcome, Outcome::Pass);
    assert_eq!(a.exports["PORT"], "8080");
    assert_eq!(a.exports["URL"], "http://x/?a=b");

    let a = run_sh(r#"printf 'PORT=8080\nnot an export\n' >> "$PEXEN_EXPORT""#);
    assert_eq!(a.outcome, Outcome::Error);
    let message = a.message.unwrap();
    assert!(message.contains("malformed export line 2"), "{message}");

    let a = run_sh(r#"echo junk >> "$PEXEN_EXPORT"; exit 4"#);
    assert_eq!((a.outcome, a.exit_code), (Outcome::Error, Some(4)));
    assert!(a
        .message
        .unwrap()
        .starts_with("exit code 4; malformed export line 1"));
}

#[test]
fn output_is_captured_per_stream_with_head_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let runner = CommandRunner::new(CommandConfig {
        output_cap: 10,
        ..CommandConfig::default()
    })
    .unwrap();
    let spec = shell(
        "printf abcdefghijklmnopqrstuvwxyz; printf 'err\\n' >&2; exit 1",
        dir.path(),
    );
    let a = run_with(&runner, &spec, None, &Sink::default());
    assert_eq!(a.outcome, Outcome::Fail);
    let output = a.output.unwrap();
    assert_eq!(output.stdout, "abcde\n[... 16 bytes omitted ...]\nvwxyz");
    assert_eq!(output.stderr, "err\n");
}

#[test]
fn timeout_kills_the_group_after_grace_even_if_term_is_trapped() {
    let dir = tempfile::tempdir().unwrap();
    let runner = CommandRunner::new(CommandConfig {
        grace: Duration::from_millis(200),
        ..CommandConfig::default()
    })
    .unwrap();
    // Both the task and its grandchild ignore SIGTERM: only SIGKILL ends them.
    let script = r"echo $$ > leader.pid
trap '' TERM
sh -c 'echo $$ > child.pid; while :; do sleep 0.05; done' &
while :; do sleep 0.05; done";
    let a = run_with(
        &runner,
        &shell(script, dir.path()),
        Some(Duration::from_secs(1)),
        &Sink::default(),
    );
    assert_eq!(a.outcome, Outcome::Timeout);
    assert_eq!(a.message.as_deref(), Some("timed out after 1s"));
    let leader = pid_in(&dir.path().join("leader.pid"));
    let child = pid_in(&dir.path().join("child.pid"));
    assert!(!alive(leader), "the task survived");
    assert!(!alive(child), "the grandchild survived");
}

#[test]
fn daemons_that_left_the_group_die_with_the_runner() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner();
    let script = r"setsid sh -c 'echo $$ > daemon.pid; exec sleep 1000' &
sleep 1000 &
echo $! > job.pid";
    let a = run_with(&runner, &shell(script, dir.path()), None, &Sink::default());
    assert_eq!(a.outcome, Outcome::Pass);
    let daemon = pid_in(&dir.path().join("daemon.pid"));
    let job = pid_in(&dir.path().join("job.pid"));
    assert!(alive(daemon) && alive(job), "the test needs them running");
    // SAFETY: getsid only reads.
    assert_ne!(
        unsafe { libc::getsid(daemon) },
        unsafe { libc::getsid(0) },
        "not a daemon"
    );
    drop(runner);
    assert!(!alive(daemon), "the setsid daemon survived");
    assert!(!alive(job), "the background job survived");
}

#[test]
fn terminate_all_ends_running_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner();
    let spec = shell("echo > started; exec sleep 1000", dir.path());
    let sink = Sink::default();
    std::thread::scope(|s| {
        let running = s.spawn(|| run_with(&runner, &spec, None, &sink));
        wait_for(&dir.path().join("started"));
        runner.terminate_all();
        let a = running.join().unwrap();
        assert_eq!(
            (a.outcome, a.message.as_deref()),
            (Outcome::Error, Some(INTERRUPTED))
        );
    });
    // Nothing new starts once cancelled.
    let a = run_with(&runner, &shell("echo > again", dir.path()), None, &sink);
    assert_eq!(a.outcome, Outcome::Error);
    assert!(!dir.path().join("again").exists());
}

#[test]
fn kill_all_ends_attempts_that_ignore_term() {
    let dir = tempfile::tempdir().unwrap();
    let runner = CommandRunner::new(CommandConfig {
        grace: Duration::from_secs(1000),
        ..CommandConfig::default()
    })
    .unwrap();
    let spec = shell(
        "trap '' TERM; echo $$ > started; while :; do sleep 0.05; done",
        dir.path(),
    );
    let sink = Sink::default();
    std::thread::scope(|s| {
        let running = s.spawn(|| run_with(&runner, &spec, None, &sink));
        let pid = pid_in(&dir.path().join("started"));
        runner.terminate_all();
        runner.kill_all();
        let a = running.join().unwrap();
        assert_eq!(
            (a.outcome, a.message.as_deref()),
            (Outcome::Error, Some(INTERRUPTED))
        );
        assert!(!alive(pid));
    });
}

/// Whether `pid` is a zombie (exited, not reaped); false once it is gone.
fn zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn a_daemon_killed_by_a_cancel_is_reaped_not_left_a_zombie() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner();
    // The daemon leads its own session and group: only its environment marks it as a task's.
    let script = r"setsid sh -c 'echo $$ > daemon.pid; exec sleep 1000' &
while [ ! -s daemon.pid ]; do sleep 0.01; done";
    let a = run_with(&runner, &shell(script, dir.path()), None, &Sink::default());
    assert_eq!(a.outcome, Outcome::Pass);
    let daemon = pid_in(&dir.path().join("daemon.pid"));
    runner.terminate_all();
    // The cancel signalled it; it dies and waits for us to reap it, its environment unreadable.
    for _ in 0..2000 {
        if zombie(daemon) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(zombie(daemon), "the cancel did not end the daemon");
    drop(runner);
    assert!(!alive(daemon), "the daemon was left a zombie");
}
