//! `GET /api/v1/probes` (each synthetic probe's runs, failures,
//! availability and latency, per location) and
//! `GET /api/v1/probes/{name}/runs` (its latest runs).
//!
//! A probe run is exported as a trace whose root span carries
//! `vigil.probe.name` and `vigil.probe.location` and no `vigil.probe.step`;
//! its steps are child spans with `vigil.probe.step`. The aggregator keeps
//! both as probe series, so runs are the series whose step is "".

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use vigil_domain::model::{Kind, Rollup};

use crate::openapi::{CURSOR, Endpoint, FROM, LIMIT, Method, Param, TO};
use crate::query::Selection;
use crate::server::{Answer, AppState, Incoming, range_json, seconds, stats_json};
use crate::traces::{next_cursor, span_query};

pub const PROBES: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/probes",
    summary: "Each synthetic probe over the range (default the last hour): runs, failures, availability, p50/p90/p99, per location",
    path_params: &[],
    params: &[FROM, TO],
    body: None,
    role: None,
};

pub const RUNS: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/probes/{name}/runs",
    summary: "A probe's runs, newest first: trace, location, duration, outcome and failure reason",
    path_params: &[("name", "The probe's name")],
    params: &[
        FROM,
        TO,
        Param {
            name: "location",
            kind: "string",
            required: false,
            description: "Only runs from this location.",
        },
        Param {
            name: "failed",
            kind: "boolean",
            required: false,
            description: "true: only failed runs; false: only the others.",
        },
        LIMIT,
        CURSOR,
    ],
    body: None,
    role: None,
};

const NAME: &str = "vigil.probe.name";
const STEP: &str = "vigil.probe.step";
const LOCATION: &str = "vigil.probe.location";

pub async fn probes(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&PROBES, &incoming)?;
    let (from_s, to_s) = seconds(call.params.range(3_600_000)?);
    let runs = Selection::new(Kind::Probe)
        .matching(STEP, "")
        .grouped_by(&["name", LOCATION]);
    let totals = state
        .within(call.reader.totals(&runs, from_s, to_s))
        .await?;
    let mut probes: BTreeMap<String, (Rollup, Vec<Value>)> = BTreeMap::new();
    for (group, rollup) in totals {
        let [name, location] = <[String; 2]>::try_from(group).unwrap_or_default();
        let (all, locations) = probes.entry(name).or_default();
        all.merge(&rollup);
        let mut summary = run_stats(&rollup, to_s - from_s);
        summary["location"] = json!(location);
        locations.push(summary);
    }
    let probes: Vec<Value> = probes
        .into_iter()
        .map(|(name, (all, locations))| {
            let mut summary = run_stats(&all, to_s - from_s);
            summary["name"] = json!(name);
            summary["locations"] = json!(locations);
            summary
        })
        .collect();
    let mut answer = range_json(from_s, to_s);
    answer["probes"] = json!(probes);
    Ok(Json(answer))
}

/// A probe's figures named as runs rather than requests.
fn run_stats(rollup: &Rollup, seconds: u64) -> Value {
    let mut stats = stats_json(rollup, seconds);
    if let Some(fields) = stats.as_object_mut() {
        for (from, to) in [("requests", "runs"), ("errors", "failed")] {
            if let Some(value) = fields.remove(from) {
                fields.insert(to.to_owned(), value);
            }
        }
    }
    stats
}

pub async fn runs(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    incoming: Incoming,
) -> Answer {
    let call = state.begin(&RUNS, &incoming)?;
    let mut query = span_query(&call, 3_600_000)?;
    query.root_only = true;
    query.attributes.push((NAME.to_owned(), name.clone()));
    if let Some(location) = call.params.text("location") {
        query.attributes.push((LOCATION.to_owned(), location));
    }
    query.error = call.params.flag("failed")?;
    let spans = state
        .within(async { Ok(call.reader.store.search_spans(&query).await?) })
        .await?;
    let runs: Vec<Value> = spans
        .iter()
        .map(|span| {
            let attribute = |key: &str| {
                span.attributes
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            };
            json!({
                "trace_id": span.trace_id,
                "location": attribute(LOCATION).unwrap_or(""),
                "start": span.start_ns as f64 / 1e6,
                "duration_ms": span.duration_ns as f64 / 1e6,
                "ok": span.status_code != 2,
                "failure": (span.status_code == 2).then_some(span.status_message.as_str()),
            })
        })
        .collect();
    Ok(Json(json!({
        "probe": name,
        "runs": runs,
        "next_cursor": next_cursor(&spans, query.limit),
    })))
}
