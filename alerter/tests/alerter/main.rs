//! The alerter on the rollups topic of a real bus (in-process, and Kafka)
//! with its state in a real store (SQLite, and ClickHouse), against a
//! webhook receiver on a local port that checks every signature and fails
//! the first two attempts of each call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use vigil_alerter::Alerter;
use vigil_bus::{Bus, rollups};
use vigil_config::{Config, ServerTlsConfig};
use vigil_domain::alert::Collection;
use vigil_domain::model::{Checkpoint, RollupRow};
use vigil_domain::model::{Kind, Rollup, SeriesKey};
use vigil_domain::shutdown::Shutdown;
use vigil_domain::tenant::TenantId;
use vigil_domain::time::{parse_rfc3339, rfc3339};
use vigil_store::{CatalogueEntry, Flush, HistoryQuery, Store};
use vigil_testing::daemon::Daemon;
use vigil_testing::{self as testing, Backend, now_s, on_both_backends};
use vigil_tls::server::{HTTP_1_1, Listener};

const SECRET: &str = "hook-secret-0123";

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    idempotency_key: String,
    body: Value,
    /// Which attempt of its idempotency key it was, from 1.
    attempt: usize,
    /// Answered 200.
    accepted: bool,
}

#[derive(Default)]
struct Receiver {
    received: Mutex<Vec<Received>>,
    /// While set, every request is answered 503.
    down: AtomicBool,
}

impl Receiver {
    /// The requests answered 200 on `path`, in order.
    fn accepted(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path && r.accepted)
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Every request on `path`, answered or refused, in order.
    fn on(&self, path: &str) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.path == path).collect()
    }
}

async fn take(
    State(receiver): State<Arc<Receiver>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    // `t=<unix s>,v1=<HMAC of "<t>.<key>.<body>">`, t within 5 minutes.
    let idempotency_key = header("idempotency-key");
    let signature = header("x-vigil-signature");
    let Some((time, signed)) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return StatusCode::UNAUTHORIZED;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{time}.{idempotency_key}.").as_bytes());
    mac.update(&body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let fresh = time
        .parse::<u64>()
        .is_ok_and(|t| t.abs_diff(now_s()) <= 300);
    if signed != expected || !fresh {
        return StatusCode::UNAUTHORIZED;
    }
    let mut received = receiver.received.lock().unwrap();
    let attempt = received
        .iter()
        .filter(|r| r.idempotency_key == idempotency_key)
        .count()
        + 1;
    let accepted = attempt > 2 && !receiver.down.load(Ordering::SeqCst);
    received.push(Received {
        path: uri.path().to_owned(),
        idempotency_key,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        attempt,
        accepted,
    });
    if accepted {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Takes what an Alertmanager's webhook sends (unsigned), answering 200.
async fn take_unsigned(
    State(receiver): State<Arc<Receiver>>,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> StatusCode {
    receiver.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        idempotency_key: String::new(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        attempt: 1,
        accepted: true,
    });
    StatusCode::OK
}

async fn receiver(shutdown: Shutdown) -> (Arc<Receiver>, String) {
    receiver_serving(shutdown, None).await
}

/// A receiver on plain HTTP, or on HTTPS with `tls`; its base URL.
async fn receiver_serving(
    shutdown: Shutdown,
    tls: Option<&ServerTlsConfig>,
) -> (Arc<Receiver>, String) {
    let state = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", post(take))
        .route("/rollback/{service}", post(take))
        .route("/from-alertmanager", post(take_unsigned))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let listener = Listener::new(listener, tls, &[HTTP_1_1]).unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
            .unwrap();
    });
    // The test certificates name localhost.
    let base = match tls {
        Some(_) => format!("https://localhost:{port}"),
        None => format!("http://127.0.0.1:{port}"),
    };
    (state, base)
}

fn rules(base: &str) -> String {
    format!(
        r#"
tenant: acme
rules:
  - name: pay-errors
    type: threshold
    service: pay
    group_by: [vigil.unit]
    signal: error_ratio
    op: ">"
    value: 0.1
    min_count: 10
    labels: {{severity: page}}
    annotations: {{summary: "{{{{value}}}} of pay requests fail in {{{{vigil.unit}}}}"}}
    actions: [rollback]
receivers:
  - name: oncall
    url: {base}/hook
    secret: {SECRET}
    timeout: 2s
route:
  receiver: oncall
  group_by: [alertname, vigil.unit]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
actions:
  - name: rollback
    url: "{base}/rollback/{{{{service}}}}"
    body: {{unit: "{{{{vigil.unit}}}}", ratio: "{{{{value}}}}"}}
    secret: {SECRET}
    cooldown: 10m
"#
    )
}

/// A 10 s row of tenant acme's series at `start_s`.
fn ten_s_row(
    (kind, service, name): (Kind, &str, &str),
    labels: Vec<(String, String)>,
    start_s: u64,
    rollup: Rollup,
) -> RollupRow {
    RollupRow {
        series: Arc::new(SeriesKey::new(
            TenantId::parse("acme").unwrap(),
            kind,
            service,
            name,
            labels,
        )),
        partition: 0,
        width_s: 10,
        start_s,
        rollup,
        correction: false,
    }
}

/// `n` requests of 20 ms, `errors` of them failed.
fn requests(n: u64, errors: u64) -> Rollup {
    let mut rollup = Rollup::default();
    for i in 0..n {
        rollup.record(20.0, i < errors).unwrap();
    }
    rollup
}

/// A 10 s row of service pay in `unit`: `n` requests, `errors` failed.
fn row(unit: &str, start_s: u64, n: u64, errors: u64) -> RollupRow {
    ten_s_row(
        (Kind::Span, "pay", "POST /pay"),
        vec![("vigil.unit".into(), unit.into())],
        start_s,
        requests(n, errors),
    )
}

async fn publish(bus: &dyn Bus, config: &Config, seq: u64, rows: &[RollupRow]) {
    let checkpoint = Checkpoint {
        seq,
        partition: 0,
        next_offset: seq as i64,
        watermark_s: now_s(),
    };
    let records = rollups::encode("vigil.otlp.traces", &checkpoint, rows);
    bus.publish(&config.bus.topics().rollups, records)
        .await
        .unwrap();
}

async fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Setup {
    config: Config,
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    folder: PathBuf,
}

impl Setup {
    /// An alerter on the setup's bus and store, stopped by `shutdown`.
    async fn alerter(&self, shutdown: Shutdown) -> Alerter {
        Alerter::start(
            &self.config,
            Arc::clone(&self.bus),
            self.store.clone(),
            shutdown,
        )
        .await
        .unwrap()
    }
}

async fn setup(backend: Backend, base: &str) -> Option<Setup> {
    let mut config = testing::config(backend)?;
    let folder = std::env::temp_dir().join(testing::unique_name("vigil_alerter"));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("rules.yaml"), rules(base)).unwrap();
    config.alerter.rules = vec![folder.clone()];
    config.alerter.group = testing::unique_name("vigil_test_alerter");
    config.alerter.evaluation_delay_ms = 500;
    config.alerter.metrics_listen = ([127, 0, 0, 1], 0).into();
    let bus = vigil_bus::connect(&config.bus).unwrap();
    let store = vigil_store::open(&config.store).await.unwrap();
    Some(Setup {
        config,
        bus,
        store,
        folder,
    })
}

async fn alert_fires_signed_survives_a_restart_and_resolves(backend: Backend) {
    let stop = Shutdown::new();
    let (receiver, base) = receiver(stop.clone()).await;
    let Some(s) = setup(backend, &base).await else {
        return;
    };
    let first = Shutdown::new();
    let alerter = s.alerter(first.clone()).await;
    // A rule file that does not load is refused with its file, line, rule
    // and reason, and the rules running stay.
    let running = alerter.metrics().rules.get();
    let bad = s.folder.join("bad.yaml");
    std::fs::write(
        &bad,
        "tenant: acme\nrules:\n  - {name: broken, type: threshold, signal: p42, op: '>', value: 1}\n",
    )
    .unwrap();
    let refused = alerter.reload().await.unwrap_err();
    assert!(
        refused.starts_with(&format!("{}:3: rule broken: ", bad.display())),
        "{refused}"
    );
    assert!(refused.contains("p42"), "{refused}");
    assert_eq!(alerter.metrics().rules.get(), running);
    std::fs::remove_file(&bad).unwrap();
    // The window after the one the alerter started in: the first it
    // evaluates from the bus alone. u1's first rows fail 5 of 60, under
    // the bound; with the next, 30 of 100.
    let window = now_s() - now_s() % 10;
    publish(
        &*s.bus,
        &s.config,
        1,
        &[row("u1", window, 60, 5), row("u2", window, 60, 1)],
    )
    .await;
    publish(&*s.bus, &s.config, 2, &[row("u1", window, 40, 25)]).await;

    let firing = wait_for("the firing notification", Duration::from_secs(30), || {
        receiver.accepted("/hook").first().cloned()
    })
    .await;
    // Retried twice with the same key, the body signed each time.
    let attempts: Vec<usize> = receiver
        .all()
        .iter()
        .filter(|r| r.idempotency_key == firing.idempotency_key)
        .map(|r| r.attempt)
        .collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    let alert = &firing.body["alerts"][0];
    let fingerprint = alert["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(fingerprint.len(), 16);
    // Judged as the rows came, within their window (or at its end).
    let fired_ms = parse_rfc3339(alert["startsAt"].as_str().unwrap()).unwrap();
    assert!(
        (window * 1_000..=(window + 10) * 1_000).contains(&fired_ms),
        "{fired_ms} outside the window at {window}"
    );
    let labels = json!({
        "alertname": "pay-errors",
        "severity": "page",
        "tenant": "acme",
        "vigil.unit": "u1",
    });
    let key = "acme/0:{alertname=\"pay-errors\", vigil.unit=\"u1\"}";
    assert_eq!(
        firing.body,
        json!({
            "version": "4",
            "groupKey": key,
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "oncall",
            "groupLabels": {"alertname": "pay-errors", "vigil.unit": "u1"},
            "commonLabels": labels,
            "commonAnnotations": {"summary": "0.3 of pay requests fail in u1"},
            "externalURL": "",
            "alerts": [{
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "0.3 of pay requests fail in u1"},
                "startsAt": rfc3339(fired_ms),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": fingerprint,
                "vigil": {"rule": "pay-errors", "value": 0.3, "located": []},
            }],
            "vigil": {
                "idempotencyKey": firing.idempotency_key,
                "sequence": 1,
                "tenant": "acme",
                "sentAt": firing.body["vigil"]["sentAt"],
            },
        })
    );
    let action = wait_for("the rollback", Duration::from_secs(10), || {
        receiver.accepted("/rollback/pay").first().cloned()
    })
    .await;
    assert_eq!(action.body, json!({"unit": "u1", "ratio": 0.3}));
    assert_eq!(action.idempotency_key, format!("{fingerprint}-{fired_ms}"));

    // A restart while it fires: the next window still fails, and nothing
    // is sent again.
    first.trigger();
    alerter.wait().await;
    let second = Shutdown::new();
    let alerter = s.alerter(second.clone()).await;
    let next = now_s() - now_s() % 10;
    publish(&*s.bus, &s.config, 3, &[row("u1", next, 50, 25)]).await;
    let evaluated = next + 10;
    while now_s() < evaluated + 2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(receiver.accepted("/hook").len(), 1, "{:?}", receiver.all());
    assert_eq!(receiver.accepted("/rollback/pay").len(), 1);

    // Healthy again: one resolved notification, same alert, next number.
    let healthy = now_s() - now_s() % 10;
    publish(&*s.bus, &s.config, 4, &[row("u1", healthy, 50, 0)]).await;
    let resolved = wait_for("the resolved notification", Duration::from_secs(30), || {
        receiver.accepted("/hook").get(1).cloned()
    })
    .await;
    assert_eq!(resolved.body["status"], "resolved");
    assert_eq!(resolved.body["vigil"]["sequence"], 2);
    let ended = &resolved.body["alerts"][0];
    assert_eq!(ended["fingerprint"], fingerprint);
    assert_eq!(ended["status"], "resolved");
    assert_eq!(ended["startsAt"], rfc3339(fired_ms));
    assert_eq!(ended["endsAt"], rfc3339((healthy + 10) * 1_000));
    assert_ne!(resolved.idempotency_key, firing.idempotency_key);

    // The history holds both transitions, both notifications (3 attempts
    // each) and the action; the resolved alert is no longer kept.
    let query = HistoryQuery {
        tenant: TenantId::parse("acme").unwrap(),
        from_ms: 0,
        to_ms: u64::MAX >> 1,
        rule: Some("pay-errors".into()),
        subject: None,
        limit: 100,
    };
    // The last notification's outcome is recorded once its call ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    let history = loop {
        let history = s.store.history(&query).await.unwrap();
        if history.len() >= 5 || Instant::now() > deadline {
            break history;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut kinds: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for entry in history.iter().rev() {
        let body: Value = serde_json::from_str(&entry.body).unwrap();
        kinds.entry(entry.kind.clone()).or_default().push(body);
    }
    let transitions: Vec<(&str, &str)> = kinds["transition"]
        .iter()
        .map(|b| (b["from"].as_str().unwrap(), b["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        transitions,
        vec![("inactive", "firing"), ("firing", "resolved")]
    );
    let notifications: Vec<(&str, &str, u64)> = kinds["notification"]
        .iter()
        .map(|b| {
            (
                b["status"].as_str().unwrap(),
                b["outcome"].as_str().unwrap(),
                b["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        notifications,
        vec![("firing", "sent", 3), ("resolved", "sent", 3)]
    );
    let actions = &kinds["action"];
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0]["outcome"], "sent");
    assert_eq!(actions[0]["attempts"], 3);
    assert!(s.store.state(Collection::Alert).await.unwrap().is_empty());
    second.trigger();
    alerter.wait().await;
    stop.trigger();
    let _ = std::fs::remove_dir_all(&s.folder);
}

/// The notifications of the receiver `/hook`: (idempotency key, outcome,
/// attempts) of each history entry, oldest first.
async fn notification_history(store: &dyn Store) -> Vec<(String, String, u64)> {
    let query = HistoryQuery {
        tenant: TenantId::parse("acme").unwrap(),
        from_ms: 0,
        to_ms: u64::MAX >> 1,
        rule: Some("pay-errors".into()),
        subject: None,
        limit: 1_000,
    };
    let mut entries = store.history(&query).await.unwrap();
    entries.reverse();
    entries
        .iter()
        .filter(|e| e.kind == "notification")
        .map(|e| {
            let body: Value = serde_json::from_str(&e.body).unwrap();
            (
                body["idempotencyKey"].as_str().unwrap().to_owned(),
                body["outcome"].as_str().unwrap().to_owned(),
                body["attempts"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// An alerter whose receiver is down (answers 503) when pay-errors fires.
struct Failing {
    stop: Shutdown,
    receiver: Arc<Receiver>,
    s: Setup,
    first: Shutdown,
    alerter: Alerter,
}

/// Starts the receiver down, the alerter with `max_attempts` per round,
/// rounds at most 500 ms apart and `max_age_s` if given, and makes
/// pay-errors fire in u1.
async fn start_failing(
    backend: Backend,
    max_attempts: u32,
    max_age_s: Option<u64>,
) -> Option<Failing> {
    let stop = Shutdown::new();
    let (receiver, base) = receiver(stop.clone()).await;
    receiver.down.store(true, Ordering::SeqCst);
    let mut s = setup(backend, &base).await?;
    s.config.alerter.notification_retry_max_ms = 500;
    if let Some(max_age_s) = max_age_s {
        s.config.alerter.notification_max_age_s = max_age_s;
    }
    let limited = format!("timeout: 2s\n    max_attempts: {max_attempts}");
    // Judged over a minute, the alert fires for the whole test: the one
    // page is all the receiver is sent.
    let rules = rules(&base)
        .replace("timeout: 2s", &limited)
        .replace("    min_count: 10\n", "    min_count: 10\n    window: 1m\n");
    std::fs::write(s.folder.join("rules.yaml"), rules).unwrap();
    // The window before this one failed, in the store as the aggregator
    // leaves it: the alerter and, after a restart in any window, its
    // successor read it back from there (the rows also published are
    // known to be counted).
    let window = now_s() - now_s() % 10 - 10;
    let rows = [row("u1", window, 60, 20)];
    s.store
        .write(&Flush::rows("test", now_s(), rows.to_vec()))
        .await
        .unwrap();
    let first = Shutdown::new();
    let alerter = s.alerter(first.clone()).await;
    publish(&*s.bus, &s.config, 1, &rows).await;
    Some(Failing {
        stop,
        receiver,
        s,
        first,
        alerter,
    })
}

/// The receiver is down while the alert fires: the page stays in the
/// outbox through failed rounds and a restart of the alerter, and once the
/// receiver is back it is accepted exactly once, with the idempotency key
/// of its first attempt; the history says how it went.
async fn a_page_waits_in_the_outbox_through_a_restart_and_arrives_once(backend: Backend) {
    let Some(Failing {
        stop,
        receiver,
        s,
        first,
        alerter,
    }) = start_failing(backend, 2, None).await
    else {
        return;
    };
    // Two failed rounds (four attempts) with one key.
    let key = wait_for("two failed rounds", Duration::from_secs(40), || {
        let hook = receiver.on("/hook");
        (hook.len() >= 4).then(|| hook[0].idempotency_key.clone())
    })
    .await;
    let outbox = s.store.state(Collection::Outbox).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].key, key);
    first.trigger();
    alerter.wait().await;

    receiver.down.store(false, Ordering::SeqCst);
    let second = Shutdown::new();
    let alerter = s.alerter(second.clone()).await;
    let accepted = wait_for(
        "the page after the restart",
        Duration::from_secs(30),
        || receiver.accepted("/hook").first().cloned(),
    )
    .await;
    assert_eq!(accepted.idempotency_key, key);
    // Nothing more comes: one key, accepted once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hook = receiver.on("/hook");
    let said: Vec<(&str, &Value)> = hook
        .iter()
        .map(|r| (r.idempotency_key.as_str(), &r.body["alerts"]))
        .collect();
    assert!(hook.iter().all(|r| r.idempotency_key == key), "{said:?}");
    assert_eq!(hook.iter().filter(|r| r.accepted).count(), 1);
    assert!(hook.last().unwrap().accepted);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.store.state(Collection::Outbox).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the outbox was not emptied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = notification_history(&*s.store).await;
    let (last, failed) = history.split_last().unwrap();
    assert_eq!((last.0.as_str(), last.1.as_str()), (key.as_str(), "sent"));
    assert!(!failed.is_empty(), "{history:?}");
    assert!(
        failed
            .iter()
            .all(|(k, outcome, _)| *k == key && outcome == "failed")
    );
    // The attempts of the round the first alerter never saw end are not
    // counted; every other one is.
    assert!(last.2 >= 3 && last.2 <= hook.len() as u64, "{history:?}");
    second.trigger();
    alerter.wait().await;
    stop.trigger();
    let _ = std::fs::remove_dir_all(&s.folder);
}

/// A receiver that never comes back: the page is dropped from the outbox
/// once `alerter.notification_max_age_s` has passed, and that is recorded
/// and counted; no attempt follows.
async fn a_page_nobody_accepts_expires_and_is_counted(backend: Backend) {
    let Some(Failing {
        stop,
        receiver,
        s,
        first,
        alerter,
    }) = start_failing(backend, 1, Some(2)).await
    else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    let history = loop {
        let history = notification_history(&*s.store).await;
        if history.iter().any(|(_, outcome, _)| outcome == "expired") {
            break history;
        }
        assert!(Instant::now() < deadline, "never expired: {history:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (last, failed) = history.split_last().unwrap();
    assert_eq!(last.1, "expired");
    assert!(
        failed
            .iter()
            .all(|(k, outcome, _)| *k == last.0 && outcome == "failed")
    );
    assert!(s.store.state(Collection::Outbox).await.unwrap().is_empty());
    let rendered = alerter.metrics().render();
    assert!(
        rendered.contains("vigil_alerter_notifications_total{outcome=\"expired\"} 1\n"),
        "{rendered}"
    );
    let attempts = receiver.on("/hook").len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.on("/hook").len(), attempts);
    first.trigger();
    alerter.wait().await;
    stop.trigger();
    let _ = std::fs::remove_dir_all(&s.folder);
}

/// Two alerters on one store and bus: one leads, the other stands by. The
/// leader dies (aborted: nothing saved, its lease left to run out); the
/// standby leads within 15 s and pages the next firing, once.
async fn a_standby_takes_over_within_15_s_of_the_leaders_death(backend: Backend) {
    let stop = Shutdown::new();
    let (receiver, base) = receiver(stop.clone()).await;
    let Some(s) = setup(backend, &base).await else {
        return;
    };
    let leader = s.alerter(Shutdown::new()).await;
    wait_for("the first alerter to lead", Duration::from_secs(10), || {
        (leader.metrics().leader.get() == 1).then_some(())
    })
    .await;
    let standby_stop = Shutdown::new();
    let standby = s.alerter(standby_stop.clone()).await;
    // Past a renewal of both: the standby still stands by.
    tokio::time::sleep(Duration::from_millis(s.config.alerter.lease_ms / 2)).await;
    assert_eq!(
        (
            leader.metrics().leader.get(),
            standby.metrics().leader.get()
        ),
        (1, 0)
    );

    let died = Instant::now();
    leader.abort();
    wait_for("the standby to lead", Duration::from_secs(15), || {
        (standby.metrics().leader.get() == 1).then_some(())
    })
    .await;
    let took_over = died.elapsed();
    assert!(took_over <= Duration::from_secs(15), "{took_over:?}");

    let window = now_s() - now_s() % 10 + 10;
    let deadline = Instant::now() + Duration::from_secs(40);
    let firing = loop {
        // Published until it is judged: the standby's first windows are
        // those after it began.
        publish(
            &*s.bus,
            &s.config,
            window,
            &[row("u1", now_s() - now_s() % 10, 60, 20)],
        )
        .await;
        if let Some(firing) = receiver.accepted("/hook").first().cloned() {
            break firing;
        }
        assert!(Instant::now() < deadline, "no page after the takeover");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hook = receiver.on("/hook");
    // The receiver answers the first two attempts of a key 503.
    assert!(
        hook.iter()
            .all(|r| r.idempotency_key == firing.idempotency_key),
        "one page: {hook:?}"
    );
    assert_eq!(hook.iter().filter(|r| r.accepted).count(), 1, "{hook:?}");
    standby_stop.trigger();
    standby.wait().await;
    stop.trigger();
    let _ = std::fs::remove_dir_all(&s.folder);
}

/// A row of pay's `POST /pay` in `unit` and `version`: `n` requests,
/// `errors` failed, in the 10 s window at `start_s`.
fn versioned(unit: &str, version: &str, start_s: u64, n: u64, errors: u64) -> RollupRow {
    ten_s_row(
        (Kind::Span, "pay", "POST /pay"),
        vec![
            ("vigil.unit".into(), unit.into()),
            ("service.version".into(), version.into()),
        ],
        start_s,
        requests(n, errors),
    )
}

/// The first page of an alert names where its change is: pay in two units
/// and two versions, 1 % failed for an hour, then unit u2's version 1.1.0
/// fails half its requests; the threshold rule on pay's error ratio (no
/// groups) fires, and its page and `GET /api/v1/alerts`' alert carry
/// `located`: u2 with 1.1.0, and nothing else.
async fn the_first_page_names_where_the_change_is(backend: Backend) {
    let stop = Shutdown::new();
    let (receiver, base) = receiver(stop.clone()).await;
    let Some(s) = setup(backend, &base).await else {
        return;
    };
    std::fs::write(
        s.folder.join("rules.yaml"),
        format!(
            "tenant: acme\nrules:\n  - {{name: pay-failing, type: threshold, service: pay, signal: error_ratio, op: '>', value: 0.05, min_count: 10}}\nreceivers:\n  - {{name: oncall, url: '{base}/hook', secret: {SECRET}}}\nroute:\n  receiver: oncall\n  group_wait: 0s\n"
        ),
    )
    .unwrap();
    // Early in a window, so that the rule judges it as its rows come:
    // over it and the window before (in the store).
    while now_s() % 10 > 4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window = now_s() - now_s() % 10;
    let cells = [
        ("u1", "1.0.0"),
        ("u1", "1.1.0"),
        ("u2", "1.0.0"),
        ("u2", "1.1.0"),
    ];
    // The hour before, in the store as the aggregator leaves it.
    let mut rows: Vec<RollupRow> = (1..=360)
        .flat_map(|k| {
            cells
                .iter()
                .map(move |(unit, version)| versioned(unit, version, window - 10 * k, 100, 1))
        })
        .collect();
    let failing: Vec<RollupRow> = cells
        .iter()
        .map(|&(unit, version)| {
            let errors = if (unit, version) == ("u2", "1.1.0") {
                50
            } else {
                1
            };
            versioned(unit, version, window, 100, errors)
        })
        .collect();
    rows.extend(failing.iter().cloned());
    let catalogue: Vec<CatalogueEntry> = failing
        .iter()
        .map(|row| CatalogueEntry {
            series: (*row.series).clone(),
            first_seen_s: window - 3_600,
            last_seen_s: window,
        })
        .collect();
    s.store.record_series(&catalogue).await.unwrap();
    s.store
        .write(&Flush::rows("test", now_s(), rows))
        .await
        .unwrap();
    let alerter = s.alerter(stop.clone()).await;
    publish(&*s.bus, &s.config, 1, &failing).await;
    let page = wait_for("the page", Duration::from_secs(60), || {
        receiver.accepted("/hook").first().cloned()
    })
    .await;
    let alert = &page.body["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "pay-failing", "{}", page.body);
    let located = alert["vigil"]["located"].as_array().unwrap();
    assert_eq!(located.len(), 1, "{}", page.body);
    assert_eq!(
        located[0]["labels"],
        json!({"service.version": "1.1.0", "vigil.unit": "u2"})
    );
    // 1 of 100 failed in the window before, 50 of 100 in this one.
    assert_eq!(located[0]["actual"], 0.255);
    assert_eq!(located[0]["expected"], 0.01);
    // The alert as kept in the store has them too.
    let kept = s.store.state(Collection::Alert).await.unwrap();
    let kept: Value = serde_json::from_str(&kept[0].body).unwrap();
    assert_eq!(kept["located"][0]["labels"], located[0]["labels"]);
    stop.trigger();
    alerter.wait().await;
    let _ = std::fs::remove_dir_all(&s.folder);
}

on_both_backends!(
    the_first_page_names_where_the_change_is,
    a_standby_takes_over_within_15_s_of_the_leaders_death,
    a_page_waits_in_the_outbox_through_a_restart_and_arrives_once,
    a_page_nobody_accepts_expires_and_is_counted,
    alert_fires_signed_survives_a_restart_and_resolves
);

/// A receiver on HTTPS with a certificate of a private CA gets its page
/// once `alerter.ca_file` names the CA; the alerter refuses to start on a
/// CA file that holds no certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reaches_an_https_receiver_signed_by_the_configured_ca() {
    let pki = testing::pki::Pki::new();
    let stop = Shutdown::new();
    let (receiver, base) = receiver_serving(stop.clone(), Some(&pki.server_tls())).await;
    let Some(mut s) = setup(Backend::Embedded, &base).await else {
        return;
    };
    let not_a_ca = s.folder.join("empty.pem");
    std::fs::write(&not_a_ca, "").unwrap();
    s.config.alerter.ca_file = Some(not_a_ca.clone());
    let refused = Alerter::start(&s.config, Arc::clone(&s.bus), s.store.clone(), stop.clone())
        .await
        .err()
        .expect("a CA file without a certificate is refused");
    assert_eq!(
        refused.to_string(),
        format!(
            "alerter.ca_file: {}: holds no PEM certificate",
            not_a_ca.display()
        )
    );

    s.config.alerter.ca_file = Some(pki.ca_file.clone());
    let alerter = s.alerter(stop.clone()).await;
    let window = now_s() - now_s() % 10;
    publish(&*s.bus, &s.config, 1, &[row("u1", window, 100, 30)]).await;
    let firing = wait_for("the page over HTTPS", Duration::from_secs(30), || {
        receiver.accepted("/hook").first().cloned()
    })
    .await;
    assert_eq!(firing.body["status"], "firing");
    assert_eq!(firing.body["alerts"][0]["labels"]["vigil.unit"], "u1");
    stop.trigger();
    alerter.wait().await;
}

/// A real Alertmanager (Debian's 0.25) that calls its webhook receiver at
/// `base`/from-alertmanager, grouping by alert name within a second.
async fn alertmanager_calling(base: &str) -> Option<Daemon> {
    Daemon::alertmanager(&format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  \
         group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    \
         webhook_configs:\n      - url: {base}/from-alertmanager\n        send_resolved: true\n"
    ))
    .await
}

/// The first call of Alertmanager's webhook with `status`.
async fn from_alertmanager(receiver: &Receiver, status: &str) -> Received {
    wait_for(
        &format!("Alertmanager's {status} call"),
        Duration::from_secs(60),
        || {
            receiver
                .accepted("/from-alertmanager")
                .into_iter()
                .find(|r| r.body["status"] == status)
        },
    )
    .await
}

/// A real Alertmanager (Debian's 0.25) as a receiver: Vigil posts its alert
/// to `/api/v2/alerts`, Alertmanager groups it and calls its own webhook
/// receiver with Vigil's labels (in Prometheus names), and the resolution
/// Vigil posts ends it there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_go_through_a_real_alertmanager_and_resolve() {
    let stop = Shutdown::new();
    let (receiver, base) = receiver(stop.clone()).await;
    let Some(s) = setup(Backend::Embedded, &base).await else {
        return;
    };
    let Some(alertmanager) = alertmanager_calling(&base).await else {
        return;
    };
    // The rules of the other tests, their pages sent to the Alertmanager.
    let webhook = rules(&base);
    let (head, rest) = webhook.split_once("receivers:").unwrap();
    let (_, actions) = rest.split_once("actions:").unwrap();
    let to_alertmanager = format!(
        "{head}receivers:\n  - {{name: am, type: alertmanager, url: '{}'}}\nroute:\n  \
         receiver: am\n  group_wait: 0s\n  group_interval: 1s\nactions:{actions}",
        alertmanager.url()
    );
    std::fs::write(s.folder.join("rules.yaml"), to_alertmanager).unwrap();
    let alerter = s.alerter(stop.clone()).await;
    let window = now_s() - now_s() % 10;
    publish(&*s.bus, &s.config, 1, &[row("u1", window, 100, 30)]).await;
    let firing = from_alertmanager(&receiver, "firing").await;
    let starts_at = firing.body["alerts"][0]["startsAt"].as_str().unwrap();
    let fired_ms = parse_rfc3339(starts_at).unwrap();
    assert!(
        (window * 1_000..=(window + 10) * 1_000).contains(&fired_ms),
        "{starts_at} outside the window at {window}"
    );
    assert_eq!(firing.body["status"], "firing", "{}", firing.body);
    let alert = &firing.body["alerts"][0];
    assert_eq!(
        alert["labels"],
        json!({"alertname": "pay-errors", "severity": "page", "tenant": "acme", "vigil_unit": "u1"})
    );
    assert_eq!(
        alert["annotations"],
        json!({"summary": "0.3 of pay requests fail in u1"})
    );

    let healthy = now_s() - now_s() % 10;
    publish(&*s.bus, &s.config, 2, &[row("u1", healthy, 50, 0)]).await;
    let resolved = from_alertmanager(&receiver, "resolved").await;
    assert_eq!(resolved.body["alerts"][0]["labels"], alert["labels"]);
    stop.trigger();
    alerter.wait().await;
    drop(alertmanager);
    let _ = std::fs::remove_dir_all(&s.folder);
}

/// A Prometheus alerting rule file, as `promtool check rules` accepts it.
const PROMETHEUS_RULES: &str = r#"groups:
  - name: payments
    rules:
      - alert: PayErrorRatio
        expr: |
          sum by (vigil_unit) (rate(vigil_span_errors_total{service="pay"}[10s]))
            / sum by (vigil_unit) (rate(vigil_span_requests_total{service="pay"}[10s]))
            > 0.1
        for: 0s
        keep_firing_for: 0s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.vigil_unit }} fails {{ $value | humanizePercentage }} of pay requests"
"#;

/// Files promtool refuses, and Vigil with it.
const PROMETHEUS_REFUSED: [&str; 6] = [
    "groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n",
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(x[5m]\n",
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        severity: page\n",
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        record: b\n        expr: up\n",
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        labels: {1x: y}\n",
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        for: 1.5m\n",
];

/// A Prometheus rule file in the alerter's rule folder, evaluated on the
/// stream: its alert goes to a real Alertmanager (Debian's 0.25) with the
/// expression's labels and the rule's, and resolves there; promtool
/// (Debian's, 2.42) and Vigil agree on which files are valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_rule_files_fire_through_a_real_alertmanager() {
    let Some(promtool) = testing::program("promtool") else {
        return;
    };
    let stop = Shutdown::new();
    let (receiver, base) = receiver(stop.clone()).await;
    let Some(mut s) = setup(Backend::Embedded, &base).await else {
        return;
    };
    let acme = TenantId::parse("acme").unwrap();
    let checked = |text: &str| {
        let file = s.folder.join(testing::unique_name("check") + ".yml");
        std::fs::write(&file, text).unwrap();
        let promtool = std::process::Command::new(&promtool)
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .unwrap();
        let vigil = vigil_alerter::rules::load(std::slice::from_ref(&file), Some(&acme));
        std::fs::remove_file(&file).unwrap();
        (promtool, vigil)
    };
    let (promtool_said, vigil_said) = checked(PROMETHEUS_RULES);
    assert!(
        promtool_said.status.success(),
        "{}",
        String::from_utf8_lossy(&promtool_said.stdout)
    );
    assert_eq!(vigil_said.expect("Vigil loads it").rules.len(), 1);
    for text in PROMETHEUS_REFUSED {
        let (promtool_said, vigil_said) = checked(text);
        assert!(!promtool_said.status.success(), "promtool took {text}");
        assert!(vigil_said.is_err(), "Vigil took {text}");
    }

    let Some(alertmanager) = alertmanager_calling(&base).await else {
        return;
    };
    std::fs::write(
        s.folder.join("rules.yaml"),
        format!(
            "receivers:\n  - {{name: am, type: alertmanager, url: '{}'}}\nroute:\n  \
             receiver: am\n  group_wait: 0s\n  group_interval: 1s\n",
            alertmanager.url()
        ),
    )
    .unwrap();
    std::fs::write(s.folder.join("payments.yml"), PROMETHEUS_RULES).unwrap();
    s.config.alerter.prometheus_tenant = Some(acme);
    let alerter = s.alerter(stop.clone()).await;
    assert_eq!(alerter.metrics().rules.get(), 1);
    let window = now_s() - now_s() % 10;
    // u2 fails 5 %, under the bound.
    publish(
        &*s.bus,
        &s.config,
        1,
        &[row("u1", window, 100, 30), row("u2", window, 100, 5)],
    )
    .await;
    let firing = from_alertmanager(&receiver, "firing").await;
    assert_eq!(firing.body["status"], "firing", "{}", firing.body);
    let alerts = firing.body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{}", firing.body);
    let alert = &alerts[0];
    assert_eq!(
        alert["labels"],
        json!({"alertname": "PayErrorRatio", "severity": "page", "tenant": "acme", "vigil_unit": "u1"})
    );
    assert_eq!(
        alert["annotations"],
        json!({"summary": "u1 fails 0.3 of pay requests"})
    );
    assert_eq!(
        alert["startsAt"],
        rfc3339((window + 10) * 1_000).replace(".000", "")
    );
    // The next window is healthy: the result is empty, the alert resolves.
    publish(&*s.bus, &s.config, 2, &[row("u1", window + 10, 50, 0)]).await;
    let resolved = from_alertmanager(&receiver, "resolved").await;
    assert_eq!(resolved.body["alerts"][0]["labels"], alert["labels"]);
    stop.trigger();
    alerter.wait().await;
    drop(alertmanager);
    let _ = std::fs::remove_dir_all(&s.folder);
}

mod crashes;
mod playbooks;
