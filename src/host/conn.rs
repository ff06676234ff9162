//! A live connection to a remote worker: a writer shared by the attempts that run there, and a
//! reader thread that routes each frame to the attempt it belongs to (by id). A connection that
//! ends, breaks the protocol or stays silent past `SILENCE_LIMIT` is lost: every attempt
//! waiting on it hears so, and the host is told.
//!
//! The worker queues attempts beyond its `jobs` and says when each really starts; it starts
//! one only after sending the `Done` of the one whose place it takes. Each attempt is recorded
//! by its own thread, so a start heard here is reported only once every end the reader routed
//! before it is recorded ([`Conn::wait_recorded`]): the run's events never show the host
//! running more than its `jobs`.
//!
//! An attempt may also be handed to the connection once its `Run` is sent ([`Driven`]): the
//! reader then reports its start, results and end to the run itself, those of one packet
//! together, and no thread waits for it (see `host::driven`). As it does, it may write the
//! `Run`s of the attempts that take their room itself, when that cannot block ([`Outbox`]).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::driven::Driven;
use super::ssh::{Link, Transport, Waited};
use crate::context::Shared;
use crate::pool::attempt::{Carrier, News};
use crate::protocol::{ChannelError, FileEntry, FrameReader, FromWorker, SILENCE_LIMIT};
use crate::sched::events::Output;
use crate::task::Outcome;

/// What an attempt waiting on a connection hears.
pub(crate) enum Msg {
    /// The attempt started on the worker when the reader heard so; report it once this many
    /// ends of attempts of this connection are recorded.
    Started(u64, Instant),
    /// The worker dropped the queued attempt (cancel): it never started.
    Dropped,
    Result(Outcome, String),
    Done(Box<Done>),
    /// The checkpoint files the host lacks (see `host::checkpoint`).
    Need(Vec<String>),
    Lost(String),
}

/// Who hears of an attempt: its thread, through its mailbox, or the reader itself.
pub(crate) enum Route {
    Thread(Sender),
    Driven(Box<Driven>),
}

/// The sending half of an attempt's mailbox (the reader's, in `Conn::pending`); dropping it
/// closes the box.
pub(crate) struct Sender(Arc<Mailbox>);

/// The messages for one attempt, which its thread waits for. A mutex and a condition variable,
/// not a channel: crossbeam's channels spin and yield before they sleep, and with a thread per
/// attempt in flight, all waiting on two cores, that spinning was a sixth of the controller's
/// time in a run of short commands on a host.
pub(crate) struct Mailbox {
    box_: Mutex<Letters>,
    came: Condvar,
}

#[derive(Default)]
struct Letters {
    queue: std::collections::VecDeque<Msg>,
    /// The sender is gone: nothing more will come.
    closed: bool,
    /// The receiver is gone: nobody reads what comes.
    unread: bool,
}

/// A new mailbox: the sender for the reader, the receiver for the attempt's thread.
pub(crate) fn mailbox() -> (Sender, Receiver) {
    let inner = Arc::new(Mailbox {
        box_: Mutex::new(Letters::default()),
        came: Condvar::new(),
    });
    (Sender(inner.clone()), Receiver(inner))
}

impl Sender {
    /// Puts `msg` in the box; gives it back if nobody reads the box any more.
    pub(crate) fn send(&self, msg: Msg) -> Result<(), Msg> {
        let mut letters = lock(&self.0.box_);
        if letters.unread {
            return Err(msg);
        }
        letters.queue.push_back(msg);
        drop(letters);
        self.0.came.notify_one();
        Ok(())
    }

    /// Puts `msg` in the box without waking the receiver: it finds it the next time it looks
    /// (when another message comes, or its wait times out).
    pub(crate) fn send_quiet(&self, msg: Msg) {
        let mut letters = lock(&self.0.box_);
        if !letters.unread {
            letters.queue.push_back(msg);
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        lock(&self.0.box_).closed = true;
        self.0.came.notify_one();
    }
}

/// The receiving half of an attempt's mailbox.
pub(crate) struct Receiver(Arc<Mailbox>);

impl Receiver {
    /// The next message, waiting at most `limit` (`Disconnected`: the box is closed and empty).
    pub(crate) fn recv_timeout(&self, limit: Duration) -> Result<Msg, RecvTimeoutError> {
        let until = Instant::now() + limit;
        let mut letters = lock(&self.0.box_);
        loop {
            if let Some(msg) = letters.queue.pop_front() {
                return Ok(msg);
            }
            if letters.closed {
                return Err(RecvTimeoutError::Disconnected);
            }
            let rest = until.saturating_duration_since(Instant::now());
            if rest.is_zero() {
                return Err(RecvTimeoutError::Timeout);
            }
            letters = self
                .0
                .came
                .wait_timeout(letters, rest)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        lock(&self.0.box_).unread = true;
    }
}

pub(crate) struct Done {
    pub outcome: Outcome,
    pub message: Option<String>,
    pub exports: Shared,
    pub exit_code: Option<i32>,
    pub output: Option<Output>,
    pub suspend: bool,
    pub files: super::checkpoint::Files,
    /// What the host's copy of the checkpoint holds after an attempt that did not succeed,
    /// and the files that changed.
    pub checkpoint: Option<super::checkpoint::Back>,
}

pub(crate) struct Conn {
    writer: Mutex<Writer>,
    /// How far into what was written the worker is known to have read: the end of the last
    /// `Run` it answered (see [`Outbox`]). Only the reader changes it.
    acked: AtomicU64,
    pending: Mutex<HashMap<u64, Route>>,
    /// The run's places, for the attempts handed to the reader.
    owner: std::sync::Weak<super::Hosts>,
    alive: AtomicBool,
    /// Set when the scheduler ends the connection itself: not a loss.
    closing: AtomicBool,
    transport: Mutex<Box<dyn Transport>>,
    reader: Mutex<Option<JoinHandle<()>>>,
    /// Path -> hash of the files the host has (its synced tree, outputs pushed since).
    pub(crate) known: Mutex<HashMap<String, String>>,
    pub(crate) cpus: usize,
    /// What the worker announced of itself (a daemon's `--tag`, `--capacity`).
    pub(crate) tags: Vec<String>,
    pub(crate) capacity: std::collections::BTreeMap<String, u32>,
    pub(crate) uploaded: bool,
    pub(crate) files_sent: usize,
    /// `Done`s routed to an attempt so far (the reader's count).
    routed: std::sync::atomic::AtomicU64,
    /// Ends of attempts of this connection recorded by the run so far.
    recorded: Mutex<u64>,
    recorded_more: Condvar,
    /// The host's attempts are short (see `host::DEEP_AHEAD_BELOW`): a start wakes nobody. The
    /// attempt's thread hears of it with its `Done`, a few milliseconds later, or within
    /// `host::QUIET_START_LAG`; the start's time is the one the reader heard it at. That spares
    /// a wake-up and a context switch per attempt in a run of short commands.
    quiet_starts: AtomicBool,
}

/// The writing end of a connection, and how many bytes went through it.
struct Writer {
    out: Option<Box<dyn Write + Send>>,
    sent: u64,
}

impl Writer {
    /// The writing end, counting what goes through it; `None` once closed.
    fn counted(&mut self) -> Option<Counted<'_>> {
        let Writer { out, sent } = self;
        out.as_mut().map(|out| Counted {
            out: out.as_mut(),
            sent,
        })
    }
}

/// A connection's writing end that counts the bytes written ([`Writer::sent`]).
struct Counted<'a> {
    out: &'a mut (dyn Write + Send),
    sent: &'a mut u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        *self.sent += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Bytes that may be written to a connection and not yet be seen read by its worker, for
/// the reader to write more itself ([`Outbox`]). The buffers on the way to the worker take
/// far more than this without the worker reading anything: the pipe to the ssh client or to
/// the TLS pump (64 KiB; both read it whatever the worker does), ssh's channel window
/// (megabytes), the sockets, the pipe into the worker. So a write within it returns, and the
/// reader never waits on a worker that may itself wait, its results unread, for the reader.
/// The `Run`s queued ahead on a worker are not seen read until they start: a few thousand
/// bytes at most (32 queued of about a hundred bytes each).
pub(super) const IN_FLIGHT_LIMIT: u64 = 16 << 10;

/// The `Run`s a connection's reader writes itself, for the jobs the run offers it as it
/// records the ends it heard ([`Carrier`]): gathered while the run's lock is held, written
/// in one write once it is released ([`Outbox::finish`]). The connection's writer is taken
/// at the first one, only if free at once, and held until they are written, so that no other
/// write comes between a turn passed and its `Run` (see `Hosts::carry`).
pub(crate) struct Outbox<'a> {
    conn: &'a Arc<Conn>,
    hosts: &'a super::Hosts,
    writer: Option<std::sync::MutexGuard<'a, Writer>>,
    /// The writer was taken by someone else (or the connection is going): nothing is carried.
    refused: bool,
    frames: Vec<u8>,
}

impl<'a> Outbox<'a> {
    pub(super) fn conn(&self) -> &'a Arc<Conn> {
        self.conn
    }

    /// Whether `len` more bytes may go now without blocking (see [`IN_FLIGHT_LIMIT`]);
    /// takes the writer if it is free.
    pub(super) fn has_room(&mut self, len: usize) -> bool {
        if self.writer.is_none() && !self.refused {
            let conn = self.conn;
            self.writer = if conn.is_alive() && !conn.closing.load(Ordering::SeqCst) {
                conn.writer.try_lock().ok().filter(|w| w.out.is_some())
            } else {
                None
            };
            self.refused = self.writer.is_none();
        }
        let Some(w) = &self.writer else {
            return false;
        };
        let acked = self.conn.acked.load(Ordering::Relaxed);
        let pending = w.sent + (self.frames.len() + len) as u64;
        pending.saturating_sub(acked) <= IN_FLIGHT_LIMIT
    }

    /// Adds a frame ([`Outbox::has_room`] said yes); returns where it ends in the stream.
    pub(super) fn push(&mut self, frame: &[u8]) -> u64 {
        self.frames.extend_from_slice(frame);
        let sent = self.writer.as_ref().map_or(0, |w| w.sent);
        sent + self.frames.len() as u64
    }

    /// Writes what was gathered, in one write. A broken connection is the reader's to notice:
    /// it reads the end of the stream next, and every attempt sent here hears so.
    fn finish(mut self) {
        let Some(mut w) = self.writer.take() else {
            return;
        };
        if self.frames.is_empty() {
            return;
        }
        if let Some(mut out) = w.counted() {
            let _ = out.write_all(&self.frames).and_then(|()| out.flush());
        }
    }
}

impl Carrier for Outbox<'_> {
    fn carry(&mut self, job: &crate::pool::Job) -> bool {
        let hosts = self.hosts;
        hosts.carry(self, job)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Conn {
    /// Takes over a set-up link and starts its reader; `on_lost` is called once if the
    /// connection is lost (not when it is closed by [`Conn::close`]).
    pub(crate) fn start(
        link: Link,
        owner: std::sync::Weak<super::Hosts>,
        on_lost: impl FnOnce(String) + Send + 'static,
    ) -> Arc<Conn> {
        let Link {
            transport,
            stdin,
            frames,
            stderr,
            hello,
            uploaded,
            synced,
            files_sent,
        } = link;
        let known = synced.into_iter().map(|e| (e.path, e.hash)).collect();
        let conn = Arc::new(Conn {
            writer: Mutex::new(Writer {
                out: Some(stdin),
                sent: 0,
            }),
            acked: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            owner,
            alive: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            transport: Mutex::new(transport),
            reader: Mutex::new(None),
            known: Mutex::new(known),
            cpus: hello.cpus.max(1),
            tags: hello.tags,
            capacity: hello.capacity,
            uploaded,
            files_sent,
            routed: std::sync::atomic::AtomicU64::new(0),
            recorded: Mutex::new(0),
            recorded_more: Condvar::new(),
            quiet_starts: AtomicBool::new(false),
        });
        let reader = {
            let conn = conn.clone();
            std::thread::Builder::new()
                .name("pexen-host-reader".into())
                .spawn(move || {
                    let mut news = Vec::new();
                    let reason = conn.read(frames, &mut news);
                    conn.lost(&reason, &stderr, on_lost, &mut news);
                })
                .expect("the OS refused to start a thread")
        };
        *lock(&conn.reader) = Some(reader);
        conn
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Registers an attempt's mailbox under `id`.
    pub(crate) fn expect(&self, id: u64, tx: Sender) -> bool {
        let mut pending = lock(&self.pending);
        // Checked under the lock that `lost` drains: no attempt waits forever.
        if !self.is_alive() {
            return false;
        }
        pending.insert(id, Route::Thread(tx));
        true
    }

    /// Hands attempt `id` (expected) to the reader: from now on it reports the attempt's
    /// start and end to the run. False if the connection was lost meanwhile.
    pub(crate) fn drive(&self, id: u64, driven: Driven) -> bool {
        match lock(&self.pending).get_mut(&id) {
            Some(route) => {
                *route = Route::Driven(Box::new(driven));
                true
            }
            None => false,
        }
    }

    /// Reports what the reader heard of the attempts handed to it, in order; the run may
    /// give the reader the attempts that take the room of those that ended ([`Outbox`]).
    fn report(self: &Arc<Self>, news: &mut Vec<News>) {
        if news.is_empty() {
            return;
        }
        match self.owner.upgrade() {
            Some(hosts) => {
                let mut outbox = Outbox {
                    conn: self,
                    hosts: &hosts,
                    writer: None,
                    refused: false,
                    frames: Vec::new(),
                };
                hosts.record(news, Some(&mut outbox));
                outbox.finish();
            }
            None => news.clear(),
        }
    }

    /// The worker read up to `sent` (the end of a `Run` it answered; 0: not known).
    fn acked(&self, sent: u64) {
        self.acked.fetch_max(sent, Ordering::Relaxed);
    }

    /// Handed-off attempt `id`'s `Run`, sent by its thread, ends at `sent` in the stream.
    pub(crate) fn sent_to(&self, id: u64, sent: u64) {
        if let Some(Route::Driven(d)) = lock(&self.pending).get_mut(&id) {
            d.sent = sent;
        }
    }

    /// Registers attempt `id`, sent by the reader itself ([`Outbox`]), as handed to it.
    pub(super) fn drive_sent(&self, id: u64, driven: Driven) {
        lock(&self.pending).insert(id, Route::Driven(Box::new(driven)));
    }

    pub(crate) fn forget(&self, id: u64) {
        lock(&self.pending).remove(&id);
    }

    /// The end of an attempt whose `Done` came through this connection is recorded.
    pub(crate) fn end_recorded(&self) {
        *lock(&self.recorded) += 1;
        self.recorded_more.notify_all();
    }

    /// Whether a start wakes the attempt's thread (set from the host's average attempt).
    pub(crate) fn set_quiet_starts(&self, quiet: bool) {
        self.quiet_starts.store(quiet, Ordering::Relaxed);
    }

    /// Whether a start may come without waking its attempt's thread: it then looks often.
    pub(crate) fn quiet_starts(&self) -> bool {
        self.quiet_starts.load(Ordering::Relaxed)
    }

    /// Waits until `ends` ends of this connection's attempts are recorded; false if the
    /// connection is lost meanwhile.
    pub(crate) fn wait_recorded(&self, ends: u64) -> bool {
        let mut recorded = lock(&self.recorded);
        while *recorded < ends {
            if !self.is_alive() {
                return false;
            }
            recorded = self
                .recorded_more
                .wait_timeout(recorded, Duration::from_millis(25))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Sends frames (a message, and raw frames after it) as one unit; returns where they
    /// end in the stream.
    pub(crate) fn send_with<F>(&self, f: F) -> Result<u64, ChannelError>
    where
        F: FnOnce(&mut dyn Write) -> Result<(), ChannelError>,
    {
        let mut w = lock(&self.writer);
        match w.counted() {
            Some(mut out) => f(&mut out).map(|()| *out.sent),
            None => Err(ChannelError::Closed),
        }
    }

    /// Routes frames until the connection ends; returns why. `news`: what is heard of the
    /// attempts handed to the reader, reported once no further frame is buffered (one hold of
    /// the run's lock per packet), and before anything is routed to an attempt's thread (whose
    /// report must come after).
    fn read(self: &Arc<Self>, mut frames: FrameReader, news: &mut Vec<News>) -> String {
        loop {
            if !frames.has_frame() {
                self.report(news);
            }
            let until = Instant::now() + SILENCE_LIMIT;
            let msg = match frames.next::<FromWorker>(Some(until)) {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    return format!(
                        "no word from the worker for {}",
                        humantime::format_duration(SILENCE_LIMIT)
                    )
                }
                Err(ChannelError::Closed) => return "the connection closed".to_string(),
                Err(e) => return format!("protocol error: {}", crate::error::error_chain(&e)),
            };
            match msg {
                FromWorker::Beat => {}
                FromWorker::Started { id } => {
                    if let Some(begin) = self.driven_start(id) {
                        // After the ends routed to threads before it are recorded.
                        let ends = self.routed.load(Ordering::SeqCst);
                        if *lock(&self.recorded) < ends {
                            self.report(news);
                            self.wait_recorded(ends);
                        }
                        news.push(begin);
                        continue;
                    }
                    self.report(news);
                    if let Some(Route::Thread(tx)) = lock(&self.pending).get(&id) {
                        let ends = self.routed.load(Ordering::SeqCst);
                        let started = Msg::Started(ends, Instant::now());
                        if self.quiet_starts.load(Ordering::Relaxed) {
                            tx.send_quiet(started);
                        } else {
                            let _ = tx.send(started);
                        }
                    }
                }
                FromWorker::Dropped { id } => {
                    let route = lock(&self.pending).remove(&id);
                    match route {
                        Some(Route::Thread(tx)) => {
                            self.report(news);
                            let _ = tx.send(Msg::Dropped);
                        }
                        Some(Route::Driven(d)) => {
                            self.acked(d.sent);
                            if let Some(hosts) = self.owner.upgrade() {
                                news.push(hosts.driven_gone(*d, None));
                            }
                        }
                        None => {}
                    }
                }
                FromWorker::Result {
                    id,
                    status,
                    message,
                } => {
                    let pending = lock(&self.pending);
                    match pending.get(&id) {
                        Some(Route::Thread(_)) => {
                            drop(pending);
                            self.report(news);
                            if let Some(Route::Thread(tx)) = lock(&self.pending).get(&id) {
                                let _ = tx.send(Msg::Result(status, message));
                            }
                        }
                        Some(Route::Driven(d)) => news.push(News::Result {
                            idx: d.idx,
                            attempt: d.attempt,
                            status,
                            message,
                        }),
                        None => {}
                    }
                }
                FromWorker::Done {
                    id,
                    outcome,
                    message,
                    exports,
                    exit_code,
                    output,
                    files,
                    suspend,
                    checkpoint,
                    checkpoint_files,
                    ..
                } => {
                    let blobs = match read_files(&mut frames, files) {
                        Ok(blobs) => blobs,
                        Err(reason) => return reason,
                    };
                    let checkpoint = match checkpoint {
                        Some(held) => match read_files(&mut frames, checkpoint_files) {
                            Ok(changed) => Some(super::checkpoint::Back { held, changed }),
                            Err(reason) => return reason,
                        },
                        None => None,
                    };
                    let done = Done {
                        checkpoint,
                        outcome,
                        message,
                        exports,
                        exit_code,
                        output,
                        suspend,
                        files: blobs,
                    };
                    let route = lock(&self.pending).remove(&id);
                    match route {
                        Some(Route::Thread(tx)) => {
                            self.report(news);
                            // Counted before it is routed: a start read after it waits for it.
                            self.routed.fetch_add(1, Ordering::SeqCst);
                            if tx.send(Msg::Done(Box::new(done))).is_err() {
                                // Nobody will record it (its attempt gave up waiting).
                                self.end_recorded();
                            }
                        }
                        Some(Route::Driven(d)) => {
                            self.acked(d.sent);
                            if let Some(hosts) = self.owner.upgrade() {
                                news.extend(hosts.driven_end(self, *d, done));
                            }
                        }
                        None => {}
                    }
                }
                FromWorker::CheckpointNeed { id, paths } => {
                    if let Some(Route::Thread(tx)) = lock(&self.pending).get(&id) {
                        let _ = tx.send(Msg::Need(paths));
                    }
                }
                other => return format!("protocol error: unexpected {other:?}"),
            }
        }
    }

    /// Attempt `id`, if handed to the reader: marks it started now and returns its start.
    fn driven_start(&self, id: u64) -> Option<News> {
        let mut pending = lock(&self.pending);
        let Some(Route::Driven(d)) = pending.get_mut(&id) else {
            return None;
        };
        self.acked(d.sent);
        d.started = Some(Instant::now());
        Some(News::Began {
            idx: d.idx,
            attempt: d.attempt,
            host: d.host.clone(),
        })
    }

    fn lost(
        self: &Arc<Self>,
        reason: &str,
        stderr: &Mutex<String>,
        on_lost: impl FnOnce(String),
        news: &mut Vec<News>,
    ) {
        let pending: Vec<Route> = {
            let mut p = lock(&self.pending);
            self.alive.store(false, Ordering::SeqCst);
            p.drain().map(|(_, tx)| tx).collect()
        };
        lock(&self.writer).out.take();
        {
            let mut transport = lock(&self.transport);
            if self.closing.load(Ordering::SeqCst) {
                // Closed by us: give the worker time to end its tasks, then make sure.
                if matches!(
                    transport.wait(Duration::from_secs(10)),
                    Waited::StillRunning
                ) {
                    transport.kill();
                }
                return;
            }
            transport.kill();
        }
        let said = lock(stderr)
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(|l| format!(" ({l})"))
            .unwrap_or_default();
        let reason = format!("{reason}{said}");
        // What was heard before the loss is reported before it.
        self.report(news);
        // The host is marked down (and its loss reported) before its attempts are put back,
        // so that none of them is placed on it again in between.
        on_lost(reason.clone());
        let hosts = self.owner.upgrade();
        for route in pending {
            match route {
                Route::Thread(tx) => {
                    let _ = tx.send(Msg::Lost(reason.clone()));
                }
                Route::Driven(d) => {
                    if let Some(hosts) = &hosts {
                        news.push(hosts.driven_gone(*d, Some(&reason)));
                    }
                }
            }
        }
        self.report(news);
    }

    /// Ends the connection in order: the worker sees end of file, kills what it still runs
    /// and exits; then the ssh client is reaped.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        lock(&self.writer).out.take();
        let reader = lock(&self.reader).take();
        if let Some(r) = reader {
            let _ = r.join();
        }
    }
}

/// The content of `files` (announced by a `Done`), as raw frames; on failure, why the
/// connection is lost.
fn read_files(
    frames: &mut FrameReader,
    files: Vec<FileEntry>,
) -> Result<super::checkpoint::Files, String> {
    let mut blobs = Vec::with_capacity(files.len());
    for entry in files {
        match frames.next_file(Some(Instant::now() + SILENCE_LIMIT), entry.size) {
            Ok(Some(bytes)) => blobs.push((entry, bytes)),
            Ok(None) => return Err("the worker stopped sending a file".into()),
            Err(e) => return Err(format!("protocol error: {}", crate::error::error_chain(&e))),
        }
    }
    Ok(blobs)
}
