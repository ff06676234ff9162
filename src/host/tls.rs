//! Mutual TLS (rustls) for `tls://` hosts and `pexen worker --listen` daemons.
//!
//! A daemon runs commands for whoever connects, so it always requires a client certificate
//! signed by `--client-ca`, on loopback too; a client without one is refused during the TLS
//! handshake, before any frame is read. The handshake must finish within [`HANDSHAKE_LIMIT`].
//! After it, a pump thread moves bytes between the TLS connection and a pair of pipes, and the
//! protocol code runs on the pipes as it does on an ssh client's stdin and stdout: the
//! transport only moves bytes, frame limits stay the protocol's.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};
use thiserror::Error;

use super::ssh::{Transport, Waited};

/// A TLS handshake must finish within this.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// The TLS identity of one side: its certificate and key, and the CA it trusts for the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// On a controller: the CA of the daemons; on a daemon: the CA of its clients.
    pub ca: PathBuf,
}

/// A TLS setup problem.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {what} from {}: {reason}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("bad TLS configuration: {0}")]
    Config(String),
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {addr} failed: {reason}")]
    Handshake { addr: String, reason: String },
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |reason: String| TlsError::Pem {
        what: "certificates",
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no certificate in the file".into()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        what: "a private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(path)? {
        roots
            .add(c)
            .map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The controller's side: its certificate for the daemons, and their CA.
pub(crate) fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The daemon's side: its certificate, and the CA its clients must be signed by (mandatory).
pub(crate) fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&files.ca)?), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Runs the handshake on a blocking socket, within [`HANDSHAKE_LIMIT`] in all.
pub(crate) fn handshake(conn: &mut Connection, sock: &mut TcpStream) -> io::Result<()> {
    let until = Instant::now() + HANDSHAKE_LIMIT;
    while conn.is_handshaking() {
        let rest = until.saturating_duration_since(Instant::now());
        if rest.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handshake did not finish in time",
            ));
        }
        sock.set_read_timeout(Some(rest))?;
        sock.set_write_timeout(Some(rest))?;
        match conn.complete_io(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the handshake did not finish in time",
                ))
            }
            Err(e) => return Err(e),
        }
    }
    // Flush the handshake's last flight.
    while conn.wants_write() {
        conn.write_tls(sock)?;
    }
    Ok(())
}

/// A TLS connection seen as a pair of pipes: what the protocol reads and writes.
pub(crate) struct Piped {
    /// Plaintext from the peer.
    pub input: File,
    /// Plaintext to the peer.
    pub output: File,
    pub pump: TlsPump,
}

/// The pump thread of a [`Piped`] connection; ending it closes the connection.
pub(crate) struct TlsPump {
    sock: TcpStream,
    thread: Option<JoinHandle<()>>,
}

impl Transport for TlsPump {
    fn wait(&mut self, limit: Duration) -> Waited {
        let until = Instant::now() + limit;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            if Instant::now() >= until {
                return Waited::StillRunning;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Waited::Ended(None)
    }

    fn kill(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Starts the pump of an established connection.
pub(crate) fn piped(conn: Connection, sock: TcpStream) -> io::Result<Piped> {
    let (input, to_app) = pipe()?;
    let (from_app, output) = pipe()?;
    sock.set_read_timeout(None)?;
    sock.set_write_timeout(None)?;
    // Frames are small and each waits for an answer (a start, an end, the next attempt):
    // Nagle's algorithm held the second of two small writes until the peer's delayed ACK.
    sock.set_nodelay(true)?;
    let pump_sock = sock.try_clone()?;
    let thread = std::thread::Builder::new()
        .name("pexen-tls".into())
        .spawn(move || {
            let _ = pump(conn, pump_sock, to_app, from_app);
        })?;
    Ok(Piped {
        input,
        output,
        pump: TlsPump {
            sock,
            thread: Some(thread),
        },
    })
}

/// Moves plaintext between the TLS connection and the pipes until either side ends.
fn pump(
    mut conn: Connection,
    mut sock: TcpStream,
    mut to_app: File,
    mut from_app: File,
) -> io::Result<()> {
    sock.set_nonblocking(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut app_open = true;
    // What the peer sent right after its last handshake message came in the handshake's
    // reads: it waits in the connection, and the socket may not become readable again (a
    // worker's `Hello` stayed there while the scheduler waited for it).
    if !deliver(&mut conn, &mut to_app, &mut buf)? {
        return Ok(());
    }
    loop {
        while conn.wants_write() {
            match conn.write_tls(&mut sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if !app_open && !conn.wants_write() {
            let _ = sock.shutdown(std::net::Shutdown::Write);
            return Ok(());
        }
        let mut fds = [
            libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN | if conn.wants_write() { libc::POLLOUT } else { 0 },
                revents: 0,
            },
            libc::pollfd {
                fd: if app_open { from_app.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` holds two valid pollfd entries for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[0].revents != 0 {
            match conn.read_tls(&mut sock) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    if !deliver(&mut conn, &mut to_app, &mut buf)? {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if app_open && fds[1].revents != 0 {
            let n = from_app.read(&mut buf)?;
            if n == 0 {
                app_open = false;
                conn.send_close_notify();
            } else {
                conn.writer().write_all(&buf[..n])?;
            }
        }
    }
}

/// Processes the records the connection holds and writes their plaintext to the app.
/// `Ok(false)`: the peer closed the connection.
fn deliver(conn: &mut Connection, to_app: &mut File, buf: &mut [u8]) -> io::Result<bool> {
    let state = conn
        .process_new_packets()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut plain = state.plaintext_bytes_to_read();
    while plain > 0 {
        let cap = buf.len();
        let n = conn.reader().read(&mut buf[..plain.min(cap)])?;
        to_app.write_all(&buf[..n])?;
        plain -= n;
    }
    Ok(!state.peer_has_closed())
}

/// Connects to a daemon as a client with this run's identity.
pub(crate) fn connect(host: &str, port: u16, config: Arc<ClientConfig>) -> Result<Piped, TlsError> {
    let addr = format!("{host}:{port}");
    let connect = |source| TlsError::Connect {
        addr: addr.clone(),
        source,
    };
    let target = (host, port)
        .to_socket_addrs()
        .map_err(connect)?
        .next()
        .ok_or_else(|| connect(io::Error::new(io::ErrorKind::NotFound, "no address")))?;
    let mut sock = TcpStream::connect_timeout(&target, HANDSHAKE_LIMIT).map_err(connect)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| TlsError::Config(format!("`{host}` is not a server name: {e}")))?;
    let client = ClientConnection::new(config, name).map_err(|e| TlsError::Handshake {
        addr: addr.clone(),
        reason: e.to_string(),
    })?;
    let mut conn = Connection::Client(client);
    handshake(&mut conn, &mut sock).map_err(|e| TlsError::Handshake {
        addr: addr.clone(),
        reason: e.to_string(),
    })?;
    piped(conn, sock).map_err(connect)
}

/// `pexen worker --listen`: accepts connections, refuses any that does not complete a mutual
/// TLS handshake within the limit, and serves each other one on a thread of its own. `ready`
/// gets the bound address (the port may have been 0). Returns only on a listening error.
pub fn listen(
    addr: &str,
    files: &TlsFiles,
    offer: &super::serve::Offer,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ListenError> {
    let config = server_config(files).map_err(ListenError::Tls)?;
    let listener = TcpListener::bind(addr).map_err(|source| ListenError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    ready(listener.local_addr().map_err(ListenError::Accept)?);
    for sock in listener.incoming() {
        let mut sock = match sock {
            Ok(s) => s,
            // A client that went away before accept, or too many files: keep listening.
            Err(e) => {
                eprintln!("pexen worker: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let config = config.clone();
        let offer = offer.clone();
        let spawned = std::thread::Builder::new()
            .name("pexen-conn".into())
            .spawn(move || {
                let peer = sock
                    .peer_addr()
                    .map_or_else(|_| "?".to_string(), |a| a.to_string());
                let server = match ServerConnection::new(config) {
                    Ok(s) => s,
                    Err(e) => return eprintln!("pexen worker: {peer}: {e}"),
                };
                let mut conn = Connection::Server(server);
                if let Err(e) = handshake(&mut conn, &mut sock) {
                    eprintln!("pexen worker: refused {peer}: {e}");
                    return;
                }
                let piped = match piped(conn, sock) {
                    Ok(p) => p,
                    Err(e) => return eprintln!("pexen worker: {peer}: {e}"),
                };
                let Piped {
                    input,
                    output,
                    mut pump,
                } = piped;
                if let Err(e) = super::serve::serve_offer(input, output, None, &offer, None) {
                    eprintln!("pexen worker: {peer}: {}", crate::error::error_chain(&e));
                }
                pump.kill();
            });
        if let Err(e) = spawned {
            eprintln!("pexen worker: cannot start a thread: {e}");
        }
    }
    Ok(())
}

/// Why a daemon could not listen.
#[derive(Debug, Error)]
pub enum ListenError {
    #[error(transparent)]
    Tls(TlsError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot accept connections")]
    Accept(#[source] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::pilot::creds::RunCa;

    /// What a client sends right after the handshake, in the same read as the handshake's last
    /// flight, reaches the application (a pilot worker's `Hello` once stayed in the
    /// connection's buffer while the controller waited for it).
    #[test]
    fn data_that_came_with_the_handshake_is_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let ca = RunCa::new().unwrap();
        let server = ca.server_config("127.0.0.1").unwrap();
        let worker = ca.worker(dir.path(), "w").unwrap();
        let files = TlsFiles {
            cert: worker.cert,
            key: worker.key,
            ca: dir.path().join("ca.pem"),
        };
        ca.write_cert(&files.ca).unwrap();
        let client = client_config(&files).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let mut sock = TcpStream::connect(addr).unwrap();
            let name = ServerName::try_from("127.0.0.1").unwrap();
            let mut conn = Connection::Client(ClientConnection::new(client, name).unwrap());
            // The handshake by hand, so that its last flight and the data go out in one write.
            while conn.is_handshaking() {
                while conn.wants_write() && conn.is_handshaking() {
                    conn.write_tls(&mut sock).unwrap();
                }
                if conn.is_handshaking() {
                    conn.read_tls(&mut sock).unwrap();
                    conn.process_new_packets().unwrap();
                }
            }
            conn.writer().write_all(b"hello").unwrap();
            let mut wire = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut wire).unwrap();
            }
            sock.write_all(&wire).unwrap();
            // Open until the test ends.
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest);
        });
        let (mut sock, _) = listener.accept().unwrap();
        let mut conn = Connection::Server(ServerConnection::new(server).unwrap());
        handshake(&mut conn, &mut sock).unwrap();
        let mut piped = piped(conn, sock).unwrap();
        let mut fd = libc::pollfd {
            fd: piped.input.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // A deadline only to fail rather than hang: the data is there at once or never.
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&raw mut fd, 1, 60_000) };
        assert_eq!(
            ready, 1,
            "the data sent with the handshake never came through"
        );
        let mut got = [0u8; 5];
        piped.input.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        piped.pump.kill();
        peer.join().unwrap();
    }
}
