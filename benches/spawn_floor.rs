//! The spawn floor of SPEC section 8, as a program of its own for `benches/peers.sh`: two threads
//! calling `std::process::Command::new("/bin/true").status()` until N calls are done. Prints
//! `spawn-floor n=N split=shared|static s=SECONDS` on stdout.
//!
//! `cargo bench --bench spawn_floor [-- N [static]]` (default 4000). By default the threads take
//! calls from a shared counter, as a scheduler's workers take tasks: when one thread is
//! descheduled the other keeps spawning, so this is the stricter floor on a loaded machine.
//! With `static`, each thread makes exactly N/2 calls (the first takes the odd one).
//!
//! No pexen code and no criterion: this is the yardstick that the scheduler's command path is
//! held against, so it measures only the spawns themselves (no startup, tree or journal).

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const THREADS: usize = 2;

fn spawn_true() {
    let status = Command::new("/bin/true").status().expect("spawn /bin/true");
    assert!(status.success(), "/bin/true failed: {status}");
}

fn main() {
    // `cargo bench` passes `--bench`: take the first argument that is a number.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(4000);
    let split_static = args.iter().any(|a| a == "static");
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let next = &next;
            s.spawn(move || {
                if split_static {
                    for _ in 0..n / THREADS + usize::from(t < n % THREADS) {
                        spawn_true();
                    }
                } else {
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        spawn_true();
                    }
                }
            });
        }
    });
    println!(
        "spawn-floor n={n} split={} s={:.6}",
        if split_static { "static" } else { "shared" },
        start.elapsed().as_secs_f64()
    );
}
