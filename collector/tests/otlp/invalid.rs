//! Bad input, limits and auth, on the embedded bus (these rules are the
//! collector's, whatever bus is behind it): invalid items rejected and
//! counted with the rest stored, tokens, malformed bodies, a full or silent
//! bus, rates, new series and sizes.

use super::*;

#[tokio::test]
async fn invalid_spans_are_rejected_and_counted_and_the_rest_stored() {
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let now = now_ns();
    let too_many: Vec<KeyValue> = (0..129).map(|i| attribute(&format!("k{i}"), "v")).collect();
    let request = trace_request(vec![
        (
            "checkout",
            vec![
                span(
                    "good",
                    vec![1; 16],
                    now - 1000,
                    now,
                    vec![attribute("a", "b")],
                ),
                span("short id", vec![1; 15], now - 1000, now, vec![]),
                span(
                    "ancient",
                    vec![1; 16],
                    now - 31 * DAY_NS,
                    now - 31 * DAY_NS,
                    vec![],
                ),
                span("crowded", vec![1; 16], now - 1000, now, too_many),
                span("backwards", vec![1; 16], now, now - 1000, vec![]),
            ],
        ),
        (
            "ledger",
            vec![span("zero id", vec![0; 16], now - 1000, now, vec![])],
        ),
    ]);
    let partial = export_spans(&harness, request).await.unwrap();
    assert_eq!(partial.rejected_spans, 5);
    let message = partial.error_message;
    assert!(message.starts_with("5 spans rejected: "), "{message}");
    for expected in [
        "span \"short id\": trace_id must be 16 bytes, not all zero; got 15 bytes",
        "span \"ancient\": start_time_unix_nano",
        "is older than the retention",
        "span \"crowded\": 129 attributes, more than the limit of 128",
        "span \"backwards\": end_time_unix_nano is before start_time_unix_nano",
        "span \"zero id\": trace_id must be 16 bytes, not all zero; got 16 bytes",
    ] {
        assert!(message.contains(expected), "{expected:?} not in {message}");
    }

    let topic = harness.config.bus.topics().traces;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    assert_eq!(
        messages.len(),
        1,
        "the ledger resource had nothing valid left"
    );
    assert_eq!(messages[0].key, "acme/checkout");
    let stored = ExportTraceServiceRequest::decode(&messages[0].payload[..]).unwrap();
    let names: Vec<&str> = stored.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["good"]);

    let metrics = harness.scrape().await;
    let traces = r#"signal="traces",tenant="acme""#;
    for (series, expected) in [
        (
            format!("vigil_collector_items_received_total{{{traces}}}"),
            6.0,
        ),
        (
            format!("vigil_collector_items_accepted_total{{{traces}}}"),
            1.0,
        ),
        (
            format!(r#"vigil_collector_items_rejected_total{{{traces},reason="invalid_id"}}"#),
            2.0,
        ),
        (
            format!(r#"vigil_collector_items_rejected_total{{{traces},reason="too_old"}}"#),
            1.0,
        ),
        (
            format!(
                r#"vigil_collector_items_rejected_total{{{traces},reason="too_many_attributes"}}"#
            ),
            1.0,
        ),
        (
            format!(
                r#"vigil_collector_items_rejected_total{{{traces},reason="ends_before_start"}}"#
            ),
            1.0,
        ),
        (
            r#"vigil_collector_requests_total{protocol="grpc",signal="traces",code="OK"}"#
                .to_owned(),
            1.0,
        ),
        ("vigil_collector_in_flight_requests".to_owned(), 0.0),
    ] {
        assert_eq!(
            sample(&metrics, &series),
            Some(expected),
            "{series}\n{metrics}"
        );
    }
    harness.stop().await;
}

fn metric(name: &str, data: Data) -> Metric {
    Metric {
        name: name.to_owned(),
        data: Some(data),
        ..Default::default()
    }
}

fn gauge_point(time: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn histogram_point(time: u64, count: u64, bucket_counts: Vec<u64>) -> HistogramDataPoint {
    HistogramDataPoint {
        time_unix_nano: time,
        count,
        sum: Some(10.0),
        bucket_counts,
        explicit_bounds: vec![1.0, 5.0],
        ..Default::default()
    }
}

fn metrics_request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: otlp_resource("ledger"),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Posts `request` as OTLP/HTTP protobuf: answered 200 in protobuf, with
/// its partial success.
async fn post_metrics(
    harness: &Harness,
    request: &ExportMetricsServiceRequest,
) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess {
    let response = reqwest::Client::new()
        .post(harness.http_url("/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let body = response.bytes().await.unwrap();
    opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse::decode(
        &body[..],
    )
    .unwrap()
    .partial_success
    .unwrap()
}

#[tokio::test]
async fn invalid_data_points_are_rejected_and_counted_and_the_rest_stored() {
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let now = now_ns();
    let request = metrics_request(vec![
        metric(
            "temperature",
            Data::Gauge(Gauge {
                data_points: vec![
                    gauge_point(now, 21.5),
                    gauge_point(now, f64::NAN),
                    gauge_point(now, f64::INFINITY),
                    gauge_point(now + 2 * 3_600 * 1_000_000_000, 20.0),
                ],
            }),
        ),
        metric(
            "requests",
            Data::Sum(Sum {
                data_points: vec![gauge_point(now, 4.0), gauge_point(now, -1.0)],
                is_monotonic: true,
                aggregation_temporality: otlp_metrics::AggregationTemporality::Delta as i32,
            }),
        ),
        metric(
            "latency",
            Data::Histogram(Histogram {
                data_points: vec![
                    histogram_point(now, 6, vec![1, 2, 3]),
                    histogram_point(now, 7, vec![1, 2, 3]),
                ],
                aggregation_temporality: otlp_metrics::AggregationTemporality::Delta as i32,
            }),
        ),
        metric(
            "",
            Data::Gauge(Gauge {
                data_points: vec![gauge_point(now, 1.0)],
            }),
        ),
    ]);
    let partial = post_metrics(&harness, &request).await;
    assert_eq!(partial.rejected_data_points, 6);
    assert_eq!(
        partial.error_message,
        "6 data points rejected: metric \"temperature\": value is NaN, not a finite number; \
         metric \"temperature\": value is inf, not a finite number; metric \"temperature\": \
         time_unix_nano "
            .to_owned()
            + &(now + 2 * 3_600 * 1_000_000_000).to_string()
            + " is too far in the future; metric \"requests\": a monotonic sum cannot be \
               negative, got -1; metric \"latency\": count is 7 but the buckets hold 6; and 1 more"
    );

    let topic = harness.config.bus.topics().metrics;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    let metrics = metrics_by_name(&messages);
    assert_eq!(
        metrics.keys().collect::<Vec<_>>(),
        ["latency", "requests", "temperature"]
    );
    match &metrics["temperature"].data {
        Some(Data::Gauge(g)) => assert_eq!(g.data_points, vec![gauge_point(now, 21.5)]),
        other => panic!("{other:?}"),
    }
    match &metrics["requests"].data {
        Some(Data::Sum(s)) => assert_eq!(s.data_points, vec![gauge_point(now, 4.0)]),
        other => panic!("{other:?}"),
    }
    match &metrics["latency"].data {
        Some(Data::Histogram(h)) => {
            assert_eq!(h.data_points, vec![histogram_point(now, 6, vec![1, 2, 3])]);
        }
        other => panic!("{other:?}"),
    }
    harness.stop().await;
}

/// Exponential histograms whose buckets stand for values past the finite
/// range, or that have too many buckets, are rejected at the door: such a
/// pair of cumulative points (offset 1000, then −2³¹) once made the
/// aggregator allocate 16 GiB and ended `vigil up`.
#[tokio::test]
async fn exponential_histograms_out_of_range_are_rejected() {
    use otlp_metrics::exponential_histogram_data_point::Buckets;
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let now = now_ns();
    let point = |offset: i32, counts: Vec<u64>| otlp_metrics::ExponentialHistogramDataPoint {
        start_time_unix_nano: now - 1_000_000_000,
        time_unix_nano: now,
        count: counts.iter().sum(),
        scale: 20,
        positive: Some(Buckets {
            offset,
            bucket_counts: counts,
        }),
        ..Default::default()
    };
    let request = metrics_request(vec![metric(
        "latency",
        Data::ExponentialHistogram(otlp_metrics::ExponentialHistogram {
            data_points: vec![
                point(1_000, vec![1, 2]),
                point(i32::MIN, vec![1]),
                point(0, vec![1; 16_385]),
            ],
            aggregation_temporality: otlp_metrics::AggregationTemporality::Cumulative as i32,
        }),
    )]);
    let partial = post_metrics(&harness, &request).await;
    assert_eq!(
        (partial.rejected_data_points, partial.error_message.as_str()),
        (
            2,
            "2 data points rejected: metric \"latency\": 1 positive buckets from offset \
             -2147483648 stand for values beyond the finite range at scale 20; metric \
             \"latency\": 16385 positive buckets, more than 16384"
        )
    );
    let topic = harness.config.bus.topics().metrics;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    match &metrics_by_name(&messages)["latency"].data {
        Some(Data::ExponentialHistogram(h)) => {
            assert_eq!(h.data_points, vec![point(1_000, vec![1, 2])]);
        }
        other => panic!("{other:?}"),
    }
    harness.stop().await;
}

#[tokio::test]
async fn missing_and_unknown_tokens_are_unauthenticated() {
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let mut client = MetricsServiceClient::connect(harness.grpc_url())
        .await
        .unwrap();
    for token in [None, Some("not-a-known-token-0000")] {
        let request = with_token(metrics_request(vec![]), token);
        let status = client.export(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }
    let response = reqwest::Client::new()
        .post(harness.http_url("/v1/traces"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "code": 16,
            "message": "missing credentials: send the header `authorization: Bearer <token>`"
        })
    );
    harness.stop().await;
}

#[tokio::test]
async fn malformed_and_unsupported_http_bodies_get_clear_errors() {
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let client = reqwest::Client::new();
    let post = |content_type: &str, encoding: Option<&str>, body: Vec<u8>| {
        let mut request = client
            .post(harness.http_url("/v1/traces"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", content_type)
            .body(body);
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        request.send()
    };
    let status_of = |body: &[u8]| tonic_types::Status::decode(body).unwrap();

    let response = post("application/x-protobuf", None, vec![0x0a, 0xff, 0xff])
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let status = status_of(&response.bytes().await.unwrap());
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(
        status.message.starts_with("malformed protobuf: "),
        "{}",
        status.message
    );

    let response = post("application/json", None, b"{\"resourceSpans\": [".to_vec())
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON: "),
        "{body}"
    );

    let response = post("text/plain", None, b"hello".to_vec()).await.unwrap();
    assert_eq!(response.status(), 415);

    let response = post("application/json", Some("br"), b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    // A gzip body that inflates past the 16 MiB limit is refused whole.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut encoder, &vec![b' '; 17 * 1024 * 1024]).unwrap();
    let bomb = encoder.finish().unwrap();
    let response = post("application/json", Some("gzip"), bomb).await.unwrap();
    assert_eq!(response.status(), 413);

    // A well-formed gzip JSON body is taken.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, b"{\"resourceSpans\": []}").unwrap();
    let response = post("application/json", Some("gzip"), encoder.finish().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "partialSuccess": null }),
        "nothing rejected"
    );
    harness.stop().await;
}

/// A message whose field 1 is a number where OTLP requests have a list of
/// resources: valid protobuf framing, invalid OTLP.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(uint64, tag = "1")]
    resource_spans: u64,
}

#[tokio::test]
async fn malformed_grpc_requests_are_invalid_argument() {
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let channel = tonic::transport::Endpoint::new(harness.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<WrongWireType, ExportTraceServiceResponse> =
        tonic_prost::ProstCodec::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let request = with_token(WrongWireType { resource_spans: 7 }, Some(TOKEN));
    let status = client
        .unary(request, path.clone(), codec.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("failed to decode Protobuf message"),
        "{}",
        status.message()
    );
    // With a wrong token the same body is never decoded: the token is
    // checked from the headers first.
    let request = with_token(
        WrongWireType { resource_spans: 7 },
        Some("not-a-known-token-0000"),
    );
    client.ready().await.unwrap();
    let status = client.unary(request, path, codec).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unauthenticated, "unknown token")
    );
    harness.stop().await;
}

/// A body over the size limit with a wrong token is refused for the token,
/// unread, on OTLP/HTTP and on remote-write (which had no limit before).
#[tokio::test]
async fn a_wrong_token_is_refused_before_the_body_is_read() {
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let client = reqwest::Client::new();
    let over = vec![0u8; harness.config.collector.max_message_bytes + 1];
    for path in ["/v1/traces", "/api/v1/write"] {
        for (token, expected) in [("not-a-known-token-0000", 401), (TOKEN, 413)] {
            let response = client
                .post(harness.http_url(path))
                .header("content-type", "application/x-protobuf")
                .header("content-encoding", "snappy")
                .header("authorization", format!("Bearer {token}"))
                .body(over.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), expected, "{path} with {token}");
        }
    }
    harness.stop().await;
}

/// Names, attribute keys, events and links per span over their limits are
/// rejected, each with its reason; the valid span goes on.
#[tokio::test]
async fn spans_over_the_size_limits_are_rejected() {
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let now = now_ns();
    let ok = |name: &str| span(name, vec![3; 16], now - 1_000, now, Vec::new());
    let event = Event {
        time_unix_nano: now,
        name: "retry".to_owned(),
        ..Default::default()
    };
    let spans = vec![
        ok("kept"),
        ok(&"n".repeat(1_025)),
        span(
            "long key",
            vec![3; 16],
            now - 1_000,
            now,
            vec![attribute(&"k".repeat(1_025), "v")],
        ),
        Span {
            events: vec![event; 129],
            ..ok("events")
        },
        Span {
            links: vec![Link::default(); 129],
            ..ok("links")
        },
    ];
    let partial = export_spans(&harness, trace_request(vec![("checkout", spans)]))
        .await
        .unwrap();
    assert_eq!(partial.rejected_spans, 4);
    assert_eq!(
        partial.error_message,
        format!(
            "4 spans rejected: span {:?}: the name has 1025 bytes, more than the limit of 1024; \
             span \"long key\": an attribute key has 1025 bytes, more than the limit of 1024; \
             span \"events\": 129 events, more than the limit of 128; \
             span \"links\": 129 links, more than the limit of 128",
            "n".repeat(1_025)
        )
    );
    let topic = harness.config.bus.topics().traces;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    assert_eq!(span_names(&messages), ["kept"]);
    harness.stop().await;
}

/// A resource or scope over the attribute limits takes its spans with it,
/// and values nested past the element limit are refused; the rest goes on.
#[tokio::test]
async fn resources_scopes_and_nested_values_over_the_limits_are_rejected() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope};
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let now = now_ns();
    let ok = |name: &str| span(name, vec![4; 16], now - 1_000, now, Vec::new());
    let array = |n: usize| KeyValue {
        key: "list".to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue::default(); n],
            })),
        }),
        ..Default::default()
    };
    // 1 + 1023 elements: exactly the limit of 1024 values.
    let at_limit = span(
        "at limit",
        vec![4; 16],
        now - 1_000,
        now,
        vec![array(1_023)],
    );
    let nested = span("nested", vec![4; 16], now - 1_000, now, vec![array(1_024)]);
    let mut request = trace_request(vec![
        ("checkout", vec![ok("kept"), at_limit, nested]),
        ("crowded", vec![ok("a"), ok("b")]),
    ]);
    request.resource_spans[1]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .extend((0..128).map(|i| attribute(&format!("k{i}"), "v")));
    request.resource_spans[0].scope_spans.push(ScopeSpans {
        scope: Some(InstrumentationScope {
            name: "io.vigil.long".to_owned(),
            attributes: vec![attribute(&"k".repeat(1_025), "v")],
            ..Default::default()
        }),
        spans: vec![ok("c"), ok("d"), ok("e")],
        ..Default::default()
    });
    let partial = export_spans(&harness, request).await.unwrap();
    assert_eq!(partial.rejected_spans, 6);
    assert_eq!(
        partial.error_message,
        "6 spans rejected: span \"nested\": its attributes hold 1025 values (arrays and lists \
         count each element), more than the limit of 1024; \
         scope \"io.vigil.long\": an attribute key has 1025 bytes, more than the limit of 1024; \
         resource: 129 attributes, more than the limit of 128"
    );
    let topic = harness.config.bus.topics().traces;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    assert_eq!(span_names(&messages), ["kept", "at limit"]);
    let metrics = harness.scrape().await;
    for (reason, expected) in [
        ("too_many_values", 1.0),
        ("name_too_long", 3.0),
        ("too_many_attributes", 2.0),
    ] {
        let series = format!(
            r#"vigil_collector_items_rejected_total{{signal="traces",tenant="acme",reason="{reason}"}}"#
        );
        assert_eq!(
            sample(&metrics, &series),
            Some(expected),
            "{series}\n{metrics}"
        );
    }
    harness.stop().await;
}

/// Empty spans cost 2 bytes sent and hundreds decoded: a request whose
/// decoded size would pass the budget is refused before it is decoded, over
/// gRPC (gzip) and HTTP alike, and honest requests still pass.
#[tokio::test]
async fn a_request_that_would_decode_past_the_budget_is_refused_unread() {
    let harness = Harness::start_configured(embedded_bus(), |config| {
        config.collector.max_decoded_bytes_in_flight = 16 << 20;
    })
    .await;
    let amplified = ExportTraceServiceRequest {
        resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
            scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                spans: vec![Span::default(); 500_000],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut client = TraceServiceClient::connect(harness.grpc_url())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let status = client
        .export(with_token(amplified.clone(), Some(TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("more than the 16 MiB the collector decodes at once"),
        "{}",
        status.message()
    );
    let response = reqwest::Client::new()
        .post(harness.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(amplified.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // The same in JSON: an empty object is 3 bytes sent.
    let spans = vec!["{}"; 100_000].join(",");
    let response = reqwest::Client::new()
        .post(harness.http_url("/v1/traces"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        export_spans(&harness, one_span_request("honest")).await,
        None
    );
    harness.stop().await;
}

fn one_span_request(name: &str) -> ExportTraceServiceRequest {
    let now = now_ns();
    let pad = vec![attribute("pad", &"x".repeat(600))];
    trace_request(vec![(
        "checkout",
        vec![span(name, vec![3; 16], now - 1000, now, pad)],
    )])
}

/// A trace request with one resource per `(service, spans)`.
fn trace_request(resources: Vec<(&str, Vec<Span>)>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: otlp_resource(service),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// Exports over OTLP/gRPC with the tenant's token; the partial success, if any.
async fn export_spans(
    harness: &Harness,
    request: ExportTraceServiceRequest,
) -> Option<ExportTracePartialSuccess> {
    let mut client = TraceServiceClient::connect(harness.grpc_url())
        .await
        .unwrap();
    let response = client
        .export(with_token(request, Some(TOKEN)))
        .await
        .unwrap();
    response.into_inner().partial_success
}

fn span_names(messages: &[Message]) -> Vec<String> {
    decode::<ExportTraceServiceRequest>(messages)
        .into_iter()
        .flat_map(|r| r.resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .map(|s| s.name)
        .collect()
}

#[tokio::test]
async fn a_full_bus_answers_resource_exhausted_with_retry_info_and_429() {
    // Room for one request of about 700 bytes that nobody consumes yet.
    let bus = EmbeddedBus::new(
        &EmbeddedBusConfig {
            max_bytes_per_topic: 1_000,
            ..embedded_bus_config()
        },
        Duration::from_millis(200),
    )
    .unwrap();
    let harness = Harness::start_on(Arc::new(bus)).await;
    let topic = harness.config.bus.topics().traces;
    let mut reader = harness.bus.subscribe(&topic, "reader").await.unwrap();
    let mut client = TraceServiceClient::connect(harness.grpc_url())
        .await
        .unwrap();
    client
        .export(with_token(one_span_request("first"), Some(TOKEN)))
        .await
        .unwrap();

    let status = client
        .export(with_token(one_span_request("second"), Some(TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    use tonic_types::StatusExt as _;
    let retry = status
        .get_details_retry_info()
        .expect("RetryInfo, so exporters retry");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));

    let response = reqwest::Client::new()
        .post(harness.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(one_span_request("second").encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");

    // Once the reader makes room, the client's retry lands.
    let taken = reader.poll(10, Duration::from_secs(1)).await.unwrap();
    reader
        .commit(&vigil_bus::positions_after(&taken))
        .await
        .unwrap();
    client
        .export(with_token(one_span_request("second"), Some(TOKEN)))
        .await
        .unwrap();
    let rest = reader.poll(10, Duration::from_secs(1)).await.unwrap();
    let all: Vec<Message> = taken.into_iter().chain(rest).collect();
    assert_eq!(
        span_names(&all),
        ["first", "second"],
        "refused requests left nothing behind"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_answering_gives_unavailable_and_the_retry_lands() {
    let Some(broker) = vigil_testing::Broker::start() else {
        return;
    };
    let bus = KafkaBus::new(&broker.config(), Duration::from_secs(2)).unwrap();
    let harness = Harness::start_on(Arc::new(bus)).await;
    let mut client = TraceServiceClient::connect(harness.grpc_url())
        .await
        .unwrap();
    client
        .export(with_token(one_span_request("before"), Some(TOKEN)))
        .await
        .unwrap();

    broker.pause();
    let status = client
        .export(with_token(one_span_request("during"), Some(TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let response = reqwest::Client::new()
        .post(harness.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(one_span_request("during").encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");

    broker.resume();
    // The exporter's retry, as OTLP clients do on UNAVAILABLE.
    let deadline = Instant::now() + DEADLINE;
    while let Err(status) = client
        .export(with_token(one_span_request("during"), Some(TOKEN)))
        .await
    {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(Instant::now() < deadline, "the retry never landed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client
        .export(with_token(one_span_request("after"), Some(TOKEN)))
        .await
        .unwrap();

    let topic = harness.config.bus.topics().traces;
    let messages = harness
        .read(&topic, |m| span_names(m).iter().any(|n| n == "after"))
        .await;
    let names = span_names(&messages);
    let count = |name: &str| names.iter().filter(|n| *n == name).count();
    assert_eq!((count("before"), count("after")), (1, 1), "{names:?}");
    // Acknowledged once; the refused attempts may have reached the broker
    // too (at-least-once, as with any OTLP retry), never more often than tried.
    assert!((1..=3).contains(&count("during")), "{names:?}");
    harness.stop().await;
}

/// `n` spans named `{prefix}{i}` of service checkout.
fn spans(prefix: &str, n: usize) -> ExportTraceServiceRequest {
    let now = now_ns();
    let spans = (0..n)
        .map(|i| {
            span(
                &format!("{prefix}{i}"),
                vec![1; 16],
                now - 1000,
                now,
                vec![],
            )
        })
        .collect();
    trace_request(vec![("checkout", spans)])
}

/// Posts `request` as OTLP/HTTP protobuf with `token`.
async fn post_spans(
    harness: &Harness,
    request: &ExportTraceServiceRequest,
    token: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(harness.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(token)
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap()
}

/// A request over the tenant's rate is refused whole, with the time after
/// which it fits (RetryInfo on gRPC, Retry-After on HTTP), so the exporter
/// retries it and nothing is lost; retried then, it is stored.
#[tokio::test]
async fn a_request_over_the_rate_is_refused_whole_until_it_fits() {
    let harness = Harness::start_configured(embedded_bus(), |config| {
        config.collector.limits.tenant_items_per_second = 5;
        config.collector.limits.tenant_burst_items = 10;
    })
    .await;
    let mut client = TraceServiceClient::connect(harness.grpc_url())
        .await
        .unwrap();
    let started = Instant::now();
    client
        .export(with_token(spans("a", 8), Some(TOKEN)))
        .await
        .unwrap();
    // 2 left of 10: 8 more fit 1.2 s later, less the time since.
    let status = client
        .export(with_token(spans("b", 8), Some(TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("tenant acme is over its limit of 5 items/s; retry this request after "),
        "{}",
        status.message()
    );
    use tonic_types::StatusExt as _;
    let delay = status
        .get_details_retry_info()
        .and_then(|retry| retry.retry_delay)
        .expect("RetryInfo, so exporters retry");
    let asked = Duration::from_millis(1200);
    assert!(
        delay <= asked && delay >= asked - started.elapsed(),
        "{delay:?}"
    );
    let response = post_spans(&harness, &spans("b", 8), TOKEN).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2", "1.2 s rounded up");

    tokio::time::sleep(delay).await;
    client
        .export(with_token(spans("b", 8), Some(TOKEN)))
        .await
        .unwrap();
    let topic = harness.config.bus.topics().traces;
    let messages = harness.read(&topic, |m| span_names(m).len() >= 16).await;
    let expected: Vec<String> = (0..8)
        .map(|i| format!("a{i}"))
        .chain((0..8).map(|i| format!("b{i}")))
        .collect();
    assert_eq!(span_names(&messages), expected);
    let metrics = harness.scrape().await;
    let series = r#"vigil_collector_items_rejected_total{signal="traces",tenant="acme",reason="rate_limited"}"#;
    assert_eq!(sample(&metrics, series), Some(16.0), "two refusals of 8");
    harness.stop().await;
}

/// Each token has a bucket of its own beside its tenant's: one token over
/// its rate (an app's, say) leaves the tenant's other tokens their rate.
#[tokio::test]
async fn each_token_has_its_own_rate_beside_its_tenant() {
    const OTHER: &str = "acme-other-token-0123";
    let harness = Harness::start_configured(embedded_bus(), |config| {
        config.collector.tenants[0].tokens.push(Secret::new(OTHER));
        config.collector.limits.token_items_per_second = 5;
        config.collector.limits.token_burst_items = 10;
    })
    .await;
    let first = post_spans(&harness, &spans("a", 10), TOKEN).await;
    assert_eq!(first.status(), 200);
    let refused = post_spans(&harness, &spans("b", 3), TOKEN).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let other = post_spans(&harness, &spans("c", 10), OTHER).await;
    assert_eq!(other.status(), 200, "the other token has its own bucket");
    let topic = harness.config.bus.topics().traces;
    let messages = harness.read(&topic, |m| span_names(m).len() >= 20).await;
    assert_eq!(span_names(&messages).len(), 20);
    harness.stop().await;
}

fn gauge_with_hosts(name: &str, hosts: &[&str]) -> Metric {
    let now = now_ns();
    let data_points = hosts
        .iter()
        .map(|host| NumberDataPoint {
            attributes: vec![attribute("host", host)],
            ..gauge_point(now, 1.0)
        })
        .collect();
    metric(name, Data::Gauge(Gauge { data_points }))
}

fn hosts_stored(messages: &[Message], name: &str) -> Vec<String> {
    decode::<ExportMetricsServiceRequest>(messages)
        .into_iter()
        .flat_map(|r| r.resource_metrics)
        .flat_map(|r| r.scope_metrics)
        .flat_map(|s| s.metrics)
        .filter(|m| m.name == name)
        .flat_map(|m| match m.data {
            Some(Data::Gauge(g)) => g.data_points,
            other => panic!("{other:?}"),
        })
        .map(|p| string_attribute(&p.attributes, "host").unwrap())
        .collect()
}

#[tokio::test]
async fn new_series_over_the_limit_are_rejected_and_known_ones_pass() {
    let harness = Harness::start_configured(embedded_bus(), |config| {
        config.collector.limits.max_new_series_per_metric_per_minute = 3;
    })
    .await;
    let export = async |metrics| export_metrics(&harness, metrics).await;
    let first = export(vec![
        gauge_with_hosts("cpu", &["h0", "h1", "h2", "h3", "h4"]),
        gauge_with_hosts("memory", &["h0", "h1", "h2"]),
    ])
    .await
    .unwrap();
    assert_eq!(first.rejected_data_points, 2);
    assert!(
        first.error_message.starts_with(
            "2 data points rejected: metric \"cpu\": more than 3 new series this minute"
        ),
        "{}",
        first.error_message
    );
    let second = export(vec![gauge_with_hosts("cpu", &["h0", "h5"])])
        .await
        .unwrap();
    assert_eq!(
        second.rejected_data_points, 1,
        "h0 is known, h5 is a fourth new series"
    );

    let topic = harness.config.bus.topics().metrics;
    let messages = harness.read(&topic, |m| m.len() >= 2).await;
    assert_eq!(hosts_stored(&messages, "cpu"), ["h0", "h1", "h2", "h0"]);
    assert_eq!(hosts_stored(&messages, "memory"), ["h0", "h1", "h2"]);
    harness.stop().await;
}

/// Exports over OTLP/gRPC with the tenant's token; the partial success, if any.
async fn export_metrics(
    harness: &Harness,
    metrics: Vec<Metric>,
) -> Option<opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess> {
    let mut client = MetricsServiceClient::connect(harness.grpc_url())
        .await
        .unwrap();
    let request = with_token(metrics_request(metrics), Some(TOKEN));
    client
        .export(request)
        .await
        .unwrap()
        .into_inner()
        .partial_success
}

/// Past its limit of active series a tenant's new series are rejected
/// whatever metric they belong to, and its known ones go on.
#[tokio::test]
async fn a_tenant_at_its_active_series_limit_keeps_only_its_known_series() {
    let harness = Harness::start_configured(embedded_bus(), |config| {
        config.collector.limits.max_active_series_per_tenant = 4;
    })
    .await;
    let export = async |metrics| export_metrics(&harness, metrics).await;
    let first = export(vec![
        gauge_with_hosts("cpu", &["h0", "h1", "h2"]),
        gauge_with_hosts("memory", &["h0", "h1"]),
        gauge_with_hosts("disk", &["h0"]),
    ])
    .await
    .unwrap();
    assert_eq!(first.rejected_data_points, 2);
    let why = "the tenant has its limit of 4 active series; a new series can start once \
               others go unseen for 3600 s";
    assert_eq!(
        first.error_message,
        format!("2 data points rejected: metric \"memory\": {why}; metric \"disk\": {why}")
    );
    assert_eq!(
        export(vec![gauge_with_hosts("cpu", &["h2", "h0"])]).await,
        None,
        "known series pass"
    );
    let topic = harness.config.bus.topics().metrics;
    let messages = harness.read(&topic, |m| m.len() >= 2).await;
    assert_eq!(
        hosts_stored(&messages, "cpu"),
        ["h0", "h1", "h2", "h2", "h0"]
    );
    assert_eq!(hosts_stored(&messages, "memory"), ["h0"]);
    assert_eq!(hosts_stored(&messages, "disk"), Vec::<String>::new());
    let metrics = harness.scrape().await;
    let series = r#"vigil_collector_items_rejected_total{signal="metrics",tenant="acme",reason="series_limit"}"#;
    assert_eq!(sample(&metrics, series), Some(2.0), "{metrics}");
    harness.stop().await;
}

#[tokio::test]
async fn requests_over_the_size_limit_are_refused_whole() {
    let harness = Harness::start_configured(embedded_bus(), |config| {
        config.collector.max_message_bytes = 4096;
    })
    .await;
    let big = one_span_request(&"x".repeat(5000));
    let mut client = TraceServiceClient::connect(harness.grpc_url())
        .await
        .unwrap();
    let status = client
        .export(with_token(big.clone(), Some(TOKEN)))
        .await
        .unwrap_err();
    use tonic_types::StatusExt as _;
    // RESOURCE_EXHAUSTED without RetryInfo: OTLP exporters do not resend it.
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.get_details_retry_info().is_none());
    assert_eq!(
        status.message(),
        "the message is more than 4096 bytes (collector.max_message_bytes)"
    );

    let response = reqwest::Client::new()
        .post(harness.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(big.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(response.headers().get("retry-after").is_none());
    let status = tonic_types::Status::decode(&response.bytes().await.unwrap()[..]).unwrap();
    assert_eq!(
        status.message,
        "the body is more than 4096 bytes (collector.max_message_bytes); send smaller batches"
    );
    let topic = harness.config.bus.topics().traces;
    let mut reader = harness.bus.subscribe(&topic, "reader").await.unwrap();
    assert!(
        reader
            .poll(10, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    harness.stop().await;
}
