//! The rule files' YAML as written: every key, with serde enums for the
//! words a key may take. [`checks`](super::checks) turns it into rules.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use vigil_domain::model::Kind;
use vigil_domain::signal::Sli;
use vigil_domain::time::DurationSpec;

use super::{Direction, Op};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSpec {
    #[serde(default)]
    pub(super) tenant: Option<String>,
    #[serde(default)]
    pub(super) rules: Vec<RuleSpec>,
    #[serde(default)]
    pub(super) receivers: Vec<ReceiverSpec>,
    #[serde(default)]
    pub(super) route: Option<RouteSpec>,
    #[serde(default)]
    pub(super) inhibit_rules: Vec<InhibitSpec>,
    #[serde(default)]
    pub(super) actions: Vec<ActionSpec>,
    #[serde(default)]
    pub(super) playbooks: Vec<super::playbooks::PlaybookSpec>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RuleType {
    Threshold,
    Absence,
    BurnRate,
    Anomaly,
    Canary,
    CrashGroup,
}

impl RuleType {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            RuleType::Threshold => "threshold",
            RuleType::Absence => "absence",
            RuleType::BurnRate => "burn_rate",
            RuleType::Anomaly => "anomaly",
            RuleType::Canary => "canary",
            RuleType::CrashGroup => "crash_group",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSpec {
    pub(super) name: String,
    pub(super) r#type: RuleType,
    #[serde(default)]
    pub(super) tenant: Option<String>,
    #[serde(default)]
    pub(super) kind: Option<Kind>,
    #[serde(default)]
    pub(super) service: Option<String>,
    #[serde(default)]
    pub(super) series: Option<String>,
    #[serde(default)]
    pub(super) filter: Option<String>,
    #[serde(default)]
    pub(super) group_by: Vec<String>,
    #[serde(default)]
    pub(super) signal: Option<String>,
    #[serde(default)]
    pub(super) window: Option<DurationSpec>,
    #[serde(default)]
    pub(super) op: Option<Op>,
    #[serde(default)]
    pub(super) value: Option<f64>,
    #[serde(default)]
    pub(super) min_count: Option<u64>,
    #[serde(default)]
    pub(super) r#for: Option<DurationSpec>,
    #[serde(default)]
    pub(super) keep_firing_for: Option<DurationSpec>,
    #[serde(default)]
    pub(super) objective: Option<f64>,
    #[serde(default)]
    pub(super) sli: Option<Sli>,
    #[serde(default)]
    pub(super) threshold_ms: Option<f64>,
    #[serde(default)]
    pub(super) windows: Option<Vec<BurnWindowSpec>>,
    #[serde(default)]
    pub(super) method: Option<AnomalyMethod>,
    #[serde(default)]
    pub(super) history: Option<DurationSpec>,
    #[serde(default)]
    pub(super) period: Option<String>,
    #[serde(default)]
    pub(super) threshold: Option<f64>,
    #[serde(default)]
    pub(super) tolerance: Option<f64>,
    #[serde(default)]
    pub(super) direction: Option<Direction>,
    #[serde(default)]
    pub(super) min_samples: Option<u64>,
    #[serde(default)]
    pub(super) significance: Option<f64>,
    #[serde(default)]
    pub(super) states: Option<Vec<String>>,
    #[serde(default)]
    pub(super) velocity: Option<f64>,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) actions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BurnWindowSpec {
    pub(super) long: DurationSpec,
    pub(super) short: DurationSpec,
    pub(super) factor: f64,
    pub(super) severity: String,
}

pub(super) fn default_timeout() -> DurationSpec {
    DurationSpec(Duration::from_secs(5))
}

pub(super) fn default_attempts() -> u32 {
    5
}

/// How an anomaly rule knows what is usual: `zscore` (the default) or
/// `seasonal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum AnomalyMethod {
    #[default]
    Zscore,
    Seasonal,
}

/// The HTTP method of a remediation action (upper or lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub(super) enum HttpMethod {
    #[default]
    #[serde(rename = "POST", alias = "post")]
    Post,
    #[serde(rename = "PUT", alias = "put")]
    Put,
    #[serde(rename = "PATCH", alias = "patch")]
    Patch,
}

impl HttpMethod {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReceiverSpec {
    pub(super) name: String,
    #[serde(default, rename = "type")]
    pub(super) kind: super::ReceiverKind,
    pub(super) url: String,
    #[serde(default)]
    pub(super) secret: Option<String>,
    #[serde(default)]
    pub(super) secret_env: Option<String>,
    #[serde(default = "default_timeout")]
    pub(super) timeout: DurationSpec,
    #[serde(default = "default_attempts")]
    pub(super) max_attempts: u32,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteSpec {
    #[serde(default)]
    pub(super) receiver: Option<String>,
    #[serde(default)]
    pub(super) matchers: Vec<String>,
    #[serde(default)]
    pub(super) group_by: Option<Vec<String>>,
    #[serde(default)]
    pub(super) group_wait: Option<DurationSpec>,
    #[serde(default)]
    pub(super) group_interval: Option<DurationSpec>,
    #[serde(default)]
    pub(super) repeat_interval: Option<DurationSpec>,
    #[serde(default)]
    pub(super) r#continue: bool,
    #[serde(default)]
    pub(super) routes: Vec<RouteSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InhibitSpec {
    pub(super) source_matchers: Vec<String>,
    pub(super) target_matchers: Vec<String>,
    #[serde(default)]
    pub(super) equal: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ActionSpec {
    pub(super) name: String,
    pub(super) url: String,
    #[serde(default)]
    pub(super) method: HttpMethod,
    #[serde(default)]
    pub(super) body: Value,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) secret: Option<String>,
    #[serde(default)]
    pub(super) secret_env: Option<String>,
    #[serde(default = "default_timeout")]
    pub(super) timeout: DurationSpec,
    #[serde(default = "default_attempts")]
    pub(super) max_attempts: u32,
    #[serde(default)]
    pub(super) cooldown: DurationSpec,
    #[serde(default)]
    pub(super) dry_run: bool,
}
