//! OTLP metrics held by series: what Prometheus remote-write becomes.
//!
//! A remote-written series is a set of labels and many samples; in OTLP each
//! of its points carries the labels as attributes. Built as OTLP messages,
//! every sample would clone its series' attributes, and encoding would
//! measure and write them again per point and per level of nesting. Here a
//! series keeps its attributes once: they are checked and admitted once
//! (`MetricGate::validate_series`), encoded once, and copied as bytes into
//! each of its points when the bus message is written. The message is the
//! `ExportMetricsServiceRequest` prost writes for the same points, byte for
//! byte (tested below), so the topic stays OTLP for every consumer.

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, Metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use vigil_bus::Topics;
use vigil_proto::wire::{FIXED64, VARINT, field_len, write_field, write_key, write_varint};

use crate::limits::Admission;
use crate::otlp::{Export, MetricGate, data_points, holder_check, service_name};
use crate::validate::{Rejections, Rules};

/// An OTLP metrics request whose number points are grouped by series.
#[derive(Debug, Default)]
pub(crate) struct SeriesMetrics {
    pub(crate) resources: Vec<SeriesResource>,
}

/// One resource's metrics: number metrics by series, then any other metric
/// (histograms) as OTLP has it.
#[derive(Debug, Default)]
pub(crate) struct SeriesResource {
    pub(crate) resource: Resource,
    pub(crate) numbers: Vec<Numbers>,
    pub(crate) metrics: Vec<Metric>,
}

/// A gauge, or a cumulative monotonic sum (a counter), by series.
#[derive(Debug)]
pub(crate) struct Numbers {
    pub(crate) name: String,
    pub(crate) counter: bool,
    pub(crate) series: Vec<SeriesPoints>,
}

/// The points of one series: its attributes, then (time in unix ns, value).
#[derive(Debug)]
pub(crate) struct SeriesPoints {
    pub(crate) attributes: Vec<KeyValue>,
    pub(crate) points: Vec<(u64, f64)>,
}

impl SeriesResource {
    fn items(&self) -> usize {
        let numbers: usize = self.numbers.iter().map(Numbers::items).sum();
        numbers + self.metrics.iter().map(data_points).sum::<usize>()
    }
}

impl Numbers {
    pub(crate) fn items(&self) -> usize {
        self.series.iter().map(|s| s.points.len()).sum()
    }
}

impl Export for SeriesMetrics {
    // Answered, named and published as the OTLP metrics request it is.
    type Response = ExportMetricsServiceResponse;
    const NAME: &'static str = ExportMetricsServiceRequest::NAME;
    const ITEMS: &'static str = ExportMetricsServiceRequest::ITEMS;

    fn topic(topics: &Topics) -> &str {
        ExportMetricsServiceRequest::topic(topics)
    }

    fn validate(
        &mut self,
        rules: &Rules,
        admission: &mut Admission<'_>,
        rejections: &mut Rejections,
    ) {
        for resource in &mut self.resources {
            if let Err(rejection) = holder_check(rules, &resource.resource) {
                rejections.add(rejection, resource.items() as u64);
                resource.numbers.clear();
                resource.metrics.clear();
                continue;
            }
            let mut gate = MetricGate::new(rules, admission, Some(&resource.resource));
            for numbers in &mut resource.numbers {
                gate.validate_series(numbers, rejections);
            }
            resource.numbers.retain(|n| !n.series.is_empty());
            for metric in &mut resource.metrics {
                gate.validate(metric, rejections);
            }
            resource.metrics.retain(|m| data_points(m) > 0);
        }
        self.resources
            .retain(|r| !r.numbers.is_empty() || !r.metrics.is_empty());
    }

    fn split(self) -> Vec<(String, Self)> {
        self.resources
            .into_iter()
            .map(|resource| {
                let service = service_name(Some(&resource.resource));
                let part = SeriesMetrics {
                    resources: vec![resource],
                };
                (service, part)
            })
            .collect()
    }

    fn items(&self) -> usize {
        self.resources.iter().map(SeriesResource::items).sum()
    }

    fn payload(&self) -> Vec<u8> {
        let resources: Vec<ResourceLengths> =
            self.resources.iter().map(ResourceLengths::of).collect();
        let length: usize = resources
            .iter()
            .map(|r| field_len(r.resource_metrics))
            .sum();
        let mut out = Vec::with_capacity(length);
        for (resource, lengths) in self.resources.iter().zip(&resources) {
            // ExportMetricsServiceRequest.resource_metrics = 1
            write_field(&mut out, 1, lengths.resource_metrics);
            // ResourceMetrics.resource = 1, .scope_metrics = 2
            write_field(&mut out, 1, lengths.resource);
            resource.resource.encode_raw(&mut out);
            write_field(&mut out, 2, lengths.scope_metrics);
            for (numbers, lengths) in resource.numbers.iter().zip(&lengths.numbers) {
                // ScopeMetrics.metrics = 2
                write_field(&mut out, 2, lengths.metric);
                numbers.encode(lengths, &mut out);
            }
            for (metric, &length) in resource.metrics.iter().zip(&lengths.metrics) {
                write_field(&mut out, 2, length);
                metric.encode_raw(&mut out);
            }
        }
        debug_assert_eq!(out.len(), length);
        out
    }

    fn response(rejections: &Rejections) -> Self::Response {
        ExportMetricsServiceRequest::response(rejections)
    }
}

/// The lengths of one resource's messages, measured once, bottom up.
struct ResourceLengths {
    resource_metrics: usize,
    resource: usize,
    scope_metrics: usize,
    numbers: Vec<NumbersLengths>,
    /// Each of its other metrics' `Metric` message.
    metrics: Vec<usize>,
}

struct NumbersLengths {
    /// The `Metric` message.
    metric: usize,
    /// Its `Gauge` or `Sum`.
    data: usize,
    /// Each series' attributes as each of its points carries them: their
    /// fields, encoded.
    series: Vec<Vec<u8>>,
}

impl ResourceLengths {
    fn of(resource: &SeriesResource) -> Self {
        let numbers: Vec<NumbersLengths> =
            resource.numbers.iter().map(NumbersLengths::of).collect();
        let metrics: Vec<usize> = resource.metrics.iter().map(Metric::encoded_len).collect();
        let scope_metrics = numbers
            .iter()
            .map(|n| n.metric)
            .chain(metrics.iter().copied())
            .map(field_len)
            .sum();
        let resource_length = resource.resource.encoded_len();
        ResourceLengths {
            resource_metrics: field_len(resource_length) + field_len(scope_metrics),
            resource: resource_length,
            scope_metrics,
            numbers,
            metrics,
        }
    }
}

/// A `NumberDataPoint`'s bytes besides its attributes: the time (fixed64,
/// left out at 0 as prost leaves it) and the value (a double).
fn point_length(attributes: usize, time_ns: u64) -> usize {
    attributes + if time_ns == 0 { 0 } else { 9 } + 9
}

impl NumbersLengths {
    fn of(numbers: &Numbers) -> Self {
        let series: Vec<Vec<u8>> = numbers
            .series
            .iter()
            .map(|s| {
                let mut bytes = Vec::new();
                for attribute in &s.attributes {
                    // NumberDataPoint.attributes = 7
                    write_field(&mut bytes, 7, attribute.encoded_len());
                    attribute.encode_raw(&mut bytes);
                }
                bytes
            })
            .collect();
        let points: usize = numbers
            .series
            .iter()
            .zip(&series)
            .flat_map(|(s, attributes)| {
                s.points
                    .iter()
                    .map(|&(time_ns, _)| field_len(point_length(attributes.len(), time_ns)))
            })
            .sum();
        // Sum.aggregation_temporality = 2 and .is_monotonic = 3: two bytes each.
        let data = points + if numbers.counter { 4 } else { 0 };
        // Metric.name = 1; .gauge = 5 or .sum = 7
        let metric = field_len(numbers.name.len()) + field_len(data);
        NumbersLengths {
            metric,
            data,
            series,
        }
    }
}

impl Numbers {
    /// The `Metric` message's fields.
    fn encode(&self, lengths: &NumbersLengths, out: &mut Vec<u8>) {
        write_field(out, 1, self.name.len());
        out.extend_from_slice(self.name.as_bytes());
        write_field(out, if self.counter { 7 } else { 5 }, lengths.data);
        for (series, attributes) in self.series.iter().zip(&lengths.series) {
            for &(time_ns, value) in &series.points {
                // Gauge.data_points = 1 and Sum.data_points = 1, fields in
                // prost's order: time = 3, as_double = 4, attributes = 7.
                write_field(out, 1, point_length(attributes.len(), time_ns));
                if time_ns != 0 {
                    write_key(out, 3, FIXED64);
                    out.extend_from_slice(&time_ns.to_le_bytes());
                }
                write_key(out, 4, FIXED64);
                out.extend_from_slice(&value.to_le_bytes());
                out.extend_from_slice(attributes);
            }
        }
        if self.counter {
            write_key(out, 2, VARINT);
            write_varint(out, AggregationTemporality::Cumulative as u64);
            write_key(out, 3, VARINT);
            write_varint(out, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        number_data_point,
    };

    use super::*;
    use crate::otlp::string_attribute;

    /// The same points as prost's messages, each point with its series'
    /// attributes.
    fn as_prost(metrics: &SeriesMetrics) -> ExportMetricsServiceRequest {
        let resource_metrics = metrics
            .resources
            .iter()
            .map(|r| {
                let numbers = r.numbers.iter().map(|n| {
                    let data_points: Vec<NumberDataPoint> = n
                        .series
                        .iter()
                        .flat_map(|s| {
                            s.points
                                .iter()
                                .map(|&(time_unix_nano, value)| NumberDataPoint {
                                    attributes: s.attributes.clone(),
                                    time_unix_nano,
                                    value: Some(number_data_point::Value::AsDouble(value)),
                                    ..Default::default()
                                })
                        })
                        .collect();
                    let data = if n.counter {
                        Data::Sum(Sum {
                            data_points,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })
                    } else {
                        Data::Gauge(Gauge { data_points })
                    };
                    Metric {
                        name: n.name.clone(),
                        data: Some(data),
                        ..Default::default()
                    }
                });
                ResourceMetrics {
                    resource: Some(r.resource.clone()),
                    scope_metrics: vec![ScopeMetrics {
                        metrics: numbers.chain(r.metrics.iter().cloned()).collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect();
        ExportMetricsServiceRequest { resource_metrics }
    }

    fn series(labels: &[(&str, &str)], points: &[(u64, f64)]) -> SeriesPoints {
        SeriesPoints {
            attributes: labels.iter().map(|(k, v)| string_attribute(k, v)).collect(),
            points: points.to_vec(),
        }
    }

    #[test]
    fn the_bus_message_is_what_prost_writes_for_the_same_points() {
        let long = "x".repeat(300);
        let metrics = SeriesMetrics {
            resources: vec![
                SeriesResource {
                    resource: Resource {
                        attributes: vec![
                            string_attribute("service.name", "api"),
                            string_attribute("service.instance.id", "a:9090"),
                        ],
                        ..Default::default()
                    },
                    numbers: vec![
                        Numbers {
                            name: "http_requests_total".to_owned(),
                            counter: true,
                            series: vec![
                                series(
                                    &[("code", "200")],
                                    &[(1_000_000_000, 10.0), (2_000_000_000, 12.5)],
                                ),
                                series(&[("code", &long)], &[(0, 1.0)]),
                            ],
                        },
                        Numbers {
                            name: "queue_depth".to_owned(),
                            counter: false,
                            series: vec![series(&[], &[(3_000_000_000, -3.5)])],
                        },
                    ],
                    metrics: vec![Metric {
                        name: "rpc_seconds".to_owned(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                count: 6,
                                bucket_counts: vec![2, 3, 1],
                                explicit_bounds: vec![0.1, 0.5],
                                time_unix_nano: 1_000_000_000,
                                ..Default::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        })),
                        ..Default::default()
                    }],
                },
                SeriesResource::default(),
            ],
        };
        let expected = as_prost(&metrics);
        assert_eq!(metrics.payload(), expected.encode_to_vec());
        assert_eq!(metrics.items(), 5);
        let parts = metrics.split();
        let services: Vec<&str> = parts.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(services, ["api", "unknown_service"]);
        for (_, part) in &parts {
            assert_eq!(part.payload(), as_prost(part).encode_to_vec());
        }
    }
}
