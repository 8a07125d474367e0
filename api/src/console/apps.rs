//! Apps and probes: per app version, crash-free sessions and users, cold
//! start p90, slow and frozen frames, and the crash groups; per probe and
//! location, availability as a grid and the latest runs, each linked to
//! its trace.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::chart::{self, Unit};
use super::{Console, Session, View, encode, failed, layout};

#[derive(Debug, Deserialize, Default)]
pub struct Asked {
    #[serde(default)]
    app: String,
    /// Crash groups of one kind: `managed` or `native`.
    #[serde(default)]
    kind: String,
    /// Crash groups of crashes in the foreground (`true`) or background.
    #[serde(default)]
    foreground: String,
    #[serde(flatten)]
    view: View,
}

/// The crash filters offered: parameter, its values and their names.
const CRASH_FILTERS: [(&str, [(&str, &str); 3]); 2] = [
    (
        "kind",
        [
            ("", "every kind"),
            ("managed", "managed"),
            ("native", "native"),
        ],
    ),
    (
        "foreground",
        [
            ("", "foreground and background"),
            ("true", "foreground"),
            ("false", "background"),
        ],
    ),
];

pub async fn apps(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(asked): Query<Asked>,
) -> Response {
    let view = &asked.view;
    let app = asked.app.trim();
    let filter = if app.is_empty() {
        String::new()
    } else {
        format!("app={}&", encode(app))
    };
    let range = view.api();
    let (health, crashes) = tokio::join!(
        console.get(&session, format!("/api/v1/client/health?{filter}{range}")),
        async {
            if app.is_empty() {
                None
            } else {
                let mut wanted = String::new();
                for (name, value) in [("kind", &asked.kind), ("foreground", &asked.foreground)] {
                    if !value.is_empty() {
                        wanted.push_str(&format!("{name}={}&", encode(value)));
                    }
                }
                Some(
                    console
                        .get(&session, format!("/api/v1/crashes?{filter}{wanted}{range}"))
                        .await,
                )
            }
        },
    );
    let content = html! {
        h1 { "Apps" }
        @match &health {
            Ok(answer) => (versions(answer, view)),
            Err(failure) => (failed("client health", failure)),
        }
        @if let Some(crashes) = &crashes {
            h2 { "Crash groups of " (app) }
            (crash_filters(&asked, app))
            @match crashes {
                Ok(answer) => (groups(answer)),
                Err(failure) => (failed("crash groups", failure)),
            }
        }
    };
    super::page(layout("Apps", &session, view, "/console/apps", content))
}

fn versions(answer: &Value, view: &View) -> Markup {
    let apps = answer["apps"].as_array().cloned().unwrap_or_default();
    html! {
        @if apps.is_empty() {
            p { "No app sent telemetry in this range." }
        }
        @for app in &apps {
            @let name = app["app"].as_str().unwrap_or("");
            h2 { a href=(format!("{}&app={}", view.link("/console/apps"), encode(name))) { (name) } }
            table.versions data-app=(name) {
                thead { tr {
                    th scope="col" { "Version" }
                    th scope="col" { "Sessions" }
                    th scope="col" { "Crash-free sessions" }
                    th scope="col" { "Crash-free users" }
                    th scope="col" { "Cold start p90" }
                    th scope="col" { "Slow frames" }
                    th scope="col" { "Frozen frames" }
                    th scope="col" { "ANRs / session" }
                } }
                tbody {
                    @for version in app["versions"].as_array().into_iter().flatten() {
                        tr data-version=(version["version"].as_str().unwrap_or("")) {
                            th scope="row" { (version["version"].as_str().unwrap_or("")) }
                            td.num { (chart::figure(&version["sessions"])) }
                            td.num data-value=(version["crash_free_sessions"]) { (Unit::Ratio.read(&version["crash_free_sessions"])) }
                            td.num { (Unit::Ratio.read(&version["crash_free_users"])) }
                            td.num { (Unit::Millis.read(&version["app_start_ms"]["cold"]["p90"])) }
                            td.num { (Unit::Ratio.read(&version["slow_frame_rate"])) }
                            td.num { (Unit::Ratio.read(&version["frozen_frame_rate"])) }
                            td.num { (chart::figure(&version["anrs_per_session"])) }
                        }
                    }
                }
            }
        }
    }
}

/// Links choosing the crash groups' kind and foreground, the chosen one
/// marked.
fn crash_filters(asked: &Asked, app: &str) -> Markup {
    let link = |name: &str, value: &str| {
        let mut link = format!("{}&app={}", asked.view.link("/console/apps"), encode(app));
        for (other, chosen) in [("kind", &asked.kind), ("foreground", &asked.foreground)] {
            let value = if other == name {
                value
            } else {
                chosen.as_str()
            };
            if !value.is_empty() {
                link.push_str(&format!("&{other}={}", encode(value)));
            }
        }
        link
    };
    html! {
        @for (name, choices) in CRASH_FILTERS {
            @let chosen = if name == "kind" { &asked.kind } else { &asked.foreground };
            nav.filters aria-label=(name) {
                @for (value, title) in choices {
                    @if value == chosen {
                        strong aria-current="true" { (title) }
                    } @else {
                        a href=(link(name, value)) { (title) }
                    }
                    " "
                }
            }
        }
    }
}

fn groups(answer: &Value) -> Markup {
    let groups = answer["groups"].as_array().cloned().unwrap_or_default();
    html! {
        @if groups.is_empty() {
            p.calm { "No crash in this range." }
        } @else {
            table.crashes {
                thead { tr {
                    th scope="col" { "Exception" }
                    th scope="col" { "State" }
                    th scope="col" { "Crashes" }
                    th scope="col" { "Users" }
                    th scope="col" { "Versions" }
                    th scope="col" { "Message" }
                } }
                tbody {
                    @for group in &groups {
                        tr class=(group["state"].as_str().unwrap_or("")) data-fingerprint=(group["fingerprint"].as_str().unwrap_or("")) {
                            th scope="row" { (group["exception_type"].as_str().unwrap_or("")) }
                            td { (group["state"].as_str().unwrap_or("")) }
                            td.num { (group["events"].as_u64().unwrap_or(0)) }
                            td.num { (group["users"].as_u64().map_or("–".to_owned(), |u| u.to_string())) }
                            td { (group["first_version"].as_str().unwrap_or("")) " – " (group["last_version"].as_str().unwrap_or("")) }
                            td { (group["message"].as_str().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct Probe {
    #[serde(default)]
    probe: String,
    #[serde(flatten)]
    view: View,
}

pub async fn probes(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(asked): Query<Probe>,
) -> Response {
    let view = &asked.view;
    let probe = asked.probe.trim();
    let (all, runs) = tokio::join!(
        console.get(&session, format!("/api/v1/probes?{}", view.api())),
        async {
            if probe.is_empty() {
                None
            } else {
                Some(
                    console
                        .get(
                            &session,
                            format!(
                                "/api/v1/probes/{}/runs?limit=20&{}",
                                encode(probe),
                                view.api()
                            ),
                        )
                        .await,
                )
            }
        },
    );
    let content = html! {
        h1 { "Probes" }
        @match &all {
            Ok(answer) => (grid(answer, view)),
            Err(failure) => (failed("probes", failure)),
        }
        @if let Some(runs) = &runs {
            h2 { "Latest runs of " (probe) }
            @match runs {
                Ok(answer) => (runs_table(answer)),
                Err(failure) => (failed("runs", failure)),
            }
        }
    };
    super::page(layout("Probes", &session, view, "/console/probes", content))
}

/// Availability per probe (rows) and location (columns).
fn grid(answer: &Value, view: &View) -> Markup {
    let probes = answer["probes"].as_array().cloned().unwrap_or_default();
    let locations: BTreeSet<&str> = probes
        .iter()
        .flat_map(|p| p["locations"].as_array().into_iter().flatten())
        .filter_map(|l| l["location"].as_str())
        .collect();
    let cell = |probe: &Value, location: &str| {
        probe["locations"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["location"].as_str() == Some(location))
            .cloned()
    };
    html! {
        @if probes.is_empty() {
            p { "No probe ran in this range." }
        } @else {
            table.grid {
                thead { tr {
                    th scope="col" { "Probe" }
                    @for location in &locations { th scope="col" { (location) } }
                } }
                tbody {
                    @for probe in &probes {
                        @let name = probe["name"].as_str().unwrap_or("");
                        tr data-probe=(name) {
                            th scope="row" { a href=(format!("{}&probe={}", view.link("/console/probes"), encode(name))) { (name) } }
                            @for location in &locations {
                                @match cell(probe, location) {
                                    Some(found) => {
                                        @let failing = found["failed"].as_u64().unwrap_or(0) > 0;
                                        td.num.failing[failing] data-location=(location) data-availability=(found["availability"]) {
                                            (Unit::Ratio.read(&found["availability"])) " of " (found["runs"].as_u64().unwrap_or(0))
                                        }
                                    }
                                    None => td { "–" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn runs_table(answer: &Value) -> Markup {
    let runs = answer["runs"].as_array().cloned().unwrap_or_default();
    html! {
        @if runs.is_empty() {
            p { "No run in this range." }
        } @else {
            table.runs {
                thead { tr {
                    th scope="col" { "When" }
                    th scope="col" { "Location" }
                    th scope="col" { "Duration" }
                    th scope="col" { "Result" }
                    th scope="col" { "Trace" }
                } }
                tbody {
                    @for run in &runs {
                        @let ok = run["ok"].as_bool().unwrap_or(false);
                        @let trace = run["trace_id"].as_str().unwrap_or("");
                        tr.failing[!ok] {
                            td { (run["start"].as_f64().map_or(String::new(), |ms| chart::clock(ms as u64, 0))) }
                            td { (run["location"].as_str().unwrap_or("")) }
                            td.num { (Unit::Millis.read(&run["duration_ms"])) }
                            td { @if ok { "ok" } @else { (run["failure"].as_str().unwrap_or("failed")) } }
                            td { a href=(format!("/console/traces/{}", encode(trace))) { code { (trace) } } }
                        }
                    }
                }
            }
        }
    }
}
