//! OTLP/gRPC: the metrics, trace and logs services, and `vigil.client.v1`'s
//! client telemetry service, gzip accepted.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, Response as HttpResponse};
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
use tonic::{Request, Response, Status};
use vigil_proto::client::v1::client_service_server::{ClientService, ClientServiceServer};
use vigil_proto::client::v1::{ExportClientRequest, ExportClientResponse};

use crate::error::IngestError;
use crate::ingest::Ingest;
use crate::signal::Signal;

#[derive(Clone)]
struct Otlp(Arc<Ingest>);

impl Otlp {
    async fn export<S: Signal>(
        &self,
        request: Request<S>,
    ) -> Result<Response<S::Response>, Status> {
        let timer = self
            .0
            .metrics
            .request("grpc", S::NAME, request.get_ref().encoded_len());
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let outcome = match self.0.auth.tenant(authorization) {
            Ok(tenant) => self.0.export(&tenant, request.into_inner()).await,
            Err(error) => Err(error),
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

/// The three OTLP services, ready to serve.
pub(crate) fn routes(ingest: Arc<Ingest>) -> Routes {
    let max = ingest.max_message_bytes;
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

/// What tonic's protobuf codec says of a request body it cannot decode.
const DECODE_ERROR: &str = "failed to decode Protobuf message";

/// Answers INVALID_ARGUMENT, not INTERNAL, to a request that is not valid
/// protobuf. tonic follows gRPC's guidance (INTERNAL) and the generated OTLP
/// servers fix their codec, so the status is corrected on the way out, in the
/// headers of a trailers-only response or in the trailers. OTLP wants
/// INVALID_ARGUMENT, which tells the sender the fault is in its data.
pub(crate) fn decode_errors_as_invalid_argument(
    response: HttpResponse<Body>,
) -> HttpResponse<Body> {
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
    let internal = headers.get("grpc-status").is_some_and(|s| s == "13");
    let undecodable = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        // tonic percent-encodes the message, spaces included.
        .is_some_and(|m| m.replace("%20", " ").starts_with(DECODE_ERROR));
    if internal && undecodable {
        let code = tonic::Code::InvalidArgument as i32;
        headers.insert("grpc-status", HeaderValue::from(code));
    }
}
