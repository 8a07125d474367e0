//! A trace's waterfall: the probe's steps and the services' spans in one
//! tree, each bar placed by its start and length, each span's attributes
//! and status a click away; and a search box for a trace id.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::chart::{self, Unit};
use super::{Console, Session, View, encode, failed, layout};

pub async fn page(
    State(console): State<Arc<Console>>,
    session: Session,
    Path(trace_id): Path<String>,
    Query(view): Query<View>,
) -> Response {
    let answer = console
        .get(
            &session,
            format!("/api/v1/traces/{}?{}", encode(&trace_id), view.tenant()),
        )
        .await;
    let content = match &answer {
        Ok(trace) => waterfall(trace),
        Err(failure) => html! {
            h1 { "Trace " code { (trace_id) } }
            (failed("trace", failure))
        },
    };
    let mut response = super::page(layout(
        "Trace",
        &session,
        &view,
        &format!("/console/traces/{}", encode(&trace_id)),
        content,
    ));
    if let Err(failure) = answer {
        *response.status_mut() = failure.status;
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct Search {
    trace_id: String,
}

/// The search box's answer: the trace's page.
pub async fn search(_session: Session, Query(search): Query<Search>) -> Response {
    let id = search.trace_id.trim().to_ascii_lowercase();
    Redirect::to(&format!("/console/traces/{}", encode(&id))).into_response()
}

/// A span and its descendants, depth first, each with its depth.
fn flatten<'a>(span: &'a Value, depth: usize, out: &mut Vec<(usize, &'a Value)>) {
    out.push((depth, span));
    for child in span["children"].as_array().into_iter().flatten() {
        flatten(child, depth + 1, out);
    }
}

fn waterfall(trace: &Value) -> Markup {
    let start = trace["start"].as_f64().unwrap_or(0.0);
    let total = trace["duration_ms"].as_f64().unwrap_or(0.0).max(0.001);
    let mut spans = Vec::new();
    for root in trace["roots"].as_array().into_iter().flatten() {
        flatten(root, 0, &mut spans);
    }
    let percent = |ms: f64| (ms / total * 100.0).clamp(0.0, 100.0);
    html! {
        h1 { "Trace " code { (trace["trace_id"].as_str().unwrap_or("")) } }
        p {
            (trace["span_count"].as_u64().unwrap_or(0)) " spans in "
            (Unit::Millis.format(total)) ", "
            (trace["error_count"].as_u64().unwrap_or(0)) " failed; services: "
            (trace["services"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
        }
        ol.waterfall {
            @for (depth, span) in &spans {
                @let offset = span["start"].as_f64().unwrap_or(start) - start;
                @let duration = span["duration_ms"].as_f64().unwrap_or(0.0);
                @let status = span["status"].as_str().unwrap_or("unset");
                li class=(format!("span {status}")) data-span=(span["span_id"].as_str().unwrap_or("")) data-depth=(depth) {
                    details {
                        summary {
                            span.name style=(format!("padding-left:{}rem", depth)) {
                                strong { (span["service"].as_str().unwrap_or("")) } " " (span["operation"].as_str().unwrap_or(""))
                            }
                            span.track {
                                span.bar style=(format!("margin-left:{:.3}%;width:{:.3}%", percent(offset), percent(duration).max(0.3))) {}
                            }
                            span.duration { (Unit::Millis.format(duration)) }
                        }
                        dl.attributes {
                            dt { "status" } dd { (status) @if let Some(message) = span["status_message"].as_str().filter(|m| !m.is_empty()) { ": " (message) } }
                            dt { "kind" } dd { (span["kind"].as_str().unwrap_or("")) }
                            dt { "starts" } dd { "+" (chart::significant(offset)) " ms" }
                            @for (key, value) in span["attributes"].as_object().into_iter().flatten() {
                                dt { (key) } dd { (value.as_str().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(logs) = trace["logs"].as_array().filter(|logs| !logs.is_empty()) {
            h2 { "Logs" }
            table.logs {
                thead { tr { th scope="col" { "Severity" } th scope="col" { "Service" } th scope="col" { "Message" } } }
                tbody {
                    @for log in logs {
                        tr {
                            td { (log["severity"].as_str().unwrap_or("")) }
                            td { (log["service"].as_str().unwrap_or("")) }
                            td { (log["body"].as_str().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}
