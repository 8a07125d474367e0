//! The collector end to end: the real OpenTelemetry SDK exports through OTLP
//! gRPC and HTTP, and the test reads back from the bus (embedded and Kafka)
//! exactly what was sent. Bad input goes through the generated OTLP gRPC
//! clients and plain HTTP.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::logs::{
    AnyValue as LogValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity,
};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue as SdkKeyValue};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{
    Compression, LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig,
    WithHttpConfig, WithTonicConfig,
};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{
    self as otlp_metrics, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use opentelemetry_sdk::Resource as SdkResource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{Aggregation, Instrument, SdkMeterProvider, Stream};
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message as _;
use tokio::time::Instant;
use vigil_bus::{Bus, EmbeddedBus, KafkaBus, Message};
use vigil_collector::Collector;
use vigil_config::{Config, EmbeddedBusConfig, Secret, TenantConfig};
use vigil_domain::shutdown::Shutdown;
use vigil_domain::tenant::TenantId;
use vigil_testing::{Backend, kafka_config, read_until, unique_name};

const TOKEN: &str = "acme-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(30);

struct Harness {
    collector: Collector,
    bus: Arc<dyn Bus>,
    config: Config,
    shutdown: Shutdown,
}

impl Harness {
    /// A collector on free ports for tenant `acme`, or `None` when Kafka is
    /// unreachable off CI.
    async fn start(backend: Backend) -> Option<Harness> {
        let timeout = Duration::from_secs(5);
        let bus: Arc<dyn Bus> = match backend {
            Backend::Embedded => Arc::new(EmbeddedBus::new(&EmbeddedBusConfig::default(), timeout)),
            Backend::Kafka => Arc::new(KafkaBus::new(&kafka_config()?, timeout).unwrap()),
        };
        Some(Harness::start_on(bus).await)
    }

    /// A collector on free ports for tenant `acme`, in front of `bus`.
    async fn start_on(bus: Arc<dyn Bus>) -> Harness {
        Harness::start_configured(bus, |_| {}).await
    }

    /// As [`Harness::start_on`], with settings changed by `configure`.
    async fn start_configured(bus: Arc<dyn Bus>, configure: impl FnOnce(&mut Config)) -> Harness {
        let mut config = Config::default();
        config.bus.topic_prefix = format!("{}.", unique_name("collector"));
        config.bus.partitions = 2;
        config.collector.grpc_listen = "127.0.0.1:0".parse().unwrap();
        config.collector.http_listen = "127.0.0.1:0".parse().unwrap();
        config.collector.tenants = vec![TenantConfig {
            id: TenantId::parse("acme").unwrap(),
            tokens: vec![Secret::new(TOKEN)],
        }];
        configure(&mut config);
        let shutdown = Shutdown::new();
        let collector = Collector::start(&config, Arc::clone(&bus), shutdown.clone())
            .await
            .unwrap();
        Harness {
            collector,
            bus,
            config,
            shutdown,
        }
    }

    fn grpc_url(&self) -> String {
        format!("http://{}", self.collector.grpc_address())
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.collector.http_address())
    }

    /// Every message on `topic` until `done` says the batch is complete.
    async fn read(&self, topic: &str, done: impl Fn(&[Message]) -> bool) -> Vec<Message> {
        let reader = unique_name("reader");
        let mut consumer = self.bus.subscribe(topic, &reader).await.unwrap();
        read_until(consumer.as_mut(), done).await
    }

    /// The collector's self-metrics, as scraped.
    async fn scrape(&self) -> String {
        let response = reqwest::get(self.http_url("/metrics")).await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.collector.wait().await.unwrap();
    }
}

/// The value of one series in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
}

fn decode<T: prost::Message + Default>(messages: &[Message]) -> Vec<T> {
    messages
        .iter()
        .map(|m| T::decode(&m.payload[..]).unwrap())
        .collect()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The exporter headers that carry the tenant's token.
fn bearer_header() -> HashMap<String, String> {
    HashMap::from([("authorization".to_owned(), format!("Bearer {TOKEN}"))])
}

fn resource(service: &str) -> SdkResource {
    SdkResource::builder()
        .with_service_name(service.to_owned())
        .build()
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

// ---------------------------------------------------------------------------
// The SDK over gRPC and HTTP, on both buses.

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

/// Every data point of the test's instruments, by metric name.
fn metrics_by_name(messages: &[Message]) -> BTreeMap<String, Metric> {
    decode::<ExportMetricsServiceRequest>(messages)
        .into_iter()
        .flat_map(|r| r.resource_metrics)
        .flat_map(|r| r.scope_metrics)
        .flat_map(|s| s.metrics)
        .map(|m| (m.name.clone(), m))
        .collect()
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

// ---------------------------------------------------------------------------
// Bad input, limits and auth (the embedded bus: these rules are the
// collector's, whatever bus is behind it).

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn otlp_resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![attribute("service.name", service)],
        ..Default::default()
    })
}

fn span(name: &str, trace_id: Vec<u8>, start: u64, end: u64, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id,
        span_id: vec![7; 8],
        name: name.to_owned(),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        ..Default::default()
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

const DAY_NS: u64 = 86_400 * 1_000_000_000;

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
    let partial =
        opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse::decode(
            &body[..],
        )
        .unwrap()
        .partial_success
        .unwrap();
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
    let status = client.unary(request, path, codec).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("failed to decode Protobuf message"),
        "{}",
        status.message()
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
        },
        Duration::from_millis(200),
    );
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

fn embedded_bus() -> Arc<dyn Bus> {
    Arc::new(EmbeddedBus::new(
        &EmbeddedBusConfig::default(),
        Duration::from_secs(5),
    ))
}

#[tokio::test]
async fn items_over_the_tenant_rate_are_rejected_and_counted() {
    let harness = Harness::start_configured(embedded_bus(), |config| {
        config.collector.limits.tenant_items_per_second = 5;
        config.collector.limits.tenant_burst_items = 10;
    })
    .await;
    let now = now_ns();
    let spans = (0..15)
        .map(|i| span(&format!("s{i}"), vec![1; 16], now - 1000, now, vec![]))
        .collect();
    let request = trace_request(vec![("checkout", spans)]);
    let partial = export_spans(&harness, request).await.unwrap();
    assert_eq!(partial.rejected_spans, 5);
    assert!(
        partial.error_message.starts_with(
            "5 spans rejected: span \"s10\": tenant acme is over its limit of 5 items/s"
        ),
        "{}",
        partial.error_message
    );
    let topic = harness.config.bus.topics().traces;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    let expected: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    assert_eq!(span_names(&messages), expected);
    let metrics = harness.scrape().await;
    let series = r#"vigil_collector_items_rejected_total{signal="traces",tenant="acme",reason="rate_limited"}"#;
    assert_eq!(sample(&metrics, series), Some(5.0));
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
    let mut client = MetricsServiceClient::connect(harness.grpc_url())
        .await
        .unwrap();
    let mut export = async |metrics| {
        let request = with_token(metrics_request(metrics), Some(TOKEN));
        client
            .export(request)
            .await
            .unwrap()
            .into_inner()
            .partial_success
    };
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

/// A series as labels and (value, timestamp in ms) samples.
type Series<'a> = (Vec<(&'a str, &'a str)>, Vec<(f64, i64)>);

fn remote_write_request(series: Vec<Series<'_>>) -> Vec<u8> {
    use vigil_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
    let write = WriteRequest {
        timeseries: series
            .into_iter()
            .map(|(labels, samples)| TimeSeries {
                labels: labels
                    .into_iter()
                    .map(|(name, value)| Label {
                        name: name.to_owned(),
                        value: value.to_owned(),
                    })
                    .collect(),
                samples: samples
                    .into_iter()
                    .map(|(value, timestamp)| Sample { value, timestamp })
                    .collect(),
                histograms: Vec::new(),
            })
            .collect(),
        metadata: Vec::new(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&write.encode_to_vec())
        .unwrap()
}

async fn post_remote_write(harness: &Harness, body: Vec<u8>, encoding: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(harness.http_url("/api/v1/write"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", encoding)
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn remote_write_arrives_as_the_same_numbers(backend: Backend) {
    let Some(harness) = Harness::start(backend).await else {
        return;
    };
    let ms = (now_ns() / 1_000_000) as i64;
    let body = remote_write_request(vec![
        (
            vec![
                ("__name__", "payments_total"),
                ("code", "200"),
                ("instance", "pay-1:9090"),
                ("job", "payments"),
            ],
            vec![(41.0, ms - 15_000), (45.0, ms)],
        ),
        (
            vec![
                ("__name__", "queue_depth"),
                ("instance", "pay-1:9090"),
                ("job", "payments"),
            ],
            vec![(7.25, ms)],
        ),
    ]);
    let response = post_remote_write(&harness, body, "snappy").await;
    assert_eq!(response.status(), 204);

    let topic = harness.config.bus.topics().metrics;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    assert!(messages.iter().all(|m| m.key == "acme/payments"));
    let requests = decode::<ExportMetricsServiceRequest>(&messages);
    let resource = requests[0].resource_metrics[0].resource.as_ref().unwrap();
    assert_eq!(
        string_attribute(&resource.attributes, "service.instance.id").as_deref(),
        Some("pay-1:9090")
    );
    let metrics = metrics_by_name(&messages);
    match &metrics["payments_total"].data {
        Some(Data::Sum(sum)) => {
            assert!(sum.is_monotonic);
            let points: Vec<(u64, Option<number_data_point::Value>, Option<String>)> = sum
                .data_points
                .iter()
                .map(|p| {
                    (
                        p.time_unix_nano,
                        p.value,
                        string_attribute(&p.attributes, "code"),
                    )
                })
                .collect();
            let at = |ms: i64| ms as u64 * 1_000_000;
            assert_eq!(
                points,
                [
                    (
                        at(ms - 15_000),
                        Some(number_data_point::Value::AsDouble(41.0)),
                        Some("200".to_owned())
                    ),
                    (
                        at(ms),
                        Some(number_data_point::Value::AsDouble(45.0)),
                        Some("200".to_owned())
                    ),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    match &metrics["queue_depth"].data {
        Some(Data::Gauge(gauge)) => {
            assert_eq!(gauge.data_points.len(), 1);
            assert_eq!(
                gauge.data_points[0].value,
                Some(number_data_point::Value::AsDouble(7.25))
            );
        }
        other => panic!("{other:?}"),
    }
    harness.stop().await;
}

#[tokio::test]
async fn remote_write_refuses_what_it_cannot_store_and_keeps_the_rest() {
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let ms = (now_ns() / 1_000_000) as i64;
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let body = remote_write_request(vec![
        (
            vec![("__name__", "up"), ("job", "api")],
            vec![(1.0, ms), (stale, ms + 1)],
        ),
        (
            vec![("__name__", "temperature"), ("job", "api")],
            vec![(f64::INFINITY, ms), (20.0, ms)],
        ),
    ]);
    let response = post_remote_write(&harness, body.clone(), "snappy").await;
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("metric \"temperature\": value is inf, not a finite number"),
        "{text}"
    );
    let topic = harness.config.bus.topics().metrics;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    let metrics = metrics_by_name(&messages);
    let points = |name: &str| match &metrics[name].data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (points("up"), points("temperature")),
        (1, 1),
        "the valid samples are stored"
    );

    // Only staleness markers rejected: that is no error.
    let only_stale = remote_write_request(vec![(
        vec![("__name__", "up"), ("job", "api")],
        vec![(stale, ms)],
    )]);
    assert_eq!(
        post_remote_write(&harness, only_stale, "snappy")
            .await
            .status(),
        204
    );
    // Not snappy-compressed, or not snappy at all.
    assert_eq!(
        post_remote_write(&harness, body, "gzip").await.status(),
        415
    );
    let response = post_remote_write(&harness, b"not snappy".to_vec(), "snappy").await;
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("malformed snappy body")
    );
    let metrics = harness.scrape().await;
    let series = r#"vigil_collector_items_rejected_total{signal="metrics",tenant="acme",reason="stale_marker"}"#;
    assert_eq!(sample(&metrics, series), Some(2.0));
    harness.stop().await;
}

fn client_context(app: &str) -> serde_json::Value {
    serde_json::json!({
        "appId": app,
        "appVersion": "5.2.0",
        "osName": "android",
        "osVersion": "14",
        "deviceModel": "SM-S918B",
        "networkType": "wifi",
        "userIdHash": "9f86d081884c7d659a2feaa0c55ad015",
        "sessionIdHash": "a3f5c1d2e4b6a7980123456789abcdef",
        "unit": "unit-a",
        "region": "eu-west-1",
        "cohort": "canary"
    })
}

async fn client_events_over_http_json_arrive_exactly(backend: Backend) {
    use vigil_proto::client::v1::ExportClientRequest;
    let Some(harness) = Harness::start(backend).await else {
        return;
    };
    let t = now_ns();
    let body = serde_json::json!({
        "batches": [{
            "context": client_context("com.acme.wallet"),
            "events": [
                { "timeUnixNano": t, "sessionStart": {} },
                { "timeUnixNano": t, "appStart": { "kind": "cold", "durationMs": 812.5 } },
                { "timeUnixNano": t, "networkRequest": {
                    "host": "api.acme.com", "route": "/v1/pay", "method": "POST",
                    "statusCode": 503, "durationMs": 1200.0, "bytesSent": 512, "bytesReceived": 87 } },
                { "timeUnixNano": t, "stutter": { "totalFrames": 600, "slowFrames": 12, "frozenFrames": 1 } },
                { "timeUnixNano": t, "power": { "batteryLevel": 0.42, "charging": false, "thermalState": "fair" } },
                { "timeUnixNano": t, "memory": { "residentBytes": 268435456, "lowMemoryWarning": true } },
                { "timeUnixNano": t, "crash": {
                    "foreground": true, "kind": "native", "exceptionType": "SIGSEGV",
                    "stackFingerprint": "c0ffee", "recurredOnNextLaunch": true } },
                { "timeUnixNano": t, "sessionEnd": { "durationMs": 65000.0 } }
            ]
        }, {
            "context": client_context("wallet-web"),
            "events": [
                { "timeUnixNano": t, "pageLoad": {
                    "route": "/checkout", "ttfbMs": 120.0, "firstContentfulPaintMs": 480.0,
                    "loadMs": 1900.0, "largestContentfulPaintMs": 1400.0,
                    "interactionToNextPaintMs": 90.0, "cumulativeLayoutShift": 0.02 } }
            ]
        }]
    });
    let response = reqwest::Client::new()
        .post(harness.http_url("/v1/client"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({ "rejectedEvents": 0, "errorMessage": "" })
    );

    let topic = harness.config.bus.topics().client;
    let messages = harness.read(&topic, |m| m.len() >= 2).await;
    let mut keys: Vec<&[u8]> = messages.iter().map(|m| &m.key[..]).collect();
    keys.sort();
    assert_eq!(keys, [&b"acme/com.acme.wallet"[..], b"acme/wallet-web"]);
    let batches: Vec<_> = decode::<ExportClientRequest>(&messages)
        .into_iter()
        .flat_map(|r| r.batches)
        .collect();
    let wallet = batches
        .iter()
        .find(|b| b.context.as_ref().unwrap().app_id == "com.acme.wallet")
        .unwrap();
    let context = wallet.context.as_ref().unwrap();
    assert_eq!(
        (
            context.app_version.as_str(),
            context.cohort.as_str(),
            context.unit.as_str()
        ),
        ("5.2.0", "canary", "unit-a")
    );
    assert_eq!(wallet.events.len(), 8);
    let start = wallet.events[1].app_start.as_ref().unwrap();
    assert_eq!((start.kind.as_str(), start.duration_ms), ("cold", 812.5));
    let request = wallet.events[2].network_request.as_ref().unwrap();
    assert_eq!(
        (
            request.status_code,
            request.duration_ms,
            request.bytes_sent,
            request.bytes_received
        ),
        (503, 1200.0, 512, 87)
    );
    let stutter = wallet.events[3].stutter.as_ref().unwrap();
    assert_eq!(
        (
            stutter.total_frames,
            stutter.slow_frames,
            stutter.frozen_frames
        ),
        (600, 12, 1)
    );
    let crash = wallet.events[6].crash.as_ref().unwrap();
    assert_eq!(
        (
            crash.kind.as_str(),
            crash.exception_type.as_str(),
            crash.foreground,
            crash.recurred_on_next_launch
        ),
        ("native", "SIGSEGV", true, true)
    );
    assert_eq!(
        wallet
            .events
            .iter()
            .map(|e| e.time_unix_nano)
            .collect::<Vec<_>>(),
        vec![t; 8]
    );
    let web = batches
        .iter()
        .find(|b| b.context.as_ref().unwrap().app_id == "wallet-web")
        .unwrap();
    let page = web.events[0].page_load.as_ref().unwrap();
    assert_eq!(
        (
            page.largest_contentful_paint_ms,
            page.cumulative_layout_shift
        ),
        (1400.0, 0.02)
    );
    harness.stop().await;
}

#[tokio::test]
async fn invalid_client_events_and_batches_are_rejected_and_counted() {
    use vigil_proto::client::v1::client_service_client::ClientServiceClient;
    use vigil_proto::client::v1::{
        AppStart, ClientBatch, ClientContext, ClientEvent, Crash, ExportClientRequest, PowerSample,
        SessionStart,
    };
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let t = now_ns();
    let context = |app: &str, user: &str| ClientContext {
        app_id: app.to_owned(),
        app_version: "5.2.0".to_owned(),
        os_name: "ios".to_owned(),
        user_id_hash: user.to_owned(),
        ..Default::default()
    };
    let request = ExportClientRequest {
        batches: vec![
            ClientBatch {
                context: Some(context("com.acme.wallet", "")),
                events: vec![
                    ClientEvent {
                        time_unix_nano: t,
                        session_start: Some(SessionStart {}),
                        ..Default::default()
                    },
                    ClientEvent {
                        time_unix_nano: t,
                        app_start: Some(AppStart {
                            kind: "lukewarm".to_owned(),
                            duration_ms: 10.0,
                        }),
                        ..Default::default()
                    },
                    ClientEvent {
                        time_unix_nano: t,
                        power: Some(PowerSample {
                            battery_level: 1.5,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ClientEvent {
                        time_unix_nano: t,
                        crash: Some(Crash::default()),
                        session_start: Some(SessionStart {}),
                        ..Default::default()
                    },
                    ClientEvent {
                        time_unix_nano: t,
                        ..Default::default()
                    },
                ],
            },
            ClientBatch {
                context: Some(context("com.acme.wallet", "jane@example.com")),
                events: vec![
                    ClientEvent {
                        time_unix_nano: t,
                        session_start: Some(SessionStart {}),
                        ..Default::default()
                    };
                    3
                ],
            },
        ],
    };
    let mut client = ClientServiceClient::connect(harness.grpc_url())
        .await
        .unwrap();
    let response = client
        .export(with_token(request, Some(TOKEN)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.rejected_events, 7);
    assert_eq!(
        response.error_message,
        "7 events rejected: client event \"app_start\": kind \"lukewarm\" is not one of cold, warm; \
         client event \"power\": battery_level 1.5 is outside [0, 1]; client event: sets \
         session_start and crash; send one kind per event; client event: none of session_start, \
         session_end, app_start, crash, stutter, network_request, power, memory, page_load is set; \
         batch of app \"com.acme.wallet\": user_id_hash must be a hash (16 to 128 hex digits), \
         never a raw id"
    );
    let topic = harness.config.bus.topics().client;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    let stored = decode::<ExportClientRequest>(&messages);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].batches[0].events.len(), 1);
    assert!(stored[0].batches[0].events[0].session_start.is_some());
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
    assert!(
        status.message().contains("the limit is: 4096 bytes"),
        "{}",
        status.message()
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
    remote_write_arrives_as_the_same_numbers,
    client_events_over_http_json_arrive_exactly,
);
