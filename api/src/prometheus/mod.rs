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
//! `query` and `query_range` evaluate PromQL over the rollups
//! (`vigil_promql`, reading through `query.rs`); the catalogue paths
//! (`status/buildinfo`, `labels`, `label/{name}/values`, `series`,
//! `metadata`) answer from the series catalogue, with `match[]` selectors
//! parsed by `promql-parser`. Every series of Vigil is seen under Prometheus
//! names: see `promql/src/names.rs`.

mod query;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use promql_parser::label::Matchers;
use promql_parser::parser::{self, Expr};
use serde_json::{Value, json};
use vigil_store::{CATALOGUE_REFRESH_S, CatalogueEntry};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::parse_time;
use crate::server::AppState;
use vigil_domain::model::Kind;
use vigil_domain::tenant::TenantId;
use vigil_promql::names::{Labels, prometheus_series};
use vigil_promql::{matchers, matches};

/// The paths, to nest under `/prometheus/api/v1`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/query", get(query::instant).post(query::instant))
        .route("/query_range", get(query::range).post(query::range))
        .route("/status/buildinfo", get(buildinfo))
        .route("/labels", get(labels).post(labels))
        .route("/label/{name}/values", get(label_values))
        .route("/series", get(series).post(series))
        .route("/metadata", get(metadata))
}

/// The paths of [`routes`] in the OpenAPI document (under
/// `/prometheus/api/v1`): parameters as Prometheus takes them, in the query
/// string or (for POST) a form body; answers in Prometheus's envelope.
pub fn openapi_paths() -> Vec<(String, Value)> {
    let time = "RFC 3339 or unix seconds (fractions allowed)";
    let param = |name: &str, required: bool, description: &str| {
        json!({"name": name, "in": "query", "required": required,
               "description": description, "schema": {"type": "string"}})
    };
    // What the catalogue paths select by.
    let selecting = || {
        vec![
            param(
                "match[]",
                false,
                "a series selector; repeated for several (any of them)",
            ),
            param("start", false, time),
            param("end", false, time),
        ]
    };
    let answers = json!({
        "200": {"description": "{\"status\": \"success\", \"data\": …}", "content": {"application/json": {}}},
        "400": {"description": "bad_data: an unparsable expression or parameter, an unsupported function (named)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PrometheusError"}}}},
        "401": {"description": "No token (bearer, or basic auth's password), or an unknown one.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PrometheusError"}}}},
        "422": {"description": "execution: the query cannot be answered (duplicate series, api.max_points)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PrometheusError"}}}},
        "503": {"description": "unavailable: the store is; retry later.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PrometheusError"}}}},
    });
    let operation = |summary: &str, parameters: Vec<Value>| {
        json!({"summary": summary, "tags": ["prometheus"], "security": [{"bearer": []}],
               "parameters": parameters, "responses": answers})
    };
    let both = |summary: &str, parameters: Vec<Value>| {
        let operation = operation(summary, parameters);
        json!({"get": operation, "post": operation})
    };
    let at = |path: &str| format!("/prometheus/api/v1{path}");
    vec![
        (
            at("/query"),
            both(
                "PromQL at one instant (resultType vector, scalar or string)",
                vec![
                    param("query", true, "a PromQL expression"),
                    param("time", false, &format!("{time}; default now")),
                ],
            ),
        ),
        (
            at("/query_range"),
            both(
                "PromQL at each step of a range (resultType matrix)",
                vec![
                    param("query", true, "a PromQL expression"),
                    param("start", true, time),
                    param("end", true, time),
                    param(
                        "step",
                        true,
                        "seconds or a duration (15s, 1m); at most 11,000 steps",
                    ),
                ],
            ),
        ),
        (
            at("/series"),
            both("The series passing any match[] selector", selecting()),
        ),
        (at("/labels"), both("Label names", selecting())),
        (
            at("/label/{name}/values"),
            json!({"get": operation(
                "The values of one label",
                [json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}})]
                    .into_iter()
                    .chain(selecting())
                    .collect(),
            )}),
        ),
        (
            at("/metadata"),
            json!({"get": operation(
                "Metric families with their type",
                selecting(),
            )}),
        ),
        (
            at("/status/buildinfo"),
            json!({"get": operation("The version Grafana reads", Vec::new())}),
        ),
    ]
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

/// A request of the Prometheus API: who calls (checked from the headers
/// before the body is read) and its parameters, from the query string and
/// (for POST) the form body; `match[]` may repeat.
struct Asked {
    caller: Caller,
    form: Form,
}

impl FromRequest<Arc<AppState>> for Asked {
    type Rejection = PromError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, PromError> {
        let (parts, body) = request.into_parts();
        // Mimir's header names the tenant to read (an admin token reads any).
        let tenant = parts
            .headers
            .get("x-scope-orgid")
            .and_then(|v| v.to_str().ok());
        let caller = state.caller(authorization(&parts.headers).as_deref(), tenant)?;
        let query = parts.uri.query().unwrap_or("").to_owned();
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|rejection| PromError {
                status: rejection.status(),
                kind: "bad_data",
                message: rejection.body_text(),
            })?;
        let form = Form(
            form_urlencoded::parse(query.as_bytes())
                .chain(form_urlencoded::parse(&body))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        );
        Ok(Asked { caller, form })
    }
}

/// A request's parameters.
struct Form(Vec<(String, String)>);

impl Form {
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A time (unix seconds with a fraction, or RFC 3339) in unix seconds.
    fn time(&self, name: &str) -> Result<Option<u64>, PromError> {
        Ok(self.time_ms(name)?.map(|ms| (ms.max(0) / 1000) as u64))
    }

    /// A time (unix seconds with a fraction, or RFC 3339) in unix
    /// milliseconds.
    fn time_ms(&self, name: &str) -> Result<Option<i64>, PromError> {
        let Some(text) = self.all(name).next().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if let Ok(seconds) = text.parse::<f64>()
            && seconds.is_finite()
        {
            return Ok(Some((seconds * 1000.0).round() as i64));
        }
        parse_time(text, 0)
            .and_then(|ms| i64::try_from(ms).ok())
            .map(Some)
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
            Ok(Expr::VectorSelector(selector)) => Ok(matchers(&selector)),
            Ok(_) => Err(PromError::bad_data(format!(
                "invalid parameter \"match[]\": {text:?} is not a series selector"
            ))),
            Err(error) => Err(PromError::bad_data(format!(
                "invalid parameter \"match[]\": {error}"
            ))),
        })
        .collect()
}

/// The caller's series seen between `start` and `end` (unix seconds), as
/// Prometheus series passing any of the `match[]` selectors (all when none).
async fn selected(state: &AppState, asked: &Asked) -> Result<Vec<Labels>, PromError> {
    let form = &asked.form;
    let selectors = selectors(form)?;
    let start = form.time("start")?.unwrap_or(0);
    let end = form.time("end")?.unwrap_or(u64::MAX);
    let catalogue = seen(state, &asked.caller.tenant, start, end).await?;
    let mut found = BTreeSet::new();
    for entry in &catalogue {
        for named in prometheus_series(&entry.series) {
            let labels = named.labels;
            if named.listed
                && (selectors.is_empty() || selectors.iter().any(|m| matches(m, &labels)))
            {
                found.insert(labels);
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// The catalogue of `tenant`'s series seen between `start` and `end` (unix
/// seconds).
async fn seen(
    state: &AppState,
    tenant: &TenantId,
    start: u64,
    end: u64,
) -> Result<Vec<CatalogueEntry>, PromError> {
    seen_in(state, tenant, start, end, &[(None, None)]).await
}

/// [`seen`] of the parts of the catalogue `scopes` name: a kind's series (of
/// one service), or every series for `(None, _)`.
async fn seen_in(
    state: &AppState,
    tenant: &TenantId,
    start: u64,
    end: u64,
    scopes: &[(Option<Kind>, Option<String>)],
) -> Result<Vec<CatalogueEntry>, PromError> {
    let mut catalogue = Vec::new();
    for (kind, service) in scopes {
        let read = state.store().series(tenant, *kind, service.as_deref());
        catalogue.extend(state.within(async { Ok(read.await?) }).await?);
    }
    // A series may have been seen up to CATALOGUE_REFRESH_S after its
    // catalogue entry says.
    catalogue.retain(|e| {
        e.first_seen_s <= end && e.last_seen_s.saturating_add(CATALOGUE_REFRESH_S) >= start
    });
    Ok(catalogue)
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

async fn labels(State(state): State<Arc<AppState>>, asked: Asked) -> Result<Response, PromError> {
    let series = selected(&state, &asked).await?;
    let names: BTreeSet<&String> = series.iter().flat_map(BTreeMap::keys).collect();
    Ok(success(json!(names)))
}

async fn label_values(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    asked: Asked,
) -> Result<Response, PromError> {
    let series = selected(&state, &asked).await?;
    let values: BTreeSet<&String> = series.iter().filter_map(|s| s.get(&name)).collect();
    Ok(success(json!(values)))
}

async fn series(State(state): State<Arc<AppState>>, asked: Asked) -> Result<Response, PromError> {
    if asked.form.all("match[]").next().is_none() {
        return Err(PromError::bad_data("no match[] parameter provided"));
    }
    Ok(success(json!(selected(&state, &asked).await?)))
}

async fn metadata(State(state): State<Arc<AppState>>, asked: Asked) -> Result<Response, PromError> {
    let series = selected(&state, &asked).await?;
    let mut metadata = BTreeMap::new();
    for name in series.iter().filter_map(|s| s.get("__name__")) {
        let kind = if name.ends_with("_total") {
            "counter"
        } else if ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
        {
            "histogram"
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
