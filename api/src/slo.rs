//! `GET /api/v1/slo`: each configured objective of the caller's tenant —
//! the SLI over its window, the error budget left, and burn rates over
//! 5 min, 1 h, 6 h and 3 d (the windows of multi-window burn-rate alerts).
//!
//! An event is a span, probe run, client event or metric point of the
//! objective's series; it is bad when it failed (availability) or took
//! longer than the threshold (latency, read from the merged distribution:
//! values within 0.55% of the threshold may land on either side). A burn
//! rate is the bad ratio over the error budget ratio: 1 spends the budget
//! exactly over the window.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};
use vigil_config::{Sli, SloConfig};
use vigil_domain::model::{Kind, Rollup};
use vigil_domain::signal::Matcher;

use crate::error::ApiError;
use crate::openapi::{Endpoint, Method, Param};
use crate::query::Selection;
use crate::reader::Reader;
use crate::server::{Answer, AppState, Incoming};

pub const ENDPOINT: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/slo",
    summary: "Service level objectives from the configuration: SLI, error budget left, burn rates over 5m, 1h, 6h and 3d",
    path_params: &[],
    params: &[Param {
        name: "name",
        kind: "string",
        required: false,
        description: "Only the objective with this name.",
    }],
    body: None,
    role: None,
};

/// The burn-rate windows, by name and seconds.
const BURN_WINDOWS: [(&str, u64); 4] =
    [("5m", 300), ("1h", 3_600), ("6h", 21_600), ("3d", 259_200)];

pub async fn handler(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&ENDPOINT, &incoming)?;
    let wanted = call.params.get("name");
    let slos: Vec<&SloConfig> = state
        .slos
        .iter()
        .filter(|slo| slo.tenant == call.reader.tenant)
        .filter(|slo| wanted.is_none_or(|name| slo.name == name))
        .collect();
    if let (Some(name), true) = (wanted, slos.is_empty()) {
        return Err(ApiError::NotFound(format!("no objective named {name}")));
    }
    let mut answers = Vec::new();
    for slo in slos {
        answers.push(state.within(report(&call.reader, slo)).await?);
    }
    Ok(Json(json!({ "slos": answers })))
}

/// Good and total events of an objective over the `seconds` before now.
async fn events(reader: &Reader, slo: &SloConfig, seconds: u64) -> Result<(u64, u64), ApiError> {
    let to_s = reader.now_s.div_ceil(10) * 10;
    let from_s = to_s.saturating_sub(seconds);
    let mut selection = Selection::new(slo.kind);
    selection.service = slo.service.clone();
    selection.name = slo.series.clone();
    selection.matchers = slo
        .labels
        .iter()
        .map(|(key, value)| Matcher::equal(key, value))
        .collect();
    if slo.kind == Kind::Probe {
        // The runs, not their steps.
        selection = selection.matching("vigil.probe.step", "");
    }
    let mut all = Rollup::default();
    for (_, rollup) in reader.totals(&selection, from_s, to_s).await? {
        all.merge(&rollup);
    }
    let total = all.values.count();
    let bad = match (slo.sli, slo.threshold_ms) {
        (Sli::Latency, Some(threshold)) => all.values.count_above(threshold),
        _ => all.errors,
    };
    Ok((total - bad.min(total), total))
}

async fn report(reader: &Reader, slo: &SloConfig) -> Result<Value, ApiError> {
    let objective = slo.objective_percent / 100.0;
    let budget = 1.0 - objective;
    let window_s = u64::from(slo.window_days) * 86_400;
    let (good, total) = events(reader, slo, window_s).await?;
    let bad = total - good;
    let ratio = |good: u64, total: u64| (total > 0).then(|| good as f64 / total as f64);
    let allowed_bad = total as f64 * budget;
    let mut burn_rates = Map::new();
    for (name, seconds) in BURN_WINDOWS {
        let (good, total) = events(reader, slo, seconds).await?;
        let burn = ratio(total - good, total).map(|bad_ratio| bad_ratio / budget);
        burn_rates.insert(name.to_owned(), json!(burn));
    }
    Ok(json!({
        "name": slo.name,
        "description": slo.description,
        "kind": slo.kind.as_str(),
        "service": slo.service,
        "series": slo.series,
        "labels": slo.labels,
        "sli": match slo.sli { Sli::Availability => "availability", Sli::Latency => "latency" },
        "threshold_ms": slo.threshold_ms,
        "objective_percent": slo.objective_percent,
        "window_days": slo.window_days,
        "events": total,
        "good": good,
        "bad": bad,
        "sli_percent": ratio(good, total).map(|r| r * 100.0),
        "error_budget": {
            "allowed_bad": allowed_bad,
            "remaining_percent": (total > 0).then(|| 100.0 * (1.0 - bad as f64 / allowed_bad)),
        },
        "burn_rates": burn_rates,
    }))
}
