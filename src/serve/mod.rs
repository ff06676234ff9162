//! `pexen serve` (SPEC section 11): the task tree described, runs started, watched and cancelled
//! over HTTP, and a live page of the run. Built with the `serve` feature (on by default).
//!
//! A run started here is the same library call as `pexen run` ([`crate::engine`]); its events
//! are the JSON lines of `--message-format json`, kept per run in memory for replay.
//!
//! The HTTP stack is axum's router on hyper, behind a small accept loop of our own rather than
//! `axum::serve`: hyper's HTTP/1 builder with a header-read timeout drops idle and slow clients
//! after [`HEADER_TIMEOUT`], and a cap of [`MAX_CONNECTIONS`] keeps a crowd of them from taking
//! every file descriptor. See `doc/serve.md` for the API and the security model.
//!
//! ```no_run
//! use pexen::serve::{ServeConfig, Server};
//!
//! let server = Server::bind(ServeConfig::new("tests/tree"))?;
//! println!("{}", server.url()); // http://127.0.0.1:7878/#token=...
//! server.run()?; // until SIGINT or SIGTERM
//! # Ok::<(), pexen::serve::ServeError>(())
//! ```

mod api;
mod layout;
mod page;
mod runs;
mod security;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

pub use self::api::MAX_BODY;
pub use self::security::{Token, CSP};

/// A client must send a request's headers within this time (also the most a connection may
/// stay idle between requests).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a TLS client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("{0} is not a directory of tasks")]
    NotADirectory(PathBuf),
    #[error(
        "{0} is not a loopback address: serving beyond this machine needs --tls-cert and --tls-key"
    )]
    NeedsTls(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the token from {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token in {0} is unusable: expected at least {min} printable characters without spaces", min = Token::MIN_LEN)]
    BadToken(PathBuf),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot start the server: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Settings of `pexen serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The task tree.
    pub dir: PathBuf,
    /// Where to listen (default `127.0.0.1:7878`; port 0 picks a free port).
    pub listen: SocketAddr,
    /// A file holding the token (default: a random token).
    pub token_file: Option<PathBuf>,
    /// Certificate chain and private key (PEM), to serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where runs are journaled.
    pub state: PathBuf,
    /// Attempts at once for runs that do not say (`None`: the number of CPUs).
    pub jobs: Option<usize>,
    /// Time between SIGTERM and SIGKILL when a run is cancelled.
    pub grace: Duration,
}

impl ServeConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            token_file: None,
            tls: None,
            state: PathBuf::from(".pexen"),
            jobs: None,
            grace: Duration::from_secs(5),
        }
    }
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    runtime: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    router: axum::Router,
    runs: Arc<runs::Runs>,
    url: String,
}

impl Server {
    /// Checks the settings, reads the token and the TLS files, and binds the address.
    pub fn bind(config: ServeConfig) -> Result<Self, ServeError> {
        if !config.dir.is_dir() {
            return Err(ServeError::NotADirectory(config.dir));
        }
        let loopback = config.listen.ip().is_loopback();
        if !loopback && config.tls.is_none() {
            return Err(ServeError::NeedsTls(config.listen));
        }
        let token = match &config.token_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ServeError::TokenFile {
                        path: path.clone(),
                        source,
                    })?;
                Token::new(&text).ok_or_else(|| ServeError::BadToken(path.clone()))?
            }
            None => Token::random().map_err(ServeError::Runtime)?,
        };
        let tls = config
            .tls
            .as_ref()
            .map(|(cert, key)| tls_acceptor(cert, key))
            .transpose()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pexen-serve")
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let bind = |source| ServeError::Bind {
            addr: config.listen,
            source,
        };
        let std_listener = std::net::TcpListener::bind(config.listen).map_err(bind)?;
        std_listener.set_nonblocking(true).map_err(bind)?;
        let local = std_listener.local_addr().map_err(bind)?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(bind)?
        };
        let runs = Arc::new(runs::Runs::default());
        let app = api::App {
            dir: config.dir,
            state: config.state,
            jobs: config.jobs,
            grace: config.grace,
            runs: runs.clone(),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{local}/#token={}", token.as_str());
        Ok(Self {
            runtime,
            listener,
            tls,
            router: api::router(app, token, loopback),
            runs,
            url,
        })
    }

    /// The page's address, with the token in the fragment (which browsers never send).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves until SIGINT or SIGTERM; then cancels the run going on, as Ctrl-C would, and
    /// returns once it has ended (no task process is left).
    pub fn run(self) -> Result<(), ServeError> {
        let Self {
            runtime,
            listener,
            tls,
            router,
            runs,
            ..
        } = self;
        runtime.block_on(accept_loop(listener, router, tls, shutdown_signal()))?;
        runs.shutdown();
        runtime.shutdown_timeout(Duration::from_secs(1));
        Ok(())
    }
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem = |path: &std::path::Path, e: &dyn std::fmt::Display| {
        ServeError::Tls(format!("{}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| pem(cert, &e))?;
    if certs.is_empty() {
        return Err(pem(cert, &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Accepts connections until `shutdown` completes, each served on a task of its own.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => return Ok(()),
        };
        // An error here is out of file descriptors or a connection reset before it was accepted:
        // the listener is still good; give descriptors a moment to come back.
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        // Over the cap: closed at once, rather than left in the kernel's queue.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, router).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        serve_connection(stream, router).await;
                    }
                }
            }
        });
    }
}

/// HTTP/1.1 on one connection, dropped when its headers are not in within [`HEADER_TIMEOUT`].
async fn serve_connection<I>(io: I, router: axum::Router)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let _ = builder.serve_connection(TokioIo::new(io), service).await;
}
