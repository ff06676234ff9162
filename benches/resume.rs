//! SPEC 8: "resume decision with a journal of 10^5 records: under 0.3 s".
//!
//! Builds 10^5 command tasks in a DAG of degree up to 4, journals one passing record per task
//! (with its fingerprint), then times what `pexen run --resume` does before scheduling: load the
//! journal and decide. Fingerprinting is timed on its own line. Run with
//! `cargo bench --bench resume`.

use std::sync::Arc;
use std::time::Instant;

use pexen::report::TaskRecord;
use pexen::state::{decide, fingerprints, Decision, Journal};
use pexen::{CommandSpec, Outcome, RunSpec, Task, Work};

const N: usize = 100_000;

fn tasks() -> Vec<Task> {
    // A small deterministic generator: no dependency on a rand crate for a bench.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..N)
        .map(|i| {
            let mut spec = CommandSpec::new(RunSpec::Cmd(vec!["./t.sh".into(), i.to_string()]));
            spec.env.insert("N".into(), i.to_string());
            let mut t = Task::command(format!("suite/{}/task-{i}", i % 100), spec)
                .provides([format!("k{i}")]);
            if i > 0 {
                let deps = next() % 5;
                t = t.requires((0..deps).map(|_| format!("k{}", next() as usize % i)));
            }
            t
        })
        .collect()
}

fn main() {
    let tasks = tasks();
    let t0 = Instant::now();
    let fps = fingerprints(&tasks);
    println!(
        "fingerprints tasks={N} seconds={:.3}",
        t0.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("temporary directory");
    let mut journal = Journal::create(dir.path()).expect("journal");
    journal.run_started(N).expect("append");
    for (t, fp) in tasks.iter().zip(&fps) {
        let mut r = TaskRecord::new(t.name.clone(), Outcome::Pass);
        r.duration_s = 0.012;
        r.exit_code = Some(0);
        r.fingerprint = Some(*fp);
        journal.append(&r).expect("append");
    }
    journal.sync().expect("sync");
    drop(journal);
    let size = std::fs::metadata(dir.path().join("journal"))
        .expect("journal")
        .len();

    // One changed task, so that the decision also walks the "provider changed" path.
    let mut changed = tasks.clone();
    if let Work::Command(spec) = &changed[10].work {
        let mut spec = (**spec).clone();
        spec.env.insert("CHANGED".into(), "1".into());
        changed[10].work = Work::Command(Arc::new(spec));
    }
    let changed_fps = fingerprints(&changed);

    let t0 = Instant::now();
    let loaded = Journal::load(dir.path()).expect("load");
    let load_s = t0.elapsed().as_secs_f64();
    let decisions = decide(&changed, &changed_fps, &loaded);
    let seconds = t0.elapsed().as_secs_f64();
    let rerun = decisions
        .iter()
        .filter(|d| matches!(d, Decision::Run(_)))
        .count();
    println!("resume-decision records={N} seconds={seconds:.3}");
    println!(
        "  load={load_s:.3}s decide={:.3}s journal_bytes={size} rerun={rerun}",
        seconds - load_s
    );
}
