//! TLS for every Vigil process, with rustls (aws-lc-rs, no OpenSSL):
//!
//! - [`server`]: a listener that serves TLS with a certificate that is read
//!   again on SIGHUP or when its files change, optionally asking every client
//!   for a certificate signed by a given CA (mutual TLS), for axum and tonic.
//! - [`client`]: the configuration of outgoing connections (probes, webhooks,
//!   the OTLP exporter, ClickHouse): the system's roots plus an extra CA file,
//!   or no verification at all for a test environment that asks for it.
//! - [`not_after_unix_s`]: when a certificate expires, so probes can report
//!   how many days a target's certificate has left.

pub mod client;
pub mod server;

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_cert::der::Decode;

/// Why certificates, keys or a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot listen: {0}")]
    Listen(String),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

impl TlsError {
    fn file(path: &Path, reason: impl ToString) -> Self {
        TlsError::File {
            path: path.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// Every certificate of a PEM file, in order (a chain: the leaf first).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::file(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file(path, e))?;
    if certificates.is_empty() {
        return Err(TlsError::file(path, "holds no PEM certificate"));
    }
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::file(path, e))
}

/// The roots a CA file adds: every certificate in it.
fn roots_from(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates(path)? {
        roots
            .add(certificate)
            .map_err(|e| TlsError::file(path, format!("not a CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// When a DER certificate stops being valid, in unix seconds; `None` when it
/// cannot be read as an X.509 certificate.
pub fn not_after_unix_s(certificate: &[u8]) -> Option<u64> {
    let certificate = x509_cert::Certificate::from_der(certificate).ok()?;
    Some(
        certificate
            .tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs(),
    )
}

/// The provider every configuration here is built with.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
