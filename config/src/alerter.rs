//! `[alerter]`: rule files, the rollups consumer group, when windows are
//! evaluated.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vigil_domain::tenant::TenantId;

use crate::tls::check_file;
use crate::{ConfigError, check_range, default_watch_interval_ms};

/// The alerter: its rule files, how it reads the aggregators' windows, and
/// what it says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlerterConfig {
    /// Rule files (YAML: rules, receivers, routes, inhibitions, actions), or
    /// folders whose `*.yaml` and `*.yml` files are read.
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    /// The tenant whose series the Prometheus rule files among `rules`
    /// (files of `groups:`, which name no tenant) are evaluated on; needed
    /// when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_tenant: Option<TenantId>,
    /// The consumer group on the rollups topic.
    #[serde(default = "default_alerter_group")]
    pub group: String,
    /// How long after a 10 s window ends it is evaluated: time for the
    /// aggregators' last flush of it to arrive.
    #[serde(default = "default_evaluation_delay_ms")]
    pub evaluation_delay_ms: u64,
    /// How often the rule files are checked for changes; 0: only on SIGHUP.
    #[serde(default = "default_watch_interval_ms")]
    pub watch_interval_ms: u64,
    /// The dashboard's address, for links in notifications (`externalURL`,
    /// `generatorURL`); empty: none.
    #[serde(default)]
    pub external_url: String,
    /// Remediation actions and playbook runs are logged and recorded but
    /// not sent.
    #[serde(default)]
    pub dry_run: bool,
    /// The hosts (`host` or `host:port`) playbooks may call; a playbook
    /// that calls another is refused when the rule files are loaded.
    #[serde(default)]
    pub playbook_hosts: Vec<String>,
    /// A CA file (PEM) that receivers' and remediation endpoints' https
    /// certificates may be signed by, beside the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Where `GET /metrics` (Prometheus text) and `GET /healthz` are served;
    /// port 0 picks any free port.
    #[serde(default = "default_alerter_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// How long an undelivered notification is tried again (across
    /// restarts) before it is dropped, recorded and counted, in seconds.
    #[serde(default = "default_notification_max_age_s")]
    pub notification_max_age_s: u64,
    /// The longest wait between two rounds of attempts of an undelivered
    /// notification; the waits double from 1 s up to this, in ms.
    #[serde(default = "default_notification_retry_max_ms")]
    pub notification_retry_max_ms: u64,
    /// Flap detection: an alert that fires or resolves more than this many
    /// times within `flap_window_s` is flapping, its notifications held,
    /// until it changes no more than half as often; 0: off.
    #[serde(default = "default_flap_changes")]
    pub flap_changes: u32,
    #[serde(default = "default_flap_window_s")]
    pub flap_window_s: u64,
    /// One alerter at a time judges and notifies: it holds a lease in the
    /// store for this long and renews it every third of it; a standby takes
    /// over once the lease of a dead one has run out, in ms.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
}

impl Default for AlerterConfig {
    fn default() -> Self {
        AlerterConfig {
            rules: Vec::new(),
            prometheus_tenant: None,
            group: default_alerter_group(),
            evaluation_delay_ms: default_evaluation_delay_ms(),
            watch_interval_ms: default_watch_interval_ms(),
            external_url: String::new(),
            dry_run: false,
            playbook_hosts: Vec::new(),
            ca_file: None,
            metrics_listen: default_alerter_metrics_listen(),
            notification_max_age_s: default_notification_max_age_s(),
            notification_retry_max_ms: default_notification_retry_max_ms(),
            lease_ms: default_lease_ms(),
            flap_changes: default_flap_changes(),
            flap_window_s: default_flap_window_s(),
        }
    }
}

fn default_notification_max_age_s() -> u64 {
    86_400
}

fn default_notification_retry_max_ms() -> u64 {
    300_000
}

fn default_flap_changes() -> u32 {
    6
}

fn default_flap_window_s() -> u64 {
    600
}

fn default_lease_ms() -> u64 {
    8_000
}

fn default_alerter_group() -> String {
    "vigil-alerter".to_owned()
}

fn default_evaluation_delay_ms() -> u64 {
    2_000
}

fn default_alerter_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9467))
}

impl AlerterConfig {
    /// Checks what types alone cannot.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let alerter = self;
        if let Some(ca) = &alerter.ca_file {
            check_file("alerter.ca_file", ca)?;
        }
        if alerter.group.is_empty() {
            return Err(ConfigError::invalid("alerter.group", "must not be empty"));
        }
        check_range(
            "alerter.evaluation_delay_ms",
            alerter.evaluation_delay_ms,
            ..=60_000,
            " (a minute)",
        )?;
        check_range(
            "alerter.notification_max_age_s",
            alerter.notification_max_age_s,
            1..=30 * 86_400,
            " (30 days)",
        )?;
        check_range(
            "alerter.notification_retry_max_ms",
            alerter.notification_retry_max_ms,
            100..=3_600_000,
            " (an hour)",
        )?;
        check_range(
            "alerter.lease_ms",
            alerter.lease_ms,
            1_000..=600_000,
            " (10 minutes)",
        )?;
        check_range(
            "alerter.flap_window_s",
            alerter.flap_window_s,
            10..=86_400,
            " (a day)",
        )?;
        let url = &alerter.external_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "alerter.external_url",
                format!("must be empty or an http:// or https:// URL, got {url:?}"),
            ));
        }
        Ok(())
    }
}
