//! What Vigil stores: series and their rollups.
//!
//! A series is one thing measured over time: a tenant's span operation, metric,
//! client signal or probe step, with its dimensions. A rollup is everything
//! known of a series over one window; rollups are additive, so late data is
//! another rollup of the same window.

use std::fmt;
use std::sync::Arc;

use crate::distinct::Distinct;
use crate::distribution::{Distribution, DistributionError};
use crate::tenant::TenantId;

/// The span attribute a probe step records when its target served TLS: when
/// the target's certificate expires, RFC 3339 (OpenTelemetry's semantic
/// convention).
pub const TLS_NOT_AFTER: &str = "tls.server.not_after";

/// The metric series the aggregator makes of [`TLS_NOT_AFTER`]: days the
/// certificate had left when the step ran, per probe, step and location.
pub const CERTIFICATE_DAYS_LEFT: &str = "vigil.probe.certificate.days_left";

/// What a series measures.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A span operation: latency in ms, errors are spans with status ERROR.
    Span,
    /// An OTLP or Prometheus metric.
    Metric,
    /// A mobile or web client signal.
    Client,
    /// A synthetic probe step: latency in ms, errors are failed steps.
    Probe,
    /// Every span of one service merged per [`TOTAL_LABELS`]: written by
    /// the aggregator beside the span series (see [`service_total`]), so
    /// that service-wide answers read one series per span kind and
    /// deployment instead of every operation's.
    Service,
    /// Every span of a tenant merged per [`TOTAL_LABELS`] (see
    /// [`tenant_total`]): what answers reads of every service, grouped by
    /// unit, version or cohort, from a few series.
    Tenant,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Span,
        Kind::Metric,
        Kind::Client,
        Kind::Probe,
        Kind::Service,
        Kind::Tenant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Span => "span",
            Kind::Metric => "metric",
            Kind::Client => "client",
            Kind::Probe => "probe",
            Kind::Service => "service",
            Kind::Tenant => "tenant",
        }
    }

    /// Whether its series are totals of span series the aggregator writes
    /// ([`Kind::Service`], [`Kind::Tenant`]), not series sent.
    pub fn is_total(self) -> bool {
        matches!(self, Kind::Service | Kind::Tenant)
    }

    /// The kind named `name`, as [`Kind::as_str`] spells it.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of a series. Labels are kept sorted by key, one value per key,
/// so equal series have equal keys and the same [`SeriesKey::id`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub tenant: TenantId,
    pub kind: Kind,
    pub service: String,
    pub name: String,
    labels: Vec<(String, String)>,
}

impl SeriesKey {
    /// A series; a label given twice keeps its last value.
    pub fn new(
        tenant: TenantId,
        kind: Kind,
        service: impl Into<String>,
        name: impl Into<String>,
        mut labels: Vec<(String, String)>,
    ) -> Self {
        // Stable sort, then keep the last of equal keys.
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(String, String)> = Vec::with_capacity(labels.len());
        for (key, value) in labels {
            match unique.last_mut() {
                Some(last) if last.0 == key => last.1 = value,
                _ => unique.push((key, value)),
            }
        }
        SeriesKey {
            tenant,
            kind,
            service: service.into(),
            name: name.into(),
            labels: unique,
        }
    }

    /// The labels, sorted by key.
    pub fn labels(&self) -> &[(String, String)] {
        &self.labels
    }

    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.labels[i].1.as_str())
    }

    /// A 64-bit id, stable across processes and versions (FNV-1a over every
    /// field, each followed by a separator byte no UTF-8 text holds). Never 0,
    /// which the store keeps for its own bookkeeping rows.
    pub fn id(&self) -> u64 {
        let mut hash = Fnv::default();
        let mut feed = |text: &str| {
            hash.write(text.as_bytes());
            hash.write(&[0xff]);
        };
        feed(self.tenant.as_str());
        feed(self.kind.as_str());
        feed(&self.service);
        feed(&self.name);
        for (key, value) in &self.labels {
            feed(key);
            feed(value);
        }
        hash.finish().max(1)
    }
}

/// The label of a span series naming its span kind.
pub const SPAN_KIND: &str = "span.kind";

/// Resource attributes every series keeps as dimensions.
pub const RESOURCE_DIMENSIONS: [&str; 5] = [
    "service.version",
    "vigil.unit",
    "vigil.cohort",
    "deployment.environment",
    "cloud.region",
];

/// The labels of a span series that its totals ([`Kind::Service`],
/// [`Kind::Tenant`]) keep: its span kind and where it ran. The operation's
/// name, status and span dimensions are merged away.
pub const TOTAL_LABELS: [&str; 6] = [
    SPAN_KIND,
    RESOURCE_DIMENSIONS[0],
    RESOURCE_DIMENSIONS[1],
    RESOURCE_DIMENSIONS[2],
    RESOURCE_DIMENSIONS[3],
    RESOURCE_DIMENSIONS[4],
];

/// The [`Kind::Service`] series that totals span series `span`: its
/// tenant and service, named after the service, labelled with its
/// [`TOTAL_LABELS`].
pub fn service_total(span: &SeriesKey) -> SeriesKey {
    total(span, Kind::Service, &span.service)
}

/// The [`Kind::Tenant`] series that totals span series `span` with every
/// other service's: its tenant, no service or name, labelled with its
/// [`TOTAL_LABELS`].
pub fn tenant_total(span: &SeriesKey) -> SeriesKey {
    total(span, Kind::Tenant, "")
}

fn total(span: &SeriesKey, kind: Kind, name: &str) -> SeriesKey {
    // `span.labels` is sorted and unique, and so stays its subset.
    let labels = span
        .labels
        .iter()
        .filter(|(key, _)| TOTAL_LABELS.contains(&key.as_str()))
        .cloned()
        .collect();
    SeriesKey {
        tenant: span.tenant.clone(),
        kind,
        service: name.to_owned(),
        name: name.to_owned(),
        labels,
    }
}

/// FNV-1a, 64 bits: a hash that stays the same across processes and
/// versions, for ids the store keeps.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// Everything known of one series over one window. Additive: two rollups of
/// the same window merge into the rollup of all their points.
#[derive(Debug, Clone, Default)]
pub struct Rollup {
    /// Count, sum, min, max and the distribution of the values.
    pub values: Distribution,
    /// Points that were errors (failed spans, failed requests, crashes…).
    pub errors: u64,
    /// The distinct users the points came from, where a point names one
    /// (client sessions, crashes): empty for every other series.
    pub users: Distinct,
}

impl Rollup {
    /// Adds one point.
    pub fn record(&mut self, value: f64, error: bool) -> Result<(), DistributionError> {
        self.values.record(value)?;
        self.errors += u64::from(error);
        Ok(())
    }

    /// Adds every point of `other`.
    pub fn merge(&mut self, other: &Rollup) {
        self.values.merge(&other.values);
        self.errors += other.errors;
        if !other.users.is_empty() {
            self.users.merge(&other.users);
        }
    }
}

/// Lower-case hex of an id (trace and span ids, bytes attributes), as ids
/// are stored, searched and put in `traceparent`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// How far an aggregator got in one bus partition, written with the rows it
/// covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Increases by one with every flush of the partition: the latest wins.
    pub seq: u64,
    pub partition: i32,
    /// Every message before this offset is in the store.
    pub next_offset: i64,
    /// Windows that ended (plus the allowed lateness) by this time, in unix
    /// seconds, had closed.
    pub watermark_s: u64,
}

/// The last point of a cumulative series as of the bus message at `offset`
/// (in `state`, encoded by the aggregator), written by the flush that took
/// that message, so that a partition resuming from its checkpoint goes on
/// from it instead of counting the series' whole value again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CumulativeState {
    pub partition: i32,
    pub series: u64,
    pub offset: i64,
    /// The point's time, unix nanoseconds.
    pub time_ns: u64,
    pub state: Vec<u8>,
}

/// One row to write: a rollup of a series over a window.
#[derive(Debug, Clone)]
pub struct RollupRow {
    pub series: Arc<SeriesKey>,
    pub partition: i32,
    pub width_s: u32,
    /// Window start, unix seconds.
    pub start_s: u64,
    pub rollup: Rollup,
    /// Data for a window that had already closed.
    pub correction: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lower_case_hex() {
        assert_eq!(hex(&[0x4b, 0xf9, 0x00, 0x0a, 0xff]), "4bf9000aff");
        assert_eq!(hex(&[]), "");
    }

    fn tenant() -> TenantId {
        TenantId::parse("acme").expect("valid tenant")
    }

    #[test]
    fn totals_keep_the_span_kind_and_where_it_ran() {
        let span = SeriesKey::new(
            tenant(),
            Kind::Span,
            "pay",
            "POST /pay",
            vec![
                ("status".into(), "error".into()),
                ("vigil.unit".into(), "u1".into()),
                ("http.route".into(), "/pay".into()),
                ("span.kind".into(), "server".into()),
                ("service.version".into(), "1.1.0".into()),
            ],
        );
        let kept = vec![
            ("service.version".to_owned(), "1.1.0".to_owned()),
            ("span.kind".to_owned(), "server".to_owned()),
            ("vigil.unit".to_owned(), "u1".to_owned()),
        ];
        assert_eq!(
            service_total(&span),
            SeriesKey::new(tenant(), Kind::Service, "pay", "pay", kept.clone())
        );
        assert_eq!(
            tenant_total(&span),
            SeriesKey::new(tenant(), Kind::Tenant, "", "", kept)
        );
    }

    #[test]
    fn label_order_does_not_change_a_series() {
        let a = SeriesKey::new(
            tenant(),
            Kind::Span,
            "pay",
            "POST /pay",
            vec![("b".into(), "2".into()), ("a".into(), "1".into())],
        );
        let b = SeriesKey::new(
            tenant(),
            Kind::Span,
            "pay",
            "POST /pay",
            vec![("a".into(), "1".into()), ("b".into(), "2".into())],
        );
        assert_eq!(a, b);
        assert_eq!(a.id(), b.id());
        assert_eq!(a.label("b"), Some("2"));
        assert_eq!(a.label("c"), None);
    }

    #[test]
    fn ids_are_stable_and_tell_fields_apart() {
        let base = SeriesKey::new(tenant(), Kind::Metric, "pay", "up", vec![]);
        // Pinned: stored ids must not change between versions.
        assert_eq!(base.id(), 0x3f3a_5caa_6fae_f52c);
        let moved = SeriesKey::new(tenant(), Kind::Metric, "pa", "yup", vec![]);
        assert_ne!(base.id(), moved.id());
        let labelled = SeriesKey::new(
            tenant(),
            Kind::Metric,
            "pay",
            "up",
            vec![("k".into(), "v".into())],
        );
        assert_ne!(base.id(), labelled.id());
    }

    #[test]
    fn a_repeated_label_keeps_its_last_value() {
        let key = SeriesKey::new(
            tenant(),
            Kind::Metric,
            "pay",
            "up",
            vec![("k".into(), "1".into()), ("k".into(), "2".into())],
        );
        assert_eq!(key.labels(), &[("k".to_owned(), "2".to_owned())]);
    }
}
