//! The one harness of the tests that start a pipeline: a configuration for
//! one backend (tenant acme with an ingest token, API tokens, the prober
//! exporting to the collector), the pipeline of `vigil up` on it
//! (collector, aggregator and alerter on one bus and store), and on demand
//! an API over its store, demo payment services exporting to its collector
//! and scenario files. Readers of the traces and client topics join before
//! any data flows: the embedded bus keeps a message only for the groups that
//! exist when every one of them has committed past it.

use std::path::PathBuf;

use serde_json::Value;
use vigil_api::Api;
use vigil_bus::Consumer;
use vigil_config::{ApiToken, Config, Role, Secret, TenantConfig};
use vigil_demo::{DemoOptions, DemoService};
use vigil_domain::shutdown::Shutdown;
use vigil_domain::tenant::TenantId;
use vigil_testing::{self as testing, Backend, away_from_midnight};
pub use vigil_testing::{assert_within, now_s, number};
use vigil_up::Pipeline;

/// Acme's ingest token.
pub const INGEST: &str = "acme-ingest-token-0123";
/// Acme's API token (viewer).
pub const ACME: &str = "acme-viewer-token-0123";

pub fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

pub struct Stack {
    pub config: Config,
    pub pipeline: Pipeline,
    /// Stops the pipeline and the API.
    pub shutdown: Shutdown,
    /// Stops the demo services alone (their spans flush as they stop).
    pub demos: Shutdown,
    /// Where scenario files go.
    pub folder: PathBuf,
    /// Reads the traces topic from its first message.
    pub traces: Box<dyn Consumer>,
    /// Reads the client telemetry topic from its first message.
    pub client: Box<dyn Consumer>,
}

impl Stack {
    /// The pipeline on `backend`, or `None` where its services cannot be
    /// reached off CI.
    pub async fn start(backend: Backend) -> Option<Stack> {
        Stack::start_with(backend, |_| {}).await
    }

    /// The same, with `configure` applied to the configuration first.
    pub async fn start_with(
        backend: Backend,
        configure: impl FnOnce(&mut Config),
    ) -> Option<Stack> {
        let mut config = testing::config(backend)?;
        configure(&mut config);
        away_from_midnight().await;
        config.collector.tenants = vec![TenantConfig {
            id: acme(),
            tokens: vec![Secret::new(INGEST)],
        }];
        config.api.listen = ([127, 0, 0, 1], 0).into();
        config.aggregator.metrics_listen = ([127, 0, 0, 1], 0).into();
        config.alerter.metrics_listen = ([127, 0, 0, 1], 0).into();
        config.api.tokens = vec![ApiToken {
            token: Secret::new(ACME),
            tenant: acme(),
            role: Role::Viewer,
        }];
        let shutdown = Shutdown::new();
        let pipeline = Pipeline::start(&config, &shutdown).await.unwrap();
        let topics = config.bus.topics();
        let reader = |topic: String| {
            let bus = std::sync::Arc::clone(&pipeline.bus);
            async move {
                bus.subscribe(&topic, &testing::unique_name("reader"))
                    .await
                    .unwrap()
            }
        };
        let traces = reader(topics.traces).await;
        let client = reader(topics.client).await;
        let folder = std::env::temp_dir().join(testing::unique_name("vigil_probes"));
        std::fs::create_dir_all(&folder).unwrap();
        config.synthetic.otlp_endpoint = format!("http://{}", pipeline.otlp());
        config.synthetic.token = Some(Secret::new(INGEST));
        config.synthetic.metrics_listen = ([127, 0, 0, 1], 0).into();
        config.synthetic.watch_interval_ms = 0;
        config.synthetic.scenarios = vec![folder.join("scenario.yaml")];
        Some(Stack {
            config,
            pipeline,
            shutdown,
            demos: Shutdown::new(),
            folder,
            traces,
            client,
        })
    }

    /// The collector's OTLP/HTTP endpoint.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}", self.pipeline.otlp())
    }

    /// Posts client telemetry batches (JSON) to the collector as acme; every
    /// event must be accepted.
    pub async fn send_client(&self, batches: Vec<Value>) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/client", self.otlp_endpoint()))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {INGEST}"))
            .body(serde_json::json!({ "batches": batches }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(
            answer,
            serde_json::json!({"rejectedEvents": 0, "errorMessage": ""})
        );
    }

    /// The dashboard API over the pipeline's store, on a free port.
    pub async fn api(&self) -> ApiClient {
        let api = Api::start(
            &self.config,
            self.pipeline.store.clone(),
            self.shutdown.clone(),
        )
        .await
        .unwrap();
        ApiClient {
            api,
            client: reqwest::Client::new(),
        }
    }

    /// A demo payment service of `unit` exporting to the collector.
    pub async fn demo(&self, unit: &str, version: &str, cohort: &str) -> DemoService {
        let options = DemoOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            service_name: "payments".to_owned(),
            unit: unit.to_owned(),
            version: version.to_owned(),
            cohort: cohort.to_owned(),
            otlp_endpoint: Some(self.otlp_endpoint()),
            token: Some(INGEST.to_owned()),
        };
        DemoService::start(options, self.demos.clone())
            .await
            .unwrap()
    }

    pub fn write_scenario(&self, text: &str) -> PathBuf {
        let file = self.folder.join("scenario.yaml");
        std::fs::write(&file, text).unwrap();
        file
    }

    /// Stops the demo services and the pipeline, which flushes.
    pub async fn stop(self) {
        self.demos.trigger();
        self.shutdown.trigger();
        self.pipeline.wait().await.unwrap();
    }
}

/// The dashboard API of a [`Stack`], read as acme.
pub struct ApiClient {
    api: Api,
    client: reqwest::Client,
}

impl ApiClient {
    pub fn address(&self) -> std::net::SocketAddr {
        self.api.address()
    }

    /// The status and JSON body of `GET path` as acme.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("http://{}{path}", self.api.address()))
            .header("authorization", format!("Bearer {ACME}"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The body of `GET path` as acme, which must answer 200.
    pub async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// The body of `GET path` once `done` holds of it, asked again every
    /// 250 ms for at most `within`: the aggregator writes as it flushes.
    pub async fn eventually(
        &self,
        path: &str,
        within: std::time::Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let body = self.ok(path).await;
            if done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never answered as awaited: {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    pub async fn wait(self) {
        self.api.wait().await.unwrap();
    }
}

/// The OpenTelemetry SDK's tracer provider for `resource`, exporting over
/// OTLP/HTTP (protobuf) to `endpoint` with acme's ingest token. Built on a
/// blocking thread, as the SDK's HTTP client is.
pub fn tracer_provider(
    endpoint: &str,
    resource: opentelemetry_sdk::Resource,
) -> opentelemetry_sdk::trace::SdkTracerProvider {
    use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .with_headers(ingest_headers())
        .build()
        .unwrap();
    opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build()
}

/// The SDK's exporter of delta metrics over OTLP/HTTP to `endpoint`, with
/// acme's ingest token.
pub fn metric_exporter(endpoint: &str) -> opentelemetry_otlp::MetricExporter {
    use opentelemetry_otlp::{MetricExporter, Protocol, WithExportConfig, WithHttpConfig};
    MetricExporter::builder()
        .with_temporality(opentelemetry_sdk::metrics::Temporality::Delta)
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/metrics"))
        .with_headers(ingest_headers())
        .build()
        .unwrap()
}

fn ingest_headers() -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([("authorization".to_owned(), format!("Bearer {INGEST}"))])
}

/// The nearest-rank quantile of `values`, as the API defines it.
pub fn exact_quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
