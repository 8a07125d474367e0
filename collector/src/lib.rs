//! The collector: Vigil's front door for telemetry.
//!
//! In: OTLP metrics, traces and logs over gRPC (`:4317`) and HTTP (`:4318`,
//! protobuf or JSON, optionally gzip), client telemetry from mobile and web
//! apps (`vigil.client.v1` over gRPC, or `POST /v1/client` with protobuf or
//! JSON), and Prometheus remote-write 1.0
//! (`POST /api/v1/write` on the HTTP port, as OTLP metrics), with a bearer
//! token naming the tenant.
//! Out: one bus message per resource (an OTLP `Export*ServiceRequest` holding
//! that resource only, keyed `{tenant}/{service}`), on the topics of
//! [`vigil_bus::Topics`]. A request is answered OK only once the bus has
//! stored every message of it; invalid items are dropped from it, counted and
//! explained in `partial_success`, and the rest is stored. `GET /metrics` on
//! the HTTP port serves the collector's own metrics.

mod auth;
mod budget;
mod classic_histogram;
mod client_telemetry;
mod error;
#[cfg(test)]
mod fuzz;
mod grpc;
mod http;
mod ingest;
mod json;
mod limits;
mod metrics;
mod native_histogram;
mod otlp;
mod remote_write;
mod series_metrics;
mod server;
mod validate;
mod write_request;

pub use server::{Collector, CollectorError};
