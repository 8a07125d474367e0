//! The aggregator's own metrics, `vigil_aggregator_*`, served on
//! `GET /metrics` (see `server.rs`) in the OpenMetrics text format, with the
//! same library as the collector's.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vigil_domain::metrics_endpoint;

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
        Metrics {
            registry,
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
