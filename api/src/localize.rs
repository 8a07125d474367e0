//! `GET /api/v1/localize`: which label sets explain a change of a signal
//! (`vigil_domain::localize`, RiskLoc's method).
//!
//! The leaves are the selected series' rollups merged per combination of
//! the dimensions' values, over the anomalous range and over the baseline
//! (`baseline_from`..`baseline_to`, by default the hour before `from`). A
//! leaf's measure:
//!
//! - `count`, `rate`, `sum`: additive; its expected value is its baseline
//!   value scaled to the range's length;
//! - `error_ratio`, `availability`: its failed points, expected as its
//!   points in the range at its baseline error ratio (the whole baseline's
//!   for a leaf new in the range), so traffic moving between leaves is not
//!   taken for a cause and a drop of availability is a rise of failures;
//! - `p50`…`p999`: its points above the baseline's quantile of every leaf,
//!   expected as its points at its baseline share above it.
//!
//! Each cause is given with its actual and expected value of the signal
//! itself (the ratio, the share above the quantile, the count).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};
use vigil_domain::localize::{Leaf, Settings, localize};
use vigil_domain::model::{Kind, Rollup};
use vigil_domain::signal::{Signal, is_label_name, label_of, parse_filter};

use crate::error::BadParameter;
use crate::openapi::{Endpoint, FROM, Method, Param, TO};
use crate::query::Selection;
use crate::server::{Answer, AppState, Incoming, seconds};

pub const ENDPOINT: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/localize",
    summary: "The label sets (at any level: one label, or several together) that explain a change of a signal, ranked (RiskLoc)",
    path_params: &[],
    params: &[
        Param {
            name: "kind",
            kind: "string",
            required: true,
            description: "span, metric, client or probe.",
        },
        Param {
            name: "signal",
            kind: "string",
            required: true,
            description: "count, rate, sum (additive), error_ratio, availability, p50, p90, p95, p99 or p999.",
        },
        Param {
            name: "name",
            kind: "string",
            required: false,
            description: "The series name: operation, metric, client signal or probe.",
        },
        Param {
            name: "service",
            kind: "string",
            required: false,
            description: "The service (the app for client series).",
        },
        Param {
            name: "filter",
            kind: "string",
            required: false,
            description: "Label matchers: key=\"value\",key!=\"value\".",
        },
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
};

/// The most dimensions one localization searches (2^12 − 1 cuboids).
const MAX_DIMENSIONS: usize = 12;

/// What a leaf's measure is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Measure {
    /// Additive: points, or the sum of their values.
    Additive(Signal),
    /// Failed points, judged as a ratio.
    Failures,
    /// Points above the baseline's quantile.
    Above(f64),
}

pub async fn handler(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let started = Instant::now();
    let call = state.begin(&ENDPOINT, &incoming)?;
    let params = &call.params;
    let kind_name = params
        .get("kind")
        .ok_or_else(|| BadParameter::new("kind", "required: span, metric, client or probe"))?;
    let kind = Kind::parse(kind_name).ok_or_else(|| {
        BadParameter::new(
            "kind",
            format!("unknown kind {kind_name:?}; use span, metric, client or probe"),
        )
    })?;
    let signal_name = params.get("signal").unwrap_or("");
    let measure = match Signal::parse(signal_name) {
        Some(signal @ (Signal::Count | Signal::Rate | Signal::Sum)) => Measure::Additive(signal),
        Some(Signal::ErrorRatio | Signal::Availability) => Measure::Failures,
        Some(Signal::Quantile(q)) => Measure::Above(q),
        _ => {
            return Err(BadParameter::new(
                "signal",
                format!(
                    "{signal_name:?} cannot be localized; use count, rate, sum, error_ratio, availability, p50, p90, p95, p99 or p999"
                ),
            )
            .into());
        }
    };
    let mut selection = Selection::new(kind);
    selection.name = params.text("name");
    selection.service = params.text("service");
    selection.matchers = parse_filter(params.get("filter").unwrap_or(""))
        .map_err(|e| BadParameter::new("filter", e))?;
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
    let dimensions: Vec<String> = match params.get("dimensions") {
        Some(list) => list
            .split(',')
            .map(|key| {
                let key = key.trim();
                is_label_name(key).then(|| key.to_owned()).ok_or_else(|| {
                    BadParameter::new("dimensions", format!("{key:?} is not a label name"))
                })
            })
            .collect::<Result<_, _>>()?,
        None => {
            // Every label of the selected series that takes two values or
            // more in the catalogue.
            let catalogue = state
                .within(async {
                    Ok(reader
                        .store
                        .series(&reader.tenant, Some(kind), selection.service.as_deref())
                        .await?)
                })
                .await?;
            let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for entry in &catalogue {
                let series = &entry.series;
                if selection.name.as_ref().is_some_and(|n| *n != series.name)
                    || !selection.matchers.iter().all(|m| m.matches(series))
                {
                    continue;
                }
                let own = ["service.name", "name"].map(|k| (k.to_owned(), label_of(series, k)));
                for (key, value) in series
                    .labels()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str()))
                    .chain(own)
                {
                    values.entry(key).or_default().insert(value.to_owned());
                }
            }
            // A span's status tells failed from not: it explains every
            // error ratio and localizes nothing.
            values
                .into_iter()
                .filter(|(key, values)| {
                    values.len() > 1 && !(measure == Measure::Failures && key == "status")
                })
                .map(|(key, _)| key)
                .collect()
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
    let now: HashMap<Vec<String>, Rollup> = now.into_iter().map(|((g, _), r)| (g, r)).collect();
    let before: HashMap<Vec<String>, Rollup> =
        before.into_iter().map(|((g, _), r)| (g, r)).collect();
    let scale = (to_s - from_s) as f64 / (baseline_to_s - baseline_from_s) as f64;
    let mut whole = Rollup::default();
    for rollup in before.values() {
        whole.merge(rollup);
    }
    let threshold = match measure {
        Measure::Above(q) => whole.values.quantile(q),
        _ => None,
    };
    // Every group seen in either range is a leaf; values index per
    // dimension.
    let mut index: Vec<Vec<String>> = vec![Vec::new(); dimensions.len()];
    let mut leaves = Vec::new();
    let mut points = Vec::new();
    let groups: BTreeSet<&Vec<String>> = now.keys().chain(before.keys()).collect();
    let empty = Rollup::default();
    for group in groups {
        let values = group
            .iter()
            .enumerate()
            .map(|(d, value)| {
                let known = &mut index[d];
                let at = known.iter().position(|v| v == value).unwrap_or_else(|| {
                    known.push(value.clone());
                    known.len() - 1
                });
                at as u32
            })
            .collect();
        let (actual, expected) = leaf_values(
            measure,
            now.get(group).unwrap_or(&empty),
            before.get(group).unwrap_or(&empty),
            &whole,
            scale,
            threshold,
            to_s - from_s,
        );
        let seen = |rollups: &HashMap<Vec<String>, Rollup>| {
            rollups.get(group).map_or(0, |r| r.values.count())
        };
        points.push(seen(&now));
        leaves.push(Leaf {
            values,
            actual,
            expected,
            seen: seen(&now) + seen(&before) > 0,
        });
    }
    let sizes: Vec<u32> = index.iter().map(|values| values.len() as u32).collect();
    let settings = Settings {
        max_causes,
        ..Settings::default()
    };
    let causes = localize(&sizes, &leaves, settings);
    // A cause's signal: the measure itself when additive, else over its
    // points in the range.
    let shown = |actual: f64, expected: f64, points: u64| match measure {
        Measure::Additive(_) => (actual, expected),
        _ if points == 0 => (0.0, 0.0),
        Measure::Failures | Measure::Above(_) => {
            let (a, e) = (actual / points as f64, expected / points as f64);
            match Signal::parse(signal_name) {
                Some(Signal::Availability) => (1.0 - a, 1.0 - e),
                _ => (a, e),
            }
        }
    };
    let root_causes: Vec<Value> = causes
        .iter()
        .map(|cause| {
            let labels: Map<String, Value> = cause
                .element
                .iter()
                .map(|&(d, v)| (dimensions[d].clone(), json!(index[d][v as usize])))
                .collect();
            let under: u64 = leaves
                .iter()
                .zip(&points)
                .filter(|(leaf, _)| cause.element.iter().all(|&(d, v)| leaf.values[d] == v))
                .map(|(_, &p)| p)
                .sum();
            let (actual, expected) = shown(cause.actual, cause.expected, under);
            json!({
                "labels": labels,
                "actual": actual,
                "expected": expected,
                "share": cause.share,
                "score": cause.score,
            })
        })
        .collect();
    let (actual_total, expected_total) = shown(
        leaves.iter().map(|l| l.actual).sum(),
        leaves.iter().map(|l| l.expected).sum(),
        points.iter().sum(),
    );
    Ok(Json(json!({
        "kind": kind.as_str(),
        "signal": signal_name,
        "from": from_s * 1000,
        "to": to_s * 1000,
        "baseline_from": baseline_from_s * 1000,
        "baseline_to": baseline_to_s * 1000,
        "root_causes": root_causes,
        "actual_total": actual_total,
        "expected_total": expected_total,
        "dimensions": dimensions,
        "leaves": leaves.len(),
        "took_ms": started.elapsed().as_millis() as u64,
    })))
}

/// A leaf's actual and expected measure from its rollups in the range
/// (`now`) and the baseline (`before`); `whole` is every leaf's baseline.
fn leaf_values(
    measure: Measure,
    now: &Rollup,
    before: &Rollup,
    whole: &Rollup,
    scale: f64,
    threshold: Option<f64>,
    range_s: u64,
) -> (f64, f64) {
    let points = now.values.count() as f64;
    // The share of a leaf's baseline points that `part` counts, the whole
    // baseline's for a leaf without one.
    let share = |part: fn(&Rollup) -> u64| {
        let (of, all) = if before.values.count() > 0 {
            (part(before), before.values.count())
        } else {
            (part(whole), whole.values.count())
        };
        if all == 0 {
            0.0
        } else {
            of as f64 / all as f64
        }
    };
    match measure {
        Measure::Additive(signal) => {
            let read = |rollup: &Rollup| match signal {
                Signal::Sum => rollup.values.sum(),
                Signal::Rate => rollup.values.count() as f64 / range_s as f64,
                _ => rollup.values.count() as f64,
            };
            (read(now), read(before) * scale)
        }
        Measure::Failures => (
            now.errors as f64,
            points * share(|rollup: &Rollup| rollup.errors),
        ),
        Measure::Above(_) => {
            let Some(threshold) = threshold else {
                return (0.0, 0.0);
            };
            let above = |rollup: &Rollup| rollup.values.count_above(threshold) as f64;
            let expected = if before.values.count() > 0 {
                points * above(before) / before.values.count() as f64
            } else if whole.values.count() > 0 {
                points * above(whole) / whole.values.count() as f64
            } else {
                0.0
            };
            (above(now), expected)
        }
    }
}
