//! `GET /api/v1/localize`: which label sets explain a change of a signal
//! (`vigil_domain::localize`, RiskLoc's method).
//!
//! The leaves are the selected series' rollups merged per combination of
//! the dimensions' values, over the anomalous range and over the baseline
//! (`baseline_from`..`baseline_to`, by default the hour before `from`); what
//! each signal's leaves measure is `vigil_domain::located`'s.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde_json::json;
use vigil_domain::located::{self, Groups, MAX_DIMENSIONS, Measure};
use vigil_domain::signal::Signal;

use crate::error::BadParameter;
use crate::openapi::{Endpoint, FILTER, FROM, KIND, Method, NAME, Param, SERVICE, TO};
use crate::query::{Merged, Selection};
use crate::server::{Answer, AppState, Incoming, seconds};

pub const ENDPOINT: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/localize",
    summary: "The label sets (at any level: one label, or several together) that explain a change of a signal, ranked (RiskLoc)",
    path_params: &[],
    params: &[
        KIND,
        Param {
            name: "signal",
            kind: "string",
            required: true,
            description: "count, rate, sum (additive), error_ratio, availability, p50, p90, p95, p99 or p999.",
        },
        NAME,
        SERVICE,
        FILTER,
        FROM,
        TO,
        Param {
            name: "baseline_from",
            kind: "string",
            required: false,
            description: "Start of the baseline, as from; default: the hour before from.",
        },
        Param {
            name: "baseline_to",
            kind: "string",
            required: false,
            description: "End of the baseline (exclusive); default: from.",
        },
        Param {
            name: "dimensions",
            kind: "string",
            required: false,
            description: "Comma-separated labels to localize over (service.name and name included); default: every label of the selected series with more than one value (but a span's status for error_ratio and availability).",
        },
        Param {
            name: "max_causes",
            kind: "integer",
            required: false,
            description: "At most this many causes, 1 to 20; default 5.",
        },
    ],
    body: None,
    role: None,
};

pub async fn handler(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let started = Instant::now();
    let call = state.begin(&ENDPOINT, &incoming)?;
    let params = &call.params;
    let signal_name = params.get("signal").unwrap_or("");
    let measure = Signal::parse(signal_name)
        .and_then(Measure::of)
        .ok_or_else(|| {
            BadParameter::new(
                "signal",
                format!(
                    "{signal_name:?} cannot be localized; use count, rate, sum, error_ratio, availability, p50, p90, p95, p99 or p999"
                ),
            )
        })?;
    let mut selection = Selection::from_params(params)?;
    let kind = selection.kind;
    let (from_s, to_s) = seconds(params.range(900_000)?);
    let baseline_to_s = params.time("baseline_to")?.map_or(from_s, |ms| ms / 1000);
    let baseline_from_s = params
        .time("baseline_from")?
        .map_or(baseline_to_s.saturating_sub(3_600), |ms| ms / 1000);
    if baseline_from_s >= baseline_to_s {
        return Err(BadParameter::new("baseline_from", "must be before baseline_to").into());
    }
    let max_causes = params.number("max_causes", 1, 20)?.unwrap_or(5) as usize;
    let reader = &call.reader;
    let dimensions: Vec<String> = match params.labels("dimensions")? {
        Some(dimensions) => dimensions,
        None => {
            let catalogue = state
                .within(async {
                    Ok(reader
                        .store
                        .series(&reader.tenant, Some(kind), selection.service.as_deref())
                        .await?)
                })
                .await?;
            let selected = catalogue
                .iter()
                .map(|entry| &entry.series)
                .filter(|series| {
                    selection.name.as_ref().is_none_or(|n| *n == series.name)
                        && selection.matchers.iter().all(|m| m.matches(*series))
                });
            located::dimensions(selected, measure, &[])
        }
    };
    if dimensions.is_empty() || dimensions.len() > MAX_DIMENSIONS {
        return Err(BadParameter::new(
            "dimensions",
            format!(
                "{} dimensions; localize over 1 to {MAX_DIMENSIONS} labels that take two values or more",
                dimensions.len()
            ),
        )
        .into());
    }
    selection.group_by = dimensions.clone();
    let (now, before) = state
        .within(async {
            Ok((
                reader.merged(&selection, from_s, to_s, None).await?,
                reader
                    .merged(&selection, baseline_from_s, baseline_to_s, None)
                    .await?,
            ))
        })
        .await?;
    let groups =
        |merged: Merged| -> Groups { merged.into_iter().map(|((g, _), r)| (g, r)).collect() };
    let explained = located::explain(
        measure,
        &dimensions,
        &groups(now),
        &groups(before),
        (to_s - from_s, baseline_to_s - baseline_from_s),
        max_causes,
    );
    Ok(Json(json!({
        "kind": kind.as_str(),
        "signal": signal_name,
        "from": from_s * 1000,
        "to": to_s * 1000,
        "baseline_from": baseline_from_s * 1000,
        "baseline_to": baseline_to_s * 1000,
        "root_causes": explained.causes,
        "actual_total": explained.actual_total,
        "expected_total": explained.expected_total,
        "dimensions": dimensions,
        "leaves": explained.leaves,
        "took_ms": started.elapsed().as_millis() as u64,
    })))
}
