//! The collector end to end: the real OpenTelemetry SDK exports through OTLP
//! gRPC and HTTP, and the test reads back from the bus (embedded and Kafka)
//! exactly what was sent. Bad input goes through the generated OTLP gRPC
//! clients and plain HTTP. One module per area; this file holds the
//! harness and the helpers they share.

mod client_telemetry;
mod invalid;
mod remote_write;
mod sdk;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vigil_testing::string_attribute as attribute;

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
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
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
use vigil_testing::{Backend, embedded_bus_config, kafka_config, read_until, unique_name};

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
            Backend::Embedded => {
                Arc::new(EmbeddedBus::new(&embedded_bus_config(), timeout).unwrap())
            }
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
        config.collector.metrics_listen = "127.0.0.1:0".parse().unwrap();
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
        let metrics = format!("http://{}/metrics", self.collector.metrics_address());
        let response = reqwest::get(metrics).await.unwrap();
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

/// An embedded bus of its own, for a harness configured by hand.
fn embedded_bus() -> Arc<dyn Bus> {
    Arc::new(EmbeddedBus::new(&embedded_bus_config(), Duration::from_secs(5)).unwrap())
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
