//! `[collector]`: listeners, tenants and their tokens, limits.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use vigil_domain::tenant::TenantId;

use crate::{ConfigError, Secret, ServerTlsConfig, check_range};

/// The collector: where it listens, how much it takes, and who may send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// OTLP/gRPC (and `vigil.client.v1`) address; port 0 picks a free port.
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP address (also client telemetry and remote-write).
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// Where the collector's own `GET /metrics` (tenants and their volumes)
    /// and `GET /healthz` are served: apart from the public ingest ports.
    #[serde(default = "default_collector_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// Both listeners serve TLS with this certificate when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
    /// Largest request, after decompression.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Memory that decoding the requests in flight may take at once, as
    /// estimated before decoding; a request that would not fit is refused
    /// (see `collector/src/budget.rs`).
    #[serde(default = "default_max_decoded_bytes_in_flight")]
    pub max_decoded_bytes_in_flight: usize,
    /// gRPC requests one connection may have in flight at once (HTTP/2
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`); OTLP/HTTP takes one request at a
    /// time per connection.
    #[serde(default = "default_max_streams_per_connection")]
    pub max_streams_per_connection: u32,
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
            metrics_listen: default_collector_metrics_listen(),
            tls: None,
            max_message_bytes: default_max_message_bytes(),
            max_decoded_bytes_in_flight: default_max_decoded_bytes_in_flight(),
            max_streams_per_connection: default_max_streams_per_connection(),
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
    /// Bytes of a span, metric or event name, and of an attribute key.
    #[serde(default = "default_max_name_bytes")]
    pub max_name_bytes: usize,
    /// Events on one span, and links on one span (OpenTelemetry SDKs
    /// default to 128 of each).
    #[serde(default = "default_max_span_events")]
    pub max_span_events: usize,
    #[serde(default = "default_max_span_events")]
    pub max_span_links: usize,
    /// Bytes of a log record's body (the longest string in it).
    #[serde(default = "default_max_log_body_bytes")]
    pub max_log_body_bytes: usize,
    /// Values in one attribute set (an item's, a resource's or a scope's)
    /// or one log body, arrays and key-value lists counted element by
    /// element at any depth.
    #[serde(default = "default_max_value_elements")]
    pub max_value_elements: usize,
    /// Items (spans, data points, log records) a tenant may send per second,
    /// on average; a request over it is refused whole with 429 /
    /// RESOURCE_EXHAUSTED and the time to retry after.
    #[serde(default = "default_tenant_items_per_second")]
    pub tenant_items_per_second: u64,
    /// Items a tenant may send at once above its rate.
    #[serde(default = "default_tenant_burst_items")]
    pub tenant_burst_items: u64,
    /// The same for each token on its own, so that one token (shipped in an
    /// app, say) cannot take its whole tenant's rate.
    #[serde(default = "default_tenant_items_per_second")]
    pub token_items_per_second: u64,
    #[serde(default = "default_tenant_burst_items")]
    pub token_burst_items: u64,
    /// New series one metric may gain per minute (per tenant): a series is
    /// the resource, the metric and the point's attributes. Known series
    /// always pass; one unseen for `series_idle_s` is new again.
    #[serde(default = "default_max_new_series_per_metric_per_minute")]
    pub max_new_series_per_metric_per_minute: u32,
    /// Metric series a tenant may have active at once; a point of a new
    /// series past it is rejected (`series_limit`). Bounds the collector's
    /// memory whatever names and labels are sent.
    #[serde(default = "default_max_active_series_per_tenant")]
    pub max_active_series_per_tenant: usize,
    /// A series unseen for this long stops being active, and counts as new
    /// when it comes back.
    #[serde(default = "default_series_idle_s")]
    pub series_idle_s: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_attributes: default_max_attributes(),
            max_attribute_value_bytes: default_max_attribute_value_bytes(),
            max_name_bytes: default_max_name_bytes(),
            max_span_events: default_max_span_events(),
            max_span_links: default_max_span_events(),
            max_log_body_bytes: default_max_log_body_bytes(),
            max_value_elements: default_max_value_elements(),
            tenant_items_per_second: default_tenant_items_per_second(),
            tenant_burst_items: default_tenant_burst_items(),
            token_items_per_second: default_tenant_items_per_second(),
            token_burst_items: default_tenant_burst_items(),
            max_new_series_per_metric_per_minute: default_max_new_series_per_metric_per_minute(),
            max_active_series_per_tenant: default_max_active_series_per_tenant(),
            series_idle_s: default_series_idle_s(),
        }
    }
}

fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4317))
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4318))
}

fn default_max_active_series_per_tenant() -> usize {
    100_000
}

fn default_series_idle_s() -> u64 {
    3_600
}

fn default_max_value_elements() -> usize {
    1024
}

fn default_max_streams_per_connection() -> u32 {
    100
}

fn default_collector_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9464))
}

fn default_max_decoded_bytes_in_flight() -> usize {
    512 * 1024 * 1024
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

fn default_max_name_bytes() -> usize {
    1_024
}

fn default_max_span_events() -> usize {
    128
}

fn default_max_log_body_bytes() -> usize {
    65_536
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

impl CollectorConfig {
    /// Checks what types alone cannot.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let collector = self;
        if let Some(tls) = &collector.tls {
            tls.validate("collector.tls")?;
        }
        check_range(
            "collector.max_message_bytes",
            collector.max_message_bytes,
            1024..=256 * 1024 * 1024,
            " (256 MiB)",
        )?;
        check_range(
            "collector.max_decoded_bytes_in_flight",
            collector.max_decoded_bytes_in_flight,
            16 * 1024 * 1024..,
            " (16 MiB)",
        )?;
        check_range(
            "collector.max_streams_per_connection",
            collector.max_streams_per_connection,
            1..=10_000,
            "",
        )?;
        check_range("collector.max_age_days", collector.max_age_days, 1.., "")?;
        let limits = &collector.limits;
        check_range(
            "collector.limits.tenant_items_per_second",
            limits.tenant_items_per_second,
            1..,
            "",
        )?;
        check_range(
            "collector.limits.tenant_burst_items",
            limits.tenant_burst_items,
            1..,
            "",
        )?;
        check_range(
            "collector.limits.token_items_per_second",
            limits.token_items_per_second,
            1..,
            "",
        )?;
        check_range(
            "collector.limits.token_burst_items",
            limits.token_burst_items,
            1..,
            "",
        )?;
        for (key, value) in [
            ("max_name_bytes", limits.max_name_bytes),
            ("max_span_events", limits.max_span_events),
            ("max_span_links", limits.max_span_links),
            ("max_log_body_bytes", limits.max_log_body_bytes),
            ("max_value_elements", limits.max_value_elements),
        ] {
            check_range(&format!("collector.limits.{key}"), value, 1.., "")?;
        }
        check_range(
            "collector.limits.max_active_series_per_tenant",
            limits.max_active_series_per_tenant,
            1..,
            "",
        )?;
        check_range(
            "collector.limits.series_idle_s",
            limits.series_idle_s,
            60..=86_400,
            "",
        )?;
        check_range(
            "collector.limits.max_new_series_per_metric_per_minute",
            limits.max_new_series_per_metric_per_minute,
            1..,
            "",
        )?;
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
}
