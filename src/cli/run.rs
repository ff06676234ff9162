//! `pexen run`: the library's run of a tree ([`crate::engine`]: load, select, decide what to
//! resume, run, journal, JUnit), shown on the terminal (human or JSON) and stopped by signals.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use super::args::{Color, MessageFormat, RunArgs};
use super::signals::SignalWatch;
use super::CliError;
use crate::engine::RunRequest;
use crate::error::exit_code;
use crate::report::display::{ColorChoice, Display};
use crate::report::human::HumanReporter;
use crate::report::json::{event_json_with, JsonOptions};
use crate::sched::events::Event;
use crate::sched::RunHandle;

/// The library call that `pexen serve` makes too, with the command line's settings.
fn request(args: &RunArgs) -> Result<RunRequest, CliError> {
    Ok(RunRequest {
        dir: args.dir.clone(),
        state: args.state.clone(),
        filters: args.filters.clone(),
        tags: args.tags.clone(),
        prefer: args.prefer.clone(),
        jobs: args.jobs.map(|j| j as usize),
        resume: args.resume,
        fail_fast: args.fail_fast,
        retries: args.retries,
        timeout: args.timeout,
        grace: args.grace,
        capacity: args.capacity.clone(),
        junit: args.junit.clone(),
        hosts: hosts_config(args)?,
    })
}

pub(super) fn run(args: &RunArgs) -> Result<i32, CliError> {
    let request = request(args)?;
    // Ends the hosts' setups on a Ctrl-C that comes before the run is there to cancel.
    let connecting = request.hosts.as_ref().map(|h| h.connecting.clone());
    let prepared = request.prepare()?;

    let tty = std::io::stderr().is_terminal();
    let color = match args.color {
        Color::Auto => ColorChoice::Auto,
        Color::Always => ColorChoice::Always,
        Color::Never => ColorChoice::Never,
    }
    .enabled(tty, std::env::var_os("NO_COLOR").as_deref());
    let display = Display::plain(color);
    let json = args.message_format == MessageFormat::Json;
    // The tree's warnings, then the preflight's, then the journal's, on stderr.
    let (tree_warnings, journal_warnings) = prepared.warnings().split_at(prepared.tree_warnings());
    let preflight = super::preflight::warnings(prepared.tasks());
    for w in tree_warnings {
        say(format_args!("warning: {w}"));
    }
    for w in &preflight {
        display.warning(w);
    }
    for w in journal_warnings {
        display.warning(w);
    }
    // With `--message-format json`, also `warning` objects on stdout, right after `run-started`.
    let mut early_warnings: Vec<String> = if json {
        tree_warnings
            .iter()
            .chain(&preflight)
            .chain(journal_warnings)
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    if args.explain {
        for line in prepared.explanations() {
            display.line(&line);
        }
    }

    let mut human = (!json).then(|| {
        let mut b = HumanReporter::builder()
            .live(tty)
            .color(color)
            .slow_period(Some(args.slow_timeout))
            .max_attempts(
                prepared
                    .tasks()
                    .iter()
                    .map(|t| (t.name.clone(), t.meta.more.retries + 1)),
            )
            .resumed(prepared.resumed_count())
            .resume_hint(resume_hint(args));
        if let Some((selected, providers)) = prepared.selection_counts() {
            b = b.selection(selected, providers);
        }
        b.build()
    });
    let display = human.as_ref().map_or(display, HumanReporter::display);

    let prepared = prepared.configure(|b, journal| super::slurm::configure(b, args, journal))?;
    // Signals are caught before the run starts: starting may take a while (hosts connecting),
    // and a Ctrl-C then must stop the run, not kill pexen with its connections left behind.
    let interrupted = Arc::new(AtomicBool::new(false));
    let target = Arc::new(OnceLock::new());
    let signals = watch_signals(
        target.clone(),
        connecting,
        interrupted.clone(),
        display.clone(),
    );
    let mut run = prepared.start()?;
    let handle = run.handle();
    if target.set(handle.clone()).is_ok() && interrupted.load(Ordering::SeqCst) {
        // Interrupted while starting.
        handle.cancel();
    }

    let json_options = JsonOptions {
        output: args.json_output,
    };
    let mut stdout = std::io::stdout().lock();
    for event in &mut run {
        // Already journaled by the observer: what is reported has been recorded.
        if let Some(h) = &mut human {
            h.event(&event);
        } else if let Some(line) = event_json_with(&event, json_options) {
            let _ = writeln!(stdout, "{line}");
            if matches!(event, Event::RunStarted { .. }) {
                for message in early_warnings.drain(..) {
                    let warning = Event::Warning {
                        task: None,
                        message,
                    };
                    if let Some(line) = event_json_with(&warning, json_options) {
                        let _ = writeln!(stdout, "{line}");
                    }
                }
            }
            let _ = stdout.flush();
        }
    }
    drop(signals);
    let interrupted = interrupted.load(Ordering::SeqCst);
    let suspended_by = run.suspended_by().to_vec();
    if json && !suspended_by.is_empty() && !interrupted {
        // What to run next, for scripts: the run is not over (exit code 4).
        #[derive(serde::Serialize)]
        struct RunSuspended<'a> {
            r#type: &'static str,
            tasks: &'a [crate::task::TaskName],
            resume: String,
        }
        let line = RunSuspended {
            r#type: "run-suspended",
            tasks: &suspended_by,
            resume: resume_hint(args),
        };
        if let Ok(line) = serde_json::to_string(&line) {
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
    }
    let report = run.finish()?;
    Ok(if interrupted {
        exit_code::INTERRUPTED
    } else if !suspended_by.is_empty() {
        exit_code::SUSPENDED
    } else if report.outcome.is_success() {
        exit_code::OK
    } else {
        exit_code::TASK_FAILED
    })
}

/// The command that continues a suspended run: the same tree, state and selection, with
/// `--resume`.
fn resume_hint(args: &RunArgs) -> String {
    let mut words = vec!["pexen".to_string(), "run".to_string()];
    if args.dir != std::path::Path::new(".") {
        words.push(shell_word(&args.dir.to_string_lossy()));
    }
    if args.state != args.dir.join(".pexen") {
        words.push("--state".into());
        words.push(shell_word(&args.state.to_string_lossy()));
    }
    for f in &args.filters {
        words.extend(["--filter".into(), shell_word(f)]);
    }
    for t in &args.tags {
        words.extend(["--tag".into(), shell_word(t)]);
    }
    words.push("--resume".into());
    words.join(" ")
}

/// `word` quoted for a POSIX shell when it needs to be.
fn shell_word(word: &str) -> String {
    // Only a NUL byte cannot be quoted, and no argument can hold one.
    shlex::try_quote(word).map_or_else(|_| word.to_string(), std::borrow::Cow::into_owned)
}

/// The hosts of `--host`, `--hosts` and `--no-local`, if any.
fn hosts_config(args: &RunArgs) -> Result<Option<crate::host::HostsConfig>, CliError> {
    use crate::host::{check_unique_names, load_hosts_file, HostSpec};
    let usage = |e: crate::host::SpecError| CliError::Usage(e.to_string());
    let mut hosts = Vec::new();
    if let Some(file) = &args.hosts_file {
        hosts.extend(load_hosts_file(file).map_err(usage)?);
    }
    for spec in &args.hosts {
        hosts.push(HostSpec::parse(spec).map_err(usage)?);
    }
    if hosts.is_empty() {
        if args.no_local {
            return Err(CliError::Usage(
                "--no-local needs hosts to run on: give --host or --hosts".into(),
            ));
        }
        return Ok(None);
    }
    // `local` (a hosts file entry may give it tags and capacities) is this machine: it is
    // there unless --no-local.
    let local = hosts
        .iter()
        .position(|h| h.kind == crate::host::HostKind::Local)
        .map(|i| hosts.remove(i));
    hosts.retain(|h| h.kind != crate::host::HostKind::Local);
    hosts.insert(0, local.unwrap_or_else(|| HostSpec::local(1)));
    check_unique_names(&hosts).map_err(usage)?;
    if args.no_local {
        hosts.remove(0);
    }
    let tls = super::tls_files(
        args.tls_cert.as_ref(),
        args.tls_key.as_ref(),
        args.ca.as_ref(),
    );
    if tls.is_none() {
        if let Some(h) = hosts
            .iter()
            .find(|h| matches!(h.kind, crate::host::HostKind::Tls { .. }))
        {
            return Err(CliError::Usage(format!(
                "host {} is a tls:// host: give this run's identity with --tls-cert, --tls-key and --ca",
                h.name
            )));
        }
    }
    Ok(Some(crate::host::HostsConfig {
        hosts,
        no_local: args.no_local,
        tree: None,
        tls,
        pilots: None,
        connecting: crate::host::Connecting::default(),
    }))
}

/// Writes a line to stderr, ignoring failure: stderr may be closed (`2>&1 | head` whose reader
/// exited, a dropped ssh link), and that must not stop pexen (`eprintln!` would panic, and a
/// panic on the signal thread would leave SIGINT caught by nobody).
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Signal handling, in one place. SIGINT, SIGTERM, SIGHUP (terminal or ssh session closed) and
/// SIGQUIT: the first stops the run cleanly (running commands get SIGTERM, a grace period, then
/// SIGKILL), the second kills them at once; either way the run reports and journals every
/// task, as nextest treats them. SIGTSTP (Ctrl-Z): running task groups are stopped and their
/// timeouts paused, then pexen stops itself; SIGCONT continues them.
///
/// Until the run is in `target`, an interrupt ends the hosts' setups (`connecting`) and is
/// recorded in `interrupted` (the caller cancels the run once it has started); Ctrl-Z stops
/// pexen as usual.
fn watch_signals(
    target: Arc<OnceLock<RunHandle>>,
    connecting: Option<crate::host::Connecting>,
    interrupted: Arc<AtomicBool>,
    display: Display,
) -> Option<SignalWatch> {
    use signal_hook::consts::{SIGCONT, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTSTP};
    let signals = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGCONT];
    SignalWatch::start(&signals, move |signal| {
        let name = crate::pool::command::procs::signal_name(signal);
        let Some(run) = target.get() else {
            match signal {
                SIGTSTP => {
                    let _ = signal_hook::low_level::emulate_default_handler(SIGTSTP);
                }
                SIGCONT => {}
                _ => {
                    interrupted.store(true, Ordering::SeqCst);
                    if let Some(c) = &connecting {
                        c.cancel();
                    }
                    display.line(&format!(
                        "interrupted: {name}, stopping the run as it starts"
                    ));
                }
            }
            return;
        };
        match signal {
            SIGTSTP => {
                run.pause();
                // Then stop as the default action would (SIGSTOP to ourselves).
                let _ = signal_hook::low_level::emulate_default_handler(SIGTSTP);
            }
            SIGCONT => run.resume(),
            // Act first, then say: a terminal nobody reads (Ctrl-S, a full pty) can block the
            // write.
            _ if interrupted.swap(true, Ordering::SeqCst) => {
                run.kill();
                display.line(&format!(
                    "interrupted again ({name}): killing running tasks"
                ));
            }
            _ => {
                run.cancel();
                display.line(&format!(
                    "interrupted: {name}, stopping running tasks (interrupt again to kill them)"
                ));
            }
        }
    })
}
