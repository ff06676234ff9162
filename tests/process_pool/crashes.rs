//! Crash isolation of the process pool: a task that panics, aborts, segfaults, exits or hangs is
//! that task's `error` (or `timeout`), its worker is replaced, and the run goes on.

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

use pexen::{Outcome, PoolKind, Task, TaskError};

use crate::support::{message, outcome, results, run_outcome, Env};

type Check = fn(&Env);

pub(crate) const ALL: &[(&str, Check)] = &[
    ("crashes", crashes),
    ("mixed-pools", mixed_pools),
    ("workers-reused", workers_reused),
];

fn pid_reporter(name: &str) -> Task {
    Task::closure(name, |ctx| {
        ctx.report(Outcome::Pass, std::process::id().to_string());
        Ok(())
    })
}

/// The crash scenarios' tasks, for both sides.
pub(crate) fn build(name: &str) -> Vec<Task> {
    match name {
        "crashes" => vec![
            Task::closure("panic", |_| panic!("kaboom")),
            Task::closure("abort", |_| std::process::abort()),
            Task::closure("segfault", |_| {
                // SAFETY: none: writing through a null pointer is the crash under test. (Not
                // `raise`: std's SIGSEGV handler returns from a signal that was not a fault.)
                unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
                Ok(())
            }),
            Task::closure("exit", |_| std::process::exit(3)),
            Task::closure("exit-zero", |_| std::process::exit(0)),
            Task::closure("hang", |_| loop {
                std::thread::sleep(Duration::from_millis(5));
            })
            .timeout(Duration::from_millis(200)),
            Task::closure("noisy", |ctx| {
                // Neither output nor input may touch the channel.
                for _ in 0..3 {
                    println!("\x00\x00\x00\x10 garbage on stdout");
                }
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf)?;
                ctx.report(Outcome::Pass, format!("stdin gave {} bytes", buf.len()));
                Ok(())
            }),
            Task::closure("big-export", |ctx| {
                ctx.export("blob", &"x".repeat(65 << 20))
            }),
            Task::closure("after", |ctx| ctx.export("fine", &true)).provides(["after"]),
            Task::closure("dependent", |ctx| match ctx.get::<bool>("fine")? {
                Some(true) => Ok(()),
                _ => Err(TaskError::fail("the export did not cross the channel")),
            })
            .requires(["after"]),
        ],
        "mixed-pools" => vec![
            pid_reporter("on-thread").pool(PoolKind::Threads),
            pid_reporter("in-process"),
        ],
        "workers-reused" => (0..20).map(|i| pid_reporter(&format!("t{i}"))).collect(),
        _ => Vec::new(),
    }
}

fn crashes(env: &Env) {
    let events = env.run_tasks(1, build(env.name));
    let error = |name: &str, needle: &str| {
        assert_eq!(outcome(&events, name), Outcome::Error, "{name}");
        let m = message(&events, name);
        assert!(m.contains(needle), "{name}: {m}");
    };
    error("panic", "panicked: kaboom");
    error("abort", "killed by signal SIGABRT");
    error("segfault", "killed by signal SIGSEGV");
    error("exit", "exited with code 3");
    error("exit-zero", "exited with code 0");
    error("big-export", "over the channel's limit");
    assert_eq!(outcome(&events, "hang"), Outcome::Timeout);
    assert!(message(&events, "hang").contains("timed out after 200ms"));
    assert_eq!(outcome(&events, "noisy"), Outcome::Pass);
    assert_eq!(
        results(&events, "noisy"),
        [(Outcome::Pass, "stdin gave 0 bytes".into())]
    );
    assert_eq!(outcome(&events, "after"), Outcome::Pass);
    assert_eq!(outcome(&events, "dependent"), Outcome::Pass);
    assert_eq!(run_outcome(&events), Outcome::Error);
}

fn pid_of(events: &[pexen::Event], name: &str) -> u32 {
    results(events, name)[0].1.parse().unwrap()
}

/// One run, two pools: the default pool (processes) and a task's own choice (threads).
fn mixed_pools(env: &Env) {
    let events = env.run_tasks(2, build(env.name));
    let me = std::process::id();
    assert_eq!(pid_of(&events, "on-thread"), me);
    assert_ne!(pid_of(&events, "in-process"), me);
    // And the other way round: threads by default, one task in a process.
    let events = env
        .builder(2)
        .default_pool(PoolKind::Threads)
        .build()
        .run(vec![
            pid_reporter("on-thread"),
            pid_reporter("in-process").pool(PoolKind::Processes),
        ])
        .unwrap()
        .collect::<Vec<_>>();
    assert_eq!(pid_of(&events, "on-thread"), me);
    assert_ne!(pid_of(&events, "in-process"), me);
    // A group's pool (SPEC 13): the group's closures in processes, the others on threads.
    let events = env
        .builder(2)
        .default_pool(PoolKind::Threads)
        .group(pexen::Group::new("isolated").pool(PoolKind::Processes))
        .build()
        .run(vec![
            pid_reporter("on-thread"),
            pid_reporter("in-process").group("isolated"),
        ])
        .unwrap()
        .collect::<Vec<_>>();
    assert_eq!(pid_of(&events, "on-thread"), me);
    assert_ne!(pid_of(&events, "in-process"), me);
}

fn workers_reused(env: &Env) {
    let events = env.run_tasks(2, build(env.name));
    let pids: BTreeSet<u32> = (0..20).map(|i| pid_of(&events, &format!("t{i}"))).collect();
    assert!(
        !pids.is_empty() && pids.len() <= 2,
        "at most -j workers: {pids:?}"
    );
    assert!(!pids.contains(&std::process::id()));
}
