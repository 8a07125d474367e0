//! The OpenTelemetry SDK over gRPC and HTTP (protobuf and JSON), on both
//! buses: spans, metrics and logs arrive exactly as sent.

use super::*;

/// How the SDK exports.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

/// A closure that builds the SDK's `$exporter` (SpanExporter, MetricExporter,
/// LogExporter) for `$transport`, with the tenant's token; call it where the
/// SDK runs (inside `spawn_blocking`).
macro_rules! exporter {
    ($exporter:ident, $transport:expr, $harness:expr, $path:expr) => {{
        let (transport, grpc, http) = ($transport, $harness.grpc_url(), $harness.http_url($path));
        move || match transport {
            Transport::Grpc => {
                let mut metadata = MetadataMap::new();
                metadata.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
                $exporter::builder()
                    .with_tonic()
                    .with_endpoint(grpc)
                    .with_metadata(metadata)
                    .with_compression(Compression::Gzip)
                    .build()
                    .unwrap()
            }
            Transport::HttpProtobuf | Transport::HttpJson => {
                let protocol = match transport {
                    Transport::HttpJson => Protocol::HttpJson,
                    _ => Protocol::HttpBinary,
                };
                $exporter::builder()
                    .with_http()
                    .with_protocol(protocol)
                    .with_endpoint(http)
                    .with_headers(bearer_header())
                    .build()
                    .unwrap()
            }
        }
    }};
}

/// Three tests of one body, one per transport, each run on both buses.
macro_rules! over_each_transport {
    ($($body:ident: $grpc:ident, $protobuf:ident, $json:ident;)*) => {$(
        async fn $grpc(backend: Backend) {
            $body(backend, Transport::Grpc).await;
        }
        async fn $protobuf(backend: Backend) {
            $body(backend, Transport::HttpProtobuf).await;
        }
        async fn $json(backend: Backend) {
            $body(backend, Transport::HttpJson).await;
        }
    )*};
}

over_each_transport! {
    sdk_spans_arrive_exactly: spans_over_grpc, spans_over_http_protobuf, spans_over_http_json;
    sdk_metrics_arrive_exactly: metrics_over_grpc, metrics_over_http_protobuf, metrics_over_http_json;
    sdk_logs_arrive_exactly: logs_over_grpc, logs_over_http_protobuf, logs_over_http_json;
}

async fn sdk_spans_arrive_exactly(backend: Backend, transport: Transport) {
    let Some(harness) = Harness::start(backend).await else {
        return;
    };
    let build = exporter!(SpanExporter, transport, harness, "/v1/traces");
    tokio::task::spawn_blocking(move || {
        let exporter = build();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource("checkout"))
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer("vigil-test");
        let mut parent = tracer.start("POST /pay");
        parent.set_attribute(SdkKeyValue::new("http.route", "/pay"));
        let cx = Context::current_with_span(parent);
        for step in ["reserve", "charge"] {
            let mut child = tracer.start_with_context(step, &cx);
            child.set_attribute(SdkKeyValue::new("step", step));
            child.end();
        }
        cx.span().end();
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();

    let topic = harness.config.bus.topics().traces;
    let messages = harness
        .read(&topic, |m| {
            decode::<ExportTraceServiceRequest>(m)
                .iter()
                .flat_map(|r| &r.resource_spans)
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum::<usize>()
                >= 3
        })
        .await;
    assert!(messages.iter().all(|m| m.key == "acme/checkout"));
    let spans: Vec<Span> = decode::<ExportTraceServiceRequest>(&messages)
        .into_iter()
        .flat_map(|r| r.resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    assert_eq!(spans.len(), 3);
    let by_name: BTreeMap<&str, &Span> = spans.iter().map(|s| (s.name.as_str(), s)).collect();
    let root = by_name["POST /pay"];
    assert!(root.parent_span_id.is_empty());
    assert_eq!(
        string_attribute(&root.attributes, "http.route").as_deref(),
        Some("/pay")
    );
    for step in ["reserve", "charge"] {
        let child = by_name[step];
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent_span_id, root.span_id);
        assert_eq!(
            string_attribute(&child.attributes, "step").as_deref(),
            Some(step)
        );
    }
    harness.stop().await;
}

fn exponential_view(instrument: &Instrument) -> Option<Stream> {
    (instrument.name() == "payment.amount").then(|| {
        Stream::builder()
            .with_aggregation(Aggregation::Base2ExponentialHistogram {
                max_size: 160,
                max_scale: 20,
                record_min_max: true,
            })
            .build()
            .unwrap()
    })
}

async fn sdk_metrics_arrive_exactly(backend: Backend, transport: Transport) {
    let Some(harness) = Harness::start(backend).await else {
        return;
    };
    let build = exporter!(MetricExporter, transport, harness, "/v1/metrics");
    tokio::task::spawn_blocking(move || {
        let exporter = build();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource("ledger"))
            .with_periodic_exporter(exporter)
            .with_view(exponential_view)
            .build();
        let meter = provider.meter("vigil-test");
        let unit = [SdkKeyValue::new("vigil.unit", "unit-a")];
        let counter = meter.u64_counter("payments").build();
        counter.add(5, &unit);
        counter.add(7, &unit);
        let in_flight = meter.i64_up_down_counter("in_flight").build();
        in_flight.add(10, &unit);
        in_flight.add(-3, &unit);
        let gauge = meter.f64_gauge("queue.depth").build();
        gauge.record(3.0, &unit);
        gauge.record(42.5, &unit);
        let latency = meter
            .f64_histogram("latency")
            .with_boundaries(vec![10.0, 100.0, 1000.0])
            .build();
        for value in [1.0, 20.0, 30.0, 5000.0] {
            latency.record(value, &unit);
        }
        let amount = meter.f64_histogram("payment.amount").build();
        for value in [0.0, 12.5, 99.0, 99.0, 1000.0] {
            amount.record(value, &unit);
        }
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();

    let topic = harness.config.bus.topics().metrics;
    let messages = harness
        .read(&topic, |m| metrics_by_name(m).len() >= 5)
        .await;
    assert!(messages.iter().all(|m| m.key == "acme/ledger"));
    let metrics = metrics_by_name(&messages);
    assert_eq!(metrics.len(), 5, "{:?}", metrics.keys());
    let number = |name: &str| -> (f64, bool) {
        let (points, monotonic) = match &metrics[name].data {
            Some(Data::Sum(s)) => (&s.data_points, s.is_monotonic),
            Some(Data::Gauge(g)) => (&g.data_points, false),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(points.len(), 1, "{name}");
        assert_eq!(
            string_attribute(&points[0].attributes, "vigil.unit").as_deref(),
            Some("unit-a")
        );
        let value = match points[0].value {
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            Some(number_data_point::Value::AsDouble(v)) => v,
            None => panic!("{name} has no value"),
        };
        (value, monotonic)
    };
    assert_eq!(number("payments"), (12.0, true));
    assert_eq!(number("in_flight"), (7.0, false));
    assert_eq!(number("queue.depth"), (42.5, false));
    match &metrics["latency"].data {
        Some(Data::Histogram(h)) => {
            let p = &h.data_points[0];
            assert_eq!(
                (p.count, p.sum, p.min, p.max),
                (4, Some(5051.0), Some(1.0), Some(5000.0))
            );
            assert_eq!(p.explicit_bounds, vec![10.0, 100.0, 1000.0]);
            assert_eq!(p.bucket_counts, vec![1, 2, 0, 1]);
        }
        other => panic!("latency: {other:?}"),
    }
    match &metrics["payment.amount"].data {
        Some(Data::ExponentialHistogram(h)) => {
            let p = &h.data_points[0];
            assert_eq!((p.count, p.zero_count), (5, 1));
            assert_eq!(
                (p.sum, p.min, p.max),
                (Some(1210.5), Some(0.0), Some(1000.0))
            );
            let buckets = p.positive.as_ref().unwrap();
            assert_eq!(buckets.bucket_counts.iter().sum::<u64>(), 4);
        }
        other => panic!("payment.amount: {other:?}"),
    }
    harness.stop().await;
}

async fn sdk_logs_arrive_exactly(backend: Backend, transport: Transport) {
    let Some(harness) = Harness::start(backend).await else {
        return;
    };
    let build = exporter!(LogExporter, transport, harness, "/v1/logs");
    tokio::task::spawn_blocking(move || {
        let exporter = build();
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource("refunds"))
            .with_batch_exporter(exporter)
            .build();
        let logger = provider.logger("vigil-test");
        for (i, body) in ["refund queued", "refund failed"].into_iter().enumerate() {
            let mut record = logger.create_log_record();
            record.set_body(LogValue::from(body));
            record.set_severity_number(if i == 0 {
                Severity::Info
            } else {
                Severity::Error
            });
            record.set_timestamp(SystemTime::now());
            record.add_attribute("order.id", 1000 + i as i64);
            logger.emit(record);
        }
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();

    let topic = harness.config.bus.topics().logs;
    let records = |m: &[Message]| {
        decode::<ExportLogsServiceRequest>(m)
            .into_iter()
            .flat_map(|r| r.resource_logs)
            .flat_map(|r| r.scope_logs)
            .flat_map(|s| s.log_records)
            .collect::<Vec<_>>()
    };
    let messages = harness.read(&topic, |m| records(m).len() >= 2).await;
    assert!(messages.iter().all(|m| m.key == "acme/refunds"));
    let records = records(&messages);
    let seen: Vec<(String, i32, i64)> = records
        .iter()
        .map(|r| {
            let body = match r.body.as_ref().and_then(|b| b.value.clone()) {
                Some(any_value::Value::StringValue(s)) => s,
                other => panic!("{other:?}"),
            };
            let order = match r.attributes[0].value.as_ref().and_then(|v| v.value.clone()) {
                Some(any_value::Value::IntValue(i)) => i,
                other => panic!("{other:?}"),
            };
            (body, r.severity_number, order)
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("refund queued".to_owned(), Severity::Info as i32, 1000),
            ("refund failed".to_owned(), Severity::Error as i32, 1001),
        ]
    );
    harness.stop().await;
}

vigil_testing::on_both_backends!(
    spans_over_grpc,
    spans_over_http_protobuf,
    spans_over_http_json,
    metrics_over_grpc,
    metrics_over_http_protobuf,
    metrics_over_http_json,
    logs_over_grpc,
    logs_over_http_protobuf,
    logs_over_http_json,
);
