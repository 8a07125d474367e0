//! `vigil bench detection`: how long from the demo payment service starting
//! to fail to the alert's webhook arriving, through every component: the
//! demo's OpenTelemetry SDK → collector → bus → aggregator → alerter →
//! webhook, on the configured bus and store.
//!
//! One process runs them all with a webhook sink on loopback and a steady
//! load of orders created and paid. First the healthy traffic is watched
//! for `--healthy` seconds: every firing notification then is a false
//! alert. Each trial then waits a random part of a 10 s window, makes half
//! of the requests fail (`/admin/faults`), and times until the firing
//! notification arrives; then it clears the fault and waits for the
//! resolved notification before the next.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};
use vigil_config::{Config, Secret, TenantConfig};
use vigil_demo::{self as demo, DemoOptions, DemoService, WATCHING_RULES};
use vigil_domain::shutdown::Shutdown;
use vigil_domain::tenant::TenantId;
use vigil_up::Pipeline;

type Error = Box<dyn std::error::Error>;

/// `vigil bench detection`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Faults injected and timed, one after the other (each ~30 s).
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// Seconds of healthy traffic watched for false alerts before the
    /// faults.
    #[arg(long, default_value_t = 60)]
    pub healthy: u64,
}

/// What a run measured.
pub struct Detection {
    /// From each fault to its firing notification.
    pub latencies: Vec<Duration>,
    /// Alerts that fired on healthy traffic, by rule.
    pub false_alerts: Vec<String>,
}

const TOKEN: &str = "detection-bench-ingest-token";
/// Orders created (and paid) per second.
const RATE: u64 = 50;
/// The share of requests (creations and payments) that fail during a
/// trial.
const ERROR_RATE: f64 = 0.5;
/// How long a trial may wait for its firing or resolved notification.
const PATIENCE: Duration = Duration::from_secs(120);

/// Notifications the sink received, with when.
type Received = Arc<Mutex<Vec<(Instant, Value)>>>;

/// The detection latency of each trial, and the false alerts.
pub async fn run(mut config: Config, options: Options) -> Result<Detection, Error> {
    let shutdown = Shutdown::new();
    let received: Received = Arc::default();
    let router = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(Arc::clone(&received));
    let sink = demo::serve_locally(router, "the webhook sink", shutdown.clone()).await?;
    let folder = std::env::temp_dir().join(format!("vigil-detection-{}", std::process::id()));
    std::fs::create_dir_all(&folder)?;
    // A tenant and groups of this run only: it reads no alert and no
    // offset an earlier run left.
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let tenant = TenantId::parse(&format!("detection-{run_id}"))?;
    let rules = folder.join("rules.yaml");
    std::fs::write(&rules, rule_file(&tenant, sink))?;

    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    config.collector.grpc_listen = any_port;
    config.collector.http_listen = any_port;
    config.collector.metrics_listen = any_port;
    config.aggregator.metrics_listen = any_port;
    config.alerter.metrics_listen = any_port;
    config.collector.tenants = vec![TenantConfig {
        id: tenant,
        tokens: vec![Secret::new(TOKEN)],
    }];
    config.aggregator.group = format!("vigil-detection-{run_id}");
    config.alerter.group = format!("vigil-detection-alerter-{run_id}");
    config.alerter.rules = vec![rules];
    // Every trial fires and resolves the same alert: flap detection would
    // rightly hold its pages from the fourth on.
    config.alerter.flap_changes = 0;

    let pipeline = Pipeline::start(&config, &shutdown).await?;
    let demo = DemoService::start(
        DemoOptions {
            listen: any_port,
            service_name: "payments".into(),
            unit: "unit-a".into(),
            version: "1.0.0".into(),
            cohort: "stable".into(),
            otlp_endpoint: Some(format!("http://{}", pipeline.otlp())),
            token: Some(TOKEN.into()),
        },
        shutdown.clone(),
    )
    .await?;
    let demo_url = format!("http://{}", demo.address());
    let target = demo_url.clone();
    let load = tokio::spawn(demo::load(move || target.clone(), RATE, shutdown.clone()));

    let client = reqwest::Client::new();
    let faults = format!("{demo_url}/admin/faults");
    // The first windows: the alerter's consumer joins and the service's
    // error ratio is known to be 0; then healthy traffic only.
    sleep(Duration::from_secs(20) + Duration::from_secs(options.healthy)).await;
    let false_alerts: Vec<String> = lock(&received)
        .iter()
        .filter(|(_, body)| body["status"] == "firing")
        .flat_map(|(_, body)| alert_names(body))
        .collect();
    let mut latencies = Vec::with_capacity(options.trials);
    for trial in 0..options.trials {
        let phase = Duration::from_millis(rand::random_range(0..10_000));
        sleep(phase).await;
        let seen = lock(&received).len();
        client
            .post(&faults)
            .header("content-type", "application/json")
            .body(json!({"error_rate": ERROR_RATE}).to_string())
            .send()
            .await?
            .error_for_status()?;
        let injected = Instant::now();
        let fired = wait_for(&received, seen, "firing").await?;
        let latency = fired - injected;
        tracing::info!(trial, latency_s = latency.as_secs_f64(), "detected");
        latencies.push(latency);
        let seen = lock(&received).len();
        client.delete(&faults).send().await?.error_for_status()?;
        wait_for(&received, seen, "resolved").await?;
    }

    shutdown.trigger();
    load.await?;
    demo.wait().await;
    pipeline.wait().await?;
    std::fs::remove_dir_all(&folder)?;
    Ok(Detection {
        latencies,
        false_alerts,
    })
}

/// The rule timed: more than 5 % of a unit's payments spans failed over the
/// last 10 s window; notified at once.
const TIMED: &str = "payments-failing";

/// The rule timed, and the demo's own [`WATCHING_RULES`]: a unit's p99
/// over a minute above 500 ms, which the faults do not touch (it may only
/// fire falsely), and the service's burn rate (its pages during the faults
/// are not timed).
fn rule_file(tenant: &TenantId, sink: SocketAddr) -> String {
    format!(
        r#"tenant: {tenant}
rules:
  - name: {TIMED}
    type: threshold
    service: payments
    group_by: [vigil.unit]
    signal: error_ratio
    window: 10s
    op: '>'
    value: 0.05
    min_count: 10
    annotations:
      summary: "{{{{value}}}} of payments requests fail in {{{{vigil.unit}}}}"
{WATCHING_RULES}receivers:
  - name: sink
    url: http://{sink}/hook
route:
  receiver: sink
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
"#
    )
}

/// The webhook sink's one path: keeps what it is sent, with when.
async fn hook(State(received): State<Received>, Json(body): Json<Value>) -> &'static str {
    lock(&received).push((Instant::now(), body));
    "ok"
}

/// The names of the rules whose alerts a notification carries.
fn alert_names(body: &Value) -> Vec<String> {
    body["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|alert| alert["labels"]["alertname"].as_str())
        .map(str::to_owned)
        .collect()
}

/// When the first notification of the rule timed after the `seen` first
/// ones with `status` arrived.
async fn wait_for(received: &Received, seen: usize, status: &str) -> Result<Instant, Error> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = lock(received)
            .iter()
            .skip(seen)
            .find(|(_, body)| {
                body["status"] == status && alert_names(body).iter().any(|name| name == TIMED)
            })
            .map(|(at, _)| *at);
        if let Some(at) = found {
            return Ok(at);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no {status} notification within {} s; see the log",
                PATIENCE.as_secs()
            )
            .into());
        }
        sleep(Duration::from_millis(20)).await;
    }
}

fn lock(received: &Received) -> std::sync::MutexGuard<'_, Vec<(Instant, Value)>> {
    received.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_file_loads_with_the_demos_watching_rules() {
        let tenant = TenantId::parse("detection-1").unwrap();
        let text = rule_file(&tenant, ([127, 0, 0, 1], 9).into());
        let files = vec![(std::path::PathBuf::from("rules.yaml"), text)];
        let set = vigil_alerter::rules::parse(&files, &|_| None, None).unwrap();
        let names: Vec<&str> = set.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, [TIMED, "payments-slow", "payments-slo"]);
        assert!(set.rules.iter().all(|r| r.tenant == tenant));
    }
}
