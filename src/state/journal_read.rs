//! Reading a journal: frames, checksums, and the line between a torn last write (dropped with a
//! notice) and damage (an error naming the byte offset).

use std::path::PathBuf;

use super::{
    JournalEntry, JournalError, LoadedJournal, FRAME_LEN, HEADER_LEN, MAGIC, MAX_RECORD,
    OLDEST_READABLE, VERSION,
};

/// A frame at `at`: its payload and end offset, when its length fits and its checksum matches.
fn frame(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let head = bytes.get(at..at + FRAME_LEN)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    // A real record is never empty; a zero length (with the zero checksum of nothing) is what a
    // zero-filled tail reads as.
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let end = at + FRAME_LEN + len;
    let payload = bytes.get(at + FRAME_LEN..end)?;
    (crc32fast::hash(payload) == crc).then_some((payload, end))
}

/// Whether a valid record starts anywhere after `from`: the test that tells damage in the middle
/// of the file (records follow) from a torn last write (nothing valid follows).
fn valid_record_after(bytes: &[u8], from: usize) -> bool {
    (from + 1..bytes.len().saturating_sub(FRAME_LEN - 1)).any(|at| {
        frame(bytes, at).is_some_and(|(payload, _)| {
            // An empty or non-JSON payload can match its checksum by chance; a real record cannot.
            payload.first() == Some(&b'{')
                && serde_json::from_slice::<JournalEntry>(payload).is_ok()
        })
    })
}

pub(super) fn parse(path: PathBuf, bytes: &[u8]) -> Result<LoadedJournal, JournalError> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        // A short file that starts like a journal was still cut in its header (create() renames
        // only complete headers, so this is damage, not a torn write).
        if bytes.len() < HEADER_LEN && MAGIC.starts_with(&bytes[..bytes.len().min(8)]) {
            return Err(JournalError::Corrupt {
                path,
                offset: 0,
                what: format!("header is {} bytes, expected {HEADER_LEN}", bytes.len()),
            });
        }
        return Err(JournalError::NotAJournal { path });
    }
    let found = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if !(OLDEST_READABLE..=VERSION).contains(&found) {
        return Err(JournalError::Version {
            path,
            found,
            expected: VERSION,
        });
    }
    // First the frames (sequential: each one's length says where the next starts), then the
    // payloads, in parallel when there are many: JSON decoding is most of the cost of a load.
    let mut frames: Vec<(usize, &[u8])> = Vec::new();
    let mut warnings = Vec::new();
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let Some((payload, end)) = frame(bytes, at) else {
            if valid_record_after(bytes, at) {
                return Err(JournalError::Corrupt {
                    path,
                    offset: at as u64,
                    what: "bad length or checksum, with valid records after it".into(),
                });
            }
            let what = if bytes[at..].iter().all(|&b| b == 0) {
                // What a power loss can leave after a delayed allocation: the file's length
                // was updated, its last blocks never written.
                "a zero-filled tail"
            } else {
                "a torn last record"
            };
            warnings.push(format!(
                "journal {}: dropped {what} at byte {at} ({} bytes); {}",
                path.display(),
                bytes.len() - at,
                torn_what(bytes.get(at + FRAME_LEN..).unwrap_or_default())
            ));
            break;
        };
        frames.push((at, payload));
        at = end;
    }
    let entries = decode(&frames).map_err(|(offset, e)| JournalError::Corrupt {
        path: path.clone(),
        offset: offset as u64,
        // The checksum matched, so the writer wrote this: not a torn write but a record this
        // build cannot read. Never guess.
        what: format!("unreadable record: {e}"),
    })?;
    Ok(LoadedJournal {
        path,
        entries,
        warnings,
        valid_len: at as u64,
        version: found,
    })
}

/// What a torn record was, from the start of its payload that did reach the file.
fn torn_what(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    if text.starts_with("{\"run-finished\"") {
        return "it was the end of the last run, and no task runs again because of it".into();
    }
    if text.starts_with("{\"run-started\"") {
        return "it was the start of a run that recorded nothing".into();
    }
    let task = text
        .strip_prefix("{\"task-finished\":{\"name\":\"")
        .and_then(|rest| rest.split_once('"'))
        .map(|(name, _)| name);
    match task {
        Some(name) => format!("task `{name}`, which it recorded, runs again"),
        None => "the task it recorded runs again".into(),
    }
}

type DecodeError = (usize, serde_json::Error);

/// Decodes checksummed payloads; on failure, the offset of the first unreadable one.
fn decode(frames: &[(usize, &[u8])]) -> Result<Vec<JournalEntry>, DecodeError> {
    fn chunk(frames: &[(usize, &[u8])]) -> Result<Vec<JournalEntry>, DecodeError> {
        frames
            .iter()
            .map(|&(at, payload)| serde_json::from_slice(payload).map_err(|e| (at, e)))
            .collect()
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(4);
    if threads < 2 || frames.len() < 8192 {
        return chunk(frames);
    }
    let per = frames.len().div_ceil(threads);
    let parts: Vec<Result<Vec<JournalEntry>, DecodeError>> = std::thread::scope(|s| {
        let handles: Vec<_> = frames
            .chunks(per)
            .map(|c| s.spawn(move || chunk(c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut entries = Vec::with_capacity(frames.len());
    for part in parts {
        entries.extend(part?);
    }
    Ok(entries)
}
