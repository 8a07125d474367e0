//! Outgoing TLS: which servers are trusted.
//!
//! The system's roots (read once per configuration from the files the
//! platform keeps, as `rustls-native-certs` finds them) plus, optionally,
//! the CAs of one PEM file: a company's private CA in front of a payment
//! endpoint, a receiver or ClickHouse. [`Verification::Skip`] trusts any
//! certificate, for a test environment that asks for it by name; it is
//! never a default.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{TlsError, provider, roots_from};

/// Whether the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Against the system's roots and the extra CA file, with its name.
    Verify,
    /// Not at all (`insecure_skip_verify` of a probe).
    Skip,
}

/// A client configuration trusting the system's roots and `ca_file`'s CAs.
pub fn config(
    ca_file: Option<&Path>,
    verification: Verification,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match verification {
        Verification::Verify => {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::debug!(%error, "a system root certificate could not be read");
            }
            roots.add_parsable_certificates(native.certs);
            if let Some(ca_file) = ca_file {
                roots.roots.extend(roots_from(ca_file)?.roots);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Verification::Skip => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerification(provider)))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// Trusts any certificate; still checks that the handshake is signed by the
/// key of the certificate that was sent.
#[derive(Debug)]
struct SkipVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
