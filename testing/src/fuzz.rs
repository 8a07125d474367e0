//! Fuzzing on stable Rust, under `cargo test`: proptest drives each target
//! with generated inputs (shrunk to a smallest failing one when a property
//! breaks), [`config`] bounds the cases (`VIGIL_FUZZ_CASES`, 256 by default:
//! a few seconds per target on CI; set it to millions for a long run), and
//! [`mutations`] makes inputs structure-aware the way coverage fuzzers do:
//! valid encodings with bytes flipped, cut, inserted and repeated, so most
//! inputs get past the first bytes of a decoder.

use proptest::prelude::*;
use proptest::test_runner::Config;

/// Cases per fuzz target: `VIGIL_FUZZ_CASES`, or 256.
pub fn cases() -> u32 {
    std::env::var("VIGIL_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256)
}

/// The proptest configuration of a fuzz target.
pub fn config() -> Config {
    Config {
        cases: cases(),
        // A failing case is reported with its input, not saved to a file in
        // the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Copies of `seeds` (valid inputs) with up to 16 edits each, and random
/// bytes now and then.
pub fn mutations(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let count = seeds.len();
    let edits = prop::collection::vec((0u8..5, any::<u16>(), any::<u8>()), 0..16);
    prop_oneof![
        9 => (0..count, edits).prop_map(move |(seed, edits)| mutate(&seeds[seed], &edits)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn mutate(seed: &[u8], edits: &[(u8, u16, u8)]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for &(edit, at, byte) in edits {
        let at = usize::from(at) % (bytes.len() + 1);
        match edit {
            0 if at < bytes.len() => bytes[at] ^= byte | 1,
            1 => bytes.truncate(at),
            2 => bytes.insert(at, byte),
            3 => {
                let end = (at + usize::from(byte)).min(bytes.len());
                let repeated = bytes[at..end].to_vec();
                bytes.splice(at..at, repeated);
            }
            // A length or varint byte set to an extreme.
            _ if at < bytes.len() => bytes[at] = if byte % 2 == 0 { 0xff } else { 0x7f },
            _ => {}
        }
    }
    bytes
}

/// Valid OTLP requests of every kind of item, to mutate.
pub mod seeds {
    use std::time::SystemTime;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    pub fn now_ns() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    fn text(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..Default::default()
        }
    }

    fn resource() -> Option<Resource> {
        Some(Resource {
            attributes: vec![
                text("service.name", "checkout"),
                KeyValue {
                    key: "nested".to_owned(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::ArrayValue(ArrayValue {
                            values: vec![AnyValue {
                                value: Some(any_value::Value::IntValue(7)),
                            }],
                        })),
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
    }

    pub fn traces() -> ExportTraceServiceRequest {
        let now = now_ns();
        let span = |name: &str, id: u8| Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            name: name.to_owned(),
            start_time_unix_nano: now - 1_000_000,
            end_time_unix_nano: now,
            attributes: vec![text("http.route", "/pay")],
            events: vec![Event {
                name: "retry".to_owned(),
                time_unix_nano: now,
                ..Default::default()
            }],
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span("POST /pay", 2), span("charge", 3)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    pub fn metrics() -> ExportMetricsServiceRequest {
        let now = now_ns();
        let number = |value| NumberDataPoint {
            time_unix_nano: now,
            start_time_unix_nano: now - 10_000_000_000,
            attributes: vec![text("unit", "u1")],
            value: Some(number_data_point::Value::AsDouble(value)),
            ..Default::default()
        };
        let metric = |name: &str, data| Metric {
            name: name.to_owned(),
            data: Some(data),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric(
                            "queue.depth",
                            Data::Gauge(Gauge {
                                data_points: vec![number(3.0)],
                            }),
                        ),
                        metric(
                            "requests",
                            Data::Sum(Sum {
                                data_points: vec![number(12.0)],
                                aggregation_temporality: 2,
                                is_monotonic: true,
                            }),
                        ),
                        metric(
                            "latency",
                            Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint {
                                    time_unix_nano: now,
                                    count: 3,
                                    sum: Some(30.0),
                                    bucket_counts: vec![1, 1, 1],
                                    explicit_bounds: vec![5.0, 50.0],
                                    ..Default::default()
                                }],
                                aggregation_temporality: 1,
                            }),
                        ),
                        metric(
                            "size",
                            Data::ExponentialHistogram(ExponentialHistogram {
                                data_points: vec![ExponentialHistogramDataPoint {
                                    time_unix_nano: now,
                                    count: 3,
                                    sum: Some(9.0),
                                    scale: 3,
                                    zero_count: 1,
                                    positive: Some(Buckets {
                                        offset: 10,
                                        bucket_counts: vec![1, 1],
                                    }),
                                    ..Default::default()
                                }],
                                aggregation_temporality: 2,
                            }),
                        ),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    pub fn logs() -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: now_ns(),
                        severity_number: 17,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("card declined".to_owned())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}
