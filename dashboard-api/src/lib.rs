//! The dashboard API: what SREs, on-call engineers and release managers
//! read. In: HTTP requests with a bearer token. Out: JSON computed from the
//! store (rollups, spans, events, the series catalogue), the same on SQLite
//! and ClickHouse.
//!
//! - [`query`]: `/api/v1/query`, series of signals from merged rollups.

pub mod query;
