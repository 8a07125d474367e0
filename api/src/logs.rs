//! `GET /api/v1/logs`: the tenant's log records, newest first, in pages.
//!
//! Every filter runs in the store, so a page is full whatever it selects:
//! on ClickHouse the records are ordered by tenant and time, so a search
//! reads the tenant's records of the range (partitions by day outside it
//! are skipped) and the API's query timeout bounds it; the text search is
//! a case-insensitive substring scan of the bodies of those records (the
//! token and n-gram skip indexes need ClickHouse 19+, and 18.16 is
//! supported).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};
use vigil_store::{EventKind, EventQuery, EventRecord};

use crate::error::BadParameter;
use crate::openapi::{CURSOR, Endpoint, FROM, LIMIT, Method, Param, TO};
use crate::server::{Answer, AppState, Call, Incoming};
use crate::traces::ms;

pub const ENDPOINT: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/logs",
    summary: "Log records by service, severity, trace, span, attributes and text in a time range (default the last hour), newest first, in pages",
    path_params: &[],
    params: &[
        FROM,
        TO,
        Param {
            name: "service",
            kind: "string",
            required: false,
            description: "The record's service.",
        },
        Param {
            name: "severity",
            kind: "string",
            required: false,
            description: "Severities, comma-separated, any case: ERROR,FATAL.",
        },
        Param {
            name: "trace_id",
            kind: "string",
            required: false,
            description: "The trace the record belongs to (32 hex digits).",
        },
        Param {
            name: "span_id",
            kind: "string",
            required: false,
            description: "The span the record belongs to (16 hex digits).",
        },
        Param {
            name: "attributes",
            kind: "string",
            required: false,
            description: "Attributes (resource or record) the record has: key=\"value\",….",
        },
        Param {
            name: "q",
            kind: "string",
            required: false,
            description: "Text the body holds, any case.",
        },
        LIMIT,
        CURSOR,
    ],
    body: None,
    role: None,
};

pub async fn handler(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&ENDPOINT, &incoming)?;
    let query = log_query(&call)?;
    let records = state
        .within(async { Ok(call.reader.store.events(&query).await?) })
        .await?;
    let next_cursor = (records.len() == query.limit)
        .then(|| records.last())
        .flatten()
        .map(|last| format!("{}-{}", last.time_ns, last.id));
    Ok(Json(json!({
        "logs": records.iter().map(log_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

fn log_query(call: &Call) -> Result<EventQuery, BadParameter> {
    let params = &call.params;
    let (from_ms, to_ms) = params.range(3_600_000)?;
    let mut query = EventQuery::new(
        call.reader.tenant.clone(),
        EventKind::Log,
        from_ms.saturating_mul(1_000_000),
        to_ms.saturating_mul(1_000_000),
    );
    query.limit = params.number("limit", 1, 1000)?.map_or(100, |n| n as usize);
    query.service = params.text("service");
    query.names = params
        .get("severity")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    query.trace_id = params.hex_id("trace_id", 32)?;
    query.span_id = params.hex_id("span_id", 16)?;
    query.text = params.text("q");
    query.attributes = params.equalities("attributes")?;
    query.before = params
        .get("cursor")
        .map(|text| {
            text.split_once('-')
                .and_then(|(time, id)| Some((time.parse().ok()?, id.parse().ok()?)))
                .ok_or_else(|| BadParameter::new("cursor", "not a cursor this API returned"))
        })
        .transpose()?;
    Ok(query)
}

/// One log record as the API shows it: its time in unix ms.
pub fn log_json(record: &EventRecord) -> Value {
    let attributes: Map<String, Value> = record
        .attributes
        .iter()
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect();
    json!({
        "time": ms(record.time_ns),
        "service": record.service,
        "severity": record.name,
        "body": record.body,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "attributes": attributes,
    })
}
