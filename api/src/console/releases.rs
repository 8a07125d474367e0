//! A release: the canary against its baseline for a service or an app and
//! a version — the verdict first, then each signal with both values, the
//! difference, the p-value and the result (with the samples still needed
//! when inconclusive), then both cohorts' charts.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::chart::{self, Unit};
use super::{Console, Session, View, answer_range, encode, failed, layout, query_lines};

#[derive(Debug, Deserialize, Default)]
pub struct Asked {
    #[serde(default)]
    service: String,
    #[serde(default)]
    version: String,
    #[serde(flatten)]
    view: View,
}

pub async fn page(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(asked): Query<Asked>,
) -> Response {
    let view = &asked.view;
    let (service, version) = (asked.service.trim(), asked.version.trim());
    let content = if service.is_empty() || version.is_empty() {
        html! { h1 { "Releases" } (chooser(service, version, view)) }
    } else {
        report(&console, &session, view, service, version).await
    };
    super::page(layout(
        "Releases",
        &session,
        view,
        "/console/releases",
        content,
    ))
}

fn chooser(service: &str, version: &str, view: &View) -> Markup {
    html! {
        form.release method="get" action="/console/releases" {
            label { "Service or app " input type="text" name="service" value=(service) required; }
            label { "Version " input type="text" name="version" value=(version) required; }
            input type="hidden" name="range" value=(view.range());
            input type="hidden" name="refresh" value=(view.refresh());
            button type="submit" { "Judge" }
        }
    }
}

async fn report(
    console: &Console,
    session: &Session,
    view: &View,
    service: &str,
    version: &str,
) -> Markup {
    let range = view.api();
    let step = view.step();
    let name = encode(service);
    let by_version = |signal: &str| {
        format!(
            "/api/v1/query?kind=span&service={name}&signal={signal}&group_by=service.version&filter=span.kind%3D%22server%22&step={step}&{range}"
        )
    };
    let (health, errors, p99) = tokio::join!(
        console.get(
            session,
            format!(
                "/api/v1/releases/{name}/health?version={}&{range}",
                encode(version)
            )
        ),
        console.get(session, by_version("error_ratio")),
        console.get(session, by_version("p99")),
    );
    html! {
        h1 { (service) " " (version) }
        (chooser(service, version, view))
        @match &health {
            Ok(health) => (verdict(health)),
            Err(failure) => (failed("release health", failure)),
        }
        div.charts {
            @for (answer, title, unit) in [(&errors, "Error ratio by version", Unit::Ratio), (&p99, "p99 latency by version", Unit::Millis)] {
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
}

fn verdict(health: &Value) -> Markup {
    let verdict = health["verdict"].as_str().unwrap_or("hold");
    let signals = health["signals"].as_array().cloned().unwrap_or_default();
    html! {
        p class=(format!("verdict {verdict}")) data-verdict=(verdict) { (verdict) }
        @if let Some(reasons) = health["reasons"].as_array().filter(|r| !r.is_empty()) {
            ul.reasons { @for reason in reasons { li { (reason.as_str().unwrap_or("")) } } }
        }
        p.note {
            "Baseline: " (health["baseline_versions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
        }
        table.signals {
            thead { tr {
                th scope="col" { "Signal" }
                th scope="col" { "Canary" }
                th scope="col" { "Baseline" }
                th scope="col" { "Difference" }
                th scope="col" { "p-value" }
                th scope="col" { "Result" }
                th scope="col" { "Samples" }
            } }
            tbody {
                @for signal in &signals {
                    @let result = signal["result"].as_str().unwrap_or("");
                    tr class=(result) data-signal=(signal["signal"].as_str().unwrap_or("")) {
                        th scope="row" { (signal["signal"].as_str().unwrap_or("")) }
                        td.num { (chart::figure(&signal["canary"])) }
                        td.num { (chart::figure(&signal["baseline"])) }
                        td.num { (chart::figure(&signal["difference"])) }
                        td.num data-p=(signal["p_value"].as_f64().map_or(String::new(), |p| p.to_string())) { (chart::figure(&signal["p_value"])) }
                        td { (result) }
                        td.num {
                            (signal["canary_samples"].as_u64().unwrap_or(0)) " / " (signal["baseline_samples"].as_u64().unwrap_or(0))
                            @if let Some(needed) = signal["needed"].as_object() {
                                " (needs " (needed.get("canary").and_then(Value::as_u64).unwrap_or(0)) " / " (needed.get("baseline").and_then(Value::as_u64).unwrap_or(0)) ")"
                            }
                        }
                    }
                }
            }
        }
    }
}
