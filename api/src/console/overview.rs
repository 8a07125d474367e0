//! The overview: firing alerts first, then the units side by side, every
//! service with its figures and a sparkline per unit, and the probes per
//! location.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde_json::Value;

use super::chart::{self, Line, Unit};
use super::{Console, Session, View, answer_range, failed, layout, query_lines};

pub async fn page_of(console: &Console, session: &Session, view: &View) -> Markup {
    let range = view.api();
    let step = view.step();
    let by_unit = |signal: &str| {
        format!(
            "/api/v1/query?kind=span&signal={signal}&group_by=vigil.unit&filter=span.kind%3D%22server%22&step={step}&{range}"
        )
    };
    let (alerts, services, probes, rates, errors, p99, spark) = tokio::join!(
        console.get(session, format!("/api/v1/alerts?state=firing&{}", view.tenant())),
        console.get(session, format!("/api/v1/services?{range}")),
        console.get(session, format!("/api/v1/probes?{range}")),
        console.get(session, by_unit("rate")),
        console.get(session, by_unit("error_ratio")),
        console.get(session, by_unit("p99")),
        console.get(
            session,
            format!("/api/v1/query?kind=span&signal=error_ratio&group_by=service.name,vigil.unit&filter=span.kind%3D%22server%22&step={step}&{range}")
        ),
    );
    html! {
        h1 { "Overview" }
        section aria-labelledby="firing" {
            h2 #firing { "Firing alerts" }
            @match &alerts {
                Ok(answer) => (firing(answer, view)),
                Err(failure) => (failed("alerts", failure)),
            }
        }
        section aria-labelledby="units" {
            h2 #units { "Units" }
            div.charts {
                @for (answer, title, unit) in [(&rates, "Requests by unit", Unit::PerSecond), (&errors, "Error ratio by unit", Unit::Ratio), (&p99, "p99 latency by unit", Unit::Millis)] {
                    @match answer {
                        Ok(answer) => {
                            @let (from, to) = answer_range(answer);
                            (chart::lines(title, unit, from, to, &query_lines(answer)))
                        }
                        Err(failure) => (failed(title, failure)),
                    }
                }
            }
        }
        section aria-labelledby="services" {
            h2 #services { "Services" }
            @match &services {
                Ok(answer) => (services_table(answer, spark.as_ref().ok(), view)),
                Err(failure) => (failed("services", failure)),
            }
        }
        section aria-labelledby="probes" {
            h2 #probes { "Probes" }
            @match &probes {
                Ok(answer) => (probes_table(answer)),
                Err(failure) => (failed("probes", failure)),
            }
        }
    }
}

pub async fn page(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(view): Query<View>,
) -> Response {
    let content = page_of(&console, &session, &view).await;
    super::page(layout("Overview", &session, &view, "/console/", content))
}

/// A label set as `key=value` pairs.
pub fn labels_text(labels: &Value) -> String {
    labels
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn firing(answer: &Value, view: &View) -> Markup {
    let alerts = answer["alerts"].as_array().cloned().unwrap_or_default();
    html! {
        @if alerts.is_empty() {
            p.calm { "Nothing is firing." }
        } @else {
            ul.alerts {
                @for alert in &alerts {
                    li.firing data-rule=(alert["rule"].as_str().unwrap_or("")) {
                        strong { (alert["rule"].as_str().unwrap_or("")) }
                        " " span.labels { (labels_text(&alert["labels"])) }
                        @if let Some(value) = alert["value"].as_f64() {
                            " · value " (chart::significant(value))
                        }
                        @if let Some(located) = alert["located"].as_array().filter(|l| !l.is_empty()) {
                            " · located: " (located.iter().map(labels_text).collect::<Vec<_>>().join("; "))
                        }
                    }
                }
            }
            a href=(view.link("/console/alerts")) { "All alerts and silences" }
        }
    }
}

fn services_table(answer: &Value, spark: Option<&Value>, view: &View) -> Markup {
    let services = answer["services"].as_array().cloned().unwrap_or_default();
    let (from, to) = answer_range(answer);
    // Service → its units' error-ratio lines.
    let mut by_service: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    for line in spark.map(query_lines).unwrap_or_default() {
        if let Some((service, unit)) = line.name.split_once(" · ") {
            by_service
                .entry(service.to_owned())
                .or_default()
                .push(Line {
                    name: unit.to_owned(),
                    points: line.points,
                });
        }
    }
    html! {
        @if services.is_empty() {
            p { "No service sent spans in this range." }
        } @else {
            table.services {
                thead { tr {
                    th scope="col" { "Service" }
                    th scope="col" { "Requests/s" }
                    th scope="col" { "Error ratio" }
                    th scope="col" { "p99" }
                    th scope="col" { "Availability" }
                    th scope="col" { "Error ratio by unit" }
                } }
                tbody {
                    @for service in &services {
                        @let name = service["service"].as_str().unwrap_or("");
                        tr data-service=(name) {
                            th scope="row" { a href=(view.link(&format!("/console/services/{}", super::encode(name)))) { (name) } }
                            td.num { (chart::figure(&service["rate_per_s"])) }
                            td.num { (Unit::Ratio.read(&service["error_ratio"])) }
                            td.num { (Unit::Millis.read(&service["p99_ms"])) }
                            td.num { (Unit::Ratio.read(&service["availability"])) }
                            td { (chart::sparkline(&format!("{name} error ratio by unit"), Unit::Ratio, from, to, by_service.get(name).map_or(&[][..], Vec::as_slice))) }
                        }
                    }
                }
            }
        }
    }
}

fn probes_table(answer: &Value) -> Markup {
    let probes = answer["probes"].as_array().cloned().unwrap_or_default();
    html! {
        @if probes.is_empty() {
            p { "No probe ran in this range." }
        } @else {
            table.probes {
                thead { tr {
                    th scope="col" { "Probe" }
                    th scope="col" { "Location" }
                    th scope="col" { "Runs" }
                    th scope="col" { "Failed" }
                    th scope="col" { "Availability" }
                } }
                tbody {
                    @for probe in &probes {
                        @for location in probe["locations"].as_array().into_iter().flatten() {
                            @let failing = location["failed"].as_u64().unwrap_or(0) > 0;
                            tr.failing[failing] {
                                th scope="row" { (probe["name"].as_str().unwrap_or("")) }
                                td { (location["location"].as_str().unwrap_or("")) }
                                td.num { (location["runs"].as_u64().unwrap_or(0)) }
                                td.num { (location["failed"].as_u64().unwrap_or(0)) }
                                td.num { (Unit::Ratio.read(&location["availability"])) }
                            }
                        }
                    }
                }
            }
        }
    }
}
