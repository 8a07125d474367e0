//! The programs of the Prometheus ecosystem a test runs for real
//! (Prometheus and Alertmanager, from Debian's packages, installed by
//! `scripts/services.sh`): each in a folder of its own holding the
//! configuration the test gives, on a free port, waited for until it says
//! it is ready, stopped and its folder removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{free_port, program, unique_name};

/// A running program, stopped when dropped.
pub struct Daemon {
    child: Child,
    folder: PathBuf,
    address: String,
}

impl Daemon {
    /// Prometheus with `config(its address)` as its configuration. `None`
    /// means skip (never on CI, where a missing program fails the test).
    pub async fn prometheus(config: impl FnOnce(&str) -> String) -> Option<Daemon> {
        Daemon::start("prometheus", config, |folder, address| {
            vec![
                format!("--storage.tsdb.path={}", folder.join("data").display()),
                format!("--web.listen-address={address}"),
            ]
        })
        .await
    }

    /// Alertmanager with `config` as its configuration, clustering off.
    pub async fn alertmanager(config: &str) -> Option<Daemon> {
        let config = config.to_owned();
        Daemon::start(
            "prometheus-alertmanager",
            |_| config,
            |folder, address| {
                vec![
                    format!("--storage.path={}", folder.join("data").display()),
                    format!("--web.listen-address={address}"),
                    "--cluster.listen-address=".to_owned(),
                ]
            },
        )
        .await
    }

    async fn start(
        name: &str,
        config: impl FnOnce(&str) -> String,
        args: impl Fn(&Path, &str) -> Vec<String>,
    ) -> Option<Daemon> {
        let program = program(name)?;
        let address = format!("127.0.0.1:{}", free_port()?);
        let folder = std::env::temp_dir().join(unique_name(&format!("vigil_{name}")));
        std::fs::create_dir_all(&folder).expect("a folder for the program");
        let file = folder.join("config.yml");
        std::fs::write(&file, config(&address)).expect("the program's configuration");
        let child = Command::new(program)
            .arg(format!("--config.file={}", file.display()))
            .args(args(&folder, &address))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        let daemon = Daemon {
            child,
            folder,
            address,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !daemon.ready().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} is not ready on {}",
                daemon.address
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(daemon)
    }

    /// Whether `GET /-/ready` answers 200.
    async fn ready(&self) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(&self.address).await else {
            return false;
        };
        let request = format!(
            "GET /-/ready HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            self.address
        );
        let mut answer = Vec::new();
        stream.write_all(request.as_bytes()).await.is_ok()
            && stream.read_to_end(&mut answer).await.is_ok()
            && answer.starts_with(b"HTTP/1.1 200")
    }

    /// Where it listens, `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Its base URL, `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}
