//! The scenarios of `tests/engine.rs`, built by name so that a worker process rebuilds the same
//! closures. State that the thread-pool tests kept in memory (peak counters, rendezvous) is
//! observed here from events, files in the scenario's directory, or reported results, which
//! work across processes too.

use std::path::Path;
use std::time::{Duration, Instant};

use pexen::{OnFailure, Outcome, PoolKind, Task, TaskError};

fn ok(name: &str) -> Task {
    Task::closure(name, |_| Ok(()))
}

fn fail(name: &str, message: &'static str) -> Task {
    Task::closure(name, move |_| Err(TaskError::fail(message)))
}

/// Waits until `n` tasks have entered `dir` (each leaves a file), proof that they overlap.
fn rendezvous(name: &str, dir: &Path, n: usize) -> Task {
    let (dir, me) = (dir.to_path_buf(), name.to_string());
    Task::closure(name, move |_| {
        std::fs::write(dir.join(&me), b"")?;
        let limit = Instant::now() + Duration::from_secs(30);
        while std::fs::read_dir(&dir)?.count() < n {
            if Instant::now() > limit {
                return Err(TaskError::fail("the other sharers never ran alongside"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    })
}

fn wait_cancelled(name: &str, dir: &Path) -> Task {
    let dir = dir.to_path_buf();
    Task::closure(name, move |ctx| {
        std::fs::write(dir.join("inside"), b"")?;
        while !ctx.is_cancelled() {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::fs::write(dir.join("saw-cancel"), b"")?;
        Err(TaskError::error("interrupted"))
    })
}

/// Every scenario's tasks, by name: the scheduler side and the worker side call this alike.
pub(crate) fn build(name: &str, dir: &Path) -> Vec<Task> {
    match name {
        "priority" => vec![
            ok("a").priority(5),
            ok("b").priority(-3),
            ok("c"),
            ok("d").priority(-3),
            ok("e").priority(10),
        ],
        "deps-beat-priority" => vec![
            ok("late-provider").priority(100).provides(["x"]),
            ok("eager").priority(-100).requires(["x"]),
            ok("middle"),
        ],
        "chain" => (0..20)
            .map(|i| {
                let t = ok(&format!("t{i:02}")).provides([format!("k{i}")]);
                if i > 0 {
                    t.requires([format!("k{}", i - 1)])
                } else {
                    t
                }
            })
            .collect(),
        "claims-serialize" => (0..16)
            .map(|i| ok(&format!("t{i}")).claims(["port-8080"]))
            .collect(),
        "uses-overlap" => (0..3)
            .map(|i| rendezvous(&format!("u{i}"), dir, 3).uses(["db"]))
            .collect(),
        "claims-exclude-uses" => {
            let mut tasks = vec![ok("writer").claims(["db"])];
            tasks.extend((0..6).map(|i| ok(&format!("reader{i}")).uses(["db"])));
            tasks.push(ok("writer2").claims(["db"]));
            tasks
        }
        "failed-lock-holder-releases" => vec![
            fail("holder", "boom").claims(["L"]),
            Task::closure("panicker", |_| panic!("kaboom")).claims(["L"]),
            ok("next").claims(["L"]),
        ],
        "skip-with-cause" => vec![
            fail("db", "no disk").provides(["db-ready"]),
            ok("app").requires(["db-ready"]).provides(["app-ready"]),
            ok("e2e").requires(["app-ready"]),
            ok("unrelated"),
        ],
        "token-needs-every-provider" => vec![
            ok("p1").provides(["t"]),
            fail("p2", "x").provides(["t"]),
            ok("dep").requires(["t"]),
        ],
        "skipping-provider-satisfies" => vec![
            Task::closure("skipper", |_| Err(TaskError::skip("not here"))).provides(["t"]),
            ok("dep").requires(["t"]),
        ],
        "run-dependents" => vec![
            fail("flaky-setup", "meh")
                .provides(["t"])
                .on_failure(OnFailure::RunDependents),
            ok("dep").requires(["t"]),
        ],
        "extra-results" => vec![
            Task::closure("checks", |ctx| {
                ctx.report(Outcome::Pass, "sub-test 1");
                ctx.report(Outcome::Warn, "disk almost full");
                Ok(())
            }),
            fail("asserts", "expected 3, got 4"),
        ],
        "shared-state-merge" => vec![
            Task::closure("p1", |ctx| {
                ctx.export("host", "alpha")?;
                ctx.export("p1-only", &1)
            })
            .provides(["a"]),
            Task::closure("p2", |ctx| ctx.export("host", "beta")).provides(["b"]),
            Task::closure("user", |ctx| {
                ctx.report(Outcome::Pass, serde_json::to_string(ctx.shared())?);
                Ok(())
            })
            .requires(["b", "a"]),
        ],
        "failed-exports-not-shared" => vec![
            Task::closure("p", |ctx| {
                ctx.export("k", "v")?;
                Err(TaskError::fail("no"))
            })
            .provides(["t"])
            .on_failure(OnFailure::RunDependents),
            Task::closure("d", |ctx| {
                if ctx.shared().contains_key("k") {
                    Err(TaskError::fail("saw a failed provider's export"))
                } else {
                    Ok(())
                }
            })
            .requires(["t"]),
        ],
        "slots" => (0..12)
            .map(|i| ok(&format!("g{i}")).slot("gpu", if i % 3 == 0 { 2 } else { 1 }))
            .collect(),
        "retries" => vec![Task::closure("flaky", |ctx| {
            if ctx.attempt() < 3 {
                Err(TaskError::fail(format!("attempt {}", ctx.attempt())))
            } else {
                Ok(())
            }
        })
        .retries(2)],
        "fail-fast" => vec![fail("bad", "x"), ok("later1"), ok("later2")],
        // Counts in its checkpoint, one step per attempt: fails, suspends, then passes.
        "checkpoint-suspend" => vec![
            Task::closure("count", |ctx| {
                let file = ctx.checkpoint().expect("a checkpoint directory").join("n");
                let n: u32 = std::fs::read_to_string(&file).map_or(0, |s| s.parse().unwrap_or(0));
                std::fs::write(&file, (n + 1).to_string())?;
                match n + 1 {
                    1 => Err(TaskError::fail("step 1")),
                    2 => Err(TaskError::suspend("step 2: rebooting")),
                    _ => Ok(()),
                }
            })
            .retries(3),
            ok("other").priority(-5),
        ],
        "cooperative-timeout" => vec![Task::closure("spin", |ctx| {
            while !ctx.is_cancelled() {
                std::thread::yield_now();
            }
            Ok(())
        })
        .timeout(Duration::from_millis(20))],
        // Bailing out with an error (or a panic) once the deadline passed is still a timeout.
        "late-error" => vec![
            Task::closure("bail", |ctx| {
                while !ctx.is_cancelled() {
                    std::thread::yield_now();
                }
                Err(TaskError::error("interrupted call"))
            })
            .timeout(Duration::from_millis(20)),
            Task::closure("bail-panic", |ctx| {
                while !ctx.is_cancelled() {
                    std::thread::yield_now();
                }
                panic!("gave up");
            })
            .timeout(Duration::from_millis(20)),
        ],
        // `ctx.wait_cancelled` blocks: until a cancel, until the deadline, or for its timeout.
        "blocking-cancel-wait" => {
            let dir = dir.to_path_buf();
            vec![
                Task::closure("waiter", move |ctx| {
                    std::fs::write(dir.join("inside"), b"")?;
                    if ctx.wait_cancelled(Duration::MAX) {
                        std::fs::write(dir.join("saw-cancel"), b"")?;
                    }
                    Err(TaskError::error("interrupted"))
                }),
                Task::closure("deadline", |ctx| {
                    if ctx.wait_cancelled(Duration::from_secs(3600)) {
                        Ok(())
                    } else {
                        Err(TaskError::fail("the deadline did not end the wait"))
                    }
                })
                .timeout(Duration::from_millis(20)),
                Task::closure("short", |ctx| {
                    if ctx.wait_cancelled(Duration::from_millis(1)) {
                        Err(TaskError::fail("cancelled without a cancel"))
                    } else {
                        Ok(())
                    }
                }),
            ]
        }
        "unserializable-export" => vec![Task::closure("x", |ctx| ctx.export("sock", &Bad))],
        "added-by-task" => vec![Task::closure("gen", |ctx| {
            ctx.export("n", &3)?;
            ctx.add_tasks(children())?;
            if ctx
                .add_tasks(vec![ok("intruder").provides(["gen"])])
                .is_ok()
            {
                return Err(TaskError::fail("late provider accepted"));
            }
            Ok(())
        })
        // Adding tasks needs the run state, which only the scheduler's process has.
        .pool(PoolKind::Threads)
        .provides(["gen"])],
        "drop-cancels" | "cancel" => vec![wait_cancelled("forever", dir), ok("never")],
        "one-finished-each" => (0..50)
            .map(|i| {
                let mut t = if i % 7 == 0 {
                    fail(&format!("t{i}"), "x")
                } else {
                    ok(&format!("t{i}"))
                };
                t = t.provides([format!("k{i}")]);
                if i >= 5 {
                    t = t.requires([format!("k{}", i - 5)]);
                }
                t.claims([format!("r{}", i % 3)])
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Tasks that join a scenario's run later: the workers must know them too.
pub(crate) fn extra(name: &str) -> Vec<Task> {
    match name {
        "added-by-task" => children(),
        "added-by-consumer" => vec![ok("added").requires(["base"])],
        _ => Vec::new(),
    }
}

fn children() -> Vec<Task> {
    (0..3)
        .map(|i| {
            Task::closure(format!("gen/child{i}"), |ctx| {
                let n: u32 = ctx.get("n")?.unwrap_or(0);
                if n == 3 {
                    Ok(())
                } else {
                    Err(TaskError::fail("no shared state"))
                }
            })
            .requires(["gen"])
        })
        .collect()
}

struct Bad;

impl serde::Serialize for Bad {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("sockets do not serialize"))
    }
}

pub(crate) use crate::checks::ALL;
