//! The names of Vigil's bus topics and the key of every ingest message: the
//! contract between the collectors that publish and every consumer.

use bytes::Bytes;

use crate::tenant::TenantId;

/// The names of Vigil's topics, all under one prefix.
///
/// Every ingest message's key is `{tenant}/{service}` (`{tenant}/{app_id}`
/// for client telemetry): tenant ids cannot hold `/`, so the split is
/// unambiguous, and one service's data stays in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// OTLP `ExportMetricsServiceRequest`s, one resource each.
    pub metrics: String,
    /// OTLP `ExportTraceServiceRequest`s, one resource each.
    pub traces: String,
    /// OTLP `ExportLogsServiceRequest`s, one resource each.
    pub logs: String,
    /// `vigil.client.v1.ExportClientRequest`s, one batch (one app) each.
    pub client: String,
    /// `vigil.bus.v1.RollupBatch`es: what the aggregators wrote, keyed
    /// `{source topic}/{partition}`, for the alerter.
    pub rollups: String,
    /// `vigil.bus.v1.DeadLetter`s: messages an aggregator could not read.
    pub dead_letter: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        Topics {
            metrics: format!("{prefix}otlp.metrics"),
            traces: format!("{prefix}otlp.traces"),
            logs: format!("{prefix}otlp.logs"),
            client: format!("{prefix}client"),
            rollups: format!("{prefix}rollups"),
            dead_letter: format!("{prefix}deadletter"),
        }
    }

    /// Whether `prefix` makes legal Kafka topic names: ASCII letters, digits,
    /// `.`, `_`, `-`, short enough to leave room for the suffixes.
    pub fn is_valid_prefix(prefix: &str) -> bool {
        prefix.len() <= 200
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    }

    /// Every topic, for creating them at start-up.
    pub fn all(&self) -> [&str; 6] {
        [
            &self.metrics,
            &self.traces,
            &self.logs,
            &self.client,
            &self.rollups,
            &self.dead_letter,
        ]
    }
}

/// The bus key of a message: `{tenant}/{service}`.
pub fn message_key(tenant: &TenantId, service: &str) -> Bytes {
    Bytes::from(format!("{tenant}/{service}"))
}
