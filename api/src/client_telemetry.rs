//! `GET /api/v1/client/health`: how mobile and web apps fare, per app and
//! app version — sessions, crashes and crash-free sessions, crashes by
//! type, app-start percentiles by start kind, slow and frozen frame rates.
//!
//! From the client series the aggregator writes: `client.sessions` (one per
//! session start), `client.crashes`, `client.app_start`, `client.frames`,
//! `client.frames.slow` and `client.frames.frozen` (frame counts).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};
use vigil_domain::model::{Kind, Rollup};

use crate::error::ApiError;
use crate::openapi::{Endpoint, FROM, Method, Param, TO};
use crate::query::Selection;
use crate::reader::Reader;
use crate::server::{Answer, AppState, Incoming, range_json, seconds};

pub const ENDPOINT: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/client/health",
    summary: "Per app and version over the range (default the last day): sessions, crash-free sessions, crashes by type, app-start p50/p90/p99, slow and frozen frame rates",
    path_params: &[],
    params: &[
        Param {
            name: "app",
            kind: "string",
            required: false,
            description: "Only this app (its service.name).",
        },
        FROM,
        TO,
    ],
    body: None,
    role: None,
};

const APP: &str = "service.name";
const VERSION: &str = "app.version";

/// Everything known of one app version.
#[derive(Default)]
struct Version {
    sessions: f64,
    crashes: u64,
    crash_types: Vec<Value>,
    starts: Map<String, Value>,
    frames: f64,
    slow: f64,
    frozen: f64,
}

pub async fn handler(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&ENDPOINT, &incoming)?;
    let (from_s, to_s) = seconds(call.params.range(86_400_000)?);
    let app = call.params.text("app");
    let versions = state.within(read(&call.reader, app, from_s, to_s)).await?;
    let mut apps: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for ((app, version), v) in versions {
        let ratio = |part: f64, whole: f64| (whole > 0.0).then(|| part / whole);
        apps.entry(app).or_default().push(json!({
            "version": version,
            "sessions": v.sessions,
            "crashes": v.crashes,
            "crash_free_sessions": ratio(v.crashes as f64, v.sessions).map(|r| (1.0 - r).max(0.0)),
            "crashes_by_type": v.crash_types,
            "app_start_ms": v.starts,
            "frames": v.frames,
            "slow_frame_rate": ratio(v.slow, v.frames),
            "frozen_frame_rate": ratio(v.frozen, v.frames),
        }));
    }
    let apps: Vec<Value> = apps
        .into_iter()
        .map(|(app, versions)| json!({"app": app, "versions": versions}))
        .collect();
    let mut answer = range_json(from_s, to_s);
    answer["apps"] = json!(apps);
    Ok(Json(answer))
}

async fn read(
    reader: &Reader,
    app: Option<String>,
    from_s: u64,
    to_s: u64,
) -> Result<BTreeMap<(String, String), Version>, ApiError> {
    let totals = |name: &str, extra: &[&str]| {
        let mut selection = Selection::new(Kind::Client);
        selection.service = app.clone();
        selection.name = Some(name.to_owned());
        selection.group_by = [APP, VERSION]
            .iter()
            .chain(extra)
            .map(|&key| key.to_owned())
            .collect();
        async move { reader.totals(&selection, from_s, to_s).await }
    };
    let mut versions: BTreeMap<(String, String), Version> = BTreeMap::new();
    fn version<'a>(
        versions: &'a mut BTreeMap<(String, String), Version>,
        group: &[String],
    ) -> &'a mut Version {
        let key = (group[0].clone(), group[1].clone());
        versions.entry(key).or_default()
    }
    let sums = |rows: Vec<(Vec<String>, Rollup)>| {
        rows.into_iter()
            .map(|(group, rollup)| (group, rollup.values.sum()))
    };
    for (group, sessions) in sums(totals("client.sessions", &[]).await?) {
        version(&mut versions, &group).sessions += sessions;
    }
    for (group, rollup) in totals("client.crashes", &["exception.type", "crash.kind"]).await? {
        let crashes = rollup.values.count();
        let v = version(&mut versions, &group);
        v.crashes += crashes;
        v.crash_types.push(json!({
            "exception_type": group[2],
            "crash_kind": group[3],
            "crashes": crashes,
        }));
    }
    for (group, rollup) in totals("client.app_start", &["start.kind"]).await? {
        let values = &rollup.values;
        version(&mut versions, &group).starts.insert(
            group[2].clone(),
            json!({
                "count": values.count(),
                "p50": values.quantile(0.5),
                "p90": values.quantile(0.9),
                "p99": values.quantile(0.99),
            }),
        );
    }
    for (group, frames) in sums(totals("client.frames", &[]).await?) {
        version(&mut versions, &group).frames += frames;
    }
    for (group, slow) in sums(totals("client.frames.slow", &[]).await?) {
        version(&mut versions, &group).slow += slow;
    }
    for (group, frozen) in sums(totals("client.frames.frozen", &[]).await?) {
        version(&mut versions, &group).frozen += frozen;
    }
    Ok(versions)
}
