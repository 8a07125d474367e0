//! `GET|POST /api/v1/silences` and `DELETE /api/v1/silences/{id}`: the
//! tenant's silences, kept in the store where the alerter reads them.
//!
//! A silence is created (or, with the `id` of an existing one, replaced)
//! from a JSON body:
//!
//! ```json
//! {"matchers": [{"name": "vigil.unit", "value": "u1"}],
//!  "starts_at": "now", "ends_at": "2026-12-08T00:00:00Z",
//!  "recurring": {"cron": "0 2 * * *", "duration": "90m"},
//!  "created_by": "sre@example.com", "comment": "nightly maintenance"}
//! ```
//!
//! Times are RFC 3339, unix ms or `now±<duration>`; `recurring` limits it
//! to the windows of a cron schedule (UTC). Deleting a silence expires it
//! (ends it now) and keeps it, so the list still shows what muted what.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};
use vigil_domain::alert::Collection;
use vigil_domain::signal::Matcher;
use vigil_domain::silence::{self, Recurring, Silence};
use vigil_domain::time::{Cron, DurationSpec};
use vigil_store::StateRecord;

use crate::alerts::read;
use crate::error::{ApiError, BadParameter};
use crate::openapi::{Endpoint, Method, Param};
use crate::params::parse_time;
use crate::reader::Reader;
use crate::server::{Answer, AppState, Incoming};

pub const LIST: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/silences",
    summary: "The tenant's silences, active first, then pending (not started, or between recurring windows), then expired",
    path_params: &[],
    params: &[Param {
        name: "status",
        kind: "string",
        required: false,
        description: "Only silences in this status: active, pending or expired.",
    }],
    body: None,
    role: None,
};

pub const CREATE: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/silences",
    summary: "Creates a silence, or replaces the one named by id; needs an editor token. Answers the silence as kept",
    path_params: &[],
    params: &[],
    body: Some("Silence"),
    role: None,
};

pub const EXPIRE: Endpoint = Endpoint {
    method: Method::Delete,
    path: "/api/v1/silences/{id}",
    summary: "Expires a silence now (it stays listed as expired); needs an editor token",
    path_params: &[("id", "The silence's id")],
    params: &[],
    body: None,
    role: None,
};

/// What `POST` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceRequest {
    #[serde(default)]
    id: Option<String>,
    matchers: Vec<Matcher>,
    #[serde(default)]
    starts_at: Option<Value>,
    ends_at: Value,
    #[serde(default)]
    recurring: Option<RecurringRequest>,
    created_by: String,
    #[serde(default)]
    comment: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecurringRequest {
    cron: Cron,
    duration: DurationSpec,
}

pub async fn list(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&LIST, &incoming)?;
    let wanted = call
        .params
        .get("status")
        .map(|text| match text {
            "active" | "pending" | "expired" => Ok(text),
            _ => Err(BadParameter::new(
                "status",
                format!("{text:?} is not a status: use active, pending or expired"),
            )),
        })
        .transpose()?;
    let silences: Vec<Silence> = state
        .within(read(&call.reader, Collection::Silence))
        .await?;
    let now_ms = call.now_ms;
    let mut silences: Vec<(&'static str, Silence)> = silences
        .into_iter()
        .map(|s| (s.status(now_ms), s))
        .filter(|(status, _)| wanted.is_none_or(|wanted| wanted == *status))
        .collect();
    let order = |status: &str| {
        ["active", "pending", "expired"]
            .iter()
            .position(|s| *s == status)
    };
    silences.sort_by(|(a_status, a), (b_status, b)| {
        (order(a_status), b.ends_at_ms, &a.id).cmp(&(order(b_status), a.ends_at_ms, &b.id))
    });
    let silences: Vec<Value> = silences
        .iter()
        .map(|(_, silence)| view(silence, now_ms))
        .collect();
    Ok(Json(json!({ "silences": silences })))
}

pub async fn create(State(state): State<Arc<AppState>>, incoming: Incoming, body: Bytes) -> Answer {
    let call = state.begin(&CREATE, &incoming)?;
    let now_ms = call.now_ms;
    let request: SilenceRequest = serde_json::from_slice(&body).map_err(|error| {
        BadParameter::new(
            "body",
            format!("not a silence: {error}; see /api/v1/openapi.json"),
        )
    })?;
    let time = |field: &str, value: &Value| -> Result<u64, BadParameter> {
        let parsed = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(text) => parse_time(text, now_ms),
            _ => None,
        };
        parsed.ok_or_else(|| {
            BadParameter::new(
                field,
                format!("{value} is not a time: use RFC 3339, unix ms or now+<duration>"),
            )
        })
    };
    let starts_at_ms = match &request.starts_at {
        Some(value) => time("starts_at", value)?,
        None => now_ms,
    };
    let ends_at_ms = time("ends_at", &request.ends_at)?;
    if ends_at_ms <= now_ms {
        return Err(BadParameter::new("ends_at", "must be in the future").into());
    }
    let previous = match &request.id {
        Some(id) => Some(
            existing(&state, &call.reader, id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no silence {id} to replace")))?,
        ),
        None => None,
    };
    let silence = Silence {
        id: request.id.unwrap_or_else(new_id),
        matchers: request.matchers,
        starts_at_ms,
        ends_at_ms,
        recurring: request.recurring.map(|r| Recurring {
            cron: r.cron,
            duration_ms: u64::try_from(r.duration.0.as_millis()).unwrap_or(u64::MAX),
        }),
        created_by: request.created_by,
        comment: request.comment,
    };
    silence::check(&silence).map_err(|(field, reason)| BadParameter::new(field, reason))?;
    save(&state, &call.reader, &silence, previous.as_ref(), now_ms).await?;
    tracing::info!(tenant = %call.reader.tenant, id = silence.id, "silence saved");
    Ok(Json(view(&silence, now_ms)))
}

pub async fn expire(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    incoming: Incoming,
) -> Answer {
    let call = state.begin(&EXPIRE, &incoming)?;
    let now_ms = call.now_ms;
    let previous = existing(&state, &call.reader, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no silence {id}")))?;
    let mut silence: Silence = serde_json::from_str(&previous.body).map_err(|error| {
        tracing::error!(%error, id, "unreadable silence");
        ApiError::Internal
    })?;
    if silence.ends_at_ms > now_ms {
        silence.ends_at_ms = now_ms;
        silence.starts_at_ms = silence.starts_at_ms.min(now_ms);
        save(&state, &call.reader, &silence, Some(&previous), now_ms).await?;
        tracing::info!(tenant = %call.reader.tenant, id, "silence expired");
    }
    Ok(Json(view(&silence, now_ms)))
}

/// The caller's stored silence `id`.
async fn existing(
    state: &AppState,
    reader: &Reader,
    id: &str,
) -> Result<Option<StateRecord>, ApiError> {
    let records = state
        .within(async { Ok(reader.store.state(Collection::Silence).await?) })
        .await?;
    Ok(records
        .into_iter()
        .find(|record| record.tenant == reader.tenant && record.key == id))
}

/// Writes `silence` over `previous`: its version is now, or just after the
/// previous one's if the clock has not moved past it.
async fn save(
    state: &AppState,
    reader: &Reader,
    silence: &Silence,
    previous: Option<&StateRecord>,
    now_ms: u64,
) -> Result<(), ApiError> {
    let record = StateRecord {
        collection: Collection::Silence,
        tenant: reader.tenant.clone(),
        key: silence.id.clone(),
        version: previous.map_or(now_ms, |p| now_ms.max(p.version + 1)),
        body: serde_json::to_string(silence).map_err(|_| ApiError::Internal)?,
        deleted: false,
    };
    state
        .within(async { Ok(reader.store.put_state(&[record]).await?) })
        .await
}

/// A silence as the API shows it: as kept, with its status now.
fn view(silence: &Silence, now_ms: u64) -> Value {
    let mut value = serde_json::to_value(silence).unwrap_or_default();
    value["status"] = json!(silence.status(now_ms));
    value
}

/// A random id in the form of a UUID (version 4).
fn new_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
