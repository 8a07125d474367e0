//! `[synthetic]`: the prober's scenario files, locations and where its runs
//! are exported.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::tls::check_file;
use crate::{ConfigError, Secret, check_range, default_watch_interval_ms};

/// The synthetic prober: the scenarios it runs, the locations it runs them
/// for, and where the traces of its runs go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Scenario files (YAML), or folders whose `*.yaml` and `*.yml` files
    /// are read.
    #[serde(default)]
    pub scenarios: Vec<PathBuf>,
    /// The locations this process runs probes for; empty: every location
    /// the scenarios name.
    #[serde(default)]
    pub locations: Vec<String>,
    /// The collector's OTLP/HTTP address the runs are exported to
    /// (`/v1/traces` is appended).
    #[serde(default = "default_otlp_endpoint")]
    pub otlp_endpoint: String,
    /// The ingest token the runs are exported with (one of a collector
    /// tenant's tokens); none when the collector asks for none.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A CA file (PEM) that probe targets' and the OTLP endpoint's https
    /// certificates may be signed by, beside the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// `service.name` of the exported runs.
    #[serde(default = "default_synthetic_service_name")]
    pub service_name: String,
    /// Runs in flight at once, over every probe and location.
    #[serde(default = "default_max_concurrent_runs")]
    pub max_concurrent_runs: usize,
    /// How often the scenario files are checked for changes; 0: only on
    /// SIGHUP.
    #[serde(default = "default_watch_interval_ms")]
    pub watch_interval_ms: u64,
    /// Where `GET /metrics` (Prometheus text) and `GET /healthz` are served;
    /// port 0 picks any free port.
    #[serde(default = "default_synthetic_metrics_listen")]
    pub metrics_listen: SocketAddr,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            scenarios: Vec::new(),
            locations: Vec::new(),
            otlp_endpoint: default_otlp_endpoint(),
            token: None,
            ca_file: None,
            service_name: default_synthetic_service_name(),
            max_concurrent_runs: default_max_concurrent_runs(),
            watch_interval_ms: default_watch_interval_ms(),
            metrics_listen: default_synthetic_metrics_listen(),
        }
    }
}

fn default_otlp_endpoint() -> String {
    "http://127.0.0.1:4318".to_owned()
}

fn default_synthetic_service_name() -> String {
    "vigil-synthetic".to_owned()
}

fn default_max_concurrent_runs() -> usize {
    256
}

fn default_synthetic_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9466))
}

impl SyntheticConfig {
    /// Checks what types alone cannot.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let synthetic = self;
        if let Some(ca) = &synthetic.ca_file {
            check_file("synthetic.ca_file", ca)?;
        }
        let endpoint = &synthetic.otlp_endpoint;
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "synthetic.otlp_endpoint",
                format!("must be an http:// or https:// URL, got {endpoint:?}"),
            ));
        }
        if synthetic.service_name.is_empty() || synthetic.service_name.len() > 128 {
            return Err(ConfigError::invalid(
                "synthetic.service_name",
                "must hold 1 to 128 characters",
            ));
        }
        check_range(
            "synthetic.max_concurrent_runs",
            synthetic.max_concurrent_runs,
            1..=100_000,
            "",
        )?;
        if let Some(empty) = synthetic.locations.iter().position(String::is_empty) {
            return Err(ConfigError::invalid(
                &format!("synthetic.locations[{empty}]"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}
