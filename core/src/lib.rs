//! Vigil's core: what every component shares.
//!
//! - [`distribution`]: the log-bucketed histogram behind every latency and value
//!   distribution, mergeable and stored as key/count arrays;
//! - [`bus`]: the message bus between components, on Kafka or in-process;
//! - [`canary`]: canary against baseline, the statistical tests and the
//!   verdict of a release;
//! - [`config`]: the configuration file and its `VIGIL_*` overrides;
//! - [`metrics_endpoint`]: `GET /metrics` and `GET /healthz` of a component
//!   that serves nothing else;
//! - [`model`]: series and their rollups;
//! - [`store`]: where rollups, spans and the series catalogue are kept, in
//!   SQLite or ClickHouse;
//! - [`shutdown`]: one SIGINT/SIGTERM fanned out to every task;
//! - [`signal`]: what is read from rollups, and the matchers that select
//!   series;
//! - [`template`]: `{{name}}` templates in texts and JSON bodies;
//! - [`tenant`]: the tenant id every piece of data belongs to;
//! - [`time`]: durations, calendar dates and cron schedules as users write
//!   them;
//! - [`yaml`]: YAML files (scenarios, rules) and errors that name the line.

pub mod bus;
pub mod canary;
pub mod config;
pub mod distribution;
pub mod metrics_endpoint;
pub mod model;
pub mod shutdown;
pub mod signal;
pub mod store;
pub mod template;
pub mod tenant;
pub mod testing;
pub mod time;
pub mod yaml;
