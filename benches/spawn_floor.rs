//! The spawn floor of SPEC section 8, as a program of its own for `benches/peers.sh`: two threads
//! each calling `std::process::Command::new("/bin/true").status()` N/2 times (the first thread
//! takes the odd one). Prints `spawn-floor n=N s=SECONDS` on stdout.
//!
//! `cargo bench --bench spawn_floor [-- N]` (default 4000). No pexen code and no criterion: it is
//! the yardstick that the scheduler's command path is held against, so it measures only the
//! process spawns themselves (no startup, no tree, no journal).

use std::process::Command;
use std::time::Instant;

const THREADS: usize = 2;

fn main() {
    // `cargo bench` passes `--bench`; take the first argument that is a number.
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(4000);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let count = n / THREADS + usize::from(t < n % THREADS);
            s.spawn(move || {
                for _ in 0..count {
                    let status = Command::new("/bin/true").status().expect("spawn /bin/true");
                    assert!(status.success(), "/bin/true failed: {status}");
                }
            });
        }
    });
    println!("spawn-floor n={n} s={:.6}", start.elapsed().as_secs_f64());
}
