//! A playbook run as the store keeps it (`Collection::Run`): written by the
//! alerter that carries it out, read by the dashboard API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tenant::TenantId;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Carrying out its steps.
    Running,
    /// Waiting at an `approve` step.
    Waiting,
    /// Its last check passed.
    Recovered,
    /// Its last check did not pass, or it had none that ran.
    Failed,
    /// Stopped: by the kill switch, an approval that did not come, or a
    /// playbook that a reload removed.
    Aborted,
    /// A dry run: every step recorded, nothing called.
    DryRun,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Waiting => "waiting",
            RunState::Recovered => "recovered",
            RunState::Failed => "failed",
            RunState::Aborted => "aborted",
            RunState::DryRun => "dry_run",
        }
    }

    pub fn parse(text: &str) -> Option<RunState> {
        [
            RunState::Running,
            RunState::Waiting,
            RunState::Recovered,
            RunState::Failed,
            RunState::Aborted,
            RunState::DryRun,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }

    /// It will do nothing more.
    pub fn is_over(self) -> bool {
        !matches!(self, RunState::Running | RunState::Waiting)
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not reached yet.
    Pending,
    /// Under way: a call sent and not answered, a wait, a check or an
    /// approval not over.
    Running,
    Done,
    /// Its `if` did not hold.
    Skipped,
    /// A call not accepted, a check not passed by its deadline, an approval
    /// that did not come.
    Failed,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// `call`, `wait`, `check`, `approve` or `escalate`.
    pub kind: String,
    /// What it names: the action called, the receiver told, the duration.
    pub target: String,
    pub state: StepState,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// What happened: a call's request and answer, when a check's
    /// condition started to hold, who approved.
    #[serde(default)]
    pub detail: Value,
}

/// One run of a playbook for one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub tenant: TenantId,
    pub playbook: String,
    pub rule: String,
    /// The alert's fingerprint, and its labels when the run started.
    pub alert: String,
    pub labels: BTreeMap<String, String>,
    /// The first located cause's labels when the run started.
    #[serde(default)]
    pub located: BTreeMap<String, String>,
    pub state: RunState,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    /// The step under way (the number of steps once over).
    pub step: usize,
    pub steps: Vec<StepRecord>,
    /// Why it ended as it did.
    #[serde(default)]
    pub reason: String,
}

/// The approval of a waiting run, written by the API
/// (`Collection::Approval`, keyed by the run's id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
    pub at_ms: u64,
}

/// The kill switch (`Collection::Switch`, key [`PLAYBOOKS_SWITCH`]): while
/// paused, no run starts and the running ones stop before their next step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Switch {
    pub paused: bool,
    pub by: String,
    pub at_ms: u64,
}

impl Switch {
    /// The kill switch as last set, of records (key, JSON body) of
    /// `Collection::Switch` of every tenant (any admin may set it).
    pub fn latest<'a>(records: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Switch> {
        records
            .into_iter()
            .filter(|(key, _)| *key == PLAYBOOKS_SWITCH)
            .filter_map(|(_, body)| serde_json::from_str::<Switch>(body).ok())
            .max_by_key(|switch| switch.at_ms)
    }
}

/// The key of the playbooks' kill switch.
pub const PLAYBOOKS_SWITCH: &str = "playbooks";
