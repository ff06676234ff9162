//! The library as an embedder meets it (issue #16): several observers with the journal among
//! them, no zombie after a cancel, versions in fingerprints, resume decisions as data, a run kept
//! open for tasks fed by the consumer, a blocking wait for cancellation, and attempt durations
//! as the attempt clock measures them (issue #15).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pexen::state::{Reason, RunJournal, Verdict};
use pexen::{CommandSpec, Event, Observer, Outcome, RunSpec, Scheduler, Task};

#[path = "common/events.rs"]
mod events;
use events::{outcome, run_outcome};

fn ok(name: &str) -> Task {
    Task::closure(name, |_| Ok(()))
}

/// An observer that writes `TAG:task` for every finished task into `seen`.
fn tagging(tag: &'static str, seen: &Arc<Mutex<Vec<String>>>) -> Observer {
    let seen = seen.clone();
    Observer::new(move |e| {
        if let Event::TaskFinished(f) = e {
            seen.lock().unwrap().push(format!("{tag}:{}", f.task));
        }
    })
}

#[test]
fn the_journal_and_every_observer_see_every_event_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = || vec![ok("a").provides(["x"]), ok("b").requires(["x"])];
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut journal = RunJournal::open(dir.path(), &tasks(), false).unwrap();
    let events: Vec<Event> = Scheduler::builder()
        .jobs(1)
        .observer(tagging("first", &seen))
        .journal(&mut journal)
        .observer(tagging("second", &seen))
        .build()
        .run(tasks())
        .unwrap()
        .collect();
    assert_eq!(run_outcome(&events), Outcome::Pass);
    let records = journal.finish().unwrap();
    let journaled: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(journaled, ["a", "b"]);
    assert_eq!(
        *seen.lock().unwrap(),
        ["first:a", "second:a", "first:b", "second:b"]
    );
}

fn shell(script: &str, cwd: &Path) -> CommandSpec {
    let mut spec = CommandSpec::new(RunSpec::Shell(script.to_owned()));
    spec.cwd = Some(cwd.to_owned());
    spec
}

fn wait_for(path: &Path) -> String {
    for _ in 0..6000 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text.trim().to_owned();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never appeared", path.display());
}

/// A daemon started by a task (`setsid`: it leads its own session and group) is killed by a
/// cancel and must be reaped, not left a zombie child of the embedding process.
fn daemon_then_hang(dir: &Path) -> Vec<Task> {
    vec![
        Task::command(
            "start-daemon",
            shell(
                r"setsid sh -c 'echo $$ > daemon.pid; exec sleep 1000' &
while [ ! -s daemon.pid ]; do sleep 0.01; done",
                dir,
            ),
        )
        .provides(["daemon"]),
        Task::command("hang", shell("echo > hang.started; exec sleep 1000", dir))
            .requires(["daemon"]),
    ]
}

fn gone(pid: &str) -> bool {
    !Path::new("/proc").join(pid).exists()
}

fn zombie(pid: &str) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid).join("stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits until the daemon has died (a zombie, or already reaped), then lets the last handle on
/// the run go: whoever reaps it must recognise a dead daemon, whose environment is unreadable.
fn reaped_once_dead(daemon: &str, handle: pexen::RunHandle) -> bool {
    for _ in 0..6000 {
        if zombie(daemon) || gone(daemon) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(handle);
    gone(daemon)
}

#[test]
fn no_zombie_after_a_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let run = Scheduler::builder()
        .jobs(2)
        .build()
        .run(daemon_then_hang(dir.path()))
        .unwrap();
    let handle = run.handle();
    let mut events = Vec::new();
    for e in run {
        if matches!(&e, Event::TaskStarted { task, .. } if task.as_str() == "hang") {
            wait_for(&dir.path().join("hang.started"));
            handle.cancel();
        }
        events.push(e);
    }
    assert_eq!(outcome(&events, "hang"), Outcome::Error);
    let daemon = wait_for(&dir.path().join("daemon.pid"));
    assert!(
        reaped_once_dead(&daemon, handle),
        "the daemon {daemon} is left a zombie"
    );
}

#[test]
fn no_zombie_after_dropping_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Scheduler::builder()
        .jobs(2)
        .build()
        .run(daemon_then_hang(dir.path()))
        .unwrap();
    for e in run.by_ref() {
        if matches!(&e, Event::TaskStarted { task, .. } if task.as_str() == "hang") {
            wait_for(&dir.path().join("hang.started"));
            break;
        }
    }
    let handle = run.handle();
    drop(run);
    let daemon = wait_for(&dir.path().join("daemon.pid"));
    assert!(
        reaped_once_dead(&daemon, handle),
        "the daemon {daemon} is left a zombie"
    );
}

/// A closure build whose captured optimisation level is its version, and a test after it.
fn versioned(opt: &'static str, log: &Path) -> Vec<Task> {
    let log = log.to_path_buf();
    vec![
        Task::closure("build", move |_| {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&log)?;
            std::io::Write::write_all(&mut f, format!("cc {opt}\n").as_bytes())?;
            Ok(())
        })
        .version(opt)
        .provides(["bin"]),
        ok("test").requires(["bin"]),
    ]
}

/// Runs `tasks` journaled in `state` (resuming when asked); the events and the decisions.
fn journaled(state: &Path, tasks: &dyn Fn() -> Vec<Task>, resume: bool) -> Vec<Event> {
    let mut journal = RunJournal::open(state, &tasks(), resume).unwrap();
    let events: Vec<Event> = Scheduler::builder()
        .jobs(2)
        .journal(&mut journal)
        .build()
        .run(tasks())
        .unwrap()
        .collect();
    journal.finish().unwrap();
    events
}

fn resumed(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::TaskFinished(f) if f.resumed => Some(f.task.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_changed_version_reruns_the_task_and_its_dependents_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (state, log) = (dir.path().join("state"), dir.path().join("cc.log"));
    journaled(&state, &|| versioned("-O2", &log), false);
    let again = journaled(&state, &|| versioned("-O2", &log), true);
    assert_eq!(resumed(&again), ["build", "test"]);

    let decisions = RunJournal::open(&state, &versioned("-O3", &log), true)
        .unwrap()
        .decisions()
        .to_vec();
    let as_data: Vec<(&str, &Verdict)> = decisions
        .iter()
        .map(|d| (d.task.as_str(), &d.verdict))
        .collect();
    assert_eq!(
        as_data,
        [
            ("build", &Verdict::Run(Reason::DefinitionChanged)),
            (
                "test",
                &Verdict::Run(Reason::ProviderChanged("build".into()))
            ),
        ]
    );
    assert_eq!(decisions[0].to_string(), "run build: definition changed");

    let changed = journaled(&state, &|| versioned("-O3", &log), true);
    assert!(resumed(&changed).is_empty());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "cc -O2\ncc -O3\n");
}

#[test]
fn an_open_run_takes_tasks_from_the_consumer_until_it_is_closed() {
    let run = Scheduler::builder()
        .jobs(2)
        .keep_open(true)
        .build()
        .run(vec![ok("t0").provides(["k0"])])
        .unwrap();
    let handle = run.handle();
    let mut closed = false;
    let mut events = Vec::new();
    for e in run {
        if let Event::TaskFinished(f) = &e {
            // Each task's end brings the next one, which needs what it provided: no task is
            // running or waiting in between, and the run must not end there.
            let i: usize = f.task.as_str()[1..].parse().unwrap();
            if i < 4 {
                let next = ok(&format!("t{}", i + 1))
                    .requires([format!("k{i}")])
                    .provides([format!("k{}", i + 1)]);
                handle.add_tasks(vec![next]).unwrap();
            } else {
                closed = true;
                handle.close();
            }
        }
        if matches!(e, Event::RunFinished { .. }) {
            assert!(closed, "the run finished before it was closed");
        }
        events.push(e);
    }
    let finished: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::TaskFinished(f) => Some(f.task.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(finished, ["t0", "t1", "t2", "t3", "t4"]);
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            outcome: Outcome::Pass,
            interrupted: false,
            ..
        })
    ));
    // Closed and finished: nothing more is taken.
    assert!(handle.add_tasks(vec![ok("late")]).is_err());
}

#[test]
fn an_open_run_fed_from_another_thread_and_cancelled_while_idle() {
    let run = Scheduler::builder()
        .jobs(2)
        .keep_open(true)
        .build()
        .run(Vec::new())
        .unwrap();
    let handle = run.handle();
    let feeder = std::thread::spawn({
        let handle = handle.clone();
        move || {
            for i in 0..3 {
                handle.add_tasks(vec![ok(&format!("fed{i}"))]).unwrap();
            }
        }
    });
    let mut events = Vec::new();
    let mut done = 0;
    for e in run {
        if matches!(e, Event::TaskFinished(_)) {
            done += 1;
            if done == 3 {
                // Idle and open: a cancel ends it, as an interrupted run.
                handle.cancel();
            }
        }
        events.push(e);
    }
    feeder.join().unwrap();
    for i in 0..3 {
        assert_eq!(outcome(&events, &format!("fed{i}")), Outcome::Pass);
    }
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            interrupted: true,
            ..
        })
    ));
}

#[test]
fn a_run_not_kept_open_finishes_when_its_tasks_are_done() {
    let mut run = Scheduler::builder()
        .jobs(1)
        .build()
        .run(vec![ok("only")])
        .unwrap();
    let handle = run.handle();
    assert!(run.by_ref().any(|e| matches!(e, Event::RunFinished { .. })));
    let refused = handle.add_tasks(vec![ok("late")]).unwrap_err();
    assert!(
        refused.to_string().contains("the run has finished"),
        "{refused}"
    );
}

#[test]
fn attempt_durations_cover_what_each_closure_took_and_fit_in_the_run() {
    // A chain (one attempt at a time) of short closures, run in batches back to back on the
    // attempt clock, with a closure that sleeps every 50 tasks. Each reported duration covers
    // what the closure measured of itself, and together they fit in the run's duration: a clock
    // that converted too little or too much would break one or the other.
    let took: Arc<Mutex<Vec<(String, Duration)>>> = Arc::default();
    let tasks: Vec<Task> = (0..400)
        .map(|i| {
            let name = format!("t{i}");
            let took = took.clone();
            let own = name.clone();
            let task = Task::closure(name, move |_| {
                let start = std::time::Instant::now();
                if i % 50 == 49 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                took.lock().unwrap().push((own.clone(), start.elapsed()));
                Ok(())
            })
            .provides([format!("k{i}")]);
            if i == 0 {
                task
            } else {
                task.requires([format!("k{}", i - 1)])
            }
        })
        .collect();
    let events: Vec<Event> = Scheduler::builder()
        .jobs(2)
        .build()
        .run(tasks)
        .unwrap()
        .collect();
    assert_eq!(run_outcome(&events), Outcome::Pass);
    let reported: std::collections::HashMap<String, Duration> = events
        .iter()
        .filter_map(|e| match e {
            Event::TaskFinished(f) => Some((f.task.to_string(), f.duration)),
            _ => None,
        })
        .collect();
    let took = took.lock().unwrap();
    assert_eq!(took.len(), 400);
    // The conversion of a duration is off by less than a microsecond (see `pool::clock`).
    let slack = Duration::from_micros(50);
    for (name, inside) in took.iter() {
        assert!(
            reported[name] + slack >= *inside,
            "{name}: reported {:?}, the closure took {inside:?}",
            reported[name]
        );
    }
    let run = events
        .iter()
        .find_map(|e| match e {
            Event::RunFinished { duration, .. } => Some(*duration),
            _ => None,
        })
        .unwrap();
    let sum: Duration = reported.values().sum();
    assert!(
        sum <= run + Duration::from_millis(1),
        "attempts {sum:?} in a run of {run:?}"
    );
    assert!(
        sum >= Duration::from_millis(40),
        "8 sleeps of 5 ms: {sum:?}"
    );
}
