//! The alert contract between the alerter, which writes alerts, silences'
//! effects and notification groups to the store, and the API, which reads
//! them and writes silences: the stored shapes and the store collections
//! they are kept in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Fnv;
use crate::tenant::TenantId;

/// A store collection of keyed state (see the store's state records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    /// [`Alert`]s, by fingerprint.
    Alert,
    /// [`Silence`](crate::silence::Silence)s, by id.
    Silence,
    /// The alerter's notification groups, by group key.
    Notification,
    /// When each remediation action last ran, for its cooldown.
    Action,
    /// Notifications not yet accepted by their receiver, by idempotency key.
    Outbox,
    /// The playbooks the alerter carries out, by name, as it loaded them.
    Playbook,
    /// Playbook runs ([`crate::playbook::Run`]), by id.
    Run,
    /// Approvals of waiting runs, by run id.
    Approval,
    /// Switches the API sets for the alerter (the playbooks' kill switch).
    Switch,
}

impl Collection {
    pub fn as_str(self) -> &'static str {
        match self {
            Collection::Alert => "alert",
            Collection::Silence => "silence",
            Collection::Notification => "notification",
            Collection::Action => "action",
            Collection::Outbox => "outbox",
            Collection::Playbook => "playbook",
            Collection::Run => "run",
            Collection::Approval => "approval",
            Collection::Switch => "switch",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Firing,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub fingerprint: String,
    pub tenant: TenantId,
    pub rule: String,
    /// `alertname` (the rule's name), `tenant`, the group's labels and the
    /// rule's.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub state: State,
    /// When the condition started to hold, unix ms.
    pub active_since_ms: u64,
    /// When it fired, unix ms.
    pub fired_ms: Option<u64>,
    /// When it resolved, unix ms.
    pub resolved_ms: Option<u64>,
    /// The value of the last evaluation that held.
    pub value: Option<f64>,
    /// When the condition last held, unix ms: a firing alert of a rule with
    /// `keep_firing_for` stays firing that long after it.
    #[serde(default)]
    pub last_held_ms: u64,
    /// The label sets that explain the change the alert judged, worked out
    /// when it fired (`crate::located`); empty when none did or its rule's
    /// signal cannot be localized.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub located: Vec<crate::located::Located>,
    /// It fires and resolves too often to be told of each time: its
    /// notifications are held until it settles.
    #[serde(default)]
    pub flapping: bool,
    /// When a receiver first accepted a notification of it firing, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_ms: Option<u64>,
    /// When the first playbook run for it started, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation_started_ms: Option<u64>,
    /// When a run's check passed for it, or else when it resolved, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_ms: Option<u64>,
}

/// The labels' fingerprint: FNV-1a over the sorted pairs, 16 hex digits.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut hash = Fnv::default();
    for (key, value) in labels {
        hash.write(key.as_bytes());
        hash.write(&[0xff]);
        hash.write(value.as_bytes());
        hash.write(&[0xff]);
    }
    format!("{:016x}", hash.finish())
}
