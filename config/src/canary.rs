//! `[canary]`: how a gray release is judged against its baseline.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// How a canary is judged against its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Events (requests, sessions, frames, runs) each cohort needs before a
    /// signal is judged; fewer: inconclusive.
    #[serde(default = "default_canary_min_samples")]
    pub min_samples: u64,
    /// A difference is significant when its p-value is below this.
    #[serde(default = "default_canary_significance")]
    pub significance: f64,
    /// A significant difference fails the canary only when it is worse than
    /// the baseline by more than this percentage of it.
    #[serde(default = "default_canary_tolerance_percent")]
    pub tolerance_percent: f64,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            min_samples: default_canary_min_samples(),
            significance: default_canary_significance(),
            tolerance_percent: default_canary_tolerance_percent(),
        }
    }
}

impl CanaryConfig {
    pub fn criteria(&self) -> vigil_domain::canary::Criteria {
        vigil_domain::canary::Criteria {
            min_samples: self.min_samples,
            significance: self.significance,
            tolerance: self.tolerance_percent / 100.0,
        }
    }
}

fn default_canary_min_samples() -> u64 {
    100
}

fn default_canary_significance() -> f64 {
    0.05
}

fn default_canary_tolerance_percent() -> f64 {
    10.0
}

impl CanaryConfig {
    /// Checks what types alone cannot.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let canary = self;
        canary.criteria().check().map_err(|(field, reason)| {
            let (key, value) = match field {
                "min_samples" => ("canary.min_samples", canary.min_samples.to_string()),
                "significance" => ("canary.significance", canary.significance.to_string()),
                _ => (
                    "canary.tolerance_percent",
                    format!("{} %", canary.tolerance_percent),
                ),
            };
            ConfigError::invalid(key, format!("{reason}, got {value}"))
        })
    }
}
