//! The prober's own metrics, `vigil_synthetic_*`, served on `GET /metrics`
//! in the OpenMetrics text format, with the same library as the other
//! components.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vigil_domain::distribution::Distribution;
use vigil_domain::metrics_endpoint;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    probe: String,
    location: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    probe: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    steps: Family<StepLabels, Counter>,
    missed_runs: Family<ProbeLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    /// Probe and location pairs on a schedule.
    pub scheduled: Gauge,
    pub exported_spans: Counter,
    /// Spans the collector refused, or that could not be sent.
    pub dropped_spans: Counter,
    lateness_seconds: Histogram,
    /// The same lateness, in milliseconds, for `vigil bench synthetic`'s
    /// quantiles (≤ 1% error).
    lateness_ms: Mutex<Distribution>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vigil_synthetic");
        let runs = Family::default();
        registry.register(
            "runs",
            "Probe runs by probe, location and outcome (ok, failed)",
            runs.clone(),
        );
        let steps = Family::default();
        registry.register(
            "steps",
            "Steps run (ok, failed) or skipped after a failure",
            steps.clone(),
        );
        let missed_runs = Family::default();
        registry.register(
            "missed_runs",
            "Scheduled runs not started because the probe's previous run at that location was still going",
            missed_runs.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "reloads",
            "Scenario reloads (ok, failed: the previous probes kept running)",
            reloads.clone(),
        );
        let scheduled = Gauge::default();
        registry.register(
            "scheduled",
            "Probe and location pairs on a schedule",
            scheduled.clone(),
        );
        let exported_spans = Counter::default();
        registry.register(
            "exported_spans",
            "Spans the collector took",
            exported_spans.clone(),
        );
        let dropped_spans = Counter::default();
        registry.register(
            "dropped_spans",
            "Spans refused by the collector or not sent (queue full, collector unreachable)",
            dropped_spans.clone(),
        );
        let lateness_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "schedule_lateness_seconds",
            "How long after its scheduled time plus its jitter a run started, waiting for a concurrency slot included",
            lateness_seconds.clone(),
        );
        Metrics {
            registry,
            runs,
            steps,
            missed_runs,
            reloads,
            scheduled,
            exported_spans,
            dropped_spans,
            lateness_seconds,
            lateness_ms: Mutex::new(Distribution::new()),
        }
    }

    pub fn run(&self, probe: &str, location: &str, ok: bool) {
        let labels = RunLabels {
            probe: probe.to_owned(),
            location: location.to_owned(),
            outcome: if ok { "ok" } else { "failed" },
        };
        self.runs.get_or_create(&labels).inc();
    }

    pub fn steps(&self, ok: usize, failed: usize, skipped: usize) {
        for (outcome, n) in [("ok", ok), ("failed", failed), ("skipped", skipped)] {
            if n > 0 {
                self.steps
                    .get_or_create(&StepLabels { outcome })
                    .inc_by(n as u64);
            }
        }
    }

    pub fn missed(&self, probe: &str, n: u64) {
        let labels = ProbeLabels {
            probe: probe.to_owned(),
        };
        self.missed_runs.get_or_create(&labels).inc_by(n);
    }

    pub fn reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ReloadLabels { outcome }).inc();
    }

    pub fn lateness(&self, late: Duration) {
        self.lateness_seconds.observe(late.as_secs_f64());
        let mut lateness = self
            .lateness_ms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A duration's milliseconds are always finite.
        let _ = lateness.record(late.as_secs_f64() * 1e3);
    }

    /// Schedule lateness so far, in milliseconds; forgotten once read.
    pub fn take_lateness_ms(&self) -> Distribution {
        std::mem::take(
            &mut *self
                .lateness_ms
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Steps that ran so far (passed or failed).
    pub fn steps_run(&self) -> u64 {
        self.steps_with("ok") + self.steps_failed()
    }

    pub fn steps_failed(&self) -> u64 {
        self.steps_with("failed")
    }

    fn steps_with(&self, outcome: &'static str) -> u64 {
        self.steps.get_or_create(&StepLabels { outcome }).get()
    }

    pub fn render(&self) -> String {
        metrics_endpoint::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
