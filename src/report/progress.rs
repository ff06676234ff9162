//! The live display on a terminal (indicatif): a bar with counts, elapsed time and ETA, and
//! one line per running task with its own elapsed time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::sched::events::{Counts, Event};
use crate::task::{Outcome, TaskName};

/// Running tasks shown at most; the rest are counted on the bar.
const MAX_SHOWN: usize = 8;

pub(crate) struct Progress {
    multi: MultiProgress,
    bar: ProgressBar,
    running: HashMap<TaskName, ProgressBar>,
    counts: Counts,
}

impl Progress {
    pub(crate) fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let bar = multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8.bold} [{elapsed_precise}] [{bar:30}] {pos}/{len} (eta {eta}) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix("Running");
        bar.enable_steady_tick(Duration::from_millis(100));
        Self {
            multi,
            bar,
            running: HashMap::new(),
            counts: Counts::default(),
        }
    }

    pub(crate) fn println(&self, text: &str) {
        // Printing above the bars keeps them intact; if the terminal went away, drop it.
        let _ = self.multi.println(text);
    }

    pub(crate) fn event(&mut self, e: &Event) {
        match e {
            Event::RunStarted { tasks, .. } => self.bar.set_length(*tasks as u64),
            Event::TaskStarted {
                task,
                attempt,
                host,
            } if self.running.len() < MAX_SHOWN => {
                let line = self.multi.add(ProgressBar::new_spinner());
                line.set_style(
                    ProgressStyle::with_template("    {spinner} {elapsed:>4} {msg}")
                        .expect("valid template"),
                );
                let suffix = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                let on = host
                    .as_ref()
                    .map(|h| format!(" on {h}"))
                    .unwrap_or_default();
                line.set_message(format!("{task}{suffix}{on}"));
                line.enable_steady_tick(Duration::from_millis(100));
                self.running.insert(task.clone(), line);
            }
            Event::TaskRetrying { task, .. } => self.stop(task),
            // The running group in the bar's prefix; `Running` again between turns.
            Event::GroupStarted { group } if !group.is_empty() => {
                self.bar.set_prefix(group.clone());
            }
            Event::GroupStarted { .. } | Event::GroupFinished { .. } => {
                self.bar.set_prefix("Running");
            }
            Event::TaskFinished(f) => {
                self.stop(&f.task);
                self.counts.add(f.outcome);
                self.bar.inc(1);
                let bad = self.counts.fail + self.counts.error + self.counts.timeout;
                let mut msg = format!("{} running", self.running.len());
                if bad > 0 {
                    let _ = write!(msg, ", {bad} failed");
                }
                if self.counts.get(Outcome::Skip) > 0 {
                    let _ = write!(msg, ", {} skipped", self.counts.skip);
                }
                self.bar.set_message(msg);
            }
            _ => {}
        }
    }

    fn stop(&mut self, task: &TaskName) {
        if let Some(line) = self.running.remove(task) {
            line.finish_and_clear();
            self.multi.remove(&line);
        }
    }

    pub(crate) fn finish(self) {
        for (_, line) in self.running {
            line.finish_and_clear();
        }
        self.bar.finish_and_clear();
        let _ = self.multi.clear();
    }
}
