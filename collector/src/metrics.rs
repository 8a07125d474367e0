//! The collector's own metrics, served on `GET /metrics` of the HTTP port in
//! the Prometheus (OpenMetrics) text format.

use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vigil_bus::BusError;
use vigil_domain::metrics_endpoint;
use vigil_domain::tenant::TenantId;

use crate::validate::Rejections;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: &'static str,
    signal: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    protocol: &'static str,
    signal: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ItemLabels {
    signal: &'static str,
    tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    signal: &'static str,
    tenant: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BusErrorLabels {
    kind: &'static str,
}

pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabels, Counter>,
    request_bytes: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
    in_flight: Gauge,
    received: Family<ItemLabels, Counter>,
    accepted: Family<ItemLabels, Counter>,
    rejected: Family<RejectionLabels, Counter>,
    bus_errors: Family<BusErrorLabels, Counter>,
    /// Rendering borrows the registry; one scrape at a time is plenty.
    render_lock: Mutex<()>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let requests = Family::<OutcomeLabels, Counter>::default();
        let request_bytes = Family::<RequestLabels, Counter>::default();
        // 100 µs to ~26 s.
        let duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 4.0, 10))
        });
        let in_flight = Gauge::default();
        let received = Family::<ItemLabels, Counter>::default();
        let accepted = Family::<ItemLabels, Counter>::default();
        let rejected = Family::<RejectionLabels, Counter>::default();
        let bus_errors = Family::<BusErrorLabels, Counter>::default();

        let mut registry = Registry::with_prefix("vigil_collector");
        registry.register(
            "requests",
            "Requests answered, by outcome code",
            requests.clone(),
        );
        registry.register(
            "request_bytes",
            "Bytes of request bodies",
            request_bytes.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to answer",
            duration.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests being handled",
            in_flight.clone(),
        );
        registry.register(
            "items_received",
            "Spans, data points and log records received",
            received.clone(),
        );
        registry.register(
            "items_accepted",
            "Items stored on the bus",
            accepted.clone(),
        );
        registry.register(
            "items_rejected",
            "Items rejected, by reason",
            rejected.clone(),
        );
        registry.register(
            "bus_errors",
            "Publishes the bus refused, by kind",
            bus_errors.clone(),
        );
        Metrics {
            registry,
            requests,
            request_bytes,
            duration,
            in_flight,
            received,
            accepted,
            rejected,
            bus_errors,
            render_lock: Mutex::new(()),
        }
    }

    /// Starts timing one request; `finish` the returned guard with its outcome.
    pub(crate) fn request(
        &self,
        protocol: &'static str,
        signal: &'static str,
        bytes: usize,
    ) -> RequestTimer<'_> {
        let labels = RequestLabels { protocol, signal };
        self.request_bytes
            .get_or_create(&labels)
            .inc_by(bytes as u64);
        self.in_flight.inc();
        RequestTimer {
            metrics: self,
            labels,
            start: Instant::now(),
        }
    }

    /// Counts the items of one request for `tenant`: `valid` passed the
    /// rules, and were `stored` (all of them) or not (the bus refused them).
    pub(crate) fn items(
        &self,
        signal: &'static str,
        tenant: &TenantId,
        valid: usize,
        stored: bool,
        rejections: &Rejections,
    ) {
        let labels = ItemLabels {
            signal,
            tenant: tenant.to_string(),
        };
        let valid = valid as u64;
        self.received
            .get_or_create(&labels)
            .inc_by(valid + rejections.count());
        if stored {
            self.accepted.get_or_create(&labels).inc_by(valid);
        }
        for (reason, count) in rejections.by_reason() {
            let labels = RejectionLabels {
                signal,
                tenant: tenant.to_string(),
                reason,
            };
            self.rejected.get_or_create(&labels).inc_by(count);
        }
    }

    pub(crate) fn bus_error(&self, error: &BusError) {
        let kind = match error {
            BusError::Full { .. } => "full",
            BusError::Unavailable { .. } => "unavailable",
            BusError::UnknownTopic { .. } => "unknown_topic",
            BusError::TooLarge { .. } => "too_large",
            BusError::Fatal { .. } => "fatal",
        };
        self.bus_errors
            .get_or_create(&BusErrorLabels { kind })
            .inc();
    }

    /// Every metric in the text exposition format.
    pub(crate) fn render(&self) -> String {
        let _one_at_a_time = self.render_lock.lock().unwrap_or_else(|p| p.into_inner());
        metrics_endpoint::render(&self.registry)
    }
}

/// Times one request and counts its outcome when finished.
pub(crate) struct RequestTimer<'a> {
    metrics: &'a Metrics,
    labels: RequestLabels,
    start: Instant,
}

impl RequestTimer<'_> {
    /// Records the request as answered with `code` (a gRPC code name).
    pub(crate) fn finish(self, code: &'static str) {
        let RequestLabels { protocol, signal } = self.labels.clone();
        self.metrics
            .requests
            .get_or_create(&OutcomeLabels {
                protocol,
                signal,
                code,
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}
