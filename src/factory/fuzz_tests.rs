//! A mutation fuzzer for the task-file parser, run by `cargo test` for a bounded number of
//! cases: seeds that cover the syntax (`.ron`, `_dir.ron`, `.tasks.ron` with plain and raw keys)
//! are mutated with the bytes that broke it before (backslashes, slashes and quotes before
//! multibyte characters, invalid UTF-8, huge numbers, raw strings) and loaded through
//! [`crate::factory::load`]. No input may panic, and every error must say where it is.
//!
//! Seeded and deterministic: a failure prints its seed and input. `PEXEN_FUZZ_CASES=N` runs
//! more cases (the default keeps the test to a few seconds in a debug build).

use std::panic::{catch_unwind, AssertUnwindSafe};

const SEEDS: &[(&str, &str)] = &[
    (
        "t.ron",
        "(\n    run: Cmd([\"./server-test\", \"--port\", \"0\"]),\n    requires: [\"db\"],\n    provides: [\"ok\"],\n    claims: [\"p\"],\n    uses: [\"db\"],\n    slots: {\"mem_gb\": 2},\n    priority: -1,\n    timeout: \"30s\",\n    retries: 1,\n    tags: [\"slow\"],\n    env: {\"K\": \"V\"},\n    inputs: [\"*.c\"],\n    on_failure: RunDependents,\n)\n",
    ),
    ("s.ron", "// c\n(run: Shell(\"make -C .. && ./t \\\"x\\\"\"), cwd: \"sub\") /* x */\n"),
    ("_dir.ron", "(tags: [\"a\"], timeout: \"5m\", capacity: {\"gpu\": 2}, env: {\"A\": \"1\"})\n"),
    (
        "m.tasks.ron",
        "{\n  \"a\": (run: Shell(\"true\"), provides: [\"x\"]),\n  \"b/c\": (run: Cmd([r#\"q\"#]), requires: [\"x\"]),\n}\n",
    ),
    (
        "r.tasks.ron",
        "{ r\"a\": (run: Shell(\"é\")), r#\"b\"#: (run: Shell(\"x\"), timeout: \"1h 30m\") }",
    ),
];

/// Fragments inserted by mutations: each once broke or could break a scanner or a position.
const TOKENS: &[&[u8]] = &[
    b"\\",
    b"/",
    b"//",
    b"/*",
    b"*/",
    b"\"",
    b"r\"",
    b"r#\"",
    b"\"#",
    b"'",
    b"(",
    b")",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    "é".as_bytes(),
    "€".as_bytes(),
    "😀".as_bytes(),
    b"\\\xc3\xa9",
    b"/\xc3\xa9",
    b"\xff",
    b"\xc3",
    b"\x00",
    b"\n",
    b"\r\n",
    b"500000000000 years",
    b"99999999999999999999",
    b"-2147483649",
    b"run",
    b"timeout",
    b"Shell",
    b"Cmd",
    b"\"\"",
    b"r\"k\": ()",
    b"\\u{",
    b"\\u{110000}",
];

fn mutate(rng: &mut fastrand::Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let at = rng.usize(0..=bytes.len());
        match rng.u8(0..6) {
            0 | 1 => {
                let token = TOKENS[rng.usize(0..TOKENS.len())];
                bytes.splice(at..at, token.iter().copied());
            }
            2 => {
                let end = (at + rng.usize(0..8)).min(bytes.len());
                bytes.drain(at..end);
            }
            3 => {
                if at < bytes.len() {
                    bytes[at] = rng.u8(..);
                }
            }
            4 => bytes.truncate(at),
            _ => {
                let end = (at + rng.usize(0..16)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                let to = rng.usize(0..=bytes.len());
                bytes.splice(to..to, copy);
            }
        }
    }
    bytes
}

fn cases() -> u64 {
    std::env::var("PEXEN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

#[test]
fn mutated_task_files_never_panic_and_errors_are_located() {
    let dir = tempfile::tempdir().unwrap();
    for case in 0..cases() {
        let mut rng = fastrand::Rng::with_seed(case);
        let (name, seed) = SEEDS[rng.usize(0..SEEDS.len())];
        let input = mutate(&mut rng, seed.as_bytes());
        let root = dir.path().join(case.to_string());
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join(name), &input).unwrap();
        // A valid task next to it, so that `_dir.ron` defaults are applied to something.
        std::fs::write(root.join("z.ron"), "(run: Shell(\"true\"))").unwrap();
        let result = catch_unwind(AssertUnwindSafe(|| crate::factory::load(&root)));
        let shown = String::from_utf8_lossy(&input);
        match result {
            Err(p) => panic!(
                "case {case}: {name} panicked ({}) on {shown:?}",
                crate::pool::panic_message(&*p)
            ),
            Ok(Err(errors)) => {
                for e in &errors.0 {
                    assert!(
                        e.location().is_some() || matches!(e, super::FactoryError::Io { .. }),
                        "case {case}: {name} {shown:?}: unlocated error {e}"
                    );
                }
            }
            Ok(Ok(_)) => {}
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
fn invalid_utf8_is_an_error_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.ron"), b"(run: Shell(\"\xe9\"))").unwrap();
    let errors = crate::factory::load(dir.path()).unwrap_err();
    let text = errors.0[0].to_string();
    assert!(
        text.contains("a.ron:1:14: invalid UTF-8 (byte 0xe9)"),
        "{text}"
    );
}
