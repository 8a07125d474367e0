//! `GET /api/v1/query`: the HTTP side of [`crate::query`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use crate::error::BadParameter;
use crate::openapi::{Endpoint, FILTER, FROM, KIND, Method, NAME, Param, SERVICE, TO};
use vigil_domain::signal::Signal;

use crate::query::{Query, Selection};
use crate::server::{Answer, AppState, Incoming, seconds};

pub const ENDPOINT: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/query",
    summary: "Series of a signal (count, rate, error ratio, quantiles…) per group and step, from merged rollups",
    path_params: &[],
    params: &[
        KIND,
        Param {
            name: "signal",
            kind: "string",
            required: true,
            description: "count, sum, rate, mean, min, max, error_ratio, availability, p50, p90, p95, p99 or p999.",
        },
        NAME,
        SERVICE,
        FILTER,
        Param {
            name: "group_by",
            kind: "string",
            required: false,
            description: "Comma-separated labels to group by (service.name and name included).",
        },
        FROM,
        TO,
        Param {
            name: "step",
            kind: "string",
            required: false,
            description: "Step: ms or with a unit (1m), a multiple of 10 s; default 1m. Steps start at multiples of the step; a step at least as long as the range answers one point over exactly the range.",
        },
    ],
    body: None,
    role: None,
};

pub async fn handler(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&ENDPOINT, &incoming)?;
    let params = &call.params;
    let signal_name = params.get("signal").ok_or_else(|| {
        BadParameter::new(
            "signal",
            format!("required: one of {}", Signal::NAMES.join(", ")),
        )
    })?;
    let signal = Signal::parse(signal_name).ok_or_else(|| {
        BadParameter::new(
            "signal",
            format!(
                "unknown signal {signal_name:?}; use one of {}",
                Signal::NAMES.join(", ")
            ),
        )
    })?;
    let mut selection = Selection::from_params(params)?;
    let kind = selection.kind;
    selection.group_by = params.labels("group_by")?.unwrap_or_default();
    selection.buckets = matches!(signal, Signal::Quantile(_));
    let step_ms = params.duration_ms("step")?.unwrap_or(60_000);
    if !step_ms.is_multiple_of(1000) {
        return Err(BadParameter::new(
            "step",
            format!("must be a positive multiple of 10 s (10000 ms), got {step_ms} ms"),
        )
        .into());
    }
    let query = Query::new(
        selection,
        signal,
        seconds(params.range(3_600_000)?),
        step_ms / 1000,
    )?;
    let reader = &call.reader;
    let merged = state
        .within(reader.merged(
            &query.selection,
            query.from_s,
            query.to_s,
            query.store_step(),
        ))
        .await?;
    let series: Vec<Value> = query
        .series(&merged)
        .into_iter()
        .map(|series| {
            let labels: Map<String, Value> = series
                .labels
                .into_iter()
                .map(|(key, value)| (key, Value::String(value)))
                .collect();
            let points: Vec<Value> = series
                .points
                .into_iter()
                .map(|(start, value)| json!([start * 1000, value]))
                .collect();
            json!({"labels": labels, "points": points})
        })
        .collect();
    Ok(Json(json!({
        "kind": kind.as_str(),
        "signal": signal_name,
        "from": query.from_s * 1000,
        "to": query.to_s * 1000,
        "step": query.step_s * 1000,
        "series": series,
    })))
}
