//! End-to-end tests that cross components, in one test binary: each starts
//! the pipeline of `vigil up` through the one harness ([`harness::Stack`])
//! on both deployments, sends data the way users do (the OpenTelemetry SDK,
//! the demo payment service, the prober) and checks what comes out exactly.
//!
//! - [`sdk`]: the SDK's spans and metrics read back through the API;
//! - [`promql`]: PromQL answered as a real Prometheus and `/api/v1/query` answer;
//! - [`releases`]: a failing canary of the demo service is rolled back;
//! - [`crashes`]: an app's crashes grouped, judged and shown as sent;
//! - [`stability`]: an app's stability signals read back exactly;
//! - [`probes`]: the prober's runs and the demo's spans, on the bus and in
//!   the store.

mod crashes;
mod harness;
mod probes;
mod promql;
mod releases;
mod retention;
mod sdk;
mod stability;
