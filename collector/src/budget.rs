//! Memory for decoding, bounded whatever is sent: before a request is
//! decoded its decoded size is estimated from its bytes, and the estimate is
//! taken from a budget shared by every request in flight
//! (`collector.max_decoded_bytes_in_flight`) until the request is answered.
//!
//! Protobuf costs little to send and much to decode: an empty span is 2
//! bytes on the wire and a few hundred in memory, so 16 MiB of them (a few
//! KB once gzipped) decode to gigabytes. The estimate walks the wire format
//! of the OTLP, remote-write and client-telemetry requests without allocating and counts every message it
//! holds (resources, spans, events, links, data points, attributes, values
//! at any depth) at the size of its Rust struct, plus the bytes themselves.
//! A request whose estimate exceeds the whole budget is refused for good
//! (RESOURCE_EXHAUSTED without retry: it would never fit); one that finds
//! the budget taken by others is refused with retry information.

use std::mem::size_of;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exponential_histogram_data_point::Buckets,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vigil_proto::client::v1::{ClientBatch, ClientContext, ClientEvent};
use vigil_proto::prometheus::{Label, MetricMetadata, Sample, TimeSeries};
use vigil_proto::wire::{Fields, Value};

use crate::error::IngestError;
use crate::native_histogram;

/// The budget's unit: permits are KiB.
const UNIT: usize = 1024;
/// Deeper nesting than this is not walked (prost refuses it anyway).
const MAX_DEPTH: usize = 64;

/// The bytes decoding may hold at once.
#[derive(Debug)]
pub(crate) struct Budget {
    permits: Arc<Semaphore>,
    total_bytes: usize,
}

/// What a request holds of the budget until it is dropped.
#[derive(Debug)]
pub(crate) struct Reserved {
    _permits: OwnedSemaphorePermit,
}

impl Budget {
    pub(crate) fn new(total_bytes: usize) -> Self {
        let units = (total_bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            permits: Arc::new(Semaphore::new(units)),
            total_bytes,
        }
    }

    /// Takes `bytes` of the budget, or says why not.
    pub(crate) fn reserve(&self, bytes: usize) -> Result<Reserved, IngestError> {
        if bytes > self.total_bytes {
            return Err(IngestError::TooLarge(format!(
                "the request would take about {} MiB once decoded, more than the {} MiB \
                 the collector decodes at once (collector.max_decoded_bytes_in_flight); \
                 send fewer items per request",
                bytes >> 20,
                self.total_bytes >> 20
            )));
        }
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        Arc::clone(&self.permits)
            .try_acquire_many_owned(units)
            .map(|permits| Reserved { _permits: permits })
            .map_err(|_| {
                IngestError::Exhausted(
                    "the collector is decoding as much as it may at once; retry shortly".to_owned(),
                )
            })
    }
}

/// The requests whose protobuf is walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    Traces,
    Metrics,
    Logs,
    /// Prometheus remote-write's `WriteRequest`.
    RemoteWrite,
    /// Vigil's `ExportClientRequest`.
    Client,
}

/// A message type of the OTLP requests: its decoded size and which of its
/// fields hold messages of which type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request(Root),
    ResourceSpans,
    ScopeSpans,
    Span,
    Event,
    Link,
    Status,
    ResourceMetrics,
    ScopeMetrics,
    Metric,
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
    NumberDataPoint,
    HistogramDataPoint,
    ExponentialHistogramDataPoint,
    Buckets,
    SummaryDataPoint,
    ValueAtQuantile,
    Exemplar,
    ResourceLogs,
    ScopeLogs,
    LogRecord,
    Resource,
    Scope,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    TimeSeries,
    Label,
    Sample,
    MetricMetadata,
    ClientBatch,
    ClientContext,
    /// Its body (a session, a crash, a stutter…) is a field of the struct,
    /// counted in its size.
    ClientEvent,
}

impl Kind {
    fn size(self) -> usize {
        match self {
            Kind::Request(_) => 0,
            Kind::ResourceSpans => size_of::<ResourceSpans>(),
            Kind::ScopeSpans => size_of::<ScopeSpans>(),
            Kind::Span => size_of::<Span>(),
            Kind::Event => size_of::<Event>(),
            Kind::Link => size_of::<Link>(),
            Kind::Status => size_of::<Status>(),
            Kind::ResourceMetrics => size_of::<ResourceMetrics>(),
            Kind::ScopeMetrics => size_of::<ScopeMetrics>(),
            Kind::Metric => size_of::<Metric>(),
            Kind::Gauge => size_of::<Gauge>(),
            Kind::Sum => size_of::<Sum>(),
            Kind::Histogram => size_of::<Histogram>(),
            Kind::ExponentialHistogram => size_of::<ExponentialHistogram>(),
            Kind::Summary => size_of::<Summary>(),
            Kind::NumberDataPoint => size_of::<NumberDataPoint>(),
            Kind::HistogramDataPoint => size_of::<HistogramDataPoint>(),
            Kind::ExponentialHistogramDataPoint => size_of::<ExponentialHistogramDataPoint>(),
            Kind::Buckets => size_of::<Buckets>(),
            Kind::SummaryDataPoint => size_of::<SummaryDataPoint>(),
            Kind::ValueAtQuantile => size_of::<ValueAtQuantile>(),
            Kind::Exemplar => size_of::<Exemplar>(),
            Kind::ResourceLogs => size_of::<ResourceLogs>(),
            Kind::ScopeLogs => size_of::<ScopeLogs>(),
            Kind::LogRecord => size_of::<LogRecord>(),
            Kind::Resource => size_of::<Resource>(),
            Kind::Scope => size_of::<InstrumentationScope>(),
            Kind::KeyValue => size_of::<KeyValue>(),
            Kind::AnyValue => size_of::<AnyValue>(),
            Kind::ArrayValue => size_of::<ArrayValue>(),
            Kind::KeyValueList => size_of::<KeyValueList>(),
            Kind::TimeSeries => size_of::<TimeSeries>(),
            Kind::Label => size_of::<Label>(),
            Kind::Sample => size_of::<Sample>(),
            Kind::MetricMetadata => size_of::<MetricMetadata>(),
            Kind::ClientBatch => size_of::<ClientBatch>(),
            Kind::ClientContext => size_of::<ClientContext>(),
            Kind::ClientEvent => size_of::<ClientEvent>(),
        }
    }

    /// The largest struct of them all: what an object of a JSON body is
    /// taken to cost.
    fn largest() -> usize {
        [
            Kind::Span,
            Kind::Metric,
            Kind::LogRecord,
            Kind::ExponentialHistogramDataPoint,
            Kind::HistogramDataPoint,
            Kind::ClientEvent,
        ]
        .into_iter()
        .map(Kind::size)
        .max()
        .unwrap_or(0)
    }

    /// The messages that hold none counted here: their fields need no walk.
    const LEAVES: [Kind; 8] = [
        Kind::Label,
        Kind::Sample,
        Kind::MetricMetadata,
        Kind::Status,
        Kind::ValueAtQuantile,
        Kind::Buckets,
        Kind::ClientContext,
        Kind::ClientEvent,
    ];

    /// The type of message field `field`, per the OTLP protos.
    fn child(self, field: u32) -> Option<Kind> {
        Some(match (self, field) {
            (Kind::Request(Root::Traces), 1) => Kind::ResourceSpans,
            (Kind::Request(Root::Metrics), 1) => Kind::ResourceMetrics,
            (Kind::Request(Root::Logs), 1) => Kind::ResourceLogs,
            (Kind::Request(Root::RemoteWrite), 1) => Kind::TimeSeries,
            (Kind::Request(Root::RemoteWrite), 3) => Kind::MetricMetadata,
            (Kind::Request(Root::Client), 1) => Kind::ClientBatch,
            (Kind::ClientBatch, 1) => Kind::ClientContext,
            (Kind::ClientBatch, 2) => Kind::ClientEvent,
            (Kind::TimeSeries, 1) => Kind::Label,
            (Kind::TimeSeries, 2) => Kind::Sample,
            (Kind::ResourceSpans | Kind::ResourceMetrics | Kind::ResourceLogs, 1) => Kind::Resource,
            (Kind::ResourceSpans, 2) => Kind::ScopeSpans,
            (Kind::ResourceMetrics, 2) => Kind::ScopeMetrics,
            (Kind::ResourceLogs, 2) => Kind::ScopeLogs,
            (Kind::ScopeSpans | Kind::ScopeMetrics | Kind::ScopeLogs, 1) => Kind::Scope,
            (Kind::ScopeSpans, 2) => Kind::Span,
            (Kind::ScopeMetrics, 2) => Kind::Metric,
            (Kind::ScopeLogs, 2) => Kind::LogRecord,
            (Kind::Span, 9) | (Kind::Event, 3) | (Kind::Link, 5) => Kind::KeyValue,
            (Kind::Span, 11) => Kind::Event,
            (Kind::Span, 13) => Kind::Link,
            (Kind::Span, 15) => Kind::Status,
            (Kind::Metric, 5) => Kind::Gauge,
            (Kind::Metric, 7) => Kind::Sum,
            (Kind::Metric, 9) => Kind::Histogram,
            (Kind::Metric, 10) => Kind::ExponentialHistogram,
            (Kind::Metric, 11) => Kind::Summary,
            (Kind::Metric, 12) => Kind::KeyValue,
            (Kind::Gauge | Kind::Sum, 1) => Kind::NumberDataPoint,
            (Kind::Histogram, 1) => Kind::HistogramDataPoint,
            (Kind::ExponentialHistogram, 1) => Kind::ExponentialHistogramDataPoint,
            (Kind::Summary, 1) => Kind::SummaryDataPoint,
            (Kind::NumberDataPoint | Kind::SummaryDataPoint | Kind::Exemplar, 7)
            | (Kind::HistogramDataPoint, 9)
            | (Kind::ExponentialHistogramDataPoint, 1) => Kind::KeyValue,
            (Kind::NumberDataPoint, 5)
            | (Kind::HistogramDataPoint, 8)
            | (Kind::ExponentialHistogramDataPoint, 11) => Kind::Exemplar,
            (Kind::ExponentialHistogramDataPoint, 8 | 9) => Kind::Buckets,
            (Kind::SummaryDataPoint, 6) => Kind::ValueAtQuantile,
            (Kind::LogRecord, 5) | (Kind::KeyValue, 2) | (Kind::ArrayValue, 1) => Kind::AnyValue,
            (Kind::LogRecord, 6)
            | (Kind::Resource | Kind::Scope, 1 | 3)
            | (Kind::KeyValueList, 1) => Kind::KeyValue,
            (Kind::AnyValue, 5) => Kind::ArrayValue,
            (Kind::AnyValue, 6) => Kind::KeyValueList,
            _ => return None,
        })
    }
}

/// Calls `visit` with the number and value of every field of the message in
/// `bytes`; `None` when the bytes are not protobuf (decoding will say why)
/// or `visit` says so.
fn fields(bytes: &[u8], mut visit: impl FnMut(u32, Value<'_>) -> Option<()>) -> Option<()> {
    for field in Fields::new(bytes) {
        let field = field.ok()?;
        visit(field.number, field.value)?;
    }
    Some(())
}

/// [`fields`] for the length-delimited fields only.
fn each_field(bytes: &[u8], mut visit: impl FnMut(u32, &[u8]) -> Option<()>) -> Option<()> {
    fields(bytes, |field, value| match value {
        Value::Bytes(body) => visit(field, body),
        _ => Some(()),
    })
}

/// How many buckets a native histogram's sides span once their gaps are
/// filled, each at most [`native_histogram::MAX_BUCKETS`] (wider ones are
/// refused unfilled), read from its spans without decoding it.
fn native_width(histogram: &[u8]) -> Option<usize> {
    // Per side (negative, positive): the width so far, whether a span came.
    let mut sides = [(0u64, false); 2];
    each_field(histogram, |field, span| {
        let side = match field {
            8 => 0,
            11 => 1,
            _ => return Some(()),
        };
        let (mut offset, mut length) = (0u64, 0u64);
        fields(span, |field, value| {
            match (field, value) {
                // sint32: zigzag; its magnitude is what fills a gap.
                (1, Value::Varint(v)) => offset = (v >> 1) + (v & 1),
                (2, Value::Varint(v)) => length = v,
                _ => {}
            }
            Some(())
        })?;
        let (width, started) = &mut sides[side];
        if *started {
            *width = width.saturating_add(offset);
        }
        *started = true;
        *width = width.saturating_add(length);
        Some(())
    })?;
    let cap = native_histogram::MAX_BUCKETS as u64;
    Some(
        sides
            .iter()
            .map(|(width, _)| (*width).min(cap) as usize)
            .sum(),
    )
}

/// The decoded size of the messages in `bytes`, a message of `kind`, or
/// `None` when the bytes are not protobuf (decoding will say why).
fn messages(bytes: &[u8], kind: Kind, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut total = 0usize;
    each_field(bytes, |field, body| {
        if let Some(child) = kind.child(field) {
            let nested = if Kind::LEAVES.contains(&child) {
                0
            } else {
                messages(body, child, depth + 1)?
            };
            total = total.saturating_add(child.size()).saturating_add(nested);
        }
        Some(())
    })?;
    Some(total)
}

/// What turning a remote-write request into OTLP adds: a series' labels
/// become its attributes once (`series_metrics.rs`), but each sample is
/// written into the bus message as a data point with its own copy of them,
/// so a series of many labels and many samples costs labels × samples,
/// whatever its wire size. Each copy is counted at what prost's messages
/// would take for it, several times its bytes in the message: the margin
/// covers the bus's own copy while it stores the message, and keeps the
/// estimate from growing smaller than what a hostile request was refused
/// for before (`tests/faults.rs`, a series of 100 labels and 100,000
/// samples: 343 MB of bus message).
fn remote_write_points(bytes: &[u8]) -> Option<usize> {
    let mut total = 0usize;
    each_field(bytes, |field, series| {
        if field != 1 {
            return Some(());
        }
        let (mut labels, mut label_bytes, mut samples) = (0usize, 0usize, 0usize);
        let (mut histograms, mut buckets) = (0usize, 0usize);
        each_field(series, |field, body| {
            match field {
                1 => {
                    labels += 1;
                    label_bytes += body.len();
                }
                2 => samples += 1,
                4 => {
                    // Decoded, each packed delta or count byte may become 8.
                    histograms += 1;
                    buckets = buckets
                        .saturating_add(native_width(body)?)
                        .saturating_add(body.len());
                }
                _ => {}
            }
            Some(())
        })?;
        let attribute = size_of::<KeyValue>() + size_of::<AnyValue>();
        let attributes = labels.saturating_mul(attribute).saturating_add(label_bytes);
        let point = size_of::<NumberDataPoint>().saturating_add(attributes);
        let native = size_of::<ExponentialHistogramDataPoint>().saturating_add(attributes);
        total = total
            .saturating_add(samples.saturating_mul(point))
            .saturating_add(histograms.saturating_mul(native))
            .saturating_add(buckets.saturating_mul(size_of::<u64>()));
        Some(())
    })?;
    Some(total)
}

/// The estimated decoded size of a request from its protobuf bytes: the
/// bytes, plus every message at the size of its struct (and for
/// remote-write, its samples as OTLP data points). Bytes that are not
/// protobuf count as themselves: decoding refuses them at once.
pub(crate) fn estimate(root: Root, bytes: &[u8]) -> usize {
    let structs = messages(bytes, Kind::Request(root), 0).unwrap_or(0);
    let converted = match root {
        Root::RemoteWrite => remote_write_points(bytes).unwrap_or(0),
        _ => 0,
    };
    bytes
        .len()
        .saturating_add(structs)
        .saturating_add(converted)
}

/// The estimated decoded size of a JSON body: the bytes, plus every object
/// in it (a `{` outside strings) at the size of the largest OTLP struct.
pub(crate) fn estimate_json(bytes: &[u8]) -> usize {
    let mut objects = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in bytes {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') | (false, _, b'"') => in_string = !in_string,
            (false, _, b'{') => objects += 1,
            _ => {}
        }
    }
    bytes
        .len()
        .saturating_add(objects.saturating_mul(Kind::largest()))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;

    use super::*;

    fn empty_spans(n: usize) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn empty_spans_are_counted_at_their_decoded_size() {
        let bytes = empty_spans(1_000);
        assert_eq!(bytes.len(), 2_000 + 3 + 3);
        assert_eq!(
            estimate(Root::Traces, &bytes),
            bytes.len()
                + size_of::<ResourceSpans>()
                + size_of::<ScopeSpans>()
                + 1_000 * size_of::<Span>()
        );
    }

    #[test]
    fn nested_values_count_at_every_depth() {
        let value = |inner: Option<any_value::Value>| AnyValue { value: inner };
        use opentelemetry_proto::tonic::common::v1::any_value;
        let nested = value(Some(any_value::Value::ArrayValue(ArrayValue {
            values: vec![value(None), value(None)],
        })));
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "k".to_owned(),
                        value: Some(nested),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        };
        let bytes = request.encode_to_vec();
        assert_eq!(
            estimate(Root::Traces, &bytes),
            bytes.len()
                + size_of::<ResourceSpans>()
                + size_of::<Resource>()
                + size_of::<KeyValue>()
                + 3 * size_of::<AnyValue>()
                + size_of::<ArrayValue>()
        );
    }

    #[test]
    fn leaves_hold_no_message_counted() {
        for leaf in Kind::LEAVES {
            assert!((0..64).all(|field| leaf.child(field).is_none()), "{leaf:?}");
        }
    }

    #[test]
    fn json_objects_count_outside_strings_only() {
        let body = br#"{"a":[{},{"s":"{{\"{"}]}"#;
        assert_eq!(estimate_json(body), body.len() + 3 * Kind::largest());
    }

    #[test]
    fn remote_write_series_and_samples_count() {
        use prost::Message as _;
        let write = vigil_proto::prometheus::WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![Label::default(); 3],
                    samples: vec![Sample::default(); 2],
                    ..Default::default()
                };
                10
            ],
            ..Default::default()
        };
        let bytes = write.encode_to_vec();
        // Each of the 2 samples becomes a data point with its own 3
        // attributes (empty labels: no bytes to copy).
        let point =
            size_of::<NumberDataPoint>() + 3 * (size_of::<KeyValue>() + size_of::<AnyValue>());
        assert_eq!(
            estimate(Root::RemoteWrite, &bytes),
            bytes.len()
                + 10 * (size_of::<TimeSeries>() + 3 * size_of::<Label>() + 2 * size_of::<Sample>())
                + 10 * 2 * point
        );
    }

    #[test]
    fn remote_write_labels_count_once_per_sample() {
        let label = |n: usize| Label {
            name: format!("label_{n:02}"),
            value: "x".repeat(20),
        };
        let write = vigil_proto::prometheus::WriteRequest {
            timeseries: vec![TimeSeries {
                labels: (0..100).map(label).collect(),
                samples: vec![Sample::default(); 10_000],
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = write.encode_to_vec();
        assert!(bytes.len() < 40_000, "{} bytes", bytes.len());
        // 100 labels of 30 bytes, copied into each of 10,000 points.
        let copies = 10_000 * 100 * (size_of::<KeyValue>() + size_of::<AnyValue>() + 30);
        assert!(
            estimate(Root::RemoteWrite, &bytes) > copies,
            "{} ≤ {copies}",
            estimate(Root::RemoteWrite, &bytes)
        );
    }

    #[test]
    fn client_events_count_at_their_decoded_size() {
        use vigil_proto::client::v1::ExportClientRequest;
        let empty = ClientEvent::default();
        let crash = ClientEvent {
            crash: Some(Default::default()),
            ..Default::default()
        };
        let request = ExportClientRequest {
            batches: vec![ClientBatch {
                context: Some(ClientContext::default()),
                events: vec![empty; 1_000].into_iter().chain([crash]).collect(),
            }],
        };
        let bytes = request.encode_to_vec();
        // Two bytes an event on the wire, hundreds decoded.
        assert!(
            size_of::<ClientEvent>() > 50 * 2,
            "{}",
            size_of::<ClientEvent>()
        );
        assert_eq!(
            estimate(Root::Client, &bytes),
            bytes.len()
                + size_of::<ClientBatch>()
                + size_of::<ClientContext>()
                + 1_001 * size_of::<ClientEvent>()
        );
    }

    #[test]
    fn native_histograms_count_their_buckets_gaps_filled() {
        use vigil_proto::prometheus::{BucketSpan, Histogram};
        let span = |offset, length| BucketSpan { offset, length };
        let histogram = |positive_spans, negative_spans| Histogram {
            positive_spans,
            negative_spans,
            ..Default::default()
        };
        let widths = |h: &Histogram| native_width(&h.encode_to_vec());
        // 2 + a gap of 5 + 1 positive buckets, 3 negative ones.
        let gapped = histogram(vec![span(-4, 2), span(5, 1)], vec![span(7, 3)]);
        assert_eq!(widths(&gapped), Some(8 + 3));
        // A gap of 2^31 counts as the most a side may span: it is refused
        // before it is filled.
        let hostile = histogram(vec![span(0, 1), span(i32::MIN, 1)], Vec::new());
        assert_eq!(widths(&hostile), Some(native_histogram::MAX_BUCKETS));
    }

    #[test]
    fn what_is_not_protobuf_counts_as_its_bytes() {
        assert_eq!(estimate(Root::Metrics, &[0x0a, 0x05, 0x01]), 3);
        assert_eq!(estimate(Root::Logs, &[0xff; 12]), 12);
    }

    #[test]
    fn the_budget_refuses_what_never_fits_and_what_does_not_fit_now() {
        let budget = Budget::new(1 << 20);
        assert!(matches!(
            budget.reserve((1 << 20) + 1),
            Err(IngestError::TooLarge(_))
        ));
        let held = budget.reserve(600 * 1024).unwrap();
        assert!(matches!(
            budget.reserve(600 * 1024),
            Err(IngestError::Exhausted(_))
        ));
        drop(held);
        budget.reserve(600 * 1024).unwrap();
    }
}
