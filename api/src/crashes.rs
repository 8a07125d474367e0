//! `GET /api/v1/crashes` and `GET /api/v1/crashes/{fingerprint}`: an app's
//! crashes grouped by stack fingerprint, as Sentry's and Crashlytics'
//! issues, for on-call and the app's stability team.
//!
//! Per group over the range: crashes, sessions and users hit, its share of
//! the app's crashes and the change against the range just before; over
//! all the crashes kept until the range's end: first and last seen, first
//! and last version, and its state in its last version (or the `version`
//! asked for) among every version the app sent telemetry from
//! ([`CrashState`]), as `vigil_store::crash_groups` judges them.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};
use vigil_domain::crash::{CrashState, compare_versions};
use vigil_store::crash_groups::{self, CrashGroup};
use vigil_store::{CrashDimension, CrashQuery, EventKind, EventQuery, EventRecord};

use crate::error::{ApiError, BadParameter};
use crate::openapi::{Endpoint, FROM, Method, Param, TO};
use crate::reader::Reader;
use crate::server::{Answer, AppState, Call, Incoming};
use crate::traces::ms;

const APP: Param = Param {
    name: "app",
    kind: "string",
    required: true,
    description: "The app (app_id of its client telemetry).",
};

/// The filters both endpoints take, each a [`CrashDimension`].
const FILTERS: [(Param, CrashDimension); 6] = [
    (
        Param {
            name: "version",
            kind: "string",
            required: false,
            description: "Only crashes of this app version; states are judged in it.",
        },
        CrashDimension::Version,
    ),
    (
        Param {
            name: "os",
            kind: "string",
            required: false,
            description: "Only crashes on this OS (os_name: android, ios, web…).",
        },
        CrashDimension::Os,
    ),
    (
        Param {
            name: "device",
            kind: "string",
            required: false,
            description: "Only crashes on this device model.",
        },
        CrashDimension::Device,
    ),
    (
        Param {
            name: "kind",
            kind: "string",
            required: false,
            description: "managed or native.",
        },
        CrashDimension::Kind,
    ),
    (
        Param {
            name: "foreground",
            kind: "boolean",
            required: false,
            description: "true: crashes in the foreground only; false: in the background only.",
        },
        CrashDimension::Foreground,
    ),
    (
        Param {
            name: "recurred",
            kind: "boolean",
            required: false,
            description: "true: crashes followed by another on the next launch only; false: one-time ones only.",
        },
        CrashDimension::Recurred,
    ),
];

pub const LIST: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/crashes",
    summary: "An app's crash groups (by stack fingerprint) over the range (default the last 24 h), most crashes first: crashes, sessions and users hit, share, change against the range before, first and last seen and version, state new, regressed or ongoing",
    path_params: &[],
    params: &[
        APP,
        FROM,
        TO,
        FILTERS[0].0,
        FILTERS[1].0,
        FILTERS[2].0,
        FILTERS[3].0,
        FILTERS[4].0,
        FILTERS[5].0,
        Param {
            name: "state",
            kind: "string",
            required: false,
            description: "Only groups in this state: new, regressed or ongoing.",
        },
        Param {
            name: "limit",
            kind: "integer",
            required: false,
            description: "At most this many groups, 1 to 1000 (default 50).",
        },
    ],
    body: None,
    role: None,
};

pub const GROUP: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/crashes/{fingerprint}",
    summary: "One crash group over the range (default the last 24 h): its summary, its newest crashes as sent (stack frames, thread, breadcrumbs, context) and its crashes by version, device, OS and OS version",
    path_params: &[("fingerprint", "The group's stack fingerprint")],
    params: &[
        APP,
        FROM,
        TO,
        FILTERS[0].0,
        FILTERS[1].0,
        FILTERS[2].0,
        FILTERS[3].0,
        FILTERS[4].0,
        FILTERS[5].0,
        Param {
            name: "samples",
            kind: "integer",
            required: false,
            description: "How many of its newest crashes to show, 0 to 100 (default 10).",
        },
    ],
    body: None,
    role: None,
};

/// Groups are counted over the last day unless the range says otherwise.
const DEFAULT_RANGE_MS: u64 = 86_400_000;

/// The crashes a request selects.
struct Selection {
    app: String,
    from_ns: u64,
    to_ns: u64,
    filters: Vec<(CrashDimension, String)>,
}

impl Selection {
    fn of(call: &Call) -> Result<Self, BadParameter> {
        let params = &call.params;
        let app = params
            .text("app")
            .ok_or_else(|| BadParameter::new("app", "required: the app"))?;
        let (from_ms, to_ms) = params.range(DEFAULT_RANGE_MS)?;
        let mut filters = Vec::new();
        for (param, dimension) in FILTERS {
            let value = if param.kind == "boolean" {
                params.flag(param.name)?.map(|flag| flag.to_string())
            } else {
                params.text(param.name)
            };
            if dimension == CrashDimension::Kind
                && value
                    .as_deref()
                    .is_some_and(|kind| !["managed", "native"].contains(&kind))
            {
                return Err(BadParameter::new("kind", "must be managed or native"));
            }
            filters.extend(value.map(|value| (dimension, value)));
        }
        Ok(Selection {
            app,
            from_ns: from_ms.saturating_mul(1_000_000),
            to_ns: to_ms.saturating_mul(1_000_000),
            filters,
        })
    }

    /// Its crashes, of the given groups (all when empty).
    fn query(&self, reader: &Reader, fingerprints: &[String]) -> CrashQuery {
        CrashQuery {
            tenant: reader.tenant.clone(),
            app: self.app.clone(),
            from_ns: self.from_ns,
            to_ns: self.to_ns,
            filters: self.filters.clone(),
            fingerprints: fingerprints.to_vec(),
        }
    }

    fn version(&self) -> Option<&str> {
        self.filters
            .iter()
            .find(|(dimension, _)| *dimension == CrashDimension::Version)
            .map(|(_, value)| value.as_str())
    }
}

/// One group as both endpoints show it.
fn group_json(group: &CrashGroup, total: u64) -> Value {
    let count = &group.count;
    let change = (group.previous_events > 0).then(|| {
        (count.events as f64 - group.previous_events as f64) / group.previous_events as f64
    });
    json!({
        "fingerprint": count.fingerprint,
        "exception_type": count.exception_type,
        "message": count.message,
        "state": group.state.as_str(),
        "events": count.events,
        "sessions": group.sessions,
        "users": group.users,
        "share": share(count.events, total),
        "previous_events": group.previous_events,
        "change": change,
        "first_seen": ms(group.first_ns),
        "last_seen": ms(group.last_ns),
        "first_version": group.first_version,
        "last_version": group.last_version,
    })
}

fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 / total as f64
    }
}

pub async fn list(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&LIST, &incoming)?;
    let selection = Selection::of(&call)?;
    let wanted = call
        .params
        .get("state")
        .map(|name| {
            CrashState::parse(name).ok_or_else(|| {
                BadParameter::new(
                    "state",
                    format!("{name:?} is not one of new, regressed, ongoing"),
                )
            })
        })
        .transpose()?;
    let limit = call
        .params
        .number("limit", 1, 1000)?
        .map_or(50, |n| n as usize);
    let reader = &call.reader;
    let query = selection.query(reader, &[]);
    let (page, total) = state
        .within(async {
            let store = reader.store.as_ref();
            let (groups, total) = crash_groups::judged(store, &query, selection.version()).await?;
            let mut page: Vec<CrashGroup> = groups
                .into_iter()
                .filter(|group| wanted.is_none_or(|state| group.state == state))
                .take(limit)
                .collect();
            crash_groups::reach(store, &query, &mut page).await?;
            Ok((page, total))
        })
        .await?;
    let groups: Vec<Value> = page.iter().map(|group| group_json(group, total)).collect();
    Ok(Json(json!({
        "app": selection.app,
        "from": ms(selection.from_ns),
        "to": ms(selection.to_ns),
        "crashes": total,
        "groups": groups,
    })))
}

pub async fn group(
    State(state): State<Arc<AppState>>,
    Path(fingerprint): Path<String>,
    incoming: Incoming,
) -> Answer {
    let call = state.begin(&GROUP, &incoming)?;
    let selection = Selection::of(&call)?;
    let samples = call
        .params
        .number("samples", 0, 100)?
        .map_or(10, |n| n as usize);
    let reader = &call.reader;
    let group = selection.query(reader, std::slice::from_ref(&fingerprint));
    let (summary, crashes, by) = state
        .within(async {
            let store = reader.store.as_ref();
            let (groups, _) = crash_groups::judged(store, &group, selection.version()).await?;
            let Some(summary) = groups.into_iter().next() else {
                return Err(ApiError::NotFound(format!(
                    "no crash of group {fingerprint:?} of app {:?} in the range",
                    selection.app
                )));
            };
            let mut summary = [summary];
            crash_groups::reach(store, &group, &mut summary).await?;
            let [summary] = summary;
            let mut query = EventQuery::new(
                reader.tenant.clone(),
                EventKind::Crash,
                selection.from_ns,
                selection.to_ns,
            );
            query.service = Some(selection.app.clone());
            query.fingerprint = Some(fingerprint.clone());
            query.attributes = selection
                .filters
                .iter()
                .map(|(dimension, value)| (dimension.attribute().to_owned(), value.clone()))
                .collect();
            query.limit = samples;

            // Read side by side.
            let (crashes, versions, devices, os, os_versions) = tokio::try_join!(
                async {
                    if samples == 0 {
                        Ok(Vec::new())
                    } else {
                        store.events(&query).await
                    }
                },
                store.crash_counts(&group, CrashDimension::Version),
                store.crash_counts(&group, CrashDimension::Device),
                store.crash_counts(&group, CrashDimension::Os),
                store.crash_counts(&group, CrashDimension::OsVersion),
            )?;
            let by = [
                ("versions", versions),
                ("devices", devices),
                ("os", os),
                ("os_versions", os_versions),
            ];
            Ok((summary, crashes, by))
        })
        .await?;
    let events = summary.count.events;
    let mut answer = Map::new();
    answer.insert("app".into(), selection.app.clone().into());
    answer.insert("group".into(), group_json(&summary, events));
    answer.insert(
        "samples".into(),
        crashes.iter().map(sample_json).collect::<Vec<_>>().into(),
    );
    for (name, mut counts) in by {
        if name == "versions" {
            // Newest version first, as a release manager reads them.
            counts.sort_by(|a, b| compare_versions(&b.value, &a.value));
        }
        let counts: Vec<Value> = counts
            .iter()
            .map(|count| {
                json!({
                    "value": count.value,
                    "events": count.events,
                    "share": share(count.events, events),
                })
            })
            .collect();
        answer.insert(name.into(), counts.into());
    }
    Ok(Json(Value::Object(answer)))
}

/// One crash as sent: its context and dimensions by name, its frames and
/// breadcrumbs in the client's JSON form, the other attributes (unit,
/// cohort, region, network, session and user hashes) as they are.
fn sample_json(crash: &EventRecord) -> Value {
    let mut attributes = Map::new();
    let mut fields = Map::new();
    for (key, value) in &crash.attributes {
        let named = match key.as_str() {
            "crash.frames" => Some(("frames", parse_json(value))),
            "crash.breadcrumbs" => Some(("breadcrumbs", parse_json(value))),
            "thread.name" => Some(("thread", value.clone().into())),
            "exception.type" => continue,
            _ => CrashDimension::ALL
                .into_iter()
                .find(|d| d.attribute() == key)
                .map(|d| (d.name(), dimension_json(d, value))),
        };
        match named {
            Some((name, value)) => {
                fields.insert(name.into(), value);
            }
            None => {
                attributes.insert(key.clone(), value.clone().into());
            }
        }
    }
    let mut sample = json!({
        "time": ms(crash.time_ns),
        "exception_type": crash.name,
        "message": crash.body,
        "frames": [],
        "breadcrumbs": [],
        "thread": "",
    });
    if let Value::Object(sample) = &mut sample {
        sample.extend(fields);
        sample.insert("attributes".into(), Value::Object(attributes));
    }
    sample
}

/// Foreground and recurred as booleans, the others as text.
fn dimension_json(dimension: CrashDimension, value: &str) -> Value {
    match dimension {
        CrashDimension::Foreground | CrashDimension::Recurred => (value == "true").into(),
        _ => value.into(),
    }
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}
