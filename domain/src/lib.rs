//! Vigil's domain: what every component shares, free of I/O backends.
//!
//! - [`model`]: series, their rollups, and the rows and checkpoints an
//!   aggregator writes;
//! - [`distribution`]: the log-bucketed histogram behind every latency and
//!   value distribution, mergeable and stored as key/count arrays;
//! - [`signal`]: what is read from rollups, and the one label [`Matcher`](signal::Matcher)
//!   of filters, rules and silences;
//! - [`canary`]: canary against baseline, the statistical tests and the
//!   verdict of a release;
//! - [`distinct`]: the mergeable distinct count (users) kept with rollups;
//! - [`crash`]: the order of app versions and the state of a crash group
//!   in one;
//! - [`alert`] and [`silence`]: the alerts and silences the alerter and the
//!   API share through the store;
//! - [`topics`]: the bus topics and message keys;
//! - [`tenant`]: the tenant id every piece of data belongs to;
//! - [`time`]: durations, calendar dates and cron schedules as users write
//!   them;
//! - [`template`]: `{{name}}` templates in texts and JSON bodies;
//! - [`yaml`]: YAML files (scenarios, rules) and errors that name the line;
//! - [`shutdown`]: one SIGINT/SIGTERM fanned out to every task;
//! - [`metrics_endpoint`]: `GET /metrics` and `GET /healthz` of a component
//!   that serves nothing else.

pub mod alert;
pub mod canary;
pub mod crash;
pub mod distinct;
pub mod distribution;
pub mod localize;
pub mod located;
pub mod metrics_endpoint;
pub mod model;
pub mod playbook;
pub mod prometheus;
pub mod shutdown;
pub mod signal;
pub mod silence;
pub mod template;
pub mod tenant;
pub mod time;
pub mod topics;
pub mod yaml;

/// An error and its causes, outermost first: `a: b: c` (a TLS failure, for
/// one, is only named by the innermost).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}
