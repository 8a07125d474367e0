//! The aggregator's own metrics, `vigil_aggregator_*`, served on
//! `GET /metrics` (see `server.rs`) in the OpenMetrics text format, with the
//! same library as the collector's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vigil_domain::metrics_endpoint;
use vigil_domain::tenant::TenantId;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeriesLabels {
    tenant: String,
    kind: &'static str,
}

/// The self-metrics, shared by every pipeline of one aggregator.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Bus messages taken.
    pub messages: Counter,
    /// Spans, points and events counted into windows.
    pub observations: Counter,
    /// Points refused: not a number, broken histograms.
    pub refused_points: Counter,
    /// Messages that could not be decoded.
    pub undecodable_messages: Counter,
    /// Undecodable messages sent to the dead-letter topic.
    pub dead_letters: Counter,
    /// Points stored as corrections because their window had closed.
    pub late_points: Counter,
    pub flushes: Counter,
    /// Flush attempts the store refused.
    pub failed_flushes: Counter,
    pub rows_written: Counter,
    pub spans_written: Counter,
    /// Log records and crashes kept raw.
    pub events_written: Counter,
    /// Rollup batches published for the alerter.
    pub published_batches: Counter,
    /// Rollup batches or dead letters the bus did not take in time.
    pub failed_publishes: Counter,
    /// Time to write a flush to the store, retries included.
    pub flush_seconds: Histogram,
    /// Series active per tenant (see `active.rs`).
    active_series: Family<TenantLabels, Gauge>,
    /// Points of new series refused over their tenant's limit.
    series_refused: Family<SeriesLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vigil_aggregator");
        let mut counter = |name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let messages = counter("messages", "Bus messages taken");
        let observations = counter(
            "observations",
            "Spans, points and events counted into windows",
        );
        let refused_points = counter(
            "refused_points",
            "Points refused: not a number, or broken histograms",
        );
        let undecodable_messages = counter(
            "undecodable_messages",
            "Bus messages that could not be decoded",
        );
        let dead_letters = counter(
            "dead_letters",
            "Undecodable messages sent to the dead-letter topic",
        );
        let late_points = counter(
            "late_points",
            "Points that came after their window closed, stored as corrections",
        );
        let flushes = counter("flushes", "Flushes written to the store");
        let failed_flushes = counter("failed_flushes", "Flush attempts the store refused");
        let rows_written = counter("rows_written", "Rollup rows written");
        let spans_written = counter("spans_written", "Spans kept for lookup");
        let events_written = counter("events_written", "Log records and crashes kept for lookup");
        let published_batches = counter(
            "published_batches",
            "Rollup batches published for the alerter",
        );
        let failed_publishes = counter(
            "failed_publishes",
            "Rollup batches or dead letters the bus did not take in time",
        );
        // 1 ms to ~16 s.
        let flush_seconds = Histogram::new(exponential_buckets(0.001, 4.0, 8));
        registry.register(
            "flush_duration_seconds",
            "Time to write a flush to the store, retries included",
            flush_seconds.clone(),
        );
        let active_series = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "active_series",
            "Series seen per tenant within the idle time, every kind counted",
            active_series.clone(),
        );
        let series_refused = Family::<SeriesLabels, Counter>::default();
        registry.register(
            "series_refused",
            "Points of new series refused because their tenant had its limit of active series",
            series_refused.clone(),
        );
        Metrics {
            registry,
            active_series,
            series_refused,
            messages,
            observations,
            refused_points,
            undecodable_messages,
            dead_letters,
            late_points,
            flushes,
            failed_flushes,
            rows_written,
            spans_written,
            events_written,
            published_batches,
            failed_publishes,
            flush_seconds,
        }
    }

    /// Records that `tenant` has `active` active series.
    pub fn set_active_series(&self, tenant: &TenantId, active: usize) {
        self.active_series
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .set(i64::try_from(active).unwrap_or(i64::MAX));
    }

    /// Counts a point of a new `kind` series of `tenant` refused.
    pub fn series_refused(&self, tenant: &TenantId, kind: &'static str) {
        self.series_refused
            .get_or_create(&SeriesLabels {
                tenant: tenant.to_string(),
                kind,
            })
            .inc();
    }

    /// Every metric in the OpenMetrics text format.
    pub fn render(&self) -> String {
        metrics_endpoint::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
