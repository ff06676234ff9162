//! Scheduler overhead on no-op closures (SPEC 8): five DAG shapes on the thread pool, at 10^5 and
//! 10^6 tasks, plus a rayon-only baseline. Each measurement runs in a fresh child process so that
//! the peak RSS growth belongs to that shape alone.
//!
//! The same five shapes also run on the process pool at 10^4 tasks (`process-SHAPE` lines):
//! workers are this binary re-executed, hence the `serve_if_worker` call first in `main`.
//!
//! `groups4` is the independent shape split into four exclusivity groups (SPEC 13).
//!
//! Prints `SHAPE tasks=N ns_per_task=X bytes_per_task=Y build_ns=B with_build_ns=T validate_ns=..
//! run_ns=.. drop_ns=..`: `ns_per_task` is the scheduler's part (validate + run + drop), `build_ns`
//! what the caller pays to describe the tasks (names, closures, token strings), `with_build_ns`
//! both. Run: `cargo bench --bench throughput` (`-- --quick` for 10^5 only; `-- --child SHAPE N`
//! for one shape in this process).

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use pexen::{Event, Group, Outcome, PoolKind, Scheduler, Task};

const SHAPES: [&str; 5] = ["independent", "chain", "fan-out", "random-dag4", "one-lock"];
const JOBS: usize = 2;
/// Tasks per process-pool measurement.
const PROCESS_TASKS: usize = 10_000;

fn main() {
    // In a worker: serve the no-op tasks by name (every shape names them `t0`, `t1`, ...).
    pexen::worker::serve_if_worker(|| tasks("independent", PROCESS_TASKS));
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let shape = &args[i + 1];
        let n: usize = args[i + 2].parse().expect("task count");
        child(shape, n);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let sizes: &[usize] = if quick {
        &[100_000]
    } else {
        &[100_000, 1_000_000]
    };
    let exe = std::env::current_exe().expect("own path");
    let process_shapes: Vec<String> = SHAPES.iter().map(|s| format!("process-{s}")).collect();
    let runs = sizes
        .iter()
        .flat_map(|&n| {
            SHAPES
                .iter()
                .copied()
                .chain(["groups4", "rayon-baseline"])
                .map(move |s| (s, n))
        })
        .chain(process_shapes.iter().map(|s| (s.as_str(), PROCESS_TASKS)));
    for (shape, n) in runs {
        let out = Command::new(&exe)
            .args(["--child", shape, &n.to_string()])
            .output()
            .expect("re-run the bench");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprintln!(
                "{shape} n={n} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Resident set size in bytes, from /proc (`VmRSS` or the peak `VmHWM`).
fn rss(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A small deterministic generator (xorshift), so every run builds the same random DAG.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn tasks(shape: &str, n: usize) -> Vec<Task> {
    let noop = |i: usize| Task::closure(format!("t{i}"), |_| Ok(()));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|i| match shape {
            "independent" => noop(i),
            "chain" => {
                let t = noop(i).provides([format!("k{i}")]);
                if i == 0 {
                    t
                } else {
                    t.requires([format!("k{}", i - 1)])
                }
            }
            "fan-out" => {
                if i == 0 {
                    noop(i).provides(["root"])
                } else {
                    noop(i).requires(["root"])
                }
            }
            "random-dag4" => {
                let t = noop(i).provides([format!("k{i}")]);
                if i == 0 {
                    t
                } else {
                    t.requires((0..4).map(|_| format!("k{}", rng.below(i))))
                }
            }
            "one-lock" => noop(i).claims(["L"]),
            // Independent tasks in four exclusivity groups, interleaved: one turn per group.
            "groups4" => noop(i).group(format!("g{}", i % 4)),
            other => panic!("unknown shape {other}"),
        })
        .collect()
}

fn child(shape: &str, n: usize) {
    let before = rss("VmRSS:");
    let mut phases = String::new();
    let elapsed = if shape == "rayon-baseline" {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(JOBS)
            .build()
            .unwrap();
        let start = Instant::now();
        pool.scope(|s| {
            for i in 0..n {
                s.spawn(move |_| {
                    black_box(i);
                });
            }
        });
        start.elapsed()
    } else {
        let (shape, pool) = match shape.strip_prefix("process-") {
            Some(shape) => (shape, PoolKind::Processes),
            None => (shape, PoolKind::Threads),
        };
        let building = Instant::now();
        let tasks = tasks(shape, n);
        let built = building.elapsed();
        let start = Instant::now();
        let mut builder = Scheduler::builder().jobs(JOBS).default_pool(pool);
        if shape == "groups4" {
            for g in 0..4 {
                builder = builder.group(Group::new(format!("g{g}")));
            }
        }
        let mut run = builder.build().run(tasks).expect("valid graph");
        let validated = start.elapsed();
        let mut outcome = None;
        for e in run.by_ref() {
            if let Event::RunFinished {
                outcome: o, counts, ..
            } = &e
            {
                assert_eq!(counts.total(), n);
                outcome = Some(*o);
            }
            black_box(&e);
        }
        assert_eq!(outcome, Some(Outcome::Pass));
        let ran = start.elapsed();
        drop(run);
        let total = start.elapsed();
        // The phases, to see where time goes: validation and setup, running, tearing down.
        phases = format!(
            " build_ns={:.0} with_build_ns={:.0} validate_ns={:.0} run_ns={:.0} drop_ns={:.0}",
            built.as_nanos() as f64 / n as f64,
            (built + total).as_nanos() as f64 / n as f64,
            validated.as_nanos() as f64 / n as f64,
            ran.saturating_sub(validated).as_nanos() as f64 / n as f64,
            total.saturating_sub(ran).as_nanos() as f64 / n as f64
        );
        total
    };
    let grown = rss("VmHWM:").saturating_sub(before);
    println!(
        "{shape} tasks={n} ns_per_task={:.0} bytes_per_task={}{phases}",
        elapsed.as_nanos() as f64 / n as f64,
        grown / n as u64
    );
}
