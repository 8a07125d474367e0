//! OTLP/gRPC: the metrics, trace and logs services, and `vigil.client.v1`'s
//! client telemetry service, gzip accepted.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Response as HttpResponse};
use axum::middleware::Next;
use http_body::Frame;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status};
use vigil_proto::client::v1::client_service_server::{ClientService, ClientServiceServer};
use vigil_proto::client::v1::{ExportClientRequest, ExportClientResponse};

use crate::auth::Sender;
use crate::budget::{self, Root};
use crate::error::IngestError;
use crate::http;
use crate::ingest::Ingest;
use crate::otlp::ExportRequest;

#[derive(Clone)]
struct Otlp(Arc<Ingest>);

impl Otlp {
    async fn export<S: ExportRequest>(
        &self,
        request: Request<S>,
    ) -> Result<Response<S::Response>, Status> {
        let timer = self
            .0
            .metrics
            .request("grpc", S::NAME, request.get_ref().encoded_len());
        // Put there by `admit`, before the body was read.
        let sender = request.extensions().get::<Sender>().cloned();
        let outcome = match sender {
            Some(sender) => self.0.export(&sender, request.into_inner()).await,
            None => Err(IngestError::Unauthenticated("no tenant".to_owned())),
        };
        timer.finish(
            outcome
                .as_ref()
                .map_or_else(IngestError::code_name, |_| "OK"),
        );
        Ok(Response::new(outcome?))
    }
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        Otlp::export(self, request).await
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        Otlp::export(self, request).await
    }
}

#[tonic::async_trait]
impl ClientService for Otlp {
    async fn export(
        &self,
        request: Request<ExportClientRequest>,
    ) -> Result<Response<ExportClientResponse>, Status> {
        Otlp::export(self, request).await
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        Otlp::export(self, request).await
    }
}

/// Admits a gRPC request before tonic reads it: checks the token from the
/// headers (a wrong one is refused unread), then reads the message,
/// estimates its decoded size and holds that much of the budget until the
/// answer (see `budget.rs`), or refuses it when it does not fit. The tenant
/// goes on to the service in the request's extensions, the message
/// uncompressed, so it is inflated once.
pub(crate) async fn admit(
    State(ingest): State<Arc<Ingest>>,
    request: axum::extract::Request,
    next: Next,
) -> axum::response::Response {
    let path = request.uri().path();
    let (root, signal) = [
        (
            "/opentelemetry.proto.collector.trace.",
            Root::Traces,
            "traces",
        ),
        (
            "/opentelemetry.proto.collector.metrics.",
            Root::Metrics,
            "metrics",
        ),
        ("/opentelemetry.proto.collector.logs.", Root::Logs, "logs"),
        ("/vigil.client.", Root::Client, "client"),
    ]
    .into_iter()
    .find(|(prefix, ..)| path.starts_with(prefix))
    .map_or((None, "unknown"), |(_, root, signal)| (Some(root), signal));
    let (mut parts, body) = request.into_parts();
    let limit = ingest.max_message_bytes();
    let admitted = async {
        let sender = ingest.auth.sender(http::authorization(&parts.headers))?;
        let framed = axum::body::to_bytes(body, limit.saturating_add(5))
            .await
            .map_err(|_| {
                IngestError::TooLarge(format!(
                    "the message is more than {limit} bytes (collector.max_message_bytes)"
                ))
            })?;
        let (message, frame) = unframe(framed, limit)?;
        // A path no service serves is answered UNIMPLEMENTED, undecoded.
        let estimate = root.map_or(message.len(), |root| budget::estimate(root, &message));
        let reserved = ingest.budget.reserve(estimate)?;
        // Re-framed only once admitted: a refused message is not copied.
        let frame = frame.unwrap_or_else(|| uncompressed_frame(&message));
        Ok::<_, IngestError>((sender, frame, reserved))
    }
    .await;
    match admitted {
        Ok((sender, frame, reserved)) => {
            parts.extensions.insert(sender);
            let body = axum::body::Body::from(frame);
            let response = next
                .run(axum::extract::Request::from_parts(parts, body))
                .await;
            drop(reserved);
            response
        }
        Err(error) => {
            ingest
                .metrics
                .request("grpc", signal, 0)
                .finish(error.code_name());
            Status::from(error).into_http()
        }
    }
}

/// The message of a unary gRPC request body (a flag, a big-endian length,
/// the message), gunzipped when it says it is compressed, and the frame as
/// it came when it was not (it can be passed on as it is).
fn unframe(framed: Bytes, limit: usize) -> Result<(Bytes, Option<Bytes>), IngestError> {
    let malformed = || IngestError::InvalidArgument("malformed gRPC message frame".to_owned());
    let prefix: [u8; 5] = framed
        .get(..5)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(malformed)?;
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    let end = 5usize
        .checked_add(len)
        .filter(|&end| end <= framed.len())
        .ok_or_else(malformed)?;
    match prefix[0] {
        0 => Ok((framed.slice(5..end), Some(framed.slice(..end)))),
        1 => Ok((http::gunzip(&framed[5..end], limit)?, None)),
        _ => Err(malformed()),
    }
}

/// `message` as an uncompressed gRPC frame.
fn uncompressed_frame(message: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

/// The OTLP services and `vigil.client.v1`, ready to serve behind
/// [`admit`].
pub(crate) fn routes(ingest: Arc<Ingest>) -> Routes {
    let max = ingest.max_message_bytes();
    let otlp = Otlp(ingest);
    Routes::new(
        TraceServiceServer::new(otlp.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max),
    )
    .add_service(
        MetricsServiceServer::new(otlp.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max),
    )
    .add_service(
        LogsServiceServer::new(otlp.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max),
    )
    .add_service(
        ClientServiceServer::new(otlp)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max),
    )
}

/// The statuses tonic gives before a request reaches Vigil, and the ones OTLP
/// wants instead: (tonic's code, the start of its message, OTLP's code).
///
/// - A body that is not protobuf: tonic answers INTERNAL, as gRPC's guidance
///   has it; OTLP wants INVALID_ARGUMENT, which says the fault is in the data.
/// - A message over the size limit: tonic answers OUT_OF_RANGE, which OTLP
///   exporters retry, forever for a batch that will never fit; RESOURCE_EXHAUSTED
///   without RetryInfo is not retried.
const CORRECTIONS: [(Code, &str, Code); 2] = [
    (
        Code::Internal,
        "failed to decode Protobuf message",
        Code::InvalidArgument,
    ),
    (
        Code::OutOfRange,
        "Error, decoded message length too large",
        Code::ResourceExhausted,
    ),
];

/// Corrects the statuses of [`CORRECTIONS`] on the way out. The generated OTLP
/// servers fix their codec, so this is the one place to do it: in the headers
/// of a trailers-only response, or in the trailers.
pub(crate) fn otlp_status_codes(response: HttpResponse<Body>) -> HttpResponse<Body> {
    let (mut parts, body) = response.into_parts();
    correct_status(&mut parts.headers);
    let body = body.map_frame(|frame| match frame.into_trailers() {
        Ok(mut trailers) => {
            correct_status(&mut trailers);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    });
    HttpResponse::from_parts(parts, Body::new(body))
}

fn correct_status(headers: &mut HeaderMap) {
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|s| s.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())
    else {
        return;
    };
    // tonic percent-encodes the message, spaces included.
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| m.replace("%20", " "))
        .unwrap_or_default();
    let correction = CORRECTIONS
        .iter()
        .find(|(from, start, _)| *from as i32 == code && message.starts_with(start));
    if let Some((_, _, to)) = correction {
        headers.insert("grpc-status", HeaderValue::from(*to as i32));
    }
}
