//! Prometheus remote-write 1.0 into OTLP metrics, following the OpenTelemetry
//! Prometheus compatibility rules: `job` becomes `service.name` and `instance`
//! `service.instance.id` of the resource, `__name__` the metric name, the other
//! labels the point's attributes. A series is a counter (a cumulative,
//! monotonic sum) when its metadata says so or its name ends in `_total`, and
//! a gauge otherwise. A classic histogram's series (`_bucket`, `_sum`,
//! `_count`) become one OTLP histogram of the family's name (see
//! `classic_histogram.rs`); a summary's arrive as the series Prometheus has;
//! a native histogram becomes an OTLP exponential histogram
//! (`native_histogram.rs`).
//! A NaN (a quantile
//! with no observations) and a staleness marker are gaps, counted by reason
//! and never answered as an error.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Histogram,
    HistogramDataPoint, Metric,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use vigil_proto::prometheus::metric_metadata::MetricType;

use crate::classic_histogram::{self, Gathering, PointKey};
use crate::native_histogram;
use crate::otlp::string_attribute;
use crate::series_metrics::{Numbers, SeriesMetrics, SeriesPoints, SeriesResource};
use crate::validate::{Rejection, Rejections};
use crate::write_request::{TimeSeries, WriteRequest};

/// Prometheus marks a series that ended with this NaN; it carries no value.
const STALE_MARKER: u64 = 0x7ff0_0000_0000_0002;
pub(crate) const STALE_REASON: &str = "stale_marker";
/// Any other NaN: a value Prometheus has (a summary quantile or a ratio with
/// no observations) that Vigil keeps as a gap.
pub(crate) const NAN_REASON: &str = "nan";
/// Samples that are gaps, not errors: counted, never answered as a failure.
pub(crate) const GAP_REASONS: [&str; 2] = [STALE_REASON, NAN_REASON];

/// Where a resource's points go: metric name → number points by series,
/// family → histogram points. Names are borrowed from the request, but for
/// classic histograms', which may come from an earlier one.
#[derive(Default)]
struct Points<'a> {
    numbers: BTreeMap<&'a str, Vec<SeriesPoints>>,
    histograms: BTreeMap<String, Vec<HistogramDataPoint>>,
    native: BTreeMap<&'a str, Vec<ExponentialHistogramDataPoint>>,
}

/// Whether `name` may be part of a classic histogram.
fn histogram_like(name: &str) -> bool {
    ["_bucket", "_sum", "_count"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// Whether the request holds series that may be classic histogram parts:
/// only then is the tenant's [`Gathering`] needed.
pub(crate) fn has_histogram_parts(write: &WriteRequest) -> bool {
    write
        .timeseries
        .iter()
        .any(|series| label(series, "__name__").is_some_and(histogram_like))
}

/// The OTLP metrics holding the samples of `write`, number points by series
/// (see `series_metrics.rs`). Classic histogram parts
/// go through `histograms`, the tenant's histograms in the making (see
/// `classic_histogram.rs`), and its complete points come out as histograms;
/// native histograms become exponential histograms (`native_histogram.rs`).
/// Samples it cannot carry (staleness markers, NaN, nameless series, broken
/// histograms) are recorded in `rejections`.
pub(crate) fn to_otlp(
    write: WriteRequest,
    mut histograms: Option<&mut Gathering>,
    now: Instant,
    rejections: &mut Rejections,
) -> SeriesMetrics {
    let counters: HashMap<&str, bool> = write
        .metadata
        .iter()
        .map(|m| {
            (
                m.metric_family_name.as_str(),
                m.r#type() == MetricType::Counter,
            )
        })
        .collect();
    if let Some(histograms) = histograms.as_deref_mut() {
        let families = write.timeseries.iter().filter_map(|series| {
            let (family, _) =
                classic_histogram::bucket(label(series, "__name__")?, label(series, "le"))?;
            Some(family)
        });
        let families: Vec<String> = families.collect();
        histograms.saw_buckets(families.iter().map(String::as_str), now);
    }
    // By (job, instance).
    let mut resources: BTreeMap<(Cow<str>, Cow<str>), Points> = BTreeMap::new();
    for series in &write.timeseries {
        let Some(name) = label(series, "__name__").filter(|n| !n.is_empty()) else {
            rejections.add(
                Rejection::new(
                    "empty_name",
                    format!("series {}: has no __name__ label", describe(series)),
                ),
                (series.samples.len() + series.histograms.len()) as u64,
            );
            continue;
        };
        let job = label(series, "job").unwrap_or_default();
        let instance = label(series, "instance").unwrap_or_default();
        if !series.histograms.is_empty() {
            let points = resources
                .entry((job.into(), instance.into()))
                .or_default()
                .native
                .entry(name)
                .or_default();
            for histogram in &series.histograms {
                match native_histogram::point(name, histogram, attributes_of(series)) {
                    Ok(point) => points.push(point),
                    Err(rejection) => rejections.add(rejection, 1),
                }
            }
        }
        let part = histograms
            .as_deref()
            .and_then(|h| h.part(name, label(series, "le")));
        if let (Some((family, part)), Some(histograms)) = (part, histograms.as_deref_mut()) {
            let attributes: Vec<(String, String)> = series
                .labels
                .iter()
                .filter(|l| !matches!(l.name, "__name__" | "job" | "instance" | "le"))
                .map(|l| (l.name.to_owned(), l.value.to_owned()))
                .collect();
            for sample in &series.samples {
                if gap(name, sample.value, rejections) {
                    continue;
                }
                let key = PointKey {
                    job: job.to_owned(),
                    instance: instance.to_owned(),
                    family: family.clone(),
                    attributes: attributes.clone(),
                    time_ms: sample.timestamp,
                };
                histograms.add(key, part, sample.value, now, rejections);
            }
            continue;
        }
        if series.samples.iter().all(|s| s.value.is_nan()) {
            // Gaps only (or nothing): counted, and no metric made for them.
            for sample in &series.samples {
                gap(name, sample.value, rejections);
            }
            continue;
        }
        let points = series
            .samples
            .iter()
            .filter(|sample| !gap(name, sample.value, rejections))
            .map(|sample| {
                let time_ns = u64::try_from(sample.timestamp)
                    .unwrap_or(0)
                    .saturating_mul(1_000_000);
                (time_ns, sample.value)
            })
            .collect();
        resources
            .entry((job.into(), instance.into()))
            .or_default()
            .numbers
            .entry(name)
            .or_default()
            .push(SeriesPoints {
                attributes: attributes_of(series),
                points,
            });
    }
    if let Some(histograms) = histograms {
        for (key, point) in histograms.take_complete(now, rejections) {
            resources
                .entry((key.job.into(), key.instance.into()))
                .or_default()
                .histograms
                .entry(key.family)
                .or_default()
                .push(point);
        }
    }
    let resources = resources
        .into_iter()
        .map(|((job, instance), points)| {
            let mut attributes = Vec::new();
            if !job.is_empty() {
                attributes.push(string_attribute("service.name", &job));
            }
            if !instance.is_empty() {
                attributes.push(string_attribute("service.instance.id", &instance));
            }
            let numbers = points
                .numbers
                .into_iter()
                .map(|(name, series)| Numbers {
                    counter: counters
                        .get(name)
                        .or_else(|| counters.get(name.trim_end_matches("_total")))
                        .copied()
                        .unwrap_or_else(|| name.ends_with("_total")),
                    name: name.to_owned(),
                    series,
                })
                .collect();
            let histograms = points
                .histograms
                .into_iter()
                .map(|(name, data_points)| Metric {
                    name,
                    data: Some(Data::Histogram(Histogram {
                        data_points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                });
            let native = points.native.into_iter().map(|(name, data_points)| Metric {
                name: name.to_owned(),
                data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                    data_points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            });
            SeriesResource {
                resource: Resource {
                    attributes,
                    ..Default::default()
                },
                numbers,
                metrics: histograms.chain(native).collect(),
            }
        })
        .collect();
    SeriesMetrics { resources }
}

/// Whether `value` (of metric `name`) is a gap rather than a value: a
/// staleness marker or another NaN, counted in `rejections` by reason.
fn gap(name: &str, value: f64, rejections: &mut Rejections) -> bool {
    if !value.is_nan() {
        return false;
    }
    let rejection = if value.to_bits() == STALE_MARKER {
        Rejection::new(STALE_REASON, format!("metric {name:?}: staleness marker"))
    } else {
        Rejection::new(NAN_REASON, format!("metric {name:?}: NaN, kept as a gap"))
    };
    rejections.add(rejection, 1);
    true
}

/// A series' labels as a point's attributes: all but the name, the job and
/// the instance (which name the metric and the resource).
fn attributes_of(series: &TimeSeries) -> Vec<KeyValue> {
    series
        .labels
        .iter()
        .filter(|l| !matches!(l.name, "__name__" | "job" | "instance"))
        .map(|l| string_attribute(l.name, l.value))
        .collect()
}

fn label<'a>(series: &TimeSeries<'a>, name: &str) -> Option<&'a str> {
    series
        .labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value)
}

/// `{a="1", b="2"}`, for messages.
fn describe(series: &TimeSeries) -> String {
    let labels: Vec<String> = series
        .labels
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{{{}}}", labels.join(", "))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::number_data_point;
    use prost::Message;
    use vigil_proto::prometheus::{self, Label, MetricMetadata, Sample};

    use super::*;
    use crate::otlp::Export;

    /// The OTLP request the bus gets for `write`, as sent.
    fn otlp(
        write: prometheus::WriteRequest,
        histograms: Option<&mut Gathering>,
        rejections: &mut Rejections,
    ) -> ExportMetricsServiceRequest {
        let body = write.encode_to_vec();
        let write = WriteRequest::read(&body).expect("a remote-write request");
        let metrics = to_otlp(write, histograms, Instant::now(), rejections);
        ExportMetricsServiceRequest::decode(&metrics.payload()[..]).expect("OTLP metrics")
    }

    fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> prometheus::TimeSeries {
        prometheus::TimeSeries {
            labels: labels
                .iter()
                .map(|(name, value)| Label {
                    name: (*name).to_owned(),
                    value: (*value).to_owned(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(value, timestamp)| Sample { value, timestamp })
                .collect(),
            histograms: Vec::new(),
        }
    }

    #[test]
    fn series_become_resources_metrics_and_points() {
        let write = prometheus::WriteRequest {
            timeseries: vec![
                series(
                    &[
                        ("__name__", "http_requests_total"),
                        ("code", "200"),
                        ("instance", "a:9090"),
                        ("job", "api"),
                    ],
                    &[(10.0, 1_000), (12.0, 2_000)],
                ),
                series(
                    &[
                        ("__name__", "queue_depth"),
                        ("instance", "a:9090"),
                        ("job", "api"),
                    ],
                    &[(3.5, 1_000)],
                ),
                series(
                    &[
                        ("__name__", "errors"),
                        ("job", "api"),
                        ("instance", "b:9090"),
                    ],
                    &[(1.0, 1_000)],
                ),
            ],
            metadata: vec![MetricMetadata {
                r#type: MetricType::Counter as i32,
                metric_family_name: "errors".to_owned(),
                ..Default::default()
            }],
        };
        let mut rejections = Rejections::default();
        let request = otlp(write, None, &mut rejections);
        assert_eq!(rejections.count(), 0);
        assert_eq!(request.resource_metrics.len(), 2);
        let a = &request.resource_metrics[0];
        assert_eq!(
            a.resource.as_ref().unwrap().attributes,
            vec![
                string_attribute("service.name", "api"),
                string_attribute("service.instance.id", "a:9090")
            ]
        );
        let metrics = &a.scope_metrics[0].metrics;
        assert_eq!(metrics[0].name, "http_requests_total");
        match &metrics[0].data {
            Some(Data::Sum(sum)) => {
                assert!(sum.is_monotonic);
                assert_eq!(
                    sum.aggregation_temporality,
                    AggregationTemporality::Cumulative as i32
                );
                let times: Vec<u64> = sum.data_points.iter().map(|p| p.time_unix_nano).collect();
                assert_eq!(times, [1_000_000_000, 2_000_000_000]);
                assert_eq!(
                    sum.data_points[1].value,
                    Some(number_data_point::Value::AsDouble(12.0))
                );
                assert_eq!(
                    sum.data_points[0].attributes,
                    vec![string_attribute("code", "200")]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(metrics[1].data, Some(Data::Gauge(_))),
            "queue_depth is a gauge"
        );
        let b = &request.resource_metrics[1].scope_metrics[0].metrics[0];
        assert!(
            matches!(b.data, Some(Data::Sum(_))),
            "errors is a counter by its metadata"
        );
    }

    #[test]
    fn classic_histograms_become_histograms_and_summaries_stay() {
        let bucket = |le: &str, value: f64| {
            series(
                &[
                    ("__name__", "rpc_seconds_bucket"),
                    ("job", "api"),
                    ("le", le),
                ],
                &[(value, 1_000)],
            )
        };
        let write = prometheus::WriteRequest {
            timeseries: vec![
                bucket("0.1", 2.0),
                bucket("0.5", 5.0),
                bucket("+Inf", 6.0),
                series(
                    &[("__name__", "rpc_seconds_sum"), ("job", "api")],
                    &[(1.5, 1_000)],
                ),
                series(
                    &[("__name__", "rpc_seconds_count"), ("job", "api")],
                    &[(6.0, 1_000)],
                ),
                series(
                    &[
                        ("__name__", "gc_seconds"),
                        ("job", "api"),
                        ("quantile", "0.5"),
                    ],
                    &[(0.2, 1_000)],
                ),
                series(
                    &[("__name__", "gc_seconds_sum"), ("job", "api")],
                    &[(3.0, 1_000)],
                ),
                series(
                    &[("__name__", "gc_seconds_count"), ("job", "api")],
                    &[(9.0, 1_000)],
                ),
            ],
            metadata: Vec::new(),
        };
        let mut gathering = Gathering::default();
        let mut rejections = Rejections::default();
        let request = otlp(write, Some(&mut gathering), &mut rejections);
        assert_eq!(rejections.count(), 0);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "gc_seconds",
                "gc_seconds_count",
                "gc_seconds_sum",
                "rpc_seconds"
            ]
        );
        match &metrics[3].data {
            Some(Data::Histogram(h)) => {
                let point = &h.data_points[0];
                assert_eq!(point.explicit_bounds, [0.1, 0.5]);
                assert_eq!(point.bucket_counts, [2, 3, 1]);
                assert_eq!((point.count, point.sum), (6, Some(1.5)));
                assert_eq!(point.time_unix_nano, 1_000_000_000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stale_markers_nan_nameless_series_and_gauge_histograms_are_counted() {
        use vigil_proto::prometheus::{BucketSpan, Histogram, histogram};
        let mut nameless = series(&[("job", "api")], &[(1.0, 1), (2.0, 2)]);
        nameless.histograms.push(Histogram::default());
        let mut latency = series(&[("__name__", "latency"), ("job", "api")], &[]);
        latency.histograms = vec![
            Histogram {
                count: Some(histogram::Count::CountInt(3)),
                sum: 1.5,
                schema: 3,
                positive_spans: vec![BucketSpan {
                    offset: -2,
                    length: 2,
                }],
                positive_deltas: vec![1, 1],
                timestamp: 9,
                ..Default::default()
            },
            Histogram {
                reset_hint: histogram::ResetHint::Gauge as i32,
                ..Default::default()
            },
        ];
        let write = prometheus::WriteRequest {
            timeseries: vec![
                series(
                    &[("__name__", "up"), ("job", "api")],
                    &[(f64::from_bits(STALE_MARKER), 5), (1.0, 6), (f64::NAN, 7)],
                ),
                nameless,
                latency,
            ],
            metadata: Vec::new(),
        };
        let mut rejections = Rejections::default();
        let request = otlp(write, None, &mut rejections);
        assert_eq!(rejections.count(), 6);
        let reasons: Vec<(&str, u64)> = rejections.by_reason().collect();
        assert_eq!(
            reasons,
            [
                ("empty_name", 3),
                ("gauge_histogram", 1),
                (NAN_REASON, 1),
                (STALE_REASON, 1)
            ]
        );
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        match (&metrics[0].data, &metrics[1].data) {
            (Some(Data::Gauge(up)), Some(Data::ExponentialHistogram(latency))) => {
                assert_eq!(up.data_points.len(), 1);
                let point = &latency.data_points[0];
                assert_eq!((point.scale, point.count, point.sum), (3, 3, Some(1.5)));
                let positive = point.positive.as_ref().unwrap();
                assert_eq!(
                    (positive.offset, &positive.bucket_counts[..]),
                    (-3, &[1, 2][..])
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
