//! `GET /api/v1/services`: every service with spans in the range, with its
//! requests, errors, error ratio, availability and latency.
//!
//! A service's requests are its entry spans — kind `server` or `consumer` —
//! so its own client and internal spans do not count twice; a service with
//! no entry spans (a batch job, a prober) is judged on all its spans.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::json;
use vigil_domain::model::{Kind, Rollup};

use crate::openapi::{Endpoint, FROM, Method, TO};
use crate::query::Selection;
use crate::server::{Answer, AppState, Incoming, range_json, seconds, stats_json};

pub const ENDPOINT: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/services",
    summary: "Every service with spans in the range (default the last hour): requests, errors, error ratio, availability, p50/p90/p99",
    path_params: &[],
    params: &[FROM, TO],
    body: None,
    role: None,
};

/// Span kinds that start a request in a service.
const ENTRY_KINDS: [&str; 2] = ["server", "consumer"];

pub async fn handler(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&ENDPOINT, &incoming)?;
    let (from_s, to_s) = seconds(call.params.range(3_600_000)?);
    let selection = Selection::new(Kind::Span).grouped_by(&["service.name", "span.kind"]);
    let totals = state
        .within(call.reader.totals(&selection, from_s, to_s))
        .await?;
    let mut services: BTreeMap<String, (Rollup, Rollup)> = BTreeMap::new();
    for (group, rollup) in totals {
        let [service, kind] = <[String; 2]>::try_from(group).unwrap_or_default();
        let (entry, all) = services.entry(service).or_default();
        all.merge(&rollup);
        if ENTRY_KINDS.contains(&kind.as_str()) {
            entry.merge(&rollup);
        }
    }
    let services: Vec<_> = services
        .into_iter()
        .map(|(service, (entry, all))| {
            let (spans, rollup) = if entry.values.count() > 0 {
                ("entry", entry)
            } else {
                ("all", all)
            };
            let mut summary = stats_json(&rollup, to_s - from_s);
            summary["service"] = json!(service);
            summary["spans"] = json!(spans);
            summary
        })
        .collect();
    let mut answer = range_json(from_s, to_s);
    answer["services"] = json!(services);
    Ok(Json(answer))
}
