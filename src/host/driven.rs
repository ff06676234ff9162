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

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::checkpoint::Given;
use super::conn::{Conn, Done};
use super::{lock, Held, Hosts};
use crate::pool::attempt::{Attempt, News, Recorder};

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

    /// Reports `news` to the run (drained); dropped if the run is gone.
    pub(super) fn record(&self, news: &mut Vec<News>) {
        match self.recorder.get().and_then(Weak::upgrade) {
            Some(recorder) => recorder.record(news),
            None => news.clear(),
        }
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
