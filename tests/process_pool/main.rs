//! The SPEC 1 semantics of `tests/engine.rs` on both pools, plus crash isolation of the process
//! pool. A `harness = false` binary: its `main` first serves as a worker process when it was
//! re-executed as one (the scenario to rebuild is in its arguments), then runs every scenario.
//! After each one, no child process of this binary may be left.
//!
//! Run one scenario: `cargo test --test process_pool -- NAME`.

mod checks;
mod crashes;
mod scenarios;
mod support;

use std::ffi::OsString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use pexen::PoolKind;

use support::{children, Env};

fn main() {
    // The scenario and its directory are the worker arguments (`Env::builder`).
    pexen::worker::serve_if_worker_with_args(|args: &[OsString]| {
        let name = args.first().and_then(|a| a.to_str()).unwrap_or("");
        let dir = PathBuf::from(args.get(1).cloned().unwrap_or_default());
        let mut tasks = scenarios::build(name, &dir);
        tasks.extend(scenarios::extra(name));
        tasks.extend(crashes::build(name));
        tasks
    });

    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let root = std::env::temp_dir().join(format!("pexen-process-pool-{}", std::process::id()));
    let both = [PoolKind::Threads, PoolKind::Processes];
    let cases = scenarios::ALL
        .iter()
        .flat_map(|&(name, check)| both.map(|pool| (name, check, pool)))
        .chain(
            crashes::ALL
                .iter()
                .map(|&(name, check)| (name, check, PoolKind::Processes)),
        );
    let (mut passed, mut failed) = (0, Vec::new());
    for (name, check, pool) in cases {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let label = format!("{name} [{pool:?}]");
        let dir = root.join(format!("{name}-{pool:?}"));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let env = Env { name, pool, dir };
        let result = catch_unwind(AssertUnwindSafe(|| {
            check(&env);
            let left = children();
            assert!(
                left.is_empty(),
                "child processes left after the run: {left:?}"
            );
        }));
        if result.is_ok() {
            passed += 1;
            println!("test {label} ... ok");
        } else {
            println!("test {label} ... FAILED");
            failed.push(label);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "\ntest result: {}. {passed} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    if !failed.is_empty() {
        for f in &failed {
            println!("    {f}");
        }
        std::process::exit(101);
    }
}
