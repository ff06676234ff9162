//! The human display: one line per task that ran (above a live progress display on a terminal),
//! `SLOW` notices for long attempts, the output of failed tasks, and a summary at the end.
//!
//! Conventions are cargo-nextest's: right-aligned status labels (`PASS`, `FAIL`, `FLAKY 2/3`,
//! `SLOW`), `--- STDOUT: name ---` blocks, a `Summary` line with the counts and then the
//! failed and flaky tasks again. Everything goes to stderr (see [`crate::report::display`]).
//! Tasks taken from the journal (`--resume`) and tasks the run never started (interrupted,
//! `--fail-fast`) get no line each: the header and the summary count them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::report::display::{ColorChoice, Display, Tone};
use crate::report::progress::Progress;
use crate::report::slow::SlowWatch;
use crate::sched::events::{Counts, Event, Finished, Output};
use crate::task::{Outcome, TaskName};

/// The cause of a task that never ran because the run stopped (`not run: ...`).
const NOT_RUN: &str = "not run: ";

/// A task repeated in the summary: failed, or flaky.
struct Noted {
    label: String,
    name: String,
    message: Option<String>,
}

/// Builds a [`HumanReporter`].
///
/// ```
/// use std::time::Duration;
/// use pexen::report::human::HumanReporter;
///
/// let reporter = HumanReporter::builder()
///     .color(false)
///     .slow_period(Some(Duration::from_secs(60)))
///     .build();
/// # drop(reporter);
/// ```
#[derive(Default)]
pub struct HumanReporterBuilder {
    live: bool,
    color: bool,
    slow: Option<Duration>,
    attempts: HashMap<TaskName, u32>,
    selection: Option<(usize, usize)>,
    resumed: usize,
    resume_hint: Option<String>,
}

impl HumanReporterBuilder {
    /// The command line that continues this run once suspended (`pexen run --resume ...`),
    /// said in the summary.
    #[must_use]
    pub fn resume_hint(mut self, command: impl Into<String>) -> Self {
        self.resume_hint = Some(command.into());
        self
    }

    /// Draw a live progress display on stderr (when it is a terminal).
    #[must_use]
    pub fn live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }

    /// Colour labels and counts (see [`ColorChoice::enabled`]).
    #[must_use]
    pub fn color(mut self, color: bool) -> Self {
        self.color = color;
        self
    }

    /// Print `SLOW [> P]` each time an attempt has run for another period `P`; `None`: never.
    #[must_use]
    pub fn slow_period(mut self, period: Option<Duration>) -> Self {
        self.slow = period.filter(|p| !p.is_zero());
        self
    }

    /// The attempts each task may make (retries + 1), for `FLAKY 2/3`; 1 when not given.
    #[must_use]
    pub fn max_attempts(mut self, attempts: impl IntoIterator<Item = (TaskName, u32)>) -> Self {
        self.attempts = attempts.into_iter().collect();
        self
    }

    /// The run is a selection: `selected` tasks matched it and `providers` more were pulled in
    /// because the selected tasks require what they provide.
    #[must_use]
    pub fn selection(mut self, selected: usize, providers: usize) -> Self {
        self.selection = Some((selected, providers));
        self
    }

    /// How many tasks `--resume` takes from the journal instead of running.
    #[must_use]
    pub fn resumed(mut self, resumed: usize) -> Self {
        self.resumed = resumed;
        self
    }

    pub fn build(self) -> HumanReporter {
        let progress = self.live.then(|| Progress::new(self.color));
        let display = match &progress {
            Some(p) => Display::live(p.bar().clone(), self.color),
            None => Display::plain(self.color),
        };
        let slow = self.slow.map(|p| SlowWatch::start(p, display.clone()));
        HumanReporter {
            display,
            progress,
            slow,
            attempts: self.attempts,
            selection: self.selection,
            resumed: self.resumed,
            noted: Vec::new(),
            flaky: 0,
            not_run: 0,
            not_run_cause: None,
            resumed_seen: 0,
            suspended: Vec::new(),
            resume_hint: self.resume_hint,
        }
    }
}

/// Consumes events and writes the human display to stderr.
pub struct HumanReporter {
    display: Display,
    progress: Option<Progress>,
    slow: Option<SlowWatch>,
    attempts: HashMap<TaskName, u32>,
    selection: Option<(usize, usize)>,
    resumed: usize,
    noted: Vec<Noted>,
    flaky: usize,
    not_run: usize,
    not_run_cause: Option<String>,
    resumed_seen: usize,
    /// Tasks that suspended the run (SPEC section 12).
    suspended: Vec<String>,
    /// The command that continues a suspended run, for the summary.
    resume_hint: Option<String>,
}

impl HumanReporter {
    pub fn builder() -> HumanReporterBuilder {
        HumanReporterBuilder::default()
    }

    /// A reporter with the defaults of `pexen run` for this process: live and coloured when
    /// stderr is a terminal (colour also subject to `NO_COLOR`), `SLOW` every 60 s.
    pub fn for_terminal() -> Self {
        use std::io::IsTerminal;
        let tty = std::io::stderr().is_terminal();
        Self::builder()
            .live(tty)
            .color(ColorChoice::Auto.enabled(tty, std::env::var_os("NO_COLOR").as_deref()))
            .slow_period(Some(Duration::from_secs(60)))
            .build()
    }

    /// A handle that prints through this display (for notices from other threads: a signal
    /// handler, a journal error).
    pub fn display(&self) -> Display {
        self.display.clone()
    }

    pub fn event(&mut self, e: &Event) {
        if let Some(p) = &mut self.progress {
            p.event(e);
        }
        if let Some(s) = &self.slow {
            s.event(e);
        }
        match e {
            Event::RunStarted { tasks, jobs } => self.header(*tasks, *jobs),
            Event::Warning { task, message } => {
                let who = task.as_ref().map(|t| format!("{t}: ")).unwrap_or_default();
                self.display.warning(&format!("{who}{message}"));
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
                let label = self.display.label("GROUP", Tone::Good);
                self.display.line(&format!("{label} {shown}"));
            }
            Event::HostLost { host, reason } => {
                self.display.warning(&format!("host {host}: {reason}"));
            }
            Event::HostReleased { host, reason } => {
                let label = self.display.label("RELEASED", Tone::Good);
                self.display.line(&format!("{label} {host}: {reason}"));
            }
            Event::TaskResult {
                task,
                status,
                message,
                ..
            } => {
                if *status != Outcome::Pass {
                    let label = self.display.label(label(*status), Tone::of(*status));
                    self.display.line(&format!("{label} {task}: {message}"));
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
                let label = self.display.label("RETRY", Tone::Retry);
                self.display.line(&format!(
                    "{label} [{}] {task} (attempt {attempt} ended {outcome}: {why})",
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
                self.slow = None;
                self.summary(counts, *duration, *interrupted);
            }
        }
    }

    /// `Starting 7 tasks with 4 jobs (5 selected, 2 required by them; 3 resumed)`
    fn header(&self, tasks: usize, jobs: usize) {
        let mut notes = Vec::new();
        if let Some((selected, providers)) = self.selection {
            notes.push(if providers > 0 {
                format!("{selected} selected, {providers} required by them")
            } else {
                format!("{selected} selected")
            });
        }
        if self.resumed > 0 {
            notes.push(format!(
                "{} resumed, {} to run",
                self.resumed,
                tasks.saturating_sub(self.resumed)
            ));
        }
        let mut text = format!(
            "{} {tasks} task{} with {jobs} job{}",
            self.display.label("Starting", Tone::Good),
            plural(tasks),
            plural(jobs)
        );
        if !notes.is_empty() {
            let _ = write!(text, " ({})", notes.join("; "));
        }
        self.display.line(&text);
    }

    fn finished(&mut self, f: &Finished) {
        if f.resumed {
            self.resumed_seen += 1;
            return;
        }
        if f.attempt == 0 {
            if let Some(why) = f.cause.as_deref().and_then(|c| c.strip_prefix(NOT_RUN)) {
                self.not_run += 1;
                self.not_run_cause.get_or_insert_with(|| why.to_string());
                return;
            }
        }
        let max = self
            .attempts
            .get(&f.task)
            .copied()
            .unwrap_or(1)
            .max(f.attempt);
        let flaky = f.outcome.is_success() && f.outcome != Outcome::Skip && f.attempt > 1;
        let label = if flaky {
            self.flaky += 1;
            self.display
                .label(&format!("FLAKY {}/{max}", f.attempt), Tone::Notice)
        } else if f.attempt > 1 {
            self.display.label(
                &format!("{} {}/{max}", label(f.outcome), f.attempt),
                Tone::of(f.outcome),
            )
        } else {
            self.display.label(label(f.outcome), Tone::of(f.outcome))
        };
        let mut text = format!("{label} [{}] {}", secs(f.duration), f.task);
        if let Some(cause) = &f.cause {
            let _ = write!(text, " ({cause})");
        } else if let Some(m) = &f.message {
            if f.outcome != Outcome::Pass {
                let _ = write!(text, " ({m})");
            }
        }
        self.display.line(&text);
        if !f.outcome.is_success() {
            if let Some(out) = &f.output {
                self.output(f.task.as_str(), out);
            }
        }
        if flaky || !f.outcome.is_success() {
            self.noted.push(Noted {
                label,
                name: f.task.to_string(),
                message: f.message.clone().filter(|_| !flaky),
            });
        }
    }

    /// The captured output of a failed attempt, framed like nextest's.
    fn output(&self, who: &str, out: &Output) {
        for (name, text) in [("STDOUT", &out.stdout), ("STDERR", &out.stderr)] {
            if text.is_empty() {
                continue;
            }
            let head = self.display.paint(
                &console::Style::new().bold(),
                &format!("--- {name}: {who} ---"),
            );
            self.display
                .line(&format!("{head}\n{}", text.trim_end_matches('\n')));
        }
    }

    /// `Summary [ 1.234s] 25 tasks: 4 pass, 1 fail, 19 not run (1 flaky, 1 resumed)`, then the
    /// failed and flaky tasks.
    fn summary(&self, counts: &Counts, duration: Duration, interrupted: bool) {
        let total = counts.total();
        let mut parts: Vec<String> = Vec::new();
        for o in Outcome::ALL {
            let mut n = counts.get(o);
            if o == Outcome::Skip {
                n = n.saturating_sub(self.not_run);
            }
            if n > 0 {
                let text = format!("{n} {o}");
                parts.push(if o.is_success() {
                    text
                } else {
                    self.display
                        .paint(&console::Style::new().red().bold(), &text)
                });
            }
        }
        if self.not_run > 0 {
            parts.push(format!("{} not run", self.not_run));
        }
        let mut notes = Vec::new();
        if self.flaky > 0 {
            notes.push(format!("{} flaky", self.flaky));
        }
        if self.resumed_seen > 0 {
            notes.push(format!(
                "{} resumed, {} run",
                self.resumed_seen,
                total - self.resumed_seen - self.not_run
            ));
        }
        let suspended = !self.suspended.is_empty() && !interrupted;
        let (word, tone) = if interrupted {
            ("STOPPED", Tone::Bad)
        } else if suspended {
            ("SUSPENDED", Tone::Notice)
        } else if counts.fail + counts.error + counts.timeout > 0 {
            ("Summary", Tone::Bad)
        } else {
            ("Summary", Tone::Good)
        };
        let mut text = format!(
            "{} [{}] {total} task{}: {}",
            self.display.label(word, tone),
            secs(duration),
            plural(total),
            if parts.is_empty() {
                "none".to_string()
            } else {
                parts.join(", ")
            }
        );
        if !notes.is_empty() {
            let _ = write!(text, " ({})", notes.join(", "));
        }
        if interrupted {
            text.push_str(" (interrupted)");
        }
        self.display.line(&text);
        if let Some(why) = &self.not_run_cause {
            self.display.line(&format!(
                "{} {} task{}: {why}",
                self.display.label("NOT RUN", Tone::Notice),
                self.not_run,
                plural(self.not_run)
            ));
        }
        for n in &self.noted {
            let why = n
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            self.display.line(&format!("{} {}{why}", n.label, n.name));
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
            self.display.line(&text);
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
