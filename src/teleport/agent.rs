//! The other machine's side of a teleport: `pexen worker --stdio` handed a `Teleport` message
//! first. It receives the tree (the hosts' content-addressed sync) and the state into
//! `CACHE/teleport/ID/`, starts the run there as `--resume` **detached** (its own session, its
//! output in files: the ssh connection may drop, the run goes on), follows its event log and
//! relays every line, relays Ctrl-C, and when the run is over sends the state back.
//!
//! `CACHE/teleport/ID/`: `tree/` (the synced tree), `state/` (journal, checkpoints),
//! `request.json` (the run's options), `events` (the log: one protocol message per line),
//! `supervisor` (`PID START` of the detached run, written by it once its signal handling is
//! in place), `supervisor.log` (what it printed), `junit.xml`, and `collected` once the state
//! was brought back.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::files::{self, TransferError};
use crate::host::serve::{cache_dir, receive_tree, Out, WorkerError};
use crate::host::tree;
use crate::pool::command::track::proc_stat;
use crate::protocol::teleport::{FromAgent, RunOptions, ToAgent};
use crate::protocol::{self, ChannelError, FrameReader, FromWorker, ToWorker, BEAT};

/// How often the log and the connection are looked at.
const TICK: Duration = Duration::from_millis(20);
/// How long a freshly started run may take to say it is ready.
const READY_LIMIT: Duration = Duration::from_secs(20);

pub(super) const EVENTS: &str = "events";
pub(super) const SUPERVISOR: &str = "supervisor";
pub(super) const REQUEST: &str = "request.json";
pub(super) const JUNIT: &str = "junit.xml";
const COLLECTED: &str = "collected";

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn send(out: &Out, msg: &FromWorker) -> Result<(), WorkerError> {
    Ok(protocol::send(&mut *lock(out), msg)?)
}

fn refuse(out: &Out, message: String) -> Result<(), WorkerError> {
    send(out, &FromWorker::Refused { message })
}

/// The directory of run `id` (a hex digest: never a path).
pub(crate) fn run_dir(id: &str) -> Result<PathBuf, WorkerError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WorkerError::Protocol(format!("bad teleport id `{id}`")));
    }
    Ok(cache_dir().join("teleport").join(id))
}

/// Serves one teleport request (after the hello).
pub(crate) fn serve(mut input: FrameReader, out: &Out, first: ToAgent) -> Result<(), WorkerError> {
    match first {
        ToAgent::Start { id, options } => start(&mut input, out, &run_dir(&id)?, &options),
        ToAgent::Attach { id } => {
            let dir = run_dir(&id)?;
            match Status::of(&dir) {
                Status::None => refuse(
                    out,
                    "no run was teleported to this host from this tree and state directory".into(),
                ),
                Status::Collected => refuse(
                    out,
                    "the run teleported to this host ended and its state was already brought back"
                        .into(),
                ),
                Status::Running(sup) => follow(&mut input, out, &dir, sup),
                Status::Ended => follow(&mut input, out, &dir, Supervisor::gone()),
            }
        }
        other => Err(WorkerError::Protocol(format!(
            "expected a teleport start or attach, got {other:?}"
        ))),
    }
}

/// Where a teleported run is.
enum Status {
    None,
    Running(Supervisor),
    /// Over, its state not yet brought back.
    Ended,
    Collected,
}

impl Status {
    fn of(dir: &Path) -> Status {
        if !dir.join(EVENTS).is_file() {
            return Status::None;
        }
        if let Some(mut sup) = Supervisor::read(dir) {
            if sup.alive() {
                return Status::Running(sup);
            }
        }
        if dir.join(COLLECTED).exists() {
            Status::Collected
        } else {
            Status::Ended
        }
    }
}

/// The detached run, seen from an agent.
pub(super) struct Supervisor {
    pid: i32,
    start: u64,
    /// When this agent started it (it reaps it).
    child: Option<Child>,
}

impl Supervisor {
    fn gone() -> Self {
        Self {
            pid: 0,
            start: 0,
            child: None,
        }
    }

    fn read(dir: &Path) -> Option<Self> {
        let text = fs::read_to_string(dir.join(SUPERVISOR)).ok()?;
        let mut words = text.split_whitespace();
        Some(Self {
            pid: words.next()?.parse().ok()?,
            start: words.next()?.parse().ok()?,
            child: None,
        })
    }

    /// Whether it still runs (the same process: pid and start time).
    fn alive(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            return matches!(child.try_wait(), Ok(None));
        }
        self.pid > 0 && proc_stat(self.pid).is_some_and(|s| s.start_time == self.start && !s.zombie)
    }

    /// Ctrl-C, as the run's own terminal would send it (a second one kills its tasks).
    fn interrupt(&mut self) {
        if self.alive() {
            // SAFETY: kill(2) with a pid just checked to be the run, and a signal.
            unsafe { libc::kill(self.pid, libc::SIGINT) };
        }
    }
}

fn start(
    input: &mut FrameReader,
    out: &Out,
    dir: &Path,
    options: &RunOptions,
) -> Result<(), WorkerError> {
    let tree_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WorkerError::Tree { path, source }
    };
    match Status::of(dir) {
        Status::Running(sup) => {
            return refuse(
                out,
                format!(
                    "a run teleported here from this tree and state directory is still going \
                     (pid {}): re-attach to it with `pexen teleport --attach`",
                    sup.pid
                ),
            )
        }
        Status::Ended => {
            return refuse(
                out,
                "a run teleported here from this tree and state directory ended, but its state \
                 was not brought back: `pexen teleport --attach` brings it back first"
                    .into(),
            )
        }
        Status::None | Status::Collected => {}
    }
    // The tree, with the hosts' own sync.
    let Some(ToWorker::Tree {
        mut manifest,
        manifest_hash,
        deferred,
        ..
    }) = input.next(None)?
    else {
        return Err(WorkerError::Protocol("expected the tree".into()));
    };
    let root = dir.join("tree");
    let received = receive_tree(input, out, &root, &mut manifest, &manifest_hash, deferred);
    if let Err(e) = received {
        refuse(out, format!("cannot receive the tree: {e}"))?;
        return Err(e);
    }
    send(
        out,
        &FromWorker::Ready {
            root: root.to_string_lossy().into_owned(),
            // The run there loads the tree (and reports its problems) itself.
            tasks: 0,
        },
    )?;

    // The state.
    let state = dir.join("state");
    fs::create_dir_all(&state).map_err(tree_err(&state))?;
    let Some(ToWorker::Teleport(ToAgent::State { files: wanted })) = input.next(None)? else {
        return Err(WorkerError::Protocol(
            "expected the state's manifest".into(),
        ));
    };
    for f in &wanted {
        files::state_path(&state, &f.path).map_err(tree_err(&state))?;
    }
    send(
        out,
        &FromWorker::Teleport(FromAgent::Need {
            paths: files::needed(&state, &wanted, files::entry),
        }),
    )?;
    loop {
        match input.next(None)? {
            Some(ToWorker::Teleport(ToAgent::File { path, mode, size })) => {
                let dest = files::state_path(&state, &path).map_err(tree_err(&state))?;
                files::receive_chunks(input, &dest, mode, size, || None)
                    .map_err(|e| transfer(e, &dest))?;
            }
            Some(ToWorker::Teleport(ToAgent::StateDone)) => break,
            Some(other) => {
                return Err(WorkerError::Protocol(format!(
                    "unexpected {other:?} while receiving the state"
                )))
            }
            None => {}
        }
    }
    let keep: HashSet<&str> = wanted.iter().map(|f| f.path.as_str()).collect();
    files::mirror(&state, &keep).map_err(tree_err(&state))?;

    // A fresh log, then the run, detached.
    for stale in [EVENTS, SUPERVISOR, JUNIT, COLLECTED] {
        let _ = fs::remove_file(dir.join(stale));
    }
    let request = serde_json::to_vec(options)
        .map_err(|e| WorkerError::Protocol(format!("cannot encode the options: {e}")))?;
    tree::write_file(dir, REQUEST, 0o600, &request).map_err(tree_err(dir))?;
    tree::write_file(dir, EVENTS, 0o600, b"").map_err(tree_err(dir))?;
    let sup = match spawn(dir) {
        Ok(sup) => sup,
        Err(message) => {
            // Nothing ran: no log, so that the next start is not refused for it.
            let _ = fs::remove_file(dir.join(EVENTS));
            return refuse(out, message);
        }
    };
    send(out, &FromWorker::Teleport(FromAgent::Started))?;
    follow(input, out, dir, sup)
}

fn transfer(e: TransferError, dest: &Path) -> WorkerError {
    match e {
        TransferError::Channel(c) => WorkerError::Channel(c),
        other => WorkerError::Tree {
            path: dest.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// Starts `pexen worker --teleport-run DIR` in a session of its own, its output in
/// `supervisor.log`, and waits until it says it is ready.
fn spawn(dir: &Path) -> Result<Supervisor, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let log = File::create(dir.join("supervisor.log")).map_err(|e| {
        format!(
            "cannot create {}: {e}",
            dir.join("supervisor.log").display()
        )
    })?;
    let err = log
        .try_clone()
        .map_err(|e| format!("cannot use the log: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["worker", "--teleport-run"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the run: {e}"))?;
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        if let Some(mut sup) = Supervisor::read(dir) {
            if sup.pid == child.id() as i32 {
                sup.child = Some(child);
                return Ok(sup);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
            return Err(format!("the run ended at once ({status}): {}", log.trim()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the run did not start within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Relays the run's log from its first line, then live; relays Ctrl-C; when the run is over,
/// sends its state back. End of file from the scheduler (it went away) ends this agent and
/// leaves the run going.
fn follow(
    input: &mut FrameReader,
    out: &Out,
    dir: &Path,
    mut sup: Supervisor,
) -> Result<(), WorkerError> {
    let log_path = dir.join(EVENTS);
    let mut log = File::open(&log_path).map_err(|source| WorkerError::Tree {
        path: log_path.clone(),
        source,
    })?;
    let mut pending = Vec::new();
    let mut beat = Instant::now();
    loop {
        // Whether it ended, before reading: then the read below sees every line it wrote.
        let over = !sup.alive();
        relay(&mut log, &mut pending, out)?;
        if over {
            break;
        }
        match input.next::<ToWorker>(Some(Instant::now() + TICK)) {
            Ok(Some(ToWorker::Cancel { .. })) => sup.interrupt(),
            Ok(Some(other)) => {
                return Err(WorkerError::Protocol(format!(
                    "unexpected {other:?} while the run goes"
                )))
            }
            Ok(None) => {}
            // The scheduler went away: the run goes on; `--attach` picks it up.
            Err(ChannelError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if beat.elapsed() >= BEAT {
            beat = Instant::now();
            send(out, &FromWorker::Beat)?;
        }
    }
    give_back(input, out, dir)
}

/// Sends every complete line added to the log since the last call, each as one frame (a line
/// is the JSON of one protocol message).
fn relay(log: &mut File, pending: &mut Vec<u8>, out: &Out) -> Result<(), WorkerError> {
    let before = pending.len();
    log.read_to_end(pending)
        .map_err(|e| WorkerError::Channel(ChannelError::Io(e)))?;
    if pending.len() == before {
        return Ok(());
    }
    let Some(end) = pending.iter().rposition(|&b| b == b'\n') else {
        return Ok(());
    };
    {
        let mut w = lock(out);
        for line in pending[..end].split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            protocol::send_raw(&mut *w, line)?;
        }
    }
    pending.drain(..=end);
    Ok(())
}

/// The run is over: its state (and JUnit report) back to the scheduler, content-addressed.
fn give_back(input: &mut FrameReader, out: &Out, dir: &Path) -> Result<(), WorkerError> {
    let state = dir.join("state");
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WorkerError::Tree { path, source }
    };
    let mut back = files::state_manifest(&state).map_err(io_err(&state))?;
    if dir.join(JUNIT).is_file() {
        back.push(files::entry(dir, JUNIT.to_string()).map_err(io_err(dir))?);
    }
    send(
        out,
        &FromWorker::Teleport(FromAgent::State {
            files: back.clone(),
        }),
    )?;
    let need = loop {
        match input.next::<ToWorker>(None) {
            Ok(Some(ToWorker::Teleport(ToAgent::Need { paths }))) => break paths,
            // A Ctrl-C that crossed the end of the run: nothing left to stop.
            Ok(Some(ToWorker::Cancel { .. }) | None) => {}
            Ok(Some(other)) => {
                return Err(WorkerError::Protocol(format!(
                    "unexpected {other:?} while sending the state back"
                )))
            }
            Err(ChannelError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    };
    for path in &need {
        let Some(entry) = back.iter().find(|e| &e.path == path) else {
            return Err(WorkerError::Protocol(format!(
                "asked for `{path}`, which is not in the state"
            )));
        };
        let src = if path == JUNIT {
            dir.join(JUNIT)
        } else {
            files::state_path(&state, path).map_err(io_err(&state))?
        };
        let mut w = lock(out);
        protocol::send(
            &mut *w,
            &FromWorker::Teleport(FromAgent::File {
                path: path.clone(),
                mode: entry.mode,
                size: entry.size,
            }),
        )?;
        files::send_chunks(&mut *w, &src, entry.size).map_err(|e| transfer(e, &src))?;
    }
    send(out, &FromWorker::Teleport(FromAgent::StateDone))?;
    loop {
        match input.next::<ToWorker>(None) {
            Ok(Some(ToWorker::Teleport(ToAgent::Collected))) => {
                tree::write_file(dir, COLLECTED, 0o600, b"").map_err(io_err(dir))?;
                return Ok(());
            }
            Ok(Some(ToWorker::Cancel { .. }) | None) => {}
            Ok(Some(other)) => {
                return Err(WorkerError::Protocol(format!(
                    "unexpected {other:?} after the state"
                )))
            }
            Err(ChannelError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_is_a_digest_never_a_path() {
        assert!(run_dir("0123abcdef0123abcdef0123abcdef01").is_ok());
        for bad in ["", "../x", "a/b", "zz", &"a".repeat(65)] {
            assert!(run_dir(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_run_dir_says_where_its_run_is() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(matches!(Status::of(d), Status::None));
        fs::write(d.join(EVENTS), "").unwrap();
        // A recorded supervisor that does not run: the run is over, its state not collected.
        fs::write(d.join(SUPERVISOR), "2147483646 1\n").unwrap();
        assert!(matches!(Status::of(d), Status::Ended));
        let me = std::process::id() as i32;
        let start = proc_stat(me).unwrap().start_time;
        fs::write(d.join(SUPERVISOR), format!("{me} {start}\n")).unwrap();
        assert!(matches!(Status::of(d), Status::Running(_)));
        // The same pid with another start time is another process.
        fs::write(d.join(SUPERVISOR), format!("{me} {}\n", start + 1)).unwrap();
        assert!(matches!(Status::of(d), Status::Ended));
        fs::write(d.join(COLLECTED), "").unwrap();
        assert!(matches!(Status::of(d), Status::Collected));
    }
}
