//! `GET /api/v1/releases/{service}/health?version=…`: is a gray release's
//! canary worse than its baseline? For release managers.
//!
//! Server signals come from the service's server spans grouped by
//! `service.version`, `vigil.unit` and `vigil.cohort`; client signals
//! (mobile and web app releases) from the app's client series grouped by
//! `app.version`, `vigil.unit` and `vigil.cohort`. The canary is the
//! version asked for; the baseline the other versions (or `baseline=`) in
//! the canary's units, over the same range. The tests and the verdict are
//! `vigil_domain::canary`'s, the same the alerter's `canary` rules use.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::json;
use vigil_domain::canary::{
    self, Cohorts, Criteria, Judgement, Member, Outcome, Release, Side, total,
};
use vigil_domain::model::{Kind, Rollup};

use crate::error::{ApiError, BadParameter};
use crate::openapi::{Endpoint, FROM, Method, Param, TO};
use crate::query::Selection;
use crate::reader::Reader;
use crate::server::{Answer, AppState, Incoming, range_json, seconds};

pub const HEALTH: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/releases/{service}/health",
    summary: "A release's canary against its baseline over the range (default the last hour): per signal (server error ratio, p50 and p99 latency; client crash rate, also by type, app-start p90, launch crash rate, ANRs and crash loops per session, battery drained per hour in the foreground (p50), bytes sent and received per request (p90) once either cohort has any, slow-frame rate) both values, the difference, the test, its p-value and pass, fail or inconclusive; then promote, hold or rollback with the reasons",
    path_params: &[("service", "The service, or the app of client telemetry")],
    params: &[
        Param {
            name: "version",
            kind: "string",
            required: true,
            description: "The canary's version (service.version, or app.version for an app).",
        },
        Param {
            name: "baseline",
            kind: "string",
            required: false,
            description: "The baseline's version; default every other version in the canary's units (only the vigil.cohort=baseline ones when there are any).",
        },
        Param {
            name: "unit",
            kind: "string",
            required: false,
            description: "Judge one vigil.unit only.",
        },
        Param {
            name: "min_samples",
            kind: "integer",
            required: false,
            description: "Events each cohort needs before a signal is judged (default canary.min_samples).",
        },
        FROM,
        TO,
    ],
    body: None,
    role: None,
};

const UNIT: &str = "vigil.unit";
const COHORT: &str = "vigil.cohort";

/// Rollups by (version, unit, cohort, extra labels).
type Groups = Vec<(Vec<String>, Rollup)>;

pub async fn health(
    State(state): State<Arc<AppState>>,
    Path(service): Path<String>,
    incoming: Incoming,
) -> Answer {
    let call = state.begin(&HEALTH, &incoming)?;
    let version = call
        .params
        .text("version")
        .ok_or_else(|| BadParameter::new("version", "required: the canary's version"))?;
    let baseline = call.params.text("baseline");
    let unit = call.params.text("unit");
    let mut criteria: Criteria = state.canary.criteria();
    if let Some(min) = call.params.number("min_samples", 1, 1_000_000_000)? {
        criteria.min_samples = min;
    }
    let (from_s, to_s) = seconds(call.params.range(3_600_000)?);
    let release = Release {
        version: &version,
        baseline: baseline.as_deref(),
        unit: unit.as_deref(),
    };
    let data = state
        .within(read(&call.reader, &service, from_s, to_s))
        .await?;
    let cohorts = release.cohorts(data.groups().map(|(group, _)| Member::of(group)));
    let baseline_versions: BTreeSet<&str> = data
        .groups()
        .map(|(group, _)| Member::of(group))
        .filter(|m| cohorts.side(m) == Some(Side::Baseline))
        .map(|m| m.version)
        .collect();
    let split = |groups: &[(Vec<String>, Rollup)]| {
        cohorts.merge(groups.iter().map(|(g, r)| (Member::of(g), r)))
    };
    let mut judgements = Vec::new();
    let mut by_type = Vec::new();

    let (canary_spans, baseline_spans) = split(&data.spans);
    if canary_spans.values.count() + baseline_spans.values.count() > 0 {
        judgements.extend(criteria.spans(&canary_spans, &baseline_spans));
    }
    let groups = |name: &str| {
        data.client
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(&[][..], |(_, groups)| groups.as_slice())
    };
    let client = |name: &str| split(groups(name));
    judgements.extend(criteria.client(client));
    let (canary_sessions, baseline_sessions) = client("client.sessions");
    let sessions = (total(&canary_sessions), total(&baseline_sessions));
    if sessions.0 + sessions.1 > 0 {
        by_type = crash_types(&criteria, &cohorts, groups("client.crashes"), sessions);
    }

    // A crash type that rises significantly fails the release; one with
    // too few crashes to judge does not hold it.
    let failed_types = by_type
        .iter()
        .filter(|j| j.result == Outcome::Fail)
        .cloned();
    let judged: Vec<Judgement> = judgements.iter().cloned().chain(failed_types).collect();
    let (verdict, reasons) = canary::verdict(&judged);
    let mut answer = range_json(from_s, to_s);
    answer["service"] = json!(service);
    answer["version"] = json!(version);
    answer["baseline_versions"] = json!(baseline_versions);
    answer["units"] = json!(cohorts.units);
    answer["verdict"] = json!(verdict);
    answer["reasons"] = json!(reasons);
    answer["signals"] = json!(judgements);
    answer["crash_rate_by_type"] = json!(by_type);
    Ok(Json(answer))
}

/// What a release's signals are read from.
struct Data {
    spans: Groups,
    /// Each of [`canary::CLIENT_SERIES`], by name; `client.crashes` by
    /// exception type too.
    client: Vec<(&'static str, Groups)>,
}

impl Data {
    /// Every group read, of every signal.
    fn groups(&self) -> impl Iterator<Item = &(Vec<String>, Rollup)> {
        self.client
            .iter()
            .flat_map(|(_, groups)| groups)
            .chain(&self.spans)
    }
}

async fn read(reader: &Reader, service: &str, from_s: u64, to_s: u64) -> Result<Data, ApiError> {
    let spans = Selection {
        service: Some(service.to_owned()),
        ..Selection::new(Kind::Span)
    }
    .matching("span.kind", "server")
    .grouped_by(&canary::SPAN_GROUP);
    let client = |name: &str, extra: &[&str]| {
        let mut group_by = vec!["app.version", UNIT, COHORT];
        group_by.extend(extra);
        let selection = Selection {
            service: Some(service.to_owned()),
            name: Some(name.to_owned()),
            ..Selection::new(Kind::Client)
        }
        .grouped_by(&group_by);
        // Battery drain is judged on foreground use.
        if name == "client.power.drain" {
            selection.matching("power.foreground", "true")
        } else {
            selection
        }
    };
    // Crashes by type too: merged over the types, they are the crashes.
    let selections: Vec<Selection> = canary::CLIENT_SERIES
        .iter()
        .map(|&name| match name {
            "client.crashes" => client(name, &["exception.type"]),
            _ => client(name, &[]),
        })
        .collect();
    // Independent reads, at once.
    let (spans, client) = tokio::try_join!(
        reader.totals(&spans, from_s, to_s),
        futures_util::future::try_join_all(
            selections
                .iter()
                .map(|selection| reader.totals(selection, from_s, to_s)),
        ),
    )?;
    Ok(Data {
        spans,
        client: canary::CLIENT_SERIES.into_iter().zip(client).collect(),
    })
}

/// Crashes per session of each exception type.
fn crash_types(
    criteria: &Criteria,
    cohorts: &Cohorts<'_>,
    crashes: &[(Vec<String>, Rollup)],
    sessions: (u64, u64),
) -> Vec<Judgement> {
    let kind = |group: &[String]| group.get(3).map_or("", String::as_str).to_owned();
    let kinds: BTreeSet<String> = crashes.iter().map(|(group, _)| kind(group)).collect();
    kinds
        .into_iter()
        .map(|k| {
            let (canary, baseline) = cohorts.merge(
                crashes
                    .iter()
                    .filter(|(group, _)| kind(group) == k)
                    .map(|(g, r)| (Member::of(g), r)),
            );
            criteria.ratio(
                &format!("crash_rate{{exception.type={k:?}}}"),
                (canary.values.count(), sessions.0),
                (baseline.values.count(), sessions.1),
            )
        })
        .collect()
}
