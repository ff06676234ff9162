//! Factory throughput (SPEC section 8): loading a tree of 10^5 task files, and one `.tasks.ron`
//! of 10^5 tasks. Prints one line per workload, `NAME tasks=N load_s=X`, the best of a few runs
//! (the first run also measures a cold-ish page cache for the freshly written files).
//!
//! Run with `cargo bench --bench factory`; `FACTORY_TASKS=N` changes the size.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Instant;

const RUNS: usize = 3;

/// One task definition with a requires/provides chain through the whole tree.
fn task_def(i: usize) -> String {
    let requires = if i == 0 {
        String::new()
    } else {
        format!("requires: [\"t{}\"], ", i - 1)
    };
    format!("(run: Cmd([\"/bin/true\"]), {requires}provides: [\"t{i}\"], tags: [\"gen\"])")
}

/// (a) `n` `.ron` files over about a thousand directories (`d000/d00/t00042.ron`).
fn write_files(root: &Path, n: usize) {
    fs::write(
        root.join("_dir.ron"),
        "(timeout: \"30s\", tags: [\"bench\"])\n",
    )
    .unwrap();
    let per_dir = n.div_ceil(1000).max(1);
    for i in 0..n {
        let d = i / per_dir;
        let dir = root.join(format!("d{:03}/d{:02}", d / 100, d % 100));
        if i % per_dir == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        fs::write(dir.join(format!("t{i:06}.ron")), task_def(i)).unwrap();
    }
}

/// (b) one `.tasks.ron` holding `n` tasks.
fn write_tasks_ron(root: &Path, n: usize) {
    let mut text = String::with_capacity(n * 100);
    text.push_str("// generated\n{\n");
    for i in 0..n {
        writeln!(text, "    \"t{i:06}\": {},", task_def(i)).unwrap();
    }
    text.push_str("}\n");
    fs::write(root.join("all.tasks.ron"), text).unwrap();
}

/// CPU time (user + system) of the whole process so far, all threads.
fn cpu_s() -> f64 {
    // SAFETY: `getrusage` only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Prints the best wall time of a few loads, and the CPU time of that load: on a shared machine
/// the wall time mostly measures the neighbours, CPU time / cores is the uncontended estimate.
fn measure(label: &str, root: &Path, n: usize) {
    let (mut best, mut cpu) = (f64::INFINITY, 0.0);
    for _ in 0..RUNS {
        let (start, cpu_start) = (Instant::now(), cpu_s());
        let tree = pexen::factory::load(root).expect("generated tree loads");
        let wall = start.elapsed().as_secs_f64();
        if wall < best {
            (best, cpu) = (wall, cpu_s() - cpu_start);
        }
        assert_eq!(tree.tasks.len(), n);
    }
    println!("{label} tasks={n} load_s={best:.3} cpu_s={cpu:.3}");
}

fn main() {
    let n = std::env::var("FACTORY_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);

    let files = tempfile::tempdir().unwrap();
    write_files(files.path(), n);
    measure("factory-files", files.path(), n);

    let map = tempfile::tempdir().unwrap();
    write_tasks_ron(map.path(), n);
    measure("factory-tasks-ron", map.path(), n);
}
