//! The playbooks the alerter carries out and their runs:
//! `GET /api/v1/playbooks` (as the alerter loaded them, and the kill
//! switch), `GET /api/v1/playbooks/runs` and `…/runs/{id}`,
//! `POST /api/v1/playbooks/runs/{id}/approve` (editor: a run waiting at an
//! `approve` step goes on) and `POST /api/v1/playbooks/pause` (admin: the
//! kill switch, `{"paused": true|false, "by": "…"}`). Writes go to the
//! store, where the alerter reads them within seconds.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};
use vigil_config::Role;
use vigil_domain::alert::Collection;
use vigil_domain::playbook::{Approval, PLAYBOOKS_SWITCH, Run, RunState, Switch};
use vigil_store::StateRecord;

use crate::alerts::read;
use crate::error::{ApiError, BadParameter};
use crate::openapi::{Endpoint, FROM, LIMIT, Method, Param, TO};
use crate::server::{Answer, AppState, Call, Incoming};

pub const PLAYBOOKS: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/playbooks",
    summary: "The tenant's playbooks as the alerter loaded them, and whether the kill switch is on",
    path_params: &[],
    params: &[],
    body: None,
    role: None,
};

pub const RUNS: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/playbooks/runs",
    summary: "Playbook runs started in the range (default the last 24 hours), newest first, each with its steps, calls and outcome; and per rule, how many recovered and how long recovery took",
    path_params: &[],
    params: &[
        FROM,
        TO,
        Param {
            name: "rule",
            kind: "string",
            required: false,
            description: "Only runs for alerts of this rule.",
        },
        Param {
            name: "playbook",
            kind: "string",
            required: false,
            description: "Only runs of this playbook.",
        },
        Param {
            name: "state",
            kind: "string",
            required: false,
            description: "Only runs in this state: running, waiting, recovered, failed, aborted or dry_run.",
        },
        Param {
            name: "alert",
            kind: "string",
            required: false,
            description: "Only runs for this alert (its fingerprint).",
        },
        LIMIT,
    ],
    body: None,
    role: None,
};

pub const RUN: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/playbooks/runs/{id}",
    summary: "One playbook run",
    path_params: &[("id", "The run's id")],
    params: &[],
    body: None,
    role: None,
};

pub const APPROVE: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/playbooks/runs/{id}/approve",
    summary: "Approves a run waiting at an approve step, which then goes on; needs an editor token. Body (optional): {\"by\": \"who\"}",
    path_params: &[("id", "The run's id")],
    params: &[],
    body: Some("Approval"),
    role: None,
};

pub const PAUSE: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/playbooks/pause",
    summary: "The playbooks' kill switch, for every tenant: while paused no run starts and running ones stop before their next step; needs an admin token. Body: {\"paused\": true|false, \"by\": \"who\"}",
    path_params: &[],
    params: &[],
    body: Some("Pause"),
    role: Some(Role::Admin),
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalRequest {
    #[serde(default)]
    by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseRequest {
    paused: bool,
    #[serde(default)]
    by: Option<String>,
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, BadParameter> {
    serde_json::from_slice(bytes).map_err(|error| {
        BadParameter::new(
            "body",
            format!("not {what}: {error}; see /api/v1/openapi.json"),
        )
    })
}

pub async fn playbooks(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&PLAYBOOKS, &incoming)?;
    let (playbooks, switch) = state
        .within(async {
            let playbooks: Vec<Value> = read(&call.reader, Collection::Playbook).await?;
            Ok((playbooks, switch(&state).await?))
        })
        .await?;
    Ok(Json(json!({
        "playbooks": playbooks,
        "paused": switch.filter(|s| s.paused),
    })))
}

/// The kill switch as last set, by any admin of any tenant.
async fn switch(state: &AppState) -> Result<Option<Switch>, ApiError> {
    let records = state.store().state(Collection::Switch).await?;
    Ok(Switch::latest(records.iter().map(|r| (&*r.key, &*r.body))))
}

pub async fn runs(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&RUNS, &incoming)?;
    let (from_ms, to_ms) = call.params.range(86_400_000)?;
    let wanted = call
        .params
        .get("state")
        .map(|text| {
            RunState::parse(text).ok_or_else(|| {
                BadParameter::new(
                    "state",
                    format!("{text:?} is not a state: use running, waiting, recovered, failed, aborted or dry_run"),
                )
            })
        })
        .transpose()?;
    let limit = call.params.number("limit", 1, 1_000)?.unwrap_or(100) as usize;
    let (rule, playbook, alert) = (
        call.params.get("rule"),
        call.params.get("playbook"),
        call.params.get("alert"),
    );
    let mut runs: Vec<Run> = state
        .within(read(&call.reader, Collection::Run))
        .await?
        .into_iter()
        .filter(|run: &Run| (from_ms..to_ms).contains(&run.started_ms))
        .filter(|run| wanted.is_none_or(|s| run.state == s))
        .filter(|run| rule.is_none_or(|r| run.rule == r))
        .filter(|run| playbook.is_none_or(|p| run.playbook == p))
        .filter(|run| alert.is_none_or(|a| run.alert == a))
        .collect();
    runs.sort_by(|a, b| (b.started_ms, &b.id).cmp(&(a.started_ms, &a.id)));
    let summary = summary(&runs);
    runs.truncate(limit);
    Ok(Json(json!({
        "from": from_ms,
        "to": to_ms,
        "runs": runs,
        "rules": summary,
    })))
}

/// Per rule: runs by outcome and seconds from a run's start to its
/// recovery (median and worst).
fn summary(runs: &[Run]) -> Vec<Value> {
    let mut rules: std::collections::BTreeMap<&str, Vec<&Run>> = Default::default();
    for run in runs {
        rules.entry(&run.rule).or_default().push(run);
    }
    rules
        .into_iter()
        .map(|(rule, runs)| {
            let mut by_state = serde_json::Map::new();
            for run in &runs {
                let count = by_state.entry(run.state.as_str()).or_insert(Value::from(0));
                *count = Value::from(count.as_u64().unwrap_or(0) + 1);
            }
            let mut recovery_s: Vec<f64> = runs
                .iter()
                .filter(|r| r.state == RunState::Recovered)
                .filter_map(|r| r.ended_ms.map(|end| (end - r.started_ms) as f64 / 1_000.0))
                .collect();
            recovery_s.sort_by(f64::total_cmp);
            json!({
                "rule": rule,
                "runs": runs.len(),
                "by_state": by_state,
                "recovery_seconds_median": recovery_s.get(recovery_s.len() / 2),
                "recovery_seconds_max": recovery_s.last(),
            })
        })
        .collect()
}

/// Writes what the alerter reads: one record of the caller's tenant.
async fn put(
    state: &AppState,
    call: &Call,
    collection: Collection,
    key: &str,
    body: Value,
) -> Result<(), ApiError> {
    let record = StateRecord {
        collection,
        tenant: call.reader.tenant.clone(),
        key: key.to_owned(),
        version: call.now_ms,
        body: body.to_string(),
        deleted: false,
    };
    state
        .within(async { Ok(state.store().put_state(&[record]).await?) })
        .await
}

/// The caller's run `id`.
async fn find(state: &AppState, call: &Call, id: &str) -> Result<Run, ApiError> {
    let runs: Vec<Run> = state.within(read(&call.reader, Collection::Run)).await?;
    runs.into_iter()
        .find(|run| run.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no playbook run {id}")))
}

pub async fn run(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    incoming: Incoming,
) -> Answer {
    let call = state.begin(&RUN, &incoming)?;
    Ok(Json(json!(find(&state, &call, &id).await?)))
}

pub async fn approve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    incoming: Incoming,
    bytes: Bytes,
) -> Answer {
    let call = state.begin(&APPROVE, &incoming)?;
    let request: ApprovalRequest = if bytes.is_empty() {
        ApprovalRequest::default()
    } else {
        body(&bytes, "an approval")?
    };
    let run = find(&state, &call, &id).await?;
    if run.state != RunState::Waiting {
        return Err(ApiError::Conflict(format!(
            "run {id} is {}, not waiting for an approval",
            run.state.as_str()
        )));
    }
    let approval = Approval {
        by: request.by.unwrap_or_else(|| "an editor token".to_owned()),
        at_ms: call.now_ms,
    };
    put(&state, &call, Collection::Approval, &id, json!(approval)).await?;
    tracing::info!(tenant = %call.reader.tenant, run = id, by = approval.by, "playbook run approved");
    Ok(Json(json!({"run": id, "approved": approval})))
}

pub async fn pause(State(state): State<Arc<AppState>>, incoming: Incoming, bytes: Bytes) -> Answer {
    let call = state.begin(&PAUSE, &incoming)?;
    let request: PauseRequest = body(&bytes, "a pause")?;
    let switch = Switch {
        paused: request.paused,
        by: request.by.unwrap_or_else(|| "an admin token".to_owned()),
        at_ms: call.now_ms,
    };
    put(
        &state,
        &call,
        Collection::Switch,
        PLAYBOOKS_SWITCH,
        json!(switch),
    )
    .await?;
    tracing::warn!(
        paused = switch.paused,
        by = switch.by,
        "playbooks' kill switch set"
    );
    Ok(Json(json!(switch)))
}
