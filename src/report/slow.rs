//! `SLOW [> 60.000s] name`: cargo-nextest's notice for an attempt that has been running for
//! another whole period, printed on a terminal and in CI logs alike, so that a hung task is
//! never silent until its timeout.
//!
//! A thread of its own wakes up a few times per period (the event stream says nothing while
//! every task is busy) and prints through the [`Display`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use crate::report::display::{Display, Tone};
use crate::sched::events::Event;
use crate::task::TaskName;

/// The attempts running now: when each started, and how many periods were announced.
#[derive(Default)]
struct Watched {
    running: HashMap<TaskName, (Instant, u32)>,
}

impl Watched {
    /// The `SLOW` notices due at `now` for `period`, oldest first; marks them announced.
    fn due(&mut self, now: Instant, period: Duration) -> Vec<(TaskName, Duration)> {
        let mut due = Vec::new();
        for (task, (started, announced)) in &mut self.running {
            let periods = (now.saturating_duration_since(*started).as_nanos()
                / period.as_nanos().max(1)) as u32;
            if periods > *announced {
                *announced = periods;
                due.push((task.clone(), period * periods, *started));
            }
        }
        due.sort_by_key(|(_, _, started)| *started);
        due.into_iter().map(|(t, d, _)| (t, d)).collect()
    }
}

pub(crate) struct SlowWatch {
    watched: Arc<Mutex<Watched>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SlowWatch {
    /// Watches attempts and prints `SLOW` notices every `period` of their running time.
    pub(crate) fn start(period: Duration, display: Display) -> Self {
        let watched = Arc::new(Mutex::new(Watched::default()));
        let (stop, stopped) = bounded::<()>(0);
        let w = watched.clone();
        // Wake often enough that a notice is late by at most a quarter period (or 250 ms).
        let tick = (period / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
        let thread = std::thread::Builder::new()
            .name("pexen-slow".into())
            .spawn(move || {
                // Until the reporter drops the sender (or sends): then the run has ended.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    let due = w
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .due(Instant::now(), period);
                    for (task, over) in due {
                        display.line(&slow_line(&display, &task, over));
                    }
                }
            })
            .ok();
        Self {
            watched,
            stop: Some(stop),
            thread,
        }
    }

    pub(crate) fn event(&self, e: &Event) {
        let mut w = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        match e {
            Event::TaskStarted { task, .. } => {
                w.running.insert(task.clone(), (Instant::now(), 0));
            }
            Event::TaskRetrying { task, .. } => {
                w.running.remove(task);
            }
            Event::TaskFinished(f) => {
                w.running.remove(&f.task);
            }
            _ => {}
        }
    }
}

impl Drop for SlowWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `    SLOW [> 60.000s] name`
pub(crate) fn slow_line(display: &Display, task: &TaskName, over: Duration) -> String {
    format!(
        "{} [>{:>7.3}s] {task}",
        display.label("SLOW", Tone::Notice),
        over.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_per_whole_period_oldest_first() {
        let t0 = Instant::now();
        let p = Duration::from_secs(60);
        let mut w = Watched::default();
        w.running
            .insert("late".into(), (t0 + Duration::from_secs(5), 0));
        w.running.insert("early".into(), (t0, 0));
        assert!(w.due(t0 + Duration::from_secs(59), p).is_empty());
        assert_eq!(
            w.due(t0 + Duration::from_secs(66), p),
            vec![("early".into(), p), ("late".into(), p)]
        );
        assert!(
            w.due(t0 + Duration::from_secs(100), p).is_empty(),
            "once per period"
        );
        assert_eq!(
            w.due(t0 + Duration::from_secs(121), p),
            vec![("early".into(), p * 2)]
        );
        // A watcher that woke late announces the last whole period only.
        assert_eq!(
            w.due(t0 + Duration::from_secs(400), p),
            vec![("early".into(), p * 6), ("late".into(), p * 6)]
        );
    }

    #[test]
    fn the_line_follows_nextest() {
        let d = Display::plain(false);
        assert_eq!(
            slow_line(&d, &"net/hang".into(), Duration::from_secs(60)),
            "    SLOW [> 60.000s] net/hang"
        );
    }
}
