//! `pexen worker --listen`: a mutual-TLS daemon (SPEC 9, security). Certificates are made by
//! the test (rcgen); the daemon is the real binary on a loopback port.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::{pexen, RunResult, Tree};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A certificate signed by `ca`, written as `NAME.pem` and `NAME.key` in `dir`.
fn leaf(dir: &Path, name: &str, ca: &Ca, server: bool) -> (PathBuf, PathBuf) {
    let sans = if server {
        vec!["127.0.0.1".to_string(), "localhost".to_string()]
    } else {
        Vec::new()
    };
    let mut p = CertificateParams::new(sans).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    stranger: (PathBuf, PathBuf),
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let good = ca("pexen test CA");
    let other = ca("another CA");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, good.cert.pem()).unwrap();
    Pki {
        server: leaf(dir.path(), "server", &good, true),
        client: leaf(dir.path(), "client", &good, false),
        stranger: leaf(dir.path(), "stranger", &other, false),
        ca: ca_path,
        dir,
    }
}

/// The daemon; killed when dropped.
struct Daemon {
    child: Child,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon(pki: &Pki) -> Daemon {
    daemon_with(pki, &["-j", "2"])
}

fn daemon_with(pki: &Pki, args: &[&str]) -> Daemon {
    let mut child = pexen()
        .args(["worker", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--tls-cert")
        .arg(&pki.server.0)
        .arg("--tls-key")
        .arg(&pki.server.1)
        .arg("--client-ca")
        .arg(&pki.ca)
        .env("XDG_CACHE_HOME", pki.dir.path().join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    Daemon { child, port }
}

fn run_through(pki: &Pki, d: &Daemon, tree: &Tree) -> RunResult {
    run_with(
        pki,
        &format!("tls://127.0.0.1:{}", d.port),
        tree,
        &["--no-local"],
    )
}

fn run_with(pki: &Pki, host: &str, tree: &Tree, args: &[&str]) -> RunResult {
    let out = run_command(pki, tree)
        .args(args)
        .args(["--host", host])
        .output()
        .unwrap();
    RunResult::new(out)
}

/// `pexen run TREE` with JSON events, its state in the tree and the run's TLS identity; the
/// caller adds hosts and options.
fn run_command(pki: &Pki, tree: &Tree) -> Command {
    let mut cmd = pexen();
    cmd.arg("run")
        .arg(tree.path())
        .args(["--message-format", "json", "--state"])
        .arg(tree.path().join(".pexen"))
        .arg("--tls-cert")
        .arg(&pki.client.0)
        .arg("--tls-key")
        .arg(&pki.client.1)
        .arg("--ca")
        .arg(&pki.ca);
    cmd
}

/// A raw TLS client: `identity` is a client certificate and key, or none.
fn tls_client(
    pki: &Pki,
    port: u16,
    identity: Option<&(PathBuf, PathBuf)>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki.ca).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((c, k)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(c).unwrap()],
                PrivateKeyDer::from_pem_file(k).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Reads until the daemon closes: true if it sent any plaintext first.
fn got_plaintext(stream: &mut impl Read) -> bool {
    let mut buf = [0u8; 256];
    matches!(stream.read(&mut buf), Ok(n) if n > 0)
}

fn small_tree() -> Tree {
    Tree::new()
        .file(
            "a.ron",
            r#"(run: Shell("echo \"pass on $PEXEN_HOST\" >> $PEXEN_RESULTS; echo V=1 >> $PEXEN_EXPORT"), provides: ["a"])"#,
        )
        .file("b.ron", r#"(run: Shell("test \"$V\" = 1"), requires: ["a"])"#)
}

#[test]
fn a_run_through_a_tls_daemon_and_every_stranger_is_refused() {
    let pki = pki();
    let d = daemon(&pki);
    let tree = small_tree();
    let r = run_through(&pki, &d, &tree);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.finished("b")["host"], "127.0.0.1");
    assert_eq!(r.of_type("task-result")[0]["message"], "on 127.0.0.1");

    // A silent client holds its connection without a handshake: dropped after the deadline,
    // while the daemon goes on serving everyone else.
    let mut silent = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let silent_reader = std::thread::spawn(move || got_plaintext(&mut silent));

    // The right certificate gets the worker's hello.
    let mut good = tls_client(&pki, d.port, Some(&pki.client));
    assert!(got_plaintext(&mut good), "a client of the CA is served");

    // No certificate, or one from another CA: refused before any frame.
    let mut anonymous = tls_client(&pki, d.port, None);
    assert!(
        !got_plaintext(&mut anonymous),
        "a client without a certificate got in"
    );
    let mut stranger = tls_client(&pki, d.port, Some(&pki.stranger));
    assert!(
        !got_plaintext(&mut stranger),
        "a client of another CA got in"
    );

    // Garbage instead of TLS.
    let mut garbage = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = garbage.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("Hello"));

    // An authenticated client that sends a frame over the limit is cut off.
    let mut big = tls_client(&pki, d.port, Some(&pki.client));
    assert!(got_plaintext(&mut big));
    big.write_all(&u32::MAX.to_le_bytes()).unwrap();
    big.flush().unwrap();
    let mut rest = Vec::new();
    let _ = big.read_to_end(&mut rest);

    assert!(
        !silent_reader.join().unwrap(),
        "the silent client was served"
    );
    // And the daemon still serves runs.
    let r = run_through(&pki, &d, &tree);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn a_tls_host_needs_an_identity_and_a_daemon_needs_its_files() {
    let tree = small_tree();
    let out = pexen()
        .arg("run")
        .arg(tree.path())
        .args(["--host", "tls://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert, --tls-key and --ca"));
    let out = pexen().args(["worker", "--listen", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A daemon's own `--tag` and `--capacity` place tasks on it; the spec on the controller wins
/// for a capacity both give.
#[test]
fn a_daemon_announces_its_tags_and_capacities() {
    let pki = pki();
    let d = daemon_with(&pki, &["-j", "3", "--tag", "gpu", "--capacity", "gpu=1"]);
    let mut tree = Tree::new().file("tagged.ron", r#"(run: Shell("true"), host_tags: ["gpu"])"#);
    for i in 0..4 {
        tree = tree.file(
            &format!("g{i}.ron"),
            r#"(run: Shell("sleep 0.1"), slots: {"gpu": 1})"#,
        );
    }
    for i in 0..3 {
        tree = tree.file(&format!("p{i}.ron"), r#"(run: Shell("true"))"#);
    }
    let url = format!("tls://127.0.0.1:{}", d.port);
    let r = run_with(&pki, &url, &tree, &["-j", "2"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.finished("tagged")["host"], "127.0.0.1");
    let mut gpu_in_use = 0;
    for e in &r.events {
        let task = e["task"].as_str().unwrap_or("");
        if !task.starts_with('g') {
            continue;
        }
        match e["type"].as_str() {
            Some("task-started") => {
                assert_eq!(e["host"], "127.0.0.1", "only the daemon has a gpu: {e}");
                gpu_in_use += 1;
                assert!(gpu_in_use <= 1, "{task} started while the gpu was in use");
            }
            Some("task-finished") => gpu_in_use -= 1,
            _ => {}
        }
    }
    assert_eq!(r.of_type("task-finished").len(), 8);

    // A task needing 2 gpu: the daemon has 1, unless the spec on the controller says 2.
    let big = Tree::new().file("two.ron", r#"(run: Shell("true"), slots: {"gpu": 2})"#);
    let r = run_with(&pki, &url, &big, &["--no-local"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("task `two` needs slots {gpu: 2}"),
        "{}",
        r.stderr
    );
    let r = run_with(
        &pki,
        &format!("{url}?capacity=gpu:2"),
        &big,
        &["--no-local"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A tag nobody carries, not even the daemon, is still refused.
    let odd = Tree::new().file("odd.ron", r#"(run: Shell("true"), host_tags: ["fpga"])"#);
    let r = run_with(&pki, &url, &odd, &["--no-local"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("task `odd` needs a host with tags fpga"),
        "{}",
        r.stderr
    );
}

/// A worker ended by a signal (Slurm's `scancel`, a Ctrl-C, a hang-up) kills its tasks first:
/// they run in process groups of their own, so the default action would leave them running
/// while the scheduler starts their attempts again elsewhere.
#[test]
fn a_terminated_daemon_leaves_no_task_running() {
    let pki = pki();
    let mut d = daemon(&pki);
    let tree = Tree::new();
    let dir = tree.path().to_string_lossy().into_owned();
    let tree = tree.file(
        "slow.ron",
        &format!(r#"(run: Shell("sleep 300 & echo $! > {dir}/sleep.pid; wait"))"#),
    );
    let mut run = run_command(&pki, &tree)
        .args([
            "--no-local",
            "--host",
            &format!("tls://127.0.0.1:{}", d.port),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sleeper = common::wait_for_pid(&tree.path().join("sleep.pid"));
    // SAFETY: kill(2) with a pid and a signal.
    assert_eq!(unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) }, 0);
    let status = d.child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        None,
        "the daemon died of the signal instead of ending its tasks"
    );
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    // Killed before the daemon exited: at most the moment the kernel takes to reap it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::running(sleeper) && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(
        !common::running(sleeper),
        "the task's process {sleeper} outlived its worker"
    );
    let _ = run.kill();
    let _ = run.wait();
}

/// An attempt queued ahead on a busy worker (its attempts were short) moves to another host
/// that has a free slot, rather than wait behind a long attempt there: here the long one
/// waits for the queued one, so only the move lets the run end.
#[test]
fn an_attempt_queued_behind_a_long_one_moves_to_a_free_host() {
    let pki = pki();
    let a = daemon_with(&pki, &["-j", "1"]);
    let b = daemon_with(&pki, &["-j", "1"]);
    let tree = Tree::new();
    let dir = tree.path().to_string_lossy().into_owned();
    let mut tree = tree
        .file(
            "block.ron",
            &format!(
                r#"(run: Shell("until [ -e {dir}/late.ran ]; do sleep 0.02; done"),
                    host_tags: ["a"], priority: -5, timeout: "60s")"#
            ),
        )
        .file(
            "hold.ron",
            r#"(run: Shell("sleep 0.5"), host_tags: ["b"], priority: -5)"#,
        )
        .file(
            "late.ron",
            &format!(r#"(run: Shell("touch {dir}/late.ran"), priority: 0)"#),
        );
    // Short attempts on `a` first: its worker then takes attempts ahead of its free slots.
    for i in 0..6 {
        tree = tree.file(
            &format!("warm{i}.ron"),
            r#"(run: Shell("true"), host_tags: ["a"], priority: -10)"#,
        );
    }
    let out = run_command(&pki, &tree)
        .arg("--no-local")
        .args([
            "--host",
            &format!("tls://127.0.0.1:{}?name=a&tags=a", a.port),
        ])
        .args([
            "--host",
            &format!("tls://127.0.0.1:{}?name=b&tags=b", b.port),
        ])
        .output()
        .unwrap();
    let r = RunResult::new(out);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.finished("block")["host"], "a");
    assert_eq!(r.finished("late")["host"], "b");
    // Every task started once: a move is not an attempt.
    assert_eq!(r.of_type("task-started").len(), 9);
    assert_eq!(r.finished("late")["attempt"], 1);
}
