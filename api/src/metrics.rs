//! The API's own metrics, served on `GET /metrics` in the OpenMetrics text
//! format: requests by path and status, and how long they took.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vigil_domain::metrics_endpoint;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    path: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: String,
}

/// Where a merged window came from: `store` or `cache`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub from: String,
}

/// Merged windows answered, by where they came from.
pub type Windows = Family<SourceLabels, Counter>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<PathLabels, Histogram>,
    windows: Windows,
    /// Rendering borrows the registry; one scrape at a time is plenty.
    render_lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        // 1 ms to ~4 min.
        let duration = Family::<PathLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 4.0, 10))
        });
        let mut registry = Registry::with_prefix("vigil_api");
        registry.register(
            "requests",
            "Requests answered, by path (as routed) and HTTP status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to answer, by path",
            duration.clone(),
        );
        let windows = Windows::default();
        registry.register(
            "merged_windows",
            "Merged windows of rollups answered, read from the store or kept in the cache (api.cache_bytes)",
            windows.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            windows,
            render_lock: Mutex::new(()),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn answered(&self, path: &str, status: u16, took: Duration) {
        let path = path.to_owned();
        self.requests
            .get_or_create(&RequestLabels {
                path: path.clone(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&PathLabels { path })
            .observe(took.as_secs_f64());
    }

    /// The count of merged windows answered, by source.
    pub fn windows(&self) -> Windows {
        self.windows.clone()
    }

    /// Every metric in the text exposition format.
    pub fn render(&self) -> String {
        let _one_at_a_time = self.render_lock.lock().unwrap_or_else(|p| p.into_inner());
        metrics_endpoint::render(&self.registry)
    }
}
