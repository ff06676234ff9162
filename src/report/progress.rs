//! The live display on a terminal (indicatif): a bar with counts, elapsed time and ETA, one
//! line per running task with its own elapsed time, and `... and N more` when more tasks run
//! than there are lines.
//!
//! The counts are kept from the events alone: a task runs from its `TaskStarted` to its
//! `TaskRetrying` or `TaskFinished`, so the running count is exact at every moment, and a task
//! that could not get a line gets one as soon as a shown task ends.
//!
//! One progress bar draws everything (the task lines are a template key rendered at each draw)
//! rather than one bar per task in a `MultiProgress`: adding and removing bars there left stale
//! bar frames in the scrollback of real terminals (seen in tmux; `tests/terminal.rs`).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::sched::events::{Counts, Event};
use crate::task::{Outcome, TaskName};

/// Running tasks shown at most; the rest are summed up on one `... and N more` line.
pub(crate) const MAX_SHOWN: usize = 8;

/// One running attempt.
struct Running {
    task: TaskName,
    attempt: u32,
    /// Where it runs (runs with hosts only).
    host: Option<Arc<str>>,
    started: Instant,
}

/// The running attempts, in start order: the oldest are the ones shown.
type RunningList = Arc<Mutex<Vec<Running>>>;

pub(crate) struct Progress {
    bar: ProgressBar,
    /// Where the bar draws, from `RunStarted` on (no empty `0/0` bar before the header).
    target: Option<ProgressDrawTarget>,
    running: RunningList,
    counts: Counts,
    color: bool,
}

impl Progress {
    pub(crate) fn new(color: bool) -> Self {
        Self::with_target(ProgressDrawTarget::stderr_with_hz(10), color)
    }

    fn with_target(target: ProgressDrawTarget, color: bool) -> Self {
        let running: RunningList = Arc::default();
        let template = if color {
            "{prefix:>8.green.bold} [{elapsed_precise}] [{bar:30.cyan/blue}] {pos}/{len} (eta {eta}) {msg}{tasks}"
        } else {
            "{prefix:>8} [{elapsed_precise}] [{bar:30}] {pos}/{len} (eta {eta}) {msg}{tasks}"
        };
        let lines = running.clone();
        let style = ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> ")
            .with_key(
                "tasks",
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let list = lines.lock().unwrap_or_else(PoisonError::into_inner);
                    for line in task_lines(&list, Instant::now()) {
                        let _ = write!(w, "\n{line}");
                    }
                },
            );
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        bar.set_style(style);
        bar.set_prefix("Running");
        let p = Self {
            bar,
            target: Some(target),
            running,
            counts: Counts::default(),
            color,
        };
        p.update_counts(0);
        p
    }

    /// The bar, to print lines above it.
    pub(crate) fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    pub(crate) fn event(&mut self, e: &Event) {
        // The bar's draws read the list (the `tasks` key): never touch the bar holding it.
        let mut list = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        match e {
            Event::TaskStarted {
                task,
                attempt,
                host,
            } => list.push(Running {
                task: task.clone(),
                attempt: *attempt,
                host: host.clone(),
                started: Instant::now(),
            }),
            Event::TaskRetrying { task, .. } => list.retain(|r| &r.task != task),
            Event::TaskFinished(f) => list.retain(|r| r.task != f.task),
            _ => {}
        }
        let running = list.len();
        drop(list);
        match e {
            Event::RunStarted { tasks, .. } => {
                self.bar.set_length(*tasks as u64);
                if let Some(target) = self.target.take() {
                    self.bar.set_draw_target(target);
                }
                self.bar.enable_steady_tick(Duration::from_millis(100));
            }
            Event::TaskFinished(f) => {
                self.counts.add(f.outcome);
                self.bar.inc(1);
            }
            // The running group in the bar's prefix; `Running` again between turns.
            Event::GroupStarted { group } if !group.is_empty() => {
                self.bar.set_prefix(group.clone());
            }
            Event::GroupStarted { .. } | Event::GroupFinished { .. } => {
                self.bar.set_prefix("Running");
            }
            _ => {}
        }
        self.update_counts(running);
    }

    fn update_counts(&self, running: usize) {
        let bad = self.counts.fail + self.counts.error + self.counts.timeout;
        let mut msg = format!("{running} running");
        if bad > 0 {
            let failed = format!("{bad} failed");
            if self.color {
                let red = console::Style::new().red().bold().force_styling(true);
                let _ = write!(msg, ", {}", red.apply_to(failed));
            } else {
                let _ = write!(msg, ", {failed}");
            }
        }
        if self.counts.get(Outcome::Skip) > 0 {
            let _ = write!(msg, ", {} skipped", self.counts.skip);
        }
        self.bar.set_message(msg);
    }

    pub(crate) fn finish(self) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.bar.finish_and_clear();
    }
}

/// The lines under the bar: the oldest [`MAX_SHOWN`] running tasks with their elapsed time,
/// then `... and N more`.
fn task_lines(running: &[Running], now: Instant) -> Vec<String> {
    let mut lines: Vec<String> = running
        .iter()
        .take(MAX_SHOWN)
        .map(|r| {
            let suffix = if r.attempt > 1 {
                format!(" (attempt {})", r.attempt)
            } else {
                String::new()
            };
            let secs = now.saturating_duration_since(r.started).as_secs();
            let elapsed = if secs < 60 {
                format!("{secs}s")
            } else {
                format!("{}m {:02}s", secs / 60, secs % 60)
            };
            let on = r
                .host
                .as_ref()
                .map(|h| format!(" on {h}"))
                .unwrap_or_default();
            format!("    {elapsed:>7} {}{suffix}{on}", r.task)
        })
        .collect();
    if running.len() > MAX_SHOWN {
        lines.push(format!("    ... and {} more", running.len() - MAX_SHOWN));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::events::Finished;

    fn started(name: &str) -> Event {
        Event::TaskStarted {
            task: name.into(),
            attempt: 1,
            host: None,
        }
    }

    fn finished(name: &str, outcome: Outcome) -> Event {
        Event::TaskFinished(Finished {
            task: name.into(),
            outcome,
            attempt: 1,
            exit_code: None,
            duration: Duration::ZERO,
            resumed: false,
            cause: None,
            message: None,
            exports: None,
            output: None,
            host: None,
        })
    }

    fn lines(p: &Progress) -> Vec<String> {
        task_lines(&p.running.lock().unwrap(), Instant::now())
    }

    #[test]
    fn the_running_count_is_exact_and_hidden_tasks_get_lines_as_others_end() {
        let mut p = Progress::with_target(ProgressDrawTarget::hidden(), false);
        p.event(&Event::RunStarted {
            tasks: 20,
            jobs: 13,
        });
        for i in 0..13 {
            p.event(&started(&format!("t{i}")));
        }
        assert_eq!(p.bar.message(), "13 running");
        let l = lines(&p);
        assert_eq!(l.len(), MAX_SHOWN + 1);
        assert_eq!(l[0], "         0s t0");
        assert_eq!(l[MAX_SHOWN], "    ... and 5 more");

        p.event(&finished("t0", Outcome::Fail));
        assert_eq!(p.bar.message(), "12 running, 1 failed");
        let l = lines(&p);
        assert!(
            l[MAX_SHOWN - 1].ends_with(" t8"),
            "t8 took t0's line: {l:?}"
        );
        assert_eq!(l[MAX_SHOWN], "    ... and 4 more");

        p.event(&Event::TaskRetrying {
            task: "t1".into(),
            attempt: 1,
            outcome: Outcome::Fail,
            message: None,
            output: None,
            duration: Duration::ZERO,
        });
        assert_eq!(p.bar.message(), "11 running, 1 failed");
        p.event(&Event::TaskStarted {
            task: "t1".into(),
            attempt: 2,
            host: Some("build1".into()),
        });
        assert!(
            lines(&p).iter().all(|l| !l.contains("t1")),
            "t1 is last now"
        );
        for i in 2..13 {
            p.event(&finished(&format!("t{i}"), Outcome::Pass));
        }
        assert_eq!(lines(&p), ["         0s t1 (attempt 2) on build1"]);
        p.event(&finished("t1", Outcome::Pass));
        assert!(
            lines(&p).is_empty(),
            "no `... and N more` once every task has a line"
        );
        assert_eq!(p.bar.message(), "0 running, 1 failed");
        p.finish();
    }

    #[test]
    fn elapsed_times_read_in_seconds_then_minutes() {
        let t0 = Instant::now();
        let r = |secs| {
            Running {
                task: "x".into(),
                attempt: 1,
                host: None,
                started: t0,
            }
            .at(t0 + Duration::from_secs(secs))
        };
        assert_eq!(r(5), "         5s x");
        assert_eq!(r(125), "     2m 05s x");
    }

    impl Running {
        fn at(self, now: Instant) -> String {
            task_lines(&[self], now).remove(0)
        }
    }
}
