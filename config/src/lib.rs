//! Vigil's configuration: defaults, then a TOML file, then `VIGIL_*`
//! environment variables, parsed into types that reject unknown keys and
//! checked by [`Config::validate`], whose messages name the key at fault.
//!
//! An environment variable `VIGIL_A__B__C=value` sets the key `a.b.c`: the
//! path is split on double underscores and lower-cased. The value is read as a
//! TOML value when it is one (`8`, `true`, `["a", "b"]`, `"quoted"`), and as a
//! string otherwise (`kafka`, `127.0.0.1:9092`). Variables without a double
//! underscore (`VIGIL_CONFIG`, `VIGIL_LOG`) belong to the binary, not here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use vigil_domain::tenant::TenantId;
use vigil_domain::topics::Topics;

/// Prefix of every environment variable that overrides a configuration key.
pub const ENV_PREFIX: &str = "VIGIL_";
const ENV_SEPARATOR: &str = "__";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// The whole configuration of a Vigil process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The message bus between components.
    #[serde(default)]
    pub bus: BusConfig,
    /// The ingest front door.
    #[serde(default)]
    pub collector: CollectorConfig,
    /// Where rollups, raw spans and the series catalogue are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Bus to windows to store.
    #[serde(default)]
    pub aggregator: AggregatorConfig,
    /// The dashboard API.
    #[serde(default)]
    pub api: ApiConfig,
    /// Service level objectives, reported by `GET /api/v1/slo`.
    #[serde(default)]
    pub slos: Vec<SloConfig>,
    /// The synthetic prober.
    #[serde(default)]
    pub synthetic: SyntheticConfig,
    /// Rules, alerts, notifications and remediation.
    #[serde(default)]
    pub alerter: AlerterConfig,
    /// How gray releases are judged (`GET /api/v1/releases/{service}/health`).
    #[serde(default)]
    pub canary: CanaryConfig,
}

/// How a canary is judged against its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Events (requests, sessions, frames, runs) each cohort needs before a
    /// signal is judged; fewer: inconclusive.
    #[serde(default = "default_canary_min_samples")]
    pub min_samples: u64,
    /// A difference is significant when its p-value is below this.
    #[serde(default = "default_canary_significance")]
    pub significance: f64,
    /// A significant difference fails the canary only when it is worse than
    /// the baseline by more than this percentage of it.
    #[serde(default = "default_canary_tolerance_percent")]
    pub tolerance_percent: f64,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            min_samples: default_canary_min_samples(),
            significance: default_canary_significance(),
            tolerance_percent: default_canary_tolerance_percent(),
        }
    }
}

impl CanaryConfig {
    pub fn criteria(&self) -> vigil_domain::canary::Criteria {
        vigil_domain::canary::Criteria {
            min_samples: self.min_samples,
            significance: self.significance,
            tolerance: self.tolerance_percent / 100.0,
        }
    }
}

/// The alerter: its rule files, how it reads the aggregators' windows, and
/// what it says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlerterConfig {
    /// Rule files (YAML: rules, receivers, routes, inhibitions, actions), or
    /// folders whose `*.yaml` and `*.yml` files are read.
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    /// The consumer group on the rollups topic.
    #[serde(default = "default_alerter_group")]
    pub group: String,
    /// How long after a 10 s window ends it is evaluated: time for the
    /// aggregators' last flush of it to arrive.
    #[serde(default = "default_evaluation_delay_ms")]
    pub evaluation_delay_ms: u64,
    /// How often the rule files are checked for changes; 0: only on SIGHUP.
    #[serde(default = "default_watch_interval_ms")]
    pub watch_interval_ms: u64,
    /// The dashboard's address, for links in notifications (`externalURL`,
    /// `generatorURL`); empty: none.
    #[serde(default)]
    pub external_url: String,
    /// Remediation actions are logged and recorded but not sent.
    #[serde(default)]
    pub dry_run: bool,
    /// Where `GET /metrics` (Prometheus text) and `GET /healthz` are served;
    /// port 0 picks any free port.
    #[serde(default = "default_alerter_metrics_listen")]
    pub metrics_listen: SocketAddr,
}

impl Default for AlerterConfig {
    fn default() -> Self {
        AlerterConfig {
            rules: Vec::new(),
            group: default_alerter_group(),
            evaluation_delay_ms: default_evaluation_delay_ms(),
            watch_interval_ms: default_watch_interval_ms(),
            external_url: String::new(),
            dry_run: false,
            metrics_listen: default_alerter_metrics_listen(),
        }
    }
}

/// The synthetic prober: the scenarios it runs, the locations it runs them
/// for, and where the traces of its runs go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Scenario files (YAML), or folders whose `*.yaml` and `*.yml` files
    /// are read.
    #[serde(default)]
    pub scenarios: Vec<PathBuf>,
    /// The locations this process runs probes for; empty: every location
    /// the scenarios name.
    #[serde(default)]
    pub locations: Vec<String>,
    /// The collector's OTLP/HTTP address the runs are exported to
    /// (`/v1/traces` is appended).
    #[serde(default = "default_otlp_endpoint")]
    pub otlp_endpoint: String,
    /// The ingest token the runs are exported with (one of a collector
    /// tenant's tokens); none when the collector asks for none.
    #[serde(default)]
    pub token: Option<Secret>,
    /// `service.name` of the exported runs.
    #[serde(default = "default_synthetic_service_name")]
    pub service_name: String,
    /// Runs in flight at once, over every probe and location.
    #[serde(default = "default_max_concurrent_runs")]
    pub max_concurrent_runs: usize,
    /// How often the scenario files are checked for changes; 0: only on
    /// SIGHUP.
    #[serde(default = "default_watch_interval_ms")]
    pub watch_interval_ms: u64,
    /// Where `GET /metrics` (Prometheus text) and `GET /healthz` are served;
    /// port 0 picks any free port.
    #[serde(default = "default_synthetic_metrics_listen")]
    pub metrics_listen: SocketAddr,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            scenarios: Vec::new(),
            locations: Vec::new(),
            otlp_endpoint: default_otlp_endpoint(),
            token: None,
            service_name: default_synthetic_service_name(),
            max_concurrent_runs: default_max_concurrent_runs(),
            watch_interval_ms: default_watch_interval_ms(),
            metrics_listen: default_synthetic_metrics_listen(),
        }
    }
}

/// The dashboard API: where it listens, who may read, and its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// HTTP address; port 0 picks a free port.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// A query running longer is stopped and answered with 422.
    #[serde(default = "default_query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// Most points (series × steps) one answer may hold; more is answered
    /// with 422.
    #[serde(default = "default_max_points")]
    pub max_points: usize,
    /// Who may read: bearer tokens, each standing for a tenant and a role.
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
            query_timeout_ms: default_query_timeout_ms(),
            max_points: default_max_points(),
            tokens: Vec::new(),
        }
    }
}

/// One dashboard API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub token: Secret,
    pub tenant: TenantId,
    pub role: Role,
}

/// What a token may do. Each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads its tenant's data.
    Viewer,
    /// Also manages its tenant's silences.
    Editor,
    /// Also reads any tenant's data (the `tenant` parameter).
    Admin,
}

/// A service level objective: which series it counts, what a good event
/// is, and the target over a rolling window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Unique within its tenant.
    pub name: String,
    pub tenant: TenantId,
    #[serde(default)]
    pub description: String,
    /// `span` (a service or one operation), `probe` (a probe's runs),
    /// `client` (an app signal) or `metric`.
    pub kind: vigil_domain::model::Kind,
    /// The service, or the app for `client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The series name: an operation, a probe or a client signal; every
    /// series of the service when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    /// Labels the series must have, with these values.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub sli: Sli,
    /// For a latency SLI: an event is good when it took at most this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_ms: Option<f64>,
    /// The share of good events to reach, in percent (e.g. 99.9).
    pub objective_percent: f64,
    /// The rolling window the objective is for, in days (usually 7, 28 or 30).
    #[serde(default = "default_slo_window_days")]
    pub window_days: u32,
}

/// What makes an event good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sli {
    /// It did not fail.
    Availability,
    /// It took at most the threshold.
    Latency,
}

/// Which store keeps Vigil's data, and how to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (one embedded file) or `clickhouse`.
    #[serde(default)]
    pub kind: StoreKind,
    /// Days raw spans are kept; older day partitions are dropped.
    #[serde(default = "default_span_retention_days")]
    pub span_retention_days: u32,
    /// Days raw log records and crashes are kept.
    #[serde(default = "default_event_retention_days")]
    pub event_retention_days: u32,
    /// Days rollups are kept (by the day they were written).
    #[serde(default = "default_rollup_retention_days")]
    pub rollup_retention_days: u32,
    #[serde(default)]
    pub sqlite: SqliteStoreConfig,
    #[serde(default)]
    pub clickhouse: ClickHouseStoreConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::default(),
            span_retention_days: default_span_retention_days(),
            event_retention_days: default_event_retention_days(),
            rollup_retention_days: default_rollup_retention_days(),
            sqlite: SqliteStoreConfig::default(),
            clickhouse: ClickHouseStoreConfig::default(),
        }
    }
}

/// The store implementations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Sqlite,
    #[serde(rename = "clickhouse")]
    ClickHouse,
}

/// The embedded store: one SQLite file in WAL mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteStoreConfig {
    #[serde(default = "default_sqlite_path")]
    pub path: PathBuf,
}

impl Default for SqliteStoreConfig {
    fn default() -> Self {
        SqliteStoreConfig {
            path: default_sqlite_path(),
        }
    }
}

/// The ClickHouse store, over HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseStoreConfig {
    #[serde(default = "default_clickhouse_url")]
    pub url: String,
    /// Created by `vigil migrate` (and at start-up) when missing.
    #[serde(default = "default_clickhouse_database")]
    pub database: String,
    #[serde(default = "default_clickhouse_user")]
    pub user: String,
    #[serde(default = "default_clickhouse_password")]
    pub password: Secret,
}

impl Default for ClickHouseStoreConfig {
    fn default() -> Self {
        ClickHouseStoreConfig {
            url: default_clickhouse_url(),
            database: default_clickhouse_database(),
            user: default_clickhouse_user(),
            password: default_clickhouse_password(),
        }
    }
}

/// The aggregator: windows, flushes and what a span's series is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Consumer group of every aggregator sharing the work (one group per
    /// topic: `<group>.metrics`, `<group>.traces`, `<group>.logs`,
    /// `<group>.client`).
    #[serde(default = "default_aggregator_group")]
    pub group: String,
    /// How long after its end a window waits for late points before it
    /// closes; later points are stored as corrections.
    #[serde(default = "default_allowed_lateness_s")]
    pub allowed_lateness_s: u64,
    /// How often what was consumed is written to the store (with the bus
    /// offsets it covers): the delay before data can be queried.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// A flush starts early once it would hold this many rows.
    #[serde(default = "default_max_flush_rows")]
    pub max_flush_rows: usize,
    /// A cumulative series unseen for this long (event time) is forgotten;
    /// its next point counts from its start time again.
    #[serde(default = "default_cumulative_max_staleness_s")]
    pub cumulative_max_staleness_s: u64,
    /// Span attributes that become series dimensions besides the standard
    /// ones (service.version, vigil.unit, vigil.cohort,
    /// deployment.environment, cloud.region).
    #[serde(default = "default_span_dimensions")]
    pub span_dimensions: Vec<String>,
    /// Whether every flush's rows are also published on the rollups topic,
    /// which the alerter reads.
    #[serde(default = "default_true")]
    pub publish_rollups: bool,
    /// Where `GET /metrics` (Prometheus text) and `GET /healthz` are served;
    /// port 0 picks any free port.
    #[serde(default = "default_aggregator_metrics_listen")]
    pub metrics_listen: SocketAddr,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            group: default_aggregator_group(),
            allowed_lateness_s: default_allowed_lateness_s(),
            flush_interval_ms: default_flush_interval_ms(),
            max_flush_rows: default_max_flush_rows(),
            cumulative_max_staleness_s: default_cumulative_max_staleness_s(),
            span_dimensions: default_span_dimensions(),
            publish_rollups: true,
            metrics_listen: default_aggregator_metrics_listen(),
        }
    }
}

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
}

impl Default for EmbeddedBusConfig {
    fn default() -> Self {
        EmbeddedBusConfig {
            max_bytes_per_topic: default_max_bytes_per_topic(),
        }
    }
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

/// The collector: where it listens, how much it takes, and who may send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// OTLP/gRPC (and `vigil.client.v1`) address; port 0 picks a free port.
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP address (also client telemetry, remote-write, `/metrics`).
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// Largest request, after decompression.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Items whose time is older than this are rejected: keep it at most the
    /// store's retention.
    #[serde(default = "default_max_age_days")]
    pub max_age_days: u32,
    /// Items whose time is further than this in the future are rejected.
    #[serde(default = "default_max_future_seconds")]
    pub max_future_seconds: u64,
    /// Tenant that requests without a token go to. Unset (the default): a
    /// request without a token is refused. A wrong token is always refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_tenant: Option<TenantId>,
    /// Who may send: each tenant and the bearer tokens that stand for it.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            grpc_listen: default_grpc_listen(),
            http_listen: default_http_listen(),
            max_message_bytes: default_max_message_bytes(),
            max_age_days: default_max_age_days(),
            max_future_seconds: default_max_future_seconds(),
            anonymous_tenant: None,
            tenants: Vec::new(),
            limits: LimitsConfig::default(),
        }
    }
}

/// One tenant and its ingest tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: TenantId,
    pub tokens: Vec<Secret>,
}

/// A secret value: never shown by `Debug` or when the configuration is printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // An empty secret (no password) hides nothing and must load back.
        serializer.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// Limits on what one item (span, data point, log record) may carry. An item
/// over a limit is rejected and counted in the response's `partial_success`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Attributes on one item.
    #[serde(default = "default_max_attributes")]
    pub max_attributes: usize,
    /// Bytes of one attribute's string value.
    #[serde(default = "default_max_attribute_value_bytes")]
    pub max_attribute_value_bytes: usize,
    /// Items (spans, data points, log records) a tenant may send per second,
    /// on average; items over it are rejected.
    #[serde(default = "default_tenant_items_per_second")]
    pub tenant_items_per_second: u64,
    /// Items a tenant may send at once above its rate.
    #[serde(default = "default_tenant_burst_items")]
    pub tenant_burst_items: u64,
    /// New series one metric may gain per minute (per tenant): a series is
    /// the resource, the metric and the point's attributes. Known series
    /// always pass; one unseen for an hour is new again.
    #[serde(default = "default_max_new_series_per_metric_per_minute")]
    pub max_new_series_per_metric_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_attributes: default_max_attributes(),
            max_attribute_value_bytes: default_max_attribute_value_bytes(),
            tenant_items_per_second: default_tenant_items_per_second(),
            tenant_burst_items: default_tenant_burst_items(),
            max_new_series_per_metric_per_minute: default_max_new_series_per_metric_per_minute(),
        }
    }
}

fn default_span_retention_days() -> u32 {
    7
}
fn default_event_retention_days() -> u32 {
    14
}
fn default_rollup_retention_days() -> u32 {
    400
}
fn default_sqlite_path() -> PathBuf {
    PathBuf::from("vigil-data/vigil.sqlite")
}
fn default_clickhouse_url() -> String {
    "http://127.0.0.1:8123".to_owned()
}
fn default_clickhouse_database() -> String {
    "vigil".to_owned()
}
fn default_clickhouse_user() -> String {
    "default".to_owned()
}
fn default_clickhouse_password() -> Secret {
    Secret::new("")
}
fn default_aggregator_group() -> String {
    "vigil-aggregator".to_owned()
}
fn default_allowed_lateness_s() -> u64 {
    30
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_max_flush_rows() -> usize {
    100_000
}
fn default_cumulative_max_staleness_s() -> u64 {
    300
}
fn default_true() -> bool {
    true
}
fn default_span_dimensions() -> Vec<String> {
    vec!["http.route".to_owned(), "rpc.method".to_owned()]
}
fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4317))
}
fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4318))
}
fn default_aggregator_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9465))
}
fn default_synthetic_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9466))
}
fn default_alerter_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9467))
}
fn default_canary_min_samples() -> u64 {
    100
}
fn default_canary_significance() -> f64 {
    0.05
}
fn default_canary_tolerance_percent() -> f64 {
    10.0
}
fn default_alerter_group() -> String {
    "vigil-alerter".to_owned()
}
fn default_evaluation_delay_ms() -> u64 {
    2_000
}
fn default_otlp_endpoint() -> String {
    "http://127.0.0.1:4318".to_owned()
}
fn default_synthetic_service_name() -> String {
    "vigil-synthetic".to_owned()
}
fn default_max_concurrent_runs() -> usize {
    256
}
fn default_watch_interval_ms() -> u64 {
    2_000
}
fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_query_timeout_ms() -> u64 {
    10_000
}
fn default_max_points() -> usize {
    200_000
}
fn default_slo_window_days() -> u32 {
    28
}
fn default_max_message_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_max_age_days() -> u32 {
    30
}
fn default_max_future_seconds() -> u64 {
    3600
}
fn default_max_attributes() -> usize {
    128
}
fn default_max_attribute_value_bytes() -> usize {
    4096
}
fn default_tenant_items_per_second() -> u64 {
    500_000
}
fn default_tenant_burst_items() -> u64 {
    1_000_000
}
fn default_max_new_series_per_metric_per_minute() -> u32 {
    10_000
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

impl Config {
    /// Loads defaults, then the file at `path` if any, then the `VIGIL_*`
    /// variables of this process's environment, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = path
            .map(|path| {
                std::fs::read_to_string(path)
                    .map(|text| (path.display().to_string(), text))
                    .map_err(|source| ConfigError::Read {
                        path: path.to_owned(),
                        source,
                    })
            })
            .transpose()?;
        let file = file
            .as_ref()
            .map(|(origin, text)| (origin.as_str(), text.as_str()));
        Config::from_sources(file, std::env::vars())
    }

    /// Builds a configuration from a TOML text (`(origin, text)`, origin naming
    /// it in errors) and environment variables, and validates it.
    pub fn from_sources(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some((origin, text)) => {
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax {
                        origin: origin.to_owned(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(var, _)| var.starts_with(ENV_PREFIX) && var.contains(ENV_SEPARATOR))
            .collect();
        overrides.sort();
        for (var, value) in overrides {
            apply_override(&mut table, &var, &value)?;
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::invalid(&e.path().to_string(), e.inner().message()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bus = &self.bus;
        if !(1..=1024).contains(&bus.partitions) {
            return Err(ConfigError::invalid(
                "bus.partitions",
                format!("must be between 1 and 1024, got {}", bus.partitions),
            ));
        }
        if !(1..=600_000).contains(&bus.publish_timeout_ms) {
            return Err(ConfigError::invalid(
                "bus.publish_timeout_ms",
                format!(
                    "must be between 1 and 600000 (10 minutes), got {}",
                    bus.publish_timeout_ms
                ),
            ));
        }
        if bus.embedded.max_bytes_per_topic < 1024 * 1024 {
            return Err(ConfigError::invalid(
                "bus.embedded.max_bytes_per_topic",
                format!(
                    "must be at least 1048576 (1 MiB), got {}",
                    bus.embedded.max_bytes_per_topic
                ),
            ));
        }
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
            self.validate_kafka()?;
        }
        self.validate_collector()?;
        self.validate_store()?;
        self.validate_aggregator()?;
        self.validate_api()?;
        self.validate_slos()?;
        self.validate_synthetic()?;
        self.validate_alerter()?;
        self.validate_canary()
    }

    fn validate_canary(&self) -> Result<(), ConfigError> {
        let canary = &self.canary;
        canary.criteria().check().map_err(|(field, reason)| {
            let (key, value) = match field {
                "min_samples" => ("canary.min_samples", canary.min_samples.to_string()),
                "significance" => ("canary.significance", canary.significance.to_string()),
                _ => (
                    "canary.tolerance_percent",
                    format!("{} %", canary.tolerance_percent),
                ),
            };
            ConfigError::invalid(key, format!("{reason}, got {value}"))
        })
    }

    fn validate_alerter(&self) -> Result<(), ConfigError> {
        let alerter = &self.alerter;
        if alerter.group.is_empty() {
            return Err(ConfigError::invalid("alerter.group", "must not be empty"));
        }
        if alerter.evaluation_delay_ms > 60_000 {
            return Err(ConfigError::invalid(
                "alerter.evaluation_delay_ms",
                format!(
                    "must be at most 60000 (a minute), got {}",
                    alerter.evaluation_delay_ms
                ),
            ));
        }
        let url = &alerter.external_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "alerter.external_url",
                format!("must be empty or an http:// or https:// URL, got {url:?}"),
            ));
        }
        Ok(())
    }

    fn validate_synthetic(&self) -> Result<(), ConfigError> {
        let synthetic = &self.synthetic;
        let endpoint = &synthetic.otlp_endpoint;
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "synthetic.otlp_endpoint",
                format!("must be an http:// or https:// URL, got {endpoint:?}"),
            ));
        }
        if synthetic.service_name.is_empty() || synthetic.service_name.len() > 128 {
            return Err(ConfigError::invalid(
                "synthetic.service_name",
                "must hold 1 to 128 characters",
            ));
        }
        if !(1..=100_000).contains(&synthetic.max_concurrent_runs) {
            return Err(ConfigError::invalid(
                "synthetic.max_concurrent_runs",
                format!(
                    "must be between 1 and 100000, got {}",
                    synthetic.max_concurrent_runs
                ),
            ));
        }
        if let Some(empty) = synthetic.locations.iter().position(String::is_empty) {
            return Err(ConfigError::invalid(
                &format!("synthetic.locations[{empty}]"),
                "must not be empty",
            ));
        }
        Ok(())
    }

    fn validate_api(&self) -> Result<(), ConfigError> {
        let api = &self.api;
        if !(100..=600_000).contains(&api.query_timeout_ms) {
            return Err(ConfigError::invalid(
                "api.query_timeout_ms",
                format!(
                    "must be between 100 and 600000 (10 minutes), got {}",
                    api.query_timeout_ms
                ),
            ));
        }
        if !(1_000..=10_000_000).contains(&api.max_points) {
            return Err(ConfigError::invalid(
                "api.max_points",
                format!("must be between 1000 and 10000000, got {}", api.max_points),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, token) in api.tokens.iter().enumerate() {
            let key = format!("api.tokens[{i}].token");
            if token.token.expose().len() < 16 {
                return Err(ConfigError::invalid(
                    &key,
                    format!(
                        "tokens must be at least 16 characters (tenant {})",
                        token.tenant
                    ),
                ));
            }
            if !seen.insert(token.token.expose()) {
                return Err(ConfigError::invalid(&key, "this token is listed twice"));
            }
        }
        Ok(())
    }

    fn validate_slos(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, slo) in self.slos.iter().enumerate() {
            let key = |field: &str| format!("slos[{i}].{field}");
            let plain = !slo.name.is_empty()
                && slo.name.len() <= 128
                && slo
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !plain {
                return Err(ConfigError::invalid(
                    &key("name"),
                    format!(
                        "may hold only ASCII letters, digits, '.', '_' and '-' (1 to 128), got {:?}",
                        slo.name
                    ),
                ));
            }
            if !seen.insert((&slo.tenant, &slo.name)) {
                return Err(ConfigError::invalid(
                    &key("name"),
                    format!(
                        "tenant {} has two objectives named {}",
                        slo.tenant, slo.name
                    ),
                ));
            }
            if !(slo.objective_percent > 0.0 && slo.objective_percent < 100.0) {
                return Err(ConfigError::invalid(
                    &key("objective_percent"),
                    format!(
                        "must be above 0 and below 100, got {}",
                        slo.objective_percent
                    ),
                ));
            }
            if !(1..=90).contains(&slo.window_days) {
                return Err(ConfigError::invalid(
                    &key("window_days"),
                    format!("must be between 1 and 90, got {}", slo.window_days),
                ));
            }
            match (slo.sli, slo.threshold_ms) {
                (Sli::Latency, Some(ms)) if ms.is_finite() && ms > 0.0 => {}
                (Sli::Latency, _) => {
                    return Err(ConfigError::invalid(
                        &key("threshold_ms"),
                        "a latency objective needs a threshold above 0 ms",
                    ));
                }
                (Sli::Availability, Some(_)) => {
                    return Err(ConfigError::invalid(
                        &key("threshold_ms"),
                        "only a latency objective has a threshold; remove it or set sli = \"latency\"",
                    ));
                }
                (Sli::Availability, None) => {}
            }
        }
        Ok(())
    }

    fn validate_store(&self) -> Result<(), ConfigError> {
        let store = &self.store;
        for (key, days) in [
            ("store.span_retention_days", store.span_retention_days),
            ("store.event_retention_days", store.event_retention_days),
            ("store.rollup_retention_days", store.rollup_retention_days),
        ] {
            if !(1..=3650).contains(&days) {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be between 1 and 3650 days, got {days}"),
                ));
            }
        }
        let database = &store.clickhouse.database;
        let plain = !database.is_empty()
            && database.len() <= 64
            && database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return Err(ConfigError::invalid(
                "store.clickhouse.database",
                format!("may hold only ASCII letters, digits and '_' (1 to 64), got {database:?}"),
            ));
        }
        if !store.clickhouse.url.starts_with("http://")
            && !store.clickhouse.url.starts_with("https://")
        {
            return Err(ConfigError::invalid(
                "store.clickhouse.url",
                format!(
                    "must be an http:// or https:// URL of ClickHouse's HTTP interface, got {:?}",
                    store.clickhouse.url
                ),
            ));
        }
        Ok(())
    }

    fn validate_aggregator(&self) -> Result<(), ConfigError> {
        let aggregator = &self.aggregator;
        if aggregator.group.is_empty() {
            return Err(ConfigError::invalid(
                "aggregator.group",
                "must not be empty",
            ));
        }
        if aggregator.allowed_lateness_s > 3600 {
            return Err(ConfigError::invalid(
                "aggregator.allowed_lateness_s",
                format!(
                    "must be at most 3600 (one hour), got {}",
                    aggregator.allowed_lateness_s
                ),
            ));
        }
        if !(10..=60_000).contains(&aggregator.flush_interval_ms) {
            return Err(ConfigError::invalid(
                "aggregator.flush_interval_ms",
                format!(
                    "must be between 10 and 60000, got {}",
                    aggregator.flush_interval_ms
                ),
            ));
        }
        if !(1..=1_000_000).contains(&aggregator.max_flush_rows) {
            return Err(ConfigError::invalid(
                "aggregator.max_flush_rows",
                format!(
                    "must be between 1 and 1000000 (one ClickHouse insert block), got {}",
                    aggregator.max_flush_rows
                ),
            ));
        }
        if !(60..=86_400).contains(&aggregator.cumulative_max_staleness_s) {
            return Err(ConfigError::invalid(
                "aggregator.cumulative_max_staleness_s",
                format!(
                    "must be between 60 and 86400, got {}",
                    aggregator.cumulative_max_staleness_s
                ),
            ));
        }
        Ok(())
    }

    fn validate_collector(&self) -> Result<(), ConfigError> {
        let collector = &self.collector;
        if !(1024..=256 * 1024 * 1024).contains(&collector.max_message_bytes) {
            return Err(ConfigError::invalid(
                "collector.max_message_bytes",
                format!(
                    "must be between 1024 and 268435456 (256 MiB), got {}",
                    collector.max_message_bytes
                ),
            ));
        }
        if collector.max_age_days == 0 {
            return Err(ConfigError::invalid(
                "collector.max_age_days",
                "must be at least 1, got 0",
            ));
        }
        let limits = &collector.limits;
        if limits.tenant_items_per_second == 0 {
            return Err(ConfigError::invalid(
                "collector.limits.tenant_items_per_second",
                format!("must be at least 1, got {}", limits.tenant_items_per_second),
            ));
        }
        if limits.tenant_burst_items == 0 {
            return Err(ConfigError::invalid(
                "collector.limits.tenant_burst_items",
                "must be at least 1, got 0",
            ));
        }
        if limits.max_new_series_per_metric_per_minute == 0 {
            return Err(ConfigError::invalid(
                "collector.limits.max_new_series_per_metric_per_minute",
                "must be at least 1, got 0",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, tenant) in collector.tenants.iter().enumerate() {
            if tenant.tokens.is_empty() {
                return Err(ConfigError::invalid(
                    &format!("collector.tenants[{i}].tokens"),
                    format!("tenant {} needs at least one token", tenant.id),
                ));
            }
            for token in &tenant.tokens {
                if token.expose().len() < 16 {
                    return Err(ConfigError::invalid(
                        &format!("collector.tenants[{i}].tokens"),
                        format!(
                            "tokens of tenant {} must be at least 16 characters",
                            tenant.id
                        ),
                    ));
                }
                if !seen.insert(token.expose()) {
                    return Err(ConfigError::invalid(
                        &format!("collector.tenants[{i}].tokens"),
                        "a token may stand for one tenant only; this one is listed twice",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        let kafka = &self.bus.kafka;
        let brokers: Vec<&str> = kafka.brokers.split(',').map(str::trim).collect();
        if let Some(bad) = brokers.iter().find(|b| !is_host_port(b)) {
            return Err(ConfigError::invalid(
                "bus.kafka.brokers",
                format!("expected host:port[,host:port…] when bus.kind = \"kafka\", got {bad:?}"),
            ));
        }
        if !(1..=32).contains(&kafka.replication_factor) {
            return Err(ConfigError::invalid(
                "bus.kafka.replication_factor",
                format!("must be between 1 and 32, got {}", kafka.replication_factor),
            ));
        }
        if kafka.linger_ms >= self.bus.publish_timeout_ms {
            return Err(ConfigError::invalid(
                "bus.kafka.linger_ms",
                format!(
                    "must be less than bus.publish_timeout_ms ({}), got {}",
                    self.bus.publish_timeout_ms, kafka.linger_ms
                ),
            ));
        }
        if kafka.max_queued_messages == 0 {
            return Err(ConfigError::invalid(
                "bus.kafka.max_queued_messages",
                "must be at least 1, got 0",
            ));
        }
        if !(1..=1_000_000).contains(&kafka.max_batch_records) {
            return Err(ConfigError::invalid(
                "bus.kafka.max_batch_records",
                format!(
                    "must be between 1 and 1000000, got {}",
                    kafka.max_batch_records
                ),
            ));
        }
        Ok(())
    }

    /// The configuration as TOML, every key with its effective value.
    pub fn to_toml(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

fn is_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// Sets the key named by `VIGIL_A__B__C` in `table`.
fn apply_override(table: &mut toml::Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let env_error = |message: String| ConfigError::Env {
        var: var.to_owned(),
        message,
    };
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split(ENV_SEPARATOR)
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(env_error(
            "empty key segment; write VIGIL_SECTION__KEY".to_owned(),
        ));
    }
    let (last, parents) = path.split_last().unwrap_or((&path[0], &[]));
    let mut current = table;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            env_error(format!(
                "{} is a value, not a section",
                path[..=depth].join(".")
            ))
        })?;
    }
    current.insert(last.clone(), parse_env_value(raw));
    Ok(())
}

/// A TOML value when `raw` is one, else the string itself.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("value = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut table| table.remove("value"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(file: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_sources(Some(("vigil.toml", file)), env(vars))
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = Config::from_sources(None, env(&[])).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.bus.kind, BusKind::Embedded);
        assert_eq!(config.bus.partitions, 8);
        assert_eq!(config.bus.kafka.brokers, "127.0.0.1:9092");
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let file = r#"
            [bus]
            kind = "kafka"
            partitions = 4
            [bus.kafka]
            brokers = "k1:9092,k2:9092"
        "#;
        let config = load(
            file,
            &[
                ("VIGIL_BUS__PARTITIONS", "16"),
                ("VIGIL_BUS__KAFKA__COMPRESSION", "gzip"),
                ("VIGIL_BUS__EMBEDDED__MAX_BYTES_PER_TOPIC", "2097152"),
                ("VIGIL_CONFIG", "ignored.toml"),
                ("HOME", "/root"),
            ],
        )
        .unwrap();
        assert_eq!(config.bus.kind, BusKind::Kafka);
        assert_eq!(config.bus.partitions, 16);
        assert_eq!(config.bus.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(config.bus.kafka.compression, Compression::Gzip);
        assert_eq!(config.bus.embedded.max_bytes_per_topic, 2_097_152);
        assert_eq!(config.bus.publish_timeout_ms, 5_000);
    }

    #[test]
    fn environment_values_that_are_not_toml_are_strings() {
        let config = load("", &[("VIGIL_BUS__KAFKA__BROKERS", "10.1.2.3:9093")]).unwrap();
        assert_eq!(config.bus.kafka.brokers, "10.1.2.3:9093");
        let config = load("", &[("VIGIL_BUS__KAFKA__CLIENT_ID", "\"1234\"")]).unwrap();
        assert_eq!(config.bus.kafka.client_id, "1234");
    }

    #[test]
    fn unknown_keys_are_named() {
        let error = load("[bus]\npartitons = 3\n", &[]).unwrap_err().to_string();
        assert_eq!(
            error,
            "bus.partitons: unknown field `partitons`, expected one of `kind`, `partitions`, \
             `publish_timeout_ms`, `topic_prefix`, `embedded`, `kafka`"
        );

        let error = load("", &[("VIGIL_BUS__KAFKA__BROKER", "x:1")])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("bus.kafka.broker: unknown field `broker`"),
            "{error}"
        );

        let error = load("[storage]\n", &[]).unwrap_err().to_string();
        assert!(error.contains("unknown field `storage`"), "{error}");
    }

    #[test]
    fn wrong_types_and_enum_values_are_named() {
        let error = load("[bus]\nkind = \"rabbitmq\"\n", &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "bus.kind: unknown variant `rabbitmq`, expected `embedded` or `kafka`"
        );

        let error = load("", &[("VIGIL_BUS__PARTITIONS", "many")])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("bus.partitions: invalid type: string"),
            "{error}"
        );
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let error = load("[bus\n", &[]).unwrap_err().to_string();
        assert!(error.starts_with("vigil.toml: "), "{error}");
    }

    #[test]
    fn validate_names_the_key_and_the_allowed_values() {
        type Vars = &'static [(&'static str, &'static str)];
        let cases: [(&str, Vars, &str); 6] = [
            (
                "[bus]\npartitions = 0",
                &[],
                "bus.partitions: must be between 1 and 1024, got 0",
            ),
            (
                "[bus]\npublish_timeout_ms = 0",
                &[],
                "bus.publish_timeout_ms: must be between 1 and 600000 (10 minutes), got 0",
            ),
            (
                "[bus.embedded]\nmax_bytes_per_topic = 10",
                &[],
                "bus.embedded.max_bytes_per_topic: must be at least 1048576 (1 MiB), got 10",
            ),
            (
                "[bus]\nkind = \"kafka\"\n[bus.kafka]\nbrokers = \"k1:9092,k2\"",
                &[],
                "bus.kafka.brokers: expected host:port[,host:port…] when bus.kind = \"kafka\", got \"k2\"",
            ),
            (
                "[bus]\nkind = \"kafka\"",
                &[("VIGIL_BUS__KAFKA__REPLICATION_FACTOR", "0")],
                "bus.kafka.replication_factor: must be between 1 and 32, got 0",
            ),
            (
                "[bus]\nkind = \"kafka\"\npublish_timeout_ms = 100\n[bus.kafka]\nlinger_ms = 100",
                &[],
                "bus.kafka.linger_ms: must be less than bus.publish_timeout_ms (100), got 100",
            ),
        ];
        for (file, vars, expected) in cases {
            assert_eq!(load(file, vars).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn kafka_settings_are_only_checked_for_the_kafka_bus() {
        let config = load("[bus.kafka]\nbrokers = \"nowhere\"", &[]).unwrap();
        assert_eq!(config.bus.kind, BusKind::Embedded);
    }

    #[test]
    fn bad_override_paths_are_refused() {
        let error = load("", &[("VIGIL_BUS__PARTITIONS__X", "1")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "bus.partitions: invalid type: map, expected u32"
        );
        let error = load(
            "[bus]\npartitions = 3",
            &[("VIGIL_BUS__PARTITIONS__X", "1")],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable VIGIL_BUS__PARTITIONS__X: bus.partitions is a value, not a section"
        );
        let error = load("", &[("VIGIL_BUS____KIND", "kafka")]).unwrap_err();
        assert!(error.to_string().contains("empty key segment"), "{error}");
    }

    #[test]
    fn printed_configuration_loads_back_to_itself() {
        let config = load("[bus]\nkind = \"kafka\"\npartitions = 3", &[]).unwrap();
        let printed = config.to_toml();
        assert!(printed.contains("kind = \"kafka\""), "{printed}");
        assert_eq!(load(&printed, &[]).unwrap(), config);
    }

    const TENANTS: &str = r#"
        [collector]
        anonymous_tenant = "public"
        [[collector.tenants]]
        id = "acme"
        tokens = ["acme-token-0123456789"]
        [[collector.tenants]]
        id = "globex"
        tokens = ["globex-token-0123456789", "globex-token-rotated-01"]
    "#;

    #[test]
    fn tenants_and_tokens_load_and_never_show() {
        let config = load(TENANTS, &[]).unwrap();
        let collector = &config.collector;
        assert_eq!(
            collector.anonymous_tenant,
            Some(TenantId::parse("public").unwrap())
        );
        assert_eq!(collector.tenants.len(), 2);
        assert_eq!(
            collector.tenants[1].tokens[1].expose(),
            "globex-token-rotated-01"
        );
        let shown = format!("{config:?}\n{}", config.to_toml());
        assert!(!shown.contains("token-0123456789"), "{shown}");
        assert!(
            shown.contains("Secret(***)") && shown.contains("\"***\""),
            "{shown}"
        );
    }

    #[test]
    fn collector_settings_are_checked() {
        let cases = [
            (
                "[[collector.tenants]]\nid = \"Acme\"\ntokens = [\"0123456789abcdef\"]",
                "collector.tenants[0].id: invalid tenant id \"Acme\": use 1 to 64 of a-z, 0-9, '_' \
                 and '-', starting with a letter or digit",
            ),
            (
                "[[collector.tenants]]\nid = \"acme\"\ntokens = []",
                "collector.tenants[0].tokens: tenant acme needs at least one token",
            ),
            (
                "[[collector.tenants]]\nid = \"acme\"\ntokens = [\"short\"]",
                "collector.tenants[0].tokens: tokens of tenant acme must be at least 16 characters",
            ),
            (
                "[[collector.tenants]]\nid = \"a\"\ntokens = [\"0123456789abcdef\"]\n\
                 [[collector.tenants]]\nid = \"b\"\ntokens = [\"0123456789abcdef\"]",
                "collector.tenants[1].tokens: a token may stand for one tenant only; this one is \
                 listed twice",
            ),
            (
                "[collector]\nmax_message_bytes = 10",
                "collector.max_message_bytes: must be between 1024 and 268435456 (256 MiB), got 10",
            ),
            (
                "[collector]\ngrpc_listen = \"localhost\"",
                "collector.grpc_listen: invalid socket address syntax",
            ),
            (
                "[bus]\ntopic_prefix = \"a/b\"",
                "bus.topic_prefix: may hold only ASCII letters, digits, '.', '_' and '-' (at most \
                 200), got \"a/b\"",
            ),
        ];
        for (file, expected) in cases {
            assert_eq!(load(file, &[]).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn topics_carry_the_prefix() {
        let config = load("[bus]\ntopic_prefix = \"test_7.\"", &[]).unwrap();
        let topics = config.bus.topics();
        assert_eq!(
            topics.all(),
            [
                "test_7.otlp.metrics",
                "test_7.otlp.traces",
                "test_7.otlp.logs",
                "test_7.client",
                "test_7.rollups",
                "test_7.deadletter"
            ]
        );
    }

    #[test]
    fn load_reads_the_file_and_reports_a_missing_one() {
        let path = std::env::temp_dir().join(format!("vigil-config-{}.toml", std::process::id()));
        std::fs::write(&path, "[bus]\npartitions = 5\n").unwrap();
        assert_eq!(Config::load(Some(&path)).unwrap().bus.partitions, 5);
        std::fs::remove_file(&path).unwrap();
        let error = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read configuration file"),
            "{error}"
        );
    }
}
