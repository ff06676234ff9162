//! Pilot workers (`pexen run --slurm --slurm-workers N`, SPEC section 10): N Slurm jobs that
//! each run `pexen worker --connect` and connect back to this run over mutual TLS, then take
//! attempts as the hosts of SPEC section 9 do, in milliseconds instead of a job per attempt.
//!
//! - **Seats.** The run has N places named `pilot-1` ... `pilot-N` (`HostKind::Pilot`), each
//!   served by one worker job at a time. Connecting a seat (`Pilots::link`) submits a job and
//!   waits until its worker connects back; so the hosts' own logic does the rest: placement,
//!   `host-connected`, a lost connection (`host-lost`, its attempts put back in the queue),
//!   and reconnection, which here submits a replacement job, only when a task wants the seat
//!   (work remains), with the hosts' bounded backoff.
//! - **Credentials made for the run** (`creds.rs`): a CA whose key stays in memory, a server
//!   certificate for the address workers connect to, and a client certificate per job. The TLS
//!   handshake (client certificate required) comes before any frame; a connection is matched to
//!   its job by its certificate, once. Then the one protocol: no code in any message.
//! - **The listener** binds loopback unless told otherwise (`--slurm-listen`), and each
//!   handshake must finish within [`super::tls::HANDSHAKE_LIMIT`].
//! - **The Slurm side** (submit, journal, poll, cancel) is `pool::slurm::workers`.

pub(crate) mod creds;

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::{Connection, ServerConnection};
use thiserror::Error;

use super::spec::{HostKind, HostSpec};
use super::ssh::{self, ConnectError, Link};
use super::tls::{self, Piped};
use crate::pool::slurm::verdict::Seen;
use crate::pool::slurm::workers::WorkerJobs;
use crate::pool::slurm::{SlurmConfig, SlurmError};
use crate::protocol::{FrameReader, Hello};

/// How long a worker has, once connected, to say hello.
const HELLO_LIMIT: Duration = Duration::from_secs(120);
/// Handshakes in progress at most; connections beyond are closed at once.
const MAX_HANDSHAKES: usize = 64;
/// How often a seat waiting for its job looks at the job's state.
const WAIT_TICK: Duration = Duration::from_millis(100);

/// Settings of a run's pilot workers. See [`Pilots::start`].
#[derive(Clone, Debug)]
pub struct PilotConfig {
    /// How many worker jobs at once.
    pub workers: usize,
    /// Attempts at once on each worker (each job asks Slurm for as many CPUs).
    pub jobs: usize,
    /// Where the controller listens: `HOST`, `HOST:PORT` or `[V6]:PORT` (port 0 or none: any
    /// free port). Workers connect to `HOST`, or to this machine's name when `HOST` is
    /// `0.0.0.0` or `::`. Default `127.0.0.1` (a one-node cluster that is this machine).
    pub listen: String,
    /// Job submission: `STATE/slurm` (on the filesystem the nodes share), the run's
    /// `--slurm-arg`s and Slurm's commands.
    pub slurm: SlurmConfig,
    /// The directory worker jobs start in (tasks without a `cwd` run there).
    pub cwd: PathBuf,
    /// The `pexen` executable the jobs run (default: this one, which must be on the shared
    /// filesystem).
    pub exe: Option<PathBuf>,
    /// A worker with no attempt for this long, while no task waits for a place, is released:
    /// its job ends, and a new one is submitted if work comes for it. `None`: kept to the end.
    pub idle: Option<Duration>,
    /// Tags of every worker, for tasks' `host_tags` (what the jobs' `--slurm-arg`s give them).
    pub tags: Vec<String>,
}

/// Why pilot workers cannot be set up.
#[derive(Debug, Error)]
pub enum PilotError {
    #[error("cannot make the run's credentials: {0}")]
    Credentials(String),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for workers on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad --slurm-listen `{0}`: expected HOST, HOST:PORT or [V6]:PORT")]
    Address(String),
    #[error("cannot find this program's executable")]
    Exe(#[source] std::io::Error),
    #[error(transparent)]
    Slurm(#[from] SlurmError),
}

/// One connection attempt a seat waits for: the job's certificate, and the connection once
/// it came.
struct Ticket {
    der: Vec<u8>,
    arrived: Option<Piped>,
}

#[derive(Default)]
struct State {
    tickets: HashMap<u64, Ticket>,
    handshaking: usize,
}

/// The pilot workers of a run: the listener, the credentials and the worker jobs.
pub struct Pilots {
    workers: usize,
    jobs: usize,
    idle: Option<Duration>,
    tags: Vec<String>,
    exe: PathBuf,
    cwd: PathBuf,
    /// `HOST:PORT` as workers reach it.
    addr: String,
    ca: creds::RunCa,
    ca_file: PathBuf,
    slurm: WorkerJobs,
    state: Mutex<State>,
    arrived: Condvar,
    next_ticket: AtomicU64,
    /// Set by a cancel: no more jobs are submitted.
    stopping: AtomicBool,
    /// Set at the end of the run.
    closed: AtomicBool,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pilots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pilots")
            .field("workers", &self.workers)
            .field("jobs", &self.jobs)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `HOST`, `HOST:PORT` or `[V6]:PORT` -> (host, port).
fn split_addr(addr: &str) -> Result<(String, u16), PilotError> {
    let bad = || PilotError::Address(addr.to_owned());
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, port) = rest.split_once(']').ok_or_else(bad)?;
        let port = match port.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if port.is_empty() => 0,
            None => return Err(bad()),
        };
        return Ok((host.to_owned(), port));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            if host.is_empty() {
                return Err(bad());
            }
            Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
        }
        None if addr.is_empty() => Err(bad()),
        // A host alone, or a bare IPv6 address.
        _ => Ok((addr.to_owned(), 0)),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Whether `host` is a loopback address or name (workers on other machines cannot reach it).
pub fn is_loopback(listen: &str) -> bool {
    split_addr(listen).is_ok_and(|(host, _)| {
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

impl Pilots {
    /// Makes the run's credentials, prepares `STATE/slurm/workers` and starts listening. No
    /// job is submitted yet: each seat submits its own when the run connects it.
    pub fn start(config: PilotConfig) -> Result<Arc<Pilots>, PilotError> {
        let exe = match config.exe.clone() {
            Some(e) => e,
            None => std::env::current_exe().map_err(PilotError::Exe)?,
        };
        let (host, port) = split_addr(&config.listen)?;
        let unspecified = host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        let bind = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let listener = TcpListener::bind(&bind).map_err(|source| PilotError::Listen {
            addr: bind.clone(),
            source,
        })?;
        let bound = listener.local_addr().map_err(|source| PilotError::Listen {
            addr: bind.clone(),
            source,
        })?;
        let reach = if unspecified { hostname() } else { host };
        let addr = if reach.contains(':') {
            format!("[{reach}]:{}", bound.port())
        } else {
            format!("{reach}:{}", bound.port())
        };
        let dir = config.slurm.dir.join("workers");
        let slurm = WorkerJobs::new(config.slurm.clone(), &dir)?;
        let ca = creds::RunCa::new()?;
        let ca_file = slurm.dir().join("ca.pem");
        ca.write_cert(&ca_file)?;
        let server = ca.server_config(&reach)?;
        let pilots = Arc::new(Pilots {
            workers: config.workers.max(1),
            jobs: config.jobs.max(1),
            idle: config.idle,
            tags: config.tags,
            exe,
            cwd: config.cwd,
            addr,
            ca,
            ca_file,
            slurm,
            state: Mutex::new(State::default()),
            arrived: Condvar::new(),
            next_ticket: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            listener: Mutex::new(None),
        });
        let weak = Arc::downgrade(&pilots);
        let thread = std::thread::Builder::new()
            .name("pexen-pilots".into())
            .spawn(move || accept_loop(&listener, &weak, &server))
            .map_err(|source| PilotError::Listen { addr: bind, source })?;
        *lock(&pilots.listener) = Some(thread);
        Ok(pilots)
    }

    /// The address workers connect to (`HOST:PORT`).
    /// How long a worker may stay idle before it is released (see [`PilotConfig::idle`]).
    pub(crate) fn idle(&self) -> Option<Duration> {
        self.idle
    }

    /// The run is over (see [`Pilots::shutdown`]).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub fn address(&self) -> &str {
        &self.addr
    }

    /// The seats, as hosts of the run: `pilot-1` ... `pilot-N`.
    pub(crate) fn seats(&self) -> Vec<HostSpec> {
        (0..self.workers)
            .map(|seat| HostSpec {
                name: format!("pilot-{}", seat + 1),
                kind: HostKind::Pilot { seat },
                jobs: Some(self.jobs),
                tags: self.tags.clone(),
                capacity: std::collections::BTreeMap::new(),
                // The nodes share the tree: nothing is synced.
                shared_fs: true,
            })
            .collect()
    }

    /// Submits a worker job for `seat` and waits until its worker connected back and said
    /// hello. A job that ends before that is a transient failure (the hosts try again, with
    /// backoff); a job Slurm refuses is not.
    pub(crate) fn link(&self, seat: usize) -> Result<Link, ConnectError> {
        if self.stopping.load(Ordering::SeqCst) || self.closed.load(Ordering::SeqCst) {
            return Err(ConnectError::Bootstrap("the run is ending".into()));
        }
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let name = format!("pilot-{}", seat + 1);
        let files = self
            .ca
            .worker(self.slurm.dir(), &format!("w{ticket}"))
            .map_err(|e| ConnectError::Bootstrap(crate::error::error_chain(&e)))?;
        lock(&self.state).tickets.insert(
            ticket,
            Ticket {
                der: files.der.clone(),
                arrived: None,
            },
        );
        let forget = |this: &Self| {
            lock(&this.state).tickets.remove(&ticket);
            let _ = std::fs::remove_file(&files.key);
            let _ = std::fs::remove_file(&files.cert);
        };
        let command: Vec<String> = vec![
            self.exe.to_string_lossy().into_owned(),
            "worker".into(),
            "--connect".into(),
            self.addr.clone(),
            "--tls-cert".into(),
            files.cert.to_string_lossy().into_owned(),
            "--tls-key".into(),
            files.key.to_string_lossy().into_owned(),
            "--ca".into(),
            self.ca_file.to_string_lossy().into_owned(),
            "-j".into(),
            self.jobs.to_string(),
        ];
        let id = match self.slurm.submit(&name, &command, self.jobs, &self.cwd) {
            Ok(id) => id,
            Err(e) => {
                forget(self);
                return Err(ConnectError::Bootstrap(format!(
                    "cannot submit the worker job: {}",
                    crate::error::error_chain(&e)
                )));
            }
        };
        let piped = loop {
            let mut state = lock(&self.state);
            if let Some(p) = state
                .tickets
                .get_mut(&ticket)
                .and_then(|t| t.arrived.take())
            {
                state.tickets.remove(&ticket);
                break p;
            }
            if self.stopping.load(Ordering::SeqCst) || self.closed.load(Ordering::SeqCst) {
                drop(state);
                forget(self);
                self.slurm.cancel(&id);
                return Err(ConnectError::Bootstrap("the run is ending".into()));
            }
            if let seen @ (Seen::Ended(_) | Seen::Gone) = self.slurm.seen(&id) {
                drop(state);
                forget(self);
                self.slurm.over(&id);
                let how = match seen {
                    Seen::Ended(s) => format!(" ({s})"),
                    _ => String::new(),
                };
                let said = self.slurm.output_tail(&id);
                let said = if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                };
                return Err(ConnectError::Unreachable(format!(
                    "Slurm job {id}{how} ended before its worker connected back to {}{said}",
                    self.addr
                )));
            }
            drop(
                self.arrived
                    .wait_timeout(state, WAIT_TICK)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        };
        // The worker read its key: the file is of no more use.
        forget(self);
        self.slurm.connected(&id);
        let Piped {
            input,
            output,
            pump,
        } = piped;
        let mut link = Link {
            transport: Box::new(pump),
            stdin: Box::new(output),
            frames: FrameReader::new(input),
            // The reason of a loss ends with this line: it names the job.
            stderr: Arc::new(Mutex::new(format!("Slurm job {id}"))),
            hello: Hello::new(None),
            uploaded: false,
            synced: Vec::new(),
            files_sent: 0,
        };
        let bin = ssh::Binary::this().map_err(ConnectError::Bootstrap)?;
        if let Err(e) = ssh::hello(&mut link, Some(bin), Instant::now() + HELLO_LIMIT) {
            link.transport.kill();
            self.slurm.cancel(&id);
            return Err(e);
        }
        Ok(link)
    }

    /// The run is cancelled: seats stop waiting and nothing more is submitted.
    pub(crate) fn cancel(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.arrived.notify_all();
    }

    /// The run is over (the hosts' connections closed): stops listening, ends every worker job
    /// (see `WorkerJobs::finish`). Idempotent.
    pub(crate) fn shutdown(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.arrived.notify_all();
        let listener = lock(&self.listener).take();
        // The listener itself may hold the last reference to the pilots.
        if let Some(t) = listener.filter(|t| t.thread().id() != std::thread::current().id()) {
            let _ = t.join();
        }
        // Connections that came and were not taken.
        let tickets = std::mem::take(&mut lock(&self.state).tickets);
        for (_, t) in tickets {
            if let Some(mut p) = t.arrived {
                ssh::Transport::kill(&mut p.pump);
            }
        }
        self.slurm.finish();
    }

    /// A connection whose handshake passed: hands it to the seat whose job has this
    /// certificate, or closes it.
    fn arrive(&self, der: &[u8], mut piped: Piped) {
        let mut state = lock(&self.state);
        let ticket = state
            .tickets
            .values_mut()
            .find(|t| t.der == der && t.arrived.is_none());
        match ticket {
            Some(t) if !self.closed.load(Ordering::SeqCst) => {
                t.arrived = Some(piped);
                drop(state);
                self.arrived.notify_all();
            }
            _ => {
                drop(state);
                ssh::Transport::kill(&mut piped.pump);
            }
        }
    }
}

impl Drop for Pilots {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Accepts workers until the run ends: each connection gets a thread for its handshake
/// (bounded in time and in number); a client without a certificate of this run fails it.
fn accept_loop(
    listener: &TcpListener,
    pilots: &std::sync::Weak<Pilots>,
    server: &Arc<rustls::ServerConfig>,
) {
    loop {
        let mut fd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&raw mut fd, 1, 100) };
        let Some(p) = pilots.upgrade() else { return };
        if p.closed.load(Ordering::SeqCst) {
            return;
        }
        if n <= 0 {
            continue;
        }
        let Ok((sock, _)) = listener.accept() else {
            continue;
        };
        {
            let mut state = lock(&p.state);
            if state.handshaking >= MAX_HANDSHAKES {
                continue;
            }
            state.handshaking += 1;
        }
        let server = server.clone();
        let weak = pilots.clone();
        let spawned = std::thread::Builder::new()
            .name("pexen-pilot-tls".into())
            .spawn(move || {
                let result = handshake(sock, server);
                if let Some(p) = weak.upgrade() {
                    lock(&p.state).handshaking -= 1;
                    if let Some((der, piped)) = result {
                        p.arrive(&der, piped);
                    }
                }
            });
        if spawned.is_err() {
            lock(&p.state).handshaking -= 1;
        }
    }
}

/// The server side of one worker's handshake: its certificate and the connection as pipes.
fn handshake(mut sock: TcpStream, server: Arc<rustls::ServerConfig>) -> Option<(Vec<u8>, Piped)> {
    let conn = ServerConnection::new(server).ok()?;
    let mut conn = Connection::Server(conn);
    tls::handshake(&mut conn, &mut sock).ok()?;
    let der = conn.peer_certificates()?.first()?.as_ref().to_vec();
    let piped = tls::piped(conn, sock).ok()?;
    Some((der, piped))
}

/// Why `pexen worker --connect` stopped.
#[derive(Debug, Error)]
pub enum ConnectBackError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Address(#[from] PilotError),
    #[error(transparent)]
    Serve(#[from] super::serve::WorkerError),
}

/// `pexen worker --connect ADDR`: a pilot worker. Connects to the controller at `addr` with
/// mutual TLS (`files`: this job's certificate and key, and the run's CA), then serves it until
/// it closes the connection (the run ended) or the connection drops; either way every task
/// still running is killed before this returns.
pub fn connect_back(
    addr: &str,
    files: &tls::TlsFiles,
    jobs: Option<usize>,
) -> Result<(), ConnectBackError> {
    let (host, port) = split_addr(addr)?;
    let config = tls::client_config(files)?;
    let Piped {
        input,
        output,
        mut pump,
    } = tls::connect(&host, port, config)?;
    let served = super::serve::serve(input, output, None, jobs, None);
    ssh::Transport::kill(&mut pump);
    Ok(served?)
}

/// The seat a place of the run is, when it is one.
pub(crate) fn seat_of(kind: &HostKind) -> Option<usize> {
    match kind {
        HostKind::Pilot { seat } => Some(*seat),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;

    fn script(path: &std::path::Path, body: &str) -> String {
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// Stand-ins for Slurm: `sbatch` keeps the script it is given and says job 42, which
    /// `squeue` reports running while `running` exists.
    fn pilots(dir: &std::path::Path) -> Arc<Pilots> {
        let d = dir.display();
        let mut slurm = SlurmConfig::new(dir.join("slurm"));
        slurm.sbatch = script(
            &dir.join("sbatch"),
            &format!("for a; do last=\"$a\"; done; cp \"$last\" {d}/submitted.sh; touch {d}/running; echo 42"),
        );
        slurm.squeue = script(
            &dir.join("squeue"),
            &format!("[ -e {d}/running ] && echo '42|RUNNING'; exit 0"),
        );
        slurm.scancel = script(&dir.join("scancel"), &format!("rm -f {d}/running"));
        slurm.poll_interval = Duration::from_millis(100);
        Pilots::start(PilotConfig {
            workers: 1,
            jobs: 1,
            listen: "127.0.0.1".into(),
            idle: None,
            tags: Vec::new(),
            slurm,
            cwd: dir.to_path_buf(),
            exe: Some("/bin/false".into()),
        })
        .unwrap()
    }

    #[test]
    fn only_the_worker_of_the_job_gets_in() {
        let dir = tempfile::tempdir().unwrap();
        let pilots = pilots(dir.path());
        let (host, port) = split_addr(pilots.address()).unwrap();
        assert_eq!(host, "127.0.0.1");
        let seat = {
            let pilots = pilots.clone();
            std::thread::spawn(move || pilots.link(0))
        };
        let submitted = dir.path().join("submitted.sh");
        while !submitted.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let words: Vec<String> = std::fs::read_to_string(&submitted)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .split(' ')
            .map(|w| w.trim_matches('\'').to_owned())
            .collect();
        let arg = |flag: &str| {
            let i = words.iter().position(|w| w == flag).unwrap();
            PathBuf::from(&words[i + 1])
        };
        let mode = std::fs::metadata(arg("--tls-key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // Bytes that are not TLS: closed, nothing read.
        let mut raw = TcpStream::connect((host.as_str(), port)).unwrap();
        raw.write_all(b"\x00\x00\x00\x10{\"Hello\":{}}").unwrap();
        let mut buf = Vec::new();
        let _ = raw.read_to_end(&mut buf);
        assert!(!buf.windows(5).any(|w| w == b"Hello"));

        // A certificate of another CA: refused; the seat keeps waiting.
        let other = creds::RunCa::new().unwrap();
        let f = other.worker(dir.path(), "intruder").unwrap();
        let intruder = tls::TlsFiles {
            cert: f.cert,
            key: f.key,
            ca: arg("--ca"),
        };
        if let Ok(mut p) = tls::connect(&host, port, tls::client_config(&intruder).unwrap()) {
            // TLS 1.3: the client's side may finish before the server's verdict arrives.
            let mut buf = Vec::new();
            let _ = p.input.read_to_end(&mut buf);
            assert!(buf.is_empty());
            ssh::Transport::kill(&mut p.pump);
        }
        assert!(!seat.is_finished());

        // The job's own credentials: the seat gets a worker that said hello.
        let files = tls::TlsFiles {
            cert: arg("--tls-cert"),
            key: arg("--tls-key"),
            ca: arg("--ca"),
        };
        let addr = pilots.address().to_owned();
        let worker = std::thread::spawn(move || connect_back(&addr, &files, Some(1)));
        let mut link = seat.join().unwrap().unwrap();
        assert_eq!(link.hello.protocol, crate::protocol::PROTOCOL);
        // Its key is gone once it is in.
        assert!(!arg("--tls-key").exists());
        link.transport.kill();
        drop(link);
        let _ = worker.join().unwrap();
        let _ = std::fs::remove_file(dir.path().join("running"));
        pilots.shutdown();
        assert!(!dir.path().join("slurm/workers.jobs").exists());
    }

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(split_addr("127.0.0.1").unwrap(), ("127.0.0.1".into(), 0));
        assert_eq!(split_addr("login1:7000").unwrap(), ("login1".into(), 7000));
        assert_eq!(split_addr("[::1]:9").unwrap(), ("::1".into(), 9));
        assert_eq!(split_addr("::").unwrap(), ("::".into(), 0));
        for bad in ["", ":80", "h:port", "[::1"] {
            assert!(split_addr(bad).is_err(), "{bad}");
        }
        assert!(is_loopback("127.0.0.1:0"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("0.0.0.0"));
        assert!(!is_loopback("login1.example.org:7000"));
    }
}
