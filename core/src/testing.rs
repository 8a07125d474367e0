//! Helpers for tests that talk to the real services `scripts/services.sh`
//! starts. On CI (`CI=true`) a service that cannot be reached fails the test;
//! elsewhere the test is skipped with a message saying how to start it.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::KafkaBusConfig;

/// The Kafka bus settings for tests: the broker at `VIGIL_TEST_KAFKA`
/// (default `127.0.0.1:9092`), one record per batch for tansu (see
/// [`KafkaBusConfig::max_batch_records`]). `None` means skip (never on CI,
/// where it panics instead).
pub fn kafka_config() -> Option<KafkaBusConfig> {
    Some(KafkaBusConfig {
        brokers: service("Kafka", "VIGIL_TEST_KAFKA", "127.0.0.1:9092")?,
        max_batch_records: 1,
        ..KafkaBusConfig::default()
    })
}

fn service(name: &str, var: &str, default: &str) -> Option<String> {
    let address = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let reachable = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    if reachable {
        return Some(address);
    }
    let message = format!(
        "{name} is not reachable at {address} (set {var} to change it); start it with scripts/services.sh"
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{message}. On CI a test that needs {name} fails rather than skips."
    );
    #[allow(clippy::print_stderr, reason = "a skipped test must say so loudly")]
    {
        eprintln!("SKIPPED: {message}");
    }
    None
}

/// A name no other test run uses, for topics, groups and databases.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{millis}_{n}", std::process::id())
}
