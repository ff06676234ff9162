//! Attempts handed to a connection's reader (see [`crate::pool::attempt::Ran::HandedOff`]).
//!
//! Once an attempt's `Run` is sent, the thread that placed it has nothing left to do but wait
//! for its end; on a host of short commands that wait cost a wake-up of the thread per attempt
//! and a second one when its start had to wait for an earlier end to be recorded. A handed-off
//! attempt has no thread: the connection's reader turns its frames into [`News`] for the run's
//! [`Recorder`], those of one packet in one hold of the run state's lock, in the order they
//! came (so a start never precedes the end that made room for it).
//!
//! Only attempts that need nothing more from the controller are handed off: no outputs to copy
//! back, and no other place to move to (an attempt queued behind long ones moves only while it
//! has a thread, see `MOVE_AFTER`).
//!
//! The reader also starts the attempts that take the room its ends free ([`Hosts::carry`]):
//! as it records them, the run offers it the jobs it would hand to a worker thread, and the
//! reader writes their `Run`s itself, once the run's lock is released, in one write. Only
//! when that cannot block ([`Outbox`]): the writer free at once, the worker seen to have
//! read all but a few bytes of what was sent, the attempt's place and turn free now and
//! nothing to send before its `Run`. Anything else goes to a worker thread as before. On a
//! host of short commands that spares the wake-up of a worker thread, and its round trips
//! through the run's lock, per packet of ends.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::checkpoint::Given;
use super::conn::{Conn, Done, Outbox};
use super::{lock, Held, Hosts};
use crate::pool::attempt::{Attempt, Carrier, News, Recorder};
use crate::pool::Job;
use crate::protocol;

/// What the reader keeps of an attempt handed to it.
pub(crate) struct Driven {
    pub idx: u32,
    pub attempt: u32,
    /// Where it was placed, and the name its start is reported with.
    pub place: usize,
    pub host: Arc<str>,
    /// The task's `slots`, held on the place until its end is recorded.
    pub slots: BTreeMap<String, u32>,
    pub given: Given,
    /// When the reader heard that it started.
    pub started: Option<Instant>,
    /// Where its `Run` ends in what was written to the connection (0: not known yet): once
    /// the worker answers it, it read that far.
    pub sent: u64,
}

impl Hosts {
    /// Where attempts handed to readers are reported (see [`crate::pool::Executor::set_recorder`]).
    pub(crate) fn set_recorder(&self, recorder: Weak<dyn Recorder>) {
        let _ = self.recorder.set(recorder);
    }

    /// Whether an attempt (`outputs`: whether its task has outputs to copy back) may be
    /// handed to its connection's reader once sent.
    pub(crate) fn may_hand_off(&self, outputs: bool) -> bool {
        !outputs
            && self.places.len() == 1
            && self.places[0].spec.kind != super::HostKind::Local
            && self.recorder.get().is_some()
    }

    /// Reports `news` to the run (drained), offering `carrier` the jobs that take the room
    /// of the attempts that ended; dropped if the run is gone.
    pub(super) fn record(&self, news: &mut Vec<News>, carrier: Option<&mut dyn Carrier>) {
        match self.recorder.get().and_then(Weak::upgrade) {
            Some(recorder) => recorder.record(news, carrier),
            None => news.clear(),
        }
    }

    /// The reader of `out`'s connection starts `job` itself, if it can at once (see the
    /// module's documentation): the attempt is placed as [`Hosts::acquire`] would place it,
    /// takes its turn, is handed to the reader and its `Run` goes into `out`. Under the run's
    /// lock; nothing here waits on a lock that a writer to the connection may hold while it
    /// waits (the writer itself is only tried, the outputs map too).
    pub(super) fn carry(&self, out: &mut Outbox<'_>, job: &Job) -> bool {
        // One place (`may_hand_off`): the connection's.
        if self.places.len() != 1
            || !job.outputs.is_empty()
            || self.level.load(std::sync::atomic::Ordering::SeqCst) != 0
        {
            return false;
        }
        let i = 0;
        let place = &self.places[i];
        // Outputs of other tasks to push first: a thread's work (it writes while it holds them).
        if !self.outputs.try_lock().is_ok_and(|o| o.is_empty()) {
            return false;
        }
        let Some(given) = self.checkpoint_at_once(place, job) else {
            return false;
        };
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = self.run_request(id, job, &given);
        // A frame that cannot be encoded is reported by the thread that tries again.
        let Ok(frame) = protocol::encode(&request) else {
            return false;
        };
        if !out.has_room(frame.len()) {
            return false;
        }
        // The writer is held from here until the frame is written: the turn passes now.
        let Some(turn) = self.place_at_once(i, job) else {
            return false;
        };
        let sent = out.push(&frame);
        out.conn().drive_sent(
            id,
            Driven {
                idx: job.idx,
                attempt: job.attempt,
                place: i,
                host: place.name.clone(),
                slots: job.slots.clone(),
                given,
                started: None,
                sent,
            },
        );
        place.turns.pass(turn);
        true
    }

    /// The end of handed-off attempt `d`, whose `Done` came through `conn`: its start first if
    /// the worker's word of it was not heard. Its place is held until the end is recorded.
    pub(super) fn driven_end(&self, conn: &Arc<Conn>, d: Driven, done: Done) -> Vec<News> {
        let mut news = Vec::with_capacity(1);
        let started = d.started.unwrap_or_else(|| {
            news.push(News::Began {
                idx: d.idx,
                attempt: d.attempt,
                host: d.host.clone(),
            });
            Instant::now()
        });
        let end = self.ended(conn, &self.places[d.place], &d.given, done, started);
        let (idx, attempt) = (d.idx, d.attempt);
        self.hold(d, Some(conn.clone()), Some(end.duration));
        news.push(News::Ended { idx, attempt, end });
        news
    }

    /// Handed-off attempt `d` ends without a `Done`: dropped from the worker's queue
    /// (`lost` is `None`) or its connection lost (`Some(reason)`). One that never started goes
    /// back to the run's queue, uncounted.
    pub(super) fn driven_gone(&self, d: Driven, lost: Option<&str>) -> News {
        let end = match lost {
            Some(reason) if d.started.is_some() => Attempt::lost(reason),
            _ => Attempt::not_started(),
        };
        let (idx, attempt) = (d.idx, d.attempt);
        self.hold(d, None, None);
        News::Ended { idx, attempt, end }
    }

    /// Holds `d`'s place until its end is recorded ([`Hosts::release`]).
    fn hold(&self, d: Driven, conn: Option<Arc<Conn>>, ran: Option<std::time::Duration>) {
        lock(&self.held).insert(
            (d.idx, d.attempt),
            Held {
                place: d.place,
                slots: d.slots,
                conn,
                ran,
                driven: true,
            },
        );
    }
}
