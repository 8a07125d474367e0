//! A service: rate, error ratio and latency grouped by unit, version or
//! cohort; its latency heatmap from the stored distributions; its top
//! operations and its recent failed and slow spans.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde_json::Value;

use super::chart::{self, Unit};
use super::{Console, Session, View, answer_range, encode, failed, layout, query_lines};

/// The groupings offered, with their names.
const GROUPINGS: [(&str, &str); 3] = [
    ("vigil.unit", "unit"),
    ("service.version", "version"),
    ("vigil.cohort", "cohort"),
];

pub async fn page(
    State(console): State<Arc<Console>>,
    session: Session,
    Path(service): Path<String>,
    Query(view): Query<View>,
) -> Response {
    let by = view
        .by
        .as_deref()
        .and_then(|by| GROUPINGS.iter().find(|(label, _)| *label == by))
        .map_or("vigil.unit", |(label, _)| label);
    let range = view.api();
    let step = view.step();
    let name = encode(&service);
    let server = "filter=span.kind%3D%22server%22";
    let grouped = |signal: &str| {
        format!(
            "/api/v1/query?kind=span&service={name}&signal={signal}&group_by={by}&{server}&step={step}&{range}"
        )
    };
    let operations = |signal: &str| {
        format!(
            "/api/v1/query?kind=span&service={name}&signal={signal}&group_by=name&{server}&step={}&{range}",
            view.range()
        )
    };
    let (start_s, end_s) = view.seconds();
    let heatmap = format!(
        "/prometheus/api/v1/query_range?query={}&start={start_s}&end={end_s}&step={step}&{}",
        encode(&format!(
            "sum by (le) (increase(vigil_span_duration_seconds_bucket{{service={service:?},span_kind=\"server\"}}[{step}]))"
        )),
        view.tenant()
    );
    let (rate, errors, p50, p99, top_rate, top_errors, top_p99, whole_p99, failing, buckets) = tokio::join!(
        console.get(&session, grouped("rate")),
        console.get(&session, grouped("error_ratio")),
        console.get(&session, grouped("p50")),
        console.get(&session, grouped("p99")),
        console.get(&session, operations("rate")),
        console.get(&session, operations("error_ratio")),
        console.get(&session, operations("p99")),
        console.get(
            &session,
            format!(
                "/api/v1/query?kind=span&service={name}&signal=p99&{server}&step={}&{range}",
                view.range()
            )
        ),
        console.get(
            &session,
            format!("/api/v1/traces?service={name}&error=true&limit=10&{range}")
        ),
        console.get(&session, heatmap),
    );
    // Slow: the spans over the service's p99 in the range, once it is known.
    let slowest = whole_p99
        .ok()
        .and_then(|answer| answer["series"][0]["points"][0][1].as_f64());
    let slow = match slowest {
        Some(p99) => Some(
            console
                .get(
                    &session,
                    format!(
                        "/api/v1/traces?service={name}&min_duration={}&limit=10&{range}",
                        p99.ceil() as u64
                    ),
                )
                .await,
        ),
        None => None,
    };
    let path = format!("/console/services/{name}");
    let content = html! {
        h1 { "Service " (service) }
        nav.grouping aria-label="group by" {
            "Grouped by: "
            @for (label, title) in GROUPINGS {
                @let view = View { by: Some(label.to_owned()), ..view.clone() };
                @if label == by {
                    strong aria-current="true" { (title) }
                } @else {
                    a href=(view.link(&path)) { (title) }
                }
                " "
            }
        }
        div.charts {
            @for (answer, title, unit) in [(&rate, "Requests", Unit::PerSecond), (&errors, "Error ratio", Unit::Ratio), (&p50, "p50 latency", Unit::Millis), (&p99, "p99 latency", Unit::Millis)] {
                @match answer {
                    Ok(answer) => {
                        @let (from, to) = answer_range(answer);
                        (chart::lines(title, unit, from, to, &query_lines(answer)))
                    }
                    Err(failure) => (failed(title, failure)),
                }
            }
            @match &buckets {
                Ok(answer) => (heatmap_of(answer, start_s, end_s, view.step_ms())),
                Err(failure) => (failed("latency heatmap", failure)),
            }
        }
        section aria-labelledby="operations" {
            h2 #operations { "Top operations" }
            @match (&top_rate, &top_errors, &top_p99) {
                (Ok(rate), Ok(errors), Ok(p99)) => (operations_table(rate, errors, p99)),
                (Err(failure), _, _) | (_, Err(failure), _) | (_, _, Err(failure)) => (failed("operations", failure)),
            }
        }
        section aria-labelledby="slow" {
            h2 #slow { "Recent slow spans" @if let Some(p99) = slowest { " (over the p99, " (Unit::Millis.format(p99)) ")" } }
            @match &slow {
                Some(Ok(answer)) => (spans_table(answer, "No slow span in this range.")),
                Some(Err(failure)) => (failed("slow spans", failure)),
                None => p { "No requests in this range." },
            }
        }
        section aria-labelledby="failed" {
            h2 #failed { "Recent failed spans" }
            @match &failing {
                Ok(answer) => (spans_table(answer, "No failed span in this range.")),
                Err(failure) => (failed("failed spans", failure)),
            }
        }
    };
    let view = View {
        by: Some(by.to_owned()),
        ..view
    };
    super::page(layout(&service, &session, &view, &path, content))
}

/// The value of the one point of the series of `answer` whose name is
/// `operation`.
fn point_of(answer: &Value, operation: &str) -> Option<f64> {
    answer["series"]
        .as_array()?
        .iter()
        .find(|s| s["labels"]["name"].as_str() == Some(operation))?["points"][0][1]
        .as_f64()
}

fn operations_table(rate: &Value, errors: &Value, p99: &Value) -> Markup {
    let mut operations: Vec<(String, f64)> = rate["series"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let name = s["labels"]["name"].as_str()?.to_owned();
            let value = s["points"][0][1].as_f64()?;
            Some((name, value))
        })
        .collect();
    operations.sort_by(|a, b| b.1.total_cmp(&a.1));
    operations.truncate(20);
    html! {
        @if operations.is_empty() {
            p { "No requests in this range." }
        } @else {
            table.operations {
                thead { tr {
                    th scope="col" { "Operation" }
                    th scope="col" { "Requests/s" }
                    th scope="col" { "Error ratio" }
                    th scope="col" { "p99" }
                } }
                tbody {
                    @for (name, value) in &operations {
                        tr {
                            th scope="row" { (name) }
                            td.num { (chart::significant(*value)) }
                            td.num { (Unit::Ratio.maybe(point_of(errors, name))) }
                            td.num { (Unit::Millis.maybe(point_of(p99, name))) }
                        }
                    }
                }
            }
        }
    }
}

fn spans_table(answer: &Value, none: &str) -> Markup {
    let spans = answer["spans"].as_array().cloned().unwrap_or_default();
    html! {
        @if spans.is_empty() {
            p.calm { (none) }
        } @else {
            table.spans {
                thead { tr {
                    th scope="col" { "When" }
                    th scope="col" { "Operation" }
                    th scope="col" { "Duration" }
                    th scope="col" { "Status" }
                    th scope="col" { "Trace" }
                } }
                tbody {
                    @for span in &spans {
                        tr {
                            td { (span["start"].as_f64().map_or(String::new(), |ms| chart::clock(ms as u64, 0))) }
                            td { (span["operation"].as_str().unwrap_or("")) }
                            td.num { (Unit::Millis.read(&span["duration_ms"])) }
                            td {
                                @match span["status"].as_str() {
                                    Some("error") => (span["status_message"].as_str().filter(|m| !m.is_empty()).unwrap_or("error")),
                                    other => (other.unwrap_or("unset")),
                                }
                            }
                            @let trace = span["trace_id"].as_str().unwrap_or("");
                            td { a href=(format!("/console/traces/{}", encode(trace))) { code { (trace) } } }
                        }
                    }
                }
            }
        }
    }
}

/// The heatmap of a Prometheus matrix of cumulative `le` buckets: each
/// column a step (its window ends at the sample's time), each row the
/// values between two bounds (in ms).
fn heatmap_of(answer: &Value, start_s: u64, end_s: u64, step_ms: u64) -> Markup {
    let mut buckets: Vec<(f64, Vec<(u64, f64)>)> = answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|series| {
            let le: f64 = series["metric"]["le"].as_str()?.parse().ok()?;
            let values = series["values"]
                .as_array()?
                .iter()
                .filter_map(|v| {
                    let t = (v[0].as_f64()? * 1000.0) as u64;
                    Some((t.saturating_sub(step_ms), v[1].as_str()?.parse().ok()?))
                })
                .collect();
            Some((le * 1000.0, values))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let bounds: Vec<f64> = buckets.iter().map(|(le, _)| *le).collect();
    let mut steps: Vec<u64> = buckets
        .iter()
        .flat_map(|(_, values)| values.iter().map(|(t, _)| *t))
        .collect();
    steps.sort_unstable();
    steps.dedup();
    let columns: Vec<(u64, Vec<f64>)> = steps
        .into_iter()
        .map(|t| {
            let cumulative: Vec<f64> = buckets
                .iter()
                .map(|(_, values)| {
                    values
                        .iter()
                        .find(|(at, _)| *at == t)
                        .map_or(0.0, |(_, v)| *v)
                })
                .collect();
            let counts = cumulative
                .iter()
                .enumerate()
                .map(|(i, c)| (c - if i == 0 { 0.0 } else { cumulative[i - 1] }).max(0.0))
                .collect();
            (t, counts)
        })
        .collect();
    chart::heatmap(
        "Latency heatmap",
        start_s * 1000 - step_ms,
        end_s * 1000,
        step_ms,
        &bounds,
        &columns,
    )
}
