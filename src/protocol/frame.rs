//! Frames: a 4-byte little-endian payload length followed by the payload, either one
//! serde_json value (a typed message) or raw bytes (a file's content, announced by the message
//! before it). JSON because shared state already is `serde_json::Value` (a compact format such
//! as bincode cannot carry a self-describing `Value`), and a no-op task's frames are a few dozen
//! bytes, so the codec is not what costs. Frames over [`MAX_FRAME`] are refused on both sides,
//! checked before allocating: a corrupted or foreign stream is caught at its first frame
//! instead of allocating gigabytes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// The largest payload either side accepts (64 MiB).
pub const MAX_FRAME: usize = 64 << 20;

/// What can go wrong on the channel.
#[derive(Debug, Error)]
pub enum ChannelError {
    #[error("the other side closed the connection")]
    Closed,
    #[error("frame of {len} bytes is over the limit of {MAX_FRAME} bytes")]
    TooLarge { len: usize },
    #[error("cannot use the connection")]
    Io(#[source] io::Error),
    #[error("cannot decode a frame")]
    Decode(#[source] serde_json::Error),
    #[error("cannot encode a frame")]
    Encode(#[source] serde_json::Error),
}

/// Encodes `msg` as one frame (length prefix included), refusing payloads over the limit.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ChannelError> {
    let mut buf = vec![0; 4];
    serde_json::to_writer(&mut buf, msg).map_err(ChannelError::Encode)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(ChannelError::TooLarge { len });
    }
    buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(buf)
}

/// Writes one whole frame with a single `write_all`.
pub(crate) fn send<W: Write + ?Sized, T: Serialize>(
    out: &mut W,
    msg: &T,
) -> Result<(), ChannelError> {
    let frame = encode(msg)?;
    out.write_all(&frame).map_err(ChannelError::Io)?;
    out.flush().map_err(ChannelError::Io)
}

/// Writes one whole frame without flushing (more follow in the same write).
pub(crate) fn send_unflushed<W: Write + ?Sized, T: Serialize>(
    out: &mut W,
    msg: &T,
) -> Result<(), ChannelError> {
    let frame = encode(msg)?;
    out.write_all(&frame).map_err(ChannelError::Io)
}

/// Writes one raw frame (a file's content), refusing payloads over the limit.
pub(crate) fn send_raw<W: Write + ?Sized>(out: &mut W, bytes: &[u8]) -> Result<(), ChannelError> {
    if bytes.len() > MAX_FRAME {
        return Err(ChannelError::TooLarge { len: bytes.len() });
    }
    out.write_all(&(bytes.len() as u32).to_le_bytes())
        .and_then(|()| out.write_all(bytes))
        .and_then(|()| out.flush())
        .map_err(ChannelError::Io)
}

/// A file's content travels in raw frames of at most this many bytes, so that files over
/// [`MAX_FRAME`] travel too.
pub(crate) const CHUNK: usize = 16 << 20;

/// The largest file a peer may announce (its chunks are read as they come, never allocated
/// ahead).
pub(crate) const MAX_FILE: u64 = 16 << 30;

/// Writes a file's content as raw frames of at most [`CHUNK`] bytes (one empty frame for an
/// empty file); the reader knows the size from the message before ([`FrameReader::next_file`]).
pub(crate) fn send_file<W: Write + ?Sized>(out: &mut W, bytes: &[u8]) -> Result<(), ChannelError> {
    send_file_in(out, bytes, CHUNK)
}

fn send_file_in<W: Write + ?Sized>(
    out: &mut W,
    bytes: &[u8],
    chunk: usize,
) -> Result<(), ChannelError> {
    if bytes.is_empty() {
        return send_raw(out, bytes);
    }
    for part in bytes.chunks(chunk) {
        send_raw(out, part)?;
    }
    Ok(())
}

/// Reads frames from a pipe, with an optional wake-up time so that the caller can check its
/// deadline and cancellation while a task runs.
pub(crate) struct FrameReader {
    file: File,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    pos: usize,
}

impl FrameReader {
    pub(crate) fn new(file: File) -> Self {
        Self {
            file,
            buf: Vec::with_capacity(4096),
            pos: 0,
        }
    }

    /// The next frame, decoded; `Ok(None)` when `until` passed first.
    pub(crate) fn next<T: DeserializeOwned>(
        &mut self,
        until: Option<Instant>,
    ) -> Result<Option<T>, ChannelError> {
        match self.next_raw(until)? {
            Some(payload) => serde_json::from_slice(&payload)
                .map(Some)
                .map_err(ChannelError::Decode),
            None => Ok(None),
        }
    }

    /// The next frame's raw payload; `Ok(None)` when `until` passed first.
    pub(crate) fn next_raw(
        &mut self,
        until: Option<Instant>,
    ) -> Result<Option<Vec<u8>>, ChannelError> {
        loop {
            if let Some(payload) = self.take_frame()? {
                return Ok(Some(payload));
            }
            if let Some(until) = until {
                if !readable(self.file.as_fd(), until) {
                    return Ok(None);
                }
            }
            self.fill()?;
        }
    }

    /// A file of `size` bytes sent with [`send_file`]; `Ok(None)` when `until` passed first.
    pub(crate) fn next_file(
        &mut self,
        until: Option<Instant>,
        size: u64,
    ) -> Result<Option<Vec<u8>>, ChannelError> {
        if size > MAX_FILE {
            return Err(ChannelError::TooLarge {
                len: usize::try_from(size).unwrap_or(usize::MAX),
            });
        }
        let mut bytes = Vec::new();
        loop {
            let Some(part) = self.next_raw(until)? else {
                return Ok(None);
            };
            bytes.extend_from_slice(&part);
            if bytes.len() as u64 > size {
                return Err(ChannelError::TooLarge { len: bytes.len() });
            }
            if bytes.len() as u64 == size {
                return Ok(Some(bytes));
            }
            if part.is_empty() {
                // Only an empty file is one empty frame.
                return Ok(Some(bytes));
            }
        }
    }

    /// One text line (without its newline) before the frames start, as the bootstrap script
    /// of an ssh host writes them; at most `MAX_LINE` bytes. `Ok(None)` when `until` passed.
    pub(crate) fn line(&mut self, until: Option<Instant>) -> Result<Option<String>, ChannelError> {
        const MAX_LINE: usize = 4096;
        loop {
            let avail = &self.buf[self.pos..];
            if let Some(end) = avail.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&avail[..end]).into_owned();
                self.pos += end + 1;
                return Ok(Some(line));
            }
            if avail.len() > MAX_LINE {
                return Err(ChannelError::TooLarge { len: avail.len() });
            }
            if let Some(until) = until {
                if !readable(self.file.as_fd(), until) {
                    return Ok(None);
                }
            }
            self.fill()?;
        }
    }

    /// Whether a complete frame is buffered (the next [`FrameReader::next`] reads nothing).
    pub(crate) fn has_frame(&self) -> bool {
        let avail = &self.buf[self.pos..];
        avail.get(..4).is_some_and(|head| {
            let len = u32::from_le_bytes(head.try_into().expect("four bytes")) as usize;
            avail.len() >= 4 + len
        })
    }

    /// A complete payload from the buffer, if there is one.
    fn take_frame(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        let avail = &self.buf[self.pos..];
        let Some(head) = avail.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(head.try_into().expect("four bytes")) as usize;
        if len > MAX_FRAME {
            return Err(ChannelError::TooLarge { len });
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let payload = avail[4..4 + len].to_vec();
        self.pos += 4 + len;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(Some(payload))
    }

    /// One `read` into the buffer; end of file is [`ChannelError::Closed`].
    fn fill(&mut self) -> Result<(), ChannelError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + 64 * 1024, 0);
        loop {
            match self.file.read(&mut self.buf[old..]) {
                Ok(0) => {
                    self.buf.truncate(old);
                    return Err(ChannelError::Closed);
                }
                Ok(n) => {
                    self.buf.truncate(old + n);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(ChannelError::Io(e));
                }
            }
        }
    }
}

/// Waits until `fd` is readable (data or end of file: true) or `until` passes (false).
fn readable(fd: BorrowedFd<'_>, until: Instant) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let rest = until.saturating_duration_since(Instant::now());
    // Rounded up, so that a sub-millisecond rest does not turn into a busy loop.
    let ms = rest.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return n > 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_travel_in_chunks_and_come_back_whole() {
        let (r, mut w) = std::io::pipe().unwrap();
        let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let writer = std::thread::spawn(move || {
            send_file_in(&mut w, &big, 3_000).unwrap();
            send_file_in(&mut w, &[], 3_000).unwrap();
            send_file_in(&mut w, b"tail", 3_000).unwrap();
            big
        });
        let mut frames = FrameReader::new(std::fs::File::from(std::os::fd::OwnedFd::from(r)));
        let got = frames.next_file(None, 10_000).unwrap().unwrap();
        let big = writer.join().unwrap();
        assert_eq!(got, big);
        assert_eq!(frames.next_file(None, 0).unwrap().unwrap(), b"");
        assert_eq!(frames.next_file(None, 4).unwrap().unwrap(), b"tail");
        assert!(frames.next_file(None, MAX_FILE + 1).is_err());
    }

    use std::os::fd::FromRawFd;

    use crate::protocol::FromWorker;
    use crate::task::Outcome;

    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both descriptors are fresh and owned by nothing else.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    #[test]
    fn frames_round_trip_and_oversized_lengths_are_refused() {
        let (r, mut w) = pipe();
        let msg = FromWorker::Result {
            id: 0,
            status: Outcome::Warn,
            message: "disk".into(),
        };
        send(&mut w, &msg).unwrap();
        w.write_all(&u32::MAX.to_le_bytes()).unwrap();
        let mut reader = FrameReader::new(r);
        let got: FromWorker = reader.next(None).unwrap().unwrap();
        assert!(matches!(
            got,
            FromWorker::Result {
                status: Outcome::Warn,
                ..
            }
        ));
        let err = reader.next::<FromWorker>(None).unwrap_err();
        assert!(matches!(err, ChannelError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn a_wake_up_time_returns_none_and_eof_is_closed() {
        let (r, w) = pipe();
        let mut reader = FrameReader::new(r);
        let soon = Instant::now() + std::time::Duration::from_millis(1);
        assert!(reader.next::<FromWorker>(Some(soon)).unwrap().is_none());
        drop(w);
        let err = reader.next::<FromWorker>(None).unwrap_err();
        assert!(matches!(err, ChannelError::Closed));
    }
}
