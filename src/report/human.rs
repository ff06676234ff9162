//! The human display: one line per finished task (above a live progress display on a
//! terminal), the output of failed tasks, and a summary at the end.

use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use crate::report::progress::Progress;
use crate::sched::events::{Counts, Event, Finished, Output};
use crate::task::Outcome;

/// A failure remembered for the summary.
struct Failed {
    name: String,
    outcome: Outcome,
    message: Option<String>,
}

/// Consumes events and writes the human display to stdout (lines) and stderr (progress).
pub struct HumanReporter {
    progress: Option<Progress>,
    failed: Vec<Failed>,
    /// Tasks that suspended the run (SPEC section 12).
    suspended: Vec<String>,
    /// The command that continues a suspended run, for the summary.
    resume_hint: Option<String>,
}

impl HumanReporter {
    /// `live`: draw a progress display (when stderr is a terminal).
    pub fn new(live: bool) -> Self {
        Self {
            progress: live.then(Progress::new),
            failed: Vec::new(),
            suspended: Vec::new(),
            resume_hint: None,
        }
    }

    /// The command line that continues this run once suspended (`pexen run --resume ...`),
    /// said in the summary.
    #[must_use]
    pub fn resume_hint(mut self, command: impl Into<String>) -> Self {
        self.resume_hint = Some(command.into());
        self
    }

    /// Prints a line above the progress display, or to stdout.
    fn line(&self, text: &str) {
        if let Some(p) = &self.progress {
            p.println(text);
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
        }
    }

    pub fn event(&mut self, e: &Event) {
        if let Some(p) = &mut self.progress {
            p.event(e);
        }
        match e {
            Event::RunStarted { tasks, jobs } => {
                self.line(&format!(
                    "Starting {tasks} task{} with {jobs} job{}",
                    plural(*tasks),
                    plural(*jobs)
                ));
            }
            Event::Warning { task, message } => {
                let who = task.as_ref().map(|t| format!("{t}: ")).unwrap_or_default();
                let _ = writeln!(std::io::stderr(), "warning: {who}{message}");
            }
            Event::TaskStarted { .. }
            | Event::GroupFinished { .. }
            | Event::TaskSubmitted { .. }
            | Event::HostConnected { .. } => {}
            Event::GroupStarted { group } => {
                let shown = if group.is_empty() {
                    "(ungrouped)"
                } else {
                    group
                };
                self.line(&format!("{:>8} {shown}", "GROUP"));
            }
            Event::HostLost { host, reason } => {
                let _ = writeln!(std::io::stderr(), "warning: host {host}: {reason}");
            }
            Event::TaskResult {
                task,
                status,
                message,
                ..
            } => {
                if *status != Outcome::Pass {
                    self.line(&format!("{:>8} {task}: {message}", label(*status)));
                }
            }
            Event::TaskRetrying {
                task,
                attempt,
                outcome,
                message,
                output,
                duration,
            } => {
                let why = message.as_deref().unwrap_or(outcome.as_str());
                self.line(&format!(
                    "{:>8} [{}] {task} (attempt {attempt} ended {outcome}: {why})",
                    "RETRY",
                    secs(*duration)
                ));
                if let Some(out) = output {
                    self.output(&format!("{task} (attempt {attempt})"), out);
                }
            }
            Event::TaskSuspended { task, .. } => self.suspended.push(task.to_string()),
            Event::TaskFinished(f) => self.finished(f),
            Event::RunFinished {
                counts,
                duration,
                interrupted,
                ..
            } => {
                if let Some(p) = self.progress.take() {
                    p.finish();
                }
                self.summary(counts, *duration, *interrupted);
            }
        }
    }

    fn finished(&mut self, f: &Finished) {
        let suspended = self.suspended.last().is_some_and(|t| t == f.task.as_str());
        let label = if suspended {
            "SUSPEND"
        } else {
            label(f.outcome)
        };
        let mut text = format!("{label:>8} [{}] {}", secs(f.duration), f.task);
        if f.resumed {
            text.push_str(" (resumed)");
        }
        if let Some(cause) = &f.cause {
            let _ = write!(text, " ({cause})");
        } else if let Some(m) = &f.message {
            if f.outcome != Outcome::Pass {
                let _ = write!(text, " ({m})");
            }
        }
        self.line(&text);
        if !f.outcome.is_success() {
            if let Some(out) = &f.output {
                self.output(f.task.as_str(), out);
            }
            self.failed.push(Failed {
                name: f.task.to_string(),
                outcome: f.outcome,
                message: f.message.clone(),
            });
        }
    }

    /// The captured output of a failed attempt, framed like nextest's.
    fn output(&self, who: &str, out: &Output) {
        for (name, text) in [("STDOUT", &out.stdout), ("STDERR", &out.stderr)] {
            if text.is_empty() {
                continue;
            }
            let mut block = format!("--- {name}: {who} ---\n{text}");
            if !text.ends_with('\n') {
                block.push('\n');
            }
            self.line(block.trim_end_matches('\n'));
        }
    }

    fn summary(&self, counts: &Counts, duration: Duration, interrupted: bool) {
        let suspended = !self.suspended.is_empty() && !interrupted;
        let mut text = format!(
            "{:>8} [{}] {} task{}:",
            if interrupted {
                "STOPPED"
            } else if suspended {
                "SUSPENDED"
            } else {
                "Summary"
            },
            secs(duration),
            counts.total(),
            plural(counts.total())
        );
        let parts: Vec<String> = Outcome::ALL
            .iter()
            .filter(|o| counts.get(**o) > 0)
            .map(|o| format!("{} {o}", counts.get(*o)))
            .collect();
        let _ = write!(
            text,
            " {}",
            if parts.is_empty() {
                "none".to_string()
            } else {
                parts.join(", ")
            }
        );
        if interrupted {
            text.push_str(" (interrupted)");
        }
        self.line(&text);
        for f in &self.failed {
            let why = f
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            self.line(&format!("{:>8} {}{why}", label(f.outcome), f.name));
        }
        if suspended {
            let by = self
                .suspended
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut text = format!(
                "The run was suspended by {by}: it stopped starting tasks and let running ones \
                 finish. Continue it, with its checkpoints, with"
            );
            match &self.resume_hint {
                Some(hint) => {
                    let _ = write!(text, ":\n    {hint}");
                }
                None => text.push_str(" --resume."),
            }
            self.line(&text);
        }
    }
}

fn label(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "PASS",
        Outcome::Warn => "WARN",
        Outcome::Fail => "FAIL",
        Outcome::Error => "ERROR",
        Outcome::Timeout => "TIMEOUT",
        Outcome::Skip => "SKIP",
    }
}

fn secs(d: Duration) -> String {
    format!("{:>7.3}s", d.as_secs_f64())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
