//! Sends the runs' spans to a collector over OTLP/HTTP (protobuf), like any
//! instrumented service: batched (up to 1,000 spans or 200 ms, so a failed
//! run is stored within a second), retried with backoff while the collector
//! answers 429/502/503/504 or cannot be reached, and counted when dropped.
//! The queue is bounded: a run that finds it full is dropped and counted,
//! never waited for, so a slow collector cannot delay the schedule.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vigil_config::SyntheticConfig;

use crate::metrics::Metrics;
use crate::run::text;

const MAX_BATCH_SPANS: usize = 1_000;
const MAX_BATCH_DELAY: Duration = Duration::from_millis(200);
const QUEUED_RUNS: usize = 10_000;
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Where runs are handed over for export.
#[derive(Clone)]
pub struct Exporter {
    queue: mpsc::Sender<Vec<Span>>,
    metrics: Arc<Metrics>,
}

impl Exporter {
    /// Starts the export task, sending with `client`; it sends what is
    /// queued and ends once every [`Exporter`] is dropped.
    pub fn start(
        config: &SyntheticConfig,
        client: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> (Exporter, JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(QUEUED_RUNS);
        let sink = Sink {
            client,
            url: format!("{}/v1/traces", config.otlp_endpoint.trim_end_matches('/')),
            token: config
                .token
                .as_ref()
                .map(|t| format!("Bearer {}", t.expose())),
            resource: Resource {
                attributes: vec![
                    text("service.name", &config.service_name),
                    text("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Resource::default()
            },
            metrics: Arc::clone(&metrics),
        };
        let task = tokio::spawn(sink.drain(receiver));
        (Exporter { queue, metrics }, task)
    }

    /// Queues one run's spans.
    pub fn send(&self, spans: Vec<Span>) {
        let n = spans.len() as u64;
        if self.queue.try_send(spans).is_err() {
            self.metrics.dropped_spans.inc_by(n);
            tracing::warn!(
                spans = n,
                "the export queue is full: a run's spans were dropped"
            );
        }
    }
}

struct Sink {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
    resource: Resource,
    metrics: Arc<Metrics>,
}

/// Whether a failed export may succeed later.
enum Refusal {
    Retry(String),
    Final(String),
}

impl Sink {
    async fn drain(self, mut receiver: mpsc::Receiver<Vec<Span>>) {
        while let Some(first) = receiver.recv().await {
            let mut batch = first;
            let deadline = tokio::time::Instant::now() + MAX_BATCH_DELAY;
            while batch.len() < MAX_BATCH_SPANS {
                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(mut more)) => batch.append(&mut more),
                    Ok(None) | Err(_) => break,
                }
            }
            self.export(batch).await;
        }
    }

    async fn export(&self, spans: Vec<Span>) {
        let n = spans.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "vigil-synthetic".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
        .encode_to_vec();
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match self.post(request.clone()).await {
                Ok(rejected) => {
                    self.metrics.exported_spans.inc_by(n - rejected.min(n));
                    self.metrics.dropped_spans.inc_by(rejected.min(n));
                    return;
                }
                Err(Refusal::Retry(why)) if attempt < ATTEMPTS => {
                    tracing::debug!(%why, attempt, "export failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(Refusal::Retry(why) | Refusal::Final(why)) => {
                    self.metrics.dropped_spans.inc_by(n);
                    tracing::error!(%why, spans = n, url = %self.url, "the collector did not take the runs' spans");
                    return;
                }
            }
        }
    }

    /// Sends one request; how many spans the collector rejected.
    async fn post(&self, body: Vec<u8>) -> Result<u64, Refusal> {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-protobuf")
            .timeout(Duration::from_secs(10))
            .body(body);
        if let Some(token) = &self.token {
            request = request.header("authorization", token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Refusal::Retry(e.to_string()))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        match status {
            200..=299 => {
                let answer = ExportTraceServiceResponse::decode(bytes.as_ref()).unwrap_or_default();
                let partial = answer.partial_success.unwrap_or_default();
                if partial.rejected_spans > 0 {
                    tracing::warn!(
                        rejected = partial.rejected_spans,
                        message = %partial.error_message,
                        "the collector rejected some spans"
                    );
                }
                Ok(u64::try_from(partial.rejected_spans).unwrap_or(0))
            }
            429 | 502 | 503 | 504 => Err(Refusal::Retry(format!("status {status}"))),
            _ => Err(Refusal::Final(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&bytes)
            ))),
        }
    }
}
