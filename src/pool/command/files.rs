//! The files a command attempt shares with pexen: captured output, the results file it appends
//! to while it runs, and the export file read after it exits.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::context::{ResultSink, Shared};
use crate::task::Outcome;

/// A nameless file for one captured stream.
///
/// A memfd first: two `memfd_create`s cost nothing next to a spawn, where `O_TMPFILE` files on a
/// disk file system (ext4 `/tmp`) measured ~45% on top of a `/bin/true` spawn (inode allocation
/// and journaling). The price: output lives in memory (swappable shmem) until the attempt ends.
/// Without memfd, a nameless `O_TMPFILE` file in `dir`; without that, a named file unlinked at
/// once. Either way no `unlink` per attempt, and the data goes away with the last descriptor
/// (a background process still writing to it included).
pub(super) fn capture_file(dir: &Path, fallback_name: &str) -> io::Result<File> {
    // SAFETY: the name is a valid C string; the call returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"pexen-capture".as_ptr(), libc::MFD_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        return Ok(unsafe { File::from_raw_fd(fd) });
    }
    let unnamed = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match unnamed {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            let path = dir.join(fallback_name);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            fs::remove_file(&path)?;
            Ok(file)
        }
        other => other,
    }
}

/// What a captured stream held, as lossy UTF-8; past `cap` bytes only the first and last
/// `cap / 2` are kept, around a marker saying how much was left out.
pub(crate) fn read_capped(file: &File, cap: usize) -> io::Result<String> {
    let len = file.metadata()?.len();
    let read = |offset: u64, n: usize| -> io::Result<Vec<u8>> {
        let mut buf = vec![0; n];
        let got = read_full_at(file, &mut buf, offset)?;
        buf.truncate(got);
        Ok(buf)
    };
    if len <= cap as u64 {
        let all = read(0, len as usize)?;
        return Ok(String::from_utf8_lossy(&all).into_owned());
    }
    let head_len = cap / 2;
    let tail_len = cap - head_len;
    let head = read(0, head_len)?;
    let tail = read(len - tail_len as u64, tail_len)?;
    let omitted = len - cap as u64;
    Ok(format!(
        "{}\n[... {omitted} bytes omitted ...]\n{}",
        String::from_utf8_lossy(&head),
        String::from_utf8_lossy(&tail)
    ))
}

/// Frees the part of a capture file that [`read_capped`] will leave out, while the task still
/// writes to it, so that a stream holds at most `cap` bytes plus what was written since the last
/// call (one tick). `freed` is where the freed range ends, kept between calls.
///
/// The file keeps its length (the writer's offset goes on; the omitted count stays exact): the
/// middle becomes a hole (`FALLOC_FL_PUNCH_HOLE`, which memfds, tmpfs, ext4, xfs and btrfs
/// support; elsewhere the call fails and the stream is only capped when read). The tail to keep
/// is the last `cap - cap / 2` bytes of the final length, which only grows past what was seen
/// here, so a freed byte is never one that will be read.
pub(super) fn free_middle(file: &File, cap: usize, freed: &mut u64) {
    let Ok(meta) = file.metadata() else { return };
    let len = meta.len();
    let head = (cap / 2) as u64;
    let tail = (cap - cap / 2) as u64;
    if len <= cap as u64 {
        return;
    }
    let from = (*freed).max(head);
    let to = len - tail;
    if to <= from {
        return;
    }
    // SAFETY: fallocate takes a descriptor we own and three integers; it touches no memory.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            from as libc::off_t,
            (to - from) as libc::off_t,
        )
    };
    if r == 0 {
        *freed = to;
    }
}

/// Like `read_exact_at`, but a file that shrank meanwhile yields what is there.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Longest pending results line kept; past it the line is reported as malformed, so that a task
/// writing junk without newlines cannot grow our memory without bound.
const MAX_LINE: usize = 64 * 1024;

/// Follows a `PEXEN_RESULTS` file while its task runs, turning each complete line into a result.
///
/// The file is not created up front (one `open` less per spawn): until the task creates it,
/// a poll is one failed `open`.
pub(crate) struct ResultsReader {
    path: PathBuf,
    file: Option<File>,
    offset: u64,
    pending: Vec<u8>,
}

impl ResultsReader {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            offset: 0,
            pending: Vec::new(),
        }
    }

    /// Streams the lines completed since the last poll.
    pub(crate) fn poll(&mut self, sink: &dyn ResultSink) {
        self.read(sink, false);
    }

    /// Streams what is left, a last line without its newline included, and removes the file.
    pub(crate) fn finish(mut self, sink: &dyn ResultSink) {
        self.read(sink, true);
        if self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }

    fn read(&mut self, sink: &dyn ResultSink, at_end: bool) {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(file) => self.file = Some(file),
                Err(_) => return,
            }
        }
        let Some(file) = &self.file else { return };
        let mut chunk = [0u8; 8192];
        loop {
            match file.read_at(&mut chunk, self.offset) {
                Ok(0) => break,
                Ok(n) => {
                    self.offset += n as u64;
                    self.pending.extend_from_slice(&chunk[..n]);
                    emit_lines(&mut self.pending, sink);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    sink.result(Outcome::Error, format!("cannot read the results file: {e}"));
                    self.file = None;
                    return;
                }
            }
        }
        if at_end && !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            emit(sink, &line);
        }
    }
}

/// Streams the complete lines of `pending` and keeps the rest.
fn emit_lines(pending: &mut Vec<u8>, sink: &dyn ResultSink) {
    let mut start = 0;
    while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
        emit(sink, &pending[start..start + nl]);
        start += nl + 1;
    }
    pending.drain(..start);
    if pending.len() > MAX_LINE {
        let line = std::mem::take(pending);
        emit(sink, &line);
    }
}

/// One `STATUS message` line to one result; anything else to an `error` result quoting it.
fn emit(sink: &dyn ResultSink, line: &[u8]) {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches('\r');
    if line.trim().is_empty() {
        return;
    }
    if let Some((status, message)) = parse_result(line) {
        sink.result(status, message.to_owned());
    } else {
        let shown: String = line.chars().take(200).collect();
        sink.result(
            Outcome::Error,
            format!("malformed result line `{shown}`: expected `STATUS message` with STATUS one of pass, warn, fail, error, skip"),
        );
    }
}

fn parse_result(line: &str) -> Option<(Outcome, &str)> {
    let (word, message) = line.split_once(' ').unwrap_or((line, ""));
    match Outcome::parse(word)? {
        // Timeouts are pexen's to decide, not a status a task reports about itself.
        Outcome::Timeout => None,
        status => Some((status, message.trim())),
    }
}

/// A `PEXEN_EXPORT` file that cannot be used.
#[derive(Debug, Error)]
pub enum ExportError {
    #[error("cannot read the export file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("malformed export line {line} `{text}`: expected KEY=VALUE or KEY<<DELIMITER")]
    Malformed { line: usize, text: String },
    #[error("export `{key}` from line {line}: closing delimiter `{delimiter}` not found")]
    Unterminated {
        key: String,
        line: usize,
        delimiter: String,
    },
}

/// Reads and removes a `PEXEN_EXPORT` file: `KEY=VALUE` lines and, as `$GITHUB_ENV`,
/// `KEY<<DELIMITER` blocks for multi-line values. No file means no exports.
pub(crate) fn read_exports(path: &Path) -> Result<Shared, ExportError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Shared::new()),
        Err(source) => {
            return Err(ExportError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let _ = fs::remove_file(path);
    parse_exports(&String::from_utf8_lossy(&bytes))
}

fn parse_exports(text: &str) -> Result<Shared, ExportError> {
    let valid_key =
        |key: &str| !key.is_empty() && !key.contains(|c: char| c.is_whitespace() || c == '\0');
    let mut exports = Shared::new();
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    while let Some((number, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let heredoc = line.split_once("<<").filter(|(key, _)| !key.contains('='));
        if let Some((key, delimiter)) = heredoc {
            if !valid_key(key) || delimiter.is_empty() {
                return Err(malformed(number, line));
            }
            let mut value: Vec<&str> = Vec::new();
            let mut closed = false;
            for (_, body) in lines.by_ref() {
                if body == delimiter {
                    closed = true;
                    break;
                }
                value.push(body);
            }
            if !closed {
                return Err(ExportError::Unterminated {
                    key: key.to_owned(),
                    line: number,
                    delimiter: delimiter.to_owned(),
                });
            }
            exports.insert(key.to_owned(), value.join("\n").into());
        } else {
            match line.split_once('=') {
                Some((key, value)) if valid_key(key) => {
                    exports.insert(key.to_owned(), value.into());
                }
                _ => return Err(malformed(number, line)),
            }
        }
    }
    Ok(exports)
}

fn malformed(line: usize, text: &str) -> ExportError {
    ExportError::Malformed {
        line,
        text: text.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_parse_pairs_and_heredocs() {
        let got = parse_exports("A=1\n\nB=x=y\nC<<EOF\nline 1\nline 2\nEOF\nD=\n").unwrap();
        assert_eq!(got["A"], "1");
        assert_eq!(got["B"], "x=y");
        assert_eq!(got["C"], "line 1\nline 2");
        assert_eq!(got["D"], "");
    }

    #[test]
    fn exports_reject_malformed_lines() {
        let err = parse_exports("A=1\njunk\n").unwrap_err().to_string();
        assert!(err.contains("line 2 `junk`"), "{err}");
        assert!(parse_exports("=1\n").is_err());
        let err = parse_exports("K<<END\nabc\n").unwrap_err().to_string();
        assert!(err.contains("`END` not found"), "{err}");
    }

    #[test]
    fn result_lines_parse() {
        assert_eq!(parse_result("pass step 1"), Some((Outcome::Pass, "step 1")));
        assert_eq!(parse_result("warn"), Some((Outcome::Warn, "")));
        assert_eq!(parse_result("timeout x"), None);
        assert_eq!(parse_result("PASS x"), None);
    }

    #[test]
    fn freeing_the_middle_keeps_what_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = capture_file(dir.path(), "x").unwrap();
        let page = vec![b'm'; 1 << 20];
        file.write_all_at(b"HEAD", 0).unwrap();
        let mut freed = 0;
        for i in 0..8_u64 {
            file.write_all_at(&page, 4 + i * (1 << 20)).unwrap();
            free_middle(&file, 8192, &mut freed);
        }
        file.write_all_at(b"TAIL", 4 + 8 * (1 << 20)).unwrap();
        let meta = file.metadata().unwrap();
        // 8 MiB written, at most the last MiB plus the kept head and tail still allocated.
        assert!(
            std::os::unix::fs::MetadataExt::blocks(&meta) * 512 <= (1 << 20) + 3 * 8192,
            "{} bytes allocated",
            std::os::unix::fs::MetadataExt::blocks(&meta) * 512
        );
        let text = read_capped(&file, 8192).unwrap();
        assert!(text.starts_with("HEADmmm"), "{}", &text[..10]);
        assert!(text.ends_with("mmmTAIL"));
        assert!(text.contains(&format!(
            "[... {} bytes omitted ...]",
            8 * (1 << 20) + 8 - 8192
        )));
    }

    #[test]
    fn capped_output_keeps_head_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let file = capture_file(dir.path(), "x").unwrap();
        file.write_all_at(b"0123456789abcdefghij", 0).unwrap();
        assert_eq!(read_capped(&file, 100).unwrap(), "0123456789abcdefghij");
        assert_eq!(
            read_capped(&file, 8).unwrap(),
            "0123\n[... 12 bytes omitted ...]\nghij"
        );
    }
}
