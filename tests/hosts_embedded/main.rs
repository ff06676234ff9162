//! Closures on hosts (SPEC 9): an embedding binary (this test) whose process-pool closures run
//! on a host. The binary is what gets shipped: over ssh it is uploaded into the host's cache
//! and started there with `PEXEN_WORKER=host`, and `serve_if_worker` serves its closures.
//!
//! A `harness = false` binary: `main` first serves as a host worker when started as one. The
//! stand-in ssh (a script that runs the remote command with `sh` under a per-host `HOME`) is
//! always used; the real sshd of `.ci/sshd.sh` too with `--include-ignored` or `--ignored`
//! (as libtest's ignored tests, which `.ci/run` includes).
//!
//! Run: `cargo test --test hosts_embedded`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pexen::host::{HostSpec, HostsConfig};
use pexen::{Event, Outcome, PoolKind, Scheduler, Task, TaskError};

fn tasks() -> Vec<Task> {
    vec![
        Task::closure("make", |ctx| ctx.export("ANSWER", "42")).provides(["made"]),
        Task::closure("where", |ctx| {
            let exe = std::env::current_exe().map_err(|e| TaskError::error(e.to_string()))?;
            ctx.report(
                Outcome::Pass,
                format!("pid={} exe={}", std::process::id(), exe.display()),
            );
            if ctx.get::<String>("ANSWER")?.as_deref() == Some("42") {
                Ok(())
            } else {
                Err(TaskError::fail("the export of `make` did not arrive"))
            }
        })
        .requires(["made"]),
        Task::closure("fails", |_| Err(TaskError::fail("as it should"))),
        Task::closure("panics", |_| panic!("boom on the host")),
        Task::closure("here", |ctx| {
            ctx.report(Outcome::Pass, format!("pid={}", std::process::id()));
            Ok(())
        })
        .pool(PoolKind::Threads),
    ]
}

/// Closures that use their checkpoint (SPEC 12): `twice` fails on its first attempt after
/// saving, and passes on the next only if it finds what it saved; `keeps` always fails after
/// saving, so its checkpoint must come back here.
fn checkpoint_tasks() -> Vec<Task> {
    let step = |ctx: &pexen::Context| -> Result<String, TaskError> {
        let dir = ctx
            .checkpoint()
            .ok_or_else(|| TaskError::error("no checkpoint directory"))?;
        let n = std::fs::read_to_string(dir.join("n")).unwrap_or_default();
        std::fs::write(dir.join("n"), format!("{n}x"))
            .map_err(|e| TaskError::error(e.to_string()))?;
        Ok(n)
    };
    vec![
        Task::closure("twice", move |ctx| match step(ctx)?.as_str() {
            "x" => Ok(()),
            n => Err(TaskError::fail(format!("found `{n}`"))),
        })
        .retries(1),
        Task::closure("keeps", move |ctx| {
            step(ctx)?;
            Err(TaskError::fail("keeps its checkpoint"))
        }),
    ]
}

fn main() {
    pexen::worker::serve_if_worker(|| {
        let mut all = tasks();
        all.extend(checkpoint_tasks());
        all
    });
    let mut nets = vec![("stand-in ssh", fake_ssh())];
    if std::env::args().any(|a| a == "--include-ignored" || a == "--ignored") {
        nets.push(("sshd", real_ssh()));
    } else {
        println!("test closures_on_an_ssh_host [sshd] ... ignored, needs sshd: run .ci/sshd.sh first (then --include-ignored)");
    }
    for (label, (ssh, _dir)) in nets {
        closures_run_on_the_host(&ssh);
        println!("test closures_on_an_ssh_host [{label}] ... ok");
        closures_get_their_checkpoints_on_the_host(&ssh);
        println!("test closures_get_their_checkpoints_on_an_ssh_host [{label}] ... ok");
    }
    println!("\ntest result: ok.");
}

/// The stand-in ssh: `sh` under a per-host HOME (the bootstrap, upload, protocol are real).
fn fake_ssh() -> (String, Option<tempfile::TempDir>) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fake-ssh");
    let homes = dir.path().join("homes");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -o|-p|-l|-e|-F|-i) shift 2;; -*) shift;; *) break;; esac; done
host=$1; shift
export HOME="{}/home${{host#h}}"; mkdir -p "$HOME"
exec sh -c "$*"
"#,
            homes.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script.display().to_string(), Some(dir))
}

fn real_ssh() -> (String, Option<tempfile::TempDir>) {
    let dir = std::env::var_os("PEXEN_TEST_SSH_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-sshd"),
        PathBuf::from,
    );
    let config = dir.join("ssh_config");
    assert!(
        config.is_file(),
        "{} is missing: run .ci/sshd.sh first (as root)",
        config.display()
    );
    (format!("ssh -F {}", config.display()), None)
}

fn closures_run_on_the_host(ssh: &str) {
    // The ssh command is read from the environment, as `GIT_SSH_COMMAND` is.
    std::env::set_var(pexen::host::SSH_ENV, ssh);
    let hosts = HostsConfig {
        hosts: vec![HostSpec::parse("ssh://h1?jobs=2").unwrap()],
        no_local: false,
        tree: None,
        tls: None,
        pilots: None,
        connecting: pexen::host::Connecting::default(),
    };
    let events: Vec<Event> = Scheduler::builder()
        .jobs(1)
        .default_pool(PoolKind::Processes)
        .hosts(hosts)
        .build()
        .run(tasks())
        .unwrap()
        .collect();
    let mut finished = BTreeMap::new();
    let mut results = BTreeMap::new();
    let mut connected = 0;
    for e in &events {
        match e {
            Event::TaskFinished(f) => {
                finished.insert(
                    f.task.to_string(),
                    (
                        f.outcome,
                        f.host.as_deref().unwrap_or("").to_string(),
                        f.message.clone(),
                    ),
                );
            }
            Event::TaskResult { task, message, .. } => {
                results.insert(task.to_string(), message.clone());
            }
            Event::HostConnected { .. } => connected += 1,
            _ => {}
        }
    }
    assert_eq!(connected, 1, "{events:?}");
    let outcome = |t: &str| finished[t].0;
    let host = |t: &str| finished[t].1.clone();
    assert_eq!(outcome("make"), Outcome::Pass, "{:?}", finished["make"]);
    assert_eq!(outcome("where"), Outcome::Pass, "{:?}", finished["where"]);
    assert_eq!(outcome("fails"), Outcome::Fail);
    assert_eq!(outcome("panics"), Outcome::Error);
    assert!(
        finished["panics"]
            .2
            .as_deref()
            .unwrap_or("")
            .contains("boom on the host"),
        "{:?}",
        finished["panics"]
    );
    // Thread-pool closures share the embedder's memory: they run here.
    assert_eq!(host("here"), "local");
    let me = format!("pid={}", std::process::id());
    assert_eq!(results["here"], me);
    // Process-pool closures with local jobs busy may run here or on h1; with no local, on h1.
    let where_ran = &results["where"];
    if host("where") == "h1" {
        assert!(!where_ran.starts_with(&format!("{me} ")), "{where_ran}");
        assert!(
            where_ran.contains("/.cache/pexen/bin/"),
            "the shipped binary serves it: {where_ran}"
        );
    }
    // All on the host.
    let hosts = HostsConfig {
        hosts: vec![HostSpec::parse("ssh://h1?jobs=2").unwrap()],
        no_local: true,
        tree: None,
        tls: None,
        pilots: None,
        connecting: pexen::host::Connecting::default(),
    };
    let only_pool: Vec<Task> = tasks()
        .into_iter()
        .filter(|t| t.name.as_str() != "here")
        .collect();
    let events: Vec<Event> = Scheduler::builder()
        .default_pool(PoolKind::Processes)
        .hosts(hosts)
        .build()
        .run(only_pool)
        .unwrap()
        .collect();
    let mut seen = 0;
    for e in &events {
        if let Event::TaskFinished(f) = e {
            assert_eq!(f.host.as_deref(), Some("h1"), "{f:?}");
            seen += 1;
        }
        if let Event::TaskResult { message, .. } = e {
            assert!(message.contains("/.cache/pexen/bin/"), "{message}");
            assert!(!message.starts_with(&format!("{me} ")), "{message}");
        }
    }
    assert_eq!(seen, 4, "{events:?}");
}

fn closures_get_their_checkpoints_on_the_host(ssh: &str) {
    std::env::set_var(pexen::host::SSH_ENV, ssh);
    let state = tempfile::tempdir().unwrap();
    let checkpoints = pexen::state::checkpoint::Checkpoints::in_state_dir(state.path());
    let hosts = HostsConfig {
        hosts: vec![HostSpec::parse("ssh://h1?jobs=2").unwrap()],
        no_local: true,
        tree: None,
        tls: None,
        pilots: None,
        connecting: pexen::host::Connecting::default(),
    };
    let events: Vec<Event> = Scheduler::builder()
        .default_pool(PoolKind::Processes)
        .checkpoints(checkpoints.clone())
        .hosts(hosts)
        .build()
        .run(checkpoint_tasks())
        .unwrap()
        .collect();
    let mut finished = BTreeMap::new();
    for e in &events {
        if let Event::TaskFinished(f) = e {
            assert_eq!(f.host.as_deref(), Some("h1"), "{f:?}");
            finished.insert(f.task.to_string(), (f.outcome, f.attempt));
        }
    }
    assert_eq!(finished["twice"], (Outcome::Pass, 2), "{events:?}");
    assert_eq!(finished["keeps"].0, Outcome::Fail, "{events:?}");
    // What `keeps` saved on the host came back here.
    let kept = checkpoints.dir(&pexen::TaskName::new("keeps"));
    assert_eq!(std::fs::read_to_string(kept.join("n")).unwrap(), "x");
}
