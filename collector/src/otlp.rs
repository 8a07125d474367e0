//! The three OTLP signals behind one trait, so that gRPC and HTTP, traces,
//! metrics and logs all go through the same pipeline: validate the items,
//! split the request per resource, answer with `partial_success`.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint, ScopeMetrics,
    SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use vigil_bus::Topics;
use vigil_domain::distribution::{MAX_OTLP_BUCKETS, exponential_range_is_valid};

use crate::budget::Root;
use crate::limits::{Admission, attributes_hash};
use crate::series_metrics::Numbers;
use crate::validate::{Item, Rejection, Rejections, Rules, finite, span_id, trace_id};

/// Service name of a resource without `service.name`, as the OTel SDKs say.
const UNKNOWN_SERVICE: &str = "unknown_service";

/// What the pipeline does with a request, whatever it was read from: check
/// its items, split it per resource, write each part as the bus's OTLP
/// protobuf, answer with `partial_success`.
pub(crate) trait Export: Sized + Send + 'static {
    type Response: prost::Message + serde::Serialize + Send + 'static;

    /// The signal's name in self-metrics: "traces", "metrics", "logs".
    const NAME: &'static str;

    /// What the items are called in messages: "spans", "data points", …
    const ITEMS: &'static str;

    fn topic(topics: &Topics) -> &str;

    /// Removes the items that break a rule or a limit, recording why.
    fn validate(
        &mut self,
        rules: &Rules,
        admission: &mut Admission<'_>,
        rejections: &mut Rejections,
    );

    /// One request per resource, with the resource's service name.
    fn split(self) -> Vec<(String, Self)>;

    /// Spans, data points or log records in the request.
    fn items(&self) -> usize;

    /// The bus message: the signal's OTLP (or `vigil.client.v1`) protobuf.
    fn payload(&self) -> Vec<u8>;

    fn response(rejections: &Rejections) -> Self::Response;
}

/// One OTLP signal as it is received: a protobuf (or OTLP/JSON) message.
pub(crate) trait ExportRequest:
    Export + prost::Message + Default + serde::de::DeserializeOwned
{
    /// How the decoded size of its protobuf bytes is estimated (`None`: as
    /// a multiple of them).
    const BUDGET: Root;
}

/// A string attribute.
pub(crate) fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// A resource or a scope: what holds attributes for many items.
pub(crate) trait Holder {
    /// What it is, in rejection messages.
    const KIND: &'static str;
    fn name(&self) -> &str;
    fn attributes(&self) -> &[KeyValue];
}

impl Holder for Resource {
    const KIND: &'static str = "resource";

    fn name(&self) -> &str {
        ""
    }

    fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }
}

impl Holder for InstrumentationScope {
    const KIND: &'static str = "scope";

    fn name(&self) -> &str {
        &self.name
    }

    fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }
}

/// Whether a resource's or scope's own attributes keep to the limits.
pub(crate) fn holder_check<H: Holder>(rules: &Rules, holder: &H) -> Result<(), Rejection> {
    rules.attributes(Item::new(H::KIND, holder.name()), holder.attributes())
}

/// As [`holder_check`]; if not, what it holds (`children`, of `items` items
/// each) is rejected for it and emptied.
fn holder_valid<H: Holder, C>(
    rules: &Rules,
    holder: Option<&H>,
    children: &mut Vec<C>,
    items: impl Fn(&C) -> usize,
    rejections: &mut Rejections,
) -> bool {
    let Some(holder) = holder else {
        return true;
    };
    match holder_check(rules, holder) {
        Ok(()) => true,
        Err(rejection) => {
            let count: usize = children.iter().map(items).sum();
            rejections.add(rejection, count as u64);
            children.clear();
            false
        }
    }
}

pub(crate) fn service_name(resource: Option<&Resource>) -> String {
    resource
        .into_iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(name) if !name.is_empty() => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_else(|| UNKNOWN_SERVICE.to_owned())
}

/// Keeps the items that pass `check`, recording the others once each.
pub(crate) fn retain_valid<T>(
    items: &mut Vec<T>,
    rejections: &mut Rejections,
    mut check: impl FnMut(&T) -> Result<(), Rejection>,
) {
    items.retain(|item| match check(item) {
        Ok(()) => true,
        Err(rejection) => {
            rejections.add(rejection, 1);
            false
        }
    });
}

impl Export for ExportTraceServiceRequest {
    type Response = ExportTraceServiceResponse;
    const NAME: &'static str = "traces";
    const ITEMS: &'static str = "spans";

    fn topic(topics: &Topics) -> &str {
        &topics.traces
    }

    fn validate(
        &mut self,
        rules: &Rules,
        _admission: &mut Admission<'_>,
        rejections: &mut Rejections,
    ) {
        for resource in &mut self.resource_spans {
            let holder = resource.resource.as_ref();
            if !holder_valid(
                rules,
                holder,
                &mut resource.scope_spans,
                |s| s.spans.len(),
                rejections,
            ) {
                continue;
            }
            for scope in &mut resource.scope_spans {
                if !holder_valid(
                    rules,
                    scope.scope.as_ref(),
                    &mut scope.spans,
                    |_| 1,
                    rejections,
                ) {
                    continue;
                }
                retain_valid(&mut scope.spans, rejections, |span| {
                    let what = Item::new("span", &span.name);
                    check_span(rules, what, span)
                });
            }
            resource.scope_spans.retain(|scope| !scope.spans.is_empty());
        }
        self.resource_spans.retain(|r| !r.scope_spans.is_empty());
    }

    fn split(self) -> Vec<(String, Self)> {
        self.resource_spans
            .into_iter()
            .map(|resource| {
                let service = service_name(resource.resource.as_ref());
                let request = ExportTraceServiceRequest {
                    resource_spans: vec![resource],
                };
                (service, request)
            })
            .collect()
    }

    fn items(&self) -> usize {
        self.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }

    fn response(rejections: &Rejections) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: rejections.any().then(|| ExportTracePartialSuccess {
                rejected_spans: rejections.count() as i64,
                error_message: rejections.message(Self::ITEMS),
            }),
        }
    }

    fn payload(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

impl ExportRequest for ExportTraceServiceRequest {
    const BUDGET: Root = Root::Traces;
}

fn check_span(rules: &Rules, what: Item<'_>, span: &Span) -> Result<(), Rejection> {
    rules.name(what, &span.name)?;
    trace_id(what, &span.trace_id)?;
    span_id(what, "span_id", &span.span_id)?;
    if !span.parent_span_id.is_empty() {
        span_id(what, "parent_span_id", &span.parent_span_id)?;
    }
    rules.time(what, "start_time_unix_nano", span.start_time_unix_nano)?;
    rules.time(what, "end_time_unix_nano", span.end_time_unix_nano)?;
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err(Rejection::new(
            "ends_before_start",
            format!("{what}: end_time_unix_nano is before start_time_unix_nano"),
        ));
    }
    rules.attributes(what, &span.attributes)?;
    rules.count(what, "events", span.events.len(), rules.max_span_events)?;
    rules.count(what, "links", span.links.len(), rules.max_span_links)?;
    for event in &span.events {
        rules.name(what, &event.name)?;
        rules.attributes(what, &event.attributes)?;
    }
    for link in &span.links {
        rules.attributes(what, &link.attributes)?;
    }
    Ok(())
}

impl Export for ExportMetricsServiceRequest {
    type Response = ExportMetricsServiceResponse;
    const NAME: &'static str = "metrics";
    const ITEMS: &'static str = "data points";

    fn topic(topics: &Topics) -> &str {
        &topics.metrics
    }

    fn validate(
        &mut self,
        rules: &Rules,
        admission: &mut Admission<'_>,
        rejections: &mut Rejections,
    ) {
        for resource in &mut self.resource_metrics {
            let holder = resource.resource.as_ref();
            let points = |s: &ScopeMetrics| s.metrics.iter().map(data_points).sum();
            if !holder_valid(
                rules,
                holder,
                &mut resource.scope_metrics,
                points,
                rejections,
            ) {
                continue;
            }
            for scope in &mut resource.scope_metrics {
                if !holder_valid(
                    rules,
                    scope.scope.as_ref(),
                    &mut scope.metrics,
                    data_points,
                    rejections,
                ) {
                    continue;
                }
                let mut gate = MetricGate::new(rules, admission, resource.resource.as_ref());
                for metric in &mut scope.metrics {
                    gate.validate(metric, rejections);
                }
                scope.metrics.retain(|m| data_points(m) > 0);
            }
            resource.scope_metrics.retain(|s| !s.metrics.is_empty());
        }
        self.resource_metrics
            .retain(|r| !r.scope_metrics.is_empty());
    }

    fn split(self) -> Vec<(String, Self)> {
        self.resource_metrics
            .into_iter()
            .map(|resource| {
                let service = service_name(resource.resource.as_ref());
                let request = ExportMetricsServiceRequest {
                    resource_metrics: vec![resource],
                };
                (service, request)
            })
            .collect()
    }

    fn items(&self) -> usize {
        self.resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(data_points)
            .sum()
    }

    fn response(rejections: &Rejections) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: rejections.any().then(|| ExportMetricsPartialSuccess {
                rejected_data_points: rejections.count() as i64,
                error_message: rejections.message(Self::ITEMS),
            }),
        }
    }

    fn payload(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

impl ExportRequest for ExportMetricsServiceRequest {
    const BUDGET: Root = Root::Metrics;
}

pub(crate) fn data_points(metric: &Metric) -> usize {
    match &metric.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(e)) => e.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// The checks of one metric's points: the rules, then the series limit, then
/// the rate.
pub(crate) struct MetricGate<'r, 'a> {
    rules: &'r Rules,
    admission: &'r mut Admission<'a>,
    /// The series identity of the resource the metric belongs to.
    resource_series: u64,
}

/// The identity of a point's series: its resource's and its attributes'.
fn series_identity(resource_series: u64, attributes: &[KeyValue]) -> u64 {
    resource_series ^ attributes_hash(attributes).rotate_left(1)
}

impl<'r, 'a> MetricGate<'r, 'a> {
    /// The gate of the metrics of `resource`.
    pub(crate) fn new(
        rules: &'r Rules,
        admission: &'r mut Admission<'a>,
        resource: Option<&Resource>,
    ) -> Self {
        MetricGate {
            rules,
            admission,
            resource_series: resource.map_or(0, |r| attributes_hash(&r.attributes)),
        }
    }

    /// Whether a metric may be called `name`.
    fn name(&self, name: &str) -> Result<(), Rejection> {
        if name.is_empty() {
            return Err(Rejection::new("empty_name", "a metric has an empty name"));
        }
        self.rules.name(Item::new("metric", name), name)
    }

    /// Checks the number points of metric `name`, held by series (see
    /// `series_metrics.rs`): as [`MetricGate::validate`] checks a gauge's or
    /// a sum's points, each series' attributes checked and admitted once.
    pub(crate) fn validate_series(&mut self, numbers: &mut Numbers, rejections: &mut Rejections) {
        if let Err(rejection) = self.name(&numbers.name) {
            rejections.add(rejection, numbers.items() as u64);
            numbers.series.clear();
            return;
        }
        let Numbers {
            name,
            counter: monotonic,
            series,
        } = numbers;
        let what = Item::new("metric", name);
        let (rules, resource_series, monotonic) = (self.rules, self.resource_series, *monotonic);
        self.admission.metric(name, |admission| {
            series.retain_mut(|series| {
                retain_valid(&mut series.points, rejections, |&(time_ns, value)| {
                    check_sample(rules, what, time_ns, value, monotonic)
                });
                if series.points.is_empty() {
                    return false;
                }
                let admitted = rules.attributes(what, &series.attributes).and_then(|()| {
                    admission.admit(what, series_identity(resource_series, &series.attributes))
                });
                match admitted {
                    Ok(()) => true,
                    Err(rejection) => {
                        rejections.add(rejection, series.points.len() as u64);
                        false
                    }
                }
            });
        });
    }

    pub(crate) fn validate(&mut self, metric: &mut Metric, rejections: &mut Rejections) {
        let name = metric.name.as_str();
        if let Err(rejection) = self.name(name) {
            rejections.add(rejection, data_points(metric) as u64);
            metric.data = None;
            return;
        }
        let what = Item::new("metric", name);
        let rules = self.rules;
        if metric.data.is_none() {
            rejections.add(
                Rejection::new(
                    "no_data",
                    format!(
                        "{what}: has no gauge, sum, histogram, exponential histogram or summary"
                    ),
                ),
                0,
            );
            return;
        }
        let resource_series = self.resource_series;
        let data = &mut metric.data;
        self.admission.metric(name, |series| {
            let mut admit = |attributes: &[KeyValue]| {
                series.admit(what, series_identity(resource_series, attributes))
            };
            match data {
                None => {}
                Some(Data::Gauge(gauge)) => retain_valid(&mut gauge.data_points, rejections, |p| {
                    check_number(rules, what, p, false)?;
                    admit(&p.attributes)
                }),
                Some(Data::Sum(sum)) => {
                    let monotonic = sum.is_monotonic;
                    retain_valid(&mut sum.data_points, rejections, |p| {
                        check_number(rules, what, p, monotonic)?;
                        admit(&p.attributes)
                    });
                }
                Some(Data::Histogram(histogram)) => {
                    retain_valid(&mut histogram.data_points, rejections, |p| {
                        check_histogram(rules, what, p)?;
                        admit(&p.attributes)
                    });
                }
                Some(Data::ExponentialHistogram(histogram)) => {
                    retain_valid(&mut histogram.data_points, rejections, |p| {
                        check_exponential(rules, what, p)?;
                        admit(&p.attributes)
                    });
                }
                Some(Data::Summary(summary)) => {
                    retain_valid(&mut summary.data_points, rejections, |p| {
                        check_summary(rules, what, p)?;
                        admit(&p.attributes)
                    })
                }
            }
        });
    }
}

fn check_number(
    rules: &Rules,
    what: Item<'_>,
    point: &NumberDataPoint,
    monotonic: bool,
) -> Result<(), Rejection> {
    let value = match point.value {
        Some(Value::AsDouble(v)) => v,
        Some(Value::AsInt(v)) => v as f64,
        None => {
            return Err(Rejection::new(
                "no_value",
                format!("{what}: a data point has no value"),
            ));
        }
    };
    check_sample(rules, what, point.time_unix_nano, value, monotonic)?;
    rules.attributes(what, &point.attributes)
}

/// A number point's value and time.
fn check_sample(
    rules: &Rules,
    what: Item<'_>,
    time_ns: u64,
    value: f64,
    monotonic: bool,
) -> Result<(), Rejection> {
    finite(what, "value", value)?;
    if monotonic && value < 0.0 {
        return Err(Rejection::new(
            "negative_count",
            format!("{what}: a monotonic sum cannot be negative, got {value}"),
        ));
    }
    rules.time(what, "time_unix_nano", time_ns)
}

fn check_optional_stats(
    what: Item<'_>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
) -> Result<(), Rejection> {
    for (field, value) in [("sum", sum), ("min", min), ("max", max)] {
        if let Some(value) = value {
            finite(what, field, value)?;
        }
    }
    Ok(())
}

fn count_mismatch(what: Item<'_>, count: u64, buckets: u64) -> Rejection {
    Rejection::new(
        "count_mismatch",
        format!("{what}: count is {count} but the buckets hold {buckets}"),
    )
}

fn check_histogram(
    rules: &Rules,
    what: Item<'_>,
    point: &HistogramDataPoint,
) -> Result<(), Rejection> {
    check_optional_stats(what, point.sum, point.min, point.max)?;
    if !point.bucket_counts.is_empty() {
        if point.bucket_counts.len() != point.explicit_bounds.len() + 1 {
            return Err(Rejection::new(
                "bad_buckets",
                format!(
                    "{what}: {} bucket counts for {} bounds; expected bounds + 1",
                    point.bucket_counts.len(),
                    point.explicit_bounds.len()
                ),
            ));
        }
        if point.bucket_counts.len() > MAX_OTLP_BUCKETS {
            return Err(Rejection::new(
                "bad_buckets",
                format!(
                    "{what}: {} buckets, more than {MAX_OTLP_BUCKETS}",
                    point.bucket_counts.len()
                ),
            ));
        }
        let bounds = &point.explicit_bounds;
        if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Rejection::new(
                "bad_buckets",
                format!("{what}: explicit_bounds must be finite and strictly increasing"),
            ));
        }
        let total = point
            .bucket_counts
            .iter()
            .fold(0u64, |a, &c| a.saturating_add(c));
        if total != point.count {
            return Err(count_mismatch(what, point.count, total));
        }
    }
    rules.time(what, "time_unix_nano", point.time_unix_nano)?;
    rules.attributes(what, &point.attributes)
}

fn check_exponential(
    rules: &Rules,
    what: Item<'_>,
    point: &ExponentialHistogramDataPoint,
) -> Result<(), Rejection> {
    check_optional_stats(what, point.sum, point.min, point.max)?;
    if !(-10..=20).contains(&point.scale) {
        return Err(Rejection::new(
            "bad_buckets",
            format!("{what}: scale {} is outside -10..=20", point.scale),
        ));
    }
    for (side, buckets) in [("positive", &point.positive), ("negative", &point.negative)] {
        let Some(buckets) = buckets else {
            continue;
        };
        let len = buckets.bucket_counts.len();
        if len > MAX_OTLP_BUCKETS {
            return Err(Rejection::new(
                "bad_buckets",
                format!("{what}: {len} {side} buckets, more than {MAX_OTLP_BUCKETS}"),
            ));
        }
        if !exponential_range_is_valid(point.scale, buckets.offset, len) {
            return Err(Rejection::new(
                "bad_buckets",
                format!(
                    "{what}: {len} {side} buckets from offset {} stand for values beyond the finite range at scale {}",
                    buckets.offset, point.scale
                ),
            ));
        }
    }
    let total = [&point.positive, &point.negative]
        .into_iter()
        .flatten()
        .flat_map(|b| &b.bucket_counts)
        .fold(point.zero_count, |a, &c| a.saturating_add(c));
    if total != point.count {
        return Err(count_mismatch(what, point.count, total));
    }
    rules.time(what, "time_unix_nano", point.time_unix_nano)?;
    rules.attributes(what, &point.attributes)
}

fn check_summary(rules: &Rules, what: Item<'_>, point: &SummaryDataPoint) -> Result<(), Rejection> {
    finite(what, "sum", point.sum)?;
    for quantile in &point.quantile_values {
        if !(0.0..=1.0).contains(&quantile.quantile) {
            return Err(Rejection::new(
                "bad_quantile",
                format!("{what}: quantile {} is outside [0, 1]", quantile.quantile),
            ));
        }
        finite(what, "quantile value", quantile.value)?;
    }
    rules.time(what, "time_unix_nano", point.time_unix_nano)?;
    rules.attributes(what, &point.attributes)
}

impl Export for ExportLogsServiceRequest {
    type Response = ExportLogsServiceResponse;
    const NAME: &'static str = "logs";
    const ITEMS: &'static str = "log records";

    fn topic(topics: &Topics) -> &str {
        &topics.logs
    }

    fn validate(
        &mut self,
        rules: &Rules,
        _admission: &mut Admission<'_>,
        rejections: &mut Rejections,
    ) {
        for resource in &mut self.resource_logs {
            let holder = resource.resource.as_ref();
            let records = |s: &ScopeLogs| s.log_records.len();
            if !holder_valid(rules, holder, &mut resource.scope_logs, records, rejections) {
                continue;
            }
            for scope in &mut resource.scope_logs {
                if !holder_valid(
                    rules,
                    scope.scope.as_ref(),
                    &mut scope.log_records,
                    |_| 1,
                    rejections,
                ) {
                    continue;
                }
                retain_valid(&mut scope.log_records, rejections, |record| {
                    let what = Item::new("log record", "");
                    check_log(rules, what, record)
                });
            }
            resource.scope_logs.retain(|s| !s.log_records.is_empty());
        }
        self.resource_logs.retain(|r| !r.scope_logs.is_empty());
    }

    fn split(self) -> Vec<(String, Self)> {
        self.resource_logs
            .into_iter()
            .map(|resource| {
                let service = service_name(resource.resource.as_ref());
                let request = ExportLogsServiceRequest {
                    resource_logs: vec![resource],
                };
                (service, request)
            })
            .collect()
    }

    fn items(&self) -> usize {
        self.resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum()
    }

    fn response(rejections: &Rejections) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: rejections.any().then(|| ExportLogsPartialSuccess {
                rejected_log_records: rejections.count() as i64,
                error_message: rejections.message(Self::ITEMS),
            }),
        }
    }

    fn payload(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

impl ExportRequest for ExportLogsServiceRequest {
    const BUDGET: Root = Root::Logs;
}

fn check_log(rules: &Rules, what: Item<'_>, record: &LogRecord) -> Result<(), Rejection> {
    // The event time when the source knows it, else when it was observed.
    if record.time_unix_nano != 0 {
        rules.time(what, "time_unix_nano", record.time_unix_nano)?;
    } else {
        rules.time(
            what,
            "observed_time_unix_nano",
            record.observed_time_unix_nano,
        )?;
    }
    if !record.trace_id.is_empty() {
        trace_id(what, &record.trace_id)?;
    }
    if !record.span_id.is_empty() {
        span_id(what, "span_id", &record.span_id)?;
    }
    rules.body(what, record.body.as_ref())?;
    rules.attributes(what, &record.attributes)
}
