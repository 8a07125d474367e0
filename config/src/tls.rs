//! `[collector.tls]`, `[api.tls]`: a listener's certificate; and the CA file
//! outgoing connections trust beside the system's roots.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ConfigError, default_watch_interval_ms};

/// Serve TLS with these PEM files. They are read again on SIGHUP and when
/// they change, so a renewed certificate is served without a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, every client must present a certificate signed by a CA of
    /// this file (mutual TLS), on top of its token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked for changes; 0: only on SIGHUP.
    #[serde(default = "default_watch_interval_ms")]
    pub watch_interval_ms: u64,
}

impl ServerTlsConfig {
    /// The files that make the configuration.
    pub fn files(&self) -> Vec<PathBuf> {
        [&self.cert_file, &self.key_file]
            .into_iter()
            .chain(&self.client_ca_file)
            .cloned()
            .collect()
    }

    /// Checks that the files are there (their content is read at start).
    pub(crate) fn validate(&self, section: &str) -> Result<(), ConfigError> {
        check_file(&format!("{section}.cert_file"), &self.cert_file)?;
        check_file(&format!("{section}.key_file"), &self.key_file)?;
        if let Some(ca) = &self.client_ca_file {
            check_file(&format!("{section}.client_ca_file"), ca)?;
        }
        Ok(())
    }
}

/// Checks that `path` is a file, naming `key` when it is not.
pub(crate) fn check_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("{} is not a readable file", path.display()),
        ))
    }
}
