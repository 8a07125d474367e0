//! The alerter's own metrics, `vigil_alerter_*`, served on `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vigil_domain::metrics_endpoint;

use crate::alerts::State;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct To {
    to: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// 10 s rows taken from the rollups topic.
    pub rows: Counter,
    /// Rollup batches that could not be read.
    pub unreadable: Counter,
    pub rules: Gauge,
    /// (Rule, group) pairs tracked.
    pub groups: Gauge,
    pub firing: Gauge,
    pub store_failures: Counter,
    pub evaluation_seconds: Histogram,
    reloads: Family<Outcome, Counter>,
    transitions: Family<To, Counter>,
    notifications: Family<Outcome, Counter>,
    /// Notifications not yet accepted by their receiver.
    pub outbox: Gauge,
    /// 1 while this alerter holds the lease (judges and notifies), 0 on standby.
    pub leader: Gauge,
    actions: Family<Outcome, Counter>,
    playbook_runs: Family<Outcome, Counter>,
    /// Playbook runs under way.
    pub runs: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vigil_alerter");
        let metrics = Metrics {
            rows: Counter::default(),
            unreadable: Counter::default(),
            rules: Gauge::default(),
            groups: Gauge::default(),
            firing: Gauge::default(),
            store_failures: Counter::default(),
            evaluation_seconds: Histogram::new(exponential_buckets(0.000_1, 4.0, 10)),
            reloads: Family::default(),
            transitions: Family::default(),
            notifications: Family::default(),
            outbox: Gauge::default(),
            leader: Gauge::default(),
            actions: Family::default(),
            playbook_runs: Family::default(),
            runs: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "rows",
            "10 s rollup rows taken from the bus",
            metrics.rows.clone(),
        );
        registry.register(
            "unreadable_batches",
            "Rollup batches that could not be read",
            metrics.unreadable.clone(),
        );
        registry.register("rules", "Rules loaded", metrics.rules.clone());
        registry.register("groups", "Rule groups tracked", metrics.groups.clone());
        registry.register("firing", "Alerts firing", metrics.firing.clone());
        registry.register(
            "store_failures",
            "Store reads and writes that failed",
            metrics.store_failures.clone(),
        );
        registry.register(
            "evaluation_seconds",
            "Time to evaluate every rule at the boundaries of one tick",
            metrics.evaluation_seconds.clone(),
        );
        registry.register(
            "reloads",
            "Rule reloads by outcome",
            metrics.reloads.clone(),
        );
        registry.register(
            "transitions",
            "Alert transitions by new state",
            metrics.transitions.clone(),
        );
        registry.register(
            "notifications",
            "Notifications by outcome",
            metrics.notifications.clone(),
        );
        registry.register(
            "outbox",
            "Notifications waiting for their receiver to accept them",
            metrics.outbox.clone(),
        );
        registry.register(
            "leader",
            "1 while this alerter holds the lease and judges, 0 on standby",
            metrics.leader.clone(),
        );
        registry.register(
            "actions",
            "Remediation actions by outcome",
            metrics.actions.clone(),
        );
        registry.register(
            "playbook_runs",
            "Playbook runs started (running, dry_run), refused, and ended by outcome",
            metrics.playbook_runs.clone(),
        );
        registry.register("runs", "Playbook runs under way", metrics.runs.clone());
        Metrics {
            registry,
            ..metrics
        }
    }

    pub fn reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn transition(&self, to: Option<State>) {
        let to = to.map_or("inactive", State::as_str);
        self.transitions.get_or_create(&To { to }).inc();
    }

    /// One round of attempts of a notification: `sent`, `failed` (it
    /// stays in the outbox) or `expired` (dropped after its maximum age).
    pub fn notification(&self, outcome: &'static str) {
        self.notifications.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn action(&self, outcome: &str) {
        let outcome = match outcome {
            "sent" => "sent",
            "dry_run" => "dry_run",
            "skipped" => "skipped",
            _ => "failed",
        };
        self.actions.get_or_create(&Outcome { outcome }).inc();
    }

    /// A playbook run started (`running`, `dry_run`), refused, or ended
    /// (`recovered`, `failed`, `aborted`).
    pub fn run(&self, outcome: &'static str) {
        self.playbook_runs.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn render(&self) -> String {
        metrics_endpoint::render(&self.registry)
    }
}
