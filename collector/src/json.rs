//! OTLP/JSON decoding. The OTLP JSON mapping allows enum values as names
//! (`"kind": "SPAN_KIND_SERVER"`) as well as numbers, but the generated serde
//! code takes numbers only — and a temporality name makes a metric's data
//! vanish silently. So names are turned into numbers first, by the enums' own
//! `from_str_name`.

use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Decodes an OTLP/JSON body; the error says where and what is wrong.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    enum_names_to_numbers(&mut value);
    serde_json::from_value(value).map_err(|e| format!("not an OTLP/JSON request: {e}"))
}

fn enum_names_to_numbers(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (field, child) in fields.iter_mut() {
                match child {
                    Value::String(name) => {
                        if let Some(number) = enum_number(field, name) {
                            *child = Value::from(number);
                        }
                    }
                    _ => enum_names_to_numbers(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(enum_names_to_numbers),
        _ => {}
    }
}

/// The number of enum value `name` of the enum field `field`. Attribute keys
/// and values never reach here as field names: they sit under `key`/`value`.
fn enum_number(field: &str, name: &str) -> Option<i32> {
    match field {
        "kind" => SpanKind::from_str_name(name).map(|v| v as i32),
        "code" => StatusCode::from_str_name(name).map(|v| v as i32),
        "aggregationTemporality" => AggregationTemporality::from_str_name(name).map(|v| v as i32),
        "severityNumber" => SeverityNumber::from_str_name(name).map(|v| v as i32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;

    use super::*;

    const SPAN: &str = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
        "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174",
        "name":"GET /pay","kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1544712660000000000",
        "endTimeUnixNano":1544712661000000000,
        "attributes":[{"key":"kind","value":{"stringValue":"SPAN_KIND_CLIENT"}},
                      {"key":"n","value":{"intValue":"42"}}],
        "status":{"code":"STATUS_CODE_ERROR","message":"boom"}}]}]}]}"#;

    #[test]
    fn enum_names_hex_ids_and_string_integers_decode() {
        let request: ExportTraceServiceRequest = decode(SPAN.as_bytes()).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert_eq!(span.trace_id[0], 0x5b);
        assert_eq!(span.span_id[7], 0x74);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        let attribute = span.attributes[0].value.as_ref().unwrap();
        assert_eq!(
            attribute.value,
            Some(
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                    "SPAN_KIND_CLIENT".to_owned()
                )
            ),
            "attribute values stay as sent"
        );
    }

    #[test]
    fn a_temporality_name_keeps_the_metric_data() {
        let body = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"e",
            "exponentialHistogram":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_DELTA",
            "dataPoints":[{"timeUnixNano":"1","count":"1","zeroCount":"1"}]}}]}]}]}"#;
        let request: ExportMetricsServiceRequest = decode(body.as_bytes()).unwrap();
        let metric = &request.resource_metrics[0].scope_metrics[0].metrics[0];
        match &metric.data {
            Some(Data::ExponentialHistogram(h)) => {
                assert_eq!(
                    h.aggregation_temporality,
                    AggregationTemporality::Delta as i32
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_bodies_say_where() {
        let error = decode::<ExportTraceServiceRequest>(b"{\"resourceSpans\": [").unwrap_err();
        assert!(error.starts_with("malformed JSON: "), "{error}");
        let error = decode::<ExportTraceServiceRequest>(br#"{"resourceSpans": 3}"#).unwrap_err();
        assert!(
            error.starts_with("not an OTLP/JSON request: invalid type"),
            "{error}"
        );
    }
}
