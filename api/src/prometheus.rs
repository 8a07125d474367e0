//! The Prometheus HTTP API under `/prometheus/api/v1`, as Mimir and
//! VictoriaMetrics serve it, so that Prometheus clients (promtool, Grafana's
//! Prometheus data source) read Vigil: the same tokens and tenants as the
//! rest of the API, sent as a bearer token or as the password of HTTP basic
//! auth (any user name); an admin token reads the tenant named by an
//! `X-Scope-OrgID` header, as Mimir's clients send it. Answers have
//! Prometheus's shapes:
//! `{"status": "success", "data": …}`, or `{"status": "error", "errorType":
//! …, "error": …}` with its status code.
//!
//! These paths answer from the series catalogue: `status/buildinfo`,
//! `labels`, `label/{name}/values`, `series` and `metadata`, with `match[]`
//! selectors parsed by `promql-parser`. Every series of Vigil is seen under
//! Prometheus names ([`prometheus_series`]):
//!
//! | Vigil series | Prometheus series | labels |
//! |---|---|---|
//! | metric `m` of service `s` | `m` (dots as `_`) | `job="s"`, its attributes |
//! | span `n` of service `s` | `vigil_span_requests_total`, `vigil_span_errors_total`, `vigil_span_duration_seconds_sum`, `_count` | `service="s"`, `span_name="n"`, `span_kind`, `status`, `vigil_unit`… |
//! | probe `p` | `vigil_probe_runs_total`, `vigil_probe_failures_total`, `vigil_probe_duration_seconds_sum`, `_count` | `service`, `probe="p"`, `vigil_probe_step`, `vigil_probe_location`, `status` |
//! | client signal `client.x` of app `a` | `vigil_client_x_total`, `vigil_client_x_sum` | `app="a"`, its dimensions |
//!
//! Label names keep what Prometheus allows, the rest as `_`
//! (`vigil.unit` → `vigil_unit`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use promql_parser::label::Matchers;
use promql_parser::parser::{self, Expr};
use serde_json::{Value, json};
use vigil_domain::model::{Kind, SeriesKey};
use vigil_domain::prometheus::{label_name, metric_name};
use vigil_store::{CATALOGUE_REFRESH_S, CatalogueEntry};

use crate::error::ApiError;
use crate::params::parse_time;
use crate::server::AppState;

/// A Prometheus series: its labels, `__name__` among them.
pub type Labels = BTreeMap<String, String>;

/// The paths, to nest under `/prometheus/api/v1`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/status/buildinfo", get(buildinfo))
        .route("/labels", get(labels).post(labels))
        .route("/label/{name}/values", get(label_values))
        .route("/series", get(series).post(series))
        .route("/metadata", get(metadata))
}

/// Why a request failed, as Prometheus says it.
struct PromError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl PromError {
    fn bad_data(message: impl Into<String>) -> Self {
        PromError {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_data",
            message: message.into(),
        }
    }
}

impl From<ApiError> for PromError {
    fn from(error: ApiError) -> Self {
        let status = error.status();
        let kind = match status {
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::INTERNAL_SERVER_ERROR => "internal",
            StatusCode::UNPROCESSABLE_ENTITY => "execution",
            _ => "bad_data",
        };
        PromError {
            status,
            kind,
            message: error.to_string(),
        }
    }
}

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.kind, "error": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// A request's parameters, from its query string and (for POST) its form
/// body; `match[]` may repeat.
struct Form(Vec<(String, String)>);

impl Form {
    fn read(query: Option<&str>, body: &[u8]) -> Form {
        let pairs = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .chain(form_urlencoded::parse(body))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Form(pairs)
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A time (unix seconds with a fraction, or RFC 3339) in unix seconds.
    fn time(&self, name: &str) -> Result<Option<u64>, PromError> {
        let Some(text) = self.all(name).next().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if let Ok(seconds) = text.parse::<f64>() {
            return Ok(Some(seconds.max(0.0) as u64));
        }
        parse_time(text, 0)
            .map(|ms| Some(ms / 1_000))
            .ok_or_else(|| {
                PromError::bad_data(format!(
                    "invalid parameter {name:?}: cannot parse {text:?} to a valid timestamp"
                ))
            })
    }
}

/// The `match[]` selectors, each a set of matchers.
fn selectors(form: &Form) -> Result<Vec<Matchers>, PromError> {
    form.all("match[]")
        .map(|text| match parser::parse(text) {
            Ok(Expr::VectorSelector(selector)) => {
                let mut matchers = selector.matchers;
                if let Some(name) = selector.name {
                    matchers.matchers.push(promql_parser::label::Matcher::new(
                        promql_parser::label::MatchOp::Equal,
                        "__name__",
                        &name,
                    ));
                }
                Ok(matchers)
            }
            Ok(_) => Err(PromError::bad_data(format!(
                "invalid parameter \"match[]\": {text:?} is not a series selector"
            ))),
            Err(error) => Err(PromError::bad_data(format!(
                "invalid parameter \"match[]\": {error}"
            ))),
        })
        .collect()
}

/// Whether `labels` pass every matcher (an absent label is the empty
/// string, as in Prometheus).
fn matches(matchers: &Matchers, labels: &Labels) -> bool {
    matchers
        .matchers
        .iter()
        .all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
        && (matchers.or_matchers.is_empty()
            || matchers.or_matchers.iter().any(|group| {
                group
                    .iter()
                    .all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
            }))
}

/// The Prometheus series a Vigil series is seen as (see the module's table).
pub fn prometheus_series(key: &SeriesKey) -> Vec<Labels> {
    let mut labels: Labels = key
        .labels()
        .iter()
        .map(|(k, v)| (label_name(k), v.clone()))
        .collect();
    let (names, own): (Vec<String>, Vec<(&str, String)>) = match key.kind {
        Kind::Metric => (
            vec![metric_name(&key.name)],
            vec![("job", key.service.clone())],
        ),
        Kind::Span => (
            counted("span", "requests", "errors"),
            vec![
                ("service", key.service.clone()),
                ("span_name", key.name.clone()),
            ],
        ),
        Kind::Probe => (
            counted("probe", "runs", "failures"),
            vec![
                ("service", key.service.clone()),
                ("probe", key.name.clone()),
            ],
        ),
        Kind::Client => {
            let base = format!("vigil_{}", metric_name(&key.name));
            (
                vec![format!("{base}_total"), format!("{base}_sum")],
                vec![("app", key.service.clone())],
            )
        }
    };
    for (name, value) in own {
        labels.insert(name.to_owned(), value);
    }
    names
        .into_iter()
        .map(|name| {
            let mut series = labels.clone();
            series.insert("__name__".to_owned(), name);
            series
        })
        .collect()
}

/// The names of a `vigil_<kind>` family that counts `events`, `failures`
/// among them, and their duration.
fn counted(kind: &str, events: &str, failures: &str) -> Vec<String> {
    vec![
        format!("vigil_{kind}_{events}_total"),
        format!("vigil_{kind}_{failures}_total"),
        format!("vigil_{kind}_duration_seconds_sum"),
        format!("vigil_{kind}_duration_seconds_count"),
    ]
}

/// The caller's series seen between `start` and `end` (unix seconds), as
/// Prometheus series passing any of the `match[]` selectors (all when none).
async fn selected(
    state: &AppState,
    headers: &HeaderMap,
    form: &Form,
) -> Result<Vec<Labels>, PromError> {
    // Mimir's header names the tenant to read (an admin token reads any).
    let tenant = headers.get("x-scope-orgid").and_then(|v| v.to_str().ok());
    let caller = state.caller(authorization(headers).as_deref(), tenant)?;
    let selectors = selectors(form)?;
    let start = form.time("start")?.unwrap_or(0);
    let end = form.time("end")?.unwrap_or(u64::MAX);
    let catalogue = state
        .within(async { Ok(state.store().series(&caller.tenant, None, None).await?) })
        .await?;
    let mut found = BTreeSet::new();
    // A series may have been seen up to CATALOGUE_REFRESH_S after its
    // catalogue entry says.
    let seen = |e: &&CatalogueEntry| {
        e.first_seen_s <= end && e.last_seen_s.saturating_add(CATALOGUE_REFRESH_S) >= start
    };
    for entry in catalogue.iter().filter(seen) {
        for labels in prometheus_series(&entry.series) {
            if selectors.is_empty() || selectors.iter().any(|m| matches(m, &labels)) {
                found.insert(labels);
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// The credentials of a request: a bearer token, or basic auth whose
/// password is the token, given on as a bearer token.
fn authorization(headers: &HeaderMap) -> Option<String> {
    let header = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let Some((scheme, encoded)) = header.split_once(' ') else {
        return Some(header.to_owned());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Some(header.to_owned());
    }
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, token) = text.split_once(':')?;
    Some(format!("Bearer {token}"))
}

async fn buildinfo() -> Response {
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "application": "Vigil",
    }))
}

async fn labels(
    State(state): State<Arc<AppState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PromError> {
    let form = Form::read(uri.query(), &body);
    let series = selected(&state, &headers, &form).await?;
    let names: BTreeSet<&String> = series.iter().flat_map(BTreeMap::keys).collect();
    Ok(success(json!(names)))
}

async fn label_values(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, PromError> {
    let form = Form::read(uri.query(), &[]);
    let series = selected(&state, &headers, &form).await?;
    let values: BTreeSet<&String> = series.iter().filter_map(|s| s.get(&name)).collect();
    Ok(success(json!(values)))
}

async fn series(
    State(state): State<Arc<AppState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PromError> {
    let form = Form::read(uri.query(), &body);
    if form.all("match[]").next().is_none() {
        return Err(PromError::bad_data("no match[] parameter provided"));
    }
    Ok(success(json!(selected(&state, &headers, &form).await?)))
}

async fn metadata(
    State(state): State<Arc<AppState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, PromError> {
    let form = Form::read(uri.query(), &[]);
    let series = selected(&state, &headers, &form).await?;
    let mut metadata = BTreeMap::new();
    for name in series.iter().filter_map(|s| s.get("__name__")) {
        let kind = if name.ends_with("_total") {
            "counter"
        } else if name.ends_with("_sum") || name.ends_with("_count") {
            "summary"
        } else {
            "gauge"
        };
        metadata.insert(
            name.clone(),
            json!([{"type": kind, "help": "", "unit": ""}]),
        );
    }
    Ok(success(json!(metadata)))
}
