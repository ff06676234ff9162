//! SPEC 15: 10^4 no-op closures in process workers on a loopback TLS daemon (>= 5 000
//! tasks/s). An embedding binary: the daemon is this very binary started as a host worker
//! (`PEXEN_WORKER=host THIS worker --listen ...`), so that it serves the closures it builds;
//! the controller is the same binary run normally. `benches/hosts.sh` starts both.
//!
//! Environment: `PEXEN_BENCH_N` (tasks, default 10 000); `PEXEN_BENCH_TLS` (`HOST:PORT` of
//! the daemon) with `PEXEN_BENCH_CERT`, `PEXEN_BENCH_KEY`, `PEXEN_BENCH_CA` (the controller's
//! identity and the daemons' CA). Without `PEXEN_BENCH_TLS` it measures the local process
//! pool only. Prints one line per case: `CASE tasks=N seconds=S tasks_per_s=R`.

use std::path::PathBuf;
use std::time::Instant;

use pexen::host::{tls::TlsFiles, HostSpec, HostsConfig};
use pexen::{Event, Outcome, PoolKind, Scheduler, Task};

fn count() -> usize {
    std::env::var("PEXEN_BENCH_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

fn tasks() -> Vec<Task> {
    (0..count())
        .map(|i| Task::closure(format!("t{i}"), |_| Ok(())).pool(PoolKind::Processes))
        .collect()
}

fn measure(case: &str, builder: pexen::SchedulerBuilder) {
    let n = count();
    let started = Instant::now();
    let mut outcome = None;
    let mut passed = 0;
    for e in builder.build().run(tasks()).expect("valid tasks") {
        match e {
            Event::TaskFinished(f) if f.outcome == Outcome::Pass => passed += 1,
            Event::RunFinished { outcome: o, .. } => outcome = Some(o),
            _ => {}
        }
    }
    let took = started.elapsed().as_secs_f64();
    assert_eq!(outcome, Some(Outcome::Pass), "{case}: the run failed");
    assert_eq!(passed, n);
    println!(
        "{case} tasks={n} seconds={took:.3} tasks_per_s={:.0}",
        n as f64 / took
    );
}

fn main() {
    pexen::worker::serve_if_worker(tasks);
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench` asks benches to list themselves; there is nothing to list.
        return;
    }
    measure(
        "local-processes-j2",
        Scheduler::builder()
            .jobs(2)
            .default_pool(PoolKind::Processes),
    );
    let Ok(addr) = std::env::var("PEXEN_BENCH_TLS") else {
        return;
    };
    let var =
        |k: &str| PathBuf::from(std::env::var_os(k).unwrap_or_else(|| panic!("{k} is not set")));
    let hosts = HostsConfig {
        hosts: vec![HostSpec::parse(&format!("tls://{addr}")).expect("a tls host")],
        no_local: true,
        tree: None,
        tls: Some(TlsFiles {
            cert: var("PEXEN_BENCH_CERT"),
            key: var("PEXEN_BENCH_KEY"),
            ca: var("PEXEN_BENCH_CA"),
        }),
        pilots: None,
        connecting: pexen::host::Connecting::default(),
    };
    measure(
        "tls-daemon",
        Scheduler::builder()
            .default_pool(PoolKind::Processes)
            .hosts(hosts),
    );
}
