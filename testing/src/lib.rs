//! Helpers for tests that talk to the real services `scripts/services.sh`
//! starts. On CI (`CI=true`) a service that cannot be reached fails the test;
//! elsewhere the test is skipped with a message saying how to start it.

pub mod browser;
pub mod daemon;
pub mod fuzz;
pub mod pki;

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_bus::{Consumer, Message};
use vigil_config::{BusKind, Config, EmbeddedBusConfig, KafkaBusConfig, StoreConfig, StoreKind};

/// How long a test waits for messages before it fails.
const READ_DEADLINE: Duration = Duration::from_secs(60);

/// Polls `consumer` until `done` holds for what came, failing the test after a
/// minute; then polls once more, so that a message too many shows up as well.
pub async fn read_until(
    consumer: &mut dyn Consumer,
    done: impl Fn(&[Message]) -> bool,
) -> Vec<Message> {
    let deadline = tokio::time::Instant::now() + READ_DEADLINE;
    let mut messages = Vec::new();
    while !done(&messages) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} messages arrived",
            messages.len()
        );
        let batch = consumer.poll(500, Duration::from_millis(100)).await;
        messages.extend(batch.expect("polling the bus failed"));
    }
    let extra = consumer.poll(500, Duration::from_millis(300)).await;
    messages.extend(extra.expect("polling the bus failed"));
    messages
}

/// Which deployment a test of both runs on; see
/// [`on_both_backends!`](crate::on_both_backends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The in-process bus and the SQLite store.
    Embedded,
    /// Kafka and ClickHouse.
    Kafka,
}

/// Runs each named `async fn test(backend: Backend)` of the calling module as
/// two tests, `embedded::test` and `kafka::test`, so that what one bus or
/// store promises is checked on both.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::Backend::Embedded).await;
                }
            )*
        }
        mod kafka {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::Backend::Kafka).await;
                }
            )*
        }
    };
}

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

/// A configuration of a test's own on `backend`: its own topics (two
/// partitions each), consumer group and store, collector ports picked freely.
/// `None` means skip (never on CI, where it panics instead).
pub fn config(backend: Backend) -> Option<Config> {
    let mut config = Config::default();
    config.bus.topic_prefix = format!("{}.", unique_name("vigil_test"));
    config.bus.partitions = 2;
    if backend == Backend::Kafka {
        config.bus.kind = BusKind::Kafka;
        config.bus.kafka = kafka_config()?;
    }
    config.bus.embedded = embedded_bus_config();
    config.store = store_config(backend)?;
    config.aggregator.group = unique_name("vigil_test_group");
    config.collector.grpc_listen = ([127, 0, 0, 1], 0).into();
    config.collector.http_listen = ([127, 0, 0, 1], 0).into();
    config.aggregator.metrics_listen = ([127, 0, 0, 1], 0).into();
    config.collector.metrics_listen = ([127, 0, 0, 1], 0).into();
    Some(config)
}

/// An OTLP attribute with a string value.
pub fn string_attribute(
    key: &str,
    value: &str,
) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// The embedded bus with a log of the test's own on disk, as `vigil up`
/// runs it.
pub fn embedded_bus_config() -> EmbeddedBusConfig {
    EmbeddedBusConfig {
        path: Some(std::env::temp_dir().join(unique_name("vigil_test_bus"))),
        ..EmbeddedBusConfig::default()
    }
}

/// A store of a test's own: a new SQLite file, or a new ClickHouse database
/// on the server at `VIGIL_TEST_CLICKHOUSE` (default `127.0.0.1:8123`).
/// `None` means skip (never on CI, where it panics instead).
pub fn store_config(backend: Backend) -> Option<StoreConfig> {
    let mut config = StoreConfig::default();
    match backend {
        Backend::Embedded => {
            config.sqlite.path = std::env::temp_dir()
                .join(unique_name("vigil_test"))
                .join("vigil.sqlite");
        }
        Backend::Kafka => {
            config.kind = StoreKind::ClickHouse;
            let address = service("ClickHouse", "VIGIL_TEST_CLICKHOUSE", "127.0.0.1:8123")?;
            config.clickhouse.url = format!("http://{address}");
            config.clickhouse.database = unique_name("vigil_test");
        }
    }
    Some(config)
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
    unavailable(
        name,
        &format!(
            "{name} is not reachable at {address} (set {var} to change it); start it with scripts/services.sh"
        ),
    )
}

/// The program `name` on the `PATH` (Prometheus, which tests run
/// themselves), installed by scripts/services.sh. `None` means skip (never
/// on CI, where it panics instead).
pub fn program(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_some() {
        return found;
    }
    unavailable(
        name,
        &format!("{name} is not on the PATH; install it with scripts/services.sh"),
    )
}

/// Says a test's service or program is missing: skips it loudly, or fails
/// it on CI.
fn unavailable<T>(name: &str, message: &str) -> Option<T> {
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

/// Unix seconds now.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Waits while the UTC day is about to turn, so that a one-day step holds
/// a whole test.
pub async fn away_from_midnight() {
    let into_day = now_s() % 86_400;
    if into_day > 86_400 - 120 {
        tokio::time::sleep(Duration::from_secs(86_400 - into_day + 1)).await;
    }
}

/// A JSON number of an answer, which must be one.
pub fn number(value: &serde_json::Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// `value`, a JSON number, is `exact` within the `relative` error.
pub fn assert_within(value: &serde_json::Value, exact: f64, relative: f64) {
    let value = number(value);
    assert!(
        (value - exact).abs() <= exact.abs() * relative,
        "{value} is not within {relative} of {exact}"
    );
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

/// A Kafka-protocol broker of a test's own (tansu, memory storage, a free
/// port), for tests that make the broker fail. Stopped when dropped.
pub struct Broker {
    child: std::process::Child,
    address: String,
}

impl Broker {
    /// Starts tansu, as installed by scripts/services.sh. `None` means skip
    /// (never on CI, where it panics instead).
    pub fn start() -> Option<Broker> {
        let port = free_port()?;
        Broker::launch(port, &format!("127.0.0.1:{port}"))
    }

    /// A broker that clients reach through TLS only: a TLS-terminating
    /// proxy serving `tls` in front of it, whose address the broker
    /// advertises (tansu 0.6 takes certificate options but serves no TLS).
    /// Its settings name the proxy, with no security set.
    pub async fn start_behind_tls(
        tls: &vigil_config::ServerTlsConfig,
    ) -> Option<(Broker, TlsTerminator)> {
        let port = free_port()?;
        let terminator = TlsTerminator::start(&format!("127.0.0.1:{port}"), tls).await;
        let advertised = format!("localhost:{}", terminator.port());
        let broker = Broker::launch(port, &advertised)?;
        Some((broker, terminator))
    }

    fn launch(port: u16, advertised: &str) -> Option<Broker> {
        let cargo_home = std::env::var("CARGO_HOME")
            .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
        let binary = std::path::Path::new(&cargo_home).join("bin/tansu");
        if !binary.exists() {
            service("tansu", "VIGIL_TEST_TANSU", "tansu-not-installed:0")?;
        }
        let listen = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(binary)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://{listen}"),
                "--advertised-listener-url",
                &format!("tcp://{advertised}"),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let broker = Broker {
            child,
            address: advertised.to_owned(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&listen).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "tansu did not start on {listen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(broker)
    }

    /// The bus settings that reach this broker.
    pub fn config(&self) -> KafkaBusConfig {
        KafkaBusConfig {
            brokers: self.address.clone(),
            max_batch_records: 1,
            ..KafkaBusConfig::default()
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill {signal} failed");
    }
}

/// A port free now, for a process that binds it itself.
fn free_port() -> Option<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .ok()
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of a service, which a test can cut off and restore
/// to play an outage: while cut, open connections are dropped and new ones
/// closed at once. Stops when dropped.
pub struct Proxy {
    address: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
    /// Words a request must hold for its answer to be dropped, once.
    drop_answer: Arc<std::sync::Mutex<Option<Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free local port and forwards to `target` (`host:port`).
    pub async fn start(target: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let address = listener.local_addr().expect("a local address");
        let (up, watch) = tokio::sync::watch::channel(true);
        let target = target.to_owned();
        let drop_answer: Arc<std::sync::Mutex<Option<Vec<String>>>> = Arc::default();
        let armed = Arc::clone(&drop_answer);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*watch.borrow() {
                    continue;
                }
                let mut watch = watch.clone();
                let target = target.clone();
                let armed = Arc::clone(&armed);
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        () = forward(client, server, &armed) => {}
                        _ = watch.wait_for(|up| !up) => {}
                    }
                });
            }
        });
        Proxy {
            address,
            up,
            drop_answer,
            task,
        }
    }

    /// Drops the answer to the next request holding every one of `words`
    /// (the service did the work, the client hears nothing and its
    /// connection closes), once.
    pub fn drop_answer_to(&self, words: &[&str]) {
        *self.drop_answer.lock().unwrap() = Some(words.iter().map(|w| (*w).to_owned()).collect());
    }

    /// Whether the armed answer was dropped.
    pub fn dropped_answer(&self) -> bool {
        self.drop_answer.lock().unwrap().is_none()
    }

    /// `host:port` to connect to instead of the service.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Drops every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

/// A TLS-terminating proxy in front of a plain service, as the service's
/// own TLS listener would be: the client speaks TLS to it, the service
/// sees plain bytes. Stops when dropped.
pub struct TlsTerminator {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl TlsTerminator {
    /// Serves `tls` on a free local port, forwarding to `target`.
    pub async fn start(target: &str, tls: &vigil_config::ServerTlsConfig) -> TlsTerminator {
        use axum::serve::Listener as _;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let port = tcp.local_addr().expect("a local address").port();
        let mut listener = vigil_tls::server::Listener::new(tcp, Some(tls), &[]).unwrap();
        let target = target.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await;
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        TlsTerminator { port, task }
    }

    /// The port to connect to (as `localhost`, which the test certificates
    /// name).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies bytes both ways; when a request holds the armed words, the
/// answer to it is swallowed and both connections close.
async fn forward(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    armed: &std::sync::Mutex<Option<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let request: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
    let seen = Arc::clone(&request);
    let up = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = client_read.read(&mut buffer).await {
            if n == 0 || server_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
            let mut seen = seen.lock().unwrap();
            // The start of each request is what names it.
            if seen.len() < 64 * 1024 {
                seen.extend_from_slice(&buffer[..n]);
            }
        }
    };
    let down = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = server_read.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            let sent = std::mem::take(&mut *request.lock().unwrap());
            let swallowed = {
                let text = String::from_utf8_lossy(&sent);
                let mut armed = armed.lock().unwrap();
                let hit = armed
                    .as_ref()
                    .is_some_and(|words| words.iter().all(|w| text.contains(w.as_str())));
                if hit {
                    *armed = None;
                }
                hit
            };
            if swallowed {
                return;
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
