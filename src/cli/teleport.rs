//! `pexen teleport`: the library's teleport ([`crate::teleport`]) shown on the terminal as
//! `pexen run` shows a run (the same human display and JSON lines, the same exit code as the
//! run there), with Ctrl-C relayed to the run.

use std::io::{IsTerminal, Write};

use super::args::{Color, MessageFormat, TeleportArgs};
use super::signals::SignalWatch;
use super::CliError;
use crate::error::exit_code;
use crate::host::HostSpec;
use crate::report::display::{ColorChoice, Display};
use crate::report::human::HumanReporter;
use crate::report::json::{event_json_with, JsonOptions};
use crate::sched::events::Event;
use crate::teleport::{RunOptions, Stop, Teleport, TeleportError};

/// The exit code of a teleport that failed (not the run's: that one is the run's own).
pub(super) fn exit_code(e: &TeleportError) -> i32 {
    match e {
        TeleportError::Usage(_) => exit_code::BAD_INPUT,
        TeleportError::State(_) => exit_code::BAD_STATE,
        TeleportError::Interrupted(_) => exit_code::INTERRUPTED,
        _ => exit_code::TASK_FAILED,
    }
}

/// `pexen teleport [--attach] URL [DIR] ...` with `word`s quoted for a shell.
fn command(args: &TeleportArgs, attach: bool) -> String {
    let mut words = vec!["pexen".to_string(), "teleport".to_string()];
    if attach {
        words.push("--attach".into());
    }
    words.push(shell_word(&args.host));
    if args.dir != std::path::Path::new(".") || args.state != args.dir.join(".pexen") {
        words.push(shell_word(&args.dir.to_string_lossy()));
    }
    if args.state != args.dir.join(".pexen") {
        words.push("--state".into());
        words.push(shell_word(&args.state.to_string_lossy()));
    }
    if !attach {
        for f in &args.filters {
            words.extend(["--filter".into(), shell_word(f)]);
        }
        for t in &args.tags {
            words.extend(["--tag".into(), shell_word(t)]);
        }
    }
    words.join(" ")
}

fn shell_word(word: &str) -> String {
    shlex::try_quote(word).map_or_else(|_| word.to_string(), std::borrow::Cow::into_owned)
}

/// `985 B`, `12.3 KiB`, `118.4 MiB`.
fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub(super) fn teleport(args: &TeleportArgs) -> Result<i32, CliError> {
    let host = HostSpec::parse(&args.host).map_err(|e| CliError::Usage(e.to_string()))?;
    if !args.attach {
        // A tree with errors is refused here, with where they are, before anything is shipped.
        let tree = super::load(&args.dir)?;
        let capacity = super::capacities(&tree.capacity, &args.capacity);
        let built = crate::graph::Graph::build(&tree.tasks, &capacity)
            .map_err(|e| super::located(e, &tree));
        super::drop_in_background(tree);
        built?;
    }
    let t = Teleport {
        host,
        dir: args.dir.clone(),
        state: args.state.clone(),
        options: RunOptions {
            filters: args.filters.clone(),
            tags: args.tags.clone(),
            prefer: args.prefer.clone(),
            jobs: args.jobs.map(|j| j as usize),
            fail_fast: args.fail_fast,
            retries: args.retries,
            timeout_ms: args.timeout.map(|d| d.as_millis() as u64),
            grace_ms: args.grace.as_millis() as u64,
            capacity: args.capacity.clone(),
            junit: args.junit.is_some(),
            explain: args.explain,
        },
        junit: args.junit.clone(),
        attach_hint: command(args, true),
    };
    let tty = std::io::stderr().is_terminal();
    let color = match args.color {
        Color::Auto => ColorChoice::Auto,
        Color::Always => ColorChoice::Always,
        Color::Never => ColorChoice::Never,
    }
    .enabled(tty, std::env::var_os("NO_COLOR").as_deref());
    let json = args.message_format == MessageFormat::Json;
    let mut stdout = std::io::stdout().lock();
    // Key order is part of the format: "type" first, as in every line.
    let mut line = |value: &Line<'_>| {
        let text = match value {
            Line::Raw(text) => Ok((*text).to_string()),
            other => serde_json::to_string(other),
        };
        if let Ok(text) = text {
            let _ = writeln!(stdout, "{text}");
            let _ = stdout.flush();
        }
    };

    let stop = Stop::default();
    let display = Display::plain(color);
    let watch = watch_signals(stop.clone(), display.clone());
    let session = if args.attach {
        t.attach(&stop)
    } else {
        t.start(&stop)
    };
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            drop(watch);
            if json {
                detached(&mut line, &e);
            }
            return Err(e.into());
        }
    };
    let host = session.host().to_string();
    match (session.shipped(), json) {
        (Some(s), true) => line(&Line::Teleported {
            host: &host,
            uploaded: s.uploaded,
            files_sent: s.tree_files,
            state_files_sent: s.state_files,
            bytes_sent: s.bytes_sent,
        }),
        (None, true) => line(&Line::TeleportAttached { host: &host }),
        (Some(s), false) => display.line(&format!(
            "{} to {host}: binary {}, {} tree file{} and {} state file{} sent ({})",
            display.label("Teleported", crate::report::display::Tone::Good),
            if s.uploaded {
                "uploaded"
            } else {
                "cached there"
            },
            s.tree_files,
            if s.tree_files == 1 { "" } else { "s" },
            s.state_files,
            if s.state_files == 1 { "" } else { "s" },
            size(s.bytes_sent)
        )),
        (None, false) => display.line(&format!(
            "{} to the run on {host}",
            display.label("Attached", crate::report::display::Tone::Good)
        )),
    }
    let prelude = session.prelude().clone();
    for w in &prelude.warnings {
        say(format_args!("warning: {w}"));
    }
    for l in &prelude.explanations {
        display.line(l);
    }
    let mut human = (!json).then(|| {
        let mut b = HumanReporter::builder()
            .live(tty)
            .color(color)
            .slow_period(Some(args.slow_timeout))
            .max_attempts(prelude.attempts.iter().cloned())
            .resumed(prelude.resumed)
            .resume_hint(command(args, false));
        if let Some((selected, providers)) = prelude.selection {
            b = b.selection(selected, providers);
        }
        b.build()
    });
    let options = JsonOptions {
        output: args.json_output,
    };
    // As `pexen run`: with JSON, the warnings are also `warning` objects right after
    // `run-started`.
    let mut early: Vec<String> = if json {
        prelude.warnings.clone()
    } else {
        Vec::new()
    };
    for event in &mut session {
        if let Some(h) = &mut human {
            h.event(&event);
        } else if let Some(l) = event_json_with(&event, options) {
            line(&Line::Raw(&l));
            if matches!(event, Event::RunStarted { .. }) {
                for message in early.drain(..) {
                    let warning = Event::Warning {
                        task: None,
                        message,
                    };
                    if let Some(l) = event_json_with(&warning, options) {
                        line(&Line::Raw(&l));
                    }
                }
            }
        }
    }
    drop(human);
    let landed = session.finish();
    drop(watch);
    let landing = match landed {
        Ok(l) => l,
        Err(e) => {
            if json {
                detached(&mut line, &e);
            }
            return Err(e.into());
        }
    };
    let ended = landing.ended;
    if let Some(error) = &ended.error {
        say(format_args!("error: {error}"));
    }
    if json && !ended.suspended_by.is_empty() && !ended.interrupted {
        line(&Line::RunSuspended {
            tasks: &ended.suspended_by,
            resume: &command(args, false),
        });
    }
    if !json {
        display.line(&format!(
            "{} from {host}: the journal, the checkpoints{} ({} file{} changed)",
            display.label("Brought back", crate::report::display::Tone::Good),
            if args.junit.is_some() {
                " and the JUnit report"
            } else {
                ""
            },
            landing.files_back,
            if landing.files_back == 1 { "" } else { "s" }
        ));
    }
    Ok(ended.code)
}

/// A lost connection (the run goes on there), for scripts: how to re-attach.
fn detached(line: &mut impl FnMut(&Line<'_>), e: &TeleportError) {
    if let TeleportError::Lost {
        host,
        reason,
        attach,
    } = e
    {
        line(&Line::TeleportDetached {
            host,
            reason,
            attach,
        });
    }
}

/// The JSON lines a teleport adds around the run's own.
#[derive(serde::Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Line<'a> {
    /// An event's line, as the event writer made it.
    #[serde(skip)]
    Raw(&'a str),
    Teleported {
        host: &'a str,
        uploaded: bool,
        files_sent: usize,
        state_files_sent: usize,
        bytes_sent: u64,
    },
    TeleportAttached {
        host: &'a str,
    },
    TeleportDetached {
        host: &'a str,
        reason: &'a str,
        attach: &'a str,
    },
    RunSuspended {
        tasks: &'a [crate::task::TaskName],
        resume: &'a str,
    },
}

/// SIGINT, SIGTERM, SIGHUP, SIGQUIT: relayed to the run there (the first stops it, the second
/// kills its tasks).
fn watch_signals(stop: Stop, display: Display) -> Option<SignalWatch> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    SignalWatch::start(&[SIGINT, SIGTERM, SIGHUP, SIGQUIT], move |signal| {
        let name = crate::pool::command::procs::signal_name(signal);
        if stop.interrupt() >= 2 {
            display.line(&format!(
                "interrupted again ({name}): killing the running tasks there"
            ));
        } else {
            display.line(&format!(
                "interrupted: {name}, stopping the run there (interrupt again to kill its tasks)"
            ));
        }
    })
}
