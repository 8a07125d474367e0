//! Alerts: firing and pending with their labels, value and located causes;
//! the history; silences listed, created and expired (the API refuses
//! viewers, and the page says so).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};
use vigil_domain::signal::parse_filter;

use super::chart;
use super::overview::labels_text;
use super::{Console, Failure, Session, View, encode, failed, layout, same_csrf};

pub async fn page(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(view): Query<View>,
) -> Response {
    let content = content(&console, &session, &view, None).await;
    super::page(layout(
        "Alerts",
        &session,
        &view,
        "/console/alerts",
        content,
    ))
}

async fn content(
    console: &Console,
    session: &Session,
    view: &View,
    refused: Option<&Failure>,
) -> Markup {
    let tenant = view.tenant();
    let (alerts, history, silences) = tokio::join!(
        console.get(session, format!("/api/v1/alerts?{tenant}")),
        console.get(
            session,
            format!("/api/v1/alerts/history?limit=50&{}", view.api())
        ),
        console.get(session, format!("/api/v1/silences?{tenant}")),
    );
    html! {
        h1 { "Alerts" }
        section aria-labelledby="active" {
            h2 #active { "Firing and pending" }
            @match &alerts {
                Ok(answer) => (active(answer)),
                Err(failure) => (failed("alerts", failure)),
            }
        }
        section aria-labelledby="silences" {
            h2 #silences { "Silences" }
            @if let Some(failure) = refused {
                (failed("the silence was not saved", failure))
            }
            @match &silences {
                Ok(answer) => (silences_table(answer, session, view)),
                Err(failure) => (failed("silences", failure)),
            }
            @if session.can_edit() {
                (silence_form(session, view))
            } @else {
                p.note { "Silences are created and expired with an editor's token." }
            }
        }
        section aria-labelledby="history" {
            h2 #history { "History" }
            @match &history {
                Ok(answer) => (history_table(answer)),
                Err(failure) => (failed("history", failure)),
            }
        }
    }
}

fn active(answer: &Value) -> Markup {
    let alerts: Vec<&Value> = answer["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| matches!(a["state"].as_str(), Some("firing" | "pending")))
        .collect();
    html! {
        @if alerts.is_empty() {
            p.calm { "Nothing is firing or pending." }
        } @else {
            table.alerts {
                thead { tr {
                    th scope="col" { "State" }
                    th scope="col" { "Rule" }
                    th scope="col" { "Labels" }
                    th scope="col" { "Value" }
                    th scope="col" { "Since" }
                    th scope="col" { "Located" }
                } }
                tbody {
                    @for alert in alerts {
                        @let state = alert["state"].as_str().unwrap_or("");
                        tr class=(state) data-rule=(alert["rule"].as_str().unwrap_or("")) {
                            td { (state) @if !alert["silenced_by"].as_array().is_none_or(Vec::is_empty) { " (silenced)" } }
                            th scope="row" { (alert["rule"].as_str().unwrap_or("")) }
                            td { (labels_text(&alert["labels"])) }
                            td.num { (chart::figure(&alert["value"])) }
                            td { (alert["active_since"].as_u64().map_or(String::new(), |t| chart::clock(t, u64::MAX))) }
                            td { (alert["located"].as_array().map_or(String::new(), |l| l.iter().map(labels_text).collect::<Vec<_>>().join("; "))) }
                        }
                    }
                }
            }
        }
    }
}

fn silences_table(answer: &Value, session: &Session, view: &View) -> Markup {
    let silences = answer["silences"].as_array().cloned().unwrap_or_default();
    let matchers = |silence: &Value| {
        silence["matchers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let op = if m["is_equal"].as_bool() == Some(false) {
                    "!="
                } else {
                    "="
                };
                format!(
                    "{}{op}{:?}",
                    m["name"].as_str().unwrap_or(""),
                    m["value"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    html! {
        @if silences.is_empty() {
            p { "No silence." }
        } @else {
            table.silences {
                thead { tr {
                    th scope="col" { "Status" }
                    th scope="col" { "Matchers" }
                    th scope="col" { "Ends" }
                    th scope="col" { "Recurring" }
                    th scope="col" { "By" }
                    th scope="col" { "Comment" }
                    @if session.can_edit() { th scope="col" { span.visually-hidden { "Actions" } } }
                } }
                tbody {
                    @for silence in &silences {
                        @let id = silence["id"].as_str().unwrap_or("");
                        @let status = silence["status"].as_str().unwrap_or("");
                        tr data-silence=(id) class=(status) {
                            td { (status) }
                            td { code { (matchers(silence)) } }
                            td { (silence["ends_at"].as_u64().map_or(String::new(), |t| chart::clock(t, u64::MAX))) }
                            td { (silence["recurring"]["cron"].as_str().unwrap_or("")) }
                            td { (silence["created_by"].as_str().unwrap_or("")) }
                            td { (silence["comment"].as_str().unwrap_or("")) }
                            @if session.can_edit() {
                                td {
                                    @if status != "expired" {
                                        form method="post" action=(format!("/console/silences/{}/expire?{}", encode(id), view.tenant())) {
                                            input type="hidden" name="csrf" value=(session.csrf);
                                            button type="submit" { "Expire" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn silence_form(session: &Session, view: &View) -> Markup {
    html! {
        form.silence method="post" action=(format!("/console/silences?{}", view.tenant())) {
            h3 { "New silence" }
            input type="hidden" name="csrf" value=(session.csrf);
            label { "Matchers " input type="text" name="matchers" required placeholder="vigil.unit=\"unit-b\",rule=\"payments-errors\""; }
            label { "Ends " input type="text" name="ends_at" required value="now+2h" placeholder="now+2h or 2026-12-08T00:00:00Z"; }
            label { "Recurring (cron, UTC) " input type="text" name="cron" placeholder="0 2 * * *"; }
            label { "for " input type="text" name="duration" placeholder="90m"; }
            label { "By " input type="text" name="created_by" required; }
            label { "Comment " input type="text" name="comment"; }
            button type="submit" { "Create" }
        }
    }
}

fn history_table(answer: &Value) -> Markup {
    let entries = answer["entries"].as_array().cloned().unwrap_or_default();
    html! {
        @if entries.is_empty() {
            p { "Nothing happened in this range." }
        } @else {
            table.history {
                thead { tr {
                    th scope="col" { "When" }
                    th scope="col" { "What" }
                    th scope="col" { "Rule" }
                    th scope="col" { "Subject" }
                } }
                tbody {
                    @for entry in &entries {
                        tr {
                            td { (entry["time"].as_u64().map_or(String::new(), |t| chart::clock(t, u64::MAX))) }
                            td { (entry["kind"].as_str().unwrap_or("")) }
                            td { (entry["rule"].as_str().unwrap_or("")) }
                            td { (entry["subject"].as_str().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct SilenceForm {
    csrf: String,
    matchers: String,
    ends_at: String,
    #[serde(default)]
    cron: String,
    #[serde(default)]
    duration: String,
    created_by: String,
    #[serde(default)]
    comment: String,
}

/// Creates a silence through `POST /api/v1/silences`; on refusal the page
/// is shown again with the API's reason.
pub async fn create(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(view): Query<View>,
    axum::Form(form): axum::Form<SilenceForm>,
) -> Response {
    if !same_csrf(&session, &form.csrf) {
        return super::forbidden_form();
    }
    let sent = match parse_filter(&form.matchers) {
        Ok(matchers) => {
            let mut body = json!({
                "matchers": matchers,
                "ends_at": form.ends_at.trim(),
                "created_by": form.created_by.trim(),
                "comment": form.comment.trim(),
            });
            if !form.cron.trim().is_empty() {
                body["recurring"] =
                    json!({"cron": form.cron.trim(), "duration": form.duration.trim()});
            }
            let path = format!("/api/v1/silences?{}", view.tenant());
            console
                .send(&session, Method::POST, &path, Some(&body))
                .await
        }
        Err(reason) => Err(Failure {
            status: StatusCode::BAD_REQUEST,
            message: format!("matchers: {reason}"),
        }),
    };
    answered(&console, &session, &view, sent).await
}

/// Expires a silence through `DELETE /api/v1/silences/{id}`.
pub async fn expire(
    State(console): State<Arc<Console>>,
    session: Session,
    Path(id): Path<String>,
    Query(view): Query<View>,
    axum::Form(form): axum::Form<super::CsrfForm>,
) -> Response {
    if !same_csrf(&session, &form.csrf) {
        return super::forbidden_form();
    }
    let path = format!("/api/v1/silences/{}?{}", encode(&id), view.tenant());
    let sent = console.send(&session, Method::DELETE, &path, None).await;
    answered(&console, &session, &view, sent).await
}

/// After a write: back to the alerts page (a redirect, so a reload does
/// not send it again), or the page with the API's refusal and its status.
async fn answered(
    console: &Console,
    session: &Session,
    view: &View,
    sent: Result<Value, Failure>,
) -> Response {
    match sent {
        Ok(_) => Redirect::to(&view.link("/console/alerts")).into_response(),
        Err(failure) => {
            let content = content(console, session, view, Some(&failure)).await;
            let mut response =
                super::page(layout("Alerts", session, view, "/console/alerts", content));
            *response.status_mut() = failure.status;
            response
        }
    }
}
