//! `[[slos]]`: service level objectives.

use std::ops::Bound;

use serde::{Deserialize, Serialize};
pub use vigil_domain::signal::Sli;
use vigil_domain::tenant::TenantId;

use crate::{ConfigError, check_range};

/// A service level objective: which series it counts, what a good event
/// is, and the target over a rolling window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Unique within its tenant.
    pub name: String,
    pub tenant: TenantId,
    #[serde(default)]
    pub description: String,
    /// `span` (a service or one operation), `probe` (a probe's runs),
    /// `client` (an app signal) or `metric`.
    pub kind: vigil_domain::model::Kind,
    /// The service, or the app for `client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The series name: an operation, a probe or a client signal; every
    /// series of the service when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    /// Labels the series must have, with these values.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub sli: Sli,
    /// For a latency SLI: an event is good when it took at most this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_ms: Option<f64>,
    /// The share of good events to reach, in percent (e.g. 99.9).
    pub objective_percent: f64,
    /// The rolling window the objective is for, in days (usually 7, 28 or 30).
    #[serde(default = "default_slo_window_days")]
    pub window_days: u32,
}

fn default_slo_window_days() -> u32 {
    28
}

/// Checks every objective, and that no tenant names two alike.
pub(crate) fn validate(slos: &[SloConfig]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (i, slo) in slos.iter().enumerate() {
        let key = |field: &str| format!("slos[{i}].{field}");
        let plain = !slo.name.is_empty()
            && slo.name.len() <= 128
            && slo
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain {
            return Err(ConfigError::invalid(
                &key("name"),
                format!(
                    "may hold only ASCII letters, digits, '.', '_' and '-' (1 to 128), got {:?}",
                    slo.name
                ),
            ));
        }
        if !seen.insert((&slo.tenant, &slo.name)) {
            return Err(ConfigError::invalid(
                &key("name"),
                format!(
                    "tenant {} has two objectives named {}",
                    slo.tenant, slo.name
                ),
            ));
        }
        check_range(
            &key("objective_percent"),
            slo.objective_percent,
            (Bound::Excluded(0.0), Bound::Excluded(100.0)),
            "",
        )?;
        check_range(&key("window_days"), slo.window_days, 1..=90, "")?;
        slo.sli
            .threshold(slo.threshold_ms)
            .map_err(|reason| ConfigError::invalid(&key("threshold_ms"), reason))?;
    }
    Ok(())
}
