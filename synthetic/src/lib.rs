//! The synthetic prober and the demo payment service it probes.
//!
//! In: scenario files (YAML) of probes, each a multi-step transaction over
//! HTTP or gRPC, run on a schedule from several locations. Out: every run
//! as an OTLP trace (a root span for the run, one span per step) sent to a
//! collector like any service's, and a W3C `traceparent` in every request,
//! so the target's own spans join the run's trace.

pub mod json_path;
pub mod scenario;
pub mod template;
