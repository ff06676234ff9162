//! Reaching an ssh host with nothing installed there: the system `ssh` client (`BatchMode=yes`:
//! the user's config, agent, keys and known_hosts apply, and it never prompts) runs a small
//! POSIX shell script that finds pexen's binary by content hash in the host's cache, or asks
//! for it, receives it through the same connection, verifies it, moves it into place
//! atomically, and execs `pexen worker --stdio`. Then the handshake and the tree sync.
//!
//! Every failure says what really failed: authentication, an unreachable host, an untrusted
//! host key, another OS or architecture, an unusable cache directory, no space left.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::spec::{HostKind, HostSpec};
use crate::protocol::{
    self, ChannelError, FileEntry, FrameReader, FromWorker, Hello, ToWorker, PROTOCOL,
};

/// The environment variable naming the ssh command, with options (`ssh -F ./config`), as
/// `GIT_SSH_COMMAND` does for git. Default: `ssh`.
pub const SSH_ENV: &str = "PEXEN_SSH";

/// How long the bootstrap, the handshake and the tree sync may take together.
const SETUP_LIMIT: Duration = Duration::from_secs(120);

/// Why a host could not be reached or set up.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("cannot start the ssh client `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("authentication refused: {0}")]
    Auth(String),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("host key not trusted: {0}")]
    HostKey(String),
    #[error("ssh failed: {0}")]
    Ssh(String),
    #[error("wrong platform: the host runs {host}, this pexen is built for {here}")]
    Platform { host: String, here: String },
    #[error("unusable binary cache: {0}")]
    Cache(String),
    #[error("no space left: {0}")]
    NoSpace(String),
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    #[error("the worker's binary has hash {got}, expected {want}")]
    Binary { got: String, want: String },
    #[error("the worker speaks protocol {0}, this pexen speaks {PROTOCOL}")]
    Protocol(u32),
    #[error("the connection failed during setup{}", detail_suffix(.detail))]
    Channel {
        detail: String,
        #[source]
        source: ChannelError,
    },
    #[error("TLS handshake refused: {0}")]
    TlsRefused(String),
    #[error("no TLS identity for tls:// hosts: give --tls-cert, --tls-key and --ca")]
    NoTlsIdentity,
    #[error("the host refused the tree: {0}")]
    Tree(String),
    #[error("cannot read the tree to sync")]
    Manifest(#[source] io::Error),
    #[error("setup took longer than {}", humantime::format_duration(SETUP_LIMIT))]
    Timeout,
    #[error("the run was cancelled while connecting")]
    Cancelled,
}

/// An ssh connection being set up (bootstrap, upload, handshake, sync), which a cancelled run
/// ends at once: otherwise a host that stalls would hold the run's end for up to the setup
/// limit.
#[derive(Debug, Default)]
pub(crate) struct Setup {
    /// The ssh client's process group while the setup goes on.
    group: Mutex<Option<i32>>,
    cancelled: AtomicBool,
}

/// A handle that ends the connections of a run's hosts while they are being set up, before
/// the run itself exists (a front end's Ctrl-C while `Scheduler::run` connects the hosts).
/// Part of [`crate::host::HostsConfig`]; every run started with that config answers to it.
#[derive(Clone, Debug, Default)]
pub struct Connecting(Arc<ConnectingInner>);

#[derive(Debug, Default)]
struct ConnectingInner {
    cancelled: AtomicBool,
    setups: Mutex<Vec<std::sync::Weak<Setup>>>,
}

impl Connecting {
    /// Ends every setup going on, and any later one as soon as it starts.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        for setup in lock(&self.0.setups)
            .iter()
            .filter_map(std::sync::Weak::upgrade)
        {
            setup.cancel();
        }
    }

    pub(crate) fn register(&self, setup: &Arc<Setup>) {
        let mut setups = lock(&self.0.setups);
        setups.retain(|s| s.strong_count() > 0);
        setups.push(Arc::downgrade(setup));
        if self.0.cancelled.load(Ordering::SeqCst) {
            setup.cancel();
        }
    }
}

impl Setup {
    /// Ends the setup going on, if any, and any later one as soon as it starts.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(pgid) = *lock(&self.group) {
            // SAFETY: kill(2) with a process group this setup started and has not reaped.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn begin(&self, pid: u32) {
        let mut group = lock(&self.group);
        *group = i32::try_from(pid).ok();
        if self.cancelled() {
            if let Some(pgid) = *group {
                // SAFETY: as in `cancel`.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
        }
    }

    /// The setup is over: before the client is reaped, so that its id is never reused here.
    pub(crate) fn end(&self) {
        *lock(&self.group) = None;
    }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

impl ConnectError {
    /// Whether trying again later may help (a network problem), as opposed to a refusal that
    /// will not change during the run (a key, a platform, a cache directory).
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectError::Unreachable(_)
                | ConnectError::Channel { .. }
                | ConnectError::Timeout
                | ConnectError::Ssh(_)
        )
    }
}

/// This program's executable, as shipped to hosts.
pub(crate) struct Binary {
    pub path: PathBuf,
    pub hash: String,
    pub size: u64,
}

impl Binary {
    pub(crate) fn this() -> Result<&'static Binary, String> {
        static BIN: OnceLock<Result<Binary, String>> = OnceLock::new();
        BIN.get_or_init(|| {
            let path = super::serve::running_exe()
                .map_err(|e| format!("cannot find this program's executable: {e}"))?;
            let hash = super::serve::self_hash_cached()
                .map_err(|e| format!("cannot hash {}: {e}", path.display()))?;
            let size = std::fs::metadata(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .len();
            Ok(Binary { path, hash, size })
        })
        .as_ref()
        .map_err(Clone::clone)
    }
}

/// A bootstrapped, handshaken and synced worker on the other end of an ssh connection.
pub(crate) struct Link {
    pub transport: Box<dyn Transport>,
    pub stdin: Box<dyn Write + Send>,
    pub frames: FrameReader,
    /// The last lines ssh (and the worker) wrote to stderr.
    pub stderr: Arc<Mutex<String>>,
    pub hello: Hello,
    /// Whether the binary had to be uploaded.
    pub uploaded: bool,
    /// The manifest now on the host (for later pushes of outputs).
    pub synced: Vec<FileEntry>,
    /// Files of the tree sent during the sync.
    pub files_sent: usize,
}

/// The tree a host runs from.
pub(crate) struct TreeToSync<'a> {
    pub root: &'a Path,
    pub manifest: &'a [FileEntry],
    pub manifest_hash: &'a str,
    /// Attempts the worker runs at once (the host's `jobs`; 0: its CPUs).
    pub jobs: usize,
}

/// The ssh command: `$PEXEN_SSH` split on whitespace, or `ssh`.
fn ssh_command() -> Vec<String> {
    std::env::var(SSH_ENV)
        .ok()
        .map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec!["ssh".to_string()])
}

/// The script the host's shell runs: find or receive the binary, then run the worker. When the
/// worker ends otherwise than by itself (killed, say: any status but 0), `w` kills the process
/// groups of its tasks that the groups file names, then `z` every other process group of the
/// ssh session (a task's group the worker had no time to write down, a group a task made
/// itself): only when the session is the script's own (its process group leads it, as under
/// sshd), never a session it shares. A worker that exits 0 has swept the session itself.
fn bootstrap_script(bin: &Binary, args: &str) -> String {
    let (hash, size) = (&bin.hash, bin.size);
    let env = format!(
        "{}={}",
        crate::worker::WORKER_ENV,
        super::serve::HOST_WORKER
    );
    format!(
        r#"c="${{XDG_CACHE_HOME:-$HOME/.cache}}/pexen/bin"; d="$c/{hash}"; f="$d/pexen"
g="$c/../run"
w() {{ mkdir -p "$g" && g="$g/groups.$$" && {env} "$f" worker --stdio --binary-hash {hash} --groups-file "$g"{args}; s=$?; if [ $s -ne 0 ]; then if [ -f "$g" ]; then for p in $(awk "/^-/ {{ d[substr(\$0, 2)] = 1; next }} {{ a[\$0] = 1 }} END {{ for (p in a) if (!(p in d)) print p }}" "$g"); do kill -KILL -"$p" 2>/dev/null; done; fi; z; fi; rm -f "$g"; exit $s; }}
z() {{ for p in $({{ cat /proc/$$/stat; cat /proc/[0-9]*/stat; }} 2>/dev/null | awk "{{ sub(/.*\\) /, \"\"); split(\$0, f, \" \") }} NR == 1 {{ s = f[4]; g = f[3]; next }} s == g && f[4] == s && f[3] != g {{ print f[3] }}"); do kill -KILL -"$p" 2>/dev/null; done; }}
if [ -x "$f" ]; then echo "pexen-bootstrap ok cached"; w; fi
if ! mkdir -p "$d" 2>/dev/null || ! [ -w "$d" ] || ! [ -x "$d" ] || ! touch "$d/.probe" 2>/dev/null; then echo "pexen-bootstrap fail cache $d is not a writable directory"; exit 3; fi
rm -f "$d/.probe"
echo "pexen-bootstrap need $(uname -s) $(uname -m)"
read a || exit 3
[ "$a" = send ] || exit 3
t="$d/.upload.$$"
if ! head -c {size} > "$t" 2>"$t.err"; then e=$(cat "$t.err"); rm -f "$t" "$t.err"; case "$e" in *"No space"*|*"Disk quota"*) echo "pexen-bootstrap fail nospace writing $t: $e";; *) echo "pexen-bootstrap fail write writing $t: $e";; esac; exit 3; fi
rm -f "$t.err"
n=$(wc -c < "$t")
if [ "$n" -ne {size} ]; then rm -f "$t"; echo "pexen-bootstrap fail nospace $t has $n of {size} bytes"; exit 3; fi
chmod 700 "$t"
if ! {env} "$t" worker --verify {hash} >/dev/null 2>&1; then rm -f "$t"; echo "pexen-bootstrap fail verify the uploaded binary does not run here or does not match its hash"; exit 3; fi
mv -f "$t" "$f"
echo "pexen-bootstrap ok uploaded"
w
"#
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Connects to `spec`, bootstraps the worker, checks its hello and syncs the tree.
///
/// `worker_args` go to the worker after `--` (an embedder's
/// [`crate::SchedulerBuilder::worker_args`]); they must be plain words.
///
/// Under `under`, the ssh client can be ended by [`Setup::cancel`] until the caller says
/// [`Setup::end`] (this function says it only when it fails).
pub(crate) fn connect(
    spec: &HostSpec,
    bin: &Binary,
    worker_args: &[std::ffi::OsString],
    under: Option<&Setup>,
) -> Result<Link, ConnectError> {
    let HostKind::Ssh { user, host, port } = &spec.kind else {
        return Err(ConnectError::Bootstrap("not an ssh host".into()));
    };
    let mut args = String::new();
    if !worker_args.is_empty() {
        args.push_str(" --");
        for a in worker_args {
            let plain = a.to_str().filter(|a| {
                !a.is_empty()
                    && a.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b))
            });
            let Some(a) = plain else {
                return Err(ConnectError::Bootstrap(format!(
                    "the worker argument {a:?} cannot be passed to a host: only letters, digits and -_./=:,@+% are"
                )));
            };
            args.push(' ');
            args.push_str(a);
        }
    }
    let argv = ssh_command();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
        .args([
            "-o",
            "ServerAliveInterval=10",
            "-o",
            "ServerAliveCountMax=3",
        ])
        .args(["-T", "-e", "none"]);
    if let Some(p) = port {
        cmd.args(["-p", &p.to_string()]);
    }
    if let Some(u) = user {
        cmd.args(["-l", u]);
    }
    cmd.arg(host)
        .arg(format!("sh -c '{}'", bootstrap_script(bin, &args)));
    // Its own group: a Ctrl-C at the terminal reaches pexen, which ends the run in order,
    // instead of cutting the connections under it.
    cmd.process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| ConnectError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
    if let Some(s) = under {
        s.begin(child.id());
    }
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = Arc::new(Mutex::new(String::new()));
    {
        let mut pipe = child.stderr.take().expect("piped stderr");
        let tail = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut t = lock(&tail);
                t.push_str(&String::from_utf8_lossy(&buf[..n]));
                if t.len() > 8192 {
                    let cut = t.len() - 4096;
                    let cut = (cut..t.len()).find(|&i| t.is_char_boundary(i)).unwrap_or(0);
                    t.drain(..cut);
                }
            }
        });
    }
    let mut link = Link {
        transport: Box::new(child),
        stdin: Box::new(stdin),
        frames: FrameReader::new(File::from(OwnedFd::from(stdout))),
        stderr,
        hello: Hello::new(None),
        uploaded: false,
        synced: Vec::new(),
        files_sent: 0,
    };
    let deadline = Instant::now() + SETUP_LIMIT;
    match setup(&mut link, bin, deadline) {
        Ok(()) => Ok(link),
        Err(e) => {
            let e = match e {
                _ if under.is_some_and(Setup::cancelled) => ConnectError::Cancelled,
                // The connection ended: ssh's own words say why.
                ConnectError::Channel { source, .. } => classify(&mut link, source),
                other => other,
            };
            if let Some(s) = under {
                s.end();
            }
            link.transport.kill();
            Err(e)
        }
    }
}

fn setup(link: &mut Link, bin: &Binary, deadline: Instant) -> Result<(), ConnectError> {
    let channel = |source| ConnectError::Channel {
        detail: String::new(),
        source,
    };
    let mut line = next_line(&mut link.frames, deadline)?;
    if let Some(rest) = line.strip_prefix("pexen-bootstrap need ") {
        let mut words = rest.split_whitespace();
        let (os, arch) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if !same_platform(os, arch) {
            let _ = link.stdin.write_all(b"abort\n");
            return Err(ConnectError::Platform {
                host: format!("{os} {arch}"),
                here: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            });
        }
        link.stdin
            .write_all(b"send\n")
            .map_err(|e| channel(ChannelError::Io(e)))?;
        let mut file = File::open(&bin.path).map_err(|e| {
            ConnectError::Bootstrap(format!("cannot read {}: {e}", bin.path.display()))
        })?;
        // Exactly the announced size: the host's `head -c` waits for every byte of it.
        let sent = io::copy(&mut io::Read::take(&mut file, bin.size), &mut link.stdin)
            .map_err(|e| channel(ChannelError::Io(e)))?;
        if sent != bin.size {
            return Err(ConnectError::Bootstrap(format!(
                "{} is {sent} bytes, not the {} it was when pexen started",
                bin.path.display(),
                bin.size
            )));
        }
        link.stdin
            .flush()
            .map_err(|e| channel(ChannelError::Io(e)))?;
        link.uploaded = true;
        line = next_line(&mut link.frames, deadline)?;
    }
    if let Some(rest) = line.strip_prefix("pexen-bootstrap fail ") {
        let (kind, detail) = rest.split_once(' ').unwrap_or((rest, ""));
        return Err(match kind {
            "cache" => ConnectError::Cache(detail.to_string()),
            "nospace" => ConnectError::NoSpace(detail.to_string()),
            _ => ConnectError::Bootstrap(detail.to_string()),
        });
    }
    if !line.starts_with("pexen-bootstrap ok") {
        return Err(ConnectError::Bootstrap(format!(
            "unexpected output from the host's shell: `{line}` (does the login print text?)"
        )));
    }
    hello(link, Some(bin), deadline)
}

/// Reads the worker's hello and checks its protocol (and, for a binary pexen shipped, its hash).
pub(crate) fn hello(
    link: &mut Link,
    bin: Option<&Binary>,
    deadline: Instant,
) -> Result<(), ConnectError> {
    let hello = match next_frame(&mut link.frames, deadline)? {
        FromWorker::Hello(h) => h,
        other => {
            return Err(ConnectError::Bootstrap(format!(
                "expected the worker's hello, got {other:?}"
            )))
        }
    };
    if hello.protocol != PROTOCOL {
        return Err(ConnectError::Protocol(hello.protocol));
    }
    if let Some(bin) = bin {
        if hello.binary.as_deref() != Some(bin.hash.as_str()) {
            return Err(ConnectError::Binary {
                got: hello.binary.clone().unwrap_or_default(),
                want: bin.hash.clone(),
            });
        }
    }
    link.hello = hello;
    Ok(())
}

/// Connects to a `pexen worker --listen` daemon with mutual TLS and reads its hello.
pub(crate) fn connect_tls(
    host: &str,
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> Result<Link, ConnectError> {
    let piped = super::tls::connect(host, port, config).map_err(|e| match e {
        super::tls::TlsError::Connect { .. } => {
            ConnectError::Unreachable(crate::error::error_chain(&e))
        }
        super::tls::TlsError::Handshake { reason, .. } => ConnectError::TlsRefused(reason),
        other => ConnectError::TlsRefused(other.to_string()),
    })?;
    let mut link = Link {
        transport: Box::new(piped.pump),
        stdin: Box::new(piped.output),
        frames: FrameReader::new(piped.input),
        stderr: Arc::new(Mutex::new(String::new())),
        hello: Hello::new(None),
        uploaded: false,
        synced: Vec::new(),
        files_sent: 0,
    };
    // A daemon is whatever pexen is installed there: same protocol, any build.
    if let Err(e) = hello(&mut link, None, Instant::now() + SETUP_LIMIT) {
        link.transport.kill();
        return Err(e);
    }
    Ok(link)
}

/// Sends the tree to a connected worker (only what it lacks) and waits until it is loaded.
pub(crate) fn sync_tree(
    link: &mut Link,
    host: &str,
    shared_fs: bool,
    tree: &TreeToSync<'_>,
) -> Result<(), ConnectError> {
    let deadline = Instant::now() + SETUP_LIMIT;
    let channel = |source| ConnectError::Channel {
        detail: String::new(),
        source,
    };
    let root = tree.root.to_string_lossy().into_owned();
    let key = {
        let mut h = blake3::Hasher::new();
        h.update(hostname().as_bytes());
        h.update(&[0]);
        h.update(root.as_bytes());
        h.finalize().to_hex()[..32].to_string()
    };
    protocol::send(
        &mut link.stdin,
        &ToWorker::Tree {
            host: host.to_string(),
            key,
            shared_root: shared_fs.then(|| root.clone()),
            // Sent only if the host's copy differs (see `deferred`).
            manifest: Vec::new(),
            deferred: !shared_fs,
            jobs: tree.jobs,
            manifest_hash: if shared_fs {
                protocol::manifest_hash(&[])
            } else {
                tree.manifest_hash.to_string()
            },
        },
    )
    .map_err(channel)?;
    if !shared_fs {
        let mut reply = next_frame(&mut link.frames, deadline)?;
        if matches!(reply, FromWorker::SendManifest) {
            protocol::send(
                &mut link.stdin,
                &ManifestRef::Manifest {
                    manifest: tree.manifest,
                },
            )
            .map_err(channel)?;
            reply = next_frame(&mut link.frames, deadline)?;
        }
        let need = match reply {
            FromWorker::Need { paths } => paths,
            FromWorker::Refused { message } => return Err(refused(message)),
            other => {
                return Err(ConnectError::Tree(format!(
                    "expected a list of needed files, got {other:?}"
                )))
            }
        };
        let by_path: std::collections::HashMap<&str, &FileEntry> = if need.is_empty() {
            std::collections::HashMap::new()
        } else {
            tree.manifest.iter().map(|e| (e.path.as_str(), e)).collect()
        };
        for rel in &need {
            let Some(entry) = by_path.get(rel.as_str()) else {
                return Err(ConnectError::Tree(format!(
                    "the host asked for `{rel}`, which is not in the tree"
                )));
            };
            let bytes = std::fs::read(tree.root.join(rel)).map_err(ConnectError::Manifest)?;
            protocol::send(
                &mut link.stdin,
                &ToWorker::File {
                    path: rel.clone(),
                    mode: entry.mode,
                    size: bytes.len() as u64,
                },
            )
            .map_err(channel)?;
            protocol::send_file(&mut link.stdin, &bytes).map_err(channel)?;
        }
        protocol::send(&mut link.stdin, &ToWorker::TreeDone).map_err(channel)?;
        link.synced = tree.manifest.to_vec();
        link.files_sent = need.len();
    }
    match next_frame(&mut link.frames, deadline)? {
        FromWorker::Ready { .. } => Ok(()),
        FromWorker::Refused { message } => Err(refused(message)),
        other => Err(ConnectError::Tree(format!("expected ready, got {other:?}"))),
    }
}

/// `ToWorker::Manifest`, serialized from a borrow (the manifest is not cloned).
#[derive(serde::Serialize)]
enum ManifestRef<'a> {
    Manifest { manifest: &'a [FileEntry] },
}

fn refused(message: String) -> ConnectError {
    if message.contains("No space left") || message.contains("Disk quota") {
        ConnectError::NoSpace(message)
    } else {
        ConnectError::Tree(message)
    }
}

fn next_line(frames: &mut FrameReader, deadline: Instant) -> Result<String, ConnectError> {
    match frames.line(Some(deadline)) {
        Ok(Some(line)) => Ok(line),
        Ok(None) => Err(ConnectError::Timeout),
        Err(source) => Err(ConnectError::Channel {
            detail: String::new(),
            source,
        }),
    }
}

fn next_frame(frames: &mut FrameReader, deadline: Instant) -> Result<FromWorker, ConnectError> {
    loop {
        match frames.next::<FromWorker>(Some(deadline)) {
            Ok(Some(FromWorker::Beat)) => {}
            Ok(Some(msg)) => return Ok(msg),
            Ok(None) => return Err(ConnectError::Timeout),
            Err(source) => {
                return Err(ConnectError::Channel {
                    detail: String::new(),
                    source,
                })
            }
        }
    }
}

/// After the connection ended during setup: what ssh said, as a typed reason.
fn classify(link: &mut Link, source: ChannelError) -> ConnectError {
    // ssh writes its reason before it exits; wait for the exit so that the reader has it.
    let status = match link.transport.wait(Duration::from_secs(5)) {
        Waited::Ended(code) => code,
        Waited::StillRunning => None,
    };
    std::thread::sleep(Duration::from_millis(20));
    let text = lock(&link.stderr).clone();
    let detail = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .unwrap_or("")
        .to_string();
    let has = |s: &str| text.contains(s);
    if has("Permission denied") || has("Too many authentication failures") {
        ConnectError::Auth(detail)
    } else if has("Host key verification failed") || has("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        ConnectError::HostKey(detail)
    } else if has("Connection refused")
        || has("Could not resolve hostname")
        || has("No route to host")
        || has("Network is unreachable")
        || has("Connection timed out")
        || has("Operation timed out")
    {
        ConnectError::Unreachable(detail)
    } else if status == Some(255) {
        ConnectError::Ssh(if detail.is_empty() {
            "exit status 255".to_string()
        } else {
            detail
        })
    } else {
        let detail = match status {
            Some(code) if detail.is_empty() => {
                format!("the remote shell exited with status {code}")
            }
            _ => detail,
        };
        ConnectError::Channel { detail, source }
    }
}

/// What carries a link's bytes (an ssh client, a TLS connection), so that it can be ended.
pub(crate) trait Transport: Send {
    /// Waits up to `limit` for it to end by itself.
    fn wait(&mut self, limit: Duration) -> Waited;
    /// Ends it now (and reaps what there is to reap).
    fn kill(&mut self);
}

/// How waiting for a transport ended.
pub(crate) enum Waited {
    /// It ended, with this exit code if it is a process that exited.
    Ended(Option<i32>),
    StillRunning,
}

impl Transport for Child {
    fn wait(&mut self, limit: Duration) -> Waited {
        let until = Instant::now() + limit;
        loop {
            match self.try_wait() {
                Ok(Some(status)) => return Waited::Ended(status.code()),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => return Waited::StillRunning,
                Err(_) => return Waited::Ended(None),
            }
        }
    }

    fn kill(&mut self) {
        let _ = Child::kill(self);
        let _ = Child::wait(self);
    }
}

fn same_platform(os: &str, arch: &str) -> bool {
    let arch = match arch {
        "arm64" => "aarch64",
        "amd64" => "x86_64",
        other => other,
    };
    os.eq_ignore_ascii_case(std::env::consts::OS) && arch == std::env::consts::ARCH
}

pub(crate) fn hostname() -> &'static str {
    // Read once: a checkpoint's key names it before every attempt on a host.
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_compare_by_kernel_name_and_machine() {
        assert!(same_platform("Linux", std::env::consts::ARCH));
        assert!(!same_platform("Darwin", std::env::consts::ARCH));
        assert!(!same_platform("Linux", "sparc64"));
    }

    #[test]
    fn the_script_has_no_single_quote() {
        let bin = Binary {
            path: PathBuf::from("/x"),
            hash: "ab".into(),
            size: 3,
        };
        // It travels inside sh -c '...'.
        assert!(!bootstrap_script(&bin, " -- a b").contains('\''));
    }
}
