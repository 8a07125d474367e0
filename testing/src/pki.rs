//! A certificate authority made for one test, and the certificates it signs,
//! written as PEM files in a folder of their own.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, date_time_ymd,
};
use vigil_config::ServerTlsConfig;
use vigil_domain::time::civil_from_days;

use crate::{now_s, unique_name};

/// A test CA. Its folder is removed when it is dropped.
pub struct Pki {
    pub dir: PathBuf,
    /// The CA's certificate (PEM): what clients trust.
    pub ca_file: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as files.
pub struct Issued {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(unique_name("vigil-pki"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, dir.display().to_string());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Pki { dir, ca_file, ca }
    }

    /// A server certificate for `localhost` and `127.0.0.1`, valid for
    /// `days` days from today.
    pub fn server(&self, name: &str, days: i64) -> Issued {
        self.issue(
            name,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            days,
        )
    }

    /// A client certificate, valid for a year.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(name, &[], ExtendedKeyUsagePurpose::ClientAuth, 365)
    }

    /// `[collector.tls]` or `[api.tls]` serving a fresh server certificate.
    pub fn server_tls(&self) -> ServerTlsConfig {
        let server = self.server("server", 365);
        ServerTlsConfig {
            cert_file: server.cert_file,
            key_file: server.key_file,
            client_ca_file: None,
            watch_interval_ms: 100,
        }
    }

    fn issue(
        &self,
        name: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        days: i64,
    ) -> Issued {
        let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let today = i64::try_from(now_s()).unwrap() / 86_400;
        let date = |days: i64| {
            let (year, month, day) = civil_from_days(days);
            date_time_ymd(
                i32::try_from(year).unwrap(),
                u8::try_from(month).unwrap(),
                u8::try_from(day).unwrap(),
            )
        };
        params.not_before = date(today - 1);
        params.not_after = date(today + days);
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.ca).unwrap();
        let issued = Issued {
            cert_file: self.dir.join(format!("{name}.pem")),
            key_file: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert_file, certificate.pem()).unwrap();
        std::fs::write(&issued.key_file, key.serialize_pem()).unwrap();
        issued
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
