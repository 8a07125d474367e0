//! OTLP/gRPC: the metrics, trace and logs services, gzip accepted.

use std::sync::Arc;

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
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::ingest::Ingest;
use crate::signal::Signal;

#[derive(Clone)]
struct Otlp(Arc<Ingest>);

impl Otlp {
    async fn export<S: Signal>(
        &self,
        request: Request<S>,
    ) -> Result<Response<S::Response>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let tenant = self.0.auth.tenant(authorization)?;
        Ok(Response::new(
            self.0.export(&tenant, request.into_inner()).await?,
        ))
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
        LogsServiceServer::new(otlp)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max),
    )
}
