//! `GET /api/v1/client/health`: how mobile and web apps fare, per app and
//! app version — sessions, crashes and crash-free sessions, crashes by
//! type, launch crashes and crash loops, ANRs, app-start percentiles by
//! start kind, slow and frozen frame rates, traffic, battery and memory.
//!
//! From the client series the aggregator writes
//! (`aggregator/src/client_telemetry.rs`), and the crashes kept raw: a
//! crash-free session is a session none of whose crashes was reported, so
//! crashed sessions are the distinct session hashes of the version's
//! crashes (a crash without one counting as one session), not the crashes.
//! Users are counted by the sketches kept with the rollups
//! (`vigil_domain::distinct`, 0.81 % standard error): a version's users
//! are those of its sessions and crashes, crash-free users the share of
//! them not in its crashes' sketch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};
use vigil_domain::distinct::Distinct;
use vigil_domain::model::{Kind, Rollup};
use vigil_store::{CrashDimension, CrashQuery};

use crate::error::ApiError;
use crate::openapi::{Endpoint, FROM, Method, Param, TO};
use crate::query::Selection;
use crate::reader::Reader;
use crate::server::{Answer, AppState, Incoming, range_json, seconds};

pub const ENDPOINT: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/client/health",
    summary: "Per app and version over the range (default the last day): sessions, crashed and crash-free sessions, users, crashed and crash-free users (estimated, 0.81 % standard error), crashes by type, launch crashes and their rate, crash loops, ANRs per session, app-start p50/p90/p99, slow and frozen frame rates, bytes sent and received per session, the share of repeated requests, battery drain per hour in the foreground and background, low-memory kills",
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
    /// The users of its sessions and crashes.
    users: Distinct,
    crashes: u64,
    crashed_sessions: u64,
    crashed_users: Distinct,
    crash_types: Vec<Value>,
    starts: Map<String, Value>,
    app_starts: u64,
    launch_crashes: u64,
    crash_loops: u64,
    anrs: u64,
    frames: f64,
    slow: f64,
    frozen: f64,
    requests: u64,
    repeated: u64,
    bytes_sent: f64,
    bytes_received: f64,
    /// Battery drained per hour, % of capacity: foreground, background.
    drain: [Rollup; 2],
    memory_kills: u64,
}

pub async fn handler(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&ENDPOINT, &incoming)?;
    let (from_s, to_s) = seconds(call.params.range(86_400_000)?);
    let app = call.params.text("app");
    let versions = state
        .within(async {
            let mut versions = read(&call.reader, app, from_s, to_s).await?;
            crashed_sessions(&call.reader, &mut versions, from_s, to_s).await?;
            Ok(versions)
        })
        .await?;
    let mut apps: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for ((app, version), v) in versions {
        let ratio = |part: f64, whole: f64| (whole > 0.0).then(|| part / whole);
        let crashed = v.crashed_sessions as f64;
        let (users, crashed_users) = (v.users.count(), v.crashed_users.count());
        let [foreground, background] = &v.drain;
        apps.entry(app).or_default().push(json!({
            "version": version,
            "sessions": v.sessions,
            "crashes": v.crashes,
            "crashed_sessions": v.crashed_sessions,
            "crash_free_sessions": ratio(crashed, v.sessions).map(|r| (1.0 - r).max(0.0)),
            "users": users,
            "crashed_users": crashed_users,
            "crash_free_users": ratio(crashed_users as f64, users as f64).map(|r| (1.0 - r).max(0.0)),
            "crashes_by_type": v.crash_types,
            "launch_crashes": v.launch_crashes,
            "launch_crash_rate": ratio(v.launch_crashes as f64, (v.app_starts + v.launch_crashes) as f64),
            "crash_loops": v.crash_loops,
            "anrs": v.anrs,
            "anrs_per_session": ratio(v.anrs as f64, v.sessions),
            "app_start_ms": v.starts,
            "frames": v.frames,
            "slow_frame_rate": ratio(v.slow, v.frames),
            "frozen_frame_rate": ratio(v.frozen, v.frames),
            "bytes_sent_per_session": ratio(v.bytes_sent, v.sessions),
            "bytes_received_per_session": ratio(v.bytes_received, v.sessions),
            "repeated_request_share": ratio(v.repeated as f64, v.requests as f64),
            "battery_drain_per_hour": {
                "foreground": foreground.values.mean(),
                "background": background.values.mean(),
            },
            "low_memory_kills": v.memory_kills,
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
    for (group, rollup) in totals("client.sessions", &[]).await? {
        let v = version(&mut versions, &group);
        v.sessions += rollup.values.sum();
        v.users.merge(&rollup.users);
    }
    for (group, rollup) in totals("client.crashes", &["exception.type", "crash.kind"]).await? {
        let crashes = rollup.values.count();
        let v = version(&mut versions, &group);
        v.crashes += crashes;
        v.users.merge(&rollup.users);
        v.crashed_users.merge(&rollup.users);
        v.crash_types.push(json!({
            "exception_type": group[2],
            "crash_kind": group[3],
            "crashes": crashes,
        }));
    }
    for (group, rollup) in totals("client.app_start", &["start.kind"]).await? {
        let values = &rollup.values;
        let v = version(&mut versions, &group);
        v.app_starts += values.count();
        v.starts.insert(
            group[2].clone(),
            json!({
                "count": values.count(),
                "p50": values.quantile(0.5),
                "p90": values.quantile(0.9),
                "p99": values.quantile(0.99),
            }),
        );
    }
    // Counts of points, each into its field.
    let counts: [(&str, Field); 6] = [
        ("client.crashes.launch", |v| &mut v.launch_crashes),
        ("client.crash_loops", |v| &mut v.crash_loops),
        ("client.anrs", |v| &mut v.anrs),
        ("client.http", |v| &mut v.requests),
        ("client.http.repeated", |v| &mut v.repeated),
        ("client.memory.kills", |v| &mut v.memory_kills),
    ];
    for (name, field) in counts {
        for (group, rollup) in totals(name, &[]).await? {
            *field(version(&mut versions, &group)) += rollup.values.count();
        }
    }
    for (group, bytes) in sums(totals("client.http.bytes_sent", &[]).await?) {
        version(&mut versions, &group).bytes_sent += bytes;
    }
    for (group, bytes) in sums(totals("client.http.bytes_received", &[]).await?) {
        version(&mut versions, &group).bytes_received += bytes;
    }
    for (group, rollup) in totals("client.power.drain", &["power.foreground"]).await? {
        let side = usize::from(group[2] != "true");
        version(&mut versions, &group).drain[side].merge(&rollup);
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

/// A count of [`Version`], for the count of a series' points.
type Field = fn(&mut Version) -> &mut u64;

/// The sessions with a crash per version of each app, from the crashes
/// kept raw.
async fn crashed_sessions(
    reader: &Reader,
    versions: &mut BTreeMap<(String, String), Version>,
    from_s: u64,
    to_s: u64,
) -> Result<(), ApiError> {
    let apps: BTreeSet<String> = versions.keys().map(|(app, _)| app.clone()).collect();
    for app in apps {
        let query = CrashQuery {
            tenant: reader.tenant.clone(),
            app: app.clone(),
            from_ns: from_s.saturating_mul(1_000_000_000),
            to_ns: to_s.saturating_mul(1_000_000_000),
            filters: Vec::new(),
            fingerprints: Vec::new(),
        };
        let reach = reader
            .store
            .crash_reach(&query, Some(CrashDimension::Version))
            .await?;
        for version in reach {
            if let Some(v) = versions.get_mut(&(app.clone(), version.key)) {
                v.crashed_sessions = version.sessions + version.without_session;
            }
        }
    }
    Ok(())
}
