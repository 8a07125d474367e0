//! `GET /api/v1/traces/{trace_id}` (one trace as a tree of spans) and
//! `GET /api/v1/traces` (span search, newest first, in pages).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};
use vigil_store::{EventKind, EventQuery, SpanQuery, SpanRecord};

use crate::error::{ApiError, BadParameter};
use crate::logs::log_json;
use crate::openapi::{CURSOR, Endpoint, FROM, LIMIT, Method, Param, TO};
use crate::params::hex_id;
use crate::server::{Answer, AppState, Call, Incoming};

pub const TRACE: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/traces/{trace_id}",
    summary: "One trace: its spans as a tree, with durations, status and attributes, and its log records in time order",
    path_params: &[("trace_id", "32 hex digits")],
    params: &[],
    body: None,
    role: None,
};

pub const SEARCH: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/traces",
    summary: "Spans by service, operation, minimum duration, error and attributes in a time range (default the last hour), newest first",
    path_params: &[],
    params: &[
        FROM,
        TO,
        Param {
            name: "service",
            kind: "string",
            required: false,
            description: "The span's service.",
        },
        Param {
            name: "operation",
            kind: "string",
            required: false,
            description: "The span name.",
        },
        Param {
            name: "min_duration",
            kind: "string",
            required: false,
            description: "Only spans at least this long: ms, or with a unit (1s).",
        },
        Param {
            name: "error",
            kind: "boolean",
            required: false,
            description: "true: only failed spans; false: only the others.",
        },
        Param {
            name: "attributes",
            kind: "string",
            required: false,
            description: "Attributes (resource or span) the span has: key=\"value\",….",
        },
        Param {
            name: "root",
            kind: "boolean",
            required: false,
            description: "true: only spans without a parent (whole requests).",
        },
        LIMIT,
        CURSOR,
    ],
    body: None,
    role: None,
};

/// Deeper spans are listed without their children: a bound on the answer's
/// nesting whatever parent ids a trace holds.
const MAX_DEPTH: usize = 256;
/// The most log records a trace is shown with.
const MAX_TRACE_LOGS: usize = 1_000;
const HOUR_NS: u64 = 3_600 * 1_000_000_000;

pub async fn trace(
    State(state): State<Arc<AppState>>,
    Path(trace_id): Path<String>,
    incoming: Incoming,
) -> Answer {
    let call = state.begin(&TRACE, &incoming)?;
    let trace_id = hex_id(&trace_id, 32)
        .ok_or_else(|| BadParameter::new("trace_id", "must be 32 hex digits"))?;
    let spans = state
        .within(async {
            Ok(call
                .reader
                .store
                .trace(&call.reader.tenant, &trace_id)
                .await?)
        })
        .await?;
    if spans.is_empty() {
        return Err(ApiError::NotFound(format!("no trace {trace_id}")));
    }
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.start_ns + s.duration_ns)
        .max()
        .unwrap_or(0);
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: HashMap<&str, Vec<&SpanRecord>> = HashMap::new();
    let mut roots = Vec::new();
    for span in &spans {
        let parent = span.parent_span_id.as_str();
        if parent.is_empty() || parent == span.span_id || !ids.contains(parent) {
            roots.push(span);
        } else {
            children.entry(parent).or_default().push(span);
        }
    }
    let mut placed = HashSet::new();
    let roots: Vec<Value> = roots
        .into_iter()
        .map(|root| tree(root, &children, &mut placed, 0))
        .collect();
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    // Its log records, in time order: those within an hour of its spans.
    let mut logs = EventQuery::new(
        call.reader.tenant.clone(),
        EventKind::Log,
        start.saturating_sub(HOUR_NS),
        end.saturating_add(HOUR_NS),
    );
    logs.trace_id = Some(trace_id.clone());
    logs.limit = MAX_TRACE_LOGS;
    let mut logs = state
        .within(async { Ok(call.reader.store.events(&logs).await?) })
        .await?;
    logs.reverse();
    Ok(Json(json!({
        "trace_id": trace_id,
        "start": ms(start),
        "duration_ms": (end - start) as f64 / 1e6,
        "span_count": spans.len(),
        "error_count": spans.iter().filter(|s| s.status_code == 2).count(),
        "services": services,
        "roots": roots,
        "logs": logs.iter().map(log_json).collect::<Vec<_>>(),
    })))
}

/// A span and, nested, its children in start order.
fn tree<'a>(
    span: &'a SpanRecord,
    children: &HashMap<&str, Vec<&'a SpanRecord>>,
    placed: &mut HashSet<&'a str>,
    depth: usize,
) -> Value {
    let mut value = span_json(span);
    placed.insert(&span.span_id);
    let mut nested = Vec::new();
    if depth < MAX_DEPTH {
        for &child in children.get(span.span_id.as_str()).into_iter().flatten() {
            if !placed.contains(child.span_id.as_str()) {
                nested.push(tree(child, children, placed, depth + 1));
            }
        }
    }
    value["children"] = Value::Array(nested);
    value
}

/// Unix ns as ms, exact to the µs: `ns as f64 / 1e6` is not, past 2^53 ns.
pub fn ms(ns: u64) -> f64 {
    (ns / 1_000_000) as f64 + (ns % 1_000_000) as f64 / 1e6
}

/// One span as the API shows it: times in unix ms, durations in ms.
pub fn span_json(span: &SpanRecord) -> Value {
    let attributes: Map<String, Value> = span
        .attributes
        .iter()
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect();
    json!({
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "service": span.service,
        "operation": span.name,
        "kind": span.kind,
        "start": ms(span.start_ns),
        "duration_ms": span.duration_ns as f64 / 1e6,
        "status": match span.status_code {
            1 => "ok",
            2 => "error",
            _ => "unset",
        },
        "status_message": span.status_message,
        "attributes": attributes,
    })
}

pub async fn search(State(state): State<Arc<AppState>>, incoming: Incoming) -> Answer {
    let call = state.begin(&SEARCH, &incoming)?;
    let params = &call.params;
    let mut query = span_query(&call, 3_600_000)?;
    query.service = params.text("service");
    query.name = params.text("operation");
    query.min_duration_ns = params
        .duration_ms("min_duration")?
        .map(|ms| ms.saturating_mul(1_000_000));
    query.error = params.flag("error")?;
    query.root_only = params.flag("root")?.unwrap_or(false);
    query.attributes = params.equalities("attributes")?;
    let spans = state
        .within(async { Ok(call.reader.store.search_spans(&query).await?) })
        .await?;
    Ok(Json(json!({
        "spans": spans.iter().map(span_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor(&spans, query.limit),
    })))
}

/// A span search of the caller's tenant over the `from`/`to` range (by
/// default the `default_ms` before now), with `limit` and `cursor` applied.
pub fn span_query(call: &Call, default_ms: u64) -> Result<SpanQuery, BadParameter> {
    let params = &call.params;
    let (from_ms, to_ms) = params.range(default_ms)?;
    let mut query = SpanQuery::new(
        call.reader.tenant.clone(),
        from_ms.saturating_mul(1_000_000),
        to_ms.saturating_mul(1_000_000),
    );
    query.limit = params.number("limit", 1, 1000)?.map_or(100, |n| n as usize);
    query.before = params.get("cursor").map(parse_cursor).transpose()?;
    Ok(query)
}

/// The cursor continuing after a full page.
pub fn next_cursor(spans: &[SpanRecord], limit: usize) -> Option<String> {
    (spans.len() == limit)
        .then(|| spans.last())
        .flatten()
        .map(|last| format!("{}-{}", last.start_ns, last.span_id))
}

fn parse_cursor(text: &str) -> Result<(u64, String), BadParameter> {
    text.split_once('-')
        .and_then(|(start, span)| Some((start.parse().ok()?, hex_id(span, 16)?)))
        .ok_or_else(|| BadParameter::new("cursor", "not a cursor this API returned"))
}
