//! What `vigil up --demo` adds: the demo payment service in two units (a
//! stable version and a canary in each) under steady load, a probe
//! of its payment flow from both units, generated telemetry of a mobile
//! app in a gray release, example rules and an SLO, and a webhook sink that
//! prints the alerts and remediation calls it receives. `vigil demo fault`
//! injects faults into the running instances. [`service`] is the demo
//! payment service itself.

pub mod service;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::routing::{delete, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
pub use service::{DemoOptions, DemoService};
use tokio::net::TcpListener;
use vigil_config::{ApiToken, Config, Role, Secret, Sli, SloConfig, TenantConfig};
use vigil_domain::model::Kind;
use vigil_domain::shutdown::Shutdown;
use vigil_domain::tenant::TenantId;

type Error = Box<dyn std::error::Error>;

pub const TENANT: &str = "demo";
/// The API token the walkthrough uses (an editor: it may make silences).
pub const API_TOKEN: &str = "demo-api-token";
/// What the demo's services, prober and app export with.
const INGEST_TOKEN: &str = "demo-ingest-token";
/// Where `vigil demo fault` finds the running instances.
const INSTANCES_FILE: &str = "demo.json";

/// One instance of the demo payment service.
#[derive(Debug, Clone, Copy)]
struct Instance {
    unit: &'static str,
    version: &'static str,
    cohort: &'static str,
}

const INSTANCES: [Instance; 4] = [
    Instance {
        unit: "unit-a",
        version: "1.0.0",
        cohort: "stable",
    },
    Instance {
        unit: "unit-b",
        version: "1.0.0",
        cohort: "stable",
    },
    Instance {
        unit: "unit-a",
        version: "1.1.0",
        cohort: "canary",
    },
    Instance {
        unit: "unit-b",
        version: "1.1.0",
        cohort: "canary",
    },
];

/// The running instances, as `demo.json` keeps them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Running {
    pub instances: Vec<RunningInstance>,
    pub sink: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningInstance {
    pub url: String,
    pub unit: String,
    pub version: String,
    pub cohort: String,
}

/// The demo's webhook sink: where its alerts are printed and its
/// playbooks' calls change the [`Routing`].
pub struct Sink {
    pub address: SocketAddr,
    routing: SharedRouting,
}

/// Sets the demo's tenant, tokens, objective, rules and playbooks in
/// `config` (its rule file written into `data`), and starts the sink they
/// send to.
pub async fn configure(
    config: &mut Config,
    data: &Path,
    shutdown: Shutdown,
) -> Result<Sink, Error> {
    tenant(config)?;
    let (address, rules, routing) = sink_and_rules(data, shutdown).await?;
    config.alerter.rules.push(rules);
    config.alerter.playbook_hosts.push(address.to_string());
    Ok(Sink { address, routing })
}

/// Sets the demo's tenant, tokens and objective in `config`.
fn tenant(config: &mut Config) -> Result<(), Error> {
    let tenant = TenantId::parse(TENANT)?;
    config.collector.tenants.push(TenantConfig {
        id: tenant.clone(),
        tokens: vec![Secret::new(INGEST_TOKEN)],
    });
    config.api.tokens.push(ApiToken {
        token: Secret::new(API_TOKEN),
        tenant: tenant.clone(),
        role: Role::Editor,
    });
    config.synthetic.token = Some(Secret::new(INGEST_TOKEN));
    config.slos.push(SloConfig {
        name: "payments-availability".into(),
        tenant,
        description: "Payment requests that do not fail".into(),
        kind: Kind::Span,
        service: Some("payments".into()),
        series: None,
        labels: [("span.kind".to_owned(), "server".to_owned())].into(),
        sli: Sli::Availability,
        threshold_ms: None,
        objective_percent: 99.5,
        window_days: 7,
    });
    Ok(())
}

/// Where the demo's load goes: the versions rolled back (their traffic
/// goes to the stable instance of their unit) and the units drained (their
/// traffic goes to a stable instance of another unit). The playbooks of
/// the demo's rules change it through the sink, as a deployer and a
/// traffic manager would; `vigil demo fault --clear` restores it.
#[derive(Debug, Default)]
pub struct Routing {
    rolled_back: BTreeSet<String>,
    drained: BTreeSet<String>,
}

pub type SharedRouting = Arc<Mutex<Routing>>;

impl Routing {
    /// The instance that takes the load meant for `from`.
    fn target<'a>(&self, from: &'a RunningInstance, all: &'a [RunningInstance]) -> &'a str {
        let stable = |unit: &str| all.iter().find(|i| i.unit == unit && i.cohort == "stable");
        let mut to = from;
        if self.rolled_back.contains(&to.version)
            && let Some(stable) = stable(&to.unit)
        {
            to = stable;
        }
        if self.drained.contains(&to.unit)
            && let Some(other) = all
                .iter()
                .find(|i| i.cohort == "stable" && !self.drained.contains(&i.unit))
        {
            to = other;
        }
        &to.url
    }
}

/// Starts the webhook sink (which also takes the playbooks' rollback and
/// traffic-shift calls), then writes the rule file that sends to it into
/// `data`; the sink's address, the rule file's path and the routing.
async fn sink_and_rules(
    data: &Path,
    shutdown: Shutdown,
) -> Result<(SocketAddr, PathBuf, SharedRouting), Error> {
    let routing = SharedRouting::default();
    let router = axum::Router::new()
        .route("/demo/rollback", post(rollback))
        .route("/demo/shift", post(shift))
        .route("/demo/routing", delete(restore))
        .route("/{*path}", post(print))
        .with_state(Arc::clone(&routing));
    let sink = serve_locally(router, "the demo's webhook sink", shutdown).await?;
    let rules = data.join("demo-rules.yaml");
    std::fs::write(&rules, rule_file(sink))?;
    Ok((sink, rules, routing))
}

/// `POST /demo/rollback {"version": "1.1.0"}`: that version's traffic
/// goes to the stable version of its unit.
#[allow(clippy::print_stdout, reason = "the demo's sink shows what it does")]
async fn rollback(State(routing): State<SharedRouting>, Json(body): Json<Value>) -> &'static str {
    let version = body["version"].as_str().unwrap_or_default().to_owned();
    println!("[demo] payments {version} rolled back: its traffic goes to the stable version");
    lock(&routing).rolled_back.insert(version);
    "ok"
}

/// `POST /demo/shift {"unit": "unit-b"}`: that unit's traffic goes to
/// another unit.
#[allow(clippy::print_stdout, reason = "the demo's sink shows what it does")]
async fn shift(State(routing): State<SharedRouting>, Json(body): Json<Value>) -> &'static str {
    let unit = body["unit"].as_str().unwrap_or_default().to_owned();
    println!("[demo] traffic shifted away from {unit}");
    lock(&routing).drained.insert(unit);
    "ok"
}

/// `DELETE /demo/routing`: every version and unit serves again.
async fn restore(State(routing): State<SharedRouting>) -> &'static str {
    *lock(&routing) = Routing::default();
    "ok"
}

fn lock(routing: &SharedRouting) -> std::sync::MutexGuard<'_, Routing> {
    routing
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves `router` on a free loopback port until `shutdown`; its address.
pub async fn serve_locally(
    router: axum::Router,
    what: &'static str,
    shutdown: Shutdown,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "{what} stopped");
        }
    });
    Ok(address)
}

/// Prints what the alerter sends: one line per alert, or per action.
#[allow(
    clippy::print_stdout,
    reason = "the demo's sink shows alerts on the console"
)]
async fn print(UrlPath(path): UrlPath<String>, body: String) -> &'static str {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    match body["alerts"].as_array() {
        Some(alerts) => {
            for alert in alerts {
                println!(
                    "[webhook /{path}] {} {}: {}",
                    alert["status"].as_str().unwrap_or("?"),
                    alert["labels"]["alertname"].as_str().unwrap_or("?"),
                    alert["annotations"]["summary"]
                        .as_str()
                        .map_or_else(|| alert["labels"].to_string(), str::to_owned)
                );
            }
        }
        None => println!("[webhook /{path}] {body}"),
    }
    "ok"
}

/// The demo's rules that watch the payments service whatever the fault: a
/// unit's p99 over a minute above 500 ms, and the burn rate of its
/// objective (99.5 %). `vigil bench detection` runs them too, to count
/// their false alerts. Entries of a rule file's `rules:` list.
pub const WATCHING_RULES: &str = r#"  - name: payments-slow
    type: threshold
    service: payments
    filter: 'span.kind="server"'
    group_by: [vigil.unit]
    signal: p99
    window: 1m
    op: '>'
    value: 500
    min_count: 20
    labels: {severity: ticket}
    annotations: {summary: "payments p99 is {{value}} ms in {{vigil.unit}}"}
  - name: payments-slo
    type: burn_rate
    service: payments
    filter: 'span.kind="server"'
    objective: 99.5
    annotations: {summary: "payments burns its error budget {{value}} times too fast"}
"#;

fn rule_file(sink: SocketAddr) -> String {
    format!(
        r#"tenant: {TENANT}
rules:
  - name: payments-errors
    type: threshold
    service: payments
    filter: 'span.kind="server"'
    group_by: [vigil.unit]
    signal: error_ratio
    window: 30s
    op: '>'
    value: 0.05
    min_count: 20
    labels: {{severity: page}}
    annotations: {{summary: "{{{{value}}}} of payments requests fail in {{{{vigil.unit}}}}"}}
{WATCHING_RULES}  - name: pay-e2e-failing
    type: threshold
    kind: probe
    series: pay-e2e
    filter: 'vigil.probe.step=""'
    group_by: [vigil.probe.location]
    signal: availability
    window: 1m
    op: '<'
    value: 0.9
    annotations: {{summary: "the pay-e2e probe from {{{{vigil.probe.location}}}} succeeds {{{{value}}}} of the time"}}
  - name: payments-canary
    type: canary
    service: payments
    window: 5m
    annotations: {{summary: "payments {{{{service.version}}}} is worse than its baseline on {{{{signal}}}}"}}
receivers:
  - name: console
    url: http://{sink}/alerts
    secret: demo-webhook-secret
route:
  receiver: console
  group_by: [alertname, vigil.unit]
  group_wait: 0s
  group_interval: 10s
  repeat_interval: 1h
inhibit_rules:
  - source_matchers: ['alertname="pay-e2e-failing"']
    target_matchers: ['alertname="payments-slow"']
actions:
  - name: rollback
    url: http://{sink}/demo/rollback
    body: {{service: payments, version: "{{{{service.version}}}}"}}
    secret: demo-webhook-secret
  - name: shift-traffic
    url: http://{sink}/demo/shift
    body: {{service: payments, unit: "{{{{vigil.unit}}}}"}}
    secret: demo-webhook-secret
# The demo is there to be tried again and again: more runs an hour than the
# default 3.
playbooks:
  - name: canary-rollback
    rules: [payments-canary]
    max_runs_per_hour: 30
    steps:
      - call: rollback
      - check: &recovered
          service: payments
          filter: 'span.kind="server"'
          signal: error_ratio
          window: 20s
          op: '<'
          value: 0.01
          min_count: 20
          for: 10s
          deadline: 2m
      - escalate: console
        if: ['check="failed"']
  - name: unit-drain
    rules: [payments-errors]
    max_runs_per_hour: 30
    # A version that explains the errors is the canary playbook's to roll back.
    if: ['located.service.version=""']
    steps:
      - call: shift-traffic
      - check: *recovered
      - escalate: console
        if: ['check="failed"']
"#
    )
}

/// Starts the instances, their load, the app's telemetry and the probe's
/// scenario file (returned), and writes `demo.json` into `data`.
pub async fn start(
    data: &Path,
    collector: SocketAddr,
    sink: &Sink,
    port: u16,
    shutdown: Shutdown,
) -> Result<(Vec<DemoService>, PathBuf), Error> {
    let collector = format!("http://{collector}");
    let mut services = Vec::new();
    let mut running = Vec::new();
    for (i, instance) in INSTANCES.iter().enumerate() {
        let port = if port == 0 { 0 } else { port + i as u16 };
        let service = DemoService::start(
            DemoOptions {
                listen: SocketAddr::from(([127, 0, 0, 1], port)),
                service_name: "payments".into(),
                unit: instance.unit.into(),
                version: instance.version.into(),
                cohort: instance.cohort.into(),
                otlp_endpoint: Some(collector.clone()),
                token: Some(INGEST_TOKEN.into()),
            },
            shutdown.clone(),
        )
        .await?;
        let url = format!("http://{}", service.address());
        running.push(RunningInstance {
            url,
            unit: instance.unit.into(),
            version: instance.version.into(),
            cohort: instance.cohort.into(),
        });
        services.push(service);
    }
    let instances = Arc::new(running.clone());
    for index in 0..instances.len() {
        let (instances, routing) = (Arc::clone(&instances), Arc::clone(&sink.routing));
        let target = move || {
            lock(&routing)
                .target(&instances[index], &instances)
                .to_owned()
        };
        tokio::spawn(load(target, 10, shutdown.clone()));
    }
    tokio::spawn(app_telemetry(collector, shutdown));
    let scenario = data.join("demo-probes.yaml");
    std::fs::write(&scenario, scenario_file(&running))?;
    let running = Running {
        instances: running,
        sink: format!("http://{}", sink.address),
    };
    std::fs::write(
        data.join(INSTANCES_FILE),
        serde_json::to_string_pretty(&running)?,
    )?;
    Ok((services, scenario))
}

/// The pay-e2e probe, from each unit against its stable instance.
fn scenario_file(running: &[RunningInstance]) -> String {
    let base = |unit: &str| {
        running
            .iter()
            .find(|i| i.unit == unit && i.cohort == "stable")
            .map_or("", |i| i.url.as_str())
            .to_owned()
    };
    format!(
        r#"locations:
  unit-a: {{ vars: {{ base: "{}" }} }}
  unit-b: {{ vars: {{ base: "{}" }} }}
probes:
  - name: pay-e2e
    interval: 10s
    timeout: 10s
    steps:
      - name: create-order
        http: {{ method: POST, url: "{{{{base}}}}/orders", json: {{ amount: 1250, currency: EUR }} }}
        expect: {{ status: 201 }}
        extract: {{ order_id: $.id }}
      - name: pay
        http:
          method: POST
          url: "{{{{base}}}}/orders/{{{{order_id}}}}/pay"
          headers: {{ idempotency-key: "{{{{run.idempotency_key}}}}" }}
        expect: {{ status: 200, json: [{{ path: $.status, equals: paid }}] }}
      - name: refund
        http: {{ method: POST, url: "{{{{base}}}}/orders/{{{{order_id}}}}/refund" }}
        expect: {{ status: 200 }}
"#,
        base("unit-a"),
        base("unit-b")
    )
}

/// Orders created at `per_second`, and paid, on the instance `target`
/// names at each order, until `shutdown`.
pub async fn load(
    target: impl Fn() -> String + Send + 'static,
    per_second: u64,
    shutdown: Shutdown,
) {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
    let order = json!({"amount": 1250, "currency": "EUR"}).to_string();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => return,
        }
        let (client, url, order) = (client.clone(), target(), order.clone());
        tokio::spawn(async move {
            // Failures are the faults at work; the traces show them.
            let created = client
                .post(format!("{url}/orders"))
                .header("content-type", "application/json")
                .body(order)
                .send()
                .await;
            let Ok(created) = created else { return };
            let Ok(text) = created.text().await else {
                return;
            };
            let order: Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(id) = order["id"].as_str() {
                let _ = client.post(format!("{url}/orders/{id}/pay")).send().await;
            }
        });
    }
}

/// The wallet-ios app in a gray release: 5.0 (stable, both units) and 5.1
/// (canary, unit-a), a few sessions a second each; 5.1 crashes four times
/// as often and starts a little slower. Both crash in checkout (a group
/// with a stack fingerprint); half of 5.1's crashes are a new native one
/// in its ledger, grouped by its frames. 5.1 also crashes while launching
/// on about one device in sixty, three launches in a row (a crash loop). Each
/// session makes API calls (one in ten repeated) and reports its battery
/// use. Its log records (OTLP, as a mobile OpenTelemetry SDK sends them): a
/// sync per release each second, and an error before each crash.
async fn app_telemetry(collector: String, shutdown: Shutdown) {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    let releases = [
        ("5.0", "stable", "unit-a", 200, 800.0),
        ("5.0", "stable", "unit-b", 200, 800.0),
        ("5.1", "canary", "unit-a", 50, 860.0),
    ];
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => return,
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut batches = Vec::new();
        let mut logs = Vec::new();
        for (version, cohort, unit, sessions_per_crash, start_ms) in releases {
            logs.push(log_record(
                now,
                "INFO",
                format!("wallet synced in {} ms", 40 + n % 60),
                version,
                n,
            ));
            for _ in 0..3 {
                n += 1;
                let mut events = vec![
                    json!({"timeUnixNano": now, "sessionStart": {}}),
                    json!({"timeUnixNano": now, "appStart": {"kind": "cold", "durationMs": start_ms + (n % 7) as f64 * 20.0}}),
                    json!({"timeUnixNano": now, "stutter": {"totalFrames": 600, "slowFrames": 6 + n % 3, "frozenFrames": 0, "refreshRateHz": 120.0}}),
                    json!({"timeUnixNano": now, "networkRequest": {
                        "host": "api.wallet.example", "route": "/v1/balance", "method": "GET",
                        "statusCode": 200, "durationMs": 80.0 + (n % 5) as f64 * 10.0,
                        "bytesSent": 420, "bytesReceived": 2_600 + n % 400,
                        "repeated": n.is_multiple_of(10)}}),
                    json!({"timeUnixNano": now, "power": {
                        "batteryLevel": 0.8, "foreground": true, "intervalMs": 600_000.0,
                        "batteryDrainPercent": if version == "5.1" { 1.2 } else { 1.0 },
                        "cpuTimeMs": 45_000.0, "wakeLockMs": 2_000.0}}),
                ];
                if version == "5.1" && n.is_multiple_of(60) {
                    // About one device in sixty fails to launch three times in a row.
                    for launch in 1..=3 {
                        events.push(json!({"timeUnixNano": now, "crash": {
                            "foreground": true, "kind": "native", "exceptionType": "SIGABRT",
                            "message": "migration 42 failed: duplicate column",
                            "stackFingerprint": "wallet-launch-migration",
                            "duringLaunch": true, "consecutiveLaunchCrashes": launch}}));
                    }
                }
                if n.is_multiple_of(sessions_per_crash) {
                    let ledger = version == "5.1" && (n / sessions_per_crash).is_multiple_of(2);
                    events.push(json!({"timeUnixNano": now, "crash": demo_crash(ledger, n)}));
                    let what = if ledger {
                        "ledger append failed: the entry was released"
                    } else {
                        "checkout table update failed: 3 rows expected, 2 found"
                    };
                    logs.push(log_record(now, "ERROR", what.into(), version, n));
                }
                batches.push(json!({
                    "context": {
                        "appId": "wallet-ios", "appVersion": version, "osName": "ios",
                        "osVersion": "18.1", "deviceModel": "iPhone16,2", "networkType": "wifi",
                        "sessionIdHash": format!("{n:032x}"),
                        "userIdHash": format!("{:032x}", n % 500), "unit": unit, "cohort": cohort
                    },
                    "events": events,
                }));
            }
        }
        let sent = client
            .post(format!("{collector}/v1/client"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {INGEST_TOKEN}"))
            .body(json!({ "batches": batches }).to_string())
            .send()
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, "the demo app's telemetry was not accepted");
        }
        let logs = json!({"resourceLogs": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "wallet-ios"}},
                {"key": "os.name", "value": {"stringValue": "ios"}},
            ]},
            "scopeLogs": [{"logRecords": logs}],
        }]});
        let sent = client
            .post(format!("{collector}/v1/logs"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {INGEST_TOKEN}"))
            .body(logs.to_string())
            .send()
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, "the demo app's logs were not accepted");
        }
    }
}

/// One OTLP/JSON log record of the demo app, in session `n`.
fn log_record(now_ns: u64, severity: &str, body: String, version: &str, n: u64) -> Value {
    let number = if severity == "ERROR" { 17 } else { 9 };
    json!({
        "timeUnixNano": now_ns.to_string(), "severityText": severity, "severityNumber": number,
        "body": {"stringValue": body},
        "attributes": [
            {"key": "app.version", "value": {"stringValue": version}},
            {"key": "session.id_hash", "value": {"stringValue": format!("{n:032x}")}},
        ],
    })
}

/// A crash of the demo app: the checkout one every version has, or the
/// ledger's native one of 5.1, with its stack and what the user did.
fn demo_crash(ledger: bool, n: u64) -> Value {
    if ledger {
        json!({
            "foreground": true, "kind": "native", "exceptionType": "EXC_BAD_ACCESS",
            "message": format!("KERN_INVALID_ADDRESS at 0x{:x}", 0x10 + n % 8 * 8),
            "thread": "com.apple.main-thread",
            "frames": [
                {"function": "objc_msgSend", "module": "libobjc.A.dylib", "address": "0x1a2b3c"},
                {"function": "Ledger.append(_:)", "module": "Wallet", "file": "Ledger.swift",
                 "line": 88, "inApp": true},
                {"function": "CheckoutViewModel.pay()", "module": "Wallet",
                 "file": "CheckoutViewModel.swift", "line": 142, "inApp": true},
            ],
            "breadcrumbs": [
                {"timeUnixNano": 0, "category": "navigation", "message": "Cart -> Checkout"},
                {"timeUnixNano": 0, "category": "ui.tap", "message": "Pay"},
            ],
        })
    } else {
        json!({
            "foreground": true, "kind": "managed", "exceptionType": "NSInternalInconsistencyException",
            "message": "Invalid update: invalid number of rows in section 0",
            "thread": "com.apple.main-thread", "stackFingerprint": "wallet-checkout-1",
        })
    }
}

/// `vigil demo fault`: sends `fault` (or, with `clear`, the end of every
/// fault) to each running instance listed in `data/demo.json`; the
/// instances apply what is aimed at them.
pub async fn fault(data: &Path, fault: Option<Value>) -> Result<Vec<String>, Error> {
    let file = data.join(INSTANCES_FILE);
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "{}: {e}; is `vigil up --demo --data {}` running?",
            file.display(),
            data.display()
        )
    })?;
    let running: Running = serde_json::from_str(&text)?;
    let client = reqwest::Client::new();
    let mut done = Vec::new();
    for instance in &running.instances {
        let url = format!("{}/admin/faults", instance.url);
        let request = match &fault {
            Some(fault) => client
                .post(&url)
                .header("content-type", "application/json")
                .body(fault.to_string()),
            None => client.delete(&url),
        };
        request.send().await?.error_for_status()?;
        done.push(format!(
            "{} ({} {} in {})",
            instance.url, instance.version, instance.cohort, instance.unit
        ));
    }
    if fault.is_none() {
        // What the playbooks rolled back or drained serves again.
        client
            .delete(format!("{}/demo/routing", running.sink))
            .send()
            .await?
            .error_for_status()?;
        done.push(format!("{} (the demo's routing)", running.sink));
    }
    Ok(done)
}
