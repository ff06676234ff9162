//! Credentials made for one run: a certificate authority whose key never leaves this process,
//! the controller's server certificate, and one client certificate per worker job.
//!
//! The CA's certificate and each worker's certificate and key are written for the job to read
//! (files of mode 0600 in a directory of mode 0700 on the shared filesystem); the CA's key and
//! the controller's key stay in memory. A worker is recognised by its certificate (compared
//! byte for byte with the one made for its job), so each job's credentials admit that job once.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::PilotError;

/// The run's certificate authority.
pub(crate) struct RunCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A worker's credentials, as written for its job.
pub(crate) struct WorkerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate, to recognise the worker when it connects.
    pub der: Vec<u8>,
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(gen_err)`
fn gen_err(e: rcgen::Error) -> PilotError {
    PilotError::Credentials(e.to_string())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl RunCa {
    pub(crate) fn new() -> Result<Self, PilotError> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.distinguished_name
            .push(DnType::CommonName, "pexen run CA (pilot workers)");
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = p.self_signed(&key).map_err(gen_err)?;
        Ok(Self { cert, key })
    }

    /// Writes the CA's certificate (what workers trust) to `path`.
    pub(crate) fn write_cert(&self, path: &Path) -> Result<(), PilotError> {
        write_private(path, self.cert.pem().as_bytes())
    }

    /// The controller's TLS side: a server certificate for `host` (the name or address workers
    /// connect to), and only clients signed by this CA get in.
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, PilotError> {
        let mut p = CertificateParams::new(vec![host.to_owned()]).map_err(gen_err)?;
        p.distinguished_name
            .push(DnType::CommonName, "pexen controller");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = p.signed_by(&key, &self.cert, &self.key).map_err(gen_err)?;
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert.der().clone())
            .map_err(|e| PilotError::Credentials(e.to_string()))?;
        let tls = |e: rustls::Error| PilotError::Credentials(e.to_string());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| PilotError::Credentials(e.to_string()))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(tls)?;
        Ok(Arc::new(config))
    }

    /// Makes the client credentials of worker job `name` and writes them in `dir` as
    /// `NAME.pem` and `NAME.key` (mode 0600).
    pub(crate) fn worker(&self, dir: &Path, name: &str) -> Result<WorkerFiles, PilotError> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        p.distinguished_name
            .push(DnType::CommonName, format!("pexen worker {name}"));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = p.signed_by(&key, &self.cert, &self.key).map_err(gen_err)?;
        let files = WorkerFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            der: CertificateDer::as_ref(cert.der()).to_vec(),
        };
        write_private(&files.key, key.serialize_pem().as_bytes())?;
        write_private(&files.cert, cert.pem().as_bytes())?;
        Ok(files)
    }
}

/// Writes `bytes` to a new file of mode 0600 (created so: never readable by others, not even
/// for a moment).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PilotError> {
    let _ = fs::remove_file(path);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| PilotError::Write {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn worker_keys_are_private_and_certificates_differ() {
        let dir = tempfile::tempdir().unwrap();
        let ca = RunCa::new().unwrap();
        let a = ca.worker(dir.path(), "w1").unwrap();
        let b = ca.worker(dir.path(), "w2").unwrap();
        assert_ne!(a.der, b.der);
        for f in [&a.key, &a.cert, &b.key] {
            let mode = fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        assert!(fs::read_to_string(&a.key).unwrap().contains("PRIVATE KEY"));
        ca.server_config("127.0.0.1").unwrap();
        ca.server_config("login1.example.org").unwrap();
    }
}
