//! What the Slurm tests share: one test at a time on the one node, and how they look at jobs
//! and events. Included with `#[path = "common/slurm.rs"] mod slurm;`.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::{mpsc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;

use super::common::Tree;

pub const NEEDS: &str = "needs Slurm: run .ci/slurm.sh first";

/// One test at a time on the one node: a test that fails the node must not disturb another's
/// jobs, and each test's job counts stay its own.
static NODE: Mutex<()> = Mutex::new(());

/// Fails with what to run when Slurm is not there; holds the node for the test.
pub fn require_slurm() -> MutexGuard<'static, ()> {
    let guard = NODE.lock().unwrap_or_else(PoisonError::into_inner);
    let ok = Command::new("sinfo")
        .args(["--noheader", "--format=%T"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    assert!(ok, "{NEEDS} (sinfo did not answer)");
    guard
}

/// Jobs among `ids` that Slurm still has queued, running or finishing.
pub fn active(ids: &[String]) -> Vec<String> {
    if ids.is_empty() {
        return Vec::new();
    }
    let out = Command::new("squeue")
        .args([
            "--noheader",
            "--states=PENDING,RUNNING,COMPLETING,CONFIGURING,SUSPENDED",
            "--format=%i",
            "--jobs",
        ])
        .arg(ids.join(","))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Starts `pexen` and returns the child and a channel of its JSON events as they come.
pub fn spawn_events(t: &Tree, args: &[&str]) -> (std::process::Child, mpsc::Receiver<Value>) {
    let mut child = t.spawn(args);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    (child, rx)
}
