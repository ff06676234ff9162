//! A mutation fuzzer for the journal reader, run by `cargo test` for a bounded number of cases:
//! a real journal is damaged the ways disks and crashes damage files (flipped bytes, cut tails,
//! zero-filled ranges, duplicated and inserted bytes) and read back. No input may panic; a load
//! that succeeds never claims more valid bytes than the file has, and one that fails is a typed
//! error. Seeded and deterministic; `PEXEN_FUZZ_CASES=N` runs more.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::*;
use crate::report::record::TaskRecord;
use crate::task::Outcome;

fn journal_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(dir.path()).unwrap();
    j.run_started_names(vec!["a".into(), "b/é".into(), "c".into()])
        .unwrap();
    for (i, name) in ["a", "b/é", "c"].into_iter().enumerate() {
        let mut r = TaskRecord::new(name, Outcome::Pass);
        r.duration_s = i as f64;
        r.results = vec![(Outcome::Warn, "w".repeat(i * 7))];
        r.exports.insert("K".into(), serde_json::json!(i));
        j.append(&r).unwrap();
    }
    drop(j);
    std::fs::read(dir.path().join(FILE_NAME)).unwrap()
}

#[test]
fn damaged_journals_never_panic() {
    let cases: u64 = std::env::var("PEXEN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let good = journal_bytes();
    for case in 0..cases {
        let mut rng = fastrand::Rng::with_seed(case);
        let mut bytes = good.clone();
        for _ in 0..rng.usize(1..=3) {
            let at = rng.usize(0..=bytes.len());
            match rng.u8(0..5) {
                0 => {
                    if at < bytes.len() {
                        bytes[at] ^= 1 << rng.u8(0..8);
                    }
                }
                1 => bytes.truncate(at),
                2 => {
                    let end = (at + rng.usize(1..64)).min(bytes.len());
                    bytes[at..end].fill(0);
                }
                3 => {
                    let n = rng.usize(1..9);
                    bytes.splice(at..at, std::iter::repeat_with(|| rng.u8(..)).take(n));
                }
                _ => bytes.resize(bytes.len() + rng.usize(1..4096), 0),
            }
        }
        let len = bytes.len() as u64;
        let result = catch_unwind(AssertUnwindSafe(|| {
            super::read::parse("journal".into(), &bytes)
        }));
        match result {
            Err(p) => panic!(
                "case {case}: the reader panicked ({}) on {bytes:?}",
                crate::pool::panic_message(&*p)
            ),
            Ok(Ok(loaded)) => assert!(loaded.valid_len <= len, "case {case}"),
            Ok(Err(_)) => {}
        }
    }
}
