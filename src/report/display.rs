//! Where the human display writes, and how it colours what it writes.
//!
//! Everything the human display says goes to **stderr**, on a terminal or not (cargo's and
//! cargo-nextest's convention: stdout is kept for machine-readable output, `--message-format
//! json`). On a terminal the lines are printed above the live progress display through
//! indicatif, so that a redraw never erases them and no stale bar stays in the scrollback;
//! otherwise they are plain lines.

use std::io::Write;

use console::Style;
use indicatif::ProgressBar;

use crate::task::Outcome;

/// A cheap, thread-safe handle on the display: the reporter, the SLOW watcher and a signal
/// handler all print through one.
#[derive(Clone)]
pub struct Display {
    live: Option<ProgressBar>,
    color: bool,
}

impl Display {
    /// Plain lines on stderr.
    pub fn plain(color: bool) -> Self {
        Self { live: None, color }
    }

    pub(crate) fn live(bar: ProgressBar, color: bool) -> Self {
        Self {
            live: Some(bar),
            color,
        }
    }

    /// Whether lines are coloured.
    pub fn color(&self) -> bool {
        self.color
    }

    /// Prints `text` (one or more lines) above the live display, or on stderr. A closed stderr
    /// is not an error here: the run and its cleanup go on.
    pub fn line(&self, text: &str) {
        match &self.live {
            Some(bar) if !bar.is_hidden() && !bar.is_finished() => {
                // Printed by indicatif above the bar, in the same draw as it: never erased by
                // a redraw, and no bar frame left behind.
                bar.println(text);
            }
            _ => write_stderr(text),
        }
    }

    /// `warning: MESSAGE`, with `warning` in yellow (cargo's look).
    pub fn warning(&self, message: &str) {
        let label = self.paint(&Style::new().yellow().bold(), "warning");
        self.line(&format!("{label}: {message}"));
    }

    /// `error: MESSAGE`, with `error` in red.
    pub fn error(&self, message: &str) {
        let label = self.paint(&Style::new().red().bold(), "error");
        self.line(&format!("{label}: {message}"));
    }

    /// `text` in `style` when colouring, as is otherwise.
    pub(crate) fn paint(&self, style: &Style, text: &str) -> String {
        if self.color {
            style.clone().force_styling(true).apply_to(text).to_string()
        } else {
            text.to_string()
        }
    }

    /// A status label right-aligned in 8 columns (nextest's layout), coloured by `kind`.
    pub(crate) fn label(&self, text: &str, kind: Tone) -> String {
        let padded = format!("{text:>8}");
        self.paint(&kind.style(), &padded)
    }
}

fn write_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
    let _ = err.flush();
}

/// The colour of a label, by what it means (cargo-nextest's palette).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tone {
    Good,
    Bad,
    Notice,
    Retry,
}

impl Tone {
    pub(crate) fn of(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Pass => Tone::Good,
            Outcome::Fail | Outcome::Error | Outcome::Timeout => Tone::Bad,
            Outcome::Warn | Outcome::Skip => Tone::Notice,
        }
    }

    fn style(self) -> Style {
        match self {
            Tone::Good => Style::new().green().bold(),
            Tone::Bad => Style::new().red().bold(),
            Tone::Notice => Style::new().yellow().bold(),
            Tone::Retry => Style::new().magenta().bold(),
        }
    }
}

/// `--color`: when to colour the display (cargo's flag and values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorChoice {
    /// Colour when stderr is a terminal and `NO_COLOR` is unset or empty.
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour, given whether stderr is a terminal and the value of `NO_COLOR`
    /// (<https://no-color.org>: any non-empty value turns colour off). An explicit `always` or
    /// `never` wins over the environment, as with cargo.
    pub fn enabled(self, stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                stderr_is_terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_follows_the_flag_then_no_color_then_the_terminal() {
        let set = Some(std::ffi::OsStr::new("1"));
        let empty = Some(std::ffi::OsStr::new(""));
        assert!(ColorChoice::Auto.enabled(true, None));
        assert!(ColorChoice::Auto.enabled(true, empty));
        assert!(!ColorChoice::Auto.enabled(true, set));
        assert!(!ColorChoice::Auto.enabled(false, None));
        assert!(ColorChoice::Always.enabled(false, set));
        assert!(!ColorChoice::Never.enabled(true, None));
    }

    #[test]
    fn labels_are_coloured_only_when_asked() {
        let plain = Display::plain(false);
        assert_eq!(plain.label("FAIL", Tone::Bad), "    FAIL");
        let color = Display::plain(true);
        let l = color.label("FAIL", Tone::Bad);
        assert!(l.starts_with("\u{1b}["), "{l:?}");
        assert!(l.contains("    FAIL"), "{l:?}");
    }
}
