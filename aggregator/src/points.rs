//! From bus messages to observations: which series a span, a data point or
//! a probe step belongs to, at what event time, with what value.
//!
//! Series dimensions: the resource's `service.version`, `vigil.unit`,
//! `vigil.cohort`, `deployment.environment` and `cloud.region` on every
//! series; for spans also the span kind, the status code and the configured
//! span attributes; for metrics the data point's attributes. A span carrying
//! `vigil.probe.name` is a synthetic probe step: its series is of kind
//! [`Kind::Probe`], named after the probe, with the step and location.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, DataPointFlags, Metric, metric,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;
use vigil_domain::distribution::{
    Distribution, DistributionError, ExplicitHistogram, ExponentialHistogram,
};
use vigil_domain::model::{
    CERTIFICATE_DAYS_LEFT, Fnv, Kind, RESOURCE_DIMENSIONS, Rollup, SeriesKey, TLS_NOT_AFTER, hex,
};
use vigil_domain::tenant::TenantId;
use vigil_domain::time::parse_rfc3339;
use vigil_proto::wire::{Fields, Malformed};
use vigil_store::SpanRecord;

use crate::cumulative::{Cumulative, Exponential, Value};
use crate::wire::NumberPoint;

/// What one observation adds to its window.
#[derive(Debug, Clone)]
pub enum Amount {
    /// One value (a latency in ms, a gauge reading, a counter increase).
    Point { value: f64, error: bool },
    /// Many values at once (a histogram). Boxed: observations are moved by
    /// the million, and most are points.
    Many(Box<Rollup>),
}

/// One thing seen: a series, an event time and an amount.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Shared by the points of one series in one message.
    pub series: Arc<SeriesKey>,
    /// `series.id()`, computed once per series and message.
    pub id: u64,
    pub time_s: u64,
    pub amount: Amount,
}

impl Observation {
    pub fn new(series: SeriesKey, time_s: u64, amount: Amount) -> Self {
        let id = series.id();
        Observation {
            series: Arc::new(series),
            id,
            time_s,
            amount,
        }
    }
}

/// A series' key, shared by the observations of its points, and its id.
type Shared = (Arc<SeriesKey>, u64);

/// The series of the previous point of a run of points (a metric's data
/// points), kept while the next ones have the same attributes — decoded
/// (`[KeyValue]`) or as written (`[u8]`, see `wire.rs`): the points of one
/// series, as remote-write sends them, share one key and one id.
struct Previous<'a, A: ?Sized> {
    attributes: Option<&'a A>,
    series: Option<Shared>,
}

impl<'a, A: ?Sized + PartialEq> Previous<'a, A> {
    fn new() -> Self {
        Previous {
            attributes: None,
            series: None,
        }
    }

    /// The series of a point with `attributes`, made by `make` unless the
    /// previous point's attributes were the same.
    fn series(
        &mut self,
        attributes: &'a A,
        make: impl FnOnce() -> Result<SeriesKey, DecodeError>,
    ) -> Result<Shared, DecodeError> {
        if let (Some(found), Some(previous)) = (&self.series, self.attributes)
            && previous == attributes
        {
            return Ok(found.clone());
        }
        let series = make()?;
        let id = series.id();
        let found = (Arc::new(series), id);
        self.attributes = Some(attributes);
        self.series = Some(found.clone());
        Ok(found)
    }
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message key {key:?} is not `tenant/service`")]
    Key { key: String },
    #[error("payload is not a {what}: {source}")]
    Payload {
        what: &'static str,
        source: prost::DecodeError,
    },
    #[error("payload is not a {what}: {reason}")]
    Malformed {
        what: &'static str,
        reason: Malformed,
    },
}

impl From<Malformed> for DecodeError {
    /// What the in-place reading of metrics (`wire.rs`) found wrong.
    fn from(reason: Malformed) -> Self {
        DecodeError::Malformed {
            what: "OTLP ExportMetricsServiceRequest",
            reason,
        }
    }
}

/// Decodes a payload as `M`, named `what` in the error.
pub fn decode<M: prost::Message + Default>(
    payload: &[u8],
    what: &'static str,
) -> Result<M, DecodeError> {
    M::decode(payload).map_err(|source| DecodeError::Payload { what, source })
}

/// The tenant a message belongs to, from its key.
pub fn tenant_of(key: &[u8]) -> Result<TenantId, DecodeError> {
    let text = String::from_utf8_lossy(key);
    text.split_once('/')
        .and_then(|(tenant, _)| TenantId::parse(tenant).ok())
        .ok_or_else(|| DecodeError::Key {
            key: text.into_owned(),
        })
}

pub fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// The service name and standard dimensions of a resource.
pub fn resource_labels(attributes: &[KeyValue]) -> (String, Vec<(String, String)>) {
    let service = attribute(attributes, "service.name")
        .map_or_else(|| "unknown_service".to_owned(), |v| text(Some(v)));
    let labels = RESOURCE_DIMENSIONS
        .iter()
        .filter_map(|&key| attribute(attributes, key).map(|v| (key.to_owned(), text(Some(v)))))
        .collect();
    (service, labels)
}

/// Seconds from unix nanoseconds.
pub fn seconds(time_ns: u64) -> u64 {
    time_ns / 1_000_000_000
}

/// The span dimensions, spans and probe steps of an OTLP traces message.
pub struct Spans {
    pub observations: Vec<Observation>,
    pub records: Vec<SpanRecord>,
}

/// Reads an `ExportTraceServiceRequest`.
pub fn spans(
    tenant: &TenantId,
    payload: &[u8],
    span_dimensions: &[String],
) -> Result<Spans, DecodeError> {
    let request: ExportTraceServiceRequest = decode(payload, "OTLP ExportTraceServiceRequest")?;
    let mut out = Spans {
        observations: Vec::new(),
        records: Vec::new(),
    };
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default().attributes;
        let (service, base_labels) = resource_labels(&resource);
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            let status = span.status.clone().unwrap_or_default();
            let status_code = StatusCode::try_from(status.code).unwrap_or(StatusCode::Unset);
            let error = status_code == StatusCode::Error;
            let duration_ns = span
                .end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano);
            let kind = span_kind(span.kind);
            let status_name = match status_code {
                StatusCode::Unset => "unset",
                StatusCode::Ok => "ok",
                StatusCode::Error => "error",
            };
            let mut labels = base_labels.clone();
            labels.extend(RESOURCE_DIMENSIONS.iter().filter_map(|&key| {
                attribute(&span.attributes, key).map(|v| (key.to_owned(), text(Some(v))))
            }));
            let probe = attribute(&span.attributes, "vigil.probe.name").map(|v| text(Some(v)));
            let series = match probe {
                Some(probe) => {
                    for key in ["vigil.probe.step", "vigil.probe.location"] {
                        let value = text(attribute(&span.attributes, key));
                        labels.push((key.to_owned(), value));
                    }
                    if let Some(days_left) = certificate_days_left(&span) {
                        let mut labels = labels.clone();
                        labels.push(("vigil.probe.name".to_owned(), probe.clone()));
                        out.observations.push(Observation::new(
                            SeriesKey::new(
                                tenant.clone(),
                                Kind::Metric,
                                &service,
                                CERTIFICATE_DAYS_LEFT,
                                labels,
                            ),
                            seconds(span.end_time_unix_nano),
                            Amount::Point {
                                value: days_left,
                                error: false,
                            },
                        ));
                    }
                    labels.push(("status".to_owned(), status_name.to_owned()));
                    SeriesKey::new(tenant.clone(), Kind::Probe, &service, probe, labels)
                }
                None => {
                    labels.push(("span.kind".to_owned(), kind.to_owned()));
                    labels.push(("status".to_owned(), status_name.to_owned()));
                    for key in span_dimensions {
                        if let Some(value) = attribute(&span.attributes, key) {
                            labels.push((key.clone(), text(Some(value))));
                        }
                    }
                    SeriesKey::new(tenant.clone(), Kind::Span, &service, &span.name, labels)
                }
            };
            out.observations.push(Observation::new(
                series,
                seconds(span.end_time_unix_nano),
                Amount::Point {
                    value: duration_ns as f64 / 1e6,
                    error,
                },
            ));
            let attributes = resource
                .iter()
                .chain(&span.attributes)
                .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                .collect();
            out.records.push(SpanRecord {
                tenant: tenant.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                service: service.clone(),
                name: span.name,
                kind: kind.to_owned(),
                start_ns: span.start_time_unix_nano,
                duration_ns,
                status_code: u8::try_from(status.code).unwrap_or(0),
                status_message: status.message,
                attributes,
            });
        }
    }
    Ok(out)
}

/// Days a probed target's certificate had left when the step ended, from
/// the step's `tls.server.not_after`.
fn certificate_days_left(span: &Span) -> Option<f64> {
    let not_after = attribute(&span.attributes, TLS_NOT_AFTER)?;
    let not_after_ms = parse_rfc3339(&text(Some(not_after)))?;
    let end_ms = span.end_time_unix_nano / 1_000_000;
    Some((not_after_ms as f64 - end_ms as f64) / 86_400_000.0)
}

fn span_kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// Reads an `ExportMetricsServiceRequest`. Cumulative points go through
/// `cumulative`. Points whose values cannot be recorded (not finite, broken
/// histograms) are counted in the second value and skipped. Gauges and sums
/// are read in place (`wire.rs`), the rest with prost.
pub fn metrics(
    tenant: &TenantId,
    payload: &[u8],
    offset: i64,
    cumulative: &mut Cumulative,
) -> Result<(Vec<Observation>, u64), DecodeError> {
    let mut reader = MetricsReader {
        tenant,
        offset,
        cumulative,
        out: Vec::new(),
        refused: 0,
    };
    // ExportMetricsServiceRequest.resource_metrics = 1
    for field in Fields::new(payload) {
        let field = field?;
        if field.number == 1 {
            reader.resource(field.value.bytes()?)?;
        }
    }
    Ok((reader.out, reader.refused))
}

/// What [`metrics`] reads into.
struct MetricsReader<'a> {
    tenant: &'a TenantId,
    offset: i64,
    cumulative: &'a mut Cumulative,
    out: Vec<Observation>,
    refused: u64,
}

/// The resource of the metrics being read.
struct Source {
    service: String,
    labels: Vec<(String, String)>,
    /// See [`source_of`].
    id: u64,
}

impl Source {
    fn of(resource: &[KeyValue]) -> Self {
        let (service, labels) = resource_labels(resource);
        Source {
            service,
            labels,
            id: source_of(resource),
        }
    }
}

impl MetricsReader<'_> {
    fn push(&mut self, (series, id): Shared, time_ns: u64, amount: Option<Amount>) {
        if let Some(amount) = amount {
            self.out.push(Observation {
                series,
                id,
                time_s: seconds(time_ns),
                amount,
            });
        }
    }

    fn series_of(
        &self,
        source: &Source,
        name: &str,
        attributes: &[KeyValue],
        extra: Option<(String, String)>,
    ) -> SeriesKey {
        let mut labels = source.labels.clone();
        labels.extend(
            attributes
                .iter()
                .map(|kv| (kv.key.clone(), text(kv.value.as_ref()))),
        );
        labels.extend(extra);
        SeriesKey::new(
            self.tenant.clone(),
            Kind::Metric,
            &source.service,
            name,
            labels,
        )
    }

    /// A `ResourceMetrics`: resource = 1, scope_metrics = 2 (and in it,
    /// metrics = 2).
    fn resource(&mut self, message: &[u8]) -> Result<(), DecodeError> {
        let mut resource = Resource::default();
        let mut scopes = Vec::new();
        for field in Fields::new(message) {
            let field = field?;
            match field.number {
                1 => {
                    resource
                        .merge(field.value.bytes()?)
                        .map_err(|source| DecodeError::Payload {
                            what: "OTLP Resource",
                            source,
                        })?
                }
                2 => scopes.push(field.value.bytes()?),
                _ => {}
            }
        }
        let source = Source::of(&resource.attributes);
        for scope in scopes {
            for field in Fields::new(scope) {
                let field = field?;
                if field.number == 2 {
                    self.metric(&source, field.value.bytes()?)?;
                }
            }
        }
        Ok(())
    }

    /// A `Metric`: name = 1; gauge = 5 and sum = 7 read in place, histogram
    /// = 9, exponential_histogram = 10 and summary = 11 with prost.
    fn metric(&mut self, source: &Source, message: &[u8]) -> Result<(), DecodeError> {
        let mut name: &[u8] = &[];
        let mut data = None;
        let mut data_fields = 0;
        for field in Fields::new(message) {
            let field = field?;
            match field.number {
                1 => name = field.value.bytes()?,
                5 | 7 | 9 | 10 | 11 => {
                    data = Some((field.number, field.value.bytes()?));
                    data_fields += 1;
                }
                _ => {}
            }
        }
        let name =
            std::str::from_utf8(name).map_err(|_| Malformed("a metric name is not UTF-8"))?;
        match data {
            None => Ok(()),
            Some(_) if data_fields > 1 => {
                // Written oddly (prost keeps the last data field, merging
                // repeated ones): read again as prost writes it, with one.
                let metric: Metric = decode(message, "OTLP Metric")?;
                self.metric(source, &metric.encode_to_vec())
            }
            Some((number @ (5 | 7), bytes)) => self.numbers(source, name, number == 7, bytes),
            Some(_) => {
                let metric: Metric = decode(message, "OTLP Metric")?;
                self.histograms_and_summaries(source, metric)
            }
        }
    }

    /// A `Gauge` (data_points = 1) or a `Sum` (data_points = 1,
    /// aggregation_temporality = 2, is_monotonic = 3).
    fn numbers(
        &mut self,
        source: &Source,
        name: &str,
        is_sum: bool,
        message: &[u8],
    ) -> Result<(), DecodeError> {
        let mut points = Vec::new();
        let (mut temporality, mut monotonic) = (0, false);
        for field in Fields::new(message) {
            let field = field?;
            match field.number {
                1 => points.push(NumberPoint::read(field.value.bytes()?)?),
                2 if is_sum => temporality = field.value.varint()?,
                3 if is_sum => monotonic = field.value.varint()? != 0,
                _ => {}
            }
        }
        let counter =
            is_sum && monotonic && temporality == AggregationTemporality::Cumulative as u64;
        let mut previous = Previous::new();
        for point in &points {
            // Decoded for every new series, recorded or not, as prost would.
            let series = previous.series(point.attributes.as_ref(), || {
                let attributes = decode_attributes(&point.attributes)?;
                Ok(self.series_of(source, name, &attributes, None))
            })?;
            if !recorded(point.flags) {
                continue;
            }
            let value = point.value.unwrap_or(f64::NAN);
            let amount = if counter {
                self.cumulative
                    .delta(
                        stream(series.1, source.id),
                        point.start_time_unix_nano,
                        point.time_unix_nano,
                        self.offset,
                        Value::Sum(value),
                    )
                    .and_then(|delta| match delta {
                        Value::Sum(increase) => Some(Amount::Point {
                            value: increase,
                            error: false,
                        }),
                        _ => None,
                    })
            } else {
                // Gauges and delta sums as they are; a non-monotonic
                // cumulative sum is a level, like a gauge.
                Some(Amount::Point {
                    value,
                    error: false,
                })
            };
            self.push(series, point.time_unix_nano, amount);
        }
        Ok(())
    }

    /// A histogram, an exponential histogram or a summary, as prost
    /// decoded it.
    fn histograms_and_summaries(
        &mut self,
        source: &Source,
        metric: Metric,
    ) -> Result<(), DecodeError> {
        let name = metric.name;
        let mut histograms = Vec::new();
        match metric.data {
            Some(metric::Data::Histogram(histogram)) => {
                let is_cumulative =
                    histogram.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                let mut previous = Previous::new();
                for point in histogram.data_points.iter().filter(|p| recorded(p.flags)) {
                    let series = previous.series(&point.attributes[..], || {
                        Ok(self.series_of(source, &name, &point.attributes, None))
                    })?;
                    let value = Value::Explicit {
                        bounds: point.explicit_bounds.clone(),
                        counts: point.bucket_counts.clone(),
                        sum: point.sum.unwrap_or(0.0),
                    };
                    histograms.push((
                        series,
                        HistogramPoint {
                            times: (point.start_time_unix_nano, point.time_unix_nano),
                            extremes: (point.min, point.max),
                            is_cumulative,
                            value,
                        },
                    ));
                }
            }
            Some(metric::Data::ExponentialHistogram(histogram)) => {
                let is_cumulative =
                    histogram.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                let mut previous = Previous::new();
                for point in histogram.data_points.iter().filter(|p| recorded(p.flags)) {
                    let series = previous.series(&point.attributes[..], || {
                        Ok(self.series_of(source, &name, &point.attributes, None))
                    })?;
                    let buckets = |b: &Option<Buckets>| {
                        b.as_ref()
                            .map_or((0, Vec::new()), |b| (b.offset, b.bucket_counts.clone()))
                    };
                    let (positive_offset, positive) = buckets(&point.positive);
                    let (negative_offset, negative) = buckets(&point.negative);
                    let value = Value::Exponential(Exponential {
                        scale: point.scale,
                        zero_count: point.zero_count,
                        positive_offset,
                        positive,
                        negative_offset,
                        negative,
                        sum: point.sum.unwrap_or(0.0),
                    });
                    histograms.push((
                        series,
                        HistogramPoint {
                            times: (point.start_time_unix_nano, point.time_unix_nano),
                            extremes: (point.min, point.max),
                            is_cumulative,
                            value,
                        },
                    ));
                }
            }
            Some(metric::Data::Summary(summary)) => {
                // Quantiles as the source computed them: one series per
                // quantile, never merged into a distribution.
                for point in summary.data_points.iter().filter(|p| recorded(p.flags)) {
                    for quantile in &point.quantile_values {
                        let label = ("quantile".to_owned(), quantile.quantile.to_string());
                        let series = self.series_of(source, &name, &point.attributes, Some(label));
                        let id = series.id();
                        let amount = Amount::Point {
                            value: quantile.value,
                            error: false,
                        };
                        self.push((Arc::new(series), id), point.time_unix_nano, Some(amount));
                    }
                }
            }
            Some(metric::Data::Gauge(_) | metric::Data::Sum(_)) | None => {}
        }
        // Explicit and exponential histogram points alike.
        for (series, point) in histograms {
            let time_ns = point.times.1;
            match point.amount(self.cumulative, stream(series.1, source.id), self.offset) {
                Ok(amount) => self.push(series, time_ns, amount),
                Err(_) => self.refused += 1,
            }
        }
        Ok(())
    }
}

/// [`metrics`], with the request decoded by prost down to its metrics,
/// each then read as prost writes it: what the in-place reading of whole
/// requests is checked against (`fuzz.rs`).
#[cfg(test)]
pub(crate) fn metrics_with_prost(
    tenant: &TenantId,
    payload: &[u8],
    offset: i64,
    cumulative: &mut Cumulative,
) -> Result<(Vec<Observation>, u64), DecodeError> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    let request: ExportMetricsServiceRequest = decode(payload, "OTLP ExportMetricsServiceRequest")?;
    let mut reader = MetricsReader {
        tenant,
        offset,
        cumulative,
        out: Vec::new(),
        refused: 0,
    };
    for resource_metrics in request.resource_metrics {
        let resource = resource_metrics.resource.unwrap_or_default();
        let source = Source::of(&resource.attributes);
        for metric in resource_metrics
            .scope_metrics
            .into_iter()
            .flat_map(|scope| scope.metrics)
        {
            reader.metric(&source, &metric.encode_to_vec())?;
        }
    }
    Ok((reader.out, reader.refused))
}

/// A point's attributes, from their fields as written (see [`NumberPoint`]).
fn decode_attributes(fields: &[u8]) -> Result<Vec<KeyValue>, DecodeError> {
    Fields::new(fields)
        .map(|field| decode(field?.value.bytes()?, "OTLP KeyValue"))
        .collect()
}

/// What tells apart the sources of one series: the resource attributes
/// that are not dimensions of its series (`service.instance.id`, the host,
/// the process…), hashed; 0 when there are none. Two instances of a service
/// exporting the same counter are one series, but each its own cumulative
/// stream: their deltas are taken apart, then added.
fn source_of(resource: &[KeyValue]) -> u64 {
    let mut parts: Vec<(&str, String)> = resource
        .iter()
        .filter(|kv| kv.key != "service.name" && !RESOURCE_DIMENSIONS.contains(&kv.key.as_str()))
        .map(|kv| (kv.key.as_str(), text(kv.value.as_ref())))
        .collect();
    if parts.is_empty() {
        return 0;
    }
    parts.sort();
    let mut hash = Fnv::default();
    for (key, value) in parts {
        hash.write(key.as_bytes());
        hash.write(&[0]);
        hash.write(value.as_bytes());
        hash.write(&[0]);
    }
    hash.finish()
}

/// The key of a cumulative stream: its series, from its `source`.
fn stream(series: u64, source: u64) -> u64 {
    if source == 0 {
        series
    } else {
        series ^ source.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// Whether an OTLP point carries a value (not flagged "no recorded value").
fn recorded(flags: u32) -> bool {
    flags & DataPointFlags::NoRecordedValueMask as u32 == 0
}

/// One histogram data point, explicit or exponential.
struct HistogramPoint {
    /// Start and time, unix nanoseconds.
    times: (u64, u64),
    /// Min and max, if the point has them.
    extremes: (Option<f64>, Option<f64>),
    is_cumulative: bool,
    value: Value,
}

impl HistogramPoint {
    /// What the point adds: its delta (cumulative points go through
    /// `cumulative`) as an amount, `Ok(None)` if it adds nothing. Min and max
    /// of a cumulative point cover its whole life, not the delta, so they are
    /// left out (and estimated from the buckets).
    fn amount(
        self,
        cumulative: &mut Cumulative,
        series: u64,
        offset: i64,
    ) -> Result<Option<Amount>, DistributionError> {
        let (delta, (min, max)) = if self.is_cumulative {
            let (start, time) = self.times;
            let delta = cumulative.delta(series, start, time, offset, self.value);
            (delta, (None, None))
        } else {
            (Some(self.value), self.extremes)
        };
        let Some(delta) = delta else {
            return Ok(None);
        };
        histogram_amount(&delta, min, max)
    }
}

/// A histogram delta as an amount: `Ok(None)` if it holds nothing.
fn histogram_amount(
    delta: &Value,
    min: Option<f64>,
    max: Option<f64>,
) -> Result<Option<Amount>, DistributionError> {
    let values = match delta {
        Value::Explicit {
            bounds,
            counts,
            sum,
        } => Distribution::from_explicit(&ExplicitHistogram {
            bounds,
            counts,
            sum: Some(*sum),
            min,
            max,
        })?,
        Value::Exponential(e) => Distribution::from_exponential(&ExponentialHistogram {
            scale: e.scale,
            zero_count: e.zero_count,
            positive_offset: e.positive_offset,
            positive_counts: &e.positive,
            negative_offset: e.negative_offset,
            negative_counts: &e.negative,
            sum: Some(e.sum),
            min,
            max,
        })?,
        Value::Sum(_) => return Ok(None),
    };
    Ok((values.count() > 0).then(|| {
        Amount::Many(Box::new(Rollup {
            values,
            ..Rollup::default()
        }))
    }))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, number_data_point,
    };

    use super::*;

    fn text_attribute(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..Default::default()
        }
    }

    /// A cumulative counter `payments_total` of service pay at `value`,
    /// from instance `instance` started at `start_ns`.
    fn counter(instance: &str, start_ns: u64, time_ns: u64, value: f64) -> Vec<u8> {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        text_attribute("service.name", "pay"),
                        text_attribute("service.instance.id", instance),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "payments_total".to_owned(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![NumberDataPoint {
                                start_time_unix_nano: start_ns,
                                time_unix_nano: time_ns,
                                value: Some(number_data_point::Value::AsDouble(value)),
                                ..Default::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn instances_of_one_counter_are_one_series_counted_apart() {
        let tenant = TenantId::parse("acme").unwrap();
        let mut cumulative = Cumulative::default();
        let s = 1_000_000_000;
        // Interleaved: a from 10 to 15, b from 100 to 130, each with its own
        // start; a new start counts from zero, so 10 + 100 + 5 + 30.
        let messages = [
            counter("a", s, 10 * s, 10.0),
            counter("b", 2 * s, 10 * s, 100.0),
            counter("a", s, 20 * s, 15.0),
            counter("b", 2 * s, 20 * s, 130.0),
        ];
        let mut total = 0.0;
        let mut series = std::collections::BTreeSet::new();
        for (offset, message) in messages.iter().enumerate() {
            let (observations, refused) =
                metrics(&tenant, message, offset as i64, &mut cumulative).unwrap();
            assert_eq!(refused, 0);
            for observation in observations {
                series.insert(observation.series.id());
                if let Amount::Point { value, .. } = observation.amount {
                    total += value;
                }
            }
        }
        assert_eq!(series.len(), 1, "one series, without the instance");
        assert_eq!(total, 145.0);
    }

    #[test]
    fn the_points_of_one_series_share_its_key_and_id() {
        let tenant = TenantId::parse("acme").unwrap();
        let point = |route: &str, time_s: u64| NumberDataPoint {
            attributes: vec![text_attribute("http.route", route)],
            time_unix_nano: time_s * 1_000_000_000,
            value: Some(number_data_point::Value::AsDouble(1.0)),
            ..Default::default()
        };
        let message = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![text_attribute("service.name", "pay")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "in_flight".to_owned(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![
                                point("/pay", 10),
                                point("/pay", 20),
                                point("/refund", 20),
                                point("/pay", 30),
                            ],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let (seen, _) = metrics(&tenant, &message, 0, &mut Cumulative::default()).unwrap();
        assert_eq!(seen.len(), 4);
        for observation in &seen {
            assert_eq!(observation.id, observation.series.id());
        }
        assert!(Arc::ptr_eq(&seen[0].series, &seen[1].series), "made once");
        assert_eq!(seen[2].series.label("http.route"), Some("/refund"));
        // Back to /pay after another series: made again, the same series.
        assert_eq!(seen[3].series, seen[0].series);
        assert_eq!(seen[3].id, seen[0].id);
    }
}
