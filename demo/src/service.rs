//! The demo payment service that the demo and the tests probe: create an
//! order, pay it, read it, refund it, over HTTP/JSON, instrumented with the
//! OpenTelemetry SDK (OTLP/HTTP to a collector) so its server spans join the
//! trace of whoever sent a W3C `traceparent`.
//!
//! - `POST /orders` `{"amount": 1250, "currency": "EUR"}` → 201 the order
//! - `POST /orders/{id}/pay` → 200 `{"status": "paid", …}` (an
//!   `idempotency-key` header makes a repeat answer the same)
//! - `GET /orders/{id}` → 200 the order
//! - `POST /orders/{id}/refund` → 200 `{"status": "refunded"}` (a paid
//!   order) or `"cancelled"` (an unpaid one)
//!
//! Faults are injected at run time through `/admin/faults`: `POST` adds one
//! (`route`: create, pay, query or refund, default all; `unit`, `version`,
//! `cohort`: which instances it applies to, default all; `error_rate` 0..1;
//! `latency_ms`; `status`, default 503), `GET` lists them, `DELETE` clears
//! them. An instance ignores faults aimed at another unit, version or
//! cohort, so the same request can go to every instance. Errors are spread
//! evenly: a rate of 0.25 fails exactly every fourth matching request.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use vigil_domain::shutdown::Shutdown;

/// Orders kept; the oldest are forgotten beyond this.
const MAX_ORDERS: usize = 100_000;

/// One instance of the demo service.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    pub service_name: String,
    /// `vigil.unit`: the data-center unit it runs in.
    pub unit: String,
    /// `service.version`.
    pub version: String,
    /// `vigil.cohort`: stable, canary or baseline.
    pub cohort: String,
    /// The collector's OTLP/HTTP address; `None` exports nothing.
    pub otlp_endpoint: Option<String>,
    /// The ingest token spans are exported with.
    pub token: Option<String>,
}

/// A running instance.
pub struct DemoService {
    address: SocketAddr,
    task: JoinHandle<()>,
    provider: SdkTracerProvider,
}

impl DemoService {
    /// Binds `options.listen` and serves until `shutdown`.
    pub async fn start(options: DemoOptions, shutdown: Shutdown) -> std::io::Result<DemoService> {
        let listener = TcpListener::bind(options.listen).await?;
        let address = listener.local_addr()?;
        let provider = tracer_provider(&options).await?;
        let state = Arc::new(Demo {
            tracer: provider.tracer("vigil-demo-payments"),
            options,
            orders: Mutex::new(Orders::default()),
            faults: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });
        let api = Router::new()
            .route("/orders", post(create))
            .route("/orders/{id}", get(query))
            .route("/orders/{id}/pay", post(pay))
            .route("/orders/{id}/refund", post(refund))
            .route_layer(middleware::from_fn_with_state(Arc::clone(&state), traced));
        let router = Router::new()
            .merge(api)
            .route(
                "/admin/faults",
                get(faults).post(add_fault).delete(clear_faults),
            )
            .route("/healthz", get(|| async { "ok" }))
            .with_state(state);
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.wait().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the demo payment service failed");
            }
        });
        Ok(DemoService {
            address,
            task,
            provider,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Waits until it has stopped and its spans are exported.
    pub async fn wait(self) {
        let _ = self.task.await;
        let provider = self.provider;
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// The SDK's exporter uses a blocking HTTP client on the processor's own
/// thread; it is built off the async runtime.
async fn tracer_provider(options: &DemoOptions) -> std::io::Result<SdkTracerProvider> {
    let resource = Resource::builder()
        .with_service_name(options.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", options.version.clone()),
            KeyValue::new("vigil.unit", options.unit.clone()),
            KeyValue::new("vigil.cohort", options.cohort.clone()),
        ])
        .build();
    let Some(endpoint) = options.otlp_endpoint.clone() else {
        return Ok(SdkTracerProvider::builder().with_resource(resource).build());
    };
    let headers: HashMap<String, String> = options
        .token
        .iter()
        .map(|token| ("authorization".to_owned(), format!("Bearer {token}")))
        .collect();
    tokio::task::spawn_blocking(move || {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_headers(headers)
            .build()
            .map_err(std::io::Error::other)?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_millis(500))
                    .build(),
            )
            .build();
        Ok(SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(processor)
            .build())
    })
    .await
    .map_err(std::io::Error::other)?
}

struct Demo {
    tracer: SdkTracer,
    options: DemoOptions,
    orders: Mutex<Orders>,
    faults: Mutex<Vec<Fault>>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Orders {
    by_id: HashMap<String, Order>,
    oldest_first: VecDeque<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Order {
    id: String,
    status: &'static str,
    amount: u64,
    currency: String,
    unit: String,
    version: String,
    #[serde(skip)]
    paid_with: Option<String>,
}

/// A fault and how many matching requests of each route it has seen.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fault {
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    cohort: Option<String>,
    #[serde(default)]
    error_rate: f64,
    #[serde(default)]
    latency_ms: u64,
    #[serde(default = "default_fault_status")]
    status: u16,
    #[serde(skip)]
    seen: [u64; ROUTES.len()],
}

fn default_fault_status() -> u16 {
    503
}

const ROUTES: [&str; 4] = ["create", "pay", "query", "refund"];

impl Demo {
    fn orders(&self) -> std::sync::MutexGuard<'_, Orders> {
        self.orders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The added latency and the error status (if this request fails) of
    /// the faults that match `route` on this instance.
    fn fault_for(&self, route: &str) -> (Duration, Option<u16>) {
        let options = &self.options;
        let mut latency = Duration::ZERO;
        let mut error = None;
        let applies = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        for fault in self.faults().iter_mut() {
            if !(applies(&fault.route, route)
                && applies(&fault.unit, &options.unit)
                && applies(&fault.version, &options.version)
                && applies(&fault.cohort, &options.cohort))
            {
                continue;
            }
            latency += Duration::from_millis(fault.latency_ms);
            // Spread evenly over each route's requests, not over all: a
            // service whose requests alternate between routes would
            // otherwise fail one route only.
            let Some(seen) = ROUTES
                .iter()
                .position(|r| *r == route)
                .map(|at| &mut fault.seen[at])
            else {
                continue;
            };
            *seen += 1;
            if fails(*seen, fault.error_rate) && error.is_none() {
                error = Some(fault.status);
            }
        }
        (latency, error)
    }
}

/// Whether the `n`th matching request (from 1) fails at `rate`: when the
/// count of errors owed, floor(n × rate), goes up. Errors are spread evenly
/// and their count is exact.
fn fails(n: u64, rate: f64) -> bool {
    (n as f64 * rate).floor() > ((n - 1) as f64 * rate).floor()
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|key| key.as_str()).collect()
    }
}

/// A server span per request, child of the caller's `traceparent`; faults
/// applied inside it, so they show in the service's own telemetry too.
async fn traced(State(demo): State<Arc<Demo>>, mut request: Request, next: Next) -> Response {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let name = format!("{method} {route}");
    let span = demo
        .tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("http.route", route.clone()),
        ])
        .start_with_context(&demo.tracer, &parent);
    let context = parent.with_span(span);
    let operation = match (method, route.as_str()) {
        (Method::POST, "/orders") => "create",
        (Method::POST, "/orders/{id}/pay") => "pay",
        (Method::POST, "/orders/{id}/refund") => "refund",
        _ => "query",
    };
    let (latency, error) = demo.fault_for(operation);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = match error {
        Some(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            (status, Json(json!({"error": "injected fault"}))).into_response()
        }
        None => {
            request.extensions_mut().insert(context.clone());
            next.run(request).await
        }
    };
    let span = context.span();
    let status = response.status();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if status.is_server_error() {
        span.set_status(Status::error(format!("status {}", status.as_u16())));
    }
    span.end();
    response
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    amount: u64,
    currency: String,
}

async fn create(State(demo): State<Arc<Demo>>, body: axum::body::Bytes) -> Response {
    let order: NewOrder = match serde_json::from_slice(&body) {
        Ok(order) => order,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!(
                    "a new order is {{\"amount\": minor units > 0, \"currency\": \"EUR\"}}: {e}"
                ),
            );
        }
    };
    if order.amount == 0
        || order.currency.len() != 3
        || !order.currency.bytes().all(|b| b.is_ascii_uppercase())
    {
        return problem(
            StatusCode::BAD_REQUEST,
            "amount must be above 0 and currency three capital letters (ISO 4217)",
        );
    }
    let n = demo.next_id.fetch_add(1, Ordering::Relaxed);
    let id = format!("ord-{}-{n}", demo.options.unit);
    let created = Order {
        id: id.clone(),
        status: "created",
        amount: order.amount,
        currency: order.currency,
        unit: demo.options.unit.clone(),
        version: demo.options.version.clone(),
        paid_with: None,
    };
    let mut orders = demo.orders();
    orders.by_id.insert(id.clone(), created.clone());
    orders.oldest_first.push_back(id);
    while orders.oldest_first.len() > MAX_ORDERS {
        if let Some(old) = orders.oldest_first.pop_front() {
            orders.by_id.remove(&old);
        }
    }
    (StatusCode::CREATED, Json(created)).into_response()
}

fn unknown(id: &str) -> Response {
    problem(StatusCode::NOT_FOUND, format!("no order {id}"))
}

async fn query(State(demo): State<Arc<Demo>>, Path(id): Path<String>) -> Response {
    match demo.orders().by_id.get(&id) {
        Some(order) => Json(order.clone()).into_response(),
        None => unknown(&id),
    }
}

async fn pay(
    State(demo): State<Arc<Demo>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Extension(context): axum::Extension<Context>,
) -> Response {
    // The card network's part, as a client span of its own.
    let mut authorize = demo
        .tracer
        .span_builder("psp.authorize")
        .with_kind(SpanKind::Client)
        .start_with_context(&demo.tracer, &context);
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer = {
        let mut orders = demo.orders();
        match orders.by_id.get_mut(&id) {
            None => unknown(&id),
            Some(order) if order.status == "paid" && key.is_some() && order.paid_with == key => {
                Json(order.clone()).into_response()
            }
            Some(order) if order.status != "created" => problem(
                StatusCode::CONFLICT,
                format!("order {id} is {}, not created", order.status),
            ),
            Some(order) => {
                order.status = "paid";
                order.paid_with = key;
                Json(order.clone()).into_response()
            }
        }
    };
    authorize.end();
    answer
}

async fn refund(State(demo): State<Arc<Demo>>, Path(id): Path<String>) -> Response {
    let mut orders = demo.orders();
    let Some(order) = orders.by_id.get_mut(&id) else {
        return unknown(&id);
    };
    order.status = match order.status {
        "paid" | "refunded" => "refunded",
        _ => "cancelled",
    };
    Json(order.clone()).into_response()
}

async fn faults(State(demo): State<Arc<Demo>>) -> Json<Value> {
    Json(json!({"faults": *demo.faults()}))
}

async fn add_fault(State(demo): State<Arc<Demo>>, body: axum::body::Bytes) -> Response {
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(fault) => fault,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("not a fault: {e}")),
    };
    if !(0.0..=1.0).contains(&fault.error_rate) {
        return problem(
            StatusCode::BAD_REQUEST,
            format!(
                "error_rate must be between 0 and 1, got {}",
                fault.error_rate
            ),
        );
    }
    if let Some(route) = &fault.route
        && !ROUTES.contains(&route.as_str())
    {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("route must be one of {}, got {route:?}", ROUTES.join(", ")),
        );
    }
    if !(400..=599).contains(&fault.status) {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("status must be between 400 and 599, got {}", fault.status),
        );
    }
    if fault.latency_ms > 600_000 {
        return problem(StatusCode::BAD_REQUEST, "latency_ms must be at most 600000");
    }
    let mut faults = demo.faults();
    faults.push(fault);
    (StatusCode::CREATED, Json(json!({"faults": *faults}))).into_response()
}

async fn clear_faults(State(demo): State<Arc<Demo>>) -> Json<Value> {
    demo.faults().clear();
    Json(json!({"faults": []}))
}

#[cfg(test)]
mod tests {
    use super::fails;

    #[test]
    fn error_rates_fail_an_exact_evenly_spread_share() {
        let failing = |rate: f64| (1..=100).filter(|&n| fails(n, rate)).collect::<Vec<u64>>();
        assert_eq!(
            failing(0.2),
            [
                5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90, 95, 100
            ]
        );
        assert_eq!(failing(0.0), Vec::<u64>::new());
        assert_eq!(failing(1.0), (1..=100).collect::<Vec<u64>>());
        assert_eq!(failing(0.25).len(), 25);
        assert_eq!(failing(0.333).len(), 33);
    }
}
