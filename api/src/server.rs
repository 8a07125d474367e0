//! The HTTP server: routes, and what every request goes through — its
//! token, its parameters, the query timeout and the self-metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::extract::{MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use vigil_config::{CanaryConfig, Config, Role, SloConfig};
use vigil_domain::model::Rollup;
use vigil_domain::shutdown::Shutdown;
use vigil_domain::tenant::TenantId;
use vigil_store::Store;
use vigil_tls::server::{HTTP_1_1, Listener};

use crate::auth::{Auth, Caller};
use crate::cache::Cache;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::openapi::{self, Endpoint};
use crate::params::Params;
use crate::reader::Reader;
use crate::{
    alerts, client_telemetry, console, crashes, localize, logs, playbooks, probes, prometheus,
    query_path, releases, services, silences, slo, traces,
};
use vigil_domain::signal::Signal;

/// Every `/api/v1` path, in the order the OpenAPI document lists them.
const ENDPOINTS: [&Endpoint; 23] = [
    &services::ENDPOINT,
    &query_path::ENDPOINT,
    &localize::ENDPOINT,
    &traces::TRACE,
    &traces::SEARCH,
    &logs::ENDPOINT,
    &crashes::LIST,
    &crashes::GROUP,
    &slo::ENDPOINT,
    &client_telemetry::ENDPOINT,
    &probes::PROBES,
    &probes::RUNS,
    &releases::HEALTH,
    &alerts::ALERTS,
    &alerts::HISTORY,
    &silences::LIST,
    &silences::CREATE,
    &silences::EXPIRE,
    &playbooks::PLAYBOOKS,
    &playbooks::RUNS,
    &playbooks::RUN,
    &playbooks::APPROVE,
    &playbooks::PAUSE,
];

/// Why the API could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("api.tls: {0}")]
    Tls(#[from] vigil_tls::TlsError),
    #[error("the dashboard API server failed: {0}")]
    Serve(String),
}

/// A running API server.
pub struct Api {
    address: SocketAddr,
    task: JoinHandle<Result<(), ApiServerError>>,
}

impl Api {
    /// Binds `api.listen` and serves until `shutdown` is set off;
    /// [`Api::wait`] for that.
    pub async fn start(
        config: &Config,
        store: Arc<dyn Store>,
        shutdown: Shutdown,
    ) -> Result<Api, ApiServerError> {
        let listen = config.api.listen;
        let bind_error = |source| ApiServerError::Bind {
            address: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        let listener = Listener::new(listener, config.api.tls.as_ref(), &[HTTP_1_1])?;
        let flush_s = config.aggregator.flush_interval_ms.div_ceil(1000);
        let metrics = Metrics::default();
        let state = Arc::new(AppState {
            store,
            auth: Auth::new(&config.api),
            cache: Arc::new(Cache::new(config.api.cache_bytes, metrics.windows())),
            metrics,
            slos: config.slos.clone(),
            canary: config.canary.clone(),
            timeout: Duration::from_millis(config.api.query_timeout_ms),
            max_points: config.api.max_points,
            settle_s: config.aggregator.allowed_lateness_s + flush_s + SETTLE_MARGIN_S,
        });
        let api = router(Arc::clone(&state));
        let router = api
            .clone()
            .merge(console::routes(state, api, config.api.tls.is_some()));
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.wait().await })
                .await
                .map_err(|e| ApiServerError::Serve(e.to_string()))
        });
        tracing::info!(%address, tls = config.api.tls.is_some(), "dashboard API listening");
        Ok(Api { address, task })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Returns when the server has drained and stopped.
    pub async fn wait(self) -> Result<(), ApiServerError> {
        self.task
            .await
            .map_err(|e| ApiServerError::Serve(e.to_string()))?
    }
}

/// Added to the aggregator's lateness and flush interval before a window
/// is taken as closed and stored.
const SETTLE_MARGIN_S: u64 = 2;

/// What every handler shares.
pub struct AppState {
    store: Arc<dyn Store>,
    auth: Auth,
    cache: Arc<Cache>,
    metrics: Metrics,
    pub slos: Vec<SloConfig>,
    pub canary: CanaryConfig,
    timeout: Duration,
    max_points: usize,
    settle_s: u64,
}

/// What [`AppState::begin`] reads of a request: its token and its query
/// string.
pub struct Incoming {
    authorization: Option<String>,
    query: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Incoming {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Incoming {
            authorization: parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            query: parts.uri.query().map(str::to_owned),
        })
    }
}

/// One authenticated request: its parameters, and the store as its tenant
/// reads it.
pub struct Call {
    pub params: Params,
    pub reader: Reader,
    /// When the request came, unix ms: what `now` means in it.
    pub now_ms: u64,
}

pub type Answer = Result<Json<Value>, ApiError>;

impl AppState {
    /// Who the tokens stand for.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Authenticates a request to `endpoint`, checks that the token's role
    /// may call it, and checks its parameters (after the token, so an
    /// unknown caller learns nothing of them).
    pub fn begin(&self, endpoint: &Endpoint, incoming: &Incoming) -> Result<Call, ApiError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let params = Params::parse(incoming.query.as_deref(), &endpoint.param_names(), now_ms);
        let tenant = params.as_ref().ok().and_then(|p| p.get("tenant"));
        let caller = self
            .auth
            .caller(incoming.authorization.as_deref(), tenant)?;
        if caller.role < endpoint.role() {
            let needs = if endpoint.role() == Role::Admin {
                "an admin token"
            } else {
                "an editor or admin token"
            };
            return Err(ApiError::Forbidden(format!(
                "this token's role does not allow it; {} {} needs {needs}",
                endpoint.method.as_str().to_uppercase(),
                endpoint.path
            )));
        }
        let params = params?;
        let reader = self.reader(caller.tenant.clone(), now.as_secs());
        Ok(Call {
            params,
            reader,
            now_ms,
        })
    }

    /// How a request of `tenant` at `now_s` reads the store.
    pub fn reader(&self, tenant: TenantId, now_s: u64) -> Reader {
        Reader {
            store: Arc::clone(&self.store),
            cache: Arc::clone(&self.cache),
            tenant,
            now_s,
            settle_s: self.settle_s,
            max_points: self.max_points,
        }
    }

    /// The caller of a request with these credentials, reading `tenant`
    /// when given (any for an admin token), else its own.
    pub fn caller(
        &self,
        authorization: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<Caller, ApiError> {
        self.auth.caller(authorization, tenant)
    }

    /// The store, for paths that read it outside [`AppState::begin`].
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Runs a request's reads within the query timeout.
    pub async fn within<T>(
        &self,
        work: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ApiError::Limit {
                limit: "api.query_timeout_ms",
                message: format!(
                    "the query ran longer than {} ms and was stopped; narrow the range or the selection",
                    self.timeout.as_millis()
                ),
            })?
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/api/v1/openapi.json", get(openapi_document))
        .route(services::ENDPOINT.path, get(services::handler))
        .route(query_path::ENDPOINT.path, get(query_path::handler))
        .route(localize::ENDPOINT.path, get(localize::handler))
        .route(traces::TRACE.path, get(traces::trace))
        .route(traces::SEARCH.path, get(traces::search))
        .route(logs::ENDPOINT.path, get(logs::handler))
        .route(crashes::LIST.path, get(crashes::list))
        .route(crashes::GROUP.path, get(crashes::group))
        .route(slo::ENDPOINT.path, get(slo::handler))
        .route(
            client_telemetry::ENDPOINT.path,
            get(client_telemetry::handler),
        )
        .route(probes::PROBES.path, get(probes::probes))
        .route(probes::RUNS.path, get(probes::runs))
        .route(releases::HEALTH.path, get(releases::health))
        .route(alerts::ALERTS.path, get(alerts::alerts))
        .route(alerts::HISTORY.path, get(alerts::history))
        .route(
            silences::LIST.path,
            get(silences::list).post(silences::create),
        )
        .route(silences::EXPIRE.path, delete(silences::expire))
        .route(playbooks::PLAYBOOKS.path, get(playbooks::playbooks))
        .route(playbooks::RUNS.path, get(playbooks::runs))
        .route(playbooks::RUN.path, get(playbooks::run))
        .route(playbooks::APPROVE.path, post(playbooks::approve))
        .route(playbooks::PAUSE.path, post(playbooks::pause))
        .nest("/prometheus/api/v1", prometheus::routes())
        .fallback(|| async { ApiError::NotFound("no such path; see /api/v1/openapi.json".into()) })
        .layer(middleware::from_fn_with_state(Arc::clone(&state), count))
        .with_state(state)
}

async fn count(
    State(state): State<Arc<AppState>>,
    path: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let response = next.run(request).await;
    let path = path.as_ref().map_or("unmatched", MatchedPath::as_str);
    state
        .metrics
        .answered(path, response.status().as_u16(), start.elapsed());
    response
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.within(async { Ok(state.store.ping().await?) }).await {
        Ok(()) => "ready".into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {error}"),
        )
            .into_response(),
    }
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn openapi_document() -> Json<Value> {
    Json(openapi::document(&ENDPOINTS))
}

/// Seconds `[from, to)` of a range in milliseconds, widened to whole 10 s.
pub fn seconds((from_ms, to_ms): (u64, u64)) -> (u64, u64) {
    let from_s = from_ms / 1000;
    let to_s = to_ms.div_ceil(1000);
    (from_s - from_s % 10, to_s.div_ceil(10) * 10)
}

/// The JSON of a range in unix milliseconds.
pub fn range_json(from_s: u64, to_s: u64) -> Value {
    json!({"from": from_s * 1000, "to": to_s * 1000})
}

/// Requests, failures and latency of a merged rollup over `seconds`.
pub fn stats_json(rollup: &Rollup, seconds: u64) -> Value {
    let read = |signal: Signal| signal.value(rollup, seconds.max(1));
    json!({
        "requests": rollup.values.count(),
        "errors": rollup.errors,
        "error_ratio": read(Signal::ErrorRatio),
        "availability": read(Signal::Availability),
        "rate_per_s": read(Signal::Rate),
        "mean_ms": read(Signal::Mean),
        "p50_ms": read(Signal::Quantile(0.5)),
        "p90_ms": read(Signal::Quantile(0.9)),
        "p99_ms": read(Signal::Quantile(0.99)),
    })
}
