//! Journal tests: round trip, torn tails, mid-file damage, versions, unusable directories.

use super::*;
use crate::sched::events::{Counts, Output};
use crate::state::fingerprint::Fingerprint;
use crate::task::Outcome;

fn record(i: usize) -> TaskRecord {
    let mut r = TaskRecord::new(format!("dir/task-{i}"), Outcome::Pass);
    r.duration_s = 0.25;
    r.results = vec![(Outcome::Warn, format!("result {i}"))];
    r.output = Some(Output {
        stdout: "out\n".into(),
        stderr: String::new(),
    });
    r.exports.insert("k".into(), serde_json::json!(i));
    r.fingerprint = Some(Fingerprint::default());
    r
}

/// A journal with a run-started entry and `n` task records; returns its directory and the
/// byte offset at which each record starts (plus the file length at the end).
fn sample(n: usize) -> (tempfile::TempDir, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(dir.path()).unwrap();
    j.run_started(n).unwrap();
    let mut offsets = Vec::new();
    for i in 0..n {
        offsets.push(fs::metadata(j.path()).unwrap().len());
        j.append(&record(i)).unwrap();
    }
    offsets.push(fs::metadata(j.path()).unwrap().len());
    (dir, offsets)
}

#[test]
fn records_round_trip() {
    let (dir, _) = sample(3);
    let mut j = Journal::open_append(dir.path()).unwrap().0;
    let summary = RunSummary {
        outcome: Outcome::Pass,
        counts: Counts {
            pass: 3,
            ..Counts::default()
        },
        duration_s: 1.5,
        interrupted: false,
    };
    j.run_finished(summary).unwrap();
    drop(j);
    let loaded = Journal::load(dir.path()).unwrap();
    assert!(loaded.warnings.is_empty());
    assert!(matches!(
        &loaded.entries[0],
        JournalEntry::RunStarted { tasks: 3, .. }
    ));
    let recs: Vec<TaskRecord> = loaded.records().cloned().collect();
    assert_eq!(recs, (0..3).map(record).collect::<Vec<_>>());
    assert_eq!(
        loaded.entries.last(),
        Some(&JournalEntry::RunFinished(summary))
    );
}

#[test]
fn missing_directory_is_an_empty_journal() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = Journal::load(&dir.path().join("nope")).unwrap();
    assert!(loaded.entries.is_empty() && loaded.warnings.is_empty());
    // open_append on nothing starts a journal.
    let (_, loaded) = Journal::open_append(&dir.path().join("nope")).unwrap();
    assert_eq!(loaded.valid_len, 0);
    assert!(dir.path().join("nope").join(FILE_NAME).exists());
}

#[test]
fn torn_last_record_is_dropped_at_every_offset() {
    let (dir, offsets) = sample(3);
    let path = dir.path().join(FILE_NAME);
    let full = fs::read(&path).unwrap();
    let last = offsets[2] as usize;
    for cut in last..full.len() {
        fs::write(&path, &full[..cut]).unwrap();
        let loaded = Journal::load(dir.path()).unwrap();
        let names: Vec<&str> = loaded.records().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["dir/task-0", "dir/task-1"], "cut at {cut}");
        if cut == last {
            assert!(loaded.warnings.is_empty());
        } else {
            assert_eq!(loaded.warnings.len(), 1, "cut at {cut}");
            assert!(
                loaded.warnings[0].contains(&format!("byte {last}")),
                "{}",
                loaded.warnings[0]
            );
        }
    }
}

#[test]
fn bad_checksum_in_the_last_record_is_torn() {
    let (dir, offsets) = sample(2);
    let path = dir.path().join(FILE_NAME);
    let mut bytes = fs::read(&path).unwrap();
    let at = offsets[1] as usize + FRAME_LEN + 3;
    bytes[at] ^= 0x20;
    fs::write(&path, &bytes).unwrap();
    let loaded = Journal::load(dir.path()).unwrap();
    assert_eq!(loaded.records().count(), 1);
    assert_eq!(loaded.warnings.len(), 1);
}

#[test]
fn a_zero_filled_tail_is_torn_not_damage() {
    // A power loss after a delayed allocation: the length grew, the blocks read as zeros. Over
    // the last record, or appended after it, of any length (4 KiB: a whole block).
    let (dir, offsets) = sample(2);
    let path = dir.path().join(FILE_NAME);
    let full = fs::read(&path).unwrap();
    for (keep, zeros) in [
        (offsets[1] as usize, full.len() - offsets[1] as usize),
        (full.len(), 4096),
        (full.len(), 3),
    ] {
        let mut bytes = full[..keep].to_vec();
        bytes.resize(keep + zeros, 0);
        fs::write(&path, &bytes).unwrap();
        let loaded = Journal::load(dir.path()).unwrap();
        assert_eq!(loaded.valid_len, keep as u64);
        assert!(
            loaded.warnings[0].contains("zero-filled tail"),
            "{:?}",
            loaded.warnings
        );
    }
    // Zeros with a valid record after them are damage.
    let mut bytes = full[..offsets[1] as usize].to_vec();
    bytes.extend_from_slice(&[0; 64]);
    bytes.extend_from_slice(&full[offsets[1] as usize..]);
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        Journal::load(dir.path()),
        Err(JournalError::Corrupt { .. })
    ));
}

#[test]
fn resume_cuts_the_torn_tail_before_appending() {
    let (dir, offsets) = sample(2);
    let path = dir.path().join(FILE_NAME);
    let full = fs::read(&path).unwrap();
    fs::write(&path, &full[..full.len() - 5]).unwrap();
    let (mut j, loaded) = Journal::open_append(dir.path()).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.valid_len, offsets[1]);
    j.append(&record(7)).unwrap();
    drop(j);
    let loaded = Journal::load(dir.path()).unwrap();
    assert!(loaded.warnings.is_empty());
    let names: Vec<&str> = loaded.records().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["dir/task-0", "dir/task-7"]);
}

#[test]
fn one_flipped_byte_mid_file_is_an_error_naming_the_offset() {
    let (dir, offsets) = sample(3);
    let path = dir.path().join(FILE_NAME);
    let full = fs::read(&path).unwrap();
    // Every byte of the middle record, frame header included.
    for at in offsets[1] as usize..offsets[2] as usize {
        let mut bytes = full.clone();
        bytes[at] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        match Journal::load(dir.path()) {
            Err(JournalError::Corrupt {
                offset, path: p, ..
            }) => {
                assert_eq!(offset, offsets[1], "flip at {at}");
                assert_eq!(p, path);
            }
            other => panic!("flip at {at}: expected corrupt, got {other:?}"),
        }
    }
    let mut bytes = full.clone();
    bytes[offsets[1] as usize + FRAME_LEN + 1] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let msg = Journal::load(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains(&format!("is damaged at byte {}", offsets[1])),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn garbage_and_foreign_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    fs::write(&path, b"hello, this is not a journal").unwrap();
    assert!(matches!(
        Journal::load(dir.path()),
        Err(JournalError::NotAJournal { .. })
    ));
    fs::write(&path, b"PEXEN").unwrap();
    assert!(matches!(
        Journal::load(dir.path()),
        Err(JournalError::Corrupt { offset: 0, .. })
    ));

    let mut other = MAGIC.to_vec();
    other.extend_from_slice(&(VERSION + 1).to_le_bytes());
    fs::write(&path, &other).unwrap();
    let err = Journal::load(dir.path()).unwrap_err();
    assert!(matches!(
        err,
        JournalError::Version { found, expected: VERSION, .. } if found == VERSION + 1
    ));
    assert!(
        err.to_string()
            .contains(&format!("format version {}", VERSION + 1)),
        "{err}"
    );
    // Refused on resume too: never a silent fresh start.
    assert!(Journal::open_append(dir.path()).is_err());
    assert_eq!(fs::read(&path).unwrap(), other);
}

#[test]
fn a_checksummed_but_unreadable_record_is_an_error() {
    let (dir, _) = sample(1);
    let path = dir.path().join(FILE_NAME);
    let mut bytes = fs::read(&path).unwrap();
    let payload = br#"{"from-the-future":{}}"#;
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        Journal::load(dir.path()),
        Err(JournalError::Corrupt { .. })
    ));
}

#[test]
fn an_unwritable_directory_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    fs::write(&file, b"").unwrap();
    let err = Journal::create(&file.join("state")).unwrap_err();
    assert!(matches!(err, JournalError::CreateDir { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("cannot create state directory"),
        "{err}"
    );
}

/// A journal written by pexen before checkpoints and suspend (format version 1, records without
/// `suspended`/`checkpoint`), byte for byte: it still loads, and appending to it keeps it
/// readable. The new fields are optional (an older pexen ignores them); appending marks the file
/// version 2 (for `task-submitted` records, see the version tests below), records untouched.
#[test]
fn a_journal_from_before_checkpoints_still_loads_and_takes_new_records() {
    let payloads = [
        r#"{"run-started":{"time":1718000000,"pexen_version":"0.1.0","tasks":2}}"#,
        r#"{"task-finished":{"name":"a","outcome":"pass","attempt":1,"exit_code":0,"duration_s":0.5}}"#,
        r#"{"task-finished":{"name":"b","outcome":"timeout","attempt":2,"duration_s":1.0,"message":"timed out after 1s"}}"#,
    ];
    let mut bytes = b"PEXENJNL".to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    for p in payloads {
        bytes.extend_from_slice(&(p.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(p.as_bytes()).to_le_bytes());
        bytes.extend_from_slice(p.as_bytes());
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();

    let loaded = Journal::load(dir.path()).unwrap();
    assert!(loaded.warnings.is_empty());
    let recs: Vec<&TaskRecord> = loaded.records().collect();
    assert_eq!(recs.len(), 2);
    assert!(!recs[0].suspended && !recs[0].checkpoint);
    assert_eq!((recs[1].outcome, recs[1].attempt), (Outcome::Timeout, 2));

    let (mut j, _) = Journal::open_append(dir.path()).unwrap();
    let mut suspended = TaskRecord::new("c", Outcome::Skip);
    suspended.suspended = true;
    suspended.checkpoint = true;
    j.append(&suspended).unwrap();
    j.append(&TaskRecord::new("d", Outcome::Pass)).unwrap();
    drop(j);
    let text = fs::read(dir.path().join(FILE_NAME)).unwrap();
    assert_eq!(
        &text[12..bytes.len()],
        &bytes[12..],
        "old records untouched"
    );
    assert_eq!(&text[8..12], &VERSION.to_le_bytes());
    let tail = String::from_utf8_lossy(&text[bytes.len()..]).into_owned();
    assert!(
        tail.contains(r#""suspended":true,"checkpoint":true"#),
        "{tail}"
    );
    // A record without them is written exactly as before.
    assert!(
        tail.ends_with(
            r#"{"task-finished":{"name":"d","outcome":"pass","attempt":1,"duration_s":0.0}}"#
        ),
        "{tail}"
    );
    let loaded = Journal::load(dir.path()).unwrap();
    let recs: Vec<&TaskRecord> = loaded.records().collect();
    assert_eq!(recs.len(), 4);
    assert_eq!(*recs[2], suspended);
}

/// A version 1 journal, byte for byte as pexen 0.1 wrote it (before `task-submitted` records).
fn version_1_journal(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    for payload in [
        r#"{"run-started":{"time":1718000000,"pexen_version":"0.1.0","tasks":2}}"#,
        r#"{"task-finished":{"name":"a","outcome":"pass","attempt":1,"exit_code":0,"duration_s":0.5}}"#,
    ] {
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(payload.as_bytes()).to_le_bytes());
        bytes.extend_from_slice(payload.as_bytes());
    }
    fs::write(dir.join(FILE_NAME), &bytes).unwrap();
    bytes
}

#[test]
fn a_version_1_journal_still_loads_and_is_upgraded_before_appending() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = version_1_journal(dir.path());
    let loaded = Journal::load(dir.path()).unwrap();
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.records().count(), 1);
    assert!(loaded.unfinished_jobs().is_empty());
    // Loading alone changes nothing.
    assert_eq!(fs::read(dir.path().join(FILE_NAME)).unwrap(), bytes);

    let (mut j, _) = Journal::open_append(dir.path()).unwrap();
    j.submitted(&TaskName::new("b"), 1, "42", None).unwrap();
    drop(j);
    let after = fs::read(dir.path().join(FILE_NAME)).unwrap();
    assert_eq!(&after[8..12], &VERSION.to_le_bytes());
    assert_eq!(&after[12..bytes.len()], &bytes[12..]);
    let loaded = Journal::load(dir.path()).unwrap();
    assert_eq!(loaded.version, VERSION);
    assert_eq!(loaded.records().count(), 1);
    assert_eq!(loaded.unfinished_jobs().len(), 1);
}

#[test]
fn unfinished_jobs_are_those_without_a_later_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(dir.path()).unwrap();
    let fp = Fingerprint::default();
    j.submitted(&TaskName::new("done"), 1, "1", Some(&fp))
        .unwrap();
    j.append(&TaskRecord::new("done", Outcome::Pass)).unwrap();
    j.submitted(&TaskName::new("requeued"), 1, "2", Some(&fp))
        .unwrap();
    j.submitted(&TaskName::new("running"), 1, "3", None)
        .unwrap();
    j.submitted(&TaskName::new("requeued"), 1, "4", Some(&fp))
        .unwrap();
    // Finished once, then submitted again by a later (killed) run.
    j.submitted(&TaskName::new("done"), 1, "5", Some(&fp))
        .unwrap();
    drop(j);
    let jobs: Vec<(String, String)> = Journal::load(dir.path())
        .unwrap()
        .unfinished_jobs()
        .into_iter()
        .map(|j| (j.task.to_string(), j.job))
        .collect();
    assert_eq!(
        jobs,
        [
            ("requeued".to_owned(), "4".to_owned()),
            ("running".to_owned(), "3".to_owned()),
            ("done".to_owned(), "5".to_owned()),
        ]
    );
}

#[test]
fn a_torn_record_is_named_for_what_it_was() {
    let (dir, offsets) = sample(2);
    let path = dir.path().join(FILE_NAME);
    let full = fs::read(&path).unwrap();
    // A task record torn after its name: that task runs again.
    let last = offsets[1] as usize;
    fs::write(&path, &full[..full.len() - 3]).unwrap();
    let loaded = Journal::load(dir.path()).unwrap();
    assert!(
        loaded.warnings[0].ends_with("task `dir/task-1`, which it recorded, runs again"),
        "{}",
        loaded.warnings[0]
    );
    // Torn inside its frame header: nothing says which task.
    fs::write(&path, &full[..last + 3]).unwrap();
    let loaded = Journal::load(dir.path()).unwrap();
    assert!(loaded.warnings[0].ends_with("the task it recorded runs again"));
    // The end of a run, torn: no task is announced.
    fs::write(&path, &full).unwrap();
    let mut j = Journal::open_append(dir.path()).unwrap().0;
    j.run_finished(RunSummary {
        outcome: Outcome::Pass,
        counts: Counts::default(),
        duration_s: 1.0,
        interrupted: false,
    })
    .unwrap();
    drop(j);
    let full = fs::read(&path).unwrap();
    fs::write(&path, &full[..full.len() - 2]).unwrap();
    let loaded = Journal::load(dir.path()).unwrap();
    assert!(
        loaded.warnings[0].contains("the end of the last run, and no task runs again"),
        "{}",
        loaded.warnings[0]
    );
}
