//! OTLP/HTTP: `POST /v1/traces`, `/v1/metrics` and `/v1/logs`, as
//! `application/x-protobuf` or `application/json`, optionally gzip. Answers in
//! the request's encoding; errors carry a `google.rpc.Status` body, as the
//! OTLP/HTTP specification says.

use std::io::Read;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use vigil_proto::client::v1::ExportClientRequest;

use crate::auth::Sender;
use crate::budget::{self, Budget, Reserved, Root};
use crate::error::IngestError;
use crate::ingest::Ingest;
use crate::json;
use crate::otlp::ExportRequest;
use crate::remote_write;
use crate::validate::Rejections;
use crate::write_request::WriteRequest;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

pub(crate) fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/v1/traces", post(export::<ExportTraceServiceRequest>))
        .route("/v1/metrics", post(export::<ExportMetricsServiceRequest>))
        .route("/v1/logs", post(export::<ExportLogsServiceRequest>))
        .route("/v1/client", post(export::<ExportClientRequest>))
        .route("/api/v1/write", post(remote_write))
        // Bodies are read with the collector's own limit (see `read_body`), so
        // that a refusal names it in the OTLP error format.
        .layer(DefaultBodyLimit::disable())
        .with_state(ingest)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Self, IngestError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        match media_type {
            PROTOBUF => Ok(Encoding::Protobuf),
            JSON => Ok(Encoding::Json),
            other => Err(IngestError::UnsupportedMediaType(format!(
                "content-type {other:?} is not supported; send {PROTOBUF} or {JSON}"
            ))),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }

    fn decode<S: ExportRequest>(self, body: &[u8]) -> Result<S, IngestError> {
        match self {
            Encoding::Protobuf => S::decode(body)
                .map_err(|e| IngestError::InvalidArgument(format!("malformed protobuf: {e}"))),
            Encoding::Json => json::decode(body).map_err(IngestError::InvalidArgument),
        }
    }

    fn encode<M: Message + serde::Serialize>(self, message: &M) -> Vec<u8> {
        match self {
            Encoding::Protobuf => message.encode_to_vec(),
            // Serializing generated OTLP messages to JSON cannot fail.
            Encoding::Json => serde_json::to_vec(message).unwrap_or_default(),
        }
    }
}

async fn export<S: ExportRequest>(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = ingest.max_message_bytes();
    let (sender, body) = authenticated_body(&ingest, &headers, body).await;
    let timer = ingest
        .metrics
        .request("http", S::NAME, body.as_ref().map_or(0, Bytes::len));
    let requested = Encoding::of(&headers);
    let outcome = async {
        let encoding = requested.clone()?;
        let sender = sender?;
        let body = decompress(&headers, body?, limit)?;
        let estimate = match encoding {
            Encoding::Protobuf => budget::estimate(S::BUDGET, &body),
            Encoding::Json => budget::estimate_json(&body),
        };
        // Held until the request is answered.
        let _reserved = ingest.budget.reserve(estimate)?;
        let request = encoding.decode::<S>(&body)?;
        ingest.export(&sender, request).await
    }
    .await;
    timer.finish(
        outcome
            .as_ref()
            .map_or_else(IngestError::code_name, |_| "OK"),
    );
    // An unsupported content type is answered in JSON.
    let encoding = requested.unwrap_or(Encoding::Json);
    match outcome {
        Ok(response) => (
            [(header::CONTENT_TYPE, encoding.content_type())],
            encoding.encode(&response),
        )
            .into_response(),
        Err(error) => error_response(encoding, &error),
    }
}

/// Prometheus remote-write: snappy-compressed `prometheus.WriteRequest`.
/// Answers 204 when every sample was stored (staleness markers aside), and 400
/// naming what was not when some were rejected: Prometheus does not resend a
/// 400, and the valid samples are stored already.
async fn remote_write(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = ingest.max_message_bytes();
    let (sender, body) = authenticated_body(&ingest, &headers, body).await;
    let timer = ingest
        .metrics
        .request("http", "remote_write", body.as_ref().map_or(0, Bytes::len));
    let outcome = async {
        let sender = sender?;
        let (body, _reserved) = decompress_remote_write(&headers, &body?, limit, &ingest.budget)?;
        let write = WriteRequest::read(&body).map_err(|e| {
            IngestError::InvalidArgument(format!("malformed remote-write protobuf: {e}"))
        })?;
        let mut rejections = Rejections::default();
        let request = {
            let histograms = remote_write::has_histogram_parts(&write)
                .then(|| ingest.histograms.of(&sender.tenant));
            let mut gathering = histograms
                .as_ref()
                .map(|h| h.lock().unwrap_or_else(PoisonError::into_inner));
            remote_write::to_otlp(
                write,
                gathering.as_deref_mut(),
                Instant::now(),
                &mut rejections,
            )
        };
        let gaps: u64 = rejections
            .by_reason()
            .filter(|(reason, _)| remote_write::GAP_REASONS.contains(reason))
            .map(|(_, count)| count)
            .sum();
        let response = ingest.export_after(&sender, request, rejections).await?;
        Ok::<_, IngestError>(
            response
                .partial_success
                .filter(|p| p.rejected_data_points as u64 > gaps),
        )
    }
    .await;
    timer.finish(
        outcome
            .as_ref()
            .map_or_else(IngestError::code_name, |_| "OK"),
    );
    match outcome {
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        // What was usable is stored, and a sender cannot do better by
        // sending the rest again: 2xx, as VictoriaMetrics and Mimir answer,
        // so Prometheus does not count the stored samples as failed. The
        // rest is counted by reason and told in the body.
        Ok(Some(partial)) => (StatusCode::OK, partial.error_message).into_response(),
        Err(error) => error_response(Encoding::Json, &error),
    }
}

/// Decompresses a remote-write body, once its decoded size is taken from
/// `budget` (held until the returned reservation is dropped).
fn decompress_remote_write(
    headers: &HeaderMap,
    body: &[u8],
    limit: usize,
    budget: &Budget,
) -> Result<(Vec<u8>, Reserved), IngestError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if encoding != "snappy" {
        return Err(IngestError::UnsupportedMediaType(format!(
            "remote-write bodies are snappy-compressed; content-encoding {encoding:?} is not supported"
        )));
    }
    let length = snap::raw::decompress_len(body)
        .map_err(|e| IngestError::InvalidArgument(format!("malformed snappy body: {e}")))?;
    if length > limit {
        return Err(IngestError::TooLarge(format!(
            "the body is {length} bytes once decompressed, more than {limit}"
        )));
    }
    let decompressed = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| IngestError::InvalidArgument(format!("malformed snappy body: {e}")))?;
    let reserved = budget.reserve(budget::estimate(Root::RemoteWrite, &decompressed))?;
    Ok((decompressed, reserved))
}

/// `body` gunzipped, refused past `limit` bytes (read no further than that).
pub(crate) fn gunzip(body: &[u8], limit: usize) -> Result<Bytes, IngestError> {
    let mut decompressed = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut decompressed)
        .map_err(|e| IngestError::InvalidArgument(format!("malformed gzip body: {e}")))?;
    if decompressed.len() > limit {
        return Err(IngestError::TooLarge(format!(
            "the body is more than {limit} bytes once decompressed"
        )));
    }
    Ok(Bytes::from(decompressed))
}

/// The request's sender, then its body: a request with a wrong token is not
/// read (its body comes back empty).
async fn authenticated_body(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: Body,
) -> (Result<Sender, IngestError>, Result<Bytes, IngestError>) {
    let sender = ingest.auth.sender(authorization(headers));
    let body = match &sender {
        Ok(_) => read_body(body, ingest.max_message_bytes()).await,
        Err(_) => Ok(Bytes::new()),
    };
    (sender, body)
}

/// The `authorization` header, when it is text.
pub(crate) fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The request body, refused when longer than `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, IngestError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        IngestError::TooLarge(format!(
            "the body is more than {limit} bytes (collector.max_message_bytes); send smaller batches"
        ))
    })
}

/// The body, gunzipped when `content-encoding: gzip`, refusing more than `limit`
/// bytes after decompression.
fn decompress(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, IngestError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    match encoding {
        "identity" => Ok(body),
        "gzip" => gunzip(&body, limit),
        other => Err(IngestError::UnsupportedMediaType(format!(
            "content-encoding {other:?} is not supported; send gzip or none"
        ))),
    }
}

fn error_response(encoding: Encoding, error: &IngestError) -> Response {
    let status = tonic_types::Status {
        code: error.grpc_code() as i32,
        message: error.to_string(),
        details: Vec::new(),
    };
    let body = match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": status.code, "message": status.message })
            .to_string()
            .into_bytes(),
    };
    let mut response = (
        error.http_status(),
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    if let Some(delay) = error.retry_after() {
        // Whole seconds, rounded up: a client never comes back too early.
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    response
}
