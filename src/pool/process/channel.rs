//! The framed, typed channel between the scheduler and a worker process.
//!
//! A frame is a 4-byte little-endian payload length followed by the payload, one serde_json
//! value. JSON because shared state already is `serde_json::Value` (a compact format such as
//! bincode cannot carry a self-describing `Value`), and a no-op task's frames are a few dozen
//! bytes, so the codec is not what costs. Frames over [`MAX_FRAME`] are refused on both sides:
//! a corrupted or foreign stream is caught at its first frame instead of allocating gigabytes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::context::Shared;
use crate::task::{Outcome, TaskName};

/// Version of the protocol; bumped on any change of the messages below.
pub const PROTOCOL: u32 = 2;

/// The largest payload either side accepts (64 MiB).
pub const MAX_FRAME: usize = 64 << 20;

/// Scheduler to worker: run one attempt. Serialized from borrows, so that the shared state is
/// not cloned per attempt.
#[derive(Serialize)]
pub(crate) struct RunRef<'a> {
    pub task: &'a TaskName,
    pub attempt: u32,
    pub shared: &'a Shared,
    pub timeout_ms: Option<u64>,
    /// The task's checkpoint directory (SPEC section 12).
    pub checkpoint: Option<&'a std::path::Path>,
}

/// What the worker reads for a [`RunRef`].
#[derive(Deserialize)]
pub(crate) struct RunOwned {
    pub task: TaskName,
    pub attempt: u32,
    pub shared: Shared,
    pub timeout_ms: Option<u64>,
    pub checkpoint: Option<std::path::PathBuf>,
}

/// Worker to scheduler.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// First frame of every worker: the protocol it speaks.
    Hello { protocol: u32, pid: u32 },
    /// One result reported with `ctx.report` while the task runs.
    Result { status: Outcome, message: String },
    /// The attempt ended (the closure returned or panicked).
    Done {
        outcome: Outcome,
        message: Option<String>,
        exports: Shared,
        /// The closure returned `TaskError::suspend`.
        suspend: bool,
    },
}

/// What can go wrong on the channel.
#[derive(Debug, Error)]
pub(crate) enum ChannelError {
    #[error("the worker closed the channel")]
    Closed,
    #[error("frame of {len} bytes is over the limit of {MAX_FRAME} bytes")]
    TooLarge { len: usize },
    #[error("cannot use the worker channel")]
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
pub(crate) fn send<W: Write, T: Serialize>(out: &mut W, msg: &T) -> Result<(), ChannelError> {
    let frame = encode(msg)?;
    out.write_all(&frame).map_err(ChannelError::Io)?;
    out.flush().map_err(ChannelError::Io)
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
        loop {
            if let Some(payload) = self.take_frame()? {
                return serde_json::from_slice(&payload)
                    .map(Some)
                    .map_err(ChannelError::Decode);
            }
            if let Some(until) = until {
                if !readable(self.file.as_fd(), until) {
                    return Ok(None);
                }
            }
            self.fill()?;
        }
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

    use std::os::fd::FromRawFd;

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
