//! Prometheus remote-write 1.0 into OTLP metrics, following the OpenTelemetry
//! Prometheus compatibility rules: `job` becomes `service.name` and `instance`
//! `service.instance.id` of the resource, `__name__` the metric name, the other
//! labels the point's attributes. A series is a counter (a cumulative,
//! monotonic sum) when its metadata says so or its name ends in `_total`, and
//! a gauge otherwise; classic histogram and summary series (`_bucket`,
//! `_count`, `_sum`) arrive as the series Prometheus has. A NaN (a quantile
//! with no observations) and a staleness marker are gaps, counted by reason
//! and never answered as an error.

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use vigil_proto::prometheus::metric_metadata::MetricType;
use vigil_proto::prometheus::{TimeSeries, WriteRequest};

use crate::otlp::string_attribute;
use crate::validate::{Rejection, Rejections};

/// Prometheus marks a series that ended with this NaN; it carries no value.
const STALE_MARKER: u64 = 0x7ff0_0000_0000_0002;
pub(crate) const STALE_REASON: &str = "stale_marker";
/// Any other NaN: a value Prometheus has (a summary quantile or a ratio with
/// no observations) that Vigil keeps as a gap.
pub(crate) const NAN_REASON: &str = "nan";
/// Samples that are gaps, not errors: counted, never answered as a failure.
pub(crate) const GAP_REASONS: [&str; 2] = [STALE_REASON, NAN_REASON];

/// The OTLP request holding the samples of `write`. Samples it cannot carry
/// (staleness markers, nameless series, native histograms) are recorded in
/// `rejections`.
pub(crate) fn to_otlp(
    write: WriteRequest,
    rejections: &mut Rejections,
) -> ExportMetricsServiceRequest {
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
    // (job, instance) → metric name → points
    let mut resources: BTreeMap<(String, String), BTreeMap<String, Vec<NumberDataPoint>>> =
        BTreeMap::new();
    for series in &write.timeseries {
        if !series.histograms.is_empty() {
            rejections.add(
                Rejection::new(
                    "native_histogram",
                    format!(
                        "series {}: native histograms are not supported",
                        describe(series)
                    ),
                ),
                series.histograms.len() as u64,
            );
        }
        let Some(name) = label(series, "__name__").filter(|n| !n.is_empty()) else {
            rejections.add(
                Rejection::new(
                    "empty_name",
                    format!("series {}: has no __name__ label", describe(series)),
                ),
                series.samples.len() as u64,
            );
            continue;
        };
        let job = label(series, "job").unwrap_or_default();
        let instance = label(series, "instance").unwrap_or_default();
        let attributes: Vec<KeyValue> = series
            .labels
            .iter()
            .filter(|l| !matches!(l.name.as_str(), "__name__" | "job" | "instance"))
            .map(|l| string_attribute(&l.name, &l.value))
            .collect();
        let points = resources
            .entry((job.to_owned(), instance.to_owned()))
            .or_default()
            .entry(name.to_owned())
            .or_default();
        for sample in &series.samples {
            if sample.value.to_bits() == STALE_MARKER {
                rejections.add(
                    Rejection::new(STALE_REASON, format!("metric {name:?}: staleness marker")),
                    1,
                );
                continue;
            }
            if sample.value.is_nan() {
                rejections.add(
                    Rejection::new(NAN_REASON, format!("metric {name:?}: NaN, kept as a gap")),
                    1,
                );
                continue;
            }
            points.push(NumberDataPoint {
                attributes: attributes.clone(),
                time_unix_nano: u64::try_from(sample.timestamp)
                    .unwrap_or(0)
                    .saturating_mul(1_000_000),
                value: Some(number_data_point::Value::AsDouble(sample.value)),
                ..Default::default()
            });
        }
    }
    let resource_metrics = resources
        .into_iter()
        .map(|((job, instance), metrics)| {
            let mut attributes = Vec::new();
            if !job.is_empty() {
                attributes.push(string_attribute("service.name", &job));
            }
            if !instance.is_empty() {
                attributes.push(string_attribute("service.instance.id", &instance));
            }
            let metrics = metrics
                .into_iter()
                .map(|(name, data_points)| {
                    let counter = counters
                        .get(name.as_str())
                        .or_else(|| counters.get(name.trim_end_matches("_total")))
                        .copied()
                        .unwrap_or_else(|| name.ends_with("_total"));
                    let data = if counter {
                        Data::Sum(Sum {
                            data_points,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })
                    } else {
                        Data::Gauge(Gauge { data_points })
                    };
                    Metric {
                        name,
                        data: Some(data),
                        ..Default::default()
                    }
                })
                .collect();
            ResourceMetrics {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

fn label<'a>(series: &'a TimeSeries, name: &str) -> Option<&'a str> {
    series
        .labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
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
    use vigil_proto::prometheus::{Label, MetricMetadata, Sample};

    use super::*;

    fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
        TimeSeries {
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
        let write = WriteRequest {
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
        let request = to_otlp(write, &mut rejections);
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
    fn stale_markers_nameless_series_and_native_histograms_are_counted() {
        let mut nameless = series(&[("job", "api")], &[(1.0, 1), (2.0, 2)]);
        nameless.histograms.push(vec![1, 2, 3]);
        let write = WriteRequest {
            timeseries: vec![
                series(
                    &[("__name__", "up"), ("job", "api")],
                    &[(f64::from_bits(STALE_MARKER), 5), (1.0, 6), (f64::NAN, 7)],
                ),
                nameless,
            ],
            metadata: Vec::new(),
        };
        let mut rejections = Rejections::default();
        let request = to_otlp(write, &mut rejections);
        assert_eq!(rejections.count(), 5);
        let reasons: Vec<(&str, u64)> = rejections.by_reason().collect();
        assert_eq!(
            reasons,
            [
                ("empty_name", 2),
                (NAN_REASON, 1),
                ("native_histogram", 1),
                (STALE_REASON, 1)
            ]
        );
        let up = &request.resource_metrics[0].scope_metrics[0].metrics[0];
        match &up.data {
            Some(Data::Gauge(g)) => assert_eq!(g.data_points.len(), 1),
            other => panic!("{other:?}"),
        }
    }
}
