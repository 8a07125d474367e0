//! `GET /api/v1/alerts` (the alerts the alerter keeps: pending, firing,
//! and resolved ones not yet notified, with the silences that mute them)
//! and `GET /api/v1/alerts/history` (transitions, notifications and
//! remediations, newest first).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use vigil_domain::alert::{Alert, Collection, State as AlertState};
use vigil_domain::signal::parse_filter;
use vigil_domain::silence::Silence;
use vigil_store::HistoryQuery;

use crate::error::{ApiError, BadParameter};
use crate::openapi::{Endpoint, FROM, LIMIT, Method, Param, TO};
use crate::reader::Reader;
use crate::server::{Answer, AppState, Incoming};

pub const ALERTS: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/alerts",
    summary: "The tenant's alerts: pending, firing, and resolved ones whose notification is still due; labels, annotations, value, and the silences muting each",
    path_params: &[],
    params: &[
        Param {
            name: "state",
            kind: "string",
            required: false,
            description: "Only alerts in this state: pending, firing or resolved.",
        },
        Param {
            name: "rule",
            kind: "string",
            required: false,
            description: "Only the alerts of this rule.",
        },
        Param {
            name: "filter",
            kind: "string",
            required: false,
            description: "Label matchers: key=\"value\",key!=\"value\".",
        },
    ],
    body: None,
    role: None,
};

pub const HISTORY: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/alerts/history",
    summary: "What the alerter did, newest first (default the last 24 hours): state transitions, notifications sent or failed, remediation actions and their outcome",
    path_params: &[],
    params: &[
        FROM,
        TO,
        Param {
            name: "rule",
            kind: "string",
            required: false,
            description: "Only entries of this rule.",
        },
        Param {
            name: "subject",
            kind: "string",
            required: false,
            description: "Only entries about this alert (its fingerprint) or notification group (its key).",
        },
        LIMIT,
    ],
    body: None,
    role: None,
};

pub async fn alerts(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&ALERTS, &incoming)?;
    let wanted = call
        .params
        .get("state")
        .map(|text| match text {
            "pending" => Ok(AlertState::Pending),
            "firing" => Ok(AlertState::Firing),
            "resolved" => Ok(AlertState::Resolved),
            _ => Err(BadParameter::new(
                "state",
                format!("{text:?} is not a state: use pending, firing or resolved"),
            )),
        })
        .transpose()?;
    let filter = call
        .params
        .get("filter")
        .map(parse_filter)
        .transpose()
        .map_err(|reason| BadParameter::new("filter", reason))?
        .unwrap_or_default();
    let rule = call.params.get("rule");
    let (alerts, silences) = state
        .within(async {
            let alerts: Vec<Alert> = read(&call.reader, Collection::Alert).await?;
            let silences: Vec<Silence> = read(&call.reader, Collection::Silence).await?;
            Ok((alerts, silences))
        })
        .await?;
    let now_ms = call.now_ms;
    let mut alerts: Vec<Alert> = alerts
        .into_iter()
        .filter(|alert| wanted.is_none_or(|state| alert.state == state))
        .filter(|alert| rule.is_none_or(|rule| alert.rule == rule))
        .filter(|alert| filter.iter().all(|m| m.matches(&alert.labels)))
        .collect();
    alerts.sort_by(|a, b| {
        (order(a.state), &a.rule, &a.fingerprint).cmp(&(order(b.state), &b.rule, &b.fingerprint))
    });
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|alert| {
            let silenced_by: Vec<&str> = silences
                .iter()
                .filter(|s| s.is_active(now_ms) && s.matches(&alert.labels))
                .map(|s| s.id.as_str())
                .collect();
            json!({
                "fingerprint": alert.fingerprint,
                "rule": alert.rule,
                "state": alert.state.as_str(),
                "labels": alert.labels,
                "annotations": alert.annotations,
                "active_since": alert.active_since_ms,
                "fired_at": alert.fired_ms,
                "resolved_at": alert.resolved_ms,
                "value": alert.value,
                "located": alert.located,
                "flapping": alert.flapping,
                "silenced_by": silenced_by,
                "timeline": timeline(alert),
            })
        })
        .collect();
    Ok(Json(json!({ "alerts": alerts })))
}

pub async fn history(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&HISTORY, &incoming)?;
    let (from_ms, to_ms) = call.params.range(86_400_000)?;
    let query = HistoryQuery {
        tenant: call.reader.tenant.clone(),
        from_ms,
        to_ms,
        rule: call.params.text("rule"),
        subject: call.params.text("subject"),
        limit: call.params.number("limit", 1, 1_000)?.unwrap_or(100) as usize,
    };
    let entries = state
        .within(async { Ok(call.reader.store.history(&query).await?) })
        .await?;
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|entry| {
            json!({
                "time": entry.time_ms,
                "kind": entry.kind,
                "rule": entry.rule,
                "subject": entry.subject,
                "details": serde_json::from_str::<Value>(&entry.body).unwrap_or(Value::String(entry.body)),
            })
        })
        .collect();
    Ok(Json(
        json!({"from": from_ms, "to": to_ms, "entries": entries}),
    ))
}

/// The caller's records of a state collection, parsed; records the API
/// cannot read (written by a newer alerter) are skipped and logged.
pub async fn read<T: DeserializeOwned>(
    reader: &Reader,
    collection: Collection,
) -> Result<Vec<T>, ApiError> {
    let records = reader.store.state(collection).await?;
    Ok(records
        .into_iter()
        .filter(|record| record.tenant == reader.tenant)
        .filter_map(|record| match serde_json::from_str(&record.body) {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!(collection = collection.as_str(), key = record.key, %error, "unreadable state record skipped");
                None
            }
        })
        .collect())
}

/// The incident's timeline, unix ms: detected (the condition first held
/// at a boundary), fired, first notified (a receiver accepted it),
/// remediation started (the first playbook run), recovered (a run's check
/// passed, else the alert resolved); and the seconds from detection to
/// each.
fn timeline(alert: &Alert) -> Value {
    let recovered = alert.recovered_ms.or(alert.resolved_ms);
    let detected = alert.active_since_ms;
    let after = |at: Option<u64>| at.map(|at| at.saturating_sub(detected) as f64 / 1_000.0);
    json!({
        "detected_at": detected,
        "fired_at": alert.fired_ms,
        "first_notified_at": alert.notified_ms,
        "remediation_started_at": alert.remediation_started_ms,
        "recovered_at": recovered,
        "seconds_to": {
            "fire": after(alert.fired_ms),
            "notify": after(alert.notified_ms),
            "remediate": after(alert.remediation_started_ms),
            "recover": after(recovered),
        },
    })
}

/// Firing first, then pending, then resolved.
fn order(state: AlertState) -> u8 {
    match state {
        AlertState::Firing => 0,
        AlertState::Pending => 1,
        AlertState::Resolved => 2,
    }
}
