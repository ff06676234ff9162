//! The spawn floor (SPEC section 8): N `/bin/true` attempts through `CommandRunner::run` from two
//! threads, side by side with two threads calling `Command::status` (the bare spawn loop).
//!
//! `cargo bench --bench command_spawn [-- TASKS [ROUNDS]]` (defaults: 4000 tasks, 3 rounds).
//! Each round alternates the two loops in batches of 250 tasks, so that the load of a shared
//! machine hits both alike; each round prints its totals and ratio, then the sums over all rounds.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pexen::context::ResultSink;
use pexen::pool::command::{CommandConfig, CommandJob, CommandRunner};
use pexen::{CommandSpec, Outcome, RunSpec, Shared, TaskName};

struct NoSink;

impl ResultSink for NoSink {
    fn result(&self, _: Outcome, _: String) {}
}

const THREADS: usize = 2;

/// Runs `work` `tasks` times spread over the threads (a shared counter, as a scheduler would).
fn two_threads(tasks: usize, work: impl Fn() + Sync) -> Duration {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < tasks {
                    work();
                }
            });
        }
    });
    start.elapsed()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let tasks = args.first().copied().unwrap_or(4000);
    let rounds = args.get(1).copied().unwrap_or(3);

    let runner = CommandRunner::new(CommandConfig::default()).expect("temp dir");
    let spec = CommandSpec::new(RunSpec::Cmd(vec!["/bin/true".into()]));
    let name = TaskName::new("bench/true");
    let shared = Shared::new();

    let bare_batch = |n: usize| {
        two_threads(n, || {
            let status = Command::new("/bin/true").status().expect("spawn");
            assert!(status.success());
        })
    };
    let pexen_batch = |n: usize| {
        two_threads(n, || {
            let attempt = runner.run(CommandJob {
                task: &name,
                attempt: 1,
                spec: &spec,
                shared: &shared,
                timeout: None,
                checkpoint: None,
                sink: &NoSink,
                host: "local",
            });
            assert_eq!(attempt.outcome, Outcome::Pass, "{attempt:?}");
        })
    };
    let per_task = |d: Duration| d.as_secs_f64() * 1e6 / tasks as f64;
    let (mut bare, mut pexen) = (Duration::ZERO, Duration::ZERO);
    for round in 1..=rounds {
        let (mut b, mut p) = (Duration::ZERO, Duration::ZERO);
        let mut left = tasks;
        while left > 0 {
            let n = left.min(250);
            b += bare_batch(n);
            p += pexen_batch(n);
            left -= n;
        }
        println!(
            "round {round}: bare {:>8.1} ms ({:>6.1} us/task)   CommandRunner::run {:>8.1} ms ({:>6.1} us/task)   ratio {:.3}",
            b.as_secs_f64() * 1e3,
            per_task(b),
            p.as_secs_f64() * 1e3,
            per_task(p),
            p.as_secs_f64() / b.as_secs_f64()
        );
        bare += b;
        pexen += p;
    }
    println!(
        "all {rounds} rounds, {tasks} x /bin/true each, {THREADS} threads: bare Command::status {:.1} us/task, CommandRunner::run {:.1} us/task, ratio {:.3}",
        per_task(bare) / rounds as f64,
        per_task(pexen) / rounds as f64,
        pexen.as_secs_f64() / bare.as_secs_f64()
    );
}
