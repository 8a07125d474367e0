//! The dashboard API: what SREs, on-call engineers and release managers
//! read. In: HTTP requests with a bearer token (`server`, `auth`,
//! `params`). Out: JSON computed from the store — merged rollups, spans,
//! the configured objectives — the same on SQLite and ClickHouse.
//!
//! - `services`, `query_path` (with the engine in `query`), `traces`,
//!   `slo`, `client`, `probes`, `releases`, `alerts`, `silences`: one
//!   module per path (the last two over the alerter's state and history in
//!   the store);
//! - `openapi`: the table of paths and parameters that both checks requests
//!   and writes `/api/v1/openapi.json`;
//! - `reader`: merged rollups from the widest closed windows, within limits.

mod alerts;
mod auth;
mod cache;
mod client_telemetry;
mod console;
mod crashes;
mod error;
mod localize;
mod logs;
mod metrics;
mod openapi;
mod params;
mod playbooks;
mod probes;
mod prometheus;
pub mod query;
mod query_path;
mod reader;
mod releases;
mod server;
mod services;
mod silences;
mod slo;
mod traces;

pub use server::{Api, ApiServerError};
