//! `[bus]`: the embedded bus or Kafka, partitions and topics.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vigil_domain::topics::Topics;

use crate::tls::check_file;
use crate::{ConfigError, Secret, check_range};

/// Which bus carries messages between components, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// `embedded` (in-process, one process) or `kafka`.
    #[serde(default)]
    pub kind: BusKind,
    /// Partitions of each topic Vigil creates; the most consumers of one
    /// group that can share a topic.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// How long a publish may wait for room and for the acknowledgement before
    /// it fails with a retryable error.
    #[serde(default = "default_publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// Prefix of every topic name, so several Vigil installations (or tests)
    /// can share one Kafka cluster.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    #[serde(default)]
    pub embedded: EmbeddedBusConfig,
    #[serde(default)]
    pub kafka: KafkaBusConfig,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::default(),
            partitions: default_partitions(),
            publish_timeout_ms: default_publish_timeout_ms(),
            topic_prefix: default_topic_prefix(),
            embedded: EmbeddedBusConfig::default(),
            kafka: KafkaBusConfig::default(),
        }
    }
}

impl BusConfig {
    /// The names of Vigil's topics under this configuration's prefix.
    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }
}

/// The bus implementations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    #[default]
    Embedded,
    Kafka,
}

/// The in-process bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBusConfig {
    /// Bytes a topic may hold that some consumer group has not committed yet;
    /// past that, publishers wait and then get a retryable "full" error.
    #[serde(default = "default_max_bytes_per_topic")]
    pub max_bytes_per_topic: u64,
    /// The directory of the log on disk. Without one the bus lives in
    /// memory only and loses what it holds with the process; `vigil up`
    /// puts it under `--data` (`<data>/bus`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// When a publish is acknowledged: `interval` (the log is fsynced every
    /// `fsync_interval_ms` while there are writes, and a publish waits for
    /// the next one), `always` (a publish waits for an fsync that starts at
    /// once and that the publishes meanwhile share), or `off` (once written
    /// to the operating system: it survives the process being killed, not a
    /// power cut). `interval` costs the least CPU under load (`vigil bench
    /// bus`), `always` the least latency when idle.
    #[serde(default)]
    pub fsync: Fsync,
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// A partition's log is cut into files of about this size; a file goes
    /// once every consumer group has committed past its last record.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
}

impl Default for EmbeddedBusConfig {
    fn default() -> Self {
        EmbeddedBusConfig {
            max_bytes_per_topic: default_max_bytes_per_topic(),
            path: None,
            fsync: Fsync::default(),
            fsync_interval_ms: default_fsync_interval_ms(),
            segment_bytes: default_segment_bytes(),
        }
    }
}

/// When the embedded bus's log reaches the disk, before publishers hear
/// that their records are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    Always,
    #[default]
    Interval,
    Off,
}

/// The Kafka bus (any Kafka-protocol broker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaBusConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Replication factor of the topics Vigil creates.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: u32,
    /// Client id reported to the brokers.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Compression of produced batches: `none`, `gzip`, `snappy` or `lz4`.
    #[serde(default)]
    pub compression: Compression,
    /// How long the producer waits to fill a batch (librdkafka `linger.ms`).
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Messages the producer may hold unacknowledged before publishers wait
    /// (librdkafka `queue.buffering.max.messages`).
    #[serde(default = "default_max_queued_messages")]
    pub max_queued_messages: u32,
    /// Most records in one produced batch (librdkafka `batch.num.messages`).
    /// Set it to 1 for tansu 0.6, whose storage serves a fetch only from the
    /// start of a batch: a consumer resuming inside a batch would stall there.
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: u32,
    /// How the brokers are spoken to: `plaintext`, `ssl`, `sasl_plaintext`
    /// or `sasl_ssl` (librdkafka `security.protocol`, with OpenSSL).
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// With `ssl` and `sasl_ssl`: a CA file (PEM) the brokers' certificates
    /// are checked against (librdkafka's `ssl.ca.location`: instead of the
    /// system's roots, which are used when it is unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// With `sasl_*`: the user, its password, and the mechanism.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslConfig>,
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// The librdkafka name.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// `[bus.kafka.sasl]`: who Vigil is to the brokers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
}

/// The SASL mechanisms librdkafka speaks without Kerberos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The librdkafka name (`sasl.mechanism`).
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl Default for KafkaBusConfig {
    fn default() -> Self {
        KafkaBusConfig {
            brokers: default_brokers(),
            replication_factor: default_replication_factor(),
            client_id: default_client_id(),
            compression: Compression::default(),
            linger_ms: default_linger_ms(),
            max_queued_messages: default_max_queued_messages(),
            max_batch_records: default_max_batch_records(),
            security_protocol: SecurityProtocol::default(),
            ca_file: None,
            sasl: None,
        }
    }
}

/// Compression codecs every Kafka-protocol broker and librdkafka build support.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    #[default]
    Lz4,
}

impl Compression {
    /// The librdkafka name of the codec.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

fn default_topic_prefix() -> String {
    "vigil.".to_owned()
}

fn default_partitions() -> u32 {
    8
}

fn default_publish_timeout_ms() -> u64 {
    5_000
}

fn default_max_bytes_per_topic() -> u64 {
    256 * 1024 * 1024
}

fn default_fsync_interval_ms() -> u64 {
    10
}

fn default_segment_bytes() -> u64 {
    16 * 1024 * 1024
}

fn default_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}

fn default_replication_factor() -> u32 {
    1
}

fn default_client_id() -> String {
    "vigil".to_owned()
}

fn default_linger_ms() -> u64 {
    5
}

fn default_max_queued_messages() -> u32 {
    100_000
}

fn default_max_batch_records() -> u32 {
    10_000
}

impl BusConfig {
    /// Checks what types alone cannot.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bus = self;
        check_range("bus.partitions", bus.partitions, 1..=1024, "")?;
        check_range(
            "bus.publish_timeout_ms",
            bus.publish_timeout_ms,
            1..=600_000,
            " (10 minutes)",
        )?;
        check_range(
            "bus.embedded.max_bytes_per_topic",
            bus.embedded.max_bytes_per_topic,
            1024 * 1024..,
            " (1 MiB)",
        )?;
        check_range(
            "bus.embedded.fsync_interval_ms",
            bus.embedded.fsync_interval_ms,
            1..=10_000,
            " (10 s)",
        )?;
        check_range(
            "bus.embedded.segment_bytes",
            bus.embedded.segment_bytes,
            64 * 1024..=1024 * 1024 * 1024,
            " (64 KiB to 1 GiB)",
        )?;
        if !Topics::is_valid_prefix(&bus.topic_prefix) {
            return Err(ConfigError::invalid(
                "bus.topic_prefix",
                format!(
                    "may hold only ASCII letters, digits, '.', '_' and '-' (at most 200), got {:?}",
                    bus.topic_prefix
                ),
            ));
        }
        if bus.kind == BusKind::Kafka {
            self.kafka.validate(self.publish_timeout_ms)?;
        }
        Ok(())
    }
}

impl KafkaBusConfig {
    pub(crate) fn validate(&self, publish_timeout_ms: u64) -> Result<(), ConfigError> {
        let kafka = self;
        let brokers: Vec<&str> = kafka.brokers.split(',').map(str::trim).collect();
        if let Some(bad) = brokers.iter().find(|b| !is_host_port(b)) {
            return Err(ConfigError::invalid(
                "bus.kafka.brokers",
                format!("expected host:port[,host:port…] when bus.kind = \"kafka\", got {bad:?}"),
            ));
        }
        check_range(
            "bus.kafka.replication_factor",
            kafka.replication_factor,
            1..=32,
            "",
        )?;
        if kafka.linger_ms >= publish_timeout_ms {
            return Err(ConfigError::invalid(
                "bus.kafka.linger_ms",
                format!(
                    "must be less than bus.publish_timeout_ms ({}), got {}",
                    publish_timeout_ms, kafka.linger_ms
                ),
            ));
        }
        check_range(
            "bus.kafka.max_queued_messages",
            kafka.max_queued_messages,
            1..,
            "",
        )?;
        check_range(
            "bus.kafka.max_batch_records",
            kafka.max_batch_records,
            1..=1_000_000,
            "",
        )?;
        match (kafka.security_protocol.sasl(), &kafka.sasl) {
            (true, None) => {
                return Err(ConfigError::invalid(
                    "bus.kafka.sasl",
                    format!(
                        "security_protocol {} needs a mechanism, username and password",
                        kafka.security_protocol.as_str()
                    ),
                ));
            }
            (false, Some(_)) => {
                return Err(ConfigError::invalid(
                    "bus.kafka.sasl",
                    "is only used with security_protocol sasl_plaintext or sasl_ssl",
                ));
            }
            _ => {}
        }
        if let Some(ca) = &kafka.ca_file {
            check_file("bus.kafka.ca_file", ca)?;
        }
        Ok(())
    }
}

fn is_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}
