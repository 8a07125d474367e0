//! `[aggregator]`: consumer group, lateness, flushes, span dimensions.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, check_range};

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
    /// A device's launch crashes in a row (as its SDK counts them) that make
    /// a crash loop, counted in `client.crash_loops`: the point where an app
    /// falls back to a safe mode.
    #[serde(default = "default_crash_loop_launches")]
    pub crash_loop_launches: u32,
    /// Whether every flush's rows are also published on the rollups topic,
    /// which the alerter reads.
    #[serde(default = "default_true")]
    pub publish_rollups: bool,
    /// Where `GET /metrics` (Prometheus text) and `GET /healthz` are served;
    /// port 0 picks any free port.
    #[serde(default = "default_aggregator_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// Series a tenant may have active at once, every kind counted (metric,
    /// span, client and probe series); points of a new series past it are
    /// refused and counted. Per aggregator process.
    #[serde(default = "default_max_active_series_per_tenant")]
    pub max_active_series_per_tenant: usize,
    /// A series unseen for this long (wall clock) stops being active.
    #[serde(default = "default_series_idle_s")]
    pub series_idle_s: u64,
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
            crash_loop_launches: default_crash_loop_launches(),
            publish_rollups: true,
            metrics_listen: default_aggregator_metrics_listen(),
            max_active_series_per_tenant: default_max_active_series_per_tenant(),
            series_idle_s: default_series_idle_s(),
        }
    }
}

fn default_max_active_series_per_tenant() -> usize {
    100_000
}

fn default_series_idle_s() -> u64 {
    3_600
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

fn default_crash_loop_launches() -> u32 {
    3
}

fn default_span_dimensions() -> Vec<String> {
    vec!["http.route".to_owned(), "rpc.method".to_owned()]
}

fn default_aggregator_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9465))
}

impl AggregatorConfig {
    /// Checks what types alone cannot.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let aggregator = self;
        if aggregator.group.is_empty() {
            return Err(ConfigError::invalid(
                "aggregator.group",
                "must not be empty",
            ));
        }
        check_range(
            "aggregator.allowed_lateness_s",
            aggregator.allowed_lateness_s,
            ..=3600,
            " (one hour)",
        )?;
        check_range(
            "aggregator.flush_interval_ms",
            aggregator.flush_interval_ms,
            10..=60_000,
            "",
        )?;
        check_range(
            "aggregator.max_flush_rows",
            aggregator.max_flush_rows,
            1..=1_000_000,
            " (one ClickHouse insert block)",
        )?;
        check_range(
            "aggregator.crash_loop_launches",
            aggregator.crash_loop_launches,
            2..=100,
            "",
        )?;
        check_range(
            "aggregator.cumulative_max_staleness_s",
            aggregator.cumulative_max_staleness_s,
            60..=86_400,
            "",
        )?;
        check_range(
            "aggregator.max_active_series_per_tenant",
            aggregator.max_active_series_per_tenant,
            1..,
            "",
        )?;
        check_range(
            "aggregator.series_idle_s",
            aggregator.series_idle_s,
            60..=86_400,
            "",
        )?;
        Ok(())
    }
}

fn default_true() -> bool {
    true
}
